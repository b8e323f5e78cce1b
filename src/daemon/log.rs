//! Logging: syslog (facility auth) through the `/dev/log` datagram socket, or
//! stderr under `-d`. One line per decision; callers never pass secrets.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;
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

struct Syslog {
    sock: Option<UnixDatagram>,
    /// Last failed connect: retried at most every few seconds, so that a host
    /// without a syslog daemon does not pay two failing syscalls per line.
    failed_at: Option<Instant>,
}

pub struct Logger {
    /// `None`: stderr.
    syslog: Option<Mutex<Syslog>>,
    debug: bool,
    pid: u32,
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
            let failed_at = sock.is_none().then(Instant::now);
            Some(Mutex::new(Syslog { sock, failed_at }))
        };
        Logger {
            syslog,
            debug,
            pid: std::process::id(),
        }
    }

    pub fn debug_enabled(&self) -> bool {
        self.debug
    }

    pub fn log(&self, level: Level, msg: &str) {
        if level == Level::Debug && !self.debug {
            return;
        }
        if let Some(slot) = &self.syslog {
            let line = format!(
                "<{}>saslgated[{}]: {}",
                FACILITY_AUTH * 8 + level as u8,
                self.pid,
                msg
            );
            let mut guard = match slot.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if let Some(sock) = guard.sock.as_ref() {
                if sock.send(line.as_bytes()).is_ok() {
                    return;
                }
                guard.sock = None; // syslog daemon restarted: reconnect below
                guard.failed_at = None;
            }
            if guard.failed_at.map_or(true, |t| t.elapsed() >= RETRY) {
                guard.sock = connect();
                if let Some(sock) = guard.sock.as_ref() {
                    if sock.send(line.as_bytes()).is_ok() {
                        guard.failed_at = None;
                        return;
                    }
                }
                guard.sock = None;
                guard.failed_at = Some(Instant::now());
            }
        }
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "saslgated[{}]: {}", self.pid, msg);
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

fn connect() -> Option<UnixDatagram> {
    let sock = UnixDatagram::unbound().ok()?;
    sock.connect(DEV_LOG).ok()?;
    Some(sock)
}

/// Printable, bounded form of untrusted bytes (login names, services,
/// addresses) for a log line: no control characters, no quotes, at most 64 chars.
pub fn clean(bytes: &[u8]) -> String {
    let mut out = String::new();
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
    if out.is_empty() {
        out.push('-');
    }
    out
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
