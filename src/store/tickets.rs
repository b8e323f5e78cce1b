//! Proxy tickets (table `proxy_tickets`): single-use logins the `auth_http`
//! face issues after a two-step login, for the backend nginx hands the login
//! to (doc/design.md; SECURITY.md, "Proxy tickets"). The SQLite
//! implementation; PostgreSQL's is in `pg/tickets.rs`.
//!
//! Only `HMAC(database key, ticket)` is stored, so the table holds nothing a
//! login could be made with. A ticket is login state like a used one-time
//! code: it does not move the generation, and `saslgate copy` leaves the
//! table out (a ticket lives seconds).

use super::{LoginStore, Store};
use crate::error::Result;
use rusqlite::{params, OptionalExtension};

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
    /// valid until `expires`. `false`: no such account (deleted meanwhile).
    fn insert_ticket(
        &mut self,
        ticket: &[u8],
        account: &str,
        service: &str,
        backend: &str,
        expires: i64,
    ) -> Result<bool>;

    /// Uses a ticket up: one conditional update marks it used if it is
    /// unused and unexpired, and returns what it was issued for. Exactly one
    /// of any number of concurrent callers (processes, hosts) gets the row;
    /// `None`: no such ticket, used already, or expired.
    fn consume_ticket(&self, ticket: &[u8], now: i64) -> Result<Option<TicketRow>>;

    /// Deletes expired tickets (used or not: after expiry neither can log in).
    fn prune_tickets(&mut self, now: i64) -> Result<()>;
}

/// Index key of a ticket under the database key.
pub(crate) fn ticket_lookup(key: &[u8], ticket: &[u8]) -> [u8; 32] {
    crate::crypto::keyed_hash(key, &[PROXY_TICKET_TAG, ticket])
}

impl TicketStore for Store {
    fn ticket_lookup(&self, ticket: &[u8]) -> [u8; 32] {
        self.keyed.hash(&[PROXY_TICKET_TAG, ticket])
    }

    fn insert_ticket(
        &mut self,
        ticket: &[u8],
        account: &str,
        service: &str,
        backend: &str,
        expires: i64,
    ) -> Result<bool> {
        let lookup = self.ticket_lookup(ticket);
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "INSERT INTO proxy_tickets (lookup, account_id, service, backend, expires)
                     SELECT ?1, id, ?3, ?4, ?5 FROM accounts WHERE name = ?2",
                )?
                .execute(params![&lookup[..], account, service, backend, expires])?;
            Ok(n == 1)
        })
    }

    fn consume_ticket(&self, ticket: &[u8], now: i64) -> Result<Option<TicketRow>> {
        let lookup = self.ticket_lookup(ticket);
        // Outside any read transaction: a deferred one that then writes could
        // fail with SQLITE_BUSY_SNAPSHOT instead of waiting for the lock.
        self.end_read()?;
        Ok(self
            .conn
            .prepare_cached(
                "UPDATE proxy_tickets SET used = ?2
                 WHERE lookup = ?1 AND used IS NULL AND expires > ?2
                 RETURNING account_id, service, backend",
            )?
            .query_row(params![&lookup[..], now], |r| {
                Ok(TicketRow {
                    account_id: r.get(0)?,
                    service: r.get(1)?,
                    backend: r.get(2)?,
                })
            })
            .optional()?)
    }

    fn prune_tickets(&mut self, now: i64) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM proxy_tickets WHERE expires <= ?1")?
                .execute([now])?;
            Ok(())
        })
    }
}
