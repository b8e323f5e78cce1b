//! Reads and writes of the login path. Prepared statements are cached on the
//! connection, so a decision costs a handful of index lookups.

use super::sql::aliases::Aliases;
use super::sql::tickets::TicketStore;
use super::{LoginStore, QuietCommit, Store};
use crate::config::Config;
use crate::crypto::keyed_hash;
use crate::error::Result;
use crate::secret::SecretBytes;
use rusqlite::{params, OptionalExtension};

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

/// Index key of an app password: HMAC(database key, account id, canonical password).
pub(crate) fn app_lookup(key: &[u8], account_id: i64, canonical: &[u8]) -> [u8; 32] {
    keyed_hash(
        key,
        &[APP_PASSWORD_TAG, &account_id.to_be_bytes(), canonical],
    )
}

/// Index key of a one-time code.
pub(crate) fn code_lookup(key: &[u8], account_id: i64, canonical: &[u8]) -> [u8; 32] {
    keyed_hash(
        key,
        &[ONE_TIME_CODE_TAG, &account_id.to_be_bytes(), canonical],
    )
}

impl AppPasswordRow {
    /// Columns: id, account_id, label, services, restricted, expires, revoked.
    pub(crate) const COLUMNS: &'static str =
        "id, account_id, label, services, restricted, expires, revoked";

    pub(crate) fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AppPasswordRow> {
        Ok(AppPasswordRow {
            id: r.get(0)?,
            account_id: r.get(1)?,
            label: r.get(2)?,
            services: split_list(&r.get::<_, String>(3)?),
            restricted: r.get(4)?,
            expires: r.get(5)?,
            revoked: r.get(6)?,
        })
    }
}

pub(crate) fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

impl LoginStore for Store {
    fn config(&self) -> &Config {
        &self.config
    }

    /// The generation: a new (random) value after every admin change.
    fn generation(&self) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'generation'")?
            .query_row([], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    /// Starts a read transaction (a no-op inside one).
    fn begin_read(&self) -> Result<()> {
        if self.conn.is_autocommit() {
            // Cached like the lookups: execute_batch would re-parse it every time.
            self.conn.prepare_cached("BEGIN DEFERRED")?.execute([])?;
        }
        Ok(())
    }

    /// Ends a read transaction started by [`Store::begin_read`], if any. Every write
    /// calls this first: a deferred transaction that later writes could fail with
    /// SQLITE_BUSY_SNAPSHOT instead of waiting for the lock.
    fn end_read(&self) -> Result<()> {
        if !self.conn.is_autocommit() {
            self.conn.prepare_cached("COMMIT")?.execute([])?;
        }
        Ok(())
    }

    fn app_lookup(&self, account_id: i64, canonical: &[u8]) -> [u8; 32] {
        self.keyed
            .hash(&[APP_PASSWORD_TAG, &account_id.to_be_bytes(), canonical])
    }

    fn code_lookup(&self, account_id: i64, canonical: &[u8]) -> [u8; 32] {
        self.keyed
            .hash(&[ONE_TIME_CODE_TAG, &account_id.to_be_bytes(), canonical])
    }

    /// Keyed fingerprint used by throttling and the cache (never the secret itself).
    fn fingerprint(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.keyed.hash(parts)
    }

    fn find_account(&self, name: &str) -> Result<Option<AccountRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, name, plan, disabled, password_hash, totp_secret, totp_last_step,
                    EXISTS (SELECT 1 FROM one_time_codes c WHERE c.account_id = a.id)
             FROM accounts a WHERE name = ?1",
        )?;
        Ok(st.query_row([name], account_row).optional()?)
    }

    fn find_alias(&self, alias: &str) -> Result<Option<AccountRow>> {
        Aliases::alias_account(self, alias)
    }

    fn blocked_networks(&self) -> Result<Vec<String>> {
        Aliases::block_networks(self)
    }

    /// O(1): a unique index on the keyed hash.
    fn find_app_password(
        &self,
        account_id: i64,
        canonical: &[u8],
    ) -> Result<Option<AppPasswordRow>> {
        let lookup = self.app_lookup(account_id, canonical);
        let sql = format!(
            "SELECT {} FROM app_passwords WHERE lookup = ?1 AND account_id = ?2",
            AppPasswordRow::COLUMNS
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![&lookup[..], account_id], AppPasswordRow::from_row)
            .optional()?)
    }

    /// An unused one-time code's id.
    fn find_unused_code(&self, account_id: i64, canonical: &[u8]) -> Result<Option<i64>> {
        let lookup = self.code_lookup(account_id, canonical);
        let mut st = self.conn.prepare_cached(
            "SELECT id FROM one_time_codes WHERE lookup = ?1 AND account_id = ?2 AND used IS NULL",
        )?;
        Ok(st
            .query_row(params![&lookup[..], account_id], |r| r.get(0))
            .optional()?)
    }

    /// Marks a code used. Exactly one of any number of concurrent callers gets `true`
    /// (a conditional update under SQLite's single-writer lock).
    fn consume_code(&self, code_id: i64, now: i64) -> Result<bool> {
        self.end_read()?;
        let n = self
            .conn
            .prepare_cached("UPDATE one_time_codes SET used = ?2 WHERE id = ?1 AND used IS NULL")?
            .execute(params![code_id, now])?;
        Ok(n == 1)
    }

    /// Records `step` as the last accepted TOTP step; `false` if it (or a later one)
    /// was accepted already, so each code works once.
    fn consume_totp_step(&self, account_id: i64, step: i64) -> Result<bool> {
        self.end_read()?;
        let n = self
            .conn
            .prepare_cached(
                "UPDATE accounts SET totp_last_step = ?2
                 WHERE id = ?1 AND totp_secret IS NOT NULL AND totp_last_step < ?2",
            )?
            .execute(params![account_id, step])?;
        Ok(n == 1)
    }

    fn service_override(&self, account_id: i64, service: &str) -> Result<Option<bool>> {
        Ok(self
            .conn
            .prepare_cached(
                // An override for the service itself wins over one for `*`
                // (every service), as in plans and app-password lists.
                "SELECT allow FROM service_overrides WHERE account_id = ?1 \
                 AND service IN (?2, '*') ORDER BY service = '*' LIMIT 1",
            )?
            .query_row(params![account_id, service], |r| r.get(0))
            .optional()?)
    }

    /// Every app password of an account with its index key (for the engine's
    /// in-memory snapshot of the account).
    fn app_passwords_by_lookup(&self, account_id: i64) -> Result<Vec<([u8; 32], AppPasswordRow)>> {
        let sql = format!(
            "SELECT {}, lookup FROM app_passwords WHERE account_id = ?1",
            AppPasswordRow::COLUMNS
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map([account_id], |r| {
            let lookup: Vec<u8> = r.get(7)?;
            Ok((lookup, AppPasswordRow::from_row(r)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (lookup, app) = row?;
            // A malformed key can match no password: leave it out.
            if let Ok(key) = <[u8; 32]>::try_from(lookup.as_slice()) {
                out.push((key, app));
            }
        }
        Ok(out)
    }

    /// Every service override of an account.
    fn service_overrides(&self, account_id: i64) -> Result<Vec<(String, bool)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT service, allow FROM service_overrides WHERE account_id = ?1")?;
        let rows = st.query_map([account_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// `None` if the plan does not exist.
    fn plan_services(&self, plan: &str) -> Result<Option<Vec<String>>> {
        Ok(self
            .conn
            .prepare_cached("SELECT services FROM plans WHERE name = ?1")?
            .query_row([plan], |r| r.get::<_, String>(0))
            .optional()?
            .map(|s| split_list(&s)))
    }

    /// Replaces a master password hash made at a lower cost (only if unchanged since read).
    fn upgrade_hash(&self, account_id: i64, old: &str, new: &str) -> Result<()> {
        self.end_read()?;
        self.conn
            .prepare_cached(
                "UPDATE accounts SET password_hash = ?3 WHERE id = ?1 AND password_hash = ?2",
            )?
            .execute(params![account_id, old, new])?;
        Ok(())
    }

    /// Writes audit records and last-use stamps in one transaction.
    /// Quiet: `last_login` and `last_used` are left out of the generation
    /// triggers, and no throttle row is touched.
    fn write_batch(
        &mut self,
        audit: &[AuditRecord],
        last_use: &[(LastUse, i64)],
    ) -> Result<Option<QuietCommit>> {
        if audit.is_empty() && last_use.is_empty() {
            return Ok(None);
        }
        let ((), quiet) = self.write_quiet(|tx| {
            insert_audit(tx, audit)?;
            for (what, ts) in last_use {
                match what {
                    LastUse::Account(id) => tx
                        .prepare_cached("UPDATE accounts SET last_login = max(coalesce(last_login, 0), ?2) WHERE id = ?1")?
                        .execute(params![id, ts])?,
                    LastUse::AppPassword(id) => tx
                        .prepare_cached("UPDATE app_passwords SET last_used = max(coalesce(last_used, 0), ?2) WHERE id = ?1")?
                        .execute(params![id, ts])?,
                };
            }
            Ok(())
        })?;
        Ok(quiet)
    }

    fn checkpoint_in_background(&mut self) -> Result<()> {
        self.set_background_checkpoints()
    }

    fn checkpoint(&mut self) -> Result<()> {
        self.checkpoint_if_due()
    }

    /// Deletes audit records older than `audit_retention` or past
    /// `audit_max_rows` (the oldest first), and expired throttle rows. At most
    /// [`PRUNE_CHUNK`] records per transaction: one huge delete would grow the
    /// write-ahead log by as much.
    fn prune(&mut self, now: i64) -> Result<()> {
        let cutoff = now - self.config.audit_retention.as_secs() as i64;
        let max_rows = i64::try_from(self.config.audit_max_rows).unwrap_or(i64::MAX);
        let longest = [
            self.config.throttle_address.window,
            self.config.throttle_address.block,
            self.config.throttle_account_address.window,
            self.config.throttle_account_address.block,
            self.config.slowdown_window,
        ]
        .iter()
        .max()
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
        self.write(|tx| {
            tx.prepare_cached(
                "DELETE FROM throttle WHERE window_start < ?1 AND blocked_until < ?2",
            )?
            .execute(params![now - longest, now])?;
            Ok(())
        })?;
        self.prune_tickets(now)?;
        loop {
            // The table has no index on ts (schema 4): the oldest ids are the
            // oldest records, so delete ids below the first record young enough
            // to keep; finding it reads only the rows being deleted. (Processes
            // batch their records, so ts is not strictly in id order: a record
            // may outlive the retention by as long as a batch waits, seconds.)
            let n = self.write(|tx| {
                Ok(tx
                    .prepare_cached(
                        "DELETE FROM audit WHERE id < min(
                           coalesce((SELECT id FROM audit WHERE ts >= ?1 ORDER BY id LIMIT 1),
                                    (SELECT max(id) + 1 FROM audit)),
                           (SELECT min(id) FROM audit) + ?2)",
                    )?
                    .execute(params![cutoff, PRUNE_CHUNK])?)
            })?;
            if n < PRUNE_CHUNK {
                break;
            }
        }
        if max_rows > 0 {
            loop {
                // Ids grow with time (INTEGER PRIMARY KEY takes max + 1): the
                // lowest are the oldest, and a range of them is one index walk.
                let n = self.write(|tx| {
                    Ok(tx
                        .prepare_cached(
                            "DELETE FROM audit WHERE id <= min(
                               (SELECT max(id) FROM audit) - ?1,
                               (SELECT min(id) FROM audit) + ?2 - 1)",
                        )?
                        .execute(params![max_rows, PRUNE_CHUNK])?)
                })?;
                if n < PRUNE_CHUNK {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// Audit records deleted per transaction by [`Store::prune`].
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

/// An [`AccountRow`] from the columns `id, name, plan, disabled,
/// password_hash, totp_secret, totp_last_step, has_codes` (in that order):
/// shared by the lookups by name and by alias.
pub(super) fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AccountRow> {
    Ok(AccountRow {
        id: r.get(0)?,
        name: r.get(1)?,
        plan: r.get(2)?,
        disabled: r.get(3)?,
        password_hash: r.get(4)?,
        totp_secret: r.get::<_, Option<Vec<u8>>>(5)?.map(SecretBytes::new),
        totp_last_step: r.get(6)?,
        has_codes: r.get(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
