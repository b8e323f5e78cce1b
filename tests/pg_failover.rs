//! Failover between two private PostgreSQL clusters: a primary and a streaming
//! standby made by `pg_basebackup -R`, with `db` naming both hosts and
//! `target_session_attrs=read-write`. Logins with one-time codes and TOTP
//! steps go through the library (`Gate`) and through saslgated; the primary
//! is killed (SIGKILL, every process), the standby promoted, and the logins
//! resume on their own (no restart of saslgated, no new `Gate`).
//!
//! - synchronous replication (`synchronous_standby_names = '*'`,
//!   `synchronous_commit = remote_apply`): every code and step accepted before
//!   the kill is refused after it: 0 replays, asserted;
//! - asynchronous replication: the standby is frozen for a few logins before
//!   the kill (replication lag made visible); what those logins used may be
//!   accepted again after the failover. The count is printed, not asserted
//!   (doc/design.md, "Failover"); everything else is.
//!
//! Prints the seconds from `pg_ctl promote` to the first accepted login.
//! Without PostgreSQL installed, prints "SKIP: ..." and returns.

use saslgate::{Config, Decision, Gate};
use saslgate_testkit::{ask, frame, oathtool, pg, req, Daemon, ANSWER_OK, ANSWER_UNAVAILABLE};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXP";
/// Longest wait for logins to resume after the promote (a bound, not a target).
const RESUME_WITHIN: Duration = Duration::from_secs(60);

/// The accounts: g-* logs in through the Gate, d-* through saslgated; *-a
/// before the standby is (in the asynchronous case) frozen, *-b after.
const ACCOUNTS: [&str; 4] = ["g-a", "g-b", "d-a", "d-b"];

struct Pair {
    primary: pg::PgCluster,
    standby: pg::PgCluster,
    config: Config,
    conf_file: PathBuf,
}

/// A primary with database `sg` (`saslgate init`), its standby, and a
/// configuration whose `db` names both (primary first).
fn pair(sync: bool) -> Option<Pair> {
    let settings: &[(&str, &str)] = if sync {
        &[
            ("synchronous_standby_names", "*"),
            ("synchronous_commit", "remote_apply"),
        ]
    } else {
        &[]
    };
    let primary = match pg::PgCluster::start_with(settings) {
        Ok(c) => c,
        Err(reason) => {
            pg::report_skip(&reason);
            return None;
        }
    };
    // As README.Debian advises: a standby that has just lost its primary
    // retries after 1 s, not 5 s, and so sees the promote sooner.
    let standby =
        pg::PgCluster::standby_of(&primary, &[("wal_retrieve_retry_interval", "1s")]).unwrap();
    primary
        .wait_for_standby(if sync { "sync" } else { "async" }, Duration::from_secs(30))
        .unwrap();
    primary.create_database("sg").unwrap();
    let pwfile = primary.dir().join("db.pw");
    std::fs::write(&pwfile, format!("{}\n", primary.password())).unwrap();
    let db = format!(
        "postgresql://{}@127.0.0.1:{},127.0.0.1:{}/sg?target_session_attrs=read-write",
        pg::SUPERUSER,
        primary.port(),
        standby.port()
    );
    let config = Config {
        db: db.clone().into(),
        db_password_file: Some(pwfile.clone()),
        bcrypt_cost: 4,
        flush_interval: Duration::ZERO,
        ..Config::default()
    };
    let conf_file = primary.dir().join("host.conf");
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
    Some(Pair {
        primary,
        standby,
        config,
        conf_file,
    })
}

/// One login's credential: account and password (master password + code).
#[derive(Clone, Debug)]
struct Used {
    account: &'static str,
    password: String,
    what: &'static str,
}

/// Asks through the Gate (g-*) or saslgated (d-*); true when accepted.
/// Panics on anything but accepted, refused or unavailable.
fn login(gate: &Gate, daemon: &Daemon, account: &str, password: &str) -> Outcome {
    if account.starts_with("g-") {
        match gate.decide(&req(account, password, "imap")) {
            d if d.is_accepted() => Outcome::Accepted,
            Decision::Unavailable { .. } => Outcome::Unavailable,
            Decision::Refused { .. } => Outcome::Refused,
            d => panic!("{account}: {d:?}"),
        }
    } else {
        let fields: [&[u8]; 4] = [account.as_bytes(), password.as_bytes(), b"imap", b""];
        let answer = ask(&daemon.socket(), &frame(&fields)).unwrap();
        if answer == ANSWER_OK {
            Outcome::Accepted
        } else if answer == ANSWER_UNAVAILABLE {
            Outcome::Unavailable
        } else {
            assert!(answer.starts_with("NO"), "{account}: {answer}");
            Outcome::Refused
        }
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Outcome {
    Accepted,
    Refused,
    Unavailable,
}

/// Uses one code and one TOTP step of `account` (both must be accepted).
fn use_credentials(
    gate: &Gate,
    daemon: &Daemon,
    account: &'static str,
    codes: &mut Vec<String>,
    used: &mut Vec<Used>,
) {
    let pw = format!("pw-{account}");
    let code = codes.pop().unwrap();
    let totp = oathtool(TOTP_SECRET);
    for (what, password) in [
        ("one-time code", format!("{pw}{code}")),
        ("TOTP step", format!("{pw}{totp}")),
    ] {
        assert_eq!(
            login(gate, daemon, account, &password),
            Outcome::Accepted,
            "{account}: {what} before the failover"
        );
        used.push(Used {
            account,
            password,
            what,
        });
    }
}

/// The failover run; returns (replays accepted, credentials retried).
fn failover(sync: bool) -> Option<(usize, usize)> {
    let label = if sync { "synchronous" } else { "asynchronous" };
    let mut p = pair(sync)?;
    let mut codes = std::collections::HashMap::new();
    {
        let mut admin = saslgate::store::open_admin(&p.config).unwrap();
        let secret = saslgate::totp::decode_secret(TOTP_SECRET).unwrap();
        for a in ACCOUNTS {
            admin.add_account(a, "default").unwrap();
            admin
                .set_master_password(
                    a,
                    &saslgate::secret::SecretBytes::from_slice(format!("pw-{a}").as_bytes()),
                    false,
                )
                .unwrap();
            admin.enable_totp(a, &secret).unwrap();
            let list: Vec<String> = admin
                .generate_codes(a, 6)
                .unwrap()
                .iter()
                .map(|c| String::from_utf8(c.as_bytes().to_vec()).unwrap())
                .collect();
            codes.insert(a, list);
        }
    }
    let gate = Gate::open(p.config.clone()).unwrap();
    // Not in the cluster's directory (the server's user owns it): as root,
    // saslgated makes its socket only where no other user can write.
    let run = tempfile::tempdir().unwrap();
    let sock_dir = run.path().join("daemon");
    std::fs::create_dir(&sock_dir).unwrap();
    let daemon = Daemon::start(&p.conf_file, &sock_dir, &["--fail-delay", "0"]);

    // Before: every login accepted on the primary.
    let mut before = Vec::new();
    for a in ["g-a", "d-a"] {
        use_credentials(&gate, &daemon, a, codes.get_mut(a).unwrap(), &mut before);
    }
    p.standby
        .wait_caught_up(&p.primary, Duration::from_secs(30))
        .unwrap();
    // The last logins before the crash. Asynchronous: the primary's WAL
    // senders are frozen first, so they are committed on the primary only
    // (replication lag).
    if !sync {
        assert_eq!(p.primary.pause_wal_senders().unwrap(), 1);
    }
    let mut last = Vec::new();
    for a in ["g-b", "d-b"] {
        use_credentials(&gate, &daemon, a, codes.get_mut(a).unwrap(), &mut last);
    }
    p.primary.kill9();
    // While no server takes writes: never accepted.
    let fresh = |a: &str, codes: &std::collections::HashMap<&str, Vec<String>>| {
        format!("pw-{a}{}", codes.get(a).unwrap().last().unwrap())
    };
    for a in ["g-a", "d-a"] {
        let got = login(&gate, &daemon, a, &fresh(a, &codes));
        assert_eq!(got, Outcome::Unavailable, "{a} with the primary dead");
    }

    // Promote; poll with an unused code (not consumed while unavailable).
    let promoted = Instant::now();
    p.standby.promote().unwrap();
    let standby = &p.standby;
    let (watch, resumed) = std::thread::scope(|s| {
        let w = s.spawn(|| {
            standby
                .wait_read_write(RESUME_WITHIN)
                .map(|_| promoted.elapsed())
        });
        let mut resumed = Vec::new();
        for a in ["g-a", "d-a"] {
            let password = fresh(a, &codes);
            loop {
                match login(&gate, &daemon, a, &password) {
                    Outcome::Accepted => break,
                    Outcome::Unavailable => {}
                    Outcome::Refused => panic!("{a}: an unused code refused after the promote"),
                }
                assert!(
                    promoted.elapsed() < RESUME_WITHIN,
                    "{a}: no login accepted within {RESUME_WITHIN:?} of the promote\n{}",
                    standby.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            resumed.push((a, promoted.elapsed()));
        }
        (w.join().unwrap(), resumed)
    });
    for (a, _) in &resumed {
        codes.get_mut(a).unwrap().pop();
    }
    eprintln!(
        "failover ({label}): promote -> standby read-write {:.2} s; first accepted login: Gate {:.2} s, saslgated {:.2} s",
        watch.unwrap().as_secs_f64(),
        resumed[0].1.as_secs_f64(),
        resumed[1].1.as_secs_f64()
    );

    // Every credential used before the kill, once more.
    let mut replays = 0;
    let retried = before.len() + last.len();
    for (window, u) in before
        .iter()
        .map(|u| ("before", u))
        .chain(last.iter().map(|u| ("just before", u)))
    {
        let got = login(&gate, &daemon, u.account, &u.password);
        assert_ne!(got, Outcome::Unavailable, "{u:?} after the failover");
        if got == Outcome::Accepted {
            replays += 1;
            eprintln!(
                "failover ({label}): REPLAY accepted: {} {} (used {window} the kill)",
                u.account, u.what
            );
        }
        if window == "before" {
            assert_eq!(got, Outcome::Refused, "{u:?}: replicated before the kill");
        }
    }
    eprintln!("failover ({label}): replays accepted: {replays} of {retried}");
    // Nothing else goes wrong: fresh codes work, wrong passwords are refused.
    for a in ACCOUNTS {
        let code = codes.get_mut(a).unwrap().pop().unwrap();
        assert_eq!(
            login(&gate, &daemon, a, &format!("pw-{a}{code}")),
            Outcome::Accepted,
            "{a}: an unused code after the failover"
        );
        assert_eq!(
            login(&gate, &daemon, a, &format!("pw-{a}{code}")),
            Outcome::Refused,
            "{a}: that code again"
        );
        assert_eq!(
            login(&gate, &daemon, a, "wrong"),
            Outcome::Refused,
            "{a}: a wrong password"
        );
    }
    drop(gate);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    Some((replays, retried))
}

#[test]
fn synchronous_failover_replays_nothing() {
    if let Some((replays, retried)) = failover(true) {
        assert_eq!(replays, 0, "replays accepted out of {retried}");
    }
}

#[test]
fn asynchronous_failover_resumes_and_shows_the_replay_window() {
    let _ = failover(false);
}

/// `db` with several hosts and no `target_session_attrs`: read-write is
/// implied, so a standby listed first is skipped (its snapshot may lag, and it
/// cannot record a code's use), and the primary after it serves.
#[test]
fn several_hosts_imply_read_write_and_skip_a_standby() {
    let Some(p) = pair(false) else { return };
    {
        let mut admin = saslgate::store::open_admin(&p.config).unwrap();
        admin.add_account("kim", "default").unwrap();
        admin
            .set_master_password(
                "kim",
                &saslgate::secret::SecretBytes::from_slice(b"pw-kim"),
                false,
            )
            .unwrap();
    }
    let code = {
        let mut admin = saslgate::store::open_admin(&p.config).unwrap();
        String::from_utf8(
            admin.generate_codes("kim", 1).unwrap()[0]
                .as_bytes()
                .to_vec(),
        )
        .unwrap()
    };
    p.standby
        .wait_caught_up(&p.primary, Duration::from_secs(30))
        .unwrap();
    let mut config = p.config.clone();
    config.db = format!(
        "postgresql://{}@127.0.0.1:{},127.0.0.1:{}/sg",
        pg::SUPERUSER,
        p.standby.port(),
        p.primary.port()
    )
    .into();
    let gate = Gate::open(config).unwrap();
    let d = gate.decide(&req("kim", &format!("pw-kim{code}"), "imap"));
    assert!(d.is_accepted(), "{d:?}");
    assert!(
        !gate
            .decide(&req("kim", &format!("pw-kim{code}"), "imap"))
            .is_accepted(),
        "the code again"
    );
}
