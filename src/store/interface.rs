//! The storage interface: what the engine needs for a login ([`LoginStore`])
//! and what the `saslgate` command needs besides ([`AdminStore`]). Every SQL
//! statement lives behind these traits in `src/store/`; the engine and the CLI
//! hold a `Box<dyn ...>` and never name a backend.
//!
//! Rules every implementation keeps (the engine relies on them):
//! - `begin_read`/`end_read` bracket one consistent view; every write ends a
//!   read first and is atomic on its own;
//! - `generation` changes with any change to login data, whoever makes it;
//! - `consume_code` and `consume_totp_step` succeed for exactly one of any
//!   number of concurrent callers;
//! - any failure is an `Err` (the engine answers "unavailable"), never a
//!   default value.

use super::dump::{Dump, DumpCounts};
use super::pg::PgStore;
use super::sql::aliases::{AliasInfo, BlockInfo};
use super::sql::routing::{RoutingAdmin, RoutingReads};
use super::sql::tickets::TicketStore;
use super::ChangeStamp;
use super::SqliteStore;
use crate::config::{Config, Database};
use crate::error::Result;
use crate::secret::SecretBytes;
use crate::store::types::{AccountInfo, AppPasswordInfo, AuditEntry, PlanInfo};
use crate::store::types::{AccountRow, AppPasswordRow, AuditRecord, LastUse};
use crate::throttle::{KeyRows, Keys, State};
use std::time::Duration;

/// A commit that changed no login data and no throttle row (audit records,
/// last-use stamps), and was the only commit between two change stamps: what
/// was known current at `before` is current at `after` (the engine's fast
/// path carries its knowledge across, instead of reading again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietCommit {
    pub before: ChangeStamp,
    pub after: ChangeStamp,
}

/// The throttle's rows (shared by every process and host using the store).
pub trait ThrottleStore {
    /// Reads the throttle state for a request's keys (no writes).
    fn throttle_state(&self, keys: &Keys, now: i64) -> Result<State>;
    /// The database generation and the throttle rows of a request's keys (in
    /// [`Keys::read_order`]), read by one statement (so from one snapshot of the
    /// database, without an explicit transaction): what the engine's fast path
    /// needs to know is current.
    fn generation_and_throttle(&self, keys: &Keys) -> Result<(i64, KeyRows)>;
    /// A value that changes with every commit to the database, by any
    /// connection of any process, before a reader can see the commit: equal
    /// stamps, read at two moments, mean nothing was committed in between.
    /// `None`: no such value here (PostgreSQL; SQLite not in WAL mode) or not
    /// readable at this moment; the caller then reads the database.
    fn change_stamp(&self) -> Option<ChangeStamp> {
        None
    }
    /// Records a credential failure (and its audit record) in one transaction.
    /// `fingerprint` is a keyed hash of (account, wrong password). Returns the delay
    /// to suggest before answering (slow-down of address-less requests).
    fn record_failure(
        &mut self,
        keys: &Keys,
        fingerprint: &[u8],
        now: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<Duration>;
    /// A right credential clears the account's own counters (not the address's:
    /// one good account must not wash an address's guessing record clean).
    fn record_success(&mut self, keys: &Keys) -> Result<()>;
    /// Counts a malformed request on the client's address key (with its audit
    /// record, if any, in the same transaction), like a wrong password.
    fn record_bad_input(
        &mut self,
        keys: &Keys,
        now: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<()>;
}

/// The login path's reads and writes.
pub trait LoginStore: ThrottleStore + RoutingReads + TicketStore + Send {
    fn config(&self) -> &Config;

    /// The generation: a new (random) value after every admin change.
    fn generation(&self) -> Result<i64>;

    /// Starts a read transaction (a no-op inside one).
    fn begin_read(&self) -> Result<()>;

    /// Ends a read transaction started by [`LoginStore::begin_read`], if any. Every write
    /// calls this first: a deferred transaction that later writes could fail with
    /// SQLITE_BUSY_SNAPSHOT instead of waiting for the lock.
    fn end_read(&self) -> Result<()>;

    fn app_lookup(&self, account_id: i64, canonical: &[u8]) -> [u8; 32];

    fn code_lookup(&self, account_id: i64, canonical: &[u8]) -> [u8; 32];

    /// Keyed fingerprint used by throttling and the cache (never the secret itself).
    fn fingerprint(&self, parts: &[&[u8]]) -> [u8; 32];

    fn find_account(&self, name: &str) -> Result<Option<AccountRow>>;

    /// The account a login alias belongs to (aliases and account names share
    /// one namespace, so a name is at most one of the two).
    fn find_alias(&self, alias: &str) -> Result<Option<AccountRow>>;

    /// The block list's networks (`ADDRESS/LEN`); the engine keeps them in
    /// memory per generation.
    fn blocked_networks(&self) -> Result<Vec<String>>;

    /// O(1): a unique index on the keyed hash.
    fn find_app_password(
        &self,
        account_id: i64,
        canonical: &[u8],
    ) -> Result<Option<AppPasswordRow>>;

    /// An unused one-time code's id.
    fn find_unused_code(&self, account_id: i64, canonical: &[u8]) -> Result<Option<i64>>;

    /// Marks a code used. Exactly one of any number of concurrent callers gets `true`
    /// (a conditional update under SQLite's single-writer lock).
    fn consume_code(&self, code_id: i64, now: i64) -> Result<bool>;

    /// Records `step` as the last accepted TOTP step; `false` if it (or a later one)
    /// was accepted already, so each code works once.
    fn consume_totp_step(&self, account_id: i64, step: i64) -> Result<bool>;

    fn service_override(&self, account_id: i64, service: &str) -> Result<Option<bool>>;

    /// Every app password of an account with its index key (for the engine's
    /// in-memory snapshot of the account).
    fn app_passwords_by_lookup(&self, account_id: i64) -> Result<Vec<([u8; 32], AppPasswordRow)>>;

    /// Every service override of an account.
    fn service_overrides(&self, account_id: i64) -> Result<Vec<(String, bool)>>;

    /// `None` if the plan does not exist.
    fn plan_services(&self, plan: &str) -> Result<Option<Vec<String>>>;

    /// Whether [`LoginStore::upgrade_hash`] may write (PostgreSQL's login role
    /// may not: it must never be able to write a credential).
    fn may_rehash(&self) -> bool {
        true
    }

    /// Replaces a master password hash made at a lower cost (only if unchanged since read).
    fn upgrade_hash(&self, account_id: i64, old: &str, new: &str) -> Result<()>;

    /// Writes audit records and last-use stamps in one transaction. Returns
    /// the stamps around its commit when it was the only one in between
    /// (backends without change stamps: `None`).
    fn write_batch(
        &mut self,
        audit: &[AuditRecord],
        last_use: &[(LastUse, i64)],
    ) -> Result<Option<QuietCommit>>;

    /// Deletes audit records older than `audit_retention` or past
    /// `audit_max_rows` (the oldest first), expired throttle rows and expired
    /// proxy tickets. At most
    /// `PRUNE_CHUNK` records per transaction: one huge delete would grow the
    /// write-ahead log by as much.
    fn prune(&mut self, now: i64) -> Result<()>;

    /// Leaves checkpoints to [`LoginStore::checkpoint`], called by another
    /// thread (SQLite; a no-op elsewhere).
    fn checkpoint_in_background(&mut self) -> Result<()> {
        Ok(())
    }

    /// The background checkpoint (see `checkpoint_in_background`).
    fn checkpoint(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Operator changes and listings (each change moves the generation).
pub trait AdminStore: LoginStore + RoutingAdmin {
    fn add_account(&mut self, name: &str, plan: &str) -> Result<String>;

    fn list_accounts(&self) -> Result<Vec<AccountInfo>>;

    fn account_info(&self, name: &str) -> Result<AccountInfo>;

    fn set_disabled(&mut self, name: &str, disabled: bool) -> Result<()>;

    fn delete_account(&mut self, name: &str) -> Result<()>;

    fn set_plan(&mut self, name: &str, plan: &str) -> Result<()>;

    /// Adds a login alias of an account; returns it as stored. An alias named
    /// like an account (or an existing alias) is `Error::Exists`.
    fn add_alias(&mut self, account: &str, alias: &str) -> Result<String>;

    fn remove_alias(&mut self, alias: &str) -> Result<()>;

    /// Every alias, or one account's (`Error::NotFound` for an unknown account).
    fn list_aliases(&self, account: Option<&str>) -> Result<Vec<AliasInfo>>;

    /// Blocks an address or network; returns it as stored (`ADDRESS/LEN`,
    /// host bits cleared).
    fn add_block(&mut self, network: &str, note: Option<&str>) -> Result<String>;

    /// Removes a block (given as added, or as stored); returns it as stored.
    fn remove_block(&mut self, network: &str) -> Result<String>;

    fn list_blocks(&self) -> Result<Vec<BlockInfo>>;

    /// Sets the master password (bcrypt at the configured cost). With
    /// `revoke_app_passwords`, every app password of the account is revoked too
    /// (what a user wants after a suspected compromise).
    fn set_master_password(
        &mut self,
        name: &str,
        password: &SecretBytes,
        revoke_app_passwords: bool,
    ) -> Result<()>;

    fn clear_master_password(&mut self, name: &str) -> Result<()>;

    /// Creates an app password; returns its id and the password as shown to the user
    /// (the only time it exists outside the user's hands).
    fn add_app_password(
        &mut self,
        name: &str,
        label: &str,
        services: &[String],
        restricted: bool,
        expires: Option<i64>,
    ) -> Result<(i64, SecretBytes)>;

    fn list_app_passwords(&self, name: &str) -> Result<Vec<AppPasswordInfo>>;

    fn revoke_app_password(&mut self, name: &str, app_id: i64) -> Result<()>;

    fn enable_totp(&mut self, name: &str, secret: &[u8]) -> Result<()>;

    fn disable_totp(&mut self, name: &str) -> Result<()>;

    /// Replaces the account's one-time codes with `count` new ones (shown once).
    fn generate_codes(&mut self, name: &str, count: usize) -> Result<Vec<SecretBytes>>;

    /// `allow`: Some(true) allow, Some(false) deny, None clear the override.
    fn set_service_override(
        &mut self,
        name: &str,
        service: &str,
        allow: Option<bool>,
    ) -> Result<()>;

    fn set_plan_services(&mut self, plan: &str, services: &[String]) -> Result<()>;

    fn list_plans(&self) -> Result<Vec<PlanInfo>>;

    /// Audit records, oldest first, optionally for one account and since a time.
    fn audit_entries(
        &self,
        account: Option<&str>,
        since: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>>;

    /// For `saslgate explain`: the account and its app passwords as the engine sees them.
    fn explain_rows(&self, name: &str) -> Result<(AccountRow, Vec<AppPasswordRow>)>;

    /// The whole database from one consistent read (`saslgate copy`;
    /// src/store/sql/copy.rs).
    fn export_all(&self) -> Result<Dump>;

    /// Replaces the whole content with `dump`'s in one transaction, ids and key
    /// kept, counts checked before it commits. A database in use (anything but
    /// what `saslgate init` leaves) is refused with `Error::Exists` unless `force`.
    fn import_all(&mut self, dump: &Dump, force: bool) -> Result<DumpCounts>;
}

/// Opens the configured database for logins.
pub fn open_login(config: &Config) -> Result<Box<dyn LoginStore>> {
    Ok(match config.database() {
        Database::Sqlite(_) => Box::new(SqliteStore::open(config)?),
        Database::Postgres(_) => Box::new(PgStore::open(config)?),
    })
}

/// Opens the configured database for the `saslgate` command and other admin
/// changes (the plugin's `auxprop_store`).
pub fn open_admin(config: &Config) -> Result<Box<dyn AdminStore>> {
    Ok(match config.database() {
        Database::Sqlite(_) => Box::new(SqliteStore::open(config)?),
        Database::Postgres(_) => Box::new(PgStore::open(config)?),
    })
}

/// `saslgate init`: creates the database (a new SQLite file, or the schema in
/// an empty PostgreSQL database); an initialised one is `Error::Exists`.
pub fn create(config: &Config) -> Result<Box<dyn AdminStore>> {
    Ok(match config.database() {
        Database::Sqlite(_) => Box::new(SqliteStore::create(config)?),
        Database::Postgres(_) => Box::new(PgStore::create(config)?),
    })
}
