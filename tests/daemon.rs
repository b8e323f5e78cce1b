//! saslgated end to end: the real daemon binary on a temp socket, a temp
//! database made with the `saslgate` CLI, driven by the stock `testsaslauthd`
//! (package sasl2-bin), a raw Rust client, and real libsasl2 through
//! `sasl_checkpass` with `pwcheck_method: saslauthd` (tests/daemon_checkpass.c).
//!
//! Missing tools (testsaslauthd, oathtool, cc, libsasl2-dev) make the tests
//! fail loudly: they never pass without running.

use saslgate_testkit::{compile_sasl_program, need_tool, Daemon};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SASLGATE: &str = env!("CARGO_BIN_EXE_saslgate");
const SASLGATED: &str = env!("CARGO_BIN_EXE_saslgated");
const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXP";
const ALICE_PW: &str = "alice master pw";
const BOB_PW: &str = "bob pw";

/// Test data: config + database + the secrets the CLI printed.
struct Fixture {
    dir: tempfile::TempDir,
    conf: PathBuf,
    app_imap: String,
    app_smtp: String,
    codes: Vec<String>,
}

fn cli(conf: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = Command::new(SASLGATE);
    cmd.arg("--config").arg(conf).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run saslgate");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "saslgate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn write_conf(path: &Path, db: &Path, extra: &str) {
    std::fs::write(
        path,
        format!(
            "db = \"{}\"\nbcrypt_cost = 4\n{extra}[throttle]\naddress_failures = 100000\n\
             account_address_failures = 100000\nslowdown_failures = 100000\n",
            db.display()
        ),
    )
    .unwrap();
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("saslgate.conf");
    write_conf(&conf, &dir.path().join("sg.db"), "");
    cli(&conf, &["init"], None);
    cli(&conf, &["user", "add", "alice"], None);
    cli(&conf, &["passwd", "alice", "--stdin"], Some(ALICE_PW));
    let app_imap = cli(
        &conf,
        &[
            "app-password",
            "add",
            "alice",
            "--label",
            "phone",
            "--services",
            "imap",
        ],
        None,
    )
    .trim()
    .to_string();
    let app_smtp = cli(
        &conf,
        &[
            "app-password",
            "add",
            "alice",
            "--label",
            "scanner",
            "--restricted",
        ],
        None,
    )
    .trim()
    .to_string();
    cli(&conf, &["user", "add", "bob"], None);
    cli(&conf, &["passwd", "bob", "--stdin"], Some(BOB_PW));
    cli(
        &conf,
        &["totp", "enable", "bob", "--secret", TOTP_SECRET],
        None,
    );
    let codes = cli(&conf, &["codes", "generate", "bob", "--count", "3"], None)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>();
    assert_eq!(codes.len(), 3);
    cli(&conf, &["user", "add", "carol"], None);
    cli(&conf, &["passwd", "carol", "--stdin"], Some("carol pw"));
    cli(&conf, &["user", "disable", "carol"], None);
    cli(&conf, &["user", "add", "dave@example.org"], None);
    cli(
        &conf,
        &["passwd", "dave@example.org", "--stdin"],
        Some("dave pw"),
    );
    Fixture {
        dir,
        conf,
        app_imap,
        app_smtp,
        codes,
    }
}

/// The real saslgated for a test: socket directory `name`, log `name.log`.
fn start_daemon(fx: &Fixture, name: &str, extra: &[&str]) -> Daemon {
    start_daemon_conf(fx, &fx.conf, name, extra)
}

fn start_daemon_conf(fx: &Fixture, conf: &Path, name: &str, extra: &[&str]) -> Daemon {
    Daemon::start_logged(
        conf,
        &fx.dir.path().join(name),
        &fx.dir.path().join(format!("{name}.log")),
        extra,
    )
}

/// Runs the stock client; true for "OK".
fn testsaslauthd(sock: &Path, user: &str, pass: &str, service: &str, realm: Option<&str>) -> bool {
    let bin = need_tool("testsaslauthd", "sasl2-bin");
    let mut cmd = Command::new(bin);
    cmd.arg("-f")
        .arg(sock)
        .args(["-u", user, "-p", pass, "-s", service]);
    if let Some(r) = realm {
        cmd.args(["-r", r]);
    }
    let out = cmd.output().expect("run testsaslauthd");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("OK") || text.contains("NO"),
        "testsaslauthd said {text:?}"
    );
    text.contains("0: OK")
}

fn totp_now() -> String {
    let bin = need_tool("oathtool", "oathtool");
    let out = Command::new(bin)
        .args(["--totp", "-b", TOTP_SECRET])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Raw client: one request, the answer (None when the daemon closed without one).
fn raw(sock: &Path, frame: &[u8]) -> Option<String> {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(frame).ok()?;
    let mut head = [0u8; 2];
    s.read_exact(&mut head).ok()?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(head))];
    s.read_exact(&mut body).ok()?;
    Some(String::from_utf8_lossy(&body).to_string())
}

fn frame(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        out.extend_from_slice(&(f.len() as u16).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn is_ok(a: &Option<String>) -> bool {
    a.as_deref() == Some("OK")
}

#[test]
fn decision_matrix_with_testsaslauthd() {
    let fx = fixture();
    let d = start_daemon(&fx, "run", &["--fail-delay", "0", "-n", "2"]);
    let s = d.socket();
    // Master password.
    assert!(testsaslauthd(&s, "alice", ALICE_PW, "imap", None));
    assert!(
        testsaslauthd(&s, "Alice", ALICE_PW, "smtp", None),
        "login is case-folded"
    );
    assert!(!testsaslauthd(&s, "alice", "wrong", "imap", None));
    assert!(!testsaslauthd(&s, "alice", "", "imap", None));
    // App password in and out of its scope; typed without dashes.
    assert!(testsaslauthd(&s, "alice", &fx.app_imap, "imap", None));
    assert!(testsaslauthd(
        &s,
        "alice",
        &fx.app_imap.replace('-', ""),
        "imap",
        None
    ));
    assert!(!testsaslauthd(&s, "alice", &fx.app_imap, "smtp", None));
    assert!(testsaslauthd(&s, "alice", &fx.app_smtp, "smtp", None));
    assert!(!testsaslauthd(&s, "alice", &fx.app_smtp, "imap", None));
    // Service aliases (submission = smtp).
    assert!(testsaslauthd(&s, "alice", &fx.app_smtp, "submission", None));
    // Two-step: master alone refused; + TOTP accepted once; + one-time code once.
    assert!(!testsaslauthd(&s, "bob", BOB_PW, "imap", None));
    let code = totp_now();
    assert!(testsaslauthd(
        &s,
        "bob",
        &format!("{BOB_PW}{code}"),
        "imap",
        None
    ));
    assert!(
        !testsaslauthd(&s, "bob", &format!("{BOB_PW}{code}"), "imap", None),
        "TOTP step reused"
    );
    assert!(!testsaslauthd(
        &s,
        "bob",
        &format!("{BOB_PW}000000x"),
        "imap",
        None
    ));
    let one = &fx.codes[0];
    assert!(testsaslauthd(
        &s,
        "bob",
        &format!("{BOB_PW}{one}"),
        "imap",
        None
    ));
    assert!(
        !testsaslauthd(&s, "bob", &format!("{BOB_PW}{one}"), "imap", None),
        "one-time code reused"
    );
    // Disabled account, unknown account.
    assert!(!testsaslauthd(&s, "carol", "carol pw", "imap", None));
    assert!(!testsaslauthd(&s, "nobody", "whatever", "imap", None));
    // The realm is always passed on (no -r needed): alice + realm example.org
    // is alice@example.org, not alice (example.org is not a local realm).
    assert!(!testsaslauthd(
        &s,
        "alice",
        ALICE_PW,
        "imap",
        Some("example.org")
    ));
    assert!(testsaslauthd(
        &s,
        "dave@example.org",
        "dave pw",
        "imap",
        None
    ));
    let (st, log) = d.stop();
    assert!(st.success(), "exit {st}: {log}");
    // One line per decision, never a password.
    assert!(
        log.contains(
            r#"result=OK account="alice" credential="master" service="imap" realm="" client="" login="alice""#
        ),
        "{log}"
    );
    assert!(log.contains("reason=not-allowed"), "{log}");
    assert!(log.contains("reason=disabled"), "{log}");
    for secret in [
        ALICE_PW,
        BOB_PW,
        "carol pw",
        "dave pw",
        fx.app_imap.as_str(),
        fx.app_smtp.as_str(),
        &code,
        one,
    ] {
        assert!(!log.contains(secret), "log contains a secret: {secret}");
    }
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn realm_flag_joins_login_and_realm() {
    let fx = fixture();
    let d = start_daemon(&fx, "run", &["--fail-delay", "0", "-r"]);
    let s = d.socket();
    assert!(testsaslauthd(
        &s,
        "dave",
        "dave pw",
        "imap",
        Some("example.org")
    ));
    assert!(!testsaslauthd(
        &s,
        "dave",
        "dave pw",
        "imap",
        Some("example.net")
    ));
    assert!(testsaslauthd(&s, "alice", ALICE_PW, "imap", None));
    let (st, _) = d.stop();
    assert!(st.success());
}

/// The daemon reads a whole request with MSG_PEEK and takes it off the socket
/// only after answering (src/daemon/server/acceptor.rs, `answer_fast`). A client that reads
/// on after the answer must then see a clean end of file: closing a UNIX socket
/// with unread bytes would give it ECONNRESET instead. Refusals held back by
/// `--fail-delay` go the same way.
#[test]
fn answer_is_followed_by_a_clean_end_of_file() {
    let fx = fixture();
    let d = start_daemon(&fx, "run", &["--fail-delay", "200ms"]);
    for (pw, want) in [(ALICE_PW, "OK"), ("wrong", "NO")] {
        for fields in [4, 5] {
            let mut parts: Vec<&[u8]> = vec![b"alice", pw.as_bytes(), b"imap", b""];
            if fields == 5 {
                parts.push(b"192.0.2.9;4000");
            }
            let mut s = UnixStream::connect(d.socket()).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            s.write_all(&frame(&parts)).unwrap();
            let mut all = Vec::new();
            // read_to_end fails on ECONNRESET; Ok means the stream ended cleanly.
            s.read_to_end(&mut all)
                .unwrap_or_else(|e| panic!("{want} with {fields} fields: {e}"));
            assert!(all.len() > 2, "an answer");
            let len = usize::from(u16::from_be_bytes([all[0], all[1]]));
            assert_eq!(all.len(), 2 + len, "nothing after the answer");
            assert!(all[2..].starts_with(want.as_bytes()), "{all:?}");
        }
    }
}

#[test]
fn four_and_five_field_requests_and_client_address() {
    let fx = fixture();
    let throttled = fx.dir.path().join("throttle.conf");
    std::fs::write(
        &throttled,
        format!(
            "db = \"{}\"\nbcrypt_cost = 4\n[throttle]\naddress_failures = 3\n",
            fx.dir.path().join("sg.db").display()
        ),
    )
    .unwrap();
    let d = start_daemon_conf(&fx, &throttled, "run", &["--fail-delay", "0"]);
    let s = d.socket();
    let pw = ALICE_PW.as_bytes();
    assert!(is_ok(&raw(&s, &frame(&[b"alice", pw, b"imap", b""]))));
    assert!(is_ok(&raw(
        &s,
        &frame(&[b"alice", pw, b"imap", b"", b"192.0.2.7;40000"])
    )));
    assert!(is_ok(&raw(
        &s,
        &frame(&[b"alice", pw, b"imap", b"", b"2001:db8::7"])
    )));
    // The fifth field feeds throttling: three failures from 192.0.2.7 block it.
    // (Distinct wrong passwords: the core does not count a repeated one twice.)
    for n in 0..3 {
        let wrong = format!("wrong{n}");
        let a = raw(
            &s,
            &frame(&[b"alice", wrong.as_bytes(), b"imap", b"", b"192.0.2.7;40001"]),
        );
        assert_eq!(a.as_deref(), Some("NO authentication failed"));
    }
    let a = raw(
        &s,
        &frame(&[b"alice", pw, b"imap", b"", b"192.0.2.7;40002"]),
    );
    assert!(
        a.as_deref()
            .is_some_and(|t| t.starts_with("NO too many failures")),
        "{a:?}"
    );
    assert!(is_ok(&raw(
        &s,
        &frame(&[b"alice", pw, b"imap", b"", b"192.0.2.8;40003"])
    )));
    // ... and 4-field requests (no address) are not blocked by it.
    assert!(is_ok(&raw(&s, &frame(&[b"alice", pw, b"imap", b""]))));
    let (st, log) = d.stop();
    assert!(st.success());
    assert!(log.contains(r#"client="192.0.2.7;40002""#), "{log}");
    // The audit trail has the address.
    let audit = cli(&fx.conf, &["--json", "log", "alice"], None);
    assert!(audit.contains("192.0.2.8"), "{audit}");
}

fn count_fds_settle(d: &Daemon, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = d.fds();
        if n <= want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bad_input_run_keeps_serving() {
    let fx = fixture();
    let d = start_daemon(
        &fx,
        "run",
        &[
            "--fail-delay",
            "100ms",
            "--timeout",
            "2s",
            "-n",
            "2",
            "--field-limit",
            "1024",
        ],
    );
    let s = d.socket();
    assert!(is_ok(&raw(
        &s,
        &frame(&[b"alice", fx.app_imap.as_bytes(), b"imap", b""])
    )));
    // Warm up: the core opens pooled database connections on first concurrent
    // use; the baseline is taken after that. Half the clients send their request
    // in two writes, so that the daemon's slow path (its reactor thread, which
    // decides too) opens its connection now as well.
    let warm: Vec<_> = (0..8)
        .map(|i| {
            let (s, app) = (s.clone(), fx.app_imap.clone());
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let f = frame(&[b"alice", app.as_bytes(), b"imap", b""]);
                    if i % 2 == 0 {
                        assert!(is_ok(&raw(&s, &f)));
                        continue;
                    }
                    let mut c = UnixStream::connect(&s).unwrap();
                    c.write_all(&f[..3]).unwrap();
                    std::thread::sleep(Duration::from_millis(3));
                    c.write_all(&f[3..]).unwrap();
                    let mut answer = [0u8; 4];
                    c.read_exact(&mut answer).unwrap();
                    assert_eq!(&answer, b"\0\x02OK");
                }
            })
        })
        .collect();
    for w in warm {
        w.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let baseline = d.fds();

    // Well-behaved clients all along.
    let stop = Arc::new(AtomicBool::new(false));
    let good = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let checker = {
        let (stop, good, bad, s) = (stop.clone(), good.clone(), bad.clone(), s.clone());
        let app = fx.app_imap.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let wrong = n.is_multiple_of(5);
                let pw: &[u8] = if wrong { b"wrong" } else { app.as_bytes() };
                let a = raw(&s, &frame(&[b"alice", pw, b"imap", b"", b"127.0.0.1;1"]));
                let right = if wrong {
                    a.as_deref() == Some("NO authentication failed")
                } else {
                    is_ok(&a)
                };
                if right {
                    good.fetch_add(1, Ordering::SeqCst);
                } else {
                    eprintln!("well-behaved client got {a:?}");
                    bad.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let full = frame(&[b"alice", ALICE_PW.as_bytes(), b"imap", b"", b"127.0.0.1;2"]);
    // Truncated frames at every cut, client closes.
    for cut in 0..full.len() {
        let mut c = UnixStream::connect(&s).unwrap();
        c.write_all(&full[..cut]).unwrap();
        drop(c);
    }
    // Truncated frame, client waits for an answer and half-closes: no answer, EOF.
    {
        let mut c = UnixStream::connect(&s).unwrap();
        c.write_all(&full[..7]).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        assert_eq!(c.read_to_end(&mut buf).unwrap(), 0);
    }
    // Length over the limit: refused without reading it.
    let mut over = vec![0x04, 0x01];
    over.extend_from_slice(&[b'a'; 100]);
    assert_eq!(raw(&s, &over).as_deref(), Some("NO malformed request"));
    let mut huge = frame(&[b"alice"]);
    huge.extend_from_slice(&[0xff, 0xff]);
    huge.extend_from_slice(&vec![b'x'; 65535]);
    assert_eq!(raw(&s, &huge).as_deref(), Some("NO malformed request"));
    // Zero-length fields.
    for f in [
        frame(&[b"", b"", b"", b""]),
        frame(&[b"", ALICE_PW.as_bytes(), b"imap", b""]),
        frame(&[b"alice", b"", b"imap", b""]),
        frame(&[b"alice", ALICE_PW.as_bytes(), b"", b""]),
        frame(&[b"", b"", b"", b"", b""]),
    ] {
        let a = raw(&s, &f);
        assert!(a.as_deref().is_some_and(|t| t.starts_with("NO")), "{a:?}");
    }
    // NUL bytes: stock saslauthd would check the prefix "alice master pw".
    let mut nul_pw = ALICE_PW.as_bytes().to_vec();
    nul_pw.extend_from_slice(b"\0junk");
    assert_eq!(
        raw(&s, &frame(&[b"alice", &nul_pw, b"imap", b""])).as_deref(),
        Some("NO malformed request")
    );
    assert_eq!(
        raw(&s, &frame(&[b"ali\0ce", ALICE_PW.as_bytes(), b"imap", b""])).as_deref(),
        Some("NO malformed request")
    );
    // Invalid UTF-8 (left to the core).
    let a = raw(
        &s,
        &frame(&[b"al\xffice", ALICE_PW.as_bytes(), b"imap", b""]),
    );
    assert!(a.as_deref().is_some_and(|t| t.starts_with("NO")), "{a:?}");
    let a = raw(&s, &frame(&[b"alice", b"\xc3\x28\xa0\xa1", b"imap", b""]));
    assert!(a.as_deref().is_some_and(|t| t.starts_with("NO")), "{a:?}");
    // Trailing bytes after a fifth field.
    let mut trailing = full.clone();
    trailing.extend_from_slice(b"zz");
    assert_eq!(raw(&s, &trailing).as_deref(), Some("NO malformed request"));
    // Garbage: pseudo-random bytes, then half-close; answer or EOF, never a hang.
    let garbage: Vec<_> = (0..10u64)
        .map(|th| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut seed = 0x2545_f491_4f6c_dd1du64 ^ (th * 0x9e37_79b9);
                for round in 0..30usize {
                    let len = 1 + (round * 37 + th as usize * 11) % 700;
                    let junk: Vec<u8> = (0..len)
                        .map(|_| {
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            seed as u8
                        })
                        .collect();
                    let mut c = UnixStream::connect(&s).unwrap();
                    let _ = c.write_all(&junk);
                    let _ = c.shutdown(std::net::Shutdown::Write);
                    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut buf = Vec::new();
                    let _ = c.read_to_end(&mut buf);
                    assert!(
                        buf.is_empty() || buf.get(2..4) == Some(b"NO"),
                        "garbage got {buf:?}"
                    );
                }
            })
        })
        .collect();
    for g in garbage {
        g.join().unwrap();
    }
    // 5,000 connections opened and dropped.
    let openers: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                for _ in 0..1250 {
                    drop(UnixStream::connect(&s).unwrap());
                }
            })
        })
        .collect();
    for o in openers {
        o.join().unwrap();
    }
    // 200 idle connections holding half a frame.
    let idle: Vec<UnixStream> = (0..200)
        .map(|_| {
            let mut c = UnixStream::connect(&s).unwrap();
            c.write_all(&full[..9]).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        d.fds() >= baseline + 200,
        "idle connections are held ({} fds)",
        d.fds()
    );
    // Good clients are answered while they are held.
    let t0 = Instant::now();
    assert!(is_ok(&raw(
        &s,
        &frame(&[b"alice", fx.app_imap.as_bytes(), b"imap", b""])
    )));
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "answer took {:?}",
        t0.elapsed()
    );
    // After the timeout the daemon has closed them all.
    std::thread::sleep(Duration::from_millis(2500));
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            c.read(&mut buf).unwrap_or(0),
            0,
            "idle connection not dropped"
        );
    }
    stop.store(true, Ordering::SeqCst);
    checker.join().unwrap();
    let after = count_fds_settle(&d, baseline);
    let listing: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(after, baseline, "fd count back to baseline: {listing:?}");
    assert!(good.load(Ordering::SeqCst) > 20, "the good client ran");
    assert_eq!(
        bad.load(Ordering::SeqCst),
        0,
        "well-behaved clients got wrong answers"
    );
    assert!(is_ok(&raw(
        &s,
        &frame(&[b"alice", ALICE_PW.as_bytes(), b"imap", b""])
    )));
    let (st, log) = d.stop();
    assert!(st.success(), "{st}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains(ALICE_PW), "password in the log");
}

#[test]
fn delays_and_half_frames_do_not_hold_the_only_worker() {
    let fx = fixture();
    let d = start_daemon(
        &fx,
        "run",
        &["-n", "1", "--fail-delay", "2s", "--timeout", "5s"],
    );
    let s = d.socket();
    let half: Vec<UnixStream> = (0..5)
        .map(|_| {
            let mut c = UnixStream::connect(&s).unwrap();
            c.write_all(&[0, 5, b'a']).unwrap();
            c
        })
        .collect();
    let slow = {
        let s = s.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let a = raw(&s, &frame(&[b"alice", b"wrong", b"imap", b""]));
            (a, t0.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    assert!(is_ok(&raw(
        &s,
        &frame(&[b"alice", ALICE_PW.as_bytes(), b"imap", b""])
    )));
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "good answer took {:?}",
        t0.elapsed()
    );
    let (a, took) = slow.join().unwrap();
    assert_eq!(a.as_deref(), Some("NO authentication failed"));
    assert!(
        took >= Duration::from_millis(1900),
        "refusal came after {took:?}"
    );
    drop(half);
    let (st, _) = d.stop();
    assert!(st.success());
}

#[test]
fn sigterm_finishes_in_flight_and_cleans_up() {
    let fx = fixture();
    let d = start_daemon(&fx, "run", &["--fail-delay", "3s"]);
    let s = d.socket();
    let pid_file = d.sock_dir.join("saslauthd.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        d.pid().to_string()
    );
    assert_eq!(
        std::fs::metadata(&s).unwrap().permissions().mode() & 0o777,
        0o660
    );
    assert_eq!(
        std::fs::metadata(&d.sock_dir).unwrap().permissions().mode() & 0o777,
        0o710
    );
    let pending = {
        let s = s.clone();
        std::thread::spawn(move || raw(&s, &frame(&[b"alice", b"wrong", b"imap", b""])))
    };
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let dir = d.sock_dir.clone();
    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}: {log}");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "stop waited for the delay"
    );
    assert_eq!(
        pending.join().unwrap().as_deref(),
        Some("NO authentication failed"),
        "in-flight request answered"
    );
    assert!(!dir.join("mux").exists(), "socket removed");
    assert!(!dir.join("saslauthd.pid").exists(), "pid file removed");
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn live_socket_refuses_second_daemon_stale_one_is_replaced() {
    let fx = fixture();
    let mut d = start_daemon(&fx, "run", &["--fail-delay", "0"]);
    let out = Command::new(SASLGATED)
        .args(["-a", "saslgate", "-d", "-m"])
        .arg(&d.sock_dir)
        .arg("--config")
        .arg(&fx.conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another daemon is answering"), "{err}");
    assert!(is_ok(&raw(
        &d.socket(),
        &frame(&[b"alice", ALICE_PW.as_bytes(), b"imap", b""])
    )));
    // Killed hard: the socket file stays behind, stale.
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    assert!(d.socket().exists());
    let d2 = start_daemon(&fx, "run", &["--fail-delay", "0"]);
    assert!(is_ok(&raw(
        &d2.socket(),
        &frame(&[b"alice", ALICE_PW.as_bytes(), b"imap", b""])
    )));
    let (st, _) = d2.stop();
    assert!(st.success());
}

#[test]
fn sighup_reloads_and_keeps_old_config_when_broken() {
    let fx = fixture();
    // A second database where alice has another password.
    let conf2 = fx.dir.path().join("other.conf");
    write_conf(&conf2, &fx.dir.path().join("other.db"), "");
    cli(&conf2, &["init"], None);
    cli(&conf2, &["user", "add", "alice"], None);
    cli(&conf2, &["passwd", "alice", "--stdin"], Some("other pw"));
    let live = fx.dir.path().join("live.conf");
    std::fs::copy(&fx.conf, &live).unwrap();
    let d = start_daemon_conf(&fx, &live, "run", &["--fail-delay", "0"]);
    let s = d.socket();
    let ok = |pw: &str| is_ok(&raw(&s, &frame(&[b"alice", pw.as_bytes(), b"imap", b""])));
    assert!(ok(ALICE_PW));
    std::fs::write(&live, "this is = not [valid toml").unwrap();
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("reload failed") {
        assert!(
            Instant::now() < deadline,
            "no reload message: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok(ALICE_PW), "old configuration kept");
    std::fs::copy(&conf2, &live).unwrap();
    d.signal("HUP");
    while !d.log_text().contains("configuration reloaded") {
        assert!(
            Instant::now() < deadline,
            "no reload message: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok("other pw"));
    assert!(!ok(ALICE_PW));
    let (st, _) = d.stop();
    assert!(st.success());
}

#[test]
fn flags_and_usage_errors() {
    let run = |args: &[&str]| Command::new(SASLGATED).args(args).output().unwrap();
    let out = run(&["-a", "pam", "-d", "-m", "/nonexistent/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only implements `-a saslgate`"));
    let out = run(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "-a",
        "-m",
        "-n",
        "-d",
        "-c",
        "-t",
        "-r",
        "-O",
        "--db",
        "--config",
        "--field-limit",
        "--fail-delay",
    ] {
        assert!(help.contains(flag), "help lacks {flag}");
    }
    let out = run(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("saslgated "));
    // A missing explicit config file: clear error, no socket.
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "-d",
        "-m",
        dir.path().join("m").to_str().unwrap(),
        "-O",
        "/nonexistent/saslgate.conf",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/saslgate.conf"));
    assert!(!dir.path().join("m/mux").exists());
}

#[test]
fn cache_flag_and_db_override() {
    let fx = fixture();
    let db = fx.dir.path().join("sg.db");
    let d = start_daemon(
        &fx,
        "run2",
        &[
            "--fail-delay",
            "0",
            "-c",
            "-t",
            "30",
            "--db",
            db.to_str().unwrap(),
        ],
    );
    assert!(d.log_text().contains("cache 30s"), "{}", d.log_text());
    for _ in 0..3 {
        assert!(testsaslauthd(&d.socket(), "alice", ALICE_PW, "imap", None));
    }
    // An admin change invalidates the cache at once.
    cli(
        &fx.conf,
        &["passwd", "alice", "--stdin"],
        Some("new alice pw"),
    );
    assert!(!testsaslauthd(&d.socket(), "alice", ALICE_PW, "imap", None));
    assert!(testsaslauthd(
        &d.socket(),
        "alice",
        "new alice pw",
        "imap",
        None
    ));
    let (st, _) = d.stop();
    assert!(st.success());
}

#[test]
fn systemd_socket_activation_and_readiness() {
    let activate = need_tool("systemd-socket-activate", "systemd");
    let fx = fixture();
    let dir = fx.dir.path().join("act");
    std::fs::create_dir(&dir).unwrap();
    let sock = dir.join("mux");
    let notify_path = fx.dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let log = fx.dir.path().join("act.log");
    struct Reap(Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let mut child = Command::new(activate)
        .arg("-l")
        .arg(&sock)
        // The activator passes only the variables named with -E.
        .arg(format!("--setenv=NOTIFY_SOCKET={}", notify_path.display()))
        .arg(SASLGATED)
        .args(["-a", "saslgate", "-f", "-d", "--fail-delay", "0", "-m"])
        .arg(&dir)
        .arg("--config")
        .arg(&fx.conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .map(Reap)
        .unwrap();
    // systemd-socket-activate accepts nothing itself: it starts the daemon at
    // the first connection, with the listening socket as fd 3.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let answer = raw(
        &sock,
        &frame(&[b"alice", ALICE_PW.as_bytes(), b"imap", b""]),
    );
    assert!(
        is_ok(&answer),
        "{answer:?}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]);
    assert!(msg.contains("READY=1"), "{msg}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the socket passed by systemd"), "{text}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    let st = child.0.wait().unwrap();
    assert!(st.success(), "{st}");
    // systemd's socket: not removed by the daemon (systemd-socket-activate owns it).
}

#[test]
fn libsasl2_checkpass_through_saslauthd() {
    let fx = fixture();
    let bin = compile_sasl_program("tests/daemon_checkpass.c", &fx.dir.path().join("checkpass"));
    let d = start_daemon(&fx, "run", &["--fail-delay", "0"]);
    let check = |user: &str, pass: &str, service: &str| -> bool {
        let out = Command::new(&bin)
            .arg(d.socket())
            .args([service, user, pass])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        match out.status.code() {
            Some(0) => true,
            Some(1) => false,
            other => panic!(
                "checkpass {other:?}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    };
    assert!(check("alice", ALICE_PW, "imap"));
    assert!(!check("alice", "wrong", "imap"));
    assert!(check("alice", &fx.app_imap, "imap"));
    assert!(!check("alice", &fx.app_imap, "smtp"));
    assert!(check("alice", &fx.app_smtp, "smtp"));
    assert!(!check("bob", BOB_PW, "imap"));
    assert!(check("bob", &format!("{BOB_PW}{}", totp_now()), "imap"));
    assert!(check("bob", &format!("{BOB_PW}{}", fx.codes[1]), "imap"));
    assert!(!check("carol", "carol pw", "imap"));
    assert!(!check("nobody", "x", "imap"));
    let (st, log) = d.stop();
    assert!(st.success());
    assert!(log.contains("result=OK"), "{log}");
}

/// A proxy ticket (what the auth_http face hands nginx after a two-step
/// login) through libsasl2's real `sasl_checkpass` and saslgated's saslauthd
/// face, on a host with `proxy_ticket_backends`: accepted once.
#[test]
fn libsasl2_checkpass_accepts_a_proxy_ticket_once() {
    let fx = fixture();
    let bin = compile_sasl_program("tests/daemon_checkpass.c", &fx.dir.path().join("checkpass"));
    let conf = fx.dir.path().join("backend.conf");
    let text = std::fs::read_to_string(&fx.conf).unwrap();
    std::fs::write(
        &conf,
        format!("proxy_ticket_backends = [\"127.0.0.1:10143\"]\n{text}"),
    )
    .unwrap();
    let gate = saslgate::Gate::open(saslgate::Config::load(&conf).unwrap()).unwrap();
    let issue = |service: &str| {
        let t = gate
            .issue_ticket("bob", service, "127.0.0.1:10143".parse().unwrap())
            .unwrap();
        String::from_utf8(t.as_bytes().to_vec()).unwrap()
    };
    let d = start_daemon_conf(&fx, &conf, "tickets", &["--fail-delay", "0"]);
    let check = |user: &str, pass: &str, service: &str| -> bool {
        let out = Command::new(&bin)
            .arg(d.socket())
            .args([service, user, pass])
            .output()
            .unwrap();
        match out.status.code() {
            Some(0) => true,
            Some(1) => false,
            other => panic!("checkpass {other:?}"),
        }
    };
    let ticket = issue("imap");
    assert!(check("bob", &ticket, "imap"), "ticket refused");
    assert!(!check("bob", &ticket, "imap"), "ticket accepted twice");
    // Bound to its service: a pop3 ticket is no imap login (and is burnt).
    let pop = issue("pop3");
    assert!(!check("bob", &pop, "imap"));
    assert!(!check("bob", &pop, "pop"));
    let (st, log) = d.stop();
    assert!(st.success());
    assert!(log.contains("credential=\"proxy-ticket\""), "{log}");
    assert!(!log.contains(&ticket), "ticket in the log");
}

#[test]
fn socket_group_and_modes() {
    use std::os::unix::fs::MetadataExt;
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let Some(gid) = groups
        .lines()
        .find(|l| l.starts_with("nogroup:"))
        .and_then(|l| l.split(':').nth(2))
        .and_then(|g| g.parse::<u32>().ok())
    else {
        panic!("FAIL (not skipped): no `nogroup` group in /etc/group (Debian base has one)");
    };
    let fx = fixture();
    let d = start_daemon(&fx, "grp", &["--fail-delay", "0", "--group", "nogroup"]);
    let sock = std::fs::metadata(d.socket()).unwrap();
    let dir = std::fs::metadata(&d.sock_dir).unwrap();
    assert_eq!((sock.gid(), sock.mode() & 0o777), (gid, 0o660));
    assert_eq!((dir.gid(), dir.mode() & 0o777), (gid, 0o710));
    let (st, _) = d.stop();
    assert!(st.success());
    let out = Command::new(SASLGATED)
        .args([
            "-d",
            "-m",
            "/tmp/saslgated-never-created",
            "--group",
            "no-such-group-here",
        ])
        .arg("--config")
        .arg(&fx.conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-group-here"));
}

/// Splits a saslgated decision line (after `saslgated[PID]: `) into its
/// `key=value` fields the way a quote-aware log parser would: fields are
/// separated by spaces outside double quotes; each value's quoting (`"..."`,
/// `\"`, `\\`, `\xNN`, `\u{...}`) is undone.
fn parse_log_fields(line: &str) -> Vec<(String, String)> {
    let body = line.split_once("]: ").map_or(line, |(_, b)| b);
    let mut fields = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return fields;
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let mut value = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
        }
        while let Some(c) = chars.next() {
            match c {
                '"' if quoted => break,
                ' ' if !quoted => break,
                '\\' => match chars.next() {
                    Some('x') => {
                        let hex: String = chars.by_ref().take(2).collect();
                        value.push(u8::from_str_radix(&hex, 16).expect("hex escape") as char);
                    }
                    Some('u') => {
                        let code: String = chars
                            .by_ref()
                            .skip_while(|c| *c == '{')
                            .take_while(|c| *c != '}')
                            .collect();
                        value
                            .push(char::from_u32(u32::from_str_radix(&code, 16).unwrap()).unwrap());
                    }
                    Some(other) => value.push(other),
                    None => value.push('\\'),
                },
                other => value.push(other),
            }
        }
        fields.push((key, value));
    }
}

/// Security finding 10: a login (or realm) carrying ` client=... result=OK`
/// must not forge fields in the log line that fail2ban-style parsers read.
#[test]
fn forged_fields_in_login_cannot_forge_log_fields() {
    let fx = fixture();
    let d = start_daemon(&fx, "run", &["--fail-delay", "0"]);
    let forged = "x client=203.0.113.5 account=alice result=OK";
    let forged_realm = "r\" result=OK \\ client=198.51.100.1";
    let a = raw(
        &d.socket(),
        &frame(&[
            forged.as_bytes(),
            b"whatever",
            b"imap",
            forged_realm.as_bytes(),
            b"192.0.2.50;1234",
        ]),
    );
    assert!(a.as_deref().is_some_and(|t| t.starts_with("NO")), "{a:?}");
    let (st, log) = d.stop();
    assert!(st.success());
    let line = log
        .lines()
        .find(|l| l.contains("result=") && l.contains("203.0.113.5"))
        .unwrap_or_else(|| panic!("no decision line for the forged login: {log}"));
    let fields = parse_log_fields(line);
    let count = |k: &str| fields.iter().filter(|(key, _)| key == k).count();
    let value = |k: &str| {
        fields
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    for key in ["result", "client", "login", "realm", "service"] {
        assert_eq!(
            count(key),
            1,
            "{key}= appears {} times in {line:?}",
            count(key)
        );
    }
    assert!(count("account") <= 1, "{line:?}");
    assert_eq!(value("result"), "NO", "{line:?}");
    assert_eq!(value("client"), "192.0.2.50;1234", "{line:?}");
    assert_eq!(value("login"), forged, "{line:?}");
    assert_eq!(value("realm"), forged_realm, "{line:?}");
    // A naive parser (`client=(\S+)`, splitting on spaces) is not fooled either:
    // each key appears once in the raw line.
    for key in [" result=", " client=", " login=", " account="] {
        assert!(line.matches(key).count() <= 1, "{key} twice in {line:?}");
    }
    // Every field is a known key: nothing a value held became a field.
    let known = [
        "result",
        "reason",
        "detail",
        "cause",
        "account",
        "credential",
        "service",
        "realm",
        "client",
        "login",
    ];
    for (k, _) in &fields {
        assert!(
            known.contains(&k.as_str()),
            "unexpected field {k:?} in {line:?}"
        );
    }
}

/// The open-connection cap holds with the blocking acceptors: at the cap a new
/// client waits in the listen queue (not accepted, no fd), and is served as soon
/// as a held connection ends.
#[test]
fn connection_cap_holds_and_queued_clients_are_served_after() {
    let fx = fixture();
    let d = start_daemon(
        &fx,
        "run",
        &[
            "--fail-delay",
            "0",
            "--max-connections",
            "4",
            "-n",
            "2",
            "--timeout",
            "20s",
        ],
    );
    let s = d.socket();
    let good = frame(&[b"alice", fx.app_imap.as_bytes(), b"imap", b""]);
    assert!(is_ok(&raw(&s, &good)));
    std::thread::sleep(Duration::from_millis(200));
    let base = d.fds();
    let idle: Vec<UnixStream> = (0..4)
        .map(|_| {
            let mut c = UnixStream::connect(&s).unwrap();
            c.write_all(&[0, 5, b'a']).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(d.fds(), base + 4, "the four idle clients are held");
    let waiting = {
        let (s, good) = (s.clone(), good.clone());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            (raw(&s, &good), t0.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        d.fds(),
        base + 4,
        "a fifth connection was accepted at the cap"
    );
    drop(idle);
    let (a, took) = waiting.join().unwrap();
    assert!(is_ok(&a), "{a:?}");
    assert!(
        took >= Duration::from_millis(600),
        "answered after {took:?}, while the cap was reached"
    );
    assert!(
        took < Duration::from_secs(5),
        "answered only after {took:?}: the freed places were not used"
    );
    let (st, log) = d.stop();
    assert!(st.success(), "{log}");
}

/// The block list on the saslauthd socket: a 5-field request (with the
/// client address) from a blocked network is answered "NO access denied";
/// 4-field requests, which Debian 12's clients (testsaslauthd, libsasl2's
/// sasl_checkpass) send, carry no address and cannot be blocked.
#[test]
fn blocked_addresses_on_the_saslauthd_socket() {
    let fx = fixture();
    cli(&fx.conf, &["block", "add", "192.0.2.0/24"], None);
    let d = start_daemon(&fx, "run", &["--fail-delay", "0"]);
    let s = d.socket();
    let pw = ALICE_PW.as_bytes();
    let a = raw(
        &s,
        &frame(&[b"alice", pw, b"imap", b"", b"192.0.2.7;40000"]),
    );
    assert_eq!(a.as_deref(), Some("NO access denied"));
    assert!(is_ok(&raw(
        &s,
        &frame(&[b"alice", pw, b"imap", b"", b"198.51.100.7;40000"])
    )));
    assert!(is_ok(&raw(&s, &frame(&[b"alice", pw, b"imap", b""]))));
    assert!(testsaslauthd(&s, "alice", ALICE_PW, "imap", None));
    cli(&fx.conf, &["block", "remove", "192.0.2.0/24"], None);
    assert!(is_ok(&raw(
        &s,
        &frame(&[b"alice", pw, b"imap", b"", b"192.0.2.7;40000"])
    )));
    let (st, log) = d.stop();
    assert!(st.success());
    assert!(log.contains("reason=blocked"), "{log}");
}

/// The saslauthd face answers from its one table (`saslgate::daemon::answers`):
/// what the real daemon sends is that table's row, and the texts the other
/// suites expect (`saslgate_testkit::ANSWER_*`) are the table's too.
#[test]
fn answers_come_from_the_one_table() {
    use saslgate::daemon::answers::{Outcome, UNAVAILABLE_TEXT};
    use saslgate::RefuseReason;
    use saslgate_testkit as kit;
    for (outcome, expected) in [
        (Outcome::Accepted, kit::ANSWER_OK),
        (
            Outcome::Refused(RefuseReason::BadCredentials),
            kit::ANSWER_BAD,
        ),
        (
            Outcome::Refused(RefuseReason::NotAllowed),
            kit::ANSWER_NOT_ALLOWED,
        ),
        (
            Outcome::Refused(RefuseReason::Throttled),
            kit::ANSWER_THROTTLED,
        ),
        (
            Outcome::Refused(RefuseReason::Disabled),
            kit::ANSWER_DISABLED,
        ),
        (Outcome::Unavailable, kit::ANSWER_UNAVAILABLE),
    ] {
        assert_eq!(outcome.text(), expected, "{outcome:?}");
    }
    assert_eq!(kit::ANSWER_UNAVAILABLE, format!("NO {UNAVAILABLE_TEXT}"));

    let fx = fixture();
    let d = start_daemon(&fx, "table", &["--fail-delay", "0"]);
    let ask = |login: &str, pw: &str| {
        raw(
            &d.socket(),
            &frame(&[login.as_bytes(), pw.as_bytes(), b"imap", b""]),
        )
    };
    let refused = |r| Some(Outcome::Refused(r).text().to_string());
    assert_eq!(
        ask("alice", ALICE_PW),
        Some(Outcome::Accepted.text().to_string())
    );
    assert_eq!(ask("alice", "wrong"), refused(RefuseReason::BadCredentials));
    assert_eq!(ask("carol", "carol pw"), refused(RefuseReason::Disabled));
    assert_eq!(ask("alice", ""), refused(RefuseReason::BadInput));
    // The database taken away: "unavailable" once the engine has looked at
    // the path again (at most every 0.1 s), never "authentication failed".
    let db = fx.dir.path().join("sg.db");
    std::fs::rename(&db, fx.dir.path().join("moved.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let answer = ask("alice", ALICE_PW);
        if !is_ok(&answer) || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(answer, Some(Outcome::Unavailable.text().to_string()));
    assert_eq!(answer.as_deref(), Some(kit::ANSWER_UNAVAILABLE));
}
