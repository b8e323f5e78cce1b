//! One step's view of a connection: libsasl2's server params and utilities
//! (`sasl_server_params_t`, `sasl_utils_t`), wrapped once so the mechanisms and
//! the auxprop plugin use safe methods.

use super::sys;
use crate::ffi::util::{self, cstr, opt_bytes};
use std::ffi::{c_char, c_int, c_uint};
use std::ptr;
use zeroize::Zeroizing;

/// One call's view of the connection. Built only from non-NULL pointers libsasl2
/// passed to the current call, and dropped before that call returns.
pub(super) struct Step<'a> {
    pub(super) sp: &'a sys::sasl_server_params_t,
    /// Non-NULL (checked by whoever builds a `Step`).
    pub(super) utils: *const sys::sasl_utils_t,
}

impl Step<'_> {
    pub(super) fn log(&self, level: c_int, msg: &str) {
        // SAFETY: self.utils is valid for the duration of the step.
        unsafe { util::log(self.utils, level, msg) }
    }

    pub(super) fn seterror(&self, msg: &str) {
        // SAFETY: self.utils is valid for the duration of the step.
        unsafe { util::seterror(self.utils, msg) }
    }

    pub(super) fn utils(&self) -> &sys::sasl_utils_t {
        // SAFETY: checked non-NULL where the Step was built; valid during the step.
        unsafe { &*self.utils }
    }

    /// `params->canon_user`.
    pub(super) fn canon(
        &self,
        name: &[u8],
        flags: c_int,
        op: &mut sys::sasl_out_params_t,
    ) -> c_int {
        let Some(canon) = self.sp.canon_user else {
            return sys::SASL_BADPARAM;
        };
        let Ok(len) = c_uint::try_from(name.len()) else {
            return sys::SASL_BADPROT;
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
    pub(super) fn checkpass(&self, op: &sys::sasl_out_params_t, password: &[u8]) -> c_int {
        let Some(checkpass) = self.utils().checkpass else {
            return sys::SASL_FAIL;
        };
        let mut copy = Zeroizing::new(Vec::with_capacity(password.len() + 1));
        copy.extend_from_slice(password);
        copy.push(0);
        let Ok(passlen) = c_uint::try_from(password.len()) else {
            return sys::SASL_BADPROT;
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

    pub(super) fn service(&self) -> &[u8] {
        // SAFETY: libsasl2 keeps service (NUL-terminated, servicelen bytes) valid for
        // the connection; NULL is handled.
        unsafe { opt_bytes(self.sp.service, self.sp.servicelen) }.unwrap_or_default()
    }

    pub(super) fn realm(&self) -> Option<&[u8]> {
        // SAFETY: as for service.
        unsafe { opt_bytes(self.sp.user_realm, self.sp.urlen) }.filter(|r| !r.is_empty())
    }

    pub(super) fn client_addr(&self) -> Option<&[u8]> {
        // SAFETY: as for service.
        unsafe { opt_bytes(self.sp.ipremoteport, self.sp.ipremlen) }.filter(|r| !r.is_empty())
    }

    /// The address the server accepted the connection on (`IP;PORT`): a proxy
    /// ticket issued for it is accepted.
    pub(super) fn local_addr(&self) -> Option<&[u8]> {
        // SAFETY: as for service.
        unsafe { opt_bytes(self.sp.iplocalport, self.sp.iploclen) }.filter(|r| !r.is_empty())
    }

    /// Whether the connection is encrypted under the login: the strength of
    /// the external layer (TLS) the server told libsasl2 about
    /// (`SASL_SSF_EXTERNAL`). PLAIN and LOGIN have no layer of their own.
    pub(super) fn secure(&self) -> Option<bool> {
        Some(self.sp.external_ssf > 0)
    }

    /// Marks the exchange done, without a security layer (as stock PLAIN/LOGIN).
    pub(super) fn finish(op: &mut sys::sasl_out_params_t) -> c_int {
        op.doneflag = 1;
        op.mech_ssf = 0;
        op.maxoutbuf = 0;
        op.encode_context = ptr::null_mut();
        op.encode = None;
        op.decode_context = ptr::null_mut();
        op.decode = None;
        op.param_version = 0;
        sys::SASL_OK
    }

    /// Erases authorization-identity properties fetched for the authentication
    /// identity before the authzid is canonicalised (as stock PLAIN does).
    pub(super) fn erase_authz_props(&self) -> c_int {
        let u = self.utils();
        let (Some(prop_get), Some(prop_erase)) = (u.prop_get, u.prop_erase) else {
            return sys::SASL_OK;
        };
        if self.sp.propctx.is_null() {
            return sys::SASL_OK;
        }
        // SAFETY: propctx is the connection's property context; prop_get returns its
        // array of propvals terminated by a NULL name, valid until it is changed.
        let mut pv = unsafe { prop_get(self.sp.propctx) };
        if pv.is_null() {
            return sys::SASL_FAIL;
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
        sys::SASL_OK
    }
}
