//! Login aliases and the address block list on PostgreSQL. The schema's
//! trigger keeps aliases and account names in one namespace under an advisory
//! lock, so two hosts adding the same name as an account and as an alias at
//! once cannot both succeed; the checks here come first only to give a clear
//! message, and the trigger's refusal is turned into the same one.

use super::login::account_row;
use super::{get, PgStore};
use crate::error::{Error, Result};
use crate::store::aliases::{AliasInfo, BlockInfo};
use crate::store::login::AccountRow;
use crate::store::rules;
use crate::timefmt::now;

const FIND_BY_ALIAS: &str =
    "SELECT a.id, a.name, a.plan, a.disabled, a.password_hash, a.totp_secret, a.totp_last_step,
            EXISTS (SELECT 1 FROM one_time_codes c WHERE c.account_id = a.id)
     FROM aliases l JOIN accounts a ON a.id = l.account_id WHERE l.alias = $1";

impl PgStore {
    pub(super) fn alias_account(&self, alias: &str) -> Result<Option<AccountRow>> {
        self.query_opt(FIND_BY_ALIAS, &[&alias])?
            .map(|r| account_row(&r))
            .transpose()
    }

    pub(super) fn block_networks(&self) -> Result<Vec<String>> {
        self.query("SELECT network FROM blocks ORDER BY network", &[])?
            .iter()
            .map(|r| get(r, 0))
            .collect()
    }

    pub(super) fn aliases_of(&self, account_id: i64) -> Result<Vec<String>> {
        self.query(
            "SELECT alias FROM aliases WHERE account_id = $1 ORDER BY alias",
            &[&account_id],
        )?
        .iter()
        .map(|r| get(r, 0))
        .collect()
    }

    pub(super) fn is_alias(&self, name: &str) -> Result<bool> {
        let r = self.query_one(
            "SELECT EXISTS (SELECT 1 FROM aliases WHERE alias = $1)",
            &[&name],
        )?;
        get(&r, 0)
    }

    pub(super) fn insert_alias(&mut self, account: &str, alias: &str) -> Result<String> {
        let account = rules::account_name(account)?;
        let alias = rules::alias_name(alias)?;
        let result = self.write(|s| {
            let id: i64 =
                match s.query_opt("SELECT id FROM accounts WHERE name = $1", &[&account])? {
                    Some(r) => get(&r, 0)?,
                    None => return Err(Error::NotFound(format!("account {account}"))),
                };
            let r = s.query_one(
                "SELECT EXISTS (SELECT 1 FROM accounts WHERE name = $1)",
                &[&alias],
            )?;
            if get::<bool>(&r, 0)? {
                return Err(Error::Exists(format!(
                    "{alias} is an account's name (an alias cannot shadow it)"
                )));
            }
            let n = s.execute(
                "INSERT INTO aliases (alias, account_id, created) VALUES ($1, $2, $3)
                 ON CONFLICT (alias) DO NOTHING",
                &[&alias, &id, &now()],
            )?;
            if n == 0 {
                return Err(Error::Exists(format!("alias {alias}")));
            }
            Ok(())
        });
        result.map_err(|e| rules::namespace_clash(e, &alias))?;
        Ok(alias)
    }

    pub(super) fn delete_alias(&mut self, alias: &str) -> Result<()> {
        let alias = rules::alias_name(alias)?;
        self.write(|s| {
            if s.execute("DELETE FROM aliases WHERE alias = $1", &[&alias])? == 0 {
                return Err(Error::NotFound(format!("alias {alias}")));
            }
            Ok(())
        })
    }

    pub(super) fn alias_list(&self, account: Option<&str>) -> Result<Vec<AliasInfo>> {
        let account = account.map(rules::account_name).transpose()?;
        if let Some(name) = &account {
            if self
                .query_opt("SELECT id FROM accounts WHERE name = $1", &[name])?
                .is_none()
            {
                return Err(Error::NotFound(format!("account {name}")));
            }
        }
        self.query(
            "SELECT l.alias, a.name, l.created FROM aliases l JOIN accounts a ON a.id = l.account_id
             WHERE $1::text IS NULL OR a.name = $1 ORDER BY a.name, l.alias",
            &[&account],
        )?
        .iter()
        .map(|r| {
            Ok(AliasInfo {
                alias: get(r, 0)?,
                account: get(r, 1)?,
                created: get(r, 2)?,
            })
        })
        .collect()
    }

    pub(super) fn insert_block(&mut self, network: &str, note: Option<&str>) -> Result<String> {
        let network = rules::block_network(network)?;
        self.write(|s| {
            let n = s.execute(
                "INSERT INTO blocks (network, note, created) VALUES ($1, $2, $3)
                 ON CONFLICT (network) DO NOTHING",
                &[&network, &note, &now()],
            )?;
            if n == 0 {
                return Err(Error::Exists(format!("block {network}")));
            }
            Ok(())
        })?;
        Ok(network)
    }

    pub(super) fn delete_block(&mut self, network: &str) -> Result<String> {
        let network = rules::block_network(network)?;
        self.write(|s| {
            if s.execute("DELETE FROM blocks WHERE network = $1", &[&network])? == 0 {
                return Err(Error::NotFound(format!("block {network}")));
            }
            Ok(())
        })?;
        Ok(network)
    }

    pub(super) fn block_list(&self) -> Result<Vec<BlockInfo>> {
        self.query(
            "SELECT network, note, created FROM blocks ORDER BY created, network",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(BlockInfo {
                network: get(r, 0)?,
                note: get(r, 1)?,
                created: get(r, 2)?,
            })
        })
        .collect()
    }
}
