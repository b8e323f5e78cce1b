//! Proxy tickets (table `proxy_tickets`): single-use logins the `auth_http`
//! face issues after a two-step login, for the backend nginx hands the login
//! to (doc/design.md; SECURITY.md, "Proxy tickets"), on both backends.
//!
//! Only `HMAC(database key, ticket)` is stored, so the table holds nothing a
//! login could be made with. A ticket is login state like a used one-time
//! code: it does not move the generation, and `saslgate copy` leaves the
//! table out (a ticket lives seconds).
//!
//! Bounds (SECURITY.md, "Proxy tickets"): a ticket lives at most
//! [`TICKET_MAX_LIFETIME`], exists only for [`TICKET_SERVICES`], and carries
//! the generation it was stored at; the consuming statement uses it only
//! while all three still hold, so any change to the database (a password,
//! a disabled account, anything that moves the generation) makes every
//! outstanding ticket worthless. SQLite checks the bounds here (whoever can
//! write the file can write anything); PostgreSQL in its trigger too: tickets
//! are minted there only through `saslgate_issue_ticket` (SECURITY DEFINER,
//! granted to the proxy role alone), and the login role may only use them up
//! (`UPDATE (used)`) and delete them (pg/schema.rs, migration 2 -> 3).

use super::{params, Db, Dialect};
use crate::error::{Error, Result};

/// The longest a ticket may live, in seconds. Written in the SQL as `600`
/// (here and in PostgreSQL's trigger, migration 2 -> 3).
/// `[http] ticket_lifetime` is at most half of it (clock differences).
pub const TICKET_MAX_LIFETIME: i64 = 600;
const _: () = assert!(
    2 * crate::http_config::MAX_TICKET_LIFETIME.as_secs() as i64 <= TICKET_MAX_LIFETIME,
    "[http] ticket_lifetime must stay well within the database's bound"
);

/// The services the `auth_http` face issues tickets for (as the engine names
/// them, after the service aliases). Written in the SQL as `('imap', 'pop')`.
pub const TICKET_SERVICES: [&str; 2] = ["imap", "pop"];

/// Refuses a ticket out of bounds before it is stored (both backends).
pub(crate) fn check_bounds(service: &str, expires: i64, now: i64) -> Result<()> {
    if !TICKET_SERVICES.contains(&service) {
        return Err(Error::Usage(format!(
            "no proxy ticket for service {service:?}: tickets are for imap and pop only"
        )));
    }
    if expires > now + TICKET_MAX_LIFETIME {
        return Err(Error::Usage(format!(
            "no proxy ticket valid {} s: at most {TICKET_MAX_LIFETIME} s",
            expires - now
        )));
    }
    Ok(())
}

/// The first part of a ticket's index key (stored: never changes).
const PROXY_TICKET_TAG: &[u8] = b"proxy-ticket";

/// What a used-up ticket was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketRow {
    pub account_id: i64,
    /// The service, as the engine names it (`imap`, `pop`).
    pub service: String,
    /// The backend, `IP:PORT` as `SocketAddr` displays it.
    pub backend: String,
}

/// The tickets' reads and writes (both backends).
pub trait TicketStore {
    /// The index key of a ticket: `HMAC(database key, tag, ticket)`.
    fn ticket_lookup(&self, ticket: &[u8]) -> [u8; 32];

    /// Stores a ticket (its index key only) for the account named `account`,
    /// valid until `expires`, stamped with the database's generation.
    /// `false`: no such account (deleted meanwhile), or it is disabled.
    /// `Err`: out of bounds (a service not in [`TICKET_SERVICES`], `expires`
    /// more than [`TICKET_MAX_LIFETIME`] from now), or (PostgreSQL) a role
    /// that may not issue tickets.
    fn insert_ticket(
        &mut self,
        ticket: &[u8],
        account: &str,
        service: &str,
        backend: &str,
        expires: i64,
    ) -> Result<bool>;

    /// Uses a ticket up: one conditional update marks it used if it is
    /// unused, unexpired, within the bounds (expiring at most
    /// [`TICKET_MAX_LIFETIME`] after `now`, for one of [`TICKET_SERVICES`])
    /// and stored at the database's current generation, and returns what it
    /// was issued for. Exactly one of any number of concurrent callers
    /// (processes, hosts) gets the row; `None`: no such ticket, used
    /// already, expired, out of bounds or stale (left unused: it can never
    /// qualify again, and the prune pass deletes it at its expiry).
    fn consume_ticket(&self, ticket: &[u8], now: i64) -> Result<Option<TicketRow>>;

    /// Deletes expired tickets (used or not: after expiry neither can log in).
    fn prune_tickets(&mut self, now: i64) -> Result<()>;
}

impl<D: Db> TicketStore for D {
    fn ticket_lookup(&self, ticket: &[u8]) -> [u8; 32] {
        self.keyed_hash(&[PROXY_TICKET_TAG, ticket])
    }

    fn insert_ticket(
        &mut self,
        ticket: &[u8],
        account: &str,
        service: &str,
        backend: &str,
        expires: i64,
    ) -> Result<bool> {
        check_bounds(service, expires, crate::timefmt::now())?;
        let lookup = self.ticket_lookup(ticket);
        let p = params![&lookup[..], account, service, backend, expires];
        match self.reader().dialect() {
            Dialect::Sqlite => self.transaction(|tx| {
                let n = tx.execute(
                    "INSERT INTO proxy_tickets
                         (lookup, account_id, service, backend, expires, generation)
                     SELECT $1, id, $3, $4, $5, {generation}
                     FROM accounts WHERE name = $2 AND NOT disabled",
                    p,
                )?;
                Ok(n == 1)
            }),
            // Only through the function: the proxy role may not insert (the
            // trigger bounds the row and stamps the generation).
            Dialect::Postgres => self
                .autocommit()?
                .query_one("SELECT saslgate_issue_ticket($1, $2, $3, $4, $5)", p)
                .map_err(|e| match e {
                    Error::Storage(text) if text.contains("SQLSTATE 42501") => {
                        Error::Storage(format!(
                            "{text}: this role may not issue proxy tickets (the auth_http \
                             face's hosts connect as the proxy role: saslgate init \
                             --proxy-role NAME)"
                        ))
                    }
                    other => other,
                })?
                .bool(0),
        }
    }

    /// Outside any read transaction: a deferred SQLite one that then writes
    /// could fail with SQLITE_BUSY_SNAPSHOT instead of waiting for the lock.
    /// On PostgreSQL (READ COMMITTED) concurrent updates of the row wait for
    /// the first and re-check `used IS NULL` on the row it left. The bounds
    /// are `TICKET_MAX_LIFETIME` and `TICKET_SERVICES`.
    fn consume_ticket(&self, ticket: &[u8], now: i64) -> Result<Option<TicketRow>> {
        let lookup = self.ticket_lookup(ticket);
        self.autocommit()?
            .query_opt(
                "UPDATE proxy_tickets SET used = $2
                 WHERE lookup = $1 AND used IS NULL AND expires > $2 AND expires <= $2 + 600
                   AND service IN ('imap', 'pop') AND generation = {generation}
                 RETURNING account_id, service, backend",
                params![&lookup[..], now],
            )?
            .map(|r| {
                Ok(TicketRow {
                    account_id: r.int(0)?,
                    service: r.text(1)?,
                    backend: r.text(2)?,
                })
            })
            .transpose()
    }

    fn prune_tickets(&mut self, now: i64) -> Result<()> {
        self.write_one(
            "DELETE FROM proxy_tickets WHERE expires <= $1",
            params![now],
        )?;
        Ok(())
    }
}
