//! Test support for saslgate, shared by `tests/`, `benches/`, `fuzz/` (never
//! shipped). One place for what the tests need around the code under test:
//!
//! - [`fixture`]: a fresh database made through the library, with helpers to add
//!   accounts, app passwords and codes ([`Fixture`]), and the standard cast of
//!   accounts the daemon tests share ([`Scenario`]);
//! - [`daemon`]: the real `saslgated` binary on a temporary socket, its log, and a
//!   raw saslauthd-protocol client;
//! - [`tools`]: the Debian programs the tests drive (`oathtool`, `sqlite3`, `cc`
//!   against the real libsasl2) and the built binaries of this workspace;
//! - [`pg`]: a private PostgreSQL cluster (initdb in a temporary directory),
//!   one shared per test binary for the fixtures;
//! - [`backends`](mod@backends): engine and store tests on SQLite and PostgreSQL, the
//!   exceptions listed with their reasons;
//! - [`poll`](mod@poll): waiting for a condition until a deadline, not a fixed sleep;
//! - [`fake_sasl`]: a fake libsasl2 (`sasl_utils_t`, server params, the canon_user
//!   and auxprop calls) to drive the plugin's C entry points without libsasl2.
//!
//! Tests that cannot run print a line starting with `SKIP` ([`tools::skip`]),
//! which `scripts/test-all.sh` counts as skipped, never as passed.

pub mod backends;
pub mod daemon;
pub mod fake_sasl;
/// What [`fake_sasl`] drives: the plugin's bindings and entry points.
mod api {
    pub use saslgate::ffi::plugin::{sasl_auxprop_plug_init, sasl_server_plug_init};
    pub use saslgate::ffi::sys;
}
pub mod fixture;
pub mod pg;
pub mod poll;
pub mod tools;

pub use daemon::{ask, frame, Daemon, LogTap};
pub use fixture::{
    oathtool, on_own_postgresql, on_postgresql, refused, req, Fixture, PgHome, Scenario,
};
pub use poll::{holds_for, poll, settled, wait_until};
pub use saslgate::store::{AdminStore, LoginStore, SqliteStore};
pub use tools::{bin, compile_sasl_program, fresh_plugin, is_root, need_tool, skip, sql};

/// Passwords of the standard accounts ([`Scenario`]).
pub const ALICE_PW: &str = "alice master pw";
pub const BOB_PW: &str = "bob pw";
pub const EVE_PW: &str = "eve pw";
pub const CAROL_PW: &str = "carol pw";
/// Bob's TOTP secret in base32 (what `oathtool -b` takes) ...
pub const TOTP_SECRET_B32: &str = "JBSWY3DPEHPK3PXP";
/// ... and decoded.
pub const TOTP_SECRET: &[u8] = b"Hello!\xde\xad\xbe\xef";

/// What saslgated answers (the saslauthd protocol's text).
pub const ANSWER_OK: &str = "OK";
pub const ANSWER_BAD: &str = "NO authentication failed";
pub const ANSWER_NOT_ALLOWED: &str = "NO not allowed for this service";
pub const ANSWER_THROTTLED: &str = "NO too many failures, try again later";
pub const ANSWER_DISABLED: &str = "NO account disabled";
pub const ANSWER_UNAVAILABLE: &str = "NO unavailable";
