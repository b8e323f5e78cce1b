//! The slow path: one epoll loop (through `mio`) for the connections the
//! acceptors hand over (partial requests, held-back refusals, answers the
//! socket did not take at once), each with its deadline.

use super::answer::decide;
use super::conn::{consume, Answer, State, WipeBuf};
use super::shared::{Handoff, Shared, Slot};
use crate::daemon::answers::Outcome;
use crate::daemon::log::text_into;
use crate::daemon::protocol::{self, Parse};
use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroize;

/// The token of the waker that says "connections handed over".
pub(super) const WAKER: Token = Token(0);
const FIRST_CONN: usize = 1;

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

/// The slow path: connections handed over by the acceptors.
pub(super) struct Reactor {
    poll: Poll,
    shared: Arc<Shared>,
    conns: HashMap<usize, Entry>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    next_token: usize,
}

impl Reactor {
    pub(super) fn new(poll: Poll, shared: Arc<Shared>) -> Reactor {
        Reactor {
            poll,
            shared,
            conns: HashMap::new(),
            timers: BinaryHeap::new(),
            next_token: FIRST_CONN,
        }
    }

    pub(super) fn run(&mut self) {
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
                let out =
                    Answer::Borrowed(Outcome::Refused(crate::RefuseReason::BadInput).answer());
                let due = entry.accepted + self.shared.settings.fail_delay;
                self.answer(t, out, due);
            }
            Parse::Complete(req) => {
                let accepted = entry.accepted;
                let (out, delay) = if self.shared.settings.noop {
                    (Answer::Borrowed(Outcome::Accepted.answer()), Duration::ZERO)
                } else {
                    let (out, delay, verdict) = decide(&self.shared, &self.shared.gate(), &req);
                    verdict.log(&self.shared, &req);
                    (out, delay)
                };
                // The request (and its password) was read from the buffer: wipe it.
                *buf = WipeBuf::new();
                // The delay counts from the connection's start, decision time included.
                self.answer(t, out, accepted + delay);
            }
        }
    }

    /// Answers now (closing when it all fits) or at `due`.
    fn answer(&mut self, t: usize, out: Answer, due: Instant) {
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
    fn start_write(&mut self, t: usize, out: Answer, pos: usize) {
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
