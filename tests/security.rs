//! Findings of the round-2 security review (issue 11) that live in the engine
//! and the store: each test failed on the code before its fix.
//! - 3: changes made with SQL typed by hand reach the fast path and the cache;
//! - 4: `saslgate restore`, and a database replaced or copied over by other means;
//! - 6: refusal time does not depend on the stored hash's cost;
//! - 9: `*` in an account override means every service.

use saslgate::{Config, Gate, RefuseReason};
use saslgate_testkit::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn sql(db: &Path, statement: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute_batch(statement).unwrap();
}

fn fast(g: &Gate) -> u64 {
    g.stats().fast_accepts
}

/// Finding 3: after one accepted login the fast path holds the account; SQL
/// typed by hand (not the CLI) must still end it at the next login.
#[test]
fn hand_typed_sql_reaches_the_fast_path() {
    let f = Fixture::new();
    f.user("alice", "pw-alice");
    let cases: [(&str, &str); 5] = [
        (
            "UPDATE app_passwords SET revoked = 1",
            "revoked app password",
        ),
        ("UPDATE accounts SET disabled = 1", "disabled account"),
        (
            "INSERT INTO service_overrides (account_id, service, allow) \
             SELECT id, 'imap', 0 FROM accounts",
            "override",
        ),
        ("UPDATE plans SET services = 'smtp'", "plan"),
        ("DELETE FROM accounts", "deleted account"),
    ];
    for (statement, what) in cases {
        let mut s = f.store();
        let _ = s.delete_account("alice");
        s.add_account("alice", "default").unwrap();
        sql(&f.config.db, "UPDATE plans SET services = '*'");
        let app = f.app_password("alice", &[], false, None);
        let g = Gate::open(Config {
            cache_ttl: Duration::from_secs(60),
            ..f.config.clone()
        })
        .unwrap();
        assert!(g.decide(&req("alice", &app, "imap")).is_accepted());
        let before = fast(&g);
        assert!(g.decide(&req("alice", &app, "imap")).is_accepted());
        assert_eq!(fast(&g), before + 1, "{what}: fast path in use");
        sql(&f.config.db, statement);
        let d = g.decide(&req("alice", &app, "imap"));
        assert!(
            !d.is_accepted(),
            "{what}: still accepted after `{statement}`: {d:?}"
        );
    }
}

/// Finding 3, the positive cache: a master password changed by hand.
#[test]
fn hand_typed_sql_reaches_the_positive_cache() {
    let f = Fixture::new();
    f.user("bob", "pw-bob");
    let g = Gate::open(Config {
        cache_ttl: Duration::from_secs(60),
        ..f.config.clone()
    })
    .unwrap();
    assert!(g.decide(&req("bob", "pw-bob", "imap")).is_accepted());
    assert!(g.decide(&req("bob", "pw-bob", "imap")).is_accepted());
    assert!(g.stats().cache_hits >= 1);
    sql(&f.config.db, "UPDATE accounts SET password_hash = NULL");
    assert_eq!(
        refused(&g.decide(&req("bob", "pw-bob", "imap"))),
        Some(RefuseReason::BadCredentials)
    );
}

/// What a login writes must not move the generation (or the fast path would
/// empty itself at every login).
#[test]
fn logins_do_not_move_the_generation() {
    let f = Fixture::new();
    f.user("carol", "pw-carol");
    let app = f.app_password("carol", &[], false, None);
    let g = f.gate();
    let generation = || f.store().generation().unwrap();
    assert!(g.decide(&req("carol", &app, "imap")).is_accepted());
    g.flush();
    let before = generation();
    for _ in 0..3 {
        assert!(g.decide(&req("carol", &app, "imap")).is_accepted());
        assert!(g.decide(&req("carol", "pw-carol", "imap")).is_accepted());
        assert!(!g.decide(&req("carol", "wrong", "imap")).is_accepted());
    }
    g.flush();
    assert_eq!(generation(), before);
}

fn saslgate(f: &Fixture, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_saslgate"))
        .arg("--db")
        .arg(&f.config.db)
        .args(args)
        .output()
        .unwrap()
}

/// Finding 4: `saslgate restore` while a gate holds the database open.
#[test]
fn restore_replaces_the_live_database_safely() {
    let f = Fixture::new();
    f.user("dora", "pw-dora");
    let old_app = f.app_password("dora", &[], false, None);
    let backup = f.path("backup.db");
    let out = saslgate(&f, &["backup", backup.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    // Changes after the backup, seen by a running gate (fast path warm).
    let g = f.gate();
    let new_app = f.app_password("dora", &[], false, None);
    assert!(g.decide(&req("dora", &new_app, "imap")).is_accepted());
    assert!(g.decide(&req("dora", &new_app, "imap")).is_accepted());
    f.store().revoke_app_password("dora", 1).unwrap();
    assert!(!g.decide(&req("dora", &old_app, "imap")).is_accepted());

    let out = saslgate(&f, &["restore", backup.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    // The running gate sees the restored content at its next login.
    assert_eq!(
        refused(&g.decide(&req("dora", &new_app, "imap"))),
        Some(RefuseReason::BadCredentials),
        "app password added after the backup"
    );
    assert!(g.decide(&req("dora", &old_app, "imap")).is_accepted());
    assert!(g.decide(&req("dora", "pw-dora", "imap")).is_accepted());
    let conn = rusqlite::Connection::open(&f.config.db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");

    // A backup that is not one is refused and loses nothing.
    let junk = f.path("junk.db");
    std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
    let out = saslgate(&f, &["restore", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(g.decide(&req("dora", &old_app, "imap")).is_accepted());
}

/// Finding 4, other means: a backup copied over the live file in place (the
/// inode stays) is noticed; the running gate never serves what it read before
/// (its fast-path snapshot held the app password added after the backup).
/// The log is checkpointed first: copying over a file whose write-ahead log
/// still holds frames makes SQLite read those frames over the copy, which is
/// not detected (SECURITY.md finding 4; `saslgate restore` is the safe way).
#[test]
fn a_file_copied_over_in_place_is_not_served_stale() {
    let f = Fixture::new();
    f.user("emil", "pw-emil");
    let backup = f.path("backup.db");
    SqliteStore::open(&f.config).unwrap();
    saslgate(&f, &["backup", backup.to_str().unwrap()]);
    let g = f.gate();
    let app = f.app_password("emil", &[], false, None);
    assert!(g.decide(&req("emil", &app, "imap")).is_accepted());
    assert!(g.decide(&req("emil", &app, "imap")).is_accepted());
    let busy: i64 = rusqlite::Connection::open(&f.config.db)
        .unwrap()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(busy, 0, "the log could not be checkpointed");
    std::fs::copy(&backup, &f.config.db).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let d = g.decide(&req("emil", &app, "imap"));
    assert!(
        !d.is_accepted(),
        "app password added after the backup: {d:?}"
    );
}

/// Finding 4, other means: `cp backup tmp && mv tmp live` while the old
/// write-ahead log is still beside it: unavailable (opening it would mix the
/// old log into the new file), never served stale, and the file is not harmed.
#[test]
fn a_file_moved_over_a_live_wal_is_unavailable() {
    let f = Fixture::new();
    f.user("fred", "pw-fred");
    let backup = f.path("backup.db");
    saslgate(&f, &["backup", backup.to_str().unwrap()]);
    // Keep a writer's log alive, as a mail server's plugin would.
    let holder = rusqlite::Connection::open(&f.config.db).unwrap();
    holder
        .execute_batch("PRAGMA wal_autocheckpoint = 0; BEGIN; SELECT * FROM meta; COMMIT;")
        .unwrap();
    let g = f.gate();
    let app = f.app_password("fred", &[], false, None);
    assert!(g.decide(&req("fred", &app, "imap")).is_accepted());
    let wal = format!("{}-wal", f.config.db.display());
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    std::thread::sleep(Duration::from_millis(20));
    let tmp = f.path("tmp.db");
    std::fs::copy(&backup, &tmp).unwrap();
    std::fs::rename(&tmp, &f.config.db).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let d = g.decide(&req("fred", &app, "imap"));
    assert!(
        matches!(d, saslgate::Decision::Unavailable { .. }),
        "expected unavailable, got {d:?}"
    );
    drop(holder);
    // The admin's way out: stop the users of the old log and remove it.
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", f.config.db.display()));
    }
    std::thread::sleep(Duration::from_millis(150));
    assert!(g.decide(&req("fred", "pw-fred", "imap")).is_accepted());
    assert_eq!(
        refused(&g.decide(&req("fred", &app, "imap"))),
        Some(RefuseReason::BadCredentials)
    );
}

/// Finding 6: an account whose hash has a lower cost than configured refuses a
/// wrong password in the same time as an unknown account.
#[test]
fn refusal_time_does_not_depend_on_the_stored_cost() {
    let f = Fixture::new(); // hashes made at cost 4
    f.user("gus", "pw-gus");
    let g = Gate::open(Config {
        bcrypt_cost: 9,
        ..f.config.clone()
    })
    .unwrap();
    let time = |login: &str| {
        let t = Instant::now();
        let d = g.decide(&req(login, "wrong-password", "imap"));
        assert_eq!(refused(&d), Some(RefuseReason::BadCredentials));
        t.elapsed().as_secs_f64()
    };
    time("nobody"); // the dummy hash is made once
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..25 {
        known.push(time("gus"));
        unknown.push(time("nobody"));
    }
    known.sort_by(f64::total_cmp);
    unknown.sort_by(f64::total_cmp);
    // The fastest of each: other processes on a busy machine only ever add
    // time, so the minimum is the figure least disturbed by them (a median
    // moved with CI load and made this flaky). Unpadded, cost 4 against
    // cost 9 is about 1/32.
    let ratio = known[0] / unknown[0];
    assert!(
        (0.85..1.18).contains(&ratio),
        "fastest known {:.2} ms, unknown {:.2} ms (medians {:.2}, {:.2})",
        known[0] * 1e3,
        unknown[0] * 1e3,
        known[12] * 1e3,
        unknown[12] * 1e3
    );
}

/// Finding 9: `service deny NAME '*'` denies every service, and an override for
/// the service itself still wins over it.
#[test]
fn star_in_an_account_override_means_every_service() {
    let f = Fixture::new();
    f.user("hedy", "pw-hedy");
    let app = f.app_password("hedy", &[], false, None);
    let g = f.gate();
    assert!(g.decide(&req("hedy", &app, "imap")).is_accepted());
    let out = saslgate(&f, &["service", "deny", "hedy", "*"]);
    assert!(out.status.success(), "{out:?}");
    for (pw, service) in [
        (app.as_str(), "imap"),
        ("pw-hedy", "smtp"),
        ("pw-hedy", "pop3"),
    ] {
        assert_eq!(
            refused(&g.decide(&req("hedy", pw, service))),
            Some(RefuseReason::NotAllowed),
            "{service}"
        );
    }
    let out = saslgate(&f, &["service", "allow", "hedy", "imap"]);
    assert!(out.status.success(), "{out:?}");
    assert!(g.decide(&req("hedy", &app, "imap")).is_accepted());
    assert_eq!(
        refused(&g.decide(&req("hedy", &app, "smtp"))),
        Some(RefuseReason::NotAllowed)
    );
    let out = saslgate(&f, &["--json", "explain", "hedy", "--service", "smtp"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("denies"), "{text}");
}

/// SECURITY.md, "Who can do what": a thief of read access to the database
/// cannot recover app passwords, one-time codes or the master password from
/// it. The file (and its log) is searched for every secret in every form it
/// is typed or shown in, after logins with each.
#[test]
fn the_database_holds_no_secret_in_clear() {
    let f = Fixture::new();
    f.user("alice", "master-Pw-7f3a9c");
    let app = f.app_password("alice", &[], false, None);
    let codes = f.admin().generate_codes("alice", 3).unwrap();
    let codes: Vec<String> = codes
        .iter()
        .map(|c| String::from_utf8(c.as_bytes().to_vec()).unwrap())
        .collect();
    let g = f.gate();
    assert!(g.decide(&req("alice", &app, "imap")).is_accepted());
    let two_step = format!("master-Pw-7f3a9c{}", codes[0]);
    assert!(g.decide(&req("alice", &two_step, "imap")).is_accepted());
    g.flush();
    drop(g);
    let mut bytes = std::fs::read(&f.config.db).unwrap();
    if let Ok(wal) = std::fs::read(f.path("").join(format!(
        "{}-wal",
        f.config.db.file_name().unwrap().to_str().unwrap()
    ))) {
        bytes.extend(wal);
    }
    let mut secrets = vec!["master-Pw-7f3a9c".to_string(), app.clone()];
    secrets.push(app.replace(['-', ' '], ""));
    secrets.push(app.replace(['-', ' '], "").to_ascii_uppercase());
    for c in &codes {
        secrets.push(c.clone());
        secrets.push(c.replace('-', ""));
    }
    for s in secrets {
        assert!(
            !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
            "{s:?} is in the database file in clear"
        );
    }
}
