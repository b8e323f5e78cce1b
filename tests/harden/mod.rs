//! Shared by tests/soak.rs and tests/faults.rs: a fixture database made through
//! the library, the real `saslgated` binary on a temp socket, and a raw client.
#![allow(dead_code)]

use saslgate::secret::SecretBytes;
use saslgate::store::{AdminStore, Store};
use saslgate::Config;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SASLGATED: &str = env!("CARGO_BIN_EXE_saslgated");
pub const SASLGATE: &str = env!("CARGO_BIN_EXE_saslgate");

pub const ALICE_PW: &str = "alice master pw";
pub const BOB_PW: &str = "bob pw";
pub const EVE_PW: &str = "eve pw";
pub const CAROL_PW: &str = "carol pw";
/// JBSWY3DPEHPK3PXP decoded.
pub const TOTP_SECRET: &[u8] = b"Hello!\xde\xad\xbe\xef";

pub const ANSWER_OK: &str = "OK";
pub const ANSWER_BAD: &str = "NO authentication failed";
pub const ANSWER_NOT_ALLOWED: &str = "NO not allowed for this service";
pub const ANSWER_THROTTLED: &str = "NO too many failures, try again later";
pub const ANSWER_DISABLED: &str = "NO account disabled";
pub const ANSWER_UNAVAILABLE: &str = "NO unavailable";

/// Test data.
pub struct Fixture {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub db: PathBuf,
    pub config: Config,
    pub app_imap: String,
    pub app_restricted: String,
    pub codes: Vec<String>,
}

/// `extra` is appended to the config file (TOML, before the [throttle] table).
pub fn fixture(dir: &Path, extra: &str, throttle: &str, codes: usize) -> Fixture {
    std::fs::create_dir_all(dir).unwrap();
    let db = dir.join("saslgate.db");
    let conf = dir.join("saslgate.conf");
    std::fs::write(
        &conf,
        format!(
            "db = \"{}\"\nbcrypt_cost = 4\n{extra}\n[throttle]\n{throttle}\n",
            db.display()
        ),
    )
    .unwrap();
    let config = Config::load(&conf).unwrap();
    let mut s = Store::create(&config).unwrap();
    let pw = |p: &str| SecretBytes::from_slice(p.as_bytes());
    s.add_account("alice", "default").unwrap();
    s.set_master_password("alice", &pw(ALICE_PW), false)
        .unwrap();
    let (_, app_imap) = s
        .add_app_password("alice", "phone", &["imap".into()], false, None)
        .unwrap();
    let (_, app_restricted) = s
        .add_app_password("alice", "scanner", &[], true, None)
        .unwrap();
    s.add_account("bob", "default").unwrap();
    s.set_master_password("bob", &pw(BOB_PW), false).unwrap();
    s.enable_totp("bob", TOTP_SECRET).unwrap();
    let mut all_codes = Vec::new();
    // generate_codes replaces the set, at most 100 at a time: one call.
    if codes > 0 {
        for c in s.generate_codes("bob", codes.min(100)).unwrap() {
            all_codes.push(String::from_utf8(c.as_bytes().to_vec()).unwrap());
        }
    }
    s.add_account("carol", "default").unwrap();
    s.set_master_password("carol", &pw(CAROL_PW), false)
        .unwrap();
    s.set_disabled("carol", true).unwrap();
    s.set_plan_services("smtponly", &["smtp".into()]).unwrap();
    s.add_account("eve", "smtponly").unwrap();
    s.set_master_password("eve", &pw(EVE_PW), false).unwrap();
    drop(s);
    Fixture {
        dir: dir.to_path_buf(),
        conf,
        db,
        config,
        app_imap: String::from_utf8(app_imap.as_bytes().to_vec()).unwrap(),
        app_restricted: String::from_utf8(app_restricted.as_bytes().to_vec()).unwrap(),
        codes: all_codes,
    }
}

/// The current TOTP code for bob.
pub fn totp_now() -> (i64, String) {
    let step = saslgate::totp::step_of(saslgate::timefmt::now());
    let code = saslgate::totp::code_at(TOTP_SECRET, step);
    (step, String::from_utf8(code.to_vec()).unwrap())
}

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
    pub log: Arc<Mutex<LogTap>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts `saslgated -d` (foreground, log to stderr) with `extra` flags.
    pub fn start(conf: &Path, sock_dir: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_with(conf, sock_dir, extra, |_| {})
    }

    pub fn start_with(
        conf: &Path,
        sock_dir: &Path,
        extra: &[&str],
        tweak: impl FnOnce(&mut Command),
    ) -> Daemon {
        let mut cmd = Command::new(SASLGATED);
        cmd.args(["-a", "saslgate", "-d", "-m"])
            .arg(sock_dir)
            .arg("--config")
            .arg(conf)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        tweak(&mut cmd);
        let mut child = cmd.spawn().expect("start saslgated");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(LogTap::default()));
        let tap = log.clone();
        let reader = std::thread::spawn(move || {
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
        });
        let mut d = Daemon {
            child,
            sock_dir: sock_dir.to_path_buf(),
            log,
            reader: Some(reader),
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
            let ready = self
                .log
                .lock()
                .unwrap()
                .other
                .iter()
                .any(|l| l.contains("ready on"));
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
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

    /// SIGTERM and wait (at most 20 s); returns whether it exited cleanly.
    pub fn stop(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
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

/// sqlite3 CLI query (package sqlite3); panics when it fails.
pub fn sql(db: &Path, query: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(query)
        .output()
        .expect("sqlite3 (Debian package sqlite3) is needed");
    assert!(
        out.status.success(),
        "sqlite3 {query:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn is_root() -> bool {
    // /proc/self belongs to the process's effective user (no unsafe needed).
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub fn skip(what: &str) {
    eprintln!("==================================================================");
    eprintln!("SKIP: {what}");
    eprintln!("==================================================================");
}
