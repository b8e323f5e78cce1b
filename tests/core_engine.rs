//! The login decision matrix, slow-hash accounting, throttling, races and bad input,
//! through the library (the same `Gate::decide` every face calls).

use saslgate::engine::Credential;
use saslgate::secret::SecretBytes;
use saslgate::{Config, Decision, Gate, RefuseReason, Request};
use saslgate_testkit::*;
use std::sync::{Arc, Barrier};
use std::time::Duration;

#[test]
fn decision_matrix() {
    let f = Fixture::new();
    f.user("alice", "correct horse");
    let app_imap = f.app_password("alice", &["imap"], false, None);
    let app_any = f.app_password("alice", &[], false, None);
    let expired = f.app_password(
        "alice",
        &["imap"],
        false,
        Some(saslgate::timefmt::now() - 10),
    );
    let revoked = f.app_password("alice", &["imap"], false, None);
    let restricted = f.app_password("alice", &[], true, None);
    f.admin().revoke_app_password("alice", 4).unwrap();
    let g = f.gate();
    let ok = |d: Decision| assert!(d.is_accepted(), "expected accept, got {d:?}");

    ok(g.decide(&req("alice", "correct horse", "imap")));
    assert_eq!(
        refused(&g.decide(&req("alice", "correct horsE", "imap"))),
        Some(RefuseReason::BadCredentials)
    );
    // App password in and out of scope; typed without dashes, with spaces, upper case.
    ok(g.decide(&req("alice", &app_imap, "imap")));
    ok(g.decide(&req("alice", &app_imap.replace('-', ""), "imap")));
    ok(g.decide(&req(
        "alice",
        &app_imap.replace('-', " ").to_uppercase(),
        "imap",
    )));
    assert_eq!(
        refused(&g.decide(&req("alice", &app_imap, "smtp"))),
        Some(RefuseReason::NotAllowed)
    );
    ok(g.decide(&req("alice", &app_any, "smtp")));
    // Expired and revoked: generic credential refusal.
    assert_eq!(
        refused(&g.decide(&req("alice", &expired, "imap"))),
        Some(RefuseReason::BadCredentials)
    );
    assert_eq!(
        refused(&g.decide(&req("alice", &revoked, "imap"))),
        Some(RefuseReason::BadCredentials)
    );
    // Restricted: only the restricted services (default smtp).
    ok(g.decide(&req("alice", &restricted, "smtp")));
    ok(g.decide(&req("alice", &restricted, "submission")));
    assert_eq!(
        refused(&g.decide(&req("alice", &restricted, "imap"))),
        Some(RefuseReason::NotAllowed)
    );
    // Unknown account.
    assert_eq!(
        refused(&g.decide(&req("mallory", "correct horse", "imap"))),
        Some(RefuseReason::BadCredentials)
    );
    // Case-folded login.
    ok(g.decide(&req("ALICE", "correct horse", "imap")));

    // Plan without the service, then account overrides both ways.
    let mut s = f.admin();
    s.set_plan_services("mailonly", &["smtp".into()]).unwrap();
    s.set_plan("alice", "mailonly").unwrap();
    assert_eq!(
        refused(&g.decide(&req("alice", "correct horse", "imap"))),
        Some(RefuseReason::NotAllowed)
    );
    ok(g.decide(&req("alice", "correct horse", "smtp")));
    s.set_service_override("alice", "imap", Some(true)).unwrap();
    ok(g.decide(&req("alice", "correct horse", "imap")));
    s.set_service_override("alice", "smtp", Some(false))
        .unwrap();
    assert_eq!(
        refused(&g.decide(&req("alice", "correct horse", "smtp"))),
        Some(RefuseReason::NotAllowed)
    );
    // The credential still narrows an account override.
    assert_eq!(
        refused(&g.decide(&req("alice", &restricted, "imap"))),
        Some(RefuseReason::NotAllowed)
    );
    s.set_service_override("alice", "smtp", None).unwrap();
    ok(g.decide(&req("alice", "correct horse", "smtp")));

    // Disabled account: right password refused as disabled, wrong one as bad credentials.
    s.set_disabled("alice", true).unwrap();
    assert_eq!(
        refused(&g.decide(&req("alice", "correct horse", "smtp"))),
        Some(RefuseReason::Disabled)
    );
    assert_eq!(
        refused(&g.decide(&req("alice", &app_any, "smtp"))),
        Some(RefuseReason::Disabled)
    );
    assert_eq!(
        refused(&g.decide(&req("alice", "nope", "smtp"))),
        Some(RefuseReason::BadCredentials)
    );
}

#[test]
fn realms_and_service_aliases() {
    let f = Fixture::new();
    f.user("bob@example.org", "pw-bob");
    f.user("carol", "pw-carol");
    let g = Gate::open(Config {
        local_realms: Some(vec!["mail.example.org".into()]),
        ..f.config.clone()
    })
    .unwrap();
    let with_realm = |login, pw, realm: &'static str| Request {
        realm: Some(realm.as_bytes()),
        ..req(login, pw, "pop3")
    };
    assert!(g
        .decide(&with_realm("bob", "pw-bob", "Example.org"))
        .is_accepted());
    assert!(g
        .decide(&req("Bob@Example.ORG", "pw-bob", "imap"))
        .is_accepted());
    // Postfix passes its hostname as realm: a plain account matches when the
    // realm is a local one...
    assert!(g
        .decide(&with_realm("carol", "pw-carol", "mail.example.org"))
        .is_accepted());
    // ...and never for another realm: carol@victim.org is not carol.
    assert_eq!(
        refused(&g.decide(&with_realm("carol", "pw-carol", "victim.org"))),
        Some(RefuseReason::BadCredentials)
    );
    let mut s = f.admin();
    s.set_plan_services("poponly", &["pop".into()]).unwrap();
    s.set_plan("carol", "poponly").unwrap();
    assert!(g.decide(&req("carol", "pw-carol", "POP3")).is_accepted());
    assert!(!g.decide(&req("carol", "pw-carol", "imap")).is_accepted());
}

#[test]
fn two_step_logins() {
    let f = Fixture::new();
    f.user("dave", "pw-dave");
    let app = f.app_password("dave", &["imap"], false, None);
    let mut s = f.admin();
    s.enable_totp(
        "dave",
        &saslgate::totp::decode_secret(TOTP_SECRET_B32).unwrap(),
    )
    .unwrap();
    let codes = s.generate_codes("dave", 3).unwrap();
    let code0 = String::from_utf8(codes[0].as_bytes().to_vec()).unwrap();
    let g = f.gate();

    // Master alone is refused on every service.
    for svc in ["imap", "smtp", "pop"] {
        assert_eq!(
            refused(&g.decide(&req("dave", "pw-dave", svc))),
            Some(RefuseReason::BadCredentials)
        );
    }
    let totp = oathtool(TOTP_SECRET_B32);
    let before = g.stats().slow_hashes;
    let d = g.decide(&req("dave", &format!("pw-dave{totp}"), "imap"));
    assert_eq!(
        d,
        Decision::Accepted {
            account: "dave".into(),
            credential: Credential::MasterAndTotp
        }
    );
    assert!(
        g.stats().slow_hashes - before <= 1,
        "two-step login costs at most one slow hash"
    );
    // The same code again: refused (each time step once).
    assert_eq!(
        refused(&g.decide(&req("dave", &format!("pw-dave{totp}"), "imap"))),
        Some(RefuseReason::BadCredentials)
    );
    // Wrong code, wrong password with a right code shape.
    assert!(!g
        .decide(&req("dave", "pw-dave000000", "imap"))
        .is_accepted());
    // One-time code: accepted once, with or without its dash.
    let d = g.decide(&req("dave", &format!("pw-dave{code0}"), "imap"));
    assert_eq!(
        d,
        Decision::Accepted {
            account: "dave".into(),
            credential: Credential::MasterAndCode
        }
    );
    assert!(!g
        .decide(&req("dave", &format!("pw-dave{code0}"), "imap"))
        .is_accepted());
    let code1 = String::from_utf8(codes[1].as_bytes().to_vec())
        .unwrap()
        .replace('-', "");
    assert!(g
        .decide(&req("dave", &format!("pw-dave{code1}"), "imap"))
        .is_accepted());
    assert!(!g
        .decide(&req(
            "dave",
            &format!("wrong{}", String::from_utf8_lossy(codes[2].as_bytes())),
            "imap"
        ))
        .is_accepted());
    // ...and the code survived the wrong password.
    assert!(g
        .decide(&req(
            "dave",
            &format!("pw-dave{}", String::from_utf8_lossy(codes[2].as_bytes())),
            "imap"
        ))
        .is_accepted());
    // App passwords bypass two-step.
    assert!(g.decide(&req("dave", &app, "imap")).is_accepted());
}

#[test]
fn one_slow_hash_at_most() {
    let f = Fixture::new();
    f.user("erin", "pw-erin");
    let app = f.app_password("erin", &[], false, None);
    let mut cfg = f.config.clone();
    cfg.throttle_address.failures = 2;
    let g = Gate::open(cfg).unwrap();
    let cost = |r: Request<'_>| {
        let before = g.stats().slow_hashes;
        let d = g.decide(&r);
        (d, g.stats().slow_hashes - before)
    };
    assert_eq!(
        cost(req("nobody", "x", "imap")).1,
        1,
        "unknown account: one dummy hash"
    );
    assert_eq!(
        cost(req("erin", "wrong", "imap")).1,
        1,
        "wrong password: one hash"
    );
    let (d, n) = cost(req("erin", &app, "imap"));
    assert!(d.is_accepted());
    assert_eq!(n, 0, "app password: no slow hash");
    let (d, n) = cost(req("erin", "pw-erin", "imap"));
    assert!(d.is_accepted());
    assert_eq!(n, 1);
    // Throttled: refuse without hashing, even the right password.
    let from = |pw| Request {
        client_addr: Some(b"192.0.2.7;5555"),
        secure: None,
        ..req("erin", pw, "imap")
    };
    cost(from("bad1"));
    cost(from("bad2"));
    let (d, n) = cost(from("pw-erin"));
    assert_eq!(refused(&d), Some(RefuseReason::Throttled));
    assert_eq!(n, 0, "throttled: no slow hash");
}

#[test]
fn throttling_cannot_be_turned_against_the_user() {
    let f = Fixture::new();
    f.user("frank", "pw-frank");
    let mut cfg = f.config.clone();
    cfg.throttle_address.failures = 5;
    cfg.throttle_account_address.failures = 3;
    cfg.slowdown_failures = 2;
    // Short delays: the engine makes each guess past the budget wait them out.
    cfg.slowdown_max_delay = Duration::from_millis(200);
    let g = Gate::open(cfg).unwrap();
    let at = |pw: &'static str, ip: &'static str| Request {
        client_addr: Some(ip.as_bytes()),
        secure: None,
        ..req("frank", pw, "imap")
    };

    // A phone with a stale password: the same wrong password 20 times counts once.
    for _ in 0..20 {
        assert_eq!(
            refused(&g.decide(&at("old-pw", "198.51.100.1"))),
            Some(RefuseReason::BadCredentials)
        );
    }
    assert!(g.decide(&at("pw-frank", "198.51.100.1")).is_accepted());

    // An attacker at one address: blocked after the budget, right password too.
    for pw in ["a", "b", "c"] {
        g.decide(&at(pw, "203.0.113.9"));
    }
    let d = g.decide(&at("pw-frank", "203.0.113.9"));
    match d {
        Decision::Refused {
            reason: RefuseReason::Throttled,
            retry_after: Some(r),
            ..
        } => assert!(r.as_secs() > 0),
        other => panic!("expected throttled, got {other:?}"),
    }
    // The user elsewhere is not affected.
    assert!(g.decide(&at("pw-frank", "198.51.100.1")).is_accepted());

    // Without a client address: failures slow the account down but never refuse it.
    let mut last_delay = Duration::ZERO;
    for i in 0..8 {
        let pw = format!("guess{i}");
        match g.decide(&req("frank", &pw, "imap")) {
            Decision::Refused {
                reason: RefuseReason::BadCredentials,
                delay,
                ..
            } => last_delay = delay,
            other => panic!("{other:?}"),
        }
    }
    assert!(
        last_delay >= Duration::from_millis(200),
        "address-less guessing is slowed down"
    );
    assert!(g.decide(&req("frank", "pw-frank", "imap")).is_accepted());
    // Success does not clear the account-wide slow-down (it would hand an
    // attacker fresh guesses at each login of the owner): it ends with its
    // window.
    match g.decide(&req("frank", "guess-again", "imap")) {
        Decision::Refused { delay, .. } => assert!(delay > Duration::ZERO),
        other => panic!("{other:?}"),
    }
}

#[test]
fn throttle_window_passes() {
    let f = Fixture::new();
    f.user("gina", "pw-gina");
    let mut cfg = f.config.clone();
    cfg.throttle_address.failures = 1;
    // Timestamps are whole seconds: a block of 3 s lasts at least 2 s of real
    // time, so the check right after the failure is inside it even on a slow
    // machine that crosses a second boundary between the two (1 s was flaky).
    cfg.throttle_address.block = Duration::from_secs(3);
    cfg.throttle_address.window = Duration::from_secs(3);
    let g = Gate::open(cfg).unwrap();
    let at = |pw: &'static str| Request {
        client_addr: Some(b"192.0.2.1"),
        secure: None,
        ..req("gina", pw, "imap")
    };
    g.decide(&at("wrong"));
    assert_eq!(
        refused(&g.decide(&at("pw-gina"))),
        Some(RefuseReason::Throttled)
    );
    std::thread::sleep(Duration::from_millis(4100));
    assert!(g.decide(&at("pw-gina")).is_accepted());
}

#[test]
fn one_time_code_race_between_32_threads() {
    let f = Fixture::new();
    f.user("hank", "pw-hank");
    let codes = f.admin().generate_codes("hank", 1).unwrap();
    let password = format!("pw-hank{}", String::from_utf8_lossy(codes[0].as_bytes()));
    let barrier = Arc::new(Barrier::new(32));
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let cfg = f.config.clone();
            let pw = password.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let g = Gate::open(cfg).unwrap(); // own connection: a real race in SQLite
                barrier.wait();
                g.decide(&req("hank", &pw, "imap"))
            })
        })
        .collect();
    let results: Vec<Decision> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let accepted = results.iter().filter(|d| d.is_accepted()).count();
    assert_eq!(accepted, 1, "exactly one accepted: {results:?}");
    assert!(
        results
            .iter()
            .all(|d| !matches!(d, Decision::Unavailable { .. })),
        "{results:?}"
    );
}

#[test]
fn cache_skips_the_slow_hash_and_dies_with_admin_changes() {
    let f = Fixture::new();
    f.user("ivy", "pw-ivy");
    let mut cfg = f.config.clone();
    cfg.cache_ttl = Duration::from_secs(60);
    let g = Gate::open(cfg).unwrap();
    assert!(g.decide(&req("ivy", "pw-ivy", "imap")).is_accepted());
    let before = g.stats().slow_hashes;
    assert!(g.decide(&req("ivy", "pw-ivy", "imap")).is_accepted());
    assert_eq!(g.stats().slow_hashes, before, "cached");
    assert_eq!(g.stats().cache_hits, 1);
    // Wrong passwords are never served from the cache.
    assert!(!g.decide(&req("ivy", "pw-ivX", "imap")).is_accepted());
    f.admin().set_disabled("ivy", true).unwrap();
    assert_eq!(
        refused(&g.decide(&req("ivy", "pw-ivy", "imap"))),
        Some(RefuseReason::Disabled)
    );
}

#[test]
fn weak_hashes_are_upgraded_and_password_change_can_revoke_app_passwords() {
    let f = Fixture::new();
    f.user("jack", "pw-jack");
    let app = f.app_password("jack", &[], false, None);
    let mut cfg = f.config.clone();
    cfg.bcrypt_cost = 5;
    let g = Gate::open(cfg).unwrap();
    assert!(g.decide(&req("jack", "pw-jack", "imap")).is_accepted());
    let hash = f
        .admin()
        .find_account("jack")
        .unwrap()
        .unwrap()
        .password_hash
        .unwrap();
    assert_eq!(saslgate::crypto::bcrypt_cost_of(&hash), Some(5));
    assert!(g.decide(&req("jack", "pw-jack", "imap")).is_accepted());

    f.admin()
        .set_master_password("jack", &SecretBytes::from_slice(b"new-pw"), true)
        .unwrap();
    assert!(!g.decide(&req("jack", &app, "imap")).is_accepted());
    assert!(!g.decide(&req("jack", "pw-jack", "imap")).is_accepted());
    assert!(g.decide(&req("jack", "new-pw", "imap")).is_accepted());
}

#[test]
fn audit_trail_records_and_prunes() {
    let f = Fixture::new();
    f.user("kate", "pw-kate");
    let g = f.gate();
    g.decide(&req("kate", "pw-kate", "imap"));
    g.decide(&Request {
        client_addr: Some(b"192.0.2.5;1"),
        secure: None,
        ..req("kate", "nope", "smtp")
    });
    g.flush();
    let s = f.admin();
    let log = s.audit_entries(Some("kate"), None, 100).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].outcome, "accepted");
    assert_eq!(log[1].outcome, "refused");
    assert_eq!(log[1].client_addr.as_deref(), Some("192.0.2.5"));
    // Never a password in the trail.
    let all = format!("{log:?}");
    assert!(!all.contains("pw-kate") && !all.contains("nope"));

    // Records past the retention are pruned by the engine itself.
    f.sql("UPDATE audit SET ts = ts - 40 * 86400");
    let g2 = f.gate();
    g2.decide(&req("kate", "pw-kate", "imap"));
    g2.flush();
    assert_eq!(
        f.admin()
            .audit_entries(Some("kate"), None, 100)
            .unwrap()
            .len(),
        1
    );
}

/// Schema 4 prunes by id order (no index on ts): everything before the first
/// record young enough to keep goes, in chunks, and nothing after it.
#[test]
fn audit_retention_prunes_the_oldest_ids_in_chunks() {
    let f = Fixture::new();
    f.user("kate", "pw-kate");
    let old = "strftime('%s','now') - 40 * 86400";
    // More old rows than one prune chunk (10 000), then a young one, then old
    // rows written after it (a batch that waited): those stay until it goes.
    f.sql(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25000)
         INSERT INTO audit (ts, account, outcome) SELECT {old}, 'old', 'accepted' FROM n;
         INSERT INTO audit (ts, account, outcome) VALUES (strftime('%s','now') - 60, 'young', 'accepted');
         INSERT INTO audit (ts, account, outcome) VALUES ({old}, 'late', 'accepted'), ({old}, 'late', 'accepted');"
    ));
    let g = f.gate();
    g.decide(&req("kate", "pw-kate", "imap"));
    g.flush();
    let left: Vec<String> = f
        .admin()
        .audit_entries(None, None, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.account.unwrap_or_default())
        .collect();
    assert_eq!(left, ["young", "late", "late", "kate"]);
}

#[test]
fn bad_input_is_refused_never_accepted() {
    let f = Fixture::new();
    f.user("liam", "pw-liam");
    let g = f.gate();
    let big = "x".repeat(64 * 1024);
    let cases: Vec<Request<'_>> = vec![
        req("", "pw-liam", "imap"),
        req("liam", "", "imap"),
        req("liam", "pw-liam", ""),
        Request {
            login: b"li\0am",
            ..req("", "pw-liam", "imap")
        },
        Request {
            password: b"pw-liam\0junk",
            ..req("liam", "", "imap")
        },
        Request {
            login: b"li\xffam",
            ..req("", "pw-liam", "imap")
        },
        Request {
            service: b"im\xffap",
            ..req("liam", "pw-liam", "")
        },
        Request {
            realm: Some(b"\xff"),
            ..req("liam", "pw-liam", "imap")
        },
        req("liam", &big, "imap"),
        req(&big, "pw-liam", "imap"),
    ];
    for c in &cases {
        let d = g.decide(c);
        assert_eq!(refused(&d), Some(RefuseReason::BadInput), "{c:?} -> {d:?}");
    }
    // A non-UTF-8 password is fine as input (just wrong here).
    let d = g.decide(&Request {
        password: b"\xff\xfe",
        ..req("liam", "", "imap")
    });
    assert_eq!(refused(&d), Some(RefuseReason::BadCredentials));
}

#[test]
fn broken_storage_is_unavailable() {
    let f = Fixture::new();
    f.user("mia", "pw-mia");
    let unavailable = |g: &Gate, pw: &str| {
        let d = g.decide(&req("mia", pw, "imap"));
        assert!(
            matches!(d, Decision::Unavailable { .. }),
            "expected unavailable, got {d:?}"
        );
    };

    // Missing database.
    let mut missing = f.config.clone();
    missing.db = f.path("nope.db");
    unavailable(&Gate::new(missing.clone()), "pw-mia");
    assert!(Gate::open(missing).is_err());

    // Garbage instead of a database.
    let mut garbage = f.config.clone();
    garbage.db = f.path("garbage.db");
    std::fs::write(&garbage.db, vec![0x5a; 8192]).unwrap();
    unavailable(&Gate::new(garbage.clone()), "pw-mia");
    let err = Gate::open(garbage).err().unwrap().to_string();
    assert!(
        err.contains("not a database") || err.contains("saslgate"),
        "{err}"
    );

    // Deleted while in use, then restored: unavailable, then served again (no restart).
    let g = f.gate();
    assert!(g.decide(&req("mia", "pw-mia", "imap")).is_accepted());
    let db = f.config.db.clone();
    let moved = f.path("moved.db");
    std::fs::rename(&db, &moved).unwrap();
    // The path is checked at most every 0.1 s (engine::FILE_CHECK_INTERVAL).
    std::thread::sleep(Duration::from_millis(150));
    unavailable(&g, "pw-mia");
    std::fs::rename(&moved, &db).unwrap();
    assert!(g.decide(&req("mia", "pw-mia", "imap")).is_accepted());

    // Locked by another writer past the busy timeout: a refusal (which must be
    // written) is unavailable, never a silent pass.
    let mut short = f.config.clone();
    short.busy_timeout = Duration::from_millis(100);
    let g = Gate::open(short).unwrap();
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker
        .execute_batch("BEGIN EXCLUSIVE; UPDATE meta SET value = value WHERE key = 'generation';")
        .unwrap();
    unavailable(&g, "wrong-pw");
    locker.execute_batch("COMMIT").unwrap();
    assert_eq!(
        refused(&g.decide(&req("mia", "wrong-pw", "imap"))),
        Some(RefuseReason::BadCredentials)
    );

    // Written by a newer saslgate: refused with a clear message.
    let newer = rusqlite::Connection::open(&db).unwrap();
    newer.pragma_update(None, "user_version", 99).unwrap();
    let err = Gate::open(f.config.clone()).err().unwrap().to_string();
    assert!(err.contains("newer saslgate"), "{err}");
    unavailable(&f.gate_unchecked(), "pw-mia");
}

trait Unchecked {
    fn gate_unchecked(&self) -> Gate;
}
impl Unchecked for Fixture {
    fn gate_unchecked(&self) -> Gate {
        Gate::new(self.config.clone())
    }
}

#[test]
fn policy_check_for_other_mechanisms() {
    let f = Fixture::new();
    f.user("noah", "pw-noah");
    f.user("olga", "pw-olga");
    let mut s = f.admin();
    s.set_disabled("olga", true).unwrap();
    s.set_service_override("noah", "sieve", Some(false))
        .unwrap();
    let g = f.gate();
    let check = |login, svc| g.check_account(&req(login, "", svc));
    assert!(check("noah", "imap").is_accepted());
    assert_eq!(
        refused(&check("noah", "sieve")),
        Some(RefuseReason::NotAllowed)
    );
    assert_eq!(
        refused(&check("olga", "imap")),
        Some(RefuseReason::Disabled)
    );
    assert_eq!(
        refused(&check("zed", "imap")),
        Some(RefuseReason::NoSuchAccount)
    );
    assert_eq!(g.stats().slow_hashes, 0);
}

/// The app-password fast path (account data held in memory, src/snapshot.rs)
/// must follow every admin change made by another process at once, and leave
/// every refusal to the full path.
#[test]
fn fast_path_follows_every_change() {
    let f = Fixture::new();
    f.user("hana", "pw-hana");
    f.user("ivan", "pw-ivan");
    let app = f.app_password("hana", &["imap", "smtp"], false, None);
    let other = f.app_password("hana", &[], false, None);
    let mut cfg = f.config.clone();
    cfg.throttle_address.failures = 3;
    let g = Gate::open(cfg).unwrap();
    let fast = |g: &Gate| g.stats().fast_accepts;
    let at = |pw: &'static str, ip: &'static str| Request {
        client_addr: Some(ip.as_bytes()),
        secure: None,
        ..req("hana", pw, "imap")
    };
    let app: &'static str = Box::leak(app.into_boxed_str());
    let other: &'static str = Box::leak(other.into_boxed_str());

    // First login reads the database; the next ones take the fast path.
    assert!(g.decide(&req("hana", app, "imap")).is_accepted());
    assert_eq!(fast(&g), 0);
    assert!(g.decide(&req("hana", app, "imap")).is_accepted());
    assert!(g.decide(&req("HANA", app, "smtp")).is_accepted());
    assert_eq!(fast(&g), 2);
    // Out of the app password's scope, wrong password, other account: refused.
    assert_eq!(
        refused(&g.decide(&req("hana", app, "pop3"))),
        Some(RefuseReason::NotAllowed)
    );
    assert_eq!(
        refused(&g.decide(&req("ivan", app, "imap"))),
        Some(RefuseReason::BadCredentials)
    );
    let mut wrong = app.as_bytes().to_vec();
    wrong[0] = if wrong[0] == b'a' { b'b' } else { b'a' };
    let wrong = String::from_utf8(wrong).unwrap();
    assert_eq!(
        refused(&g.decide(&req("hana", &wrong, "imap"))),
        Some(RefuseReason::BadCredentials)
    );
    assert_eq!(fast(&g), 2);

    // Throttled: the right app password is refused like any other.
    for pw in ["x", "y", "z"] {
        g.decide(&at(pw, "203.0.113.7"));
    }
    assert_eq!(
        refused(&g.decide(&at(app, "203.0.113.7"))),
        Some(RefuseReason::Throttled)
    );
    assert!(g.decide(&at(app, "198.51.100.7")).is_accepted());

    // Each admin change (from another connection, as the CLI makes them) is
    // seen by the very next login.
    let mut s = f.admin();
    let before = fast(&g);
    s.set_service_override("hana", "imap", Some(false)).unwrap();
    assert_eq!(
        refused(&g.decide(&req("hana", app, "imap"))),
        Some(RefuseReason::NotAllowed)
    );
    s.set_service_override("hana", "imap", None).unwrap();
    assert!(g.decide(&req("hana", app, "imap")).is_accepted());
    assert!(g.decide(&req("hana", app, "imap")).is_accepted());
    s.set_disabled("hana", true).unwrap();
    assert_eq!(
        refused(&g.decide(&req("hana", app, "imap"))),
        Some(RefuseReason::Disabled)
    );
    s.set_disabled("hana", false).unwrap();
    assert!(g.decide(&req("hana", app, "imap")).is_accepted());
    s.set_plan_services("smtponly", &["smtp".into()]).unwrap();
    s.set_plan("hana", "smtponly").unwrap();
    assert_eq!(
        refused(&g.decide(&req("hana", app, "imap"))),
        Some(RefuseReason::NotAllowed)
    );
    assert!(g.decide(&req("hana", app, "smtp")).is_accepted());
    s.set_plan("hana", "default").unwrap();
    assert!(g.decide(&req("hana", other, "imap")).is_accepted());
    assert!(g.decide(&req("hana", other, "imap")).is_accepted());
    let id = s.list_app_passwords("hana").unwrap()[0].id;
    s.revoke_app_password("hana", id).unwrap();
    assert_eq!(
        refused(&g.decide(&req("hana", app, "imap"))),
        Some(RefuseReason::BadCredentials)
    );
    assert!(g.decide(&req("hana", other, "imap")).is_accepted());
    assert!(
        fast(&g) > before,
        "the fast path was used between the changes"
    );

    // Deleted and made again under the same name: the old app passwords are gone.
    s.delete_account("hana").unwrap();
    s.add_account("hana", "default").unwrap();
    assert_eq!(
        refused(&g.decide(&req("hana", other, "imap"))),
        Some(RefuseReason::BadCredentials)
    );

    // A realm login falling back to the plain account takes the fast path too
    // (`localhost` is a local realm by default).
    let ivan = f.app_password("ivan", &[], false, None);
    let with_realm = Request {
        realm: Some(b"localhost"),
        ..req("ivan", &ivan, "imap")
    };
    assert!(g.decide(&with_realm).is_accepted());
    let before = fast(&g);
    assert!(g.decide(&with_realm).is_accepted());
    assert_eq!(fast(&g), before + 1);
}

/// An app password that expires while its account sits in the fast path's
/// snapshot is refused from that second on.
#[test]
fn fast_path_honours_expiry() {
    let f = Fixture::new();
    f.user("jon", "pw-jon");
    let expires = saslgate::timefmt::now() + 2;
    let app = f.app_password("jon", &[], false, Some(expires));
    let g = f.gate();
    assert!(g.decide(&req("jon", &app, "imap")).is_accepted());
    assert!(g.decide(&req("jon", &app, "imap")).is_accepted());
    assert_eq!(g.stats().fast_accepts, 1);
    while saslgate::timefmt::now() < expires {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        refused(&g.decide(&req("jon", &app, "imap"))),
        Some(RefuseReason::BadCredentials)
    );
}

/// The fast path knows the throttle rows without reading them while nothing
/// was committed (src/engine/fresh.rs, the WAL-index header of SQLite): a
/// failure counted by another process (here the `saslgate verify` command)
/// must block the very next login from that address, even with the right app
/// password, exactly as a read per login did. SQLite only: PostgreSQL reads
/// the rows on every login.
#[test]
fn fast_path_sees_failures_counted_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let s = Scenario::create(dir.path(), "", "address_failures = 3", 0);
    let g = Gate::open(s.config.clone()).unwrap();
    let at = |ip: &'static str| Request {
        client_addr: Some(ip.as_bytes()),
        ..req("alice", &s.app_imap, "imap")
    };
    for _ in 0..3 {
        assert!(g.decide(&at("203.0.113.9")).is_accepted());
    }
    assert_eq!(g.stats().fast_accepts, 2);
    for attempt in 0..3 {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_saslgate"))
            .arg("--config")
            .arg(&s.conf)
            .args([
                "verify",
                "alice",
                "--service",
                "imap",
                "--ip",
                "203.0.113.9",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        write!(stdin, "wrong password {attempt}").unwrap();
        drop(stdin);
        assert_eq!(child.wait().unwrap().code(), Some(1), "refused");
    }
    assert_eq!(
        refused(&g.decide(&at("203.0.113.9"))),
        Some(RefuseReason::Throttled)
    );
    // Other addresses are not affected, and go on taking the fast path.
    let before = g.stats().fast_accepts;
    assert!(g.decide(&at("198.51.100.9")).is_accepted());
    assert!(g.decide(&at("198.51.100.9")).is_accepted());
    assert_eq!(g.stats().fast_accepts, before + 2);
    assert_eq!(
        refused(&g.decide(&at("203.0.113.9"))),
        Some(RefuseReason::Throttled)
    );
}

/// The gate's own audit batches change nothing the fast path knows (the
/// generation, throttle rows): their commits carry its knowledge across
/// instead of making every login after a batch read the database again. Any
/// other commit still makes the next login read.
#[test]
fn own_audit_batches_keep_the_fast_path_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let s = Scenario::create(dir.path(), "audit_level = \"all\"", "", 0);
    let mut config = s.config.clone();
    config.flush_interval = Duration::ZERO; // a commit after every login
    let g = Gate::open(config).unwrap();
    let login = Request {
        client_addr: Some(b"192.0.2.7"),
        ..req("alice", &s.app_imap, "imap")
    };
    let audit_rows = || {
        let store = SqliteStore::open(&s.config).unwrap();
        store.audit_entries(None, None, 1000).unwrap().len()
    };
    assert!(g.decide(&login).is_accepted()); // full path, loads the snapshot
    assert!(g.decide(&login).is_accepted());
    let first = g.stats();
    assert_eq!(first.fast_accepts, 1);
    assert_eq!(first.state_reads, 1, "the first fast login reads");
    let rows = audit_rows();
    for _ in 0..5 {
        assert!(g.decide(&login).is_accepted());
    }
    assert_eq!(
        audit_rows(),
        rows + 5,
        "every login was written in its own batch"
    );
    assert_eq!(g.stats().fast_accepts, 6);
    assert_eq!(g.stats().state_reads, 1, "own batches: nothing read again");
    // Another process's commit, even one that changes nothing a login is
    // decided on: read again.
    sql(
        &s.db,
        "UPDATE accounts SET last_login = 1 WHERE name = 'alice'",
    );
    assert!(g.decide(&login).is_accepted());
    assert_eq!(g.stats().state_reads, 2);
    assert!(g.decide(&login).is_accepted());
    assert_eq!(g.stats().state_reads, 2);
}

/// saslgated checkpoints from its own thread (`Gate::with_background_checkpoints`):
/// no commit of the gate copies the write-ahead log into the database (the log
/// grows past SQLite's automatic 1,000 frames and past the 4 MiB bound), then
/// `Gate::checkpoint` copies and truncates it. The file's new size and times are
/// the gate's own doing, not a replaced file: the fast path's snapshot survives.
#[test]
fn background_checkpoints_leave_commits_alone_and_the_snapshot_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let s = Scenario::create(dir.path(), "audit_level = \"all\"", "", 0);
    let mut config = s.config.clone();
    config.flush_interval = Duration::ZERO; // a commit after every login
    let g = Gate::open(config).unwrap().with_background_checkpoints();
    let login = req("alice", &s.app_imap, "imap");
    let wal = dir.path().join("saslgate.db-wal");
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let frames_bytes = |n: u64| n * (4096 + 24);
    let mut logins = 0;
    while size(&wal) <= frames_bytes(1200) {
        assert!(g.decide(&login).is_accepted());
        logins += 1;
        assert!(
            logins < 20_000,
            "the log does not grow: {} bytes",
            size(&wal)
        );
    }
    let fast = g.stats().fast_accepts;
    assert_eq!(fast, logins - 1, "all but the first on the fast path");
    let db_before = std::fs::metadata(&s.db).unwrap();
    g.checkpoint();
    assert_eq!(size(&wal), 0, "copied into the database and truncated");
    let db_after = std::fs::metadata(&s.db).unwrap();
    assert!(
        db_after.len() != db_before.len()
            || db_after.modified().unwrap() != db_before.modified().unwrap()
    );
    std::thread::sleep(Duration::from_millis(150)); // past the file watch's interval
    assert!(g.decide(&login).is_accepted());
    assert_eq!(g.stats().fast_accepts, fast + 1, "the snapshot was kept");
}

// ---- realms (issue 11, findings 1 and 2): a login with a realm is `login@realm`;
// the fallback to a plain account only for the configured local realms.

/// A gate over `f`'s database with extra config lines, parsed as the config file
/// is (so `local_realms` is read the way an admin writes it).
fn gate_with(f: &Fixture, extra: &str) -> Gate {
    let mut config = saslgate::Config::parse(&format!(
        "db = \"{}\"\nbcrypt_cost = 4\n{extra}\n",
        f.config.db.display()
    ))
    .expect("config with local_realms");
    config.flush_interval = Duration::ZERO;
    Gate::open(config).unwrap()
}

fn in_realm<'a>(login: &'a str, pw: &'a str, realm: &'a str) -> Request<'a> {
    Request {
        realm: Some(realm.as_bytes()),
        ..req(login, pw, "imap")
    }
}

fn account_of(d: &Decision) -> Option<&str> {
    match d {
        Decision::Accepted { account, .. } => Some(account),
        _ => None,
    }
}

#[test]
fn realm_is_part_of_the_name() {
    let f = Fixture::new();
    f.user("alice", "pw-alice");
    f.user("bob@example.org", "pw-a");
    f.user("bob", "pw-b");
    let g = f.gate();
    // Finding 2: only `alice` exists; `alice` + realm victim.org is not her.
    assert_eq!(
        refused(&g.decide(&in_realm("alice", "pw-alice", "victim.org"))),
        Some(RefuseReason::BadCredentials)
    );
    assert_eq!(
        refused(&g.decide(&req("alice@victim.org", "pw-alice", "imap"))),
        Some(RefuseReason::BadCredentials)
    );
    // Finding 1: `bob` + example.org is bob@example.org, with its own password only.
    let d = g.decide(&in_realm("bob", "pw-a", "example.org"));
    assert_eq!(account_of(&d), Some("bob@example.org"), "{d:?}");
    assert_eq!(
        refused(&g.decide(&in_realm("bob", "pw-b", "example.org"))),
        Some(RefuseReason::BadCredentials)
    );
    // An unknown user in a foreign realm whose plain name exists: refused, and
    // at the same cost as any wrong password (one slow hash, no second lookup
    // that could tell the plain account exists).
    let before = g.stats().slow_hashes;
    assert!(!g
        .decide(&in_realm("alice", "wrong", "victim.org"))
        .is_accepted());
    assert_eq!(g.stats().slow_hashes - before, 1);
    // No realm, empty realm: the plain account.
    assert_eq!(
        account_of(&g.decide(&req("alice", "pw-alice", "imap"))),
        Some("alice")
    );
    assert_eq!(
        account_of(&g.decide(&in_realm("alice", "pw-alice", ""))),
        Some("alice")
    );
}

#[test]
fn local_realms_allow_the_plain_account() {
    let f = Fixture::new();
    f.user("alice", "pw-alice");
    f.user("bob@mail.example.org", "pw-a");
    f.user("bob", "pw-b");
    let g = gate_with(&f, "local_realms = [\"mail.example.org\", \"example.net\"]");
    for realm in ["mail.example.org", "MAIL.Example.org", "example.net"] {
        let d = g.decide(&in_realm("alice", "pw-alice", realm));
        // The name told is the account verified: plain `alice`.
        assert_eq!(account_of(&d), Some("alice"), "{realm}: {d:?}");
    }
    assert!(!g
        .decide(&in_realm("alice", "pw-alice", "victim.org"))
        .is_accepted());
    assert!(!g
        .decide(&in_realm("alice", "pw-alice", "sub.mail.example.org"))
        .is_accepted());
    assert!(!g
        .decide(&in_realm("alice", "wrong", "mail.example.org"))
        .is_accepted());
    // An account that exists for the local realm is the one checked: no fallback
    // to plain `bob` with plain bob's password.
    assert_eq!(
        account_of(&g.decide(&in_realm("bob", "pw-a", "mail.example.org"))),
        Some("bob@mail.example.org")
    );
    assert!(!g
        .decide(&in_realm("bob", "pw-b", "mail.example.org"))
        .is_accepted());
}

#[test]
fn default_local_realms_are_the_host_names() {
    let f = Fixture::new();
    f.user("alice", "pw-alice");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let g = gate_with(&f, "");
    for realm in [host.as_str(), "localhost"] {
        let d = g.decide(&in_realm("alice", "pw-alice", realm));
        assert_eq!(account_of(&d), Some("alice"), "{realm}: {d:?}");
    }
    assert!(!g
        .decide(&in_realm("alice", "pw-alice", "victim.org"))
        .is_accepted());
    // An empty list: no realm falls back (a login without realm still does).
    let g = gate_with(&f, "local_realms = []");
    for realm in [host.as_str(), "localhost", "victim.org"] {
        assert!(
            !g.decide(&in_realm("alice", "pw-alice", realm))
                .is_accepted(),
            "{realm}"
        );
    }
    assert!(g.decide(&req("alice", "pw-alice", "imap")).is_accepted());
    // The default of the library's own Config (faces built without a file).
    let d = f.gate().decide(&in_realm("alice", "pw-alice", &host));
    assert_eq!(account_of(&d), Some("alice"), "{d:?}");
}

/// Every test above but `broken_storage_is_unavailable` (SQLite's files; the
/// PostgreSQL failures are in tests/pg_backend.rs), again on PostgreSQL: the
/// same definitions, each fixture a database in a private cluster.
mod on_postgresql {
    macro_rules! on_postgresql {
        ($($name:ident),* $(,)?) => {
            $(
                #[test]
                fn $name() {
                    saslgate_testkit::on_postgresql(super::$name);
                }
            )*
        };
    }

    on_postgresql!(
        decision_matrix,
        realms_and_service_aliases,
        two_step_logins,
        one_slow_hash_at_most,
        throttling_cannot_be_turned_against_the_user,
        throttle_window_passes,
        one_time_code_race_between_32_threads,
        cache_skips_the_slow_hash_and_dies_with_admin_changes,
        weak_hashes_are_upgraded_and_password_change_can_revoke_app_passwords,
        audit_trail_records_and_prunes,
        bad_input_is_refused_never_accepted,
        policy_check_for_other_mechanisms,
        fast_path_follows_every_change,
        fast_path_honours_expiry,
        realm_is_part_of_the_name,
        local_realms_allow_the_plain_account,
        default_local_realms_are_the_host_names,
    );
}
