//! The SQLite backend: opening and creating the file (permissions, WAL, busy
//! timeout), the write-ahead log's bound and background checkpoints,
//! backup and restore; migrations in [`schema`]; its executor and what only
//! it has (change stamps, the fast path's read, the multi-row audit insert)
//! in `exec`, `fast_read` and `audit`.

mod audit;
mod exec;
mod fast_read;
mod guard;
pub mod schema;
#[allow(unsafe_code)] // SQLite's mapping of the WAL-index: every block has a SAFETY comment
mod wal_index;

pub(crate) use audit::insert_audit;
pub use wal_index::ChangeStamp;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::{LoginStore, QuietCommit};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use wal_index::WalIndex;

/// The write-ahead log's size bound, in bytes (see `SqliteStore::bound_wal`). The
/// log can pass it by what is written between two checkpoint attempts.
pub const WAL_LIMIT_BYTES: u64 = 4 << 20;
/// After a checkpoint that could not restart the log (a long reader), the
/// process tries again only after this long.
const WAL_RETRY_MS: u64 = 1000;
/// How long a checkpoint waits for the writer lock and for readers.
const WAL_CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_millis(50);
/// Frames in the log at which a connection in background-checkpoint mode
/// copies them into the database (`SqliteStore::checkpoint_if_due`). Below SQLite's
/// automatic 1,000, so that the log restarts before it reaches
/// [`WAL_LIMIT_BYTES`] and a truncating checkpoint is seldom needed.
const BACKGROUND_CHECKPOINT_FRAMES: u32 = 500;

/// An open saslgate database.
pub struct SqliteStore {
    pub(crate) conn: Connection,
    pub(crate) config: Config,
    /// Key of the keyed hashes (app passwords, codes, throttle fingerprints).
    pub(crate) hmac_key: Vec<u8>,
    /// `hmac_key` absorbed once (the login path's keyed hashes).
    pub(crate) keyed: crate::crypto::KeyedHasher,
    /// The connection's WAL-index, found at the first `change_stamp`.
    pub(crate) wal_index: std::cell::OnceCell<Option<wal_index::WalIndex>>,
    /// The database file (device, inode) as this connection opened it: part
    /// of every change stamp (`wal_index`).
    pub(crate) file_id: Option<(u64, u64)>,
    /// Checkpoints are left to another thread (`set_background_checkpoints`):
    /// no automatic checkpoint and no log bound after this connection's commits.
    pub(crate) background_checkpoints: bool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("db", &self.config.db)
            .finish()
    }
}

fn storage<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Storage(format!("{}: {e}", path.display()))
}

impl SqliteStore {
    /// Opens an existing database read-write. A missing file, a file that is not a
    /// saslgate database, or one written by a newer saslgate is an error.
    pub fn open(config: &Config) -> Result<SqliteStore> {
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
            | OpenFlags::SQLITE_OPEN_URI
            | guard::open_flags(path)?;
        let conn = Connection::open_with_flags(path, flags).map_err(storage(path))?;
        SqliteStore::setup(conn, config, false)
    }

    /// Creates a new database (mode 0600, or 0660 with `db_group`) and migrates it.
    /// Refuses to touch an existing file, and never follows a link (`O_EXCL`,
    /// `O_NOFOLLOW`; root: see `guard`).
    pub fn create(config: &Config) -> Result<SqliteStore> {
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
            .custom_flags(libc::O_NOFOLLOW)
            .mode(mode)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists
                    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink()) =>
                {
                    Error::Storage(format!(
                        "{}: a symbolic link is at that name; not creating a database through it",
                        path.display()
                    ))
                }
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
        let result = (|| {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | guard::open_flags(path)?,
            )
            .map_err(storage(path))?;
            // SQLite opened the name again: it must still be the file made above.
            guard::same_file(&file, path)?;
            drop(file);
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(storage(path))?;
            SqliteStore::setup(conn, config, true)
        })();
        if result.is_err() {
            // Do not leave a half-made database behind.
            let _ = std::fs::remove_file(path);
        }
        result
    }

    fn setup(mut conn: Connection, config: &Config, creating: bool) -> Result<SqliteStore> {
        let path = config.db.as_path();
        let file_id = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
        };
        conn.busy_timeout(config.busy_timeout)
            .map_err(storage(path))?;
        // Room for every statement of the login path and the flusher (the
        // default 16 would re-prepare the least recently used ones).
        conn.set_prepared_statement_cache_capacity(64);
        // WAL: readers never block the writer. NORMAL sync is durable against
        // process crashes (what matters for one-time codes) and fast.
        // journal_size_limit: a log restarted after a checkpoint is cut back to
        // this size (else the file keeps its high-water mark); see bound_wal.
        conn.execute_batch(&format!(
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;
             PRAGMA journal_size_limit = {WAL_LIMIT_BYTES};"
        ))
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
        Ok(SqliteStore {
            conn,
            config: config.clone(),
            keyed: crate::crypto::KeyedHasher::new(&hmac_key),
            hmac_key,
            wal_index: std::cell::OnceCell::new(),
            file_id,
            background_checkpoints: false,
        })
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
        self.bound_wal_after_commit();
        Ok(out)
    }

    /// Like [`SqliteStore::write`], for a transaction that changes no login data and
    /// no throttle row; also says whether its commit was the only one between
    /// the change stamp it read under the write lock and the one after (then
    /// what was known at the first is known at the second, see
    /// [`QuietCommit`]).
    ///
    /// Why it is exact: under the write lock no other connection can commit,
    /// so the stamp read there is the state this transaction starts from.
    /// After the commit, `PRAGMA data_version` (per connection) is unchanged
    /// only if no other connection committed since this one's read began, and
    /// a stamp equal just before and just after that pragma is the state the
    /// pragma's read transaction saw.
    pub(crate) fn write_quiet<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>,
    ) -> Result<(T, Option<QuietCommit>)> {
        self.end_read()?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        let file = self.file_id;
        let index = self
            .wal_index
            .get_or_init(|| WalIndex::of(&tx, file))
            .as_ref();
        let before = index.and_then(|i| Some((i.stamp()?, data_version(&tx)?)));
        tx.commit()?;
        let quiet = before.and_then(|(before, version)| {
            let index = index?;
            let after = index.stamp()?;
            let unchanged = data_version(&self.conn)? == version && index.stamp()? == after;
            unchanged.then_some(QuietCommit { before, after })
        });
        self.bound_wal_after_commit();
        Ok((out, quiet))
    }

    /// Leaves this connection's checkpoints to a thread that calls
    /// [`SqliteStore::checkpoint_if_due`] (saslgated): a checkpoint `fsync`s the
    /// database (tens of milliseconds on a busy disk), which must not happen
    /// inside the audit flusher's or a login's commit.
    pub(crate) fn set_background_checkpoints(&mut self) -> Result<()> {
        self.conn.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
        self.background_checkpoints = true;
        Ok(())
    }

    /// For the checkpoint thread: copies the log into the database once it
    /// holds [`BACKGROUND_CHECKPOINT_FRAMES`] frames (PASSIVE: writers go on,
    /// readers are not waited for), and bounds the log's file as commits do
    /// otherwise (`bound_wal`).
    pub(crate) fn checkpoint_if_due(&self) -> Result<()> {
        // A read transaction of this connection would hold the checkpoint
        // back to its snapshot.
        LoginStore::end_read(self)?;
        // The frames in the log: the WAL-index header's mxFrame. Unknown:
        // checkpoint anyway (a PASSIVE checkpoint of an empty log is cheap).
        let frames = self
            .wal_index
            .get_or_init(|| WalIndex::of(&self.conn, self.file_id))
            .as_ref()
            .and_then(WalIndex::frames)
            .unwrap_or(u32::MAX);
        if frames >= BACKGROUND_CHECKPOINT_FRAMES {
            self.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        }
        self.bound_wal();
        Ok(())
    }

    fn bound_wal_after_commit(&self) {
        if !self.background_checkpoints {
            self.bound_wal();
        }
    }

    /// Keeps the write-ahead log near [`WAL_LIMIT_BYTES`].
    ///
    /// SQLite's automatic checkpoint after a commit is PASSIVE: it never waits
    /// for readers, so with a reader active in some process at every moment the
    /// log is never restarted and grows (550 MiB in 30 s with nine plugin
    /// processes, issue 11). A writer that finds the log past the limit after
    /// its commit runs a TRUNCATE checkpoint: it waits (at most
    /// [`WAL_CHECKPOINT_WAIT`]) for the writer lock and for the readers of older
    /// snapshots, which are short (no read transaction spans a hash), copies the
    /// log into the database and empties it. If another connection holds the
    /// checkpoint lock, that one is doing the copying and a later write tries
    /// again; if a long reader (a backup) keeps the log from restarting, this
    /// process tries again after [`WAL_RETRY_MS`].
    ///
    /// Limit (doc/hardening.md): writers that commit back to back without
    /// pause keep the checkpoint lock busy with SQLite's own checkpoints, and
    /// the log can still grow; saslgate's own writes are few per login (batched
    /// successes, rate-limited cheap refusals), which is what keeps it bounded.
    fn bound_wal(&self) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static RETRY_AT_MS: AtomicU64 = AtomicU64::new(0);
        let mut wal = self.config.db.clone().into_os_string();
        wal.push("-wal");
        if !std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_LIMIT_BYTES) {
            return;
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if now_ms < RETRY_AT_MS.load(Ordering::Relaxed) {
            return;
        }
        let _ = self.conn.busy_timeout(WAL_CHECKPOINT_WAIT);
        // (busy, log frames, frames copied); log -1: another connection holds
        // the checkpoint lock, i.e. is doing this very job.
        let result = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            });
        let _ = self.conn.busy_timeout(self.config.busy_timeout);
        let restarted = matches!(result, Ok((0, _)) | Ok((_, -1)));
        if !restarted {
            RETRY_AT_MS.store(now_ms + WAL_RETRY_MS, Ordering::Relaxed);
        }
    }
}

/// `PRAGMA data_version` of a connection: moves when another connection's
/// commit becomes visible to it, never with its own. `None` on any error
/// (the caller then assumes the worst).
fn data_version(conn: &Connection) -> Option<i64> {
    conn.prepare_cached("PRAGMA data_version")
        .and_then(|mut q| q.query_row([], |r| r.get(0)))
        .ok()
}

/// Copies the database to `dest` with `VACUUM INTO` (a consistent snapshot taken
/// while others keep using it). Opens it read-only and never migrates it, so the
/// package can back up a database before a newer saslgate migrates it.
///
/// The destination is created with `O_EXCL|O_NOFOLLOW` and mode 0600 before
/// anything is written (never a link, never readable by others); root writes
/// it only into a directory no other user can change (`rootfs`), since SQLite
/// opens it again by name.
pub fn backup(config: &Config, dest: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let src = config.db.as_path();
    if !src.is_file() {
        return Err(Error::Storage(format!(
            "{}: no such database",
            src.display()
        )));
    }
    if crate::rootfs::is_root() {
        let dir = crate::rootfs::parent_dir(dest);
        let why = crate::rootfs::not_root_only(&dir).map_err(|e| Error::io(dir.display(), e))?;
        if let Some(why) = why {
            return Err(Error::io_refused(
                dest.display(),
                format!(
                    "root writes a backup only into a directory no other user can \
                     change, and {why}; use one such as /var/backups/saslgate \
                     (root:root, mode 0700); nothing written"
                ),
            ));
        }
    }
    // Create the destination first so it is never readable by others, even briefly.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(dest)
        .map_err(|e| Error::io(dest.display(), e))?;
    let result = (|| {
        let conn = Connection::open_with_flags(
            src,
            OpenFlags::SQLITE_OPEN_READ_ONLY | guard::open_flags(src)?,
        )
        .map_err(storage(src))?;
        conn.busy_timeout(config.busy_timeout)
            .map_err(storage(src))?;
        // VACUUM INTO wants an empty or missing file; ours is empty.
        let target = dest
            .to_str()
            .ok_or_else(|| Error::Usage("destination path is not UTF-8".into()))?;
        conn.execute("VACUUM INTO ?1", [target])
            .map_err(storage(src))?;
        guard::same_file(&file, dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}

/// Replaces the live database's content with a backup's, safely while daemons
/// and plugins keep it open: SQLite's backup API writes the pages through the
/// live database's own write-ahead log and locks, so no process ever sees an old
/// WAL mixed into a new file (which copying or renaming over the file does).
/// The backup is checked first (integrity, a saslgate schema this version
/// reads); afterwards the schema is migrated if the backup was older and the
/// generation is moved, so every process drops what it had cached.
pub fn restore(config: &Config, from: &Path) -> Result<()> {
    if !from.is_file() {
        return Err(Error::Usage(format!(
            "{}: no such backup file",
            from.display()
        )));
    }
    let src = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | guard::open_flags(from)?,
    )
    .map_err(storage(from))?;
    let check: String = src
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(storage(from))?;
    if check != "ok" {
        return Err(Error::Storage(format!(
            "{}: backup fails its integrity check ({check}); nothing restored",
            from.display()
        )));
    }
    let version: i64 = src
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(storage(from))?;
    let has_key: i64 = src
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |r| r.get(0),
        )
        .map_err(storage(from))?;
    if version < 1 || has_key == 0 {
        return Err(Error::Storage(format!(
            "{}: not a saslgate database; nothing restored",
            from.display()
        )));
    }
    if version > schema::SCHEMA_VERSION {
        return Err(Error::TooNew {
            found: version,
            supported: schema::SCHEMA_VERSION,
        });
    }
    // The live database must open (and is migrated): restoring is a change to it,
    // made under its locks, not a replacement of its file.
    let mut live = SqliteStore::open(config)?;
    let path = config.db.as_path();
    {
        let backup = rusqlite::backup::Backup::new(&src, &mut live.conn).map_err(storage(path))?;
        // All pages in one step: one write transaction on the live database, so
        // readers see the old content or the new one, never a mixture.
        // Busy or locked (a writer in the middle of a login): wait, bounded by
        // the configured busy timeout.
        let deadline =
            std::time::Instant::now() + config.busy_timeout.max(std::time::Duration::from_secs(1));
        loop {
            use rusqlite::backup::StepResult;
            match backup.step(-1).map_err(storage(path))? {
                StepResult::Done => break,
                StepResult::More | StepResult::Busy | StepResult::Locked
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                _ => {
                    return Err(Error::Storage(format!(
                        "{}: busy for longer than the busy timeout; nothing restored",
                        path.display()
                    )))
                }
            }
        }
    }
    drop(live);
    // Reopen: migrates a backup made by an older version; then move the
    // generation (the restored one may be a value processes still hold data for).
    let mut live = SqliteStore::open(config)?;
    live.write(|tx| {
        tx.execute(
            "UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'",
            [],
        )?;
        Ok(())
    })?;
    Ok(())
}

/// Looks a group name up (for `db_group`), through NSS.
fn group_id(name: &str) -> Result<u32> {
    crate::host::group_id(name)?
        .ok_or_else(|| Error::Config(format!("db_group: no group named {name:?}")))
}
