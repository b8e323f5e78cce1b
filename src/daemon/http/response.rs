//! What the face answers nginx. nginx reads the status line without looking
//! at the code and acts on the `Auth-*` headers only, so every answer to a
//! request nginx could have sent is `200` with headers (a 5xx would make
//! nginx drop the client with an internal-error text).

use crate::decision::RefuseReason;
use crate::secret::SecretBytes;
use std::net::SocketAddr;
use std::time::Duration;

/// From this `Auth-Login-Attempt` on, a refusal carries no `Auth-Wait`, so
/// nginx sends the error and closes the client's connection (attempts 1
/// and 2 may retry on the same connection after the wait).
pub const LAST_WAITED_ATTEMPT: u32 = 2;
/// The `auth_http` face's one text when saslgate cannot decide (storage,
/// internal error, no backend, a hold past `max_hold`).
pub const UNAVAILABLE_TEXT: &str = "Temporary server problem, try again later";

/// One answer, before it is written out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `Auth-Status`: `OK` or the text nginx shows the client.
    pub status: &'static str,
    /// `Auth-Wait`, seconds.
    pub wait: Option<u64>,
    /// `Auth-Error-Code` (SMTP only).
    pub error_code: Option<&'static str>,
    /// `Auth-Server` + `Auth-Port`, and `Auth-User` (the canonical account).
    pub accepted: Option<(SocketAddr, String)>,
    /// `Auth-Pass`: a proxy ticket nginx logs in to the backend with (after a
    /// two-step login); without it nginx sends the client's own password.
    pub pass: Option<SecretBytes>,
}

fn smtp(protocol: &str, code: &'static str) -> Option<&'static str> {
    (protocol == "smtp").then_some(code)
}

impl Answer {
    pub fn accepted(backend: SocketAddr, account: String) -> Answer {
        Answer {
            status: "OK",
            wait: None,
            error_code: None,
            accepted: Some((backend, account)),
            pass: None,
        }
    }

    /// With `Auth-Pass` (a proxy ticket: `sgt.` and base64url, header-safe).
    pub fn with_pass(mut self, pass: Option<SecretBytes>) -> Answer {
        self.pass = pass;
        self
    }

    /// A refusal the engine decided. `delay` is the engine's suggested delay
    /// (at least the daemon's `--fail-delay`); nginx holds the client that
    /// long (whole seconds, at least 1) before showing the refusal.
    pub fn refused(reason: RefuseReason, protocol: &str, delay: Duration, attempt: u32) -> Answer {
        // No Auth-Wait: nginx sends the error and closes; waiting and
        // retrying cannot help these.
        let final_code = match reason {
            RefuseReason::Throttled => Some("454 4.7.0"),
            RefuseReason::Blocked => Some("554 5.7.1"),
            RefuseReason::TlsRequired => Some("538 5.7.11"),
            _ => None,
        };
        if let Some(code) = final_code {
            return Answer {
                status: reason.public_text(),
                wait: None,
                error_code: smtp(protocol, code),
                accepted: None,
                pass: None,
            };
        }
        let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        Answer {
            status: reason.public_text(),
            wait: (attempt <= LAST_WAITED_ATTEMPT).then_some(secs.max(1)),
            error_code: smtp(protocol, "535 5.7.8"),
            accepted: None,
            pass: None,
        }
    }

    pub fn unavailable(protocol: &str) -> Answer {
        Answer {
            status: UNAVAILABLE_TEXT,
            wait: None,
            error_code: smtp(protocol, "451 4.3.0"),
            accepted: None,
            pass: None,
        }
    }

    /// `Auth-Method` other than plain: nginx holds no password to check.
    pub fn unsupported_method(protocol: &str) -> Answer {
        Answer {
            status: "authentication method not supported",
            wait: None,
            error_code: smtp(protocol, "504 5.5.4"),
            accepted: None,
            pass: None,
        }
    }

    /// A request with fields nginx never sends this way.
    pub fn malformed(protocol: &str) -> Answer {
        Answer {
            status: RefuseReason::BadInput.public_text(),
            wait: None,
            error_code: smtp(protocol, "501 5.5.2"),
            accepted: None,
            pass: None,
        }
    }

    /// The whole HTTP/1.0 response; the connection closes after it.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Room for the longest answer (under nginx's 1024 bytes): a ticket is
        // never left behind in a smaller buffer that grew.
        let mut out = String::with_capacity(1024);
        out.push_str("HTTP/1.0 200 OK\r\nAuth-Status: ");
        out.push_str(self.status);
        out.push_str("\r\n");
        if let Some((backend, account)) = &self.accepted {
            out.push_str(&format!(
                "Auth-Server: {}\r\nAuth-Port: {}\r\nAuth-User: {account}\r\n",
                backend.ip(),
                backend.port()
            ));
        }
        if let Some(pass) = &self.pass {
            out.push_str("Auth-Pass: ");
            out.push_str(&String::from_utf8_lossy(pass.as_bytes()));
            out.push_str("\r\n");
        }
        if let Some(w) = self.wait {
            out.push_str(&format!("Auth-Wait: {w}\r\n"));
        }
        if let Some(code) = self.error_code {
            out.push_str("Auth-Error-Code: ");
            out.push_str(code);
            out.push_str("\r\n");
        }
        out.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
        out.into_bytes()
    }
}

/// The answer to something that is not an `auth_http` request at all, or to
/// a peer outside `trusted_peers` (nginx never gets these).
pub fn http_error(code: u16, text: &str) -> Vec<u8> {
    format!("HTTP/1.0 {code} {text}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Whether a canonical account name can go out as `Auth-User` as is: nginx
/// copies the value into the backend's LOGIN / XCLIENT, so nothing that
/// could end a header or a command word, and short enough that the answer
/// fits the 1024 bytes nginx reads.
pub fn header_safe(value: &str) -> bool {
    (1..=512).contains(&value.len()) && value.bytes().all(|b| b > 0x20 && b != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(a: &Answer) -> String {
        String::from_utf8(a.to_bytes()).unwrap()
    }

    #[test]
    fn accepted_names_backend_and_account() {
        let a = Answer::accepted(
            "127.0.0.1:1143".parse().unwrap(),
            "alice@example.org".into(),
        );
        let t = text(&a);
        assert!(t.starts_with("HTTP/1.0 200 OK\r\nAuth-Status: OK\r\n"));
        assert!(t.contains(
            "\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 1143\r\nAuth-User: alice@example.org\r\n"
        ));
        assert!(t.ends_with("Connection: close\r\n\r\n"));
        assert!(!t.contains("Auth-Wait"));
        let v6 = Answer::accepted("[::1]:25".parse().unwrap(), "a".into());
        assert!(text(&v6).contains("Auth-Server: ::1\r\nAuth-Port: 25\r\n"));
    }

    #[test]
    fn a_ticket_goes_out_as_auth_pass() {
        let backend = "127.0.0.1:1143".parse().unwrap();
        let plain = Answer::accepted(backend, "bob".into());
        assert!(!text(&plain).contains("Auth-Pass"));
        let ticket = SecretBytes::from_slice(b"sgt.AbCdEfGhIjKlMnOpQrStUvWxYz012-_9");
        let t = text(&plain.with_pass(Some(ticket)));
        assert!(
            t.contains("\r\nAuth-User: bob\r\nAuth-Pass: sgt.AbCdEfGhIjKlMnOpQrStUvWxYz012-_9\r\n")
        );
    }

    #[test]
    fn refusal_waits_then_closes() {
        let first = Answer::refused(
            RefuseReason::BadCredentials,
            "imap",
            Duration::from_millis(1),
            1,
        );
        assert_eq!(first.wait, Some(1));
        assert_eq!(first.error_code, None);
        assert!(text(&first).contains("Auth-Status: authentication failed\r\nAuth-Wait: 1\r\n"));
        let slowed = Answer::refused(
            RefuseReason::BadCredentials,
            "pop3",
            Duration::from_millis(2500),
            2,
        );
        assert_eq!(slowed.wait, Some(3));
        let last = Answer::refused(
            RefuseReason::BadCredentials,
            "imap",
            Duration::from_secs(1),
            3,
        );
        assert_eq!(last.wait, None);
        let smtp = Answer::refused(RefuseReason::NotAllowed, "smtp", Duration::ZERO, 1);
        assert!(text(&smtp).contains("Auth-Error-Code: 535 5.7.8\r\n"));
    }

    #[test]
    fn temporary_answers() {
        let t = Answer::refused(RefuseReason::Throttled, "smtp", Duration::from_secs(9), 1);
        assert_eq!((t.wait, t.error_code), (None, Some("454 4.7.0")));
        let u = Answer::unavailable("smtp");
        assert!(text(&u).contains("Auth-Status: Temporary server problem, try again later\r\n"));
        assert!(text(&u).contains("Auth-Error-Code: 451 4.3.0\r\n"));
        assert_eq!(Answer::unavailable("imap").error_code, None);
        assert!(text(&Answer::unsupported_method("pop3")).contains("not supported"));
    }

    #[test]
    fn blocked_and_plain_connections_close_at_once() {
        let b = Answer::refused(RefuseReason::Blocked, "smtp", Duration::from_secs(3), 1);
        assert_eq!((b.wait, b.error_code), (None, Some("554 5.7.1")));
        assert!(text(&b).contains("Auth-Status: access denied\r\n"));
        let t = Answer::refused(RefuseReason::TlsRequired, "smtp", Duration::from_secs(3), 1);
        assert_eq!((t.wait, t.error_code), (None, Some("538 5.7.11")));
        let imap = Answer::refused(RefuseReason::TlsRequired, "imap", Duration::ZERO, 1);
        assert_eq!((imap.wait, imap.error_code), (None, None));
        assert!(text(&imap).contains("Auth-Status: encryption required\r\n"));
    }

    #[test]
    fn every_answer_fits_nginx_buffer() {
        // nginx reads the answer into a 1024-byte buffer.
        let long = "x".repeat(512);
        assert!(header_safe(&long) && !header_safe(&"x".repeat(513)));
        let a = Answer::accepted("[2001:db8::1:2:3:4]:65535".parse().unwrap(), long);
        assert!(a.to_bytes().len() < 1024);
        assert!(header_safe("bob@example.org"));
        assert!(!header_safe("bob\r\nAuth-Status: OK") && !header_safe("a b") && !header_safe(""));
    }
}
