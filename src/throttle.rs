//! Throttling of password guessing (doc/design.md step 2), kept in the database so every
//! face and every process shares it.
//!
//! Keys: `a:ADDR` (client address), `p:ACCOUNT|ADDR` (account from that address),
//! `s:ACCOUNT` (the account, from any address or none: the account-wide
//! budget). Address and pair keys block when over budget; `s:` keys never
//! block, so nobody can lock a user out: past the budget they slow the
//! account down, and the engine enforces that delay (`engine/pace.rs`: one
//! verification at a time, the delay between). A right password clears the
//! pair key, not `s:` (that would hand an attacker `slowdown_failures` fresh
//! guesses at each login of the owner): it ends with its window.
//!
//! ADDR is an IPv4 address, or an IPv6 address cut to `[throttle] ipv6_prefix`
//! bits (`2001:db8:1:2::/64`): one end site gets a /64 or more, so counting each
//! IPv6 address apart would give one client unlimited budgets. Addresses in
//! `[throttle] trusted_networks` (webmail, IMAP proxies, NAT) have no `a:` key:
//! one shared address must not lock everyone behind it out; their `p:` keys still
//! block guessing at one account.
//!
//! Malformed requests count on the `a:` key like wrong passwords
//! (`ThrottleStore::record_bad_input`), so a flood of them from one client is throttled.
//!
//! A client repeating the same wrong password (a phone with a stale password) counts
//! once: the pair/account row remembers a keyed fingerprint of the last wrong one.

use crate::config::Config;
pub use crate::names::Network;
use std::net::IpAddr;
use std::time::Duration;

/// The client as the throttle counts it: an IPv4 address, or an IPv6 address
/// cut to `ipv6_prefix` bits (`2001:db8:1:2::/64`; the bare address at 128).
pub fn client_group(ip: IpAddr, ipv6_prefix: u8) -> String {
    let mut out = String::with_capacity(48);
    push_client_group(&mut out, ip, ipv6_prefix);
    out
}

/// [`client_group`], appended to `out` (no string of its own per login).
fn push_client_group(out: &mut String, ip: IpAddr, ipv6_prefix: u8) {
    use std::fmt::Write as _;
    let _ = match ip {
        IpAddr::V6(v6) if ipv6_prefix < 128 => {
            // Always a valid prefix here (under 128).
            let net = ipnet::Ipv6Net::new(v6, ipv6_prefix).map_or(v6, |n| n.network());
            write!(out, "{net}/{ipv6_prefix}")
        }
        other => write!(out, "{other}"),
    };
}

/// Whether `ip` is in `[throttle] trusted_networks`.
pub fn is_trusted(config: &Config, ip: IpAddr) -> bool {
    config.trusted_networks.iter().any(|n| n.contains(ip))
}

#[derive(Debug, Clone)]
pub struct Keys {
    pub address: Option<String>,
    pub pair: Option<String>,
    pub slow: Option<String>,
}

impl Keys {
    pub fn new(account: &str, addr: Option<IpAddr>, config: &Config) -> Keys {
        let mut slow = String::with_capacity(2 + account.len());
        slow.push_str("s:");
        slow.push_str(account);
        let slow = Some(slow);
        match addr {
            Some(ip) => {
                // `p:{account}|{group}`, then `a:{group}` from its tail: one
                // formatting of the address, no string grown per login.
                let mut pair = String::with_capacity(3 + account.len() + 48);
                pair.push_str("p:");
                pair.push_str(account);
                pair.push('|');
                let group_at = pair.len();
                push_client_group(&mut pair, ip, config.ipv6_prefix);
                let address = (!is_trusted(config, ip)).then(|| {
                    let group = &pair[group_at..];
                    let mut a = String::with_capacity(2 + group.len());
                    a.push_str("a:");
                    a.push_str(group);
                    a
                });
                Keys {
                    address,
                    pair: Some(pair),
                    slow,
                }
            }
            None => Keys {
                address: None,
                pair: None,
                slow,
            },
        }
    }

    /// The keys a login's fast path reads, by position: the address key (the
    /// slow-down key when there is no address), and the pair key. The
    /// slow-down key never blocks: the full path's pace reads its delay.
    pub fn read_order(&self) -> [Option<&String>; 2] {
        let first = match &self.pair {
            Some(_) => self.address.as_ref(),
            None => self.slow.as_ref(),
        };
        [first, self.pair.as_ref()]
    }

    /// The address key alone (malformed requests name no account); `None` for
    /// a trusted address.
    pub fn address_only(ip: IpAddr, config: &Config) -> Option<Keys> {
        (!is_trusted(config, ip)).then(|| Keys {
            address: Some(format!("a:{}", client_group(ip, config.ipv6_prefix))),
            pair: None,
            slow: None,
        })
    }
}

/// What the throttle says before any hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Go ahead. `has_account_rows`: a pair row exists (success clears it).
    /// `clean`: the request has an address with no failure on record (its
    /// address row, or its pair row for a trusted address): it goes first
    /// for a paced account's turn (`engine/pace.rs`).
    Open { has_account_rows: bool, clean: bool },
    /// Refuse without hashing for this many more seconds.
    Blocked { retry_after: i64 },
}

/// The state from a request's rows (`(key, failures, blocked_until)`, any order).
pub(crate) fn state_of<'a>(
    keys: &Keys,
    rows: impl IntoIterator<Item = (&'a str, i64, i64)>,
    now: i64,
) -> State {
    let mut has_account_rows = false;
    let mut clean = keys.pair.is_some();
    let mut retry_after = 0;
    for (key, failures, blocked_until) in rows {
        let is = |k: &Option<String>| k.as_deref() == Some(key);
        if (is(&keys.address) || is(&keys.pair)) && blocked_until > now {
            retry_after = retry_after.max(blocked_until - now);
        }
        // Only the pair row: a success clears it, never the address's, nor the
        // account-wide slow-down (it ends with its window).
        if is(&keys.pair) && failures > 0 {
            has_account_rows = true;
        }
        if (is(&keys.address) || is(&keys.pair)) && failures > 0 {
            clean = false;
        }
    }
    if retry_after > 0 {
        State::Blocked { retry_after }
    } else {
        State::Open {
            has_account_rows,
            clean,
        }
    }
}

/// One throttle row as the login path reads it: `(failures, blocked_until)`;
/// `failures` is only ever compared with 0 (SQLite's read gives 0 or 1).
pub type RowState = (i64, i64);

/// The rows of a request's keys, in [`Keys::read_order`] (`None`: no row).
pub type KeyRows = [Option<RowState>; 2];

/// The state from the rows of [`Keys::read_order`].
pub(crate) fn state_of_rows(keys: &Keys, rows: &KeyRows, now: i64) -> State {
    let [k0, k1] = keys.read_order();
    let found = [(k0, rows[0]), (k1, rows[1])]
        .into_iter()
        .filter_map(|(k, r)| Some((k?.as_str(), r?.0, r?.1)));
    state_of(keys, found, now)
}

/// 1 s, 2 s, 4 s... up to `slowdown_max_delay`, once an account is past its
/// slow-down budget (`failures`: its `s:` row's count in the window).
pub(crate) fn slow_delay(cfg: &crate::Config, keys: &Keys, failures: i64) -> Duration {
    if keys.slow.is_none() || failures <= i64::from(cfg.slowdown_failures) {
        return Duration::ZERO;
    }
    let over = (failures - i64::from(cfg.slowdown_failures) - 1).min(20) as u32;
    Duration::from_secs(1u64 << over).min(cfg.slowdown_max_delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks() {
        let n = Network::parse("10.0.0.0/8").unwrap();
        assert!(n.contains(ip("10.255.1.2")));
        assert!(!n.contains(ip("11.0.0.1")));
        assert!(!n.contains(ip("::1")));
        let one = Network::parse(" 192.0.2.10 ").unwrap();
        assert!(one.contains(ip("192.0.2.10")) && !one.contains(ip("192.0.2.11")));
        let v6 = Network::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(Network::parse("::ffff:10.0.0.0/104")
            .unwrap()
            .contains(ip("10.1.1.1")));
        assert!(Network::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        for bad in [
            "10.0.0.0/33",
            "2001:db8::/129",
            "example.org",
            "10.0.0.0/",
            "",
            "1.2.3.4/-1",
        ] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv6_groups() {
        assert_eq!(
            client_group(ip("2001:db8:1:2:3:4:5:6"), 64),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            client_group(ip("2001:db8:1:2:3:4:5:6"), 48),
            "2001:db8:1::/48"
        );
        assert_eq!(client_group(ip("2001:db8::6"), 128), "2001:db8::6");
        assert_eq!(client_group(ip("192.0.2.1"), 64), "192.0.2.1");
        let c = Config {
            trusted_networks: vec![Network::parse("192.0.2.0/24").unwrap()],
            ..Config::default()
        };
        let k = Keys::new("alice", Some(ip("192.0.2.9")), &c);
        assert_eq!(
            (k.address, k.pair.as_deref()),
            (None, Some("p:alice|192.0.2.9"))
        );
        assert!(Keys::address_only(ip("192.0.2.9"), &c).is_none());
        let k = Keys::new("alice", Some(ip("2001:db8::1")), &c);
        assert_eq!(k.address.as_deref(), Some("a:2001:db8::/64"));
    }
}
