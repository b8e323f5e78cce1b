//! Two-step login (TOTP enrolment confirmed by a code, turning it off,
//! one-time codes) and the password change. Every change needs the
//! password typed within `reauth_window` and ends the account's other
//! sessions.

use crate::http::{Req, Resp};
use crate::session::{self, Ctx};
use crate::signin::{verify, Failed};
use crate::{page, qr, App};
use maud::{html, Markup, PreEscaped};
use saslgate::secret::SecretBytes;
use saslgate::totp;
use zeroize::Zeroizing;

/// One-time codes per new list.
const CODES: usize = 10;
/// The shortest new master password accepted here.
const MIN_PASSWORD: usize = 10;
/// The longest (bcrypt reads 72 bytes).
const MAX_PASSWORD: usize = 72;

fn two_step_page(app: &App, ctx: &Ctx, status: u16, top: Markup) -> Resp {
    let info = match app.with_store(|s| s.account_info(&ctx.session.account)) {
        Ok(i) => i,
        Err(_) => return page::unavailable(),
    };
    page::page(
        status,
        "Two-step login",
        Some(ctx),
        html! {
            (top)
            p id="state" {
                "Authenticator app (TOTP): " b { @if info.totp { "on" } @else { "off" } }
                ". One-time codes left: " b { (info.codes_left) } "."
            }
            p { "With two-step login on, mail programs need an app password, and these pages \
                 need your password and a code." }
            @if info.totp {
                form method="post" action="/two-step/off" {
                    (page::csrf(ctx))
                    button type="submit" id="totp-off" { "Turn the authenticator app off" }
                }
            } @else {
                form method="post" action="/two-step/start" {
                    (page::csrf(ctx))
                    button type="submit" id="totp-start" { "Set up an authenticator app" }
                }
            }
            h2 { "One-time codes" }
            p { "For when the phone is not at hand: each works once, after the password. A new \
                 list voids the old one." }
            form method="post" action="/codes/new" {
                (page::csrf(ctx))
                button type="submit" id="codes-new" { "Make a new list of " (CODES) " codes" }
            }
        },
    )
}

pub fn two_step(app: &App, req: &Req) -> Resp {
    match session::for_get(app, req) {
        Ok(ctx) => two_step_page(app, &ctx, 200, html! {}),
        Err(r) => r,
    }
}

/// A signed-in POST that changes a credential: re-authenticated recently.
fn changing(app: &App, req: &Req, back: &str) -> Result<Ctx, Resp> {
    let ctx = session::for_post(app, req)?;
    if !session::recently_authenticated(app, &ctx) {
        return Err(page::reauth_needed(&ctx, back, None));
    }
    Ok(ctx)
}

/// The enrolment page: the QR code and the secret as text, and the form
/// that confirms a code. The secret travels in that form (nowhere else is
/// it kept) until a right code turns it on.
fn enrol_page(app: &App, ctx: &Ctx, secret: &[u8], message: Option<&str>) -> Resp {
    let issuer = issuer(app);
    let uri = Zeroizing::new(totp::otpauth_uri(&issuer, &ctx.session.account, secret));
    let svg = match qr::svg(&uri) {
        Some(s) => s,
        None => return page::unavailable(),
    };
    let text = Zeroizing::new(totp::encode_secret(secret));
    let spaced: Zeroizing<String> = Zeroizing::new(
        text.as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    );
    page::page(
        if message.is_some() { 400 } else { 200 },
        "Set up an authenticator app",
        Some(ctx),
        html! {
            @if let Some(m) = message { p.error id="message" { (m) " Two-step login was not changed." } }
            p { "Scan this code with the authenticator app, or type the key by hand (time-based, 6 digits, 30 seconds)." }
            div id="qr" { (PreEscaped(svg)) }
            p { "Key: " span.secret id="totp-secret" { (spaced.as_str()) } }
            form method="post" action="/two-step/confirm" {
                (page::csrf(ctx))
                input type="hidden" name="secret" value=(text.as_str());
                label { "The 6-digit code the app shows now" br;
                    input type="text" name="code" inputmode="numeric" autocomplete="one-time-code" required; }
                button type="submit" id="totp-confirm" { "Turn on" }
            }
        },
    )
}

fn issuer(app: &App) -> String {
    let url = &app.config().web.public_url;
    url.split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ':']).next())
        .filter(|h| !h.is_empty())
        .unwrap_or("saslgate")
        .to_string()
}

pub fn totp_start(app: &App, req: &Req) -> Resp {
    let ctx = match changing(app, req, "/two-step") {
        Ok(c) => c,
        Err(r) => return r,
    };
    match saslgate::crypto::random_bytes(20) {
        Ok(secret) => {
            let secret = SecretBytes::new(secret);
            enrol_page(app, &ctx, secret.as_bytes(), None)
        }
        Err(_) => page::unavailable(),
    }
}

pub fn totp_confirm(app: &App, req: &Req) -> Resp {
    let ctx = match changing(app, req, "/two-step") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(secret) = totp::decode_secret(req.form.get("secret")).map(SecretBytes::new) else {
        return two_step_page(
            app,
            &ctx,
            400,
            html! { p.error id="message" { "The key in the form was malformed; nothing was changed." } },
        );
    };
    let code = req.form.get("code").trim();
    let Some(step) = totp::matching_step(secret.as_bytes(), code.as_bytes(), app.now()) else {
        return enrol_page(
            app,
            &ctx,
            secret.as_bytes(),
            Some("That code does not match (check the phone's clock, then type the current code)."),
        );
    };
    let s = &ctx.session;
    let done = app.with_store(|store| {
        store.enable_totp(&s.account, secret.as_bytes())?;
        // The code that confirmed it does not also sign in.
        store.consume_totp_step(s.account_id, step)?;
        store.web_sessions_end_others(s.account_id, s.id)
    });
    match done {
        Ok(n) => two_step_page(app, &ctx, 200, ended("The authenticator app is on.", n)),
        Err(_) => page::unavailable(),
    }
}

fn ended(what: &str, others: usize) -> Markup {
    html! { p.note id="message" { (what) " Other sessions ended: " (others) "." } }
}

pub fn totp_off(app: &App, req: &Req) -> Resp {
    let ctx = match changing(app, req, "/two-step") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let s = &ctx.session;
    let done = app.with_store(|store| {
        store.disable_totp(&s.account)?;
        store.web_sessions_end_others(s.account_id, s.id)
    });
    match done {
        Ok(n) => two_step_page(app, &ctx, 200, ended("The authenticator app is off.", n)),
        Err(_) => page::unavailable(),
    }
}

pub fn new_codes(app: &App, req: &Req) -> Resp {
    let ctx = match changing(app, req, "/two-step") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let s = &ctx.session;
    let made = app.with_store(|store| {
        let codes = store.generate_codes(&s.account, CODES)?;
        let n = store.web_sessions_end_others(s.account_id, s.id)?;
        Ok((codes, n))
    });
    let (codes, n) = match made {
        Ok(v) => v,
        Err(_) => return page::unavailable(),
    };
    page::page(
        200,
        "Your one-time codes",
        Some(&ctx),
        html! {
            (ended("A new list of codes is made; the old one is void.", n))
            p { "Print this page or write the codes down now: they are shown only once. Each \
                 works once, typed after your password." }
            ol.codes id="codes" {
                @for c in &codes { li { (String::from_utf8_lossy(c.as_bytes())) } }
            }
            p { a href="/two-step" { "Done" } }
        },
    )
}

fn password_form(ctx: &Ctx, status: u16, message: Option<Markup>) -> Resp {
    page::page(
        status,
        "Password",
        Some(ctx),
        html! {
            @if let Some(m) = message { (m) }
            p { "The password of your account (for these pages, and for mail on devices without an \
                 app password). Changing it signs out your other sessions." }
            form method="post" action="/password" {
                (page::csrf(ctx))
                (page::password_fields("Current password"))
                label { "New password (at least " (MIN_PASSWORD) " characters)" br;
                    input type="password" name="new" autocomplete="new-password" required; }
                label { "New password again" br;
                    input type="password" name="new2" autocomplete="new-password" required; }
                button type="submit" id="change-password" { "Change password" }
            }
        },
    )
}

pub fn password_page(app: &App, req: &Req) -> Resp {
    match session::for_get(app, req) {
        Ok(ctx) => password_form(&ctx, 200, None),
        Err(r) => r,
    }
}

pub fn password_change(app: &App, req: &Req) -> Resp {
    let ctx = match session::for_post(app, req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let f = &req.form;
    let fail = |status: u16, text: &str| {
        password_form(
            &ctx,
            status,
            Some(html! { p.error id="message" { (text) " The password was not changed." } }),
        )
    };
    if ["password", "code", "new", "new2"]
        .iter()
        .any(|k| f.count(k) > 1)
    {
        return fail(400, "The form was malformed.");
    }
    let new = f.get("new");
    if !saslgate::secret::ct_eq(new.as_bytes(), f.get("new2").as_bytes()) {
        return fail(400, "The two new passwords differ.");
    }
    if new.chars().count() < MIN_PASSWORD || new.len() > MAX_PASSWORD {
        return fail(400, "The new password must be 10 to 72 bytes long.");
    }
    // The current password (and code) is the re-authentication itself.
    let s = &ctx.session;
    match verify(app, req, &s.account, f.get("password"), f.get("code")) {
        Ok(_) => {}
        Err(Failed::Unavailable) => return page::unavailable(),
        Err(Failed::Refused(status, _)) => {
            return fail(
                status,
                "The current password (or code) is wrong, or there were too many failures.",
            )
        }
    }
    let secret = SecretBytes::from_slice(new.as_bytes());
    let now = app.now();
    let done = app.with_store(|store| {
        store.set_master_password(&s.account, &secret, false)?;
        store.web_session_reauth(s.id, now)?;
        store.web_sessions_end_others(s.account_id, s.id)
    });
    match done {
        Ok(n) => password_form(&ctx, 200, Some(ended("Your password is changed.", n))),
        Err(_) => page::unavailable(),
    }
}
