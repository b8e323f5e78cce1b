//! System tools the integration tests drive: finding a program of a Debian
//! package, and compiling the small C programs that call the real libsasl2.
//! Shared by tests/daemon.rs, tests/realm.rs and tests/wal_bound.rs (each
//! includes this file with `#[path]`; it depends on nothing else of `common`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The path of a program from a Debian package; a missing one fails the test
/// (never a silent skip).
pub fn need_tool(name: &str, package: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("FAIL (not skipped): `{name}` is missing; install the Debian package {package}");
}

/// Compiles `tests/NAME.c` (relative to the crate) into `out` against the
/// system libsasl2, warnings as errors.
pub fn compile_sasl_program(source: &str, out: &Path) -> PathBuf {
    let cc = need_tool("cc", "build-essential");
    assert!(
        Path::new("/usr/include/sasl/sasl.h").exists(),
        "FAIL (not skipped): /usr/include/sasl/sasl.h missing; install libsasl2-dev"
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(source);
    let result = Command::new(cc)
        .args(["-Wall", "-Wextra", "-Werror", "-O1", "-o"])
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
