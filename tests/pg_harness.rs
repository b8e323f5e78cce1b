//! The private PostgreSQL cluster of testkit/src/pg.rs works as the other
//! PostgreSQL tests rely on: it starts as an unprivileged user, answers over
//! TCP (password) and the unix socket, keeps its data across stop/start_again,
//! hangs while paused and answers again after resume, and leaves no process
//! behind when dropped.

use saslgate_testkit::pg;

use pg::PgCluster;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `psql URL -c SQL` as a client would run it (connection string, 3 s connect
/// timeout), returning (success, stdout or stderr, elapsed).
fn psql_url(cluster: &PgCluster, url: &str, sql: &str) -> (bool, String, Duration) {
    let t = Instant::now();
    let out = Command::new(cluster.program("psql"))
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "3")
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else {
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    };
    (out.status.success(), text, t.elapsed())
}

/// The process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Waits up to 5 s for a process to end (the postmaster removes its pid file
/// just before it exits).
fn gone_soon(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Real uid of a process, from /proc/PID/status.
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn cluster_lifecycle() {
    let Some(mut cluster) = pg::start_or_skip() else {
        return;
    };
    let pid = cluster.pid().unwrap();
    assert!(alive(pid));
    assert_ne!(uid_of(pid), 0, "PostgreSQL must not run as root");

    // A database, reached by TCP with the password and by the socket.
    cluster.create_database("harness").unwrap();
    let url = cluster.url("harness");
    let (ok, out, _) = psql_url(
        &cluster,
        &url,
        "CREATE TABLE t(v int); INSERT INTO t VALUES (41), (1); SELECT sum(v) FROM t",
    );
    assert!(ok, "TCP connect: {out}");
    assert_eq!(out, "42");
    let (ok, out, _) = psql_url(
        &cluster,
        &cluster.socket_url(pg::SUPERUSER, "harness"),
        "SELECT count(*) FROM t",
    );
    assert!(ok, "socket connect: {out}");
    assert_eq!(out, "2");
    let (ok, out, _) = psql_url(&cluster, &cluster.superuser_url(), "SELECT current_user");
    assert!(ok && out == pg::SUPERUSER, "superuser url: {out}");

    // TCP needs the right password.
    let wrong = cluster.url_as(pg::SUPERUSER, Some("wrong"), "harness");
    let (ok, out, _) = psql_url(&cluster, &wrong, "SELECT 1");
    assert!(!ok, "wrong password accepted");
    assert!(out.contains("password authentication failed"), "{out}");

    // A role with a password logs in over TCP; least privilege is enforced.
    cluster.create_role("harness_login", "pw123").unwrap();
    let login = cluster.url_as("harness_login", Some("pw123"), "harness");
    let (ok, out, _) = psql_url(&cluster, &login, "SELECT current_user");
    assert!(ok && out == "harness_login", "{out}");
    let (ok, out, _) = psql_url(&cluster, &login, "SELECT * FROM t");
    assert!(!ok && out.contains("permission denied"), "{out}");

    // Paused: a new connection times out (bounded), an open one hangs; resumed:
    // both work again.
    cluster.pause();
    let (ok, _, took) = psql_url(&cluster, &url, "SELECT 1");
    assert!(!ok, "a paused server answered");
    assert!(
        took < Duration::from_secs(8),
        "connect timeout not honoured: {took:?}"
    );
    cluster.resume();
    let (ok, out, _) = psql_url(&cluster, &url, "SELECT count(*) FROM t");
    assert!(ok && out == "2", "after resume: {out}");

    // Stopped: nothing listens; started again: the data is still there.
    let children = pg::children_of(pid);
    assert!(!children.is_empty(), "postmaster has no children?");
    cluster.stop();
    assert!(!alive(pid));
    assert!(
        children.iter().all(|c| !alive(*c)),
        "a backend survived stop"
    );
    let (ok, _, took) = psql_url(&cluster, &url, "SELECT 1");
    assert!(
        !ok && took < Duration::from_secs(3),
        "stopped server answered"
    );
    cluster.start_again();
    let (ok, out, _) = psql_url(&cluster, &url, "SELECT sum(v) FROM t");
    assert!(ok && out == "42", "after restart: {out}");

    // Dropped while paused: everything it started ends, its directory goes.
    let pid = cluster.pid().unwrap();
    let children = pg::children_of(pid);
    let dir = cluster.dir().to_path_buf();
    cluster.pause();
    drop(cluster);
    assert!(!alive(pid), "postmaster survived drop");
    assert!(children.iter().all(|c| !alive(*c)), "a child survived drop");
    assert!(!dir.exists(), "tempdir left behind");
}

/// Two clusters side by side get different ports and directories.
#[test]
fn two_clusters_are_independent() {
    let Some(a) = pg::start_or_skip() else { return };
    let Some(b) = pg::start_or_skip() else { return };
    assert_ne!(a.port(), b.port());
    a.create_database("only_a").unwrap();
    assert_eq!(
        a.query(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'only_a'"
        )
        .unwrap(),
        "1"
    );
    assert_eq!(
        b.query(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'only_a'"
        )
        .unwrap(),
        "0"
    );
}

/// The shell twin (scripts/lib/pg.sh, for benchmark scripts) starts a cluster
/// that answers on its URL and stops it again, under dash.
#[test]
fn shell_twin_starts_and_stops() {
    if let Err(skip) = pg::find_bin() {
        pg::report_skip(&skip);
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("saslgate-pgsh.")
        .tempdir_in("/tmp")
        .unwrap();
    let lib = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lib/pg.sh");
    let script = r#"
        . "$1"
        pg_start "$2" || exit 1
        echo "url=$PG_URL"
        pg_psql postgres 'SELECT 6 * 7' || exit 1
        PGCONNECT_TIMEOUT=3 "$PG_BIN/psql" -X -At -d "$PG_URL" -c 'SELECT current_user' || exit 1
        head -n 1 "$2/data/postmaster.pid"
        pg_stop "$2"
    "#;
    let out = Command::new("sh")
        .args(["-c", script, "sh", lib])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pg.sh: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("url=postgresql://postgres:"),
        "{stdout}"
    );
    assert_eq!(lines[1], "42");
    assert_eq!(lines[2], pg::SUPERUSER);
    let pid: u32 = lines[3].trim().parse().unwrap();
    assert!(gone_soon(pid), "pg_stop left the postmaster running");
    assert!(!dir.path().join("data/postmaster.pid").exists());
}
