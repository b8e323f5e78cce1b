//! The auxprop plugin `saslgate`: libsasl2 runs `auxprop_lookup` while it
//! canonicalises an identity for *any* mechanism, which makes it the place where
//! saslgate's account policy (disabled, service not allowed, throttled, unknown)
//! applies to mechanisms saslgate does not verify itself. `auxprop_store` is what
//! `saslpasswd2` / `sasl_setpass` reach: it sets the master password.

use super::conn::Step;
use super::context::Options;
use super::{codes, in_own_mech, sparams_utils, sys, AuxInstance, AUXPROP_NAME};
use crate::ffi::guard::{guard, guard_with};
use crate::ffi::util::{cstr, opt_bytes, show};
use crate::ffi::UNAVAILABLE_TEXT;
use crate::{Decision, RefuseReason, Request, SecretBytes};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::ptr;

/// The description `sasl_auxprop_plug_init` hands libsasl2; `glob` is its
/// `AuxInstance`.
pub(super) fn plug(glob: *mut c_void) -> sys::sasl_auxprop_plug_t {
    sys::sasl_auxprop_plug_t {
        features: 0,
        spare_int1: 0,
        glob_context: glob,
        auxprop_free: Some(auxprop_free),
        auxprop_lookup: Some(auxprop_lookup),
        // libsasl2 never writes through the name.
        name: AUXPROP_NAME.as_ptr().cast_mut(),
        auxprop_store: Some(auxprop_store),
    }
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

pub(super) unsafe extern "C" fn auxprop_lookup(
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
        |msg| unsafe { super::panic_answer(utils, "auxprop_lookup", msg, codes::PANIC_DECIDING) },
        || {
            // SAFETY: the pointers are what libsasl2 passes to auxprop_lookup.
            let Some((inst, sp, login)) = (unsafe { aux_args(glob_context, sparams, user, ulen) })
            else {
                return sys::SASL_BADPARAM;
            };
            if utils.is_null() {
                return sys::SASL_BADPARAM;
            }
            if in_own_mech() {
                // saslgate's PLAIN/LOGIN decided already (policy included).
                return sys::SASL_NOMECH;
            }
            // SAFETY: utils valid.
            let options = unsafe { Options::read(utils) };
            if !options.enabled() {
                return sys::SASL_NOMECH;
            }
            #[cfg(test)]
            crate::ffi::guard::inject::point("auxprop_lookup");
            let step = Step { sp, utils };
            let gate = match inst.shared.gate(&options) {
                Ok(g) => g,
                Err(e) => {
                    let line = format!("auxprop: configuration error: {e}");
                    step.log(sys::SASL_LOG_ERR, &line);
                    step.seterror(UNAVAILABLE_TEXT);
                    return codes::UNAVAILABLE;
                }
            };
            let req = Request {
                login,
                password: b"",
                service: step.service(),
                realm: None,
                client_addr: step.client_addr(),
                local_addr: None,
                // TLS under the connection, as for saslgate's own PLAIN and
                // LOGIN: a `tls_required` service refuses the other
                // mechanisms in the clear too (their own layers, if any,
                // are not negotiated yet when names are looked up).
                secure: step.secure(),
            };
            let which = if flags & sys::SASL_AUXPROP_AUTHZID as c_uint != 0 {
                "authzid"
            } else {
                "authid"
            };
            let decision = gate.check_account(&req);
            match &decision {
                Decision::Accepted { .. } => {}
                Decision::Refused { reason, detail, .. } => {
                    let line = format!(
                        "auxprop: {which} {:?} service {:?} refused: {} ({detail})",
                        show(login),
                        show(req.service),
                        reason.name()
                    );
                    step.log(sys::SASL_LOG_FAIL, &line);
                    if *reason != RefuseReason::NoSuchAccount {
                        step.seterror(reason.public_text());
                    }
                }
                Decision::Unavailable { cause } => {
                    let line = format!("auxprop: {which} {:?}: unavailable: {cause}", show(login));
                    step.log(sys::SASL_LOG_ERR, &line);
                    step.seterror(UNAVAILABLE_TEXT);
                }
            }
            match decision {
                Decision::Refused {
                    reason: RefuseReason::NoSuchAccount,
                    ..
                } if options.refuse_unknown => codes::UNKNOWN_REFUSED,
                d => codes::decision_code(&d),
            }
        },
    )
}

pub(super) unsafe extern "C" fn auxprop_store(
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
        |msg| unsafe { super::panic_answer(utils, "auxprop_store", msg, codes::PANIC_DECIDING) },
        || {
            if ctx.is_null() {
                // "Is storing supported?": yes.
                return sys::SASL_OK;
            }
            // SAFETY: the pointers are what libsasl2 passes to auxprop_store.
            let Some((inst, sp, name)) = (unsafe { aux_args(glob_context, sparams, user, ulen) })
            else {
                return sys::SASL_BADPARAM;
            };
            if utils.is_null() {
                return sys::SASL_BADPARAM;
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
                PasswordProp::NotRequested => return sys::SASL_OK,
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
                    let line = format!("auxprop_store: configuration error: {e}");
                    step.log(sys::SASL_LOG_ERR, &line);
                    return codes::UNAVAILABLE;
                }
            };
            let result =
                crate::store::open_admin(gate.config()).and_then(|mut store| match &password {
                    Some(p) => store.set_master_password(&account, p, false),
                    None => store.clear_master_password(&account),
                });
            let what = if password.is_some() { "set" } else { "cleared" };
            match result {
                Ok(_) => {
                    let line = format!("master password {what} for {account:?}");
                    step.log(sys::SASL_LOG_NOTE, &line);
                    sys::SASL_OK
                }
                Err(e) => {
                    let line = format!("auxprop_store for {account:?}: {e}");
                    step.log(sys::SASL_LOG_ERR, &line);
                    step.seterror(&e.to_string());
                    codes::error_code(&e)
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
