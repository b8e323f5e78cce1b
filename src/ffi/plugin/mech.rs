//! The server mechanisms PLAIN and LOGIN: where saslgate is enabled they ask the
//! Gate; elsewhere they behave exactly like the stock ones (cyrus-sasl 2.1.28
//! plain.c and login.c), so installing the plugin changes nothing for other
//! services.

use super::conn::Step;
use super::context::Options;
use super::{codes, sparams_utils, sys, MechInstance, OwnMechScope};
use crate::ffi::guard::{guard, guard_with};
use crate::ffi::util::{self, cstr, show};
use crate::ffi::UNAVAILABLE_TEXT;
use crate::{Decision, Gate, Request};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::ptr;
use std::sync::atomic::Ordering;
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

const USERNAME_PROMPT: &CStr = cstr(b"Username:\0");
const PASSWORD_PROMPT: &CStr = cstr(b"Password:\0");

/// Longest LOGIN username / password accepted (as stock LOGIN).
const LOGIN_MAX: usize = 1024;
/// Longest refusal delay the plugin will sleep, whatever the core suggests.
const MAX_DELAY: Duration = Duration::from_secs(10);

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

/// Where a LOGIN exchange is (the server speaks first: "Username:", "Password:").
enum LoginState {
    /// Nothing received yet.
    Start,
    /// "Username:" sent.
    WantUser,
    /// "Password:" sent; the username received (wiped on drop).
    WantPassword { user: Zeroizing<Vec<u8>> },
    /// The password was received: any further step is a protocol error.
    Done,
}

impl LoginState {
    /// The step number stock LOGIN logs for an unexpected step.
    fn number(&self) -> u8 {
        match self {
            LoginState::Start => 1,
            LoginState::WantUser => 2,
            LoginState::WantPassword { .. } => 3,
            LoginState::Done => 4,
        }
    }
}

enum MechState {
    Plain,
    Login(LoginState),
}

/// Per-connection state (`conn_context`).
struct ConnState {
    /// The Gate when this service enables saslgate; `Err` when it is enabled but the
    /// configuration is broken (fail closed); `None` when not enabled (stock).
    gate: Option<Result<Arc<Gate>, String>>,
    mech: MechState,
}

/// The two mechanism descriptions `sasl_server_plug_init` hands libsasl2, in
/// order PLAIN, LOGIN; `glob` is their shared `MechInstance`.
pub(super) fn plugs(glob: *mut c_void) -> [sys::sasl_server_plug_t; 2] {
    [
        plug(cstr(b"PLAIN\0"), PLAIN_FEATURES, plain_mech_new, glob),
        plug(cstr(b"LOGIN\0"), LOGIN_FEATURES, login_mech_new, glob),
    ]
}

type MechNew = unsafe extern "C" fn(
    *mut c_void,
    *mut sys::sasl_server_params_t,
    *const c_char,
    c_uint,
    *mut *mut c_void,
) -> c_int;

fn plug(
    name: &'static CStr,
    features: u32,
    new: MechNew,
    glob: *mut c_void,
) -> sys::sasl_server_plug_t {
    sys::sasl_server_plug_t {
        mech_name: name.as_ptr(),
        max_ssf: 0,
        security_flags: SECURITY_FLAGS,
        features,
        glob_context: glob,
        mech_new: Some(new),
        mech_step: Some(mech_step),
        mech_dispose: Some(mech_dispose),
        mech_free: Some(mech_free),
        ..Default::default()
    }
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
        |msg| unsafe { super::panic_answer(utils, "mech_new", msg, codes::PANIC_SETUP) },
        || {
            if conn_context.is_null() || glob_context.is_null() || utils.is_null() {
                // SAFETY: utils is NULL or valid.
                unsafe { util::seterror(utils, "saslgate: bad parameters to mech_new") };
                return sys::SASL_BADPARAM;
            }
            // SAFETY: glob_context is the MechInstance pointer this plugin gave
            // libsasl2 in sasl_server_plug_init, alive until both mech_free calls.
            let inst = unsafe { &*glob_context.cast::<MechInstance>() };
            // SAFETY: utils is non-NULL and valid.
            let options = unsafe { Options::read(utils) };
            let gate = options.enabled().then(|| inst.shared.gate(&options));
            if let Some(Err(e)) = &gate {
                let line = format!("configuration error: {e}");
                // SAFETY: utils is valid.
                unsafe { util::log(utils, sys::SASL_LOG_ERR, &line) };
            }
            let state = Box::new(ConnState {
                gate,
                mech: match mech {
                    Mech::Plain => MechState::Plain,
                    Mech::Login => MechState::Login(LoginState::Start),
                },
            });
            // SAFETY: conn_context was checked for NULL; libsasl2 owns the slot and
            // hands the pointer back to mech_step / mech_dispose.
            unsafe { *conn_context = Box::into_raw(state).cast::<c_void>() };
            sys::SASL_OK
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
        |msg| unsafe { super::panic_answer(utils, "mech_step", msg, codes::PANIC_DECIDING) },
        || {
            #[cfg(test)]
            crate::ffi::guard::inject::point("mech_step");
            if conn_context.is_null()
                || sparams.is_null()
                || utils.is_null()
                || serverout.is_null()
                || serveroutlen.is_null()
                || oparams.is_null()
            {
                // SAFETY: utils is NULL or valid.
                unsafe { util::seterror(utils, "saslgate: bad parameters to mech_step") };
                return sys::SASL_BADPARAM;
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
            let gate = st.gate.as_ref();
            match &mut st.mech {
                MechState::Plain => step.plain(gate, input, op),
                MechState::Login(state) => {
                    let prompt = |p: &'static CStr| {
                        // SAFETY: both out-pointers were checked non-NULL above; the
                        // prompts are static, so libsasl2 may keep the pointer.
                        unsafe {
                            *serverout = p.as_ptr();
                            *serveroutlen = p.to_bytes().len() as c_uint;
                        }
                        sys::SASL_CONTINUE
                    };
                    step.login(state, gate, input, prompt, op)
                }
            }
        },
    )
}

/// The three fields of a PLAIN message: authzid, authcid, password.
pub type PlainFields<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// Splits an RFC 4616 message `[authzid] NUL authcid NUL passwd` exactly as stock
/// PLAIN does: two NUL separators, nothing after the password.
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

type GateRef<'a> = Option<&'a Result<Arc<Gate>, String>>;

impl Step<'_> {
    // ---- PLAIN ----

    fn plain(&self, gate: GateRef<'_>, input: &[u8], op: &mut sys::sasl_out_params_t) -> c_int {
        let (authz, authc, pass) = match parse_plain(input) {
            Ok(p) => p,
            Err(e) => {
                self.seterror(e);
                return sys::SASL_BADPROT;
            }
        };
        match gate {
            None => self.plain_stock(authz, authc, pass, op),
            Some(gate) => {
                if authc.is_empty() || pass.is_empty() {
                    self.seterror("empty authentication identity or password");
                    return sys::SASL_BADPROT;
                }
                let same = authz.is_empty() || authz == authc;
                let rc = self.decide(gate, Mech::Plain, authc, pass, same, op);
                if rc != sys::SASL_OK || same {
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
        if rc != sys::SASL_OK {
            return rc;
        }
        let rc = self.checkpass(op, pass);
        if rc != sys::SASL_OK {
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
        if rc != sys::SASL_OK {
            return rc;
        }
        let rc = self.canon(authz, sys::SASL_CU_AUTHZID, op);
        if rc != sys::SASL_OK {
            return rc;
        }
        Self::finish(op)
    }

    /// Asks the Gate; on acceptance canonicalises the account (and, when `same`, the
    /// authorization identity with it). Does not call `finish` when `!same`.
    fn decide(
        &self,
        gate: &Result<Arc<Gate>, String>,
        mech: Mech,
        login: &[u8],
        password: &[u8],
        same: bool,
        op: &mut sys::sasl_out_params_t,
    ) -> c_int {
        let mech = mech.name();
        let gate = match gate {
            Ok(g) => g,
            Err(e) => {
                let line = format!("{mech}: saslgate unavailable: {e}");
                self.log(sys::SASL_LOG_ERR, &line);
                self.seterror(UNAVAILABLE_TEXT);
                return codes::UNAVAILABLE;
            }
        };
        let service = self.service();
        let req = Request {
            login,
            password,
            service,
            realm: self.realm(),
            client_addr: self.client_addr(),
            local_addr: self.local_addr(),
            secure: self.secure(),
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
        match &decision {
            Decision::Accepted {
                account,
                credential,
            } => {
                let line = format!("{}: accepted as {account} ({credential})", who());
                self.log(sys::SASL_LOG_NOTE, &line);
                let flags = sys::SASL_CU_AUTHID
                    | sys::SASL_CU_EXTERNALLY_VERIFIED
                    | if same { sys::SASL_CU_AUTHZID } else { 0 };
                let rc = {
                    let _scope = OwnMechScope::enter();
                    self.canon(account.as_bytes(), flags, op)
                };
                if rc != sys::SASL_OK {
                    return rc;
                }
                if same {
                    return Self::finish(op);
                }
            }
            Decision::Refused {
                reason,
                detail,
                retry_after: _,
                delay,
            } => {
                let line = format!("{}: refused: {} ({detail})", who(), reason.name());
                self.log(sys::SASL_LOG_FAIL, &line);
                if !delay.is_zero() {
                    std::thread::sleep((*delay).min(MAX_DELAY));
                }
                self.seterror(reason.public_text());
            }
            Decision::Unavailable { cause } => {
                self.log(
                    sys::SASL_LOG_ERR,
                    &format!("{}: unavailable: {cause}", who()),
                );
                self.seterror(UNAVAILABLE_TEXT);
            }
        }
        codes::decision_code(&decision)
    }

    // ---- LOGIN ----

    /// One LOGIN step; `prompt` sends a server challenge and gives `SASL_CONTINUE`.
    fn login(
        &self,
        state: &mut LoginState,
        gate: GateRef<'_>,
        input: &[u8],
        prompt: impl Fn(&'static CStr) -> c_int,
        op: &mut sys::sasl_out_params_t,
    ) -> c_int {
        if let LoginState::Start = state {
            *state = LoginState::WantUser;
            if input.is_empty() {
                return prompt(USERNAME_PROMPT);
            }
            // An initial response is the username: go on as for WantUser.
        }
        match std::mem::replace(state, LoginState::Done) {
            LoginState::WantUser => {
                if input.len() > LOGIN_MAX {
                    *state = LoginState::WantUser;
                    self.seterror("username too long (>1024 characters)");
                    return sys::SASL_BADPROT;
                }
                *state = LoginState::WantPassword {
                    user: Zeroizing::new(input.to_vec()),
                };
                prompt(PASSWORD_PROMPT)
            }
            LoginState::WantPassword { user } => {
                if input.len() > LOGIN_MAX {
                    *state = LoginState::WantPassword { user };
                    self.seterror("clientinlen is > 1024 characters in LOGIN plugin");
                    return sys::SASL_BADPROT;
                }
                // state stays Done: the exchange ends here whatever the answer.
                self.login_password(gate, &user, input, op)
            }
            other @ (LoginState::Start | LoginState::Done) => {
                let n = other.number();
                *state = other;
                self.log(sys::SASL_LOG_ERR, &format!("Invalid LOGIN server step {n}"));
                sys::SASL_FAIL
            }
        }
    }

    /// LOGIN's last step: the username and password are known.
    fn login_password(
        &self,
        gate: GateRef<'_>,
        user: &[u8],
        password: &[u8],
        op: &mut sys::sasl_out_params_t,
    ) -> c_int {
        match gate {
            Some(gate) => {
                if user.is_empty() || password.is_empty() {
                    self.seterror("empty username or password");
                    return sys::SASL_BADPROT;
                }
                self.decide(gate, Mech::Login, user, password, true, op)
            }
            None => {
                // Stock LOGIN (cyrus-sasl 2.1.28 login.c).
                let flags =
                    sys::SASL_CU_AUTHID | sys::SASL_CU_AUTHZID | sys::SASL_CU_EXTERNALLY_VERIFIED;
                let rc = self.canon(user, flags, op);
                if rc != sys::SASL_OK {
                    return rc;
                }
                let rc = self.checkpass(op, password);
                if rc != sys::SASL_OK {
                    return rc;
                }
                Self::finish(op)
            }
        }
    }
}
