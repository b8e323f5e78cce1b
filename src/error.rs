//! One error type for the core. Each variant maps to a CLI exit code and to the
//! "unavailable" answer of the login faces.

use std::fmt;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug)]
pub enum Error {
    /// The database could not be opened, read or written (missing, locked, corrupt,
    /// read-only, full disk). Login faces answer "unavailable"; CLI exit code 3.
    Storage(String),
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
            Error::Storage(_) | Error::TooNew { .. } | Error::Io(_) => 3,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Storage(m) => write!(f, "database unavailable: {m}"),
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

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}
