//! The fast path's read on SQLite: the generation and the throttle rows in
//! one statement (the throttle's rules are `sql/throttle.rs`).

use super::SqliteStore;
use crate::error::Result;
use crate::throttle::{KeyRows, Keys};
use rusqlite::params;

impl SqliteStore {
    /// The database generation and the throttle rows, read by one statement (so
    /// from one snapshot of the database, without an explicit transaction): what
    /// the engine's fast path needs to know is current.
    ///
    /// Hot path: one point lookup per row. A scalar subquery gives one column,
    /// so each throttle row comes back as `blocked_until * 2 + (failures > 0)`,
    /// which is all `state_of` looks at; a request with one key (no client
    /// address, or a trusted one) runs a statement without the second lookup.
    /// An `IN (?1, ?2)` list or a join would build a temporary b-tree per call.
    pub(super) fn generation_and_throttle_rows(&self, keys: &Keys) -> Result<(i64, KeyRows)> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::{LoginStore, ThrottleStore};
    use crate::throttle::State;

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
        let mut store = SqliteStore::create(&cfg).unwrap();
        let now = 1_800_000_000;
        let addr = Some("192.0.2.7".parse().unwrap());
        let with_addr = Keys::new("alice", addr, &cfg);
        let without = Keys::new("bob", None, &cfg);
        // A trusted address has a pair key but no address key.
        let trusted = Keys::new("carol", Some("198.51.100.7".parse().unwrap()), &cfg);
        assert!(trusted.address.is_none() && trusted.pair.is_some());
        let check = |store: &SqliteStore| {
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
