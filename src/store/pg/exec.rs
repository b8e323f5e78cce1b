//! The shared executor ([`Sql`]) on a PostgreSQL connection, each round trip
//! bounded as every other (`PgStore::run`), and the store as a [`Db`].

use super::PgStore;
use crate::config::Config;
use crate::crypto::KeyedHasher;
use crate::error::{Error, Result};
use crate::store::dump::{Dump, DumpCounts, Field, Table};
use crate::store::sql::{dialect_text, Cell, Db, Dialect, Sql, SqlRow, Value};
use crate::store::types::AuditRecord;
use crate::throttle::{KeyRows, Keys};
use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::Row;

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Value<'_> {
    /// Converts to the type the server inferred for the parameter; an integer
    /// that does not fit is an error, never a wrapped value.
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) if *ty == Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
            Value::Int(v) => v.to_sql(ty, out),
            Value::Bool(v) => v.to_sql(ty, out),
            Value::Text(v) => v.to_sql(ty, out),
            Value::Blob(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn cell(r: &Row, i: usize) -> Result<Cell> {
    let ty = r.columns()[i].type_().clone();
    let bad = |e: tokio_postgres::Error| Error::Storage(format!("PostgreSQL: column {i}: {e}"));
    Ok(if ty == Type::INT8 {
        r.try_get::<_, Option<i64>>(i).map_err(bad)?.map(Cell::Int)
    } else if ty == Type::INT4 {
        r.try_get::<_, Option<i32>>(i)
            .map_err(bad)?
            .map(|v| Cell::Int(v.into()))
    } else if ty == Type::INT2 {
        r.try_get::<_, Option<i16>>(i)
            .map_err(bad)?
            .map(|v| Cell::Int(v.into()))
    } else if ty == Type::BOOL {
        r.try_get::<_, Option<bool>>(i)
            .map_err(bad)?
            .map(Cell::Bool)
    } else if ty == Type::BYTEA {
        r.try_get::<_, Option<Vec<u8>>>(i)
            .map_err(bad)?
            .map(Cell::Blob)
    } else {
        r.try_get::<_, Option<String>>(i)
            .map_err(bad)?
            .map(Cell::Text)
    }
    .unwrap_or(Cell::Null))
}

fn row(r: &Row) -> Result<SqlRow> {
    (0..r.len())
        .map(|i| cell(r, i))
        .collect::<Result<_>>()
        .map(SqlRow)
}

fn refs<'a>(params: &'a [Value<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Sql for PgStore {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &'static str, params: &[Value<'_>]) -> Result<u64> {
        PgStore::execute(self, dialect_text(Dialect::Postgres, sql), &refs(params))
    }

    fn query(&self, sql: &'static str, params: &[Value<'_>]) -> Result<Vec<SqlRow>> {
        PgStore::query(self, dialect_text(Dialect::Postgres, sql), &refs(params))?
            .iter()
            .map(row)
            .collect()
    }

    fn query_opt(&self, sql: &'static str, params: &[Value<'_>]) -> Result<Option<SqlRow>> {
        let st = self.prepared(dialect_text(Dialect::Postgres, sql))?;
        // The first row, as SQLite's `query_row` (tokio-postgres' query_opt
        // refuses a second one).
        let rows = self.run(self.client.query(&st, &refs(params)))?;
        rows.first().map(row).transpose()
    }

    fn insert_audit(&self, audit: &[AuditRecord]) -> Result<()> {
        super::login::insert_audit(self, audit)
    }

    fn lock_for_import(&self) -> Result<()> {
        // Serialise with another copy or an init of the same database.
        PgStore::execute(
            self,
            "LOCK TABLE accounts, app_passwords, one_time_codes, meta IN EXCLUSIVE MODE",
            &[],
        )?;
        Ok(())
    }

    fn insert_rows(&self, table: &Table, rows: &[Vec<Field>]) -> Result<()> {
        super::dump::insert_rows(self, table, rows)
    }

    fn after_import(&self) -> Result<()> {
        super::dump::move_identities(self)
    }
}

impl Db for PgStore {
    fn db_config(&self) -> &Config {
        &self.config
    }

    /// A REPEATABLE READ transaction: the slow path's reads see one snapshot.
    fn begin_snapshot(&self) -> Result<()> {
        self.begin_read_tx()
    }

    fn end_snapshot(&self) -> Result<()> {
        self.end_read_tx()
    }

    /// One statement, so one snapshot and one round trip.
    fn fast_read(&self, keys: &Keys) -> Result<(i64, KeyRows)> {
        self.generation_and_throttle_rows(keys)
    }

    fn role_may_rehash(&self) -> bool {
        self.may_rehash
    }

    fn role_may_prune_audit(&self) -> bool {
        self.may_prune_audit
    }

    fn reader(&self) -> &dyn Sql {
        self
    }

    fn transaction<T>(&mut self, f: impl FnOnce(&dyn Sql) -> Result<T>) -> Result<T> {
        self.write(|s| f(s))
    }

    /// Autocommit: one round trip, not three.
    fn write_one(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<u64> {
        self.autocommit()?.execute(sql, params)
    }

    fn hasher(&self) -> KeyedHasher {
        KeyedHasher::new(&self.hmac_key)
    }

    /// The schema's triggers move it (whoever changes the rows).
    const MOVE_GENERATION: Option<&'static str> = None;

    fn import_dump(&mut self, dump: &Dump, force: bool) -> Result<DumpCounts> {
        let counts = crate::store::sql::copy::import(self, dump, force)?;
        self.hmac_key = zeroize::Zeroizing::new(dump.hmac_key.as_bytes().to_vec());
        Ok(counts)
    }
}
