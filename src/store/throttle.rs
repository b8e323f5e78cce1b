//! The throttle's rows: reads and the counted writes of failures and successes
//! (what the keys and budgets mean is `crate::throttle`).

use super::login::{insert_audit, AuditRecord};
use super::wal_index::WalIndex;
use super::ChangeStamp;
use super::{Store, ThrottleStore};
use crate::config::Budget;
use crate::error::Result;
use crate::throttle::{slow_delay, state_of, KeyRows, Keys, State};
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
        Ok(state_of(
            keys,
            rows.iter().map(|(k, f, b)| (k.as_str(), *f, *b)),
            now,
        ))
    }

    /// The database generation and the throttle rows, read by one statement (so
    /// from one snapshot of the database, without an explicit transaction): what
    /// the engine's fast path needs to know is current.
    ///
    /// Hot path: one point lookup per row. A scalar subquery gives one column,
    /// so each throttle row comes back as `blocked_until * 2 + (failures > 0)`,
    /// which is all `state_of` looks at; a request with one key (no client
    /// address, or a trusted one) runs a statement without the second lookup.
    /// An `IN (?1, ?2)` list or a join would build a temporary b-tree per call.
    fn generation_and_throttle(&self, keys: &Keys) -> Result<(i64, KeyRows)> {
        const ONE_KEY: &str =
            "SELECT (SELECT CAST(value AS INTEGER) FROM meta WHERE key='generation'),\
            (SELECT blocked_until*2+(failures>0) FROM throttle WHERE key=?1)";
        const TWO_KEYS: &str =
            "SELECT (SELECT CAST(value AS INTEGER) FROM meta WHERE key='generation'),\
            (SELECT blocked_until*2+(failures>0) FROM throttle WHERE key=?1),\
            (SELECT blocked_until*2+(failures>0) FROM throttle WHERE key=?2)";
        let [first, second] = keys.read_order();
        let packed = |r: &rusqlite::Row<'_>, i: usize| -> rusqlite::Result<Option<(i64, i64)>> {
            // (failures > 0 as 0/1, blocked_until); `>>` rounds down, right for
            // any sign.
            Ok(r.get::<_, Option<i64>>(i)?.map(|v| (v & 1, v >> 1)))
        };
        let (generation, rows) = match (first, second) {
            (Some(a), Some(b)) => self
                .conn
                .prepare_cached(TWO_KEYS)?
                .query_row(params![a, b], |r| {
                    Ok((r.get::<_, Option<i64>>(0)?, [packed(r, 1)?, packed(r, 2)?]))
                })?,
            (one, None) | (None, one) => {
                self.conn
                    .prepare_cached(ONE_KEY)?
                    .query_row(params![one], |r| {
                        let row = packed(r, 1)?;
                        let rows = if first.is_some() {
                            [row, None]
                        } else {
                            [None, row]
                        };
                        Ok((r.get::<_, Option<i64>>(0)?, rows))
                    })?
            }
        };
        let generation =
            generation.ok_or_else(|| crate::Error::Storage("database has no generation".into()))?;
        Ok((generation, rows))
    }

    /// The connection's WAL-index header (see `wal_index`): found once per
    /// connection, then a few memory reads.
    fn change_stamp(&self) -> Option<ChangeStamp> {
        self.wal_index
            .get_or_init(|| WalIndex::of(&self.conn, self.file_id))
            .as_ref()?
            .stamp()
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
                        // Counted once; the account's delay stays.
                        let slow = match &keys.slow {
                            Some(s) => read_row(tx, s)?
                                .filter(|r| {
                                    r.window_start + cfg.slowdown_window.as_secs() as i64 > now
                                })
                                .map_or(0, |r| r.failures),
                            None => 0,
                        };
                        return Ok(slow_delay(&cfg, keys, slow));
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

    /// A right credential clears the account's counter at this address (not
    /// the address's: one good account must not wash an address's guessing
    /// record clean; nor the account-wide slow-down, see `crate::throttle`).
    fn record_success(&mut self, keys: &Keys) -> Result<()> {
        self.write(|tx| {
            for k in [&keys.pair].into_iter().flatten() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::LoginStore;

    /// The packed read of the fast path says what the plain per-row read says,
    /// with one key and with two, rows present or not, blocked or not.
    #[test]
    fn generation_and_throttle_agrees_with_throttle_state() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            db: dir.path().join("sg.db"),
            trusted_networks: vec![crate::throttle::Network::parse("198.51.100.0/24").unwrap()],
            ..Config::default()
        };
        let mut store = Store::create(&cfg).unwrap();
        let now = 1_800_000_000;
        let addr = Some("192.0.2.7".parse().unwrap());
        let with_addr = Keys::new("alice", addr, &cfg);
        let without = Keys::new("bob", None, &cfg);
        // A trusted address has a pair key but no address key.
        let trusted = Keys::new("carol", Some("198.51.100.7".parse().unwrap()), &cfg);
        assert!(trusted.address.is_none() && trusted.pair.is_some());
        let check = |store: &Store| {
            for keys in [&with_addr, &without, &trusted] {
                let (generation, rows) = store.generation_and_throttle(keys).unwrap();
                let state = crate::throttle::state_of_rows(keys, &rows, now);
                assert_eq!(generation, store.generation().unwrap());
                assert_eq!(state, store.throttle_state(keys, now).unwrap(), "{keys:?}");
            }
        };
        check(&store);
        for i in 0..20u8 {
            store
                .record_failure(&with_addr, &[i; 16], now, None)
                .unwrap();
            store.record_failure(&without, &[i; 16], now, None).unwrap();
            store.record_failure(&trusted, &[i; 16], now, None).unwrap();
            check(&store);
        }
        let rows = store.generation_and_throttle(&with_addr).unwrap().1;
        assert!(matches!(
            crate::throttle::state_of_rows(&with_addr, &rows, now),
            State::Blocked { .. }
        ));
        store.record_success(&without).unwrap();
        check(&store);
    }
}
