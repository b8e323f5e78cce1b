//! Login aliases and the address block list on SQLite. The schema keeps the
//! rules whoever writes (aliases and account names share one namespace; both
//! tables move the generation); the checks here come first only to give a
//! clear message.

use super::login::AccountRow;
use super::rules;
use super::Store;
use crate::error::{Error, Result};
use crate::timefmt::now;
use rusqlite::{params, OptionalExtension};
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
     FROM aliases l JOIN accounts a ON a.id = l.account_id WHERE l.alias = ?1";

impl Store {
    pub(super) fn alias_account(&self, alias: &str) -> Result<Option<AccountRow>> {
        let mut st = self.conn.prepare_cached(FIND_BY_ALIAS)?;
        Ok(st
            .query_row([alias], super::login::account_row)
            .optional()?)
    }

    pub(super) fn block_networks(&self) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT network FROM blocks ORDER BY network")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The aliases of the account with this id, sorted.
    pub(super) fn aliases_of(&self, account_id: i64) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT alias FROM aliases WHERE account_id = ?1 ORDER BY alias")?;
        let rows = st.query_map([account_id], |r| r.get(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Whether `name` is a login alias (the account side of the namespace check).
    pub(super) fn is_alias(tx: &rusqlite::Connection, name: &str) -> Result<bool> {
        Ok(tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM aliases WHERE alias = ?1)",
            [name],
            |r| r.get(0),
        )?)
    }

    pub(super) fn insert_alias(&mut self, account: &str, alias: &str) -> Result<String> {
        let account = rules::account_name(account)?;
        let alias = rules::alias_name(alias)?;
        let result = self.write(|tx| {
            let id: i64 = tx
                .query_row("SELECT id FROM accounts WHERE name = ?1", [&account], |r| {
                    r.get(0)
                })
                .optional()?
                .ok_or_else(|| Error::NotFound(format!("account {account}")))?;
            let is_account: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM accounts WHERE name = ?1)",
                [&alias],
                |r| r.get(0),
            )?;
            if is_account {
                return Err(Error::Exists(format!(
                    "{alias} is an account's name (an alias cannot shadow it)"
                )));
            }
            let owner: Option<String> = tx
                .query_row(
                    "SELECT a.name FROM aliases l JOIN accounts a ON a.id = l.account_id
                     WHERE l.alias = ?1",
                    [&alias],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(owner) = owner {
                return Err(Error::Exists(format!("alias {alias} (of {owner})")));
            }
            tx.execute(
                "INSERT INTO aliases (alias, account_id, created) VALUES (?1, ?2, ?3)",
                params![alias, id, now()],
            )?;
            Ok(())
        });
        result.map_err(|e| rules::namespace_clash(e, &alias))?;
        Ok(alias)
    }

    pub(super) fn delete_alias(&mut self, alias: &str) -> Result<()> {
        let alias = rules::alias_name(alias)?;
        self.write(|tx| {
            if tx.execute("DELETE FROM aliases WHERE alias = ?1", [&alias])? == 0 {
                return Err(Error::NotFound(format!("alias {alias}")));
            }
            Ok(())
        })
    }

    pub(super) fn alias_list(&self, account: Option<&str>) -> Result<Vec<AliasInfo>> {
        let account = account.map(rules::account_name).transpose()?;
        if let Some(name) = &account {
            let exists: bool = self.conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM accounts WHERE name = ?1)",
                [name],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(Error::NotFound(format!("account {name}")));
            }
        }
        let mut st = self.conn.prepare(
            "SELECT l.alias, a.name, l.created FROM aliases l JOIN accounts a ON a.id = l.account_id
             WHERE ?1 IS NULL OR a.name = ?1 ORDER BY a.name, l.alias",
        )?;
        let rows = st.query_map([&account], |r| {
            Ok(AliasInfo {
                alias: r.get(0)?,
                account: r.get(1)?,
                created: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    pub(super) fn insert_block(&mut self, network: &str, note: Option<&str>) -> Result<String> {
        let network = rules::block_network(network)?;
        self.write(|tx| {
            let n = tx.execute(
                "INSERT OR IGNORE INTO blocks (network, note, created) VALUES (?1, ?2, ?3)",
                params![network, note, now()],
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
        self.write(|tx| {
            if tx.execute("DELETE FROM blocks WHERE network = ?1", [&network])? == 0 {
                return Err(Error::NotFound(format!("block {network}")));
            }
            Ok(())
        })?;
        Ok(network)
    }

    pub(super) fn block_list(&self) -> Result<Vec<BlockInfo>> {
        let mut st = self
            .conn
            .prepare("SELECT network, note, created FROM blocks ORDER BY created, network")?;
        let rows = st.query_map([], |r| {
            Ok(BlockInfo {
                network: r.get(0)?,
                note: r.get(1)?,
                created: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}
