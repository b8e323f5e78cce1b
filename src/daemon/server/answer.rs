//! Deciding one request and writing its log line; shared by both paths.

use super::conn::Answer;
use super::shared::Shared;
use crate::daemon::answers::Outcome;
use crate::daemon::log::{display_into, escape_text_into, text_into, value_into};
use crate::daemon::protocol::WireRequest;
use crate::engine::{Credential, Decision, Gate, Request};
use std::time::Duration;

/// A decision whose log line is not written yet: the acceptor writes it after
/// the answer is sent, so the line's cost is not part of the client's wait.
pub(super) struct Verdict(Decision);

/// Runs the core on one request; returns the answer, how long to hold it,
/// and the decision to log (with [`Verdict::log`]).
pub(super) fn decide(
    shared: &Shared,
    gate: &Gate,
    req: &WireRequest<'_>,
) -> (Answer, Duration, Verdict) {
    // The realm always goes to the core, which decides what it means
    // (`login@realm`, plain `login` only for its configured local realms):
    // dropping it here would let `alice` + realm `other.org` log in as `alice`.
    let request = Request {
        login: req.login,
        password: req.password,
        service: req.service,
        realm: req.realm,
        client_addr: req.client_addr,
        local_addr: None,
        secure: None,
    };
    let decision = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| gate.decide(&request)))
        .unwrap_or_else(|_| Decision::Unavailable {
            cause: "internal error (panic in the decision)".into(),
        });
    let out = Answer::Borrowed(Outcome::of(&decision).answer());
    let delay = match &decision {
        Decision::Refused { delay, .. } => (*delay).max(shared.settings.fail_delay),
        Decision::Accepted { .. } | Decision::Unavailable { .. } => Duration::ZERO,
    };
    (out, delay, Verdict(decision))
}

impl Verdict {
    /// Writes the decision's log line.
    pub(super) fn log(self, shared: &Shared, req: &WireRequest<'_>) {
        match self.0 {
            Decision::Accepted {
                account,
                credential,
            } => {
                // Fixed fields first, then what the client sent, each quoted and
                // escaped (log.rs): no value can end its field or start another.
                // Built in a buffer the thread keeps: no allocation per success.
                thread_local! {
                    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
                }
                LINE.with(|cell| {
                    let mut fresh = String::new();
                    let mut kept = cell.try_borrow_mut();
                    let line = match &mut kept {
                        Ok(l) => &mut **l,
                        Err(_) => &mut fresh,
                    };
                    line.clear();
                    line.push_str("result=OK");
                    value_into(line, "account", account.as_bytes());
                    credential_into(line, &credential);
                    request_fields(line, req);
                    shared.log.info(line);
                    // A hostile login can make a line long: do not keep that.
                    if line.capacity() > 4096 {
                        *line = String::new();
                    }
                });
            }
            Decision::Refused { reason, detail, .. } => {
                let mut line = String::with_capacity(224);
                line.push_str("result=NO reason=");
                line.push_str(reason.name());
                text_into(&mut line, "detail", &detail);
                request_fields(&mut line, req);
                shared.log.notice(&line);
            }
            Decision::Unavailable { cause } => {
                let mut line = String::with_capacity(224);
                line.push_str("result=NO reason=unavailable");
                text_into(&mut line, "cause", &cause);
                request_fields(&mut line, req);
                shared.log.err(&line);
            }
        }
    }
}

/// ` credential="..."` without the formatting machinery (every success).
fn credential_into(line: &mut String, credential: &Credential) {
    let fixed = match credential {
        Credential::Master => "master",
        Credential::MasterAndTotp => "master+totp",
        Credential::MasterAndCode => "master+code",
        Credential::PolicyOnly => "policy-only",
        Credential::ProxyTicket => "proxy-ticket",
        Credential::AppPassword { id, label } => {
            // The label is the admin's text: escaped like any other value.
            line.push_str(" credential=\"app-password ");
            push_i64(line, *id);
            line.push_str(" (");
            escape_text_into(line, label);
            line.push_str(")\"");
            return;
        }
        #[allow(unreachable_patterns)]
        other => return display_into(line, "credential", other),
    };
    line.push_str(" credential=\"");
    line.push_str(fixed);
    line.push('"');
}

/// Decimal digits of `n` (no formatting machinery).
fn push_i64(line: &mut String, n: i64) {
    let mut buf = [0u8; 20];
    let mut start = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        start -= 1;
        buf[start] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        line.push('-');
    }
    line.push_str(std::str::from_utf8(&buf[start..]).unwrap_or("?"));
}

/// The request's own fields, after the fixed ones; the login, the most
/// likely to be hostile, last.
fn request_fields(line: &mut String, req: &WireRequest<'_>) {
    value_into(line, "service", req.service);
    value_into(line, "realm", req.realm.unwrap_or_default());
    value_into(line, "client", req.client_addr.unwrap_or_default());
    value_into(line, "login", req.login);
}
