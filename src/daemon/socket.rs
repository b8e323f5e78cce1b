//! The listening socket, its directory, the pid file and systemd readiness.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Resolves a group name (or number) to a gid (through NSS).
pub fn lookup_group(name: &str) -> Result<u32, String> {
    crate::host::group_id(name)
        .map_err(|e| format!("cannot look up group {name:?}: {e}"))?
        .ok_or_else(|| format!("no group named {name:?}"))
}

/// Where the socket came from decides who removes it at exit.
pub struct Bound {
    pub listener: UnixListener,
    /// `Some(path)`: we created it and unlink it at exit; `None`: systemd's.
    pub owned_path: Option<PathBuf>,
}

/// Creates DIR (mode 0710, group `gid`) if needed, refuses to start when a live
/// daemon answers on DIR/mux, replaces a stale socket, binds a new one with mode
/// 0660 and group `gid`, atomically (bound under a temporary name, then renamed).
/// Root refuses a DIR that another user can change (`crate::rootfs`): the
/// socket's mode and group are set by name.
pub fn bind(dir: &Path, gid: Option<u32>) -> Result<Bound, String> {
    if crate::rootfs::is_root() {
        let parent = crate::rootfs::parent_dir(dir);
        let check = if dir.exists() { dir } else { parent.as_path() };
        match crate::rootfs::not_root_only(check) {
            Ok(None) => {}
            Ok(Some(why)) => {
                return Err(format!(
                    "socket directory {}: {why}; as root, saslgated makes its socket only \
                     in a directory no other user can change (or run it as the saslgate \
                     user, as the packaged unit does)",
                    dir.display()
                ))
            }
            Err(e) => return Err(format!("socket directory {}: {e}", dir.display())),
        }
    }
    if !dir.exists() {
        fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create socket directory {}: {e}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o710))
            .map_err(|e| format!("cannot chmod {}: {e}", dir.display()))?;
    }
    if let Some(g) = gid {
        std::os::unix::fs::chown(dir, None, Some(g))
            .map_err(|e| format!("cannot give {} to group {g}: {e}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o710))
            .map_err(|e| format!("cannot chmod {}: {e}", dir.display()))?;
    }
    let path = dir.join("mux");
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(&path) {
            Ok(_) => {
                return Err(format!(
                    "another daemon is answering on {} (pid file {}); stop it first or use another -m DIR",
                    path.display(),
                    dir.join("saslauthd.pid").display()
                ))
            }
            Err(_) => {
                fs::remove_file(&path).map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
            }
        },
        Ok(_) => {
            return Err(format!("{} exists and is not a socket; refusing to replace it", path.display()));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
    }
    let tmp = dir.join(format!(".mux.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).map_err(|e| format!("cannot bind {}: {e}", tmp.display()))?;
    let finish = || -> io::Result<()> {
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o660))?;
        if let Some(g) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(g))?;
        }
        fs::rename(&tmp, &path)
    };
    if let Err(e) = finish() {
        let _ = fs::remove_file(&tmp);
        return Err(format!("cannot set up {}: {e}", path.display()));
    }
    Ok(Bound {
        listener,
        owned_path: Some(path),
    })
}

/// Writes the pid file under a temporary name, then renames it into place. The
/// temporary file is made here (`O_EXCL|O_NOFOLLOW`), never opened through a
/// link another user put in the directory (issue 23, finding 1).
pub fn write_pid_file(path: &Path) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("pid.tmp");
    // A name left behind (a crash): unlinking never follows a link.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(&tmp)?;
    let written = file
        .set_permissions(fs::Permissions::from_mode(0o644))
        .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Sends `state` to systemd's NOTIFY_SOCKET, when set (no-op otherwise).
pub fn sd_notify(state: &str) {
    let Some(addr) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(addr.as_os_str());
    let _ = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        match std::os::unix::net::SocketAddr::from_abstract_name(name) {
            Ok(a) => sock.send_to_addr(state.as_bytes(), &a),
            Err(e) => Err(e),
        }
    } else {
        sock.send_to(state.as_bytes(), Path::new(&addr))
    };
}
