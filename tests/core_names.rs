//! Login aliases, the address block list and `tls_required` services through
//! the library (the same `Gate::decide` / `Gate::check_account` every face
//! calls), on SQLite and again on PostgreSQL.

use saslgate::{Decision, Error, RefuseReason, Request};
use saslgate_testkit::*;

fn account_of(d: &Decision) -> Option<&str> {
    match d {
        Decision::Accepted { account, .. } => Some(account),
        _ => None,
    }
}

fn from<'a>(login: &'a str, pw: &'a str, ip: &'a str) -> Request<'a> {
    Request {
        client_addr: Some(ip.as_bytes()),
        ..req(login, pw, "imap")
    }
}

#[test]
fn an_alias_logs_in_as_its_account() {
    let f = Fixture::with(|c| c.throttle_account_address.failures = 3);
    f.user("alice@example.org", "pw-alice");
    f.user("bob", "pw-bob");
    let mut s = f.admin();
    assert_eq!(s.add_alias("alice@example.org", " AL ").unwrap(), "al");
    s.add_alias("alice@example.org", "alice.smith@example.org")
        .unwrap();
    let g = f.gate();
    for login in ["al", "AL", "alice.smith@example.org"] {
        let d = g.decide(&req(login, "pw-alice", "imap"));
        assert_eq!(account_of(&d), Some("alice@example.org"), "{login}: {d:?}");
    }
    // The alias's password is the account's, no other.
    assert_eq!(
        refused(&g.decide(&req("al", "pw-bob", "imap"))),
        Some(RefuseReason::BadCredentials)
    );
    // Audited under the canonical name.
    let log = s
        .audit_entries(Some("alice@example.org"), None, 100)
        .unwrap();
    assert!(log.iter().filter(|e| e.outcome == "accepted").count() >= 3);
    assert!(s.audit_entries(Some("al"), None, 100).unwrap().is_empty());
    // Throttled as the account: failures by alias count against it.
    for pw in ["w1", "w2", "w3"] {
        g.decide(&from("al", pw, "192.0.2.44"));
    }
    assert_eq!(
        refused(&g.decide(&from("alice@example.org", "pw-alice", "192.0.2.44"))),
        Some(RefuseReason::Throttled)
    );
    assert!(g
        .decide(&from("alice@example.org", "pw-alice", "192.0.2.45"))
        .is_accepted());
    // `user show` data and the list.
    let info = s.account_info("alice@example.org").unwrap();
    assert_eq!(info.aliases, ["al", "alice.smith@example.org"]);
    assert_eq!(s.list_aliases(None).unwrap().len(), 2);
    assert!(s.list_aliases(Some("bob")).unwrap().is_empty());
    assert!(matches!(
        s.list_aliases(Some("nobody")),
        Err(Error::NotFound(_))
    ));
    // Removed: the name is nobody's.
    s.remove_alias("al").unwrap();
    assert_eq!(
        refused(&g.decide(&req("al", "pw-alice", "imap"))),
        Some(RefuseReason::BadCredentials)
    );
    assert!(matches!(s.remove_alias("al"), Err(Error::NotFound(_))));
    // The policy check (other mechanisms) resolves aliases too.
    let d = g.check_account(&req("alice.smith@example.org", "", "imap"));
    assert_eq!(account_of(&d), Some("alice@example.org"), "{d:?}");
}

#[test]
fn aliases_and_accounts_never_shadow_each_other() {
    let f = Fixture::new();
    f.user("alice", "pw-alice");
    f.user("bob", "pw-bob");
    let mut s = f.admin();
    // An alias named like an account, and the reverse.
    let e = s.add_alias("alice", "bob").unwrap_err();
    assert!(matches!(e, Error::Exists(_)), "{e}");
    assert!(e.to_string().contains("account"), "{e}");
    s.add_alias("alice", "ally").unwrap();
    let e = s.add_account("ally", "default").unwrap_err();
    assert!(matches!(e, Error::Exists(_)), "{e}");
    assert!(e.to_string().contains("alias"), "{e}");
    // The same alias twice, for anyone.
    assert!(matches!(s.add_alias("bob", "ally"), Err(Error::Exists(_))));
    assert!(matches!(
        s.add_alias("nobody", "x1"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(s.add_alias("alice", "a b"), Err(Error::Usage(_))));
    assert!(matches!(s.add_alias("alice", "@x"), Err(Error::Usage(_))));
    // Deleting the account deletes its aliases; the name is free again.
    s.delete_account("alice").unwrap();
    assert!(s.list_aliases(None).unwrap().is_empty());
    s.add_account("ally", "default").unwrap();
    let g = f.gate();
    assert_eq!(
        refused(&g.decide(&req("ally", "pw-alice", "imap"))),
        Some(RefuseReason::BadCredentials)
    );
}

/// The app-password fast path knows aliases, and forgets them when they go.
#[test]
fn fast_path_follows_aliases() {
    let f = Fixture::new();
    f.user("carol", "pw-carol");
    let app = f.app_password("carol", &["imap"], false, None);
    let mut s = f.admin();
    s.add_alias("carol", "cc").unwrap();
    let g = f.gate();
    let d = g.decide(&req("cc", &app, "imap"));
    assert_eq!(account_of(&d), Some("carol"), "{d:?}");
    assert_eq!(g.stats().fast_accepts, 0);
    for _ in 0..3 {
        let d = g.decide(&req("CC", &app, "imap"));
        assert_eq!(account_of(&d), Some("carol"), "{d:?}");
    }
    assert!(g.decide(&req("carol", &app, "imap")).is_accepted());
    assert_eq!(g.stats().fast_accepts, 4);
    s.remove_alias("cc").unwrap();
    assert_eq!(
        refused(&g.decide(&req("cc", &app, "imap"))),
        Some(RefuseReason::BadCredentials)
    );
    // Moved to another account: the app password (carol's) no longer fits.
    f.user("dave", "pw-dave");
    s.add_alias("dave", "cc").unwrap();
    assert_eq!(
        refused(&g.decide(&req("cc", &app, "imap"))),
        Some(RefuseReason::BadCredentials)
    );
    assert_eq!(
        account_of(&g.decide(&req("cc", "pw-dave", "imap"))),
        Some("dave")
    );
}

#[test]
fn blocked_addresses_are_refused_before_any_check() {
    let f = Fixture::with(|c| c.throttle_address.failures = 2);
    f.user("erin", "pw-erin");
    let app = f.app_password("erin", &[], false, None);
    let mut s = f.admin();
    let g = f.gate();
    // Warm the fast path and the block list from the address about to be blocked.
    assert!(g.decide(&from("erin", &app, "192.0.2.9")).is_accepted());
    assert!(g.decide(&from("erin", &app, "192.0.2.9")).is_accepted());
    assert_eq!(g.stats().fast_accepts, 1);
    assert_eq!(
        s.add_block("192.0.2.77/24", Some("scanner")).unwrap(),
        "192.0.2.0/24"
    );
    assert!(matches!(
        s.add_block("192.0.2.1/24", None),
        Err(Error::Exists(_))
    ));
    assert_eq!(s.add_block("2001:db8::/32", None).unwrap(), "2001:db8::/32");
    assert_eq!(
        s.add_block("::ffff:198.51.100.7", None).unwrap(),
        "198.51.100.7/32"
    );
    assert!(matches!(
        s.add_block("192.0.2.0/33", None),
        Err(Error::Usage(_))
    ));
    assert!(matches!(
        s.add_block("example.org", None),
        Err(Error::Usage(_))
    ));
    let listed: Vec<String> = s
        .list_blocks()
        .unwrap()
        .into_iter()
        .map(|b| b.network)
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");

    let before = g.stats();
    for (ip, pw) in [
        ("192.0.2.9", app.as_str()),
        ("192.0.2.200;4444", "pw-erin"),
        ("2001:db8:1::5", "pw-erin"),
        ("::ffff:192.0.2.1", "pw-erin"),
        ("198.51.100.7", "wrong"),
        ("198.51.100.7", "wrong"),
        ("198.51.100.7", "wrong"),
    ] {
        let d = g.decide(&from("erin", pw, ip));
        assert_eq!(refused(&d), Some(RefuseReason::Blocked), "{ip}: {d:?}");
        let d = g.check_account(&from("erin", "", ip));
        assert_eq!(refused(&d), Some(RefuseReason::Blocked), "{ip}: {d:?}");
    }
    // Malformed requests too (not counted against the address: refused anyway).
    for _ in 0..3 {
        let d = g.decide(&Request {
            login: b"er\0in",
            ..from("erin", "pw-erin", "198.51.100.7")
        });
        assert_eq!(refused(&d), Some(RefuseReason::Blocked), "{d:?}");
    }
    // No hash, no fast accept, no failure counted (the address is not throttled
    // after its block is lifted).
    let after = g.stats();
    assert_eq!(after.slow_hashes, before.slow_hashes);
    assert_eq!(after.fast_accepts, before.fast_accepts);
    // Other addresses and address-less requests are unaffected.
    assert!(g
        .decide(&from("erin", "pw-erin", "192.0.3.1"))
        .is_accepted());
    assert!(g
        .decide(&from("erin", "pw-erin", "2001:db9::1"))
        .is_accepted());
    assert!(g.decide(&req("erin", "pw-erin", "imap")).is_accepted());
    // Audited as blocked.
    let log = s.audit_entries(Some("erin"), None, 1000).unwrap();
    assert!(log.iter().any(|e| e.reason.as_deref() == Some("blocked")));
    // Lifted: in again at once (the stored form or the form given).
    assert_eq!(s.remove_block("192.0.2.1/24").unwrap(), "192.0.2.0/24");
    assert!(matches!(
        s.remove_block("192.0.2.0/24"),
        Err(Error::NotFound(_))
    ));
    assert!(g.decide(&from("erin", &app, "192.0.2.9")).is_accepted());
    s.remove_block("198.51.100.7").unwrap();
    assert!(g
        .decide(&from("erin", "pw-erin", "198.51.100.7"))
        .is_accepted());
    assert_eq!(
        refused(&g.decide(&from("erin", "pw-erin", "2001:db8::1"))),
        Some(RefuseReason::Blocked)
    );
}

#[test]
fn tls_required_services_refuse_plain_connections() {
    let f = Fixture::with(|c| {
        c.tls_required = vec!["imap".into(), "pop".into()];
    });
    f.user("fay", "pw-fay");
    let app = f.app_password("fay", &[], false, None);
    let g = f.gate();
    let on = |service: &'static str, secure: Option<bool>, pw: &str| {
        g.decide(&Request {
            secure,
            ..req("fay", pw, service)
        })
    };
    // Warm the fast path over TLS, then the same password in the clear.
    assert!(on("imap", Some(true), &app).is_accepted());
    assert!(on("imap", Some(true), &app).is_accepted());
    let before = g.stats();
    for (service, pw) in [
        ("imap", app.as_str()),
        ("imaps", "pw-fay"),
        ("pop3", "pw-fay"),
        ("imap", "wrong"),
    ] {
        let d = on(service, Some(false), pw);
        assert_eq!(
            refused(&d),
            Some(RefuseReason::TlsRequired),
            "{service}: {d:?}"
        );
    }
    assert_eq!(g.stats().slow_hashes, before.slow_hashes);
    assert_eq!(g.stats().fast_accepts, before.fast_accepts);
    // Other services, an encrypted connection, or a face that cannot tell.
    assert!(on("smtp", Some(false), "pw-fay").is_accepted());
    assert!(on("imap", Some(true), "pw-fay").is_accepted());
    assert!(on("imap", None, "pw-fay").is_accepted());
    let log = f.admin().audit_entries(Some("fay"), None, 100).unwrap();
    assert!(log
        .iter()
        .any(|e| e.reason.as_deref() == Some("tls-required")));
}

saslgate_testkit::backends! {
    source: include_str!("core_names.rs"),
    on_postgresql: [
        an_alias_logs_in_as_its_account,
        aliases_and_accounts_never_shadow_each_other,
        fast_path_follows_aliases,
        blocked_addresses_are_refused_before_any_check,
        tls_required_services_refuse_plain_connections,
    ],
    sqlite_only: [],
}
