//! The face's sockets and threads: a few threads each blocking in `accept`
//! on one listener (TCP or UNIX), one connection at a time each, so the
//! open connections are capped by the thread count (others wait in the
//! listen queue). Per connection: the peer check, the peer's connection cap
//! (a peer, a TCP address or a UNIX user, holds at most [`peer_cap`] of the
//! threads, so the others stay free for other peers), one request head read
//! within one deadline for the whole head ([`HEAD_DEADLINE`] at most), one
//! answer, close (nginx opens a connection per login and sends `HTTP/1.0`).

use super::config::{HttpConfig, Listen};
use super::reaper::Reaper;
use super::request::{parse_head, AuthRequest, BadRequest, MAX_HEAD};
use super::response::{http_error, Answer};
use crate::daemon::log::text_into;
use crate::daemon::server::Shared;
use crate::daemon::sys;
use std::collections::HashMap;
use std::io::{self, Read};
use std::net::IpAddr;
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zeroize::Zeroize;

/// How long a blocked `accept` sleeps before looking at the stop flag.
const ACCEPT_TICK: Duration = Duration::from_millis(200);

/// The longest a client has for its whole request head (less if
/// `--timeout` is less): nginx writes it at once.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);

/// Threads one peer may hold at once: all but a quarter (at least one), so
/// that a slow or flooding peer leaves threads to the others.
pub fn peer_cap(threads: usize) -> usize {
    threads.saturating_sub((threads / 4).max(1)).max(1)
}

/// Settings from saslgated's command line.
#[derive(Debug, Clone)]
pub struct FaceSettings {
    /// Threads, which is also the cap on open connections.
    pub threads: usize,
    /// Time for a client to send its whole request head (at most
    /// [`HEAD_DEADLINE`]), and to take the answer.
    pub timeout: Duration,
    /// Most answered TCP connections the close thread holds (`reaper`):
    /// what the open-files limit leaves for it.
    pub reaper_max: usize,
    /// Least `Auth-Wait` of a refusal (`--fail-delay`).
    pub fail_delay: Duration,
    /// Group owning a UNIX socket (mode 0660); none: 0600.
    pub group: Option<u32>,
}

/// Who holds a connection, for the per-peer cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Peer {
    Address(IpAddr),
    User(u32),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Address(ip) => write!(f, "{ip}"),
            Peer::User(uid) => write!(f, "uid {uid}"),
        }
    }
}

/// Connections open per peer.
struct Peers {
    cap: usize,
    open: Mutex<HashMap<Peer, usize>>,
}

/// One connection counted against its peer until dropped.
struct Slot<'a> {
    peers: &'a Peers,
    peer: Peer,
}

impl Peers {
    /// A slot for `peer`, or `None` if it holds its cap already.
    fn take(&self, peer: Peer) -> Option<Slot<'_>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(peer).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Slot { peers: self, peer })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut open = self.peers.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(Some(t)),
            Conn::Unix(s) => s.set_read_timeout(Some(t)),
        }
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
    fn fd(&self) -> std::os::unix::io::RawFd {
        match self {
            Conn::Tcp(s) => s.as_raw_fd(),
            Conn::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// The running face; [`HttpFace::stop`] ends it.
pub struct HttpFace {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    reaper: Arc<Reaper>,
    owned_path: Option<PathBuf>,
    pub place: String,
}

impl HttpFace {
    /// Binds `listen` and starts the threads. The gate (and its
    /// `[http.backends]`) is the daemon's current one, reloads included.
    pub fn start(
        listen: &Listen,
        http: &HttpConfig,
        shared: Arc<Shared>,
        settings: FaceSettings,
    ) -> Result<HttpFace, String> {
        let (listener, owned_path) = bind(listen, settings.group)?;
        let fd = match &listener {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        };
        sys::set_recv_timeout(fd, ACCEPT_TICK).map_err(|e| format!("{listen}: {e}"))?;
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let reaper = Arc::new(
            Reaper::start(settings.reaper_max)
                .map_err(|e| format!("cannot start the http close thread: {e}"))?,
        );
        let peers = Arc::new(Peers {
            cap: peer_cap(settings.threads.max(1)),
            open: Mutex::new(HashMap::new()),
        });
        let mut threads = Vec::new();
        for i in 0..settings.threads.max(1) {
            let (listener, flag, shared) = (listener.clone(), stop.clone(), shared.clone());
            let (trusted, settings, reaper) = (http.clone(), settings.clone(), reaper.clone());
            let peers = peers.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || {
                    let face = Face {
                        shared: &shared,
                        http: &trusted,
                        settings: &settings,
                        reaper: &reaper,
                        peers: &peers,
                    };
                    accept_loop(&listener, &flag, &face)
                });
            match spawned {
                Ok(h) => threads.push(h),
                Err(e) => {
                    stop.store(true, Ordering::SeqCst);
                    for h in threads {
                        let _ = h.join();
                    }
                    if let Some(p) = &owned_path {
                        let _ = std::fs::remove_file(p);
                    }
                    return Err(format!("cannot start the http threads: {e}"));
                }
            }
        }
        Ok(HttpFace {
            stop,
            threads,
            reaper,
            owned_path,
            place: listen.to_string(),
        })
    }

    /// Stops accepting, lets the threads finish their connection, removes
    /// the socket file.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(p) = &self.owned_path {
            let _ = std::fs::remove_file(p);
        }
        for h in self.threads {
            let _ = h.join();
        }
        // The serving threads are gone, and with them the other handles.
        if let Ok(reaper) = Arc::try_unwrap(self.reaper) {
            reaper.stop();
        }
    }
}

fn bind(listen: &Listen, group: Option<u32>) -> Result<(Listener, Option<PathBuf>), String> {
    match listen {
        Listen::Tcp(addr) => TcpListener::bind(addr)
            .map(|l| (Listener::Tcp(l), None))
            .map_err(|e| format!("cannot listen on {addr}: {e}")),
        Listen::Unix(path) => {
            // A live socket means another daemon: never take it over.
            if UnixStream::connect(path).is_ok() {
                return Err(format!("{} is in use by a running server", path.display()));
            }
            match std::fs::symlink_metadata(path) {
                Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
                    let _ = std::fs::remove_file(path);
                }
                Ok(_) => return Err(format!("{} exists and is not a socket", path.display())),
                Err(_) => {}
            }
            let l = UnixListener::bind(path)
                .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
            let mode = if group.is_some() { 0o660 } else { 0o600 };
            let set = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .and_then(|()| std::os::unix::fs::chown(path, None, group));
            if let Err(e) = set {
                let _ = std::fs::remove_file(path);
                return Err(format!("{}: {e}", path.display()));
            }
            Ok((Listener::Unix(l), Some(path.clone())))
        }
    }
}

/// What a serving thread works with.
struct Face<'a> {
    shared: &'a Shared,
    http: &'a HttpConfig,
    settings: &'a FaceSettings,
    reaper: &'a Reaper,
    peers: &'a Peers,
}

fn accept_loop(listener: &Listener, stop: &AtomicBool, face: &Face<'_>) {
    let (shared, http) = (face.shared, face.http);
    let mut last_error: Option<Instant> = None;
    let mut last_cap_note: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let accepted = match listener {
            Listener::Tcp(l) => l.accept().map(|(s, peer)| {
                let trusted = http.trusts(peer.ip());
                let who = Peer::Address(peer.ip());
                (Conn::Tcp(s), trusted.then_some(who).ok_or(peer.to_string()))
            }),
            Listener::Unix(l) => l.accept().map(|(s, _)| {
                // The socket's mode and group let only nginx's group in; the
                // peer's user is what its cap counts.
                let who = sys::peer_uid(&s).map(Peer::User);
                let who = who.map_err(|e| format!("unknown user ({e})"));
                (Conn::Unix(s), who)
            }),
        };
        match accepted {
            Ok((conn, Err(peer))) => {
                shared.log.notice(&format!(
                    "face=http result=refused-peer peer={peer}: not in [http] trusted_peers"
                ));
                let _ = sys::send_nowait(conn.fd(), &http_error(403, "Forbidden"));
            }
            Ok((conn, Ok(peer))) => match face.peers.take(peer) {
                Some(_slot) => serve(conn, shared, face.settings, face.reaper),
                None => {
                    // Said at most every 10 s per thread: a flood must not
                    // flood the log too.
                    if last_cap_note.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        shared.log.notice(&format!(
                            "face=http result=refused-peer peer={peer}: over its connection cap \
                             ({} at once)",
                            face.peers.cap
                        ));
                        last_cap_note = Some(Instant::now());
                    }
                    let _ = sys::send_nowait(conn.fd(), &http_error(503, "Service Unavailable"));
                }
            },
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and friends: say so at most once a minute, back off a little.
                if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    shared.log.err(&format!("http accept failed: {e}"));
                    last_error = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// One connection: read the head (bounded in size and time), answer, close.
///
/// Fast path: nginx writes its request right after connecting, so it is
/// usually all queued: it is read with `MSG_PEEK`, answered with one send
/// that never blocks (a fresh connection's send buffer always takes the
/// < 1 KiB answer; if not, the client is dropped), and only then taken off
/// the socket. Taking it first would wake the client, asleep in `read()`
/// for the answer, for nothing (the saslauthd face does the same, see
/// server/). Slow path (a head in pieces): blocking reads under the
/// deadline.
fn serve(mut conn: Conn, shared: &Shared, settings: &FaceSettings, reaper: &Reaper) {
    let head_time = settings.timeout.min(HEAD_DEADLINE);
    let deadline = Instant::now() + head_time;
    let fd = conn.fd();
    let mut buf = [0u8; MAX_HEAD];
    let mut peeked = match sys::recv_peek(fd, &mut buf) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(_) => return,
        Ok(n) => n,
    };
    if peeked == 0 {
        peeked = match sys::wait_readable(fd, head_time) {
            Ok(true) => sys::recv_peek(fd, &mut buf).unwrap_or(0),
            _ => 0,
        };
    }
    if peeked == 0 {
        shared
            .log
            .debug("http: dropping a client that sent nothing in time");
        return;
    }
    // `used`: how much of the buffer held request bytes (wiped, not all 8 KiB).
    let (out, unread, used) = match parse_head(&buf[..peeked]) {
        Ok(None) if peeked < MAX_HEAD => {
            // Slow path: take what came (the same bytes) and read the rest.
            let len = sys::recv_nowait(fd, &mut buf[..peeked]).unwrap_or(0);
            let (out, used) = read_rest(&mut conn, &mut buf, len, deadline, shared, settings);
            (out, 0, used.max(peeked))
        }
        parsed => (respond(parsed, shared, settings), peeked, peeked),
    };
    buf[..used].zeroize();
    match out {
        Some(mut out) => {
            if !matches!(sys::send_nowait(fd, &out), Ok(n) if n == out.len()) {
                shared
                    .log
                    .debug("http: dropping a client that did not take its answer");
            }
            // It may carry a proxy ticket (Auth-Pass).
            out.zeroize();
        }
        None => shared
            .log
            .debug("http: dropping a client that sent no whole request in time"),
    }
    if unread > 0 {
        let _ = sys::recv_nowait(fd, &mut buf[..unread]);
        buf[..unread].zeroize();
    }
    if let Conn::Tcp(stream) = conn {
        reaper.close_after_peer(OwnedFd::from(stream));
    }
}

/// The slow path: `len` bytes of the head are in `buf`; blocking reads,
/// each bounded by what is left until the deadline (one deadline for the
/// whole head, however the client spreads its bytes), until the head is
/// whole. Returns the answer and how many bytes of `buf` were filled.
fn read_rest(
    conn: &mut Conn,
    buf: &mut [u8; MAX_HEAD],
    mut len: usize,
    deadline: Instant,
    shared: &Shared,
    settings: &FaceSettings,
) -> (Option<Vec<u8>>, usize) {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // A zero read timeout would mean none at all.
        if left < Duration::from_millis(1) || conn.set_read_timeout(left).is_err() {
            return (None, len);
        }
        match conn.read(&mut buf[len..]) {
            Ok(0) => return (None, len),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return (None, len),
        }
        match parse_head(&buf[..len]) {
            Ok(None) if len < MAX_HEAD => continue,
            parsed => return (respond(parsed, shared, settings), len),
        }
    }
}

/// The answer to a parsed head; `Ok(None)` here means the head filled the
/// whole buffer without ending.
fn respond(
    parsed: Result<Option<AuthRequest>, BadRequest>,
    shared: &Shared,
    settings: &FaceSettings,
) -> Option<Vec<u8>> {
    Some(match parsed {
        Ok(None) => refuse(shared, "request head over the size limit", 431),
        Ok(Some(req)) => {
            let gate = shared.gate();
            super::face::answer(&req, &gate, &shared.log, settings.fail_delay).to_bytes()
        }
        Err(BadRequest::Syntax(m)) => refuse(shared, &m, 400),
        Err(e @ BadRequest::Fields(_)) => {
            let mut line = String::from("face=http result=NO reason=bad-input");
            text_into(&mut line, "detail", &e.to_string());
            shared.log.notice(&line);
            // nginx sent it: answer in headers (protocol unknown here).
            Answer::malformed("").to_bytes()
        }
    })
}

fn refuse(shared: &Shared, why: &str, code: u16) -> Vec<u8> {
    let mut line = String::from("face=http result=refused");
    text_into(&mut line, "detail", why);
    shared.log.notice(&line);
    http_error(
        code,
        if code == 431 {
            "Request Header Fields Too Large"
        } else {
            "Bad Request"
        },
    )
}
