//! What operator listings show (both backends; the changes themselves are
//! in `sql/admin.rs`).

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct AccountInfo {
    pub name: String,
    pub plan: String,
    pub disabled: bool,
    pub has_password: bool,
    pub totp: bool,
    pub codes_left: i64,
    pub app_passwords: i64,
    pub created: i64,
    pub last_login: Option<i64>,
    /// Per-account service overrides: (service, allowed).
    pub overrides: Vec<(String, bool)>,
    /// The account's own backends for the `auth_http` face: (protocol,
    /// `IP:PORT`); other protocols use `[http.backends]`.
    pub backends: Vec<(String, String)>,
    /// Login aliases of the account, sorted.
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppPasswordInfo {
    pub id: i64,
    pub label: String,
    pub services: Vec<String>,
    pub restricted: bool,
    pub created: i64,
    pub expires: Option<i64>,
    pub revoked: Option<i64>,
    pub last_used: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanInfo {
    pub name: String,
    pub services: Vec<String>,
    pub accounts: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub ts: i64,
    pub account: Option<String>,
    pub service: Option<String>,
    pub client_addr: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub credential: Option<String>,
}
