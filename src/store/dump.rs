//! A whole database as plain values, independent of the backend: what
//! `saslgate copy` reads from one store ([`AdminStore::export_all`]) and writes
//! into another ([`AdminStore::import_all`]).
//!
//! Everything a login depends on is in it, unchanged: the keyed-hash key (app
//! passwords and one-time codes are found by HMAC(key, account id, secret), so
//! the key **and the account ids** must be kept exactly), bcrypt hashes, TOTP
//! secrets and last accepted steps, codes (used and unused), app passwords with
//! their revocations and expiry, plans, per-account overrides, the throttle's
//! rows (an address blocked before the copy stays blocked), the audit trail,
//! login aliases, the address block list, per-account backends and backend
//! holds (a hold keeps its start, so `max_hold` runs on). The generation is not
//! carried: the target gets a new one (every process drops what it cached).
//!
//! Not carried: `proxy_tickets`. A ticket is single-use and lives about a
//! minute, bound to the backend it was issued for; copying it could only let
//! it be used twice (once on each database). The target's own tickets are
//! deleted by the import, like every other row.
//!
//! Rows are ordered by their key so that two dumps of equal databases are
//! equal; `saslgate copy` re-reads the target after the import and compares.
//! Secrets are [`SecretBytes`] (wiped on drop, never shown by `Debug`) and
//! compared in constant time.
//!
//! [`AdminStore::export_all`]: super::AdminStore::export_all
//! [`AdminStore::import_all`]: super::AdminStore::import_all

use crate::error::{Error, Result};
use crate::secret::{ct_eq, SecretBytes};

/// A secret column (key, password hash, TOTP secret, throttle fingerprint).
#[derive(Clone, Debug)]
pub struct DumpSecret(pub SecretBytes);

impl PartialEq for DumpSecret {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl DumpSecret {
    pub fn new(bytes: Vec<u8>) -> Self {
        DumpSecret(SecretBytes::new(bytes))
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
    /// As text (bcrypt hashes are ASCII); a non-UTF-8 value is a corrupt row.
    pub fn as_str(&self) -> Result<&str> {
        std::str::from_utf8(self.as_bytes())
            .map_err(|_| Error::Storage("a password hash is not text".into()))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlanDump {
    pub name: String,
    /// As stored: a comma list, `*` for every service.
    pub services: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AccountDump {
    pub id: i64,
    pub name: String,
    pub plan: String,
    pub disabled: bool,
    pub password_hash: Option<DumpSecret>,
    pub password_changed: Option<i64>,
    pub totp_secret: Option<DumpSecret>,
    pub totp_last_step: i64,
    pub created: i64,
    pub last_login: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OverrideDump {
    pub account_id: i64,
    pub service: String,
    pub allow: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AppPasswordDump {
    pub id: i64,
    pub account_id: i64,
    pub label: String,
    /// HMAC(key, account id, password): the index the login looks up.
    pub lookup: Vec<u8>,
    /// As stored: a comma list, empty for whatever the account may use.
    pub services: String,
    pub restricted: bool,
    pub created: i64,
    pub expires: Option<i64>,
    pub revoked: Option<i64>,
    pub last_used: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CodeDump {
    pub id: i64,
    pub account_id: i64,
    pub lookup: Vec<u8>,
    pub created: i64,
    pub used: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ThrottleDump {
    pub key: String,
    pub failures: i64,
    pub window_start: i64,
    pub blocked_until: i64,
    pub last_bad: Option<DumpSecret>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AuditDump {
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

#[derive(Clone, Debug, PartialEq)]
pub struct AliasDump {
    pub alias: String,
    pub account_id: i64,
    pub created: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BlockDump {
    /// `ADDRESS/LEN`, the network address.
    pub network: String,
    pub note: Option<String>,
    pub created: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AccountBackendDump {
    pub account_id: i64,
    pub protocol: String,
    pub backend: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BackendHoldDump {
    pub backend: String,
    pub since: i64,
}

/// A whole saslgate database. Each list is ordered by its key (id, or name).
#[derive(Clone, Debug, PartialEq)]
pub struct Dump {
    pub hmac_key: DumpSecret,
    pub plans: Vec<PlanDump>,
    pub accounts: Vec<AccountDump>,
    pub overrides: Vec<OverrideDump>,
    pub app_passwords: Vec<AppPasswordDump>,
    pub codes: Vec<CodeDump>,
    pub throttle: Vec<ThrottleDump>,
    pub audit: Vec<AuditDump>,
    /// By alias.
    pub aliases: Vec<AliasDump>,
    /// By network.
    pub blocks: Vec<BlockDump>,
    /// By account id, then protocol.
    pub account_backends: Vec<AccountBackendDump>,
    /// By backend.
    pub backend_holds: Vec<BackendHoldDump>,
}

/// Rows per table, as `saslgate copy` reports and checks them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DumpCounts {
    pub plans: usize,
    pub accounts: usize,
    pub overrides: usize,
    pub app_passwords: usize,
    pub codes: usize,
    pub throttle: usize,
    pub audit: usize,
    pub aliases: usize,
    pub blocks: usize,
    pub account_backends: usize,
    pub backend_holds: usize,
}

impl std::fmt::Display for DumpCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} accounts, {} app passwords, {} one-time codes, {} plans, {} overrides, \
             {} throttle rows, {} audit records, {} aliases, {} blocks, {} account backends, \
             {} backend holds",
            self.accounts,
            self.app_passwords,
            self.codes,
            self.plans,
            self.overrides,
            self.throttle,
            self.audit,
            self.aliases,
            self.blocks,
            self.account_backends,
            self.backend_holds
        )
    }
}

/// The plan every new database has (schema migration 0 -> 1).
pub const DEFAULT_PLAN: (&str, &str) = ("default", "*");

impl Dump {
    pub fn counts(&self) -> DumpCounts {
        DumpCounts {
            plans: self.plans.len(),
            accounts: self.accounts.len(),
            overrides: self.overrides.len(),
            app_passwords: self.app_passwords.len(),
            codes: self.codes.len(),
            throttle: self.throttle.len(),
            audit: self.audit.len(),
            aliases: self.aliases.len(),
            blocks: self.blocks.len(),
            account_backends: self.account_backends.len(),
            backend_holds: self.backend_holds.len(),
        }
    }

    /// No accounts, no audit, no throttle rows, and no plan but the untouched
    /// default one: what `saslgate init` leaves. Anything else is a database in
    /// use, which `import_all` overwrites only when forced.
    pub fn is_empty_database(counts: &DumpCounts, plans: &[PlanDump]) -> bool {
        counts.accounts == 0
            && counts.app_passwords == 0
            && counts.codes == 0
            && counts.overrides == 0
            && counts.throttle == 0
            && counts.audit == 0
            && counts.aliases == 0
            && counts.blocks == 0
            && counts.account_backends == 0
            && counts.backend_holds == 0
            && plans
                .iter()
                .all(|p| (p.name.as_str(), p.services.as_str()) == DEFAULT_PLAN)
    }

    /// Why `other` is not a faithful copy of `self`: the first table whose
    /// count or content differs. Ok when they are equal.
    pub fn check_copy(&self, other: &Dump) -> Result<()> {
        let (want, got) = (self.counts(), other.counts());
        if want != got {
            return Err(Error::Storage(format!(
                "copy check failed: source has {want}; target has {got}"
            )));
        }
        let differs = [
            ("the keyed-hash key", self.hmac_key != other.hmac_key),
            ("plans", self.plans != other.plans),
            ("accounts", self.accounts != other.accounts),
            ("service overrides", self.overrides != other.overrides),
            ("app passwords", self.app_passwords != other.app_passwords),
            ("one-time codes", self.codes != other.codes),
            ("throttle rows", self.throttle != other.throttle),
            ("audit records", self.audit != other.audit),
            ("aliases", self.aliases != other.aliases),
            ("blocks", self.blocks != other.blocks),
            (
                "account backends",
                self.account_backends != other.account_backends,
            ),
            ("backend holds", self.backend_holds != other.backend_holds),
        ];
        match differs.iter().find(|(_, d)| *d) {
            Some((what, _)) => Err(Error::Storage(format!(
                "copy check failed: {what} differ between source and target"
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump() -> Dump {
        Dump {
            hmac_key: DumpSecret::new(vec![7; 32]),
            plans: vec![PlanDump {
                name: "default".into(),
                services: "*".into(),
            }],
            accounts: vec![AccountDump {
                id: 3,
                name: "alice".into(),
                plan: "default".into(),
                disabled: false,
                password_hash: Some(DumpSecret::new(b"$2b$04$abc".to_vec())),
                password_changed: Some(1),
                totp_secret: None,
                totp_last_step: 0,
                created: 1,
                last_login: None,
            }],
            overrides: vec![],
            app_passwords: vec![],
            codes: vec![],
            throttle: vec![],
            audit: vec![],
            aliases: vec![],
            blocks: vec![],
            account_backends: vec![AccountBackendDump {
                account_id: 3,
                protocol: "imap".into(),
                backend: "10.0.0.1:143".into(),
            }],
            backend_holds: vec![],
        }
    }

    #[test]
    fn check_copy_finds_any_difference() {
        let a = dump();
        assert!(a.check_copy(&a.clone()).is_ok());
        let mut b = a.clone();
        b.hmac_key = DumpSecret::new(vec![8; 32]);
        assert!(a.check_copy(&b).unwrap_err().to_string().contains("key"));
        let mut b = a.clone();
        b.accounts[0].password_hash = Some(DumpSecret::new(b"$2b$04$abd".to_vec()));
        assert!(a
            .check_copy(&b)
            .unwrap_err()
            .to_string()
            .contains("accounts"));
        let mut b = a.clone();
        b.account_backends[0].backend = "10.0.0.2:143".into();
        assert!(a
            .check_copy(&b)
            .unwrap_err()
            .to_string()
            .contains("account backends"));
        let mut b = a.clone();
        b.accounts.clear();
        assert!(a
            .check_copy(&b)
            .unwrap_err()
            .to_string()
            .contains("0 accounts"));
    }

    #[test]
    fn secrets_never_shown() {
        let text = format!("{:?}", dump());
        assert!(!text.contains("abc"), "{text}");
    }

    #[test]
    fn empty_means_what_init_leaves() {
        let mut d = dump();
        d.accounts.clear();
        assert!(!Dump::is_empty_database(&d.counts(), &d.plans));
        d.account_backends.clear();
        assert!(Dump::is_empty_database(&d.counts(), &d.plans));
        d.plans[0].services = "imap".into();
        assert!(!Dump::is_empty_database(&d.counts(), &d.plans));
        let d = dump();
        assert!(!Dump::is_empty_database(&d.counts(), &d.plans));
        let mut d = dump();
        d.accounts.clear();
        d.account_backends.clear();
        d.backend_holds.push(BackendHoldDump {
            backend: "10.0.0.1:143".into(),
            since: 1,
        });
        assert!(!Dump::is_empty_database(&d.counts(), &d.plans));
    }
}
