//! Service names as an operator types them: normalised through
//! `service_aliases`, and where a service is granted, refused or asked about,
//! checked against the services the site knows, so that a typo (`imapp`) is an
//! error instead of a rule that silently matches nothing.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::names;
use crate::store::AdminStore;
use std::collections::BTreeSet;

/// A comma-separated list, normalised, not checked (a plan's list is where new
/// service names come from).
pub(super) fn list(cfg: &Config, raw: &str) -> Result<Vec<String>> {
    let list =
        names::service_list(raw, &cfg.service_aliases).map_err(|e| Error::Usage(e.to_string()))?;
    if list.is_empty() {
        return Err(Error::Usage("empty service list".into()));
    }
    Ok(list)
}

/// A comma-separated list of known services (or `*`).
pub(super) fn known_list(cfg: &Config, store: &dyn AdminStore, raw: &str) -> Result<Vec<String>> {
    let parsed = list(cfg, raw)?;
    let known = known(cfg, store)?;
    for s in &parsed {
        check(&known, s)?;
    }
    Ok(parsed)
}

/// One known service, normalised.
pub(super) fn known_one(cfg: &Config, store: &dyn AdminStore, raw: &str) -> Result<String> {
    let s =
        names::service_name(raw, &cfg.service_aliases).map_err(|e| Error::Usage(e.to_string()))?;
    check(&known(cfg, store)?, &s)?;
    Ok(s)
}

/// The services the site names: every plan's, the targets of
/// `service_aliases`, `restricted_services` and `tls_required`.
fn known(cfg: &Config, store: &dyn AdminStore) -> Result<BTreeSet<String>> {
    let mut known: BTreeSet<String> = store
        .list_plans()?
        .into_iter()
        .flat_map(|p| p.services)
        .filter(|s| s != "*")
        .collect();
    known.extend(cfg.service_aliases.values().cloned());
    known.extend(cfg.restricted_services.iter().cloned());
    known.extend(cfg.tls_required.iter().cloned());
    Ok(known)
}

fn check(known: &BTreeSet<String>, service: &str) -> Result<()> {
    if service == "*" || known.contains(service) {
        return Ok(());
    }
    let names: Vec<&str> = known.iter().map(String::as_str).collect();
    Err(Error::Usage(format!(
        "unknown service {service:?}; known services: {} (the plans' services, the \
         targets of service_aliases, restricted_services and tls_required), or *; \
         add a new service to a plan first (saslgate plan set)",
        names.join(", ")
    )))
}
