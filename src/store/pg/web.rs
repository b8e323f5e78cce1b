//! saslgate-web's sessions and audit pages on PostgreSQL: the same rows and
//! rules as SQLite's (`store::web`). The web role (`saslgate init
//! --web-role`) may read and write `web_sessions` and read `audit`; no other
//! role may touch the sessions.

use super::{get, PgStore};
use crate::error::{Error, Result};
use crate::store::admin::AuditEntry;
use crate::store::web::{first_use_of_each, LastUseSeen, WebSession, WebSessions, LAST_USE_SCAN};
use tokio_postgres::Row;

const SESSION_BY_TOKEN: &str = "SELECT s.id, s.account_id, a.name, a.disabled, s.created,
        s.last_seen, s.reauth_at, s.client_addr, s.user_agent
     FROM web_sessions s JOIN accounts a ON a.id = s.account_id
     WHERE s.token_hash = $1";

const SESSIONS_OF: &str = "SELECT s.id, s.account_id, a.name, a.disabled, s.created,
        s.last_seen, s.reauth_at, s.client_addr, s.user_agent
     FROM web_sessions s JOIN accounts a ON a.id = s.account_id
     WHERE s.account_id = $1 ORDER BY s.id DESC";

impl PgStore {
    /// Refuses a role that may not do what the pages do (the login or proxy
    /// role, a web role not granted since the last migration): saslgate-web
    /// does not start, rather than fail page by page.
    pub(crate) fn check_web_role(&self) -> Result<()> {
        let r = self.query_one(
            "SELECT has_table_privilege('web_sessions', 'SELECT, INSERT, DELETE')
                AND has_table_privilege('audit', 'SELECT')
                AND has_column_privilege('accounts', 'password_hash', 'UPDATE')
                AND has_column_privilege('app_passwords', 'revoked', 'UPDATE'),
                    current_user::text",
            &[],
        )?;
        if get::<bool>(&r, 0)? {
            return Ok(());
        }
        Err(Error::Config(format!(
            "the PostgreSQL role {} may not do what saslgate-web does (its sessions, app \
             passwords, two-step login, password); connect as the web role, made by \
             `saslgate init --web-role NAME` with the admin role's configuration",
            get::<String>(&r, 1)?
        )))
    }
}

fn session_row(r: &Row) -> Result<WebSession> {
    Ok(WebSession {
        id: get(r, 0)?,
        account_id: get(r, 1)?,
        account: get(r, 2)?,
        disabled: get(r, 3)?,
        created: get(r, 4)?,
        last_seen: get(r, 5)?,
        reauth_at: get(r, 6)?,
        client_addr: get(r, 7)?,
        user_agent: get(r, 8)?,
    })
}

impl WebSessions for PgStore {
    fn web_session_insert(
        &mut self,
        token_hash: &[u8; 32],
        account_id: i64,
        now: i64,
        client_addr: &str,
        user_agent: &str,
    ) -> Result<i64> {
        self.write(|s| {
            let r = s.query_one(
                "INSERT INTO web_sessions (token_hash, account_id, created, last_seen, reauth_at,
                     client_addr, user_agent) VALUES ($1, $2, $3, $3, $3, $4, $5) RETURNING id",
                &[
                    &&token_hash[..],
                    &account_id,
                    &now,
                    &client_addr,
                    &user_agent,
                ],
            )?;
            get(&r, 0)
        })
    }

    fn web_session_get(&self, token_hash: &[u8; 32]) -> Result<Option<WebSession>> {
        self.end_read_tx()?;
        self.query_opt(SESSION_BY_TOKEN, &[&&token_hash[..]])?
            .map(|r| session_row(&r))
            .transpose()
    }

    fn web_session_touch(&mut self, id: i64, now: i64) -> Result<()> {
        self.write(|s| {
            s.execute(
                "UPDATE web_sessions SET last_seen = greatest(last_seen, $2) WHERE id = $1",
                &[&id, &now],
            )?;
            Ok(())
        })
    }

    fn web_session_reauth(&mut self, id: i64, now: i64) -> Result<()> {
        self.write(|s| {
            s.execute(
                "UPDATE web_sessions SET reauth_at = $2, last_seen = greatest(last_seen, $2)
                 WHERE id = $1",
                &[&id, &now],
            )?;
            Ok(())
        })
    }

    fn web_session_delete(&mut self, account_id: i64, id: i64) -> Result<bool> {
        self.write(|s| {
            Ok(s.execute(
                "DELETE FROM web_sessions WHERE id = $1 AND account_id = $2",
                &[&id, &account_id],
            )? > 0)
        })
    }

    fn web_sessions_end_others(&mut self, account_id: i64, keep: i64) -> Result<usize> {
        self.write(|s| {
            Ok(s.execute(
                "DELETE FROM web_sessions WHERE account_id = $1 AND id <> $2",
                &[&account_id, &keep],
            )? as usize)
        })
    }

    fn web_sessions_of(&self, account_id: i64) -> Result<Vec<WebSession>> {
        self.end_read_tx()?;
        self.query(SESSIONS_OF, &[&account_id])?
            .iter()
            .map(session_row)
            .collect()
    }

    fn web_sessions_prune(&mut self, idle_before: i64, created_before: i64) -> Result<usize> {
        self.write(|s| {
            Ok(s.execute(
                "DELETE FROM web_sessions WHERE last_seen < $1 OR created < $2",
                &[&idle_before, &created_before],
            )? as usize)
        })
    }

    fn web_audit_page(
        &self,
        account: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        self.end_read_tx()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(
            "SELECT id, ts, account, service, client_addr, outcome, reason, detail, credential
             FROM audit WHERE account = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            &[&account, &before.unwrap_or(i64::MAX), &limit],
        )?
        .iter()
        .map(super::admin::audit_entry)
        .collect()
    }

    fn web_app_last_uses(&self, account: &str) -> Result<Vec<(i64, LastUseSeen)>> {
        self.end_read_tx()?;
        let rows = self.query(
            "SELECT credential, ts, service, client_addr FROM audit
             WHERE id > (SELECT coalesce(max(id), 0) FROM audit) - $2
               AND account = $1 AND outcome = 'accepted' AND credential LIKE 'app-password %'
             ORDER BY id DESC",
            &[&account, &LAST_USE_SCAN],
        )?;
        first_use_of_each(rows.iter().map(|r| {
            Ok((
                get::<String>(r, 0)?,
                LastUseSeen {
                    ts: get(r, 1)?,
                    service: get(r, 2)?,
                    client_addr: get(r, 3)?,
                },
            ))
        }))
    }
}
