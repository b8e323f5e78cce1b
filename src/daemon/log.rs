//! Logging: syslog (facility auth) through the `/dev/log` datagram socket, or
//! stderr under `-d`. One line per decision; callers never pass secrets.

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

/// Writes a whole line to fd 2 without `Stderr`'s lock: acceptors logging at
/// the same moment waited on that lock (a futex call every other request
/// under load). One `write` per line, as before: a line of at most
/// `PIPE_BUF` bytes is not interleaved with another thread's.
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
        // Built in a buffer each thread keeps: no allocation on the path of
        // every decision.
        thread_local! {
            static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        LINE.with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return self.log_uncached(level, msg);
            };
            line.clear();
            if let Some(syslog) = &self.syslog {
                if syslog.available() {
                    line.push('<');
                    push_u8(&mut line, FACILITY_AUTH * 8 + level as u8);
                    line.push('>');
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
        });
    }

    /// [`Logger::log`] without the thread's buffer (a panic while logging).
    fn log_uncached(&self, level: Level, msg: &str) {
        let mut line = String::new();
        if let Some(syslog) = &self.syslog {
            line.push('<');
            push_u8(&mut line, FACILITY_AUTH * 8 + level as u8);
            line.push('>');
            line.push_str(&self.tag);
            line.push_str(msg);
            if syslog.available() && syslog.send(line.as_bytes()) {
                return;
            }
            line.clear();
        }
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

/// Printable, bounded form of untrusted bytes for a log line (see
/// [`value_into`]), without the quotes.
pub fn clean(bytes: &[u8]) -> String {
    let mut out = String::new();
    escape_into(&mut out, bytes, 64, false);
    out
}

/// Appends ` key="value"`: the value quoted and escaped so that it can never
/// end its field or start another, whatever the client sent (security finding
/// 10: a login `x client=203.0.113.5 result=OK` once forged fields for
/// fail2ban-style parsers). Escaped as `\xNN` (or `\u{N}` beyond ASCII): `"`,
/// `\`, `=`, spaces and every other whitespace or control character; so a
/// parser splitting on spaces, a quote-aware one and a `key=(\S+)` regex all
/// read the same fields. At most 64 characters, then `...`.
pub fn value_into(out: &mut String, key: &str, bytes: &[u8]) {
    out.push(' ');
    out.push_str(key);
    out.push_str("=\"");
    escape_into(out, bytes, 64, false);
    out.push('"');
}

/// Appends ` key="text"` for the daemon's and the core's own explanations
/// (detail, cause, credential): escaped like [`value_into`] except that plain
/// spaces stay readable. `=` is still escaped, so a text can hold no `key=`.
pub fn text_into(out: &mut String, key: &str, text: &str) {
    out.push(' ');
    out.push_str(key);
    out.push_str("=\"");
    escape_into(out, text.as_bytes(), 200, true);
    out.push('"');
}

/// What [`text_into`] writes between the quotes.
pub fn escape_text_into(out: &mut String, text: &str) {
    escape_into(out, text.as_bytes(), 200, true);
}

/// [`text_into`] for a value that displays itself (e.g. the credential, whose
/// label is the admin's text), escaped as it is written: no extra buffer.
pub fn display_into(out: &mut String, key: &str, value: &dyn std::fmt::Display) {
    use std::fmt::Write as _;
    struct Escaping<'a>(&'a mut String);
    impl std::fmt::Write for Escaping<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            escape_into(self.0, s.as_bytes(), usize::MAX, true);
            Ok(())
        }
    }
    out.push(' ');
    out.push_str(key);
    out.push_str("=\"");
    let _ = write!(Escaping(out), "{value}");
    out.push('"');
}

fn push_u8(out: &mut String, n: u8) {
    if n >= 100 {
        out.push(char::from(b'0' + n / 100));
    }
    if n >= 10 {
        out.push(char::from(b'0' + n / 10 % 10));
    }
    out.push(char::from(b'0' + n % 10));
}

/// Printable ASCII that needs no escape.
fn plain_ascii(b: u8, keep_spaces: bool) -> bool {
    match b {
        b'"' | b'\\' | b'=' => false,
        b' ' => keep_spaces,
        _ => b.is_ascii_graphic(),
    }
}

fn escape_into(out: &mut String, bytes: &[u8], max: usize, keep_spaces: bool) {
    use std::fmt::Write as _;
    // The usual case (`alice`, `imap`, `192.0.2.7;40002`): copied as it is.
    if bytes.len() <= max && bytes.iter().all(|&b| plain_ascii(b, keep_spaces)) {
        if let Ok(text) = std::str::from_utf8(bytes) {
            out.push_str(text);
            return;
        }
    }
    for (n, ch) in String::from_utf8_lossy(bytes).chars().enumerate() {
        if n >= max {
            out.push_str("...");
            break;
        }
        let plain = match ch {
            ' ' => keep_spaces,
            '"' | '\\' | '=' => false,
            c => !(c.is_control() || c.is_whitespace()),
        };
        if plain {
            out.push(ch);
        } else if ch.is_ascii() {
            let _ = write!(out, "\\x{:02x}", ch as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", ch as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clean_escapes() {
        assert_eq!(super::clean(b"ali\nce\""), "ali\\x0ace\\x22");
        assert_eq!(super::clean(b""), "");
        assert_eq!(super::clean(&[b'a'; 100]).len(), 67);
        assert_eq!(
            super::clean("a b=c\\\u{2028}\u{e9}".as_bytes()),
            "a\\x20b\\x3dc\\x5c\\u{2028}\u{e9}"
        );
    }

    #[test]
    fn fields_cannot_start_fields() {
        let mut line = String::from("result=NO");
        super::value_into(&mut line, "login", b"x client=203.0.113.5 result=OK\" y=\"");
        super::text_into(&mut line, "detail", "a \"b\" c=d");
        super::display_into(&mut line, "credential", &"app-password 3 (x=\"y\")");
        assert_eq!(
            line,
            "result=NO login=\"x\\x20client\\x3d203.0.113.5\\x20result\\x3dOK\\x22\\x20y\\x3d\\x22\" \
             detail=\"a \\x22b\\x22 c\\x3dd\" credential=\"app-password 3 (x\\x3d\\x22y\\x22)\""
        );
    }
}
