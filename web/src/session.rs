//! Sessions: a random 256-bit token in a `__Host-` cookie (`Secure`,
//! `HttpOnly`, `SameSite=Strict`); the database keeps only its keyed hash.
//! Each session's form token is another keyed hash of the same token, so a
//! form is good only in the session that rendered it. Sign-in forms get a
//! pre-session cookie and token of their own (login forgery).

use crate::http::{Req, Resp};
use crate::{page, App};
use data_encoding::{BASE64URL_NOPAD, HEXLOWER};
use saslgate::store::web::{WebSession, WebStore};
use zeroize::Zeroizing;

pub const COOKIE: &str = "__Host-saslgate";
pub const PRE_COOKIE: &str = "__Host-saslgate-pre";

/// A signed-in request: the session row and its form token.
pub struct Ctx {
    pub session: WebSession,
    pub csrf: String,
}

/// A new random token (32 bytes, base64url).
pub fn new_token() -> Result<Zeroizing<String>, String> {
    let mut raw = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(raw.as_mut()).map_err(|e| format!("no randomness: {e}"))?;
    Ok(Zeroizing::new(BASE64URL_NOPAD.encode(raw.as_ref())))
}

/// The cookie's value, if the request has a well-formed one.
pub fn cookie_value<'a>(req: &'a Req, name: &str) -> Option<&'a str> {
    req.cookie
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| v.len() == 43 && BASE64URL_NOPAD.decode(v.as_bytes()).is_ok())
}

pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> String {
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict{age}")
}

pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

pub fn token_hash(store: &dyn WebStore, token: &str) -> [u8; 32] {
    store.fingerprint(&[b"web-session", token.as_bytes()])
}

pub fn csrf_of(store: &dyn WebStore, label: &[u8], token: &str) -> String {
    HEXLOWER.encode(&store.fingerprint(&[label, token.as_bytes()]))
}

/// Why a request has no usable session.
pub enum NoSession {
    /// No cookie, or one no session has (signed out, ended elsewhere).
    None,
    /// Idle or absolute timeout reached, or the account was disabled.
    Ended,
    Unavailable,
}

/// The request's session, checked against the timeouts (an expired one is
/// deleted) and marked used.
pub fn load(app: &App, req: &Req) -> Result<Ctx, NoSession> {
    let Some(token) = cookie_value(req, COOKIE) else {
        return Err(NoSession::None);
    };
    let now = app.now();
    let web = &app.config().web;
    app.with_store(|store| {
        let hash = token_hash(store, token);
        let Some(s) = store.web_session_get(&hash)? else {
            return Ok(Err(NoSession::None));
        };
        let idle = now.saturating_sub(s.last_seen) > web.session_idle.as_secs() as i64;
        let old = now.saturating_sub(s.created) > web.session_max.as_secs() as i64;
        if idle || old || s.disabled {
            store.web_session_delete(s.account_id, s.id)?;
            return Ok(Err(NoSession::Ended));
        }
        // One write a second at most (the idle timeout counts seconds).
        if now > s.last_seen {
            store.web_session_touch(s.id, now)?;
        }
        let csrf = csrf_of(store, b"web-csrf", token);
        Ok(Ok(Ctx { session: s, csrf }))
    })
    .unwrap_or(Err(NoSession::Unavailable))
}

/// The page for a request that needs a session and has none.
pub fn no_session_page(why: NoSession, post: bool) -> Resp {
    match why {
        NoSession::Unavailable => page::unavailable(),
        NoSession::Ended => page::signed_out(
            "Your session has ended (unused for too long, or signed in too long ago). Sign in \
             again; nothing was changed.",
        )
        .with_cookie(clear_cookie(COOKIE)),
        NoSession::None if post => page::signed_out(
            "You are not signed in (signed out, or the session was ended elsewhere), so this \
             form was not accepted and nothing was changed. Sign in again.",
        ),
        NoSession::None => Resp::redirect("/signin"),
    }
}

/// A signed-in POST: session present and current, form token right.
pub fn for_post(app: &App, req: &Req) -> Result<Ctx, Resp> {
    let ctx = load(app, req).map_err(|w| no_session_page(w, true))?;
    if req.form.count("csrf") != 1
        || !saslgate::secret::ct_eq(req.form.get("csrf").as_bytes(), ctx.csrf.as_bytes())
    {
        return Err(page::error(
            403,
            "Form expired",
            "This form does not belong to your current session (an old page, or a page from \
             another site), so nothing was changed. Open the page again and resubmit.",
        ));
    }
    Ok(ctx)
}

/// A signed-in GET.
pub fn for_get(app: &App, req: &Req) -> Result<Ctx, Resp> {
    load(app, req).map_err(|w| no_session_page(w, false))
}

/// The master password was typed within `reauth_window`.
pub fn recently_authenticated(app: &App, ctx: &Ctx) -> bool {
    let window = app.config().web.reauth_window.as_secs() as i64;
    app.now().saturating_sub(ctx.session.reauth_at) <= window
}
