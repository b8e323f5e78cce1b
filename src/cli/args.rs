//! The command line's shape (clap): every subcommand, its arguments and its
//! help text. What each one does is in the parent module.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "saslgate",
    version,
    about = "Manage saslgate accounts, credentials and policy"
)]
pub(super) struct Cli {
    /// Database path or PostgreSQL URL (overrides the configuration file's `db`).
    #[arg(long, global = true, value_name = "PATH|URL")]
    pub(super) db: Option<PathBuf>,
    /// Configuration file [default: /etc/saslgate/saslgate.conf if it exists].
    #[arg(long, global = true, value_name = "PATH")]
    pub(super) config: Option<PathBuf>,
    /// Machine-readable output for list, show, log, verify and explain.
    #[arg(long, global = true)]
    pub(super) json: bool,
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Subcommand, Debug)]
pub(super) enum Command {
    /// Create a new database (a SQLite file, or the schema in an empty
    /// PostgreSQL database).
    Init {
        /// PostgreSQL: also create (if missing) the role mail hosts log in
        /// with and grant it only what logins need (it uses proxy tickets
        /// up, mints none); on an initialised database, only (re)grants.
        #[arg(long, value_name = "NAME")]
        login_role: Option<String>,
        /// PostgreSQL: also create (if missing) the role the auth_http
        /// face's hosts log in with: the login role's privileges and issuing
        /// proxy tickets (imap, pop, at most 10 minutes); on an initialised
        /// database, only (re)grants.
        #[arg(long, value_name = "NAME")]
        proxy_role: Option<String>,
        /// PostgreSQL: also create (if missing) the role saslgate-web logs
        /// in with: the login role's privileges and what its pages change
        /// (sessions, app passwords, two-step login, one-time codes, the
        /// master password; reading the audit), never plans, overrides,
        /// aliases, blocks, backends or tickets; on an initialised database,
        /// only (re)grants.
        #[arg(long, value_name = "NAME")]
        web_role: Option<String>,
    },
    /// Copy the database, consistently, while it is in use (never migrates it).
    Backup {
        /// Destination file (must not exist; created mode 0600).
        path: PathBuf,
    },
    /// Replace the database's content with a backup's, safely while daemons and
    /// plugins are running (never copy or move a file over a live database).
    Restore {
        /// A file made by `saslgate backup` (or any consistent SQLite copy).
        path: PathBuf,
    },
    /// Copy the whole database into another one (another backend, or a new
    /// SQLite file): accounts, hashes, the key, app passwords, TOTP, codes,
    /// plans, overrides, throttle rows, audit, aliases, blocks, account backends
    /// and backend holds (not proxy tickets); checked after the copy.
    Copy {
        /// The target: a SQLite file path (created if missing) or a database URL.
        #[arg(long, value_name = "TARGET")]
        to: String,
        /// Replace the content of a target that is already in use.
        #[arg(long)]
        force: bool,
    },
    /// Accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Set an account's master password (prompted twice on a terminal).
    Passwd {
        name: String,
        /// Read the password from standard input (first line).
        #[arg(long)]
        stdin: bool,
        /// Also revoke every app password of the account.
        #[arg(long)]
        revoke_app_passwords: bool,
    },
    /// App passwords: generated, each limited to some services.
    #[command(subcommand, name = "app-password")]
    AppPassword(AppCmd),
    /// Two-step login with a TOTP authenticator.
    #[command(subcommand)]
    Totp(TotpCmd),
    /// One-time codes for two-step login.
    #[command(subcommand)]
    Codes(CodesCmd),
    /// Backends of the auth_http face: hold, release, list.
    #[command(subcommand)]
    Backend(BackendCmd),
    /// Per-account service overrides.
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Plans: the services an account may use.
    #[command(subcommand)]
    Plan(PlanCmd),
    /// Login aliases: other names an account logs in with.
    #[command(subcommand)]
    Alias(super::aliases::AliasCmd),
    /// The address block list: clients refused on every face.
    #[command(subcommand)]
    Block(super::aliases::BlockCmd),
    /// Check a password (read from stdin) the way a mail service would.
    Verify(VerifyArgs),
    /// Show the audit trail.
    Log {
        name: Option<String>,
        /// A duration ago (1h, 7d) or a date (2026-11-20).
        #[arg(long)]
        since: Option<String>,
        /// Most recent entries shown at most.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Which credentials of an account could log in to a service, and what stops the others.
    Explain {
        name: String,
        #[arg(long)]
        service: String,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum UserCmd {
    /// Create an account (no password yet: set one with `saslgate passwd`).
    Add {
        name: String,
        #[arg(long, default_value = "default")]
        plan: String,
    },
    /// Every account with its plan and state.
    List,
    /// One account: plan, overrides, credentials, two-step state, last login.
    Show { name: String },
    /// Refuse every login of the account (credentials are kept).
    Disable { name: String },
    /// Let a disabled account log in again.
    Enable { name: String },
    /// Delete the account and all its credentials (its audit records stay).
    Delete { name: String },
    /// Move the account to another plan.
    #[command(name = "set-plan")]
    SetPlan { name: String, plan: String },
    /// Route the account's logins through nginx's auth_http face for one
    /// protocol to its own backend (instead of `[http.backends]`).
    #[command(name = "set-backend")]
    SetBackend {
        name: String,
        /// imap, pop3 or smtp.
        protocol: String,
        /// IP-ADDRESS:PORT (nginx takes only an address, not a host name).
        #[arg(required_unless_present = "clear", value_name = "IP:PORT")]
        backend: Option<String>,
        /// Remove the account's own backend (back to `[http.backends]`).
        #[arg(long, conflicts_with = "backend")]
        clear: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum BackendCmd {
    /// Put a backend on hold: logins routed to it wait (nginx retries
    /// silently) until it is released or they are moved with
    /// `user set-backend`, at most `[http] max_hold`.
    Hold {
        #[arg(value_name = "IP:PORT")]
        backend: String,
    },
    /// End a hold: the waiting logins go through.
    Release {
        #[arg(value_name = "IP:PORT")]
        backend: String,
    },
    /// Backends in use: the defaults, the accounts routed to each, the holds.
    List,
}

#[derive(Subcommand, Debug)]
pub(super) enum AppCmd {
    /// Generate an app password (printed once on stdout).
    Add {
        name: String,
        #[arg(long)]
        label: String,
        /// Comma-separated services (default: whatever the account may use).
        #[arg(long)]
        services: Option<String>,
        /// Only usable for the configured restricted services (default: smtp).
        #[arg(long)]
        restricted: bool,
        /// Lifetime, e.g. 90d.
        #[arg(long)]
        expires: Option<String>,
    },
    /// The account's app passwords (never the secrets).
    List { name: String },
    /// Revoke an app password by its id (from `app-password list`).
    Revoke { name: String, id: i64 },
}

#[derive(Subcommand, Debug)]
pub(super) enum TotpCmd {
    /// Turn TOTP on; prints the otpauth:// URI (and a QR code on a terminal).
    Enable {
        name: String,
        /// Use this base32 secret instead of a new random one.
        #[arg(long)]
        secret: Option<String>,
    },
    /// Turn TOTP off (the secret is deleted).
    Disable { name: String },
}

#[derive(Subcommand, Debug)]
pub(super) enum CodesCmd {
    /// Replace the account's one-time codes (printed once, one per line).
    Generate {
        name: String,
        #[arg(long, default_value_t = 10)]
        count: usize,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum ServiceCmd {
    /// Let the account use a service its plan does not give it.
    Allow { name: String, service: String },
    /// Refuse a service to the account whatever its plan says.
    Deny { name: String, service: String },
    /// Remove the account's override: its plan decides again.
    Clear { name: String, service: String },
}

#[derive(Subcommand, Debug)]
pub(super) enum PlanCmd {
    /// Create a plan or replace its services.
    Set {
        plan: String,
        /// Comma-separated services; `*` for every service.
        #[arg(long)]
        services: String,
    },
    /// Every plan with its services and number of accounts.
    List,
}

#[derive(Args, Debug)]
pub(super) struct VerifyArgs {
    pub(super) name: String,
    #[arg(long)]
    pub(super) service: String,
    #[arg(long)]
    pub(super) realm: Option<String>,
    /// Client address (for throttling, the block list and the audit trail).
    #[arg(long)]
    pub(super) ip: Option<String>,
    /// As over an encrypted connection (`tls_required` services are allowed).
    #[arg(long, conflicts_with = "plain")]
    pub(super) tls: bool,
    /// As over a plain connection (`tls_required` services are refused).
    /// Without --tls or --plain the transport is unknown, as for saslauthd.
    #[arg(long)]
    pub(super) plain: bool,
}
