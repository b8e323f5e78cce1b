//! App passwords: the list, a new one (shown once), revoking one.

use crate::http::{Req, Resp};
use crate::session::{self, Ctx};
use crate::{page, App};
use maud::{html, Markup};
use saslgate::store::types::AppPasswordInfo;
use saslgate::store::web::{LastUseSeen, WebStore};
use saslgate::Error;

/// Services offered when the plan allows every service (`*`).
const COMMON: [&str; 4] = ["imap", "pop", "smtp", "sieve"];

/// Expiry choices: (form value, text, seconds).
const EXPIRY: [(&str, &str, i64); 4] = [
    ("never", "never", 0),
    ("30d", "in 30 days", 30 * 86400),
    ("90d", "in 90 days", 90 * 86400),
    ("365d", "in a year", 365 * 86400),
];

/// The services the account may use, as the form offers them (`web` left
/// out: app passwords never sign in here).
fn offered(store: &dyn WebStore, account: &str) -> saslgate::Result<Vec<String>> {
    let info = store.account_info(account)?;
    let plan = store.plan_services(&info.plan)?.unwrap_or_default();
    let mut out: Vec<String> = if plan.iter().any(|s| s == "*") {
        COMMON.iter().map(|s| s.to_string()).collect()
    } else {
        plan
    };
    for (service, allow) in &info.overrides {
        if *allow && !out.contains(service) {
            out.push(service.clone());
        }
    }
    out.retain(|s| s != "web" && !info.overrides.iter().any(|(o, a)| o == s && !a));
    Ok(out)
}

struct Listing {
    apps: Vec<AppPasswordInfo>,
    uses: Vec<(i64, LastUseSeen)>,
    offered: Vec<String>,
}

fn read(app: &App, ctx: &Ctx) -> saslgate::Result<Listing> {
    let name = &ctx.session.account;
    app.with_store(|store| {
        Ok(Listing {
            apps: store.list_app_passwords(name)?,
            uses: store.web_app_last_uses(name)?,
            offered: offered(store, name)?,
        })
    })
}

fn state(app: &App, a: &AppPasswordInfo) -> &'static str {
    if a.revoked.is_some() {
        "revoked"
    } else if a.expires.is_some_and(|e| e <= app.now()) {
        "expired"
    } else {
        "active"
    }
}

fn listing_page(app: &App, ctx: &Ctx, status: u16, top: Markup) -> Resp {
    let l = match read(app, ctx) {
        Ok(l) => l,
        Err(_) => return page::unavailable(),
    };
    page::page(
        status,
        "App passwords",
        Some(ctx),
        html! {
            (top)
            p { "An app password lets one device or program log in to mail without your \
                 account password (and without two-step codes). Revoke it when you lose the device." }
            table id="apps" {
                tr { th { "Label" } th { "Services" } th { "Restricted" } th { "Created" }
                     th { "Expires" } th { "Last used" } th { "State" } th {} }
                @for a in &l.apps {
                    @let used = l.uses.iter().find(|(i, _)| *i == a.id).map(|(_, u)| u);
                    tr {
                        td.label { (a.label) }
                        td { @if a.services.is_empty() { "all allowed" } @else { (a.services.join(", ")) } }
                        td { @if a.restricted { "yes" } @else { "no" } }
                        td { (page::when(Some(a.created))) }
                        td { (page::when(a.expires)) }
                        td {
                            (page::when(a.last_used))
                            @if let Some(u) = used {
                                " (" (u.service.as_deref().unwrap_or("-"))
                                @if let Some(addr) = &u.client_addr { " from " (addr) }
                                ")"
                            }
                        }
                        td.state { (state(app, a)) }
                        td {
                            @if a.revoked.is_none() {
                                form method="post" action="/apps/revoke" {
                                    (page::csrf(ctx))
                                    input type="hidden" name="id" value=(a.id);
                                    button type="submit" class="revoke" { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "New app password" }
            form method="post" action="/apps/new" {
                (page::csrf(ctx))
                label { "Label (which device or program)" br;
                    input type="text" name="label" maxlength="64" required; }
                fieldset {
                    legend { "Services (none ticked: every service your account may use)" }
                    @for s in &l.offered {
                        label { input type="checkbox" name="service" value=(s); " " (s) }
                    }
                }
                label { input type="checkbox" name="restricted" value="1";
                    " Restricted (only the services allowed to restricted credentials, e.g. a scanner that sends mail)" }
                label { "Expires " select name="expires" {
                    @for (v, t, _) in EXPIRY { option value=(v) { (t) } }
                } }
                button type="submit" id="create" { "Create app password" }
            }
        },
    )
}

pub fn list(app: &App, req: &Req) -> Resp {
    match session::for_get(app, req) {
        Ok(ctx) => listing_page(app, &ctx, 200, html! {}),
        Err(r) => r,
    }
}

fn bad(app: &App, ctx: &Ctx, status: u16, text: &str) -> Resp {
    listing_page(
        app,
        ctx,
        status,
        html! { p.error id="message" { (text) " Nothing was changed." } },
    )
}

pub fn create(app: &App, req: &Req) -> Resp {
    let ctx = match session::for_post(app, req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !session::recently_authenticated(app, &ctx) {
        return page::reauth_needed(&ctx, "/apps", None);
    }
    let f = &req.form;
    if ["label", "restricted", "expires"]
        .iter()
        .any(|k| f.count(k) > 1)
    {
        return bad(app, &ctx, 400, "The form was malformed.");
    }
    let label = f.get("label").trim().to_string();
    let Some((_, _, secs)) = EXPIRY.iter().find(|(v, _, _)| *v == f.get("expires")) else {
        return bad(app, &ctx, 400, "Unknown expiry.");
    };
    let expires = (*secs > 0).then(|| app.now() + secs);
    let restricted = f.get("restricted") == "1";
    let name = ctx.session.account.clone();
    let wanted: Vec<String> = f.all("service").iter().map(|s| s.to_string()).collect();
    let made = app.with_store(|store| {
        let offered = offered(store, &name)?;
        if let Some(s) = wanted.iter().find(|s| !offered.contains(s)) {
            return Err(Error::Usage(format!("unknown or not allowed service {s:?}")));
        }
        let active = store.list_app_passwords(&name)?;
        let now = app.now();
        if active
            .iter()
            .any(|a| a.label == label && a.revoked.is_none() && a.expires.is_none_or(|e| e > now))
        {
            return Err(Error::Exists(format!(
                "you already have an app password labelled {label:?} (sent twice?): revoke it or choose another label"
            )));
        }
        store.add_app_password(&name, &label, &wanted, restricted, expires)
    });
    let (_, shown) = match made {
        Ok(v) => v,
        Err(Error::Usage(m)) | Err(Error::Exists(m)) => return bad(app, &ctx, 400, &m),
        Err(_) => return page::unavailable(),
    };
    let typed = String::from_utf8_lossy(shown.as_bytes()).replace('-', " ");
    let resp = listing_page(
        app,
        &ctx,
        200,
        html! {
            div.note {
                p { "Your new app password for " b { (label) } " (shown only now: type it into the device, then leave this page):" }
                p { span.secret id="secret" { (typed) } }
                p { "Spaces are optional; upper or lower case both work." }
            }
        },
    );
    let mut typed = typed;
    zeroize::Zeroize::zeroize(&mut typed);
    resp
}

pub fn revoke(app: &App, req: &Req) -> Resp {
    let ctx = match session::for_post(app, req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !session::recently_authenticated(app, &ctx) {
        return page::reauth_needed(&ctx, "/apps", None);
    }
    let Ok(id) = req.form.get("id").parse::<i64>() else {
        return bad(app, &ctx, 400, "No such app password.");
    };
    let name = ctx.session.account.clone();
    let done = app.with_store(|store| {
        let list = store.list_app_passwords(&name)?;
        match list.iter().find(|a| a.id == id) {
            None => Err(Error::NotFound("No such app password.".into())),
            Some(a) if a.revoked.is_some() => Err(Error::NotFound(format!(
                "The app password {:?} was revoked already.",
                a.label
            ))),
            Some(_) => store.revoke_app_password(&name, id),
        }
    });
    match done {
        Ok(()) => listing_page(
            app,
            &ctx,
            200,
            html! { p.note id="message" { "The app password is revoked: it no longer logs in." } },
        ),
        Err(Error::NotFound(m)) => bad(app, &ctx, 400, &m),
        Err(_) => page::unavailable(),
    }
}
