//! Logging: syslog (facility auth) through the `/dev/log` datagram socket, or
//! stderr under `-d`. One line per decision; callers never pass secrets.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

const RETRY: Duration = Duration::from_secs(5);

const FACILITY_AUTH: u8 = 4;

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
}

pub struct Logger {
    /// `None`: stderr.
    syslog: Option<Syslog>,
    debug: bool,
    /// `saslgated[PID]: `, the start of every line.
    tag: String,
}

const DEV_LOG: &str = "/dev/log";

impl Logger {
    /// `stderr`: log to stderr (with debug lines when `debug`); otherwise to
    /// syslog, falling back to stderr when no syslog daemon listens.
    pub fn new(stderr: bool, debug: bool) -> Logger {
        let syslog = if stderr {
            None
        } else {
            let sock = connect();
            let syslog = Syslog {
                failed_at: AtomicU64::new(0),
                base: Instant::now(),
                sock: RwLock::new(None),
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
        }
    }

    pub fn debug_enabled(&self) -> bool {
        self.debug
    }

    pub fn log(&self, level: Level, msg: &str) {
        if level == Level::Debug && !self.debug {
            return;
        }
        // Lines are built by hand, not with format!: one allocation per line on
        // the path of every decision.
        if let Some(syslog) = &self.syslog {
            if syslog.available() {
                let mut line = String::with_capacity(self.tag.len() + msg.len() + 5);
                line.push('<');
                line.push_str(&(FACILITY_AUTH * 8 + level as u8).to_string());
                line.push('>');
                line.push_str(&self.tag);
                line.push_str(msg);
                if syslog.send(line.as_bytes()) {
                    return;
                }
            }
        }
        // One write per line: stderr is unbuffered, and a line written in pieces
        // costs a syscall per piece and can interleave with another worker's.
        let mut line = String::with_capacity(self.tag.len() + msg.len() + 1);
        line.push_str(&self.tag);
        line.push_str(msg);
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
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
        *sock = connect();
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

fn connect() -> Option<UnixDatagram> {
    let sock = UnixDatagram::unbound().ok()?;
    sock.connect(DEV_LOG).ok()?;
    Some(sock)
}

/// Printable, bounded form of untrusted bytes (login names, services,
/// addresses) for a log line: no control characters, no quotes, at most 64 chars.
pub fn clean(bytes: &[u8]) -> String {
    let mut out = String::new();
    clean_into(&mut out, bytes);
    out
}

/// [`clean`], appended to `out`.
pub fn clean_into(out: &mut String, bytes: &[u8]) {
    let start = out.len();
    for (n, ch) in String::from_utf8_lossy(bytes).chars().enumerate() {
        if n >= 64 {
            out.push_str("...");
            break;
        }
        if ch.is_control() || ch == '"' || ch == '\\' {
            out.push_str(&format!("\\x{:02x}", ch as u32 & 0xff));
        } else {
            out.push(ch);
        }
    }
    if out.len() == start {
        out.push('-');
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clean_escapes() {
        assert_eq!(super::clean(b"ali\nce\""), "ali\\x0ace\\x22");
        assert_eq!(super::clean(b""), "-");
        assert_eq!(super::clean(&[b'a'; 100]).len(), 67);
    }
}
