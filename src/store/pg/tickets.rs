//! Proxy tickets on PostgreSQL (see `store/tickets.rs` for what they are).
//! The login role may insert, use up (`UPDATE (used)`) and delete tickets:
//! the face that issues them and the backends that use them run as it.

use super::{get, PgStore};
use crate::error::Result;
use crate::store::tickets::{ticket_lookup, TicketRow, TicketStore};

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
        let lookup = self.ticket_lookup(ticket);
        self.end_read_tx()?;
        let n = self.execute(
            "INSERT INTO proxy_tickets (lookup, account_id, service, backend, expires)
             SELECT $1, id, $3, $4, $5 FROM accounts WHERE name = $2",
            &[&&lookup[..], &account, &service, &backend, &expires],
        )?;
        Ok(n == 1)
    }

    /// READ COMMITTED: of concurrent updates of the row, the later ones wait
    /// for the first and re-check `used IS NULL` on the row it left; exactly
    /// one gets it back.
    fn consume_ticket(&self, ticket: &[u8], now: i64) -> Result<Option<TicketRow>> {
        let lookup = self.ticket_lookup(ticket);
        self.end_read_tx()?;
        self.query_opt(
            "UPDATE proxy_tickets SET used = $2
             WHERE lookup = $1 AND used IS NULL AND expires > $2
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
