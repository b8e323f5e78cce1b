//! The PostgreSQL backend against a real private cluster:
//! logins and admin changes, several "hosts" (separate `Gate`s, each with its
//! own connections) on one database, a stopped, hung or read-only server, the
//! login role's limits. Every test starts its own cluster (testkit's `pg`);
//! without PostgreSQL installed each prints "SKIP: ..." and returns.

use saslgate::decision::Credential;
use saslgate::secret::SecretBytes;
use saslgate::store::AdminStore;
use saslgate::{Config, Decision, Gate, RefuseReason, Request};
use saslgate_testkit::pg;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXP";

/// A cluster and one initialised saslgate database in it.
struct Db {
    cluster: pg::PgCluster,
    name: String,
    config: Config,
}

impl Db {
    /// A cluster with database `sg` initialised by `saslgate init`, reached
    /// over TCP with the password in a `db_password_file` (as in production).
    fn start() -> Option<Db> {
        Db::start_with(&[])
    }

    fn start_with(settings: &[(&str, &str)]) -> Option<Db> {
        let cluster = match pg::PgCluster::start_with(settings) {
            Ok(c) => c,
            Err(reason) => {
                pg::report_skip(&reason);
                return None;
            }
        };
        cluster.create_database("sg").unwrap();
        let pwfile = cluster.dir().join("admin.pw");
        std::fs::write(&pwfile, format!("{}\n", cluster.password())).unwrap();
        let config = Config {
            db: cluster.url_as(pg::SUPERUSER, None, "sg").into(),
            db_password_file: Some(pwfile),
            bcrypt_cost: 4,
            flush_interval: Duration::ZERO,
            ..Config::default()
        };
        let status = Command::new(env!("CARGO_BIN_EXE_saslgate"))
            .arg("--db")
            .arg(&config.db)
            .arg("--config")
            .arg(write_config(&cluster, &config, "admin.conf"))
            .arg("init")
            .status()
            .unwrap();
        assert!(status.success(), "saslgate init");
        Some(Db {
            cluster,
            name: "sg".into(),
            config,
        })
    }

    fn admin(&self) -> Box<dyn AdminStore> {
        saslgate::store::open_admin(&self.config).unwrap()
    }

    fn gate(&self) -> Gate {
        Gate::open(self.config.clone()).unwrap()
    }

    fn user(&self, name: &str, password: &str) {
        let mut s = self.admin();
        s.add_account(name, "default").unwrap();
        s.set_master_password(name, &SecretBytes::from_slice(password.as_bytes()), false)
            .unwrap();
    }

    fn app_password(&self, name: &str) -> (i64, String) {
        let (id, shown) = self
            .admin()
            .add_app_password(name, "test", &[], false, None)
            .unwrap();
        (id, String::from_utf8(shown.as_bytes().to_vec()).unwrap())
    }

    fn sql(&self, sql: &str) -> String {
        self.cluster.psql(&self.name, sql).unwrap()
    }
}

/// A configuration file with the keys a CLI run needs (password file, timeouts).
fn write_config(cluster: &pg::PgCluster, config: &Config, name: &str) -> std::path::PathBuf {
    let path = cluster.dir().join(name);
    let text = format!(
        "db = {:?}\ndb_password_file = {:?}\nbcrypt_cost = {}\n",
        config.db.to_str().unwrap(),
        config.db_password_file.as_ref().unwrap().to_str().unwrap(),
        config.bcrypt_cost
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn req<'a>(login: &'a str, password: &'a str, addr: Option<&'a str>) -> Request<'a> {
    Request {
        login: login.as_bytes(),
        password: password.as_bytes(),
        service: b"imap",
        realm: None,
        client_addr: addr.map(str::as_bytes),
        local_addr: None,
        secure: None,
    }
}

fn refused(d: &Decision) -> Option<RefuseReason> {
    match d {
        Decision::Refused { reason, .. } => Some(*reason),
        _ => None,
    }
}

fn unavailable(d: &Decision) -> bool {
    matches!(d, Decision::Unavailable { .. })
}

fn oathtool(secret: &str) -> String {
    let out = Command::new("oathtool")
        .args(["--totp", "-b", secret])
        .output()
        .expect("oathtool (apt-get install oathtool)");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn logins_and_admin_changes_on_postgresql() {
    let Some(db) = Db::start() else { return };
    db.user("alice", "pw-alice");
    let (app_id, app) = db.app_password("alice");
    let g = db.gate();
    assert!(g.decide(&req("alice", "pw-alice", None)).is_accepted());
    assert!(g.decide(&req("alice", &app, None)).is_accepted());
    assert_eq!(
        refused(&g.decide(&req("alice", "pw-wrong", None))),
        Some(RefuseReason::BadCredentials)
    );
    assert_eq!(
        refused(&g.decide(&req("nobody", "pw", None))),
        Some(RefuseReason::BadCredentials)
    );
    // An admin change moves the generation (by the triggers); a login-state
    // write does not.
    let generation = |db: &Db| db.sql("SELECT value FROM saslgate_meta WHERE key = 'generation'");
    let before = generation(&db);
    assert!(g.decide(&req("alice", "pw-alice", None)).is_accepted());
    g.flush();
    assert_eq!(generation(&db), before, "logins leave the generation alone");
    db.admin().revoke_app_password("alice", app_id).unwrap();
    assert_ne!(generation(&db), before);
    assert!(!g.decide(&req("alice", &app, None)).is_accepted());
    db.sql("UPDATE accounts SET disabled = true WHERE name = 'alice'");
    assert_eq!(
        refused(&g.decide(&req("alice", "pw-alice", None))),
        Some(RefuseReason::Disabled),
        "SQL typed by hand is seen too"
    );
    // The audit trail is written and readable by the admin role.
    let log = db.admin().audit_entries(Some("alice"), None, 100).unwrap();
    assert!(log.iter().any(|e| e.outcome == "accepted"), "{log:?}");
    assert!(log.iter().any(|e| e.outcome == "refused"), "{log:?}");
    // Init again is refused; a newer schema is refused, clearly.
    let again = saslgate::store::create(&db.config).err().unwrap();
    assert!(matches!(again, saslgate::Error::Exists(_)), "{again}");
    db.sql("UPDATE saslgate_meta SET value = 99 WHERE key = 'schema_version'");
    let newer = saslgate::store::open_login(&db.config).err().unwrap();
    assert!(newer.to_string().contains("newer saslgate"), "{newer}");
    db.sql(&format!(
        "UPDATE saslgate_meta SET value = {} WHERE key = 'schema_version'",
        saslgate::store::pg::schema::SCHEMA_VERSION
    ));
    // A database with other tables, and one never initialised, are refused.
    db.cluster.create_database("other").unwrap();
    db.cluster.psql("other", "CREATE TABLE t (x int)").unwrap();
    let mut other = db.config.clone();
    other.db = db.cluster.url_as(pg::SUPERUSER, None, "other").into();
    let e = saslgate::store::create(&other).err().unwrap();
    assert!(e.to_string().contains("not a saslgate database"), "{e}");
    let e = saslgate::store::open_login(&other).err().unwrap();
    assert!(e.to_string().contains("saslgate init"), "{e}");
    // A password in the URL is refused (it belongs in db_password_file).
    other.db = db.cluster.url("sg").into();
    let e = saslgate::store::open_login(&other).err().unwrap();
    assert!(e.to_string().contains("db_password_file"), "{e}");
}

#[test]
fn two_hosts_share_codes_steps_throttle_and_changes() {
    let Some(db) = Db::start() else { return };
    db.user("bob", "pw-bob");
    let mut admin = db.admin();
    admin
        .enable_totp("bob", &saslgate::totp::decode_secret(TOTP_SECRET).unwrap())
        .unwrap();
    let codes = admin.generate_codes("bob", 1).unwrap();
    let code = String::from_utf8(codes[0].as_bytes().to_vec()).unwrap();
    drop(admin);
    let mut cfg = db.config.clone();
    cfg.cache_ttl = Duration::from_secs(60);
    let hosts = [
        Arc::new(Gate::open(cfg.clone()).unwrap()),
        Arc::new(Gate::open(cfg.clone()).unwrap()),
    ];

    // One TOTP step, then one one-time code, raced by 32 threads over both hosts.
    for (what, password) in [
        ("TOTP step", format!("pw-bob{}", oathtool(TOTP_SECRET))),
        ("one-time code", format!("pw-bob{code}")),
    ] {
        let barrier = Arc::new(Barrier::new(32));
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let gate = hosts[i % 2].clone();
                let barrier = barrier.clone();
                let password = password.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    gate.decide(&req("bob", &password, None))
                })
            })
            .collect();
        let results: Vec<Decision> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let accepted: Vec<_> = results.iter().filter(|d| d.is_accepted()).collect();
        assert_eq!(accepted.len(), 1, "{what}: exactly one accept: {results:?}");
        assert!(!results.iter().any(unavailable), "{what}: {results:?}");
        let credential = match accepted[0] {
            Decision::Accepted { credential, .. } => credential.clone(),
            _ => unreachable!(),
        };
        let expected = if what == "TOTP step" {
            Credential::MasterAndTotp
        } else {
            Credential::MasterAndCode
        };
        assert_eq!(credential, expected);
    }

    // An address failing on A is throttled on B.
    db.user("carol", "pw-carol");
    let addr = Some("192.0.2.7");
    for i in 0..cfg.throttle_account_address.failures {
        let d = hosts[0].decide(&req("carol", &format!("wrong-{i}"), addr));
        assert_eq!(refused(&d), Some(RefuseReason::BadCredentials), "{i}");
    }
    assert_eq!(
        refused(&hosts[1].decide(&req("carol", "pw-carol", addr))),
        Some(RefuseReason::Throttled),
        "blocked on the other host, even with the right password"
    );
    assert!(hosts[1]
        .decide(&req("carol", "pw-carol", Some("192.0.2.8")))
        .is_accepted());

    // An admin change on A is seen by B's next login: the fast path (app
    // password) and the positive cache (master password).
    db.user("dan", "pw-dan");
    let (app_id, app) = db.app_password("dan");
    for _ in 0..2 {
        assert!(hosts[1].decide(&req("dan", &app, None)).is_accepted());
        assert!(hosts[1].decide(&req("dan", "pw-dan", None)).is_accepted());
    }
    assert!(hosts[1].stats().cache_hits >= 1, "the cache was in use");
    let mut on_a = db.admin();
    on_a.revoke_app_password("dan", app_id).unwrap();
    assert!(!hosts[1].decide(&req("dan", &app, None)).is_accepted());
    on_a.set_master_password("dan", &SecretBytes::from_slice(b"pw-dan-2"), false)
        .unwrap();
    assert_eq!(
        refused(&hosts[1].decide(&req("dan", "pw-dan", None))),
        Some(RefuseReason::BadCredentials),
        "the old password is not served from B's cache"
    );
    assert!(hosts[1].decide(&req("dan", "pw-dan-2", None)).is_accepted());
    let (_, app2) = db.app_password("dan");
    assert!(hosts[0].decide(&req("dan", &app2, None)).is_accepted());
    assert!(hosts[1].decide(&req("dan", &app2, None)).is_accepted());
}

/// Asserts `d` is "unavailable" and took at most `limit`.
fn assert_unavailable_within(d: &Decision, took: Duration, limit: Duration, what: &str) {
    eprintln!("{what}: unavailable after {took:?}");
    assert!(unavailable(d), "{what}: {d:?}");
    assert!(
        took <= limit,
        "{what}: answered after {took:?} (limit {limit:?})"
    );
}

#[test]
fn hung_or_stopped_server_answers_unavailable_in_time_and_recovers() {
    let Some(mut db) = Db::start() else { return };
    db.user("erin", "pw-erin");
    let (_, app) = db.app_password("erin");
    let mut cfg = db.config.clone();
    let timeout = Duration::from_millis(800);
    cfg.db_statement_timeout = timeout;
    cfg.db_connect_timeout = timeout;
    let g = Gate::open(cfg).unwrap();
    assert!(g.decide(&req("erin", &app, None)).is_accepted());
    // Allowance: the timeout plus scheduling on a loaded 2-core machine.
    let limit = timeout + Duration::from_millis(700);

    // Hung (SIGSTOP): the kernel still accepts and acknowledges, nothing answers.
    db.cluster.pause();
    for (i, pw) in [app.as_str(), "pw-erin", "wrong"].iter().enumerate() {
        let t = Instant::now();
        let d = g.decide(&req("erin", pw, None));
        assert_unavailable_within(&d, t.elapsed(), limit, &format!("paused, login {i}"));
    }
    db.cluster.resume();
    assert!(
        g.decide(&req("erin", &app, None)).is_accepted(),
        "recovers by itself"
    );
    assert!(g.decide(&req("erin", "pw-erin", None)).is_accepted());

    // Stopped: connections refused at once.
    db.cluster.stop();
    for pw in [app.as_str(), "pw-erin"] {
        let t = Instant::now();
        let d = g.decide(&req("erin", pw, None));
        assert_unavailable_within(&d, t.elapsed(), limit, "stopped");
    }
    db.cluster.start_again();
    assert!(
        g.decide(&req("erin", &app, None)).is_accepted(),
        "recovers by itself"
    );
    assert!(g.decide(&req("erin", "pw-erin", None)).is_accepted());
}

#[test]
fn read_only_server_never_accepts() {
    let Some(db) = Db::start() else { return };
    db.user("fay", "pw-fay");
    let codes = db.admin().generate_codes("fay", 1).unwrap();
    let code = String::from_utf8(codes[0].as_bytes().to_vec()).unwrap();
    let (_, app) = db.app_password("fay");
    db.sql("ALTER DATABASE sg SET default_transaction_read_only = on");
    match Gate::open(db.config.clone()) {
        Err(e) => assert!(e.to_string().contains("read-only"), "{e}"),
        Ok(g) => {
            for pw in [format!("pw-fay{code}"), app.clone(), "pw-fay".into()] {
                let d = g.decide(&req("fay", &pw, Some("192.0.2.9")));
                assert!(unavailable(&d), "{pw}: {d:?}");
            }
        }
    }
    // Turned read-only under a running gate: its pooled connection cannot
    // write the code's use, so the login is unavailable, never accepted.
    let on_postgres = |sql: &str| db.cluster.psql("postgres", sql).unwrap();
    on_postgres("ALTER DATABASE sg RESET default_transaction_read_only");
    let g = db.gate();
    assert!(g.decide(&req("fay", &app, None)).is_accepted());
    on_postgres("ALTER SYSTEM SET default_transaction_read_only = on");
    on_postgres("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(300));
    let d = g.decide(&req("fay", &format!("pw-fay{code}"), Some("192.0.2.9")));
    assert!(unavailable(&d), "{d:?}");
    let d = g.decide(&req("fay", "wrong", Some("192.0.2.9")));
    assert!(unavailable(&d), "a failure that cannot be counted: {d:?}");
    on_postgres("ALTER SYSTEM RESET default_transaction_read_only");
    on_postgres("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(300));
    assert!(g
        .decide(&req("fay", &format!("pw-fay{code}"), None))
        .is_accepted());
}

/// Runs SQL as `role` through psql on the cluster's socket; Err is the message.
fn psql_as(db: &Db, role: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(db.cluster.program("psql"))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(db.cluster.socket_url(role, &db.name))
        .args(["-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[test]
fn login_role_logs_in_but_cannot_plant_or_rewind_credentials() {
    let Some(db) = Db::start() else { return };
    db.user("gus", "pw-gus");
    let (_, app) = db.app_password("gus");
    db.admin()
        .enable_totp("gus", &saslgate::totp::decode_secret(TOTP_SECRET).unwrap())
        .unwrap();
    let codes = db.admin().generate_codes("gus", 2).unwrap();
    let code = |i: usize| String::from_utf8(codes[i].as_bytes().to_vec()).unwrap();
    let admin_conf = write_config(&db.cluster, &db.config, "admin.conf");
    let saslgate = |conf: &std::path::Path, args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_saslgate"))
            .arg("--config")
            .arg(conf)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A command that fails on its arguments exits before reading stdin.
        if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.success(), text)
    };
    // Twice: creating the role, then re-granting (idempotent).
    for _ in 0..2 {
        let (ok, text) = saslgate(&admin_conf, &["init", "--login-role", "sg_login"], "");
        assert!(ok, "{text}");
    }
    db.sql("ALTER ROLE sg_login PASSWORD 'login-secret'");
    let login_pw = db.cluster.dir().join("login.pw");
    std::fs::write(&login_pw, "login-secret\n").unwrap();
    let mut login = db.config.clone();
    login.db = db.cluster.url_as("sg_login", None, "sg").into();
    login.db_password_file = Some(login_pw);
    login.bcrypt_cost = 5; // above the stored hashes': no rehash for this role

    // Logins work with the login role: every credential, throttle, audit.
    let g = Gate::open(login.clone()).unwrap();
    assert!(g.decide(&req("gus", &app, None)).is_accepted());
    let totp = oathtool(TOTP_SECRET);
    assert!(g
        .decide(&req("gus", &format!("pw-gus{totp}"), None))
        .is_accepted());
    assert!(g
        .decide(&req("gus", &format!("pw-gus{}", code(0)), None))
        .is_accepted());
    assert_eq!(
        refused(&g.decide(&req("gus", "pw-gus-wrong", Some("192.0.2.10")))),
        Some(RefuseReason::BadCredentials)
    );
    g.flush();
    drop(g);
    let audit: i64 = db.sql("SELECT count(*) FROM audit").parse().unwrap();
    assert!(audit >= 4, "the login role wrote {audit} audit records");
    let hash_before = db.sql("SELECT password_hash FROM accounts WHERE name = 'gus'");
    assert!(hash_before.starts_with("$2"), "{hash_before}");

    // The CLI with the login role: every credential-making change refused.
    let login_conf = db.cluster.dir().join("login.conf");
    std::fs::write(
        &login_conf,
        format!(
            "db = {:?}\ndb_password_file = {:?}\n",
            login.db.to_str().unwrap(),
            login.db_password_file.as_ref().unwrap().to_str().unwrap()
        ),
    )
    .unwrap();
    for (args, stdin) in [
        (&["user", "add", "mallory"][..], ""),
        (&["passwd", "gus"][..], "Planted-pass-1\n"),
        (&["app-password", "add", "--label", "x", "gus"][..], ""),
        (&["codes", "generate", "gus"][..], ""),
        (&["user", "delete", "gus"][..], ""),
        (&["log"][..], ""),
    ] {
        let (ok, text) = saslgate(&login_conf, args, stdin);
        assert!(!ok, "{args:?} must fail for the login role: {text}");
        assert!(text.contains("permission denied"), "{args:?}: {text}");
    }
    // And by SQL typed by hand.
    for sql in [
        "INSERT INTO accounts (name, created) VALUES ('mallory', 0)",
        "UPDATE accounts SET password_hash = 'x' WHERE name = 'gus'",
        "UPDATE accounts SET totp_secret = 'x' WHERE name = 'gus'",
        "UPDATE accounts SET disabled = false",
        "INSERT INTO app_passwords (account_id, label, lookup, services, created) \
         SELECT id, 'x', 'x', '', 0 FROM accounts",
        "UPDATE app_passwords SET revoked = NULL",
        "INSERT INTO one_time_codes (account_id, lookup, created) SELECT id, 'x', 0 FROM accounts",
        "UPDATE one_time_codes SET used = NULL",
        "UPDATE accounts SET totp_last_step = 0",
        "UPDATE plans SET services = '*'",
        "INSERT INTO service_overrides SELECT id, 'smtp', true FROM accounts",
        "UPDATE meta SET value = 'x'",
        "UPDATE saslgate_meta SET value = 1",
        "SELECT count(*) FROM audit",
        "DELETE FROM audit",
        "CREATE TABLE planted (x int)",
    ] {
        let r = psql_as(&db, "sg_login", sql);
        assert!(r.is_err(), "the login role could: {sql}");
    }
    assert_eq!(
        db.sql("SELECT password_hash FROM accounts WHERE name = 'gus'"),
        hash_before,
    );
    // The spent code stays spent; the unused one still works.
    let g = Gate::open(login).unwrap();
    assert!(!g
        .decide(&req("gus", &format!("pw-gus{}", code(0)), None))
        .is_accepted());
    assert!(g
        .decide(&req("gus", &format!("pw-gus{}", code(1)), None))
        .is_accepted());
    // Rehash at a raised cost: never by the login role, by the admin role.
    db.user("hal", "pw-hal");
    let hash = || db.sql("SELECT password_hash FROM accounts WHERE name = 'hal'");
    let cost4 = hash();
    assert!(g.decide(&req("hal", "pw-hal", None)).is_accepted());
    assert_eq!(hash(), cost4, "no rehash by the login role");
    let mut admin = db.config.clone();
    admin.bcrypt_cost = 5;
    assert!(Gate::open(admin)
        .unwrap()
        .decide(&req("hal", "pw-hal", None))
        .is_accepted());
    assert!(
        hash().contains("$05$"),
        "rehashed by the admin role: {}",
        hash()
    );
}

/// `cargo test` builds the library for the tests as an rlib only: the plugin
/// (`libsaslgate.so`) is built here, so the test never loads a stale one.
fn fresh_plugin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "--lib", "--quiet"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if dir.ends_with("release") {
        c.arg("--release");
    }
    if let Some(target) = dir.parent() {
        c.env("CARGO_TARGET_DIR", target);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "cargo build --lib: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("libsaslgate.so")
}

/// The stock client against saslgated's socket; true for "OK".
fn testsaslauthd(sock: &std::path::Path, user: &str, pass: &str) -> bool {
    let bin = saslgate_testkit::need_tool("testsaslauthd", "sasl2-bin");
    let out = Command::new(bin)
        .arg("-f")
        .arg(sock)
        .args(["-u", user, "-p", pass, "-s", "imap"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("OK") || text.contains("NO"), "{text:?}");
    text.contains("0: OK")
}

/// Two hosts on one PostgreSQL database: the plugin inside the real libsasl2
/// (PLAIN, one connection per login, as smtpd makes them) and saslgated asked
/// by the stock testsaslauthd. A credential made on one is accepted on the
/// other; a revoke is seen at the next login; the plugin's failures block the
/// address on saslgated.
#[test]
fn plugin_in_libsasl2_and_saslgated_on_postgresql() {
    let Some(db) = Db::start() else { return };
    db.user("ida", "pw-ida");
    let conf = write_config(&db.cluster, &db.config, "host.conf");
    // The account pace (one check at a time past 5 failures, held up to
    // 8 s) would let a second of guessing make too few failures to block
    // the address; this test is about the address's rows shared by hosts.
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("[throttle]\nslowdown_failures = 100000\n");
    std::fs::write(&conf, text).unwrap();
    let dir = db.cluster.dir().join("hosts");
    std::fs::create_dir(&dir).unwrap();
    let plugins = dir.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::os::unix::fs::symlink(fresh_plugin(), plugins.join("libsaslgate.so")).unwrap();
    let driver = dir.join("wal_load");
    saslgate_testkit::compile_sasl_program("tests/wal_load.c", &driver);
    let plugin_logins = |ip: &str, pw: &str, want: &str| {
        let out = Command::new(&driver)
            .arg(&plugins)
            .arg(&conf)
            .args(["1", ip, "ida", pw, want])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success(), text)
    };
    // The cluster's directory belongs to the server's user: as root,
    // saslgated makes its socket only in a directory no other user can change.
    let run = tempfile::tempdir().unwrap();
    let sock_dir = run.path().join("daemon");
    std::fs::create_dir(&sock_dir).unwrap();
    let daemon = saslgate_testkit::Daemon::start(&conf, &sock_dir, &[]);
    let sock = daemon.socket();

    // Made on the admin host, accepted by both.
    let (app_id, app) = db.app_password("ida");
    let (ok, text) = plugin_logins("198.51.100.5", &app, "ok");
    assert!(ok, "plugin: {text}");
    assert!(testsaslauthd(&sock, "ida", &app));
    assert!(testsaslauthd(&sock, "ida", "pw-ida"));
    // Revoked: refused by both at their next login.
    db.admin().revoke_app_password("ida", app_id).unwrap();
    assert!(!testsaslauthd(&sock, "ida", &app));
    let (ok, text) = plugin_logins("198.51.100.5", &app, "no");
    assert!(ok, "plugin after revoke: {text}");
    // The plugin's failures from one address (a second of guessing) block it
    // on saslgated: asked with that client address (the request's 5th field),
    // the right password is refused there; from another address, accepted.
    let (ok, text) = plugin_logins("203.0.113.66", "wrong", "no");
    assert!(ok, "plugin guesser: {text}");
    let daemon_login = |addr: &str| {
        use saslgate_testkit::{ask, frame};
        let fields: [&[u8]; 5] = [b"ida", b"pw-ida", b"imap", b"", addr.as_bytes()];
        ask(&sock, &frame(&fields)).unwrap()
    };
    let answer = daemon_login("203.0.113.66");
    assert!(
        answer.starts_with("NO"),
        "blocked on the other host: {answer}"
    );
    let answer = daemon_login("203.0.113.67");
    assert!(answer.starts_with("OK"), "another address: {answer}");
    let audit: i64 = db
        .sql("SELECT count(*) FROM audit WHERE account = 'ida'")
        .parse()
        .unwrap();
    assert!(audit > 3, "both hosts audit into PostgreSQL ({audit})");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

/// Makes a CA and a server certificate for `localhost` (openssl CLI) in `dir`,
/// owned by the server's user (the key readable by it only). Returns the CA file.
fn make_certs(dir: &std::path::Path, ca_name: &str) -> std::path::PathBuf {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (package openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = format!("{ca_name}.key");
    let crt = format!("{ca_name}.crt");
    let subj = format!("/CN={ca_name}");
    openssl(&[
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &crt, "-days",
        "1", "-subj", &subj,
    ]);
    dir.join(crt)
}

/// TLS from the URL (`sslmode`, `sslrootcert`) against a server that only
/// takes TLS over TCP; several hosts with read-write targeting.
#[test]
fn tls_modes_and_failover_hosts() {
    let certs = tempfile::Builder::new()
        .prefix("saslgate-pg-certs.")
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(certs.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let ca = make_certs(certs.path(), "test-ca");
    let other_ca = make_certs(certs.path(), "other-ca");
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(certs.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        certs.path().join("san.ext"),
        "subjectAltName=DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "test-ca.crt",
        "-CAkey",
        "test-ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    ]);
    // The server runs as nobody when the tests run as root: it must own its key.
    if saslgate_testkit::is_root() {
        let nobody = std::fs::read_to_string("/etc/passwd")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("nobody:"))
            .map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f[2].parse::<u32>().unwrap(), f[3].parse::<u32>().unwrap())
            })
            .unwrap();
        for f in ["server.key", "server.crt"] {
            std::os::unix::fs::chown(certs.path().join(f), Some(nobody.0), Some(nobody.1)).unwrap();
        }
    }
    std::fs::set_permissions(
        certs.path().join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let cert = certs.path().join("server.crt");
    let key = certs.path().join("server.key");
    let Some(db) = Db::start_with(&[
        ("ssl", "on"),
        ("ssl_cert_file", cert.to_str().unwrap()),
        ("ssl_key_file", key.to_str().unwrap()),
    ]) else {
        return;
    };
    db.user("jo", "pw-jo");
    // TCP takes TLS only from now on.
    let hba = db.cluster.data_dir().join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, text.replace("\nhost ", "\nhostssl ")).unwrap();
    db.cluster
        .psql("postgres", "SELECT pg_reload_conf()")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let port = db.cluster.port();
    let login = |url: String| -> Result<(), String> {
        let mut cfg = db.config.clone();
        cfg.db = url.into();
        let g = Gate::open(cfg).map_err(|e| e.to_string())?;
        match g.decide(&req("jo", "pw-jo", None)) {
            d if d.is_accepted() => Ok(()),
            d => Err(format!("{d:?}")),
        }
    };
    let base = format!("postgresql://postgres@localhost:{port}/sg");
    let ca = ca.display();
    let other_ca = other_ca.display();
    let e = login(format!("{base}?sslmode=disable")).unwrap_err();
    assert!(
        e.contains("no encryption"),
        "plain TCP is refused by the server: {e}"
    );
    login(format!("{base}?sslmode=require")).unwrap();
    // The unix socket under the default sslmode=prefer: the server declines
    // TLS there, and the socket having no host name must not fail the connect.
    login(db.cluster.socket_url("postgres", "sg")).unwrap();
    // SCRAM-SHA-256-PLUS: the server checks the tls-server-end-point hash
    // that src/store/pg/tls.rs computes from its certificate.
    login(format!("{base}?sslmode=require&channel_binding=require")).unwrap();
    login(format!("{base}?sslmode=verify-full&sslrootcert={ca}")).unwrap();
    login(format!(
        "postgresql://postgres@127.0.0.1:{port}/sg?sslmode=verify-ca&sslrootcert={ca}"
    ))
    .unwrap();
    let e = login(format!("{base}?sslmode=verify-full&sslrootcert={other_ca}")).unwrap_err();
    assert!(e.contains("certif") || e.contains("verify"), "{e}");
    let e = login(format!(
        "postgresql://postgres@127.0.0.1:{port}/sg?sslmode=verify-full&sslrootcert={ca}"
    ))
    .unwrap_err();
    assert!(
        !e.is_empty(),
        "the name 127.0.0.1 is not in the certificate"
    );
    // Failover: a dead first host, then the live one (read-write).
    let dead = pg::free_port();
    login(format!(
        "postgresql://postgres@localhost:{dead},localhost:{port}/sg?sslmode=require&target_session_attrs=read-write"
    ))
    .unwrap();
}

/// saslgated started while PostgreSQL is down (a boot order an operator does
/// not control): it starts, says so, answers "unavailable", and serves logins
/// once the server is back, without a restart.
#[test]
fn saslgated_starts_before_postgresql_and_serves_when_it_comes() {
    let Some(mut db) = Db::start() else { return };
    db.user("jon", "pw-jon");
    let conf = write_config(&db.cluster, &db.config, "early.conf");
    let run = tempfile::tempdir().unwrap(); // root's (see above)
    let sock_dir = run.path().join("early");
    std::fs::create_dir(&sock_dir).unwrap();
    db.cluster.stop();
    let daemon = saslgate_testkit::Daemon::start(&conf, &sock_dir, &["--fail-delay", "0"]);
    let ask = |pw: &str| {
        use saslgate_testkit::{ask, frame};
        let fields: [&[u8]; 4] = [b"jon", pw.as_bytes(), b"imap", b""];
        ask(&daemon.socket(), &frame(&fields)).unwrap()
    };
    assert_eq!(ask("pw-jon"), saslgate_testkit::ANSWER_UNAVAILABLE);
    assert!(
        daemon.log_text().contains("not usable now"),
        "{}",
        daemon.log_text()
    );
    db.cluster.start_again();
    assert_eq!(ask("pw-jon"), saslgate_testkit::ANSWER_OK);
    assert_eq!(ask("wrong"), saslgate_testkit::ANSWER_BAD);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

/// Two hosts add the same name at once, one as an account, the other as an
/// alias: exactly one wins, the other gets a clear "exists" (the schema's
/// trigger serialises the namespace check; READ COMMITTED alone would let
/// each miss the other's uncommitted row).
#[test]
fn an_account_and_an_alias_racing_for_one_name_never_both_win() {
    let Some(db) = Db::start() else { return };
    db.user("alice", "pw-alice");
    let rounds = 12;
    let mut account_won = 0;
    for round in 0..rounds {
        let name = format!("bob{round}");
        let barrier = Arc::new(Barrier::new(2));
        let (mut s1, mut s2) = (db.admin(), db.admin());
        let (b1, b2) = (barrier.clone(), barrier);
        let n1 = name.clone();
        let as_account = std::thread::spawn(move || {
            b1.wait();
            s1.add_account(&n1, "default").map(|_| ())
        });
        let n2 = name.clone();
        let as_alias = std::thread::spawn(move || {
            b2.wait();
            s2.add_alias("alice", &n2).map(|_| ())
        });
        let (a, b) = (as_account.join().unwrap(), as_alias.join().unwrap());
        match (&a, &b) {
            (Ok(()), Err(saslgate::Error::Exists(_))) => account_won += 1,
            (Err(saslgate::Error::Exists(_)), Ok(())) => {}
            _ => panic!("{name}: account {a:?}, alias {b:?}: exactly one must win"),
        }
        let both = db.sql(&format!(
            "SELECT (SELECT count(*) FROM accounts WHERE name = '{name}') \
                  + (SELECT count(*) FROM aliases WHERE alias = '{name}')"
        ));
        assert_eq!(both, "1", "{name}");
    }
    eprintln!("namespace race: the account won {account_won} of {rounds} rounds");
}

/// Runs the `saslgate` CLI with `conf`; (exit code, stderr).
fn cli(conf: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_saslgate"))
        .arg("--config")
        .arg(conf)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The configuration of a host connecting as `role` (given password
/// `role-secret`), serving proxy tickets for BACKEND.
fn role_config(db: &Db, role: &str) -> Config {
    db.sql(&format!("ALTER ROLE {role} PASSWORD 'role-secret'"));
    let pw = db.cluster.dir().join(format!("{role}.pw"));
    std::fs::write(&pw, "role-secret\n").unwrap();
    let mut c = db.config.clone();
    c.db = db.cluster.url_as(role, None, &db.name).into();
    c.db_password_file = Some(pw);
    c.proxy_ticket_backends = vec![BACKEND.parse().unwrap()];
    c
}

const BACKEND: &str = "127.0.0.1:10143";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a proxy ticket's row would be for `account`, written by SQL.
fn ticket_insert(lookup: &[u8], account: &str, service: &str, valid_for: i64) -> String {
    format!(
        "INSERT INTO proxy_tickets (lookup, account_id, service, backend, expires)
         SELECT '\\x{}'::bytea, id, '{service}', '{BACKEND}',
                floor(extract(epoch FROM now()))::bigint + {valid_for}
         FROM accounts WHERE name = '{account}'",
        hex(lookup)
    )
}

fn ticket_mint(lookup: &[u8], account: &str, service: &str, valid_for: i64) -> String {
    format!(
        "SELECT saslgate_issue_ticket('\\x{}'::bytea, '{account}', '{service}', '{BACKEND}',
                                      floor(extract(epoch FROM now()))::bigint + {valid_for})",
        hex(lookup)
    )
}

fn is_ticket_login(d: &Decision) -> bool {
    matches!(
        d,
        Decision::Accepted {
            credential: Credential::ProxyTicket,
            ..
        }
    )
}

/// Round 3, finding 2, reproduced: the login role (the mail hosts') minted a
/// ticket for alice valid 10 years, which still logged in after an admin
/// changed alice's password. Now `saslgate init --login-role` gives a role
/// that cannot insert a ticket, by SQL or through saslgate (permission
/// denied), nor call the minting function; and a ticket written anyway
/// (here by the superuser) does not outlive a password change.
#[test]
fn login_role_cannot_mint_a_ticket() {
    let Some(db) = Db::start() else { return };
    db.user("alice", "pw-alice");
    let admin_conf = write_config(&db.cluster, &db.config, "admin.conf");
    let (code, text) = cli(&admin_conf, &["init", "--login-role", "sg_login"]);
    assert_eq!(code, 0, "{text}");
    let login = role_config(&db, "sg_login");
    let mail_host = Gate::open(login).unwrap();
    let lookup = |t: &str| db.admin().ticket_lookup(t.as_bytes());
    let mut wrong = Vec::new();

    let t1 = "sgt.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA1";
    let ten_years = 10 * 365 * 86400;
    match psql_as(
        &db,
        "sg_login",
        &ticket_insert(&lookup(t1), "alice", "imap", ten_years),
    ) {
        Ok(_) => wrong.push("the login role inserted a 10-year ticket by SQL".to_string()),
        Err(e) if !e.contains("permission denied") => wrong.push(format!("insert: {e}")),
        Err(_) => {}
    }
    let t2 = "sgt.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA2";
    match psql_as(
        &db,
        "sg_login",
        &ticket_mint(&lookup(t2), "alice", "imap", 60),
    ) {
        Ok(_) => wrong.push("the login role minted a ticket by the function".to_string()),
        Err(e) if !e.contains("permission denied") => wrong.push(format!("function: {e}")),
        Err(_) => {}
    }
    match mail_host.issue_ticket("alice", "imap", BACKEND.parse().unwrap()) {
        Ok(_) => wrong.push("a gate connected as the login role issued a ticket".to_string()),
        Err(e) if !e.to_string().contains("permission denied") => {
            wrong.push(format!("issue_ticket: {e}"))
        }
        Err(_) => {}
    }
    // A 10-year row the superuser writes for alice (refused by the trigger
    // now; before, the login role could write it), then her password changes.
    let t3 = "sgt.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA3";
    let _ = db.cluster.psql(
        &db.name,
        &ticket_insert(&lookup(t3), "alice", "imap", ten_years),
    );
    let pw = SecretBytes::from_slice(b"pw-alice-2");
    db.admin().set_master_password("alice", &pw, false).unwrap();
    for t in [t1, t2, t3] {
        let d = mail_host.decide(&req("alice", t, None));
        if is_ticket_login(&d) {
            wrong.push(format!("{t} logged in after alice's password changed"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The proxy role (`saslgate init --proxy-role`, the auth_http face's hosts)
/// mints tickets through `saslgate_issue_ticket` only, within the bounds the
/// database sets (10 minutes, imap and pop, the state of the moment); the
/// login role uses them up. Each line of SECURITY.md's role table for the
/// proxy role is tried here.
#[test]
fn proxy_role_mints_bounded_tickets_the_login_role_uses_up() {
    let Some(db) = Db::start() else { return };
    db.user("alice", "pw-alice");
    db.user("bert", "pw-bert");
    db.admin()
        .enable_totp(
            "alice",
            &saslgate::totp::decode_secret(TOTP_SECRET).unwrap(),
        )
        .unwrap();
    let admin_conf = write_config(&db.cluster, &db.config, "admin.conf");
    // Twice: creating the roles, then re-granting (idempotent).
    for _ in 0..2 {
        let args = [
            "init",
            "--login-role",
            "sg_login",
            "--proxy-role",
            "sg_proxy",
        ];
        let (code, text) = cli(&admin_conf, &args);
        assert_eq!(code, 0, "{text}");
    }
    let args = ["init", "--login-role", "sg_same", "--proxy-role", "sg_same"];
    let (code, text) = cli(&admin_conf, &args);
    assert_eq!(code, 2, "one role for both is a usage error: {text}");
    let face = Gate::open(role_config(&db, "sg_proxy")).unwrap();
    let mail_host = Gate::open(role_config(&db, "sg_login")).unwrap();
    let backend: std::net::SocketAddr = BACKEND.parse().unwrap();

    // The face: a two-step login, then a ticket; the mail host uses it once.
    let totp = oathtool(TOTP_SECRET);
    assert!(face
        .decide(&req("alice", &format!("pw-alice{totp}"), None))
        .is_accepted());
    let t = face.issue_ticket("alice", "imap", backend).unwrap();
    let t = String::from_utf8(t.as_bytes().to_vec()).unwrap();
    assert!(is_ticket_login(&mail_host.decide(&req("alice", &t, None))));
    assert!(!mail_host.decide(&req("alice", &t, None)).is_accepted());
    let generation = db.sql("SELECT generation FROM proxy_tickets");
    assert_eq!(
        generation,
        db.sql("SELECT value FROM saslgate_meta WHERE key = 'generation'"),
        "the ticket is stamped with the generation it was issued at"
    );

    // What the proxy role cannot do, by SQL typed by hand.
    let lookup = |t: &str| db.admin().ticket_lookup(t.as_bytes());
    let t5 = "sgt.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA5";
    for (sql, why) in [
        (
            ticket_insert(&lookup(t5), "bert", "imap", 60),
            "permission denied",
        ),
        (
            ticket_mint(&lookup(t5), "bert", "imap", 3600),
            "saslgate: proxy ticket",
        ),
        (
            ticket_mint(&lookup(t5), "bert", "imap", 10 * 365 * 86400),
            "saslgate: proxy ticket",
        ),
        (
            ticket_mint(&lookup(t5), "bert", "smtp", 60),
            "saslgate: proxy ticket",
        ),
        (
            ticket_mint(&lookup(t5), "bert", "sieve", 60),
            "saslgate: proxy ticket",
        ),
        (
            "UPDATE proxy_tickets SET expires = expires + 3600".into(),
            "permission denied",
        ),
        (
            "UPDATE proxy_tickets SET generation = 1".into(),
            "permission denied",
        ),
        (
            "UPDATE proxy_tickets SET used = NULL".into(),
            "only moves forward",
        ),
        (
            "INSERT INTO accounts (name, created) VALUES ('mallory', 0)".into(),
            "permission denied",
        ),
        (
            "UPDATE accounts SET password_hash = 'x'".into(),
            "permission denied",
        ),
        ("UPDATE meta SET value = 'x'".into(), "permission denied"),
        (
            "UPDATE saslgate_meta SET value = 1".into(),
            "permission denied",
        ),
        ("SELECT count(*) FROM audit".into(), "permission denied"),
        (
            "DROP TRIGGER tickets_bounded ON proxy_tickets".into(),
            "must be owner",
        ),
    ] {
        match psql_as(&db, "sg_proxy", &sql) {
            Ok(out) => panic!("the proxy role could: {sql} ({out})"),
            Err(e) => assert!(e.contains(why), "{sql}: {e}"),
        }
    }
    // What it can: mint, for imap and pop, up to 10 minutes. A ticket for a
    // disabled account is not minted.
    assert_eq!(
        psql_as(
            &db,
            "sg_proxy",
            &ticket_mint(&lookup(t5), "bert", "pop", 600)
        )
        .unwrap(),
        "t"
    );
    db.admin().set_disabled("alice", true).unwrap();
    let t6 = "sgt.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA6";
    assert_eq!(
        psql_as(
            &db,
            "sg_proxy",
            &ticket_mint(&lookup(t6), "alice", "imap", 60)
        )
        .unwrap(),
        "f"
    );
    db.admin().set_disabled("alice", false).unwrap();
    // A ticket the face minted is worthless after a password change.
    let t = face.issue_ticket("alice", "imap", backend).unwrap();
    let t = String::from_utf8(t.as_bytes().to_vec()).unwrap();
    let pw = SecretBytes::from_slice(b"pw-alice-2");
    db.admin().set_master_password("alice", &pw, false).unwrap();
    assert!(!mail_host.decide(&req("alice", &t, None)).is_accepted());
    // The login role can use outstanding tickets up or delete them (denial
    // of service, nothing more).
    let t8 = "sgt.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA8";
    let minted = psql_as(
        &db,
        "sg_proxy",
        &ticket_mint(&lookup(t8), "bert", "imap", 60),
    );
    assert_eq!(minted.unwrap(), "t");
    psql_as(
        &db,
        "sg_login",
        "UPDATE proxy_tickets SET used = 1 WHERE used IS NULL",
    )
    .unwrap();
    assert!(!mail_host.decide(&req("bert", t8, None)).is_accepted());
    psql_as(&db, "sg_login", "DELETE FROM proxy_tickets").unwrap();
    assert_eq!(db.sql("SELECT count(*) FROM proxy_tickets"), "0");
    // The login role cannot mint, not even through the function.
    let t7 = "sgt.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA7";
    let e = psql_as(
        &db,
        "sg_login",
        &ticket_mint(&lookup(t7), "bert", "imap", 60),
    )
    .unwrap_err();
    assert!(e.contains("permission denied"), "{e}");
    // Made a login role again, the proxy role loses the function.
    let (code, text) = cli(&admin_conf, &["init", "--login-role", "sg_proxy"]);
    assert_eq!(code, 0, "{text}");
    let e = psql_as(
        &db,
        "sg_proxy",
        &ticket_mint(&lookup(t7), "bert", "imap", 60),
    )
    .unwrap_err();
    assert!(e.contains("permission denied"), "{e}");
}

/// A database made before the proxy role (schema version 2), whose login
/// role may insert tickets: the admin's next `saslgate` command migrates it,
/// and the login role may not insert tickets any more. Until then, a host
/// connecting as the login role says what to run.
#[test]
fn migration_takes_ticket_minting_from_the_login_role() {
    let Some(db) = Db::start() else { return };
    db.user("alice", "pw-alice");
    let admin_conf = write_config(&db.cluster, &db.config, "admin.conf");
    let (code, text) = cli(&admin_conf, &["init", "--login-role", "sg_login"]);
    assert_eq!(code, 0, "{text}");
    // Back to version 2 by hand: what migrations 2 -> 3 and 3 -> 4 add,
    // taken off, and the login role's grant of then.
    db.sql(
        "DROP TRIGGER IF EXISTS tickets_bounded ON proxy_tickets;
         DROP FUNCTION IF EXISTS saslgate_bound_ticket();
         DROP FUNCTION IF EXISTS saslgate_issue_ticket(bytea, text, text, text, bigint);
         ALTER TABLE proxy_tickets DROP COLUMN IF EXISTS generation;
         DROP TABLE IF EXISTS web_sessions;
         DROP TRIGGER IF EXISTS app_passwords_stay_revoked ON app_passwords;
         GRANT INSERT ON proxy_tickets TO sg_login;
         UPDATE saslgate_meta SET value = 2 WHERE key = 'schema_version'",
    );
    let login = role_config(&db, "sg_login");
    match saslgate::store::open_login(&login) {
        Ok(_) => panic!("the login role opened a schema it cannot migrate"),
        Err(e) => assert!(e.to_string().contains("saslgate init"), "{e}"),
    }
    // The admin's command migrates; the login role keeps consuming only.
    let (code, text) = cli(&admin_conf, &["user", "list"]);
    assert_eq!(code, 0, "{text}");
    let version = db.sql("SELECT value FROM saslgate_meta WHERE key = 'schema_version'");
    assert_eq!(
        version,
        saslgate::store::pg::schema::SCHEMA_VERSION.to_string()
    );
    let t = "sgt.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA8";
    let lookup = db.admin().ticket_lookup(t.as_bytes());
    let e = psql_as(
        &db,
        "sg_login",
        &ticket_insert(&lookup, "alice", "imap", 60),
    )
    .unwrap_err();
    assert!(e.contains("permission denied"), "{e}");
    assert!(saslgate::store::open_login(&login).is_ok());
}

/// `saslgate init --web-role` (saslgate-web's role): made, then re-granted
/// (idempotent), beside a login role; one name for two kinds is refused.
/// What the role may do is tried in web/tests/postgres.rs.
#[test]
fn init_web_role_grants_twice_and_refuses_a_shared_name() {
    let Some(db) = Db::start() else { return };
    db.user("alice", "pw-alice");
    let admin_conf = write_config(&db.cluster, &db.config, "admin.conf");
    for _ in 0..2 {
        let (code, text) = cli(
            &admin_conf,
            &["init", "--login-role", "sg_login", "--web-role", "sg_web"],
        );
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("web role sg_web"), "{text}");
    }
    let (code, text) = cli(
        &admin_conf,
        &["init", "--login-role", "sg_same", "--web-role", "sg_same"],
    );
    assert_eq!(code, 2, "one role for two kinds is a usage error: {text}");
    assert!(text.contains("different roles"), "{text}");
    let web = role_config(&db, "sg_web");
    let mut store = saslgate::store::web::open_web(&web).unwrap();
    let alice: i64 = db
        .sql("SELECT id FROM accounts WHERE name = 'alice'")
        .parse()
        .unwrap();
    store
        .web_session_insert(&[7u8; 32], alice, 1, "192.0.2.1", "test")
        .unwrap();
    assert_eq!(
        store.web_session_get(&[7u8; 32]).unwrap().unwrap().account,
        "alice"
    );
    let e = psql_as(&db, "sg_login", "SELECT count(*) FROM web_sessions").unwrap_err();
    assert!(e.contains("permission denied"), "{e}");
}
