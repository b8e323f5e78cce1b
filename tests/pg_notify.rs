//! The broadcast on PostgreSQL (issue 28): the triggers of schema 5 notify
//! `saslgate_changes` after each commit the fast path depends on, and each
//! process's listener drops exactly what a notice names.
//!
//! - a change typed by hand in `psql` (another process) is refused at the
//!   first login after its notice is heard (milliseconds; see the window in
//!   doc/design.md), though the fast path was answering from memory;
//! - the listening session ended by the server (`pg_terminate_backend`):
//!   the next logins read the database (a revoke made meanwhile, whose
//!   notice nobody heard, is refused), then the listener comes back and
//!   logins are answered from memory again;
//! - a notice about one account keeps what is known of the others;
//! - saslgated (another process) refuses an app password revoked by the
//!   CLI within the window of doc/design.md (its next request, unless the
//!   notice is still on its way).
//!
//! Every test starts its own cluster; without PostgreSQL each prints
//! "SKIP: ..." and returns.

use saslgate::secret::SecretBytes;
use saslgate::store::pg::notify;
use saslgate::store::AdminStore;
use saslgate::{Config, Decision, Gate, Request};
use saslgate_testkit::{ask, frame, pg, Daemon, ANSWER_OK};
use std::process::Command;
use std::time::{Duration, Instant};

/// A bound on waiting for the listener (a bound, not a target).
const LISTENING_WITHIN: Duration = Duration::from_secs(10);

struct Db {
    cluster: pg::PgCluster,
    config: Config,
    conf_file: std::path::PathBuf,
}

impl Db {
    fn start() -> Option<Db> {
        let cluster = match pg::PgCluster::start() {
            Ok(c) => c,
            Err(reason) => {
                pg::report_skip(&reason);
                return None;
            }
        };
        cluster.create_database("sg").unwrap();
        let pwfile = cluster.dir().join("admin.pw");
        std::fs::write(&pwfile, format!("{}\n", cluster.password())).unwrap();
        let db = cluster.url_as(pg::SUPERUSER, None, "sg");
        let config = Config {
            db: db.clone().into(),
            db_password_file: Some(pwfile.clone()),
            bcrypt_cost: 4,
            flush_interval: Duration::ZERO,
            ..Config::default()
        };
        let conf_file = cluster.dir().join("host.conf");
        std::fs::write(
            &conf_file,
            format!(
                "db = {db:?}\ndb_password_file = {:?}\nbcrypt_cost = 4\n",
                pwfile.to_str().unwrap()
            ),
        )
        .unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_saslgate"))
            .arg("--config")
            .arg(&conf_file)
            .arg("init")
            .status()
            .unwrap();
        assert!(status.success(), "saslgate init");
        Some(Db {
            cluster,
            config,
            conf_file,
        })
    }

    fn admin(&self) -> Box<dyn AdminStore> {
        saslgate::store::open_admin(&self.config).unwrap()
    }

    /// An account with an app password; returns its id and the password.
    fn account(&self, name: &str) -> (i64, String) {
        let mut s = self.admin();
        s.add_account(name, "default").unwrap();
        s.set_master_password(name, &SecretBytes::from_slice(b"master-pw"), false)
            .unwrap();
        let (id, shown) = s.add_app_password(name, "mail", &[], false, None).unwrap();
        (id, String::from_utf8(shown.as_bytes().to_vec()).unwrap())
    }

    fn sql(&self, sql: &str) -> String {
        self.cluster.psql("sg", sql).unwrap()
    }
}

fn req<'a>(login: &'a str, password: &'a str, addr: &'a str) -> Request<'a> {
    Request {
        login: login.as_bytes(),
        password: password.as_bytes(),
        service: b"imap",
        realm: None,
        client_addr: Some(addr.as_bytes()),
        local_addr: None,
        secure: None,
    }
}

/// Advances this process's listener until it is live and proven alive.
fn wait_listening(config: &Config) {
    let deadline = Instant::now() + LISTENING_WITHIN;
    while notify::position(config).is_none() {
        assert!(
            Instant::now() < deadline,
            "no listener within {LISTENING_WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Logs in until an app password is answered from memory (two logins in a
/// row without a statement), asserting every answer is an accept.
fn warm(g: &Gate, login: &str, password: &str, addr: &str) {
    let deadline = Instant::now() + LISTENING_WITHIN;
    loop {
        wait_listening(g.config());
        let before = g.stats().state_reads;
        assert!(g.decide(&req(login, password, addr)).is_accepted());
        assert!(g.decide(&req(login, password, addr)).is_accepted());
        if g.stats().state_reads == before + 1 || g.stats().state_reads == before {
            let after = g.stats().state_reads;
            assert!(g.decide(&req(login, password, addr)).is_accepted());
            if g.stats().state_reads == after {
                return;
            }
        }
        assert!(Instant::now() < deadline, "never answered from memory");
    }
}

/// Runs a change typed in psql and waits (polling the listener, as a login
/// would) until its notice is heard; returns how long that took after psql
/// returned. The decision that follows is the first after the notice.
fn typed(db: &Db, sql: &str) -> Duration {
    let heard = notify::stats(&db.config).notices;
    db.sql(sql);
    let committed = Instant::now();
    while notify::stats(&db.config).notices == heard {
        assert!(
            committed.elapsed() < LISTENING_WITHIN,
            "no notice for {sql}"
        );
        notify::position(&db.config);
    }
    committed.elapsed()
}

fn is_refused(d: &Decision) -> bool {
    matches!(d, Decision::Refused { .. })
}

#[test]
fn a_change_typed_in_psql_is_refused_once_its_notice_is_heard() {
    let Some(db) = Db::start() else { return };
    let (_, app) = db.account("alice");
    let (bob_app_id, bob_app) = db.account("bob");
    let (carol_app_id, carol_app) = db.account("carol");
    let g = Gate::open(db.config.clone()).unwrap();
    warm(&g, "alice", &app, "192.0.2.1");
    let reads = g.stats().state_reads;
    // A throttle row typed by hand: alice blocked from this address.
    typed(
        &db,
        "INSERT INTO throttle (key, failures, window_start, blocked_until)
         VALUES ('p:alice|192.0.2.1', 9, extract(epoch FROM now())::bigint,
                 extract(epoch FROM now())::bigint + 600)",
    );
    let d = g.decide(&req("alice", &app, "192.0.2.1"));
    assert!(
        is_refused(&d),
        "a hand-typed block, answered from memory: {d:?}"
    );
    assert!(g.stats().state_reads > reads, "the notice made it read");
    // Revoked by hand (UPDATE), then deleted by hand (DELETE).
    warm(&g, "bob", &bob_app, "192.0.2.2");
    typed(
        &db,
        &format!(
            "UPDATE app_passwords SET revoked = extract(epoch FROM now())::bigint
              WHERE id = {bob_app_id}"
        ),
    );
    let d = g.decide(&req("bob", &bob_app, "192.0.2.2"));
    assert!(is_refused(&d), "a hand-typed revoke: {d:?}");
    warm(&g, "carol", &carol_app, "192.0.2.3");
    typed(
        &db,
        &format!("DELETE FROM app_passwords WHERE id = {carol_app_id}"),
    );
    let d = g.decide(&req("carol", &carol_app, "192.0.2.3"));
    assert!(is_refused(&d), "a hand-typed delete: {d:?}");
}

#[test]
fn a_killed_listener_falls_back_to_reads_and_comes_back() {
    let Some(db) = Db::start() else { return };
    let (app_id, app) = db.account("alice");
    let g = Gate::open(db.config.clone()).unwrap();
    warm(&g, "alice", &app, "192.0.2.1");
    let before = notify::stats(&db.config);
    let backend = notify::listener_backend(&db.config).expect("listening");
    // The server ends the listening session, then the app password is
    // revoked: nobody hears that notice.
    assert_eq!(
        db.sql(&format!("SELECT pg_terminate_backend({backend})")),
        "t"
    );
    // The backend is gone before the revoke commits.
    let deadline = Instant::now() + LISTENING_WITHIN;
    while db.sql(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {backend}"
    )) != "0"
    {
        assert!(Instant::now() < deadline, "listener backend still there");
        std::thread::sleep(Duration::from_millis(2));
    }
    db.admin().revoke_app_password("alice", app_id).unwrap();
    let reads = g.stats().state_reads;
    let d = g.decide(&req("alice", &app, "192.0.2.1"));
    assert!(is_refused(&d), "a revoke nobody heard of is refused: {d:?}");
    let lost = notify::stats(&db.config);
    assert!(lost.losses > before.losses, "{lost:?}");
    assert_ne!(lost.epoch, before.epoch, "a new epoch after the loss");
    // Without a listener every login reads (an app password not yet known).
    let (_, app2) = db
        .admin()
        .add_app_password("alice", "two", &[], false, None)
        .unwrap();
    let app2 = String::from_utf8(app2.as_bytes().to_vec()).unwrap();
    let d = g.decide(&req("alice", &app2, "192.0.2.1"));
    assert!(d.is_accepted(), "{d:?}");
    assert!(g.stats().state_reads > reads, "read while not listening");
    // Listening resumes on its own, and logins come from memory again.
    warm(&g, "alice", &app2, "192.0.2.1");
    let back = notify::stats(&db.config);
    assert!(back.connects > before.connects, "{back:?}");
    assert_ne!(notify::listener_backend(&db.config), Some(backend));
    // What was known before the loss is not trusted by the new listener.
    let d = g.decide(&req("alice", &app, "192.0.2.1"));
    assert!(
        is_refused(&d),
        "still refused after listening resumed: {d:?}"
    );
}

#[test]
fn a_notice_about_one_account_keeps_the_others_knowledge() {
    let Some(db) = Db::start() else { return };
    let (_, alice) = db.account("alice");
    let (_, bob) = db.account("bob");
    db.account("carol");
    let g = Gate::open(db.config.clone()).unwrap();
    warm(&g, "alice", &alice, "192.0.2.1");
    warm(&g, "bob", &bob, "192.0.2.2");
    let reads = g.stats().state_reads;
    let drops = g.stats().notice_drops;
    // A failure counted for bob elsewhere (typed here): 'acct:<bob>'.
    typed(
        &db,
        "INSERT INTO throttle (key, failures, window_start, blocked_until)
         VALUES ('p:bob|192.0.2.2', 1, extract(epoch FROM now())::bigint, 0)",
    );
    assert!(g.decide(&req("bob", &bob, "192.0.2.2")).is_accepted());
    assert_eq!(g.stats().state_reads, reads + 1, "bob's rows were dropped");
    assert!(g.stats().notice_drops > drops);
    assert!(g.decide(&req("alice", &alice, "192.0.2.1")).is_accepted());
    assert_eq!(g.stats().state_reads, reads + 1, "alice's rows were kept");
    // A blocked address names no address: every address's rows go (one
    // read each for alice and bob), the accounts' stay known.
    typed(
        &db,
        "INSERT INTO throttle (key, failures, window_start, blocked_until)
         VALUES ('a:198.51.100.7', 9, extract(epoch FROM now())::bigint,
                 extract(epoch FROM now())::bigint + 600)",
    );
    assert!(g.decide(&req("alice", &alice, "192.0.2.1")).is_accepted());
    assert!(g.decide(&req("bob", &bob, "192.0.2.2")).is_accepted());
    assert_eq!(g.stats().state_reads, reads + 3);
    // A throttle row of a name that is no account sends nothing: carol's
    // notice, sent after it, is the next one heard.
    assert!(g.decide(&req("alice", &alice, "192.0.2.1")).is_accepted());
    assert!(g.decide(&req("bob", &bob, "192.0.2.2")).is_accepted());
    let reads = g.stats().state_reads;
    let heard = notify::stats(&db.config).notices;
    typed(
        &db,
        "INSERT INTO throttle (key, failures, window_start, blocked_until)
         VALUES ('p:nobody|192.0.2.1', 1, extract(epoch FROM now())::bigint, 0);
         INSERT INTO throttle (key, failures, window_start, blocked_until)
         VALUES ('s:carol', 1, extract(epoch FROM now())::bigint, 0)",
    );
    assert_eq!(notify::stats(&db.config).notices, heard + 1, "carol's only");
    assert!(g.decide(&req("alice", &alice, "192.0.2.1")).is_accepted());
    assert!(g.decide(&req("bob", &bob, "192.0.2.2")).is_accepted());
    assert_eq!(g.stats().state_reads, reads);
}

#[test]
fn saslgated_refuses_a_revoke_made_by_the_cli_within_the_window() {
    let Some(db) = Db::start() else { return };
    let (app_id, app) = db.account("alice");
    let sock_dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&db.conf_file, sock_dir.path(), &[]);
    let ask_app = || {
        let fields: [&[u8]; 4] = [b"alice", app.as_bytes(), b"imap", b""];
        ask(&daemon.socket(), &frame(&fields)).unwrap()
    };
    // Long enough for its listener to be live (logins advance it).
    for _ in 0..200 {
        assert_eq!(ask_app(), ANSWER_OK);
    }
    let status = Command::new(env!("CARGO_BIN_EXE_saslgate"))
        .arg("--config")
        .arg(&db.conf_file)
        .args(["app-password", "revoke", "alice", &app_id.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "saslgate app revoke");
    // Refused once the notice has reached saslgated's listener: the window
    // of doc/design.md (milliseconds; a bound here, not a target). Without
    // the broadcast working it would accept as long as it runs.
    let returned = Instant::now();
    let mut accepted = 0;
    while ask_app() == ANSWER_OK {
        accepted += 1;
        assert!(
            returned.elapsed() < Duration::from_secs(1),
            "still accepted 1 s after the revoke returned"
        );
    }
    eprintln!(
        "refused {:?} after the revoke returned ({accepted} accepted before)",
        returned.elapsed()
    );
    daemon.stop();
}

/// The measurement of issue 28 (run and printed by scripts/bench-pg.sh):
/// saslgated (host B) answers clients looping on an app password; this
/// process (host A) revokes it; each request is stamped when sent. Prints
/// the time from the revoke's commit returning to the first refused
/// request's sending (p50, p99; negative: refused before A's commit call
/// returned), and how many requests sent after it returned were accepted.
#[test]
#[ignore = "a measurement: scripts/bench-pg.sh runs it"]
fn revoke_to_refusal_across_two_processes() {
    let Some(db) = Db::start() else { return };
    let sock_dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&db.conf_file, sock_dir.path(), &["--fail-delay", "0"]);
    let socket = daemon.socket();
    let revokes: usize = std::env::var("BENCH_REVOKES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let clients = 4;
    let mut admin = db.admin();
    admin.list_accounts().unwrap();
    let mut delays = Vec::new();
    let (mut sent_after, mut accepted_after) = (0u64, 0u64);
    for round in 0..revokes {
        // An account per round: its refusals never pile up into a slow-down.
        let name = format!("r{round}");
        let (id, pw) = db.account(&name);
        let fields: [&[u8]; 4] = [name.as_bytes(), pw.as_bytes(), b"imap", b""];
        let request = frame(&fields);
        // Warm: answered, and long enough for B to know it from memory.
        let deadline = Instant::now() + LISTENING_WITHIN;
        let mut ok = 0;
        while ok < 50 {
            assert!(Instant::now() < deadline, "never accepted");
            if ask(&socket, &request).unwrap() == ANSWER_OK {
                ok += 1;
            }
        }
        // Each client loops until its first refusal (at most 5 s).
        let (t1, answers) = std::thread::scope(|s| {
            let loops: Vec<_> = (0..clients)
                .map(|_| {
                    s.spawn(|| {
                        let mut seen = Vec::new();
                        let until = Instant::now() + Duration::from_secs(5);
                        while Instant::now() < until {
                            let sent = Instant::now();
                            let ok = ask(&socket, &request).unwrap() == ANSWER_OK;
                            seen.push((sent, ok));
                            if !ok {
                                break;
                            }
                        }
                        seen
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(20));
            admin.revoke_app_password(&name, id).unwrap();
            let t1 = Instant::now();
            let answers: Vec<(Instant, bool)> =
                loops.into_iter().flat_map(|h| h.join().unwrap()).collect();
            (t1, answers)
        });
        let first_refused = answers
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(sent, _)| *sent)
            .min()
            .expect("refused within 5 s");
        let ms = if first_refused >= t1 {
            first_refused.duration_since(t1).as_secs_f64() * 1e3
        } else {
            -(t1.duration_since(first_refused).as_secs_f64() * 1e3)
        };
        delays.push(ms);
        let before = accepted_after;
        for (sent, ok) in &answers {
            if *sent > t1 {
                sent_after += 1;
                accepted_after += u64::from(*ok);
            }
        }
        if std::env::var_os("BENCH_VERBOSE").is_some() {
            eprintln!(
                "round {round}: {ms:.3} ms, {} accepted after",
                accepted_after - before
            );
        }
    }
    delays.sort_by(|a, b| a.total_cmp(b));
    let pct =
        |p: f64| delays[((delays.len() as f64 * p).ceil() as usize).clamp(1, delays.len()) - 1];
    println!(
        "revoke-to-refusal: {revokes} revokes, {clients} clients looping on host B; first refusal \
         sent {:.3} ms (p50), {:.3} ms (p99), {:.3} ms (max) after host A's commit returned; \
         requests sent after it: {sent_after}, accepted: {accepted_after}",
        pct(0.5),
        pct(0.99),
        delays[delays.len() - 1]
    );
    daemon.stop();
}

/// The login role listens (no privilege is needed) and its fast path uses
/// the broadcast; the migration granted it nothing: the trigger functions
/// are not executable by it, and its table privileges are those of schema 4.
#[test]
fn the_login_role_listens_and_gains_nothing() {
    let Some(db) = Db::start() else { return };
    let status = Command::new(env!("CARGO_BIN_EXE_saslgate"))
        .arg("--config")
        .arg(&db.conf_file)
        .args(["init", "--login-role", "sg_login"])
        .status()
        .unwrap();
    assert!(status.success(), "init --login-role");
    let (_, app) = db.account("alice");
    db.sql("ALTER ROLE sg_login PASSWORD 'role-secret'");
    let pw = db.cluster.dir().join("sg_login.pw");
    std::fs::write(&pw, "role-secret\n").unwrap();
    let mut login = db.config.clone();
    login.db = db.cluster.url_as("sg_login", None, "sg").into();
    login.db_password_file = Some(pw);
    let g = Gate::open(login.clone()).unwrap();
    warm(&g, "alice", &app, "192.0.2.1");
    assert!(notify::stats(&login).live);
    for f in ["saslgate_notify_all()", "saslgate_notify_throttle()"] {
        assert_eq!(
            db.sql(&format!(
                "SELECT has_function_privilege('sg_login', '{f}', 'EXECUTE')"
            )),
            "f",
            "{f}"
        );
    }
    // Its writes still fire the triggers (SECURITY DEFINER reads accounts
    // for the id): a failure on this role's connection is announced.
    let heard = notify::stats(&login).notices;
    assert!(!g.decide(&req("alice", "wrong", "192.0.2.1")).is_accepted());
    let deadline = Instant::now() + LISTENING_WITHIN;
    while notify::stats(&login).notices == heard {
        assert!(
            Instant::now() < deadline,
            "no notice of the login role's write"
        );
        notify::position(&login);
    }
}

/// Logins per second through a `Gate` in this process (as the plugin runs),
/// app password, PostgreSQL: a probe for profiling (`BENCH_LOGINS`).
#[test]
#[ignore = "a probe: run by hand"]
fn gate_loop_probe() {
    let Some(db) = Db::start() else { return };
    let (_, app) = db.account("alice");
    let config = Config {
        flush_interval: Config::default().flush_interval,
        ..db.config.clone()
    };
    let g = Gate::open(config).unwrap();
    warm(&g, "alice", &app, "192.0.2.1");
    let n: u32 = std::env::var("BENCH_LOGINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let reads = g.stats().state_reads;
    let t = Instant::now();
    for _ in 0..n {
        assert!(g.decide(&req("alice", &app, "192.0.2.1")).is_accepted());
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "gate loop: {n} logins, {:.0}/s, {:.1} µs each, {} reads",
        f64::from(n) / secs,
        secs * 1e6 / f64::from(n),
        g.stats().state_reads - reads
    );
}

/// `pg_broadcast = false`: no listener, a read at every login, so a revoke
/// typed in psql is refused by the very next request, with no notice to wait
/// for (the strict rule of schema 4).
#[test]
fn with_the_broadcast_off_every_login_reads_and_a_revoke_is_refused_at_once() {
    let Some(db) = Db::start() else { return };
    let (app_id, app) = db.account("dora");
    let config = Config {
        pg_broadcast: false,
        ..db.config.clone()
    };
    let g = Gate::open(config.clone()).unwrap();
    // The first login verifies the hash; the next ones take the fast path.
    assert!(g.decide(&req("dora", &app, "192.0.2.9")).is_accepted());
    for _ in 0..3 {
        let before = g.stats().state_reads;
        assert!(g.decide(&req("dora", &app, "192.0.2.9")).is_accepted());
        assert!(
            g.stats().state_reads > before,
            "with the broadcast off, each login reads"
        );
    }
    // With the broadcast on, a listener is live within milliseconds here
    // (`wait_listening`); off, none ever is.
    for _ in 0..250 {
        assert!(notify::position(&config).is_none(), "no listener");
        std::thread::sleep(Duration::from_millis(2));
    }
    db.sql(&format!(
        "UPDATE app_passwords SET revoked = extract(epoch FROM now())::bigint WHERE id = {app_id}"
    ));
    let d = g.decide(&req("dora", &app, "192.0.2.9"));
    assert!(is_refused(&d), "the next request after the commit: {d:?}");
}
