//! `[http]` and `[http.backends]` of saslgate.conf: where saslgated's
//! `auth_http` face (src/daemon/http/) listens, who may ask it, and where each
//! protocol's logins go. A module of its own so that the configuration does
//! not depend on the daemon (the daemon uses both).

use crate::error::{Error, Result};
use crate::names::Network;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// The protocols nginx names in `Auth-Protocol`, and the only keys of
/// `[http.backends]`.
pub const PROTOCOLS: [&str; 3] = ["imap", "pop3", "smtp"];

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

/// The face's settings (defaults: not listening, loopback peers, no backends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    pub listen: Option<Listen>,
    /// Peers allowed to ask (and whose `Client-IP` is believed).
    pub trusted_peers: Vec<Network>,
    /// Default backend per protocol (`imap`, `pop3`, `smtp`): an IP address
    /// and port, since nginx takes `Auth-Server` only as an address.
    pub backends: BTreeMap<String, SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: None,
            trusted_peers: ["127.0.0.0/8", "::1"]
                .iter()
                .filter_map(|n| Network::parse(n).ok())
                .collect(),
            backends: BTreeMap::new(),
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

    /// A TCP address other than loopback is refused unless some trusted peer
    /// is off-host too: listening wider than the peers allowed only widens
    /// what can reach the refusal path.
    pub fn check_listen(&self, listen: &Listen) -> std::result::Result<(), String> {
        let Listen::Tcp(addr) = listen else {
            return Ok(());
        };
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

/// The file's shape of `[http]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    listen: Option<String>,
    trusted_peers: Option<Vec<String>>,
    backends: Option<BTreeMap<String, String>>,
}

impl HttpFile {
    pub fn resolve(self) -> Result<HttpConfig> {
        let bad = |m: String| Error::Config(format!("http.{m}"));
        let mut c = HttpConfig::default();
        if let Some(list) = self.trusted_peers {
            c.trusted_peers = list
                .iter()
                .map(|n| Network::parse(n))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| bad(format!("trusted_peers: {e}")))?;
        }
        if let Some(l) = self.listen {
            let listen = Listen::parse(&l).map_err(|e| bad(format!("listen: {e}")))?;
            c.check_listen(&listen).map_err(Error::Config)?;
            c.listen = Some(listen);
        }
        for (proto, target) in self.backends.unwrap_or_default() {
            if !PROTOCOLS.contains(&proto.as_str()) {
                return Err(bad(format!(
                    "backends: unknown protocol {proto:?} (imap, pop3 or smtp)"
                )));
            }
            let addr = target.trim().parse::<SocketAddr>().map_err(|_| {
                bad(format!(
                    "backends.{proto}: {target:?} is not IP-address:port (nginx needs an address, not a host name)"
                ))
            })?;
            c.backends.insert(proto, addr);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HttpConfig> {
        toml::from_str::<HttpFile>(text)
            .map_err(|e| Error::Config(e.to_string()))?
            .resolve()
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
        let d = HttpConfig::default();
        assert!(d.trusts("127.0.0.9".parse().unwrap()) && d.trusts("::1".parse().unwrap()));
        assert!(!d.trusts("192.0.2.1".parse().unwrap()));
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
        assert!(parse(r#"listen = "192.0.2.1:9143""#).is_err());
        assert!(parse("listen = \"192.0.2.1:9143\"\ntrusted_peers = [\"192.0.2.0/24\"]").is_ok());
        assert!(parse("[backends]\nimap = \"mail.example.org:143\"").is_err());
        assert!(parse("[backends]\nsieve = \"127.0.0.1:4190\"").is_err());
        assert!(parse("listne = \"127.0.0.1:1\"").is_err());
        assert!(parse(r#"trusted_peers = ["nginx"]"#).is_err());
    }
}
