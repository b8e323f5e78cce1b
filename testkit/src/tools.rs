//! System tools the tests drive and the binaries this workspace builds.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root (the `saslgate` package).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives inside the repository")
        .to_path_buf()
}

/// A binary of the `saslgate` package (`saslgate`, `saslgated`,
/// `saslgate-load`), built by the same `cargo test`/`cargo bench` run: it sits
/// beside the test executable's `deps/` directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe dir");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("target profile dir")
    } else {
        dir
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built (run the tests through cargo, which builds it)",
        p.display()
    );
    p
}

/// The path of a program from a Debian package; a missing one fails the test
/// (never a silent skip).
pub fn need_tool(name: &str, package: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!("FAIL (not skipped): `{name}` is missing; install the Debian package {package}")
    })
}

/// The path of a program, if installed.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ]
    .iter()
    .map(|dir| Path::new(dir).join(name))
    .find(|p| p.exists())
}

/// Compiles `source` (relative to the repository root) into the program `out`
/// against the system libsasl2, warnings as errors. The compiler is the one the
/// `cc` crate picks for this target (`CC`, `CFLAGS` and friends apply).
pub fn compile_sasl_program(source: &str, out: &Path) -> PathBuf {
    assert!(
        Path::new("/usr/include/sasl/sasl.h").exists(),
        "FAIL (not skipped): /usr/include/sasl/sasl.h missing; install libsasl2-dev"
    );
    let target = env!("TESTKIT_TARGET");
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .target(target)
        .host(target)
        .opt_level(1)
        .try_get_compiler()
        .unwrap_or_else(|e| {
            panic!("FAIL (not skipped): no C compiler ({e}); install build-essential")
        });
    let src = repo_root().join(source);
    let result = compiler
        .to_command()
        .args(["-Wall", "-Wextra", "-Werror", "-o"])
        .arg(out)
        .arg(&src)
        .arg("-lsasl2")
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "cc {source}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    out.to_path_buf()
}

/// sqlite3 CLI query (package sqlite3); panics when it fails.
pub fn sql(db: &Path, query: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(query)
        .output()
        .expect("sqlite3 (Debian package sqlite3) is needed");
    assert!(
        out.status.success(),
        "sqlite3 {query:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn is_root() -> bool {
    // /proc/self belongs to the process's effective user (no unsafe needed).
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Says loudly that a test did not run; `scripts/test-all.sh` counts the line.
pub fn skip(what: &str) {
    eprintln!("==================================================================");
    eprintln!("SKIP: {what}");
    eprintln!("==================================================================");
}

/// The plugin (`libsaslgate.so`) as the sources are now. `cargo test` builds
/// the library for the tests as an rlib only, so the shared object is built
/// here (`cargo build --lib`, the test's profile and target directory): a
/// test never loads a stale one. Once per test process.
pub fn fresh_plugin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("current_exe");
            // target/<profile>/deps/<test>: the profile's directory.
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target profile dir")
                .to_path_buf();
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut c = Command::new(cargo);
            c.args(["build", "--lib", "--quiet"])
                .current_dir(repo_root());
            if dir.ends_with("release") {
                c.arg("--release");
            }
            if let Some(target) = dir.parent() {
                c.env("CARGO_TARGET_DIR", target);
            }
            let out = c.output().expect("run cargo build --lib");
            assert!(
                out.status.success(),
                "cargo build --lib: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            dir.join("libsaslgate.so")
        })
        .clone()
}
