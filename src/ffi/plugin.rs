//! The libsasl2 plugin: server mechanisms PLAIN and LOGIN, and the auxprop plugin
//! `saslgate`.
//!
//! libsasl2 loads `libsaslgate.so` from its plugin directory and calls the two
//! entry points below. Why PLAIN and LOGIN, why they carry hash-strength bits and why
//! they must behave exactly like the stock mechanisms where saslgate is not enabled:
//! see DESIGN.md ("Facts about libsasl2") and doc/plugin.md.
//!
//! Every `extern "C"` function runs its body inside [`guard`]: a panic becomes
//! `SASL_FAIL` (logged through libsasl2), never an unwind into C.

use super::context::{Options, Shared};
use super::guard::{guard, guard_with};
use super::sys;
use super::util::{self, cstr, opt_bytes, show};
use crate::{Decision, Gate, RefuseReason, Request, SecretBytes};
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// `SASL_SET_HASH_STRENGTH_BITS(x)` from sasl.h (a function-like macro bindgen
/// cannot translate): the hash strength lives in the upper 16 bits of
/// `security_flags`. libsasl2's `mech_compare` uses it only to order mechanisms.
pub const fn hash_strength_bits(bits: u32) -> u32 {
    (bits / 8) << 16
}

/// The strength we declare: bcrypt's 184-bit output, the weakest hash saslgate
/// checks with (app passwords use HMAC-SHA-256). Any nonzero value sorts saslgate's
/// PLAIN/LOGIN ahead of the stock ones (which declare 0) with otherwise equal flags.
pub const HASH_STRENGTH: u32 = hash_strength_bits(184);

/// Stock PLAIN and LOGIN (cyrus-sasl 2.1.28): `SASL_SEC_NOANONYMOUS |
/// SASL_SEC_PASS_CREDENTIALS`.
pub const SECURITY_FLAGS: u32 =
    sys::SASL_SEC_NOANONYMOUS as u32 | sys::SASL_SEC_PASS_CREDENTIALS as u32 | HASH_STRENGTH;
/// Stock PLAIN's features.
pub const PLAIN_FEATURES: u32 =
    sys::SASL_FEAT_WANT_CLIENT_FIRST as u32 | sys::SASL_FEAT_ALLOWS_PROXY as u32;
/// Stock LOGIN's features (none: the server speaks first, "Username:").
pub const LOGIN_FEATURES: u32 = 0;

const OK: c_int = sys::SASL_OK;
const CONTINUE: c_int = sys::SASL_CONTINUE;
const FAIL: c_int = sys::SASL_FAIL;
const BADPARAM: c_int = sys::SASL_BADPARAM;
const BADPROT: c_int = sys::SASL_BADPROT;
const BADVERS: c_int = sys::SASL_BADVERS;
const NOMECH: c_int = sys::SASL_NOMECH;

const LOG_ERR: c_int = sys::SASL_LOG_ERR;
const LOG_FAIL: c_int = sys::SASL_LOG_FAIL;
const LOG_NOTE: c_int = sys::SASL_LOG_NOTE;
const LOG_DEBUG: c_int = sys::SASL_LOG_DEBUG;

const PLAIN_NAME: &CStr = cstr(b"PLAIN\0");
const LOGIN_NAME: &CStr = cstr(b"LOGIN\0");
const AUXPROP_NAME: &CStr = cstr(b"saslgate\0");
const USERNAME_PROMPT: &CStr = cstr(b"Username:\0");
const PASSWORD_PROMPT: &CStr = cstr(b"Password:\0");

/// Longest LOGIN username / password accepted (as stock LOGIN).
const LOGIN_MAX: usize = 1024;
/// Longest refusal delay the plugin will sleep, whatever the core suggests.
const MAX_DELAY: Duration = Duration::from_secs(10);

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

#[cfg(test)]
thread_local! {
    /// Test hook: the next mech_step on this thread panics (exercises the guard).
    static INJECT_PANIC: Cell<bool> = const { Cell::new(false) };
}

fn in_own_mech() -> bool {
    IN_OWN_MECH.with(|c| c.get() > 0)
}

// ---------------------------------------------------------------------------
// Server mechanisms
// ---------------------------------------------------------------------------

/// What `sasl_server_plug_init` hands libsasl2: the two mechanism descriptions
/// and the shared context their `glob_context` points to. Heap-allocated so the
/// addresses stay put; freed when libsasl2 has called `mech_free` for both.
struct MechInstance {
    plugs: [sys::sasl_server_plug_t; 2],
    /// Mechanisms not yet freed by libsasl2.
    live: AtomicUsize,
    shared: Shared,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mech {
    Plain,
    Login,
}

impl Mech {
    fn name(self) -> &'static str {
        match self {
            Mech::Plain => "PLAIN",
            Mech::Login => "LOGIN",
        }
    }
}

/// Per-connection state (`conn_context`).
struct ConnState {
    mech: Mech,
    /// The Gate when this service enables saslgate; `Err` when it is enabled but the
    /// configuration is broken (fail closed); `None` when not enabled (stock).
    gate: Option<Result<Arc<Gate>, String>>,
    /// LOGIN: 1 = nothing received, 2 = username expected, 3 = password expected,
    /// 4 = done.
    state: u8,
    /// LOGIN: the username received in step 2 (wiped on drop).
    username: Zeroizing<Vec<u8>>,
}

fn mech_plug(name: &'static CStr, features: u32, glob: *mut c_void) -> sys::sasl_server_plug_t {
    sys::sasl_server_plug_t {
        mech_name: name.as_ptr(),
        max_ssf: 0,
        security_flags: SECURITY_FLAGS,
        features,
        glob_context: glob,
        mech_new: Some(if features == PLAIN_FEATURES {
            plain_mech_new
        } else {
            login_mech_new
        }),
        mech_step: Some(mech_step),
        mech_dispose: Some(mech_dispose),
        mech_free: Some(mech_free),
        ..Default::default()
    }
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
        |msg| unsafe { panic_log(utils, "sasl_server_plug_init", msg) },
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
        return BADPARAM;
    }
    if max_version < sys::SASL_SERVER_PLUG_VERSION {
        // SAFETY: utils is NULL or valid.
        unsafe { util::seterror(utils, "saslgate: server plugin version mismatch") };
        return BADVERS;
    }
    // SAFETY: utils is NULL or valid.
    let options = unsafe { Options::read(utils) };
    // SAFETY: utils is NULL or valid.
    unsafe {
        util::log(
            utils,
            LOG_DEBUG,
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
    let glob = raw.cast::<c_void>();
    inst.plugs = [
        mech_plug(PLAIN_NAME, PLAIN_FEATURES, glob),
        mech_plug(LOGIN_NAME, LOGIN_FEATURES, glob),
    ];
    // SAFETY: the three out-pointers were checked for NULL above and point to
    // libsasl2's locals.
    unsafe {
        *out_version = sys::SASL_SERVER_PLUG_VERSION;
        *pluglist = inst.plugs.as_mut_ptr();
        *plugcount = 2;
    }
    OK
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
        unsafe { util::log(utils, LOG_ERR, &format!("configuration error: {e}")) };
    }
}

/// Logs a caught panic and gives the defined result for it.
unsafe fn panic_log(utils: *const sys::sasl_utils_t, func: &str, msg: &str) -> c_int {
    // SAFETY: forwarded caller guarantee (utils NULL or valid).
    unsafe { util::log(utils, LOG_ERR, &format!("internal error in {func}: {msg}")) };
    FAIL
}

/// The utils of a server params pointer (NULL when sparams is NULL).
unsafe fn sparams_utils(sparams: *const sys::sasl_server_params_t) -> *const sys::sasl_utils_t {
    // SAFETY: sparams is NULL or valid (libsasl2 contract); as_ref checks NULL.
    unsafe { sparams.as_ref() }.map_or(ptr::null(), |s| s.utils)
}

unsafe extern "C" fn plain_mech_new(
    glob_context: *mut c_void,
    sparams: *mut sys::sasl_server_params_t,
    _challenge: *const c_char,
    _challen: c_uint,
    conn_context: *mut *mut c_void,
) -> c_int {
    // SAFETY: libsasl2's arguments, forwarded unchanged.
    unsafe { mech_new(Mech::Plain, glob_context, sparams, conn_context) }
}

unsafe extern "C" fn login_mech_new(
    glob_context: *mut c_void,
    sparams: *mut sys::sasl_server_params_t,
    _challenge: *const c_char,
    _challen: c_uint,
    conn_context: *mut *mut c_void,
) -> c_int {
    // SAFETY: libsasl2's arguments, forwarded unchanged.
    unsafe { mech_new(Mech::Login, glob_context, sparams, conn_context) }
}

/// Starts a connection: reads this service's options (the connection's getopt) and
/// picks the Gate, or none (stock behaviour).
unsafe fn mech_new(
    mech: Mech,
    glob_context: *mut c_void,
    sparams: *mut sys::sasl_server_params_t,
    conn_context: *mut *mut c_void,
) -> c_int {
    // SAFETY: sparams is NULL or valid for this call.
    let utils = unsafe { sparams_utils(sparams) };
    guard_with(
        // SAFETY: utils is NULL or valid.
        |msg| unsafe { panic_log(utils, "mech_new", msg) },
        || {
            if conn_context.is_null() || glob_context.is_null() || utils.is_null() {
                // SAFETY: utils is NULL or valid.
                unsafe { util::seterror(utils, "saslgate: bad parameters to mech_new") };
                return BADPARAM;
            }
            // SAFETY: glob_context is the MechInstance pointer this plugin gave
            // libsasl2 in sasl_server_plug_init, alive until both mech_free calls.
            let inst = unsafe { &*glob_context.cast::<MechInstance>() };
            // SAFETY: utils is non-NULL and valid.
            let options = unsafe { Options::read(utils) };
            let gate = options.enabled().then(|| inst.shared.gate(&options));
            if let Some(Err(e)) = &gate {
                // SAFETY: utils is valid.
                unsafe { util::log(utils, LOG_ERR, &format!("configuration error: {e}")) };
            }
            let state = Box::new(ConnState {
                mech,
                gate,
                state: 1,
                username: Zeroizing::new(Vec::new()),
            });
            // SAFETY: conn_context was checked for NULL; libsasl2 owns the slot and
            // hands the pointer back to mech_step / mech_dispose.
            unsafe { *conn_context = Box::into_raw(state).cast::<c_void>() };
            OK
        },
    )
}

unsafe extern "C" fn mech_dispose(conn_context: *mut c_void, _utils: *const sys::sasl_utils_t) {
    guard((), || {
        if !conn_context.is_null() {
            // SAFETY: a non-NULL conn_context is the Box<ConnState> made by mech_new,
            // disposed exactly once by libsasl2.
            drop(unsafe { Box::from_raw(conn_context.cast::<ConnState>()) });
        }
    })
}

unsafe extern "C" fn mech_free(glob_context: *mut c_void, _utils: *const sys::sasl_utils_t) {
    guard((), || {
        if glob_context.is_null() {
            return;
        }
        // SAFETY: glob_context is our MechInstance; it stays valid until the last of
        // the two mech_free calls, which is the one that frees it below.
        let inst = unsafe { &*glob_context.cast::<MechInstance>() };
        inst.shared.flush();
        if inst.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: this was the last mechanism of the instance: nobody (neither
            // libsasl2 nor another mech_free) refers to it any more.
            drop(unsafe { Box::from_raw(glob_context.cast::<MechInstance>()) });
        }
    })
}

/// One exchange step of PLAIN or LOGIN.
unsafe extern "C" fn mech_step(
    conn_context: *mut c_void,
    sparams: *mut sys::sasl_server_params_t,
    clientin: *const c_char,
    clientinlen: c_uint,
    serverout: *mut *const c_char,
    serveroutlen: *mut c_uint,
    oparams: *mut sys::sasl_out_params_t,
) -> c_int {
    // SAFETY: sparams is NULL or valid for this call.
    let utils = unsafe { sparams_utils(sparams) };
    guard_with(
        // SAFETY: utils is NULL or valid.
        |msg| unsafe { panic_log(utils, "mech_step", msg) },
        || {
            #[cfg(test)]
            if INJECT_PANIC.with(|c| c.replace(false)) {
                panic!("injected panic");
            }
            if conn_context.is_null()
                || sparams.is_null()
                || utils.is_null()
                || serverout.is_null()
                || serveroutlen.is_null()
                || oparams.is_null()
            {
                // SAFETY: utils is NULL or valid.
                unsafe { util::seterror(utils, "saslgate: bad parameters to mech_step") };
                return BADPARAM;
            }
            // SAFETY: all pointers checked for NULL; conn_context is our ConnState
            // (mech_new), sparams/oparams are libsasl2's for this connection, used
            // only during this call.
            let (st, sp, op) = unsafe {
                *serverout = ptr::null();
                *serveroutlen = 0;
                (
                    &mut *conn_context.cast::<ConnState>(),
                    &*sparams,
                    &mut *oparams,
                )
            };
            let input: &[u8] = if clientin.is_null() || clientinlen == 0 {
                &[]
            } else {
                // SAFETY: clientin is non-NULL and points to clientinlen bytes owned
                // by libsasl2 for the duration of this step.
                unsafe { std::slice::from_raw_parts(clientin.cast::<u8>(), clientinlen as usize) }
            };
            let step = Step { sp, utils };
            match st.mech {
                Mech::Plain => step.plain(st, input, op),
                // SAFETY: serverout/serveroutlen checked non-NULL above.
                Mech::Login => unsafe { step.login(st, input, serverout, serveroutlen, op) },
            }
        },
    )
}

/// One step's view of the connection.
struct Step<'a> {
    sp: &'a sys::sasl_server_params_t,
    utils: *const sys::sasl_utils_t,
}

/// Splits an RFC 4616 message `[authzid] NUL authcid NUL passwd` exactly as stock
/// PLAIN does: two NUL separators, nothing after the password.
/// The three fields of a PLAIN message: authzid, authcid, password.
pub type PlainFields<'a> = (&'a [u8], &'a [u8], &'a [u8]);

pub fn parse_plain(input: &[u8]) -> Result<PlainFields<'_>, &'static str> {
    let mut parts = input.splitn(3, |&b| b == 0);
    let authz = parts.next().unwrap_or_default();
    let authc = parts.next().ok_or("Can only find author (no password)")?;
    let pass = parts
        .next()
        .ok_or("Can only find author/en (no password)")?;
    if pass.contains(&0) {
        // (stock's text, trailing newline included)
        return Err("Got more data than we were expecting in the PLAIN plugin\n");
    }
    Ok((authz, authc, pass))
}

impl Step<'_> {
    fn log(&self, level: c_int, msg: &str) {
        // SAFETY: self.utils is valid for the duration of the step.
        unsafe { util::log(self.utils, level, msg) }
    }

    fn seterror(&self, msg: &str) {
        // SAFETY: self.utils is valid for the duration of the step.
        unsafe { util::seterror(self.utils, msg) }
    }

    fn utils(&self) -> &sys::sasl_utils_t {
        // SAFETY: checked non-NULL by mech_step; valid during the step.
        unsafe { &*self.utils }
    }

    /// `params->canon_user`.
    fn canon(&self, name: &[u8], flags: c_int, op: &mut sys::sasl_out_params_t) -> c_int {
        let Some(canon) = self.sp.canon_user else {
            return BADPARAM;
        };
        let Ok(len) = c_uint::try_from(name.len()) else {
            return BADPROT;
        };
        // canon_user reads len 0 as "use strlen": an empty name is passed as an empty
        // C string (libsasl2 then answers as it does for stock PLAIN).
        let ptr: *const c_char = if len == 0 {
            cstr(b"\0").as_ptr()
        } else {
            name.as_ptr().cast()
        };
        // SAFETY: canon_user copies `len` bytes from `ptr` (a live slice, or a static
        // empty C string when len is 0) into the connection's buffers and writes op,
        // which is libsasl2's own oparams.
        unsafe { canon(self.utils().conn, ptr, len, flags as c_uint, op) }
    }

    /// `utils->checkpass` with a NUL-terminated copy of the password that is wiped
    /// afterwards.
    fn checkpass(&self, op: &sys::sasl_out_params_t, password: &[u8]) -> c_int {
        let Some(checkpass) = self.utils().checkpass else {
            return FAIL;
        };
        let mut copy = Zeroizing::new(Vec::with_capacity(password.len() + 1));
        copy.extend_from_slice(password);
        copy.push(0);
        let Ok(passlen) = c_uint::try_from(password.len()) else {
            return BADPROT;
        };
        // SAFETY: op.authid/alen were set by canon_user; `copy` is NUL-terminated and
        // lives until after the call; checkpass does not keep the pointers.
        unsafe {
            checkpass(
                self.utils().conn,
                op.authid,
                op.alen,
                copy.as_ptr().cast(),
                passlen,
            )
        }
    }

    fn service(&self) -> &[u8] {
        // SAFETY: libsasl2 keeps service (NUL-terminated, servicelen bytes) valid for
        // the connection; NULL is handled.
        unsafe { opt_bytes(self.sp.service, self.sp.servicelen) }.unwrap_or_default()
    }

    fn realm(&self) -> Option<&[u8]> {
        // SAFETY: as for service.
        unsafe { opt_bytes(self.sp.user_realm, self.sp.urlen) }.filter(|r| !r.is_empty())
    }

    fn client_addr(&self) -> Option<&[u8]> {
        // SAFETY: as for service.
        unsafe { opt_bytes(self.sp.ipremoteport, self.sp.ipremlen) }.filter(|r| !r.is_empty())
    }

    fn finish(op: &mut sys::sasl_out_params_t) -> c_int {
        op.doneflag = 1;
        op.mech_ssf = 0;
        op.maxoutbuf = 0;
        op.encode_context = ptr::null_mut();
        op.encode = None;
        op.decode_context = ptr::null_mut();
        op.decode = None;
        op.param_version = 0;
        OK
    }

    /// Erases authorization-identity properties fetched for the authentication
    /// identity before the authzid is canonicalised (as stock PLAIN does).
    fn erase_authz_props(&self) -> c_int {
        let u = self.utils();
        let (Some(prop_get), Some(prop_erase)) = (u.prop_get, u.prop_erase) else {
            return OK;
        };
        if self.sp.propctx.is_null() {
            return OK;
        }
        // SAFETY: propctx is the connection's property context; prop_get returns its
        // array of propvals terminated by a NULL name, valid until it is changed.
        let mut pv = unsafe { prop_get(self.sp.propctx) };
        if pv.is_null() {
            return FAIL;
        }
        // SAFETY: walk until the NULL-name terminator; erasing a value does not move
        // the array (prop_erase only frees values).
        unsafe {
            while !(*pv).name.is_null() {
                let name = (*pv).name;
                if *name != b'*' as c_char && !(*pv).values.is_null() {
                    prop_erase(self.sp.propctx, name);
                }
                pv = pv.add(1);
            }
        }
        OK
    }

    // ---- PLAIN ----

    fn plain(&self, st: &ConnState, input: &[u8], op: &mut sys::sasl_out_params_t) -> c_int {
        let (authz, authc, pass) = match parse_plain(input) {
            Ok(p) => p,
            Err(e) => {
                self.seterror(e);
                return BADPROT;
            }
        };
        match &st.gate {
            None => self.plain_stock(authz, authc, pass, op),
            Some(gate) => {
                if authc.is_empty() || pass.is_empty() {
                    self.seterror("empty authentication identity or password");
                    return BADPROT;
                }
                let same = authz.is_empty() || authz == authc;
                let rc = self.decide(gate, Mech::Plain.name(), authc, pass, same, op);
                if rc != OK || same {
                    return rc;
                }
                self.authorize(authz, op)
            }
        }
    }

    /// Stock PLAIN (cyrus-sasl 2.1.28 plain.c), behaviour for behaviour.
    fn plain_stock(
        &self,
        authz: &[u8],
        authc: &[u8],
        pass: &[u8],
        op: &mut sys::sasl_out_params_t,
    ) -> c_int {
        let same = authz.is_empty() || authz == authc;
        let flags = sys::SASL_CU_AUTHID
            | sys::SASL_CU_EXTERNALLY_VERIFIED
            | if same { sys::SASL_CU_AUTHZID } else { 0 };
        let rc = self.canon(authc, flags, op);
        if rc != OK {
            return rc;
        }
        let rc = self.checkpass(op, pass);
        if rc != OK {
            self.seterror("Password verification failed");
            return rc;
        }
        if !same {
            return self.authorize(authz, op);
        }
        Self::finish(op)
    }

    /// Canonicalises a distinct authorization identity (after the credentials were
    /// verified); libsasl2's proxy policy then decides whether authcid may act as it.
    fn authorize(&self, authz: &[u8], op: &mut sys::sasl_out_params_t) -> c_int {
        let rc = self.erase_authz_props();
        if rc != OK {
            return rc;
        }
        let rc = self.canon(authz, sys::SASL_CU_AUTHZID, op);
        if rc != OK {
            return rc;
        }
        Self::finish(op)
    }

    /// Asks the Gate; on acceptance canonicalises the account (and, when `same`, the
    /// authorization identity with it). Does not call `finish` when `!same`.
    fn decide(
        &self,
        gate: &Result<Arc<Gate>, String>,
        mech: &str,
        login: &[u8],
        password: &[u8],
        same: bool,
        op: &mut sys::sasl_out_params_t,
    ) -> c_int {
        let gate = match gate {
            Ok(g) => g,
            Err(e) => {
                self.log(LOG_ERR, &format!("{mech}: saslgate unavailable: {e}"));
                self.seterror("authentication temporarily unavailable");
                return sys::SASL_UNAVAIL;
            }
        };
        let service = self.service();
        let req = Request {
            login,
            password,
            service,
            realm: self.realm(),
            client_addr: self.client_addr(),
        };
        let decision = gate.decide(&req);
        let who = || {
            format!(
                "{mech} login {:?} service {:?} client {:?}",
                show(login),
                show(service),
                req.client_addr.map(show).unwrap_or_default()
            )
        };
        match decision {
            Decision::Accepted {
                account,
                credential,
            } => {
                self.log(
                    LOG_NOTE,
                    &format!("{}: accepted as {account} ({credential})", who()),
                );
                let flags = sys::SASL_CU_AUTHID
                    | sys::SASL_CU_EXTERNALLY_VERIFIED
                    | if same { sys::SASL_CU_AUTHZID } else { 0 };
                let rc = {
                    let _scope = OwnMechScope::enter();
                    self.canon(account.as_bytes(), flags, op)
                };
                if rc != OK {
                    return rc;
                }
                if same {
                    Self::finish(op)
                } else {
                    OK
                }
            }
            Decision::Refused {
                reason,
                detail,
                retry_after: _,
                delay,
            } => {
                self.log(
                    LOG_FAIL,
                    &format!("{}: refused: {} ({detail})", who(), reason.name()),
                );
                if !delay.is_zero() {
                    std::thread::sleep(delay.min(MAX_DELAY));
                }
                self.seterror(reason.public_text());
                refuse_code(reason)
            }
            Decision::Unavailable { cause } => {
                self.log(LOG_ERR, &format!("{}: unavailable: {cause}", who()));
                self.seterror("authentication temporarily unavailable");
                sys::SASL_UNAVAIL
            }
        }
    }

    // ---- LOGIN ----

    /// # Safety
    /// `serverout` and `serveroutlen` are valid, writable pointers.
    unsafe fn login(
        &self,
        st: &mut ConnState,
        input: &[u8],
        serverout: *mut *const c_char,
        serveroutlen: *mut c_uint,
        op: &mut sys::sasl_out_params_t,
    ) -> c_int {
        let prompt = |p: &'static CStr| {
            // SAFETY: caller guarantees both out-pointers are valid; the prompts are
            // static strings, so libsasl2 may keep the pointer as long as it likes.
            unsafe {
                *serverout = p.as_ptr();
                *serveroutlen = p.to_bytes().len() as c_uint;
            }
            CONTINUE
        };
        if st.state == 1 {
            st.state = 2;
            if input.is_empty() {
                return prompt(USERNAME_PROMPT);
            }
            // An initial response is the username: fall through to state 2.
        }
        match st.state {
            2 => {
                if input.len() > LOGIN_MAX {
                    self.seterror("username too long (>1024 characters)");
                    return BADPROT;
                }
                st.username = Zeroizing::new(input.to_vec());
                st.state = 3;
                prompt(PASSWORD_PROMPT)
            }
            3 => {
                if input.len() > LOGIN_MAX {
                    self.seterror("clientinlen is > 1024 characters in LOGIN plugin");
                    return BADPROT;
                }
                st.state = 4;
                let user = std::mem::take(&mut st.username);
                let flags =
                    sys::SASL_CU_AUTHID | sys::SASL_CU_AUTHZID | sys::SASL_CU_EXTERNALLY_VERIFIED;
                match &st.gate {
                    Some(gate) => {
                        if user.is_empty() || input.is_empty() {
                            self.seterror("empty username or password");
                            return BADPROT;
                        }
                        self.decide(gate, Mech::Login.name(), &user, input, true, op)
                    }
                    None => {
                        // Stock LOGIN (cyrus-sasl 2.1.28 login.c).
                        let rc = self.canon(&user, flags, op);
                        if rc != OK {
                            return rc;
                        }
                        let rc = self.checkpass(op, input);
                        if rc != OK {
                            return rc;
                        }
                        Self::finish(op)
                    }
                }
            }
            other => {
                self.log(LOG_ERR, &format!("Invalid LOGIN server step {other}"));
                FAIL
            }
        }
    }
}

/// SASL result code for a refusal.
pub fn refuse_code(reason: RefuseReason) -> c_int {
    match reason {
        RefuseReason::BadCredentials => sys::SASL_BADAUTH,
        RefuseReason::Disabled => sys::SASL_DISABLED,
        RefuseReason::NotAllowed => sys::SASL_NOAUTHZ,
        // Temporary: Postfix answers 454 4.7.0, so a legitimate client retries later
        // instead of asking its user for another password.
        RefuseReason::Throttled => sys::SASL_TRYAGAIN,
        RefuseReason::BadInput => BADPROT,
        RefuseReason::NoSuchAccount => sys::SASL_NOUSER,
    }
}

// ---------------------------------------------------------------------------
// Auxprop plugin
// ---------------------------------------------------------------------------

struct AuxInstance {
    plug: sys::sasl_auxprop_plug_t,
    shared: Shared,
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
        |msg| unsafe { panic_log(utils, "sasl_auxprop_plug_init", msg) },
        || {
            if out_version.is_null() || plug.is_null() {
                return BADPARAM;
            }
            if max_version < sys::SASL_AUXPROP_PLUG_VERSION {
                // SAFETY: utils is NULL or valid.
                unsafe { util::seterror(utils, "saslgate: auxprop plugin version mismatch") };
                return BADVERS;
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
            inst.plug = sys::sasl_auxprop_plug_t {
                features: 0,
                spare_int1: 0,
                glob_context: raw.cast::<c_void>(),
                auxprop_free: Some(auxprop_free),
                auxprop_lookup: Some(auxprop_lookup),
                // libsasl2 never writes through the name.
                name: AUXPROP_NAME.as_ptr().cast_mut(),
                auxprop_store: Some(auxprop_store),
            };
            // SAFETY: out-pointers checked for NULL above.
            unsafe {
                *out_version = sys::SASL_AUXPROP_PLUG_VERSION;
                *plug = &mut inst.plug;
            }
            OK
        },
    )
}

unsafe extern "C" fn auxprop_free(glob_context: *mut c_void, _utils: *const sys::sasl_utils_t) {
    guard((), || {
        if !glob_context.is_null() {
            // SAFETY: glob_context is the AuxInstance made by sasl_auxprop_plug_init;
            // libsasl2 calls auxprop_free once, at sasl_done.
            let inst = unsafe { Box::from_raw(glob_context.cast::<AuxInstance>()) };
            inst.shared.flush();
        }
    })
}

/// The arguments both auxprop entry points get, NULL-checked: our instance, the
/// connection's server params, and the user name bytes. `None` if any is NULL.
///
/// # Safety
/// Non-NULL pointers must be what libsasl2 passes: `glob_context` our `AuxInstance`
/// (alive until `auxprop_free`), `sparams` this connection's params, `user` pointing to
/// `ulen` bytes (or NUL-terminated when `ulen` is 0), all valid for `'a`.
unsafe fn aux_args<'a>(
    glob_context: *mut c_void,
    sparams: *mut sys::sasl_server_params_t,
    user: *const c_char,
    ulen: c_uint,
) -> Option<(&'a AuxInstance, &'a sys::sasl_server_params_t, &'a [u8])> {
    if glob_context.is_null() || sparams.is_null() || user.is_null() {
        return None;
    }
    // SAFETY: checked for NULL above; validity is the caller's contract.
    unsafe {
        Some((
            &*glob_context.cast::<AuxInstance>(),
            &*sparams,
            opt_bytes(user, ulen).unwrap_or_default(),
        ))
    }
}

unsafe extern "C" fn auxprop_lookup(
    glob_context: *mut c_void,
    sparams: *mut sys::sasl_server_params_t,
    flags: c_uint,
    user: *const c_char,
    ulen: c_uint,
) -> c_int {
    // SAFETY: sparams is NULL or valid for this call.
    let utils = unsafe { sparams_utils(sparams) };
    guard_with(
        // SAFETY: utils is NULL or valid.
        |msg| unsafe { panic_log(utils, "auxprop_lookup", msg) },
        || {
            // SAFETY: the pointers are what libsasl2 passes to auxprop_lookup.
            let Some((inst, sp, login)) = (unsafe { aux_args(glob_context, sparams, user, ulen) })
            else {
                return BADPARAM;
            };
            if utils.is_null() {
                return BADPARAM;
            }
            if in_own_mech() {
                // saslgate's PLAIN/LOGIN decided already (policy included).
                return NOMECH;
            }
            // SAFETY: utils valid.
            let options = unsafe { Options::read(utils) };
            if !options.enabled() {
                return NOMECH;
            }
            let step = Step { sp, utils };
            let gate = match inst.shared.gate(&options) {
                Ok(g) => g,
                Err(e) => {
                    step.log(LOG_ERR, &format!("auxprop: configuration error: {e}"));
                    return sys::SASL_UNAVAIL;
                }
            };
            let req = Request {
                login,
                password: b"",
                service: step.service(),
                realm: None,
                client_addr: step.client_addr(),
            };
            let which = if flags & sys::SASL_AUXPROP_AUTHZID as c_uint != 0 {
                "authzid"
            } else {
                "authid"
            };
            match gate.check_account(&req) {
                Decision::Accepted { .. } => OK,
                Decision::Refused { reason, detail, .. } => {
                    step.log(
                        LOG_FAIL,
                        &format!(
                            "auxprop: {which} {:?} service {:?} refused: {} ({detail})",
                            show(login),
                            show(req.service),
                            reason.name()
                        ),
                    );
                    if reason != RefuseReason::NoSuchAccount {
                        step.seterror(reason.public_text());
                    }
                    match reason {
                        RefuseReason::NoSuchAccount if options.refuse_unknown => sys::SASL_NOAUTHZ,
                        r => refuse_code(r),
                    }
                }
                Decision::Unavailable { cause } => {
                    step.log(
                        LOG_ERR,
                        &format!("auxprop: {which} {:?}: unavailable: {cause}", show(login)),
                    );
                    sys::SASL_UNAVAIL
                }
            }
        },
    )
}

unsafe extern "C" fn auxprop_store(
    glob_context: *mut c_void,
    sparams: *mut sys::sasl_server_params_t,
    ctx: *mut sys::propctx,
    user: *const c_char,
    ulen: c_uint,
) -> c_int {
    // SAFETY: sparams is NULL or valid for this call.
    let utils = unsafe { sparams_utils(sparams) };
    guard_with(
        // SAFETY: utils is NULL or valid.
        |msg| unsafe { panic_log(utils, "auxprop_store", msg) },
        || {
            if ctx.is_null() {
                // "Is storing supported?": yes.
                return OK;
            }
            // SAFETY: the pointers are what libsasl2 passes to auxprop_store.
            let Some((inst, sp, name)) = (unsafe { aux_args(glob_context, sparams, user, ulen) })
            else {
                return BADPARAM;
            };
            if utils.is_null() {
                return BADPARAM;
            }
            // SAFETY: utils valid.
            let options = unsafe { Options::read(utils) };
            let step = Step { sp, utils };
            if !options.enabled() {
                // Not ours here: libsasl2 counts this as "not stored by this plugin"
                // and goes on with the other auxprop plugins.
                return sys::SASL_CONSTRAINT_VIOLAT;
            }
            // SAFETY: ctx is the non-NULL property context libsasl2 passed.
            let password = match unsafe { password_prop(step.utils(), ctx) } {
                PasswordProp::NotRequested => return OK,
                PasswordProp::Delete => None,
                PasswordProp::Set(p) => Some(p),
            };
            let mut account = String::from_utf8_lossy(name).trim().to_string();
            if !account.contains('@') {
                if let Some(realm) = step.realm() {
                    account = format!("{account}@{}", String::from_utf8_lossy(realm));
                }
            }
            let gate = match inst.shared.gate(&options) {
                Ok(g) => g,
                Err(e) => {
                    step.log(LOG_ERR, &format!("auxprop_store: configuration error: {e}"));
                    return sys::SASL_UNAVAIL;
                }
            };
            let result =
                crate::store::Store::open(gate.config()).and_then(|mut store| match &password {
                    Some(p) => store.set_master_password(&account, p, false),
                    None => store.clear_master_password(&account),
                });
            let what = if password.is_some() { "set" } else { "cleared" };
            match result {
                Ok(_) => {
                    step.log(LOG_NOTE, &format!("master password {what} for {account:?}"));
                    OK
                }
                Err(e) => {
                    step.log(LOG_ERR, &format!("auxprop_store for {account:?}: {e}"));
                    step.seterror(&e.to_string());
                    match e {
                        crate::Error::NotFound(_) => sys::SASL_NOUSER,
                        crate::Error::Usage(_) => BADPARAM,
                        crate::Error::Storage(_) | crate::Error::TooNew { .. } => sys::SASL_UNAVAIL,
                        _ => FAIL,
                    }
                }
            }
        },
    )
}

enum PasswordProp {
    NotRequested,
    Delete,
    Set(SecretBytes),
}

/// The `userPassword` value a `sasl_setpass` / `saslpasswd2` store carries.
///
/// # Safety
/// `ctx` is a valid property context of libsasl2.
unsafe fn password_prop(u: &sys::sasl_utils_t, ctx: *mut sys::propctx) -> PasswordProp {
    let Some(getnames) = u.prop_getnames else {
        return PasswordProp::NotRequested;
    };
    for name in [cstr(b"userPassword\0"), cstr(b"*userPassword\0")] {
        let mut names: [*const c_char; 2] = [name.as_ptr(), ptr::null()];
        let mut vals: [sys::propval; 2] = Default::default();
        // SAFETY: names is a NULL-terminated array of one name, vals has room for
        // the one result plus terminator; prop_getnames fills vals with pointers into
        // ctx, which stays valid during this call.
        let rc = unsafe { getnames(ctx, names.as_mut_ptr(), vals.as_mut_ptr()) };
        if rc < 0 || vals[0].name.is_null() {
            continue;
        }
        let v = &vals[0];
        // SAFETY: values is NULL or a NULL-terminated array of NUL-terminated strings
        // owned by ctx.
        let first = unsafe {
            if v.values.is_null() || v.nvalues == 0 {
                None
            } else {
                let p = *v.values;
                (!p.is_null()).then(|| CStr::from_ptr(p).to_bytes())
            }
        };
        return match first {
            Some(p) => PasswordProp::Set(SecretBytes::from_slice(p)),
            None => PasswordProp::Delete,
        };
    }
    PasswordProp::NotRequested
}

#[cfg(test)]
mod tests;
