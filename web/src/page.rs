//! The HTML around every page (maud escapes every value it inserts), the
//! error pages and the stylesheet. No script anywhere.

use crate::http::Resp;
use crate::session::Ctx;
use maud::{html, Markup, DOCTYPE};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:52rem;margin:1rem auto;padding:0 1rem;color:#222}\
nav a,nav button{margin-right:.8rem}nav form{display:inline}\
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ccc;padding:.3rem;text-align:left;font-size:.92rem}\
.secret{font-family:monospace;font-size:1.6rem;letter-spacing:.08em;background:#f4f4d0;padding:.6rem;display:inline-block}\
.error{background:#fde8e8;border-left:4px solid #c00;padding:.5rem}.note{background:#eef4fd;border-left:4px solid #36c;padding:.5rem}\
label{display:block;margin:.4rem 0}input[type=text],input[type=password]{font-size:1rem;padding:.2rem;width:18rem}\
fieldset{margin:.6rem 0}.codes{font-family:monospace;font-size:1.3rem;columns:2}\
@media print{nav,form{display:none}}";

pub fn stylesheet() -> Resp {
    let mut r = Resp::html(200, STYLE.to_string());
    r.content_type = "text/css; charset=utf-8";
    r
}

/// A whole page. `ctx`: signed in (navigation and sign-out shown).
pub fn layout(title: &str, ctx: Option<&Ctx>, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " - Password & Security" }
                link rel="stylesheet" href="/style.css";
            }
            body {
                @if let Some(c) = ctx {
                    nav {
                        a href="/apps" { "App passwords" }
                        a href="/two-step" { "Two-step login" }
                        a href="/password" { "Password" }
                        a href="/logins" { "Recent logins" }
                        a href="/sessions" { "Sessions" }
                        form method="post" action="/signout" {
                            input type="hidden" name="csrf" value=(c.csrf);
                            button type="submit" id="signout" { "Sign out " (c.session.account) }
                        }
                    }
                }
                h1 { (title) }
                (body)
            }
        }
    }
    .into_string()
}

pub fn page(status: u16, title: &str, ctx: Option<&Ctx>, body: Markup) -> Resp {
    Resp::html(status, layout(title, ctx, body))
}

pub fn error(status: u16, title: &str, text: &str) -> Resp {
    page(
        status,
        title,
        None,
        html! { p.error { (text) } p { a href="/apps" { "Back to your account" } } },
    )
}

pub fn unavailable() -> Resp {
    error(
        503,
        "Unavailable",
        "The account database cannot be reached right now; nothing was changed. Try again later.",
    )
}

pub fn signed_out(text: &str) -> Resp {
    page(
        401,
        "Not signed in",
        None,
        html! { p.error { (text) } p { a href="/signin" { "Sign in" } } },
    )
}

/// The hidden form token every signed-in form carries.
pub fn csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf); }
}

/// A time as the pages show it (UTC).
pub fn when(ts: Option<i64>) -> String {
    match ts {
        Some(t) => saslgate::timefmt::format(t),
        None => "-".to_string(),
    }
}

/// Password (and code) fields, for sign-in and re-authentication.
pub fn password_fields(label: &str) -> Markup {
    html! {
        label { (label) br; input type="password" name="password" autocomplete="current-password" required; }
        label { "Code (only with two-step login: 6 digits from the app, or a one-time code)" br;
            input type="text" name="code" autocomplete="one-time-code" inputmode="numeric"; }
    }
}

/// The page asking for the master password again before a credential
/// change; the change itself must then be submitted again.
pub fn reauth_needed(ctx: &Ctx, next: &str, message: Option<&str>) -> Resp {
    page(
        403,
        "Confirm it is you",
        Some(ctx),
        html! {
            @if let Some(m) = message { p.error id="message" { (m) } }
            p.note { "Changing a password or two-step login needs your account password, typed \
                      in the last few minutes. Nothing was changed yet: confirm, then submit \
                      your change again." }
            form method="post" action="/reauth" {
                (csrf(ctx))
                input type="hidden" name="next" value=(next);
                (password_fields("Account password"))
                button type="submit" id="reauth" { "Confirm" }
            }
        },
    )
}
