//! Root opening a SQLite database in a directory other users can change
//! (issue 23, finding 1: the Debian package's /var/lib/saslgate is mode 2770,
//! group saslgate, and its postinst runs `saslgate init` and the migrations as
//! root).
//!
//! SQLite opens the -wal, -journal and -shm files with `O_NOFOLLOW` and gives
//! them to the database's owner with `fchown`, but it resolves links in the
//! database's own path. Root therefore opens such a database with
//! `SQLITE_OPEN_NOFOLLOW` (no link anywhere in the path), and refuses while the
//! database or one of those files is a link, not a regular file, has a second
//! name (a hard link) or belongs to neither the database's owner, root, nor the
//! database's group.

use crate::error::{Error, Result};
use rusqlite::OpenFlags;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The files SQLite keeps next to a database.
pub(crate) const SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// The flags root adds to open `db` (SQLITE_OPEN_NOFOLLOW when its directory
/// can be changed by a user other than root), after refusing the files listed
/// in the module's comment. Other users open as before: no flags, no check.
pub(crate) fn open_flags(db: &Path) -> Result<OpenFlags> {
    if !crate::rootfs::is_root() {
        return Ok(OpenFlags::empty());
    }
    let dir = crate::rootfs::parent_dir(db);
    let why = crate::rootfs::not_root_only(&dir)
        .map_err(|e| Error::Storage(format!("{}: {e}", dir.display())))?;
    match why {
        None => Ok(OpenFlags::empty()),
        Some(why) => {
            check_files(db, &why)?;
            Ok(OpenFlags::SQLITE_OPEN_NOFOLLOW)
        }
    }
}

fn check_files(db: &Path, why: &str) -> Result<()> {
    let refuse = |p: &Path, what: String| {
        Error::Storage(format!(
            "{}: {what}; root does not open the database while it is there, since \
             users other than root can change its directory ({why}): find out who \
             made it, then remove it",
            p.display()
        ))
    };
    let lstat = |p: &Path| match std::fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Storage(format!("{}: {e}", p.display()))),
    };
    let plain = |p: &Path, m: &std::fs::Metadata| {
        if m.file_type().is_symlink() {
            Err(refuse(p, "a symbolic link".into()))
        } else if !m.is_file() {
            Err(refuse(p, "not a regular file".into()))
        } else if m.nlink() != 1 {
            Err(refuse(
                p,
                format!("a file with {} names (hard links)", m.nlink()),
            ))
        } else {
            Ok(())
        }
    };
    // No database yet: `SqliteStore::create` makes it with O_EXCL.
    let Some(main) = lstat(db)? else {
        return Ok(());
    };
    plain(db, &main)?;
    for suffix in SIDE_FILES {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let p = Path::new(&name);
        let Some(m) = lstat(p)? else { continue };
        plain(p, &m)?;
        if m.uid() != 0 && m.uid() != main.uid() && m.gid() != main.gid() {
            return Err(refuse(
                p,
                format!(
                    "owned by uid {} and gid {}: neither root, the database's owner (uid {}) nor its group (gid {})",
                    m.uid(),
                    m.gid(),
                    main.uid(),
                    main.gid()
                ),
            ));
        }
    }
    Ok(())
}

/// Fails unless `path` still names the file `file` is open on (SQLite opens
/// by name what was created by descriptor).
pub(crate) fn same_file(file: &std::fs::File, path: &Path) -> Result<()> {
    let fd = file
        .metadata()
        .map_err(|e| Error::Storage(format!("{}: {e}", path.display())))?;
    let named = std::fs::symlink_metadata(path)
        .map_err(|e| Error::Storage(format!("{}: {e}", path.display())))?;
    if (fd.dev(), fd.ino()) != (named.dev(), named.ino()) {
        return Err(Error::Storage(format!(
            "{}: replaced by another file while it was being written; refusing it",
            path.display()
        )));
    }
    Ok(())
}
