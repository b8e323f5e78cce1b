//! Proxy tickets on PostgreSQL (see `store/tickets.rs` for what they are).
//!
//! Tickets are minted only through `saslgate_issue_ticket` (SECURITY
//! DEFINER, granted to the proxy role alone: the `auth_http` face's hosts);
//! the login role may only use them up (`UPDATE (used)`) and delete them.
//! The trigger `tickets_bounded` refuses any row out of bounds, whoever
//! writes it, and stamps it with the generation (schema.rs, migration 2 -> 3).

use super::{get, PgStore};
use crate::error::{Error, Result};
use crate::store::tickets::{check_bounds, ticket_lookup, TicketRow, TicketStore};

impl TicketStore for PgStore {
    fn ticket_lookup(&self, ticket: &[u8]) -> [u8; 32] {
        ticket_lookup(&self.hmac_key, ticket)
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
        self.end_read_tx()?;
        let row = self
            .query_one(
                "SELECT saslgate_issue_ticket($1, $2, $3, $4, $5)",
                &[&&lookup[..], &account, &service, &backend, &expires],
            )
            .map_err(|e| match e {
                Error::Storage(text) if text.contains("SQLSTATE 42501") => Error::Storage(format!(
                    "{text}: this role may not issue proxy tickets (the auth_http face's \
                     hosts connect as the proxy role: saslgate init --proxy-role NAME)"
                )),
                other => other,
            })?;
        get(&row, 0)
    }

    /// READ COMMITTED: of concurrent updates of the row, the later ones wait
    /// for the first and re-check `used IS NULL` on the row it left; exactly
    /// one gets it back. The bounds are `TICKET_MAX_LIFETIME` and
    /// `TICKET_SERVICES`, as the trigger's.
    fn consume_ticket(&self, ticket: &[u8], now: i64) -> Result<Option<TicketRow>> {
        let lookup = self.ticket_lookup(ticket);
        self.end_read_tx()?;
        self.query_opt(
            "UPDATE proxy_tickets SET used = $2
             WHERE lookup = $1 AND used IS NULL AND expires > $2 AND expires <= $2 + 600
               AND service IN ('imap', 'pop')
               AND generation = (SELECT value FROM saslgate_meta WHERE key = 'generation')
             RETURNING account_id, service, backend",
            &[&&lookup[..], &now],
        )?
        .map(|r| {
            Ok(TicketRow {
                account_id: get(&r, 0)?,
                service: get(&r, 1)?,
                backend: get(&r, 2)?,
            })
        })
        .transpose()
    }

    fn prune_tickets(&mut self, now: i64) -> Result<()> {
        self.end_read_tx()?;
        self.execute("DELETE FROM proxy_tickets WHERE expires <= $1", &[&now])?;
        Ok(())
    }
}
