//! saslgate-web's storage (the `web/` crate): its sessions and the account's
//! own audit pages. A session is stored only as a keyed hash of its token
//! (`HMAC(key, "web-session", token)`, the database's own key), so a copy of
//! the table signs nobody in, and every host using the same database knows
//! every session. The web program reaches the store only through
//! [`WebStore`]; both backends' implementation is here. On PostgreSQL the web
//! role (`saslgate init --web-role`) may read and write `web_sessions` and
//! read `audit`; no other role may touch the sessions.

use super::pg::PgStore;
use super::sql::admin::audit_entry;
use super::sql::{params, Db, SqlRow};
use super::{AdminStore, SqliteStore};
use crate::config::{Config, Database};
use crate::error::Result;
use crate::store::types::AuditEntry;

/// One signed-in session as the pages need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    /// The row's id (shown on the sessions page to end one; not a secret).
    pub id: i64,
    pub account_id: i64,
    /// Canonical account name.
    pub account: String,
    /// The account is disabled: the session is ended at its next use.
    pub disabled: bool,
    pub created: i64,
    pub last_seen: i64,
    /// When the master password was last typed in this session.
    pub reauth_at: i64,
    pub client_addr: String,
    pub user_agent: String,
}

/// What the web program stores besides the admin changes it makes.
pub trait WebSessions {
    /// Stores a new session (its token's keyed hash); returns its id.
    fn web_session_insert(
        &mut self,
        token_hash: &[u8; 32],
        account_id: i64,
        now: i64,
        client_addr: &str,
        user_agent: &str,
    ) -> Result<i64>;
    fn web_session_get(&self, token_hash: &[u8; 32]) -> Result<Option<WebSession>>;
    /// Marks the session used at `now` (idle timeout).
    fn web_session_touch(&mut self, id: i64, now: i64) -> Result<()>;
    /// The master password was typed again at `now` (re-authentication).
    fn web_session_reauth(&mut self, id: i64, now: i64) -> Result<()>;
    /// Ends one session of an account; `false` if it was not there.
    fn web_session_delete(&mut self, account_id: i64, id: i64) -> Result<bool>;
    /// Ends every session of the account but `keep`; returns how many.
    fn web_sessions_end_others(&mut self, account_id: i64, keep: i64) -> Result<usize>;
    /// The account's sessions, newest first.
    fn web_sessions_of(&self, account_id: i64) -> Result<Vec<WebSession>>;
    /// Deletes sessions idle since before `idle_before` or created before
    /// `created_before`.
    fn web_sessions_prune(&mut self, idle_before: i64, created_before: i64) -> Result<usize>;
    /// The account's audit records, newest first: `limit` of them with an id
    /// below `before` (`None`: the newest).
    fn web_audit_page(
        &self,
        account: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>>;
    /// The last accepted login of each of the account's app passwords found
    /// among the newest [`LAST_USE_SCAN`] audit records: app password id ->
    /// (time, service, client address).
    fn web_app_last_uses(&self, account: &str) -> Result<Vec<(i64, LastUseSeen)>>;
}

/// How many of the newest audit records the app-password list looks through
/// for each one's last service and address (the audit has no per-account
/// index: it would cost every login).
pub const LAST_USE_SCAN: i64 = 50_000;

/// Where an app password was last used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastUseSeen {
    pub ts: i64,
    pub service: Option<String>,
    pub client_addr: Option<String>,
}

/// The store saslgate-web holds: admin changes and its sessions.
pub trait WebStore: AdminStore + WebSessions {}
impl<T: AdminStore + WebSessions> WebStore for T {}

/// Opens the configured database for saslgate-web.
pub fn open_web(config: &Config) -> Result<Box<dyn WebStore>> {
    match config.database() {
        Database::Sqlite(_) => Ok(Box::new(SqliteStore::open(config)?)),
        Database::Postgres(_) => {
            let store = PgStore::open(config)?;
            store.check_web_role()?;
            Ok(Box::new(store))
        }
    }
}

/// The app password id in an audit record's credential
/// ("app-password ID (LABEL)"), if it is one.
pub(crate) fn app_password_id(credential: &str) -> Option<i64> {
    credential
        .strip_prefix("app-password ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<i64>().ok())
}

/// Keeps the first (newest) use of each app password.
pub(crate) fn first_use_of_each(
    rows: impl IntoIterator<Item = Result<(String, LastUseSeen)>>,
) -> Result<Vec<(i64, LastUseSeen)>> {
    let mut seen: Vec<(i64, LastUseSeen)> = Vec::new();
    for row in rows {
        let (credential, last) = row?;
        if let Some(id) = app_password_id(&credential) {
            if !seen.iter().any(|(i, _)| *i == id) {
                seen.push((id, last));
            }
        }
    }
    Ok(seen)
}

const SESSION_BY_TOKEN: &str = "SELECT s.id, s.account_id, a.name, a.disabled, s.created,
        s.last_seen, s.reauth_at, s.client_addr, s.user_agent
     FROM web_sessions s JOIN accounts a ON a.id = s.account_id
     WHERE s.token_hash = $1";

const SESSIONS_OF: &str = "SELECT s.id, s.account_id, a.name, a.disabled, s.created,
        s.last_seen, s.reauth_at, s.client_addr, s.user_agent
     FROM web_sessions s JOIN accounts a ON a.id = s.account_id
     WHERE s.account_id = $1 ORDER BY s.id DESC";

fn session_row(r: &SqlRow) -> Result<WebSession> {
    Ok(WebSession {
        id: r.int(0)?,
        account_id: r.int(1)?,
        account: r.text(2)?,
        disabled: r.bool(3)?,
        created: r.int(4)?,
        last_seen: r.int(5)?,
        reauth_at: r.int(6)?,
        client_addr: r.text(7)?,
        user_agent: r.text(8)?,
    })
}

/// Reads outside any read transaction (the pages see each other's writes).
impl<D: Db> WebSessions for D {
    fn web_session_insert(
        &mut self,
        token_hash: &[u8; 32],
        account_id: i64,
        now: i64,
        client_addr: &str,
        user_agent: &str,
    ) -> Result<i64> {
        self.transaction(|tx| {
            tx.query_one(
                "INSERT INTO web_sessions (token_hash, account_id, created, last_seen, reauth_at,
                     client_addr, user_agent) VALUES ($1, $2, $3, $3, $3, $4, $5) RETURNING id",
                params![&token_hash[..], account_id, now, client_addr, user_agent],
            )?
            .int(0)
        })
    }

    fn web_session_get(&self, token_hash: &[u8; 32]) -> Result<Option<WebSession>> {
        self.autocommit()?
            .query_opt(SESSION_BY_TOKEN, params![&token_hash[..]])?
            .map(|r| session_row(&r))
            .transpose()
    }

    fn web_session_touch(&mut self, id: i64, now: i64) -> Result<()> {
        self.transaction(|tx| {
            tx.execute(
                "UPDATE web_sessions SET last_seen = greatest(last_seen, $2) WHERE id = $1",
                params![id, now],
            )?;
            Ok(())
        })
    }

    fn web_session_reauth(&mut self, id: i64, now: i64) -> Result<()> {
        self.transaction(|tx| {
            tx.execute(
                "UPDATE web_sessions SET reauth_at = $2, last_seen = greatest(last_seen, $2)
                 WHERE id = $1",
                params![id, now],
            )?;
            Ok(())
        })
    }

    fn web_session_delete(&mut self, account_id: i64, id: i64) -> Result<bool> {
        self.transaction(|tx| {
            Ok(tx.execute(
                "DELETE FROM web_sessions WHERE id = $1 AND account_id = $2",
                params![id, account_id],
            )? > 0)
        })
    }

    fn web_sessions_end_others(&mut self, account_id: i64, keep: i64) -> Result<usize> {
        self.transaction(|tx| {
            Ok(tx.execute(
                "DELETE FROM web_sessions WHERE account_id = $1 AND id <> $2",
                params![account_id, keep],
            )? as usize)
        })
    }

    fn web_sessions_of(&self, account_id: i64) -> Result<Vec<WebSession>> {
        self.autocommit()?
            .query(SESSIONS_OF, params![account_id])?
            .iter()
            .map(session_row)
            .collect()
    }

    fn web_sessions_prune(&mut self, idle_before: i64, created_before: i64) -> Result<usize> {
        self.transaction(|tx| {
            Ok(tx.execute(
                "DELETE FROM web_sessions WHERE last_seen < $1 OR created < $2",
                params![idle_before, created_before],
            )? as usize)
        })
    }

    fn web_audit_page(
        &self,
        account: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.autocommit()?
            .query(
                "SELECT id, ts, account, service, client_addr, outcome, reason, detail, credential
                 FROM audit WHERE account = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                params![account, before.unwrap_or(i64::MAX), limit],
            )?
            .iter()
            .map(audit_entry)
            .collect()
    }

    fn web_app_last_uses(&self, account: &str) -> Result<Vec<(i64, LastUseSeen)>> {
        let rows = self.autocommit()?.query(
            "SELECT credential, ts, service, client_addr FROM audit
             WHERE id > (SELECT coalesce(max(id), 0) FROM audit) - $2
               AND account = $1 AND outcome = 'accepted' AND credential LIKE 'app-password %'
             ORDER BY id DESC",
            params![account, LAST_USE_SCAN],
        )?;
        first_use_of_each(rows.iter().map(|r| {
            Ok((
                r.text(0)?,
                LastUseSeen {
                    ts: r.int(1)?,
                    service: r.opt_text(2)?,
                    client_addr: r.opt_text(3)?,
                },
            ))
        }))
    }
}
