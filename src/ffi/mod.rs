//! FFI faces: the libsasl2 plugin ([`plugin`]: server mechanisms PLAIN and LOGIN,
//! auxprop plugin `saslgate`) and the C ABI of `include/saslgate.h` ([`capi`]).
//!
//! The unsafe code of the two faces lives under this module. Rules kept throughout:
//! - every `extern "C"` function runs its body inside one panic boundary
//!   ([`guard::guard_with`]), which logs the panic's message and location through
//!   the face's log and returns the face's defined answer for it;
//! - every pointer from C is checked for NULL before it is dereferenced;
//! - every `unsafe` block carries a `// SAFETY:` comment saying why it is sound;
//! - nothing is written to stdout/stderr: the plugin logs through libsasl2's
//!   log callback only, the C ABI logs only a caught panic (a bug), to syslog;
//! - passwords copied on our side are wiped after use (`Zeroizing`, `SecretBytes`).
//!
//! The shared object exports only `sasl_server_plug_init`, `sasl_auxprop_plug_init`
//! and the `saslgate_*` functions (`nm -D --defined-only`, checked by c-tests/run.sh).

pub mod capi;
pub mod guard;
pub mod plugin;
pub mod sys;
pub mod util;

/// What both faces of the library (plugin: `sasl_errdetail`; C ABI: `reason`
/// and `saslgate_strerror`) tell a client when saslgate cannot decide (storage
/// or configuration unavailable, internal error): their one text, used nowhere
/// else. Refusal texts are [`crate::RefuseReason::public_text`]. The daemon's
/// faces have their own (doc/design.md, section 1).
pub const UNAVAILABLE_TEXT: &str = "authentication temporarily unavailable";
