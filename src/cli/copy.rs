//! `saslgate copy --to TARGET`: the whole configured database into another
//! one, e.g. a single host's SQLite file into the PostgreSQL database several
//! hosts share, or back into a SQLite file.
//!
//! The source is read in one consistent snapshot ([`AdminStore::export_all`]);
//! the target is written in one transaction that checks its row counts before
//! committing ([`AdminStore::import_all`]), and is then opened afresh and read
//! back: the copy succeeds only if what the target now holds equals the
//! snapshot, table by table (secrets compared in constant time). A target in
//! use is refused unless `--force`. Logins that happen on the source during the
//! copy are not carried (stop the mail hosts, or accept losing their last-use
//! stamps, audit and throttle rows of those seconds).

use super::json;
use crate::config::{Config, Database};
use crate::error::{Error, Result};
use crate::store::dump::DumpCounts;
use crate::store::AdminStore;
use std::path::{Path, PathBuf};

/// A target naming a database server rather than a file.
fn is_url(target: &str) -> bool {
    target.contains("://")
}

/// The configuration the target is opened with: the source's, with `db`
/// replaced (permissions such as `db_group` carry over to a new file).
fn target_config(cfg: &Config, target: &str) -> Config {
    Config {
        db: PathBuf::from(target),
        ..cfg.clone()
    }
}

/// The same file under two names (or the same URL) is refused: the import
/// would first empty the source.
fn same_database(source: &Path, target: &str) -> bool {
    if is_url(target) {
        return source.as_os_str() == target;
    }
    match (source.canonicalize(), Path::new(target).canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => source == Path::new(target),
    }
}

/// Opens the target for writing, creating it if needed (a new SQLite file, or
/// the schema in an empty PostgreSQL database); a SQLite file created here is
/// returned too, so that a failed copy removes it again.
fn open_target(cfg: &Config) -> Result<(Box<dyn AdminStore>, Option<PathBuf>)> {
    let new_file = match cfg.database() {
        Database::Sqlite(path) if !path.exists() => Some(path.to_path_buf()),
        _ => None,
    };
    match crate::store::create(cfg) {
        Ok(store) => Ok((store, new_file)),
        Err(Error::Exists(_)) => Ok((crate::store::open_admin(cfg)?, None)),
        Err(e) => Err(e),
    }
}

pub(super) fn copy(cfg: &Config, to: &str, force: bool, as_json: bool) -> Result<i32> {
    if to.is_empty() {
        return Err(Error::Usage("--to: empty target".into()));
    }
    if same_database(&cfg.db, to) {
        return Err(Error::Usage(format!(
            "--to {to}: that is the source database"
        )));
    }
    let source = crate::store::open_admin(cfg)?;
    let dump = source.export_all()?;
    drop(source);

    let target_cfg = target_config(cfg, to);
    let (mut target, created) = open_target(&target_cfg)?;
    let result = (|| -> Result<DumpCounts> {
        let counts = target.import_all(&dump, force)?;
        // Read back through a new connection: what any host will now see.
        let reread = crate::store::open_admin(&target_cfg)?.export_all()?;
        dump.check_copy(&reread)?;
        Ok(counts)
    })();
    drop(target);
    let counts = match result {
        Ok(counts) => counts,
        Err(e) => {
            if let Some(path) = created {
                remove_sqlite_files(&path);
            }
            return Err(e);
        }
    };
    if as_json {
        json(&counts)?;
    } else {
        eprintln!(
            "saslgate: copied {} to {to}: {counts}; checked",
            cfg.db.display()
        );
    }
    Ok(0)
}

/// A database file this command created, with its write-ahead log files.
fn remove_sqlite_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}
