//! The fast path's read on PostgreSQL: the generation and the throttle rows
//! in one statement (the throttle's rules are `sql/throttle.rs`).

use super::{get, PgStore};
use crate::error::{Error, Result};
use crate::throttle::{KeyRows, Keys};

impl PgStore {
    /// One statement, so one snapshot and one round trip: the generation (moved
    /// by any host's admin change) and the throttle rows (written by any host).
    pub(super) fn generation_and_throttle_rows(&self, keys: &Keys) -> Result<(i64, KeyRows)> {
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
}
