//! Operator changes, on both backends. Every change runs in one transaction
//! and moves the generation (the schema's triggers; SQLite's store also
//! moves it itself, see [`Db::change`]), which invalidates every positive
//! cache entry in every process.

use super::aliases::{is_alias, AliasInfo, Aliases, BlockInfo};
use super::{account_id, params, Db, Sql, SqlRow};
use crate::crypto;
use crate::error::{Error, Result};
use crate::secret::SecretBytes;
use crate::store::dump::{Dump, DumpCounts};
use crate::store::rules;
use crate::store::types::ONE_TIME_CODE_TAG;
use crate::store::types::{split_list, AccountRow, AppPasswordRow, APP_PASSWORD_TAG};
use crate::store::types::{AccountInfo, AppPasswordInfo, AuditEntry, PlanInfo};
use crate::store::{AdminStore, LoginStore, RoutingAdmin};
use crate::timefmt::now;

fn plan_exists(db: &dyn Sql, plan: &str) -> Result<bool> {
    db.query_one(
        "SELECT EXISTS (SELECT 1 FROM plans WHERE name = $1)",
        params![plan],
    )?
    .bool(0)
}

/// A one-statement change to an account: `sql` gets the account id as `$1`,
/// then `extra` as `$2`...
fn change_account<D: Db>(
    db: &mut D,
    name: &str,
    sql: &'static str,
    extra: &[super::Value<'_>],
) -> Result<()> {
    db.change(|tx| {
        let mut args = vec![super::Value::Int(account_id(tx, name)?)];
        args.extend_from_slice(extra);
        tx.execute(sql, &args)?;
        Ok(())
    })
}

/// An [`AppPasswordRow`] from the columns `id, account_id, label, services,
/// restricted, expires, revoked`.
pub(crate) fn app_password_row(r: &SqlRow) -> Result<AppPasswordRow> {
    Ok(AppPasswordRow {
        id: r.int(0)?,
        account_id: r.int(1)?,
        label: r.text(2)?,
        services: split_list(&r.text(3)?),
        restricted: r.bool(4)?,
        expires: r.opt_int(5)?,
        revoked: r.opt_int(6)?,
    })
}

/// One audit row as `SELECT id, ts, account, service, client_addr, outcome,
/// reason, detail, credential` gives it.
pub(crate) fn audit_entry(r: &SqlRow) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.int(0)?,
        ts: r.int(1)?,
        account: r.opt_text(2)?,
        service: r.opt_text(3)?,
        client_addr: r.opt_text(4)?,
        outcome: r.text(5)?,
        reason: r.opt_text(6)?,
        detail: r.opt_text(7)?,
        credential: r.opt_text(8)?,
    })
}

impl<D: Db + LoginStore> AdminStore for D {
    fn add_account(&mut self, name: &str, plan: &str) -> Result<String> {
        let name = rules::account_name(name)?;
        let plan = plan.trim().to_string();
        self.change(|tx| {
            if !plan_exists(tx, &plan)? {
                return Err(Error::NotFound(format!(
                    "plan {plan} (create it with `saslgate plan set`)"
                )));
            }
            if is_alias(tx, &name)? {
                return Err(rules::namespace_clash(
                    Error::Storage("saslgate: an alias has this name".into()),
                    &name,
                ));
            }
            let n = tx.execute(
                "INSERT INTO accounts (name, plan, created) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                params![&name, &plan, now()],
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
        let names = self
            .reader()
            .query("SELECT name FROM accounts ORDER BY name", &[])?
            .iter()
            .map(|r| r.text(0))
            .collect::<Result<Vec<_>>>()?;
        names.iter().map(|n| self.account_info(n)).collect()
    }

    fn account_info(&self, name: &str) -> Result<AccountInfo> {
        let db = self.reader();
        let id = account_id(db, name)?;
        let r = db.query_one(
            "SELECT name, plan, disabled, password_hash IS NOT NULL, totp_secret IS NOT NULL,
                    (SELECT count(*) FROM one_time_codes WHERE account_id = a.id AND used IS NULL),
                    (SELECT count(*) FROM app_passwords WHERE account_id = a.id AND revoked IS NULL),
                    created, last_login
             FROM accounts a WHERE id = $1",
            params![id],
        )?;
        let overrides = db
            .query(
                "SELECT service, allow FROM service_overrides WHERE account_id = $1 ORDER BY service",
                params![id],
            )?
            .iter()
            .map(|o| Ok((o.text(0)?, o.bool(1)?)))
            .collect::<Result<_>>()?;
        let name = r.text(0)?;
        Ok(AccountInfo {
            backends: RoutingAdmin::account_backends(self, &name)?,
            name,
            plan: r.text(1)?,
            disabled: r.bool(2)?,
            has_password: r.bool(3)?,
            totp: r.bool(4)?,
            codes_left: r.int(5)?,
            app_passwords: r.int(6)?,
            created: r.int(7)?,
            last_login: r.opt_int(8)?,
            overrides,
            aliases: self.aliases_of(id)?,
        })
    }

    fn set_disabled(&mut self, name: &str, disabled: bool) -> Result<()> {
        change_account(
            self,
            name,
            "UPDATE accounts SET disabled = $2 WHERE id = $1",
            params![disabled],
        )
    }

    fn delete_account(&mut self, name: &str) -> Result<()> {
        change_account(self, name, "DELETE FROM accounts WHERE id = $1", &[])
    }

    fn set_plan(&mut self, name: &str, plan: &str) -> Result<()> {
        self.change(|tx| {
            let id = account_id(tx, name)?;
            if !plan_exists(tx, plan)? {
                return Err(Error::NotFound(format!("plan {plan}")));
            }
            tx.execute(
                "UPDATE accounts SET plan = $2 WHERE id = $1",
                params![id, plan],
            )?;
            Ok(())
        })
    }

    fn set_master_password(
        &mut self,
        name: &str,
        password: &SecretBytes,
        revoke_app_passwords: bool,
    ) -> Result<()> {
        let hash = rules::master_password_hash(self.config(), password)?;
        let now = now();
        self.change(|tx| {
            let id = account_id(tx, name)?;
            tx.execute(
                "UPDATE accounts SET password_hash = $2, password_changed = $3 WHERE id = $1",
                params![id, &hash, now],
            )?;
            if revoke_app_passwords {
                tx.execute(
                    "UPDATE app_passwords SET revoked = $2 WHERE account_id = $1 AND revoked IS NULL",
                    params![id, now],
                )?;
            }
            Ok(())
        })
    }

    fn clear_master_password(&mut self, name: &str) -> Result<()> {
        change_account(
            self,
            name,
            "UPDATE accounts SET password_hash = NULL WHERE id = $1",
            &[],
        )
    }

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
        let list = services.join(",");
        let hasher = self.hasher();
        let id = self.change(|tx| {
            let account = account_id(tx, name)?;
            let lookup = hasher.hash(&[
                APP_PASSWORD_TAG,
                &account.to_be_bytes(),
                canonical.as_bytes(),
            ]);
            tx.query_one(
                "INSERT INTO app_passwords
                   (account_id, label, lookup, services, restricted, created, expires)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                params![account, label, &lookup[..], &list, restricted, now, expires],
            )?
            .int(0)
        })?;
        Ok((id, shown))
    }

    fn list_app_passwords(&self, name: &str) -> Result<Vec<AppPasswordInfo>> {
        let db = self.reader();
        let id = account_id(db, name)?;
        db.query(
            "SELECT id, label, services, restricted, created, expires, revoked, last_used
             FROM app_passwords WHERE account_id = $1 ORDER BY id",
            params![id],
        )?
        .iter()
        .map(|r| {
            Ok(AppPasswordInfo {
                id: r.int(0)?,
                label: r.text(1)?,
                services: split_list(&r.text(2)?),
                restricted: r.bool(3)?,
                created: r.int(4)?,
                expires: r.opt_int(5)?,
                revoked: r.opt_int(6)?,
                last_used: r.opt_int(7)?,
            })
        })
        .collect()
    }

    fn revoke_app_password(&mut self, name: &str, app_id: i64) -> Result<()> {
        let now = now();
        self.change(|tx| {
            let id = account_id(tx, name)?;
            let n = tx.execute(
                "UPDATE app_passwords SET revoked = coalesce(revoked, $3)
                 WHERE id = $1 AND account_id = $2",
                params![app_id, id, now],
            )?;
            if n == 0 {
                return Err(Error::NotFound(format!("app password {app_id} of {name}")));
            }
            Ok(())
        })
    }

    fn enable_totp(&mut self, name: &str, secret: &[u8]) -> Result<()> {
        change_account(
            self,
            name,
            "UPDATE accounts SET totp_secret = $2, totp_last_step = 0 WHERE id = $1",
            params![secret],
        )
    }

    fn disable_totp(&mut self, name: &str) -> Result<()> {
        change_account(
            self,
            name,
            "UPDATE accounts SET totp_secret = NULL, totp_last_step = 0 WHERE id = $1",
            &[],
        )
    }

    fn generate_codes(&mut self, name: &str, count: usize) -> Result<Vec<SecretBytes>> {
        let codes = rules::new_codes(count)?;
        let now = now();
        let hasher = self.hasher();
        self.change(|tx| {
            let id = account_id(tx, name)?;
            tx.execute(
                "DELETE FROM one_time_codes WHERE account_id = $1",
                params![id],
            )?;
            for (canonical, _) in &codes {
                let lookup =
                    hasher.hash(&[ONE_TIME_CODE_TAG, &id.to_be_bytes(), canonical.as_bytes()]);
                tx.execute(
                    "INSERT INTO one_time_codes (account_id, lookup, created) VALUES ($1, $2, $3)",
                    params![id, &lookup[..], now],
                )?;
            }
            Ok(())
        })?;
        Ok(codes.into_iter().map(|(_, shown)| shown).collect())
    }

    fn set_service_override(
        &mut self,
        name: &str,
        service: &str,
        allow: Option<bool>,
    ) -> Result<()> {
        let service = rules::service_name(self.config(), service)?;
        self.change(|tx| {
            let id = account_id(tx, name)?;
            match allow {
                Some(a) => tx.execute(
                    "INSERT INTO service_overrides (account_id, service, allow) VALUES ($1, $2, $3)
                     ON CONFLICT (account_id, service) DO UPDATE SET allow = excluded.allow",
                    params![id, &service, a],
                )?,
                None => tx.execute(
                    "DELETE FROM service_overrides WHERE account_id = $1 AND service = $2",
                    params![id, &service],
                )?,
            };
            Ok(())
        })
    }

    fn set_plan_services(&mut self, plan: &str, services: &[String]) -> Result<()> {
        let plan = rules::plan_name(plan)?;
        let list = services.join(",");
        self.change(|tx| {
            tx.execute(
                "INSERT INTO plans (name, services) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET services = excluded.services",
                params![plan, &list],
            )?;
            Ok(())
        })
    }

    fn list_plans(&self) -> Result<Vec<PlanInfo>> {
        self.reader()
            .query(
                "SELECT p.name, p.services, (SELECT count(*) FROM accounts a WHERE a.plan = p.name)
                 FROM plans p ORDER BY p.name",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(PlanInfo {
                    name: r.text(0)?,
                    services: split_list(&r.text(1)?),
                    accounts: r.int(2)?,
                })
            })
            .collect()
    }

    fn audit_entries(
        &self,
        account: Option<&str>,
        since: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        let account = account.map(rules::account_name).transpose()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = self
            .reader()
            .query(
                "SELECT id, ts, account, service, client_addr, outcome, reason, detail, credential
                 FROM audit WHERE (CAST($1 AS TEXT) IS NULL OR account = $1) AND ts >= $2
                 ORDER BY id DESC LIMIT $3",
                params![account.as_ref(), since.unwrap_or(0), limit],
            )?
            .iter()
            .map(audit_entry)
            .collect::<Result<Vec<_>>>()?;
        rows.reverse();
        Ok(rows)
    }

    fn explain_rows(&self, name: &str) -> Result<(AccountRow, Vec<AppPasswordRow>)> {
        let name = rules::account_name(name)?;
        let acct = self
            .find_account(&name)?
            .ok_or_else(|| Error::NotFound(format!("account {name}")))?;
        let apps = self
            .reader()
            .query(
                "SELECT id, account_id, label, services, restricted, expires, revoked
                 FROM app_passwords WHERE account_id = $1 ORDER BY id",
                params![acct.id],
            )?
            .iter()
            .map(app_password_row)
            .collect::<Result<_>>()?;
        Ok((acct, apps))
    }

    fn export_all(&self) -> Result<Dump> {
        super::copy::export(self)
    }

    fn import_all(&mut self, dump: &Dump, force: bool) -> Result<DumpCounts> {
        self.import_dump(dump, force)
    }
}
