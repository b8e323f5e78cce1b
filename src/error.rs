//! One error type for the core. Each variant maps to a CLI exit code and to the
//! "unavailable" answer of the login faces. Derived with `thiserror`: the texts
//! stay ours (tests and the faces' logs rely on them), the source chain is kept.

use std::fmt;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be opened, read or written (missing, locked, corrupt,
    /// read-only, full disk). Login faces answer "unavailable"; CLI exit code 3.
    #[error("database unavailable: {0}")]
    Storage(String),
    /// The storage backend's own error (SQLite's), kept as the source so its
    /// code and message reach the logs intact. Treated like `Storage`.
    #[error("database unavailable: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The database was written by a newer saslgate.
    #[error(
        "database schema version {found} was written by a newer saslgate \
         (this one supports up to {supported}); refusing to open it"
    )]
    TooNew { found: i64, supported: i64 },
    /// A configuration file that cannot be read or parsed.
    #[error("configuration error: {0}")]
    Config(String),
    /// Bad arguments or input from an operator (CLI exit code 2).
    #[error("{0}")]
    Usage(String),
    /// A named account, app password, plan... does not exist (CLI exit code 1).
    #[error("not found: {0}")]
    NotFound(String),
    /// The thing to create exists already (CLI exit code 1).
    #[error("already exists: {0}")]
    Exists(String),
    /// Other I/O (reading a password, writing output). CLI exit code 3.
    /// `context` (a path, often) goes before the source's own text; the
    /// source stays reachable through `std::error::Error::source`.
    #[error("I/O error: {}", WithContext(context, source))]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The `saslgate` exit code for this error (doc/design.md, section 8).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Config(_) => 2,
            Error::NotFound(_) | Error::Exists(_) => 1,
            Error::Storage(_) | Error::Database(_) | Error::TooNew { .. } | Error::Io { .. } => 3,
        }
    }

    /// An I/O error about `context` (a path, a file): shown as
    /// `I/O error: CONTEXT: SOURCE`, the source kept.
    pub fn io(context: impl fmt::Display, source: std::io::Error) -> Error {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }

    /// An I/O refusal of our own about `context` (no system error behind it):
    /// shown as `I/O error: CONTEXT: WHY`.
    pub fn io_refused(context: impl fmt::Display, why: impl Into<String>) -> Error {
        Error::io(context, std::io::Error::other(why.into()))
    }
}

/// `context: source`, or the source alone when there is no context.
struct WithContext<'a>(&'a str, &'a std::io::Error);

impl fmt::Display for WithContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            "" => write!(f, "{}", self.1),
            context => write!(f, "{context}: {}", self.1),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Database(Box::new(e))
    }
}

impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::io("", source)
    }
}

impl From<serde_json::Error> for Error {
    /// Writing JSON output: an I/O error (its text kept, as before).
    fn from(e: serde_json::Error) -> Self {
        Error::io("", e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_database_error_keeps_its_source() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let e: Error = conn
            .execute("SELECT * FROM nowhere", [])
            .unwrap_err()
            .into();
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().starts_with("database unavailable: "), "{e}");
        let source = e.source().expect("source kept");
        let sqlite = source
            .downcast_ref::<rusqlite::Error>()
            .expect("a rusqlite error");
        assert!(sqlite.to_string().contains("nowhere"), "{sqlite}");
    }

    #[test]
    fn an_io_error_keeps_its_source_and_its_text() {
        let missing = std::fs::read("/nonexistent/saslgate-test").unwrap_err();
        let shown = missing.to_string();
        let e = Error::from(missing);
        assert_eq!(e.to_string(), format!("I/O error: {shown}"));
        assert_eq!(e.exit_code(), 3);
        let source = e.source().expect("source kept");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);

        let missing = std::fs::read("/nonexistent/x").unwrap_err();
        let e = Error::io("/nonexistent/x", missing);
        assert_eq!(
            e.to_string(),
            "I/O error: /nonexistent/x: No such file or directory (os error 2)"
        );
        assert!(e.source().is_some());

        let e = Error::io_refused("/tmp/b", "not here");
        assert_eq!(e.to_string(), "I/O error: /tmp/b: not here");
        assert_eq!(e.source().unwrap().to_string(), "not here");
    }

    #[test]
    fn json_errors_are_io_errors_with_their_text() {
        let bad = serde_json::from_str::<u8>("x").unwrap_err();
        let shown = bad.to_string();
        let e = Error::from(bad);
        assert_eq!(e.to_string(), format!("I/O error: {shown}"));
        assert!(e.source().is_some());
    }

    /// The texts the CLI prints and the faces log, unchanged by the derive.
    #[test]
    fn texts_are_stable() {
        let cases = [
            (Error::Storage("x".into()), "database unavailable: x"),
            (Error::Config("x".into()), "configuration error: x"),
            (Error::Usage("x".into()), "x"),
            (Error::NotFound("x".into()), "not found: x"),
            (Error::Exists("x".into()), "already exists: x"),
            (
                Error::TooNew {
                    found: 9,
                    supported: 4,
                },
                "database schema version 9 was written by a newer saslgate \
                 (this one supports up to 4); refusing to open it",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
            assert!(e.source().is_none());
        }
    }
}
