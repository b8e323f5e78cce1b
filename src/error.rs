//! One error type for the core. Each variant maps to a CLI exit code and to the
//! "unavailable" answer of the login faces.

use std::fmt;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug)]
pub enum Error {
    /// The database could not be opened, read or written (missing, locked, corrupt,
    /// read-only, full disk). Login faces answer "unavailable"; CLI exit code 3.
    Storage(String),
    /// The storage backend's own error (SQLite's), kept as the source so its
    /// code and message reach the logs intact. Treated like `Storage`.
    Database(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The database was written by a newer saslgate.
    TooNew { found: i64, supported: i64 },
    /// A configuration file that cannot be read or parsed.
    Config(String),
    /// Bad arguments or input from an operator (CLI exit code 2).
    Usage(String),
    /// A named account, app password, plan... does not exist (CLI exit code 1).
    NotFound(String),
    /// The thing to create exists already (CLI exit code 1).
    Exists(String),
    /// Other I/O (reading a password, writing output). CLI exit code 3.
    Io(String),
}

impl Error {
    /// The `saslgate` exit code for this error (doc/design.md, section 8).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Config(_) => 2,
            Error::NotFound(_) | Error::Exists(_) => 1,
            Error::Storage(_) | Error::Database(_) | Error::TooNew { .. } | Error::Io(_) => 3,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Storage(m) => write!(f, "database unavailable: {m}"),
            Error::Database(e) => write!(f, "database unavailable: {e}"),
            Error::TooNew { found, supported } => write!(
                f,
                "database schema version {found} was written by a newer saslgate \
                 (this one supports up to {supported}); refusing to open it"
            ),
            Error::Config(m) => write!(f, "configuration error: {m}"),
            Error::Usage(m) => write!(f, "{m}"),
            Error::NotFound(m) => write!(f, "not found: {m}"),
            Error::Exists(m) => write!(f, "already exists: {m}"),
            Error::Io(m) => write!(f, "I/O error: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Database(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Database(Box::new(e))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_error_keeps_its_source() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let e: Error = conn
            .execute("SELECT * FROM nowhere", [])
            .unwrap_err()
            .into();
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().starts_with("database unavailable: "), "{e}");
        let source = std::error::Error::source(&e).expect("source kept");
        let sqlite = source
            .downcast_ref::<rusqlite::Error>()
            .expect("a rusqlite error");
        assert!(sqlite.to_string().contains("nowhere"), "{sqlite}");
    }
}
