//! `saslgate copy` moves everything logins depend on: a SQLite database holding
//! every kind of credential and refusal is copied (by the real `saslgate`
//! binary) into another database, and every login decided there is decided as
//! on the source: each credential still logs in, each refusal still refuses
//! for the same reason, and what logins consumed (TOTP steps, one-time codes,
//! throttle blocks) stays consumed. Then copied back into a new SQLite file,
//! same again. A target in use is refused unless `--force`.
//!
//! Middle targets: a PostgreSQL database of a private cluster
//! (testkit/src/pg.rs), and a SQLite file.

use saslgate::decision::Credential;
use saslgate::store::RoutingAdmin;
use saslgate::{Config, Decision, Gate, RefuseReason};
use saslgate_testkit::pg;
use saslgate_testkit::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An address blocked on the source (over its failure budget).
const BLOCKED_IP: &str = "192.0.2.66";
const ADDRESS_BUDGET: u32 = 5;

/// What is in the source database, and what each check needs.
struct Population {
    app_full: String,
    app_restricted: String,
    app_imap: String,
    app_expired: String,
    app_revoked: String,
    app_dave: String,
    app_erin: String,
    codes: Vec<String>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn config_for(db: &str, base: &Config) -> Config {
    let mut cfg = base.clone();
    cfg.db = db.into();
    cfg.throttle_address.failures = ADDRESS_BUDGET;
    cfg.throttle_address.block = Duration::from_secs(3600);
    cfg.throttle_account_address.failures = ADDRESS_BUDGET;
    cfg.throttle_account_address.block = Duration::from_secs(3600);
    cfg
}

fn populate(f: &Fixture) -> Population {
    let mut s = f.store();
    s.set_plan_services("imaponly", &["imap".into()]).unwrap();
    f.user("alice", "pw-alice");
    let app_full = f.app_password("alice", &[], false, None);
    let app_restricted = f.app_password("alice", &[], true, None);
    let app_imap = f.app_password("alice", &["imap"], false, None);
    let app_expired = f.app_password("alice", &[], false, Some(unix_now() - 60));
    let app_revoked = f.app_password("alice", &[], false, None);
    let revoked_id = s
        .list_app_passwords("alice")
        .unwrap()
        .iter()
        .map(|a| a.id)
        .max()
        .unwrap();
    s.revoke_app_password("alice", revoked_id).unwrap();

    f.user("bob", "pw-bob");
    s.set_disabled("bob", true).unwrap();

    f.user("carol", "pw-carol");
    s.set_plan("carol", "imaponly").unwrap();
    s.set_service_override("carol", "smtp", Some(true)).unwrap();

    f.user("dave", "pw-dave");
    s.set_service_override("dave", "pop", Some(false)).unwrap();
    let app_dave = f.app_password("dave", &["imap"], false, None);
    s.enable_totp(
        "dave",
        &saslgate::totp::decode_secret(TOTP_SECRET_B32).unwrap(),
    )
    .unwrap();
    let codes = s
        .generate_codes("dave", 4)
        .unwrap()
        .iter()
        .map(|c| String::from_utf8(c.as_bytes().to_vec()).unwrap())
        .collect();

    // No master password: app passwords only.
    s.add_account("erin", "default").unwrap();
    let app_erin = f.app_password("erin", &["smtp"], false, None);

    // Routing: own backends and holds (one held since long ago: its start
    // must survive the copy, or max_hold would start over).
    s.set_account_backend("alice", "imap", Some("10.0.0.1:143"))
        .unwrap();
    s.set_account_backend("alice", "smtp", Some("[2001:db8::25]:25"))
        .unwrap();
    s.set_account_backend("dave", "pop3", Some("10.0.0.2:110"))
        .unwrap();
    s.hold_backend("10.0.0.1:143").unwrap();
    s.hold_backend("10.0.0.9:993").unwrap();
    drop(s);
    // Aliases and blocks, and a proxy ticket that must not be copied, as rows.
    f.sql(&format!(
        "UPDATE backend_holds SET since = 1000 WHERE backend = '10.0.0.9:993';
         INSERT INTO aliases (alias, account_id, created)
           SELECT 'al', id, 5 FROM accounts WHERE name = 'alice';
         INSERT INTO aliases (alias, account_id, created)
           SELECT 'david@example.org', id, 6 FROM accounts WHERE name = 'dave';
         INSERT INTO blocks (network, note, created) VALUES ('198.18.0.0/15', 'bench nets', 7);
         INSERT INTO blocks (network, note, created) VALUES ('2001:db8:bad::/48', NULL, 8);
         INSERT INTO proxy_tickets (lookup, account_id, service, backend, expires)
           SELECT x'0102', id, 'imap', '10.0.0.1:143', {} FROM accounts WHERE name = 'alice';",
        unix_now() + 60
    ));

    Population {
        app_full,
        app_restricted,
        app_imap,
        app_expired,
        app_revoked,
        app_dave,
        app_erin,
        codes,
    }
}

/// One login with a client address (each check gets its own, so that the
/// checks' failures never throttle each other).
fn decide(g: &Gate, login: &str, password: &str, service: &str, ip: &str) -> Decision {
    let mut r = req(login, password, service);
    r.client_addr = Some(ip.as_bytes());
    g.decide(&r)
}

/// The logins that consume nothing, with their decisions.
fn repeatable_checks(g: &Gate, p: &Population, stage: u32) -> Vec<(String, Decision)> {
    let checks: Vec<(&str, &str, &str)> = vec![
        ("alice", "pw-alice", "imap"),
        ("alice", "pw-alice", "smtp"),
        ("alice", "pw-wrong", "imap"),
        ("alice", &p.app_full, "smtp"),
        ("alice", &p.app_full, "pop"),
        ("alice", &p.app_restricted, "smtp"),
        ("alice", &p.app_restricted, "imap"),
        ("alice", &p.app_imap, "imap"),
        ("alice", &p.app_imap, "smtp"),
        ("alice", &p.app_expired, "imap"),
        ("alice", &p.app_revoked, "imap"),
        ("bob", "pw-bob", "imap"),
        ("carol", "pw-carol", "imap"),
        ("carol", "pw-carol", "smtp"),
        ("carol", "pw-carol", "pop"),
        ("dave", "pw-dave", "imap"),
        ("dave", &p.app_dave, "imap"),
        ("dave", &p.app_dave, "pop"),
        ("erin", &p.app_erin, "smtp"),
        ("erin", &p.app_erin, "imap"),
        ("erin", "", "smtp"),
        ("nobody", "pw-alice", "imap"),
    ];
    let mut out: Vec<(String, Decision)> = checks
        .iter()
        .enumerate()
        .map(|(i, (login, pw, svc))| {
            let ip = format!("198.51.{stage}.{}", i + 1);
            let label = format!("{login} {} on {svc}", describe(p, pw));
            (label, decide(g, login, pw, svc, &ip))
        })
        .collect();
    // The address blocked on the source stays blocked, even for a right password.
    out.push((
        format!("alice pw-alice on imap from {BLOCKED_IP}"),
        decide(g, "alice", "pw-alice", "imap", BLOCKED_IP),
    ));
    out
}

fn describe(p: &Population, pw: &str) -> String {
    let named = [
        (&p.app_full, "app(full)"),
        (&p.app_restricted, "app(restricted)"),
        (&p.app_imap, "app(imap)"),
        (&p.app_expired, "app(expired)"),
        (&p.app_revoked, "app(revoked)"),
        (&p.app_dave, "app(dave)"),
        (&p.app_erin, "app(erin)"),
    ];
    named
        .iter()
        .find(|(s, _)| s.as_str() == pw)
        .map_or_else(|| format!("{pw:?}"), |(_, n)| n.to_string())
}

/// The TOTP code `offset` steps from now, from the real `oathtool`; never
/// within 2 s of a step's end (the code must still be current when decided).
fn totp_code(offset: i64) -> String {
    while unix_now() % 30 >= 28 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let at = unix_now() + offset * 30;
    let out = Command::new("oathtool")
        .args(["--totp", "-b", "-N", &format!("@{at}"), TOTP_SECRET_B32])
        .output()
        .expect("oathtool is required (apt-get install oathtool)");
    assert!(out.status.success(), "oathtool failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Stage `stage`'s consuming logins: TOTP at a later step than every earlier
/// stage (accepted once), earlier stages' code refused; one-time code number
/// `stage` accepted once, the earlier ones refused (they were used).
fn consuming_checks(g: &Gate, p: &Population, stage: usize, previous_totp: Option<&str>) -> String {
    let ip = |n: usize| format!("203.0.113.{}", stage * 10 + n);
    if let Some(old) = previous_totp {
        assert_eq!(
            refused(&decide(g, "dave", &format!("pw-dave{old}"), "imap", &ip(1))),
            Some(RefuseReason::BadCredentials),
            "stage {stage}: a TOTP step accepted before the copy was accepted again"
        );
    }
    let code = totp_code(stage as i64 - 1);
    let with_totp = format!("pw-dave{code}");
    match decide(g, "dave", &with_totp, "imap", &ip(2)) {
        Decision::Accepted { credential, .. } => assert_eq!(credential, Credential::MasterAndTotp),
        other => panic!("stage {stage}: TOTP login refused: {other:?}"),
    }
    assert!(
        !decide(g, "dave", &with_totp, "imap", &ip(3)).is_accepted(),
        "stage {stage}: TOTP step accepted twice"
    );
    for used in &p.codes[..stage] {
        assert!(
            !decide(g, "dave", &format!("pw-dave{used}"), "imap", &ip(4)).is_accepted(),
            "stage {stage}: a used one-time code was accepted"
        );
    }
    let fresh = format!("pw-dave{}", p.codes[stage]);
    match decide(g, "dave", &fresh, "imap", &ip(5)) {
        Decision::Accepted { credential, .. } => assert_eq!(credential, Credential::MasterAndCode),
        other => panic!("stage {stage}: unused one-time code refused: {other:?}"),
    }
    assert!(!decide(g, "dave", &fresh, "imap", &ip(6)).is_accepted());
    code
}

fn saslgate(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_saslgate"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn copy(from: &str, to: &str, force: bool, config: &Path) -> Output {
    let mut args = vec!["--db", from, "copy", "--to", to];
    if force {
        args.push("--force");
    }
    saslgate(&args, config)
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}; stdout {}; stderr {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Hard facts about the source's decisions: the matrix really holds each kind
/// of credential and refusal (so that "same as the source" means something).
fn assert_matrix_meaningful(results: &[(String, Decision)]) {
    let get = |label: &str| {
        &results
            .iter()
            .find(|(l, _)| l == label)
            .unwrap_or_else(|| panic!("no check {label}"))
            .1
    };
    assert!(get("alice \"pw-alice\" on imap").is_accepted());
    assert!(get("alice app(full) on pop").is_accepted());
    assert!(get("alice app(restricted) on smtp").is_accepted());
    assert!(get("erin app(erin) on smtp").is_accepted());
    assert!(get("carol \"pw-carol\" on smtp").is_accepted());
    for (label, reason) in [
        ("alice \"pw-wrong\" on imap", RefuseReason::BadCredentials),
        ("alice app(expired) on imap", RefuseReason::BadCredentials),
        ("alice app(revoked) on imap", RefuseReason::BadCredentials),
        ("bob \"pw-bob\" on imap", RefuseReason::Disabled),
        ("carol \"pw-carol\" on pop", RefuseReason::NotAllowed),
        ("dave \"pw-dave\" on imap", RefuseReason::BadCredentials),
        ("dave app(dave) on pop", RefuseReason::NotAllowed),
        ("nobody \"pw-alice\" on imap", RefuseReason::BadCredentials),
    ] {
        assert_eq!(refused(get(label)), Some(reason), "{label}");
    }
    let blocked = format!("alice pw-alice on imap from {BLOCKED_IP}");
    assert_eq!(refused(get(&blocked)), Some(RefuseReason::Throttled));
}

/// A decision without its time-dependent parts (a block's seconds left).
fn outcome(d: &Decision) -> String {
    match d {
        Decision::Accepted {
            account,
            credential,
        } => format!("accepted {account} by {credential:?}"),
        Decision::Refused { reason, .. } => format!("refused: {reason:?}"),
        other => format!("{other:?}"),
    }
}

fn assert_same(stage: &str, want: &[(String, Decision)], got: &[(String, Decision)]) {
    assert_eq!(want.len(), got.len());
    for ((label, w), (_, g)) in want.iter().zip(got) {
        assert_eq!(
            outcome(w),
            outcome(g),
            "{stage}: {label} decided differently than on the source"
        );
    }
}

/// A long audit trail and many throttle rows, written straight into the
/// source: more rows than one page of the PostgreSQL export (5,000) and one
/// chunk of its import (2,000), so that paging and chunking are exercised.
fn add_history(db: &Path) {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    let tx = conn.transaction().unwrap();
    let now = unix_now();
    for i in 0..12_345i64 {
        tx.execute(
            "INSERT INTO audit (ts, account, service, client_addr, outcome, reason, detail)
             VALUES (?1, 'alice', 'imap', ?2, 'refused', 'bad_credentials', ?3)",
            rusqlite::params![
                now - i,
                format!("10.9.{}.{}", i / 250, i % 250),
                format!("history {i}")
            ],
        )
        .unwrap();
    }
    for i in 0..6_001i64 {
        tx.execute(
            "INSERT INTO throttle (key, failures, window_start, blocked_until, last_bad)
             VALUES (?1, 1, ?2, 0, ?3)",
            rusqlite::params![
                format!("a:10.8.{}.{}", i / 250, i % 250),
                now,
                vec![i as u8; 32]
            ],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// The routing, alias and block rows of a database, and its proxy tickets.
fn names_and_routes(db: &str, base: &Config) -> (saslgate::store::dump::Dump, i64) {
    let s = saslgate::store::open_admin(&config_for(db, base)).unwrap();
    let dump = s.export_all().unwrap();
    // The routes work there, through the login side's reads.
    assert_eq!(
        s.account_backend("alice", "imap").unwrap().as_deref(),
        Some("10.0.0.1:143")
    );
    let tickets = match db.starts_with("postgres") {
        true => 0,
        false => rusqlite::Connection::open(db)
            .unwrap()
            .query_row("SELECT count(*) FROM proxy_tickets", [], |r| r.get(0))
            .unwrap(),
    };
    (dump, tickets)
}

fn assert_same_names_and_routes(
    stage: &str,
    want: &saslgate::store::dump::Dump,
    got: &saslgate::store::dump::Dump,
) {
    use saslgate::store::dump::Field;
    assert_eq!(
        want.rows("aliases").len(),
        2,
        "{stage}: the source's aliases"
    );
    assert_eq!(want.rows("blocks").len(), 2);
    assert_eq!(want.rows("account_backends").len(), 3);
    assert_eq!(want.rows("backend_holds").len(), 2);
    for table in ["aliases", "blocks", "account_backends", "backend_holds"] {
        assert_eq!(want.rows(table), got.rows(table), "{stage}: {table}");
    }
    // backend_holds: (backend, since).
    assert!(
        got.rows("backend_holds")
            .iter()
            .any(|h| h[1] == Field::Int(1000)),
        "{stage}"
    );
}

/// Runs the whole scenario: SQLite source -> `middle` -> new SQLite file.
fn round_trip(middle: &str, base: &Config, dir: &Path, extra_config: &str) {
    let f = Fixture::new();
    let p = populate(&f);
    let conf = dir.join("saslgate.conf");
    std::fs::write(&conf, format!("bcrypt_cost = 4\n{extra_config}")).unwrap();
    let source = f.config.db.to_str().unwrap().to_string();
    add_history(&f.config.db);

    // Stage 0, on the source: logins (filling audit and last-use), one TOTP step
    // and code 0 used, an address blocked.
    let (want, totp0) = {
        let g = Gate::open(config_for(&source, base)).unwrap();
        for i in 0..ADDRESS_BUDGET + 1 {
            let d = decide(&g, "alice", &format!("guess{i}"), "imap", BLOCKED_IP);
            assert!(!d.is_accepted());
        }
        let want = repeatable_checks(&g, &p, 0);
        let totp0 = consuming_checks(&g, &p, 0, None);
        (want, totp0)
    };
    assert_matrix_meaningful(&want);

    let (source_rows, source_tickets) = names_and_routes(&source, base);
    assert_eq!(source_tickets, 1);

    // Into the middle target.
    let out = copy(&source, middle, false, &conf);
    assert!(out.status.success(), "copy to {middle}: {}", text(&out));
    let (mid_rows, mid_tickets) = names_and_routes(middle, base);
    assert_same_names_and_routes(middle, &source_rows, &mid_rows);
    assert_eq!(mid_tickets, 0, "proxy tickets are not copied");
    let (totp1, mid_results) = {
        let g = Gate::open(config_for(middle, base)).unwrap();
        let got = repeatable_checks(&g, &p, 1);
        let totp1 = consuming_checks(&g, &p, 1, Some(&totp0));
        (totp1, got)
    };
    assert_same(&format!("copy in {middle}"), &want, &mid_results);

    // In use now: refused without --force, and left untouched.
    let before = saslgate(&["--db", middle, "--json", "user", "list"], &conf);
    let out = copy(&source, middle, false, &conf);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--force"), "{}", text(&out));
    let after = saslgate(&["--db", middle, "--json", "user", "list"], &conf);
    assert_eq!(
        before.stdout, after.stdout,
        "a refused copy changed the target"
    );
    // The source itself is refused as a target.
    let out = copy(&source, &source, true, &conf);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // New rows on the copy get fresh ids (the id sequences moved past the
    // copied rows), and work.
    let out = saslgate(&["--db", middle, "user", "add", "frank"], &conf);
    assert!(out.status.success(), "user add on the copy: {}", text(&out));
    let out = saslgate(
        &[
            "--db",
            middle,
            "app-password",
            "add",
            "frank",
            "--label",
            "new",
        ],
        &conf,
    );
    assert!(
        out.status.success(),
        "app-password add on the copy: {}",
        text(&out)
    );
    let frank_app = String::from_utf8(out.stdout).unwrap().trim().to_string();
    {
        let g = Gate::open(config_for(middle, base)).unwrap();
        assert!(decide(&g, "frank", &frank_app, "imap", "198.51.9.1").is_accepted());
    }

    // Back into a new SQLite file.
    let back = dir.join("back.db");
    let back = back.to_str().unwrap();
    let out = copy(middle, back, false, &conf);
    assert!(out.status.success(), "copy back: {}", text(&out));
    let (back_rows, back_tickets) = names_and_routes(back, base);
    assert_same_names_and_routes("copied back", &source_rows, &back_rows);
    assert_eq!(back_tickets, 0, "proxy tickets are not copied");
    let g = Gate::open(config_for(back, base)).unwrap();
    let got = repeatable_checks(&g, &p, 2);
    assert_same("copied back", &want, &got);
    consuming_checks(&g, &p, 2, Some(&totp1));
    drop(g);

    // The audit trail came along: the source's records are on the copy.
    let log = saslgate(&["--db", back, "--json", "log", "alice"], &conf);
    assert!(log.status.success(), "{}", text(&log));
    let entries: serde_json::Value = serde_json::from_slice(&log.stdout).unwrap();
    let n = entries.as_array().map_or(0, |a| a.len());
    assert!(
        n >= (ADDRESS_BUDGET as usize + 1),
        "audit not copied: {n} entries"
    );

    // --force replaces a target in use (the middle one, now holding more).
    let out = copy(back, middle, true, &conf);
    assert!(out.status.success(), "forced copy: {}", text(&out));
}

#[test]
fn copy_sqlite_to_sqlite_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let middle = dir.path().join("middle.db");
    round_trip(
        middle.to_str().unwrap(),
        &Fixture::new().config,
        dir.path(),
        "",
    );
}

#[test]
fn copy_sqlite_to_postgresql_and_back() {
    let Some(cluster) = pg::start_or_skip() else {
        return;
    };
    cluster.create_database("copytarget").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The password from a file, as saslgate takes it (never in the URL).
    let password_file = dir.path().join("db.password");
    std::fs::write(&password_file, format!("{}\n", cluster.password())).unwrap();
    let url = cluster.url_as(pg::SUPERUSER, None, "copytarget");
    let mut base = Fixture::new().config;
    base.db_password_file = Some(password_file.clone());
    let extra = format!("db_password_file = {:?}\n", password_file.to_str().unwrap());
    round_trip(&url, &base, dir.path(), &extra);
}
