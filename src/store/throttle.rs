//! The throttle's rows: reads and the counted writes of failures and successes
//! (what the keys and budgets mean is `crate::throttle`).

use super::login::{insert_audit, AuditRecord};
use super::{Store, ThrottleStore};
use crate::config::Budget;
use crate::error::Result;
use crate::throttle::{slow_delay, state_of, Keys, State};
use rusqlite::{params, OptionalExtension};
use std::time::Duration;

#[derive(Debug)]
struct Row {
    failures: i64,
    window_start: i64,
    blocked_until: i64,
    last_bad: Option<Vec<u8>>,
}

fn read_row(conn: &rusqlite::Connection, key: &str) -> Result<Option<Row>> {
    Ok(conn
        .prepare_cached(
            "SELECT failures, window_start, blocked_until, last_bad FROM throttle WHERE key = ?1",
        )?
        .query_row([key], |r| {
            Ok(Row {
                failures: r.get(0)?,
                window_start: r.get(1)?,
                blocked_until: r.get(2)?,
                last_bad: r.get(3)?,
            })
        })
        .optional()?)
}

/// Counts one failure on `key`; returns the failure count in the current window.
fn bump(
    conn: &rusqlite::Connection,
    key: &str,
    window: Duration,
    block: Option<Duration>,
    limit: u32,
    last_bad: Option<&[u8]>,
    now: i64,
) -> Result<i64> {
    let row = read_row(conn, key)?;
    let (failures, start) = match &row {
        Some(r) if r.window_start + window.as_secs() as i64 > now => {
            (r.failures + 1, r.window_start)
        }
        _ => (1, now),
    };
    let mut blocked_until = row.as_ref().map(|r| r.blocked_until).unwrap_or(0);
    if let Some(block) = block {
        if limit > 0 && failures >= i64::from(limit) {
            blocked_until = blocked_until.max(now + block.as_secs() as i64);
        }
    }
    let keep_bad = last_bad
        .map(<[u8]>::to_vec)
        .or_else(|| row.and_then(|r| r.last_bad));
    conn.prepare_cached(
        "INSERT OR REPLACE INTO throttle (key, failures, window_start, blocked_until, last_bad)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![key, failures, start, blocked_until, keep_bad])?;
    Ok(failures)
}

impl ThrottleStore for Store {
    /// Reads the throttle state for a request's keys (no writes).
    fn throttle_state(&self, keys: &Keys, now: i64) -> Result<State> {
        let mut rows = Vec::new();
        for key in [&keys.address, &keys.pair, &keys.slow]
            .into_iter()
            .flatten()
        {
            if let Some(r) = read_row(&self.conn, key)? {
                rows.push((key.clone(), r.failures, r.blocked_until));
            }
        }
        Ok(state_of(keys, &rows, now))
    }

    /// The database generation and the throttle state, read by one statement (so
    /// from one snapshot of the database, without an explicit transaction): what
    /// the engine's fast path needs to know is current.
    fn generation_and_throttle(&self, keys: &Keys, now: i64) -> Result<(i64, State)> {
        let (first, second) = match (&keys.slow, &keys.address, &keys.pair) {
            (Some(s), _, _) => (Some(s), None),
            (None, a, p) => (a.as_ref(), p.as_ref()),
        };
        // Scalar point lookups only: an `IN (?1, ?2)` list or a join would build a
        // temporary b-tree on every call, costing more than the lookups themselves.
        let mut st = self.conn.prepare_cached(
            "SELECT (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'generation'),
                    (SELECT failures FROM throttle WHERE key = ?1),
                    (SELECT blocked_until FROM throttle WHERE key = ?1),
                    (SELECT failures FROM throttle WHERE key = ?2),
                    (SELECT blocked_until FROM throttle WHERE key = ?2)",
        )?;
        let (generation, row1, row2) = st.query_row(params![first, second], |r| {
            let row = |f: usize| -> rusqlite::Result<Option<(i64, i64)>> {
                Ok(
                    match (r.get::<_, Option<i64>>(f)?, r.get::<_, Option<i64>>(f + 1)?) {
                        (Some(failures), Some(blocked_until)) => Some((failures, blocked_until)),
                        _ => None,
                    },
                )
            };
            Ok((r.get::<_, Option<i64>>(0)?, row(1)?, row(3)?))
        })?;
        let mut rows = Vec::new();
        for (key, row) in [(first, row1), (second, row2)] {
            if let (Some(key), Some((failures, blocked_until))) = (key, row) {
                rows.push((key.clone(), failures, blocked_until));
            }
        }
        let generation =
            generation.ok_or_else(|| crate::Error::Storage("database has no generation".into()))?;
        Ok((generation, state_of(keys, &rows, now)))
    }

    /// Records a credential failure (and its audit record) in one transaction.
    /// `fingerprint` is a keyed hash of (account, wrong password). Returns the delay
    /// to suggest before answering (slow-down of address-less requests).
    fn record_failure(
        &mut self,
        keys: &Keys,
        fingerprint: &[u8],
        now: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<Duration> {
        let cfg = self.config.clone();
        self.write(|tx| {
            if let Some(a) = audit {
                insert_audit(tx, std::slice::from_ref(a))?;
            }
            let account_key = keys.pair.as_ref().or(keys.slow.as_ref());
            let window = if keys.pair.is_some() {
                cfg.throttle_account_address.window
            } else {
                cfg.slowdown_window
            };
            if let Some(k) = account_key {
                if let Some(r) = read_row(tx, k)? {
                    let repeat = r.window_start + window.as_secs() as i64 > now
                        && r.last_bad.as_deref() == Some(fingerprint);
                    if repeat {
                        return Ok(slow_delay(&cfg, keys, r.failures));
                    }
                }
            }
            if let Some(k) = &keys.address {
                let b = &cfg.throttle_address;
                bump(tx, k, b.window, Some(b.block), b.failures, None, now)?;
            }
            if let Some(k) = &keys.pair {
                let b: &Budget = &cfg.throttle_account_address;
                bump(
                    tx,
                    k,
                    b.window,
                    Some(b.block),
                    b.failures,
                    Some(fingerprint),
                    now,
                )?;
            }
            if let Some(k) = &keys.slow {
                let n = bump(tx, k, cfg.slowdown_window, None, 0, Some(fingerprint), now)?;
                return Ok(slow_delay(&cfg, keys, n));
            }
            Ok(Duration::ZERO)
        })
    }

    /// A right credential clears the account's own counters (not the address's:
    /// one good account must not wash an address's guessing record clean).
    fn record_success(&mut self, keys: &Keys) -> Result<()> {
        self.write(|tx| {
            for k in [&keys.pair, &keys.slow].into_iter().flatten() {
                tx.prepare_cached("DELETE FROM throttle WHERE key = ?1")?
                    .execute([k])?;
            }
            Ok(())
        })
    }

    /// Counts a malformed request on the client's address key (with its audit
    /// record, if any, in the same transaction), like a wrong password.
    fn record_bad_input(
        &mut self,
        keys: &Keys,
        now: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<()> {
        let b = self.config.throttle_address.clone();
        self.write(|tx| {
            if let Some(a) = audit {
                insert_audit(tx, std::slice::from_ref(a))?;
            }
            if let Some(k) = &keys.address {
                bump(tx, k, b.window, Some(b.block), b.failures, None, now)?;
            }
            Ok(())
        })
    }
}
