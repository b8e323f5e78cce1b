//! FFI faces: the libsasl2 plugin ([`plugin`]: server mechanisms PLAIN and LOGIN,
//! auxprop plugin `saslgate`) and the C ABI of `include/saslgate.h` ([`capi`]).
//!
//! All unsafe code of the crate lives under this module. Rules kept throughout:
//! - every `extern "C"` function runs its body inside one panic boundary
//!   ([`guard::guard`]) and returns a defined error code when it panics;
//! - every pointer from C is checked for NULL before it is dereferenced;
//! - every `unsafe` block carries a `// SAFETY:` comment saying why it is sound;
//! - nothing is written to stdout/stderr: the plugin logs through libsasl2's
//!   log callback only;
//! - passwords copied on our side are wiped after use (`Zeroizing`, `SecretBytes`).
//!
//! The shared object exports only `sasl_server_plug_init`, `sasl_auxprop_plug_init`
//! and the `saslgate_*` functions (`nm -D --defined-only`, checked by c-tests/run.sh).

pub mod capi;
pub mod context;
pub mod guard;
pub mod host;
pub mod plugin;
pub mod sys;
pub mod util;
