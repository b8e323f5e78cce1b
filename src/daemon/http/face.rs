//! One `auth_http` request through the engine: the routing word before the
//! decision (no backend, backend on hold), the mapping to a [`Request`], the
//! decision, the route of the verified account, the log line and the
//! [`Answer`].

use super::request::{AuthRequest, Method};
use super::response::{header_safe, Answer};
use super::route::{self, Route};
use super::ticket;
use crate::daemon::log::{text_into, value_into, Logger};
use crate::engine::{Decision, Gate, OpenId, Request, Routed};
use crate::http_config::PROTOCOLS;
use crate::store::LoginStore;
use crate::timefmt::now;
use std::time::Duration;

/// nginx's word for "ask again after `Auth-Wait` seconds, with the same
/// credentials, without telling the client" (`s->auth_wait` in
/// ngx_mail_auth_http_module.c; any other text is shown to the client).
const WAIT_STATUS: &str = "WAIT";

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
    let unavailable = |cause: &str, account: Option<&str>| -> Answer {
        let mut line = String::from("face=http result=NO reason=unavailable");
        text_into(&mut line, "cause", cause);
        if let Some(a) = account {
            value_into(&mut line, "account", a.as_bytes());
        }
        line_end(&mut line);
        log.err(&line);
        Answer::unavailable(proto)
    };
    let started = std::time::Instant::now();
    // nginx always sends Client-IP. Without it the throttle would know no
    // address: refused, like nginx's other refusals.
    if req.client_ip.is_none() {
        let mut line = String::from("face=http result=NO reason=no-client-ip");
        text_into(&mut line, "detail", "no Client-IP (nginx always sends one)");
        line_end(&mut line);
        log.notice(&line);
        return Answer::malformed(proto);
    }
    if let Method::Unsupported(m) = &req.method {
        let mut line = String::from("face=http result=NO reason=unsupported-method");
        value_into(&mut line, "method", m.as_bytes());
        line_end(&mut line);
        log.notice(&line);
        return Answer::unsupported_method(proto);
    }
    let Some(protocol) = PROTOCOLS.iter().copied().find(|p| *p == proto) else {
        return unavailable(
            &format!("no backend for protocol {proto} (imap, pop3 or smtp)"),
            None,
        );
    };
    let addr = client.as_deref().map(str::as_bytes);
    let request = Request {
        login: &req.user,
        password: &req.pass,
        service: proto.as_bytes(),
        realm: None,
        client_addr: addr,
        local_addr: None,
        // nginx sends `Auth-SSL: on` for a client on TLS (direct or after STARTTLS).
        secure: Some(req.ssl),
    };
    // A hold or a missing route is told only to a verified credential: the
    // engine decides first (block list, throttle, credential, policy) and
    // asks the stop before a code is used (see route.rs).
    let view = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| route::view(gate)))
        .unwrap_or_else(|_| {
            Err(crate::Error::Storage(
                "internal error (panic in routing)".into(),
            ))
        });
    let view = match view {
        Ok(view) => view,
        Err(e) => return unavailable(&e.to_string(), None),
    };
    let no_route = || {
        format!("no {protocol} backend for the account (none of its own, none in [http.backends])")
    };
    let word = std::cell::RefCell::new(None);
    let decision = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if !view.may_stop(&gate.config().http, protocol) {
            return Routed::Decided(gate.decide(&request));
        }
        let stop = |store: &dyn LoginStore, open: OpenId, account: &str| {
            let w = route::word(gate, store, open, account, protocol)?;
            let stops = !matches!(w, route::Word::Go(_));
            *word.borrow_mut() = Some(w);
            Ok(stops)
        };
        gate.decide_routed(&request, &stop)
    }))
    .unwrap_or_else(|_| {
        Routed::Decided(Decision::Unavailable {
            cause: "internal error (panic in the decision)".into(),
        })
    });
    let (decision, checked) = match (decision, word.into_inner()) {
        (Routed::Stopped { account }, Some(route::Word::Held { route, since })) => {
            return held(gate, log, proto, Some(&account), route, since, &line_end)
        }
        (Routed::Stopped { account }, Some(route::Word::NoRoute)) => {
            return unavailable(&no_route(), Some(&account))
        }
        (Routed::Stopped { account }, _) => {
            return unavailable("internal error (stopped without a word)", Some(&account))
        }
        (Routed::Decided(d), Some(route::Word::Go(route))) => (d, Some(route)),
        (Routed::Decided(d), _) => (d, None),
    };

    match decision {
        Decision::Accepted {
            account,
            credential,
        } => {
            if !header_safe(&account) {
                return unavailable("account name cannot be sent as Auth-User", Some(&account));
            }
            // Routed by the account the engine verified (its canonical name):
            // the stop's route, else the view's.
            let routed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match checked {
                Some(route) => Ok(Some(route)),
                None => route::after_decision(gate, &view, &account, protocol),
            }))
            .unwrap_or_else(|_| {
                Err(crate::Error::Storage(
                    "internal error (panic in routing)".into(),
                ))
            });
            let route = match routed {
                Ok(Some(route)) => route,
                Ok(None) => return unavailable(&no_route(), Some(&account)),
                Err(e) => return unavailable(&e.to_string(), Some(&account)),
            };
            // After a two-step login nginx gets a single-use ticket for the
            // backend (Auth-Pass), not the password and code just used.
            let pass = match ticket::pass_for(gate, &account, &credential, protocol, route.backend)
            {
                Ok(pass) => pass,
                Err(cause) => return unavailable(&cause, Some(&account)),
            };
            let mut line = String::from("face=http result=OK");
            value_into(&mut line, "account", account.as_bytes());
            text_into(&mut line, "credential", &credential.to_string());
            text_into(&mut line, "backend", &route.backend.to_string());
            line.push_str(" route=");
            line.push_str(route.source.name());
            if pass.is_some() {
                line.push_str(" ticket=issued");
            }
            line_end(&mut line);
            log.info(&line);
            Answer::accepted(route.backend, account).with_pass(pass)
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
            // The account's slow-down is enforced, not only advertised: the
            // answer leaves no sooner than its delay after the request came
            // (the engine keeps the account's next check as far off); nginx
            // then adds only --fail-delay.
            let wait = if delay.is_zero() {
                delay.max(fail_delay)
            } else {
                std::thread::sleep(delay.saturating_sub(started.elapsed()));
                fail_delay
            };
            Answer::refused(reason, proto, wait, req.attempt)
        }
        Decision::Unavailable { cause } => unavailable(&cause, None),
    }
}

/// The answer while the account's backend is on hold: `WAIT` (nginx asks
/// again in a second, the client sees nothing), or, once the hold is older
/// than `[http] max_hold`, the temporary failure.
fn held(
    gate: &Gate,
    log: &Logger,
    proto: &str,
    account: Option<&str>,
    route: Route,
    since: i64,
    line_end: &dyn Fn(&mut String),
) -> Answer {
    let max_hold = gate.config().http.max_hold;
    let age = now().saturating_sub(since).max(0);
    let expired = u64::try_from(age).unwrap_or(0) >= max_hold.as_secs();
    let mut line = String::from(if expired {
        "face=http result=NO reason=unavailable"
    } else {
        "face=http result=WAIT reason=backend-held"
    });
    if expired {
        text_into(
            &mut line,
            "cause",
            &format!(
                "backend on hold for longer than max_hold ({}s)",
                max_hold.as_secs()
            ),
        );
    }
    if let Some(a) = account {
        value_into(&mut line, "account", a.as_bytes());
    }
    text_into(&mut line, "backend", &route.backend.to_string());
    line.push_str(" route=");
    line.push_str(route.source.name());
    line.push_str(" held=yes hold_age=");
    line.push_str(&age.to_string());
    line.push('s');
    line_end(&mut line);
    if expired {
        log.err(&line);
        return Answer::unavailable(proto);
    }
    log.info(&line);
    Answer {
        status: WAIT_STATUS,
        wait: Some(1),
        error_code: None,
        accepted: None,
        pass: None,
    }
}
