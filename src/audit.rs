//! The audit trail's write side: refusals are written at once (with the throttle
//! update); successes and last-use stamps are buffered and written in batches so a
//! busy server does not pay a database write per login.
//!
//! Refusals that cost no hash (throttled, malformed) are rate limited: per client
//! (and minute, [`LIMIT_WINDOW`]) the first is written, the others only counted;
//! when the minute is over one summary row says how many were left out
//! ("N more refusals suppressed ..."). A flood of them then writes a few rows a
//! minute instead of thousands a second (issue 11, finding 7).

use crate::config::AuditLevel;
use crate::store::types::{AuditRecord, LastUse};
use std::collections::HashMap;

/// Rate limit of cheap refusals: this long a window per client...
pub const LIMIT_WINDOW: i64 = 60;
/// ...with this many rows written in it.
const LIMIT_ROWS: u32 = 1;
/// Clients tracked at most; past it, ended windows are summarised and, if still
/// full, every new client shares one slot.
const LIMIT_KEYS: usize = 10_000;
const OVERFLOW_KEY: &str = "*";

/// One client's window of cheap refusals.
#[derive(Debug)]
struct Slot {
    start: i64,
    last: i64,
    written: u32,
    suppressed: u64,
    reason: &'static str,
    client: Option<String>,
    account: Option<String>,
    /// The shared slot of clients past [`LIMIT_KEYS`].
    overflow: bool,
}

impl Slot {
    /// The row standing for the refusals left out of the trail, if any.
    fn summary(self) -> Option<AuditRecord> {
        (self.suppressed > 0).then(|| AuditRecord {
            ts: self.last,
            account: self.account.map(Into::into),
            service: None,
            client_addr: self.client.as_deref().map(Into::into),
            outcome: "refused",
            reason: Some(self.reason),
            detail: Some(format!(
                "{} more refusals suppressed ({} from {} between {} and {}; \
                 at most {LIMIT_ROWS} row per client and {LIMIT_WINDOW} s)",
                self.suppressed,
                self.reason,
                match (&self.client, self.overflow) {
                    (_, true) => "clients past the tracking limit",
                    (Some(c), false) => c.as_str(),
                    (None, false) => "clients without an address",
                },
                crate::timefmt::format(self.start),
                crate::timefmt::format(self.last),
            )),
            credential: None,
        })
    }
}

/// Records kept in memory at most if the database stays unwritable (oldest dropped).
const MAX_BUFFERED: usize = 10_000;
/// Flush early once this many successes are waiting.
const FLUSH_AT: usize = 256;
/// With a background flusher (`Gate::with_background_flush`): past this many
/// waiting records a login writes the batch itself.
pub const BACKGROUND_MAX: usize = 4096;
/// Records waiting at which a background flusher is woken before its timer:
/// batches stay small, so a busy daemon neither grows the buffer (copies under
/// its lock) nor reaches [`BACKGROUND_MAX`] and writes on a client's time.
pub const BATCH: usize = 512;

#[derive(Debug, Default)]
pub struct Buffer {
    records: Vec<AuditRecord>,
    /// The emptied vector of the last batch, reused for the next one: pushes
    /// then rarely grow (copy) the vector while the lock is held.
    spare: Vec<AuditRecord>,
    /// A flusher was already told that this batch is ready.
    batch_announced: bool,
    last_use: HashMap<LastUse, i64>,
    limiter: HashMap<String, Slot>,
    pub last_flush: i64,
    pub last_prune: i64,
}

pub fn wants(level: &AuditLevel, accepted: bool) -> bool {
    match level {
        AuditLevel::All => true,
        AuditLevel::Failures => !accepted,
        AuditLevel::None => false,
    }
}

impl Buffer {
    pub fn new(now: i64) -> Buffer {
        Buffer {
            last_flush: now,
            ..Default::default()
        }
    }

    /// Rate limit of a cheap refusal (see the module comment): `true` if its
    /// record is to be written, `false` if it was counted instead. `key`: the
    /// client (and reason) it is limited under; `client`/`account`: what the
    /// summary row shows.
    pub fn admit(
        &mut self,
        key: String,
        reason: &'static str,
        client: Option<String>,
        account: Option<String>,
        now: i64,
    ) -> bool {
        let (mut key, mut client, mut account) = (key, client, account);
        if !self.limiter.contains_key(&key) && self.limiter.len() >= LIMIT_KEYS {
            self.sweep(now, false);
            if self.limiter.len() >= LIMIT_KEYS {
                (key, client, account) = (OVERFLOW_KEY.to_string(), None, None);
            }
        }
        let overflow = key == OVERFLOW_KEY;
        let fresh = || Slot {
            overflow,
            start: now,
            last: now,
            written: 1,
            suppressed: 0,
            reason,
            client: client.clone(),
            account: account.clone(),
        };
        let ended = match self.limiter.get_mut(&key) {
            None => {
                self.limiter.insert(key, fresh());
                return true;
            }
            Some(slot) if now - slot.start < LIMIT_WINDOW && now >= slot.start => {
                if slot.written < LIMIT_ROWS {
                    slot.written += 1;
                    return true;
                }
                slot.suppressed += 1;
                slot.last = now;
                return false;
            }
            Some(slot) => std::mem::replace(slot, fresh()),
        };
        if let Some(r) = ended.summary() {
            self.push(Some(r), None, now);
        }
        true
    }

    /// Moves the summaries of ended windows (of every window with `all`) into
    /// the records to write, and forgets those clients.
    fn sweep(&mut self, now: i64, all: bool) {
        let ended: Vec<String> = self
            .limiter
            .iter()
            .filter(|(_, s)| all || now - s.start >= LIMIT_WINDOW || now < s.start)
            .map(|(k, _)| k.clone())
            .collect();
        for k in ended {
            if let Some(r) = self.limiter.remove(&k).and_then(Slot::summary) {
                self.push(Some(r), None, now);
            }
        }
    }

    /// Ends every rate-limit window now (at exit: nothing counted is lost).
    pub fn end_windows(&mut self, now: i64) {
        self.sweep(now, true);
    }

    /// A summary is waiting for its window to end.
    fn summaries_due(&self, now: i64) -> bool {
        self.limiter
            .values()
            .any(|s| s.suppressed > 0 && (now - s.start >= LIMIT_WINDOW || now < s.start))
    }

    pub fn push(&mut self, record: Option<AuditRecord>, used: Option<LastUse>, now: i64) {
        if let Some(r) = record {
            if self.records.len() >= MAX_BUFFERED {
                self.records.remove(0);
            }
            self.records.push(r);
        }
        if let Some(u) = used {
            self.last_use.insert(u, now);
        }
    }

    /// Whether a batch became ready with the last push: true once per batch.
    pub fn batch_ready(&mut self) -> bool {
        let ready = !self.batch_announced && self.records.len() >= BATCH;
        self.batch_announced |= ready;
        ready
    }

    pub fn due(&self, now: i64, interval_secs: i64) -> bool {
        let waiting = !self.records.is_empty() || !self.last_use.is_empty();
        waiting && (now - self.last_flush >= interval_secs || self.records.len() >= FLUSH_AT)
    }

    /// Records and last-use stamps waiting.
    pub fn len(&self) -> usize {
        self.records.len() + self.last_use.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.last_use.is_empty()
            && !self.summaries_due(crate::timefmt::now())
    }

    /// Takes everything out for writing (with the summaries of ended windows).
    pub fn take(&mut self) -> (Vec<AuditRecord>, Vec<(LastUse, i64)>) {
        self.sweep(crate::timefmt::now(), false);
        self.batch_announced = false;
        let spare = std::mem::take(&mut self.spare);
        (
            std::mem::replace(&mut self.records, spare),
            self.last_use.drain().collect(),
        )
    }

    /// Gives back a written batch's vector, emptied (its records dropped by
    /// the caller, outside the lock), for the next batch.
    pub fn recycle(&mut self, emptied: Vec<AuditRecord>) {
        debug_assert!(emptied.is_empty());
        if emptied.capacity() > self.spare.capacity() && emptied.capacity() <= MAX_BUFFERED {
            self.spare = emptied;
        }
    }

    /// Puts back what could not be written (so a passing lock loses nothing).
    pub fn restore(&mut self, records: Vec<AuditRecord>, last_use: Vec<(LastUse, i64)>) {
        let mut merged = records;
        merged.append(&mut self.records);
        if merged.len() > MAX_BUFFERED {
            merged.drain(..merged.len() - MAX_BUFFERED);
        }
        self.records = merged;
        for (k, v) in last_use {
            self.last_use.entry(k).or_insert(v);
        }
    }

    /// After fork: the parent owns what was buffered before.
    pub fn forget(&mut self) {
        self.records.clear();
        self.last_use.clear();
        self.limiter.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(b: &mut Buffer, key: &str, now: i64) -> bool {
        b.admit(key.into(), "throttled", Some(key.into()), None, now)
    }

    fn suppressed(b: &mut Buffer) -> Vec<u64> {
        b.records
            .drain(..)
            .map(|r| {
                let d = r.detail.unwrap();
                d.split(' ').next().unwrap().parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn one_row_per_client_and_window_then_a_count() {
        let mut b = Buffer::new(1000);
        assert!(admit(&mut b, "a", 1000));
        assert!(!admit(&mut b, "a", 1000));
        assert!(!admit(&mut b, "a", 1059));
        assert!(admit(&mut b, "b", 1001), "other clients are not affected");
        assert!(b.records.is_empty());
        // Next window: written again, and the last one's count is buffered.
        assert!(admit(&mut b, "a", 1060));
        assert_eq!(suppressed(&mut b), vec![2]);
        assert!(!admit(&mut b, "a", 1061));
        b.end_windows(1062);
        assert_eq!(suppressed(&mut b), vec![1]);
        assert!(b.limiter.is_empty());
    }

    #[test]
    fn bounded_memory() {
        let mut b = Buffer::new(0);
        for i in 0..LIMIT_KEYS {
            assert!(admit(&mut b, &i.to_string(), 5));
        }
        // Full: new clients share one slot, so the count is still kept.
        assert!(admit(&mut b, "new1", 6));
        assert!(!admit(&mut b, "new2", 6));
        assert!(!admit(&mut b, "new3", 7));
        assert_eq!(b.limiter.len(), LIMIT_KEYS + 1);
        b.end_windows(8);
        assert_eq!(suppressed(&mut b), vec![2]);
        // After the window the old slots make room again.
        for i in 0..LIMIT_KEYS {
            admit(&mut b, &i.to_string(), 5);
        }
        assert!(admit(&mut b, "later", 5 + LIMIT_WINDOW));
        assert!(b.limiter.len() <= 1);
    }

    fn accepted(ts: i64) -> AuditRecord {
        AuditRecord {
            ts,
            account: Some("a".into()),
            service: None,
            client_addr: None,
            outcome: "accepted",
            reason: None,
            detail: None,
            credential: None,
        }
    }

    #[test]
    fn a_batch_is_announced_once_and_its_vector_reused() {
        let mut b = Buffer::new(0);
        for i in 0..BATCH - 1 {
            b.push(Some(accepted(i as i64)), None, 0);
            assert!(!b.batch_ready(), "not ready at {}", i + 1);
        }
        b.push(Some(accepted(0)), None, 0);
        assert!(b.batch_ready());
        b.push(Some(accepted(0)), None, 0);
        assert!(!b.batch_ready(), "announced once per batch");
        let (mut records, _) = b.take();
        assert_eq!(records.len(), BATCH + 1);
        let capacity = records.capacity();
        records.clear();
        b.recycle(records);
        // The next batch fills the written batch's vector: no growth.
        let (next, _) = b.take();
        assert!(next.is_empty());
        for _ in 0..BATCH {
            b.push(Some(accepted(1)), None, 1);
        }
        assert!(b.batch_ready(), "announced again for the next batch");
        assert_eq!(b.records.capacity(), capacity);
    }
}
