//! Fixture databases made through the library.

use crate::{ALICE_PW, BOB_PW, CAROL_PW, EVE_PW, TOTP_SECRET};
use saslgate::secret::SecretBytes;
use saslgate::store::{AdminStore, SqliteStore};
use saslgate::{Config, Decision, Gate, RefuseReason, Request};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh, empty database in a temporary directory (removed on drop): a
/// SQLite file, or, inside [`on_postgresql`], a database in a private
/// PostgreSQL cluster of its own (stopped on drop).
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub config: Config,
    /// The cluster holding the database, on PostgreSQL.
    pub pg: Option<crate::pg::PgCluster>,
}

thread_local! {
    /// Set by [`on_postgresql`] for the test body it runs.
    static ON_POSTGRESQL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs a test body with every [`Fixture`] it makes on PostgreSQL (the same
/// test definition as on SQLite). Without PostgreSQL installed it prints the
/// "SKIP: ..." reason and returns.
pub fn on_postgresql(test: fn()) {
    if let Err(reason) = crate::pg::find_bin() {
        crate::pg::report_skip(&reason);
        return;
    }
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            ON_POSTGRESQL.with(|on| on.set(false));
        }
    }
    ON_POSTGRESQL.with(|on| on.set(true));
    let _reset = Reset;
    test();
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

impl Fixture {
    /// A fresh database with bcrypt cost 4 (fast tests; the engine's logic does not
    /// depend on the cost) and audit records written at once.
    pub fn new() -> Fixture {
        Fixture::with(|_| {})
    }

    /// A fresh database with the settings of [`Fixture::new`] changed by `tweak`.
    pub fn with(tweak: impl FnOnce(&mut Config)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            db: dir.path().join("saslgate.db"),
            bcrypt_cost: 4,
            flush_interval: std::time::Duration::ZERO,
            ..Config::default()
        };
        let pg = if ON_POSTGRESQL.with(|on| on.get()) {
            let cluster = crate::pg::PgCluster::start().expect("PostgreSQL cluster");
            cluster.create_database("saslgate").unwrap();
            // The socket: trusted, no password to pass around.
            config.db = cluster.socket_url(crate::pg::SUPERUSER, "saslgate").into();
            Some(cluster)
        } else {
            None
        };
        tweak(&mut config);
        saslgate::store::create(&config).unwrap();
        Fixture { dir, config, pg }
    }

    /// The SQLite store itself (for tests of SQLite's own behaviour).
    pub fn store(&self) -> SqliteStore {
        assert!(self.pg.is_none(), "Fixture::store is SQLite's; use admin()");
        SqliteStore::open(&self.config).unwrap()
    }

    /// The store of either backend, for admin changes.
    pub fn admin(&self) -> Box<dyn AdminStore> {
        saslgate::store::open_admin(&self.config).unwrap()
    }

    /// Runs SQL on the database (sqlite3, or psql as the superuser); the output.
    pub fn sql(&self, query: &str) -> String {
        match &self.pg {
            Some(cluster) => cluster.psql("saslgate", query).unwrap(),
            None => crate::tools::sql(&self.config.db, query),
        }
    }

    pub fn gate(&self) -> Gate {
        Gate::open(self.config.clone()).unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Account with a master password.
    pub fn user(&self, name: &str, password: &str) {
        let mut s = self.admin();
        s.add_account(name, "default").unwrap();
        s.set_master_password(name, &SecretBytes::from_slice(password.as_bytes()), false)
            .unwrap();
    }

    /// A new app password of `name`, as shown to the user.
    pub fn app_password(
        &self,
        name: &str,
        services: &[&str],
        restricted: bool,
        expires: Option<i64>,
    ) -> String {
        let services: Vec<String> = services.iter().map(|s| s.to_string()).collect();
        let (_, shown) = self
            .admin()
            .add_app_password(name, "test", &services, restricted, expires)
            .unwrap();
        String::from_utf8(shown.as_bytes().to_vec()).unwrap()
    }
}

/// A request as a face builds it (no realm, no client address).
pub fn req<'a>(login: &'a str, password: &'a str, service: &'a str) -> Request<'a> {
    Request {
        login: login.as_bytes(),
        password: password.as_bytes(),
        service: service.as_bytes(),
        realm: None,
        client_addr: None,
        local_addr: None,
        secure: None,
    }
}

pub fn refused(d: &Decision) -> Option<RefuseReason> {
    match d {
        Decision::Refused { reason, .. } => Some(*reason),
        _ => None,
    }
}

/// The current TOTP code, from the real `oathtool` (package oathtool).
pub fn oathtool(secret_b32: &str) -> String {
    let out = Command::new("oathtool")
        .args(["--totp", "-b", secret_b32])
        .output()
        .expect("oathtool is required for the TOTP tests (apt-get install oathtool)");
    assert!(out.status.success(), "oathtool failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The standard cast, in a config file and database under `dir`:
/// - alice: master password, an app password for imap (`app_imap`) and a
///   restricted one (`app_restricted`);
/// - bob: master password + TOTP ([`TOTP_SECRET`]) + `codes` one-time codes;
/// - carol: disabled; eve: on the plan `smtponly`.
pub struct Scenario {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub db: PathBuf,
    pub config: Config,
    pub app_imap: String,
    pub app_restricted: String,
    pub codes: Vec<String>,
}

impl Scenario {
    /// `extra` is appended to the config file (TOML, before the `[throttle]`
    /// table, whose body is `throttle`).
    pub fn create(dir: &Path, extra: &str, throttle: &str, codes: usize) -> Scenario {
        std::fs::create_dir_all(dir).unwrap();
        let db = dir.join("saslgate.db");
        let conf = dir.join("saslgate.conf");
        std::fs::write(
            &conf,
            format!(
                "db = \"{}\"\nbcrypt_cost = 4\n{extra}\n[throttle]\n{throttle}\n",
                db.display()
            ),
        )
        .unwrap();
        let config = Config::load(&conf).unwrap();
        let mut s = SqliteStore::create(&config).unwrap();
        let pw = |p: &str| SecretBytes::from_slice(p.as_bytes());
        let shown = |s: SecretBytes| String::from_utf8(s.as_bytes().to_vec()).unwrap();
        s.add_account("alice", "default").unwrap();
        s.set_master_password("alice", &pw(ALICE_PW), false)
            .unwrap();
        let (_, app_imap) = s
            .add_app_password("alice", "phone", &["imap".into()], false, None)
            .unwrap();
        let (_, app_restricted) = s
            .add_app_password("alice", "scanner", &[], true, None)
            .unwrap();
        s.add_account("bob", "default").unwrap();
        s.set_master_password("bob", &pw(BOB_PW), false).unwrap();
        s.enable_totp("bob", TOTP_SECRET).unwrap();
        // generate_codes replaces the set, at most 100 at a time: one call.
        let codes = if codes > 0 {
            s.generate_codes("bob", codes.min(100))
                .unwrap()
                .into_iter()
                .map(shown)
                .collect()
        } else {
            Vec::new()
        };
        s.add_account("carol", "default").unwrap();
        s.set_master_password("carol", &pw(CAROL_PW), false)
            .unwrap();
        s.set_disabled("carol", true).unwrap();
        s.set_plan_services("smtponly", &["smtp".into()]).unwrap();
        s.add_account("eve", "smtponly").unwrap();
        s.set_master_password("eve", &pw(EVE_PW), false).unwrap();
        drop(s);
        Scenario {
            dir: dir.to_path_buf(),
            conf,
            db,
            config,
            app_imap: shown(app_imap),
            app_restricted: shown(app_restricted),
            codes,
        }
    }
}

/// Bob's current TOTP step and code (computed by the library; the TOTP tests
/// that check the library itself use [`oathtool`]).
pub fn totp_now() -> (i64, String) {
    let step = saslgate::totp::step_of(saslgate::timefmt::now());
    let code = saslgate::totp::code_at(TOTP_SECRET, step);
    (step, String::from_utf8(code.to_vec()).unwrap())
}
