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

use crate::daemon::log::{display_into, escape_text_into, text_into, value_into, Logger};
use crate::daemon::protocol::{self, encode_answer, Parse, WireRequest};
use crate::daemon::sys;
use crate::engine::{Credential, Decision, Gate, Request};
use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token, Waker};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener as StdListener, UnixStream as StdStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};
use zeroize::Zeroize;

const WAKER: Token = Token(0);
const FIRST_CONN: usize = 1;
/// How often the audit-flush thread writes the gate's batched records.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How long a blocked `accept4` sleeps before looking at the stop flag and
/// for a reloaded configuration (`SO_RCVTIMEO` on the listener).
const ACCEPT_TICK: Duration = Duration::from_millis(200);
/// How long an acceptor waits for the first bytes of a connection that has
/// sent nothing yet: libsasl2 writes right after `connect`, so a well-behaved
/// client is usually there within microseconds; waiting is much cheaper than
/// handing it to the reactor.
const FIRST_BYTES_WAIT: Duration = Duration::from_millis(2);
/// Above this many connections held by the reactor, acceptors no longer wait
/// for first bytes (someone is opening idle connections): straight to the reactor.
const SLOW_WAIT_LIMIT: usize = 8;
/// Stack buffer for the fast path. A request that does not fit goes the slow
/// way; libsasl2's requests are well under it. Small: it is zeroed per request.
const FAST_BUF: usize = 512;

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
    gate: RwLock<Arc<Gate>>,
    /// Bumped on every reload: acceptors keep their own `Arc<Gate>` and look
    /// at this (one uncontended load) instead of taking the lock per request.
    gate_generation: AtomicU64,
    pub log: Logger,
    pub settings: Settings,
    /// Open client connections (both paths), for the cap.
    open: AtomicUsize,
    /// Connections handed to the reactor and not yet closed.
    slow: AtomicUsize,
    stop: AtomicBool,
    /// Set once the acceptors have returned: the reactor may finish.
    acceptors_done: AtomicBool,
    below_cap: (Mutex<()>, Condvar),
    handoff: Mutex<Vec<Handoff>>,
    reactor_waker: Waker,
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
    fn reserve(&self) -> bool {
        let before = self.open.fetch_add(1, Ordering::SeqCst);
        if before >= self.settings.max_connections {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Gives a place back; wakes acceptors waiting at the cap.
    fn release(&self) {
        let before = self.open.fetch_sub(1, Ordering::SeqCst);
        if before >= self.settings.max_connections {
            let _g = self.below_cap.0.lock();
            self.below_cap.1.notify_all();
        }
    }

    fn wait_below_cap(&self) {
        let g = self.below_cap.0.lock().unwrap_or_else(|p| p.into_inner());
        if self.open_connections() >= self.settings.max_connections
            && !self.stop.load(Ordering::SeqCst)
        {
            let _ = self.below_cap.1.wait_timeout(g, Duration::from_millis(50));
        }
    }

    /// Gives a connection to the reactor.
    fn hand_off(self: &Arc<Self>, h: Handoff) {
        self.handoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(h);
        let _ = self.reactor_waker.wake();
    }
}

/// A connection's place under the cap, and in the reactor's count; both are
/// given back when it drops.
struct Slot(Arc<Shared>);

impl Slot {
    /// Takes over a place the acceptor reserved.
    fn adopt(shared: &Arc<Shared>) -> Slot {
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
struct Handoff {
    stream: StdStream,
    slot: Slot,
    accepted: Instant,
    state: State,
    deadline: Instant,
    unread: usize,
}

enum State {
    /// Receiving the request. The buffer may hold a password: wiped on drop.
    Reading { buf: WipeBuf },
    /// Refusal held back until its due time (not watched by epoll).
    Delayed { out: Vec<u8> },
    /// Answer partly written; waiting for the socket to drain.
    Writing { out: Vec<u8>, pos: usize },
}

struct Entry {
    stream: UnixStream,
    _slot: Slot,
    accepted: Instant,
    state: State,
    deadline: Instant,
    registered: bool,
    /// Bytes of the request read with `MSG_PEEK` and not yet consumed; taken
    /// off the socket when the connection ends (see [`consume`]).
    unread: usize,
}

impl Drop for Entry {
    fn drop(&mut self) {
        consume(self.stream.as_raw_fd(), self.unread);
    }
}

/// Takes `unread` already-queued bytes (a request read with `MSG_PEEK`) off
/// the socket before it closes: closing a UNIX socket with unread data makes
/// the client's next read fail with ECONNRESET. Done after the answer, this
/// wakes nobody (taking them first would signal "write space" to the client
/// sleeping in read(), a useless wake-up per request). Never blocks.
fn consume(fd: std::os::unix::io::RawFd, mut unread: usize) {
    let mut scratch = [0u8; FAST_BUF];
    let mut used = 0;
    while unread > 0 {
        let want = unread.min(scratch.len());
        match sys::recv_nowait(fd, &mut scratch[..want]) {
            Ok(n) if n > 0 => {
                unread -= n;
                used = used.max(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => break,
        }
    }
    scratch[..used].zeroize();
}

/// A read buffer that leaves no copies of its contents behind.
struct WipeBuf(Vec<u8>);

impl WipeBuf {
    fn new() -> Self {
        WipeBuf(Vec::new())
    }
    fn extend(&mut self, data: &[u8]) {
        if self.0.len() + data.len() > self.0.capacity() {
            let want = (self.0.capacity() * 2)
                .max(self.0.len() + data.len())
                .max(256);
            let mut bigger = Vec::with_capacity(want);
            bigger.extend_from_slice(&self.0);
            self.0.zeroize();
            self.0 = bigger;
        }
        self.0.extend_from_slice(data);
    }
}

impl Drop for WipeBuf {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

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
        let mut reactor = Reactor {
            poll: self.poll,
            shared: self.shared.clone(),
            conns: HashMap::new(),
            timers: BinaryHeap::new(),
            next_token: FIRST_CONN,
        };
        let mut threads: Vec<(String, Box<dyn FnOnce() + Send>)> = Vec::new();
        for i in 0..self.shared.settings.workers.max(1) {
            let (shared, listener) = (self.shared.clone(), self.listener.clone());
            threads.push((
                format!("acceptor-{i}"),
                Box::new(move || accept_loop(&shared, &listener)),
            ));
        }
        let n_acceptors = threads.len();
        threads.push(("reactor".into(), Box::new(move || reactor.run())));
        // The gate is made `with_background_flush` (mod.rs): audit batches are
        // written here, not while a client waits.
        let shared = self.shared.clone();
        let flusher = move || {
            while !shared.stop.load(Ordering::SeqCst) {
                std::thread::sleep(FLUSH_EVERY);
                shared.gate().flush();
            }
        };
        threads.push(("audit-flush".into(), Box::new(flusher)));
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
    }
}

/// An acceptor's own handle on the current gate, refreshed after a reload.
struct GateCache {
    generation: u64,
    gate: Arc<Gate>,
}

impl GateCache {
    fn refresh(&mut self, shared: &Shared) {
        let g = shared.gate_generation.load(Ordering::Acquire);
        if g != self.generation {
            self.gate = shared.gate();
            self.generation = g;
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &StdListener) {
    let mut gate = GateCache {
        generation: shared.gate_generation.load(Ordering::Acquire),
        gate: shared.gate(),
    };
    let mut last_error: Option<Instant> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        // Also after every tick: an idle acceptor lets go of a replaced gate.
        gate.refresh(shared);
        if !shared.reserve() {
            shared.wait_below_cap();
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                // A reload may have come while this acceptor slept in accept.
                gate.refresh(shared);
                serve(shared, &gate.gate, stream)
            }
            Err(e) => {
                shared.release();
                match e.kind() {
                    io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::Interrupted
                    | io::ErrorKind::ConnectionAborted => {}
                    _ => {
                        // EMFILE/ENFILE/ENOBUFS: leave them queued, retry shortly, log rarely.
                        let now = Instant::now();
                        if last_error.is_none_or(|t| now - t > Duration::from_secs(10)) {
                            shared.log.err(&format!("accept failed: {e}; retrying"));
                        }
                        last_error = Some(now);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }
    }
}

/// The fast path: one accepted connection, on the acceptor's thread. The place
/// reserved under the cap is given back here or passed on with the connection.
fn serve(shared: &Arc<Shared>, gate: &Arc<Gate>, stream: StdStream) {
    let accepted = Instant::now();
    let fd = stream.as_raw_fd();
    let limit = shared.settings.field_limit;
    let mut buf = [0u8; FAST_BUF];
    let mut waited = false;
    let to_reactor = |stream: StdStream, state: State, deadline: Instant, unread: usize| {
        let slot = Slot::adopt(shared);
        shared.hand_off(Handoff {
            stream,
            slot,
            accepted,
            state,
            deadline,
            unread,
        });
    };
    let reading = || State::Reading {
        buf: WipeBuf::new(),
    };
    let read_deadline = accepted + shared.settings.timeout;
    loop {
        match sys::recv_peek(fd, &mut buf) {
            // End of file before a whole request: nothing to answer.
            Ok(0) => break,
            Ok(n) if n < buf.len() => {
                let parsed = protocol::parse(&buf[..n], limit);
                buf[..n].zeroize();
                match parsed {
                    Parse::Complete(req) => {
                        answer_fast(shared, gate, stream, accepted, req, n);
                        return;
                    }
                    // Part of a request, or a bad one: the reactor reads it
                    // (consuming) and answers or drops it as before.
                    _ => {
                        to_reactor(stream, reading(), read_deadline, 0);
                        return;
                    }
                }
            }
            // As big as the buffer: maybe more behind it.
            Ok(_) => {
                buf.zeroize();
                to_reactor(stream, reading(), read_deadline, 0);
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if waited || shared.slow.load(Ordering::Relaxed) >= SLOW_WAIT_LIMIT {
                    to_reactor(stream, reading(), read_deadline, 0);
                    return;
                }
                waited = true;
                let _ = sys::wait_readable(fd, FIRST_BYTES_WAIT);
            }
            Err(_) => break,
        }
    }
    drop(stream);
    shared.release();
}

/// Decides a complete request on the acceptor and answers it, unless the
/// answer must wait (failure delay) or does not fit: then the reactor does.
fn answer_fast(
    shared: &Arc<Shared>,
    gate: &Gate,
    stream: StdStream,
    accepted: Instant,
    req: WireRequest,
    unread: usize,
) {
    let (out, delay) = if shared.settings.noop {
        (encode_answer("OK"), Duration::ZERO)
    } else {
        decide(shared, gate, &req)
    };
    drop(req); // wipes the password
    let fd = stream.as_raw_fd();
    if !delay.is_zero() && !shared.stop.load(Ordering::Relaxed) {
        // The delay counts from the connection's start, decision time included.
        let due = accepted + delay;
        if due > Instant::now() {
            let slot = Slot::adopt(shared);
            shared.hand_off(Handoff {
                stream,
                slot,
                accepted,
                state: State::Delayed { out },
                deadline: due,
                unread,
            });
            return;
        }
    }
    match sys::send_nowait(fd, &out) {
        Ok(n) if n == out.len() => {}
        Ok(n) => {
            let slot = Slot::adopt(shared);
            let deadline = Instant::now() + shared.settings.timeout;
            shared.hand_off(Handoff {
                stream,
                slot,
                accepted,
                state: State::Writing { out, pos: n },
                deadline,
                unread,
            });
            return;
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            let slot = Slot::adopt(shared);
            let deadline = Instant::now() + shared.settings.timeout;
            shared.hand_off(Handoff {
                stream,
                slot,
                accepted,
                state: State::Writing { out, pos: 0 },
                deadline,
                unread,
            });
            return;
        }
        Err(_) => {}
    }
    consume(fd, unread);
    drop(stream);
    shared.release();
}

/// The slow path: connections handed over by the acceptors.
struct Reactor {
    poll: Poll,
    shared: Arc<Shared>,
    conns: HashMap<usize, Entry>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    next_token: usize,
}

impl Reactor {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let stopping = self.shared.stop.load(Ordering::SeqCst);
            if stopping {
                self.drain_step();
                // Looked at, not taken: a connection handed over just now
                // must still be answered, not dropped here.
                if self.shared.acceptors_done.load(Ordering::SeqCst)
                    && self.conns.is_empty()
                    && self
                        .shared
                        .handoff
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .is_empty()
                {
                    break;
                }
            }
            let mut timeout = self
                .timers
                .peek()
                .map(|Reverse((at, _))| at.saturating_duration_since(Instant::now()));
            if stopping {
                timeout = Some(timeout.map_or(Duration::from_millis(50), |d| {
                    d.min(Duration::from_millis(50))
                }));
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.shared
                        .log
                        .err(&format!("epoll failed: {e}; reactor stopping"));
                    break;
                }
                continue;
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => self.adopt_handoffs(),
                    Token(t) => self.on_ready(t),
                }
            }
            self.run_timers();
        }
    }

    fn take_handoffs(&self) -> Vec<Handoff> {
        std::mem::take(
            &mut *self
                .shared
                .handoff
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    fn adopt_handoffs(&mut self) {
        for h in self.take_handoffs() {
            let t = self.token();
            if h.stream.set_nonblocking(true).is_err() {
                continue; // dropped: closed, place given back
            }
            let entry = Entry {
                stream: UnixStream::from_std(h.stream),
                _slot: h.slot,
                accepted: h.accepted,
                state: h.state,
                deadline: h.deadline,
                registered: false,
                unread: h.unread,
            };
            let (deadline, interest) = match entry.state {
                State::Reading { .. } => (entry.deadline, Some(Interest::READABLE)),
                State::Delayed { .. } => (entry.deadline, None),
                State::Writing { .. } => (entry.deadline, Some(Interest::WRITABLE)),
            };
            self.conns.insert(t, entry);
            if let Some(interest) = interest {
                let Some(e) = self.conns.get_mut(&t) else {
                    continue;
                };
                if let Err(err) = self
                    .poll
                    .registry()
                    .register(&mut e.stream, Token(t), interest)
                {
                    self.shared
                        .log
                        .warn(&format!("cannot watch a connection: {err}"));
                    self.conns.remove(&t);
                    continue;
                }
                e.registered = true;
            }
            self.timers.push(Reverse((deadline, t)));
            // Bytes may have come meanwhile (edge-triggered: look now).
            if interest.is_some() {
                self.on_ready(t);
            }
        }
    }

    fn token(&mut self) -> usize {
        loop {
            let t = self.next_token;
            self.next_token = if t == usize::MAX { FIRST_CONN } else { t + 1 };
            if !self.conns.contains_key(&t) {
                return t;
            }
        }
    }

    fn on_ready(&mut self, t: usize) {
        let Some(entry) = self.conns.get_mut(&t) else {
            return;
        };
        if let State::Writing { .. } = entry.state {
            self.continue_write(t);
            return;
        }
        let State::Reading { buf } = &mut entry.state else {
            return;
        };
        let limit = self.shared.settings.field_limit;
        let cap = protocol::max_frame(limit) + 1;
        let mut chunk = [0u8; 4096];
        let mut used = 0;
        let mut eof = false;
        let mut failed = false;
        while buf.0.len() < cap {
            let want = (cap - buf.0.len()).min(chunk.len());
            match (&entry.stream).read(&mut chunk[..want]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    used = used.max(n);
                    buf.extend(&chunk[..n]);
                    // A UNIX stream read returns everything queued up to the size
                    // asked for, so a short read means nothing more is waiting:
                    // the same answer a further read's EAGAIN would give.
                    if n < want {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        chunk[..used].zeroize();
        if failed {
            self.close(t);
            return;
        }
        match protocol::parse(&buf.0, limit) {
            Parse::NeedMore if eof => {
                if !buf.0.is_empty() {
                    self.shared
                        .log
                        .debug("client closed in the middle of a request");
                }
                self.close(t);
            }
            Parse::NeedMore => {}
            Parse::Bad(why) => {
                let mut line = String::from("result=NO reason=bad-input");
                text_into(&mut line, "detail", &why.to_string());
                self.shared.log.notice(&line);
                let out = encode_answer(&format!(
                    "NO {}",
                    crate::RefuseReason::BadInput.public_text()
                ));
                let due = entry.accepted + self.shared.settings.fail_delay;
                self.answer(t, out, due);
            }
            Parse::Complete(req) => {
                // Clear the read buffer now: the request owns the password.
                *buf = WipeBuf::new();
                let accepted = entry.accepted;
                let (out, delay) = if self.shared.settings.noop {
                    (encode_answer("OK"), Duration::ZERO)
                } else {
                    decide(&self.shared, &self.shared.gate(), &req)
                };
                drop(req); // wipes the password
                           // The delay counts from the connection's start, decision time included.
                self.answer(t, out, accepted + delay);
            }
        }
    }

    /// Answers now (closing when it all fits) or at `due`.
    fn answer(&mut self, t: usize, out: Vec<u8>, due: Instant) {
        let Some(entry) = self.conns.get_mut(&t) else {
            return;
        };
        let stopping = self.shared.stop.load(Ordering::Relaxed);
        if due > Instant::now() && !stopping {
            if entry.registered {
                let _ = self.poll.registry().deregister(&mut entry.stream);
                entry.registered = false;
            }
            entry.state = State::Delayed { out };
            entry.deadline = due;
            self.timers.push(Reverse((due, t)));
            return;
        }
        if matches!((&entry.stream).write(&out), Ok(n) if n == out.len()) {
            self.close(t);
            return;
        }
        self.start_write(t, out, 0);
    }

    /// Writes what did not fit at once, waiting for writability until the deadline.
    fn start_write(&mut self, t: usize, out: Vec<u8>, pos: usize) {
        let deadline = Instant::now() + self.shared.settings.timeout;
        let Some(entry) = self.conns.get_mut(&t) else {
            return;
        };
        entry.state = State::Writing { out, pos };
        entry.deadline = deadline;
        self.timers.push(Reverse((deadline, t)));
        let reg = if entry.registered {
            self.poll
                .registry()
                .reregister(&mut entry.stream, Token(t), Interest::WRITABLE)
        } else {
            self.poll
                .registry()
                .register(&mut entry.stream, Token(t), Interest::WRITABLE)
        };
        if reg.is_err() {
            self.close(t);
            return;
        }
        entry.registered = true;
        self.continue_write(t);
    }

    fn continue_write(&mut self, t: usize) {
        let Some(entry) = self.conns.get_mut(&t) else {
            return;
        };
        let State::Writing { out, pos } = &mut entry.state else {
            return;
        };
        loop {
            match (&entry.stream).write(&out[*pos..]) {
                Ok(n) if n > 0 => {
                    *pos += n;
                    if *pos >= out.len() {
                        self.close(t);
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => {
                    self.close(t);
                    return;
                }
            }
        }
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, t))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.conns.get(&t).is_some_and(|e| e.deadline == at) {
                self.fire(t);
            }
        }
    }

    /// The connection's deadline has come.
    fn fire(&mut self, t: usize) {
        let Some(entry) = self.conns.get_mut(&t) else {
            return;
        };
        match &mut entry.state {
            State::Reading { buf } => {
                self.shared.log.debug(&format!(
                    "dropping a connection that sent {} bytes, not a whole request, within {:?}",
                    buf.0.len(),
                    self.shared.settings.timeout
                ));
                self.close(t);
            }
            State::Delayed { out } => {
                let out = std::mem::take(out);
                match (&entry.stream).write(&out) {
                    Ok(n) if n == out.len() => self.close(t),
                    Ok(n) => self.start_write(t, out, n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.start_write(t, out, 0),
                    Err(_) => self.close(t),
                }
            }
            State::Writing { .. } => {
                self.shared
                    .log
                    .debug("dropping a connection that did not take its answer in time");
                self.close(t);
            }
        }
    }

    fn close(&mut self, t: usize) {
        if let Some(mut e) = self.conns.remove(&t) {
            if e.registered {
                let _ = self.poll.registry().deregister(&mut e.stream);
            }
        }
    }

    /// While stopping: take what the acceptors still hand over, drop half-read
    /// connections, send held-back answers now; slow readers keep their deadline.
    fn drain_step(&mut self) {
        self.adopt_handoffs();
        let tokens: Vec<usize> = self.conns.keys().copied().collect();
        for t in tokens {
            match self.conns.get(&t).map(|e| &e.state) {
                Some(State::Reading { .. }) => self.close(t),
                Some(State::Delayed { .. }) => self.fire(t),
                _ => {}
            }
        }
    }
}

/// Runs the core on one request; returns the answer and how long to hold it.
fn decide(shared: &Shared, gate: &Gate, req: &WireRequest) -> (Vec<u8>, Duration) {
    // The realm always goes to the core, which decides what it means
    // (`login@realm`, plain `login` only for its configured local realms):
    // dropping it here would let `alice` + realm `other.org` log in as `alice`.
    let request = Request {
        login: &req.login,
        password: req.password.as_bytes(),
        service: &req.service,
        realm: req.realm.as_deref(),
        client_addr: req.client_addr.as_deref(),
    };
    let decision = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| gate.decide(&request)))
        .unwrap_or_else(|_| Decision::Unavailable {
            cause: "internal error (panic in the decision)".into(),
        });
    match decision {
        Decision::Accepted {
            account,
            credential,
        } => {
            // Fixed fields first, then what the client sent, each quoted and
            // escaped (log.rs): no value can end its field or start another.
            let mut line = String::with_capacity(192);
            line.push_str("result=OK");
            value_into(&mut line, "account", account.as_bytes());
            credential_into(&mut line, &credential);
            request_fields(&mut line, req);
            shared.log.info(&line);
            (encode_answer("OK"), Duration::ZERO)
        }
        Decision::Refused {
            reason,
            detail,
            delay,
            ..
        } => {
            let mut line = String::with_capacity(224);
            line.push_str("result=NO reason=");
            line.push_str(reason.name());
            text_into(&mut line, "detail", &detail);
            request_fields(&mut line, req);
            shared.log.notice(&line);
            (
                encode_answer(&format!("NO {}", reason.public_text())),
                delay.max(shared.settings.fail_delay),
            )
        }
        Decision::Unavailable { cause } => {
            let mut line = String::with_capacity(224);
            line.push_str("result=NO reason=unavailable");
            text_into(&mut line, "cause", &cause);
            request_fields(&mut line, req);
            shared.log.err(&line);
            (encode_answer("NO unavailable"), Duration::ZERO)
        }
    }
}

/// ` credential="..."` without the formatting machinery (every success).
fn credential_into(line: &mut String, credential: &Credential) {
    let fixed = match credential {
        Credential::Master => "master",
        Credential::MasterAndTotp => "master+totp",
        Credential::MasterAndCode => "master+code",
        Credential::PolicyOnly => "policy-only",
        Credential::AppPassword { id, label } => {
            // The label is the admin's text: escaped like any other value.
            line.push_str(" credential=\"app-password ");
            push_i64(line, *id);
            line.push_str(" (");
            escape_text_into(line, label);
            line.push_str(")\"");
            return;
        }
        #[allow(unreachable_patterns)]
        other => return display_into(line, "credential", other),
    };
    line.push_str(" credential=\"");
    line.push_str(fixed);
    line.push('"');
}

/// Decimal digits of `n` (no formatting machinery).
fn push_i64(line: &mut String, n: i64) {
    let mut buf = [0u8; 20];
    let mut start = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        start -= 1;
        buf[start] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        line.push('-');
    }
    line.push_str(std::str::from_utf8(&buf[start..]).unwrap_or("?"));
}

/// The request's own fields, after the fixed ones; the login, the most
/// likely to be hostile, last.
fn request_fields(line: &mut String, req: &WireRequest) {
    value_into(line, "service", &req.service);
    value_into(line, "realm", req.realm.as_deref().unwrap_or_default());
    value_into(
        line,
        "client",
        req.client_addr.as_deref().unwrap_or_default(),
    );
    value_into(line, "login", &req.login);
}
