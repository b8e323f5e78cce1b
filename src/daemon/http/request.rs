//! An `auth_http` request as nginx's mail module sends it: `GET` with the
//! login in headers and no body. The head is parsed by `httparse`; this file
//! maps the headers and undoes nginx's escaping. Pure functions, no I/O.

use std::net::IpAddr;
use zeroize::Zeroizing;

/// Longest request head accepted (nginx's are a few hundred bytes, more with
/// client-certificate headers).
pub const MAX_HEAD: usize = 8192;
/// Most headers accepted in one request.
pub const MAX_HEADERS: usize = 48;
/// Longest `Auth-User` / `Auth-Pass` after decoding.
pub const MAX_FIELD: usize = 1024;

/// `Auth-Method`: how the client logged in to nginx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// USER/PASS, LOGIN, AUTHENTICATE PLAIN/LOGIN: nginx holds the password.
    Plain,
    /// `apop`, `cram-md5`, `external`, `none`, or anything else: no password
    /// saslgate could check (nginx holds only a digest or nothing).
    Unsupported(String),
}

/// The fields saslgate uses. The password is wiped when this drops.
#[derive(Debug)]
pub struct AuthRequest {
    pub method: Method,
    pub user: Zeroizing<Vec<u8>>,
    pub pass: Zeroizing<Vec<u8>>,
    /// `Auth-Protocol` lower-cased: `imap`, `pop3`, `smtp`.
    pub protocol: String,
    /// `Client-IP`: the mail client's address as nginx saw it.
    pub client_ip: Option<IpAddr>,
    /// `Auth-Login-Attempt`: 1 for the first login on this connection.
    pub attempt: u32,
    /// `Auth-SSL: on`.
    pub ssl: bool,
}

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRequest {
    /// Not HTTP, or over the size/header bounds.
    Syntax(String),
    /// HTTP, but not what nginx sends (missing, repeated or malformed fields).
    Fields(String),
}

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadRequest::Syntax(m) => write!(f, "not an auth_http request: {m}"),
            BadRequest::Fields(m) => write!(f, "bad auth_http request: {m}"),
        }
    }
}

/// Parses a request head. `Ok(None)`: incomplete, read more (the caller
/// bounds the buffer by [`MAX_HEAD`]).
pub fn parse_head(buf: &[u8]) -> Result<Option<AuthRequest>, BadRequest> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(_)) => {}
        Err(e) => return Err(BadRequest::Syntax(e.to_string())),
    }
    if req.method != Some("GET") {
        return Err(BadRequest::Syntax(format!(
            "method {:?} (nginx sends GET)",
            req.method.unwrap_or("")
        )));
    }
    map_headers(req.headers).map(Some)
}

/// The `Auth-*` headers saslgate reads; each at most once.
#[derive(Default)]
struct Seen<'h> {
    method: Option<&'h [u8]>,
    user: Option<&'h [u8]>,
    pass: Option<&'h [u8]>,
    protocol: Option<&'h [u8]>,
    client_ip: Option<&'h [u8]>,
    attempt: Option<&'h [u8]>,
    ssl: Option<&'h [u8]>,
}

fn map_headers(headers: &[httparse::Header<'_>]) -> Result<AuthRequest, BadRequest> {
    let bad = |m: String| BadRequest::Fields(m);
    let mut seen = Seen::default();
    for h in headers {
        let slot = match h.name.to_ascii_lowercase().as_str() {
            "auth-method" => &mut seen.method,
            "auth-user" => &mut seen.user,
            "auth-pass" => &mut seen.pass,
            "auth-protocol" => &mut seen.protocol,
            "client-ip" => &mut seen.client_ip,
            "auth-login-attempt" => &mut seen.attempt,
            "auth-ssl" => &mut seen.ssl,
            _ => continue,
        };
        // Two values for one field: which one would nginx have meant? Neither.
        if slot.replace(h.value).is_some() {
            return Err(bad(format!("{} given twice", h.name)));
        }
    }
    let ascii = |name: &str, v: Option<&[u8]>| -> Result<Option<String>, BadRequest> {
        v.map(|v| {
            std::str::from_utf8(v)
                .ok()
                .filter(|s| s.bytes().all(|b| b.is_ascii_graphic()))
                .map(str::to_ascii_lowercase)
                .ok_or_else(|| BadRequest::Fields(format!("{name} is not a plain word")))
        })
        .transpose()
    };
    let method = match ascii("Auth-Method", seen.method)?.as_deref() {
        None => return Err(bad("no Auth-Method".into())),
        Some("plain") => Method::Plain,
        Some(other) => Method::Unsupported(other.to_string()),
    };
    let protocol =
        ascii("Auth-Protocol", seen.protocol)?.ok_or_else(|| bad("no Auth-Protocol".into()))?;
    let attempt = match ascii("Auth-Login-Attempt", seen.attempt)? {
        None => 1,
        Some(n) => n
            .parse::<u32>()
            .map_err(|_| bad("Auth-Login-Attempt is not a number".into()))?,
    };
    let client_ip = match seen.client_ip {
        None => None,
        Some(v) => Some(
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<IpAddr>().ok())
                .ok_or_else(|| bad("Client-IP is not an IP address".into()))?,
        ),
    };
    let ssl = ascii("Auth-SSL", seen.ssl)?.as_deref() == Some("on");
    let field = |name: &str, v: Option<&[u8]>| -> Result<Zeroizing<Vec<u8>>, BadRequest> {
        let v = v.ok_or_else(|| BadRequest::Fields(format!("no {name}")))?;
        unescape(v).map_err(|e| BadRequest::Fields(format!("{name}: {e}")))
    };
    let (user, pass) = match method {
        Method::Plain => (
            field("Auth-User", seen.user)?,
            field("Auth-Pass", seen.pass)?,
        ),
        // Not checked: nothing to decode.
        Method::Unsupported(_) => (
            field("Auth-User", seen.user).unwrap_or_default(),
            Zeroizing::default(),
        ),
    };
    Ok(AuthRequest {
        method,
        user,
        pass,
        protocol,
        client_ip,
        attempt,
        ssl,
    })
}

/// Why an escaped value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapeError {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// A byte nginx always escapes (space, `%` or below 0x20) came raw.
    RawByte(u8),
    TooLong,
}

impl std::fmt::Display for EscapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EscapeError::BadEscape => write!(f, "'%' not followed by two hex digits"),
            EscapeError::RawByte(b) => write!(f, "unescaped byte 0x{b:02x}"),
            EscapeError::TooLong => write!(f, "longer than {MAX_FIELD} bytes"),
        }
    }
}

/// Undoes nginx's escaping of `Auth-User` and `Auth-Pass`: it writes space,
/// `%` and the bytes below 0x20 as `%XX` and every other byte (0x80 and up
/// too) as is. The inverse is strict: a raw byte nginx would have escaped, or
/// a `%` that starts no escape, means the request did not come from nginx's
/// escaping, and a password is never guessed at.
pub fn unescape(raw: &[u8]) -> Result<Zeroizing<Vec<u8>>, EscapeError> {
    let mut out = Zeroizing::new(Vec::with_capacity(raw.len().min(MAX_FIELD)));
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        let byte = match b {
            b'%' => {
                let hi = raw.get(i + 1).and_then(|c| hex(*c));
                let lo = raw.get(i + 2).and_then(|c| hex(*c));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(EscapeError::BadEscape);
                };
                i += 3;
                hi << 4 | lo
            }
            0x00..=0x20 => return Err(EscapeError::RawByte(b)),
            _ => {
                i += 1;
                b
            }
        };
        if out.len() == MAX_FIELD {
            return Err(EscapeError::TooLong);
        }
        out.push(byte);
    }
    Ok(out)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nginx's side (ngx_escape_uri with its mail-auth table), written from
    /// the module's documented behaviour, for round trips.
    fn nginx_escape(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in raw {
            if b <= 0x20 || b == b'%' {
                out.extend_from_slice(format!("%{b:02X}").as_bytes());
            } else {
                out.push(b);
            }
        }
        out
    }

    fn request(lines: &[&str]) -> Vec<u8> {
        let mut r = b"GET /auth HTTP/1.0\r\nHost: localhost\r\n".to_vec();
        for l in lines {
            r.extend_from_slice(l.as_bytes());
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"\r\n");
        r
    }

    const NGINX_IMAP: &[&str] = &[
        "Auth-Method: plain",
        "Auth-User: alice@example.org",
        "Auth-Pass: master%20pw%25x%0D%0A",
        "Auth-Protocol: imap",
        "Auth-Login-Attempt: 2",
        "Client-IP: 192.0.2.7",
        "Client-Host: [UNAVAILABLE]",
    ];

    #[test]
    fn maps_what_nginx_sends() {
        let r = parse_head(&request(NGINX_IMAP)).unwrap().unwrap();
        assert_eq!(r.method, Method::Plain);
        assert_eq!(&r.user[..], b"alice@example.org");
        assert_eq!(&r.pass[..], b"master pw%x\r\n");
        assert_eq!(r.protocol, "imap");
        assert_eq!(r.attempt, 2);
        assert_eq!(r.client_ip, Some("192.0.2.7".parse().unwrap()));
        assert!(!r.ssl);
        let mut tls = NGINX_IMAP.to_vec();
        tls.push("Auth-SSL: on");
        assert!(parse_head(&request(&tls)).unwrap().unwrap().ssl);
    }

    #[test]
    fn incomplete_is_not_an_error() {
        let full = request(NGINX_IMAP);
        for cut in [0, 5, 20, full.len() - 1] {
            assert!(parse_head(&full[..cut]).unwrap().is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn unsupported_methods_are_named() {
        for m in ["apop", "cram-md5", "external", "none", "CRAM-MD5"] {
            let lines = [
                &format!("Auth-Method: {m}")[..],
                "Auth-User: bob",
                "Auth-Pass: ",
                "Auth-Salt: <1.2@x>",
                "Auth-Protocol: pop3",
            ];
            let r = parse_head(&request(&lines)).unwrap().unwrap();
            assert_eq!(r.method, Method::Unsupported(m.to_ascii_lowercase()));
            assert!(r.pass.is_empty());
        }
    }

    #[test]
    fn refuses_what_nginx_never_sends() {
        let with = |extra: &str, drop: &str| {
            let mut l: Vec<&str> = NGINX_IMAP
                .iter()
                .copied()
                .filter(|h| !h.starts_with(drop))
                .collect();
            if !extra.is_empty() {
                l.push(extra);
            }
            parse_head(&request(&l))
        };
        assert!(matches!(
            with("Auth-User: mallory", "-"),
            Err(BadRequest::Fields(_))
        ));
        assert!(with("auth-pass: x", "-").is_err());
        assert!(with("", "Auth-Method").is_err());
        assert!(with("", "Auth-Protocol").is_err());
        assert!(with("", "Auth-Pass").is_err());
        assert!(with("Client-IP: example.org", "Client-IP").is_err());
        assert!(with("Auth-Login-Attempt: -1", "Auth-Login-Attempt").is_err());
        assert!(with("Auth-Pass: a b", "Auth-Pass").is_err());
        assert!(with("Auth-Pass: 100%", "Auth-Pass").is_err());
        assert!(with("", "Client-IP").unwrap().unwrap().client_ip.is_none());
        assert!(matches!(
            parse_head(b"POST /auth HTTP/1.0\r\n\r\n"),
            Err(BadRequest::Syntax(_))
        ));
        assert!(matches!(
            parse_head(b"\x00\x01garbage\r\n\r\n"),
            Err(BadRequest::Syntax(_))
        ));
        let many: Vec<String> = (0..MAX_HEADERS).map(|i| format!("X-{i}: y")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(matches!(
            parse_head(&request(&many)),
            Err(BadRequest::Syntax(_))
        ));
    }

    #[test]
    fn unescape_is_the_inverse_of_nginx() {
        let samples: [&[u8]; 6] = [
            b"plain",
            b"with space and %25 literal",
            b"\x00\x01\x1f\x20\x7f",
            "pässwörd €".as_bytes(),
            b"\xff\xfe raw high bytes",
            b"",
        ];
        for s in samples {
            assert_eq!(&unescape(&nginx_escape(s)).unwrap()[..], s);
        }
        // Lower-case hex decodes too.
        assert_eq!(&unescape(b"a%2fb").unwrap()[..], b"a/b");
        assert_eq!(unescape(b"%"), Err(EscapeError::BadEscape));
        assert_eq!(unescape(b"%4"), Err(EscapeError::BadEscape));
        assert_eq!(unescape(b"%zz"), Err(EscapeError::BadEscape));
        assert_eq!(unescape(b"a\tb"), Err(EscapeError::RawByte(b'\t')));
        assert_eq!(unescape(&[b'x'; MAX_FIELD + 1]), Err(EscapeError::TooLong));
        assert!(unescape(&[b'x'; MAX_FIELD]).is_ok());
    }
}
