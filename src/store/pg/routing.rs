//! Backend routing on PostgreSQL (see `store/routing.rs` for what the
//! tables mean). The login role may only read these tables; the schema's
//! triggers move the generation on every change.

use super::{get, PgStore};
use crate::error::{Error, Result};
use crate::store::routing::{
    backend_text, merge_backends, protocol_name, BackendInfo, RoutingAdmin, RoutingReads,
};
use crate::store::rules;
use crate::timefmt::now;

fn account_id(s: &PgStore, account: &str) -> Result<i64> {
    let name = rules::account_name(account)?;
    match s.query_opt("SELECT id FROM accounts WHERE name = $1", &[&name])? {
        Some(r) => get(&r, 0),
        None => Err(Error::NotFound(format!("account {name}"))),
    }
}

fn pairs(rows: Vec<tokio_postgres::Row>) -> Result<Vec<(String, i64)>> {
    rows.iter().map(|r| Ok((get(r, 0)?, get(r, 1)?))).collect()
}

impl RoutingReads for PgStore {
    fn account_backend(&self, account: &str, protocol: &str) -> Result<Option<String>> {
        self.query_opt(
            "SELECT b.backend FROM account_backends b JOIN accounts a ON a.id = b.account_id
             WHERE a.name = $1 AND b.protocol = $2",
            &[&account, &protocol],
        )?
        .map(|r| get(&r, 0))
        .transpose()
    }

    fn backend_holds(&self) -> Result<Vec<(String, i64)>> {
        pairs(self.query(
            "SELECT backend, since FROM backend_holds ORDER BY backend",
            &[],
        )?)
    }
}

impl RoutingAdmin for PgStore {
    fn set_account_backend(
        &mut self,
        account: &str,
        protocol: &str,
        backend: Option<&str>,
    ) -> Result<bool> {
        let protocol = protocol_name(protocol)?;
        let backend = backend.map(backend_text).transpose()?;
        self.write(|s| {
            let id = account_id(s, account)?;
            let changed = match &backend {
                Some(b) => s.execute(
                    "INSERT INTO account_backends (account_id, protocol, backend)
                     VALUES ($1, $2, $3)
                     ON CONFLICT (account_id, protocol) DO UPDATE SET backend = EXCLUDED.backend
                     WHERE account_backends.backend <> EXCLUDED.backend",
                    &[&id, &protocol, b],
                )?,
                None => s.execute(
                    "DELETE FROM account_backends WHERE account_id = $1 AND protocol = $2",
                    &[&id, &protocol],
                )?,
            };
            Ok(changed > 0)
        })
    }

    fn account_backends(&self, account: &str) -> Result<Vec<(String, String)>> {
        let id = account_id(self, account)?;
        self.query(
            "SELECT protocol, backend FROM account_backends WHERE account_id = $1 ORDER BY protocol",
            &[&id],
        )?
        .iter()
        .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
        .collect()
    }

    fn hold_backend(&mut self, backend: &str) -> Result<(i64, bool)> {
        let backend = backend_text(backend)?;
        self.write(|s| {
            let inserted = s.execute(
                "INSERT INTO backend_holds (backend, since) VALUES ($1, $2)
                 ON CONFLICT (backend) DO NOTHING",
                &[&backend, &now()],
            )?;
            let r = s.query_one(
                "SELECT since FROM backend_holds WHERE backend = $1",
                &[&backend],
            )?;
            Ok((get(&r, 0)?, inserted > 0))
        })
    }

    fn release_backend(&mut self, backend: &str) -> Result<()> {
        let backend = backend_text(backend)?;
        self.write(|s| {
            let n = s.execute("DELETE FROM backend_holds WHERE backend = $1", &[&backend])?;
            if n == 0 {
                return Err(Error::NotFound(format!("backend {backend} is not on hold")));
            }
            Ok(())
        })
    }

    fn list_backends(&self) -> Result<Vec<BackendInfo>> {
        let counts = pairs(self.query(
            "SELECT backend, count(DISTINCT account_id) FROM account_backends GROUP BY backend",
            &[],
        )?)?;
        Ok(merge_backends(counts, self.backend_holds()?))
    }
}
