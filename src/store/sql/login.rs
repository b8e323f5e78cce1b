//! The login path's reads and writes, on both backends ([`LoginStore`] and
//! [`ThrottleStore`] for any [`Db`]). Reads run on the connection as it is
//! (inside the slow path's read transaction, if open); the writes that must
//! have exactly one winner, across processes and hosts, are conditional
//! UPDATEs outside it: SQLite's single writer, or PostgreSQL re-checking
//! the condition on the locked row (READ COMMITTED). What is each backend's
//! own: the read transactions, the fast path's one-statement read
//! (`Db::fast_read`), SQLite's change stamps and checkpoints, and the
//! multi-row audit insert (`Sql::insert_audit`).

use super::admin::app_password_row;
use super::aliases::{account_row, Aliases};
use super::{params, throttle, Db, Dialect};
use crate::config::Config;
use crate::error::Result;
use crate::store::types::{split_list, AccountRow, AppPasswordRow, AuditRecord, LastUse};
use crate::store::types::{APP_PASSWORD_TAG, ONE_TIME_CODE_TAG};
use crate::store::{ChangeStamp, LoginStore, QuietCommit, ThrottleStore, TicketStore};
use crate::throttle::{KeyRows, Keys, State};
use std::time::Duration;

const FIND_ACCOUNT: &str =
    "SELECT id, name, plan, disabled, password_hash, totp_secret, totp_last_step,
            EXISTS (SELECT 1 FROM one_time_codes c WHERE c.account_id = a.id)
     FROM accounts a WHERE name = $1";

/// Audit records deleted per statement by `LoginStore::prune`.
pub const PRUNE_CHUNK: usize = 10_000;

impl<D: Db + Send> ThrottleStore for D {
    fn throttle_state(&self, keys: &Keys, now: i64) -> Result<State> {
        throttle::throttle_state(self.reader(), keys, now)
    }

    fn generation_and_throttle(&self, keys: &Keys) -> Result<(i64, KeyRows)> {
        self.fast_read(keys)
    }

    fn change_stamp(&self) -> Option<ChangeStamp> {
        self.stamp()
    }

    fn record_failure(
        &mut self,
        keys: &Keys,
        fingerprint: &[u8],
        now: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<Duration> {
        let cfg = self.db_config().clone();
        throttle::record_failure(self, &cfg, keys, fingerprint, now, audit)
    }

    fn record_success(&mut self, keys: &Keys) -> Result<()> {
        throttle::record_success(self, keys)
    }

    fn record_bad_input(
        &mut self,
        keys: &Keys,
        now: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<()> {
        let cfg = self.db_config().clone();
        throttle::record_bad_input(self, &cfg, keys, now, audit)
    }
}

impl<D: Db + Send> LoginStore for D {
    fn config(&self) -> &Config {
        self.db_config()
    }

    fn generation(&self) -> Result<i64> {
        Ok(self
            .reader()
            .query_opt("SELECT CAST({generation} AS BIGINT)", &[])?
            .map(|r| r.opt_int(0))
            .transpose()?
            .flatten()
            .unwrap_or(0))
    }

    fn begin_read(&self) -> Result<()> {
        self.begin_snapshot()
    }

    fn end_read(&self) -> Result<()> {
        self.end_snapshot()
    }

    fn app_lookup(&self, account_id: i64, canonical: &[u8]) -> [u8; 32] {
        self.keyed_hash(&[APP_PASSWORD_TAG, &account_id.to_be_bytes(), canonical])
    }

    fn code_lookup(&self, account_id: i64, canonical: &[u8]) -> [u8; 32] {
        self.keyed_hash(&[ONE_TIME_CODE_TAG, &account_id.to_be_bytes(), canonical])
    }

    fn fingerprint(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.keyed_hash(parts)
    }

    fn find_account(&self, name: &str) -> Result<Option<AccountRow>> {
        self.reader()
            .query_opt(FIND_ACCOUNT, params![name])?
            .map(|r| account_row(&r))
            .transpose()
    }

    fn find_alias(&self, alias: &str) -> Result<Option<AccountRow>> {
        self.alias_account(alias)
    }

    fn blocked_networks(&self) -> Result<Vec<String>> {
        self.block_networks()
    }

    /// O(1): a unique index on the keyed hash.
    fn find_app_password(
        &self,
        account_id: i64,
        canonical: &[u8],
    ) -> Result<Option<AppPasswordRow>> {
        let lookup = self.app_lookup(account_id, canonical);
        self.reader()
            .query_opt(
                "SELECT id, account_id, label, services, restricted, expires, revoked
                 FROM app_passwords WHERE lookup = $1 AND account_id = $2",
                params![&lookup[..], account_id],
            )?
            .map(|r| app_password_row(&r))
            .transpose()
    }

    fn find_unused_code(&self, account_id: i64, canonical: &[u8]) -> Result<Option<i64>> {
        let lookup = self.code_lookup(account_id, canonical);
        self.reader()
            .query_opt(
                "SELECT id FROM one_time_codes
                 WHERE lookup = $1 AND account_id = $2 AND used IS NULL",
                params![&lookup[..], account_id],
            )?
            .map(|r| r.int(0))
            .transpose()
    }

    fn consume_code(&self, code_id: i64, now: i64) -> Result<bool> {
        let n = self.autocommit()?.execute(
            "UPDATE one_time_codes SET used = $2 WHERE id = $1 AND used IS NULL",
            params![code_id, now],
        )?;
        Ok(n == 1)
    }

    fn consume_totp_step(&self, account_id: i64, step: i64) -> Result<bool> {
        let n = self.autocommit()?.execute(
            "UPDATE accounts SET totp_last_step = $2
             WHERE id = $1 AND totp_secret IS NOT NULL AND totp_last_step < $2",
            params![account_id, step],
        )?;
        Ok(n == 1)
    }

    fn service_override(&self, account_id: i64, service: &str) -> Result<Option<bool>> {
        // An override for the service itself wins over one for `*` (every
        // service), as in plans and app-password lists.
        self.reader()
            .query_opt(
                "SELECT allow FROM service_overrides WHERE account_id = $1
                 AND service IN ($2, '*') ORDER BY service = '*' LIMIT 1",
                params![account_id, service],
            )?
            .map(|r| r.bool(0))
            .transpose()
    }

    fn app_passwords_by_lookup(&self, account_id: i64) -> Result<Vec<([u8; 32], AppPasswordRow)>> {
        let mut out = Vec::new();
        for r in self.reader().query(
            "SELECT id, account_id, label, services, restricted, expires, revoked, lookup
             FROM app_passwords WHERE account_id = $1 ORDER BY id",
            params![account_id],
        )? {
            // A malformed key can match no password: leave it out.
            if let Ok(key) = <[u8; 32]>::try_from(r.blob(7)?.as_slice()) {
                out.push((key, app_password_row(&r)?));
            }
        }
        Ok(out)
    }

    fn service_overrides(&self, account_id: i64) -> Result<Vec<(String, bool)>> {
        self.reader()
            .query(
                "SELECT service, allow FROM service_overrides WHERE account_id = $1",
                params![account_id],
            )?
            .iter()
            .map(|r| Ok((r.text(0)?, r.bool(1)?)))
            .collect()
    }

    fn plan_services(&self, plan: &str) -> Result<Option<Vec<String>>> {
        self.reader()
            .query_opt("SELECT services FROM plans WHERE name = $1", params![plan])?
            .map(|r| r.text(0).map(|s| split_list(&s)))
            .transpose()
    }

    fn may_rehash(&self) -> bool {
        self.role_may_rehash()
    }

    /// Only if the hash is unchanged since read; only for a role that may
    /// write hashes (PostgreSQL's login role may not).
    fn upgrade_hash(&self, account_id: i64, old: &str, new: &str) -> Result<()> {
        if !self.role_may_rehash() {
            return Ok(());
        }
        self.autocommit()?.execute(
            "UPDATE accounts SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
            params![account_id, old, new],
        )?;
        Ok(())
    }

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
        let ((), quiet) = self.quiet_transaction(|tx| {
            tx.insert_audit(audit)?;
            for (what, ts) in last_use {
                match what {
                    LastUse::Account(id) => tx.execute(
                        "UPDATE accounts SET last_login = greatest(coalesce(last_login, 0), $2)
                         WHERE id = $1",
                        params![*id, *ts],
                    )?,
                    LastUse::AppPassword(id) => tx.execute(
                        "UPDATE app_passwords SET last_used = greatest(coalesce(last_used, 0), $2)
                         WHERE id = $1",
                        params![*id, *ts],
                    )?,
                };
            }
            Ok(())
        })?;
        Ok(quiet)
    }

    fn checkpoint_in_background(&mut self) -> Result<()> {
        self.background_checkpoints()
    }

    fn checkpoint(&mut self) -> Result<()> {
        self.checkpoint_now()
    }

    /// Expired throttle rows and tickets always; audit records older than
    /// `audit_retention` or past `audit_max_rows` (the oldest first) only
    /// for a role that may delete them (PostgreSQL's login role may not: the
    /// admin's `saslgate` prunes), at most `PRUNE_CHUNK` per statement:
    /// one huge delete would grow the write-ahead log by as much.
    fn prune(&mut self, now: i64) -> Result<()> {
        let cfg = self.db_config();
        let cutoff = now - cfg.audit_retention.as_secs() as i64;
        let max_rows = i64::try_from(cfg.audit_max_rows).unwrap_or(i64::MAX);
        let longest = [
            cfg.throttle_address.window,
            cfg.throttle_address.block,
            cfg.throttle_account_address.window,
            cfg.throttle_account_address.block,
            cfg.slowdown_window,
        ]
        .iter()
        .max()
        .map_or(0, |d| d.as_secs() as i64);
        self.write_one(
            "DELETE FROM throttle WHERE window_start < $1 AND blocked_until < $2",
            params![now - longest, now],
        )?;
        self.prune_tickets(now)?;
        if !self.role_may_prune_audit() {
            return Ok(());
        }
        let chunk = PRUNE_CHUNK as i64;
        let by_age = match self.reader().dialect() {
            // No index on ts (SQLite schema 4): the oldest ids are the oldest
            // records, so delete ids below the first record young enough to
            // keep; finding it reads only the rows being deleted. (Processes
            // batch their records, so ts is not strictly in id order: a
            // record may outlive the retention by as long as a batch waits.)
            Dialect::Sqlite => {
                "DELETE FROM audit WHERE id < least(
                   coalesce((SELECT id FROM audit WHERE ts >= $1 ORDER BY id LIMIT 1),
                            (SELECT max(id) + 1 FROM audit)),
                   (SELECT min(id) FROM audit) + $2)"
            }
            Dialect::Postgres => {
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE ts < $1 LIMIT $2)"
            }
        };
        while self.write_one(by_age, params![cutoff, chunk])? >= PRUNE_CHUNK as u64 {}
        if max_rows > 0 {
            // Ids grow with time: the lowest are the oldest, and a range of
            // them is one index walk.
            while self.write_one(
                "DELETE FROM audit WHERE id <= least(
                   (SELECT max(id) FROM audit) - $1,
                   (SELECT min(id) FROM audit) + $2 - 1)",
                params![max_rows, chunk],
            )? >= PRUNE_CHUNK as u64
            {}
        }
        Ok(())
    }
}
