//! The throttle's rows on PostgreSQL, shared by every host: failures are
//! counted by one upsert per key (atomic under the row lock, so concurrent
//! failures on several hosts are all counted), and the login's one read takes
//! the generation and the rows in one statement.

use super::login::insert_audit;
use super::{get, PgStore};
use crate::error::{Error, Result};
use crate::store::login::AuditRecord;
use crate::store::ThrottleStore;
use crate::throttle::{slow_delay, state_of, KeyRows, Keys, State};
use std::time::Duration;

/// Counts one failure on a key in its window (a new window if the old one
/// ended), blocking it when `limit` is reached; returns the count.
const BUMP: &str = "INSERT INTO throttle AS t (key, failures, window_start, blocked_until, last_bad)
     VALUES ($1::text, 1, $2::bigint, CASE WHEN $4::bigint > 0 AND 1 >= $4::bigint THEN $2::bigint + $5::bigint ELSE 0 END, $6::bytea)
     ON CONFLICT (key) DO UPDATE SET
       failures = CASE WHEN t.window_start + $3::bigint > $2::bigint THEN t.failures + 1 ELSE 1 END,
       window_start = CASE WHEN t.window_start + $3::bigint > $2::bigint THEN t.window_start ELSE $2::bigint END,
       blocked_until = CASE
           WHEN $4::bigint > 0 AND (CASE WHEN t.window_start + $3::bigint > $2::bigint THEN t.failures + 1 ELSE 1 END) >= $4::bigint
           THEN greatest(t.blocked_until, $2::bigint + $5::bigint)
           ELSE t.blocked_until END,
       last_bad = coalesce(EXCLUDED.last_bad, t.last_bad)
     RETURNING failures";

fn bump(
    store: &PgStore,
    key: &str,
    window: Duration,
    block: Option<(Duration, u32)>,
    last_bad: Option<&[u8]>,
    now: i64,
) -> Result<i64> {
    let (block, limit) = block.map_or((0, 0), |(b, l)| (b.as_secs() as i64, i64::from(l)));
    let window = window.as_secs() as i64;
    let row = store.query_one(BUMP, &[&key, &now, &window, &limit, &block, &last_bad])?;
    get(&row, 0)
}

impl ThrottleStore for PgStore {
    fn throttle_state(&self, keys: &Keys, now: i64) -> Result<State> {
        let mut rows = Vec::new();
        for key in [&keys.address, &keys.pair, &keys.slow]
            .into_iter()
            .flatten()
        {
            if let Some(r) = self.query_opt(
                "SELECT failures, blocked_until FROM throttle WHERE key = $1",
                &[key],
            )? {
                rows.push((key.clone(), get(&r, 0)?, get(&r, 1)?));
            }
        }
        Ok(state_of(
            keys,
            rows.iter().map(|(k, f, b)| (k.as_str(), *f, *b)),
            now,
        ))
    }

    /// One statement, so one snapshot and one round trip: the generation (moved
    /// by any host's admin change) and the throttle rows (written by any host).
    fn generation_and_throttle(&self, keys: &Keys) -> Result<(i64, KeyRows)> {
        let [first, second] = keys.read_order();
        let r = self.query_one(
            "SELECT (SELECT value FROM saslgate_meta WHERE key = 'generation'),
                    t1.failures, t1.blocked_until, t2.failures, t2.blocked_until
             FROM (SELECT 1) one
             LEFT JOIN throttle t1 ON t1.key = $1
             LEFT JOIN throttle t2 ON t2.key = $2",
            &[&first, &second],
        )?;
        let generation: Option<i64> = get(&r, 0)?;
        let mut rows: KeyRows = [None, None];
        for (row, f) in rows.iter_mut().zip([1, 3]) {
            let failures: Option<i64> = get(&r, f)?;
            let blocked: Option<i64> = get(&r, f + 1)?;
            if let (Some(failures), Some(blocked)) = (failures, blocked) {
                *row = Some((failures, blocked));
            }
        }
        let generation =
            generation.ok_or_else(|| Error::Storage("database has no generation".into()))?;
        Ok((generation, rows))
    }

    fn record_failure(
        &mut self,
        keys: &Keys,
        fingerprint: &[u8],
        now: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<Duration> {
        let cfg = self.config.clone();
        self.write(|s| {
            if let Some(a) = audit {
                insert_audit(s, std::slice::from_ref(a))?;
            }
            let account_key = keys.pair.as_ref().or(keys.slow.as_ref());
            let window = if keys.pair.is_some() {
                cfg.throttle_account_address.window
            } else {
                cfg.slowdown_window
            };
            if let Some(k) = account_key {
                // The same wrong password again (a client retrying a saved
                // password) counts once.
                if let Some(r) = s.query_opt(
                    "SELECT failures, window_start, last_bad FROM throttle WHERE key = $1",
                    &[k],
                )? {
                    let failures: i64 = get(&r, 0)?;
                    let start: i64 = get(&r, 1)?;
                    let last_bad: Option<Vec<u8>> = get(&r, 2)?;
                    let repeat = start + window.as_secs() as i64 > now
                        && last_bad.as_deref() == Some(fingerprint);
                    if repeat {
                        // Counted once; the account's delay stays.
                        let mut slow = failures;
                        if let (Some(_), Some(k)) = (&keys.pair, &keys.slow) {
                            slow = match s.query_opt(
                                "SELECT failures, window_start FROM throttle WHERE key = $1",
                                &[k],
                            )? {
                                Some(r)
                                    if get::<i64>(&r, 1)?
                                        + cfg.slowdown_window.as_secs() as i64
                                        > now =>
                                {
                                    get(&r, 0)?
                                }
                                _ => 0,
                            };
                        }
                        return Ok(slow_delay(&cfg, keys, slow));
                    }
                }
            }
            if let Some(k) = &keys.address {
                let b = &cfg.throttle_address;
                bump(s, k, b.window, Some((b.block, b.failures)), None, now)?;
            }
            if let Some(k) = &keys.pair {
                let b = &cfg.throttle_account_address;
                bump(
                    s,
                    k,
                    b.window,
                    Some((b.block, b.failures)),
                    Some(fingerprint),
                    now,
                )?;
            }
            if let Some(k) = &keys.slow {
                let n = bump(s, k, cfg.slowdown_window, None, Some(fingerprint), now)?;
                return Ok(slow_delay(&cfg, keys, n));
            }
            Ok(Duration::ZERO)
        })
    }

    fn record_success(&mut self, keys: &Keys) -> Result<()> {
        // The pair row only (see `crate::throttle`).
        let own: Vec<&str> = [&keys.pair]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if own.is_empty() {
            return Ok(());
        }
        self.end_read_tx()?;
        self.execute("DELETE FROM throttle WHERE key = ANY($1)", &[&own])?;
        Ok(())
    }

    fn record_bad_input(
        &mut self,
        keys: &Keys,
        now: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<()> {
        let b = self.config.throttle_address.clone();
        self.write(|s| {
            if let Some(a) = audit {
                insert_audit(s, std::slice::from_ref(a))?;
            }
            if let Some(k) = &keys.address {
                bump(s, k, b.window, Some((b.block, b.failures)), None, now)?;
            }
            Ok(())
        })
    }
}
