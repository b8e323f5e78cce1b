//! What the acceptors, the reactor and the signal thread share: the gate,
//! the settings, the connection cap and the hand-over queue.

use super::conn::State;
use crate::daemon::log::Logger;
use crate::engine::Gate;
use mio::Waker;
use std::os::unix::net::UnixStream as StdStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Tunables from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub field_limit: usize,
    pub fail_delay: Duration,
    pub timeout: Duration,
    pub max_connections: usize,
    pub workers: usize,
    /// Benchmark only (hidden flag): answer `OK` without deciding or logging,
    /// to measure the serving path's own ceiling.
    pub noop: bool,
}

/// State shared by the threads and the main (signal) thread.
pub struct Shared {
    pub(super) gate: RwLock<Arc<Gate>>,
    /// Bumped on every reload: acceptors keep their own `Arc<Gate>` and look
    /// at this (one uncontended load) instead of taking the lock per request.
    pub(super) gate_generation: AtomicU64,
    pub log: Logger,
    pub settings: Settings,
    /// Open client connections (both paths), for the cap.
    pub(super) open: AtomicUsize,
    /// Connections handed to the reactor and not yet closed.
    pub(super) slow: AtomicUsize,
    pub(super) stop: AtomicBool,
    /// Set once the acceptors have returned: the reactor may finish.
    pub(super) acceptors_done: AtomicBool,
    pub(super) below_cap: (Mutex<()>, Condvar),
    pub(super) handoff: Mutex<Vec<Handoff>>,
    pub(super) reactor_waker: Waker,
}

impl Shared {
    pub fn gate(&self) -> Arc<Gate> {
        match self.gate.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Swaps in a new gate (SIGHUP); the old one is flushed, and dropped once
    /// the decisions (and acceptors) using it let go of it.
    pub fn replace_gate(&self, gate: Gate) {
        let old = {
            let mut slot = match self.gate.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            std::mem::replace(&mut *slot, Arc::new(gate))
        };
        self.gate_generation.fetch_add(1, Ordering::Release);
        old.flush();
    }

    /// Asks the threads to finish in-flight requests and stop.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.reactor_waker.wake();
        self.below_cap.1.notify_all();
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Takes a place under the connection cap; false at the cap.
    pub(super) fn reserve(&self) -> bool {
        let before = self.open.fetch_add(1, Ordering::SeqCst);
        if before >= self.settings.max_connections {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Gives a place back; wakes acceptors waiting at the cap.
    pub(super) fn release(&self) {
        let before = self.open.fetch_sub(1, Ordering::SeqCst);
        if before >= self.settings.max_connections {
            let _g = self.below_cap.0.lock();
            self.below_cap.1.notify_all();
        }
    }

    pub(super) fn wait_below_cap(&self) {
        let g = self.below_cap.0.lock().unwrap_or_else(|p| p.into_inner());
        if self.open_connections() >= self.settings.max_connections
            && !self.stop.load(Ordering::SeqCst)
        {
            let _ = self.below_cap.1.wait_timeout(g, Duration::from_millis(50));
        }
    }

    /// Gives a connection to the reactor.
    pub(super) fn hand_off(self: &Arc<Self>, h: Handoff) {
        self.handoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(h);
        let _ = self.reactor_waker.wake();
    }
}

/// A connection's place under the cap, and in the reactor's count; both are
/// given back when it drops.
pub(super) struct Slot(Arc<Shared>);

impl Slot {
    /// Takes over a place the acceptor reserved.
    pub(super) fn adopt(shared: &Arc<Shared>) -> Slot {
        shared.slow.fetch_add(1, Ordering::SeqCst);
        Slot(shared.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.slow.fetch_sub(1, Ordering::SeqCst);
        self.0.release();
    }
}

/// A connection on its way from an acceptor to the reactor.
pub(super) struct Handoff {
    pub(super) stream: StdStream,
    pub(super) slot: Slot,
    pub(super) accepted: Instant,
    pub(super) state: State,
    pub(super) deadline: Instant,
    pub(super) unread: usize,
}
