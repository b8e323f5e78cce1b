//! The throttle's rules, on both backends: what a failure, a success and a
//! malformed request write (what the keys and budgets mean is
//! `crate::throttle`). Failures are counted by one upsert per key: atomic
//! under SQLite's write lock and under PostgreSQL's row lock, so concurrent
//! failures on several hosts are all counted. The login's fast read
//! (`generation_and_throttle`) stays each backend's own, tuned statement.

use super::{params, Db, Sql};
use crate::config::Config;
use crate::error::Result;
use crate::store::types::AuditRecord;
use crate::throttle::{slow_delay, state_of, Keys, State};
use std::time::Duration;

/// Counts one failure on a key in its window (a new window if the old one
/// ended), blocking it until `now + block` when `limit` (> 0) is reached,
/// keeping the last wrong password's fingerprint; returns the count.
const BUMP: &str =
    "INSERT INTO throttle AS t (key, failures, window_start, blocked_until, last_bad)
     VALUES ($1, 1, CAST($2 AS BIGINT),
             CASE WHEN CAST($4 AS BIGINT) > 0 AND 1 >= CAST($4 AS BIGINT)
                  THEN CAST($2 AS BIGINT) + CAST($5 AS BIGINT) ELSE 0 END, $6)
     ON CONFLICT (key) DO UPDATE SET
       failures = CASE WHEN t.window_start + CAST($3 AS BIGINT) > CAST($2 AS BIGINT)
                       THEN t.failures + 1 ELSE 1 END,
       window_start = CASE WHEN t.window_start + CAST($3 AS BIGINT) > CAST($2 AS BIGINT)
                           THEN t.window_start ELSE CAST($2 AS BIGINT) END,
       blocked_until = CASE
           WHEN CAST($4 AS BIGINT) > 0
                AND (CASE WHEN t.window_start + CAST($3 AS BIGINT) > CAST($2 AS BIGINT)
                          THEN t.failures + 1 ELSE 1 END) >= CAST($4 AS BIGINT)
           THEN greatest(t.blocked_until, CAST($2 AS BIGINT) + CAST($5 AS BIGINT))
           ELSE t.blocked_until END,
       last_bad = coalesce(excluded.last_bad, t.last_bad)
     RETURNING failures";

fn bump(
    tx: &dyn Sql,
    key: &str,
    window: Duration,
    block: Option<(Duration, u32)>,
    last_bad: Option<&[u8]>,
    now: i64,
) -> Result<i64> {
    let (block, limit) = block.map_or((0, 0), |(b, l)| (b.as_secs() as i64, i64::from(l)));
    let window = window.as_secs() as i64;
    tx.query_one(BUMP, params![key, now, window, limit, block, last_bad])?
        .int(0)
}

/// A key's row: (failures, window_start, last_bad).
type Row = (i64, i64, Option<Vec<u8>>);

fn read_row(db: &dyn Sql, key: &str) -> Result<Option<Row>> {
    db.query_opt(
        "SELECT failures, window_start, last_bad FROM throttle WHERE key = $1",
        params![key],
    )?
    .map(|r| Ok((r.int(0)?, r.int(1)?, r.opt_blob(2)?)))
    .transpose()
}

/// Reads the throttle state for a request's keys (no writes).
pub(crate) fn throttle_state(db: &dyn Sql, keys: &Keys, now: i64) -> Result<State> {
    let mut rows = Vec::new();
    for key in [&keys.address, &keys.pair, &keys.slow]
        .into_iter()
        .flatten()
    {
        if let Some(r) = db.query_opt(
            "SELECT failures, blocked_until FROM throttle WHERE key = $1",
            params![key],
        )? {
            rows.push((key.clone(), r.int(0)?, r.int(1)?));
        }
    }
    Ok(state_of(
        keys,
        rows.iter().map(|(k, f, b)| (k.as_str(), *f, *b)),
        now,
    ))
}

/// Records a credential failure (and its audit record) in one transaction;
/// returns the delay to suggest (see `ThrottleStore::record_failure`).
pub(crate) fn record_failure<D: Db>(
    db: &mut D,
    cfg: &Config,
    keys: &Keys,
    fingerprint: &[u8],
    now: i64,
    audit: Option<&AuditRecord>,
) -> Result<Duration> {
    db.transaction(|tx| {
        if let Some(a) = audit {
            tx.insert_audit(std::slice::from_ref(a))?;
        }
        let account_key = keys.pair.as_ref().or(keys.slow.as_ref());
        let window = if keys.pair.is_some() {
            cfg.throttle_account_address.window
        } else {
            cfg.slowdown_window
        };
        if let Some(k) = account_key {
            if let Some((_, start, last_bad)) = read_row(tx, k)? {
                // The same wrong password again (a client retrying a saved
                // password) counts once; the account's delay stays.
                let repeat = start + window.as_secs() as i64 > now
                    && last_bad.as_deref() == Some(fingerprint);
                if repeat {
                    let slow = match &keys.slow {
                        Some(s) => read_row(tx, s)?
                            .filter(|(_, start, _)| {
                                start + cfg.slowdown_window.as_secs() as i64 > now
                            })
                            .map_or(0, |(failures, _, _)| failures),
                        None => 0,
                    };
                    return Ok(slow_delay(cfg, keys, slow));
                }
            }
        }
        if let Some(k) = &keys.address {
            let b = &cfg.throttle_address;
            bump(tx, k, b.window, Some((b.block, b.failures)), None, now)?;
        }
        if let Some(k) = &keys.pair {
            let b = &cfg.throttle_account_address;
            let block = Some((b.block, b.failures));
            bump(tx, k, b.window, block, Some(fingerprint), now)?;
        }
        if let Some(k) = &keys.slow {
            let n = bump(tx, k, cfg.slowdown_window, None, Some(fingerprint), now)?;
            return Ok(slow_delay(cfg, keys, n));
        }
        Ok(Duration::ZERO)
    })
}

/// A right credential clears the account's counter at this address only
/// (see `ThrottleStore::record_success`).
pub(crate) fn record_success<D: Db>(db: &mut D, keys: &Keys) -> Result<()> {
    if let Some(k) = &keys.pair {
        db.write_one("DELETE FROM throttle WHERE key = $1", params![k])?;
    }
    Ok(())
}

/// Counts a malformed request on the client's address key, with its audit
/// record in the same transaction.
pub(crate) fn record_bad_input<D: Db>(
    db: &mut D,
    cfg: &Config,
    keys: &Keys,
    now: i64,
    audit: Option<&AuditRecord>,
) -> Result<()> {
    let b = &cfg.throttle_address;
    db.transaction(|tx| {
        if let Some(a) = audit {
            tx.insert_audit(std::slice::from_ref(a))?;
        }
        if let Some(k) = &keys.address {
            bump(tx, k, b.window, Some((b.block, b.failures)), None, now)?;
        }
        Ok(())
    })
}
