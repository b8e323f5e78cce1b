//! Signing in and out, and typing the password again (re-authentication).
//! Both ask the engine ([`Gate::decide`](saslgate::Gate::decide)) with the
//! service `web`: the throttle, block list, audit and timing rules of mail
//! logins. Only the master password (with a code on two-step accounts)
//! signs in: an app password or a proxy ticket the engine accepts is
//! refused here.

use crate::http::{Req, Resp};
use crate::session::{self, Ctx, COOKIE, PRE_COOKIE};
use crate::{page, App};
use maud::html;
use saslgate::decision::{Credential, Decision, RefuseReason, Request};
use zeroize::Zeroizing;

/// Why a password check did not pass, as the person is told.
pub enum Failed {
    Refused(u16, &'static str),
    Unavailable,
}

/// Checks `account`'s master password (+ code) through the engine.
pub fn verify(
    app: &App,
    req: &Req,
    account: &str,
    password: &str,
    code: &str,
) -> Result<String, Failed> {
    let mut typed = Zeroizing::new(Vec::with_capacity(password.len() + code.len()));
    typed.extend_from_slice(password.as_bytes());
    typed.extend_from_slice(code.trim().as_bytes());
    let decision = app.gate.decide(&Request {
        login: account.trim().as_bytes(),
        password: &typed,
        service: b"web",
        client_addr: Some(req.client.as_bytes()),
        ..Default::default()
    });
    // Refusals are written at once; an acceptance waits for the batch:
    // the person's "Recent logins" page should show this one.
    app.gate.flush();
    const GENERIC: &str = "Sign-in failed: check the account name, the password and (with \
                           two-step login) the code. App passwords do not work here.";
    match decision {
        Decision::Accepted {
            account,
            credential: Credential::Master | Credential::MasterAndTotp | Credential::MasterAndCode,
        } => Ok(account),
        Decision::Accepted { .. } => Err(Failed::Refused(401, GENERIC)),
        Decision::Refused { reason, delay, .. } => {
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            Err(match reason {
                RefuseReason::Throttled => Failed::Refused(
                    429,
                    "Too many failed sign-ins from your address or for this account: wait a few \
                     minutes, then try again.",
                ),
                RefuseReason::Blocked => {
                    Failed::Refused(403, "Access from your address is denied.")
                }
                RefuseReason::Disabled => Failed::Refused(403, "This account is disabled."),
                RefuseReason::NotAllowed => Failed::Refused(
                    403,
                    "This account may not use these pages (the service \"web\" is not allowed).",
                ),
                RefuseReason::BadInput => {
                    Failed::Refused(400, "The account name or password is malformed.")
                }
                _ => Failed::Refused(401, GENERIC),
            })
        }
        Decision::Unavailable { .. } => Err(Failed::Unavailable),
    }
}

fn signin_page(app: &App, status: u16, message: Option<&str>, account: &str) -> Resp {
    let pre = match session::new_token() {
        Ok(t) => t,
        Err(_) => return page::unavailable(),
    };
    let csrf = match signin_csrf(app, &pre) {
        Some(c) => c,
        None => return page::unavailable(),
    };
    page::page(
        status,
        "Sign in",
        None,
        html! {
            @if let Some(m) = message { p.error id="message" { (m) } }
            form method="post" action="/signin" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Account" br; input type="text" name="account" value=(account) autocomplete="username" required; }
                (page::password_fields("Password (your account password, not an app password)"))
                button type="submit" id="signin" { "Sign in" }
            }
        },
    )
    .with_cookie(session::set_cookie(PRE_COOKIE, &pre, Some(3600)))
}

/// The sign-in form's token: a keyed hash (the database's key) of its
/// pre-session cookie, so no state is kept and any host of the same
/// database takes it.
fn signin_csrf(app: &App, pre: &str) -> Option<String> {
    app.with_store(|store| Ok(session::csrf_of(store, b"web-pre", pre)))
        .ok()
}

/// The form, signed in or not (signing in again replaces the session).
pub fn show(app: &App, _req: &Req) -> Resp {
    signin_page(app, 200, None, "")
}

pub fn home(app: &App, req: &Req) -> Resp {
    match session::load(app, req) {
        Ok(_) => Resp::redirect("/apps"),
        Err(session::NoSession::Unavailable) => page::unavailable(),
        Err(session::NoSession::Ended) => {
            signin_page(app, 200, Some("Your session ended; sign in again."), "")
                .with_cookie(session::clear_cookie(COOKIE))
        }
        Err(session::NoSession::None) => signin_page(app, 200, None, ""),
    }
}

pub fn submit(app: &App, req: &Req) -> Resp {
    let f = &req.form;
    let account = f.get("account");
    let pre_ok = session::cookie_value(req, PRE_COOKIE)
        .and_then(|pre| signin_csrf(app, pre))
        .is_some_and(|want| {
            f.count("csrf") == 1
                && saslgate::secret::ct_eq(want.as_bytes(), f.get("csrf").as_bytes())
        });
    if !pre_ok {
        return signin_page(
            app,
            403,
            Some(
                "This sign-in form expired or came from another page; nothing was sent. Try again.",
            ),
            "",
        );
    }
    if ["account", "password", "code"]
        .iter()
        .any(|k| f.count(k) > 1)
    {
        return signin_page(app, 400, Some("The form was malformed; try again."), "");
    }
    let name = match verify(app, req, account, f.get("password"), f.get("code")) {
        Ok(name) => name,
        Err(Failed::Unavailable) => return page::unavailable(),
        Err(Failed::Refused(status, text)) => return signin_page(app, status, Some(text), account),
    };
    let Ok(token) = session::new_token() else {
        return page::unavailable();
    };
    let now = app.now();
    let made = app.with_store(|store| {
        let acct = store
            .find_account(&name)?
            .ok_or_else(|| saslgate::Error::NotFound(name.clone()))?;
        // Sessions past their timeouts that nobody came back to go now.
        let web = &app.config().web;
        store.web_sessions_prune(
            now - web.session_idle.as_secs() as i64,
            now - web.session_max.as_secs() as i64,
        )?;
        // The browser's earlier session, if any, is replaced (never kept).
        if let Some(old) = session::cookie_value(req, COOKIE) {
            if let Some(s) = store.web_session_get(&session::token_hash(store, old))? {
                store.web_session_delete(s.account_id, s.id)?;
            }
        }
        let hash = session::token_hash(store, &token);
        store.web_session_insert(&hash, acct.id, now, &req.client, &req.user_agent)
    });
    match made {
        Ok(_) => Resp::redirect("/apps")
            .with_cookie(session::set_cookie(COOKIE, &token, None))
            .with_cookie(session::clear_cookie(PRE_COOKIE)),
        Err(_) => page::unavailable(),
    }
}

pub fn signout(app: &App, req: &Req) -> Resp {
    let ctx = match session::for_post(app, req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let s = &ctx.session;
    match app.with_store(|store| store.web_session_delete(s.account_id, s.id)) {
        Ok(_) => page::signed_out("You are signed out.").with_cookie(session::clear_cookie(COOKIE)),
        Err(_) => page::unavailable(),
    }
}

/// The pages a re-authentication may return to.
const NEXT: &[&str] = &["/apps", "/two-step", "/password", "/sessions"];

pub fn reauth(app: &App, req: &Req) -> Resp {
    let ctx: Ctx = match session::for_post(app, req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let next = NEXT
        .iter()
        .find(|n| **n == req.form.get("next"))
        .copied()
        .unwrap_or("/apps");
    let f = &req.form;
    match verify(
        app,
        req,
        &ctx.session.account,
        f.get("password"),
        f.get("code"),
    ) {
        Ok(_) => {}
        Err(Failed::Unavailable) => return page::unavailable(),
        Err(Failed::Refused(status, text)) => {
            return page::reauth_needed(&ctx, next, Some(text)).with_status(status);
        }
    }
    let now = app.now();
    match app.with_store(|store| store.web_session_reauth(ctx.session.id, now)) {
        Ok(()) => Resp::redirect(next),
        Err(_) => page::unavailable(),
    }
}
