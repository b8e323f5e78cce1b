//! Operator changes on PostgreSQL. Each runs in one transaction; the
//! generation is moved by the schema's triggers (whoever changes the rows).

use super::login::{account_row, FIND_ACCOUNT};
use super::{get, PgStore};
use crate::crypto;
use crate::error::{Error, Result};
use crate::secret::SecretBytes;
use crate::store::admin::{AccountInfo, AppPasswordInfo, AuditEntry, PlanInfo};
use crate::store::aliases::{AliasInfo, BlockInfo};
use crate::store::login::{app_lookup, code_lookup, split_list, AccountRow, AppPasswordRow};
use crate::store::rules;
use crate::store::{AdminStore, LoginStore};
use crate::timefmt::now;

fn account_id(s: &PgStore, name: &str) -> Result<i64> {
    let name = rules::account_name(name)?;
    match s.query_opt("SELECT id FROM accounts WHERE name = $1", &[&name])? {
        Some(r) => get(&r, 0),
        None => Err(Error::NotFound(format!("account {name}"))),
    }
}

fn plan_exists(s: &PgStore, plan: &str) -> Result<bool> {
    let r = s.query_one(
        "SELECT EXISTS (SELECT 1 FROM plans WHERE name = $1)",
        &[&plan],
    )?;
    get(&r, 0)
}

impl AdminStore for PgStore {
    fn add_account(&mut self, name: &str, plan: &str) -> Result<String> {
        let name = rules::account_name(name)?;
        let plan = plan.trim().to_string();
        self.write(|s| {
            if !plan_exists(s, &plan)? {
                return Err(Error::NotFound(format!(
                    "plan {plan} (create it with `saslgate plan set`)"
                )));
            }
            if s.is_alias(&name)? {
                return Err(rules::namespace_clash(
                    Error::Storage("saslgate: an alias has this name".into()),
                    &name,
                ));
            }
            let n = s.execute(
                "INSERT INTO accounts (name, plan, created) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &plan, &now()],
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
            .query("SELECT name FROM accounts ORDER BY name", &[])?
            .iter()
            .map(|r| get(r, 0))
            .collect::<Result<_>>()?;
        names.iter().map(|n| self.account_info(n)).collect()
    }

    fn account_info(&self, name: &str) -> Result<AccountInfo> {
        let id = account_id(self, name)?;
        let r = self.query_one(
            "SELECT name, plan, disabled, password_hash IS NOT NULL, totp_secret IS NOT NULL,
                    (SELECT count(*) FROM one_time_codes WHERE account_id = a.id AND used IS NULL),
                    (SELECT count(*) FROM app_passwords WHERE account_id = a.id AND revoked IS NULL),
                    created, last_login
             FROM accounts a WHERE id = $1",
            &[&id],
        )?;
        let overrides = self
            .query(
                "SELECT service, allow FROM service_overrides WHERE account_id = $1 ORDER BY service",
                &[&id],
            )?
            .iter()
            .map(|o| Ok((get(o, 0)?, get(o, 1)?)))
            .collect::<Result<_>>()?;
        Ok(AccountInfo {
            name: get(&r, 0)?,
            plan: get(&r, 1)?,
            disabled: get(&r, 2)?,
            has_password: get(&r, 3)?,
            totp: get(&r, 4)?,
            codes_left: get(&r, 5)?,
            app_passwords: get(&r, 6)?,
            created: get(&r, 7)?,
            last_login: get(&r, 8)?,
            overrides,
            backends: crate::store::RoutingAdmin::account_backends(self, name)?,
            aliases: self.aliases_of(id)?,
        })
    }

    fn set_disabled(&mut self, name: &str, disabled: bool) -> Result<()> {
        self.write(|s| {
            let id = account_id(s, name)?;
            s.execute(
                "UPDATE accounts SET disabled = $2 WHERE id = $1",
                &[&id, &disabled],
            )?;
            Ok(())
        })
    }

    fn delete_account(&mut self, name: &str) -> Result<()> {
        self.write(|s| {
            let id = account_id(s, name)?;
            s.execute("DELETE FROM accounts WHERE id = $1", &[&id])?;
            Ok(())
        })
    }

    fn set_plan(&mut self, name: &str, plan: &str) -> Result<()> {
        self.write(|s| {
            let id = account_id(s, name)?;
            if !plan_exists(s, plan)? {
                return Err(Error::NotFound(format!("plan {plan}")));
            }
            s.execute("UPDATE accounts SET plan = $2 WHERE id = $1", &[&id, &plan])?;
            Ok(())
        })
    }

    fn set_master_password(
        &mut self,
        name: &str,
        password: &SecretBytes,
        revoke_app_passwords: bool,
    ) -> Result<()> {
        let hash = rules::master_password_hash(&self.config, password)?;
        let now = now();
        self.write(|s| {
            let id = account_id(s, name)?;
            s.execute(
                "UPDATE accounts SET password_hash = $2, password_changed = $3 WHERE id = $1",
                &[&id, &hash, &now],
            )?;
            if revoke_app_passwords {
                s.execute(
                    "UPDATE app_passwords SET revoked = $2 WHERE account_id = $1 AND revoked IS NULL",
                    &[&id, &now],
                )?;
            }
            Ok(())
        })
    }

    fn clear_master_password(&mut self, name: &str) -> Result<()> {
        self.write(|s| {
            let id = account_id(s, name)?;
            s.execute(
                "UPDATE accounts SET password_hash = NULL WHERE id = $1",
                &[&id],
            )?;
            Ok(())
        })
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
        let id = self.write(|s| {
            let account = account_id(s, name)?;
            let lookup = app_lookup(&s.hmac_key, account, canonical.as_bytes());
            let r = s.query_one(
                "INSERT INTO app_passwords
                   (account_id, label, lookup, services, restricted, created, expires)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &account,
                    &label,
                    &&lookup[..],
                    &list,
                    &restricted,
                    &now,
                    &expires,
                ],
            )?;
            get::<i64>(&r, 0)
        })?;
        Ok((id, shown))
    }

    fn list_app_passwords(&self, name: &str) -> Result<Vec<AppPasswordInfo>> {
        let id = account_id(self, name)?;
        self.query(
            "SELECT id, label, services, restricted, created, expires, revoked, last_used
             FROM app_passwords WHERE account_id = $1 ORDER BY id",
            &[&id],
        )?
        .iter()
        .map(|r| {
            Ok(AppPasswordInfo {
                id: get(r, 0)?,
                label: get(r, 1)?,
                services: split_list(&get::<String>(r, 2)?),
                restricted: get(r, 3)?,
                created: get(r, 4)?,
                expires: get(r, 5)?,
                revoked: get(r, 6)?,
                last_used: get(r, 7)?,
            })
        })
        .collect()
    }

    fn revoke_app_password(&mut self, name: &str, app_id: i64) -> Result<()> {
        let now = now();
        self.write(|s| {
            let id = account_id(s, name)?;
            let n = s.execute(
                "UPDATE app_passwords SET revoked = coalesce(revoked, $3)
                 WHERE id = $1 AND account_id = $2",
                &[&app_id, &id, &now],
            )?;
            if n == 0 {
                return Err(Error::NotFound(format!("app password {app_id} of {name}")));
            }
            Ok(())
        })
    }

    fn enable_totp(&mut self, name: &str, secret: &[u8]) -> Result<()> {
        self.write(|s| {
            let id = account_id(s, name)?;
            s.execute(
                "UPDATE accounts SET totp_secret = $2, totp_last_step = 0 WHERE id = $1",
                &[&id, &secret],
            )?;
            Ok(())
        })
    }

    fn disable_totp(&mut self, name: &str) -> Result<()> {
        self.write(|s| {
            let id = account_id(s, name)?;
            s.execute(
                "UPDATE accounts SET totp_secret = NULL, totp_last_step = 0 WHERE id = $1",
                &[&id],
            )?;
            Ok(())
        })
    }

    fn generate_codes(&mut self, name: &str, count: usize) -> Result<Vec<SecretBytes>> {
        let codes = rules::new_codes(count)?;
        let now = now();
        self.write(|s| {
            let id = account_id(s, name)?;
            s.execute("DELETE FROM one_time_codes WHERE account_id = $1", &[&id])?;
            for (canonical, _) in &codes {
                let lookup = code_lookup(&s.hmac_key, id, canonical.as_bytes());
                s.execute(
                    "INSERT INTO one_time_codes (account_id, lookup, created) VALUES ($1, $2, $3)",
                    &[&id, &&lookup[..], &now],
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
        let service = rules::service_name(&self.config, service)?;
        self.write(|s| {
            let id = account_id(s, name)?;
            match allow {
                Some(a) => s.execute(
                    "INSERT INTO service_overrides (account_id, service, allow) VALUES ($1, $2, $3)
                     ON CONFLICT (account_id, service) DO UPDATE SET allow = EXCLUDED.allow",
                    &[&id, &service, &a],
                )?,
                None => s.execute(
                    "DELETE FROM service_overrides WHERE account_id = $1 AND service = $2",
                    &[&id, &service],
                )?,
            };
            Ok(())
        })
    }

    fn set_plan_services(&mut self, plan: &str, services: &[String]) -> Result<()> {
        let plan = rules::plan_name(plan)?;
        let list = services.join(",");
        self.write(|s| {
            s.execute(
                "INSERT INTO plans (name, services) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET services = EXCLUDED.services",
                &[&plan, &list],
            )?;
            Ok(())
        })
    }

    fn list_plans(&self) -> Result<Vec<PlanInfo>> {
        self.query(
            "SELECT p.name, p.services, (SELECT count(*) FROM accounts a WHERE a.plan = p.name)
             FROM plans p ORDER BY p.name",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(PlanInfo {
                name: get(r, 0)?,
                services: split_list(&get::<String>(r, 1)?),
                accounts: get(r, 2)?,
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
            .query(
                "SELECT id, ts, account, service, client_addr, outcome, reason, detail, credential
                 FROM audit WHERE ($1::text IS NULL OR account = $1) AND ts >= $2
                 ORDER BY id DESC LIMIT $3",
                &[&account, &since.unwrap_or(0), &limit],
            )?
            .iter()
            .map(audit_entry)
            .collect::<Result<Vec<_>>>()?;
        rows.reverse();
        Ok(rows)
    }

    fn explain_rows(&self, name: &str) -> Result<(AccountRow, Vec<AppPasswordRow>)> {
        let name = rules::account_name(name)?;
        let acct = match self.query_opt(FIND_ACCOUNT, &[&name])? {
            Some(r) => account_row(&r)?,
            None => return Err(Error::NotFound(format!("account {name}"))),
        };
        let apps = self
            .app_passwords_by_lookup(acct.id)?
            .into_iter()
            .map(|(_, app)| app)
            .collect();
        Ok((acct, apps))
    }

    fn export_all(&self) -> Result<crate::store::dump::Dump> {
        self.export_pg()
    }

    fn import_all(
        &mut self,
        dump: &crate::store::dump::Dump,
        force: bool,
    ) -> Result<crate::store::dump::DumpCounts> {
        self.import_pg(dump, force)
    }
}

/// One audit row as `SELECT id, ts, account, service, client_addr, outcome,
/// reason, detail, credential` gives it.
pub(super) fn audit_entry(r: &tokio_postgres::Row) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: get(r, 0)?,
        ts: get(r, 1)?,
        account: get(r, 2)?,
        service: get(r, 3)?,
        client_addr: get(r, 4)?,
        outcome: get(r, 5)?,
        reason: get(r, 6)?,
        detail: get(r, 7)?,
        credential: get(r, 8)?,
    })
}
