//! Backend routing for the `auth_http` face: per-account backends and backend
//! holds in the store (SQLite and PostgreSQL, the same test definitions), and
//! the `saslgate user set-backend` / `saslgate backend` commands with their
//! errors. The face itself is tested in tests/http_face.rs.

use saslgate::store::BackendInfo;
use saslgate::Error;
use saslgate_testkit::Fixture;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn routed_fixture() -> Fixture {
    let f = Fixture::new();
    f.user("alice@example.org", "pw-alice");
    f.user("bob@example.org", "pw-bob");
    f
}

#[test]
fn store_routes_and_moves_the_generation() {
    let f = routed_fixture();
    let mut s = f.admin();
    let g0 = s.generation().unwrap();
    assert!(s
        .set_account_backend("alice@example.org", "imap", Some("10.0.0.1:143"))
        .unwrap());
    let g1 = s.generation().unwrap();
    assert_ne!(g0, g1, "a new route must move the generation");
    // Same value again: nothing changes.
    assert!(!s
        .set_account_backend("Alice@Example.org", " IMAP", Some(" 10.0.0.1:143 "))
        .unwrap());
    // IPv6 is stored in its canonical text, however typed.
    s.set_account_backend("alice@example.org", "pop3", Some("[2001:DB8::0:1]:110"))
        .unwrap();
    s.set_account_backend("bob@example.org", "imap", Some("10.0.0.1:143"))
        .unwrap();
    assert_eq!(
        s.account_backend("alice@example.org", "imap").unwrap(),
        Some("10.0.0.1:143".into())
    );
    assert_eq!(
        s.account_backend("alice@example.org", "pop3").unwrap(),
        Some("[2001:db8::1]:110".into())
    );
    assert_eq!(
        s.account_backend("alice@example.org", "smtp").unwrap(),
        None
    );
    assert_eq!(
        s.account_backend("nobody@example.org", "imap").unwrap(),
        None
    );
    let info = s.account_info("alice@example.org").unwrap();
    assert_eq!(
        info.backends,
        vec![
            ("imap".to_string(), "10.0.0.1:143".to_string()),
            ("pop3".to_string(), "[2001:db8::1]:110".to_string())
        ]
    );
    // Clearing: the default applies again; clearing twice changes nothing.
    let g2 = s.generation().unwrap();
    assert!(s
        .set_account_backend("alice@example.org", "pop3", None)
        .unwrap());
    assert_ne!(g2, s.generation().unwrap());
    assert!(!s
        .set_account_backend("alice@example.org", "pop3", None)
        .unwrap());
    assert_eq!(
        s.account_backend("alice@example.org", "pop3").unwrap(),
        None
    );
    // Deleting the account deletes its routes.
    s.delete_account("bob@example.org").unwrap();
    assert_eq!(
        s.list_backends().unwrap(),
        vec![BackendInfo {
            backend: "10.0.0.1:143".into(),
            accounts: 1,
            held_since: None
        }]
    );
}

#[test]
fn store_holds_and_releases() {
    let f = routed_fixture();
    let mut s = f.admin();
    s.set_account_backend("alice@example.org", "imap", Some("10.0.0.1:143"))
        .unwrap();
    s.set_account_backend("alice@example.org", "smtp", Some("10.0.0.1:143"))
        .unwrap();
    let g0 = s.generation().unwrap();
    let (since, newly) = s.hold_backend("10.0.0.1:143").unwrap();
    assert!(newly);
    assert_ne!(
        g0,
        s.generation().unwrap(),
        "a hold must move the generation"
    );
    // Holding again keeps the first time (the max_hold clock runs on).
    f.sql("UPDATE backend_holds SET since = since - 100");
    let (again, newly) = s.hold_backend(" 10.0.0.1:143").unwrap();
    assert!(!newly);
    assert_eq!(again, since - 100);
    s.hold_backend("10.0.0.9:25").unwrap();
    let holds = s.backend_holds().unwrap();
    assert_eq!(holds.len(), 2);
    assert_eq!(holds[0], ("10.0.0.1:143".to_string(), since - 100));
    assert_eq!(holds[1].0, "10.0.0.9:25");
    let list = s.list_backends().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].backend, "10.0.0.1:143");
    assert_eq!(
        list[0].accounts, 1,
        "one account, counted once over protocols"
    );
    assert_eq!(list[0].held_since, Some(since - 100));
    assert_eq!(list[1].backend, "10.0.0.9:25");
    assert_eq!(list[1].accounts, 0);
    assert!(list[1].held_since.is_some());
    let g1 = s.generation().unwrap();
    s.release_backend("10.0.0.1:143").unwrap();
    assert_ne!(
        g1,
        s.generation().unwrap(),
        "a release must move the generation"
    );
    assert!(matches!(
        s.release_backend("10.0.0.1:143"),
        Err(Error::NotFound(_))
    ));
    assert_eq!(s.backend_holds().unwrap().len(), 1);
}

#[test]
fn store_refuses_bad_input() {
    let f = routed_fixture();
    let mut s = f.admin();
    let usage = |r: saslgate::Result<bool>| match r {
        Err(Error::Usage(m)) => m,
        other => panic!("expected a usage error, got {other:?}"),
    };
    let m = usage(s.set_account_backend("alice@example.org", "imap", Some("mail.example.org:143")));
    assert!(m.contains("not a host name"), "{m}");
    let m = usage(s.set_account_backend("alice@example.org", "imap", Some("10.0.0.1")));
    assert!(m.contains("IP-address:port"), "{m}");
    usage(s.set_account_backend("alice@example.org", "imap", Some("0.0.0.0:143")));
    usage(s.set_account_backend("alice@example.org", "imap", Some("10.0.0.1:0")));
    let m = usage(s.set_account_backend("alice@example.org", "sieve", Some("10.0.0.1:4190")));
    assert!(m.contains("imap, pop3 or smtp"), "{m}");
    assert!(matches!(
        s.set_account_backend("nobody@example.org", "imap", Some("10.0.0.1:143")),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        s.hold_backend("mail.example.org:143"),
        Err(Error::Usage(_))
    ));
    assert!(matches!(
        s.release_backend("mail.example.org:143"),
        Err(Error::Usage(_))
    ));
    assert!(s.list_backends().unwrap().is_empty(), "nothing was stored");
}

// ---- the commands ----

const BIN: &str = env!("CARGO_BIN_EXE_saslgate");

struct Cli {
    _dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Cli {
    fn new() -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("g.db");
        let conf = dir.path().join("saslgate.conf");
        std::fs::write(
            &conf,
            format!(
                "db = {db:?}\nbcrypt_cost = 4\n[http]\nmax_hold = \"2m\"\n[http.backends]\nimap = \"127.0.0.1:1143\"\nsmtp = \"127.0.0.1:1025\"\n"
            ),
        )
        .unwrap();
        let c = Cli { _dir: dir, conf };
        c.ok(&["init"]);
        c.ok(&["plan", "set", "default", "--services", "*"]);
        c.ok(&["user", "add", "alice@example.org"]);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&self.conf)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"").unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// `explain`'s stdout (exit 1: alice has no credential that can log in).
    fn explain(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs a failing command: (exit code, stderr).
    fn fails(&self, args: &[&str]) -> (i32, String) {
        let o = self.run(args);
        assert!(!o.status.success(), "{args:?} should fail");
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

#[test]
fn cli_set_backend_show_explain_and_clear() {
    let c = Cli::new();
    c.ok(&[
        "user",
        "set-backend",
        "alice@example.org",
        "imap",
        "10.0.0.1:143",
    ]);
    let show = c.ok(&["user", "show", "alice@example.org"]);
    assert!(show.contains("backends:       imap=10.0.0.1:143"), "{show}");
    let v: serde_json::Value =
        serde_json::from_str(&c.ok(&["--json", "user", "show", "alice@example.org"])).unwrap();
    assert_eq!(v["backends"], serde_json::json!([["imap", "10.0.0.1:143"]]));
    let explain = c.explain(&["explain", "alice@example.org", "--service", "imap"]);
    assert!(
        explain.contains(
            "auth_http backends: imap 10.0.0.1:143 (account); pop3 none (refused); smtp 127.0.0.1:1025 (default)"
        ),
        "{explain}"
    );
    c.ok(&[
        "user",
        "set-backend",
        "alice@example.org",
        "imap",
        "--clear",
    ]);
    let explain = c.explain(&[
        "--json",
        "explain",
        "alice@example.org",
        "--service",
        "imap",
    ]);
    let v: serde_json::Value = serde_json::from_str(&explain).unwrap();
    assert_eq!(v["backends"][0]["backend"], "127.0.0.1:1143");
    assert_eq!(v["backends"][0]["source"], "default");
    let show = c.ok(&["user", "show", "alice@example.org"]);
    assert!(
        show.contains("backends:       - ([http.backends] defaults)"),
        "{show}"
    );
}

#[test]
fn cli_hold_release_list() {
    let c = Cli::new();
    c.ok(&[
        "user",
        "set-backend",
        "alice@example.org",
        "pop3",
        "10.0.0.2:110",
    ]);
    c.ok(&["backend", "hold", "127.0.0.1:1143"]);
    let list = c.ok(&["backend", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(
        lines[0].starts_with("10.0.0.2:110") && lines[0].contains("accounts=1"),
        "{list}"
    );
    assert!(lines[1].starts_with("127.0.0.1:1025") && lines[1].contains("default:smtp"));
    assert!(
        lines[2].starts_with("127.0.0.1:1143")
            && lines[2].contains("default:imap")
            && lines[2].contains("held since "),
        "{list}"
    );
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["--json", "backend", "list"])).unwrap();
    assert!(v[2]["held_since"].is_i64());
    assert_eq!(v[2]["default_for"], serde_json::json!(["imap"]));
    let explain = c.explain(&["explain", "alice@example.org", "--service", "imap"]);
    assert!(
        explain.contains("imap 127.0.0.1:1143 (default, on hold since "),
        "{explain}"
    );
    c.ok(&["backend", "release", "127.0.0.1:1143"]);
    let (code, err) = c.fails(&["backend", "release", "127.0.0.1:1143"]);
    assert_eq!(code, 1);
    assert!(err.contains("127.0.0.1:1143 is not on hold"), "{err}");
    assert!(!c.ok(&["backend", "list"]).contains("held"));
}

#[test]
fn cli_bad_input_has_clear_errors() {
    let c = Cli::new();
    let (code, err) = c.fails(&[
        "user",
        "set-backend",
        "alice@example.org",
        "imap",
        "mail.example.org:143",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("not a host name"), "{err}");
    let (code, err) = c.fails(&[
        "user",
        "set-backend",
        "alice@example.org",
        "sieve",
        "10.0.0.1:4190",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown protocol \"sieve\" (imap, pop3 or smtp)"),
        "{err}"
    );
    let (code, err) = c.fails(&[
        "user",
        "set-backend",
        "nobody@example.org",
        "imap",
        "10.0.0.1:143",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("account nobody@example.org"), "{err}");
    let (code, _) = c.fails(&["user", "set-backend", "alice@example.org", "imap"]);
    assert_eq!(code, 2, "neither a backend nor --clear");
    let (code, _) = c.fails(&[
        "user",
        "set-backend",
        "alice@example.org",
        "imap",
        "10.0.0.1:143",
        "--clear",
    ]);
    assert_eq!(code, 2, "both a backend and --clear");
    let (code, err) = c.fails(&["backend", "hold", "mail.example.org:143"]);
    assert_eq!(code, 2);
    assert!(err.contains("not a host name"), "{err}");
    assert!(c
        .ok(&["backend", "list"])
        .lines()
        .all(|l| !l.contains("held")));
}

saslgate_testkit::backends! {
    source: include_str!("routing.rs"),
    on_postgresql: [
        store_routes_and_moves_the_generation,
        store_holds_and_releases,
        store_refuses_bad_input,
    ],
    sqlite_only: [
        cli_set_backend_show_explain_and_clear:
            "the command line over a config file of its own; the store calls under it are the store_* tests, on both",
        cli_hold_release_list: "as cli_set_backend_show_explain_and_clear",
        cli_bad_input_has_clear_errors: "as cli_set_backend_show_explain_and_clear",
    ],
}
