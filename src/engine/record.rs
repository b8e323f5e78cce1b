//! Step 7, recording: the audit buffer and its flushes, and the refusals that
//! cost no hash (malformed requests; throttled clients), whose audit records are
//! rate limited per client so a flood cannot grow the trail without bound.

use super::pool::{in_read, OpenId};
use super::Gate;
use crate::audit;
use crate::decision::{Decision, RefuseReason, Request};
use crate::names;
use crate::store::types::AuditRecord;
use crate::store::LoginStore;
use crate::throttle::{self, Keys};
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Gate {
    pub(super) fn lock_buffer(&self) -> std::sync::MutexGuard<'_, audit::Buffer> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A malformed request: counted against the client's address like a wrong
    /// password (so a flood of them from one client is throttled), its audit
    /// record rate limited (it costs the client nothing to send).
    pub(super) fn refuse_bad_input(&self, req: &Request<'_>, detail: &str, now: i64) -> Decision {
        let addr = req.client_addr.and_then(names::parse_client_addr);
        let keys = addr.and_then(|ip| Keys::address_only(ip, &self.config));
        let wants = audit::wants(&self.config.audit_level, false);
        let record = |reason: RefuseReason| AuditRecord {
            ts: now,
            account: Some(lossy_short(req.login).into()),
            service: Some(lossy_short(req.service).into()),
            client_addr: req.client_addr.map(|c| lossy_short(c).into()),
            outcome: "refused",
            reason: Some(reason.name()),
            detail: Some(detail.to_string()),
            credential: None,
        };
        let result = self.with_open_connection(|store, open| {
            // A blocked client is refused as such, malformed or not (and its
            // malformed requests are not counted: it is refused anyway).
            if let Some(ip) = addr {
                let blocked = in_read(store, |s| {
                    let generation = s.generation()?;
                    self.is_blocked(s, open, generation, ip)
                })?;
                if blocked {
                    let reason = RefuseReason::Blocked;
                    if wants && self.admit_cheap(reason, addr, None, now) {
                        store.write_batch(&[record(reason)], &[])?;
                    }
                    self.flush_if_due(store, open, now)?;
                    return Ok(Decision::Refused {
                        reason,
                        detail: format!(
                            "malformed request ({detail}) from {ip}, on the block list"
                        ),
                        retry_after: None,
                        delay: Duration::ZERO,
                    });
                }
            }
            if let Some(keys) = &keys {
                let state = in_read(store, |s| s.throttle_state(keys, now))?;
                if let throttle::State::Blocked { retry_after } = state {
                    let reason = RefuseReason::Throttled;
                    if wants && self.admit_cheap(reason, addr, None, now) {
                        let mut r = record(reason);
                        r.detail = Some(format!(
                            "malformed request ({detail}) from a client over its failure budget"
                        ));
                        store.write_batch(&[r], &[])?;
                    }
                    self.flush_if_due(store, open, now)?;
                    return Ok(Decision::Refused {
                        reason,
                        detail: format!(
                            "client over its failure budget for {retry_after} more seconds"
                        ),
                        retry_after: Some(Duration::from_secs(retry_after as u64)),
                        delay: Duration::ZERO,
                    });
                }
            }
            let reason = RefuseReason::BadInput;
            let r = (wants && self.admit_cheap(reason, addr, None, now)).then(|| record(reason));
            match &keys {
                Some(keys) => {
                    let recorded = store.record_bad_input(keys, now, r.as_ref());
                    self.fresh.wrote(store, keys);
                    recorded?
                }
                None => {
                    if let Some(r) = r {
                        store.write_batch(&[r], &[])?;
                    }
                }
            }
            self.flush_if_due(store, open, now)?;
            Ok(Decision::Refused {
                reason,
                detail: detail.to_string(),
                retry_after: None,
                delay: Duration::ZERO,
            })
        });
        result.unwrap_or_else(|e| Decision::Unavailable {
            cause: e.to_string(),
        })
    }

    /// Rate limit of the audit records of refusals that cost no hash (see
    /// `audit`): `true` if this one is written. Limited per client (IPv6 per
    /// `ipv6_prefix` network); a trusted address is limited per account too, as
    /// only its account + address keys ever block.
    pub(super) fn admit_cheap(
        &self,
        reason: RefuseReason,
        addr: Option<std::net::IpAddr>,
        account: Option<&str>,
        now: i64,
    ) -> bool {
        let client = addr.map(|ip| throttle::client_group(ip, self.config.ipv6_prefix));
        let trusted = addr.is_some_and(|ip| throttle::is_trusted(&self.config, ip));
        let account = account.filter(|_| trusted);
        let key = format!(
            "{} {} {}",
            reason.name(),
            client.as_deref().unwrap_or("-"),
            account.unwrap_or("")
        );
        self.lock_buffer()
            .admit(key, reason.name(), client, account.map(String::from), now)
    }

    /// Writes the buffered records if due (a summary of suppressed refusals
    /// waits there; a process that only refuses must write it too).
    pub(super) fn flush_if_due(
        &self,
        store: &mut dyn LoginStore,
        open: OpenId,
        now: i64,
    ) -> crate::Result<()> {
        let due = self
            .lock_buffer()
            .due(now, self.config.flush_interval.as_secs() as i64);
        if due {
            self.flush_into(store, open, now)?;
        }
        Ok(())
    }

    /// Writes the buffer on `store`, a connection of `open`.
    pub(super) fn flush_into(
        &self,
        store: &mut dyn LoginStore,
        open: OpenId,
        now: i64,
    ) -> crate::Result<()> {
        // One batch write at a time in this process: a login that finds the
        // buffer over `BACKGROUND_MAX` while the flusher writes waits here
        // (woken when it is done) and then writes what is left, often
        // nothing, instead of polling SQLite's write lock in its busy handler
        // (sleeps of 1, 2, 5, 10 ms... while the flusher, polling too, waited
        // on it). Only with a background flusher (saslgated, which does not
        // fork): a lock held this long must not be inherited held by a child.
        let _writing = self
            .background_flush
            .then(|| self.batch_write.lock().unwrap_or_else(|e| e.into_inner()));
        let (records, used, prune) = {
            let mut buf = self.lock_buffer();
            let (r, u) = buf.take();
            buf.last_flush = now;
            let prune = now - buf.last_prune >= 60;
            if prune {
                buf.last_prune = now;
            }
            (r, u, prune)
        };
        match store.write_batch(&records, &used) {
            Err(e) => {
                self.lock_buffer().restore(records, used);
                return Err(e);
            }
            // The fast path's knowledge is still current: a busy server does
            // not read every throttle key in use again after each batch.
            Ok(Some(quiet)) => self.fresh.carry(open, &quiet),
            Ok(None) => {}
        }
        let mut emptied = records;
        emptied.clear();
        self.lock_buffer().recycle(emptied);
        if prune {
            store.prune(now)?;
        }
        Ok(())
    }

    /// Like [`Gate::flush`], and first ends the rate-limit windows of cheap
    /// refusals, so the counts of what was left out are written too (at exit).
    pub fn flush_final(&self) {
        self.lock_buffer().end_windows(self.now());
        self.flush();
    }

    /// For the background flusher: returns when a batch of audit records is
    /// ready (see `audit::BATCH`) or after `timeout`, whichever comes first.
    pub fn wait_for_batch(&self, timeout: Duration) {
        let (ready, signal) = &self.batch_ready;
        let guard = ready.lock().unwrap_or_else(|e| e.into_inner());
        let (mut guard, _) = signal
            .wait_timeout_while(guard, timeout, |ready| !*ready)
            .unwrap_or_else(|e| e.into_inner());
        *guard = false;
    }

    /// Wakes the background flusher early: a batch is ready. Once per batch.
    pub(super) fn announce_batch(&self) {
        let (ready, signal) = &self.batch_ready;
        *ready.lock().unwrap_or_else(|e| e.into_inner()) = true;
        signal.notify_one();
    }

    /// Writes buffered audit records and last-use stamps now (also done on drop).
    pub fn flush(&self) {
        if self.lock_buffer().is_empty() {
            return;
        }
        let written = self
            .with_open_connection(|s, open| in_read(s, |s| self.flush_into(s, open, self.now())));
        self.flush_failed.store(written.is_err(), Ordering::Relaxed);
    }
}

/// Bad input still goes to the audit trail, shortened and made printable.
fn lossy_short(bytes: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(&bytes[..bytes.len().min(64)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    s
}
