//! The fast path: acceptor threads blocking in `accept4`, answering complete
//! requests on the same thread and handing everything else to the reactor.

use super::answer::{decide, Verdict};
use super::conn::{consume, Answer, State, WipeBuf, FAST_BUF};
use super::shared::{Handoff, Shared, Slot};
use crate::daemon::answers::Outcome;
use crate::daemon::protocol::{self, Parse, WireRequest};
use crate::daemon::sys;
use crate::engine::Gate;
use std::io;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener as StdListener, UnixStream as StdStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroize;

/// How long an acceptor waits for the first bytes of a connection that has
/// sent nothing yet: libsasl2 writes right after `connect`, so a well-behaved
/// client is usually there within microseconds; waiting is much cheaper than
/// handing it to the reactor. The wait is a blocking `MSG_PEEK` bounded by
/// `SO_RCVTIMEO`: one system call, asleep only while nothing is there, and
/// woken by the client's write itself. (Measured on 2 cores at concurrency 1,
/// a C server doing only this reached 1.1x one doing a blocking `read` as
/// stock saslauthd does, and 1.25x one that peeked without blocking and then
/// yielded or polled, which was saslgated's way before.)
const FIRST_BYTES_WAIT: Duration = Duration::from_millis(2);
/// Above this many connections held by the reactor, acceptors no longer wait
/// for first bytes (someone is opening idle connections): straight to the reactor.
const SLOW_WAIT_LIMIT: usize = 8;

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

pub(super) fn accept_loop(shared: &Arc<Shared>, listener: &StdListener) {
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
        match sys::accept_stream(listener) {
            Ok(stream) => {
                // A reload may have come while this acceptor slept in accept.
                gate.refresh(shared);
                serve(shared, &gate.gate, stream);
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
    // Wait for the first bytes only while few idle connections are about
    // (else someone is opening them on purpose: straight to the reactor).
    let may_wait = shared.slow.load(Ordering::Relaxed) < SLOW_WAIT_LIMIT;
    // Set once the bound is set (`SO_RCVTIMEO`): from then on peeks block.
    let mut waiting = false;
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
        let peeked = if waiting {
            sys::recv_peek_wait(fd, &mut buf)
        } else {
            sys::recv_peek(fd, &mut buf)
        };
        match peeked {
            // End of file before a whole request: nothing to answer.
            Ok(0) => break,
            Ok(n) if n < buf.len() => {
                let incomplete = match protocol::parse(&buf[..n], limit) {
                    Parse::Complete(req) => {
                        answer_fast(shared, gate, stream, accepted, &req, n);
                        None
                    }
                    _ => Some(stream),
                };
                // The request (and its password) was read from here.
                buf[..n].zeroize();
                if let Some(stream) = incomplete {
                    // Part of a request, or a bad one: the reactor reads it
                    // (consuming) and answers or drops it as before.
                    to_reactor(stream, reading(), read_deadline, 0);
                }
                return;
            }
            // As big as the buffer: maybe more behind it.
            Ok(_) => {
                buf.zeroize();
                to_reactor(stream, reading(), read_deadline, 0);
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !waiting => {}
            // A signal: wait on, but not past the first-bytes bound.
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    && accepted.elapsed() < FIRST_BYTES_WAIT => {}
            // Not there yet: wait, bounded (set only now, as under load the
            // request is nearly always there at the first look).
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    && !waiting
                    && may_wait
                    && sys::set_recv_timeout(fd, FIRST_BYTES_WAIT).is_ok() =>
            {
                waiting = true;
            }
            // Nothing within the bound (or no waiting now): the reactor waits
            // on with the connection's full timeout.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                to_reactor(stream, reading(), read_deadline, 0);
                return;
            }
            Err(_) => break,
        }
    }
    drop(stream);
    shared.release();
}

/// Decides a complete request on the acceptor and answers it, unless the
/// answer must wait (failure delay) or does not fit: then the reactor does.
/// The log line is written after the answer is sent: the client does not
/// wait for it.
fn answer_fast(
    shared: &Arc<Shared>,
    gate: &Gate,
    stream: StdStream,
    accepted: Instant,
    req: &WireRequest<'_>,
    unread: usize,
) {
    let (out, delay, verdict) = if shared.settings.noop {
        (
            Answer::Borrowed(Outcome::Accepted.answer()),
            Duration::ZERO,
            None,
        )
    } else {
        let (out, delay, verdict) = decide(shared, gate, req);
        (out, delay, Some(verdict))
    };
    let log = |verdict: Option<Verdict>| {
        if let Some(v) = verdict {
            v.log(shared, req);
        }
    };
    let fd = stream.as_raw_fd();
    if !delay.is_zero() && !shared.stop.load(Ordering::Relaxed) {
        // The delay counts from the connection's start, decision time included.
        let due = accepted + delay;
        if due > Instant::now() {
            log(verdict);
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
    let sent = sys::send_nowait(fd, &out);
    log(verdict);
    match sent {
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
