//! The libsasl2 plugin: server mechanisms PLAIN and LOGIN, and the auxprop plugin
//! `saslgate`.
//!
//! libsasl2 loads `libsaslgate.so` from its plugin directory and calls the two
//! entry points below. Why PLAIN and LOGIN, why they carry hash-strength bits and why
//! they must behave exactly like the stock mechanisms where saslgate is not enabled:
//! doc/design.md ("Facts about libsasl2") and doc/plugin.md.
//!
//! Layout, by job:
//! - `mod.rs`: the two entry points (version check, the instance each hands
//!   libsasl2), the options read at load, the panic answer;
//! - `mech.rs`: the PLAIN and LOGIN server mechanisms;
//! - `auxprop.rs`: the auxprop plugin (the policy gate for other mechanisms, and
//!   `auxprop_store` for `saslpasswd2`);
//! - `conn.rs`: one step's view of a connection (libsasl2's utilities, wrapped);
//! - [`codes`] (`codes.rs`): the one table from saslgate's outcomes to SASL result codes;
//! - [`context`] (`context.rs`): options and the `Gate`s built from them.
//!
//! Every `extern "C"` function runs its body inside [`guard_with`]: a panic is
//! logged with its location through libsasl2's log callback and answered with
//! [`codes::PANIC_SETUP`] or [`codes::PANIC_DECIDING`], never unwound into C.

mod auxprop;
pub mod codes;
mod conn;
pub mod context;
mod mech;

pub use mech::{
    hash_strength_bits, parse_plain, PlainFields, HASH_STRENGTH, LOGIN_FEATURES, PLAIN_FEATURES,
    SECURITY_FLAGS,
};

use super::guard::guard_with;
use super::sys;
use super::util::{self, cstr};
use context::{Options, Shared};
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::AtomicUsize;

const AUXPROP_NAME: &CStr = cstr(b"saslgate\0");

thread_local! {
    /// Set while one of saslgate's own mechanisms canonicalises an identity whose
    /// credentials saslgate decides itself: the auxprop gate then stays out (the
    /// decision already applied the account policy, and an early "disabled" or "no
    /// such user" before the password is checked would let clients enumerate
    /// accounts).
    static IN_OWN_MECH: Cell<usize> = const { Cell::new(0) };
}

struct OwnMechScope;

impl OwnMechScope {
    fn enter() -> OwnMechScope {
        IN_OWN_MECH.with(|c| c.set(c.get() + 1));
        OwnMechScope
    }
}

impl Drop for OwnMechScope {
    fn drop(&mut self) {
        IN_OWN_MECH.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

fn in_own_mech() -> bool {
    IN_OWN_MECH.with(|c| c.get() > 0)
}

/// What `sasl_server_plug_init` hands libsasl2: the two mechanism descriptions
/// and the shared context their `glob_context` points to. Heap-allocated so the
/// addresses stay put; freed when libsasl2 has called `mech_free` for both.
struct MechInstance {
    plugs: [sys::sasl_server_plug_t; 2],
    /// Mechanisms not yet freed by libsasl2.
    live: AtomicUsize,
    shared: Shared,
}

/// What `sasl_auxprop_plug_init` hands libsasl2; freed by `auxprop_free`.
struct AuxInstance {
    plug: sys::sasl_auxprop_plug_t,
    shared: Shared,
}

/// The panic answer of an entry point: logs the panic (message and location)
/// through libsasl2's log callback and returns `code`. Where the entry point decides
/// a login, the client gets the "unavailable" text as well, as for a storage failure.
///
/// # Safety
/// `utils` is NULL or a valid `sasl_utils_t` for the duration of the call.
unsafe fn panic_answer(
    utils: *const sys::sasl_utils_t,
    func: &str,
    msg: &str,
    code: c_int,
) -> c_int {
    // SAFETY: forwarded caller guarantee (utils NULL or valid).
    unsafe {
        util::log(
            utils,
            sys::SASL_LOG_ERR,
            &format!("internal error in {func}: {msg}"),
        );
        if code == codes::PANIC_DECIDING {
            util::seterror(utils, super::UNAVAILABLE_TEXT);
        }
    }
    code
}

/// The check every cyrus-sasl plugin makes first: libsasl2 must speak at least the
/// plugin interface version we were built for.
///
/// # Safety
/// `utils` is NULL or valid.
unsafe fn version_ok(
    utils: *const sys::sasl_utils_t,
    max_version: c_int,
    ours: c_int,
    what: &str,
) -> bool {
    if max_version >= ours {
        return true;
    }
    // SAFETY: forwarded caller guarantee.
    unsafe { util::seterror(utils, &format!("saslgate: {what} plugin version mismatch")) };
    false
}

/// libsasl2's entry point for server mechanisms.
///
/// # Safety
/// Called by libsasl2 with a valid `utils` (or NULL) and writable out-pointers
/// (checked for NULL).
#[no_mangle]
pub unsafe extern "C" fn sasl_server_plug_init(
    utils: *const sys::sasl_utils_t,
    max_version: c_int,
    out_version: *mut c_int,
    pluglist: *mut *mut sys::sasl_server_plug_t,
    plugcount: *mut c_int,
) -> c_int {
    guard_with(
        // SAFETY: utils is NULL or valid for this call (libsasl2 contract).
        |msg| unsafe { panic_answer(utils, "sasl_server_plug_init", msg, codes::PANIC_SETUP) },
        // SAFETY: same contract, forwarded.
        || unsafe { server_plug_init(utils, max_version, out_version, pluglist, plugcount) },
    )
}

unsafe fn server_plug_init(
    utils: *const sys::sasl_utils_t,
    max_version: c_int,
    out_version: *mut c_int,
    pluglist: *mut *mut sys::sasl_server_plug_t,
    plugcount: *mut c_int,
) -> c_int {
    if out_version.is_null() || pluglist.is_null() || plugcount.is_null() {
        return sys::SASL_BADPARAM;
    }
    // SAFETY: utils is NULL or valid.
    if !unsafe { version_ok(utils, max_version, sys::SASL_SERVER_PLUG_VERSION, "server") } {
        return sys::SASL_BADVERS;
    }
    // SAFETY: utils is NULL or valid.
    let options = unsafe { Options::read(utils) };
    // SAFETY: utils is NULL or valid.
    unsafe {
        util::log(
            utils,
            sys::SASL_LOG_DEBUG,
            &format!(
                "{} mechanisms PLAIN LOGIN loaded; global options: {}",
                crate::VERSION,
                options.describe()
            ),
        )
    };
    let shared = Shared::new(options);
    preload(utils, &shared);
    let instance = Box::new(MechInstance {
        plugs: [Default::default(), Default::default()],
        live: AtomicUsize::new(2),
        shared,
    });
    let raw = Box::into_raw(instance);
    // SAFETY: raw comes from Box::into_raw just above: valid, uniquely owned here.
    let inst = unsafe { &mut *raw };
    inst.plugs = mech::plugs(raw.cast::<c_void>());
    // SAFETY: the three out-pointers were checked for NULL above and point to
    // libsasl2's locals.
    unsafe {
        *out_version = sys::SASL_SERVER_PLUG_VERSION;
        *pluglist = inst.plugs.as_mut_ptr();
        *plugcount = 2;
    }
    sys::SASL_OK
}

/// libsasl2's entry point for auxprop plugins.
///
/// # Safety
/// Called by libsasl2 with a valid `utils` (or NULL) and writable out-pointers
/// (checked for NULL).
#[no_mangle]
pub unsafe extern "C" fn sasl_auxprop_plug_init(
    utils: *const sys::sasl_utils_t,
    max_version: c_int,
    out_version: *mut c_int,
    plug: *mut *mut sys::sasl_auxprop_plug_t,
    _plugname: *const c_char,
) -> c_int {
    guard_with(
        // SAFETY: utils is NULL or valid for this call.
        |msg| unsafe { panic_answer(utils, "sasl_auxprop_plug_init", msg, codes::PANIC_SETUP) },
        || {
            if out_version.is_null() || plug.is_null() {
                return sys::SASL_BADPARAM;
            }
            // SAFETY: utils is NULL or valid.
            if !unsafe {
                version_ok(
                    utils,
                    max_version,
                    sys::SASL_AUXPROP_PLUG_VERSION,
                    "auxprop",
                )
            } {
                return sys::SASL_BADVERS;
            }
            // SAFETY: utils is NULL or valid.
            let options = unsafe { Options::read(utils) };
            let shared = Shared::new(options);
            preload(utils, &shared);
            let raw = Box::into_raw(Box::new(AuxInstance {
                plug: Default::default(),
                shared,
            }));
            // SAFETY: raw comes from Box::into_raw just above.
            let inst = unsafe { &mut *raw };
            inst.plug = auxprop::plug(raw.cast::<c_void>());
            // SAFETY: out-pointers checked for NULL above.
            unsafe {
                *out_version = sys::SASL_AUXPROP_PLUG_VERSION;
                *plug = &mut inst.plug;
            }
            sys::SASL_OK
        },
    )
}

/// Reads the configuration file named by the global options now, at plugin load:
/// hosts load plugins before they chroot (Postfix smtpd), so the file need not
/// exist inside the chroot. Connections with the same options reuse this Gate.
/// (The database itself is opened at the first login: see doc/plugin.md, chroot.)
fn preload(utils: *const sys::sasl_utils_t, shared: &Shared) {
    if !shared.init_options.enabled() {
        return;
    }
    if let Err(e) = shared.gate(&shared.init_options) {
        // SAFETY: utils is NULL or valid during plugin init.
        unsafe {
            util::log(
                utils,
                sys::SASL_LOG_ERR,
                &format!("configuration error: {e}"),
            )
        };
    }
}

/// The utils of a server params pointer (NULL when sparams is NULL).
///
/// # Safety
/// `sparams` is NULL or valid.
unsafe fn sparams_utils(sparams: *const sys::sasl_server_params_t) -> *const sys::sasl_utils_t {
    // SAFETY: sparams is NULL or valid (libsasl2 contract); as_ref checks NULL.
    unsafe { sparams.as_ref() }.map_or(ptr::null(), |s| s.utils)
}

#[cfg(test)]
mod tests;
