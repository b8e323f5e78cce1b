//! The configuration file (`/etc/saslgate/saslgate.conf`, TOML). Every key is
//! optional; `Config::default()` holds the documented defaults, and
//! `debian/saslgate.conf` (the packaged file) lists every key with its default.
//! The file is read by serde straight onto `Config`, then [`Config::validate`]
//! checks ranges and rules across keys (doc/design.md, section 8.1).

use crate::config_file::{self, Invalid};
use crate::error::{Error, Result};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default database path (what the Debian package creates).
pub const DEFAULT_DB: &str = "/var/lib/saslgate/saslgate.db";
/// Default configuration path.
pub const DEFAULT_CONFIG: &str = "/etc/saslgate/saslgate.conf";
/// bcrypt cost for new master passwords. Cost 10 takes about 55 ms on the 2-core
/// machines this was measured on (see README "Choosing the bcrypt cost"): slow for
/// an offline attacker, still fine for a mail server that can cache.
pub const DEFAULT_BCRYPT_COST: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditLevel {
    /// Every attempt is recorded.
    All,
    /// Only refusals and "unavailable" answers are recorded.
    Failures,
    /// Nothing is recorded.
    None,
}

/// Where the database is (from [`Config::db`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database<'a> {
    /// A SQLite file.
    Sqlite(&'a Path),
    /// A PostgreSQL connection URL (libpq style).
    Postgres(&'a str),
}

/// Failure budget for one kind of throttle key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Failures allowed within `window`; the next one blocks.
    pub failures: u32,
    pub window: Duration,
    /// How long a key over budget stays blocked.
    pub block: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The database: a SQLite file's path, or a PostgreSQL URL
    /// (`postgresql://...` or `postgres://...`); see [`Config::database`].
    pub db: PathBuf,
    /// PostgreSQL: a file holding the password (read when a connection opens,
    /// never kept; a URL carrying a password is refused).
    pub db_password_file: Option<PathBuf>,
    /// PostgreSQL: longest wait for a connection (TCP, TLS, authentication).
    pub db_connect_timeout: Duration,
    /// PostgreSQL: longest wait for one statement's answer (server-side
    /// `statement_timeout` and the client's own bound).
    pub db_statement_timeout: Duration,
    /// PostgreSQL: keep what logins read and drop it when the database's
    /// change notices name it (doc/design.md 6.7); `false` reads the
    /// database at every login (a revoke is refused by the very next request
    /// on every host, at a quarter to a third of the speed).
    pub pg_broadcast: bool,
    /// bcrypt cost for new hashes; lower-cost hashes are upgraded at next login.
    pub bcrypt_cost: u32,
    /// Per client address: defaults 20 failures in 10 minutes block for 10 minutes.
    pub throttle_address: Budget,
    /// Per (account, client address): defaults 10 failures in 10 minutes block for 10 minutes.
    pub throttle_account_address: Budget,
    /// Without a client address (4-field saslauthd requests) an account's failures
    /// beyond this many in the window slow its refusals down (never refuse).
    pub slowdown_failures: u32,
    pub slowdown_window: Duration,
    /// Longest delay suggested for a refusal of a slowed-down account.
    pub slowdown_max_delay: Duration,
    /// Service name aliases, applied after lower-casing.
    pub service_aliases: BTreeMap<String, String>,
    /// Services a "restricted" credential may use (its own list narrows this further).
    pub restricted_services: Vec<String>,
    /// Services whose logins must come over an encrypted connection (names
    /// after `service_aliases`). Enforced where the face can tell (the plugin,
    /// the auth_http face); saslauthd requests cannot say, so there it is not.
    pub tls_required: Vec<String>,
    pub audit_level: AuditLevel,
    /// Audit records older than this are pruned automatically.
    pub audit_retention: Duration,
    /// At most this many audit records are kept (the oldest are pruned first);
    /// 0: no cap. Bounds the database whatever the rate of records.
    pub audit_max_rows: u64,
    /// `[throttle] trusted_networks`: addresses and networks (webmail, IMAP
    /// proxies, NAT) never blocked per address, only per account + address.
    pub trusted_networks: Vec<crate::names::Network>,
    /// `[throttle] ipv6_prefix`: IPv6 clients are counted per network of this
    /// many bits (one end site gets a /64 or more); 128 counts each address.
    pub ipv6_prefix: u8,
    /// Positive cache lifetime; zero turns the cache off.
    pub cache_ttl: Duration,
    /// Successful logins' audit records and last-use stamps are written in batches
    /// at most this old (refusals are written at once).
    pub flush_interval: Duration,
    /// Busy timeout for SQLite locks; past it the answer is "unavailable".
    pub busy_timeout: Duration,
    /// Group given read/write access to a database `saslgate init` creates
    /// (mode 0660 instead of 0600). Empty: no group access.
    pub db_group: String,
    /// Realms whose logins may fall back to a plain account name (`alice` with
    /// realm `mail.example.org` may be the account `alice`). `None`: the host's
    /// own names (what a server that sets its realm to its host name sends) and
    /// `localhost`. Any other realm is only ever checked as `user@realm`.
    pub local_realms: Option<Vec<String>>,
    /// `[http]`: saslgated's nginx `auth_http` face (src/daemon/http/).
    pub http: crate::http_config::HttpConfig,
    /// `[web]`: saslgate-web, the account pages (the `web/` crate).
    pub web: crate::web_config::WebConfig,
    /// The `IP:PORT`s at which this host's mail servers receive logins
    /// proxied by nginx: a proxy ticket issued for one of them is accepted
    /// here (besides the plugin's connection's own local address). Empty: the
    /// saslauthd face accepts no ticket (its requests carry no local address).
    pub proxy_ticket_backends: Vec<std::net::SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        let aliases = [
            ("pop3", "pop"),
            ("pop3s", "pop"),
            ("imaps", "imap"),
            ("submission", "smtp"),
            ("submissions", "smtp"),
            ("smtps", "smtp"),
            ("managesieve", "sieve"),
        ];
        Config {
            db: PathBuf::from(DEFAULT_DB),
            db_password_file: None,
            db_connect_timeout: Duration::from_secs(2),
            db_statement_timeout: Duration::from_secs(2),
            bcrypt_cost: DEFAULT_BCRYPT_COST,
            throttle_address: Budget {
                failures: 20,
                window: Duration::from_secs(600),
                block: Duration::from_secs(600),
            },
            throttle_account_address: Budget {
                failures: 10,
                window: Duration::from_secs(600),
                block: Duration::from_secs(600),
            },
            slowdown_failures: 5,
            slowdown_window: Duration::from_secs(600),
            slowdown_max_delay: Duration::from_secs(8),
            service_aliases: aliases
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            restricted_services: vec!["smtp".to_string()],
            tls_required: Vec::new(),
            audit_level: AuditLevel::All,
            audit_retention: Duration::from_secs(30 * 86400),
            audit_max_rows: 1_000_000,
            trusted_networks: Vec::new(),
            ipv6_prefix: 64,
            cache_ttl: Duration::ZERO,
            flush_interval: Duration::from_secs(1),
            busy_timeout: Duration::from_millis(2000),
            db_group: String::new(),
            local_realms: None,
            pg_broadcast: true,
            http: Default::default(),
            web: Default::default(),
            proxy_ticket_backends: Vec::new(),
        }
    }
}

/// Parses "90d", "10m", "30s", "1h 30m" (humantime syntax) or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    config_file::parse_duration(text).map_err(Error::Usage)
}

/// The host's own names, found once per process (what a mail server that
/// sets its realm to its host name sends; with no realm set, libsasl2 sends
/// an empty realm and no fallback is needed).
fn host_realms() -> &'static [String] {
    static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names = crate::host::own_names();
        names.push("localhost".to_string());
        names
    })
}

impl Config {
    /// The database target: a `postgresql://` or `postgres://` URL selects
    /// PostgreSQL, anything else is a SQLite file's path.
    pub fn database(&self) -> Database<'_> {
        match self.db.to_str() {
            Some(url) if url.starts_with("postgresql://") || url.starts_with("postgres://") => {
                Database::Postgres(url)
            }
            _ => Database::Sqlite(&self.db),
        }
    }

    /// Whether a login to `service` (after the aliases) must come encrypted.
    pub fn requires_tls(&self, service: &str) -> bool {
        self.tls_required.iter().any(|s| s == service)
    }

    /// Whether a login with this realm may fall back to a plain account name.
    /// `realm` is compared case-insensitively.
    pub fn is_local_realm(&self, realm: &str) -> bool {
        let realm = realm.trim();
        let list = self
            .local_realms
            .as_deref()
            .unwrap_or_else(|| host_realms());
        list.iter().any(|r| r.eq_ignore_ascii_case(realm))
    }

    /// The realms [`Config::is_local_realm`] accepts (for `saslgate explain` and logs).
    pub fn local_realm_list(&self) -> Vec<String> {
        self.local_realms
            .clone()
            .unwrap_or_else(|| host_realms().to_vec())
    }

    /// Reads a configuration file. A missing file is an error: the caller decides
    /// whether a default path may be absent (see [`Config::load_optional`]).
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let text = String::from_utf8(text)
            .map_err(|_| Error::Config(format!("{}: not valid UTF-8", path.display())))?;
        Config::read(&text, Some(path))
    }

    /// Like [`Config::load`] but a missing file gives the defaults.
    pub fn load_optional(path: &Path) -> Result<Config> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            _ => Config::load(path),
        }
    }

    /// Parses configuration text (TOML); errors name the line and the key.
    pub fn parse(text: &str) -> Result<Config> {
        Config::read(text, None)
    }

    fn read(text: &str, file: Option<&Path>) -> Result<Config> {
        let mut c: Config = toml::from_str(text)
            .map_err(|e| Error::Config(config_file::deserialize_error(text, file, &e)))?;
        c.validate()
            .map_err(|i| Error::Config(config_file::invalid_error(text, file, &i)))?;
        Ok(c)
    }

    /// The rules a key's type cannot say: ranges, and rules across keys
    /// (`[http]`'s and `[web]`'s too). Also names `tls_required`'s services
    /// through `service_aliases`, which may come later in the file.
    pub fn validate(&mut self) -> std::result::Result<(), Invalid> {
        for (key, d) in [
            ("db_connect_timeout", self.db_connect_timeout),
            ("db_statement_timeout", self.db_statement_timeout),
        ] {
            if d < Duration::from_millis(1) {
                return Err(Invalid::key(key, "must be above zero"));
            }
        }
        if !(4..=31).contains(&self.bcrypt_cost) {
            let got = self.bcrypt_cost;
            return Err(Invalid::key(
                "bcrypt_cost",
                format!("must be 4..=31, got {got}"),
            ));
        }
        if !(1..=128).contains(&self.ipv6_prefix) {
            let got = self.ipv6_prefix;
            return Err(Invalid::key(
                "throttle.ipv6_prefix",
                format!("must be 1..=128, got {got}"),
            ));
        }
        let mut services = Vec::new();
        for s in &self.tls_required {
            let s = crate::names::service_name(s, &self.service_aliases)
                .map_err(|e| Invalid::key("tls_required", format!("{e}: {s:?}")))?;
            if !services.contains(&s) {
                services.push(s);
            }
        }
        self.tls_required = services;
        self.http.validate()?;
        self.web.validate()
    }
}

/// saslgate.conf's top-level keys; any other is refused with this list
/// (a typo must not silently fall back to a default).
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Key {
    Db,
    DbPasswordFile,
    DbConnectTimeout,
    DbStatementTimeout,
    PgBroadcast,
    BcryptCost,
    AuditLevel,
    AuditRetention,
    AuditMaxRows,
    CacheTtl,
    FlushInterval,
    BusyTimeout,
    DbGroup,
    LocalRealms,
    RestrictedServices,
    ServiceAliases,
    TlsRequired,
    Throttle,
    Http,
    Web,
    ProxyTicketBackends,
}

/// `[throttle]`'s keys: they set the flat fields of [`Config`] (the
/// budgets, the slowdown, the trusted networks, the IPv6 grouping).
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum ThrottleKey {
    AddressFailures,
    AddressWindow,
    AddressBlock,
    AccountAddressFailures,
    AccountAddressWindow,
    AccountAddressBlock,
    SlowdownFailures,
    SlowdownWindow,
    SlowdownMaxDelay,
    TrustedNetworks,
    Ipv6Prefix,
}

/// Newtypes whose `Deserialize` is one of `config_file`'s readers, so that a
/// value is parsed (and refused) inside its own deserializer, where the
/// error gets the value's place in the file.
macro_rules! readers {
    ($($name:ident($t:ty) = $read:expr;)*) => {$(
        struct $name($t);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                ($read)(d).map($name)
            }
        }
    )*};
}

readers! {
    Humantime(Duration) = config_file::duration::deserialize;
    Networks(Vec<crate::names::Network>) = config_file::networks;
    Realms(Vec<String>) = |d| config_file::list(d, realm);
    Services(Vec<String>) = |d| config_file::list(d, |s| Ok(s.trim().to_ascii_lowercase()));
    Aliases(Vec<(String, String)>) = |d| {
        let lower = |s: &str| Ok(s.trim().to_ascii_lowercase());
        config_file::table(d, lower, lower)
    };
    TicketBackends(Vec<std::net::SocketAddr>) = |d| config_file::list(d, ticket_backend);
}

fn realm(text: &str) -> std::result::Result<String, String> {
    let r = text.trim().to_lowercase();
    if r.is_empty() || r.contains('@') || r.chars().any(char::is_whitespace) {
        return Err(format!("{r:?} is not a domain name"));
    }
    Ok(r)
}

fn ticket_backend(text: &str) -> std::result::Result<std::net::SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("{text:?} is not IP-address:port (as nginx's Auth-Server and Auth-Port name it)")
    })
}

/// The file read straight onto [`Config::default`]: each key present
/// replaces its default (`service_aliases` adds to the built-in ones).
impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Config, D::Error> {
        d.deserialize_map(ConfigVisitor)
    }
}

struct ConfigVisitor;

impl<'de> Visitor<'de> for ConfigVisitor {
    type Value = Config;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("saslgate.conf's keys")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Config, A::Error> {
        let mut c = Config::default();
        // TOML itself refuses a key given twice.
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Db => c.db = map.next_value()?,
                Key::DbPasswordFile => c.db_password_file = Some(map.next_value()?),
                Key::DbConnectTimeout => c.db_connect_timeout = map.next_value::<Humantime>()?.0,
                Key::DbStatementTimeout => {
                    c.db_statement_timeout = map.next_value::<Humantime>()?.0
                }
                Key::PgBroadcast => c.pg_broadcast = map.next_value()?,
                Key::BcryptCost => c.bcrypt_cost = map.next_value()?,
                Key::AuditLevel => c.audit_level = map.next_value()?,
                Key::AuditRetention => c.audit_retention = map.next_value::<Humantime>()?.0,
                Key::AuditMaxRows => c.audit_max_rows = map.next_value()?,
                Key::CacheTtl => c.cache_ttl = map.next_value::<Humantime>()?.0,
                Key::FlushInterval => c.flush_interval = map.next_value::<Humantime>()?.0,
                Key::BusyTimeout => c.busy_timeout = map.next_value::<Humantime>()?.0,
                Key::DbGroup => c.db_group = map.next_value()?,
                Key::LocalRealms => c.local_realms = Some(map.next_value::<Realms>()?.0),
                Key::RestrictedServices => c.restricted_services = map.next_value::<Services>()?.0,
                Key::ServiceAliases => c.service_aliases.extend(map.next_value::<Aliases>()?.0),
                // Named through service_aliases by validate().
                Key::TlsRequired => c.tls_required = map.next_value()?,
                Key::Throttle => map.next_value_seed(ThrottleTable(&mut c))?,
                Key::Http => c.http = map.next_value()?,
                Key::Web => c.web = map.next_value()?,
                Key::ProxyTicketBackends => {
                    c.proxy_ticket_backends = map.next_value::<TicketBackends>()?.0
                }
            }
        }
        Ok(c)
    }
}

/// `[throttle]`, read onto the flat fields of the [`Config`] being read.
struct ThrottleTable<'a>(&'a mut Config);

impl<'de> DeserializeSeed<'de> for ThrottleTable<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ThrottleTable<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("[throttle]'s keys")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let c = self.0;
        let (address, pair) = (&mut c.throttle_address, &mut c.throttle_account_address);
        while let Some(key) = map.next_key::<ThrottleKey>()? {
            match key {
                ThrottleKey::AddressFailures => address.failures = map.next_value()?,
                ThrottleKey::AddressWindow => address.window = map.next_value::<Humantime>()?.0,
                ThrottleKey::AddressBlock => address.block = map.next_value::<Humantime>()?.0,
                ThrottleKey::AccountAddressFailures => pair.failures = map.next_value()?,
                ThrottleKey::AccountAddressWindow => pair.window = map.next_value::<Humantime>()?.0,
                ThrottleKey::AccountAddressBlock => pair.block = map.next_value::<Humantime>()?.0,
                ThrottleKey::SlowdownFailures => c.slowdown_failures = map.next_value()?,
                ThrottleKey::SlowdownWindow => c.slowdown_window = map.next_value::<Humantime>()?.0,
                ThrottleKey::SlowdownMaxDelay => {
                    c.slowdown_max_delay = map.next_value::<Humantime>()?.0
                }
                ThrottleKey::TrustedNetworks => {
                    c.trusted_networks = map.next_value::<Networks>()?.0
                }
                ThrottleKey::Ipv6Prefix => c.ipv6_prefix = map.next_value()?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
