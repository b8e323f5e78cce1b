//! `saslgate copy`'s reads and writes, driven by the table descriptions
//! (`dump::TABLES`), the same on both backends; what stays each dialect's
//! is the bulk insert, the import's locks and its last step (`Sql`).

use super::dump::{Column, Dump, DumpCounts, DumpSecret, Field, Kind, Rows, Table, TABLES};
use super::{Cell, Db, Dialect, Sql, SqlRow, Value};
use crate::error::{Error, Result};

/// Rows per page of a paged read (each one statement, bounded like any).
const PAGE: i64 = 5000;

/// A statement text made from the descriptions, kept for the process's life
/// (a handful per table).
pub(crate) fn text(sql: String) -> &'static str {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static TEXTS: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut texts = TEXTS.lock().unwrap_or_else(|e| e.into_inner());
    let texts = texts.get_or_insert_with(HashSet::new);
    match texts.get(sql.as_str()) {
        Some(t) => t,
        None => {
            let t: &'static str = Box::leak(sql.into_boxed_str());
            texts.insert(t);
            t
        }
    }
}

/// `col`, in byte order if text (PostgreSQL's collations are not SQLite's).
fn ordered(dialect: Dialect, (name, kind): Column) -> String {
    match (dialect, kind) {
        (Dialect::Postgres, Kind::Text) => format!("{name} COLLATE \"C\""),
        _ => name.to_string(),
    }
}

fn read_table(db: &dyn Sql, t: &Table) -> Result<Rows> {
    let dialect = db.dialect();
    let columns: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
    let order: Vec<String> = t.columns[..t.key_columns]
        .iter()
        .map(|c| ordered(dialect, *c))
        .collect();
    let select = format!("SELECT {} FROM {}", columns.join(", "), t.name);
    let row = |r: SqlRow| -> Result<Vec<Field>> {
        r.0.into_iter()
            .zip(t.columns)
            .map(|(cell, (name, kind))| Field::of(cell, *kind, name))
            .collect()
    };
    if !t.paged {
        let sql = text(format!("{select} ORDER BY {}", order.join(", ")));
        return db.query(sql, &[])?.into_iter().map(row).collect();
    }
    let key = &order[0];
    let sql = text(format!("{select} WHERE {key} > $1 ORDER BY {key} LIMIT $2"));
    let mut out = Vec::new();
    let mut last = match t.columns[0].1 {
        Kind::Text => Field::Text(String::new()),
        _ => Field::Int(i64::MIN),
    };
    loop {
        let page = db.query(sql, &[last.value(t.columns[0].1)?, Value::Int(PAGE)])?;
        let full = page.len() as i64 == PAGE;
        for r in page {
            out.push(row(r)?);
        }
        match out.last() {
            Some(r) if full => last = r[0].clone(),
            _ => return Ok(out),
        }
    }
}

/// Rows per table as the database holds them now (one statement).
fn table_counts(db: &dyn Sql) -> Result<DumpCounts> {
    let parts: Vec<String> = TABLES
        .iter()
        .map(|t| format!("(SELECT count(*) FROM {})", t.name))
        .collect();
    let row = db.query_one(text(format!("SELECT {}", parts.join(", "))), &[])?;
    Ok(DumpCounts(
        (0..TABLES.len())
            .map(|i| row.int(i).map(|n| n as usize))
            .collect::<Result<_>>()?,
    ))
}

/// The whole database from one consistent read (the backend's read
/// transaction).
pub(crate) fn export<D: Db>(db: &D) -> Result<Dump> {
    db.end_snapshot()?;
    db.begin_snapshot()?;
    let dump = (|| -> Result<Dump> {
        let s = db.reader();
        let hmac_key = s
            .query_opt("SELECT value FROM meta WHERE key = 'hmac_key'", &[])?
            .and_then(|r| r.0.into_iter().next())
            .and_then(|c| match c {
                Cell::Blob(v) => Some(DumpSecret::new(v)),
                Cell::Text(v) => Some(DumpSecret::new(v.into_bytes())),
                _ => None,
            })
            .ok_or_else(|| Error::Storage("the database has no key".into()))?;
        let tables = TABLES
            .iter()
            .map(|t| read_table(s, t))
            .collect::<Result<_>>()?;
        Ok(Dump { hmac_key, tables })
    })();
    let ended = db.end_snapshot();
    let dump = dump?;
    ended?;
    Ok(dump)
}

/// Replaces the whole content with `dump`'s in one transaction, ids and key
/// kept, counts checked before it commits (see `AdminStore::import_all`).
pub(crate) fn import<D: Db>(db: &mut D, dump: &Dump, force: bool) -> Result<DumpCounts> {
    let want = dump.counts();
    let plans = TABLES.iter().position(|t| t.name == "plans").unwrap_or(0);
    db.transaction(|tx| {
        tx.lock_for_import()?;
        let found = table_counts(tx)?;
        if !force && !Dump::is_empty_database(&found, &read_table(tx, &TABLES[plans])?) {
            return Err(Error::Exists(format!(
                "the target database is in use ({found}); \
                 --force replaces its whole content"
            )));
        }
        // Children first (foreign keys); the generation triggers fire,
        // harmlessly. Tickets are not copied: the target's go too.
        tx.execute("DELETE FROM proxy_tickets", &[])?;
        for t in TABLES.iter().rev() {
            tx.execute(text(format!("DELETE FROM {}", t.name)), &[])?;
        }
        let n = tx.execute(
            "UPDATE meta SET value = $1 WHERE key = 'hmac_key'",
            &[Value::Blob(dump.hmac_key.as_bytes())],
        )?;
        if n != 1 {
            return Err(Error::Storage("the target database has no key row".into()));
        }
        for (t, rows) in TABLES.iter().zip(&dump.tables) {
            tx.insert_rows(t, rows)?;
        }
        tx.after_import()?;
        // Checked before the commit: a short copy never becomes visible.
        let got = table_counts(tx)?;
        if got != want {
            return Err(Error::Storage(format!(
                "copy check failed: wrote {want}, the target holds {got}; nothing copied"
            )));
        }
        Ok(got)
    })
}

/// `INSERT INTO table (columns) VALUES ($1, ...)`: one row.
pub(crate) fn insert_one_sql(t: &Table) -> &'static str {
    let columns: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
    let values: Vec<String> = (1..=t.columns.len()).map(|i| format!("${i}")).collect();
    text(format!(
        "INSERT INTO {} ({}) VALUES ({})",
        t.name,
        columns.join(", "),
        values.join(", ")
    ))
}
