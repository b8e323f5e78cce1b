//! `Config`'s unit tests: keys, defaults, and errors naming file, line and key.

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
    let c = Config::parse(r#"proxy_ticket_backends = ["127.0.0.1:10143", "[::1]:110"]"#).unwrap();
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

/// Every key of every table, each away from its default: the expected
/// `Config` is written out whole (no `..Default::default()`), so a field
/// added to `Config` without a key here does not compile.
#[test]
fn every_key_round_trips() {
    let c = Config::parse(
        r#"
        db = "postgresql://h/d"
        db_password_file = "/etc/saslgate/pw"
        db_connect_timeout = "3s"
        db_statement_timeout = "1500ms"
        pg_broadcast = false
        bcrypt_cost = 12
        audit_level = "none"
        audit_retention = "1h 30m"
        audit_max_rows = 0
        cache_ttl = "45"
        flush_interval = "2s"
        busy_timeout = "250ms"
        db_group = "mail"
        local_realms = [" Mail.Example.org "]
        restricted_services = [" IMAP "]
        tls_required = ["pop3", "POP"]
        proxy_ticket_backends = ["127.0.0.1:10143"]
        [service_aliases]
        " Sieve4 " = "SIEVE"
        [throttle]
        address_failures = 1
        address_window = "1m"
        address_block = "2m"
        account_address_failures = 2
        account_address_window = "3m"
        account_address_block = "4m"
        slowdown_failures = 3
        slowdown_window = "5m"
        slowdown_max_delay = "6s"
        trusted_networks = ["192.0.2.0/24"]
        ipv6_prefix = 56
        [http]
        listen = "127.0.0.1:9143"
        trusted_peers = ["127.0.0.1"]
        group = " nginx "
        max_hold = "90s"
        ticket_lifetime = "15s"
        [http.backends]
        pop3 = "127.0.0.1:10110"
        [web]
        listen = "/run/saslgate-web/http"
        public_url = "https://account.example.org/"
        session_idle = "5m"
        session_max = "1h"
        reauth_window = "1m"
        "#,
    )
    .unwrap();
    let mut service_aliases = Config::default().service_aliases;
    service_aliases.insert("sieve4".into(), "sieve".into());
    let secs = Duration::from_secs;
    let network = |n| crate::names::Network::parse(n).unwrap();
    let expected = Config {
        db: PathBuf::from("postgresql://h/d"),
        db_password_file: Some(PathBuf::from("/etc/saslgate/pw")),
        db_connect_timeout: secs(3),
        db_statement_timeout: Duration::from_millis(1500),
        pg_broadcast: false,
        bcrypt_cost: 12,
        throttle_address: Budget {
            failures: 1,
            window: secs(60),
            block: secs(120),
        },
        throttle_account_address: Budget {
            failures: 2,
            window: secs(180),
            block: secs(240),
        },
        slowdown_failures: 3,
        slowdown_window: secs(300),
        slowdown_max_delay: secs(6),
        service_aliases,
        restricted_services: vec!["imap".into()],
        tls_required: vec!["pop".into()],
        audit_level: AuditLevel::None,
        audit_retention: secs(5400),
        audit_max_rows: 0,
        trusted_networks: vec![network("192.0.2.0/24")],
        ipv6_prefix: 56,
        cache_ttl: secs(45),
        flush_interval: secs(2),
        busy_timeout: Duration::from_millis(250),
        db_group: "mail".into(),
        local_realms: Some(vec!["mail.example.org".into()]),
        http: crate::http_config::HttpConfig {
            listen: Some(crate::http_config::Listen::Tcp(
                "127.0.0.1:9143".parse().unwrap(),
            )),
            trusted_peers: vec![network("127.0.0.1")],
            group: Some("nginx".into()),
            backends: [("pop3".to_string(), "127.0.0.1:10110".parse().unwrap())].into(),
            max_hold: secs(90),
            ticket_lifetime: secs(15),
        },
        web: crate::web_config::WebConfig {
            listen: Some(crate::http_config::Listen::Unix(
                "/run/saslgate-web/http".into(),
            )),
            public_url: "https://account.example.org".into(),
            session_idle: secs(300),
            session_max: secs(3600),
            reauth_window: secs(60),
        },
        proxy_ticket_backends: vec!["127.0.0.1:10143".parse().unwrap()],
    };
    assert_eq!(c, expected);
    // An empty file (and every empty table) is the defaults.
    assert_eq!(Config::parse("").unwrap(), Config::default());
    let empty_tables = "[service_aliases]\n[throttle]\n[http]\n[http.backends]\n[web]\n";
    assert_eq!(Config::parse(empty_tables).unwrap(), Config::default());
}

/// `Config::load`'s error for `text`: it names the file.
fn load_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("saslgate.conf");
    std::fs::write(&path, text).unwrap();
    let e = Config::load(&path).unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    let e = e.to_string();
    let file = format!("{}, ", path.display());
    assert!(e.contains(&file), "no file in {e:?}");
    assert_eq!(e.lines().count(), 1, "one line: {e:?}");
    e
}

#[test]
fn unknown_keys_in_every_table_name_file_line_and_key() {
    for (text, place) in [
        (
            "db = \"/x\"\nbcrypt_cots = 5\n",
            "line 2: bcrypt_cots: unknown field",
        ),
        (
            "[throttle]\naddress_failures = 3\nadress_window = \"1m\"\n",
            "line 3: throttle.adress_window: unknown field",
        ),
        ("[thrtotle]\n", "line 1: thrtotle: unknown field"),
        (
            "[http]\nlistne = \"/run/x\"\n",
            "line 2: http.listne: unknown field",
        ),
        (
            "[http.backends]\nimap = \"127.0.0.1:143\"\nsieve = \"127.0.0.1:4190\"\n",
            "line 3: http.backends.sieve: unknown protocol",
        ),
        (
            "\n[web]\nsesion_idle = \"1m\"\n",
            "line 3: web.sesion_idle: unknown field",
        ),
        (
            "throttle = { ipv6_prefx = 48 }\n",
            "line 1: throttle.ipv6_prefx: unknown field",
        ),
    ] {
        let e = load_error(text);
        assert!(e.contains(place), "{text:?}: {e:?} lacks {place:?}");
    }
}

#[test]
fn bad_values_name_file_line_and_key() {
    for (text, place) in [
        // Read by a key's own deserializer (the value's place).
        (
            "[throttle]\naddress_failures = 3\naddress_window = \"soon\"\n",
            "line 3: throttle.address_window: bad duration \"soon\"",
        ),
        (
            "cache_ttl = 60\n",
            "line 1: cache_ttl: invalid type: integer",
        ),
        (
            "[throttle]\nipv6_prefix = 300\n",
            "line 2: throttle.ipv6_prefix: invalid value",
        ),
        (
            "local_realms = [\n  \"ok.example\",\n  \"a@b\",\n]\n",
            "line 3: local_realms: \"a@b\" is not a domain name",
        ),
        (
            "[web]\npublic_url = \"x.org\"\n",
            "line 2: web.public_url: \"x.org\" is not",
        ),
        ("[http]\ngroup = \" \"\n", "line 2: http.group: empty"),
        ("db = \n", "line 1: "),
        // Ranges and rules across keys, checked by validate().
        (
            "\n\nbcrypt_cost = 99\n",
            "line 3: bcrypt_cost: must be 4..=31, got 99",
        ),
        (
            "db_connect_timeout = \"0s\"\n",
            "line 1: db_connect_timeout: must be above zero",
        ),
        ("tls_required = [\"im ap\"]\n", "line 1: tls_required: "),
        (
            "[http]\nticket_lifetime = \"6m\"\n",
            "line 2: http.ticket_lifetime: 6m is outside 1s..5m",
        ),
        (
            "[http]\nmax_hold = \"0s\"\n",
            "line 2: http.max_hold: 0s is shorter than one second",
        ),
        (
            "[http]\n\nlisten = \"127.0.0.1:9143\"\n",
            "line 3: [http] listen 127.0.0.1:9143 is TCP and [http] trusted_peers is empty",
        ),
        // session_idle is the default here: the line is session_max's.
        (
            "[web]\nsession_max = \"10m\"\n",
            "line 2: web.session_idle is longer than web.session_max",
        ),
    ] {
        let e = load_error(text);
        assert!(e.contains(place), "{text:?}: {e:?} lacks {place:?}");
    }
    // Without a file (Config::parse), the line and key still.
    let e = Config::parse("[throttle]\nslowdown_window = \"x\"")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("configuration error: line 2: throttle.slowdown_window: bad duration"),
        "{e}"
    );
}

#[test]
fn durations_in_humantime_form() {
    for (text, want) in [
        ("90d", Duration::from_secs(90 * 86400)),
        ("1h 30m", Duration::from_secs(5400)),
        ("2min", Duration::from_secs(120)),
        ("750ms", Duration::from_millis(750)),
        (" 45 ", Duration::from_secs(45)),
        ("0", Duration::ZERO),
    ] {
        let c = Config::parse(&format!("[throttle]\nslowdown_window = {text:?}")).unwrap();
        assert_eq!(c.slowdown_window, want, "{text}");
        let c = Config::parse(&format!("cache_ttl = {text:?}")).unwrap();
        assert_eq!(c.cache_ttl, want, "{text}");
    }
}

#[test]
fn the_packaged_file_is_the_defaults_but_for_db_group() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/saslgate.conf");
    let c = Config::load(&path).unwrap();
    assert_eq!(c.db_group, "saslgate");
    assert_eq!(
        Config {
            db_group: String::new(),
            ..c
        },
        Config::default()
    );
}
