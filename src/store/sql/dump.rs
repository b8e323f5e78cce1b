//! A whole database as plain values, independent of the backend: what
//! `saslgate copy` reads from one store ([`AdminStore::export_all`]) and writes
//! into another ([`AdminStore::import_all`]), driven by one description per
//! copied table ([`TABLES`]): the same list reads, writes, counts and checks
//! on both backends. Adding a copied table is one entry there (and its
//! schema on each dialect).
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
//! deleted by the import, like every other row. Nor `web_sessions`: a
//! session signs a browser in on the database it was made on.
//!
//! Rows are ordered by their key (text in byte order on both backends) so
//! that two dumps of equal databases are equal; `saslgate copy` re-reads the
//! target after the import and compares. Secrets are [`SecretBytes`] (wiped
//! on drop, never shown by `Debug`) and compared in constant time.
//!
//! [`AdminStore::export_all`]: crate::store::AdminStore::export_all
//! [`AdminStore::import_all`]: crate::store::AdminStore::import_all

use super::{Cell, Value};
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

/// What a column holds, as both dialects type it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// bigint / INTEGER.
    Int,
    /// boolean / INTEGER 0-1.
    Bool,
    Text,
    /// bytea / BLOB.
    Bytes,
    /// A secret stored as text (a bcrypt hash).
    SecretText,
    /// A secret stored as bytes.
    SecretBytes,
}

/// `(name, kind)`.
pub type Column = (&'static str, Kind);

/// One copied table.
#[derive(Debug)]
pub struct Table {
    /// Its SQL name.
    pub name: &'static str,
    /// Its count's name in `saslgate copy --json`.
    pub field: &'static str,
    /// What its rows are, in the count line and in the check's message.
    pub shown: &'static str,
    /// Its place in the count line (`saslgate copy`'s report).
    pub shown_at: u8,
    pub columns: &'static [Column],
    /// How many leading columns are the key the rows are ordered by.
    pub key_columns: usize,
    /// Read in pages by its one key column (large tables).
    pub paged: bool,
    /// Its `id` column is an identity on PostgreSQL, moved past the copied
    /// ids after an import.
    pub identity: bool,
}

use Kind::{Bool, Bytes, Int, SecretBytes as SecretB, SecretText, Text};

/// Every copied table, parents before children (foreign keys); the order of
/// the counts in `saslgate copy --json`.
pub const TABLES: &[Table] = &[
    Table {
        name: "plans",
        field: "plans",
        shown: "plans",
        shown_at: 3,
        columns: &[("name", Text), ("services", Text)],
        key_columns: 1,
        paged: false,
        identity: false,
    },
    Table {
        name: "accounts",
        field: "accounts",
        shown: "accounts",
        shown_at: 0,
        columns: &[
            ("id", Int),
            ("name", Text),
            ("plan", Text),
            ("disabled", Bool),
            ("password_hash", SecretText),
            ("password_changed", Int),
            ("totp_secret", SecretB),
            ("totp_last_step", Int),
            ("created", Int),
            ("last_login", Int),
        ],
        key_columns: 1,
        paged: true,
        identity: true,
    },
    Table {
        name: "service_overrides",
        field: "overrides",
        shown: "overrides",
        shown_at: 4,
        columns: &[("account_id", Int), ("service", Text), ("allow", Bool)],
        key_columns: 2,
        paged: false,
        identity: false,
    },
    Table {
        name: "app_passwords",
        field: "app_passwords",
        shown: "app passwords",
        shown_at: 1,
        columns: &[
            ("id", Int),
            ("account_id", Int),
            ("label", Text),
            ("lookup", Bytes),
            ("services", Text),
            ("restricted", Bool),
            ("created", Int),
            ("expires", Int),
            ("revoked", Int),
            ("last_used", Int),
        ],
        key_columns: 1,
        paged: true,
        identity: true,
    },
    Table {
        name: "one_time_codes",
        field: "codes",
        shown: "one-time codes",
        shown_at: 2,
        columns: &[
            ("id", Int),
            ("account_id", Int),
            ("lookup", Bytes),
            ("created", Int),
            ("used", Int),
        ],
        key_columns: 1,
        paged: true,
        identity: true,
    },
    Table {
        name: "throttle",
        field: "throttle",
        shown: "throttle rows",
        shown_at: 5,
        columns: &[
            ("key", Text),
            ("failures", Int),
            ("window_start", Int),
            ("blocked_until", Int),
            ("last_bad", SecretB),
        ],
        key_columns: 1,
        paged: true,
        identity: false,
    },
    Table {
        name: "audit",
        field: "audit",
        shown: "audit records",
        shown_at: 6,
        columns: &[
            ("id", Int),
            ("ts", Int),
            ("account", Text),
            ("service", Text),
            ("client_addr", Text),
            ("outcome", Text),
            ("reason", Text),
            ("detail", Text),
            ("credential", Text),
        ],
        key_columns: 1,
        paged: true,
        identity: true,
    },
    Table {
        name: "aliases",
        field: "aliases",
        shown: "aliases",
        shown_at: 7,
        columns: &[("alias", Text), ("account_id", Int), ("created", Int)],
        key_columns: 1,
        paged: false,
        identity: false,
    },
    Table {
        name: "blocks",
        field: "blocks",
        shown: "blocks",
        shown_at: 8,
        columns: &[("network", Text), ("note", Text), ("created", Int)],
        key_columns: 1,
        paged: false,
        identity: false,
    },
    Table {
        name: "account_backends",
        field: "account_backends",
        shown: "account backends",
        shown_at: 9,
        columns: &[("account_id", Int), ("protocol", Text), ("backend", Text)],
        key_columns: 2,
        paged: false,
        identity: false,
    },
    Table {
        name: "backend_holds",
        field: "backend_holds",
        shown: "backend holds",
        shown_at: 10,
        columns: &[("backend", Text), ("since", Int)],
        key_columns: 1,
        paged: false,
        identity: false,
    },
];

/// One column's value in a dump.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
    Secret(DumpSecret),
}

impl Field {
    /// The value as a statement's parameter (a secret text as text).
    pub fn value(&self, kind: Kind) -> Result<Value<'_>> {
        Ok(match self {
            Field::Null => Value::Null,
            Field::Int(v) => Value::Int(*v),
            Field::Bool(v) => Value::Bool(*v),
            Field::Text(v) => Value::Text(v),
            Field::Bytes(v) => Value::Blob(v),
            Field::Secret(s) if kind == SecretText => Value::Text(s.as_str()?),
            Field::Secret(s) => Value::Blob(s.as_bytes()),
        })
    }

    /// A result cell as a field of `kind`: a secret's buffer is moved, not
    /// copied, into a wiping one.
    pub(crate) fn of(cell: Cell, kind: Kind, column: &str) -> Result<Field> {
        Ok(match (cell, kind) {
            (Cell::Null, _) => Field::Null,
            (Cell::Int(v), Int) => Field::Int(v),
            (Cell::Bool(v), Bool) => Field::Bool(v),
            (Cell::Int(v), Bool) => Field::Bool(v != 0),
            (Cell::Text(v), Text) => Field::Text(v),
            (Cell::Blob(v), Bytes) => Field::Bytes(v),
            (Cell::Text(v), SecretText | SecretB) => Field::Secret(DumpSecret::new(v.into_bytes())),
            (Cell::Blob(v), SecretText | SecretB) => Field::Secret(DumpSecret::new(v)),
            (other, _) => {
                return Err(Error::Storage(format!(
                    "{column}: {kind:?} expected, found {}",
                    match other {
                        Cell::Int(_) => "an integer",
                        Cell::Bool(_) => "a boolean",
                        Cell::Text(_) => "text",
                        Cell::Blob(_) => "bytes",
                        Cell::Null => "null",
                    }
                )))
            }
        })
    }
}

/// A table's rows, each its columns in the description's order.
pub type Rows = Vec<Vec<Field>>;

/// A whole saslgate database: the key, and each table of [`TABLES`] (in
/// that order), its rows ordered by key.
#[derive(Clone, Debug, PartialEq)]
pub struct Dump {
    pub hmac_key: DumpSecret,
    pub tables: Vec<Rows>,
}

/// Rows per table (in [`TABLES`]' order), as `saslgate copy` reports and
/// checks them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpCounts(pub Vec<usize>);

impl DumpCounts {
    /// The count of the table named `name` (0 for an unknown name).
    pub fn of(&self, name: &str) -> usize {
        TABLES
            .iter()
            .position(|t| t.name == name)
            .and_then(|i| self.0.get(i).copied())
            .unwrap_or(0)
    }
}

impl serde::Serialize for DumpCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(TABLES.len()))?;
        for (t, n) in TABLES.iter().zip(&self.0) {
            map.serialize_entry(t.field, n)?;
        }
        map.end()
    }
}

impl std::fmt::Display for DumpCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown: Vec<_> = TABLES.iter().zip(&self.0).collect();
        shown.sort_by_key(|(t, _)| t.shown_at);
        for (i, (t, n)) in shown.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{n} {}", t.shown)?;
        }
        Ok(())
    }
}

/// The plan every new database has (schema migration 0 -> 1).
pub const DEFAULT_PLAN: (&str, &str) = ("default", "*");

impl Dump {
    pub fn counts(&self) -> DumpCounts {
        DumpCounts(self.tables.iter().map(Vec::len).collect())
    }

    /// The rows of the table named `name` (none for an unknown name).
    pub fn rows(&self, name: &str) -> &[Vec<Field>] {
        TABLES
            .iter()
            .position(|t| t.name == name)
            .and_then(|i| self.tables.get(i))
            .map_or(&[], Vec::as_slice)
    }

    /// No rows but the untouched default plan: what `saslgate init` leaves.
    /// Anything else is a database in use, which `import_all` overwrites only
    /// when forced.
    pub fn is_empty_database(counts: &DumpCounts, plans: &[Vec<Field>]) -> bool {
        let default = [
            Field::Text(DEFAULT_PLAN.0.into()),
            Field::Text(DEFAULT_PLAN.1.into()),
        ];
        TABLES
            .iter()
            .zip(&counts.0)
            .all(|(t, n)| t.name == "plans" || *n == 0)
            && plans.iter().all(|p| p.as_slice() == default)
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
        let differs = std::iter::once(("the keyed-hash key", self.hmac_key != other.hmac_key))
            .chain(
                TABLES
                    .iter()
                    .zip(self.tables.iter().zip(&other.tables))
                    .map(|(t, (a, b))| (t.shown, a != b)),
            )
            .find(|(_, d)| *d);
        match differs {
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

    fn table(name: &str) -> usize {
        TABLES.iter().position(|t| t.name == name).unwrap()
    }

    fn dump() -> Dump {
        let mut tables = vec![Vec::new(); TABLES.len()];
        tables[table("plans")] = vec![vec![Field::Text("default".into()), Field::Text("*".into())]];
        tables[table("accounts")] = vec![vec![
            Field::Int(3),
            Field::Text("alice".into()),
            Field::Text("default".into()),
            Field::Bool(false),
            Field::Secret(DumpSecret::new(b"$2b$04$abc".to_vec())),
            Field::Int(1),
            Field::Null,
            Field::Int(0),
            Field::Int(1),
            Field::Null,
        ]];
        tables[table("account_backends")] = vec![vec![
            Field::Int(3),
            Field::Text("imap".into()),
            Field::Text("10.0.0.1:143".into()),
        ]];
        Dump {
            hmac_key: DumpSecret::new(vec![7; 32]),
            tables,
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
        b.tables[table("accounts")][0][4] = Field::Secret(DumpSecret::new(b"$2b$04$abd".to_vec()));
        let e = a.check_copy(&b).unwrap_err().to_string();
        assert!(e.contains("accounts"), "{e}");
        let mut b = a.clone();
        b.tables[table("account_backends")][0][2] = Field::Text("10.0.0.2:143".into());
        let e = a.check_copy(&b).unwrap_err().to_string();
        assert!(e.contains("account backends"), "{e}");
        let mut b = a.clone();
        b.tables[table("accounts")].clear();
        let e = a.check_copy(&b).unwrap_err().to_string();
        assert!(e.contains("0 accounts"), "{e}");
    }

    #[test]
    fn secrets_never_shown() {
        let text = format!("{:?}", dump());
        assert!(!text.contains("abc"), "{text}");
    }

    #[test]
    fn counts_read_as_before() {
        let counts = dump().counts();
        assert_eq!(
            counts.to_string(),
            "1 accounts, 0 app passwords, 0 one-time codes, 1 plans, 0 overrides, \
             0 throttle rows, 0 audit records, 0 aliases, 0 blocks, 1 account backends, \
             0 backend holds"
        );
        let json = serde_json::to_string(&counts).unwrap();
        assert!(
            json.starts_with(
                r#"{"plans":1,"accounts":1,"overrides":0,"app_passwords":0,"codes":0,"#
            ),
            "{json}"
        );
        assert_eq!(counts.of("account_backends"), 1);
    }

    #[test]
    fn empty_means_what_init_leaves() {
        let mut d = dump();
        d.tables[table("accounts")].clear();
        assert!(!Dump::is_empty_database(&d.counts(), d.rows("plans")));
        d.tables[table("account_backends")].clear();
        assert!(Dump::is_empty_database(&d.counts(), d.rows("plans")));
        d.tables[table("plans")][0][1] = Field::Text("imap".into());
        assert!(!Dump::is_empty_database(&d.counts(), d.rows("plans")));
        let d = dump();
        assert!(!Dump::is_empty_database(&d.counts(), d.rows("plans")));
        let mut d = dump();
        d.tables[table("accounts")].clear();
        d.tables[table("account_backends")].clear();
        d.tables[table("backend_holds")] =
            vec![vec![Field::Text("10.0.0.1:143".into()), Field::Int(1)]];
        assert!(!Dump::is_empty_database(&d.counts(), d.rows("plans")));
    }
}
