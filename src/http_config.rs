//! `[http]` and `[http.backends]` of saslgate.conf: where saslgated's
//! `auth_http` face (src/daemon/http/) listens, who may ask it, and where each
//! protocol's logins go. A module of its own so that the configuration does
//! not depend on the daemon (the daemon uses both).

use crate::config_file::{self, Invalid};
use crate::names::Network;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The protocols nginx names in `Auth-Protocol`, and the only keys of
/// `[http.backends]`.
pub const PROTOCOLS: [&str; 3] = ["imap", "pop3", "smtp"];

/// A backend as nginx takes it in `Auth-Server`/`Auth-Port`: an IP address
/// and a port (nginx does not resolve host names there). The address is
/// neither unspecified nor the port 0, since nginx could not connect to it.
pub fn backend_address(text: &str) -> std::result::Result<SocketAddr, String> {
    let t = text.trim();
    let addr = t.parse::<SocketAddr>().map_err(|_| {
        format!(
            "{t:?} is not IP-address:port (127.0.0.1:143, [2001:db8::1]:143): nginx's \
             Auth-Server takes only an IP address, not a host name"
        )
    })?;
    if addr.ip().is_unspecified() || addr.port() == 0 {
        return Err(format!(
            "{t:?}: nginx cannot connect to an unspecified address or port 0"
        ));
    }
    Ok(addr)
}

/// The protocol name of `[http.backends]` and `set-backend`, or a message
/// naming the valid ones.
pub fn protocol(text: &str) -> std::result::Result<&'static str, String> {
    let t = text.trim().to_ascii_lowercase();
    PROTOCOLS
        .iter()
        .find(|p| **p == t)
        .copied()
        .ok_or_else(|| format!("unknown protocol {text:?} (imap, pop3 or smtp)"))
}

/// Where the face listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `address:port` (nginx: `auth_http 127.0.0.1:9143/auth;`).
    Tcp(SocketAddr),
    /// A UNIX socket path (nginx: `auth_http unix:/run/saslgate/http.sock:/auth;`).
    Unix(PathBuf),
}

impl Listen {
    /// `127.0.0.1:9143`, `[::1]:9143` or an absolute path.
    pub fn parse(text: &str) -> std::result::Result<Listen, String> {
        let t = text.trim();
        if t.starts_with('/') {
            return Ok(Listen::Unix(PathBuf::from(t)));
        }
        t.parse::<SocketAddr>().map(Listen::Tcp).map_err(|_| {
            format!("{t:?} is neither address:port (127.0.0.1:9143) nor an absolute socket path")
        })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The face's settings (defaults: not listening, no TCP peers, no backends),
/// read straight from `[http]`; [`HttpConfig::validate`] then checks the
/// ranges and `listen` against `trusted_peers`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(deserialize_with = "listen")]
    pub listen: Option<Listen>,
    /// TCP peers allowed to ask (and whose `Client-IP` is believed): none
    /// unless listed, and a TCP `listen` needs some.
    #[serde(deserialize_with = "config_file::networks")]
    pub trusted_peers: Vec<Network>,
    /// Group of the face's UNIX socket (mode 0660): the group made for
    /// nginx. None: the socket is its owner's only (0600).
    #[serde(deserialize_with = "group")]
    pub group: Option<String>,
    /// Default backend per protocol (`imap`, `pop3`, `smtp`): an IP address
    /// and port, since nginx takes `Auth-Server` only as an address.
    #[serde(deserialize_with = "backends")]
    pub backends: BTreeMap<String, SocketAddr>,
    /// How long a backend hold (`saslgate backend hold`) makes logins wait
    /// (`Auth-Status: WAIT`) before they get a temporary failure instead, so
    /// that nobody waits forever on a hold that was forgotten.
    #[serde(with = "config_file::duration")]
    pub max_hold: Duration,
    /// How long a proxy ticket (`Auth-Pass` after a two-step login) stays
    /// valid: nginx uses it at once, so seconds are plenty.
    #[serde(with = "config_file::duration")]
    pub ticket_lifetime: Duration,
}

/// `[http] max_hold` unless set.
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_secs(300);

/// The longest `[http] ticket_lifetime`: half of what the store accepts
/// (`store::TICKET_MAX_LIFETIME`, 10 minutes, PostgreSQL's trigger), so
/// that clocks of the face, the database and the backends may differ by
/// minutes before a ticket is refused for living too long.
pub const MAX_TICKET_LIFETIME: Duration = Duration::from_secs(300);

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: None,
            trusted_peers: Vec::new(),
            group: None,
            backends: BTreeMap::new(),
            max_hold: DEFAULT_MAX_HOLD,
            ticket_lifetime: Duration::from_secs(60),
        }
    }
}

impl HttpConfig {
    /// Whether a TCP peer may use the face.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        self.trusted_peers.iter().any(|n| n.contains(peer))
    }

    /// TCP needs an explicit `trusted_peers` (a loopback port is open to
    /// every local user, who could rotate `Client-IP`). A TCP address other
    /// than loopback is refused unless some trusted peer is off-host too:
    /// listening wider than the peers allowed only widens what can reach
    /// the refusal path.
    pub fn check_listen(&self, listen: &Listen) -> std::result::Result<(), String> {
        let Listen::Tcp(addr) = listen else {
            return Ok(());
        };
        if self.trusted_peers.is_empty() {
            return Err(format!(
                "[http] listen {addr} is TCP and [http] trusted_peers is empty: list nginx's \
                 address (trusted_peers = [\"127.0.0.1\"]); TCP has no trusted peers by \
                 default, or listen on a UNIX socket with [http] group"
            ));
        }
        let off_host_peer = self.trusted_peers.iter().any(|n| {
            !n.contains(IpAddr::from([127, 0, 0, 1]))
                && !n.contains(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]))
        });
        if addr.ip().is_loopback() || off_host_peer {
            Ok(())
        } else {
            Err(format!(
                "[http] listen {addr} is not a loopback address and trusted_peers lists only loopback"
            ))
        }
    }
}

fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Listen>, D::Error> {
    config_file::text(d, Listen::parse).map(Some)
}

fn group<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    config_file::text(d, |g| match g.trim() {
        "" => Err("empty".to_string()),
        g => Ok(Some(g.to_string())),
    })
}

/// `[http.backends]`: a key per protocol (the names nginx sends, exactly).
fn backends<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, SocketAddr>, D::Error> {
    let proto = |p: &str| {
        if PROTOCOLS.contains(&p) {
            Ok(p.to_string())
        } else {
            Err(format!("unknown protocol {p:?} (imap, pop3 or smtp)"))
        }
    };
    Ok(config_file::table(d, proto, backend_address)?
        .into_iter()
        .collect())
}

impl HttpConfig {
    /// The ranges of `max_hold` and `ticket_lifetime`, and a TCP `listen`'s
    /// peers ([`HttpConfig::check_listen`]).
    pub fn validate(&self) -> Result<(), Invalid> {
        for (key, d) in [
            ("http.max_hold", self.max_hold),
            ("http.ticket_lifetime", self.ticket_lifetime),
        ] {
            if d < Duration::from_secs(1) {
                let d = humantime::format_duration(d);
                return Err(Invalid::key(key, format!("{d} is shorter than one second")));
            }
        }
        if self.ticket_lifetime > MAX_TICKET_LIFETIME {
            let d = humantime::format_duration(self.ticket_lifetime);
            return Err(Invalid::key(
                "http.ticket_lifetime",
                format!(
                    "{d} is outside 1s..5m (nginx uses a ticket at once; the database \
                     refuses a ticket living longer than 10 minutes)"
                ),
            ));
        }
        match &self.listen {
            Some(listen) => self.check_listen(listen).map_err(|message| Invalid {
                keys: vec!["http.listen", "http.trusted_peers"],
                message,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HttpConfig, String> {
        let c: HttpConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|i| i.message)?;
        Ok(c)
    }

    #[test]
    fn keys_and_defaults() {
        let c = parse(
            r#"
            listen = "127.0.0.1:9143"
            trusted_peers = ["127.0.0.1", "10.1.0.0/16"]
            [backends]
            imap = "127.0.0.1:1143"
            smtp = "[::1]:25"
            "#,
        )
        .unwrap();
        assert_eq!(
            c.listen,
            Some(Listen::Tcp("127.0.0.1:9143".parse().unwrap()))
        );
        assert!(c.trusts("10.1.2.3".parse().unwrap()));
        assert!(c.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!c.trusts("127.0.0.2".parse().unwrap()));
        assert_eq!(c.backends["smtp"], "[::1]:25".parse().unwrap());
        assert_eq!(c.max_hold, DEFAULT_MAX_HOLD);
        assert_eq!(
            parse("max_hold = \"90s\"").unwrap().max_hold,
            Duration::from_secs(90)
        );
        assert_eq!(
            parse("max_hold = \"2\"").unwrap().max_hold,
            Duration::from_secs(2)
        );
        let d = HttpConfig::default();
        assert!(d.trusted_peers.is_empty() && !d.trusts("127.0.0.1".parse().unwrap()));
        assert_eq!(
            parse("group = \"saslgate-http\"").unwrap().group.as_deref(),
            Some("saslgate-http")
        );
        assert!(!d.trusts("192.0.2.1".parse().unwrap()));
        assert_eq!(d.ticket_lifetime, Duration::from_secs(60));
        let t = parse(r#"ticket_lifetime = "15s""#).unwrap();
        assert_eq!(t.ticket_lifetime, Duration::from_secs(15));
        assert_eq!(
            parse(r#"listen = "/run/saslgate/http.sock""#)
                .unwrap()
                .listen,
            Some(Listen::Unix("/run/saslgate/http.sock".into()))
        );
    }

    #[test]
    fn refuses_bad_values() {
        assert!(parse(r#"listen = "localhost:9143""#).is_err());
        let e = parse(r#"listen = "127.0.0.1:9143""#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("trusted_peers is empty"), "{e}");
        assert!(parse("group = \" \"").is_err());
        assert!(parse(r#"listen = "192.0.2.1:9143""#).is_err());
        assert!(parse("listen = \"192.0.2.1:9143\"\ntrusted_peers = [\"192.0.2.0/24\"]").is_ok());
        assert!(parse("[backends]\nimap = \"mail.example.org:143\"").is_err());
        assert!(parse("[backends]\nsieve = \"127.0.0.1:4190\"").is_err());
        assert!(parse("listne = \"127.0.0.1:1\"").is_err());
        assert!(parse(r#"trusted_peers = ["nginx"]"#).is_err());
        assert!(parse("[backends]\nimap = \"0.0.0.0:143\"").is_err());
        assert!(parse("[backends]\nimap = \"127.0.0.1:0\"").is_err());
        assert!(parse("max_hold = \"soon\"").is_err());
        assert!(parse("max_hold = \"0s\"").is_err());
        assert_eq!(protocol(" IMAP "), Ok("imap"));
        assert!(protocol("sieve").is_err());
        assert_eq!(
            backend_address("[::1]:143").map(|a| a.to_string()),
            Ok("[::1]:143".to_string())
        );
        assert!(backend_address("mail.example.org:143")
            .unwrap_err()
            .contains("not a host name"));
        assert!(parse(r#"ticket_lifetime = "0s""#).is_err());
        assert!(parse(r#"ticket_lifetime = "2h""#).is_err());
        assert!(parse(r#"ticket_lifetime = "301s""#).is_err());
        assert!(parse(r#"ticket_lifetime = "5m""#).is_ok());
        assert!(parse(r#"ticket_lifetime = "soon""#).is_err());
    }
}
