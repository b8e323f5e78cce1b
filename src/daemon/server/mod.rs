//! The serving core of saslgated.
//!
//! Design: `-n N` acceptor threads each block in `accept4` on the listening
//! socket, look at once whether the whole request is there (`MSG_PEEK`), and if
//! so decide it and answer on the same thread: accept, peek, send, consume,
//! close; no epoll, no hand-over, no wake-up of another thread. Everything
//! else goes to one reactor thread (an epoll loop through `mio`) with its
//! per-connection deadlines:
//! - a client whose request is not complete (half a frame, or nothing yet after
//!   a short wait): an epoll entry and a small buffer, never an acceptor; it is
//!   dropped at its deadline (`--timeout`, counted from accept);
//! - a refusal held back by the failure delay: a timer entry, never a sleeping
//!   acceptor;
//! - an answer the socket did not take at once.
//!
//! Why: the previous design (one epoll loop per worker, `EPOLLEXCLUSIVE` on the
//! listener) paid an `epoll_wait` and the loop's bookkeeping on every request;
//! a no-op C server shaped like the stock daemon (threads blocking in
//! `accept`) did 1.4-1.8x its requests (issue 15). Hashing stays bounded by N:
//! a busy acceptor is not in `accept`, so new connections go to idle ones or
//! wait in the listen queue. The open-connection cap counts both paths: an
//! acceptor reserves a place before `accept4` and waits while the cap is
//! reached.
//!
//! The cost: while all N acceptors hash (bcrypt, ~50 ms at cost 10), new
//! clients wait in the listen queue; a client that connects and sends nothing
//! holds an acceptor for at most `FIRST_BYTES_WAIT`, and not at all while the
//! reactor already holds `SLOW_WAIT_LIMIT` such clients.
//!
//! Files: `shared.rs` (state the threads share, the cap), `acceptor.rs` (the
//! fast path), `reactor.rs` (the slow path), `answer.rs` (deciding and the log
//! line), `conn.rs` (connection states, wiped buffers).

mod acceptor;
mod answer;
mod conn;
mod reactor;
mod shared;

pub use shared::{Settings, Shared};

use crate::daemon::log::Logger;
use crate::daemon::sys;
use crate::engine::Gate;
use mio::{Poll, Waker};
use reactor::{Reactor, WAKER};
use std::io;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixListener as StdListener;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

/// How often the audit-flush thread writes the gate's batched records and
/// sends the batched log lines.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How often the checkpoint thread looks at the write-ahead log (the gate is
/// made `with_background_checkpoints`: no commit of the daemon checkpoints).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);
/// How long a blocked `accept4` sleeps before looking at the stop flag and
/// for a reloaded configuration (`SO_RCVTIMEO` on the listener).
const ACCEPT_TICK: Duration = Duration::from_millis(200);

/// The daemon: acceptors and a reactor over one listening socket.
pub struct Server {
    shared: Arc<Shared>,
    poll: Poll,
    listener: Arc<StdListener>,
}

impl Server {
    pub fn new(
        listener: StdListener,
        gate: Gate,
        log: Logger,
        settings: Settings,
    ) -> io::Result<Server> {
        // Blocking accept, woken every ACCEPT_TICK to look at the stop flag.
        listener.set_nonblocking(false)?;
        sys::set_recv_timeout(listener.as_raw_fd(), ACCEPT_TICK)?;
        let poll = Poll::new()?;
        let reactor_waker = Waker::new(poll.registry(), WAKER)?;
        let shared = Arc::new(Shared {
            gate: RwLock::new(Arc::new(gate)),
            gate_generation: AtomicU64::new(0),
            log,
            settings,
            open: AtomicUsize::new(0),
            slow: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            acceptors_done: AtomicBool::new(false),
            below_cap: (Mutex::new(()), Condvar::new()),
            handoff: Mutex::new(Vec::new()),
            reactor_waker,
        });
        Ok(Server {
            shared,
            poll,
            listener: Arc::new(listener),
        })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Starts the acceptors, the reactor and the audit flusher;
    /// [`Running::wait`] returns once they have stopped.
    pub fn start(self) -> io::Result<Running> {
        let mut reactor = Reactor::new(self.poll, self.shared.clone());
        let mut threads: Vec<(String, Box<dyn FnOnce() + Send>)> = Vec::new();
        for i in 0..self.shared.settings.workers.max(1) {
            let (shared, listener) = (self.shared.clone(), self.listener.clone());
            threads.push((
                format!("acceptor-{i}"),
                Box::new(move || acceptor::accept_loop(&shared, &listener)),
            ));
        }
        let n_acceptors = threads.len();
        threads.push(("reactor".into(), Box::new(move || reactor.run())));
        // The gate is made `with_background_flush` (mod.rs): audit batches are
        // written here, not while a client waits.
        // Log lines are batched too (log/mod.rs): sent from here, one system
        // call per batch instead of one per decision.
        let shared = self.shared.clone();
        let flusher = move || {
            while !shared.stop.load(Ordering::SeqCst) {
                // Every FLUSH_EVERY, or sooner when a batch of audit records
                // is ready (a busy daemon writes small batches often).
                shared.gate().wait_for_batch(FLUSH_EVERY);
                shared.log.flush();
                shared.gate().flush();
            }
        };
        self.shared.log.start_batching();
        threads.push(("audit-flush".into(), Box::new(flusher)));
        // Checkpoints `fsync` the database: here, not in the flusher's commits
        // (which would let the audit buffer fill and logins write it) nor in
        // a login's.
        let shared = self.shared.clone();
        let checkpointer = move || {
            while !shared.stop.load(Ordering::SeqCst) {
                std::thread::sleep(CHECKPOINT_EVERY);
                shared.gate().checkpoint();
            }
        };
        threads.push(("checkpoint".into(), Box::new(checkpointer)));
        let mut handles = Vec::new();
        for (name, body) in threads {
            match std::thread::Builder::new().name(name).spawn(body) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    self.shared.request_stop();
                    self.shared.acceptors_done.store(true, Ordering::SeqCst);
                    for h in handles {
                        let _ = h.join();
                    }
                    // No flusher: the caller's lines go out as they come.
                    self.shared.log.stop_batching();
                    return Err(e);
                }
            }
        }
        let others = handles.split_off(n_acceptors);
        Ok(Running {
            shared: self.shared,
            acceptors: handles,
            others,
        })
    }
}

pub struct Running {
    shared: Arc<Shared>,
    acceptors: Vec<std::thread::JoinHandle<()>>,
    others: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Waits for the threads (after [`Shared::request_stop`]), then flushes.
    /// Acceptors first: what they hand over meanwhile still reaches the reactor.
    pub fn wait(self) {
        for h in self.acceptors {
            if h.join().is_err() {
                self.shared.log.err("an acceptor thread panicked");
            }
        }
        self.shared.acceptors_done.store(true, Ordering::SeqCst);
        let _ = self.shared.reactor_waker.wake();
        for h in self.others {
            if h.join().is_err() {
                self.shared.log.err("a daemon thread panicked");
            }
        }
        self.shared.gate().flush();
        self.shared.log.stop_batching();
    }
}
