//! Backend routing for the `auth_http` face (tables `account_backends` and
//! `backend_holds`): an account's own backend per protocol, and the backends
//! an operator has put on hold, on both backends. Both tables move the
//! generation through the schema's triggers, so a face may keep what it read
//! for as long as the generation stays. PostgreSQL's login role may only read
//! them.

use super::{account_id, params, Db};
use crate::error::{Error, Result};
use crate::http_config;
use crate::timefmt::now;
use serde::Serialize;

/// The login side's routing reads.
pub trait RoutingReads {
    /// The account's own backend for `protocol` (`imap`, `pop3`, `smtp`), as
    /// stored (`IP:PORT`); `None`: the `[http.backends]` default applies.
    fn account_backend(&self, account: &str, protocol: &str) -> Result<Option<String>>;

    /// Every backend on hold, with the time the hold began.
    fn backend_holds(&self) -> Result<Vec<(String, i64)>>;
}

/// The operator's routing changes and listings.
pub trait RoutingAdmin {
    /// Routes the account's `protocol` logins to `backend`, or (`None`) back to
    /// the default. Returns whether anything changed.
    fn set_account_backend(
        &mut self,
        account: &str,
        protocol: &str,
        backend: Option<&str>,
    ) -> Result<bool>;

    /// The account's own backends: (protocol, backend), by protocol.
    fn account_backends(&self, account: &str) -> Result<Vec<(String, String)>>;

    /// Puts a backend on hold; a backend already held keeps its first time (the
    /// `max_hold` clock does not start again). Returns (since, newly held).
    fn hold_backend(&mut self, backend: &str) -> Result<(i64, bool)>;

    /// Ends a hold (`Error::NotFound` if the backend is not held).
    fn release_backend(&mut self, backend: &str) -> Result<()>;

    /// Every backend that an account is routed to or that is held.
    fn list_backends(&self) -> Result<Vec<BackendInfo>>;
}

/// One line of `saslgate backend list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendInfo {
    pub backend: String,
    /// Accounts routed to it by `set-backend` (any protocol; counted once).
    pub accounts: i64,
    /// When its hold began, if held.
    pub held_since: Option<i64>,
}

/// A backend as stored: the address's canonical text (`127.0.0.1:143`,
/// `[::1]:143`), so that `hold` finds what `set-backend` wrote however it
/// was typed.
pub(crate) fn backend_text(backend: &str) -> Result<String> {
    http_config::backend_address(backend)
        .map(|a| a.to_string())
        .map_err(Error::Usage)
}

pub(crate) fn protocol_name(protocol: &str) -> Result<&'static str> {
    http_config::protocol(protocol).map_err(Error::Usage)
}

/// Merges routed-account counts and holds into one sorted list.
pub(crate) fn merge_backends(
    counts: Vec<(String, i64)>,
    holds: Vec<(String, i64)>,
) -> Vec<BackendInfo> {
    let mut by_backend = std::collections::BTreeMap::<String, BackendInfo>::new();
    for (backend, accounts) in counts {
        by_backend.insert(
            backend.clone(),
            BackendInfo {
                backend,
                accounts,
                held_since: None,
            },
        );
    }
    for (backend, since) in holds {
        by_backend
            .entry(backend.clone())
            .or_insert(BackendInfo {
                backend,
                accounts: 0,
                held_since: None,
            })
            .held_since = Some(since);
    }
    by_backend.into_values().collect()
}

impl<D: Db> RoutingReads for D {
    fn account_backend(&self, account: &str, protocol: &str) -> Result<Option<String>> {
        self.reader()
            .query_opt(
                "SELECT b.backend FROM account_backends b JOIN accounts a ON a.id = b.account_id
                 WHERE a.name = $1 AND b.protocol = $2",
                params![account, protocol],
            )?
            .map(|r| r.text(0))
            .transpose()
    }

    fn backend_holds(&self) -> Result<Vec<(String, i64)>> {
        self.reader()
            .query(
                "SELECT backend, since FROM backend_holds ORDER BY backend",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.text(0)?, r.int(1)?)))
            .collect()
    }
}

impl<D: Db> RoutingAdmin for D {
    fn set_account_backend(
        &mut self,
        account: &str,
        protocol: &str,
        backend: Option<&str>,
    ) -> Result<bool> {
        let protocol = protocol_name(protocol)?;
        let backend = backend.map(backend_text).transpose()?;
        // The triggers on account_backends move the generation.
        self.transaction(|tx| {
            let id = account_id(tx, account)?;
            let changed = match &backend {
                Some(b) => tx.execute(
                    "INSERT INTO account_backends (account_id, protocol, backend)
                     VALUES ($1, $2, $3)
                     ON CONFLICT (account_id, protocol) DO UPDATE SET backend = excluded.backend
                     WHERE account_backends.backend <> excluded.backend",
                    params![id, protocol, b],
                )?,
                None => tx.execute(
                    "DELETE FROM account_backends WHERE account_id = $1 AND protocol = $2",
                    params![id, protocol],
                )?,
            };
            Ok(changed > 0)
        })
    }

    fn account_backends(&self, account: &str) -> Result<Vec<(String, String)>> {
        let db = self.reader();
        let id = account_id(db, account)?;
        db.query(
            "SELECT protocol, backend FROM account_backends WHERE account_id = $1 ORDER BY protocol",
            params![id],
        )?
        .iter()
        .map(|r| Ok((r.text(0)?, r.text(1)?)))
        .collect()
    }

    fn hold_backend(&mut self, backend: &str) -> Result<(i64, bool)> {
        let backend = backend_text(backend)?;
        self.transaction(|tx| {
            let inserted = tx.execute(
                "INSERT INTO backend_holds (backend, since) VALUES ($1, $2)
                 ON CONFLICT (backend) DO NOTHING",
                params![&backend, now()],
            )?;
            let since = tx
                .query_one(
                    "SELECT since FROM backend_holds WHERE backend = $1",
                    params![&backend],
                )?
                .int(0)?;
            Ok((since, inserted > 0))
        })
    }

    fn release_backend(&mut self, backend: &str) -> Result<()> {
        let backend = backend_text(backend)?;
        self.transaction(|tx| {
            let n = tx.execute(
                "DELETE FROM backend_holds WHERE backend = $1",
                params![&backend],
            )?;
            if n == 0 {
                return Err(Error::NotFound(format!("backend {backend} is not on hold")));
            }
            Ok(())
        })
    }

    fn list_backends(&self) -> Result<Vec<BackendInfo>> {
        let counts = self
            .reader()
            .query(
                "SELECT backend, count(DISTINCT account_id) FROM account_backends GROUP BY backend",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.text(0)?, r.int(1)?)))
            .collect::<Result<_>>()?;
        Ok(merge_backends(counts, self.backend_holds()?))
    }
}
