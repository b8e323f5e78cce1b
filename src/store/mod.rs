//! The SQLite database: opening and creating it (permissions, WAL, busy timeout),
//! versioned migrations, and the queries the engine and the CLI run.
//!
//! - [`schema`]: the migrations.
//! - [`admin`]: operator changes (each bumps the generation counter).
//! - [`login`]: the reads and writes of the login path.

pub mod admin;
pub mod login;
pub mod schema;

use crate::config::Config;
use crate::error::{Error, Result};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::Path;

/// An open saslgate database.
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) config: Config,
    /// Key of the keyed hashes (app passwords, codes, throttle fingerprints).
    pub(crate) hmac_key: Vec<u8>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("db", &self.config.db)
            .finish()
    }
}

fn storage<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Storage(format!("{}: {e}", path.display()))
}

impl Store {
    /// Opens an existing database read-write. A missing file, a file that is not a
    /// saslgate database, or one written by a newer saslgate is an error.
    pub fn open(config: &Config) -> Result<Store> {
        let path = config.db.as_path();
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Storage(format!(
                    "{}: no such database (create it with `saslgate init`)",
                    path.display()
                )))
            }
            Err(e) => return Err(Error::Storage(format!("{}: {e}", path.display()))),
            Ok(m) if !m.is_file() => {
                return Err(Error::Storage(format!(
                    "{}: not a regular file",
                    path.display()
                )))
            }
            Ok(_) => {}
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags).map_err(storage(path))?;
        Store::setup(conn, config, false)
    }

    /// Creates a new database (mode 0600, or 0660 with `db_group`) and migrates it.
    /// Refuses to touch an existing file.
    pub fn create(config: &Config) -> Result<Store> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = config.db.as_path();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(Error::Storage(format!(
                    "{}: directory does not exist",
                    dir.display()
                )));
            }
        }
        let mode = if config.db_group.is_empty() {
            0o600
        } else {
            0o660
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    Error::Exists(format!("{} (database already initialised)", path.display()))
                }
                _ => Error::Storage(format!("{}: {e}", path.display())),
            })?;
        if !config.db_group.is_empty() {
            let gid = group_id(&config.db_group)?;
            std::os::unix::fs::fchown(&file, None, Some(gid)).map_err(storage(path))?;
            // fchown may clear bits on some systems; set the mode explicitly.
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(storage(path))?;
        }
        drop(file);
        let result = (|| {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(storage(path))?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(storage(path))?;
            Store::setup(conn, config, true)
        })();
        if result.is_err() {
            // Do not leave a half-made database behind.
            let _ = std::fs::remove_file(path);
        }
        result
    }

    fn setup(mut conn: Connection, config: &Config, creating: bool) -> Result<Store> {
        let path = config.db.as_path();
        conn.busy_timeout(config.busy_timeout)
            .map_err(storage(path))?;
        // WAL: readers never block the writer. NORMAL sync is durable against
        // process crashes (what matters for one-time codes) and fast.
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")
            .map_err(storage(path))?;
        schema::migrate(&mut conn, creating).map_err(|e| match e {
            Error::Storage(m) => Error::Storage(format!("{}: {m}", path.display())),
            other => other,
        })?;
        let hmac_key: Vec<u8> = conn
            .query_row("SELECT value FROM meta WHERE key = 'hmac_key'", [], |r| {
                r.get(0)
            })
            .map_err(storage(path))?;
        Ok(Store {
            conn,
            config: config.clone(),
            hmac_key,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The generation: a new (random) value after every admin change.
    pub fn generation(&self) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'generation'")?
            .query_row([], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    /// Starts a read transaction (a no-op inside one).
    pub(crate) fn begin_read(&self) -> Result<()> {
        if self.conn.is_autocommit() {
            // Cached like the lookups: execute_batch would re-parse it every time.
            self.conn.prepare_cached("BEGIN DEFERRED")?.execute([])?;
        }
        Ok(())
    }

    /// Ends a read transaction started by [`Store::begin_read`], if any. Every write
    /// calls this first: a deferred transaction that later writes could fail with
    /// SQLITE_BUSY_SNAPSHOT instead of waiting for the lock.
    pub(crate) fn end_read(&self) -> Result<()> {
        if !self.conn.is_autocommit() {
            self.conn.prepare_cached("COMMIT")?.execute([])?;
        }
        Ok(())
    }

    /// Runs `f` in an IMMEDIATE transaction (takes the write lock up front, so two
    /// writers never deadlock on lock upgrade).
    pub(crate) fn write<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        self.end_read()?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

/// Copies the database to `dest` with `VACUUM INTO` (a consistent snapshot taken
/// while others keep using it). Opens it read-only and never migrates it, so the
/// package can back up a database before a newer saslgate migrates it.
pub fn backup(config: &Config, dest: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let src = config.db.as_path();
    if !src.is_file() {
        return Err(Error::Storage(format!(
            "{}: no such database",
            src.display()
        )));
    }
    // Create the destination first so it is never readable by others, even briefly.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(|e| Error::Io(format!("{}: {e}", dest.display())))?;
    let result = (|| {
        let conn = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(storage(src))?;
        conn.busy_timeout(config.busy_timeout)
            .map_err(storage(src))?;
        // VACUUM INTO wants an empty or missing file; ours is empty.
        let target = dest
            .to_str()
            .ok_or_else(|| Error::Usage("destination path is not UTF-8".into()))?;
        conn.execute("VACUUM INTO ?1", [target])
            .map_err(storage(src))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}

/// Looks a group name up (for `db_group`).
fn group_id(name: &str) -> Result<u32> {
    // /etc/group is the source the Debian package writes to (addgroup --system).
    let text = std::fs::read_to_string("/etc/group")?;
    for line in text.lines() {
        let mut f = line.split(':');
        if f.next() == Some(name) {
            if let Some(gid) = f.nth(1).and_then(|g| g.parse().ok()) {
                return Ok(gid);
            }
        }
    }
    Err(Error::Config(format!("db_group: no group named {name:?}")))
}
