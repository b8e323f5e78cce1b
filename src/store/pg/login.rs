//! The login path on PostgreSQL: prepared statements cached per connection,
//! one round trip per read; the writes that must have exactly one winner
//! across hosts are conditional UPDATEs (PostgreSQL re-checks the condition
//! on the locked row, so of any number of concurrent callers one gets a row).

use super::{get, PgStore};
use crate::config::Config;
use crate::crypto::keyed_hash;
use crate::error::Result;
use crate::secret::SecretBytes;
use crate::store::login::{app_lookup, code_lookup, split_list, AccountRow, AppPasswordRow};
use crate::store::login::{AuditRecord, LastUse, PRUNE_CHUNK};
use crate::store::sql::aliases::Aliases;
use crate::store::{LoginStore, QuietCommit, TicketStore};
use tokio_postgres::Row;

fn app_row(r: &Row) -> Result<AppPasswordRow> {
    Ok(AppPasswordRow {
        id: get(r, 0)?,
        account_id: get(r, 1)?,
        label: get(r, 2)?,
        services: split_list(&get::<String>(r, 3)?),
        restricted: get(r, 4)?,
        expires: get(r, 5)?,
        revoked: get(r, 6)?,
    })
}

pub(super) fn account_row(r: &Row) -> Result<AccountRow> {
    Ok(AccountRow {
        id: get(r, 0)?,
        name: get(r, 1)?,
        plan: get(r, 2)?,
        disabled: get(r, 3)?,
        password_hash: get(r, 4)?,
        totp_secret: get::<Option<Vec<u8>>>(r, 5)?.map(SecretBytes::new),
        totp_last_step: get(r, 6)?,
        has_codes: get(r, 7)?,
    })
}

pub(super) const FIND_ACCOUNT: &str =
    "SELECT id, name, plan, disabled, password_hash, totp_secret, totp_last_step,
            EXISTS (SELECT 1 FROM one_time_codes c WHERE c.account_id = a.id)
     FROM accounts a WHERE name = $1";

pub(super) const APPS_OF_ACCOUNT: &str =
    "SELECT id, account_id, label, services, restricted, expires, revoked, lookup
     FROM app_passwords WHERE account_id = $1 ORDER BY id";

/// Audit records in one statement (one round trip for a whole batch).
pub(super) fn insert_audit(store: &PgStore, audit: &[AuditRecord]) -> Result<()> {
    if audit.is_empty() {
        return Ok(());
    }
    let ts: Vec<i64> = audit.iter().map(|a| a.ts).collect();
    let account: Vec<Option<&str>> = audit.iter().map(|a| a.account.as_deref()).collect();
    let service: Vec<Option<&str>> = audit.iter().map(|a| a.service.as_deref()).collect();
    let addr: Vec<Option<&str>> = audit.iter().map(|a| a.client_addr.as_deref()).collect();
    let outcome: Vec<&str> = audit.iter().map(|a| a.outcome).collect();
    let reason: Vec<Option<&str>> = audit.iter().map(|a| a.reason).collect();
    let detail: Vec<Option<&str>> = audit.iter().map(|a| a.detail.as_deref()).collect();
    let credential: Vec<Option<&str>> = audit.iter().map(|a| a.credential.as_deref()).collect();
    store.execute(
        "INSERT INTO audit (ts, account, service, client_addr, outcome, reason, detail, credential)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::text[], $8::text[])",
        &[
            &ts,
            &account,
            &service,
            &addr,
            &outcome,
            &reason,
            &detail,
            &credential,
        ],
    )?;
    Ok(())
}

impl LoginStore for PgStore {
    fn config(&self) -> &Config {
        &self.config
    }

    fn generation(&self) -> Result<i64> {
        let row = self.query_opt(
            "SELECT value FROM saslgate_meta WHERE key = 'generation'",
            &[],
        )?;
        Ok(match row {
            Some(r) => get(&r, 0)?,
            None => 0,
        })
    }

    /// A REPEATABLE READ transaction: the slow path's reads see one snapshot.
    fn begin_read(&self) -> Result<()> {
        self.begin_read_tx()
    }

    fn end_read(&self) -> Result<()> {
        self.end_read_tx()
    }

    fn may_rehash(&self) -> bool {
        self.may_rehash
    }

    fn app_lookup(&self, account_id: i64, canonical: &[u8]) -> [u8; 32] {
        app_lookup(&self.hmac_key, account_id, canonical)
    }

    fn code_lookup(&self, account_id: i64, canonical: &[u8]) -> [u8; 32] {
        code_lookup(&self.hmac_key, account_id, canonical)
    }

    fn fingerprint(&self, parts: &[&[u8]]) -> [u8; 32] {
        keyed_hash(&self.hmac_key, parts)
    }

    fn find_account(&self, name: &str) -> Result<Option<AccountRow>> {
        self.query_opt(FIND_ACCOUNT, &[&name])?
            .map(|r| account_row(&r))
            .transpose()
    }

    fn find_alias(&self, alias: &str) -> Result<Option<AccountRow>> {
        Aliases::alias_account(self, alias)
    }

    fn blocked_networks(&self) -> Result<Vec<String>> {
        Aliases::block_networks(self)
    }

    fn find_app_password(
        &self,
        account_id: i64,
        canonical: &[u8],
    ) -> Result<Option<AppPasswordRow>> {
        let lookup = self.app_lookup(account_id, canonical);
        self.query_opt(
            "SELECT id, account_id, label, services, restricted, expires, revoked
             FROM app_passwords WHERE lookup = $1 AND account_id = $2",
            &[&&lookup[..], &account_id],
        )?
        .map(|r| app_row(&r))
        .transpose()
    }

    fn find_unused_code(&self, account_id: i64, canonical: &[u8]) -> Result<Option<i64>> {
        let lookup = self.code_lookup(account_id, canonical);
        self.query_opt(
            "SELECT id FROM one_time_codes WHERE lookup = $1 AND account_id = $2 AND used IS NULL",
            &[&&lookup[..], &account_id],
        )?
        .map(|r| get(&r, 0))
        .transpose()
    }

    fn consume_code(&self, code_id: i64, now: i64) -> Result<bool> {
        self.end_read()?;
        let n = self.execute(
            "UPDATE one_time_codes SET used = $2 WHERE id = $1 AND used IS NULL",
            &[&code_id, &now],
        )?;
        Ok(n == 1)
    }

    fn consume_totp_step(&self, account_id: i64, step: i64) -> Result<bool> {
        self.end_read()?;
        let n = self.execute(
            "UPDATE accounts SET totp_last_step = $2
             WHERE id = $1 AND totp_secret IS NOT NULL AND totp_last_step < $2",
            &[&account_id, &step],
        )?;
        Ok(n == 1)
    }

    fn service_override(&self, account_id: i64, service: &str) -> Result<Option<bool>> {
        // An override for the service itself wins over one for `*`.
        self.query_opt(
            "SELECT allow FROM service_overrides WHERE account_id = $1
             AND service IN ($2, '*') ORDER BY service = '*' LIMIT 1",
            &[&account_id, &service],
        )?
        .map(|r| get(&r, 0))
        .transpose()
    }

    fn app_passwords_by_lookup(&self, account_id: i64) -> Result<Vec<([u8; 32], AppPasswordRow)>> {
        let mut out = Vec::new();
        for r in self.query(APPS_OF_ACCOUNT, &[&account_id])? {
            let lookup: Vec<u8> = get(&r, 7)?;
            // A malformed key can match no password: leave it out.
            if let Ok(key) = <[u8; 32]>::try_from(lookup.as_slice()) {
                out.push((key, app_row(&r)?));
            }
        }
        Ok(out)
    }

    fn service_overrides(&self, account_id: i64) -> Result<Vec<(String, bool)>> {
        self.query(
            "SELECT service, allow FROM service_overrides WHERE account_id = $1",
            &[&account_id],
        )?
        .iter()
        .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
        .collect()
    }

    fn plan_services(&self, plan: &str) -> Result<Option<Vec<String>>> {
        self.query_opt("SELECT services FROM plans WHERE name = $1", &[&plan])?
            .map(|r| get::<String>(&r, 0).map(|s| split_list(&s)))
            .transpose()
    }

    /// Only if the hash is unchanged since read; only for a role that may
    /// write hashes (the login role may not: `may_rehash`).
    fn upgrade_hash(&self, account_id: i64, old: &str, new: &str) -> Result<()> {
        if !self.may_rehash {
            return Ok(());
        }
        self.end_read()?;
        self.execute(
            "UPDATE accounts SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
            &[&account_id, &old, &new],
        )?;
        Ok(())
    }

    fn write_batch(
        &mut self,
        audit: &[AuditRecord],
        last_use: &[(LastUse, i64)],
    ) -> Result<Option<QuietCommit>> {
        if audit.is_empty() && last_use.is_empty() {
            return Ok(None);
        }
        self.write(|s| {
            insert_audit(s, audit)?;
            for (what, ts) in last_use {
                match what {
                    LastUse::Account(id) => s.execute(
                        "UPDATE accounts SET last_login = greatest(last_login, $2) WHERE id = $1",
                        &[id, ts],
                    )?,
                    LastUse::AppPassword(id) => s.execute(
                        "UPDATE app_passwords SET last_used = greatest(last_used, $2) WHERE id = $1",
                        &[id, ts],
                    )?,
                };
            }
            Ok(())
        })?;
        // No change stamp here: the fast path reads on every login anyway.
        Ok(None)
    }

    /// Expired throttle rows always; audit records only for a role that may
    /// delete them (the login role may not: the admin's `saslgate` prunes).
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
        self.end_read()?;
        self.execute(
            "DELETE FROM throttle WHERE window_start < $1 AND blocked_until < $2",
            &[&(now - longest), &now],
        )?;
        self.prune_tickets(now)?;
        if !self.may_prune_audit {
            return Ok(());
        }
        let chunk = PRUNE_CHUNK as i64;
        while self.execute(
            "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE ts < $1 LIMIT $2)",
            &[&cutoff, &chunk],
        )? >= PRUNE_CHUNK as u64
        {}
        if max_rows > 0 {
            // Ids grow with time (identity): the lowest are the oldest.
            while self.execute(
                "DELETE FROM audit WHERE id <= least(
                   (SELECT max(id) FROM audit) - $1,
                   (SELECT min(id) FROM audit) + $2 - 1)",
                &[&max_rows, &chunk],
            )? >= PRUNE_CHUNK as u64
            {}
        }
        Ok(())
    }
}
