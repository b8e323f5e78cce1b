//! The PostgreSQL backend: the same tables and rules as the SQLite store, for
//! several mail hosts sharing one database.
//!
//! - this file: connecting (URL, password file, timeouts) and running
//!   statements with a bounded wait; `tls` the TLS connector (rustls);
//! - [`schema`]: the migrations, `saslgate init` and the login role;
//! - `login`, `throttle`, `admin`, `web`: the trait implementations.
//!
//! Every wait is bounded. The client is `tokio-postgres` on a current-thread
//! runtime this connection owns (no threads; it runs only inside our calls), and
//! every round trip is wrapped in `tokio::time::timeout`: a server that stops
//! answering (stopped process, dead network, lock wait) costs at most
//! `db_statement_timeout`, after which the connection is marked broken, the call
//! fails ("unavailable") and the pool drops it; the next login connects anew.
//! The server applies the same `statement_timeout` itself, so it gives up too.

mod dump;
mod exec;
mod login;
pub mod notify;
pub mod schema;
mod throttle;
mod tls;
mod web;

use crate::config::Config;
use crate::error::{Error, Result};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};
use zeroize::Zeroizing;

/// Query parameters as tokio-postgres takes them.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// An open PostgreSQL connection with the saslgate schema.
pub struct PgStore {
    /// Declared before `runtime`: dropped first, while the runtime still exists.
    pub(super) client: Client,
    runtime: tokio::runtime::Runtime,
    pub(crate) config: Config,
    pub(crate) hmac_key: Zeroizing<Vec<u8>>,
    /// Prepared statements of this connection, by their SQL text.
    statements: RefCell<HashMap<&'static str, Statement>>,
    /// Inside a `begin_read` transaction.
    reading: Cell<bool>,
    /// A timeout or a lost connection: nothing more is sent on it.
    broken: Cell<bool>,
    /// The role may update `accounts.password_hash` (not the login role).
    pub(crate) may_rehash: bool,
    /// The role may delete audit records (not the login role).
    pub(crate) may_prune_audit: bool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("db", &self.config.db)
            .finish()
    }
}

/// How the server's certificate is checked (libpq's `sslmode` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// Encrypted if possible or required, certificate not checked (libpq's
    /// `prefer` and `require` without `sslrootcert`).
    None,
    /// The chain up to the CA file (`verify-ca`, or `require` with `sslrootcert`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

/// The parts of a URL tokio-postgres does not read itself.
#[derive(Debug)]
struct Target {
    pg: tokio_postgres::Config,
    verify: Verify,
    root_cert: Option<String>,
}

/// Splits our TLS keys (`sslmode` beyond disable/prefer/require,
/// `sslrootcert`) off the URL and hands the rest to tokio-postgres. A password
/// in the URL is refused: it belongs in `db_password_file`.
fn parse_target(url: &str) -> Result<Target> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = form_urlencoded::Serializer::new(String::new());
    let mut mode = "prefer".to_string();
    let mut root_cert = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "sslmode" => mode = value.into_owned(),
            "sslrootcert" => root_cert = Some(value.into_owned()),
            "password" => {
                return Err(Error::Config(
                    "db: a password in the URL is refused; put it in db_password_file".into(),
                ))
            }
            _ => {
                kept.append_pair(&key, &value);
            }
        }
    }
    let (ssl, verify) = match (mode.as_str(), root_cert.is_some()) {
        ("disable", _) => (tokio_postgres::config::SslMode::Disable, Verify::None),
        ("allow" | "prefer", _) => (tokio_postgres::config::SslMode::Prefer, Verify::None),
        ("require", false) => (tokio_postgres::config::SslMode::Require, Verify::None),
        ("require", true) | ("verify-ca", _) => {
            (tokio_postgres::config::SslMode::Require, Verify::Chain)
        }
        ("verify-full", _) => (tokio_postgres::config::SslMode::Require, Verify::Full),
        (other, _) => {
            return Err(Error::Config(format!(
                "db: unknown sslmode {other:?} (disable, prefer, require, verify-ca, verify-full)"
            )))
        }
    };
    let query = kept.finish();
    let rebuilt = if query.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{query}")
    };
    let mut pg: tokio_postgres::Config = rebuilt
        .parse()
        .map_err(|e| Error::Config(format!("db: not a PostgreSQL URL: {e}")))?;
    if pg.get_password().is_some() {
        return Err(Error::Config(
            "db: a password in the URL is refused; put it in db_password_file".into(),
        ));
    }
    pg.ssl_mode(ssl);
    // Several hosts (a primary and its standbys): only a server taking writes
    // will do, unless the URL says otherwise. A standby's data may lag and it
    // cannot record a code's use.
    if pg.get_hosts().len() > 1 && !query_has(&query, "target_session_attrs") {
        pg.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    }
    Ok(Target {
        pg,
        verify,
        root_cert,
    })
}

/// Whether the (kept) query string sets `key`.
fn query_has(query: &str, key: &str) -> bool {
    form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == key)
}

/// Reads `db_password_file` (first line, without its line end), kept in
/// memory that is wiped when dropped.
fn read_password(path: &std::path::Path) -> Result<Zeroizing<Vec<u8>>> {
    let mut bytes = Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| Error::Config(format!("db_password_file {}: {e}", path.display())))?,
    );
    let end = bytes
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(bytes.len());
    bytes.truncate(end);
    Ok(bytes)
}

/// Column `i` of a row, a type mismatch being a storage error.
pub(crate) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i)
        .map_err(|e| Error::Storage(format!("PostgreSQL: column {i}: {}", describe(&e))))
}

fn millis(d: Duration) -> u128 {
    d.as_millis().max(1)
}

/// What a connection is made from: the server's address and options, the
/// TLS connector if any, and the bound on the whole attempt.
struct Dialing {
    pg: tokio_postgres::Config,
    connector: Option<tls::MakeRustls>,
    bound: Duration,
}

/// The connection settings of `config` (URL, TLS, password file, timeouts
/// set in the startup packet).
fn dialing(config: &Config) -> Result<Dialing> {
    let url = match config.database() {
        crate::config::Database::Postgres(url) => url,
        crate::config::Database::Sqlite(p) => {
            return Err(Error::Config(format!(
                "{}: not a PostgreSQL URL",
                p.display()
            )))
        }
    };
    let mut target = parse_target(url)?;
    let statement = config.db_statement_timeout;
    let connect = config.db_connect_timeout;
    let mut options = target.pg.get_options().unwrap_or("").to_string();
    // idle_in_transaction: a client stopped inside a transaction must not
    // hold row locks (a throttle row, a code) for longer than a statement.
    options.push_str(&format!(
        " -c statement_timeout={} -c idle_in_transaction_session_timeout={}",
        millis(statement),
        millis(statement.max(Duration::from_secs(1)))
    ));
    target
        .pg
        .options(options.trim())
        .connect_timeout(connect)
        .tcp_user_timeout(statement)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3);
    if target.pg.get_application_name().is_none() {
        target.pg.application_name("saslgate");
    }
    let password = match &config.db_password_file {
        Some(path) => Some(read_password(path)?),
        None => None,
    };
    if let Some(pw) = &password {
        target.pg.password(&pw[..]);
    }
    // Ours is wiped here; tokio-postgres's copy lives in `pg`.
    drop(password);
    // Each host gets the connect timeout; the whole attempt is bounded too.
    let hosts = target.pg.get_hosts().len().max(1) as u32;
    let bound = connect * hosts + Duration::from_millis(100);
    let tls = target.pg.get_ssl_mode() != tokio_postgres::config::SslMode::Disable;
    let connector = if tls {
        Some(tls::connector(&target)?)
    } else {
        None
    };
    Ok(Dialing {
        pg: target.pg,
        connector,
        bound,
    })
}

/// The result of a bounded connect attempt.
fn connected_or_err<T>(
    connected: std::result::Result<
        std::result::Result<T, tokio_postgres::Error>,
        tokio::time::error::Elapsed,
    >,
    bound: Duration,
) -> Result<T> {
    match connected {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(Error::Storage(format!("PostgreSQL: {}", describe(&e)))),
        Err(_) => Err(Error::Storage(format!(
            "PostgreSQL: no connection within {} ms",
            bound.as_millis()
        ))),
    }
}

impl PgStore {
    /// Opens a connection to an initialised database (migrating an older
    /// schema when the role may).
    pub fn open(config: &Config) -> Result<PgStore> {
        let mut store = PgStore::connect(config)?;
        schema::prepare(&mut store, false)?;
        Ok(store)
    }

    /// `saslgate init`: creates the schema in an empty database. A database
    /// that has it already is refused (`Error::Exists`).
    pub fn create(config: &Config) -> Result<PgStore> {
        let mut store = PgStore::connect(config)?;
        schema::prepare(&mut store, true)?;
        Ok(store)
    }

    /// Connects (bounded by `db_connect_timeout` per host), with the server's
    /// own timeouts set in the startup packet (no extra round trip).
    pub(crate) fn connect(config: &Config) -> Result<PgStore> {
        let Dialing {
            pg,
            connector,
            bound,
        } = dialing(config)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::Storage(format!("PostgreSQL: cannot start its I/O: {e}")))?;
        let connected = runtime.block_on(async {
            tokio::time::timeout(bound, async {
                match connector {
                    Some(c) => pg.connect(c).await.map(|(client, conn)| {
                        tokio::spawn(conn);
                        client
                    }),
                    None => pg
                        .connect(tokio_postgres::NoTls)
                        .await
                        .map(|(client, conn)| {
                            tokio::spawn(conn);
                            client
                        }),
                }
            })
            .await
        });
        // tokio-postgres keeps its copy of the password in `pg` (freed, not
        // wiped, here).
        drop(pg);
        let client = connected_or_err(connected, bound)?;
        Ok(PgStore {
            client,
            runtime,
            config: config.clone(),
            hmac_key: Zeroizing::new(Vec::new()),
            statements: RefCell::new(HashMap::new()),
            reading: Cell::new(false),
            broken: Cell::new(false),
            may_rehash: false,
            may_prune_audit: false,
        })
    }

    /// Runs one round trip, bounded by the statement timeout. A timeout or a
    /// lost connection marks the connection broken.
    pub(crate) fn run<T>(
        &self,
        fut: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        if self.broken.get() {
            return Err(Error::Storage(
                "PostgreSQL: connection lost (reconnecting at the next use)".into(),
            ));
        }
        let bound = self.config.db_statement_timeout;
        match self
            .runtime
            .block_on(async { tokio::time::timeout(bound, fut).await })
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                // Not the server's answer (I/O, protocol, closed connection),
                // or a server that takes no writes (a standby, a demoted
                // primary): the next use connects anew, to a host that does.
                if e.as_db_error().is_none()
                    || e.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
                {
                    self.broken.set(true);
                }
                Err(Error::Storage(format!("PostgreSQL: {}", describe(&e))))
            }
            Err(_) => {
                self.broken.set(true);
                Err(Error::Storage(format!(
                    "PostgreSQL: no answer within {} ms",
                    bound.as_millis()
                )))
            }
        }
    }

    /// The connection's prepared statement for `sql` (prepared once).
    pub(super) fn prepared(&self, sql: &'static str) -> Result<Statement> {
        if let Some(st) = self.statements.borrow().get(sql) {
            return Ok(st.clone());
        }
        let st = self.run(self.client.prepare(sql))?;
        self.statements.borrow_mut().insert(sql, st.clone());
        Ok(st)
    }

    pub(crate) fn query(&self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>> {
        let st = self.prepared(sql)?;
        self.run(self.client.query(&st, params))
    }

    pub(crate) fn query_opt(&self, sql: &'static str, params: Params<'_>) -> Result<Option<Row>> {
        let st = self.prepared(sql)?;
        self.run(self.client.query_opt(&st, params))
    }

    pub(crate) fn query_one(&self, sql: &'static str, params: Params<'_>) -> Result<Row> {
        let st = self.prepared(sql)?;
        self.run(self.client.query_one(&st, params))
    }

    pub(crate) fn execute(&self, sql: &'static str, params: Params<'_>) -> Result<u64> {
        let st = self.prepared(sql)?;
        self.run(self.client.execute(&st, params))
    }

    /// Statements without parameters, by the simple protocol (one round trip).
    pub(crate) fn batch(&self, sql: &str) -> Result<()> {
        self.run(self.client.batch_execute(sql))
    }

    /// Runs `f` in one transaction (READ COMMITTED: the conditional updates and
    /// upserts it runs re-check their rows under the row lock).
    pub(crate) fn write<T>(&self, f: impl FnOnce(&PgStore) -> Result<T>) -> Result<T> {
        self.end_read_tx()?;
        self.batch("BEGIN")?;
        match f(self) {
            Ok(v) => {
                self.batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                if !self.broken.get() {
                    let _ = self.batch("ROLLBACK");
                }
                Err(e)
            }
        }
    }

    /// One snapshot for the reads of a login's slow path.
    pub(crate) fn begin_read_tx(&self) -> Result<()> {
        if !self.reading.get() {
            self.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
            self.reading.set(true);
        }
        Ok(())
    }

    pub(crate) fn end_read_tx(&self) -> Result<()> {
        if self.reading.get() {
            self.reading.set(false);
            self.batch("COMMIT")?;
        }
        Ok(())
    }
}

/// A tokio-postgres error with the server's message and SQLSTATE, if any.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => {
            use std::error::Error as _;
            match e.source() {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_tls_keys_are_taken_off_the_url() {
        let t = parse_target(
            "postgresql://a:5432,b:5433/mail?sslmode=verify-full&sslrootcert=/etc/ca.pem&target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(t.verify, Verify::Full);
        assert_eq!(t.root_cert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(t.pg.get_hosts().len(), 2);
        assert_eq!(
            t.pg.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        let t = parse_target("postgres:///mail?host=/run/postgresql&sslmode=disable").unwrap();
        assert_eq!(
            t.pg.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        let t = parse_target("postgresql://h/d?sslmode=require&sslrootcert=/ca").unwrap();
        assert_eq!(t.verify, Verify::Chain);
        // Several hosts: read-write unless the URL says otherwise.
        let t = parse_target("postgresql://a:5432,b:5433/mail").unwrap();
        assert_eq!(
            t.pg.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        let t = parse_target("postgresql://a,b/mail?target_session_attrs=any").unwrap();
        assert_eq!(
            t.pg.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::Any
        );
        let t = parse_target("postgresql://a/mail").unwrap();
        assert_eq!(
            t.pg.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::Any
        );
        assert!(parse_target("postgresql://u:secret@h/d").is_err());
        assert!(parse_target("postgresql://h/d?password=x").is_err());
        assert!(parse_target("postgresql://h/d?sslmode=sometimes").is_err());
    }
}
