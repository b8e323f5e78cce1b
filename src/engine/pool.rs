//! Connections: a small pool per process, never shared across `fork`, and (for
//! SQLite) the watch on the database file (deleted, replaced, copied over, or moved over a
//! live write-ahead log) that decides when the pool and everything cached from
//! the old file are dropped.

use super::Gate;
use crate::store::{ChangeStamp, LoginStore};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// Opens counted across the process: every gate's first open, every reopen
/// after the file watch saw the file change, and a forked child's first use.
static OPENS: AtomicU64 = AtomicU64::new(0);

/// One open of the database by one gate in this process: its connections,
/// until a fork or the file watch drops them (a new gate, as at a reload,
/// is a new open). Unique in the process; every view kept in memory (the
/// fast path's rows, the block list, the face's routes) is tagged with it,
/// and one of another open is never used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpenId(u64);

impl OpenId {
    /// No open (ids start at 1): matches no view. An attempt's open until a
    /// connection sets it.
    pub(super) const NONE: OpenId = OpenId(0);

    fn next() -> OpenId {
        OpenId(OPENS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
    }

    /// `store`'s change stamp (a connection of this open), tagged with the
    /// open: `None` without a stamp (see `LoginStore::change_stamp`).
    pub fn stamp(self, store: &dyn LoginStore) -> Option<ViewStamp> {
        store
            .change_stamp()
            .map(|change| ViewStamp { open: self, change })
    }
}

/// What a view kept in memory is known current under: the database's change
/// stamp (which names the file), read on a connection of `open`. Equal
/// view stamps: the same open, nothing committed in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ViewStamp {
    open: OpenId,
    change: ChangeStamp,
}

impl ViewStamp {
    pub(super) fn of(open: OpenId, change: ChangeStamp) -> ViewStamp {
        ViewStamp { open, change }
    }

    /// The same open at another change stamp (see `Fresh::carry`).
    pub(super) fn with_change(self, change: ChangeStamp) -> ViewStamp {
        ViewStamp { change, ..self }
    }
}

/// Idle connections, owned by the process that opened them.
pub(super) struct Pool {
    pub(super) pid: u32,
    idle: Vec<Box<dyn LoginStore>>,
    /// The database file as last seen (inode, size, mtime): a file deleted,
    /// replaced or copied over under us must not keep being served from what we
    /// read before.
    file: Option<FileState>,
    /// The inode this process last used: a different one at the path is a
    /// replaced file.
    known_inode: Option<(u64, u64)>,
    /// The file was replaced while a write-ahead log from before the replacement
    /// is still beside it: opening it would mix that log into the new file.
    stale_wal: bool,
    /// When `file` was last compared with the path.
    checked_at: Option<Instant>,
    /// The current open: a new one when the file changed (a connection
    /// taken before goes unpooled) or the process forked.
    open: OpenId,
}

impl Pool {
    /// Closes the idle connections (the next use opens new ones).
    pub(super) fn close_idle(&mut self) {
        self.idle.clear();
    }

    pub(super) fn new() -> Pool {
        Pool {
            pid: std::process::id(),
            idle: Vec::new(),
            file: None,
            known_inode: None,
            stale_wal: false,
            checked_at: None,
            open: OpenId::next(),
        }
    }
}

/// How often the database path is checked for a deleted or replaced file. A
/// `stat` per login cost ~3 % of the daemon's time; a tenth of a second is far
/// below how fast an admin can tell whether a replaced file was noticed.
const FILE_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Idle connections kept at most.
const MAX_IDLE: usize = 32;

/// What is compared every [`FILE_CHECK_INTERVAL`]: the inode, and the size and
/// modification time (a file copied over in place keeps its inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileState {
    inode: (u64, u64),
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn file_state(path: &std::path::Path) -> Option<FileState> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| FileState {
        inode: (m.dev(), m.ino()),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// A `-wal` file older than the database file's last change of inode data
/// (the rename or creation that put it there) belongs to the file it replaced.
fn wal_predates(path: &std::path::Path, file: &FileState) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    match std::fs::metadata(&wal) {
        Ok(m) => m.len() > 0 && (m.mtime(), m.mtime_nsec()) < file.ctime,
        Err(_) => false,
    }
}

impl Gate {
    pub(super) fn lock_pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on a pooled connection inside one read transaction.
    pub(super) fn with_store<T>(
        &self,
        f: impl FnOnce(&mut dyn LoginStore) -> crate::Result<T>,
    ) -> crate::Result<T> {
        self.with_connection(|store| in_read(store, f))
    }

    /// Runs `f` on a pooled connection. A connection that failed is dropped (the
    /// next call reopens, so a repaired database is picked up without a restart).
    pub(super) fn with_connection<T>(
        &self,
        f: impl FnOnce(&mut dyn LoginStore) -> crate::Result<T>,
    ) -> crate::Result<T> {
        self.with_open_connection(|store, _| f(store))
    }

    /// [`Gate::with_connection`], also telling `f` the open the connection
    /// belongs to (what views read on it are tagged with).
    pub(super) fn with_open_connection<T>(
        &self,
        f: impl FnOnce(&mut dyn LoginStore, OpenId) -> crate::Result<T>,
    ) -> crate::Result<T> {
        // Fork safety costs a getpid() per use; see `Gate::single_process`.
        let pid = self.fork_checks.then(std::process::id);
        let (taken, open) = {
            let mut pool = self.lock_pool();
            if let Some(pid) = pid.filter(|p| *p != pool.pid) {
                // Forked: the parent's connections (and its buffered records) are not ours.
                // Leak them rather than close: closing could disturb the parent's locks.
                for store in pool.idle.drain(..) {
                    std::mem::forget(store);
                }
                pool.pid = pid;
                pool.open = OpenId::next();
                self.lock_buffer().forget();
                self.snapshot.clear();
                self.fresh.clear();
                self.blocks.clear();
                self.face_memo.clear();
            }
            let now = Instant::now();
            // A PostgreSQL database has no file here to watch.
            let watch = crate::store::database_file(&self.config).is_some();
            // While this process's own checkpoint writes the file, its size
            // and times move for no one's replacing it: look after it (see
            // `Gate::checkpoint`).
            if watch
                && !self
                    .checkpointing
                    .load(std::sync::atomic::Ordering::Acquire)
                && pool
                    .checked_at
                    .is_none_or(|t| now.duration_since(t) >= FILE_CHECK_INTERVAL)
            {
                pool.checked_at = Some(now);
                let current = file_state(&self.config.db);
                if pool.file != current {
                    pool.idle.clear();
                    pool.file = current;
                    pool.open = OpenId::next();
                    self.snapshot.clear();
                    self.fresh.clear();
                    self.blocks.clear();
                    self.face_memo.clear();
                    if let Some(cache) = &self.cache {
                        cache.clear();
                    }
                }
                pool.stale_wal = match (&current, pool.known_inode) {
                    (Some(f), Some(known)) if f.inode != known => wal_predates(&self.config.db, f),
                    _ => false,
                };
            }
            if pool.stale_wal {
                return Err(crate::Error::Storage(format!(
                    "{}: the database file was replaced while its write-ahead log was in use; \
                     restore with `saslgate restore`, or stop every service using it and remove \
                     the old -wal and -shm files",
                    self.config.db.display()
                )));
            }
            if let Some(f) = pool.file {
                pool.known_inode = Some(f.inode);
            }
            (pool.idle.pop(), pool.open)
        };
        let mut store = match taken {
            Some(s) => s,
            None => {
                let mut store = crate::store::open_login(&self.config)?;
                if self.background_checkpoints {
                    store.checkpoint_in_background()?;
                }
                store
            }
        };
        let out = f(&mut *store, open);
        if out.is_ok() {
            let mut pool = self.lock_pool();
            let same_process = pid.is_none_or(|p| p == pool.pid);
            if same_process && pool.open == open && pool.idle.len() < MAX_IDLE {
                pool.idle.push(store);
            }
        }
        out
    }
}

impl Gate {
    /// The checkpoint of [`Gate::with_background_checkpoints`]: copies the log
    /// into the database when it holds enough frames, and keeps its file
    /// bounded. The file's size and times change with it; the file watch does
    /// not look meanwhile, and takes the file as it is after, if it was as
    /// the watch last saw it before and keeps its inode (without this, each
    /// checkpoint of a busy daemon dropped every connection, the snapshot and
    /// the cache). A copy over the file in place during the checkpoint goes
    /// unnoticed; it would mix the checkpoint's pages into the copy anyway.
    /// Errors are left to the logins, which report them.
    pub fn checkpoint(&self) {
        use std::sync::atomic::Ordering;
        if crate::store::database_file(&self.config).is_none() {
            return; // PostgreSQL checkpoints by itself
        }
        self.checkpointing.store(true, Ordering::Release);
        let before = file_state(&self.config.db);
        let _ = self.with_connection(|store| store.checkpoint());
        if let Some(before) = before {
            let after = file_state(&self.config.db);
            let mut pool = self.lock_pool();
            if pool.file == Some(before) && after.is_some_and(|a| a.inode == before.inode) {
                pool.file = after;
            }
        }
        self.checkpointing.store(false, Ordering::Release);
    }
}

/// Runs `f` inside one read transaction (one snapshot, one set of WAL locks
/// instead of one per statement; writes end it first).
pub(super) fn in_read<T>(
    store: &mut dyn LoginStore,
    f: impl FnOnce(&mut dyn LoginStore) -> crate::Result<T>,
) -> crate::Result<T> {
    store.begin_read()?;
    let v = f(store)?;
    store.end_read()?;
    Ok(v)
}
