//! `saslgate copy` on PostgreSQL: what the shared import (`store::dump`)
//! leaves to the dialect. Rows are written in chunks through `unnest` of
//! parameter arrays: one round trip per chunk, each bounded by
//! `db_statement_timeout` like every other statement, so a large audit trail
//! is neither one huge statement nor a round trip per row. Ids are written as
//! they are (the keyed hashes of app passwords and codes include the account
//! id), then the identity sequences are moved past them.

use super::PgStore;
use crate::error::{Error, Result};
use crate::store::dump::{Field, Kind, Table, TABLES};
use crate::store::sql::copy::text;
use crate::store::sql::Value;
use tokio_postgres::types::ToSql;

/// Rows per insert statement.
const CHUNK: usize = 2000;

/// One column of a chunk as the typed array `unnest` takes.
fn array<'a>(rows: &'a [Vec<Field>], i: usize, kind: Kind) -> Result<Box<dyn ToSql + Sync + 'a>> {
    let values = rows
        .iter()
        .map(|r| r[i].value(kind))
        .collect::<Result<Vec<Value<'a>>>>()?;
    let wrong = || {
        Error::Storage(format!(
            "a copied row has a value of another type than {kind:?}"
        ))
    };
    Ok(match kind {
        Kind::Int => Box::new(
            values
                .iter()
                .map(|v| match v {
                    Value::Int(n) => Ok(Some(*n)),
                    Value::Null => Ok(None),
                    _ => Err(wrong()),
                })
                .collect::<Result<Vec<Option<i64>>>>()?,
        ),
        Kind::Bool => Box::new(
            values
                .iter()
                .map(|v| match v {
                    Value::Bool(b) => Ok(Some(*b)),
                    Value::Null => Ok(None),
                    _ => Err(wrong()),
                })
                .collect::<Result<Vec<Option<bool>>>>()?,
        ),
        Kind::Text | Kind::SecretText => Box::new(
            values
                .iter()
                .map(|v| match v {
                    Value::Text(s) => Ok(Some(*s)),
                    Value::Null => Ok(None),
                    _ => Err(wrong()),
                })
                .collect::<Result<Vec<Option<&str>>>>()?,
        ),
        Kind::Bytes | Kind::SecretBytes => Box::new(
            values
                .iter()
                .map(|v| match v {
                    Value::Blob(b) => Ok(Some(*b)),
                    Value::Null => Ok(None),
                    _ => Err(wrong()),
                })
                .collect::<Result<Vec<Option<&[u8]>>>>()?,
        ),
    })
}

fn array_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Int => "bigint[]",
        Kind::Bool => "boolean[]",
        Kind::Text | Kind::SecretText => "text[]",
        Kind::Bytes | Kind::SecretBytes => "bytea[]",
    }
}

pub(super) fn insert_rows(s: &PgStore, t: &Table, rows: &[Vec<Field>]) -> Result<()> {
    let columns: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
    let arrays: Vec<String> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| format!("${}::{}", i + 1, array_type(*kind)))
        .collect();
    let sql = text(format!(
        "INSERT INTO {} ({}) SELECT * FROM unnest({})",
        t.name,
        columns.join(", "),
        arrays.join(", ")
    ));
    for chunk in rows.chunks(CHUNK) {
        let params = t
            .columns
            .iter()
            .enumerate()
            .map(|(i, (_, kind))| array(chunk, i, *kind))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p).collect();
        s.execute(sql, &refs)?;
    }
    Ok(())
}

/// New rows made later (by the CLI, by logins' audit) take ids past the
/// copied ones.
pub(super) fn move_identities(s: &PgStore) -> Result<()> {
    let moves: Vec<String> = TABLES
        .iter()
        .filter(|t| t.identity)
        .map(|t| {
            format!(
                "SELECT setval(pg_get_serial_sequence('{0}', 'id'),
                               coalesce((SELECT max(id) FROM {0}), 0) + 1, false);",
                t.name
            )
        })
        .collect();
    s.batch(&moves.join("\n"))
}
