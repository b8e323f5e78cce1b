//! The login decision engine: [`Gate::decide`] implements "How a login is
//! decided" (doc/design.md). Every face (CLI `verify`, saslgated, the libsasl2
//! plugin, the C ABI) calls it; none decides anything itself.
//!
//! Split by job:
//! - `pool`: connections per process, fork safety, the watch on the file;
//! - `attempt`: the decision flow (fast path, full path, policy-only check);
//! - `fresh`: the generation and throttle rows known current without a statement;
//! - `blocks`: the address block list, in memory per generation;
//! - `pace`: step 2b, an account over its slow-down budget verified one
//!   credential at a time, its delay between;
//! - `credentials`: steps 3-5, at most one slow hash;
//! - `policy`: step 6;
//! - `record`: step 7, the audit buffer and the refusals that cost no hash;
//! - `tickets`: proxy tickets (issued by the `auth_http` face, used once);
//! - `clock`: the wall and monotonic time the engine reads (the system's;
//!   a test's [`ManualClock`] through [`Gate::with_clock`]).
//!
//! The engine does not catch panics: each face has one panic boundary that
//! logs the message and its location through that face's log and answers
//! "unavailable" (saslgated's worker, the plugin's and the C ABI's guards).

mod attempt;
mod blocks;
mod clock;
mod credentials;
mod fresh;
mod input;
mod pace;
mod policy;
mod pool;
mod record;
mod tickets;

pub use crate::decision::{Credential, Decision, RefuseReason, Request, Stats};
pub use attempt::Stop;
pub use clock::{Clock, ManualClock, SystemClock};
pub use policy::policy_denial;
pub use pool::{OpenId, ViewStamp};
pub use tickets::{is_ticket_shaped, parse_backend, TICKET_LEN};

use crate::audit;
use crate::cache::PositiveCache;
use crate::config::Config;
use crate::crypto::HashCounter;
use crate::snapshot::Snapshot;
use attempt::Attempt;
use input::Input;
use pool::{in_read, Pool};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// The decision engine over one database. `Send + Sync`: share it across threads
/// (it keeps a small pool of SQLite connections). Fork-safe: a child process never
/// uses a connection opened by its parent (each use checks the process id).
pub struct Gate {
    config: Config,
    pool: Mutex<Pool>,
    counter: HashCounter,
    /// By the open and the generation the entries were verified at.
    cache: Option<PositiveCache<(OpenId, i64)>>,
    /// Login data of recent accounts for the app-password fast path, by the
    /// open and the generation they were read at.
    snapshot: Snapshot<(OpenId, i64)>,
    /// The generation and throttle rows known current (see `fresh`).
    fresh: fresh::Fresh,
    /// The address block list of the current generation.
    blocks: blocks::BlockCache,
    /// What a face keeps with the gate (see [`Gate::face_memo`]).
    face_memo: FaceMemo,
    /// The accounts over their slow-down budget (see `pace`).
    pace: pace::Pace,
    /// Where the gate reads the time (see [`Gate::with_clock`]).
    clock: Arc<dyn Clock>,
    buffer: Mutex<audit::Buffer>,
    /// Held while a batch of the buffer is written (`Gate::flush_into`).
    batch_write: Mutex<()>,
    dummy_hash: OnceLock<Option<String>>,
    decisions: AtomicU64,
    cache_hits: AtomicU64,
    fast_accepts: AtomicU64,
    /// Check the process id on every use (see [`Gate::single_process`]).
    fork_checks: bool,
    /// See [`Gate::with_background_flush`].
    background_flush: bool,
    /// See [`Gate::with_background_checkpoints`].
    background_checkpoints: bool,
    /// A [`Gate::checkpoint`] is writing the database file.
    checkpointing: AtomicBool,
    /// The last [`Gate::flush`] failed.
    flush_failed: AtomicBool,
    /// Set (and signalled) when a batch of audit records is ready for the
    /// background flusher (see [`Gate::wait_for_batch`]).
    batch_ready: (Mutex<bool>, Condvar),
}

impl Gate {
    /// A gate that opens the database lazily: a missing or broken database makes
    /// each decision "unavailable" until it is repaired (no restart needed).
    pub fn new(config: Config) -> Gate {
        Gate {
            cache: PositiveCache::new(config.cache_ttl),
            config,
            pool: Mutex::new(Pool::new()),
            counter: HashCounter::default(),
            snapshot: Snapshot::default(),
            fresh: fresh::Fresh::default(),
            blocks: Default::default(),
            face_memo: Default::default(),
            pace: Default::default(),
            clock: Arc::new(SystemClock),
            buffer: Mutex::new(audit::Buffer::new(crate::timefmt::now())),
            batch_write: Mutex::new(()),
            dummy_hash: OnceLock::new(),
            decisions: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            fast_accepts: AtomicU64::new(0),
            fork_checks: true,
            background_flush: false,
            background_checkpoints: false,
            checkpointing: AtomicBool::new(false),
            flush_failed: AtomicBool::new(false),
            batch_ready: (Mutex::new(false), Condvar::new()),
        }
    }

    /// Like [`Gate::new`] but checks now that the database opens and is a saslgate
    /// database of a supported version.
    pub fn open(config: Config) -> crate::Result<Gate> {
        let gate = Gate::new(config);
        gate.with_store(|_| Ok(()))?;
        Ok(gate)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> Stats {
        Stats {
            slow_hashes: self.counter.verifies.load(Ordering::Relaxed),
            hashes_created: self.counter.creates.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            fast_accepts: self.fast_accepts.load(Ordering::Relaxed),
            state_reads: self.fresh.reads(),
            notice_drops: self.fresh.dropped(),
            decisions: self.decisions.load(Ordering::Relaxed),
        }
    }

    /// For a process that does not fork while the gate is alive (saslgated
    /// opens its gate after detaching): skips the per-use fork check, a
    /// `getpid()` syscall on every login.
    pub fn single_process(mut self) -> Gate {
        self.fork_checks = false;
        self
    }

    /// Lets the owner write the batched audit records and last-use stamps from
    /// its own thread: it must then call [`Gate::flush`] regularly (saslgated:
    /// every 0.1 s). Logins stop waiting for the batch writes (the writes were
    /// behind the daemon's slowest 1 % of answers). Fail-closed still holds: after a failed
    /// write, or with more than `audit::BACKGROUND_MAX` records waiting, the
    /// login that finds the batch due writes it itself and answers
    /// "unavailable" if it cannot.
    pub fn with_background_flush(mut self) -> Gate {
        self.background_flush = true;
        self
    }

    /// Leaves the database's checkpoints (copying the write-ahead log into the
    /// file, with an `fsync`) to the owner's own thread, which must then call
    /// [`Gate::checkpoint`] regularly (saslgated: every 50 ms). Without it a
    /// checkpoint runs inside whichever commit fills the log: the audit
    /// flusher's, or a login's. SQLite only.
    pub fn with_background_checkpoints(mut self) -> Gate {
        self.background_checkpoints = true;
        // Connections opened before (`Gate::open` checks one) would still
        // checkpoint on commit: the next use opens them in this mode.
        self.pool
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .close_idle();
        self
    }

    /// Reads the time from `clock` instead of the system's clocks: the
    /// tests move a [`ManualClock`] over throttle windows, expiries, TOTP
    /// steps, the pace's delays and the file watch's interval instead of
    /// sleeping. No face calls it: saslgated, the plugin and the CLI run on
    /// the system's clocks, and no setting or variable chooses another.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Gate {
        self.pace = pace::Pace::new(clock.clone());
        *self.buffer.get_mut().unwrap_or_else(|e| e.into_inner()) =
            audit::Buffer::new(clock.unix_now());
        self.clock = clock;
        self
    }

    /// Seconds since the epoch, by the gate's clock.
    fn now(&self) -> i64 {
        self.clock.unix_now()
    }

    /// Decides one login attempt. Any storage or internal error gives
    /// `Decision::Unavailable`.
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        match self.decide_with(req, None) {
            Routed::Decided(d) => d,
            // Without a stop nothing stops; fail closed all the same.
            Routed::Stopped { .. } => Decision::Unavailable {
                cause: "internal error (stopped without a stop)".into(),
            },
        }
    }

    /// [`Gate::decide`] for a face that may still have to stop a verified
    /// login (the `auth_http` face: backend on hold, no route). Everything
    /// before comes first and answers as usual: the block list, the
    /// throttle, the credential (one slow hash; the dummy one for an unknown
    /// name) and the account's policy; a wrong credential is the ordinary
    /// refusal. Only then is `stop` asked; if it stops the login, nothing is
    /// used up (TOTP step, one-time code), recorded or cached, and the face
    /// answers it (`Routed::Stopped`). A proxy ticket is still used up at
    /// the check (tickets are for backends, not for a routing face).
    pub fn decide_routed(&self, req: &Request<'_>, stop: Stop<'_>) -> Routed {
        self.decide_with(req, Some(stop))
    }

    fn decide_with(&self, req: &Request<'_>, stop: Option<Stop<'_>>) -> Routed {
        self.decisions.fetch_add(1, Ordering::Relaxed);
        let now = self.now();
        let input = match Input::parse(req, &self.config) {
            Ok(i) => i,
            Err(e) => return Routed::Decided(self.refuse_bad_input(req, &e.to_string(), now)),
        };
        let attempt = Attempt {
            gate: self,
            input: &input,
            password: req.password,
            now,
            open: std::cell::Cell::new(OpenId::NONE),
            stop,
            stopped: Default::default(),
            paced: Default::default(),
        };
        let run = || {
            self.with_open_connection(|store, open| {
                attempt.open.set(open);
                let decision = match attempt.fast_accept(store)? {
                    Some(d) => d,
                    None => in_read(store, |s| attempt.full_path(s))?,
                };
                Ok(match attempt.stopped.take() {
                    Some(account) => Routed::Stopped { account },
                    None => Routed::Decided(decision),
                })
            })
        };
        let mut result = run();
        // A paced account busy (see `pace`): its turn is waited for outside
        // any connection and transaction, then the decision is made again.
        if let Some((account, clean)) = attempt.paced.busy.take() {
            let max_wait = pace::Pace::max_wait(self.config.slowdown_max_delay);
            *attempt.paced.turn.borrow_mut() = self.pace.wait_turn(&account, clean, max_wait);
            attempt.paced.last_round.set(true);
            result = run();
        }
        result.unwrap_or_else(|e| {
            Routed::Decided(Decision::Unavailable {
                cause: e.to_string(),
            })
        })
    }

    /// Reads for a face's own needs (the `auth_http` face's routes and
    /// holds) on a pooled connection, outside a transaction: each statement
    /// sees the latest commit. Any error is the face's "unavailable".
    pub fn read<T>(
        &self,
        f: impl FnOnce(&dyn crate::store::LoginStore) -> crate::Result<T>,
    ) -> crate::Result<T> {
        self.with_connection(|store| f(store))
    }

    /// What a face keeps in memory with this gate (the `auth_http` face's
    /// route view), as it last set it. It goes with the gate (a reload opens
    /// a new one) and is dropped with the engine's own views when the file
    /// watch reopens the database or the process forks; the face tags it
    /// with the [`OpenId`] it read it on all the same.
    pub fn face_memo<T: std::any::Any + Send + Sync>(&self) -> Option<std::sync::Arc<T>> {
        self.face_memo.get()?.downcast::<T>().ok()
    }

    /// Replaces what [`Gate::face_memo`] gives.
    pub fn set_face_memo<T: std::any::Any + Send + Sync>(&self, memo: std::sync::Arc<T>) {
        self.face_memo.set(Some(memo));
    }

    /// [`Gate::read`], also telling `f` the open of the connection: what a
    /// face keeps in memory from the read is tagged with it (see
    /// [`OpenId`]), and never used with another.
    pub fn read_open<T>(
        &self,
        f: impl FnOnce(&dyn crate::store::LoginStore, OpenId) -> crate::Result<T>,
    ) -> crate::Result<T> {
        self.with_open_connection(|store, open| f(store, open))
    }

    /// Account-level policy only, no credential (the auxprop gate for mechanisms
    /// saslgate does not verify itself: GSSAPI, EXTERNAL, SCRAM...). Refuses unknown
    /// (`NoSuchAccount`) and disabled accounts, services the account may not use and
    /// throttled addresses. `req.password` is ignored.
    pub fn check_account(&self, req: &Request<'_>) -> Decision {
        let now = self.now();
        // Validated like a login; the password field is not part of this check.
        let probe = Request {
            password: b"-",
            ..*req
        };
        let input = match Input::parse(&probe, &self.config) {
            Ok(i) => i,
            Err(e) => return self.refuse_bad_input(req, &e.to_string(), now),
        };
        let attempt = Attempt {
            gate: self,
            input: &input,
            password: b"",
            now,
            open: std::cell::Cell::new(OpenId::NONE),
            stop: None,
            stopped: Default::default(),
            paced: Default::default(),
        };
        self.with_open_connection(|store, open| {
            attempt.open.set(open);
            in_read(store, |s| attempt.policy_only(s))
        })
        .unwrap_or_else(|e| Decision::Unavailable {
            cause: e.to_string(),
        })
    }
}

/// One value of any type a face keeps with the gate.
#[derive(Default)]
struct FaceMemo(Mutex<Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>>);

impl FaceMemo {
    fn get(&self) -> Option<std::sync::Arc<dyn std::any::Any + Send + Sync>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, memo: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = memo;
    }

    /// Drops it (database file replaced, process forked).
    fn clear(&self) {
        self.set(None);
    }
}

/// What [`Gate::decide_routed`] found.
#[derive(Debug)]
pub enum Routed {
    /// The decision, as [`Gate::decide`] makes it.
    Decided(Decision),
    /// The credential of `account` (canonical name) verified and the face's
    /// stop stopped it: the face answers; nothing was used up.
    Stopped { account: String },
}

impl Drop for Gate {
    fn drop(&mut self) {
        if self.lock_pool().pid == std::process::id() {
            self.flush_final();
        }
    }
}
