//! The `saslgate` command as an operator and a provisioning script use it: exit
//! codes, secrets alone on stdout, JSON, permissions, a 4-process code race.

use saslgate_testkit::oathtool;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_saslgate");

struct Cli {
    _dir: tempfile::TempDir,
    conf: PathBuf,
    db: PathBuf,
}

impl Cli {
    fn new() -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("g.db");
        let conf = dir.path().join("saslgate.conf");
        std::fs::write(&conf, format!("db = {:?}\nbcrypt_cost = 4\n", db)).unwrap();
        let c = Cli {
            _dir: dir,
            conf,
            db,
        };
        c.ok(&["init"]);
        c
    }

    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&self.conf)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A command that fails on its arguments exits before reading stdin:
        // the broken pipe is then expected, and its exit code is what counts.
        if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args, "");
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn code(&self, args: &[&str], stdin: &str) -> i32 {
        self.run(args, stdin).status.code().unwrap()
    }
}

#[test]
fn database_is_private_and_init_refuses_to_overwrite() {
    let c = Cli::new();
    let mode = std::fs::metadata(&c.db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        c.code(&["init"], ""),
        1,
        "init twice must not clobber the database"
    );
}

#[test]
fn secrets_are_printed_once_alone_on_stdout() {
    let c = Cli::new();
    c.ok(&["user", "add", "alice"]);
    assert_eq!(c.code(&["passwd", "alice", "--stdin"], "pw-alice\n"), 0);
    let app = c.ok(&[
        "app-password",
        "add",
        "alice",
        "--label",
        "phone",
        "--services",
        "imap,pop3",
    ]);
    let lines: Vec<&str> = app.lines().collect();
    assert_eq!(lines.len(), 1, "stdout is only the secret: {app:?}");
    assert_eq!(lines[0].len(), 24);
    let uri = c.ok(&["totp", "enable", "alice"]);
    assert_eq!(uri.lines().count(), 1);
    assert!(uri.starts_with("otpauth://totp/saslgate:alice?secret="));
    let codes = c.ok(&["codes", "generate", "alice", "--count", "4"]);
    assert_eq!(codes.lines().count(), 4);
    assert!(codes
        .lines()
        .all(|l| l.len() == 11 && l.as_bytes()[5] == b'-'));
    // The app password works for its services only; pop3 is an alias of pop.
    assert_eq!(
        c.code(&["verify", "alice", "--service", "pop"], lines[0]),
        0
    );
    assert_eq!(
        c.code(&["verify", "alice", "--service", "smtp"], lines[0]),
        1
    );
    let list = c.ok(&["app-password", "list", "alice", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v[0]["services"], serde_json::json!(["imap", "pop"]));
    assert!(!list.contains(lines[0]), "listing never shows the secret");
}

#[test]
fn exit_codes() {
    let c = Cli::new();
    c.ok(&["user", "add", "bob"]);
    c.run(&["passwd", "bob", "--stdin"], "pw-bob");
    assert_eq!(
        c.code(&["verify", "bob", "--service", "imap"], "pw-bob\n"),
        0
    );
    assert_eq!(c.code(&["verify", "bob", "--service", "imap"], "nope"), 1);
    assert_eq!(c.code(&["user", "show", "nobody"], ""), 1);
    assert_eq!(c.code(&["user", "frobnicate"], ""), 2);
    assert_eq!(
        c.code(
            &[
                "app-password",
                "add",
                "bob",
                "--label",
                "x",
                "--expires",
                "soon"
            ],
            ""
        ),
        2
    );
    assert_eq!(c.code(&["user", "add", "bad name"], ""), 2);
    assert_eq!(
        c.code(&["verify", "bob", "--service", "imap"], "pw\0bob"),
        1
    );
    // Unavailable: a missing database, a garbage file, a newer schema.
    let o = Command::new(BIN)
        .args(["--db", "/nonexistent/x.db", "user", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("saslgate init"));
    let o = Command::new(BIN)
        .args([
            "--db",
            "/nonexistent/x.db",
            "verify",
            "bob",
            "--service",
            "imap",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    rusqlite::Connection::open(&c.db)
        .unwrap()
        .pragma_update(None, "user_version", 7)
        .unwrap();
    let o = c.run(&["user", "list"], "");
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("newer saslgate"));
}

#[test]
fn json_show_log_explain() {
    let c = Cli::new();
    c.ok(&["plan", "set", "basic", "--services", "smtp,imap"]);
    c.ok(&["user", "add", "carol", "--plan", "basic"]);
    c.run(&["passwd", "carol", "--stdin"], "pw-carol");
    let app = c.ok(&[
        "app-password",
        "add",
        "carol",
        "--label",
        "printer",
        "--restricted",
    ]);
    c.ok(&["service", "deny", "carol", "imap"]);
    let show: serde_json::Value =
        serde_json::from_str(&c.ok(&["user", "show", "carol", "--json"])).unwrap();
    assert_eq!(show["plan"], "basic");
    assert_eq!(show["overrides"], serde_json::json!([["imap", false]]));
    c.run(
        &["verify", "carol", "--service", "imap", "--ip", "192.0.2.1"],
        "pw-carol",
    );
    c.run(&["verify", "carol", "--service", "smtp"], app.trim());
    let log: serde_json::Value =
        serde_json::from_str(&c.ok(&["log", "carol", "--json", "--since", "1h"])).unwrap();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["reason"], "not-allowed");
    assert_eq!(log[0]["client_addr"], "192.0.2.1");
    assert_eq!(log[1]["outcome"], "accepted");
    // explain: the master password is stopped by the override, the app password by
    // its restriction; on smtp both can log in.
    let imap = c.run(&["explain", "carol", "--service", "imap"], "");
    assert_eq!(imap.status.code(), Some(1));
    let text = String::from_utf8_lossy(&imap.stdout);
    assert!(
        text.contains("master password: cannot: account override denies imap"),
        "{text}"
    );
    assert!(text.contains("app password 1 (printer): cannot:"), "{text}");
    let smtp: serde_json::Value =
        serde_json::from_str(&c.ok(&["explain", "carol", "--service", "smtp", "--json"])).unwrap();
    assert!(
        smtp["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["allowed"] == true),
        "{smtp}"
    );
}

#[test]
fn totp_through_the_cli_with_oathtool() {
    let c = Cli::new();
    c.ok(&["user", "add", "dan"]);
    c.run(&["passwd", "dan", "--stdin"], "pw-dan");
    c.ok(&[
        "totp",
        "enable",
        "dan",
        "--secret",
        "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
    ]);
    let code = oathtool("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    assert_eq!(c.code(&["verify", "dan", "--service", "imap"], "pw-dan"), 1);
    assert_eq!(
        c.code(
            &["verify", "dan", "--service", "imap"],
            &format!("pw-dan{code}")
        ),
        0
    );
    assert_eq!(
        c.code(
            &["verify", "dan", "--service", "imap"],
            &format!("pw-dan{code}")
        ),
        1
    );
    c.ok(&["totp", "disable", "dan"]);
    assert_eq!(c.code(&["verify", "dan", "--service", "imap"], "pw-dan"), 0);
}

#[test]
fn one_time_code_race_between_4_processes() {
    let c = Cli::new();
    c.ok(&["user", "add", "eve"]);
    c.run(&["passwd", "eve", "--stdin"], "pw-eve");
    let code = c.ok(&["codes", "generate", "eve", "--count", "1"]);
    let password = format!("pw-eve{}", code.trim());
    let children: Vec<_> = (0..4)
        .map(|_| {
            let mut ch = Command::new(BIN)
                .arg("--config")
                .arg(&c.conf)
                .args(["verify", "eve", "--service", "imap"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            ch.stdin
                .take()
                .unwrap()
                .write_all(password.as_bytes())
                .unwrap();
            ch
        })
        .collect();
    let codes: Vec<i32> = children
        .into_iter()
        .map(|ch| ch.wait_with_output().unwrap().status.code().unwrap())
        .collect();
    assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|&c| c == 0 || c == 1), "{codes:?}");
}

#[test]
fn read_only_database_is_unavailable() {
    let c = Cli::new();
    c.ok(&["user", "add", "fay"]);
    c.run(&["passwd", "fay", "--stdin"], "pw-fay");
    let dir = c.db.parent().unwrap().to_path_buf();
    // Root ignores file modes, so make the directory a read-only bind mount in a
    // private mount namespace; as another user, a 0400 file does it.
    let is_root = unsafe_free_is_root();
    let verify = format!(
        "printf wrong | {BIN} --config {} verify fay --service imap; echo rc=$?",
        c.conf.display()
    );
    let script = if is_root {
        format!(
            "mount --bind {d} {d} && mount -o remount,ro,bind {d} && {verify}",
            d = dir.display()
        )
    } else {
        std::fs::set_permissions(&c.db, std::fs::Permissions::from_mode(0o400)).unwrap();
        verify.clone()
    };
    let mut cmd = if is_root {
        let mut k = Command::new("unshare");
        k.args(["-m", "sh", "-c", &script]);
        k
    } else {
        let mut k = Command::new("sh");
        k.args(["-c", &script]);
        k
    };
    let o = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("rc=3"),
        "read-only database must be unavailable: {text} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(Path::new(&c.db).exists());
}

fn unsafe_free_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
/// `saslgate alias`, `saslgate block` and `verify --tls/--plain`, with
/// their errors and exit codes.
#[test]
fn aliases_blocks_and_tls_required_through_the_cli() {
    let c = Cli::new();
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(&c.conf)
        .unwrap();
    writeln!(conf, "tls_required = [\"imap\"]").unwrap();
    for name in ["alice@example.org", "bob"] {
        c.ok(&["user", "add", name]);
        c.run(&["passwd", name, "--stdin"], &format!("pw-{name}"));
    }
    let verify = |args: &[&str], pw: &str| -> (i32, String) {
        let mut all = vec!["--json", "verify"];
        all.extend_from_slice(args);
        let o = c.run(&all, pw);
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };

    // Aliases: added (normalised), listed, shown, logged in as the account.
    let o = c.run(&["alias", "add", "alice@example.org", "Al"], "");
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("al now logs in as alice@example.org"));
    c.ok(&["alias", "add", "alice@example.org", "asmith"]);
    let list = c.ok(&["alias", "list"]);
    assert!(
        list.contains("al ") && list.contains("asmith") && list.contains("-> alice@example.org")
    );
    assert_eq!(c.ok(&["alias", "list", "bob"]), "");
    let json: serde_json::Value =
        serde_json::from_str(&c.ok(&["--json", "alias", "list", "alice@example.org"])).unwrap();
    assert_eq!(json[0]["alias"], "al");
    assert_eq!(json[0]["account"], "alice@example.org");
    assert!(c
        .ok(&["user", "show", "alice@example.org"])
        .contains("aliases:        al asmith"));
    let (code, out) = verify(&["al", "--service", "smtp"], "pw-alice@example.org");
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["account"], "alice@example.org");
    // Errors: shadowing both ways and duplicates (1), bad names (2), unknown (1).
    let o = c.run(&["alias", "add", "alice@example.org", "bob"], "");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("account's name"));
    let o = c.run(&["user", "add", "asmith"], "");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("alias remove asmith"));
    assert_eq!(c.code(&["alias", "add", "bob", "al"], ""), 1);
    assert_eq!(c.code(&["alias", "add", "nobody", "x"], ""), 1);
    assert_eq!(c.code(&["alias", "add", "bob", "a b"], ""), 2);
    assert_eq!(c.code(&["alias", "list", "nobody"], ""), 1);
    assert_eq!(c.code(&["alias", "remove", "nothing"], ""), 1);
    c.ok(&["alias", "remove", "al"]);
    assert_eq!(
        verify(&["al", "--service", "smtp"], "pw-alice@example.org").0,
        1
    );

    // Blocks: stored as the network, listed with the note, refused, lifted.
    let o = c.run(&["block", "add", "192.0.2.77/24", "--note", "scanner"], "");
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("blocked 192.0.2.0/24"));
    c.ok(&["block", "add", "2001:db8::1"]);
    let list = c.ok(&["block", "list"]);
    assert!(
        list.contains("192.0.2.0/24") && list.contains("scanner"),
        "{list}"
    );
    assert!(list.contains("2001:db8::1/128"), "{list}");
    assert_eq!(c.code(&["block", "add", "192.0.2.1/24"], ""), 1);
    assert_eq!(c.code(&["block", "add", "192.0.2.0/40"], ""), 2);
    assert_eq!(c.code(&["block", "add", "mail.example.org"], ""), 2);
    let (code, out) = verify(&["bob", "--service", "smtp", "--ip", "192.0.2.5"], "pw-bob");
    assert_eq!(code, 1);
    assert!(
        out.contains("\"reason\": \"blocked\"") && out.contains("access denied"),
        "{out}"
    );
    assert_eq!(
        verify(&["bob", "--service", "smtp", "--ip", "192.0.3.5"], "pw-bob").0,
        0
    );
    c.ok(&["block", "remove", "192.0.2.0/24"]);
    assert_eq!(c.code(&["block", "remove", "192.0.2.0/24"], ""), 1);
    assert_eq!(
        verify(&["bob", "--service", "smtp", "--ip", "192.0.2.5"], "pw-bob").0,
        0
    );

    // tls_required = ["imap"]: --plain refused, --tls and unknown accepted.
    let (code, out) = verify(&["bob", "--service", "imaps", "--plain"], "pw-bob");
    assert_eq!(code, 1);
    assert!(
        out.contains("tls-required") && out.contains("encryption required"),
        "{out}"
    );
    assert_eq!(
        verify(&["bob", "--service", "imap", "--tls"], "pw-bob").0,
        0
    );
    assert_eq!(verify(&["bob", "--service", "imap"], "pw-bob").0, 0);
    assert_eq!(
        verify(&["bob", "--service", "smtp", "--plain"], "pw-bob").0,
        0
    );
    assert_eq!(
        c.code(
            &["verify", "bob", "--service", "imap", "--tls", "--plain"],
            "pw-bob"
        ),
        2
    );
}

/// A service name the site does not know is a typo: refused with exit 2 and a
/// message naming the known ones, where an operator grants or limits a service.
/// The plans' services, the targets of `service_aliases` (an alias is
/// accepted as its target) and `restricted_services` are known; `*` too where a
/// list is given.
#[test]
fn unknown_service_names_are_refused_with_the_known_ones() {
    let c = Cli::new();
    c.ok(&["plan", "set", "mail", "--services", "imap,smtp"]);
    c.ok(&["user", "add", "bob", "--plan", "mail"]);
    for args in [
        &["service", "allow", "bob", "bogus"][..],
        &["service", "deny", "bob", "imapp"][..],
        &[
            "app-password",
            "add",
            "bob",
            "--label",
            "x",
            "--services",
            "imap,bogus",
        ][..],
        &["explain", "bob", "--service", "bogus"][..],
    ] {
        let o = c.run(args, "");
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("unknown service"), "{args:?}: {err}");
        // the plan's services and the built-in aliases' targets
        assert!(err.contains("imap, pop, sieve, smtp"), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}: nothing created");
    }
    assert!(!c.ok(&["app-password", "list", "bob"]).contains(" x "));
    // Known names, an alias of one, and a plan's new service are accepted.
    c.ok(&["service", "deny", "bob", "imap"]);
    c.ok(&["service", "allow", "bob", "pop3"]);
    c.ok(&["plan", "set", "sieve-only", "--services", "sieve"]);
    c.ok(&["service", "allow", "bob", "sieve"]);
    c.ok(&["service", "clear", "bob", "sieve"]);
    c.ok(&[
        "app-password",
        "add",
        "bob",
        "--label",
        "y",
        "--services",
        "smtp",
    ]);
}

/// Every subcommand says what it does in `--help` (no bare names).
#[test]
fn every_subcommand_has_a_help_line() {
    let c = Cli::new();
    let mut bare = Vec::new();
    let groups = [
        "user",
        "app-password",
        "totp",
        "codes",
        "backend",
        "service",
        "plan",
        "alias",
        "block",
    ];
    for group in std::iter::once("").chain(groups) {
        let args: Vec<&str> = [group, "--help"]
            .into_iter()
            .filter(|a| !a.is_empty())
            .collect();
        let text = c.ok(&args);
        let mut in_commands = false;
        for line in text.lines() {
            if line.starts_with("Commands:") {
                in_commands = true;
                continue;
            }
            if in_commands {
                if line.trim().is_empty() {
                    break;
                }
                let mut words = line.split_whitespace();
                let cmd = words.next().unwrap_or_default();
                if words.next().is_none() {
                    bare.push(format!("{group} {cmd}"));
                }
            }
        }
    }
    assert!(bare.is_empty(), "subcommands without a help line: {bare:?}");
}

/// `db_group` is looked up through NSS (getgrnam), not by reading /etc/group,
/// so groups from sssd, LDAP or systemd work. libnss_wrapper (Debian's
/// `libnss-wrapper`) stands in for such a source: its group exists only for
/// getgrnam. Needs root (to give the file to another group).
#[test]
fn db_group_is_looked_up_through_nss() {
    const WRAPPER: &str = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so";
    if !unsafe_free_is_root() {
        println!("SKIP db_group_is_looked_up_through_nss: needs root");
        return;
    }
    assert!(
        Path::new(WRAPPER).exists(),
        "{WRAPPER} is missing: apt-get install libnss-wrapper"
    );
    let dir = tempfile::tempdir().unwrap();
    let group = dir.path().join("group");
    std::fs::write(&group, "root:x:0:\nsaslgate-nss-only:x:48123:\n").unwrap();
    let db = dir.path().join("g.db");
    let conf = dir.path().join("saslgate.conf");
    std::fs::write(
        &conf,
        format!("db = {db:?}\ndb_group = \"saslgate-nss-only\"\n"),
    )
    .unwrap();
    let o = Command::new(BIN)
        .args(["--config", conf.to_str().unwrap(), "init"])
        .env("LD_PRELOAD", WRAPPER)
        .env("NSS_WRAPPER_PASSWD", "/etc/passwd")
        .env("NSS_WRAPPER_GROUP", &group)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&db).unwrap();
    assert_eq!(meta.gid(), 48123);
    assert_eq!(meta.mode() & 0o777, 0o660);
}
