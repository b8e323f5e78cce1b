//! Operator changes. Every change runs in one transaction and bumps the generation
//! counter, which invalidates every positive cache entry in every process.

use super::aliases::{AliasInfo, BlockInfo};
use super::login::{app_lookup, code_lookup, split_list, AccountRow, AppPasswordRow};
use super::{AdminStore, LoginStore, Store};
use crate::crypto;
use crate::error::{Error, Result};
use crate::secret::SecretBytes;
use crate::store::rules;
use crate::timefmt::now;
use rusqlite::{params, OptionalExtension, Transaction};
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

/// A new random generation, not the old one plus one: a database restored in
/// place from an older copy must never reach, by counting up, a number that a
/// reader's in-memory data (engine snapshot, credential cache) belongs to.
fn bump_generation(tx: &Transaction<'_>) -> Result<()> {
    tx.execute(
        "UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'",
        [],
    )?;
    Ok(())
}

fn account_id(tx: &rusqlite::Connection, name: &str) -> Result<i64> {
    let name = rules::account_name(name)?;
    tx.query_row("SELECT id FROM accounts WHERE name = ?1", [&name], |r| {
        r.get(0)
    })
    .optional()?
    .ok_or_else(|| Error::NotFound(format!("account {name}")))
}

impl Store {
    /// A one-statement change to an account: `sql` gets the account id as `?1`,
    /// then `extra` as `?2`...
    fn change_account(
        &mut self,
        name: &str,
        sql: &str,
        extra: &[&dyn rusqlite::ToSql],
    ) -> Result<()> {
        self.change(|tx| {
            let id = account_id(tx, name)?;
            let mut args: Vec<&dyn rusqlite::ToSql> = vec![&id];
            args.extend_from_slice(extra);
            tx.execute(sql, args.as_slice())?;
            Ok(())
        })
    }

    /// Runs an admin change: one transaction, generation bumped.
    fn change<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.write(|tx| {
            let out = f(tx)?;
            bump_generation(tx)?;
            Ok(out)
        })
    }
}

impl AdminStore for Store {
    fn add_account(&mut self, name: &str, plan: &str) -> Result<String> {
        let name = rules::account_name(name)?;
        let plan = plan.trim().to_string();
        self.change(|tx| {
            let plan_exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM plans WHERE name = ?1)",
                [&plan],
                |r| r.get(0),
            )?;
            if !plan_exists {
                return Err(Error::NotFound(format!(
                    "plan {plan} (create it with `saslgate plan set`)"
                )));
            }
            if Store::is_alias(tx, &name)? {
                return Err(rules::namespace_clash(
                    Error::Storage("saslgate: an alias has this name".into()),
                    &name,
                ));
            }
            let n = tx.execute(
                "INSERT OR IGNORE INTO accounts (name, plan, created) VALUES (?1, ?2, ?3)",
                params![name, plan, now()],
            )?;
            if n == 0 {
                return Err(Error::Exists(format!("account {name}")));
            }
            Ok(name.clone())
        })
        .map_err(|e| rules::namespace_clash(e, &name))
    }

    fn add_alias(&mut self, account: &str, alias: &str) -> Result<String> {
        self.insert_alias(account, alias)
    }

    fn remove_alias(&mut self, alias: &str) -> Result<()> {
        self.delete_alias(alias)
    }

    fn list_aliases(&self, account: Option<&str>) -> Result<Vec<AliasInfo>> {
        self.alias_list(account)
    }

    fn add_block(&mut self, network: &str, note: Option<&str>) -> Result<String> {
        self.insert_block(network, note)
    }

    fn remove_block(&mut self, network: &str) -> Result<String> {
        self.delete_block(network)
    }

    fn list_blocks(&self) -> Result<Vec<BlockInfo>> {
        self.block_list()
    }

    fn list_accounts(&self) -> Result<Vec<AccountInfo>> {
        let names: Vec<String> = self
            .conn
            .prepare("SELECT name FROM accounts ORDER BY name")?
            .query_map([], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        names.iter().map(|n| self.account_info(n)).collect()
    }

    fn account_info(&self, name: &str) -> Result<AccountInfo> {
        let id = account_id(&self.conn, name)?;
        let mut info = self.conn.query_row(
            "SELECT name, plan, disabled, password_hash IS NOT NULL, totp_secret IS NOT NULL,
                    (SELECT count(*) FROM one_time_codes WHERE account_id = a.id AND used IS NULL),
                    (SELECT count(*) FROM app_passwords WHERE account_id = a.id AND revoked IS NULL),
                    created, last_login
             FROM accounts a WHERE id = ?1",
            [id],
            |r| {
                Ok(AccountInfo {
                    name: r.get(0)?,
                    plan: r.get(1)?,
                    disabled: r.get(2)?,
                    has_password: r.get(3)?,
                    totp: r.get(4)?,
                    codes_left: r.get(5)?,
                    app_passwords: r.get(6)?,
                    created: r.get(7)?,
                    last_login: r.get(8)?,
                    overrides: Vec::new(),
                    backends: Vec::new(),
                    aliases: Vec::new(),
                })
            },
        )?;
        info.overrides = self
            .conn
            .prepare("SELECT service, allow FROM service_overrides WHERE account_id = ?1 ORDER BY service")?
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<std::result::Result<_, _>>()?;
        info.backends = super::RoutingAdmin::account_backends(self, &info.name)?;
        info.aliases = self.aliases_of(id)?;
        Ok(info)
    }

    fn set_disabled(&mut self, name: &str, disabled: bool) -> Result<()> {
        self.change_account(
            name,
            "UPDATE accounts SET disabled = ?2 WHERE id = ?1",
            &[&disabled],
        )
    }

    fn delete_account(&mut self, name: &str) -> Result<()> {
        self.change_account(name, "DELETE FROM accounts WHERE id = ?1", &[])
    }

    fn set_plan(&mut self, name: &str, plan: &str) -> Result<()> {
        self.change(|tx| {
            let id = account_id(tx, name)?;
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM plans WHERE name = ?1)",
                [plan],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(Error::NotFound(format!("plan {plan}")));
            }
            tx.execute(
                "UPDATE accounts SET plan = ?2 WHERE id = ?1",
                params![id, plan],
            )?;
            Ok(())
        })
    }

    /// Sets the master password (bcrypt at the configured cost). With
    /// `revoke_app_passwords`, every app password of the account is revoked too
    /// (what a user wants after a suspected compromise).
    fn set_master_password(
        &mut self,
        name: &str,
        password: &SecretBytes,
        revoke_app_passwords: bool,
    ) -> Result<()> {
        let hash = rules::master_password_hash(&self.config, password)?;
        let now = now();
        self.change(|tx| {
            let id = account_id(tx, name)?;
            tx.execute(
                "UPDATE accounts SET password_hash = ?2, password_changed = ?3 WHERE id = ?1",
                params![id, hash, now],
            )?;
            if revoke_app_passwords {
                tx.execute(
                    "UPDATE app_passwords SET revoked = ?2 WHERE account_id = ?1 AND revoked IS NULL",
                    params![id, now],
                )?;
            }
            Ok(())
        })
    }

    fn clear_master_password(&mut self, name: &str) -> Result<()> {
        self.change_account(
            name,
            "UPDATE accounts SET password_hash = NULL WHERE id = ?1",
            &[],
        )
    }

    /// Creates an app password; returns its id and the password as shown to the user
    /// (the only time it exists outside the user's hands).
    fn add_app_password(
        &mut self,
        name: &str,
        label: &str,
        services: &[String],
        restricted: bool,
        expires: Option<i64>,
    ) -> Result<(i64, SecretBytes)> {
        let label = rules::app_password_label(label)?;
        let (canonical, shown) = crypto::new_app_password().map_err(Error::Storage)?;
        let now = now();
        let key = self.hmac_key.clone();
        let id = self.change(|tx| {
            let account = account_id(tx, name)?;
            let lookup = app_lookup(&key, account, canonical.as_bytes());
            tx.execute(
                "INSERT INTO app_passwords (account_id, label, lookup, services, restricted, created, expires)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![account, label, &lookup[..], services.join(","), restricted, now, expires],
            )?;
            Ok(tx.last_insert_rowid())
        })?;
        Ok((id, shown))
    }

    fn list_app_passwords(&self, name: &str) -> Result<Vec<AppPasswordInfo>> {
        let id = account_id(&self.conn, name)?;
        let rows = self
            .conn
            .prepare(
                "SELECT id, label, services, restricted, created, expires, revoked, last_used
                 FROM app_passwords WHERE account_id = ?1 ORDER BY id",
            )?
            .query_map([id], |r| {
                Ok(AppPasswordInfo {
                    id: r.get(0)?,
                    label: r.get(1)?,
                    services: split_list(&r.get::<_, String>(2)?),
                    restricted: r.get(3)?,
                    created: r.get(4)?,
                    expires: r.get(5)?,
                    revoked: r.get(6)?,
                    last_used: r.get(7)?,
                })
            })?
            .collect::<std::result::Result<_, _>>()?;
        Ok(rows)
    }

    fn revoke_app_password(&mut self, name: &str, app_id: i64) -> Result<()> {
        let now = now();
        self.change(|tx| {
            let id = account_id(tx, name)?;
            let n = tx.execute(
                "UPDATE app_passwords SET revoked = coalesce(revoked, ?3) WHERE id = ?1 AND account_id = ?2",
                params![app_id, id, now],
            )?;
            if n == 0 {
                return Err(Error::NotFound(format!("app password {app_id} of {name}")));
            }
            Ok(())
        })
    }

    fn enable_totp(&mut self, name: &str, secret: &[u8]) -> Result<()> {
        self.change_account(
            name,
            "UPDATE accounts SET totp_secret = ?2, totp_last_step = 0 WHERE id = ?1",
            &[&secret],
        )
    }

    fn disable_totp(&mut self, name: &str) -> Result<()> {
        self.change_account(
            name,
            "UPDATE accounts SET totp_secret = NULL, totp_last_step = 0 WHERE id = ?1",
            &[],
        )
    }

    /// Replaces the account's one-time codes with `count` new ones (shown once).
    fn generate_codes(&mut self, name: &str, count: usize) -> Result<Vec<SecretBytes>> {
        let codes = rules::new_codes(count)?;
        let key = self.hmac_key.clone();
        let now = now();
        self.change(|tx| {
            let id = account_id(tx, name)?;
            tx.execute("DELETE FROM one_time_codes WHERE account_id = ?1", [id])?;
            for (canonical, _) in &codes {
                let lookup = code_lookup(&key, id, canonical.as_bytes());
                tx.execute(
                    "INSERT INTO one_time_codes (account_id, lookup, created) VALUES (?1, ?2, ?3)",
                    params![id, &lookup[..], now],
                )?;
            }
            Ok(())
        })?;
        Ok(codes.into_iter().map(|(_, shown)| shown).collect())
    }

    /// `allow`: Some(true) allow, Some(false) deny, None clear the override.
    fn set_service_override(
        &mut self,
        name: &str,
        service: &str,
        allow: Option<bool>,
    ) -> Result<()> {
        let service = rules::service_name(&self.config, service)?;
        self.change(|tx| {
            let id = account_id(tx, name)?;
            match allow {
                Some(a) => tx.execute(
                    "INSERT OR REPLACE INTO service_overrides (account_id, service, allow) VALUES (?1, ?2, ?3)",
                    params![id, service, a],
                )?,
                None => tx.execute(
                    "DELETE FROM service_overrides WHERE account_id = ?1 AND service = ?2",
                    params![id, service],
                )?,
            };
            Ok(())
        })
    }

    fn set_plan_services(&mut self, plan: &str, services: &[String]) -> Result<()> {
        let plan = rules::plan_name(plan)?;
        self.change(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO plans (name, services) VALUES (?1, ?2)",
                params![plan, services.join(",")],
            )?;
            Ok(())
        })
    }

    fn list_plans(&self) -> Result<Vec<PlanInfo>> {
        let rows = self
            .conn
            .prepare(
                "SELECT p.name, p.services, (SELECT count(*) FROM accounts a WHERE a.plan = p.name)
                 FROM plans p ORDER BY p.name",
            )?
            .query_map([], |r| {
                Ok(PlanInfo {
                    name: r.get(0)?,
                    services: split_list(&r.get::<_, String>(1)?),
                    accounts: r.get(2)?,
                })
            })?
            .collect::<std::result::Result<_, _>>()?;
        Ok(rows)
    }

    /// Audit records, oldest first, optionally for one account and since a time.
    fn audit_entries(
        &self,
        account: Option<&str>,
        since: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        let account = account.map(rules::account_name).transpose()?;
        let mut rows: Vec<AuditEntry> = self
            .conn
            .prepare(
                "SELECT id, ts, account, service, client_addr, outcome, reason, detail, credential
                 FROM audit WHERE (?1 IS NULL OR account = ?1) AND ts >= ?2
                 ORDER BY id DESC LIMIT ?3",
            )?
            .query_map(
                params![account, since.unwrap_or(0), limit as i64],
                audit_entry,
            )?
            .collect::<std::result::Result<_, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// For `saslgate explain`: the account and its app passwords as the engine sees them.
    fn explain_rows(&self, name: &str) -> Result<(AccountRow, Vec<AppPasswordRow>)> {
        let name = rules::account_name(name)?;
        let acct = self
            .find_account(&name)?
            .ok_or_else(|| Error::NotFound(format!("account {name}")))?;
        let sql = format!(
            "SELECT {} FROM app_passwords WHERE account_id = ?1 ORDER BY id",
            AppPasswordRow::COLUMNS
        );
        let apps = self
            .conn
            .prepare(&sql)?
            .query_map([acct.id], AppPasswordRow::from_row)?
            .collect::<std::result::Result<_, _>>()?;
        Ok((acct, apps))
    }

    fn export_all(&self) -> Result<super::dump::Dump> {
        self.export_sqlite()
    }

    fn import_all(
        &mut self,
        dump: &super::dump::Dump,
        force: bool,
    ) -> Result<super::dump::DumpCounts> {
        self.import_sqlite(dump, force)
    }
}

/// One audit row as `SELECT id, ts, account, service, client_addr, outcome,
/// reason, detail, credential` gives it.
pub(super) fn audit_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.get(0)?,
        ts: r.get(1)?,
        account: r.get(2)?,
        service: r.get(3)?,
        client_addr: r.get(4)?,
        outcome: r.get(5)?,
        reason: r.get(6)?,
        detail: r.get(7)?,
        credential: r.get(8)?,
    })
}
