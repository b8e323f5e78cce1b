//! The rows the store hands out and takes, one type per use, on both
//! backends: what a login reads ([`AccountRow`], [`AppPasswordRow`]) and
//! writes ([`AuditRecord`], [`LastUse`]), and what the operator's listings
//! show ([`AccountInfo`], [`AppPasswordInfo`], [`PlanInfo`], [`AuditEntry`]).
//! A copied table's rows are plain values (`store::dump`), not a type.

use crate::secret::SecretBytes;
use serde::Serialize;

/// What the engine needs to know about an account.
#[derive(Debug)]
pub struct AccountRow {
    pub id: i64,
    pub name: String,
    pub plan: String,
    pub disabled: bool,
    pub password_hash: Option<String>,
    pub totp_secret: Option<SecretBytes>,
    pub totp_last_step: i64,
    /// Has one-time codes (used or not): two-step stays on when TOTP is removed.
    pub has_codes: bool,
}

impl AccountRow {
    pub fn two_step(&self) -> bool {
        self.totp_secret.is_some() || self.has_codes
    }
}

#[derive(Debug)]
pub struct AppPasswordRow {
    pub id: i64,
    pub account_id: i64,
    pub label: String,
    /// Empty: whatever the account may use.
    pub services: Vec<String>,
    pub restricted: bool,
    pub expires: Option<i64>,
    pub revoked: Option<i64>,
}

/// A short text of an audit record: kept inline up to 24 bytes (an account,
/// a service, an address, a credential's name), so buffering a success costs
/// no allocation in the common case.
pub type AuditText = compact_str::CompactString;

/// One audit record.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub ts: i64,
    pub account: Option<AuditText>,
    pub service: Option<AuditText>,
    pub client_addr: Option<AuditText>,
    pub outcome: &'static str,
    pub reason: Option<&'static str>,
    pub detail: Option<String>,
    pub credential: Option<AuditText>,
}

/// A credential's last successful use, written in batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LastUse {
    Account(i64),
    AppPassword(i64),
}

/// The first part of an app password's index key (stored: never changes).
pub(crate) const APP_PASSWORD_TAG: &[u8] = b"app-password";
/// The first part of a one-time code's index key.
pub(crate) const ONE_TIME_CODE_TAG: &[u8] = b"one-time-code";

pub(crate) fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

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
