//! What the fast path knows to be current without a statement: the database
//! generation and the throttle rows of recently read keys, as of one change
//! stamp of the database (`LoginStore::change_stamp`: on SQLite the WAL-index
//! header, moved by every commit of any process, and the file it belongs to)
//! read on a connection of one open of the database (`pool::ViewStamp`). A
//! stamp of another open (a reload's new gate, the file watch's reopen, a
//! forked child) is never equal, and an empty log gives no stamp (its header
//! is the same bytes after every open of any database, see `wal_index`).
//!
//! Exact, not a cache with an expiry: an entry is used only while the stamp
//! is the one it was read under, i.e. while nothing at all has been
//! committed since (an admin change, a failure counted by any process, a
//! success clearing counters, an audit batch). Any commit drops everything
//! at the next use, so no reasoning about which writes matter is needed. A
//! read is kept only if the stamp was the same just before and just after
//! it: then the statement saw exactly the state of that stamp (a commit in
//! between moves the stamp, and the rows are used for this request only).
//!
//! One exception, also exact: a commit of this process's audit batch changes
//! neither the generation nor a throttle row, and when it was the only commit
//! between two stamps (`QuietCommit`) the knowledge is carried to the new
//! stamp. Without it a busy saslgated read every throttle key in use again
//! after each batch (every few milliseconds).
//!
//! Backends without a stamp (PostgreSQL) read the database on every login,
//! as before. The cost of a miss is the one statement the fast path always
//! ran; the misses come with refusals, admin changes and other processes'
//! commits.

use super::pool::{OpenId, ViewStamp};
use crate::store::{LoginStore, QuietCommit};
use crate::throttle::{state_of_rows, KeyRows, Keys, RowState, State};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// Keys kept at most; beyond, the set starts over (a miss costs one read).
const MAX_KEYS: usize = 10_000;

#[derive(Default)]
struct Known {
    stamp: Option<ViewStamp>,
    generation: i64,
    /// Throttle key → its row (`None`: no row) in the state of `stamp`.
    rows: HashMap<String, Option<RowState>>,
}

#[derive(Default)]
pub(super) struct Fresh {
    known: RwLock<Known>,
    /// Statements run (for `Gate::stats`).
    reads: AtomicU64,
}

impl Fresh {
    /// The generation and the throttle state of `keys`, from memory if
    /// nothing was committed since they were read, else by one statement.
    pub(super) fn generation_and_throttle(
        &self,
        store: &dyn LoginStore,
        open: OpenId,
        keys: &Keys,
        now: i64,
    ) -> crate::Result<(i64, State)> {
        let stamp = open.stamp(store);
        if let Some(stamp) = &stamp {
            if let Some((generation, rows)) = self.lookup(stamp, keys) {
                return Ok((generation, state_of_rows(keys, &rows, now)));
            }
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        let (generation, rows) = store.generation_and_throttle(keys)?;
        if let Some(stamp) = stamp {
            if open.stamp(store) == Some(stamp) {
                self.remember(stamp, generation, keys, &rows);
            }
        }
        Ok((generation, state_of_rows(keys, &rows, now)))
    }

    pub(super) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn lookup(&self, stamp: &ViewStamp, keys: &Keys) -> Option<(i64, KeyRows)> {
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        if known.stamp.as_ref() != Some(stamp) {
            return None;
        }
        let mut rows: KeyRows = [None, None];
        for (row, key) in rows.iter_mut().zip(keys.read_order()) {
            if let Some(key) = key {
                *row = *known.rows.get(key.as_str())?;
            }
        }
        Some((known.generation, rows))
    }

    fn remember(&self, stamp: ViewStamp, generation: i64, keys: &Keys, rows: &KeyRows) {
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        if known.stamp != Some(stamp) || known.rows.len() >= MAX_KEYS {
            known.rows.clear();
            known.stamp = Some(stamp);
            known.generation = generation;
        }
        for (key, row) in keys.read_order().into_iter().zip(rows) {
            if let Some(key) = key {
                known.rows.insert(key.clone(), *row);
            }
        }
    }

    /// After a commit (on a connection of `open`) that changed nothing this
    /// knows of, and was the only commit since `quiet.before`: what was known
    /// then is known now.
    pub(super) fn carry(&self, open: OpenId, quiet: &QuietCommit) {
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        if let Some(stamp) = known
            .stamp
            .filter(|s| *s == ViewStamp::of(open, quiet.before))
        {
            known.stamp = Some(stamp.with_change(quiet.after));
        }
    }

    /// Forgets everything (database file replaced, process forked).
    pub(super) fn clear(&self) {
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        known.rows.clear();
        known.stamp = None;
    }
}
