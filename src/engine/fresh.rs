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
//! PostgreSQL has no stamp; it has the broadcast instead (issue 28,
//! `store::pg::notify`): the triggers announce each change after its commit
//! and this process's listener hears it. There the knowledge is kept under a
//! listener `Position` and each notice drops exactly what it names (one
//! account's rows, the address rows, or everything); a read is kept only if
//! no notice heard since just before it concerns what it read. Without a
//! live listener (not connected yet, lost, triggers missing) every login
//! reads the database, as before the broadcast. This process's own throttle
//! writes are notices too (`Fresh::wrote`), heard at once.
//!
//! The cost of a miss is the one statement the fast path always ran; the
//! misses come with refusals, admin changes and other processes' commits.

use super::pool::{OpenId, ViewStamp};
use crate::config::Database;
use crate::store::pg::notify::{self, Notice, Position};
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

/// What the fast path knows on PostgreSQL, as of a listener position.
#[derive(Default)]
struct Heard {
    at: Option<Position>,
    generation: Option<i64>,
    /// Throttle key → its row and the account it belongs to (`None`: an
    /// address's row).
    rows: HashMap<String, (Option<RowState>, Option<i64>)>,
}

#[derive(Default)]
pub(super) struct Fresh {
    known: RwLock<Known>,
    heard: RwLock<Heard>,
    /// Statements run (for `Gate::stats`).
    reads: AtomicU64,
    /// Rows dropped because a notice named them (for the tests).
    dropped: AtomicU64,
}

impl Fresh {
    /// The generation and the throttle state of `keys`, from memory if
    /// nothing was committed since they were read, else by one statement.
    pub(super) fn generation_and_throttle(
        &self,
        store: &dyn LoginStore,
        open: OpenId,
        account: i64,
        keys: &Keys,
        now: i64,
    ) -> crate::Result<(i64, State)> {
        if matches!(store.config().database(), Database::Postgres(_)) {
            return self.by_broadcast(store, account, keys, now);
        }
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

    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// This process committed (or may have committed) throttle rows of
    /// `keys`: a notice of its own, heard before its listener gets the
    /// server's (PostgreSQL; SQLite's stamp moved with the commit).
    pub(super) fn wrote(&self, store: &dyn LoginStore, keys: &Keys) {
        if matches!(store.config().database(), Database::Postgres(_)) {
            let [a, b] = [keys.address.as_deref(), keys.pair.as_deref()];
            notify::wrote(
                store.config(),
                [a, b, keys.slow.as_deref()].into_iter().flatten(),
            );
        }
    }

    /// PostgreSQL: from memory if no notice since names these rows, else by
    /// one statement (kept if nothing heard meanwhile concerns it).
    fn by_broadcast(
        &self,
        store: &dyn LoginStore,
        account: i64,
        keys: &Keys,
        now: i64,
    ) -> crate::Result<(i64, State)> {
        let Some(before) = notify::position(store.config()) else {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let (generation, rows) = store.generation_and_throttle(keys)?;
            return Ok((generation, state_of_rows(keys, &rows, now)));
        };
        if let Some((generation, rows)) = self.heard_lookup(before, keys) {
            return Ok((generation, state_of_rows(keys, &rows, now)));
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        let (generation, rows) = store.generation_and_throttle(keys)?;
        self.heard_remember(before, account, generation, keys, &rows);
        Ok((generation, state_of_rows(keys, &rows, now)))
    }

    fn heard_lookup(&self, at: Position, keys: &Keys) -> Option<(i64, KeyRows)> {
        {
            let heard = self.heard.read().unwrap_or_else(|p| p.into_inner());
            if heard.at == Some(at) {
                return heard_rows(&heard, keys);
            }
        }
        let mut heard = self.heard.write().unwrap_or_else(|p| p.into_inner());
        self.catch_up(&mut heard, at, at.seq);
        heard_rows(&heard, keys)
    }

    /// Brings `heard` to the listener's current position, reading the
    /// notices after `from` (at most its own position); returns those after
    /// `from`, or `None` (everything dropped) when they are not all there.
    fn catch_up(&self, heard: &mut Heard, at: Position, from: u64) -> Option<Vec<(u64, Notice)>> {
        let own = heard.at.filter(|h| h.epoch == at.epoch).map(|h| h.seq);
        let start = own.map_or(from, |s| s.min(from));
        let Some((notices, now)) = notify::since(Position {
            epoch: at.epoch,
            seq: start,
        }) else {
            self.forget_heard(heard);
            return None;
        };
        match own {
            None => {
                self.forget_heard(heard);
                heard.at = Some(now);
            }
            Some(seq) => {
                for (_, notice) in notices.iter().filter(|(s, _)| *s > seq) {
                    self.apply(heard, notice);
                }
                heard.at = Some(now);
            }
        }
        Some(notices.into_iter().filter(|(s, _)| *s > from).collect())
    }

    fn heard_remember(
        &self,
        before: Position,
        account: i64,
        generation: i64,
        keys: &Keys,
        rows: &KeyRows,
    ) {
        let mut heard = self.heard.write().unwrap_or_else(|p| p.into_inner());
        let Some(since) = self.catch_up(&mut heard, before, before.seq) else {
            return;
        };
        // A change committed after the read's snapshot was heard after
        // `before`: if any notice since then may concern these rows, the
        // read may be older than what was announced.
        if since.iter().any(|(_, n)| concerns(n, account, keys)) {
            return;
        }
        if heard.generation != Some(generation) || heard.rows.len() >= MAX_KEYS {
            heard.rows.clear();
            heard.generation = Some(generation);
        }
        for (key, row) in keys.read_order().into_iter().zip(rows) {
            if let Some(key) = key {
                let owner = (keys.address.as_ref() != Some(key)).then_some(account);
                heard.rows.insert(key.clone(), (*row, owner));
            }
        }
    }

    fn apply(&self, heard: &mut Heard, notice: &Notice) {
        let before = heard.rows.len();
        match notice {
            Notice::All => {
                heard.rows.clear();
                heard.generation = None;
            }
            Notice::Account(id) => heard.rows.retain(|_, (_, owner)| *owner != Some(*id)),
            Notice::Addresses => heard.rows.retain(|_, (_, owner)| owner.is_some()),
            Notice::Key(key) => {
                heard.rows.remove(key);
            }
        }
        let gone = (before - heard.rows.len()) as u64;
        self.dropped.fetch_add(gone, Ordering::Relaxed);
    }

    fn forget_heard(&self, heard: &mut Heard) {
        heard.rows.clear();
        heard.generation = None;
        heard.at = None;
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
        drop(known);
        let mut heard = self.heard.write().unwrap_or_else(|p| p.into_inner());
        self.forget_heard(&mut heard);
    }
}

/// The generation and the rows of `keys`, if all are known.
fn heard_rows(heard: &Heard, keys: &Keys) -> Option<(i64, KeyRows)> {
    let generation = heard.generation?;
    let mut rows: KeyRows = [None, None];
    for (row, key) in rows.iter_mut().zip(keys.read_order()) {
        if let Some(key) = key {
            *row = heard.rows.get(key.as_str())?.0;
        }
    }
    Some((generation, rows))
}

/// Whether `notice` may concern the rows of `keys` (of `account`).
fn concerns(notice: &Notice, account: i64, keys: &Keys) -> bool {
    match notice {
        Notice::All => true,
        Notice::Account(id) => *id == account,
        Notice::Addresses => keys.address.is_some(),
        Notice::Key(key) => keys.read_order().into_iter().flatten().any(|k| k == key),
    }
}
