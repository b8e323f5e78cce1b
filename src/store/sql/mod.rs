//! The store's rules written once, over a small executor ([`Sql`]) that
//! both backends implement: `execute`, `query` and `query_opt` with neutral
//! parameters ([`Value`]) and rows ([`SqlRow`]).
//!
//! SQL here is written once in the dialect both databases agree on
//! (PostgreSQL's `$N` placeholders, `ON CONFLICT`, `RETURNING`, `CAST`,
//! booleans compared with `NOT x`); [`sqlite_text`] rewrites `$N` to
//! SQLite's `?N`. Two names differ between the schemas and are written as
//! tokens: `{generation}` (the generation's row: `meta` on SQLite,
//! `saslgate_meta` on PostgreSQL), and `greatest(a, b)`/`least(a, b)` become
//! SQLite's two-argument `max(a, b)`/`min(a, b)`. What stays per dialect: the schema and
//! its triggers, transactions and locks (SQLite's `BEGIN IMMEDIATE`,
//! PostgreSQL's read snapshots), the bulk copy, and the statements a
//! PostgreSQL role may run only through a function (`saslgate_issue_ticket`).
//!
//! [`Db`] is a store on one backend: its executor and its transactions. The
//! trait implementations in this folder are written once for any `Db`.

pub mod admin;
pub mod aliases;
pub mod copy;
pub mod dump;
pub mod login;
pub mod routing;
pub mod throttle;
pub mod tickets;

use super::{ChangeStamp, QuietCommit};
use crate::config::Config;
use crate::crypto::KeyedHasher;
use crate::error::{Error, Result};
use crate::store::types::AuditRecord;
use crate::throttle::{KeyRows, Keys};
use dump::{Dump, DumpCounts, Field, Table};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::RwLock;

/// Which SQL dialect a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A statement's parameter, neutral to both dialects.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Null,
    Int(i64),
    /// SQLite stores it as 0/1, PostgreSQL as `boolean`.
    Bool(bool),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(v)
    }
}
impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(v)
    }
}
impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Blob(v)
    }
}
impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Parameters: `params![a, b]` turns each into a [`Value`].
macro_rules! params {
    ($($v:expr),* $(,)?) => { &[$($crate::store::sql::Value::from($v)),*] };
}
pub(crate) use params;

/// One column of a result row, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Blob(Vec<u8>),
}

/// A result row; a column of another type than asked is a storage error.
#[derive(Debug, Clone, Default)]
pub struct SqlRow(pub Vec<Cell>);

fn mismatch(i: usize, want: &str, got: &Cell) -> Error {
    Error::Storage(format!("column {i}: expected {want}, found {got:?}"))
}

impl SqlRow {
    fn cell(&self, i: usize) -> Result<&Cell> {
        self.0
            .get(i)
            .ok_or_else(|| Error::Storage(format!("no column {i}")))
    }
    pub fn int(&self, i: usize) -> Result<i64> {
        match self.cell(i)? {
            Cell::Int(v) => Ok(*v),
            other => Err(mismatch(i, "an integer", other)),
        }
    }
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            _ => self.int(i).map(Some),
        }
    }
    /// A boolean: PostgreSQL's `boolean`, SQLite's integer (non-zero: true).
    pub fn bool(&self, i: usize) -> Result<bool> {
        match self.cell(i)? {
            Cell::Bool(v) => Ok(*v),
            Cell::Int(v) => Ok(*v != 0),
            other => Err(mismatch(i, "a boolean", other)),
        }
    }
    pub fn text(&self, i: usize) -> Result<String> {
        match self.cell(i)? {
            Cell::Text(v) => Ok(v.clone()),
            other => Err(mismatch(i, "text", other)),
        }
    }
    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            _ => self.text(i).map(Some),
        }
    }
    pub fn blob(&self, i: usize) -> Result<Vec<u8>> {
        match self.cell(i)? {
            Cell::Blob(v) => Ok(v.clone()),
            other => Err(mismatch(i, "bytes", other)),
        }
    }
    pub fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            _ => self.blob(i).map(Some),
        }
    }
}

/// Runs statements on one connection (or transaction). `sql` is written in
/// the shared dialect (see the module's text); each backend rewrites it once
/// and keeps it prepared.
pub trait Sql {
    fn dialect(&self) -> Dialect;
    /// Rows changed.
    fn execute(&self, sql: &'static str, params: &[Value<'_>]) -> Result<u64>;
    fn query(&self, sql: &'static str, params: &[Value<'_>]) -> Result<Vec<SqlRow>>;
    /// The first row, if any.
    fn query_opt(&self, sql: &'static str, params: &[Value<'_>]) -> Result<Option<SqlRow>>;
    /// Audit records in as few statements as the dialect allows (SQLite:
    /// multi-row `INSERT`s; PostgreSQL: one `unnest` of arrays).
    fn insert_audit(&self, audit: &[AuditRecord]) -> Result<()>;
    /// `saslgate copy`'s import, inside its transaction: what keeps another
    /// import or `init` out (PostgreSQL: table locks; SQLite's write lock
    /// does already).
    fn lock_for_import(&self) -> Result<()> {
        Ok(())
    }
    /// Inserts a copied table's rows (SQLite: one prepared statement per
    /// row; PostgreSQL: chunks through `unnest` of arrays, a round trip each).
    fn insert_rows(&self, table: &Table, rows: &[Vec<Field>]) -> Result<()>;
    /// After an import's rows (SQLite: a new generation; PostgreSQL: the
    /// identity sequences moved past the copied ids).
    fn after_import(&self) -> Result<()>;
    /// Exactly one row (a missing one is a storage error).
    fn query_one(&self, sql: &'static str, params: &[Value<'_>]) -> Result<SqlRow> {
        self.query_opt(sql, params)?
            .ok_or_else(|| Error::Storage("query returned no row".into()))
    }
}

/// A store on one backend: its connection, its transactions and what only
/// it has (SQLite's change stamps and checkpoints, PostgreSQL's roles).
pub trait Db {
    fn db_config(&self) -> &Config;
    /// Starts the slow path's read transaction (a no-op inside one).
    fn begin_snapshot(&self) -> Result<()>;
    /// Ends it, if any. Every write calls this first: on SQLite a deferred
    /// transaction that later writes could fail with SQLITE_BUSY_SNAPSHOT
    /// instead of waiting for the lock.
    fn end_snapshot(&self) -> Result<()>;
    /// The generation and the throttle rows of a request's keys in one
    /// statement (`ThrottleStore::generation_and_throttle`): each backend's
    /// own, tuned for the fast path.
    fn fast_read(&self, keys: &Keys) -> Result<(i64, KeyRows)>;
    /// `ThrottleStore::change_stamp`.
    fn stamp(&self) -> Option<ChangeStamp> {
        None
    }
    /// A write transaction that changes no login data and no throttle row,
    /// with the change stamps around its commit when it was the only one
    /// in between (`LoginStore::write_batch`).
    fn quiet_transaction<T>(
        &mut self,
        f: impl FnOnce(&dyn Sql) -> Result<T>,
    ) -> Result<(T, Option<QuietCommit>)> {
        Ok((self.transaction(f)?, None))
    }
    /// `LoginStore::checkpoint_in_background`.
    fn background_checkpoints(&mut self) -> Result<()> {
        Ok(())
    }
    /// `LoginStore::checkpoint`.
    fn checkpoint_now(&mut self) -> Result<()> {
        Ok(())
    }
    /// The role may rewrite a password hash (PostgreSQL's login role may not).
    fn role_may_rehash(&self) -> bool {
        true
    }
    /// The role may delete audit records (PostgreSQL's login role may not).
    fn role_may_prune_audit(&self) -> bool {
        true
    }
    /// The connection as it is (inside the read transaction of
    /// `LoginStore::begin_read`, if one is open).
    fn reader(&self) -> &dyn Sql;
    /// Ends a read transaction, if any: each statement then commits on its own.
    fn autocommit(&self) -> Result<&dyn Sql> {
        self.end_snapshot()?;
        Ok(self.reader())
    }
    /// Runs `f` in one write transaction (SQLite: `BEGIN IMMEDIATE`;
    /// PostgreSQL: READ COMMITTED, whose conditional updates re-check their
    /// rows under the row lock).
    fn transaction<T>(&mut self, f: impl FnOnce(&dyn Sql) -> Result<T>) -> Result<T>;
    /// One statement that is a write transaction on its own; rows changed.
    fn write_one(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<u64> {
        self.transaction(|tx| tx.execute(sql, params))
    }
    /// `HMAC(database key, ...)` with the key absorbed (the index keys of
    /// app passwords, codes, tickets and sessions).
    fn hasher(&self) -> KeyedHasher;
    /// `HMAC(database key, parts)`.
    fn keyed_hash(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.hasher().hash(parts)
    }
    /// The statement that moves the generation after an admin change, where
    /// the schema's triggers do not move it for every change (SQLite: a new
    /// set of one-time codes is such a change).
    const MOVE_GENERATION: Option<&'static str>;
    /// An admin change: one write transaction that moves the generation.
    fn change<T>(&mut self, f: impl FnOnce(&dyn Sql) -> Result<T>) -> Result<T> {
        self.transaction(|tx| {
            let out = f(tx)?;
            if let Some(sql) = Self::MOVE_GENERATION {
                tx.execute(sql, &[])?;
            }
            Ok(out)
        })
    }
    /// Replaces the whole content with `dump`'s (see `AdminStore::import_all`)
    /// and takes its key.
    fn import_dump(&mut self, dump: &Dump, force: bool) -> Result<DumpCounts>;
}

/// The id of the account named `name` (normalised first); `NotFound`.
pub fn account_id(db: &dyn Sql, name: &str) -> Result<i64> {
    let name = super::rules::account_name(name)?;
    db.query_opt("SELECT id FROM accounts WHERE name = $1", params![&name])?
        .ok_or_else(|| Error::NotFound(format!("account {name}")))?
        .int(0)
}

/// The statement's text in a dialect, rewritten once per text and kept for
/// the life of the process (the texts are the program's own constants, so
/// this is bounded). Each thread keeps its own index of the rewritten texts:
/// no shared lock on the login path after a thread's first use of a text.
pub fn dialect_text(dialect: Dialect, sql: &'static str) -> &'static str {
    type Key = (usize, usize, bool);
    static TEXTS: RwLock<Option<HashMap<Key, &'static str>>> = RwLock::new(None);
    thread_local! {
        static SEEN: RefCell<HashMap<Key, &'static str>> = RefCell::new(HashMap::new());
    }
    let key = (sql.as_ptr() as usize, sql.len(), dialect == Dialect::Sqlite);
    // `try_with`: the plugin's exit flush runs while thread-locals are
    // being destroyed; the shared map serves then.
    if let Some(text) = SEEN
        .try_with(|seen| seen.borrow().get(&key).copied())
        .ok()
        .flatten()
    {
        return text;
    }
    let shared = TEXTS
        .read()
        .ok()
        .and_then(|t| t.as_ref().and_then(|m| m.get(&key).copied()));
    let text = shared.unwrap_or_else(|| {
        let mut texts = TEXTS.write().unwrap_or_else(|e| e.into_inner());
        *texts
            .get_or_insert_with(HashMap::new)
            .entry(key)
            .or_insert_with(|| {
                let text = match dialect {
                    Dialect::Sqlite => sqlite_text(sql),
                    Dialect::Postgres => postgres_text(sql),
                };
                Box::leak(text.into_boxed_str())
            })
    });
    let _ = SEEN.try_with(|seen| seen.borrow_mut().insert(key, text));
    text
}

const GENERATION: &str = "{generation}";

/// Shared text to SQLite's: `$N` to `?N`, the generation's row in `meta`.
pub fn sqlite_text(sql: &str) -> String {
    let sql = sql.replace(
        GENERATION,
        "(SELECT value FROM meta WHERE key = 'generation')",
    );
    // SQLite's two-argument max() is PostgreSQL's greatest() (on values
    // that are never NULL: SQLite's max() of a NULL is NULL).
    let sql = sql.replace("greatest(", "max(").replace("least(", "min(");
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

fn postgres_text(sql: &str) -> String {
    sql.replace(
        GENERATION,
        "(SELECT value FROM saslgate_meta WHERE key = 'generation')",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_names_are_rewritten_per_dialect() {
        let sql = "UPDATE t SET a = $2 WHERE b = $1 AND g = {generation} AND c = '$x'";
        assert_eq!(
            sqlite_text(sql),
            "UPDATE t SET a = ?2 WHERE b = ?1 AND g = \
             (SELECT value FROM meta WHERE key = 'generation') AND c = '$x'"
        );
        let pg = dialect_text(Dialect::Postgres, "SELECT {generation}");
        assert!(pg.contains("saslgate_meta"), "{pg}");
        assert!(std::ptr::eq(
            pg,
            dialect_text(Dialect::Postgres, "SELECT {generation}")
        ));
    }

    #[test]
    fn a_column_of_another_type_is_an_error() {
        let row = SqlRow(vec![Cell::Int(1), Cell::Null, Cell::Text("x".into())]);
        assert_eq!(row.int(0).unwrap(), 1);
        assert!(row.bool(0).unwrap());
        assert_eq!(row.opt_int(1).unwrap(), None);
        assert!(row.int(2).is_err());
        assert!(row.text(3).is_err());
    }
}
