//! A private PostgreSQL cluster for the tests: Debian's `postgresql` binaries,
//! `initdb` into a temporary directory, the server running as an unprivileged
//! user (`nobody` when the tests run as root, as in CI), its unix socket in that
//! directory and a free 127.0.0.1 port. It never uses or changes a system
//! cluster, and stopping it (or dropping it) ends only the processes it started.
//!
//! ```ignore
//! use saslgate_testkit::pg;
//! let Some(cluster) = pg::start_or_skip() else { return }; // printed "SKIP: ..."
//! cluster.create_database("t1").unwrap();
//! let url = cluster.url("t1");
//! ```
//!
//! Authentication: unix-socket connections are trusted (the socket directory is
//! private to the cluster's user and root); TCP connections need a password
//! (scram-sha-256). The superuser is `postgres` with the password
//! [`PgCluster::password`].

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The cluster's superuser.
pub const SUPERUSER: &str = "postgres";
/// Longest wait for the server to accept connections after a start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a fast shutdown before escalating to SIGQUIT, then SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The unprivileged account the server runs as when the tests run as root.
const UNPRIVILEGED: &str = "nobody";

pub struct PgCluster {
    /// Owns the directory (data/, the socket, the log); removed on drop.
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    password: String,
    /// (uid, gid) the server runs as; None when the tests are not root.
    run_as: Option<(u32, u32)>,
    settings: Vec<(String, String)>,
    postmaster: Option<Child>,
    paused: bool,
}

/// The cluster the fixtures of one test binary share (each a database of its
/// own in it, see `Fixture`): one `initdb` and start per binary instead of
/// one per test. Started by the first caller; it outlives every test, so a
/// guard process stops it and removes its directory when this process ends,
/// however it ends: the guard waits for the end of a pipe whose writing end
/// only this process holds (close-on-exec: no child inherits it), and
/// ignores the signals a terminal or `kill -- -PGID` sends the whole group.
pub fn shared() -> Result<&'static PgCluster, String> {
    static SHARED: OnceLock<Result<(PgCluster, ChildStdin), String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            // Room for several tests at once, each with its gates' pools.
            let cluster = PgCluster::start_with(&[("max_connections", "300")])?;
            let pid = cluster.pid().expect("the shared cluster runs");
            let guard = Command::new("sh")
                .args([
                    "-c",
                    r#"trap '' INT TERM HUP; read x; kill -INT "$1" 2>/dev/null; n=0
                       while kill -0 "$1" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
                       kill -KILL "$1" 2>/dev/null; rm -rf "$2""#,
                    "saslgate-pg-guard",
                ])
                .arg(pid.to_string())
                .arg(cluster.dir())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("start the shared cluster's guard: {e}"))?;
            let pipe = guard.stdin.expect("piped");
            Ok((cluster, pipe))
        })
        .as_ref()
        .map(|(cluster, _)| cluster)
        .map_err(Clone::clone)
}

/// The directory holding Debian's PostgreSQL server programs
/// (`/usr/lib/postgresql/<major>/bin`), the newest major when several exist.
/// `PG_BIN` overrides it.
pub fn find_bin() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").exists() && dir.join("postgres").exists() {
            return Ok(dir);
        }
        return Err(format!(
            "SKIP: PG_BIN={} has no initdb/postgres",
            dir.display()
        ));
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| {
            "SKIP: PostgreSQL is not installed (no /usr/lib/postgresql; apt-get install postgresql)"
                .to_string()
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("postgres").exists()).then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "SKIP: PostgreSQL server programs not found under /usr/lib/postgresql/*/bin \
         (apt-get install postgresql)"
            .to_string()
    })
}

/// Starts a cluster, or prints the "SKIP: ..." reason and returns None. The
/// line goes straight to stderr, past the test harness's output capture, so
/// that scripts/test-all.sh sees it (and counts the suite as skipped).
pub fn start_or_skip() -> Option<PgCluster> {
    match PgCluster::start() {
        Ok(cluster) => Some(cluster),
        Err(reason) => {
            report_skip(&reason);
            None
        }
    }
}

/// Writes `reason` (a line starting with "SKIP") to stderr uncaptured.
pub fn report_skip(reason: &str) {
    let _ = writeln!(std::io::stderr().lock(), "\n{reason}");
}

/// A 127.0.0.1 port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// (uid, gid) of a local account, from /etc/passwd (no libc call needed).
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd
        .lines()
        .find(|line| line.split(':').next() == Some(name))?;
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

fn effective_uid() -> u32 {
    fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}

/// Pids whose parent is `parent` (from /proc).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // stat is "pid (comm) state ppid ...": comm may hold spaces, so
            // split after the last ')'.
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Sends a signal by name with procps' `kill` (tests deny `unsafe`, so no libc).
fn signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(|p| p.to_string()))
        .stderr(Stdio::null())
        .status();
}

impl PgCluster {
    /// initdb + start with the test settings (fsync off: the tests never crash
    /// the machine). Err is a line starting with "SKIP:" when PostgreSQL is not
    /// installed; any other failure panics.
    pub fn start() -> Result<PgCluster, String> {
        PgCluster::start_with(&[])
    }

    /// As [`start`](Self::start), with extra `postgres -c NAME=VALUE` settings.
    pub fn start_with(settings: &[(&str, &str)]) -> Result<PgCluster, String> {
        let bin = find_bin()?;
        let run_as = if effective_uid() == 0 {
            Some(lookup_user(UNPRIVILEGED).ok_or_else(|| {
                format!("SKIP: running as root but there is no `{UNPRIVILEGED}` account to run PostgreSQL as")
            })?)
        } else {
            None
        };
        // Under /tmp: every ancestor must be searchable by the server's user.
        let dir = tempfile::Builder::new()
            .prefix("saslgate-pg.")
            .tempdir_in("/tmp")
            .expect("tempdir for PostgreSQL");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown pg dir");
        }
        // Search-only for others: clients running as other users (Postfix's
        // smtpd, Cyrus) reach the socket; data/ itself is 0700 (initdb).
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).expect("chmod pg dir");
        let password = random_password();
        let pwfile = dir.path().join("pwfile");
        fs::File::create(&pwfile)
            .and_then(|mut f| writeln!(f, "{password}"))
            .expect("write pwfile");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).expect("chown pwfile");
        }
        let mut cluster = PgCluster {
            dir,
            bin,
            port: free_port(),
            password,
            run_as,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            postmaster: None,
            paused: false,
        };
        let out = cluster
            .as_server_user(cluster.bin.join("initdb"))
            .arg("-D")
            .arg(cluster.data_dir())
            .args([
                "--username",
                SUPERUSER,
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        let _ = fs::remove_file(&pwfile);
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.start_again();
        Ok(cluster)
    }

    /// A command run as the server's unprivileged user (supplementary groups
    /// dropped by std when switching from root), HOME pointed at our dir.
    fn as_server_user(&self, program: PathBuf) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("HOME", self.dir.path())
            .env_remove("PGDATA")
            .current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// A streaming standby of `primary`: `pg_basebackup -R` (which writes
    /// `primary_conninfo` over the primary's unix socket and `standby.signal`)
    /// into a new private directory, then started on its own free port with
    /// `settings`. Err is a "SKIP:" line when PostgreSQL is not installed.
    pub fn standby_of(primary: &PgCluster, settings: &[(&str, &str)]) -> Result<PgCluster, String> {
        let bin = find_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("saslgate-pg-standby.")
            .tempdir_in("/tmp")
            .expect("tempdir for the standby");
        if let Some((uid, gid)) = primary.run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown standby dir");
        }
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711))
            .expect("chmod standby dir");
        let mut standby = PgCluster {
            dir,
            bin,
            port: free_port(),
            password: primary.password.clone(),
            run_as: primary.run_as,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            postmaster: None,
            paused: false,
        };
        let out = standby
            .as_server_user(standby.bin.join("pg_basebackup"))
            .arg("-D")
            .arg(standby.data_dir())
            .arg("-h")
            .arg(primary.socket_dir())
            .arg("-p")
            .arg(primary.port.to_string())
            .args([
                "-U",
                SUPERUSER,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .expect("run pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        standby.start_again();
        Ok(standby)
    }

    /// Waits (bounded) until `standby_name` (an `application_name`; the
    /// default of a `pg_basebackup -R` standby is "walreceiver") streams from
    /// this primary with `sync_state` `want` ("sync" or "async").
    pub fn wait_for_standby(&self, want: &str, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.query(
                "postgres",
                "SELECT coalesce(string_agg(sync_state, ','), '') FROM pg_stat_replication WHERE state = 'streaming'",
            )?;
            if got.split(',').any(|s| s == want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no {want} standby streaming after {within:?} (seen: {got:?})"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) until this standby has replayed everything up to the
    /// primary's current WAL position.
    pub fn wait_caught_up(&self, primary: &PgCluster, within: Duration) -> Result<(), String> {
        let target = primary.query("postgres", "SELECT pg_current_wal_lsn()")?;
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn");
        let deadline = Instant::now() + within;
        loop {
            if self.query("postgres", &sql)? == "t" {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("standby not at {target} after {within:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes this primary's WAL senders (SIGSTOP): it goes on committing,
    /// but nothing more reaches its standbys (replication lag, made to
    /// order). [`kill9`](Self::kill9) ends them with the rest.
    pub fn pause_wal_senders(&self) -> Result<usize, String> {
        let pids: Vec<u32> = self
            .query("postgres", "SELECT pid FROM pg_stat_replication")?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        signal(&pids, "STOP");
        Ok(pids.len())
    }

    /// Waits (bounded) until this server is out of recovery (a promoted
    /// standby taking writes).
    pub fn wait_read_write(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if self
                .query("postgres", "SELECT pg_is_in_recovery()")
                .as_deref()
                == Ok("f")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("still in recovery after {within:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A crash: SIGKILL to the postmaster and every child at once (no
    /// shutdown checkpoint, nothing more sent to standbys or clients).
    pub fn kill9(&mut self) {
        let Some(mut child) = self.postmaster.take() else {
            return;
        };
        let pid = child.id();
        let kids = children_of(pid);
        signal(&[pid], "KILL");
        signal(&kids, "KILL");
        let _ = child.wait();
        self.paused = false;
    }

    /// `pg_ctl promote` without waiting (`-W`): the standby leaves recovery
    /// and becomes a read-write primary on its own shortly after.
    pub fn promote(&self) -> Result<(), String> {
        let out = self
            .as_server_user(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data_dir())
            .args(["promote", "-W"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run pg_ctl promote: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim_end().to_string())
        }
    }

    /// Starts the server (again) on the same data directory and port, and waits
    /// until it accepts connections. Panics if it does not within 30 s.
    pub fn start_again(&mut self) {
        assert!(self.postmaster.is_none(), "PostgreSQL is already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open pg log");
        let mut cmd = self.as_server_user(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-k")
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "unix_socket_permissions=0777"]);
        for (k, v) in &self.settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        self.postmaster = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.query("postgres", "SELECT 1").as_deref() == Ok("1") {
                return;
            }
            if let Some(status) = self.postmaster.as_mut().unwrap().try_wait().unwrap() {
                self.postmaster = None;
                panic!("postgres exited ({status}) at start:\n{}", self.log());
            }
            if Instant::now() > deadline {
                panic!(
                    "postgres not ready after {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fast shutdown (SIGINT), escalating to SIGQUIT and then SIGKILL of the
    /// postmaster and its children if it takes longer than 10 s each. Resumes a
    /// paused cluster first. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.postmaster.take() else {
            return;
        };
        if self.paused {
            self.resume_pids(child.id());
        }
        let pid = child.id();
        for sig in ["INT", "QUIT"] {
            signal(&[pid], sig);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let kids = children_of(pid);
        let _ = child.kill();
        let _ = child.wait();
        signal(&kids, "KILL");
    }

    /// Freezes the postmaster and every child (SIGSTOP): connections stay open
    /// but nothing answers, as with a hung server or a dead network path.
    pub fn pause(&mut self) {
        let pid = self
            .postmaster
            .as_ref()
            .expect("PostgreSQL not running")
            .id();
        // Postmaster first, so that it forks no new child while we list them.
        signal(&[pid], "STOP");
        signal(&children_of(pid), "STOP");
        self.paused = true;
    }

    /// Undoes [`pause`](Self::pause).
    pub fn resume(&mut self) {
        let pid = self
            .postmaster
            .as_ref()
            .expect("PostgreSQL not running")
            .id();
        self.resume_pids(pid);
    }

    fn resume_pids(&mut self, pid: u32) {
        signal(&children_of(pid), "CONT");
        signal(&[pid], "CONT");
        self.paused = false;
    }

    pub fn is_running(&self) -> bool {
        self.postmaster.is_some()
    }

    /// The postmaster's pid (for tests that look at its processes).
    pub fn pid(&self) -> Option<u32> {
        self.postmaster.as_ref().map(|c| c.id())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password (TCP connections need it).
    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where the server's unix socket (`.s.PGSQL.<port>`) lives.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Superuser URL for database `db` over TCP, password included:
    /// `postgresql://postgres:PW@127.0.0.1:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        self.url_as(SUPERUSER, Some(&self.password), db)
    }

    /// The superuser URL of the maintenance database `postgres`.
    pub fn superuser_url(&self) -> String {
        self.url("postgres")
    }

    /// URL for `user` over TCP; without a password when `password` is None (for
    /// tests that supply it another way, e.g. a password file).
    pub fn url_as(&self, user: &str, password: Option<&str>, db: &str) -> String {
        match password {
            Some(pw) => format!("postgresql://{user}:{pw}@127.0.0.1:{}/{db}", self.port),
            None => format!("postgresql://{user}@127.0.0.1:{}/{db}", self.port),
        }
    }

    /// URL for `user` over the unix socket (trusted: no password).
    pub fn socket_url(&self, user: &str, db: &str) -> String {
        format!(
            "postgresql://{user}@/{db}?host={}&port={}",
            self.socket_dir().display(),
            self.port
        )
    }

    /// Drops database `name`, ending its sessions first.
    pub fn drop_database(&self, name: &str) -> Result<(), String> {
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        )
        .map(|_| ())
    }

    /// Creates database `name` (owned by the superuser).
    pub fn create_database(&self, name: &str) -> Result<(), String> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))
            .map(|_| ())
    }

    /// Creates a login role with a password (e.g. for least-privilege tests).
    pub fn create_role(&self, name: &str, password: &str) -> Result<(), String> {
        self.psql(
            "postgres",
            &format!("CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'"),
        )
        .map(|_| ())
    }

    /// Runs SQL as the superuser through `psql` on the unix socket, stopping at
    /// the first error; Ok is psql's unaligned, tuples-only output. Bounded by a
    /// 10 s connect timeout and statement timeout.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", db, "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGOPTIONS", "-c statement_timeout=10000")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim_end().to_string())
        }
    }

    /// One-value query (alias of [`psql`](Self::psql) for readability).
    pub fn query(&self, db: &str, sql: &str) -> Result<String, String> {
        self.psql(db, sql)
    }

    /// A server program of the same installation (`psql`, `pgbench`, ...).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// 24 random hex characters from the kernel (URL-safe, no quoting needed).
fn random_password() -> String {
    let mut buf = [0u8; 12];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
