//! A connection's state while the reactor holds it, and the buffers that
//! carry a request: both wipe what they held.

use crate::daemon::sys;
use std::io;
use zeroize::Zeroize;

/// Stack buffer for the fast path. A request that does not fit goes the slow
/// way; libsasl2's requests are well under it. Small: it is zeroed per request.
pub(super) const FAST_BUF: usize = 512;

/// An encoded answer: the common ones are constants (no allocation per request).
pub(super) type Answer = std::borrow::Cow<'static, [u8]>;

pub(super) enum State {
    /// Receiving the request. The buffer may hold a password: wiped on drop.
    Reading { buf: WipeBuf },
    /// Refusal held back until its due time (not watched by epoll).
    Delayed { out: Answer },
    /// Answer partly written; waiting for the socket to drain.
    Writing { out: Answer, pos: usize },
}

/// Takes `unread` already-queued bytes (a request read with `MSG_PEEK`) off
/// the socket before it closes: closing a UNIX socket with unread data makes
/// the client's next read fail with ECONNRESET. Done after the answer, this
/// wakes nobody (taking them first would signal "write space" to the client
/// sleeping in read(), a useless wake-up per request). Never blocks.
pub(super) fn consume(fd: std::os::unix::io::RawFd, mut unread: usize) {
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
pub(super) struct WipeBuf(pub(super) Vec<u8>);

impl WipeBuf {
    pub(super) fn new() -> Self {
        WipeBuf(Vec::new())
    }
    pub(super) fn extend(&mut self, data: &[u8]) {
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
