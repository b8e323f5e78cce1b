//! SQLite's multi-row audit insert (the batch a login or the flusher writes).

use crate::error::Result;
use crate::store::types::AuditRecord;

pub(crate) fn insert_audit(tx: &rusqlite::Connection, audit: &[AuditRecord]) -> Result<()> {
    // Whole chunks through one multi-row statement: a statement's start, bind
    // and reset cost about as much as the row it inserts.
    let mut chunks = audit.chunks_exact(AUDIT_CHUNK);
    if chunks.len() > 0 {
        let mut st = tx.prepare_cached(&AUDIT_INSERT_CHUNK)?;
        for chunk in chunks.by_ref() {
            for (i, a) in chunk.iter().enumerate() {
                bind_audit(&mut st, i * AUDIT_COLUMNS, a)?;
            }
            st.raw_execute()?;
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut st = tx.prepare_cached(AUDIT_INSERT_ONE)?;
        for a in rest {
            bind_audit(&mut st, 0, a)?;
            st.raw_execute()?;
        }
    }
    Ok(())
}

const AUDIT_INSERT_ONE: &str =
    "INSERT INTO audit (ts, account, service, client_addr, outcome, reason, detail, credential) \
     VALUES (?,?,?,?,?,?,?,?)";
const AUDIT_COLUMNS: usize = 8;
/// Audit rows per multi-row `INSERT` (8 parameters each).
const AUDIT_CHUNK: usize = 32;

static AUDIT_INSERT_CHUNK: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let mut sql = String::from(
        "INSERT INTO audit (ts, account, service, client_addr, outcome, reason, detail, credential) VALUES ",
    );
    for i in 0..AUDIT_CHUNK {
        sql.push_str(if i == 0 {
            "(?,?,?,?,?,?,?,?)"
        } else {
            ",(?,?,?,?,?,?,?,?)"
        });
    }
    sql
});

/// Binds one record's columns at parameters `at + 1 ..= at + 8`.
fn bind_audit(st: &mut rusqlite::Statement<'_>, at: usize, a: &AuditRecord) -> Result<()> {
    st.raw_bind_parameter(at + 1, a.ts)?;
    st.raw_bind_parameter(at + 2, a.account.as_deref())?;
    st.raw_bind_parameter(at + 3, a.service.as_deref())?;
    st.raw_bind_parameter(at + 4, a.client_addr.as_deref())?;
    st.raw_bind_parameter(at + 5, a.outcome)?;
    st.raw_bind_parameter(at + 6, a.reason)?;
    st.raw_bind_parameter(at + 7, &a.detail)?;
    st.raw_bind_parameter(at + 8, a.credential.as_deref())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::{LoginStore, SqliteStore};

    /// ts, account, service, client_addr, reason, credential.
    type Row = (
        i64,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
    );

    /// Whole chunks and the rest: every record written once, in order, each
    /// field in its column.
    #[test]
    fn audit_batches_of_any_size_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            db: dir.path().join("sg.db"),
            ..Config::default()
        };
        let mut store = SqliteStore::create(&cfg).unwrap();
        let mut written = 0;
        for n in [
            0,
            1,
            AUDIT_CHUNK - 1,
            AUDIT_CHUNK,
            AUDIT_CHUNK + 1,
            2 * AUDIT_CHUNK + 5,
        ] {
            let batch: Vec<AuditRecord> = (0..n)
                .map(|i| AuditRecord {
                    ts: (written + i) as i64,
                    account: Some(format!("a{i}").into()),
                    service: (i % 2 == 0).then(|| "imap".into()),
                    client_addr: (i % 3 == 0).then(|| "192.0.2.1".into()),
                    outcome: "accepted",
                    reason: (i % 5 == 0).then_some("bad-credentials"),
                    detail: Some(format!("d{i}")),
                    credential: Some(format!("c{i}").into()),
                })
                .collect();
            store.write_batch(&batch, &[]).unwrap();
            written += n;
            let rows: Vec<Row> = store
                .conn
                .prepare("SELECT ts, account, service, client_addr, reason, credential FROM audit ORDER BY id")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert_eq!(rows.len(), written);
            for (i, a) in batch.iter().enumerate() {
                let row = &rows[written - n + i];
                assert_eq!(row.0, a.ts);
                assert_eq!(Some(row.1.as_str()), a.account.as_deref());
                assert_eq!(row.2.as_deref(), a.service.as_deref());
                assert_eq!(row.3.as_deref(), a.client_addr.as_deref());
                assert_eq!(row.4.as_deref(), a.reason);
                assert_eq!(Some(row.5.as_str()), a.credential.as_deref());
            }
        }
    }
}
