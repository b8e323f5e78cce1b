//! PostgreSQL's own part of the login path: audit records in one round trip
//! (the reads and writes themselves are `sql/login.rs`).

use super::PgStore;
use crate::error::Result;
use crate::store::types::AuditRecord;

/// Audit records in one statement (one round trip for a whole batch).
pub(crate) fn insert_audit(store: &PgStore, audit: &[AuditRecord]) -> Result<()> {
    if audit.is_empty() {
        return Ok(());
    }
    let ts: Vec<i64> = audit.iter().map(|a| a.ts).collect();
    let account: Vec<Option<&str>> = audit.iter().map(|a| a.account.as_deref()).collect();
    let service: Vec<Option<&str>> = audit.iter().map(|a| a.service.as_deref()).collect();
    let addr: Vec<Option<&str>> = audit.iter().map(|a| a.client_addr.as_deref()).collect();
    let outcome: Vec<&str> = audit.iter().map(|a| a.outcome).collect();
    let reason: Vec<Option<&str>> = audit.iter().map(|a| a.reason).collect();
    let detail: Vec<Option<&str>> = audit.iter().map(|a| a.detail.as_deref()).collect();
    let credential: Vec<Option<&str>> = audit.iter().map(|a| a.credential.as_deref()).collect();
    store.execute(
        "INSERT INTO audit (ts, account, service, client_addr, outcome, reason, detail, credential)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::text[], $8::text[])",
        &[
            &ts,
            &account,
            &service,
            &addr,
            &outcome,
            &reason,
            &detail,
            &credential,
        ],
    )?;
    Ok(())
}
