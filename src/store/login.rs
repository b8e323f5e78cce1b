//! The rows of the login path (both backends; their reads and writes are in
//! `sql/login.rs`), and SQLite's multi-row audit insert.

use crate::error::Result;
use crate::secret::SecretBytes;

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

/// Audit records deleted per statement by `LoginStore::prune`.
pub const PRUNE_CHUNK: usize = 10_000;

pub(crate) fn insert_audit(tx: &rusqlite::Connection, audit: &[AuditRecord]) -> Result<()> {
    // Whole chunks through one multi-row statement: a statement's start, bind
    // and reset cost about as much as the row it inserts.
    let mut chunks = audit.chunks_exact(AUDIT_CHUNK);
    if chunks.len() > 0 {
        let mut st = tx.prepare_cached(&AUDIT_INSERT_CHUNK)?;
        for chunk in chunks.by_ref() {
            for (i, a) in chunk.iter().enumerate() {
                bind_audit(&mut st, i * AUDIT_COLUMNS, a)?;
            }
            st.raw_execute()?;
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut st = tx.prepare_cached(AUDIT_INSERT_ONE)?;
        for a in rest {
            bind_audit(&mut st, 0, a)?;
            st.raw_execute()?;
        }
    }
    Ok(())
}

const AUDIT_INSERT_ONE: &str =
    "INSERT INTO audit (ts, account, service, client_addr, outcome, reason, detail, credential) \
     VALUES (?,?,?,?,?,?,?,?)";
const AUDIT_COLUMNS: usize = 8;
/// Audit rows per multi-row `INSERT` (8 parameters each).
const AUDIT_CHUNK: usize = 32;

static AUDIT_INSERT_CHUNK: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let mut sql = String::from(
        "INSERT INTO audit (ts, account, service, client_addr, outcome, reason, detail, credential) VALUES ",
    );
    for i in 0..AUDIT_CHUNK {
        sql.push_str(if i == 0 {
            "(?,?,?,?,?,?,?,?)"
        } else {
            ",(?,?,?,?,?,?,?,?)"
        });
    }
    sql
});

/// Binds one record's columns at parameters `at + 1 ..= at + 8`.
fn bind_audit(st: &mut rusqlite::Statement<'_>, at: usize, a: &AuditRecord) -> Result<()> {
    st.raw_bind_parameter(at + 1, a.ts)?;
    st.raw_bind_parameter(at + 2, a.account.as_deref())?;
    st.raw_bind_parameter(at + 3, a.service.as_deref())?;
    st.raw_bind_parameter(at + 4, a.client_addr.as_deref())?;
    st.raw_bind_parameter(at + 5, a.outcome)?;
    st.raw_bind_parameter(at + 6, a.reason)?;
    st.raw_bind_parameter(at + 7, &a.detail)?;
    st.raw_bind_parameter(at + 8, a.credential.as_deref())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::{LoginStore, Store};

    /// ts, account, service, client_addr, reason, credential.
    type Row = (
        i64,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
    );

    /// Whole chunks and the rest: every record written once, in order, each
    /// field in its column.
    #[test]
    fn audit_batches_of_any_size_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            db: dir.path().join("sg.db"),
            ..Config::default()
        };
        let mut store = Store::create(&cfg).unwrap();
        let mut written = 0;
        for n in [
            0,
            1,
            AUDIT_CHUNK - 1,
            AUDIT_CHUNK,
            AUDIT_CHUNK + 1,
            2 * AUDIT_CHUNK + 5,
        ] {
            let batch: Vec<AuditRecord> = (0..n)
                .map(|i| AuditRecord {
                    ts: (written + i) as i64,
                    account: Some(format!("a{i}").into()),
                    service: (i % 2 == 0).then(|| "imap".into()),
                    client_addr: (i % 3 == 0).then(|| "192.0.2.1".into()),
                    outcome: "accepted",
                    reason: (i % 5 == 0).then_some("bad-credentials"),
                    detail: Some(format!("d{i}")),
                    credential: Some(format!("c{i}").into()),
                })
                .collect();
            store.write_batch(&batch, &[]).unwrap();
            written += n;
            let rows: Vec<Row> = store
                .conn
                .prepare("SELECT ts, account, service, client_addr, reason, credential FROM audit ORDER BY id")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert_eq!(rows.len(), written);
            for (i, a) in batch.iter().enumerate() {
                let row = &rows[written - n + i];
                assert_eq!(row.0, a.ts);
                assert_eq!(Some(row.1.as_str()), a.account.as_deref());
                assert_eq!(row.2.as_deref(), a.service.as_deref());
                assert_eq!(row.3.as_deref(), a.client_addr.as_deref());
                assert_eq!(row.4.as_deref(), a.reason);
                assert_eq!(Some(row.5.as_str()), a.credential.as_deref());
            }
        }
    }
}
