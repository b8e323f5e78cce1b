//! Storage faults while load runs against the real `saslgated`: the database
//! deleted, replaced by garbage, made unreadable, on a full filesystem, locked
//! by a long writer; and `kill -9` during heavy writes, then a restart.
//!
//! At every moment: a wrong credential is never accepted, and a right one gets
//! either OK or "NO unavailable", never "authentication failed". While storage
//! is broken the daemon answers "NO unavailable" and logs why; once storage is
//! back, service resumes without a restart. After the crash the database passes
//! `PRAGMA integrity_check` and no one-time code accepted before it works again.
//!
//! Ignored by default: run `scripts/faults.sh` (as root it runs the tests in a
//! private mount namespace, `unshare -m`, for the tmpfs one). Parts that need
//! root print a loud SKIP otherwise.
#![allow(unsafe_code)] // pre_exec drops root to run the daemon as nobody

use saslgate_testkit::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Right credential (app password or master password).
    Good,
    /// Wrong password or unknown account.
    Wrong,
}

struct Answer {
    at: Instant,
    kind: Kind,
    what: &'static str,
    answer: Result<String, String>,
}

/// Background clients: a steady mix of right and wrong credentials.
struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<()>>,
    answers: Arc<Mutex<Vec<Answer>>>,
}

impl Load {
    fn start(sock: PathBuf, fx: &Scenario, threads: usize) -> Load {
        let reqs: Arc<Vec<(Kind, &'static str, Vec<u8>)>> = Arc::new(vec![
            (
                Kind::Good,
                "app password",
                frame(&[
                    b"alice",
                    fx.app_imap.as_bytes(),
                    b"imap",
                    b"",
                    b"10.0.0.1;1",
                ]),
            ),
            (
                Kind::Good,
                "master",
                frame(&[b"alice", ALICE_PW.as_bytes(), b"imap", b"", b"10.0.0.2;1"]),
            ),
            (
                Kind::Wrong,
                "wrong password",
                frame(&[b"alice", b"not the password", b"imap", b""]),
            ),
            (
                Kind::Wrong,
                "unknown account",
                frame(&[b"mallory", b"x", b"imap", b""]),
            ),
            (
                Kind::Wrong,
                "wrong app password",
                frame(&[b"alice", b"aaaa-bbbb-cccc-dddd-eeee", b"imap", b""]),
            ),
        ]);
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..threads)
            .map(|t| {
                let (stop, answers, reqs, sock) =
                    (stop.clone(), answers.clone(), reqs.clone(), sock.clone());
                std::thread::spawn(move || {
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        let (kind, what, f) = &reqs[i % reqs.len()];
                        i += 1;
                        let answer = ask(&sock, f);
                        let failed = answer.is_err();
                        answers.lock().unwrap().push(Answer {
                            at: Instant::now(),
                            kind: *kind,
                            what,
                            answer,
                        });
                        std::thread::sleep(Duration::from_millis(if failed { 20 } else { 2 }));
                    }
                })
            })
            .collect();
        Load {
            stop,
            handles,
            answers,
        }
    }

    fn finish(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.join().unwrap();
        }
        std::mem::take(&mut *self.answers.lock().unwrap())
    }
}

/// The invariants that hold at every moment, whatever the storage does.
fn check_always(name: &str, answers: &[Answer]) {
    for a in answers {
        match (&a.answer, a.kind) {
            (Ok(s), Kind::Wrong) => assert!(
                s == ANSWER_BAD || s == ANSWER_UNAVAILABLE,
                "{name}: {} answered {s:?}",
                a.what
            ),
            (Ok(s), Kind::Good) => assert!(
                s == ANSWER_OK || s == ANSWER_UNAVAILABLE,
                "{name}: right credential ({}) answered {s:?} (must be OK or unavailable)",
                a.what
            ),
            (Err(e), _) => panic!("{name}: request failed while the daemon runs: {e}"),
        }
    }
}

fn count(answers: &[Answer], from: Instant, to: Instant, kind: Kind, text: &str) -> (usize, usize) {
    let inside: Vec<_> = answers
        .iter()
        .filter(|a| a.at >= from && a.at <= to && a.kind == kind)
        .collect();
    let n = inside
        .iter()
        .filter(|a| a.answer.as_deref() == Ok(text))
        .count();
    (n, inside.len())
}

/// A fault scenario on a running daemon: baseline, break, observe, repair,
/// recover. `break_it` / `repair` act on the fixture's files.
fn fault_run(
    name: &str,
    fx: &Scenario,
    d: &Daemon,
    break_it: &dyn Fn(),
    repair: &dyn Fn(),
    broken_for: Duration,
    expect_unavailable: bool,
) {
    let load = Load::start(d.socket(), fx, 4);
    std::thread::sleep(Duration::from_millis(1500));
    let t_break = Instant::now();
    break_it();
    std::thread::sleep(broken_for);
    let t_repair = Instant::now();
    repair();
    // Service must come back by itself (no restart, no signal).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut t_back = None;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let answers = load.answers.lock().unwrap();
        let recent: Vec<_> = answers
            .iter()
            .rev()
            .take_while(|a| a.at > t_repair)
            .filter(|a| a.kind == Kind::Good)
            .take(8)
            .collect();
        if recent.len() == 8 && recent.iter().all(|a| a.answer.as_deref() == Ok(ANSWER_OK)) {
            t_back = Some(recent.last().unwrap().at);
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let answers = load.finish();
    check_always(name, &answers);

    let (base_ok, base_n) = count(
        &answers,
        t_break - Duration::from_secs(2),
        t_break,
        Kind::Good,
        ANSWER_OK,
    );
    assert!(
        base_n > 0 && base_ok == base_n,
        "{name}: baseline not all OK ({base_ok}/{base_n})"
    );
    let settle = t_break + Duration::from_millis(300);
    let (gu, gn) = count(&answers, settle, t_repair, Kind::Good, ANSWER_UNAVAILABLE);
    let (wu, wn) = count(&answers, settle, t_repair, Kind::Wrong, ANSWER_UNAVAILABLE);
    let (gok, _) = count(&answers, settle, t_repair, Kind::Good, ANSWER_OK);
    let back = t_back.map(|t| format!("{:.2}s", t.duration_since(t_repair).as_secs_f64()));
    let example = d
        .log
        .lock()
        .unwrap()
        .unavailable
        .first()
        .cloned()
        .unwrap_or_default();
    println!(
        "faults: {name}: while broken ({:.1}s): right credentials {gu}/{gn} unavailable, {gok} OK; \
         wrong ones {wu}/{wn} unavailable, 0 accepted; service back {} after repair (no restart)",
        broken_for.as_secs_f64(),
        back.as_deref().unwrap_or("NEVER")
    );
    println!("faults: {name}: log: {}", short(&example));
    assert!(
        t_back.is_some(),
        "{name}: service did not resume after repair"
    );
    if expect_unavailable {
        assert!(gu + wu > 0, "{name}: no 'unavailable' answer while broken");
        assert!(
            example.contains("reason=unavailable cause="),
            "{name}: no clear log line: {example:?}"
        );
    }
}

fn short(s: &str) -> String {
    // Log lines start with a timestamp and the program name; keep the message.
    s.chars().take(260).collect()
}

fn sock_dir(fx: &Scenario) -> PathBuf {
    fx.dir.join("run")
}

const DAEMON_FLAGS: [&str; 6] = ["-n", "2", "--fail-delay", "0", "--timeout", "30s"];

fn config_extra() -> &'static str {
    "audit_level = \"all\"\nflush_interval = \"1s\"\nbusy_timeout = \"500ms\""
}

fn throttle_off() -> &'static str {
    "address_failures = 1000000\naccount_address_failures = 1000000\nslowdown_failures = 1000000000"
}

/// A consistent copy of the database (sqlite3 .backup) to restore from.
fn snapshot(fx: &Scenario) -> PathBuf {
    let copy = fx.dir.join("snapshot.db");
    let _ = std::fs::remove_file(&copy);
    sql(&fx.db, &format!(".backup '{}'", copy.display()));
    copy
}

fn remove_db_files(db: &Path) {
    for ext in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{ext}", db.display()));
        let _ = std::fs::remove_file(p);
    }
}

fn restore(db: &Path, from: &Path) {
    let tmp = db.with_extension("restoring");
    std::fs::copy(from, &tmp).unwrap();
    remove_db_files(db);
    std::fs::rename(&tmp, db).unwrap();
}

fn new_fixture(name: &str) -> (tempfile::TempDir, Scenario) {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("saslgate-faults-{name}"))
        .tempdir()
        .unwrap();
    let fx = Scenario::create(
        &tmp.path().join("data"),
        config_extra(),
        throttle_off(),
        100,
    );
    (tmp, fx)
}

#[test]
#[ignore = "run scripts/faults.sh"]
fn database_deleted() {
    let (_tmp, fx) = new_fixture("deleted");
    let snap = snapshot(&fx);
    let d = Daemon::start(&fx.conf, &sock_dir(&fx), &DAEMON_FLAGS);
    fault_run(
        "database deleted",
        &fx,
        &d,
        &|| remove_db_files(&fx.db),
        &|| restore(&fx.db, &snap),
        Duration::from_secs(3),
        true,
    );
    assert!(d.stop().0.success());
}

#[test]
#[ignore = "run scripts/faults.sh"]
fn database_replaced_by_garbage() {
    let (_tmp, fx) = new_fixture("garbage");
    let snap = snapshot(&fx);
    let d = Daemon::start(&fx.conf, &sock_dir(&fx), &DAEMON_FLAGS);
    fault_run(
        "database replaced by garbage",
        &fx,
        &d,
        &|| {
            let tmp = fx.db.with_extension("garbage");
            let junk: Vec<u8> = (0..65536u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            std::fs::write(&tmp, junk).unwrap();
            remove_db_files(&fx.db);
            std::fs::rename(&tmp, &fx.db).unwrap();
        },
        &|| restore(&fx.db, &snap),
        Duration::from_secs(3),
        true,
    );
    assert!(d.stop().0.success());
}

#[test]
#[ignore = "run scripts/faults.sh"]
fn database_unreadable() {
    let (tmp, fx) = new_fixture("unreadable");
    // The daemon must not be root (root reads anything): as root, run it as
    // nobody, owning its data directory.
    let as_nobody = is_root();
    if as_nobody {
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for entry in walk(&fx.dir) {
            std::os::unix::fs::chown(&entry, Some(65534), Some(65534)).unwrap();
        }
    }
    let d = Daemon::start_with(&fx.conf, &sock_dir(&fx), &DAEMON_FLAGS, |cmd| {
        if as_nobody {
            use std::os::unix::process::CommandExt;
            extern "C" {
                fn setgroups(n: usize, list: *const u32) -> i32;
                fn setgid(gid: u32) -> i32;
                fn setuid(uid: u32) -> i32;
            }
            // SAFETY: between fork and exec: drop root's supplementary groups, then
            // become nobody (std runs pre_exec after its own uid/gid changes, so all
            // three are done here, in this order); all are async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    if setgroups(0, std::ptr::null()) != 0
                        || setgid(65534) != 0
                        || setuid(65534) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    });
    // The database directory loses every permission (a wrong chmod/chown by an
    // operator): the file can no longer be reached or opened.
    let data = fx.dir.clone();
    let mode = std::fs::metadata(&data).unwrap().permissions().mode();
    fault_run(
        &format!(
            "database unreadable (directory mode 000, daemon as {})",
            if as_nobody { "nobody" } else { "the test user" }
        ),
        &fx,
        &d,
        &|| std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o000)).unwrap(),
        &|| std::fs::set_permissions(&data, std::fs::Permissions::from_mode(mode)).unwrap(),
        Duration::from_secs(3),
        true,
    );
    assert!(d.stop().0.success());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
#[ignore = "run scripts/faults.sh"]
fn database_locked_by_long_writer() {
    let (_tmp, fx) = new_fixture("locked");
    let d = Daemon::start(&fx.conf, &sock_dir(&fx), &DAEMON_FLAGS);
    let writer: Mutex<Option<std::process::Child>> = Mutex::new(None);
    fault_run(
        "database locked by a long writer (busy_timeout 500ms)",
        &fx,
        &d,
        &|| {
            let mut child = Command::new("sqlite3")
                .arg(&fx.db)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("sqlite3");
            use std::io::Write;
            let stdin = child.stdin.as_mut().unwrap();
            stdin
                .write_all(
                    // `.timeout`: the daemon under load writes too; without it
                    // the CLI gives up at once if it meets one of those writes.
                    b".timeout 5000\nBEGIN IMMEDIATE;\nUPDATE meta SET value = value WHERE key = 'nothing';\n",
                )
                .unwrap();
            stdin.flush().unwrap();
            *writer.lock().unwrap() = Some(child);
        },
        &|| {
            let mut child = writer.lock().unwrap().take().unwrap();
            {
                use std::io::Write;
                let mut stdin = child.stdin.take().unwrap();
                stdin.write_all(b"COMMIT;\n.quit\n").unwrap();
            }
            let st = child.wait().unwrap();
            assert!(st.success());
        },
        Duration::from_secs(4),
        true,
    );
    assert!(d.stop().0.success());
}

#[test]
#[ignore = "run scripts/faults.sh"]
fn full_filesystem() {
    if !is_root() || std::env::var_os("SASLGATE_FAULTS_UNSHARED").is_none() {
        skip("faults: full filesystem needs root and a private mount namespace (scripts/faults.sh as root runs it under unshare -m)");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("saslgate-faults-full")
        .tempdir()
        .unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let fx = Scenario::create(&mnt.join("data"), config_extra(), throttle_off(), 100);
    let d = Daemon::start(&fx.conf, &tmp.path().join("run"), &DAEMON_FLAGS);
    let filler = mnt.join("filler");
    fault_run(
        "full filesystem (16 MiB tmpfs filled up)",
        &fx,
        &d,
        &|| {
            // Fill every free byte.
            let mut f = std::fs::File::create(&filler).unwrap();
            let chunk = vec![0u8; 4096];
            use std::io::Write;
            while f.write_all(&chunk).is_ok() {}
            let _ = f.flush();
        },
        &|| std::fs::remove_file(&filler).unwrap(),
        Duration::from_secs(4),
        true,
    );
    assert!(d.stop().0.success());
    assert_eq!(sql(&fx.db, "PRAGMA integrity_check"), "ok");
}

#[test]
#[ignore = "run scripts/faults.sh"]
fn kill_9_during_heavy_writes_then_restart() {
    let (_tmp, fx) = new_fixture("kill9");
    let codes = fx.codes.clone();
    assert_eq!(codes.len(), 100);
    let mut accepted_before: Vec<String> = Vec::new();
    let mut rounds = Vec::new();
    for round in 0..3 {
        let d = Daemon::start(&fx.conf, &sock_dir(&fx), &DAEMON_FLAGS);
        let sock = d.socket();
        // Heavy writes: every refusal is written at once; 16 writers.
        let load = Load::start(sock.clone(), &fx, 16);
        // Meanwhile one-time codes are used, each once; record which were accepted.
        let stop = Arc::new(AtomicBool::new(false));
        let part: Vec<String> = codes[round * 30..round * 30 + 30].to_vec();
        let used = {
            let (sock, stop) = (sock.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut ok = Vec::new();
                for c in part {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let pw = format!("{BOB_PW}{c}");
                    if ask(&sock, &frame(&[b"bob", pw.as_bytes(), b"imap", b""])).as_deref()
                        == Ok(ANSWER_OK)
                    {
                        ok.push(c);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                ok
            })
        };
        std::thread::sleep(Duration::from_millis(400 + 300 * round as u64));
        d.kill9();
        stop.store(true, Ordering::Relaxed);
        let ok = used.join().unwrap();
        let answers = load.finish();
        // Before the kill, the usual invariants (failed requests after it are expected).
        let before: Vec<Answer> = answers.into_iter().filter(|a| a.answer.is_ok()).collect();
        check_always("kill -9", &before);
        rounds.push((before.len(), ok.len()));
        accepted_before.extend(ok);
        assert!(!sock.exists() || ask(&sock, b"x").is_err());
        let integrity = sql(&fx.db, "PRAGMA integrity_check");
        assert_eq!(integrity, "ok", "integrity after kill -9 (round {round})");
    }
    // Restart: every code accepted before a crash is refused now; others still work.
    let d = Daemon::start(&fx.conf, &sock_dir(&fx), &DAEMON_FLAGS);
    for c in &accepted_before {
        let pw = format!("{BOB_PW}{c}");
        let a = ask(&d.socket(), &frame(&[b"bob", pw.as_bytes(), b"imap", b""])).unwrap();
        assert_eq!(
            a, ANSWER_BAD,
            "one-time code accepted before kill -9 works again"
        );
    }
    let fresh = &codes[99];
    let pw = format!("{BOB_PW}{fresh}");
    assert_eq!(
        ask(&d.socket(), &frame(&[b"bob", pw.as_bytes(), b"imap", b""])).unwrap(),
        ANSWER_OK
    );
    let app = frame(&[b"alice", fx.app_imap.as_bytes(), b"imap", b""]);
    assert_eq!(ask(&d.socket(), &app).unwrap(), ANSWER_OK);
    assert!(d.stop().0.success());
    let integrity = sql(&fx.db, "PRAGMA integrity_check");
    let audit = sql(&fx.db, "SELECT count(*) FROM audit");
    println!(
        "faults: kill -9 during heavy writes (16 clients, audit all), 3 times, then restart: \
         answers before each kill {:?} (requests, codes accepted); integrity_check {integrity}; \
         {} codes accepted before the kills all refused after restart; an unused code and an app \
         password accepted; {audit} audit rows",
        rounds,
        accepted_before.len()
    );
    assert!(!accepted_before.is_empty());
}
