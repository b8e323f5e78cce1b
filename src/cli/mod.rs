//! The `saslgate` admin command. Plain safe Rust over the store and the engine.
//!
//! Output rules (doc/design.md section 8): generated secrets go to stdout, alone
//! on their line, once; everything meant for a person goes to stderr unless it is
//! the answer to the command (lists, `show`, `log`, `explain`); `--json` gives
//! machine-readable output. Exit codes: 0 success, 1 refused or not found,
//! 2 usage, 3 unavailable.

mod aliases;
mod args;
mod copy;
mod routing;
mod services;

use crate::config::{self, Config};
use crate::engine::{policy_denial, Decision, Gate, Request};
use crate::error::{Error, Result};
use crate::names;
use crate::secret::SecretBytes;
use crate::store::AdminStore;
use crate::timefmt;
use crate::totp;
use args::*;
use clap::Parser;
use std::io::{IsTerminal, Read, Write};

/// Entry point of the `saslgate` binary; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("saslgate: {e}");
            e.exit_code()
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config> {
    let mut cfg = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::load_optional(std::path::Path::new(config::DEFAULT_CONFIG))?,
    };
    if let Some(db) = &cli.db {
        cfg.db = db.clone();
    }
    Ok(cfg)
}

fn out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    stdout.flush()?;
    Ok(())
}

fn json<T: serde::Serialize>(value: &T) -> Result<()> {
    out(&serde_json::to_string_pretty(value)?)
}

fn opt_text(text: Option<&str>) -> &str {
    text.filter(|t| !t.is_empty()).unwrap_or("-")
}

fn opt_time(ts: Option<i64>) -> String {
    ts.map_or_else(|| "-".to_string(), timefmt::format)
}

/// `saslgate init [--login-role NAME] [--proxy-role NAME] [--web-role NAME]`.
fn init(cfg: &Config, roles: [Option<&str>; 3]) -> Result<i32> {
    use crate::store::pg::schema::{grant_role, RoleKind};
    let [login_role, proxy_role, web_role] = roles;
    let roles: Vec<(&str, RoleKind)> = [
        (login_role, RoleKind::Login),
        (proxy_role, RoleKind::Proxy),
        (web_role, RoleKind::Web),
    ]
    .into_iter()
    .filter_map(|(name, kind)| name.map(|n| (n, kind)))
    .collect();
    if roles.is_empty() {
        crate::store::create(cfg)?;
        eprintln!("saslgate: created {}", cfg.db.display());
        return Ok(0);
    }
    if !matches!(cfg.database(), config::Database::Postgres(_)) {
        return Err(Error::Usage(
            "--login-role, --proxy-role and --web-role are for a PostgreSQL database (SQLite \
             has no roles)"
                .into(),
        ));
    }
    for (i, (a, _)) in roles.iter().enumerate() {
        if roles[i + 1..].iter().any(|(b, _)| a == b) {
            return Err(Error::Usage(
                "--login-role, --proxy-role and --web-role must name different roles (the \
                 login role must not issue proxy tickets nor write credentials)"
                    .into(),
            ));
        }
    }
    let store = match crate::store::pg::PgStore::create(cfg) {
        Ok(s) => {
            eprintln!("saslgate: created {}", cfg.db.display());
            s
        }
        Err(Error::Exists(_)) => crate::store::pg::PgStore::open(cfg)?,
        Err(e) => return Err(e),
    };
    for (role, kind) in roles {
        grant_role(&store, role, kind)?;
        match kind {
            RoleKind::Login => {
                eprintln!("saslgate: login role {role} has the login privileges only")
            }
            RoleKind::Proxy => eprintln!(
                "saslgate: proxy role {role} has the login privileges and issues proxy \
                 tickets (imap, pop, at most 10 minutes)"
            ),
            RoleKind::Web => eprintln!(
                "saslgate: web role {role} has the login privileges and what saslgate-web's \
                 pages change (sessions, app passwords, two-step login, codes, master \
                 password; reads the audit)"
            ),
        }
    }
    Ok(0)
}

fn run(cli: Cli) -> Result<i32> {
    let cfg = load_config(&cli)?;
    if let Command::Init {
        login_role,
        proxy_role,
        web_role,
    } = &cli.command
    {
        return init(
            &cfg,
            [
                login_role.as_deref(),
                proxy_role.as_deref(),
                web_role.as_deref(),
            ],
        );
    }
    if let Command::Backup { path } = &cli.command {
        crate::store::backup(&cfg, path)?;
        eprintln!(
            "saslgate: backed up {} to {}",
            cfg.db.display(),
            path.display()
        );
        return Ok(0);
    }
    if let Command::Restore { path } = &cli.command {
        crate::store::restore(&cfg, path)?;
        eprintln!(
            "saslgate: restored {} from {}",
            cfg.db.display(),
            path.display()
        );
        return Ok(0);
    }
    if let Command::Verify(args) = &cli.command {
        return verify(&cfg, args, cli.json);
    }
    if let Command::Copy { to, force } = &cli.command {
        return copy::copy(&cfg, to, *force, cli.json);
    }
    let mut store = crate::store::open_admin(&cfg)?;
    let store = &mut *store;
    match cli.command {
        Command::Init { .. }
        | Command::Backup { .. }
        | Command::Restore { .. }
        | Command::Verify(_)
        | Command::Copy { .. } => {
            unreachable!("handled above")
        }
        Command::User(cmd) => user(store, cmd, cli.json)?,
        Command::Backend(cmd) => routing::backend(store, &cfg, cmd, cli.json)?,
        Command::Alias(cmd) => aliases::alias(store, cmd, cli.json)?,
        Command::Block(cmd) => aliases::block(store, cmd, cli.json)?,
        Command::Passwd {
            name,
            stdin,
            revoke_app_passwords,
        } => {
            let pw = read_new_password(stdin)?;
            store.set_master_password(&name, &pw, revoke_app_passwords)?;
            eprintln!(
                "saslgate: password set for {name}{}",
                if revoke_app_passwords {
                    "; app passwords revoked"
                } else {
                    ""
                }
            );
        }
        Command::AppPassword(cmd) => app_password(store, &cfg, cmd, cli.json)?,
        Command::Totp(TotpCmd::Enable { name, secret }) => {
            let secret = match secret {
                Some(text) => totp::decode_secret(&text).ok_or_else(|| {
                    Error::Usage("--secret: not a base32 secret of at least 80 bits".into())
                })?,
                None => crate::crypto::random_bytes(20)
                    .map_err(|e| Error::from(std::io::Error::other(e)))?,
            };
            let account = names::account_name(&name).map_err(|e| Error::Usage(e.to_string()))?;
            store.enable_totp(&account, &secret)?;
            let uri = totp::otpauth_uri("saslgate", &account, &secret);
            out(&uri)?;
            if std::io::stdout().is_terminal() {
                print_qr(&uri);
            }
            eprintln!(
                "saslgate: two-step login on for {account}: log in with the password immediately followed by the 6-digit code"
            );
        }
        Command::Totp(TotpCmd::Disable { name }) => store.disable_totp(&name)?,
        Command::Codes(CodesCmd::Generate { name, count }) => {
            let codes = store.generate_codes(&name, count)?;
            let mut text = String::new();
            for c in &codes {
                text.push_str(&String::from_utf8_lossy(c.as_bytes()));
                text.push('\n');
            }
            print!("{text}");
            std::io::stdout().flush()?;
            eprintln!("saslgate: {count} one-time codes for {name} (each works once, after the password); earlier codes are void");
        }
        Command::Service(cmd) => {
            let (name, service, allow) = match cmd {
                ServiceCmd::Allow { name, service } => (name, service, Some(true)),
                ServiceCmd::Deny { name, service } => (name, service, Some(false)),
                ServiceCmd::Clear { name, service } => (name, service, None),
            };
            // Clearing takes any name, so that an override set before names
            // were checked can still be removed.
            let service = match allow {
                Some(_) => services::known_one(&cfg, &*store, &service)?,
                None => service,
            };
            store.set_service_override(&name, &service, allow)?;
        }
        Command::Plan(PlanCmd::Set { plan, services }) => {
            let list = if services.trim() == "*" {
                vec!["*".to_string()]
            } else {
                services::list(&cfg, &services)?
            };
            store.set_plan_services(&plan, &list)?;
        }
        Command::Plan(PlanCmd::List) => {
            let plans = store.list_plans()?;
            if cli.json {
                json(&plans)?;
            } else {
                for p in plans {
                    out(&format!(
                        "{:<16} {:<30} {} accounts",
                        p.name,
                        p.services.join(","),
                        p.accounts
                    ))?;
                }
            }
        }
        Command::Log { name, since, limit } => {
            let since = since
                .map(|s| timefmt::parse_since(&s, timefmt::now()))
                .transpose()?;
            let entries = store.audit_entries(name.as_deref(), since, limit)?;
            if cli.json {
                json(&entries)?;
            } else {
                for e in entries {
                    out(&format!(
                        "{} {:<24} {:<6} {:<16} {:<11} {:<16} {}{}",
                        timefmt::format(e.ts),
                        e.account.unwrap_or_default(),
                        e.service.unwrap_or_default(),
                        e.client_addr.unwrap_or_else(|| "-".into()),
                        e.outcome,
                        e.reason.unwrap_or_else(|| "-".into()),
                        e.detail.unwrap_or_default(),
                        e.credential.map(|c| format!(" [{c}]")).unwrap_or_default(),
                    ))?;
                }
            }
        }
        Command::Explain { name, service } => {
            return explain(store, &cfg, &name, &service, cli.json)
        }
    }
    Ok(0)
}

fn user(store: &mut dyn AdminStore, cmd: UserCmd, as_json: bool) -> Result<()> {
    match cmd {
        UserCmd::Add { name, plan } => {
            let name = store.add_account(&name, &plan)?;
            eprintln!("saslgate: added {name} (plan {plan}); set a password with `saslgate passwd {name}`");
        }
        UserCmd::List => {
            let list = store.list_accounts()?;
            if as_json {
                json(&list)?;
            } else {
                for a in list {
                    out(&format!(
                        "{:<32} {:<12} {:<8} {:<9} apps={} last-login={}",
                        a.name,
                        a.plan,
                        if a.disabled { "disabled" } else { "enabled" },
                        if a.totp || a.codes_left > 0 {
                            "two-step"
                        } else {
                            "-"
                        },
                        a.app_passwords,
                        opt_time(a.last_login)
                    ))?;
                }
            }
        }
        UserCmd::Show { name } => {
            let a = store.account_info(&name)?;
            if as_json {
                json(&a)?;
            } else {
                let overrides: Vec<String> = a
                    .overrides
                    .iter()
                    .map(|(s, allow)| format!("{}{s}", if *allow { "+" } else { "-" }))
                    .collect();
                out(&format!("account:        {}", a.name))?;
                out(&format!("plan:           {}", a.plan))?;
                out(&format!(
                    "status:         {}",
                    if a.disabled { "disabled" } else { "enabled" }
                ))?;
                out(&format!(
                    "master password: {}",
                    if a.has_password { "set" } else { "not set" }
                ))?;
                out(&format!(
                    "totp:           {}",
                    if a.totp { "on" } else { "off" }
                ))?;
                out(&format!("one-time codes: {} unused", a.codes_left))?;
                out(&format!("app passwords:  {} active", a.app_passwords))?;
                out(&format!(
                    "overrides:      {}",
                    if overrides.is_empty() {
                        "-".into()
                    } else {
                        overrides.join(" ")
                    }
                ))?;
                let backends: Vec<String> =
                    a.backends.iter().map(|(p, b)| format!("{p}={b}")).collect();
                out(&format!(
                    "backends:       {}",
                    if backends.is_empty() {
                        "- ([http.backends] defaults)".into()
                    } else {
                        backends.join(" ")
                    }
                ))?;
                let aliases = a.aliases.join(" ");
                out(&format!("aliases:        {}", opt_text(Some(&aliases))))?;
                out(&format!("created:        {}", timefmt::format(a.created)))?;
                out(&format!("last login:     {}", opt_time(a.last_login)))?;
            }
        }
        UserCmd::Disable { name } => store.set_disabled(&name, true)?,
        UserCmd::Enable { name } => store.set_disabled(&name, false)?,
        UserCmd::Delete { name } => store.delete_account(&name)?,
        UserCmd::SetPlan { name, plan } => store.set_plan(&name, &plan)?,
        UserCmd::SetBackend {
            name,
            protocol,
            backend,
            clear: _,
        } => routing::set_backend(store, &name, &protocol, backend.as_deref())?,
    }
    Ok(())
}

fn app_password(
    store: &mut dyn AdminStore,
    cfg: &Config,
    cmd: AppCmd,
    as_json: bool,
) -> Result<()> {
    match cmd {
        AppCmd::Add {
            name,
            label,
            services,
            restricted,
            expires,
        } => {
            let services = match services {
                Some(s) => services::known_list(cfg, &*store, &s)?,
                None => Vec::new(),
            };
            let expires = expires
                .map(|e| config::parse_duration(&e).map(|d| timefmt::now() + d.as_secs() as i64))
                .transpose()?;
            let (id, shown) =
                store.add_app_password(&name, &label, &services, restricted, expires)?;
            out(&String::from_utf8_lossy(shown.as_bytes()))?;
            eprintln!(
                "saslgate: app password {id} ({label}) for {name}: shown once; spaces and dashes are optional when typing it"
            );
        }
        AppCmd::List { name } => {
            let list = store.list_app_passwords(&name)?;
            if as_json {
                json(&list)?;
            } else {
                for a in list {
                    let state = if a.revoked.is_some() {
                        "revoked".to_string()
                    } else if a.expires.is_some_and(|e| e <= timefmt::now()) {
                        "expired".to_string()
                    } else {
                        "active".to_string()
                    };
                    out(&format!(
                        "{:<4} {:<20} {:<8} services={}{} expires={} last-used={}",
                        a.id,
                        a.label,
                        state,
                        if a.services.is_empty() {
                            "(account's)".to_string()
                        } else {
                            a.services.join(",")
                        },
                        if a.restricted { " restricted" } else { "" },
                        opt_time(a.expires),
                        opt_time(a.last_used)
                    ))?;
                }
            }
        }
        AppCmd::Revoke { name, id } => store.revoke_app_password(&name, id)?,
    }
    Ok(())
}

fn verify(cfg: &Config, args: &VerifyArgs, as_json: bool) -> Result<i32> {
    let mut password = Vec::new();
    std::io::stdin().lock().read_to_end(&mut password)?;
    let mut password = SecretBytes::new(password);
    password.trim_line_end();
    let gate = Gate::new(cfg.clone());
    let decision = gate.decide(&Request {
        login: args.name.as_bytes(),
        password: password.as_bytes(),
        service: args.service.as_bytes(),
        realm: args.realm.as_deref().map(str::as_bytes),
        client_addr: args.ip.as_deref().map(str::as_bytes),
        local_addr: None,
        secure: match (args.tls, args.plain) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
    });
    gate.flush();
    let (code, value) = match &decision {
        Decision::Accepted {
            account,
            credential,
        } => (
            0,
            serde_json::json!({"outcome": "accepted", "account": account, "credential": credential.to_string()}),
        ),
        Decision::Refused {
            reason,
            detail,
            retry_after,
            ..
        } => (
            1,
            serde_json::json!({"outcome": "refused", "reason": reason.name(), "message": reason.public_text(),
                "detail": detail, "retry_after": retry_after.map(|d| d.as_secs())}),
        ),
        Decision::Unavailable { cause } => (
            3,
            serde_json::json!({"outcome": "unavailable", "cause": cause}),
        ),
    };
    if as_json {
        json(&value)?;
    } else {
        match decision {
            Decision::Accepted {
                account,
                credential,
            } => out(&format!("accepted: {account} ({credential})"))?,
            Decision::Refused { reason, detail, .. } => {
                out(&format!("refused: {} ({detail})", reason.public_text()))?
            }
            Decision::Unavailable { cause } => out(&format!("unavailable: {cause}"))?,
        }
    }
    Ok(code)
}

fn explain(
    store: &dyn AdminStore,
    cfg: &Config,
    name: &str,
    service: &str,
    as_json: bool,
) -> Result<i32> {
    let service = services::known_one(cfg, store, service)?;
    let (acct, apps) = store.explain_rows(name)?;
    let now = timefmt::now();
    let mut lines: Vec<(String, Option<String>)> = Vec::new();
    let account_rule = if acct.disabled {
        Some("account disabled".to_string())
    } else {
        None
    };
    let master = match (&acct.password_hash, &account_rule) {
        (None, _) => Some("no master password set".to_string()),
        (_, Some(r)) => Some(r.clone()),
        _ => policy_denial(store, &acct, &service, None)?,
    };
    let master_label = match (acct.totp_secret.is_some(), acct.has_codes) {
        (true, _) => "master password + TOTP code",
        (false, true) => "master password + one-time code",
        _ => "master password",
    };
    lines.push((master_label.to_string(), master));
    for app in &apps {
        let rule = if app.revoked.is_some() {
            Some("revoked".to_string())
        } else if app.expires.is_some_and(|e| e <= now) {
            Some("expired".to_string())
        } else if let Some(r) = &account_rule {
            Some(r.clone())
        } else {
            policy_denial(store, &acct, &service, Some(app))?
        };
        lines.push((format!("app password {} ({})", app.id, app.label), rule));
    }
    let any = lines.iter().any(|(_, r)| r.is_none());
    let routes = routing::routes(store, cfg, &acct.name)?;
    if as_json {
        let items: Vec<_> = lines
            .iter()
            .map(|(c, r)| serde_json::json!({"credential": c, "allowed": r.is_none(), "rule": r}))
            .collect();
        json(
            &serde_json::json!({"account": acct.name, "service": service, "credentials": items, "backends": routes}),
        )?;
    } else {
        out(&format!("{} on {service} (plan {}):", acct.name, acct.plan))?;
        for (c, r) in &lines {
            match r {
                None => out(&format!("  {c}: can log in"))?,
                Some(rule) => out(&format!("  {c}: cannot: {rule}"))?,
            }
        }
        out(&format!(
            "  auth_http backends: {}",
            routing::routes_text(&routes)
        ))?;
    }
    Ok(if any { 0 } else { 1 })
}

/// Reads a new master password: prompted twice on a terminal, else one line of stdin.
fn read_new_password(from_stdin: bool) -> Result<SecretBytes> {
    if !from_stdin && std::io::stdin().is_terminal() {
        let first = SecretBytes::new(rpassword::prompt_password("New password: ")?.into_bytes());
        let second =
            SecretBytes::new(rpassword::prompt_password("Repeat password: ")?.into_bytes());
        if !crate::secret::ct_eq(first.as_bytes(), second.as_bytes()) {
            return Err(Error::Usage("passwords do not match".into()));
        }
        return Ok(first);
    }
    let mut buf = Vec::new();
    std::io::stdin().lock().read_to_end(&mut buf)?;
    let mut pw = SecretBytes::new(buf);
    // Only the first line counts (a trailing newline from echo is not part of it).
    if let Some(pos) = pw.as_bytes().iter().position(|&b| b == b'\n') {
        pw = SecretBytes::from_slice(&pw.as_bytes()[..pos]);
    }
    pw.trim_line_end();
    if pw.is_empty() {
        return Err(Error::Usage("empty password".into()));
    }
    Ok(pw)
}

fn print_qr(uri: &str) {
    if let Ok(code) = qrcode::QrCode::new(uri.as_bytes()) {
        let image = code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build();
        println!("{image}");
    }
}
