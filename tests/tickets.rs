//! Proxy tickets in the engine, on SQLite and again on PostgreSQL (the same
//! definitions): issued by `Gate::issue_ticket` (what the `auth_http` face
//! does after a two-step login), accepted exactly once for the account,
//! service and backend they were issued for, burnt by any other use, never
//! cached, never on the fast path. The faces: tests/http_face.rs
//! (auth_http → saslauthd socket), tests/daemon.rs-style real libsasl2
//! below, the plugin's local address in src/ffi/plugin/tests.rs.

use saslgate::engine::Credential;
use saslgate::{Decision, Gate, RefuseReason, Request};
use saslgate_testkit::{oathtool, refused, req, Fixture, TOTP_SECRET_B32};
use std::net::SocketAddr;
use std::time::Duration;

const BACKEND: &str = "127.0.0.1:10143";

fn backend() -> SocketAddr {
    BACKEND.parse().unwrap()
}

/// dave: master password + TOTP; erin: master password only. This host
/// serves BACKEND.
fn ticket_fixture(tweak: impl FnOnce(&mut saslgate::Config)) -> Fixture {
    let f = Fixture::with(|c| {
        c.proxy_ticket_backends = vec![backend()];
        tweak(c)
    });
    f.user("dave", "pw-dave");
    f.user("erin", "pw-erin");
    f.admin()
        .enable_totp(
            "dave",
            &saslgate::totp::decode_secret(TOTP_SECRET_B32).unwrap(),
        )
        .unwrap();
    f
}

fn text(t: &saslgate::secret::SecretBytes) -> String {
    String::from_utf8(t.as_bytes().to_vec()).unwrap()
}

fn ticket_login(d: &Decision) -> bool {
    matches!(
        d,
        Decision::Accepted {
            credential: Credential::ProxyTicket,
            ..
        }
    )
}

fn detail(d: &Decision) -> String {
    match d {
        Decision::Refused { detail, .. } => detail.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn accepted_once_then_refused() {
    let f = ticket_fixture(|_| {});
    let g = f.gate();
    let t = g.issue_ticket("dave", "imap", backend()).unwrap();
    let ticket = text(&t);
    assert!(saslgate::engine::is_ticket_shaped(t.as_bytes()), "{ticket}");
    assert_eq!(ticket.len(), saslgate::engine::TICKET_LEN);
    // Only the keyed hash is stored.
    assert_eq!(f.sql("SELECT count(*) FROM proxy_tickets").trim(), "1");
    let before = g.stats().slow_hashes;
    let d = g.decide(&req("dave", &ticket, "imap"));
    assert_eq!(
        d,
        Decision::Accepted {
            account: "dave".into(),
            credential: Credential::ProxyTicket
        }
    );
    assert_eq!(g.stats().slow_hashes, before, "a ticket costs no slow hash");
    // Used up: the same ticket again, by this gate or another, is refused.
    let again = g.decide(&req("dave", &ticket, "imap"));
    assert_eq!(refused(&again), Some(RefuseReason::BadCredentials));
    let other = f.gate();
    assert_eq!(
        refused(&other.decide(&req("dave", &ticket, "imap"))),
        Some(RefuseReason::BadCredentials)
    );
    // Two tickets are never the same; a second one works once too.
    let t2 = g.issue_ticket("dave", "imap", backend()).unwrap();
    assert_ne!(text(&t2), ticket);
    assert!(ticket_login(&g.decide(&req("dave", &text(&t2), "imap"))));
    // The service goes through the aliases: a ticket for pop3 is one for pop.
    let t3 = g.issue_ticket("dave", "pop3", backend()).unwrap();
    assert!(ticket_login(&g.decide(&req("dave", &text(&t3), "pop"))));
    g.flush();
    // Neither the audit trail nor the table holds a ticket.
    let audit = f.sql("SELECT account, credential, detail FROM audit");
    assert!(audit.contains("proxy-ticket"), "{audit}");
    for t in [&ticket, &text(&t2), &text(&t3)] {
        assert!(!audit.contains(t.as_str()), "ticket in the audit trail");
        assert!(!f.sql("SELECT * FROM proxy_tickets").contains(t.as_str()));
    }
    if f.pg.is_none() {
        // Nor any byte of the SQLite files.
        for file in ["saslgate.db", "saslgate.db-wal"] {
            let bytes = std::fs::read(f.path(file)).unwrap_or_default();
            assert!(
                !bytes.windows(ticket.len()).any(|w| w == ticket.as_bytes()),
                "ticket stored in {file}"
            );
        }
    }
}

#[test]
fn expired_ticket_is_refused_and_pruned() {
    let f = ticket_fixture(|_| {});
    let g = f.gate();
    let ticket = text(&g.issue_ticket("dave", "imap", backend()).unwrap());
    f.sql("UPDATE proxy_tickets SET expires = 1000");
    let d = g.decide(&req("dave", &ticket, "imap"));
    assert_eq!(refused(&d), Some(RefuseReason::BadCredentials));
    // Issued tickets live [http] ticket_lifetime.
    let now = saslgate::timefmt::now();
    let _fresh = g.issue_ticket("erin", "imap", backend()).unwrap();
    let expires: i64 = f
        .sql("SELECT max(expires) FROM proxy_tickets")
        .trim()
        .parse()
        .unwrap();
    assert!((now + 59..=now + 61).contains(&expires), "{expires} {now}");
    // The prune pass deletes expired tickets, used or not, and keeps the rest.
    f.admin().prune(now).unwrap();
    assert_eq!(f.sql("SELECT count(*) FROM proxy_tickets").trim(), "1");
}

#[test]
fn wrong_account_service_or_backend_refused_and_burnt() {
    let f = ticket_fixture(|_| {});
    let g = f.gate();
    let other_backend: SocketAddr = "127.0.0.1:9999".parse().unwrap();
    let cases: [(&str, &str, SocketAddr, &str, &str, &str); 4] = [
        // issued for (account, service, backend), then used as (login, service)
        ("dave", "imap", backend(), "erin", "imap", "account"),
        ("dave", "imap", backend(), "dave", "pop", "service imap"),
        (
            "dave",
            "imap",
            other_backend,
            "dave",
            "imap",
            "backend 127.0.0.1:9999",
        ),
        (
            "dave",
            "imap",
            backend(),
            "nobody",
            "imap",
            "unknown account",
        ),
    ];
    for (account, service, at, login, used_for, why) in cases {
        let ticket = text(&g.issue_ticket(account, service, at).unwrap());
        let d = g.decide(&req(login, &ticket, used_for));
        assert_eq!(refused(&d), Some(RefuseReason::BadCredentials), "{why}");
        assert!(detail(&d).contains(why), "{why}: {}", detail(&d));
        // Burnt: not even the right use works now.
        let right = g.decide(&req(account, &ticket, service));
        assert_eq!(refused(&right), Some(RefuseReason::BadCredentials), "{why}");
    }
    // A ticket for an account that does not exist is not issued.
    assert!(g.issue_ticket("nobody", "imap", backend()).is_err());
}

#[test]
fn configured_backend_is_needed_and_the_local_address_must_match() {
    let at = |g: &saslgate::Gate, t: &str, local: &'static [u8]| {
        g.decide(&Request {
            local_addr: Some(local),
            ..req("dave", t, "imap")
        })
    };
    // No proxy_ticket_backends: no ticket is accepted on this host, not even
    // one for the face's own local address (opt-in per host).
    let f = ticket_fixture(|c| c.proxy_ticket_backends.clear());
    let g = f.gate();
    let ticket = text(&g.issue_ticket("dave", "imap", backend()).unwrap());
    let d = g.decide(&req("dave", &ticket, "imap"));
    assert!(
        detail(&d).contains("proxy_ticket_backends is empty"),
        "{d:?}"
    );
    let ticket = text(&g.issue_ticket("dave", "imap", backend()).unwrap());
    let d = at(&g, &ticket, b"127.0.0.1;10143");
    assert!(
        detail(&d).contains("proxy_ticket_backends is empty"),
        "{d:?}"
    );
    // Configured: where the face knows its local address, the ticket must
    // also have been issued for that address.
    let f = ticket_fixture(|_| {});
    let g = f.gate();
    let ticket = text(&g.issue_ticket("dave", "imap", backend()).unwrap());
    let d = at(&g, &ticket, b"127.0.0.1;10144");
    assert!(detail(&d).contains("not one this host serves"), "{d:?}");
    let ticket = text(&g.issue_ticket("dave", "imap", backend()).unwrap());
    assert!(ticket_login(&at(&g, &ticket, b"127.0.0.1;10143")));
    let ticket = text(&g.issue_ticket("dave", "imap", backend()).unwrap());
    assert!(ticket_login(&at(&g, &ticket, b"::ffff:127.0.0.1;10143")));
}

#[test]
fn ticket_shaped_master_password_still_works() {
    let f = ticket_fixture(|_| {});
    let shaped = "sgt.ThisIsMyOwnMasterPasswordOk_0123";
    assert!(saslgate::engine::is_ticket_shaped(shaped.as_bytes()));
    f.user("tess", shaped);
    let g = f.gate();
    let d = g.decide(&req("tess", shaped, "imap"));
    assert_eq!(
        d,
        Decision::Accepted {
            account: "tess".into(),
            credential: Credential::Master
        }
    );
    // A ticket-shaped wrong password is an ordinary failure (one slow hash).
    let before = g.stats().slow_hashes;
    let d = g.decide(&req("tess", "sgt.ThisIsMyOwnMasterPasswordOk_0124", "imap"));
    assert_eq!(refused(&d), Some(RefuseReason::BadCredentials));
    assert_eq!(g.stats().slow_hashes, before + 1);
    // Two-step accounts: password + code still works beside tickets.
    let totp = oathtool(TOTP_SECRET_B32);
    let d = g.decide(&req("dave", &format!("pw-dave{totp}"), "imap"));
    assert!(d.is_accepted(), "{d:?}");
}

#[test]
fn cache_and_fast_path_never_serve_a_ticket() {
    let f = ticket_fixture(|c| c.cache_ttl = Duration::from_secs(60));
    let g = f.gate();
    // erin has no two-step login: her logins are cacheable.
    let ticket = text(&g.issue_ticket("erin", "imap", backend()).unwrap());
    assert!(ticket_login(&g.decide(&req("erin", &ticket, "imap"))));
    assert_eq!(
        refused(&g.decide(&req("erin", &ticket, "imap"))),
        Some(RefuseReason::BadCredentials)
    );
    // The cache still works for her password; an app password takes the
    // fast path; neither ever answered a ticket.
    let app = f.app_password("erin", &["imap"], false, None);
    for _ in 0..2 {
        assert!(g.decide(&req("erin", "pw-erin", "imap")).is_accepted());
        assert!(g.decide(&req("erin", &app, "imap")).is_accepted());
    }
    let s = g.stats();
    assert!(s.cache_hits >= 1 && s.fast_accepts >= 1, "{s:?}");
    let ticket = text(&g.issue_ticket("erin", "imap", backend()).unwrap());
    let (hits, fast) = (s.cache_hits, s.fast_accepts);
    assert!(ticket_login(&g.decide(&req("erin", &ticket, "imap"))));
    assert!(!g.decide(&req("erin", &ticket, "imap")).is_accepted());
    assert_eq!((g.stats().cache_hits, g.stats().fast_accepts), (hits, fast));
}

#[test]
fn policy_and_throttle_apply() {
    let f = ticket_fixture(|c| c.throttle_address.failures = 2);
    let g = f.gate();
    // Not allowed for the service: refused as such (after the ticket checked).
    f.admin()
        .set_service_override("dave", "pop", Some(false))
        .unwrap();
    let ticket = text(&g.issue_ticket("dave", "pop", backend()).unwrap());
    assert_eq!(
        refused(&g.decide(&req("dave", &ticket, "pop"))),
        Some(RefuseReason::NotAllowed)
    );
    // Disabled: none is issued; one issued before is worthless (the
    // generation moved), a failed login like any wrong password.
    f.admin().set_disabled("dave", true).unwrap();
    assert!(g.issue_ticket("dave", "imap", backend()).is_err());
    f.admin().set_disabled("dave", false).unwrap();
    let ticket = text(&g.issue_ticket("dave", "imap", backend()).unwrap());
    f.admin().set_disabled("dave", true).unwrap();
    assert_eq!(
        refused(&g.decide(&req("dave", &ticket, "imap"))),
        Some(RefuseReason::BadCredentials)
    );
    f.admin().set_disabled("dave", false).unwrap();
    // A throttled address is refused before the ticket is looked at: the
    // ticket stays good for another address.
    let from = |t: &str, ip: &'static [u8]| {
        g.decide(&Request {
            client_addr: Some(ip),
            ..req("dave", t, "imap")
        })
    };
    for i in 0..3 {
        from(&format!("wrong {i}"), b"192.0.2.9");
    }
    let ticket = text(&g.issue_ticket("dave", "imap", backend()).unwrap());
    assert_eq!(
        refused(&from(&ticket, b"192.0.2.9")),
        Some(RefuseReason::Throttled)
    );
    assert!(ticket_login(&from(&ticket, b"192.0.2.10")));
}

/// 32 threads, on two gates (on PostgreSQL: two connections pools, as two
/// hosts would), race on one ticket: exactly one login is accepted.
#[test]
fn ticket_race_between_32_threads() {
    let f = ticket_fixture(|_| {});
    let gates = [f.gate(), f.gate()];
    for round in 0..3 {
        let ticket = text(&gates[0].issue_ticket("dave", "imap", backend()).unwrap());
        let barrier = std::sync::Barrier::new(32);
        let accepted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..32)
                .map(|i| {
                    let (g, t, b) = (&gates[i % 2], &ticket, &barrier);
                    s.spawn(move || {
                        b.wait();
                        ticket_login(&g.decide(&req("dave", t, "imap")))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(accepted, 1, "round {round}");
    }
}

/// A ticket-shaped string that no gate issued (the tests write its row).
fn raw_ticket(i: usize) -> String {
    let t = format!("sgt.{i:A>32}");
    assert!(saslgate::engine::is_ticket_shaped(t.as_bytes()), "{t}");
    t
}

/// Writes a ticket row for dave by SQL typed by hand, as the most privileged
/// writer there is (the SQLite file's owner; PostgreSQL's superuser).
fn insert_by_hand(
    f: &Fixture,
    lookup: &[u8; 32],
    service: &str,
    expires: i64,
) -> Result<(), String> {
    let hex: String = lookup.iter().map(|b| format!("{b:02x}")).collect();
    match &f.pg {
        Some(cluster) => cluster
            .psql(
                &f.pg_db,
                &format!(
                    "INSERT INTO proxy_tickets (lookup, account_id, service, backend, expires)
                     SELECT '\\x{hex}'::bytea, id, '{service}', '{BACKEND}', {expires}
                     FROM accounts WHERE name = 'dave'"
                ),
            )
            .map(|_| ()),
        None => {
            f.sql(&format!(
                "INSERT INTO proxy_tickets (lookup, account_id, service, backend, expires)
                 SELECT X'{hex}', id, '{service}', '{BACKEND}', {expires}
                 FROM accounts WHERE name = 'dave'"
            ));
            Ok(())
        }
    }
}

/// Round 3, finding 2: a ticket lives at most 10 minutes and exists only for
/// the services the face issues tickets for (imap, pop). Out of bounds, it is
/// refused by the store (both backends), by the database whoever writes the
/// row (PostgreSQL's trigger, even for the superuser), and never logs in (the
/// consuming statement checks too: on SQLite anyone who can write the file
/// can write a row).
#[test]
fn tickets_out_of_bounds_are_never_stored_or_accepted() {
    let f = ticket_fixture(|_| {});
    let g = f.gate();
    let now = saslgate::timefmt::now();
    let cases = [
        ("imap", now + 10 * 365 * 86400, "valid 10 years"),
        ("imap", now + 660, "valid 11 minutes"),
        ("smtp", now + 60, "for smtp"),
        ("sieve", now + 60, "for sieve"),
    ];
    let mut store = f.admin();
    let mut wrong = Vec::new();
    for (i, (service, expires, what)) in cases.into_iter().enumerate() {
        // Through the store (what Gate::issue_ticket uses).
        let t = raw_ticket(i);
        let stored = store.insert_ticket(t.as_bytes(), "dave", service, BACKEND, expires);
        if stored.is_ok() {
            wrong.push(format!("{what}: stored through the store ({stored:?})"));
        }
        let d = g.decide(&req("dave", &t, service));
        if ticket_login(&d) {
            wrong.push(format!("{what}: stored through the store, logged in"));
        }
        // By SQL typed by hand.
        let t = raw_ticket(100 + i);
        let written = insert_by_hand(&f, &store.ticket_lookup(t.as_bytes()), service, expires);
        match (&f.pg, &written) {
            (Some(_), Ok(())) => wrong.push(format!("{what}: PostgreSQL took the row")),
            (Some(_), Err(e)) if !e.contains("saslgate:") => wrong.push(format!(
                "{what}: refused, but not by saslgate's trigger: {e}"
            )),
            _ => {}
        }
        let d = g.decide(&req("dave", &t, service));
        if ticket_login(&d) {
            wrong.push(format!("{what}: written by hand, logged in"));
        }
    }
    // The gate issues none for a service the face never asks one for.
    for service in ["smtp", "sieve"] {
        if g.issue_ticket("dave", service, backend()).is_ok() {
            wrong.push(format!("Gate::issue_ticket issued one for {service}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // In bounds, a ticket still works.
    let t = text(&g.issue_ticket("dave", "imap", backend()).unwrap());
    assert!(ticket_login(&g.decide(&req("dave", &t, "imap"))));
}

/// The consuming statement checks the same bound as the writer, against its
/// own clock (`now`): a ticket that expires more than 10 minutes after the
/// consumer's now is not used (nor used up); at the right time it is, once.
#[test]
fn consuming_rechecks_the_bound() {
    let f = ticket_fixture(|_| {});
    let mut s = f.admin();
    let now = saslgate::timefmt::now();
    let t = raw_ticket(7);
    assert!(s
        .insert_ticket(t.as_bytes(), "dave", "imap", BACKEND, now + 60)
        .unwrap());
    let early = s.consume_ticket(t.as_bytes(), now - 3600).unwrap();
    assert_eq!(early, None, "used although it expires 61 minutes later");
    let on_time = s.consume_ticket(t.as_bytes(), now).unwrap().unwrap();
    assert_eq!(
        (on_time.service.as_str(), on_time.backend.as_str()),
        ("imap", BACKEND)
    );
    assert_eq!(s.consume_ticket(t.as_bytes(), now).unwrap(), None);
}

/// A ticket is bound to the database's state when it was issued: a password
/// change, a disabled account (even enabled again) or any other change (the
/// generation moves) makes every outstanding ticket worthless.
#[test]
fn a_change_makes_outstanding_tickets_worthless() {
    let f = ticket_fixture(|_| {});
    let g = f.gate();
    let generation = if f.pg.is_some() {
        "UPDATE saslgate_meta SET value = value + 1 WHERE key = 'generation'"
    } else {
        "UPDATE meta SET value = value + 1 WHERE key = 'generation'"
    };
    type Change<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let changes: [Change; 4] = [
        (
            "password changed",
            Box::new(|| {
                let pw = saslgate::secret::SecretBytes::from_slice(b"pw-dave-2");
                f.admin().set_master_password("dave", &pw, false).unwrap();
            }),
        ),
        (
            "disabled and enabled again",
            Box::new(|| {
                f.admin().set_disabled("dave", true).unwrap();
                f.admin().set_disabled("dave", false).unwrap();
            }),
        ),
        (
            "another account added",
            Box::new(|| f.user("zed", "pw-zed")),
        ),
        (
            "generation moved by hand",
            Box::new(|| {
                f.sql(generation);
            }),
        ),
    ];
    let mut wrong = Vec::new();
    for (what, change) in changes {
        let ticket = text(&g.issue_ticket("dave", "imap", backend()).unwrap());
        change();
        let d = g.decide(&req("dave", &ticket, "imap"));
        if ticket_login(&d) {
            wrong.push(format!("{what}: the ticket issued before still logged in"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // Issued after the changes, a ticket works.
    let ticket = text(&g.issue_ticket("dave", "imap", backend()).unwrap());
    assert!(ticket_login(&g.decide(&req("dave", &ticket, "imap"))));
}

/// Issuing fails closed: without a database there is no ticket.
#[test]
fn issuing_without_a_database_fails() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gate::new(saslgate::Config {
        db: dir.path().join("missing.db"),
        ..saslgate::Config::default()
    });
    assert!(g.issue_ticket("dave", "imap", backend()).is_err());
}

saslgate_testkit::backends! {
    source: include_str!("tickets.rs"),
    on_postgresql: [
        accepted_once_then_refused,
        expired_ticket_is_refused_and_pruned,
        wrong_account_service_or_backend_refused_and_burnt,
        configured_backend_is_needed_and_the_local_address_must_match,
        ticket_shaped_master_password_still_works,
        cache_and_fast_path_never_serve_a_ticket,
        policy_and_throttle_apply,
        ticket_race_between_32_threads,
        tickets_out_of_bounds_are_never_stored_or_accepted,
        consuming_rechecks_the_bound,
        a_change_makes_outstanding_tickets_worthless,
    ],
    sqlite_only: [
        issuing_without_a_database_fails: "a missing SQLite file; PostgreSQL's failures are in tests/pg_backend.rs",
    ],
}
