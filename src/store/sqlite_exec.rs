//! The shared executor ([`Sql`]) on a SQLite connection or transaction, and
//! the SQLite store as a [`Db`] (its write transactions: `BEGIN IMMEDIATE`).

use super::dump::{Dump, DumpCounts};
use super::sql::{dialect_text, Cell, Db, Dialect, Sql, SqlRow, Value};
use super::{LoginStore, Store};
use crate::crypto::KeyedHasher;
use crate::error::Result;
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
}

impl Db for Store {
    fn reader(&self) -> &dyn Sql {
        &self.conn
    }

    fn autocommit(&self) -> Result<&dyn Sql> {
        LoginStore::end_read(self)?;
        Ok(&self.conn)
    }

    fn transaction<T>(&mut self, f: impl FnOnce(&dyn Sql) -> Result<T>) -> Result<T> {
        self.write(|tx| f(&**tx))
    }

    fn hasher(&self) -> KeyedHasher {
        self.keyed.clone()
    }

    /// A new random generation, not the old one plus one: a database
    /// restored in place from an older copy must never reach, by counting
    /// up, a number that a reader's in-memory data (engine snapshot,
    /// credential cache) belongs to.
    const MOVE_GENERATION: Option<&'static str> =
        Some("UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'");

    fn export_dump(&self) -> Result<Dump> {
        self.export_sqlite()
    }

    fn import_dump(&mut self, dump: &Dump, force: bool) -> Result<DumpCounts> {
        self.import_sqlite(dump, force)
    }
}
