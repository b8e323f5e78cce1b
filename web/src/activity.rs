//! What the person can see of their account's use: recent logins (their
//! own audit records, paged) and their signed-in sessions.

use crate::http::{Req, Resp};
use crate::session::{self, Ctx};
use crate::{page, App};
use maud::{html, Markup};

/// Audit records per page.
const PAGE: usize = 25;

pub fn logins(app: &App, req: &Req) -> Resp {
    let ctx = match session::for_get(app, req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let before = form_urlencoded::parse(req.query.as_bytes())
        .find(|(k, _)| k == "before")
        .and_then(|(_, v)| v.parse::<i64>().ok());
    let rows = match app.with_store(|s| s.web_audit_page(&ctx.session.account, before, PAGE)) {
        Ok(r) => r,
        Err(_) => return page::unavailable(),
    };
    page::page(
        200,
        "Recent logins",
        Some(&ctx),
        html! {
            p { "Logins to your account, newest first, as far back as the server keeps them." }
            table id="logins" {
                tr { th { "Time (UTC)" } th { "Service" } th { "Address" } th { "Credential" } th { "Result" } }
                @for r in &rows {
                    tr {
                        td { (page::when(Some(r.ts))) }
                        td { (r.service.as_deref().unwrap_or("-")) }
                        td { (r.client_addr.as_deref().unwrap_or("-")) }
                        td { (r.credential.as_deref().unwrap_or("-")) }
                        td.result { (r.outcome) @if let Some(why) = &r.reason { " (" (why) ")" } }
                    }
                }
            }
            @if rows.len() == PAGE {
                @if let Some(last) = rows.last() {
                    p { a id="older" href={ "/logins?before=" (last.id) } { "Older" } }
                }
            }
        },
    )
}

fn sessions_page(app: &App, ctx: &Ctx, status: u16, top: Markup) -> Resp {
    let list = match app.with_store(|s| s.web_sessions_of(ctx.session.account_id)) {
        Ok(l) => l,
        Err(_) => return page::unavailable(),
    };
    page::page(
        status,
        "Sessions",
        Some(ctx),
        html! {
            (top)
            table id="sessions" {
                tr { th { "Signed in (UTC)" } th { "Last used" } th { "Address" } th { "Browser" } th {} }
                @for s in &list {
                    tr {
                        td { (page::when(Some(s.created))) }
                        td { (page::when(Some(s.last_seen))) }
                        td { (s.client_addr) }
                        td { (s.user_agent) }
                        td {
                            @if s.id == ctx.session.id { "this session" } @else {
                                form method="post" action="/sessions/end" {
                                    (page::csrf(ctx))
                                    input type="hidden" name="id" value=(s.id);
                                    button type="submit" class="end" { "Sign out" }
                                }
                            }
                        }
                    }
                }
            }
            form method="post" action="/sessions/end-others" {
                (page::csrf(ctx))
                button type="submit" id="end-others" { "Sign out every other session" }
            }
        },
    )
}

pub fn sessions(app: &App, req: &Req) -> Resp {
    match session::for_get(app, req) {
        Ok(ctx) => sessions_page(app, &ctx, 200, html! {}),
        Err(r) => r,
    }
}

pub fn end_one(app: &App, req: &Req) -> Resp {
    let ctx = match session::for_post(app, req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(id) = req.form.get("id").parse::<i64>() else {
        return sessions_page(
            app,
            &ctx,
            400,
            html! { p.error id="message" { "No such session; nothing was changed." } },
        );
    };
    match app.with_store(|s| s.web_session_delete(ctx.session.account_id, id)) {
        Ok(true) => sessions_page(
            app,
            &ctx,
            200,
            html! { p.note id="message" { "That session is signed out." } },
        ),
        Ok(false) => sessions_page(
            app,
            &ctx,
            400,
            html! { p.error id="message" { "That session had ended already; nothing was changed." } },
        ),
        Err(_) => page::unavailable(),
    }
}

pub fn end_others(app: &App, req: &Req) -> Resp {
    let ctx = match session::for_post(app, req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let s = &ctx.session;
    match app.with_store(|store| store.web_sessions_end_others(s.account_id, s.id)) {
        Ok(n) => sessions_page(
            app,
            &ctx,
            200,
            html! { p.note id="message" { "Other sessions signed out: " (n) "." } },
        ),
        Err(_) => page::unavailable(),
    }
}
