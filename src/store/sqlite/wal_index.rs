//! The change stamp of a SQLite database in WAL mode: the header of its
//! WAL-index (the `-shm` file), read from the memory SQLite itself maps.
//! It lets the engine's fast path know that nothing was committed since it
//! last read the generation and the throttle rows, without a statement, a read
//! transaction or the `fcntl` lock calls that come with one.
//!
//! Why it is exact (SQLite's WAL-index format, <https://www.sqlite.org/walformat.html>):
//! - every commit, by any connection of any process, writes a new header
//!   (`mxFrame`, the index of its last frame, and `iChange`, a counter moved
//!   by every commit) before any reader can see it: a reader's view is the
//!   frames up to the `mxFrame` of the header it read when its transaction
//!   began. Two equal headers therefore mean the same database content;
//! - a restart of the log (after a checkpoint) writes new salts, and a
//!   recovery rebuilds the header from the log file; frames of one salt are
//!   never rewritten once committed, so a rebuilt header equal to an old one
//!   describes the same content;
//! - the header is kept twice; a writer updates the second copy, then the
//!   first, with a memory barrier in between; a reader reads the first, then
//!   the second, and trusts them only if equal (what SQLite's own readers do,
//!   `walIndexTryHdr`). Anything else (a header being written, not
//!   initialised, another version) gives no stamp, and the caller asks the
//!   database.
//!
//! What it is not: proof across opens. When the last connection of every
//! process closes, SQLite checkpoints and deletes the log, and the next open
//! rebuilds the header from an empty log: the same bytes (iChange 0, no
//! frames, no salts) for every database, whatever its content. Two such
//! headers, of two databases or of one database replaced or written while
//! nobody had it open, say nothing about their content. So a header whose
//! log is empty (`mxFrame` 0) is no stamp at all (the caller reads the
//! database, until the next commit writes a frame and random salts), and a
//! stamp names the file (device, inode) its connection opened; the engine
//! adds the identity of its own open (`engine/pool.rs`, the open epoch), so
//! that a stamp is never compared across a reopen of the file.
//!
//! Lifetime: the memory is the mapping of region 0 of the `-shm` file held by
//! the connection's shared-memory node (`xShmMap` of SQLite's VFS, a public
//! interface). It stays mapped while the connection is open in WAL mode; the
//! [`WalIndex`] lives in the [`super::SqliteStore`] that owns the connection, so it
//! never outlives it. The connection is never switched out of WAL mode
//! (another process cannot either while this connection is open) nor into
//! `locking_mode=EXCLUSIVE` (where the index is private heap memory).

use rusqlite::ffi;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering};

/// The WAL-index header: twelve 32-bit words (`WalIndexHdr` in SQLite).
pub type Header = [u32; HEADER_WORDS];

/// A change stamp: a header whose log holds frames, and the file (device,
/// inode) of the connection that read it. Equal stamps from connections of
/// one open of the database mean the same content (see the module's text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChangeStamp {
    file: (u64, u64),
    header: Header,
}

const HEADER_WORDS: usize = 12;
/// `mxFrame`, the frames in the log, in the header (after iVersion, unused,
/// iChange and the word of isInit/bigEndCksum/szPage).
pub(crate) const MX_FRAME_WORD: usize = 4;
/// `WALINDEX_MAX_VERSION`: the only header layout this reads.
const WALINDEX_VERSION: u32 = 3_007_000;
/// `WALINDEX_PGSZ`: the size of one region of the `-shm` file.
const REGION_SIZE: i32 = 32 * 1024;

/// The first region of a connection's WAL-index.
pub(crate) struct WalIndex {
    header: NonNull<AtomicU32>,
    /// The database file (device, inode) the connection opened.
    file: (u64, u64),
}

// SAFETY: the pointer is into a shared mapping owned by the connection's
// shared-memory node, not by a thread; it is only read, with atomic loads
// (other processes write it at any time anyway).
unsafe impl Send for WalIndex {}

impl WalIndex {
    /// The WAL-index of `conn`, if the database is in WAL mode with a
    /// writable `-shm` file (anything else: `None`, and the caller reads the
    /// database every time). Call after the connection has read once (its
    /// shared memory is then open). `file`: the database file's (device,
    /// inode) as the connection opened it.
    pub(crate) fn of(conn: &rusqlite::Connection, file_id: Option<(u64, u64)>) -> Option<WalIndex> {
        let file_id = file_id?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .ok()?;
        if !mode.eq_ignore_ascii_case("wal") {
            return None;
        }
        let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
        // SAFETY: `handle()` is the open connection, used from this thread
        // only (the SqliteStore is not shared); FILE_POINTER writes one
        // `sqlite3_file *` to the pointer passed, owned by the connection.
        let rc = unsafe {
            ffi::sqlite3_file_control(
                conn.handle(),
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_FILE_POINTER,
                (&mut file as *mut *mut ffi::sqlite3_file).cast(),
            )
        };
        if rc != ffi::SQLITE_OK || file.is_null() {
            return None;
        }
        // SAFETY: `file` is the connection's open database file; its methods
        // table is SQLite's static VFS table.
        let methods = unsafe { (*file).pMethods };
        if methods.is_null() {
            return None;
        }
        // SAFETY: as above; `xShmMap` exists from version 2 of the table.
        let map = unsafe {
            if (*methods).iVersion < 2 {
                return None;
            }
            (*methods).xShmMap?
        };
        let mut region: *mut std::ffi::c_void = std::ptr::null_mut();
        // SAFETY: region 0 of the connection's WAL-index, without extending
        // the file (`bExtend` 0): the connection is in WAL mode and has read,
        // so its shared memory is open and the region exists; the call only
        // returns the existing mapping (under the node's own mutex). A
        // read-only `-shm` gives SQLITE_READONLY: not used.
        let rc = unsafe { map(file, 0, REGION_SIZE, 0, &mut region) };
        if rc != ffi::SQLITE_OK {
            return None;
        }
        let index = WalIndex {
            header: NonNull::new(region.cast::<AtomicU32>())?,
            file: file_id,
        };
        index.header()?;
        Some(index)
    }

    /// The current stamp: `None` while the header is being written (or is
    /// not one this code knows), and while the log is empty (a header that
    /// every open of every database starts with).
    pub(crate) fn stamp(&self) -> Option<ChangeStamp> {
        let header = self.header()?;
        (header[MX_FRAME_WORD] > 0).then_some(ChangeStamp {
            file: self.file,
            header,
        })
    }

    /// The frames in the log (`mxFrame`), if the header reads.
    pub(crate) fn frames(&self) -> Option<u32> {
        Some(self.header()?[MX_FRAME_WORD])
    }

    /// The current header, or `None` while it is being written (or is not a
    /// header this code knows).
    fn header(&self) -> Option<Header> {
        let word = |i: usize| {
            // SAFETY: region 0 is at least 32 KiB, mapped while the
            // connection (which owns `self`) is open; words 0..24 are the two
            // header copies, 4-byte aligned (the mapping is page aligned).
            unsafe { (*self.header.as_ptr().add(i)).load(Ordering::Relaxed) }
        };
        let mut first = [0u32; HEADER_WORDS];
        for (i, w) in first.iter_mut().enumerate() {
            *w = word(i);
        }
        fence(Ordering::SeqCst);
        for (i, w) in first.iter().enumerate() {
            if word(HEADER_WORDS + i) != *w {
                return None;
            }
        }
        // iVersion, and isInit (the first byte of word 3, in native order).
        let is_init = first[3].to_ne_bytes()[0] == 1;
        (first[0] == WALINDEX_VERSION && is_init).then_some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::SqliteStore;

    fn stamp(s: &SqliteStore) -> ChangeStamp {
        WalIndex::of(&s.conn, s.file_id).unwrap().stamp().unwrap()
    }

    /// A new database and two connections to it.
    fn two_connections() -> (tempfile::TempDir, SqliteStore, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            db: dir.path().join("sg.db"),
            ..Config::default()
        };
        let a = SqliteStore::create(&cfg).unwrap();
        let b = SqliteStore::open(&cfg).unwrap();
        (dir, a, b)
    }

    /// Unchanged by reads; changed by any commit, from this connection or
    /// another one (another process writes the same shared memory).
    #[test]
    fn every_commit_moves_the_stamp() {
        let (_dir, mut a, b) = two_connections();
        let index = WalIndex::of(&a.conn, a.file_id).unwrap();
        let s0 = index.stamp().unwrap();
        assert_eq!(stamp(&b), s0);
        let _: i64 = b
            .conn
            .query_row("SELECT count(*) FROM throttle", [], |r| r.get(0))
            .unwrap();
        assert_eq!(index.stamp().unwrap(), s0, "a read is not a change");
        b.conn
            .execute("INSERT INTO meta (key, value) VALUES ('x', '1')", [])
            .unwrap();
        let s1 = index.stamp().unwrap();
        assert_ne!(s1, s0, "another connection's commit");
        a.write(|tx| {
            tx.execute("UPDATE meta SET value = '2' WHERE key = 'x'", [])?;
            Ok(())
        })
        .unwrap();
        let s2 = index.stamp().unwrap();
        assert_ne!(s2, s1, "this connection's own commit");
        assert_ne!(s2, s0);
        // A truncating checkpoint restarts the log: a new stamp, never an old one.
        let _: (i64, i64, i64) = a
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        b.conn
            .execute("UPDATE meta SET value = '3' WHERE key = 'x'", [])
            .unwrap();
        let s3 = index.stamp().unwrap();
        assert!(![s0, s1, s2].contains(&s3));
    }

    /// A quiet commit names the stamps around it; what tells it apart from
    /// another connection's commit is `PRAGMA data_version`, which moves
    /// with theirs and never with its own.
    #[test]
    fn a_quiet_commit_carries_only_its_own_change() {
        let (_dir, mut a, b) = two_connections();
        let s0 = stamp(&a);
        let ((), quiet) = a
            .write_quiet(|tx| {
                tx.execute("INSERT INTO meta (key, value) VALUES ('x', '1')", [])?;
                Ok(())
            })
            .unwrap();
        let quiet = quiet.expect("alone: quiet");
        assert_eq!(quiet.before, s0);
        assert_eq!(quiet.after, stamp(&b));
        assert_ne!(quiet.before, quiet.after);
        let version = super::super::data_version(&a.conn).unwrap();
        a.write(|tx| {
            tx.execute("UPDATE meta SET value = '2' WHERE key = 'x'", [])?;
            Ok(())
        })
        .unwrap();
        assert_eq!(
            super::super::data_version(&a.conn),
            Some(version),
            "own commit"
        );
        b.conn
            .execute("UPDATE meta SET value = '3' WHERE key = 'x'", [])
            .unwrap();
        assert_ne!(
            super::super::data_version(&a.conn),
            Some(version),
            "another's"
        );
    }

    /// No WAL, no stamp (the caller reads the database every time).
    #[test]
    fn no_stamp_without_wal() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        assert!(WalIndex::of(&conn, Some((0, 0))).is_none());
        let dir = tempfile::tempdir().unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("plain.db")).unwrap();
        conn.execute_batch("PRAGMA journal_mode = DELETE; CREATE TABLE t (x)")
            .unwrap();
        assert!(WalIndex::of(&conn, Some((0, 0))).is_none());
    }
}
