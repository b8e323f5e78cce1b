//! The write-ahead log stays bounded under sustained load from many processes
//! (issue 11, finding 7b): nine processes run the plugin (target/release/
//! libsaslgate.so) in the real libsasl2 (tests/wal_load.c) against one
//! database for 30 s: eight send wrong passwords from one address (throttled
//! after its budget), one logs in with an app password from another. The
//! `-wal` file is sampled every 5 ms and must stay under [`WAL_BOUND`]
//! (documented in doc/hardening.md). Before the fix it reached 550 MiB.
//!
//! Environment: `WAL_SECONDS` (default 30), `WAL_GUESSERS` (default 8),
//! `SASLGATE_SO` / `SASLGATE_BIN` (another build's plugin and CLI, to run the
//! same load against it).

use saslgate_testkit::compile_sasl_program;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the test asserts; saslgate aims at 4 MiB (`store::WAL_LIMIT_BYTES`).
const WAL_BOUND: u64 = 16 << 20;

fn need(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "FAIL (not skipped): {path} is missing; install the Debian package {package}"
    );
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn wal_stays_bounded_under_nine_plugin_processes() {
    need("/usr/bin/cc", "build-essential");
    need("/usr/include/sasl/sasl.h", "libsasl2-dev");
    let seconds: f64 = std::env::var("WAL_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30.0);
    let guessers: usize = std::env::var("WAL_GUESSERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let so = match std::env::var_os("SASLGATE_SO") {
        Some(p) => PathBuf::from(p),
        None => saslgate_testkit::fresh_plugin(),
    };
    let cli = std::env::var_os("SASLGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_saslgate")));
    assert!(
        so.exists(),
        "{} missing (cargo build --release)",
        so.display()
    );

    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::os::unix::fs::symlink(&so, plugins.join("libsaslgate.so")).unwrap();
    let db = dir.path().join("sg.db");
    let wal = dir.path().join("sg.db-wal");
    let conf = dir.path().join("sg.conf");
    // No row cap: the test counts every refusal in the trail, and a fast
    // machine writes more than the default cap's million rows in the run.
    std::fs::write(
        &conf,
        format!("db = {:?}\nbcrypt_cost = 4\naudit_max_rows = 0\n", db),
    )
    .unwrap();

    // Test data with the CLI, as an admin makes it.
    let sg = |args: &[&str], stdin: Option<&str>| -> String {
        let mut c = Command::new(&cli);
        c.arg("--config").arg(&conf).args(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        {
            use std::io::Write;
            let mut i = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                i.write_all(s.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "saslgate {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    sg(&["init"], None);
    sg(&["user", "add", "alice"], None);
    sg(&["passwd", "alice", "--stdin"], Some("alice master pw"));
    let app = sg(&["app-password", "add", "alice", "--label", "phone"], None);
    assert!(!app.is_empty());

    let driver = dir.path().join("wal_load");
    compile_sasl_program("tests/wal_load.c", &driver);

    // Sample the WAL while the load runs.
    let stop = Arc::new(AtomicBool::new(false));
    let max_wal = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_wal, wal) = (stop.clone(), max_wal.clone(), wal.clone());
        std::thread::spawn(move || {
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                max_wal.fetch_max(size(&wal), Ordering::Relaxed);
                samples += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            samples
        })
    };
    let t0 = Instant::now();
    let run = |ip: &str, pw: &str, want: &str| {
        let mut c = Command::new(&driver);
        if want == "no" {
            // Exit without sasl_done, as Postfix smtpd does: the plugin's exit
            // handler writes what is still buffered.
            c.env("WAL_LOAD_NO_DONE", "1");
        }
        c.arg(&plugins)
            .arg(&conf)
            .arg(seconds.to_string())
            .args([ip, "alice", pw, want])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut children: Vec<(&str, std::process::Child)> = (0..guessers)
        .map(|_| ("guesser", run("203.0.113.66", "wrong", "no")))
        .collect();
    children.push(("app password", run("198.51.100.5", &app, "ok")));
    let mut failures = Vec::new();
    let mut report = Vec::new();
    let mut refused = 0i64;
    for (what, child) in children {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        report.push(format!("{what}: {text}"));
        if let Some(n) = text
            .split(' ')
            .find_map(|f| f.strip_prefix("no="))
            .and_then(|n| n.parse::<i64>().ok())
        {
            refused += n;
        }
        if !out.status.success() {
            failures.push(format!(
                "{what}: {} {text} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let max = max_wal.load(Ordering::Relaxed);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    // Every refusal is in the trail: a row each, or counted by a summary row
    // ("N more refusals suppressed", written at the latest when a process ends).
    let in_trail: i64 = conn
        .prepare("SELECT coalesce(detail, '') FROM audit WHERE outcome = 'refused'")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|d| {
            let d = d.unwrap();
            match d.split_once(" more refusals suppressed") {
                Some((n, _)) => n.parse().unwrap(),
                None => 1,
            }
        })
        .sum();
    println!(
        "{} processes for {elapsed:.1} s: WAL max {:.2} MiB ({samples} samples), \
         database {:.2} MiB, {rows} audit rows\n  {}",
        guessers + 1,
        max as f64 / (1 << 20) as f64,
        size(&db) as f64 / (1 << 20) as f64,
        report.join("\n  ")
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(in_trail, refused, "refusals in the audit trail");
    assert!(
        max < WAL_BOUND,
        "WAL reached {max} bytes (bound {WAL_BOUND})"
    );
}
