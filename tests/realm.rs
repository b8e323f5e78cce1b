//! Which account a login with a domain or realm is checked against (issue 11,
//! findings 1 and 2), through the real parts: the saslgated binary, the real
//! libsasl2 `sasl_checkpass` with `pwcheck_method: saslauthd` (what Cyrus
//! imapd's LOGIN and Postfix's smtpd call; tests/daemon_checkpass.c), the stock
//! `testsaslauthd`, and the `saslgate verify` CLI.
//!
//! What libsasl2 2.1.28 (Debian 2.1.28+dfsg-10) puts on the saslauthd wire, as
//! `libsasl2_wire_fields` below records with a listener of its own:
//! - `bob@example.org` -> login `bob`, realm `example.org` (cut at the LAST `@`,
//!   lib/checkpw.c saslauthd_verify_password; `a@b@c.org` -> `a@b` + `c.org`);
//! - plain `alice` -> login `alice`, realm empty when sasl_server_new got no
//!   user_realm (Cyrus imapd; Postfix with smtpd_sasl_local_domain empty, its
//!   default). serverFQDN ("localhost" here) is never sent as the realm;
//! - plain `alice` with user_realm R -> login `alice`, realm R (Postfix with
//!   smtpd_sasl_local_domain = R): the only way a plain login gets a realm.
//!   So the default local realms (the host's own names and localhost) matter
//!   only for that Postfix setting and for a user who types `alice@<host>`.
//!
//! Accounts: `bob@example.org` (password A), `bob` (B), `alice` (C). Missing
//! tools (testsaslauthd, cc, libsasl2-dev) fail the tests; they never pass
//! without running.

use saslgate_testkit::{compile_sasl_program, need_tool, Daemon};
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SASLGATE: &str = env!("CARGO_BIN_EXE_saslgate");
const PW_A: &str = "bob-at-example pw A";
const PW_B: &str = "plain bob pw B";
const PW_C: &str = "plain alice pw C";

fn run_cli(conf: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(SASLGATE)
        .arg("--config")
        .arg(conf)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run saslgate");
    // A command that fails on its arguments exits before reading stdin.
    if let Err(e) = child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or("").as_bytes())
    {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

fn cli(conf: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = run_cli(conf, args, stdin);
    assert!(
        out.status.success(),
        "saslgate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Test data. `conf(extra)` writes a config on the same database with more lines
/// (e.g. `local_realms`), so the database is made by a config every build reads.
struct Fixture {
    dir: tempfile::TempDir,
    conf: PathBuf,
    /// App password of `bob@example.org` (imap) and of plain `bob` (imap).
    app_domain_bob: String,
    app_plain_bob: String,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut fx = Fixture {
            conf: PathBuf::new(),
            dir,
            app_domain_bob: String::new(),
            app_plain_bob: String::new(),
        };
        fx.conf = fx.conf_with("base", "");
        let conf = fx.conf.clone();
        cli(&conf, &["init"], None);
        for (name, pw) in [("bob@example.org", PW_A), ("bob", PW_B), ("alice", PW_C)] {
            cli(&conf, &["user", "add", name], None);
            cli(&conf, &["passwd", name, "--stdin"], Some(pw));
        }
        let app = |name: &str| {
            cli(
                &conf,
                &[
                    "app-password",
                    "add",
                    name,
                    "--label",
                    "phone",
                    "--services",
                    "imap",
                ],
                None,
            )
            .trim()
            .to_string()
        };
        fx.app_domain_bob = app("bob@example.org");
        fx.app_plain_bob = app("bob");
        fx
    }

    fn conf_with(&self, name: &str, extra: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.conf"));
        std::fs::write(
            &path,
            format!(
                "db = \"{}\"\nbcrypt_cost = 4\n{extra}\n[throttle]\naddress_failures = 100000\n\
                 account_address_failures = 100000\nslowdown_failures = 100000\n",
                self.dir.path().join("sg.db").display()
            ),
        )
        .unwrap();
        path
    }

    /// The audit trail as (account, outcome) pairs, oldest first.
    fn audit(&self) -> Vec<(String, String)> {
        let text = cli(&self.conf, &["--json", "log"], None);
        let v: serde_json::Value = serde_json::from_str(&text).expect("log --json");
        let mut rows: Vec<(i64, String, String)> = v
            .as_array()
            .expect("a list")
            .iter()
            .map(|e| {
                (
                    e["id"].as_i64().unwrap_or(0),
                    e["account"].as_str().unwrap_or("").to_string(),
                    e["outcome"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        rows.sort();
        rows.into_iter().map(|(_, a, o)| (a, o)).collect()
    }
}

/// The real saslgated for a test (no failure delay): socket directory
/// `name`, log `name.log`.
fn start_daemon(fx: &Fixture, conf: &Path, name: &str, extra: &[&str]) -> Daemon {
    let mut args = vec!["--fail-delay", "0"];
    args.extend_from_slice(extra);
    Daemon::start_logged(
        conf,
        &fx.dir.path().join(name),
        &fx.dir.path().join(format!("{name}.log")),
        &args,
    )
}

/// SIGTERM; the log once it has exited cleanly (audit rows flushed).
fn stop(d: Daemon) -> String {
    let (st, log) = d.stop();
    assert!(st.success(), "saslgated exit {st}: {log}");
    log
}

/// tests/daemon_checkpass.c, compiled against the system libsasl2.
fn checkpass_bin(dir: &Path) -> PathBuf {
    compile_sasl_program("tests/daemon_checkpass.c", &dir.join("checkpass"))
}

/// libsasl2's `sasl_checkpass` against `sock`: true for SASL_OK, false for a
/// refusal; anything else (setup error, no answer) fails the test.
fn checkpass(bin: &Path, sock: &Path, user: &str, pass: &str, user_realm: Option<&str>) -> bool {
    let out = Command::new(bin)
        .arg(sock)
        .args(["imap", user, pass])
        .args(user_realm)
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!(
            "checkpass {user}: {other:?} {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The stock client: it sends the login unsplit and the realm given with -r.
fn testsaslauthd(sock: &Path, user: &str, pass: &str, realm: Option<&str>) -> bool {
    let mut cmd = Command::new(need_tool("testsaslauthd", "sasl2-bin"));
    cmd.arg("-f")
        .arg(sock)
        .args(["-u", user, "-p", pass, "-s", "imap"]);
    if let Some(r) = realm {
        cmd.args(["-r", r]);
    }
    let text = String::from_utf8_lossy(&cmd.output().unwrap().stdout).to_string();
    assert!(
        text.contains("OK") || text.contains("NO"),
        "testsaslauthd: {text:?}"
    );
    text.contains("0: OK")
}

/// The value of `key=` in a log line, with or without quotes.
fn field(line: &str, key: &str) -> Option<String> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[at..];
    let value = match rest.strip_prefix('"') {
        Some(q) => q.split('"').next().unwrap_or(""),
        None => rest.split(' ').next().unwrap_or(""),
    };
    Some(value.to_string())
}

/// Accounts of the accepted logins in the daemon log, in order.
fn accepted_accounts(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("result=OK"))
        .filter_map(|l| field(l, "account"))
        .collect()
}

/// The matrix of findings 1 and 2 through `sasl_checkpass` and `testsaslauthd`;
/// the same answers with and without saslgated's `-r`.
fn domain_matrix(extra: &[&str]) {
    let fx = Fixture::new();
    let bin = checkpass_bin(fx.dir.path());
    let d = start_daemon(&fx, &fx.conf, "run", extra);
    let s = d.socket();
    let cp = |user: &str, pass: &str| checkpass(&bin, &s, user, pass, None);
    // Finding 1: `bob@example.org` is the account bob@example.org, never `bob`.
    assert!(
        cp("bob@example.org", PW_A),
        "bob@example.org + its own password"
    );
    assert!(
        !cp("bob@example.org", PW_B),
        "bob@example.org logged in with plain bob's password"
    );
    assert!(cp("Bob@Example.ORG", PW_A), "case-folded");
    assert!(cp("bob@example.org", &fx.app_domain_bob));
    assert!(
        !cp("bob@example.org", &fx.app_plain_bob),
        "plain bob's app password opened bob@example.org"
    );
    assert!(cp("bob", PW_B));
    assert!(
        !cp("bob", PW_A),
        "bob@example.org's password opened plain bob"
    );
    // Finding 2: no fallback to plain `alice` for a realm that is not local.
    assert!(cp("alice", PW_C));
    assert!(
        !cp("alice@victim.org", PW_C),
        "alice@victim.org logged in with plain alice's password"
    );
    assert!(!cp("bob@victim.org", PW_B));
    // Two `@`: libsasl2 sends `a@b` + realm; never an account.
    assert!(!cp("alice@x@victim.org", PW_C));
    // The stock client: realm given apart, and the name unsplit.
    assert!(testsaslauthd(&s, "bob", PW_A, Some("example.org")));
    assert!(!testsaslauthd(&s, "bob", PW_B, Some("example.org")));
    assert!(testsaslauthd(&s, "bob@example.org", PW_A, None));
    assert!(!testsaslauthd(&s, "bob@example.org", PW_B, None));
    assert!(!testsaslauthd(&s, "alice", PW_C, Some("victim.org")));
    assert!(testsaslauthd(&s, "alice", PW_C, None));
    let log = stop(d);
    // The name the mail server is told (and the log shows) is the one verified.
    assert_eq!(
        accepted_accounts(&log),
        [
            "bob@example.org",
            "bob@example.org",
            "bob@example.org",
            "bob",
            "alice",
            "bob@example.org",
            "bob@example.org",
            "alice"
        ],
        "{log}"
    );
    // The realm libsasl2 sent is in the log line (finding 1: it was dropped).
    let first = log
        .lines()
        .find(|l| l.contains("login=bob ") || l.contains("login=\"bob\""))
        .unwrap_or_else(|| panic!("no line for login bob: {log}"));
    assert_eq!(
        field(first, "realm").as_deref(),
        Some("example.org"),
        "{first}"
    );
    let audit = fx.audit();
    let accepted = |who: &str| {
        audit
            .iter()
            .filter(|(a, o)| a == who && o == "accepted")
            .count()
    };
    assert_eq!(accepted("bob@example.org"), 5, "{audit:?}");
    assert_eq!(accepted("bob"), 1, "{audit:?}");
    assert_eq!(accepted("alice"), 2, "{audit:?}");
    // A refused alice@victim.org is audited under that name, not under alice.
    assert!(
        audit
            .iter()
            .any(|(a, o)| a == "alice@victim.org" && o == "refused"),
        "{audit:?}"
    );
}

#[test]
fn domain_login_checks_that_account_without_r() {
    domain_matrix(&[]);
}

#[test]
fn domain_login_checks_that_account_with_r() {
    domain_matrix(&["-r"]);
}

/// `local_realms` opens the fallback to a plain account for the listed realms
/// only; the name told is then the plain account's.
#[test]
fn listed_local_realm_falls_back_to_plain_account() {
    let fx = Fixture::new();
    let bin = checkpass_bin(fx.dir.path());
    let conf = fx.conf_with("local", "local_realms = [\"mail.example.org\"]");
    let d = start_daemon(&fx, &conf, "run", &[]);
    let s = d.socket();
    let cp = |user: &str, pass: &str, ur: Option<&str>| checkpass(&bin, &s, user, pass, ur);
    assert!(cp("alice@mail.example.org", PW_C, None));
    assert!(cp("Alice@MAIL.example.org", PW_C, None));
    // Postfix with smtpd_sasl_local_domain = mail.example.org: a plain login
    // arrives with that realm.
    assert!(cp("alice", PW_C, Some("mail.example.org")));
    assert!(cp("alice", PW_C, None));
    assert!(!cp("alice@mail.example.org", "wrong", None));
    // Not listed: no fallback.
    assert!(!cp("alice@victim.org", PW_C, None));
    assert!(!cp("alice", PW_C, Some("victim.org")));
    assert!(!cp("alice@example.org", PW_C, None));
    // An existing account for the realm is still the one checked.
    assert!(!cp("bob@example.org", PW_B, None));
    assert!(cp("bob@example.org", PW_A, None));
    let log = stop(d);
    assert_eq!(
        accepted_accounts(&log),
        ["alice", "alice", "alice", "alice", "bob@example.org"],
        "{log}"
    );
    // The CLI face follows the same rule.
    let verify = |name: &str, realm: &str, pw: &str| {
        run_cli(
            &conf,
            &["verify", name, "--service", "imap", "--realm", realm],
            Some(pw),
        )
        .status
        .code()
    };
    assert_eq!(verify("alice", "mail.example.org", PW_C), Some(0));
    assert_eq!(verify("alice", "victim.org", PW_C), Some(1));
    assert_eq!(verify("bob", "example.org", PW_B), Some(1));
    assert_eq!(verify("bob", "example.org", PW_A), Some(0));
}

/// The host's short name from the kernel, and the FQDN as `hostname -f` gives it.
fn host_names() -> Vec<String> {
    let mut names = vec![std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_lowercase()];
    if let Ok(out) = Command::new("hostname").arg("-f").output() {
        let fqdn = String::from_utf8_lossy(&out.stdout).trim().to_lowercase();
        if out.status.success() && !fqdn.is_empty() && !names.contains(&fqdn) {
            names.push(fqdn);
        }
    }
    names
}

/// Without `local_realms` the local realms are the host's own names and
/// `localhost`: `alice@<hostname>` and a plain login carrying the host name as
/// realm reach plain `alice`; other realms do not. `local_realms = []` turns
/// every fallback off (debian/saslgate.conf); a login without realm is then
/// still the plain account.
#[test]
fn default_local_realms_are_the_host_names() {
    let fx = Fixture::new();
    let bin = checkpass_bin(fx.dir.path());
    let mut names = host_names();
    names.push("localhost".into());
    for (i, conf) in [fx.conf.clone(), fx.conf_with("empty", "local_realms = []")]
        .iter()
        .enumerate()
    {
        let fallback = i == 0;
        let d = start_daemon(&fx, conf, &format!("run{i}"), &[]);
        let s = d.socket();
        for host in &names {
            assert_eq!(
                checkpass(&bin, &s, &format!("alice@{host}"), PW_C, None),
                fallback,
                "alice@{host} (conf {i})"
            );
            assert_eq!(
                checkpass(&bin, &s, "alice", PW_C, Some(host)),
                fallback,
                "alice + user_realm {host} (conf {i})"
            );
        }
        assert!(checkpass(&bin, &s, "alice", PW_C, None));
        assert!(!checkpass(&bin, &s, "alice@victim.org", PW_C, None));
        assert!(!checkpass(&bin, &s, "alice", PW_C, Some("victim.org")));
        let log = stop(d);
        let accepted = accepted_accounts(&log);
        assert_eq!(
            accepted.len(),
            if fallback { 2 * names.len() + 1 } else { 1 },
            "{log}"
        );
        assert!(accepted.iter().all(|a| a == "alice"), "{log}");
    }
}

/// What libsasl2's `sasl_checkpass` sends on the saslauthd socket: a listener
/// of our own records the four fields and answers NO. This pins the facts the
/// realm rule is built on; a libsasl2 that sent otherwise fails here first.
#[test]
fn libsasl2_wire_fields() {
    let dir = tempfile::tempdir().unwrap();
    let bin = checkpass_bin(dir.path());
    let sock = dir.path().join("mux");
    let listener = UnixListener::bind(&sock).unwrap();
    let seen = std::thread::spawn(move || {
        let mut all = Vec::new();
        for conn in listener.incoming().take(5) {
            let mut c = conn.unwrap();
            let mut fields = Vec::new();
            for _ in 0..4 {
                let mut len = [0u8; 2];
                c.read_exact(&mut len).unwrap();
                let mut f = vec![0u8; usize::from(u16::from_be_bytes(len))];
                c.read_exact(&mut f).unwrap();
                fields.push(String::from_utf8(f).unwrap());
            }
            c.write_all(&[0, 2, b'N', b'O']).unwrap();
            // login, service, realm (the password is not kept).
            all.push((fields[0].clone(), fields[2].clone(), fields[3].clone()));
        }
        all
    });
    for (user, ur) in [
        ("bob@example.org", None),
        ("alice", None),
        ("alice", Some("mail.example.org")),
        ("bob@example.org", Some("mail.example.org")),
        ("a@b@c.org", None),
    ] {
        assert!(!checkpass(&bin, &sock, user, "pw", ur));
    }
    let t = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        seen.join().unwrap(),
        [
            t("bob", "imap", "example.org"),
            t("alice", "imap", ""),
            t("alice", "imap", "mail.example.org"),
            t("bob", "imap", "example.org"),
            t("a@b", "imap", "c.org"),
        ]
    );
}

/// A login alias through saslgated, asked by the real libsasl2
/// (`sasl_checkpass`, which sends `robert@example.org` as `robert` + realm
/// `example.org`) and by the stock `testsaslauthd`: accepted with the
/// account's password, and logged and audited as the account. The answer is
/// only OK/NO: the mail server keeps the alias as the user name (what it
/// cannot do is documented in doc/saslgated.md).
#[test]
fn a_login_alias_through_saslgated() {
    let fx = Fixture::new();
    cli(
        &fx.conf,
        &["alias", "add", "bob@example.org", "robert@example.org"],
        None,
    );
    cli(&fx.conf, &["alias", "add", "alice", "ally"], None);
    let bin = checkpass_bin(fx.dir.path());
    let d = start_daemon(&fx, &fx.conf, "run", &[]);
    let s = d.socket();
    let cp = |user: &str, pass: &str| checkpass(&bin, &s, user, pass, None);
    assert!(
        cp("robert@example.org", PW_A),
        "alias + the account's password"
    );
    assert!(
        !cp("robert@example.org", PW_B),
        "alias + another account's password"
    );
    assert!(cp("Robert@Example.org", &fx.app_domain_bob));
    assert!(cp("ally", PW_C));
    assert!(testsaslauthd(&s, "robert", PW_A, Some("example.org")));
    assert!(testsaslauthd(&s, "robert@example.org", PW_A, None));
    assert!(!testsaslauthd(&s, "robert@example.org", PW_C, None));
    assert!(testsaslauthd(&s, "ally", PW_C, None));
    // Not an alias in another realm.
    assert!(!testsaslauthd(&s, "robert", PW_A, Some("example.net")));
    cli(&fx.conf, &["alias", "remove", "ally"], None);
    assert!(!testsaslauthd(&s, "ally", PW_C, None), "a removed alias");
    let log = stop(d);
    assert_eq!(
        accepted_accounts(&log),
        [
            "bob@example.org",
            "bob@example.org",
            "alice",
            "bob@example.org",
            "bob@example.org",
            "alice"
        ],
        "{log}"
    );
    let audit = fx.audit();
    // Audited under the account; an alias name only for the refusals of
    // names that were no alias then (the removed one, another realm).
    assert!(
        !audit
            .iter()
            .any(|(a, o)| (a == "ally" || a.starts_with("robert")) && o == "accepted"),
        "{audit:?}"
    );
    assert!(audit.iter().any(|(a, o)| a == "ally" && o == "refused"));
    assert_eq!(
        audit
            .iter()
            .filter(|(a, o)| a == "bob@example.org" && o == "accepted")
            .count(),
        4,
        "{audit:?}"
    );
}
