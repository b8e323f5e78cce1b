//! Login aliases and the address block list, on both backends. The schema
//! keeps the rules whoever writes (aliases and account names share one
//! namespace; both tables move the generation); on PostgreSQL its trigger
//! takes an advisory lock, so two hosts adding the same name as an account
//! and as an alias at once cannot both succeed. The checks here come first
//! only to give a clear message, and a trigger's refusal is turned into the
//! same one.

use super::{account_id, params, Db, Sql, SqlRow};
use crate::error::{Error, Result};
use crate::secret::SecretBytes;
use crate::store::rules;
use crate::store::types::AccountRow;
use crate::timefmt::now;
use serde::Serialize;

/// One login alias (`saslgate alias list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AliasInfo {
    pub alias: String,
    /// The canonical account name the alias logs in as.
    pub account: String,
    pub created: i64,
}

/// One block-list entry (`saslgate block list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockInfo {
    /// `ADDRESS/LEN`, the network address.
    pub network: String,
    pub note: Option<String>,
    pub created: i64,
}

const FIND_BY_ALIAS: &str =
    "SELECT a.id, a.name, a.plan, a.disabled, a.password_hash, a.totp_secret, a.totp_last_step,
            EXISTS (SELECT 1 FROM one_time_codes c WHERE c.account_id = a.id)
     FROM aliases l JOIN accounts a ON a.id = l.account_id WHERE l.alias = $1";

/// Whether `name` is a login alias (the account side of the namespace check).
pub(crate) fn is_alias(db: &dyn Sql, name: &str) -> Result<bool> {
    db.query_one(
        "SELECT EXISTS (SELECT 1 FROM aliases WHERE alias = $1)",
        params![name],
    )?
    .bool(0)
}

/// Aliases and blocks on any backend (the trait methods call these).
pub(crate) trait Aliases: Db {
    fn alias_account(&self, alias: &str) -> Result<Option<AccountRow>> {
        self.reader()
            .query_opt(FIND_BY_ALIAS, params![alias])?
            .map(|r| account_row(&r))
            .transpose()
    }

    fn block_networks(&self) -> Result<Vec<String>> {
        self.reader()
            .query("SELECT network FROM blocks ORDER BY network", &[])?
            .iter()
            .map(|r| r.text(0))
            .collect()
    }

    /// The aliases of the account with this id, sorted.
    fn aliases_of(&self, account_id: i64) -> Result<Vec<String>> {
        self.reader()
            .query(
                "SELECT alias FROM aliases WHERE account_id = $1 ORDER BY alias",
                params![account_id],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect()
    }

    fn insert_alias(&mut self, account: &str, alias: &str) -> Result<String> {
        let alias = rules::alias_name(alias)?;
        let result = self.transaction(|tx| {
            let id = account_id(tx, account)?;
            let is_account = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM accounts WHERE name = $1)",
                    params![&alias],
                )?
                .bool(0)?;
            if is_account {
                return Err(Error::Exists(format!(
                    "{alias} is an account's name (an alias cannot shadow it)"
                )));
            }
            let owner = tx.query_opt(
                "SELECT a.name FROM aliases l JOIN accounts a ON a.id = l.account_id
                 WHERE l.alias = $1",
                params![&alias],
            )?;
            if let Some(owner) = owner {
                return Err(Error::Exists(format!(
                    "alias {alias} (of {})",
                    owner.text(0)?
                )));
            }
            // A concurrent writer's row (PostgreSQL, READ COMMITTED) is
            // skipped, not an error, and reported as the one seen above.
            let n = tx.execute(
                "INSERT INTO aliases (alias, account_id, created) VALUES ($1, $2, $3)
                 ON CONFLICT (alias) DO NOTHING",
                params![&alias, id, now()],
            )?;
            if n == 0 {
                return Err(Error::Exists(format!("alias {alias}")));
            }
            Ok(())
        });
        result.map_err(|e| rules::namespace_clash(e, &alias))?;
        Ok(alias)
    }

    fn delete_alias(&mut self, alias: &str) -> Result<()> {
        let alias = rules::alias_name(alias)?;
        if self.write_one("DELETE FROM aliases WHERE alias = $1", params![&alias])? == 0 {
            return Err(Error::NotFound(format!("alias {alias}")));
        }
        Ok(())
    }

    fn alias_list(&self, account: Option<&str>) -> Result<Vec<AliasInfo>> {
        let db = self.reader();
        let account = match account {
            Some(name) => {
                account_id(db, name)?;
                Some(rules::account_name(name)?)
            }
            None => None,
        };
        db.query(
            "SELECT l.alias, a.name, l.created FROM aliases l JOIN accounts a ON a.id = l.account_id
             WHERE CAST($1 AS TEXT) IS NULL OR a.name = $1 ORDER BY a.name, l.alias",
            params![account.as_ref()],
        )?
        .iter()
        .map(|r| {
            Ok(AliasInfo {
                alias: r.text(0)?,
                account: r.text(1)?,
                created: r.int(2)?,
            })
        })
        .collect()
    }

    fn insert_block(&mut self, network: &str, note: Option<&str>) -> Result<String> {
        let network = rules::block_network(network)?;
        let n = self.write_one(
            "INSERT INTO blocks (network, note, created) VALUES ($1, $2, $3)
             ON CONFLICT (network) DO NOTHING",
            params![&network, note, now()],
        )?;
        if n == 0 {
            return Err(Error::Exists(format!("block {network}")));
        }
        Ok(network)
    }

    fn delete_block(&mut self, network: &str) -> Result<String> {
        let network = rules::block_network(network)?;
        if self.write_one("DELETE FROM blocks WHERE network = $1", params![&network])? == 0 {
            return Err(Error::NotFound(format!("block {network}")));
        }
        Ok(network)
    }

    fn block_list(&self) -> Result<Vec<BlockInfo>> {
        self.reader()
            .query(
                "SELECT network, note, created FROM blocks ORDER BY created, network",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(BlockInfo {
                    network: r.text(0)?,
                    note: r.opt_text(1)?,
                    created: r.int(2)?,
                })
            })
            .collect()
    }
}

impl<D: Db> Aliases for D {}

/// An [`AccountRow`] from the columns `id, name, plan, disabled,
/// password_hash, totp_secret, totp_last_step, has_codes` (in that order):
/// shared by the lookups by name and by alias.
pub(crate) fn account_row(r: &SqlRow) -> Result<AccountRow> {
    Ok(AccountRow {
        id: r.int(0)?,
        name: r.text(1)?,
        plan: r.text(2)?,
        disabled: r.bool(3)?,
        password_hash: r.opt_text(4)?,
        totp_secret: r.opt_blob(5)?.map(SecretBytes::new),
        totp_last_step: r.int(6)?,
        has_codes: r.bool(7)?,
    })
}
