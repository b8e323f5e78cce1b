//! The real `saslgated` binary on a temporary socket directory, what it logs,
//! and a raw saslauthd-protocol client.

use crate::tools::bin;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the daemon logged: every line that is not a per-request result, the
/// "unavailable" result lines (up to 500), and counters.
#[derive(Default)]
pub struct LogTap {
    pub other: Vec<String>,
    pub unavailable: Vec<String>,
    pub results: u64,
    pub unavailable_count: u64,
    pub tail: std::collections::VecDeque<String>,
}

pub struct Daemon {
    pub child: Child,
    pub sock_dir: PathBuf,
    /// What the daemon logged, when it logs to the tap ([`Daemon::start`]).
    pub log: Arc<Mutex<LogTap>>,
    /// The log file, when it logs to a file ([`Daemon::start_logged`]).
    log_file: Option<PathBuf>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts `saslgated -d` (foreground, log to stderr, kept in a [`LogTap`]:
    /// for long runs) with `extra` flags, socket `sock_dir/mux`.
    pub fn start(conf: &Path, sock_dir: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_with(conf, sock_dir, extra, |_| {})
    }

    /// [`Daemon::start`], with the command changed by `tweak` first.
    pub fn start_with(
        conf: &Path,
        sock_dir: &Path,
        extra: &[&str],
        tweak: impl FnOnce(&mut Command),
    ) -> Daemon {
        Daemon::spawn(conf, sock_dir, extra, None, tweak)
    }

    /// Starts `saslgated -d` with its whole log in `log_file` (for tests that
    /// read every line).
    pub fn start_logged(conf: &Path, sock_dir: &Path, log_file: &Path, extra: &[&str]) -> Daemon {
        Daemon::spawn(conf, sock_dir, extra, Some(log_file), |_| {})
    }

    fn spawn(
        conf: &Path,
        sock_dir: &Path,
        extra: &[&str],
        log_file: Option<&Path>,
        tweak: impl FnOnce(&mut Command),
    ) -> Daemon {
        let mut cmd = Command::new(bin("saslgated"));
        cmd.args(["-a", "saslgate", "-d", "-m"])
            .arg(sock_dir)
            .arg("--config")
            .arg(conf)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        match log_file {
            Some(f) => cmd.stderr(std::fs::File::create(f).expect("create the log file")),
            None => cmd.stderr(Stdio::piped()),
        };
        tweak(&mut cmd);
        let mut child = cmd.spawn().expect("start saslgated");
        let log = Arc::new(Mutex::new(LogTap::default()));
        let reader = child.stderr.take().map(|stderr| {
            let tap = log.clone();
            std::thread::spawn(move || tap_lines(stderr, &tap))
        });
        let mut d = Daemon {
            child,
            sock_dir: sock_dir.to_path_buf(),
            log,
            log_file: log_file.map(Path::to_path_buf),
            reader,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("saslgated exited early ({st}): {}", self.log_text());
            }
            let ready = match &self.log_file {
                Some(_) => self.log_text().contains("ready on"),
                None => self
                    .log
                    .lock()
                    .unwrap()
                    .other
                    .iter()
                    .any(|l| l.contains("ready on")),
            };
            if ready && UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("saslgated did not become ready: {}", self.log_text());
    }

    pub fn socket(&self) -> PathBuf {
        self.sock_dir.join("mux")
    }

    /// How many per-request result lines it has logged: a decision is
    /// logged when it is made, before any delay of its answer.
    pub fn results(&self) -> u64 {
        match &self.log_file {
            Some(_) => self.log_text().matches(" result=").count() as u64,
            None => self.log.lock().unwrap().results,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole log file, or what the tap kept.
    pub fn log_text(&self) -> String {
        if let Some(f) = &self.log_file {
            return std::fs::read_to_string(f).unwrap_or_default();
        }
        let t = self.log.lock().unwrap();
        let mut s = t.other.join("\n");
        s.push_str("\n--- last lines ---\n");
        for l in &t.tail {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// Resident set size (kB) and open descriptors, from /proc.
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// What each open descriptor points at (for messages about fd growth).
    pub fn fd_targets(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| {
                        std::fs::read_link(e.path())
                            .map(|t| t.display().to_string())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL (the crash case); waits for the process.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -s {sig}");
    }

    /// SIGTERM, then the exit status (must come within 20 s) and the log.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return (st, self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "saslgated did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn frame(fields: &[&[u8]]) -> Vec<u8> {
    saslgate::daemon::protocol::encode_request(fields)
}

/// One request: the answer, or an error text (connect/read failures).
pub fn ask(sock: &Path, frame: &[u8]) -> Result<String, String> {
    let mut s = UnixStream::connect(sock).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    s.write_all(frame).map_err(|e| format!("write: {e}"))?;
    let mut head = [0u8; 2];
    s.read_exact(&mut head).map_err(|e| format!("read: {e}"))?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(head))];
    s.read_exact(&mut body).map_err(|e| format!("read: {e}"))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Keeps what [`LogTap`] keeps of the daemon's stderr, until it closes.
fn tap_lines(stderr: std::process::ChildStderr, tap: &Mutex<LogTap>) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let mut t = tap.lock().unwrap();
        t.tail.push_back(line.clone());
        if t.tail.len() > 50 {
            t.tail.pop_front();
        }
        if line.contains(" result=") {
            t.results += 1;
            if line.contains("reason=unavailable") {
                t.unavailable_count += 1;
                if t.unavailable.len() < 500 {
                    t.unavailable.push(line);
                }
            }
        } else if t.other.len() < 5000 {
            t.other.push(line);
        }
    }
}
