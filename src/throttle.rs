//! Throttling of password guessing (DESIGN.md step 2), kept in the database so every
//! face and every process shares it.
//!
//! Keys: `a:IP` (client address), `p:ACCOUNT|IP` (account from that address),
//! `s:ACCOUNT` (account, when the request carries no address). Address and pair
//! keys block when over budget; `s:` keys only slow refusals down, so an attacker
//! without an address of their own can never lock a user out.
//!
//! A client repeating the same wrong password (a phone with a stale password) counts
//! once: the pair/account row remembers a keyed fingerprint of the last wrong one.

use crate::config::Budget;
use crate::error::Result;
use crate::store::login::{insert_audit, AuditRecord};
use crate::store::Store;
use rusqlite::{params, OptionalExtension};
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Keys {
    pub address: Option<String>,
    pub pair: Option<String>,
    pub slow: Option<String>,
}

impl Keys {
    pub fn new(account: &str, addr: Option<IpAddr>) -> Keys {
        match addr {
            Some(ip) => Keys {
                address: Some(format!("a:{ip}")),
                pair: Some(format!("p:{account}|{ip}")),
                slow: None,
            },
            None => Keys {
                address: None,
                pair: None,
                slow: Some(format!("s:{account}")),
            },
        }
    }
}

/// What the throttle says before any hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Go ahead. `has_account_rows`: a pair/slow-down row exists (success clears it).
    Open { has_account_rows: bool },
    /// Refuse without hashing for this many more seconds.
    Blocked { retry_after: i64 },
}

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

/// The state from a request's rows (`(key, failures, blocked_until)`, any order).
fn state_of(keys: &Keys, rows: &[(String, i64, i64)], now: i64) -> State {
    let mut has_account_rows = false;
    let mut retry_after = 0;
    for (key, failures, blocked_until) in rows {
        let is = |k: &Option<String>| k.as_deref() == Some(key.as_str());
        if (is(&keys.address) || is(&keys.pair)) && *blocked_until > now {
            retry_after = retry_after.max(blocked_until - now);
        }
        // Only the account's own rows: a success clears them, never the address's.
        if (is(&keys.pair) || is(&keys.slow)) && *failures > 0 {
            has_account_rows = true;
        }
    }
    if retry_after > 0 {
        State::Blocked { retry_after }
    } else {
        State::Open { has_account_rows }
    }
}

impl Store {
    /// Reads the throttle state for a request's keys (no writes).
    pub fn throttle_state(&self, keys: &Keys, now: i64) -> Result<State> {
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
    pub fn generation_and_throttle(&self, keys: &Keys, now: i64) -> Result<(i64, State)> {
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
    pub fn record_failure(
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
    pub fn record_success(&mut self, keys: &Keys) -> Result<()> {
        self.write(|tx| {
            for k in [&keys.pair, &keys.slow].into_iter().flatten() {
                tx.prepare_cached("DELETE FROM throttle WHERE key = ?1")?
                    .execute([k])?;
            }
            Ok(())
        })
    }
}

/// 1 s, 2 s, 4 s... once an address-less account is past its slow-down budget.
fn slow_delay(cfg: &crate::Config, keys: &Keys, failures: i64) -> Duration {
    if keys.slow.is_none() || failures <= i64::from(cfg.slowdown_failures) {
        return Duration::ZERO;
    }
    let over = (failures - i64::from(cfg.slowdown_failures) - 1).min(20) as u32;
    Duration::from_secs(1u64 << over).min(cfg.slowdown_max_delay)
}
