//! Issue 23, finding 1 (root writes): what `saslgate` and `saslgated` write as
//! root in a directory another user can change. The Debian package's
//! /var/lib/saslgate is such a directory (2770, group saslgate) and its postinst
//! runs saslgate as root; here a temp directory owned by `nobody` stands for it,
//! and the links a member of the group would plant are planted before each run.
//! Every test failed on the code before its fix.
//!
//! Root only (they check what root does): run as another user they fail
//! loudly rather than pass without running.

use std::io::BufRead;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SASLGATE: &str = env!("CARGO_BIN_EXE_saslgate");
const SASLGATED: &str = env!("CARGO_BIN_EXE_saslgated");
const NOBODY: u32 = 65534;

fn require_root() {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    assert!(root, "these tests check what root does: run them as root");
}

/// A root-only temp dir holding: `shared/` (owned by nobody, mode 0770: what
/// a less trusted user can change) and `victims/` (root's own files).
struct Setup {
    _tmp: tempfile::TempDir,
    shared: PathBuf,
    victims: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        let victims = tmp.path().join("victims");
        std::fs::create_dir(&shared).unwrap();
        std::fs::create_dir(&victims).unwrap();
        std::os::unix::fs::chown(&shared, Some(NOBODY), None).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o770)).unwrap();
        Setup {
            _tmp: tmp,
            shared,
            victims,
        }
    }

    /// A configuration whose database is `db`.
    fn conf(&self, name: &str, db: &Path) -> PathBuf {
        let conf = self.victims.join(format!("{name}.conf"));
        std::fs::write(
            &conf,
            format!("db = \"{}\"\nbcrypt_cost = 4\n", db.display()),
        )
        .unwrap();
        conf
    }
}

fn saslgate(conf: &Path, args: &[&str]) -> Output {
    Command::new(SASLGATE)
        .arg("--config")
        .arg(conf)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Content, owner, group and mode of a file (what a write through a link changes).
fn state(p: &Path) -> (Vec<u8>, u32, u32, u32) {
    let m = std::fs::metadata(p).unwrap();
    (
        std::fs::read(p).unwrap(),
        m.uid(),
        m.gid(),
        m.mode() & 0o7777,
    )
}

/// The database name is a link, planted in the shared directory, to another
/// saslgate database of root's: root's admin commands must not reach it.
#[test]
fn root_never_opens_the_database_through_a_planted_link() {
    let s = Setup::new();
    let other = s.victims.join("other.db");
    ok(&saslgate(&s.conf("other", &other), &["init"]));
    let db = s.shared.join("saslgate.db");
    std::os::unix::fs::symlink(&other, &db).unwrap();
    let conf = s.conf("shared", &db);
    let out = saslgate(&conf, &["user", "add", "mallory"]);
    assert_eq!(out.status.code(), Some(3), "refused: {}", stderr(&out));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("find out who made it"),
        "{}",
        stderr(&out)
    );
    let list = ok(&saslgate(&s.conf("other2", &other), &["user", "list"]));
    assert!(
        !list.contains("mallory"),
        "written through the link: {list}"
    );
}

/// A -wal next to the database that is a second name of a root file (a hard
/// link), or a symbolic link: root refuses before SQLite writes the log into
/// it and gives it to the database's owner.
#[test]
fn root_refuses_planted_side_files() {
    let s = Setup::new();
    let db = s.shared.join("saslgate.db");
    let conf = s.conf("shared", &db);
    ok(&saslgate(&conf, &["init"]));
    let victim = s.victims.join("file");
    std::fs::write(&victim, "root's own file\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = state(&victim);
    let wal = s.shared.join("saslgate.db-wal");
    let _ = std::fs::remove_file(&wal);
    std::fs::hard_link(&victim, &wal).unwrap();
    let out = saslgate(&conf, &["user", "add", "mallory"]);
    assert_eq!(out.status.code(), Some(3), "refused: {}", stderr(&out));
    assert!(stderr(&out).contains("hard links"), "{}", stderr(&out));
    assert_eq!(
        state(&victim),
        before,
        "root file written through the hard link"
    );
    std::fs::remove_file(&wal).unwrap();
    for side in ["saslgate.db-wal", "saslgate.db-shm", "saslgate.db-journal"] {
        let _ = std::fs::remove_file(s.shared.join(side));
        std::os::unix::fs::symlink(&victim, s.shared.join(side)).unwrap();
        let out = saslgate(&conf, &["user", "list"]);
        assert_eq!(out.status.code(), Some(3), "{side}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("{side}: a symbolic link")),
            "{side}: {}",
            stderr(&out)
        );
        std::fs::remove_file(s.shared.join(side)).unwrap();
        assert_eq!(state(&victim), before, "{side}");
    }
    // Nothing planted: root uses the database as before.
    ok(&saslgate(&conf, &["user", "add", "alice"]));
}

/// `saslgate backup DEST` as root: only into a directory no other user can
/// change; the file is made 0600 and never through a link.
#[test]
fn root_backs_up_only_into_a_root_only_directory() {
    let s = Setup::new();
    let db = s.victims.join("saslgate.db");
    let conf = s.conf("db", &db);
    ok(&saslgate(&conf, &["init"]));
    ok(&saslgate(&conf, &["user", "add", "carol"]));
    let dest = s.shared.join("saslgate.db.bak");
    let out = saslgate(&conf, &["backup", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no other user can change"),
        "{}",
        stderr(&out)
    );
    assert!(std::fs::symlink_metadata(&dest).is_err(), "nothing written");
    // A root-only directory: a planted name is refused, a new one made 0600.
    let backups = s.victims.join("backups");
    std::fs::create_dir(&backups).unwrap();
    std::fs::set_permissions(&backups, std::fs::Permissions::from_mode(0o700)).unwrap();
    let victim = s.victims.join("file");
    std::fs::write(&victim, "root's own file\n").unwrap();
    let before = state(&victim);
    std::os::unix::fs::symlink(&victim, backups.join("link.db")).unwrap();
    let out = saslgate(
        &conf,
        &["backup", backups.join("link.db").to_str().unwrap()],
    );
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(state(&victim), before);
    let good = backups.join("good.db");
    ok(&saslgate(&conf, &["backup", good.to_str().unwrap()]));
    let m = std::fs::symlink_metadata(&good).unwrap();
    assert!(m.is_file());
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600));
    assert!(ok(&saslgate(&s.conf("good", &good), &["user", "list"])).contains("carol"));
}

/// saslgated run by root makes its socket, by name, only in a directory no
/// other user can change.
#[test]
fn root_daemon_refuses_a_socket_directory_others_can_change() {
    let s = Setup::new();
    let db = s.victims.join("saslgate.db");
    let conf = s.conf("db", &db);
    ok(&saslgate(&conf, &["init"]));
    let mut child = Command::new(SASLGATED)
        .args(["-a", "saslgate", "-d", "-m"])
        .arg(&s.shared)
        .arg("--config")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its first line says whether it started.
    let mut first = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    if !first.contains("cannot start") {
        // It started (the failure): stop it.
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    assert!(
        first.contains("socket directory") && first.contains("no other user can change"),
        "{first}"
    );
    assert_eq!(status.code(), Some(1), "{first}");
    assert!(std::fs::symlink_metadata(s.shared.join("mux")).is_err());
}

/// The daemon's pid file: a link planted under its temporary name is replaced,
/// never written through (nor its target's mode changed).
#[test]
fn pid_file_never_written_through_a_planted_link() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, "keep\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = state(&target);
    let pid = dir.path().join("saslauthd.pid");
    std::os::unix::fs::symlink(&target, dir.path().join("saslauthd.pid.tmp")).unwrap();
    saslgate::daemon::socket::write_pid_file(&pid).unwrap();
    assert_eq!(state(&target), before, "target unchanged");
    assert_eq!(
        std::fs::read_to_string(&pid).unwrap(),
        format!("{}\n", std::process::id())
    );
    assert!(!std::fs::symlink_metadata(&pid)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::symlink_metadata(dir.path().join("saslauthd.pid.tmp")).is_err());
}

/// What root counts as a directory only root can change.
#[test]
fn root_only_directories() {
    use saslgate::rootfs::not_root_only;
    let s = Setup::new();
    // /tmp (1777): anyone adds names to it; below it, root's 0700 dir is root's.
    assert!(not_root_only(Path::new("/tmp"))
        .unwrap()
        .is_some_and(|w| w.contains("/tmp")));
    assert_eq!(not_root_only(&s.victims).unwrap(), None);
    let why = not_root_only(&s.shared).unwrap().unwrap();
    assert!(why.contains("belongs to uid 65534"), "{why}");
    // Owned by root, group-writable; and a root dir under it (its parent can be renamed).
    std::os::unix::fs::chown(&s.shared, Some(0), None).unwrap();
    let why = not_root_only(&s.shared).unwrap().unwrap();
    assert!(why.contains("writable by its group"), "{why}");
    let below = s.shared.join("below");
    std::fs::create_dir(&below).unwrap();
    assert!(not_root_only(&below).unwrap().is_some());
    // A link to a root-only directory from a shared one is judged by both paths.
    let link = s.shared.join("link");
    std::os::unix::fs::symlink(&s.victims, &link).unwrap();
    assert!(not_root_only(&link).unwrap().is_some());
}
