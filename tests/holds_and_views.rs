//! Findings 5 and 6 of the round-3 review (issue 23), end to end through a
//! real saslgated answering `auth_http` (and, for the stamp, the store):
//! - 5: a held backend or a missing route is told only to a credential that
//!   verified; a wrong password of an account answers like an unknown name,
//!   in the same time, and the block list and the throttle come first;
//! - 6: no cached view (routes and holds here) survives a reload to another
//!   database or a database copied over the live one, and an empty write-ahead
//!   log's WAL-index header (the same bytes after every open) is no stamp.
//!
//! Each test failed on the code before its fix.

use saslgate::store::{SqliteStore, ThrottleStore};
use saslgate::Config;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SASLGATE: &str = env!("CARGO_BIN_EXE_saslgate");
const SASLGATED: &str = env!("CARGO_BIN_EXE_saslgated");
const PW: &str = "right pw";
const FAILED: &str = "authentication failed";
const TEMPORARY: &str = "Temporary server problem, try again later";

/// `saslgate ARGS` (with `stdin`) on the database `db` made by [`database`]
/// (its configuration beside it), which must succeed; its output.
fn cli(db: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(SASLGATE)
        .arg("--config")
        .arg(db.with_extension("conf"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run saslgate");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "saslgate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A database with accounts `names` (password [`PW`]), hashes at `cost`.
fn database(db: &Path, names: &[&str], cost: u32) {
    let conf = format!("db = \"{}\"\nbcrypt_cost = {cost}\n", db.display());
    std::fs::write(db.with_extension("conf"), conf).unwrap();
    cli(db, &["init"], None);
    for name in names {
        cli(db, &["user", "add", name], None);
        cli(db, &["passwd", name, "--stdin"], Some(PW));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    conf: PathBuf,
    log: PathBuf,
    addr: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The configuration: database `db`, hashes at `cost`, imap's default
/// backend 127.0.0.1:10143 and no pop3 default. The account pace is out of
/// the way (these tests count answers and hash times, not the pace's holds).
fn conf_text(db: &Path, cost: u32, address_failures: u32) -> String {
    format!(
        "db = \"{}\"\nbcrypt_cost = {cost}\n[throttle]\naddress_failures = {address_failures}\n\
         account_address_failures = 1000\nslowdown_failures = 100000\n[http]\ntrusted_peers = [\"127.0.0.1\"]\n\
         [http.backends]\nimap = \"127.0.0.1:10143\"\n",
        db.display()
    )
}

impl Daemon {
    /// saslgated with `--http` on a free port, over the database `prepare`
    /// makes at `DIR/sg.db`.
    fn start(cost: u32, address_failures: u32, prepare: impl FnOnce(&Path)) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sg.db");
        prepare(&db);
        let conf = dir.path().join("saslgate.conf");
        std::fs::write(&conf, conf_text(&db, cost, address_failures)).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.path().join("saslgated.log");
        let child = Command::new(SASLGATED)
            .args(["-a", "saslgate", "-d", "-n", "2", "--timeout", "5s"])
            .args(["--fail-delay", "1s"])
            .arg("-m")
            .arg(dir.path().join("run"))
            .arg("--config")
            .arg(&conf)
            .args(["--http", &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            dir,
            conf,
            log,
            addr,
        };
        d.wait_for_log(" ready on ", 1);
        d
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("sg.db")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Until the log holds `text` `times` times (10 s at most).
    fn wait_for_log(&self, text: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log_text().matches(text).count() < times {
            assert!(
                Instant::now() < deadline,
                "no {text:?}: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One request as nginx makes it; the answer's `Auth-Status`.
    fn ask(&self, user: &str, pass: &str, proto: &str, ip: &str) -> String {
        let esc = |s: &str| s.replace('%', "%25").replace(' ', "%20");
        let req = format!(
            "GET /auth HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\nAuth-User: {}\r\n\
             Auth-Pass: {}\r\nAuth-Protocol: {proto}\r\nAuth-Login-Attempt: 1\r\n\
             Client-IP: {ip}\r\nClient-Host: [UNAVAILABLE]\r\n\r\n",
            esc(user),
            esc(pass)
        );
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut chunk = [0u8; 1024];
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("reading the answer: {e}"),
            }
        }
        let answer = String::from_utf8(out).unwrap();
        answer
            .split("\r\n")
            .find_map(|l| l.strip_prefix("Auth-Status: "))
            .unwrap_or_else(|| panic!("no Auth-Status: {answer}"))
            .to_string()
    }

    /// Asks until the answer is `want` (5 s at most; the file watch looks
    /// every 0.1 s); the last answer.
    fn ask_until(&self, want: &str, user: &str, proto: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let a = self.ask(user, PW, proto, "198.51.100.1");
            if a == want || Instant::now() >= deadline {
                return a;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Finding 5: with alice's own backend held, a wrong password for alice
/// answers like an unknown name ("authentication failed"), only her right
/// password learns `WAIT`; a client over its failure budget is refused by
/// the throttle first; a one-time code is not used up by a `WAIT`.
#[test]
fn a_hold_is_told_only_to_a_verified_credential() {
    let d = Daemon::start(4, 3, |db| {
        database(db, &["alice", "bob"], 4);
        cli(
            db,
            &["user", "set-backend", "alice", "imap", "127.0.0.9:1143"],
            None,
        );
        cli(db, &["backend", "hold", "127.0.0.9:1143"], None);
    });
    let ip = |i: u32| format!("192.0.2.{i}");
    assert_eq!(d.ask("alice", "wrong", "imap", &ip(1)), FAILED);
    assert_eq!(d.ask("nobody", "wrong", "imap", &ip(2)), FAILED);
    assert_eq!(d.ask("alice", PW, "imap", &ip(3)), "WAIT");
    assert_eq!(d.ask("bob", PW, "imap", &ip(3)), "OK");

    // Over the address's failure budget (3): the throttle answers, not the hold.
    // (Distinct passwords: a repeated wrong password counts once.)
    for i in 0..3 {
        assert_eq!(d.ask("bob", &format!("wrong{i}"), "imap", &ip(4)), FAILED);
    }
    let a = d.ask("alice", PW, "imap", &ip(4));
    assert_ne!(a, "WAIT", "a throttled client learned of the hold");
    assert!(
        d.log_text().contains("reason=throttled"),
        "{}",
        d.log_text()
    );

    // A one-time code that waited is still unused after the release, once.
    let codes = cli(
        &d.db(),
        &["codes", "generate", "alice", "--count", "1"],
        None,
    );
    let code = codes
        .split_whitespace()
        .find(|w| w.len() == 11 && w.as_bytes()[5] == b'-')
        .unwrap_or_else(|| panic!("no code in {codes:?}"))
        .to_string();
    let with_code = format!("{PW}{code}");
    for _ in 0..2 {
        assert_eq!(d.ask("alice", &with_code, "imap", &ip(5)), "WAIT");
    }
    assert_eq!(
        d.ask("alice", &format!("wrong{code}"), "imap", &ip(6)),
        FAILED
    );
    cli(&d.db(), &["backend", "release", "127.0.0.9:1143"], None);
    assert_eq!(d.ask("alice", &with_code, "imap", &ip(5)), "OK");
    assert_eq!(d.ask("alice", &with_code, "imap", &ip(5)), FAILED);
}

/// Finding 5: no pop3 default backend; alice has her own, bob has none. A
/// wrong password answers alike for alice, bob and an unknown name; only
/// bob's right password learns that he cannot be routed.
#[test]
fn a_missing_route_is_told_only_to_a_verified_credential() {
    let d = Daemon::start(4, 100, |db| {
        database(db, &["alice", "bob"], 4);
        cli(
            db,
            &["user", "set-backend", "alice", "pop3", "127.0.0.3:1110"],
            None,
        );
    });
    for user in ["alice", "bob", "nobody"] {
        assert_eq!(d.ask(user, "wrong", "pop3", "192.0.2.20"), FAILED, "{user}");
    }
    assert_eq!(d.ask("alice", PW, "pop3", "192.0.2.20"), "OK");
    assert_eq!(d.ask("bob", PW, "pop3", "192.0.2.20"), TEMPORARY);
    assert!(
        d.log_text().contains("no pop3 backend for the account"),
        "{}",
        d.log_text()
    );
}

/// Finding 5, timing (the method of round 2's
/// `refusal_time_does_not_depend_on_the_stored_cost`, through the face): on a
/// held account a wrong password takes the time of an unknown name.
#[test]
fn a_held_account_refuses_in_the_time_of_an_unknown_name() {
    let d = Daemon::start(9, 1000, |db| {
        database(db, &["alice"], 9);
        cli(
            db,
            &["user", "set-backend", "alice", "imap", "127.0.0.9:1143"],
            None,
        );
        cli(db, &["backend", "hold", "127.0.0.9:1143"], None);
    });
    let time = |login: &str, i: usize| {
        let t = Instant::now();
        let a = d.ask(
            login,
            "wrong-password",
            "imap",
            &format!("192.0.2.{}", 100 + i),
        );
        let took = t.elapsed().as_secs_f64();
        assert_eq!(a, FAILED, "{login}");
        took
    };
    time("nobody", 0); // the dummy hash is made once
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..25 {
        known.push(time("alice", i));
        unknown.push(time("nobody", i));
    }
    known.sort_by(f64::total_cmp);
    unknown.sort_by(f64::total_cmp);
    let ratio = known[12] / unknown[12];
    eprintln!(
        "held account: median wrong password {:.2} ms, unknown name {:.2} ms, ratio {ratio:.3}",
        known[12] * 1e3,
        unknown[12] * 1e3
    );
    assert!(
        (0.85..1.18).contains(&ratio),
        "median wrong password {:.2} ms, unknown name {:.2} ms",
        known[12] * 1e3,
        unknown[12] * 1e3
    );
}

/// Two databases at the same generation: `held` holds imap's default
/// backend, the other holds a backend nobody uses.
fn twin(db: &Path, held: bool) {
    database(db, &["alice"], 4);
    let backend = if held {
        "127.0.0.1:10143"
    } else {
        "127.0.0.99:1"
    };
    cli(db, &["backend", "hold", backend], None);
}

/// Finding 6, first reproduction: `SIGHUP` from A.db (default backend held)
/// to B.db (no hold on it): the hold read from A must not answer for B.
#[test]
fn a_reload_to_another_database_drops_the_route_view() {
    let d = Daemon::start(4, 100, |db| twin(db, true));
    assert_eq!(d.ask("alice", PW, "imap", "198.51.100.1"), "WAIT");
    let b = d.dir.path().join("b.db");
    twin(&b, false);
    std::fs::write(&d.conf, conf_text(&b, 4, 100)).unwrap();
    let ok = Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    d.wait_for_log("configuration reloaded", 1);
    let a = d.ask_until("OK", "alice", "imap");
    assert_eq!(a, "OK", "B.db has no hold: {}", d.log_text());
}

/// Finding 6, second reproduction: the live database copied over (after a
/// checkpoint) by a twin without the hold: the file watch reopens it, and
/// the hold read before must not answer.
#[test]
fn a_database_copied_over_drops_the_route_view() {
    let d = Daemon::start(4, 100, |db| twin(db, true));
    assert_eq!(d.ask("alice", PW, "imap", "198.51.100.1"), "WAIT");
    let b = d.dir.path().join("b.db");
    twin(&b, false);
    {
        let conn = rusqlite::Connection::open(d.db()).unwrap();
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(busy, 0, "the log could not be checkpointed");
    }
    std::fs::copy(&b, d.db()).unwrap();
    let a = d.ask_until("OK", "alice", "imap");
    assert_eq!(a, "OK", "the copy has no hold: {}", d.log_text());
}

/// Finding 6, the stamp itself: two different databases, each just opened
/// with an empty write-ahead log, have the same WAL-index header; equal
/// stamps must never be taken for the same content.
#[test]
fn an_empty_log_gives_no_stamp_shared_by_two_databases() {
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str, names: &[&str]| {
        let db = dir.path().join(name);
        database(&db, names, 4);
        SqliteStore::open(&Config {
            db,
            ..Config::default()
        })
        .unwrap()
    };
    let a = open("a.db", &["alice"]);
    let b = open("b.db", &["bob", "carol"]);
    let (sa, sb) = (a.change_stamp(), b.change_stamp());
    assert!(sa.is_none() || sa != sb, "two databases, one stamp: {sa:?}");
}
