//! Where root may write by name: only in a directory that no user other than
//! root can change (issue 23, finding 1).
//!
//! A user who can write a directory can put a symbolic or hard link under any
//! name in it, or swap one name for another between root's check and root's
//! open. What root writes there by name may then land in any file of the
//! system. The database directory of the Debian package (/var/lib/saslgate,
//! mode 2770, group saslgate) is such a directory for root; so is /tmp.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Whether this process runs with root's effective user id.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The directory a file path names its entry in (`.` for a bare name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Why a user other than root could change the entries of `dir`, if one could:
/// `dir` or a directory above it (as written and with its links resolved)
/// belongs to another user, or its group or others may write it. A directory
/// above may be writable by all if it has the sticky bit (like /tmp): the
/// names root made in it stay root's. `Ok(None)`: only root can.
pub fn not_root_only(dir: &Path) -> std::io::Result<Option<String>> {
    let written = std::path::absolute(dir)?;
    let resolved = std::fs::canonicalize(dir)?;
    for start in [&resolved, &written] {
        for (i, d) in start.ancestors().enumerate() {
            let m = std::fs::metadata(d)?;
            let mode = m.mode() & 0o7777;
            if !m.is_dir() {
                return Ok(Some(format!("{} is not a directory", d.display())));
            }
            if m.uid() != 0 {
                return Ok(Some(format!("{} belongs to uid {}", d.display(), m.uid())));
            }
            let sticky_above = i > 0 && mode & 0o1000 != 0;
            if mode & 0o022 != 0 && !sticky_above {
                return Ok(Some(format!(
                    "{} is writable by its group or by all (mode {mode:04o})",
                    d.display()
                )));
            }
        }
    }
    Ok(None)
}
