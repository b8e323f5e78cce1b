//! The audit trail's write side: refusals are written at once (with the throttle
//! update); successes and last-use stamps are buffered and written in batches so a
//! busy server does not pay a database write per login.

use crate::config::AuditLevel;
use crate::store::login::{AuditRecord, LastUse};
use std::collections::HashMap;

/// Records kept in memory at most if the database stays unwritable (oldest dropped).
const MAX_BUFFERED: usize = 10_000;
/// Flush early once this many successes are waiting.
const FLUSH_AT: usize = 256;
/// With a background flusher (`Gate::with_background_flush`): past this many
/// waiting records a login writes the batch itself.
pub const BACKGROUND_MAX: usize = 4096;

#[derive(Debug, Default)]
pub struct Buffer {
    records: Vec<AuditRecord>,
    last_use: HashMap<LastUse, i64>,
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

    pub fn due(&self, now: i64, interval_secs: i64) -> bool {
        let waiting = !self.records.is_empty() || !self.last_use.is_empty();
        waiting && (now - self.last_flush >= interval_secs || self.records.len() >= FLUSH_AT)
    }

    /// Records and last-use stamps waiting.
    pub fn len(&self) -> usize {
        self.records.len() + self.last_use.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.last_use.is_empty()
    }

    /// Takes everything out for writing.
    pub fn take(&mut self) -> (Vec<AuditRecord>, Vec<(LastUse, i64)>) {
        (
            std::mem::take(&mut self.records),
            self.last_use.drain().collect(),
        )
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
    }
}
