//! The shared executor ([`Sql`]) on a SQLite connection or transaction, and
//! the SQLite store as a [`Db`] (its write transactions: `BEGIN IMMEDIATE`).

use super::wal_index::WalIndex;
use super::{ChangeStamp, QuietCommit, SqliteStore};
use crate::config::Config;
use crate::crypto::KeyedHasher;
use crate::error::Result;
use crate::store::dump::{Dump, DumpCounts, Field, Table};
use crate::store::sql::copy::insert_one_sql;
use crate::store::sql::{dialect_text, Cell, Db, Dialect, Sql, SqlRow, Value};
use crate::store::types::AuditRecord;
use crate::throttle::{KeyRows, Keys};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension};

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(v)),
            Value::Bool(v) => ToSqlOutput::Borrowed(ValueRef::Integer(v.into())),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Blob(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
        })
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SqlRow> {
    let n = r.as_ref().column_count();
    let mut cells = Vec::with_capacity(n);
    for i in 0..n {
        cells.push(match r.get_ref(i)? {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(v) => Cell::Int(v),
            ValueRef::Real(v) => Cell::Int(v as i64),
            ValueRef::Text(v) => Cell::Text(String::from_utf8_lossy(v).into_owned()),
            ValueRef::Blob(v) => Cell::Blob(v.to_vec()),
        });
    }
    Ok(SqlRow(cells))
}

impl Sql for Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &'static str, params: &[Value<'_>]) -> Result<u64> {
        let mut st = self.prepare_cached(dialect_text(Dialect::Sqlite, sql))?;
        Ok(st.execute(rusqlite::params_from_iter(params))? as u64)
    }

    fn query(&self, sql: &'static str, params: &[Value<'_>]) -> Result<Vec<SqlRow>> {
        let mut st = self.prepare_cached(dialect_text(Dialect::Sqlite, sql))?;
        let rows = st.query_map(rusqlite::params_from_iter(params), row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn query_opt(&self, sql: &'static str, params: &[Value<'_>]) -> Result<Option<SqlRow>> {
        let mut st = self.prepare_cached(dialect_text(Dialect::Sqlite, sql))?;
        Ok(st
            .query_row(rusqlite::params_from_iter(params), row)
            .optional()?)
    }

    fn insert_audit(&self, audit: &[AuditRecord]) -> Result<()> {
        super::insert_audit(self, audit)
    }

    fn insert_rows(&self, table: &Table, rows: &[Vec<Field>]) -> Result<()> {
        let sql = insert_one_sql(table);
        for row in rows {
            let values = row
                .iter()
                .zip(table.columns)
                .map(|(f, (_, kind))| f.value(*kind))
                .collect::<Result<Vec<_>>>()?;
            Sql::execute(self, sql, &values)?;
        }
        Ok(())
    }

    fn after_import(&self) -> Result<()> {
        Sql::execute(self, MOVE_GENERATION, &[])?;
        Ok(())
    }
}

/// A new random generation, not the old one plus one: a database restored in
/// place from an older copy must never reach, by counting up, a number that a
/// reader's in-memory data (engine snapshot, credential cache) belongs to.
const MOVE_GENERATION: &str =
    "UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'";

impl Db for SqliteStore {
    fn db_config(&self) -> &Config {
        &self.config
    }

    fn begin_snapshot(&self) -> Result<()> {
        if self.conn.is_autocommit() {
            // Cached like the lookups: execute_batch would re-parse it every time.
            self.conn.prepare_cached("BEGIN DEFERRED")?.execute([])?;
        }
        Ok(())
    }

    fn end_snapshot(&self) -> Result<()> {
        if !self.conn.is_autocommit() {
            self.conn.prepare_cached("COMMIT")?.execute([])?;
        }
        Ok(())
    }

    fn fast_read(&self, keys: &Keys) -> Result<(i64, KeyRows)> {
        self.generation_and_throttle_rows(keys)
    }

    /// The connection's WAL-index header (see `wal_index`): found once per
    /// connection, then a few memory reads.
    fn stamp(&self) -> Option<ChangeStamp> {
        self.wal_index
            .get_or_init(|| WalIndex::of(&self.conn, self.file_id))
            .as_ref()?
            .stamp()
    }

    fn quiet_transaction<T>(
        &mut self,
        f: impl FnOnce(&dyn Sql) -> Result<T>,
    ) -> Result<(T, Option<QuietCommit>)> {
        self.write_quiet(|tx| f(&**tx))
    }

    fn background_checkpoints(&mut self) -> Result<()> {
        self.set_background_checkpoints()
    }

    fn checkpoint_now(&mut self) -> Result<()> {
        self.checkpoint_if_due()
    }

    fn reader(&self) -> &dyn Sql {
        &self.conn
    }

    fn transaction<T>(&mut self, f: impl FnOnce(&dyn Sql) -> Result<T>) -> Result<T> {
        self.write(|tx| f(&**tx))
    }

    fn hasher(&self) -> KeyedHasher {
        self.keyed.clone()
    }

    const MOVE_GENERATION: Option<&'static str> = Some(MOVE_GENERATION);

    fn import_dump(&mut self, dump: &Dump, force: bool) -> Result<DumpCounts> {
        let counts = crate::store::sql::copy::import(self, dump, force)?;
        self.hmac_key = dump.hmac_key.as_bytes().to_vec();
        self.keyed = KeyedHasher::new(&self.hmac_key);
        Ok(counts)
    }
}
