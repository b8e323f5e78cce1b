//! The serving core of saslgated.
//!
//! Design: `-n N` worker threads, each an event loop (epoll through `mio`) that
//! owns its own connections. All of them watch the one listening socket with
//! `EPOLLEXCLUSIVE`, so the kernel wakes one idle worker per new connection. A
//! worker reads whatever a connection has sent; only when a complete frame is
//! there does it run `Gate::decide` (possibly a slow hash) and answer, on the
//! same thread.
//!
//! Why this shape:
//! - A client that sends half a frame costs an epoll entry and a small buffer,
//!   never a thread; it is dropped at its deadline (`--timeout`, counted from
//!   accept, so dribbling bytes does not extend it).
//! - Failure delays are timer entries on the worker's heap, never a sleeping
//!   thread; the worker hashes for other clients meanwhile.
//! - Hashing is bounded by N: a busy worker is not in `epoll_wait`, so new
//!   connections go to idle workers or wait in the listen queue.
//! - A request never crosses threads. A first version handed complete frames
//!   from one reactor thread to a worker pool; on these 2-core machines the
//!   extra wake-up per request cost over 40% of the CPU (scheduler), so the
//!   reactor and the worker became one.
//!
//! The cost: a connection whose frame arrives while its worker is hashing for
//! another client waits for that hash (at most one bcrypt, ~50 ms at cost 10).

use crate::daemon::log::{display_into, text_into, value_into, Logger};
use crate::daemon::protocol::{self, encode_answer, Parse, WireRequest};
use crate::daemon::sys;
use crate::engine::{Decision, Gate, Request};
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use zeroize::Zeroize;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;
/// Connections one worker accepts per wake-up. One: a worker about to hash
/// must not sit on queued connections an idle worker could serve (the listener
/// is level-triggered, so what is left wakes another worker).
const ACCEPT_BATCH: usize = 1;
/// How often the audit-flush thread writes the gate's batched records.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Tunables from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub field_limit: usize,
    pub fail_delay: Duration,
    pub timeout: Duration,
    pub max_connections: usize,
    pub workers: usize,
}

/// State shared by the workers and the main (signal) thread.
pub struct Shared {
    gate: RwLock<Arc<Gate>>,
    pub log: Logger,
    pub settings: Settings,
    open: AtomicUsize,
    stop: AtomicBool,
    wakers: Vec<Waker>,
}

impl Shared {
    pub fn gate(&self) -> Arc<Gate> {
        match self.gate.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Swaps in a new gate (SIGHUP); the old one is flushed, and dropped once
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

    /// Asks the workers to finish in-flight requests and stop.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake_all();
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn wake_all(&self) {
        for w in &self.wakers {
            let _ = w.wake();
        }
    }
}

/// Counts an open client connection; the count drops with it.
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
            self.0.wake_all(); // paused workers may accept again
        }
    }
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
    /// off the socket when the connection ends (see [`Worker::try_peeked`]).
    unread: usize,
}

impl Drop for Entry {
    fn drop(&mut self) {
        // Consume the peeked request before the socket closes: closing a UNIX
        // socket with unread data makes the client's next read fail with
        // ECONNRESET. They are queued already, so this never blocks.
        if self.unread == 0 {
            return;
        }
        let mut scratch = [0u8; 4096];
        let mut used = 0;
        while self.unread > 0 {
            let want = self.unread.min(scratch.len());
            match (&self.stream).read(&mut scratch[..want]) {
                Ok(n) if n > 0 => {
                    self.unread -= n;
                    used = used.max(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => break,
            }
        }
        // Only what was written to: wiping all 4 KiB costs more than the read.
        scratch[..used].zeroize();
    }
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

/// The daemon: workers over one listening socket.
pub struct Server {
    shared: Arc<Shared>,
    polls: Vec<Poll>,
    listener: Arc<UnixListener>,
}

impl Server {
    pub fn new(
        listener: std::os::unix::net::UnixListener,
        gate: Gate,
        log: Logger,
        settings: Settings,
    ) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let listener = Arc::new(UnixListener::from_std(listener));
        let mut polls = Vec::new();
        let mut wakers = Vec::new();
        for _ in 0..settings.workers.max(1) {
            let poll = Poll::new()?;
            wakers.push(Waker::new(poll.registry(), WAKER)?);
            sys::epoll_add_exclusive(poll.as_raw_fd(), listener.as_raw_fd(), LISTENER.0 as u64)?;
            polls.push(poll);
        }
        let shared = Arc::new(Shared {
            gate: RwLock::new(Arc::new(gate)),
            log,
            settings,
            open: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            wakers,
        });
        Ok(Server {
            shared,
            polls,
            listener,
        })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Starts the workers and the audit flusher; [`Running::wait`] returns once
    /// they have stopped.
    pub fn start(self) -> io::Result<Running> {
        let mut threads: Vec<(String, Box<dyn FnOnce() + Send>)> = Vec::new();
        for (i, poll) in self.polls.into_iter().enumerate() {
            let mut worker = Worker {
                poll,
                shared: self.shared.clone(),
                listener: self.listener.clone(),
                listening: true,
                conns: HashMap::new(),
                timers: BinaryHeap::new(),
                next_token: FIRST_CONN,
                last_accept_error: None,
            };
            threads.push((format!("worker-{i}"), Box::new(move || worker.run())));
        }
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
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(Running {
            shared: self.shared,
            handles,
        })
    }
}

pub struct Running {
    shared: Arc<Shared>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Waits for the workers (after [`Shared::request_stop`]), then flushes.
    pub fn wait(self) {
        for h in self.handles {
            if h.join().is_err() {
                self.shared.log.err("a worker thread panicked");
            }
        }
        self.shared.gate().flush();
    }
}

struct Worker {
    poll: Poll,
    shared: Arc<Shared>,
    listener: Arc<UnixListener>,
    /// Whether the listener is in this worker's epoll set (off at the cap).
    listening: bool,
    conns: HashMap<usize, Entry>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    next_token: usize,
    last_accept_error: Option<Instant>,
}

impl Worker {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                break;
            }
            self.update_listening();
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.shared
                        .log
                        .err(&format!("epoll failed: {e}; worker stopping"));
                    break;
                }
                continue;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) => self.on_ready(t),
                }
            }
            self.run_timers();
        }
        self.drain();
    }

    /// Pauses accepting at the connection cap, resumes below it.
    fn update_listening(&mut self) {
        let below = self.shared.open_connections() < self.shared.settings.max_connections;
        if below != self.listening {
            let (epfd, lfd) = (self.poll.as_raw_fd(), self.listener.as_raw_fd());
            let done = if below {
                sys::epoll_add_exclusive(epfd, lfd, LISTENER.0 as u64)
            } else {
                sys::epoll_del(epfd, lfd)
            };
            match done {
                Ok(()) => self.listening = below,
                Err(e) => self
                    .shared
                    .log
                    .err(&format!("cannot change listening state: {e}")),
            }
        }
    }

    fn next_timeout(&self) -> Option<Duration> {
        let mut t = self
            .timers
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(Instant::now()));
        if !self.listening
            || self
                .last_accept_error
                .is_some_and(|e| e.elapsed() < Duration::from_secs(1))
        {
            // Paused at the cap, or accept failed (EMFILE...): look again soon.
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

    fn accept(&mut self) {
        let max = self.shared.settings.max_connections;
        for _ in 0..ACCEPT_BATCH {
            if self.shared.open_connections() >= max || self.shared.stop.load(Ordering::Relaxed) {
                return;
            }
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let accepted = Instant::now();
                    let deadline = accepted + self.shared.settings.timeout;
                    let t = self.token();
                    let entry = Entry {
                        stream,
                        _slot: Slot::new(&self.shared),
                        accepted,
                        state: State::Reading {
                            buf: WipeBuf::new(),
                        },
                        deadline,
                        registered: false,
                        unread: 0,
                    };
                    self.conns.insert(t, entry);
                    // The request is usually there already: no epoll round trip then.
                    self.on_ready(t);
                    if let Some(e) = self.conns.get_mut(&t) {
                        if !e.registered {
                            let r = self.poll.registry().register(
                                &mut e.stream,
                                Token(t),
                                Interest::READABLE,
                            );
                            if let Err(err) = r {
                                self.shared
                                    .log
                                    .warn(&format!("cannot watch a new connection: {err}"));
                                self.conns.remove(&t);
                                continue;
                            }
                            e.registered = true;
                        }
                        self.timers.push(Reverse((e.deadline, t)));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
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
                    }
                    self.last_accept_error = Some(now);
                    return;
                }
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
        if buf.0.is_empty() && self.try_peeked(t) {
            return;
        }
        let Some(entry) = self.conns.get_mut(&t) else {
            return;
        };
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
                self.respond(t, accepted, req);
            }
        }
    }

    /// The usual case: the whole request is already queued. Reads it with
    /// `MSG_PEEK`, answers, and leaves consuming it to the end of the
    /// connection. Why: taking the request off the socket signals "write space"
    /// to the client, which sleeps in read() on that socket's wait queue, so a
    /// consuming read costs the client a spurious wake-up (a context switch and
    /// usually an inter-processor interrupt) per request; after the answer has
    /// woken it, consuming wakes nobody. Returns false when the request is not
    /// complete yet: the caller reads (consumes) as usual.
    fn try_peeked(&mut self, t: usize) -> bool {
        let Some(entry) = self.conns.get_mut(&t) else {
            return false;
        };
        let limit = self.shared.settings.field_limit;
        let mut chunk = [0u8; 4096];
        let peeked = sys::recv_peek(entry.stream.as_raw_fd(), &mut chunk);
        let copied = *peeked.as_ref().unwrap_or(&0);
        let parsed = match peeked {
            // A full chunk may have more behind it: the consuming path decides.
            Ok(n) if n > 0 && n < chunk.len() => match protocol::parse(&chunk[..n], limit) {
                Parse::Complete(req) => Some((n, req)),
                _ => None,
            },
            _ => None,
        };
        let copied = copied.min(chunk.len());
        chunk[..copied].zeroize();
        let Some((n, req)) = parsed else {
            return false;
        };
        entry.unread = n;
        let accepted = entry.accepted;
        self.respond(t, accepted, req);
        true
    }

    /// Decides a complete request and answers it, now or after its delay.
    fn respond(&mut self, t: usize, accepted: Instant, req: WireRequest) {
        let (out, delay) = decide(&self.shared, &req);
        drop(req); // wipes the password
                   // The delay counts from the connection's start, decision time included.
        self.answer(t, out, accepted + delay);
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
            // Closing the socket also takes it out of the epoll set.
            self.conns.remove(&t);
            return;
        }
        self.start_write(t, out);
    }

    /// Writes what did not fit at once, waiting for writability until the deadline.
    fn start_write(&mut self, t: usize, out: Vec<u8>) {
        let deadline = Instant::now() + self.shared.settings.timeout;
        let Some(entry) = self.conns.get_mut(&t) else {
            return;
        };
        entry.state = State::Writing { out, pos: 0 };
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
                if matches!((&entry.stream).write(&out), Ok(n) if n == out.len()) {
                    self.close(t);
                } else {
                    self.start_write(t, out);
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

    /// After a stop request: stop accepting, drop half-read connections, send
    /// the held-back answers now, and give slow readers until their deadline.
    fn drain(&mut self) {
        if self.listening {
            let _ = sys::epoll_del(self.poll.as_raw_fd(), self.listener.as_raw_fd());
            self.listening = false;
        }
        let tokens: Vec<usize> = self.conns.keys().copied().collect();
        for t in tokens {
            match self.conns.get(&t).map(|e| &e.state) {
                Some(State::Reading { .. }) => self.close(t),
                Some(State::Delayed { .. }) => self.fire(t),
                _ => {}
            }
        }
        let mut events = Events::with_capacity(64);
        while !self.conns.is_empty() {
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(50)));
            let ready: Vec<usize> = events
                .iter()
                .map(|e| e.token().0)
                .filter(|t| *t >= FIRST_CONN)
                .collect();
            for t in ready {
                self.continue_write(t);
            }
            self.run_timers();
        }
    }
}

/// Runs the core on one request; returns the answer and how long to hold it.
fn decide(shared: &Shared, req: &WireRequest) -> (Vec<u8>, Duration) {
    let gate = shared.gate();
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
            display_into(&mut line, "credential", &credential);
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

/// The request's own fields, after the fixed ones; the login, the most
/// likely to be hostile, last.
fn request_fields(line: &mut String, req: &WireRequest) {
    value_into(line, "service", &req.service);
    value_into(line, "realm", req.realm.as_deref().unwrap_or_default());
    value_into(line, "client", req.client_addr.as_deref().unwrap_or_default());
    value_into(line, "login", &req.login);
}
