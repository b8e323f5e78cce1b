//! Core benchmark: prints figures, asserts nothing (machines are noisy; compare the
//! ratios). Run: `cargo bench --bench core` (or scripts/bench-core.sh).
//!
//! - app-password verify median, 1 vs 100 app passwords on the account, in a
//!   database of 10,000 accounts;
//! - master-password verify vs one raw bcrypt verify at the same cost (overhead);
//! - cached verify;
//! - refusal timing: unknown account vs known account with a wrong password.

use saslgate::secret::SecretBytes;
use saslgate::store::{AdminStore, LoginStore};
use saslgate::{Config, Gate, Request};
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn time_n(n: usize, mut f: impl FnMut()) -> Duration {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    median(samples)
}

fn req<'a>(login: &'a str, pw: &'a [u8]) -> Request<'a> {
    Request {
        login: login.as_bytes(),
        password: pw,
        service: b"imap",
        realm: None,
        client_addr: Some(b"127.0.0.1;40000"),
        local_addr: None,
        secure: None,
    }
}

fn main() {
    let cost: u32 = std::env::var("SASLGATE_BENCH_COST")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(saslgate::config::DEFAULT_BCRYPT_COST);
    let fixture = saslgate_testkit::Fixture::with(|c| {
        c.bcrypt_cost = cost;
        c.flush_interval = Config::default().flush_interval;
    });
    let cfg = fixture.config.clone();
    let mut store = fixture.store();

    eprintln!("building a database of 10,000 accounts...");
    {
        let conn = rusqlite::Connection::open(&cfg.db).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        for i in 0..10_000 {
            conn.execute(
                "INSERT INTO accounts (name, plan, created) VALUES (?1, 'default', 0)",
                [format!("filler{i}@example.org")],
            )
            .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
    }
    store.add_account("one@example.org", "default").unwrap();
    store.add_account("hundred@example.org", "default").unwrap();
    let (_, app_one) = store
        .add_app_password("one@example.org", "phone", &[], false, None)
        .unwrap();
    let mut app_hundred = None;
    for i in 0..100 {
        let (_, a) = store
            .add_app_password(
                "hundred@example.org",
                &format!("device{i}"),
                &[],
                false,
                None,
            )
            .unwrap();
        if i == 50 {
            app_hundred = Some(a);
        }
    }
    let app_hundred = app_hundred.unwrap();
    store
        .set_master_password(
            "one@example.org",
            &SecretBytes::from_slice(b"master-pw"),
            false,
        )
        .unwrap();

    let gate = Gate::open(cfg.clone()).unwrap();
    let n = 3000;
    // Warm up (connection, prepared statements, page cache).
    for _ in 0..200 {
        assert!(gate
            .decide(&req("one@example.org", app_one.as_bytes()))
            .is_accepted());
    }
    let app1 = time_n(n, || {
        assert!(gate
            .decide(&req("one@example.org", app_one.as_bytes()))
            .is_accepted())
    });
    for _ in 0..200 {
        gate.decide(&req("hundred@example.org", app_hundred.as_bytes()));
    }
    let app100 = time_n(n, || {
        assert!(gate
            .decide(&req("hundred@example.org", app_hundred.as_bytes()))
            .is_accepted())
    });

    // Master password vs raw bcrypt at the same cost, interleaved so drift hits both.
    let hash = store
        .find_account("one@example.org")
        .unwrap()
        .unwrap()
        .password_hash
        .unwrap();
    let rounds = 41;
    let (mut m, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        assert!(bcrypt::verify(b"master-pw", &hash).unwrap());
        raw.push(t.elapsed());
        let t = Instant::now();
        assert!(gate
            .decide(&req("one@example.org", b"master-pw"))
            .is_accepted());
        m.push(t.elapsed());
    }
    let (master, rawb) = (median(m), median(raw));

    // Refusal timing: unknown account vs wrong password (from varying addresses so
    // throttling does not kick in).
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let ip = format!("10.9.{}.{};1", i / 200, i % 200);
        let t = Instant::now();
        let d = gate.decide(&Request {
            client_addr: Some(ip.as_bytes()),
            secure: None,
            ..req("nobody@example.org", b"guess-pw")
        });
        unknown.push(t.elapsed());
        assert!(!d.is_accepted());
        let t = Instant::now();
        let d = gate.decide(&Request {
            client_addr: Some(ip.as_bytes()),
            secure: None,
            ..req("one@example.org", b"guess-pw")
        });
        wrong.push(t.elapsed());
        assert!(!d.is_accepted());
    }
    let (unknown, wrong) = (median(unknown), median(wrong));

    let mut cached_cfg = cfg.clone();
    cached_cfg.cache_ttl = Duration::from_secs(600);
    let cached_gate = Gate::open(cached_cfg).unwrap();
    assert!(cached_gate
        .decide(&req("one@example.org", b"master-pw"))
        .is_accepted());
    let cached = time_n(n, || {
        assert!(cached_gate
            .decide(&req("one@example.org", b"master-pw"))
            .is_accepted())
    });
    assert!(cached_gate.stats().cache_hits >= n as u64);

    println!("## saslgate core benchmark (bcrypt cost {cost}, 10,002 accounts, audit level all)");
    println!();
    println!("| measurement | median | target |");
    println!("|---|---|---|");
    println!(
        "| app-password verify, 1 app password on the account | {} | ≤ 50 µs |",
        micros(app1)
    );
    println!(
        "| app-password verify, 100 app passwords on the account | {} | ≤ 1.5× the above |",
        micros(app100)
    );
    println!(
        "| ratio 100 / 1 | {:.2}× | ≤ 1.5× |",
        app100.as_secs_f64() / app1.as_secs_f64()
    );
    println!(
        "| raw bcrypt verify (cost {cost}) | {:.2} ms | |",
        rawb.as_secs_f64() * 1e3
    );
    println!(
        "| master-password verify through the engine | {:.2} ms | |",
        master.as_secs_f64() * 1e3
    );
    println!(
        "| master-password overhead | {:+.2} % | < 3 % |",
        (master.as_secs_f64() / rawb.as_secs_f64() - 1.0) * 100.0
    );
    println!("| cached verify | {} | < 10 µs |", micros(cached));
    println!(
        "| refusal, unknown account | {:.2} ms | |",
        unknown.as_secs_f64() * 1e3
    );
    println!(
        "| refusal, wrong password | {:.2} ms | |",
        wrong.as_secs_f64() * 1e3
    );
    println!(
        "| unknown / wrong | {:+.2} % | within ±5 % |",
        (unknown.as_secs_f64() / wrong.as_secs_f64() - 1.0) * 100.0
    );
}
