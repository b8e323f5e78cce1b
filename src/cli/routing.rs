//! `saslgate user set-backend`, `saslgate backend hold|release|list`, and the
//! routes `explain` shows: where saslgated's `auth_http` face sends an
//! account's logins (its own backend, else `[http.backends]`), and the holds.

use super::args::BackendCmd;
use super::{json, out};
use crate::config::Config;
use crate::error::Result;
use crate::http_config::PROTOCOLS;
use crate::store::AdminStore;
use crate::timefmt;
use serde::Serialize;

/// `saslgate user set-backend NAME PROTOCOL IP:PORT` (or `--clear`).
pub(super) fn set_backend(
    store: &mut dyn AdminStore,
    name: &str,
    protocol: &str,
    backend: Option<&str>,
) -> Result<()> {
    let changed = store.set_account_backend(name, protocol, backend)?;
    let protocol = protocol.trim().to_ascii_lowercase();
    match (backend, changed) {
        (Some(_), _) => {
            let now_at = store
                .account_backends(name)?
                .into_iter()
                .find(|(p, _)| *p == protocol)
                .map(|(_, b)| b)
                .unwrap_or_default();
            let what = if changed { "now" } else { "already" };
            eprintln!("saslgate: {name} {protocol} logins {what} go to {now_at}");
        }
        (None, true) => {
            eprintln!("saslgate: {name} {protocol} logins go to the [http.backends] default")
        }
        (None, false) => eprintln!(
            "saslgate: {name} had no own {protocol} backend (the [http.backends] default applies)"
        ),
    }
    Ok(())
}

/// One backend as `backend list` shows it.
#[derive(Serialize)]
struct BackendLine {
    backend: String,
    /// Accounts routed to it by `set-backend`.
    accounts: i64,
    /// Protocols it is the `[http.backends]` default of.
    default_for: Vec<String>,
    held_since: Option<i64>,
}

/// `saslgate backend hold|release|list`.
pub(super) fn backend(
    store: &mut dyn AdminStore,
    cfg: &Config,
    cmd: BackendCmd,
    as_json: bool,
) -> Result<()> {
    match cmd {
        BackendCmd::Hold { backend } => {
            let (since, newly) = store.hold_backend(&backend)?;
            if newly {
                eprintln!(
                    "saslgate: {} on hold: its logins wait (at most {}) until `saslgate backend release` or `saslgate user set-backend`",
                    backend.trim(),
                    humantime::format_duration(cfg.http.max_hold)
                );
            } else {
                eprintln!(
                    "saslgate: {} already on hold since {}",
                    backend.trim(),
                    timefmt::format(since)
                );
            }
        }
        BackendCmd::Release { backend } => {
            store.release_backend(&backend)?;
            eprintln!("saslgate: {} released", backend.trim());
        }
        BackendCmd::List => {
            let mut lines: Vec<BackendLine> = store
                .list_backends()?
                .into_iter()
                .map(|b| BackendLine {
                    backend: b.backend,
                    accounts: b.accounts,
                    default_for: Vec::new(),
                    held_since: b.held_since,
                })
                .collect();
            for (protocol, addr) in &cfg.http.backends {
                let addr = addr.to_string();
                match lines.iter_mut().find(|l| l.backend == addr) {
                    Some(l) => l.default_for.push(protocol.clone()),
                    None => lines.push(BackendLine {
                        backend: addr,
                        accounts: 0,
                        default_for: vec![protocol.clone()],
                        held_since: None,
                    }),
                }
            }
            lines.sort_by(|a, b| a.backend.cmp(&b.backend));
            if as_json {
                return json(&lines);
            }
            for l in lines {
                let default = if l.default_for.is_empty() {
                    "-".to_string()
                } else {
                    format!("default:{}", l.default_for.join(","))
                };
                let held = match l.held_since {
                    Some(since) => format!("held since {}", timefmt::format(since)),
                    None => "-".into(),
                };
                out(&format!(
                    "{:<24} accounts={:<6} {:<24} {held}",
                    l.backend, l.accounts, default
                ))?;
            }
        }
    }
    Ok(())
}

/// Where the face sends one protocol's logins of an account.
#[derive(Serialize)]
pub(super) struct Route {
    pub(super) protocol: &'static str,
    /// `None`: no backend (logins refused as unavailable).
    pub(super) backend: Option<String>,
    /// `account` (set-backend) or `default` ([http.backends]).
    pub(super) source: Option<&'static str>,
    pub(super) held_since: Option<i64>,
}

/// Every protocol's route for `account` (for `explain`).
pub(super) fn routes(store: &dyn AdminStore, cfg: &Config, account: &str) -> Result<Vec<Route>> {
    let own = store.account_backends(account)?;
    let holds = store.backend_holds()?;
    Ok(PROTOCOLS
        .iter()
        .map(|&protocol| {
            let (backend, source) = match own.iter().find(|(p, _)| p == protocol) {
                Some((_, b)) => (Some(b.clone()), Some("account")),
                None => match cfg.http.backends.get(protocol) {
                    Some(a) => (Some(a.to_string()), Some("default")),
                    None => (None, None),
                },
            };
            let held_since = backend
                .as_ref()
                .and_then(|b| holds.iter().find(|(h, _)| h == b).map(|(_, s)| *s));
            Route {
                protocol,
                backend,
                source,
                held_since,
            }
        })
        .collect())
}

/// `explain`'s text line for the routes.
pub(super) fn routes_text(routes: &[Route]) -> String {
    let parts: Vec<String> = routes
        .iter()
        .map(|r| match (&r.backend, r.source) {
            (Some(b), Some(source)) => {
                let held = match r.held_since {
                    Some(s) => format!(", on hold since {}", timefmt::format(s)),
                    None => String::new(),
                };
                format!("{} {b} ({source}{held})", r.protocol)
            }
            _ => format!("{} none (refused)", r.protocol),
        })
        .collect();
    parts.join("; ")
}
