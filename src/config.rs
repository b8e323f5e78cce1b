//! The configuration file (`/etc/saslgate/saslgate.conf`, TOML). Every key is
//! optional; `Config::default()` holds the documented defaults, and
//! `debian/saslgate.conf` (the packaged file) lists every key with its default.

use crate::error::{Error, Result};
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
            http: Default::default(),
            web: Default::default(),
            proxy_ticket_backends: Vec::new(),
        }
    }
}

/// The file's shape: every key optional, unknown keys rejected (typos must not
/// silently fall back to defaults).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    db: Option<PathBuf>,
    db_password_file: Option<PathBuf>,
    db_connect_timeout: Option<String>,
    db_statement_timeout: Option<String>,
    bcrypt_cost: Option<u32>,
    audit_level: Option<AuditLevel>,
    audit_retention: Option<String>,
    audit_max_rows: Option<u64>,
    cache_ttl: Option<String>,
    flush_interval: Option<String>,
    busy_timeout: Option<String>,
    db_group: Option<String>,
    local_realms: Option<Vec<String>>,
    restricted_services: Option<Vec<String>>,
    service_aliases: Option<BTreeMap<String, String>>,
    tls_required: Option<Vec<String>>,
    throttle: Option<ThrottleFile>,
    http: Option<crate::http_config::HttpFile>,
    web: Option<crate::web_config::WebFile>,
    proxy_ticket_backends: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThrottleFile {
    address_failures: Option<u32>,
    address_window: Option<String>,
    address_block: Option<String>,
    account_address_failures: Option<u32>,
    account_address_window: Option<String>,
    account_address_block: Option<String>,
    slowdown_failures: Option<u32>,
    slowdown_window: Option<String>,
    slowdown_max_delay: Option<String>,
    trusted_networks: Option<Vec<String>>,
    ipv6_prefix: Option<u8>,
}

/// Parses "90d", "10m", "30s", "1h 30m" (humantime syntax) or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    if t.is_empty() {
        return Err(Error::Usage("empty duration".into()));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| Error::Usage(format!("duration out of range: {t:?}")));
    }
    humantime::parse_duration(t)
        .map_err(|e| Error::Usage(format!("bad duration {t:?}: {e} (examples: 30s, 10m, 90d)")))
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
        Config::parse(&text).map_err(|e| match e {
            Error::Config(m) | Error::Usage(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Like [`Config::load`] but a missing file gives the defaults.
    pub fn load_optional(path: &Path) -> Result<Config> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            _ => Config::load(path),
        }
    }

    /// Parses configuration text (TOML).
    pub fn parse(text: &str) -> Result<Config> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        let mut c = Config::default();
        let dur = |key: &str, v: &Option<String>, into: &mut Duration| -> Result<()> {
            if let Some(s) = v {
                *into = parse_duration(s).map_err(|e| Error::Config(format!("{key}: {e}")))?;
            }
            Ok(())
        };
        if let Some(db) = file.db {
            c.db = db;
        }
        c.db_password_file = file.db_password_file;
        dur(
            "db_connect_timeout",
            &file.db_connect_timeout,
            &mut c.db_connect_timeout,
        )?;
        dur(
            "db_statement_timeout",
            &file.db_statement_timeout,
            &mut c.db_statement_timeout,
        )?;
        for (key, d) in [
            ("db_connect_timeout", c.db_connect_timeout),
            ("db_statement_timeout", c.db_statement_timeout),
        ] {
            if d < Duration::from_millis(1) {
                return Err(Error::Config(format!("{key} must be above zero")));
            }
        }
        if let Some(cost) = file.bcrypt_cost {
            if !(4..=31).contains(&cost) {
                return Err(Error::Config(format!(
                    "bcrypt_cost must be 4..=31, got {cost}"
                )));
            }
            c.bcrypt_cost = cost;
        }
        if let Some(level) = file.audit_level {
            c.audit_level = level;
        }
        dur(
            "audit_retention",
            &file.audit_retention,
            &mut c.audit_retention,
        )?;
        if let Some(n) = file.audit_max_rows {
            c.audit_max_rows = n;
        }
        dur("cache_ttl", &file.cache_ttl, &mut c.cache_ttl)?;
        dur(
            "flush_interval",
            &file.flush_interval,
            &mut c.flush_interval,
        )?;
        dur("busy_timeout", &file.busy_timeout, &mut c.busy_timeout)?;
        if let Some(g) = file.db_group {
            c.db_group = g;
        }
        if let Some(list) = file.local_realms {
            let mut realms = Vec::new();
            for r in list {
                let r = r.trim().to_lowercase();
                if r.is_empty() || r.contains('@') || r.chars().any(char::is_whitespace) {
                    return Err(Error::Config(format!(
                        "local_realms: {r:?} is not a domain name"
                    )));
                }
                realms.push(r);
            }
            c.local_realms = Some(realms);
        }
        if let Some(list) = file.restricted_services {
            c.restricted_services = list.iter().map(|s| s.trim().to_ascii_lowercase()).collect();
        }
        if let Some(map) = file.service_aliases {
            for (k, v) in map {
                c.service_aliases
                    .insert(k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            }
        }
        if let Some(list) = file.tls_required {
            let mut services = Vec::new();
            for s in list {
                let s = crate::names::service_name(&s, &c.service_aliases)
                    .map_err(|e| Error::Config(format!("tls_required: {e}: {s:?}")))?;
                if !services.contains(&s) {
                    services.push(s);
                }
            }
            c.tls_required = services;
        }
        if let Some(h) = file.http {
            c.http = h.resolve()?;
        }
        if let Some(w) = file.web {
            c.web = w.resolve()?;
        }
        for b in file.proxy_ticket_backends.unwrap_or_default() {
            let addr = b.trim().parse::<std::net::SocketAddr>().map_err(|_| {
                Error::Config(format!(
                    "proxy_ticket_backends: {b:?} is not IP-address:port (as nginx's Auth-Server and Auth-Port name it)"
                ))
            })?;
            c.proxy_ticket_backends.push(addr);
        }
        if let Some(t) = file.throttle {
            if let Some(n) = t.address_failures {
                c.throttle_address.failures = n;
            }
            dur(
                "throttle.address_window",
                &t.address_window,
                &mut c.throttle_address.window,
            )?;
            dur(
                "throttle.address_block",
                &t.address_block,
                &mut c.throttle_address.block,
            )?;
            if let Some(n) = t.account_address_failures {
                c.throttle_account_address.failures = n;
            }
            dur(
                "throttle.account_address_window",
                &t.account_address_window,
                &mut c.throttle_account_address.window,
            )?;
            dur(
                "throttle.account_address_block",
                &t.account_address_block,
                &mut c.throttle_account_address.block,
            )?;
            if let Some(n) = t.slowdown_failures {
                c.slowdown_failures = n;
            }
            dur(
                "throttle.slowdown_window",
                &t.slowdown_window,
                &mut c.slowdown_window,
            )?;
            dur(
                "throttle.slowdown_max_delay",
                &t.slowdown_max_delay,
                &mut c.slowdown_max_delay,
            )?;
            if let Some(list) = t.trusted_networks {
                c.trusted_networks = list
                    .iter()
                    .map(|n| crate::names::Network::parse(n))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| Error::Config(format!("throttle.trusted_networks: {e}")))?;
            }
            if let Some(p) = t.ipv6_prefix {
                if !(1..=128).contains(&p) {
                    return Err(Error::Config(format!(
                        "throttle.ipv6_prefix must be 1..=128, got {p}"
                    )));
                }
                c.ipv6_prefix = p;
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_selects_postgresql() {
        let mut c = Config::default();
        assert_eq!(c.database(), Database::Sqlite(Path::new(DEFAULT_DB)));
        for url in [
            "postgresql://db.example/mail",
            "postgres:///mail?host=/run/pg",
        ] {
            c.db = PathBuf::from(url);
            assert_eq!(c.database(), Database::Postgres(url));
        }
        c.db = PathBuf::from("./postgresql.db");
        assert!(matches!(c.database(), Database::Sqlite(_)));
        let c = Config::parse(
            "db = \"postgresql://h/d\"\ndb_password_file = \"/etc/p\"\ndb_statement_timeout = \"500ms\"",
        )
        .unwrap();
        assert_eq!(c.db_statement_timeout, Duration::from_millis(500));
        assert_eq!(c.db_connect_timeout, Duration::from_secs(2));
        assert_eq!(c.db_password_file, Some(PathBuf::from("/etc/p")));
        assert!(Config::parse("db_connect_timeout = \"0s\"").is_err());
    }

    #[test]
    fn defaults_match_the_documented_budget() {
        let c = Config::default();
        assert_eq!(c.throttle_address.failures, 20);
        assert_eq!(c.throttle_address.window, Duration::from_secs(600));
        assert_eq!(c.audit_retention, Duration::from_secs(30 * 86400));
        assert_eq!(
            c.service_aliases.get("pop3").map(String::as_str),
            Some("pop")
        );
    }

    #[test]
    fn parses_every_key() {
        let c = Config::parse(
            r#"
            db = "/tmp/x.db"
            bcrypt_cost = 5
            audit_level = "failures"
            audit_retention = "7d"
            cache_ttl = "60s"
            restricted_services = ["SMTP", "pop"]
            tls_required = ["IMAP", "pop3", "imap4", "pop"]
            [service_aliases]
            imap4 = "imap"
            [throttle]
            address_failures = 3
            address_window = "1m"
            "#,
        )
        .unwrap();
        assert_eq!(c.db, PathBuf::from("/tmp/x.db"));
        assert_eq!(c.bcrypt_cost, 5);
        assert_eq!(c.audit_level, AuditLevel::Failures);
        assert_eq!(c.audit_retention, Duration::from_secs(7 * 86400));
        assert_eq!(c.cache_ttl, Duration::from_secs(60));
        assert_eq!(c.restricted_services, vec!["smtp", "pop"]);
        // Through the service aliases, the file's own included.
        assert_eq!(c.tls_required, vec!["imap", "pop"]);
        assert!(Config::parse("tls_required = [\"im ap\"]").is_err());
        assert_eq!(
            c.service_aliases.get("imap4").map(String::as_str),
            Some("imap")
        );
        assert_eq!(c.throttle_address.failures, 3);
        assert_eq!(c.throttle_address.window, Duration::from_secs(60));
    }

    #[test]
    fn rejects_typos_and_bad_values() {
        assert!(matches!(
            Config::parse("bcrypt_cots = 5"),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Config::parse("bcrypt_cost = 99"),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Config::parse("cache_ttl = \"soon\""),
            Err(Error::Config(_))
        ));
        assert!(matches!(Config::parse("db = "), Err(Error::Config(_))));
    }

    #[test]
    fn proxy_ticket_backends() {
        assert!(Config::default().proxy_ticket_backends.is_empty());
        let c =
            Config::parse(r#"proxy_ticket_backends = ["127.0.0.1:10143", "[::1]:110"]"#).unwrap();
        assert_eq!(
            c.proxy_ticket_backends,
            vec![
                "127.0.0.1:10143".parse().unwrap(),
                "[::1]:110".parse().unwrap()
            ]
        );
        for bad in ["localhost:143", "127.0.0.1", "127.0.0.1;143", ""] {
            let text = format!("proxy_ticket_backends = [{bad:?}]");
            assert!(Config::parse(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_realms() {
        let c = Config::parse(r#"local_realms = ["Mail.Example.org"]"#).unwrap();
        assert!(c.is_local_realm("mail.example.ORG"));
        assert!(!c.is_local_realm("example.org"));
        assert!(!c.is_local_realm("localhost"));
        let d = Config::default();
        assert!(d.is_local_realm("localhost"));
        assert!(!d.is_local_realm("victim.org"));
        assert!(Config::parse(r#"local_realms = ["a@b"]"#).is_err());
        assert!(Config::parse(r#"local_realms = [""]"#).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("90d").unwrap(),
            Duration::from_secs(90 * 86400)
        );
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-3d").is_err());
    }
}
