//! saslgate-web on PostgreSQL: the check that it connects as the web role
//! (the sessions and pages themselves are `store::web`, for both backends).

use super::{get, PgStore};
use crate::error::{Error, Result};

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
