//! Proxy tickets in the engine: [`Gate::issue_ticket`] (the `auth_http` face
//! after a two-step login) and the ticket step of the credential check.
//!
//! A ticket is `sgt.` followed by 32 base64url characters (24 random bytes,
//! 192 bits). The `.` is in no generated secret's alphabet, so a ticket can
//! never be taken for an app password or a one-time code, and the engine
//! knows from the shape alone when to try the ticket path. A master password
//! of that shape still works: a ticket that is not found falls through to
//! the other checks.

use super::Gate;
use crate::error::Error;
use crate::secret::SecretBytes;
use crate::store::types::AccountRow;
use crate::store::{LoginStore, TicketRow};
use std::net::{IpAddr, SocketAddr};

/// What a ticket must match besides its account: the request's service and
/// the address the mail server received the connection on, if the face knows.
pub(super) struct Binding<'a> {
    pub(super) service: &'a str,
    pub(super) local: Option<SocketAddr>,
}

/// What a used-up ticket proved.
pub(super) enum TicketCheck {
    /// Issued for this account, service and a backend this host serves.
    Good,
    /// Anything else (for logs and the audit trail).
    Bad(String),
}

/// What every ticket starts with.
pub const TICKET_PREFIX: &[u8] = b"sgt.";
/// Random bytes in a ticket.
const TICKET_BYTES: usize = 24;
// Tickets carry at least 128 bits (SECURITY.md, "Proxy tickets").
const _: () = assert!(TICKET_BYTES * 8 >= 128);
/// A ticket's length: the prefix and the random bytes in base64url, unpadded.
pub const TICKET_LEN: usize = TICKET_PREFIX.len() + TICKET_BYTES.div_ceil(3) * 4;

/// Whether `password` has the shape of a proxy ticket.
pub fn is_ticket_shaped(password: &[u8]) -> bool {
    password.len() == TICKET_LEN
        && password.starts_with(TICKET_PREFIX)
        && password[TICKET_PREFIX.len()..]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A mail server's address as a face reports it: `IP;PORT` (libsasl2's
/// iplocalport), `IP:PORT` or `[IPv6]:PORT`; an IPv4-mapped IPv6 address is
/// taken as the IPv4 address.
pub fn parse_backend(text: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(text).ok()?.trim();
    let addr = match text.rsplit_once(';') {
        Some((ip, port)) => SocketAddr::new(ip.parse().ok()?, port.parse().ok()?),
        None => text.parse().ok()?,
    };
    Some(unmapped(addr))
}

fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

impl Gate {
    /// Issues a proxy ticket: valid once, for `[http] ticket_lifetime` (at
    /// most `TICKET_MAX_LIFETIME`), for a login of `account` (its canonical
    /// name) to `service` (imap or pop, after the aliases) at `backend`, until
    /// the database's next change (the generation it is stamped with).
    /// Only its keyed hash is stored; the ticket itself exists only in the
    /// returned buffer (wiped when dropped) and in what the caller sends.
    pub fn issue_ticket(
        &self,
        account: &str,
        service: &str,
        backend: SocketAddr,
    ) -> crate::Result<SecretBytes> {
        let service = crate::names::service_name(service, &self.config.service_aliases)
            .map_err(|e| Error::Usage(e.to_string()))?;
        if !crate::store::TICKET_SERVICES.contains(&service.as_str()) {
            return Err(Error::Usage(format!(
                "no proxy ticket for service {service:?}: tickets are for imap and pop only"
            )));
        }
        let random =
            SecretBytes::new(crate::crypto::random_bytes(TICKET_BYTES).map_err(Error::Storage)?);
        let mut text = Vec::with_capacity(TICKET_LEN);
        text.extend_from_slice(TICKET_PREFIX);
        let start = text.len();
        text.resize(TICKET_LEN, 0);
        data_encoding::BASE64URL_NOPAD.encode_mut(random.as_bytes(), &mut text[start..]);
        let ticket = SecretBytes::new(text);
        let lifetime = self.config.http.ticket_lifetime.as_secs().max(1) as i64;
        let expires = crate::timefmt::now() + lifetime;
        let backend = unmapped(backend).to_string();
        let stored = self.with_connection(|s| {
            s.insert_ticket(ticket.as_bytes(), account, &service, &backend, expires)
        })?;
        if !stored {
            return Err(Error::NotFound(format!("account {account}")));
        }
        Ok(ticket)
    }

    /// Step 4a, before anything else looks at the password: a ticket-shaped
    /// password is used up at once (so a ticket seen here is burnt whatever
    /// follows), then must have been issued for this account, this service
    /// and a backend this host serves. `None`: no such ticket (used, expired
    /// or never issued): the other checks decide.
    pub(super) fn check_ticket(
        &self,
        store: &mut dyn LoginStore,
        account: Option<&AccountRow>,
        binding: &Binding<'_>,
        password: &[u8],
        now: i64,
    ) -> crate::Result<Option<TicketCheck>> {
        if !is_ticket_shaped(password) {
            return Ok(None);
        }
        let Some(ticket) = store.consume_ticket(password, now)? else {
            return Ok(None);
        };
        let bad = |detail: String| Ok(Some(TicketCheck::Bad(detail)));
        let Some(acct) = account else {
            self.dummy_verify(store, password)?;
            return bad(format!(
                "unknown account (a proxy ticket of account id {} was used up)",
                ticket.account_id
            ));
        };
        match self.ticket_binding_refusal(acct, binding, &ticket) {
            Some(refusal) => bad(refusal),
            None => Ok(Some(TicketCheck::Good)),
        }
    }

    /// Why a used-up ticket does not log this request in, if it does not.
    fn ticket_binding_refusal(
        &self,
        acct: &AccountRow,
        input: &Binding<'_>,
        ticket: &TicketRow,
    ) -> Option<String> {
        if ticket.account_id != acct.id {
            return Some(format!(
                "proxy ticket issued for account id {}, used up",
                ticket.account_id
            ));
        }
        if ticket.service != input.service {
            return Some(format!(
                "proxy ticket issued for service {}, used up",
                ticket.service
            ));
        }
        // Opt-in per host: a ticket is accepted only where the host says which
        // backends it serves (the proxy role's hosts mint tickets; a mail host
        // that takes none cannot be logged in to with one).
        let served = &self.config.proxy_ticket_backends;
        if served.is_empty() {
            return Some(
                "proxy ticket refused and used up: this host accepts none \
                 (proxy_ticket_backends is empty)"
                    .into(),
            );
        }
        let issued_for = parse_backend(ticket.backend.as_bytes());
        let listed = issued_for.is_some_and(|b| served.iter().any(|&s| unmapped(s) == b));
        // Where the face knows the address the connection arrived on (the
        // plugin), the ticket must also have been issued for that address.
        let here = input.local.is_none_or(|l| issued_for == Some(l));
        if !(listed && here) {
            return Some(format!(
                "proxy ticket issued for backend {}, not one this host serves, used up",
                ticket.backend
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_recognised_and_unlike_other_secrets() {
        assert_eq!(TICKET_LEN, 36);
        let t = b"sgt.AbCdEfGhIjKlMnOpQrStUvWxYz012-_9";
        assert_eq!(t.len(), TICKET_LEN);
        assert!(is_ticket_shaped(t));
        assert!(!is_ticket_shaped(&t[..35]));
        assert!(!is_ticket_shaped(b"sgx.AbCdEfGhIjKlMnOpQrStUvWxYz012-_9"));
        assert!(!is_ticket_shaped(b"sgt.AbCdEfGhIjKlMnOpQrStUvWxYz012-=9"));
        for len in [crate::crypto::APP_PASSWORD_LEN, crate::crypto::CODE_LEN] {
            assert!(crate::crypto::canonical_generated(t, len).is_none());
        }
    }

    #[test]
    fn backend_addresses_in_every_form() {
        let v4: SocketAddr = "127.0.0.1:10143".parse().unwrap();
        assert_eq!(parse_backend(b"127.0.0.1;10143"), Some(v4));
        assert_eq!(parse_backend(b"127.0.0.1:10143"), Some(v4));
        assert_eq!(parse_backend(b"::ffff:127.0.0.1;10143"), Some(v4));
        assert_eq!(parse_backend(b"[::ffff:127.0.0.1]:10143"), Some(v4));
        let v6: SocketAddr = "[2001:db8::1]:143".parse().unwrap();
        assert_eq!(parse_backend(b"2001:db8::1;143"), Some(v6));
        assert_eq!(parse_backend(b"[2001:db8::1]:143"), Some(v6));
        for bad in [
            &b"127.0.0.1"[..],
            b"host;143",
            b"127.0.0.1;x",
            b"",
            b"\xff;1",
        ] {
            assert_eq!(parse_backend(bad), None);
        }
    }
}
