//! The store: every SQL statement of saslgate, for two backends.
//!
//! - [`interface`](LoginStore): the traits the engine and the CLI hold
//!   (`LoginStore`, `ThrottleStore`, `AdminStore`, and the routing, ticket and
//!   web traits); they never name a backend.
//! - `sql/`: the rules and their SQL, written once over a small executor
//!   (`sql::Sql`) for any backend (`sql::Db`).
//! - [`types`]: the rows the store hands out and takes.
//! - [`dump`] (in `sql/`): one description per copied table, for
//!   `saslgate copy` (`sql/copy.rs` reads and writes by them).
//! - [`sqlite`]: the SQLite backend ([`SqliteStore`]): opening, permissions,
//!   WAL bound, backup and restore, migrations, its executor.
//! - [`pg`]: the PostgreSQL backend (`db = "postgresql://..."`).
//! - `rules`: what an admin change accepts, the same on both.

mod interface;
pub mod pg;
mod rules;
pub(crate) mod sql;
pub mod sqlite;
pub mod types;
pub mod web;

pub use interface::{
    create, open_admin, open_login, AdminStore, LoginStore, QuietCommit, ThrottleStore,
};
pub use sql::aliases::{AliasInfo, BlockInfo};
pub use sql::dump;
pub use sql::routing::{BackendInfo, RoutingAdmin, RoutingReads};
pub use sql::tickets::{TicketRow, TicketStore, TICKET_MAX_LIFETIME, TICKET_SERVICES};
pub use sqlite::{backup, restore, schema, ChangeStamp, SqliteStore, WAL_LIMIT_BYTES};

/// The file a database lives in, where it is one (SQLite): what the pool
/// watches for replacement. `None`: a server's (PostgreSQL).
pub fn database_file(config: &crate::config::Config) -> Option<&std::path::Path> {
    match config.database() {
        crate::config::Database::Sqlite(path) => Some(path),
        crate::config::Database::Postgres(_) => None,
    }
}
