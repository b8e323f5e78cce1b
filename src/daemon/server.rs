//! The serving core of saslgated.
//!
//! Design: one reactor thread (epoll through `mio`) owns the listening socket
//! and every connection that is still sending its request or waiting for a
//! delayed answer. It reads whatever is available, and only a complete frame
//! leaves it: the connection moves, with its parsed request, to a bounded pool
//! of decision workers (`-n`) that run `Gate::decide` (the slow hash). A worker
//! writes the answer itself when it fits at once (always, for a few bytes on a
//! fresh UNIX socket) and closes; a refusal due later, or an answer that did not
//! fit, goes back to the reactor, which keeps it on its timer heap.
//!
//! Why this shape: a client that sends half a frame costs one epoll entry and a
//! small buffer, never a thread, and is dropped at its deadline; failure delays
//! cost a timer entry, never a worker; the workers only ever hash. A thread per
//! connection would give the same guarantees, but 5,000 short connections per
//! second would mean 5,000 thread spawns, and a per-connection thread is the
//! first thing a hostile client multiplies.

use crate::daemon::log::{clean, Logger};
use crate::daemon::protocol::{self, encode_answer, Parse, WireRequest};
use crate::engine::{Decision, Gate, Request};
use crossbeam_channel::{Receiver, Sender};
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use zeroize::Zeroize;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// Tunables from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub field_limit: usize,
    pub fail_delay: Duration,
    pub timeout: Duration,
    pub max_connections: usize,
    pub workers: usize,
    /// `-r`: pass the request's realm on to the core.
    pub use_realm: bool,
}

/// State shared by the reactor, the workers and the signal thread.
pub struct Shared {
    gate: RwLock<Arc<Gate>>,
    pub log: Logger,
    pub settings: Settings,
    open: AtomicUsize,
    in_flight: AtomicUsize,
    stop: AtomicBool,
    waker: Waker,
}

impl Shared {
    pub fn gate(&self) -> Arc<Gate> {
        match self.gate.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Swaps in a new gate (SIGHUP); the old one is flushed and dropped once
    /// the decisions using it finish.
    pub fn replace_gate(&self, gate: Gate) {
        let old = {
            let mut slot = match self.gate.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            std::mem::replace(&mut *slot, Arc::new(gate))
        };
        old.flush();
    }

    /// Asks the reactor to finish in-flight requests and stop.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// Counts an open client connection; the count drops with it wherever it is
/// dropped (reactor, worker, channel), so the cap cannot leak.
struct Slot(Arc<Shared>);

impl Slot {
    fn new(shared: &Arc<Shared>) -> Slot {
        shared.open.fetch_add(1, Ordering::SeqCst);
        Slot(shared.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let before = self.0.open.fetch_sub(1, Ordering::SeqCst);
        if before >= self.0.settings.max_connections {
            let _ = self.0.waker.wake(); // the reactor may resume accepting
        }
    }
}

/// A connection and its bookkeeping, wherever it currently is.
struct Conn {
    stream: UnixStream,
    _slot: Slot,
    accepted: Instant,
}

enum State {
    /// Receiving the request. The buffer may hold a password: wiped on drop.
    Reading { buf: WipeBuf },
    /// Refusal held back until its due time (not registered with epoll).
    Delayed { out: Vec<u8> },
    /// Answer partly written; waiting for the socket to drain.
    Writing { out: Vec<u8>, pos: usize },
}

struct Entry {
    conn: Conn,
    state: State,
    deadline: Instant,
}

/// A read buffer that never leaves copies of its contents behind.
struct WipeBuf(Vec<u8>);

impl WipeBuf {
    fn new() -> Self {
        WipeBuf(Vec::with_capacity(256))
    }
    fn extend(&mut self, data: &[u8]) {
        if self.0.len() + data.len() > self.0.capacity() {
            let mut bigger =
                Vec::with_capacity((self.0.capacity() * 2).max(self.0.len() + data.len()));
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

struct Job {
    conn: Conn,
    req: WireRequest,
}

/// A connection coming back from a worker: write `out` at `due`.
struct Returned {
    conn: Conn,
    out: Vec<u8>,
    due: Instant,
}

/// Runs the daemon until SIGTERM/SIGINT (via [`Shared::request_stop`]).
pub struct Server {
    poll: Poll,
    shared: Arc<Shared>,
    listener: Option<UnixListener>,
    socket_path: Option<PathBuf>,
}

impl Server {
    pub fn new(
        listener: std::os::unix::net::UnixListener,
        socket_path: Option<PathBuf>,
        gate: Gate,
        log: Logger,
        settings: Settings,
    ) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let mut listener = UnixListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let shared = Arc::new(Shared {
            gate: RwLock::new(Arc::new(gate)),
            log,
            settings,
            open: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            waker,
        });
        Ok(Server {
            poll,
            shared,
            listener: Some(listener),
            socket_path,
        })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until asked to stop, then finishes what is in flight.
    pub fn run(mut self) -> io::Result<()> {
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
        let (ret_tx, ret_rx) = crossbeam_channel::unbounded::<Returned>();
        let mut workers = Vec::new();
        for i in 0..self.shared.settings.workers {
            let shared = self.shared.clone();
            let rx = job_rx.clone();
            let tx = ret_tx.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("decide-{i}"))
                    .spawn(move || worker(shared, rx, tx))?,
            );
        }
        drop(job_rx);
        drop(ret_tx);
        let mut reactor = Reactor {
            shared: self.shared.clone(),
            conns: HashMap::new(),
            timers: BinaryHeap::new(),
            next_token: FIRST_CONN,
            accept_pending: true,
            last_accept_error: None,
        };
        let result = reactor.serve(&mut self.poll, &mut self.listener, &job_tx, &ret_rx);

        // Shutdown: no new connections, socket file gone, in-flight finished.
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        if let Some(p) = &self.socket_path {
            let _ = std::fs::remove_file(p);
        }
        reactor.drain(&mut self.poll, &ret_rx);
        drop(job_tx);
        for w in workers {
            let _ = w.join();
        }
        // Workers are gone: anything they returned late is answered now.
        while let Ok(r) = ret_rx.try_recv() {
            let mut out = r.out;
            let _ = (&r.conn.stream).write(&out);
            out.clear();
        }
        self.shared.gate().flush();
        result
    }
}

struct Reactor {
    shared: Arc<Shared>,
    conns: HashMap<usize, Entry>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    next_token: usize,
    accept_pending: bool,
    last_accept_error: Option<Instant>,
}

impl Reactor {
    fn serve(
        &mut self,
        poll: &mut Poll,
        listener: &mut Option<UnixListener>,
        jobs: &Sender<Job>,
        returns: &Receiver<Returned>,
    ) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.next_timeout();
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_pending = true,
                    WAKER => {}
                    Token(t) => self.on_ready(poll, t, jobs),
                }
            }
            self.take_returns(poll, returns);
            if self.shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            if let Some(l) = listener.as_mut() {
                self.accept(poll, l, jobs);
            }
            self.run_timers(poll);
        }
    }

    fn next_timeout(&self) -> Option<Duration> {
        let mut t = self
            .timers
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(Instant::now()));
        if self.accept_pending
            && self.shared.open_connections() < self.shared.settings.max_connections
        {
            // An accept error (EMFILE...) left connections queued: retry soon.
            t = Some(t.map_or(Duration::from_millis(50), |d| {
                d.min(Duration::from_millis(50))
            }));
        }
        t
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

    fn accept(&mut self, poll: &mut Poll, listener: &mut UnixListener, jobs: &Sender<Job>) {
        let max = self.shared.settings.max_connections;
        while self.accept_pending && self.shared.open_connections() < max {
            match listener.accept() {
                Ok((stream, _)) => {
                    let conn = Conn {
                        stream,
                        _slot: Slot::new(&self.shared),
                        accepted: Instant::now(),
                    };
                    let t = self.token();
                    let deadline = conn.accepted + self.shared.settings.timeout;
                    let entry = Entry {
                        conn,
                        state: State::Reading {
                            buf: WipeBuf::new(),
                        },
                        deadline,
                    };
                    self.conns.insert(t, entry);
                    self.timers.push(Reverse((deadline, t)));
                    if let Some(e) = self.conns.get_mut(&t) {
                        if let Err(err) = poll.registry().register(
                            &mut e.conn.stream,
                            Token(t),
                            Interest::READABLE,
                        ) {
                            self.shared
                                .log
                                .warn(&format!("cannot watch a new connection: {err}"));
                            self.conns.remove(&t);
                            continue;
                        }
                    }
                    // The request is often there already.
                    self.on_ready(poll, t, jobs);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.accept_pending = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: leave them queued, retry shortly, log rarely.
                    let now = Instant::now();
                    if self
                        .last_accept_error
                        .map_or(true, |t| now - t > Duration::from_secs(10))
                    {
                        self.shared
                            .log
                            .err(&format!("accept failed: {e}; retrying"));
                        self.last_accept_error = Some(now);
                    }
                    return;
                }
            }
        }
    }

    fn on_ready(&mut self, poll: &mut Poll, t: usize, jobs: &Sender<Job>) {
        let Some(entry) = self.conns.get_mut(&t) else {
            return;
        };
        match &mut entry.state {
            State::Reading { buf } => {
                let limit = self.shared.settings.field_limit;
                let cap = protocol::max_frame(limit) + 1;
                let mut chunk = [0u8; 4096];
                let mut eof = false;
                let mut failed = false;
                while buf.0.len() < cap {
                    let want = (cap - buf.0.len()).min(chunk.len());
                    match (&entry.conn.stream).read(&mut chunk[..want]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => buf.extend(&chunk[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                chunk.zeroize();
                if failed {
                    self.close(poll, t);
                    return;
                }
                match protocol::parse(&buf.0, limit) {
                    Parse::NeedMore if eof => {
                        if !buf.0.is_empty() {
                            self.shared
                                .log
                                .debug("client closed in the middle of a request");
                        }
                        self.close(poll, t);
                    }
                    Parse::NeedMore => {}
                    Parse::Bad(why) => {
                        self.shared
                            .log
                            .notice(&format!("result=NO reason=bad-input detail=\"{why}\""));
                        let out = encode_answer(&format!(
                            "NO {}",
                            crate::RefuseReason::BadInput.public_text()
                        ));
                        let due = Instant::now() + self.shared.settings.fail_delay;
                        // Not read any further: stop watching it, answer at `due`.
                        let _ = poll.registry().deregister(&mut entry.conn.stream);
                        entry.state = State::Delayed { out };
                        entry.deadline = due;
                        self.timers.push(Reverse((due, t)));
                    }
                    Parse::Complete(req) => {
                        let Some(mut entry) = self.conns.remove(&t) else {
                            return;
                        };
                        let _ = poll.registry().deregister(&mut entry.conn.stream);
                        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
                        if jobs
                            .send(Job {
                                conn: entry.conn,
                                req,
                            })
                            .is_err()
                        {
                            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                }
            }
            State::Writing { .. } => self.continue_write(poll, t),
            State::Delayed { .. } => {}
        }
    }

    fn continue_write(&mut self, poll: &mut Poll, t: usize) {
        let Some(entry) = self.conns.get_mut(&t) else {
            return;
        };
        let State::Writing { out, pos } = &mut entry.state else {
            return;
        };
        loop {
            match (&entry.conn.stream).write(&out[*pos..]) {
                Ok(n) if n > 0 => {
                    *pos += n;
                    if *pos >= out.len() {
                        self.close(poll, t);
                        return;
                    }
                }
                Ok(_) => {
                    self.close(poll, t);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(poll, t);
                    return;
                }
            }
        }
    }

    /// Starts writing `out`; a remainder waits for writability until the deadline.
    fn start_write(&mut self, poll: &mut Poll, t: usize, out: Vec<u8>, registered: bool) {
        let deadline = Instant::now() + self.shared.settings.timeout;
        let Some(entry) = self.conns.get_mut(&t) else {
            return;
        };
        entry.state = State::Writing { out, pos: 0 };
        entry.deadline = deadline;
        self.timers.push(Reverse((deadline, t)));
        let interest = Interest::WRITABLE;
        let reg = if registered {
            poll.registry()
                .reregister(&mut entry.conn.stream, Token(t), interest)
        } else {
            poll.registry()
                .register(&mut entry.conn.stream, Token(t), interest)
        };
        if reg.is_err() {
            self.close(poll, t);
            return;
        }
        self.continue_write(poll, t);
    }

    fn take_returns(&mut self, poll: &mut Poll, returns: &Receiver<Returned>) {
        while let Ok(r) = returns.try_recv() {
            let t = self.token();
            let stopping = self.shared.stop.load(Ordering::SeqCst);
            let due = if stopping { Instant::now() } else { r.due };
            self.conns.insert(
                t,
                Entry {
                    conn: r.conn,
                    state: State::Delayed { out: r.out },
                    deadline: due,
                },
            );
            if due <= Instant::now() {
                self.fire(poll, t);
            } else {
                self.timers.push(Reverse((due, t)));
            }
        }
    }

    fn run_timers(&mut self, poll: &mut Poll) {
        let now = Instant::now();
        while let Some(Reverse((at, t))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let current = self.conns.get(&t).is_some_and(|e| e.deadline == at);
            if current {
                self.fire(poll, t);
            }
        }
    }

    /// The connection's deadline has come.
    fn fire(&mut self, poll: &mut Poll, t: usize) {
        let Some(entry) = self.conns.get_mut(&t) else {
            return;
        };
        match &mut entry.state {
            State::Reading { buf } => {
                self.shared.log.debug(&format!(
                    "dropping a connection that sent {} bytes, not a whole request, in {:?}",
                    buf.0.len(),
                    self.shared.settings.timeout
                ));
                self.close(poll, t);
            }
            State::Delayed { out } => {
                let out = std::mem::take(out);
                self.start_write(poll, t, out, false);
            }
            State::Writing { .. } => {
                self.shared
                    .log
                    .debug("dropping a connection that did not take its answer in time");
                self.close(poll, t);
            }
        }
    }

    fn close(&mut self, poll: &mut Poll, t: usize) {
        if let Some(mut e) = self.conns.remove(&t) {
            if !matches!(e.state, State::Delayed { .. }) {
                let _ = poll.registry().deregister(&mut e.conn.stream);
            }
        }
    }

    /// After a stop request: drop half-read connections, answer everything else
    /// now, and wait (bounded) for the workers' in-flight decisions.
    fn drain(&mut self, poll: &mut Poll, returns: &Receiver<Returned>) {
        let reading: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Reading { .. }))
            .map(|(t, _)| *t)
            .collect();
        for t in reading {
            self.close(poll, t);
        }
        let delayed: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Delayed { .. }))
            .map(|(t, _)| *t)
            .collect();
        for t in delayed {
            self.fire(poll, t);
        }
        let give_up = Instant::now() + self.shared.settings.timeout + Duration::from_secs(30);
        let mut events = Events::with_capacity(256);
        while Instant::now() < give_up {
            self.take_returns(poll, returns);
            if self.shared.in_flight.load(Ordering::SeqCst) == 0
                && self.conns.is_empty()
                && returns.is_empty()
            {
                break;
            }
            let _ = poll.poll(&mut events, Some(Duration::from_millis(20)));
            for ev in events.iter() {
                let Token(t) = ev.token();
                if t >= FIRST_CONN {
                    self.continue_write(poll, t);
                }
            }
            self.run_timers(poll);
        }
        self.conns.clear();
    }
}

fn worker(shared: Arc<Shared>, jobs: Receiver<Job>, returns: Sender<Returned>) {
    while let Ok(job) = jobs.recv() {
        let Job { conn, req } = job;
        let (out, delay) = decide(&shared, &req);
        drop(req); // wipes the password
                   // The delay counts from the connection's start, decision time included.
        let due = conn.accepted + delay;
        let mut written = false;
        if due <= Instant::now() {
            written = matches!((&conn.stream).write(&out), Ok(n) if n == out.len());
        }
        if !written {
            let _ = returns.send(Returned { conn, out, due });
            let _ = shared.waker.wake();
        } else {
            drop(conn);
        }
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs the core on one request; returns the answer and how long to hold it.
fn decide(shared: &Shared, req: &WireRequest) -> (Vec<u8>, Duration) {
    let gate = shared.gate();
    let realm = if shared.settings.use_realm {
        req.realm.as_deref()
    } else {
        None
    };
    let request = Request {
        login: &req.login,
        password: req.password.as_bytes(),
        service: &req.service,
        realm,
        client_addr: req.client_addr.as_deref(),
    };
    let decision = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| gate.decide(&request)))
        .unwrap_or_else(|_| Decision::Unavailable {
            cause: "internal error (panic in the decision)".into(),
        });
    let who = format!(
        "service={} login={}{} client={}",
        clean(&req.service),
        clean(&req.login),
        match (&req.realm, shared.settings.use_realm) {
            (Some(r), true) => format!(" realm={}", clean(r)),
            _ => String::new(),
        },
        req.client_addr
            .as_deref()
            .map_or_else(|| "-".to_string(), clean),
    );
    match decision {
        Decision::Accepted {
            account,
            credential,
        } => {
            shared.log.info(&format!(
                "{who} account={} result=OK credential={credential}",
                clean(account.as_bytes())
            ));
            (encode_answer("OK"), Duration::ZERO)
        }
        Decision::Refused {
            reason,
            detail,
            delay,
            ..
        } => {
            shared.log.notice(&format!(
                "{who} result=NO reason={} detail=\"{}\"",
                reason.name(),
                clean_detail(&detail)
            ));
            (
                encode_answer(&format!("NO {}", reason.public_text())),
                delay.max(shared.settings.fail_delay),
            )
        }
        Decision::Unavailable { cause } => {
            shared.log.err(&format!(
                "{who} result=NO reason=unavailable cause=\"{}\"",
                clean_detail(&cause)
            ));
            (encode_answer("NO unavailable"), Duration::ZERO)
        }
    }
}

fn clean_detail(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() || c == '"' { ' ' } else { c })
        .take(200)
        .collect()
}
