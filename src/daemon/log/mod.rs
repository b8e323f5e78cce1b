//! Logging: syslog (facility auth) through the `/dev/log` datagram socket, or
//! stderr under `-d`. One line per decision; callers never pass secrets.
//!
//! While the daemon serves (not under `-d`), lines are batched: a decision
//! appends its line to a buffer and the audit-flush thread sends the buffer
//! every 100 ms with one system call (`sendmmsg` to syslog, one `write` to
//! stderr), or the thread whose line fills it does. A system call per line was
//! a sixth of the syscalls of every login (issue 15), and a slow syslog daemon
//! now holds up the flusher, not the logins. The cost: a line reaches the log
//! up to 100 ms after its decision (the audit trail has the same delay).

mod fields;

pub use fields::{clean, display_into, escape_text_into, text_into, value_into};

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

const RETRY: Duration = Duration::from_secs(5);

/// `<PRI>` of facility auth (4) at each level, indexed by the level's number:
/// 4 × 8 + level.
const PRIORITY: [&str; 8] = [
    "<32>", "<33>", "<34>", "<35>", "<36>", "<37>", "<38>", "<39>",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Err = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

/// The `/dev/log` socket, shared by the workers. Sending on a datagram socket
/// needs no lock of ours: the hot path takes only a read lock (no waiting
/// between workers); reconnecting takes the write lock.
struct Syslog {
    sock: RwLock<Option<UnixDatagram>>,
    /// Last failed connect, in ms after `base` plus one (0: none). Retried at
    /// most every few seconds, so that a host without a syslog daemon does not
    /// pay two failing syscalls per line. Atomic: checked on every line.
    failed_at: AtomicU64,
    base: Instant,
    /// `/dev/log`, or a test's socket.
    path: std::path::PathBuf,
}

pub struct Logger {
    /// `None`: stderr.
    syslog: Option<Syslog>,
    debug: bool,
    /// `saslgated[PID]: `, the start of every line.
    tag: String,
    /// Set while lines are batched ([`Logger::start_batching`]).
    batching: AtomicBool,
    /// Lines waiting for the next flush.
    pending: Mutex<Pending>,
    /// Held while a batch is sent: batches go out whole and in order.
    sending: Mutex<()>,
    /// Lines lost because the batch was at its limit.
    dropped: AtomicU64,
}

/// A batch of lines, each `tag message\n`, with its level.
#[derive(Default)]
struct Pending {
    text: Vec<u8>,
    /// Where each line ends in `text` (after its newline), and its level.
    lines: Vec<(usize, Level)>,
}

/// A batch this big is sent by the thread that filled it, without waiting
/// for the flusher (about 300 decision lines).
const BATCH_BYTES: usize = 64 * 1024;
/// A batch this big (the log cannot keep up) takes no more lines until it is
/// sent: lines are dropped and counted rather than memory grown without end.
const BATCH_MAX_BYTES: usize = 4 * 1024 * 1024;
/// `sendmmsg` takes at most this many datagrams per call (Linux's UIO_MAXIOV
/// is 1024).
const DATAGRAMS_PER_CALL: usize = 256;

const DEV_LOG: &str = "/dev/log";

/// Writes whole lines to fd 2 without `Stderr`'s lock: acceptors logging at
/// the same moment waited on that lock (a futex call every other request
/// under load). One `write` per line, or per batch (batches are sent one at a
/// time): a write of at most `PIPE_BUF` bytes is not interleaved with another
/// thread's, and lines written at once (`-d`) are short.
fn write_stderr(mut bytes: &[u8]) {
    use std::os::fd::AsFd;
    let stderr = std::io::stderr();
    while !bytes.is_empty() {
        match nix::unistd::write(stderr.as_fd(), bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

impl Logger {
    /// `stderr`: log to stderr (with debug lines when `debug`); otherwise to
    /// syslog, falling back to stderr when no syslog daemon listens.
    pub fn new(stderr: bool, debug: bool) -> Logger {
        Logger::with_syslog_path(stderr, debug, DEV_LOG.as_ref())
    }

    /// [`Logger::new`] with another syslog socket than `/dev/log` (tests).
    fn with_syslog_path(stderr: bool, debug: bool, path: &std::path::Path) -> Logger {
        let syslog = if stderr {
            None
        } else {
            let sock = connect(path);
            let syslog = Syslog {
                failed_at: AtomicU64::new(0),
                base: Instant::now(),
                sock: RwLock::new(None),
                path: path.to_owned(),
            };
            if sock.is_none() {
                syslog.mark_failed();
            }
            *syslog.sock.write().unwrap_or_else(|p| p.into_inner()) = sock;
            Some(syslog)
        };
        Logger {
            syslog,
            debug,
            tag: format!("saslgated[{}]: ", std::process::id()),
            batching: AtomicBool::new(false),
            pending: Mutex::new(Pending::default()),
            sending: Mutex::new(()),
            dropped: AtomicU64::new(0),
        }
    }

    /// From now on lines wait for [`Logger::flush`] (the daemon's flusher
    /// calls it every 100 ms). Not under `-d`: there each line is written as
    /// it comes, for the admin watching.
    pub fn start_batching(&self) {
        if !self.debug {
            self.batching.store(true, Ordering::SeqCst);
        }
    }

    /// Back to one write per line, after sending what waits.
    pub fn stop_batching(&self) {
        self.batching.store(false, Ordering::SeqCst);
        self.flush();
    }

    /// Sends the lines waiting in the batch.
    pub fn flush(&self) {
        self.flush_locked(self.sending.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn flush_locked(&self, _sending: std::sync::MutexGuard<'_, ()>) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let line =
                format!("{dropped} log lines dropped: the log did not take them fast enough");
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.text.extend_from_slice(self.tag.as_bytes());
            pending.text.extend_from_slice(line.as_bytes());
            pending.text.push(b'\n');
            let end = pending.text.len();
            pending.lines.push((end, Level::Warning));
        }
        let mut batch =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if batch.lines.is_empty() {
            return;
        }
        self.send_batch(&batch);
        // Give the buffers back for the next batch (no allocation per flush).
        batch.text.clear();
        batch.lines.clear();
        if batch.text.capacity() <= 2 * BATCH_BYTES {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.lines.is_empty() && pending.text.capacity() < batch.text.capacity() {
                *pending = batch;
            }
        }
    }

    /// Appends a line to the batch; sends the batch when it is full. False
    /// when not batching.
    fn batch_line(&self, level: Level, msg: &str) -> bool {
        if !self.batching.load(Ordering::Relaxed) {
            return false;
        }
        let full = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.text.len() >= BATCH_MAX_BYTES {
                // The log is stuck: this line is lost, and said so later.
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            pending.text.extend_from_slice(self.tag.as_bytes());
            pending.text.extend_from_slice(msg.as_bytes());
            pending.text.push(b'\n');
            let end = pending.text.len();
            pending.lines.push((end, level));
            end >= BATCH_BYTES
        };
        // Sent here only if no other thread is sending (a slow syslog daemon
        // must not hold up decisions): otherwise the next flush takes it.
        if full {
            if let Ok(sending) = self.sending.try_lock() {
                self.flush_locked(sending);
            }
        }
        true
    }

    /// One batch to syslog (a datagram per line, many per system call), or
    /// what syslog does not take to stderr in one write.
    fn send_batch(&self, batch: &Pending) {
        let mut first = 0; // the first line not yet sent
        if let Some(syslog) = &self.syslog {
            let mut start = 0; // where line `first` starts in `text`
            while first < batch.lines.len() && syslog.available() {
                let upto = (first + DATAGRAMS_PER_CALL).min(batch.lines.len());
                let mut msgs = Vec::with_capacity(upto - first);
                let mut from = start;
                for &(end, level) in &batch.lines[first..upto] {
                    // Without the newline: one datagram is one message.
                    msgs.push([
                        std::io::IoSlice::new(PRIORITY[level as usize].as_bytes()),
                        std::io::IoSlice::new(&batch.text[from..end - 1]),
                    ]);
                    from = end;
                }
                let sent = syslog.send_many(&msgs);
                if sent == 0 {
                    break;
                }
                first += sent;
                start = batch.lines[first - 1].0;
            }
            if first == batch.lines.len() {
                return;
            }
        }
        let start = if first == 0 {
            0
        } else {
            batch.lines[first - 1].0
        };
        write_stderr(&batch.text[start..]);
    }

    pub fn debug_enabled(&self) -> bool {
        self.debug
    }

    pub fn log(&self, level: Level, msg: &str) {
        if level == Level::Debug && !self.debug {
            return;
        }
        if self.batch_line(level, msg) {
            return;
        }
        // Built in a buffer each thread keeps: no allocation on the path of
        // every decision.
        thread_local! {
            static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut line) => self.send_now(&mut line, level, msg),
            // Logging while logging (a panic inside): a buffer of its own.
            Err(_) => self.send_now(&mut String::new(), level, msg),
        });
    }

    /// Sends one line at once, built in `line`: to syslog, else to stderr.
    fn send_now(&self, line: &mut String, level: Level, msg: &str) {
        line.clear();
        if let Some(syslog) = &self.syslog {
            if syslog.available() {
                line.push_str(PRIORITY[level as usize]);
                line.push_str(&self.tag);
                line.push_str(msg);
                if syslog.send(line.as_bytes()) {
                    return;
                }
                line.clear();
            }
        }
        // One write per line: stderr is unbuffered, and a line written in
        // pieces costs a syscall per piece and can interleave with another
        // thread's.
        line.push_str(&self.tag);
        line.push_str(msg);
        line.push('\n');
        write_stderr(line.as_bytes());
    }

    pub fn info(&self, msg: &str) {
        self.log(Level::Info, msg)
    }
    pub fn notice(&self, msg: &str) {
        self.log(Level::Notice, msg)
    }
    pub fn warn(&self, msg: &str) {
        self.log(Level::Warning, msg)
    }
    pub fn err(&self, msg: &str) {
        self.log(Level::Err, msg)
    }
    pub fn debug(&self, msg: &str) {
        self.log(Level::Debug, msg)
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Syslog {
    /// Whether a line may get through (connected, or time to retry): saves
    /// building a syslog line on a host without a syslog daemon.
    fn available(&self) -> bool {
        let connected = self
            .sock
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        connected || !self.failed_recently()
    }

    /// Sends one line; false when no syslog daemon takes it (the caller falls
    /// back to stderr).
    fn send(&self, line: &[u8]) -> bool {
        {
            let sock = self.sock.read().unwrap_or_else(|p| p.into_inner());
            match sock.as_ref() {
                Some(s) if s.send(line).is_ok() => return true,
                Some(_) => {} // syslog daemon restarted: reconnect below
                None if self.failed_recently() => return false,
                None => {}
            }
        }
        let mut sock = self.sock.write().unwrap_or_else(|p| p.into_inner());
        *sock = connect(&self.path);
        if let Some(s) = sock.as_ref() {
            if s.send(line).is_ok() {
                self.failed_at.store(0, Ordering::Relaxed);
                return true;
            }
        }
        *sock = None;
        self.mark_failed();
        false
    }

    /// Sends datagrams, as many as one `sendmmsg` takes; reconnects once when
    /// the syslog daemon went away. Returns how many were sent (0: none, the
    /// caller falls back to stderr).
    fn send_many(&self, msgs: &[[std::io::IoSlice<'_>; 2]]) -> usize {
        {
            let sock = self.sock.read().unwrap_or_else(|p| p.into_inner());
            match sock.as_ref() {
                Some(s) => match super::sys::send_datagrams(s, msgs) {
                    Ok(n) if n > 0 => return n,
                    _ => {} // syslog daemon restarted: reconnect below
                },
                None if self.failed_recently() => return 0,
                None => {}
            }
        }
        let mut sock = self.sock.write().unwrap_or_else(|p| p.into_inner());
        *sock = connect(&self.path);
        if let Some(s) = sock.as_ref() {
            if let Ok(n) = super::sys::send_datagrams(s, msgs) {
                if n > 0 {
                    self.failed_at.store(0, Ordering::Relaxed);
                    return n;
                }
            }
        }
        *sock = None;
        self.mark_failed();
        0
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn mark_failed(&self) {
        self.failed_at.store(self.now_ms() + 1, Ordering::Relaxed);
    }

    fn failed_recently(&self) -> bool {
        let at = self.failed_at.load(Ordering::Relaxed);
        at != 0 && self.now_ms() + 1 - at < RETRY.as_millis() as u64
    }
}

fn connect(path: &std::path::Path) -> Option<UnixDatagram> {
    let sock = UnixDatagram::unbound().ok()?;
    sock.connect(path).ok()?;
    Some(sock)
}

#[cfg(test)]
mod tests {
    use super::{Level, Logger};
    use std::os::unix::net::UnixDatagram;

    /// A fake syslog daemon: what the logger sends, one datagram a message.
    fn fake_syslog() -> (tempfile::TempDir, UnixDatagram) {
        let dir = tempfile::tempdir().unwrap();
        let sock = UnixDatagram::bind(dir.path().join("log")).unwrap();
        sock.set_nonblocking(true).unwrap();
        (dir, sock)
    }

    fn received(sock: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn batched_lines_wait_for_the_flush_and_keep_order_and_level() {
        let (dir, syslog) = fake_syslog();
        let log = Logger::with_syslog_path(false, false, &dir.path().join("log"));
        log.info("before batching");
        assert_eq!(received(&syslog).len(), 1, "unbatched: sent at once");
        log.start_batching();
        log.info("result=OK one");
        log.notice("result=NO two");
        log.err("three");
        log.debug("not shown without -d");
        assert!(
            received(&syslog).is_empty(),
            "batched: nothing before the flush"
        );
        log.flush();
        let got = received(&syslog);
        let tag = format!("saslgated[{}]: ", std::process::id());
        assert_eq!(
            got,
            vec![
                format!("<38>{tag}result=OK one"),
                format!("<37>{tag}result=NO two"),
                format!("<35>{tag}three"),
            ]
        );
        log.warn("last");
        log.stop_batching();
        assert_eq!(received(&syslog), vec![format!("<36>{tag}last")]);
        log.info("after");
        assert_eq!(received(&syslog).len(), 1, "unbatched again");
    }

    #[test]
    fn a_full_batch_is_sent_without_waiting_for_the_flusher() {
        let (dir, syslog) = fake_syslog();
        let log = Logger::with_syslog_path(false, false, &dir.path().join("log"));
        log.start_batching();
        let line = "x".repeat(1000);
        // The line that brings the batch to BATCH_BYTES sends it.
        let per_line = format!("saslgated[{}]: ", std::process::id()).len() + line.len() + 1;
        let want = super::BATCH_BYTES.div_ceil(per_line);
        // A datagram socket queues only a few messages: read while sending.
        syslog.set_nonblocking(false).unwrap();
        syslog
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while got.len() < want {
                match syslog.recv(&mut buf) {
                    Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(_) => break,
                }
            }
            got
        });
        for _ in 0..want {
            log.info(&line);
        }
        // No flush called: the line that filled the batch sent it, more
        // lines than one sendmmsg call carries, in order.
        let got = reader.join().unwrap();
        assert_eq!(got.len(), want);
        assert!(got
            .iter()
            .all(|l| l.ends_with(&line) && l.starts_with("<38>")));
    }

    #[test]
    fn priorities_are_facility_auth_at_each_level() {
        for level in [
            Level::Err,
            Level::Warning,
            Level::Notice,
            Level::Info,
            Level::Debug,
        ] {
            const FACILITY_AUTH: u8 = 4;
            let pri = FACILITY_AUTH * 8 + level as u8;
            assert_eq!(super::PRIORITY[level as usize], format!("<{pri}>"));
        }
    }

    #[test]
    fn debug_mode_is_never_batched() {
        let (dir, syslog) = fake_syslog();
        let log = Logger::with_syslog_path(false, true, &dir.path().join("log"));
        log.start_batching();
        log.info("at once");
        assert_eq!(received(&syslog).len(), 1);
    }
}
