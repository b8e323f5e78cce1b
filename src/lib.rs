//! saslgate: mail login decisions for Cyrus SASL (libsasl2) servers.
//!
//! The core (this crate's safe part) is:
//! - [`config`]: the configuration file and its defaults,
//! - [`store`]: the SQLite database (schema, migrations, admin operations),
//! - [`engine`]: [`Gate`], which turns a login [`Request`] into a [`Decision`],
//! - [`cli`]: the `saslgate` admin command.
//!
//! Every face (the `saslgate` CLI, the `saslgated` daemon, the libsasl2 plugin and
//! the C ABI) calls [`Gate::decide`]; none of them decides anything on its own.
//! Unsafe code is denied crate-wide (`[lints]` in Cargo.toml); only the modules
//! that call C allow it: [`ffi`] (plugin, C ABI), [`host`] (the host's names)
//! and `daemon::sys` (the daemon's socket and process calls).

pub mod audit;
pub mod cache;
pub mod cli;
pub mod config;
pub mod config_file;
pub mod crypto;
pub mod daemon;
pub mod decision;
pub mod engine;
pub mod error;
#[allow(unsafe_code)] // the libsasl2 plugin and the C ABI: every block has a SAFETY comment
pub mod ffi;
#[allow(unsafe_code)] // gethostname and getaddrinfo: every block has a SAFETY comment
pub mod host;
pub mod http_config;
pub mod names;
pub mod rootfs;
pub mod secret;
pub mod snapshot;
pub mod store;
pub mod throttle;
pub mod timefmt;
pub mod totp;
pub mod web_config;

pub use config::Config;
pub use engine::{Decision, Gate, RefuseReason, Request, Stats};
pub use error::{Error, Result};
pub use secret::SecretBytes;

/// Version string shared by every face (`--version`, the plugin's log line, the C ABI).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
