//! Step 6, service policy: the account override, else the plan's services;
//! then the credential's own services and the restricted list. Used by logins,
//! the fast path (on data already in memory) and `saslgate explain`.

use crate::store::types::{AccountRow, AppPasswordRow};
use crate::store::LoginStore;

fn lists(list: &[String], service: &str) -> bool {
    list.iter().any(|s| s == service || s == "*")
}

/// Step 6, shared by logins and `saslgate explain`: `Some(rule)` names the rule that
/// stops `service` for this account and credential.
pub fn policy_denial(
    store: &dyn LoginStore,
    acct: &AccountRow,
    service: &str,
    app: Option<&AppPasswordRow>,
) -> crate::Result<Option<String>> {
    let account_override = store.service_override(acct.id, service)?;
    // The plan matters only without an override.
    let plan_services = match account_override {
        None => store.plan_services(&acct.plan)?,
        Some(_) => None,
    };
    Ok(policy_rule(
        &acct.plan,
        service,
        account_override,
        plan_services.as_deref(),
        app,
        &store.config().restricted_services,
    ))
}

/// Step 6 on data already read (from the database or the snapshot).
/// `plan_services`: `None` if the plan does not exist; read only without an override.
pub(super) fn policy_rule(
    plan: &str,
    service: &str,
    account_override: Option<bool>,
    plan_services: Option<&[String]>,
    app: Option<&AppPasswordRow>,
    restricted: &[String],
) -> Option<String> {
    match account_override {
        Some(false) => return Some(format!("account override denies {service}")),
        Some(true) => {}
        None => match plan_services {
            None => return Some(format!("plan {plan:?} does not exist")),
            Some(list) if !lists(list, service) => {
                return Some(format!("plan {plan} does not include {service}"))
            }
            Some(_) => {}
        },
    }
    if let Some(app) = app {
        if !app.services.is_empty() && !lists(&app.services, service) {
            return Some(format!(
                "app password {} is limited to {}",
                app.id,
                app.services.join(",")
            ));
        }
        if app.restricted && !lists(restricted, service) {
            return Some(format!(
                "app password {} is restricted to {}",
                app.id,
                restricted.join(",")
            ));
        }
    }
    None
}
