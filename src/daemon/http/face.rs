//! One `auth_http` request through the engine: the mapping to a
//! [`Request`], the decision, the log line and the [`Answer`].

use super::request::{AuthRequest, Method};
use super::response::{header_safe, Answer};
use crate::daemon::log::{text_into, value_into, Logger};
use crate::engine::{Decision, Gate, Request};
use std::time::Duration;

/// Decides one request. `fail_delay` is saslgated's `--fail-delay`, the
/// least `Auth-Wait` of a refusal.
pub fn answer(req: &AuthRequest, gate: &Gate, log: &Logger, fail_delay: Duration) -> Answer {
    let proto = req.protocol.as_str();
    let client = req.client_ip.map(|ip| ip.to_string());
    let line_end = |line: &mut String| {
        value_into(line, "protocol", proto.as_bytes());
        value_into(line, "client", client.as_deref().unwrap_or("").as_bytes());
        line.push_str(" attempt=");
        line.push_str(&req.attempt.to_string());
        if req.ssl {
            line.push_str(" ssl=on");
        }
        value_into(line, "login", &req.user);
    };
    if let Method::Unsupported(m) = &req.method {
        let mut line = String::from("face=http result=NO reason=unsupported-method");
        value_into(&mut line, "method", m.as_bytes());
        line_end(&mut line);
        log.notice(&line);
        return Answer::unsupported_method(proto);
    }
    // Checked before any hashing: without a backend an OK could not be used.
    let Some(backend) = gate.config().http.backends.get(proto).copied() else {
        let mut line = String::from("face=http result=NO reason=unavailable");
        text_into(
            &mut line,
            "cause",
            &format!("no backend for protocol {proto} (set it in [http.backends])"),
        );
        line_end(&mut line);
        log.err(&line);
        return Answer::unavailable(proto);
    };
    let addr = client.as_deref().map(str::as_bytes);
    let request = Request {
        login: &req.user,
        password: &req.pass,
        service: proto.as_bytes(),
        realm: None,
        client_addr: addr,
        local_addr: None,
    };
    let decision = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| gate.decide(&request)))
        .unwrap_or_else(|_| Decision::Unavailable {
            cause: "internal error (panic in the decision)".into(),
        });
    match decision {
        Decision::Accepted {
            account,
            credential,
        } => {
            if !header_safe(&account) {
                let mut line = String::from("face=http result=NO reason=unavailable");
                text_into(
                    &mut line,
                    "cause",
                    "account name cannot be sent as Auth-User",
                );
                value_into(&mut line, "account", account.as_bytes());
                line_end(&mut line);
                log.err(&line);
                return Answer::unavailable(proto);
            }
            let mut line = String::from("face=http result=OK");
            value_into(&mut line, "account", account.as_bytes());
            text_into(&mut line, "credential", &credential.to_string());
            text_into(&mut line, "backend", &backend.to_string());
            line_end(&mut line);
            log.info(&line);
            Answer::accepted(backend, account)
        }
        Decision::Refused {
            reason,
            detail,
            delay,
            ..
        } => {
            let mut line = String::from("face=http result=NO reason=");
            line.push_str(reason.name());
            text_into(&mut line, "detail", &detail);
            line_end(&mut line);
            log.notice(&line);
            Answer::refused(reason, proto, delay.max(fail_delay), req.attempt)
        }
        Decision::Unavailable { cause } => {
            let mut line = String::from("face=http result=NO reason=unavailable");
            text_into(&mut line, "cause", &cause);
            line_end(&mut line);
            log.err(&line);
            Answer::unavailable(proto)
        }
    }
}
