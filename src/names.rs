//! Normalisation of what clients send: login names, realms, service names, client
//! addresses. Pure functions, no I/O.

use ipnet::IpNet;
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

/// Longest login name accepted (bytes).
pub const MAX_LOGIN: usize = 256;
/// Longest password (+ code) accepted (bytes). bcrypt uses 72 bytes; anything far
/// beyond is not a password a person typed.
pub const MAX_PASSWORD: usize = 1024;
/// Longest service or realm name accepted.
pub const MAX_NAME: usize = 128;

/// Why a field was rejected before any lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldError {
    Empty(&'static str),
    TooLong(&'static str),
    Nul(&'static str),
    NotUtf8(&'static str),
    BadChars(&'static str),
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldError::Empty(w) => write!(f, "empty {w}"),
            FieldError::TooLong(w) => write!(f, "{w} too long"),
            FieldError::Nul(w) => write!(f, "NUL byte in {w}"),
            FieldError::NotUtf8(w) => write!(f, "{w} is not valid UTF-8"),
            FieldError::BadChars(w) => write!(f, "{w} has characters that are not allowed"),
        }
    }
}

/// Checks a text field: non-empty, bounded, no NUL, valid UTF-8.
pub fn text_field<'a>(
    what: &'static str,
    bytes: &'a [u8],
    max: usize,
) -> Result<&'a str, FieldError> {
    if bytes.is_empty() {
        return Err(FieldError::Empty(what));
    }
    if bytes.len() > max {
        return Err(FieldError::TooLong(what));
    }
    if bytes.contains(&0) {
        return Err(FieldError::Nul(what));
    }
    std::str::from_utf8(bytes).map_err(|_| FieldError::NotUtf8(what))
}

/// Checks a password field: non-empty, bounded, no NUL. Any other bytes are allowed
/// (a password need not be UTF-8).
pub fn password_field(bytes: &[u8]) -> Result<&[u8], FieldError> {
    if bytes.is_empty() {
        return Err(FieldError::Empty("password"));
    }
    if bytes.len() > MAX_PASSWORD {
        return Err(FieldError::TooLong("password"));
    }
    if bytes.contains(&0) {
        return Err(FieldError::Nul("password"));
    }
    Ok(bytes)
}

/// Canonical account name: trimmed, lower-cased. Allowed characters: letters,
/// digits and `. _ - + @`; at most one `@`, not at either end.
pub fn account_name(raw: &str) -> Result<String, FieldError> {
    let name = raw.trim().to_lowercase();
    if name.is_empty() {
        return Err(FieldError::Empty("account name"));
    }
    if name.len() > MAX_LOGIN {
        return Err(FieldError::TooLong("account name"));
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '@'));
    let ats = name.matches('@').count();
    if !ok_chars || ats > 1 || name.starts_with('@') || name.ends_with('@') {
        return Err(FieldError::BadChars("account name"));
    }
    Ok(name)
}

/// The account names a login may refer to, most specific first. The realm rule
/// of every face lives here:
/// - a login that already has a domain (`alice@example.org`, typed into the
///   plugin) is taken as is, whatever the realm;
/// - `alice` with realm `example.org` is `alice@example.org`. That is what
///   libsasl2's `sasl_checkpass` sends to saslauthd for a typed
///   `alice@example.org`, so it must never become another account;
/// - only when `is_local(realm)` (the realm is one of the admin's
///   `local_realms`, by default the host's own names, which a server sends when
///   it sets its realm to its host name; with none set libsasl2 sends an
///   empty realm, which needs no fallback) may it fall back to a plain `alice` account.
pub fn login_candidates(
    login: &str,
    realm: Option<&str>,
    is_local: impl Fn(&str) -> bool,
) -> Result<Vec<String>, FieldError> {
    let base = account_name(login)?;
    let realm = realm.map(str::trim).filter(|r| !r.is_empty());
    match realm {
        Some(r) if !base.contains('@') => {
            let full = account_name(&format!("{base}@{r}"))?;
            if is_local(r) {
                Ok(vec![full, base])
            } else {
                Ok(vec![full])
            }
        }
        _ => Ok(vec![base]),
    }
}

/// Service name: lower-cased, then mapped through the aliases (`pop3` -> `pop`).
pub fn service_name(raw: &str, aliases: &BTreeMap<String, String>) -> Result<String, FieldError> {
    let s = raw.trim().to_ascii_lowercase();
    if s.is_empty() {
        return Err(FieldError::Empty("service"));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*'))
    {
        return Err(FieldError::BadChars("service"));
    }
    Ok(aliases.get(&s).cloned().unwrap_or(s))
}

/// Parses a comma-separated service list (CLI and database form), normalised,
/// de-duplicated, sorted. `*` means every service.
pub fn service_list(
    raw: &str,
    aliases: &BTreeMap<String, String>,
) -> Result<Vec<String>, FieldError> {
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let s = service_name(part, aliases)?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out.sort();
    Ok(out)
}

/// Client address as libsasl2 (`a.b.c.d;port`, `::1;port`) or saslauthd gives it,
/// or a plain address. Anything unparseable is `None` (treated as no address).
pub fn parse_client_addr(raw: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    if text.is_empty() {
        return None;
    }
    let host = text.split(';').next()?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(normalise_ip(ip));
    }
    // "[::1]:25" or "1.2.3.4:25"
    if let Ok(sa) = host.parse::<std::net::SocketAddr>() {
        return Some(normalise_ip(sa.ip()));
    }
    None
}

/// IPv4-mapped IPv6 addresses count as their IPv4 address, so one client cannot
/// double its failure budget by switching notation.
fn normalise_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// An address or network of `[throttle] trusted_networks`, `[http]
/// trusted_peers` and the block list: `192.0.2.10`, `10.0.0.0/8`,
/// `2001:db8::/32`. The arithmetic (prefix check, membership, host bits) is
/// `ipnet`'s; the address is read by std, as everywhere else in saslgate (ipnet's
/// parser takes no bare address and cannot say which part was wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network(IpNet);

impl Network {
    pub fn parse(text: &str) -> std::result::Result<Network, String> {
        let t = text.trim();
        let (addr, prefix) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{t:?} is not an IP address or network (192.0.2.0/24)"))?;
        // ::ffff:a.b.c.d is the IPv4 client (parse_client_addr does the same):
        // its prefix counts the 96 bits of the mapping.
        let (addr, mapping_bits) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), 96),
                None => (addr, 0),
            },
            v4 => (v4, 0),
        };
        let bad_prefix = || format!("{t:?}: bad prefix length");
        let net = match prefix {
            None => IpNet::from(addr),
            Some(p) => {
                let p: u8 = p.parse().map_err(|_| bad_prefix())?;
                let p = p.checked_sub(mapping_bits).ok_or_else(bad_prefix)?;
                IpNet::new(addr, p).map_err(|_| bad_prefix())?
            }
        };
        Ok(Network(net))
    }

    /// Whether `ip` is inside; an IPv6 address is never inside an IPv4
    /// network here (callers pass addresses already normalised).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }

    /// The network address: host bits cleared (`192.0.2.77/24` is `192.0.2.0/24`).
    pub fn masked(&self) -> Network {
        Network(self.0.trunc())
    }
}

/// A set of networks (the admin's block list), asked per client address: one
/// hash lookup per distinct prefix length, however long the list.
#[derive(Debug, Default)]
pub struct NetworkSet {
    /// The distinct (IPv6?, prefix length) of the networks.
    prefixes: Vec<(bool, u8)>,
    /// The networks, host bits cleared.
    nets: HashSet<IpNet>,
}

impl NetworkSet {
    pub fn new<'a>(networks: impl IntoIterator<Item = &'a Network>) -> NetworkSet {
        let mut set = NetworkSet::default();
        for Network(net) in networks {
            let key = (matches!(net, IpNet::V6(_)), net.prefix_len());
            if !set.prefixes.contains(&key) {
                set.prefixes.push(key);
            }
            set.nets.insert(net.trunc());
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address counts as its IPv4 address)
    /// is inside one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = normalise_ip(ip);
        self.prefixes.iter().any(|&(v6, prefix)| {
            v6 == ip.is_ipv6()
                && IpNet::new(ip, prefix).is_ok_and(|net| self.nets.contains(&net.trunc()))
        })
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases() -> BTreeMap<String, String> {
        crate::Config::default().service_aliases
    }

    fn local(r: &str) -> bool {
        r.eq_ignore_ascii_case("mail.example.org")
    }

    #[test]
    fn logins_fold_case_and_join_realm() {
        assert_eq!(
            login_candidates(" Alice ", None, local).unwrap(),
            vec!["alice"]
        );
        assert_eq!(
            login_candidates("alice", Some("Mail.Example.ORG"), local).unwrap(),
            vec!["alice@mail.example.org", "alice"]
        );
        assert_eq!(
            login_candidates("Alice@Example.org", Some("other.org"), local).unwrap(),
            vec!["alice@example.org"]
        );
        assert!(login_candidates("a b", None, local).is_err());
        assert!(login_candidates("@x", None, local).is_err());
        assert!(login_candidates("a@b@c", None, local).is_err());
        assert!(login_candidates("", None, local).is_err());
    }

    #[test]
    fn a_foreign_realm_never_falls_back_to_a_plain_account() {
        // sasl_checkpass sends a typed bob@example.org as bob + realm example.org.
        assert_eq!(
            login_candidates("bob", Some("example.org"), local).unwrap(),
            vec!["bob@example.org"]
        );
        assert_eq!(
            login_candidates("alice", Some("victim.org"), |_| false).unwrap(),
            vec!["alice@victim.org"]
        );
    }

    #[test]
    fn services_map_aliases() {
        assert_eq!(service_name("POP3", &aliases()).unwrap(), "pop");
        assert_eq!(service_name("submission", &aliases()).unwrap(), "smtp");
        assert_eq!(service_name("imap", &aliases()).unwrap(), "imap");
        assert!(service_name("im ap", &aliases()).is_err());
        assert_eq!(
            service_list("smtp, IMAP,pop3,imap", &aliases()).unwrap(),
            vec!["imap", "pop", "smtp"]
        );
    }

    #[test]
    fn client_addresses() {
        assert_eq!(
            parse_client_addr(b"127.0.0.2;4567"),
            Some("127.0.0.2".parse().unwrap())
        );
        assert_eq!(parse_client_addr(b"::1;25"), Some("::1".parse().unwrap()));
        assert_eq!(
            parse_client_addr(b"::ffff:10.1.2.3"),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(parse_client_addr(b"[::1]:25"), Some("::1".parse().unwrap()));
        assert_eq!(parse_client_addr(b"garbage"), None);
        assert_eq!(parse_client_addr(b"\xff\xfe"), None);
    }

    #[test]
    fn network_sets() {
        let nets: Vec<Network> = [
            "192.0.2.77/24",
            "10.1.2.3",
            "2001:db8::/32",
            "::ffff:198.51.100.0/120",
        ]
        .iter()
        .map(|t| Network::parse(t).unwrap().masked())
        .collect();
        let shown: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            shown,
            [
                "192.0.2.0/24",
                "10.1.2.3/32",
                "2001:db8::/32",
                "198.51.100.0/24"
            ]
        );
        let set = NetworkSet::new(&nets);
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        for inside in [
            "192.0.2.1",
            "192.0.2.255",
            "10.1.2.3",
            "2001:db8:ffff::1",
            "::ffff:192.0.2.9",
            "198.51.100.7",
        ] {
            assert!(set.contains(ip(inside)), "{inside}");
        }
        for outside in ["192.0.3.1", "10.1.2.4", "2001:db9::1", "::1", "0.0.0.0"] {
            assert!(!set.contains(ip(outside)), "{outside}");
        }
        assert!(NetworkSet::new(&[]).is_empty());
        // As written until masked; a mapped network counts the mapping's 96 bits.
        assert_eq!(
            Network::parse("192.0.2.77/24").unwrap().to_string(),
            "192.0.2.77/24"
        );
        for bad in ["::ffff:10.0.0.0/95", "::ffff:10.0.0.0/129", "10.0.0.0/x"] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Network::parse("::ffff:10.0.0.0/96").unwrap().to_string(),
            "10.0.0.0/0"
        );
        let all = NetworkSet::new(&[Network::parse("0.0.0.0/0").unwrap()]);
        assert!(all.contains(ip("203.0.113.5")) && !all.contains(ip("2001:db8::1")));
    }

    #[test]
    fn fields() {
        assert!(matches!(
            text_field("login", b"", 10),
            Err(FieldError::Empty(_))
        ));
        assert!(matches!(
            text_field("login", b"a\0b", 10),
            Err(FieldError::Nul(_))
        ));
        assert!(matches!(
            text_field("login", b"\xff", 10),
            Err(FieldError::NotUtf8(_))
        ));
        assert!(matches!(
            text_field("login", &[b'a'; 11], 10),
            Err(FieldError::TooLong(_))
        ));
        assert!(password_field(&vec![b'x'; 64 * 1024]).is_err());
        assert!(password_field(b"\xff\xfe ok").is_ok());
    }
}
