//! Floods of cheap refusals and shared client addresses (issue 11, findings 7 and
//! 8), through the engine every face calls (`saslgate::Gate`).
//!
//! - malformed requests count against the client address like wrong passwords;
//! - throttled and malformed floods write at most one audit row per client per
//!   minute, plus a row counting what was left out ("N more refusals suppressed");
//! - the audit trail has a row cap (`audit_max_rows`) besides its age limit;
//! - a flood of 1,000,000 malformed requests leaves the database small
//!   (`FLOOD_N=...` runs another count; the figures are printed with --nocapture);
//! - `[throttle] trusted_networks` are never blocked per address, only per
//!   account + address; `[throttle] ipv6_prefix` groups IPv6 clients.
//!
//! The configuration is given as TOML text, as an admin writes it.

use saslgate::{Config, Decision, Gate, RefuseReason, Request};
use saslgate_testkit::*;
use std::time::Instant;

/// A gate on the fixture's database with extra top-level and `[throttle]` keys.
fn gate_with(f: &Fixture, top: &str, throttle: &str) -> Gate {
    let text = format!(
        "db = {:?}\nbcrypt_cost = 4\nflush_interval = \"0s\"\n{top}\n[throttle]\n{throttle}\n",
        f.config.db.to_str().unwrap()
    );
    let cfg = Config::parse(&text).unwrap_or_else(|e| panic!("config {text:?}: {e}"));
    Gate::open(cfg).unwrap()
}

fn from<'a>(login: &'a str, pw: &'a str, addr: &'a str) -> Request<'a> {
    Request {
        client_addr: Some(addr.as_bytes()),
        secure: None,
        ..req(login, pw, "imap")
    }
}

/// A request every face refuses as malformed (NUL in the login).
fn malformed(addr: Option<&[u8]>) -> Request<'_> {
    Request {
        login: b"ali\0ce",
        password: b"x",
        service: b"imap",
        realm: None,
        client_addr: addr,
        local_addr: None,
        secure: None,
    }
}

/// (rows, refusals they stand for) of the audit trail with this reason: a row
/// stands for one refusal, a summary row for the count it gives.
fn audit_count(f: &Fixture, reason: &str) -> (i64, i64) {
    let conn = rusqlite::Connection::open(&f.config.db).unwrap();
    let mut st = conn
        .prepare("SELECT coalesce(detail, '') FROM audit WHERE reason = ?1")
        .unwrap();
    let details: Vec<String> = st
        .query_map([reason], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut stands_for = 0;
    for d in &details {
        stands_for += d.strip_suffix_count().unwrap_or(1);
    }
    (details.len() as i64, stands_for)
}

trait SummaryCount {
    fn strip_suffix_count(&self) -> Option<i64>;
}

impl SummaryCount for String {
    /// "1234 more refusals suppressed ..." -> 1234
    fn strip_suffix_count(&self) -> Option<i64> {
        let (n, rest) = self.split_once(' ')?;
        rest.starts_with("more refusals suppressed")
            .then(|| n.parse().ok())
            .flatten()
    }
}

fn audit_rows(f: &Fixture) -> i64 {
    let conn = rusqlite::Connection::open(&f.config.db).unwrap();
    conn.query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap()
}

fn file_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn db_bytes(f: &Fixture) -> u64 {
    let db = &f.config.db;
    let wal = db.with_file_name(format!("{}-wal", db.file_name().unwrap().to_str().unwrap()));
    file_size(db) + file_size(&wal)
}

#[test]
fn malformed_requests_count_against_the_address() {
    let f = Fixture::new();
    f.user("alice", "pw-alice");
    let g = gate_with(&f, "", "address_failures = 5");
    for _ in 0..5 {
        assert_eq!(
            refused(&g.decide(&malformed(Some(b"192.0.2.66;4000")))),
            Some(RefuseReason::BadInput)
        );
    }
    // The address is over its budget now: even the right password is refused,
    // without a slow hash.
    let before = g.stats().slow_hashes;
    let d = g.decide(&from("alice", "pw-alice", "192.0.2.66;4001"));
    assert_eq!(refused(&d), Some(RefuseReason::Throttled), "{d:?}");
    assert_eq!(g.stats().slow_hashes, before);
    // Further malformed requests from it are throttled too; others are unaffected.
    assert_eq!(
        refused(&g.decide(&malformed(Some(b"192.0.2.66")))),
        Some(RefuseReason::Throttled)
    );
    assert!(g
        .decide(&from("alice", "pw-alice", "192.0.2.67"))
        .is_accepted());
    // Without a client address nothing can be counted: refused as malformed.
    assert_eq!(
        refused(&g.decide(&malformed(None))),
        Some(RefuseReason::BadInput)
    );
}

#[test]
fn throttled_flood_is_aggregated_with_a_count() {
    let f = Fixture::new();
    f.user("bob", "pw-bob");
    let g = gate_with(&f, "", "address_failures = 3");
    for pw in ["a", "b", "c"] {
        g.decide(&from("bob", pw, "203.0.113.9"));
    }
    const N: i64 = 10_000;
    let before = g.stats().slow_hashes;
    for i in 0..N {
        let pw = if i % 2 == 0 { "pw-bob" } else { "guess" };
        assert_eq!(
            refused(&g.decide(&from("bob", pw, "203.0.113.9"))),
            Some(RefuseReason::Throttled)
        );
    }
    assert_eq!(g.stats().slow_hashes, before, "throttled: no slow hash");
    drop(g); // writes what is still counted in memory
    let (rows, stands_for) = audit_count(&f, "throttled");
    println!("throttled flood: {N} refusals -> {rows} audit rows");
    assert!(rows <= 4, "{rows} rows for {N} throttled refusals");
    assert_eq!(stands_for, N, "every refusal is counted in the trail");
    // The wrong passwords before the block are each in the trail.
    assert_eq!(audit_count(&f, "bad-credentials").0, 3);
}

#[test]
fn audit_trail_has_a_row_cap() {
    let f = Fixture::new();
    f.user("carl", "pw-carl");
    let app = f.app_password("carl", &[], false, None);
    let g = gate_with(&f, "audit_max_rows = 500", "");
    for _ in 0..2000 {
        assert!(g.decide(&req("carl", &app, "imap")).is_accepted());
    }
    drop(g);
    let newest: i64 = rusqlite::Connection::open(&f.config.db)
        .unwrap()
        .query_row("SELECT max(id) FROM audit", [], |r| r.get(0))
        .unwrap();
    // A new process prunes on its first write.
    let g = gate_with(&f, "audit_max_rows = 500", "");
    assert!(g.decide(&req("carl", &app, "imap")).is_accepted());
    g.flush();
    let rows = audit_rows(&f);
    assert!((400..=500).contains(&rows), "{rows} rows kept, cap 500");
    let oldest_kept: i64 = rusqlite::Connection::open(&f.config.db)
        .unwrap()
        .query_row("SELECT min(id) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert!(oldest_kept > newest - 500, "the oldest rows go first");
}

/// One million malformed requests (or `FLOOD_N`): from one address, from
/// rotating IPv6 addresses of one /64, from 1,000 different IPv4 addresses, and
/// without an address. Documented in doc/hardening.md.
#[test]
fn million_malformed_requests_leave_a_small_database() {
    let n: usize = std::env::var("FLOOD_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let f = Fixture::new();
    f.user("dora", "pw-dora");
    let g = gate_with(&f, "", "");
    let size_before = db_bytes(&f);
    let t0 = Instant::now();
    let mut addr = String::new();
    let mut throttled = 0usize;
    for i in 0..n {
        addr.clear();
        let a: Option<&[u8]> = match i % 4 {
            0 => Some(b"198.51.100.77;2525"),
            1 => {
                use std::fmt::Write;
                write!(addr, "2001:db8:5:6:{:x}:{:x}::1", i & 0xffff, i >> 16).unwrap();
                Some(addr.as_bytes())
            }
            2 => {
                use std::fmt::Write;
                write!(addr, "10.9.{}.{}", (i / 4) % 1000 / 250, (i / 4) % 250).unwrap();
                Some(addr.as_bytes())
            }
            _ => None,
        };
        match g.decide(&malformed(a)) {
            Decision::Refused {
                reason: RefuseReason::Throttled,
                ..
            } => throttled += 1,
            Decision::Refused {
                reason: RefuseReason::BadInput,
                ..
            } => {}
            other => panic!("request {i}: {other:?}"),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    drop(g);
    let rows = audit_rows(&f);
    let size = db_bytes(&f);
    let (_, bad) = audit_count(&f, "bad-input");
    let (_, thr) = audit_count(&f, "throttled");
    println!(
        "{n} malformed requests in {secs:.1} s ({:.0}/s), {throttled} throttled; \
         audit rows {rows}; database + WAL {size_before} -> {size} bytes",
        n as f64 / secs
    );
    assert_eq!(bad + thr, n as i64, "every refusal is counted in the trail");
    assert!(
        rows <= 10_000,
        "{rows} audit rows for {n} malformed requests"
    );
    // doc/hardening.md: under 4 MiB (the empty database is ~100 KiB).
    assert!(size < 4 << 20, "database + WAL {size} bytes");
}

#[test]
fn trusted_networks_are_never_blocked_per_address() {
    let f = Fixture::new();
    for i in 0..12 {
        f.user(&format!("user{i}"), &format!("pw-{i}"));
    }
    let g = gate_with(
        &f,
        "",
        r#"address_failures = 3
           account_address_failures = 3
           trusted_networks = ["192.0.2.10", "10.0.0.0/8", "2001:db8::/32"]"#,
    );
    for webmail in ["192.0.2.10", "10.1.2.3;40000", "2001:db8:ff::1"] {
        // Twenty failures over ten accounts from the shared address.
        for i in 0..10 {
            for guess in ["x", "y"] {
                g.decide(&from(&format!("user{i}"), guess, webmail));
            }
        }
        assert!(
            g.decide(&from("user11", "pw-11", webmail)).is_accepted(),
            "trusted {webmail} blocked for everyone"
        );
        // Per account + address it still blocks.
        for guess in ["z1", "z2", "z3"] {
            g.decide(&from("user10", guess, webmail));
        }
        assert_eq!(
            refused(&g.decide(&from("user10", "pw-10", webmail))),
            Some(RefuseReason::Throttled),
            "{webmail}"
        );
    }
    // A neighbour that is not listed is blocked per address as before.
    for guess in ["x", "y", "z"] {
        g.decide(&from("user0", guess, "192.0.2.11"));
    }
    assert_eq!(
        refused(&g.decide(&from("user11", "pw-11", "192.0.2.11"))),
        Some(RefuseReason::Throttled)
    );
    assert!(Config::parse("[throttle]\ntrusted_networks = [\"10.0.0.0/33\"]").is_err());
    assert!(Config::parse("[throttle]\ntrusted_networks = [\"example.org\"]").is_err());
}

#[test]
fn ipv6_clients_are_grouped_per_64_by_default() {
    let f = Fixture::new();
    f.user("erik", "pw-erik");
    let mut cfg = f.config.clone();
    cfg.throttle_address.failures = 3;
    let g = Gate::open(cfg).unwrap();
    for (i, guess) in ["a", "b", "c"].iter().enumerate() {
        let addr = format!("2001:db8:1:2::{}", i + 1);
        g.decide(&from("erik", guess, &addr));
    }
    // Another address of the same /64: the same client.
    assert_eq!(
        refused(&g.decide(&from("erik", "pw-erik", "2001:db8:1:2:ffff::9"))),
        Some(RefuseReason::Throttled)
    );
    // The next /64 is someone else.
    assert!(g
        .decide(&from("erik", "pw-erik", "2001:db8:1:3::1"))
        .is_accepted());
}

#[test]
fn ipv6_prefix_is_configurable() {
    let f = Fixture::new();
    f.user("fay", "pw-fay");
    let g = gate_with(&f, "", "address_failures = 3\nipv6_prefix = 48");
    for (i, guess) in ["a", "b", "c"].iter().enumerate() {
        g.decide(&from("fay", guess, &format!("2001:db8:1:{i}::1")));
    }
    assert_eq!(
        refused(&g.decide(&from("fay", "pw-fay", "2001:db8:1:ff::1"))),
        Some(RefuseReason::Throttled)
    );
    assert!(g
        .decide(&from("fay", "pw-fay", "2001:db8:2::1"))
        .is_accepted());
    // 128: every address on its own.
    let g = gate_with(&f, "", "address_failures = 3\nipv6_prefix = 128");
    for (i, guess) in ["d", "e", "f"].iter().enumerate() {
        g.decide(&from("fay", guess, &format!("2001:db8:9::{}", i + 1)));
    }
    assert!(g
        .decide(&from("fay", "pw-fay", "2001:db8:9::4"))
        .is_accepted());
    assert!(Config::parse("[throttle]\nipv6_prefix = 129").is_err());
}
