//! The fast path: acceptor threads blocking in `accept4`, answering complete
//! requests on the same thread and handing everything else to the reactor.

use super::answer::{decide, Verdict, OK};
use super::conn::{consume, Answer, State, WipeBuf, FAST_BUF};
use super::shared::{Handoff, Shared, Slot};
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
/// handing it to the reactor.
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
                shared.serving.fetch_add(1, Ordering::Relaxed);
                serve(shared, &gate.gate, stream);
                shared.serving.fetch_sub(1, Ordering::Relaxed);
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
    let mut yielded = false;
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
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if waited || shared.slow.load(Ordering::Relaxed) >= SLOW_WAIT_LIMIT {
                    to_reactor(stream, reading(), read_deadline, 0);
                    return;
                }
                // `accept4` returns at the client's `connect`, often a moment
                // before its request. With no other connection in progress,
                // let the client run first (it is often waiting for this very
                // CPU): that usually spares the poll below and a sleep and
                // wake-up of this thread. Under load a yield would let other
                // requests' work run first, which showed in their p99.
                if !yielded && shared.serving.load(Ordering::Relaxed) <= 1 {
                    yielded = true;
                    std::thread::yield_now();
                    continue;
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
        (Answer::Borrowed(OK), Duration::ZERO, None)
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
