//! Closes answered TCP connections after the client has closed its side.
//!
//! The side that closes a TCP connection first keeps it in TIME_WAIT for a
//! minute. nginx's kernel reuses its own TIME_WAIT entries for new loopback
//! connections (`tcp_tw_reuse`), but entries on our side would use up
//! nginx's ephemeral ports (measured: past ~28,000 logins a minute new
//! connections stalled). So we let nginx close first. Waiting for that on
//! the serving thread cost half the face's throughput at concurrency 8 and
//! 32 (the thread sat idle until nginx's process ran); instead the serving
//! thread hands the answered connection to this one thread, which closes it
//! when the client's FIN arrives, or after [`LINGER`]. Past its `max`
//! connections waiting (at most [`MAX_PENDING`], fewer when the open-files
//! limit leaves less: see [`Reaper::start`]), a connection is closed at once
//! (our TIME_WAIT is better than running out of descriptors).

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest wait, after the answer, for a client to close first.
pub const LINGER: Duration = Duration::from_secs(1);
/// Most connections waiting for their client's close.
pub const MAX_PENDING: usize = 4096;
/// How often the thread looks for expired waits and the stop flag.
const TICK_MS: u16 = 100;

struct Pending {
    epoll: Epoll,
    /// The connections waiting, by descriptor (unique while it is open: only
    /// this module closes them), with when to give up on the client.
    waiting: Mutex<HashMap<RawFd, (OwnedFd, Instant)>>,
}

/// The closing thread; [`Reaper::stop`] closes what still waits.
pub struct Reaper {
    pending: Arc<Pending>,
    /// Most connections held: counted in the daemon's descriptor budget.
    max: usize,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    /// `max`: most connections held at once (the descriptors the daemon
    /// budgets for this thread, at most [`MAX_PENDING`]).
    pub fn start(max: usize) -> std::io::Result<Reaper> {
        let pending = Arc::new(Pending {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            waiting: Mutex::new(HashMap::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (pending.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("http-close".into())
            .spawn(move || run(&p, &s))?;
        Ok(Reaper {
            pending,
            max: max.min(MAX_PENDING),
            stop,
            thread: Some(thread),
        })
    }

    /// Takes an answered connection; it is closed once the client has
    /// closed (or sent anything: nginx never does), or after [`LINGER`].
    pub fn close_after_peer(&self, conn: OwnedFd) {
        let mut waiting = self.pending.lock();
        if waiting.len() >= self.max {
            return; // dropped: closed now
        }
        let fd = conn.as_raw_fd();
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT;
        if self
            .pending
            .epoll
            .add(&conn, EpollEvent::new(flags, fd as u64))
            .is_ok()
        {
            waiting.insert(fd, (conn, Instant::now() + LINGER));
        }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.pending.lock().clear();
    }
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RawFd, (OwnedFd, Instant)>> {
        // A poisoned map only holds descriptors to close: use it anyway.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn run(pending: &Pending, stop: &AtomicBool) {
    let mut events = vec![EpollEvent::empty(); 256];
    let mut next_sweep = Instant::now() + LINGER;
    while !stop.load(Ordering::Relaxed) {
        let n = pending.epoll.wait(&mut events, TICK_MS).unwrap_or(0);
        if n > 0 {
            let mut waiting = pending.lock();
            for e in &events[..n] {
                // Removing drops the descriptor: closed, and gone from the epoll set.
                waiting.remove(&(e.data() as RawFd));
            }
        }
        let now = Instant::now();
        if now >= next_sweep {
            pending.lock().retain(|_, (_, until)| *until > now);
            next_sweep = now + Duration::from_millis(u64::from(TICK_MS));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        (client, server)
    }

    #[test]
    fn closes_when_the_client_closes_and_not_before() {
        let reaper = Reaper::start(MAX_PENDING).unwrap();
        let (mut client, mut server) = pair();
        server.write_all(b"answer").unwrap();
        reaper.close_after_peer(OwnedFd::from(server));
        assert_eq!(reaper.pending.lock().len(), 1);
        // The client still reads the answer; our side has not closed.
        let mut buf = [0u8; 6];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"answer");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(reaper.pending.lock().len(), 1, "closed before the client");
        drop(client);
        let t0 = Instant::now();
        while !reaper.pending.lock().is_empty() {
            assert!(t0.elapsed() < Duration::from_millis(500), "not closed");
            std::thread::sleep(Duration::from_millis(5));
        }
        reaper.stop();
    }

    #[test]
    fn a_client_that_never_closes_is_closed_after_the_linger() {
        let reaper = Reaper::start(MAX_PENDING).unwrap();
        let (mut client, server) = pair();
        reaper.close_after_peer(OwnedFd::from(server));
        let t0 = Instant::now();
        let mut buf = [0u8; 1];
        // EOF once our side closes.
        assert_eq!(client.read(&mut buf).unwrap(), 0);
        let waited = t0.elapsed();
        assert!(waited >= LINGER - Duration::from_millis(50), "{waited:?}");
        assert!(waited < LINGER * 2, "{waited:?}");
        reaper.stop();
    }
}
