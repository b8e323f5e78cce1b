//! The C ABI declared in `include/saslgate.h`: open / verify / check / close,
//! error strings, version. Every function runs inside the panic boundary and
//! checks every pointer for NULL before reading it.

use super::guard::guard;
use super::util::cstr;
use crate::{Config, Decision, Gate, RefuseReason, Request};
use std::ffi::{c_char, c_int, CStr};
use std::path::{Path, PathBuf};

/// Result codes: the values of `saslgate_result` in saslgate.h. Stable, never reused.
pub mod code {
    use std::ffi::c_int;
    pub const OK: c_int = 0;
    pub const BAD_CREDENTIALS: c_int = 1;
    pub const DISABLED: c_int = 2;
    pub const NOT_ALLOWED: c_int = 3;
    pub const THROTTLED: c_int = 4;
    pub const BAD_INPUT: c_int = 5;
    pub const NO_SUCH_ACCOUNT: c_int = 6;
    pub const UNAVAILABLE: c_int = 7;
    pub const CONFIG: c_int = 8;
    pub const INVALID_ARGUMENT: c_int = 9;
    pub const INTERNAL: c_int = 10;
}

/// `saslgate_t`: the opaque handle.
pub struct Handle {
    gate: Gate,
}

fn refuse_code(reason: RefuseReason) -> c_int {
    match reason {
        RefuseReason::BadCredentials => code::BAD_CREDENTIALS,
        RefuseReason::Disabled => code::DISABLED,
        RefuseReason::NotAllowed => code::NOT_ALLOWED,
        RefuseReason::Throttled => code::THROTTLED,
        RefuseReason::BadInput => code::BAD_INPUT,
        RefuseReason::NoSuchAccount => code::NO_SUCH_ACCOUNT,
    }
}

/// Static text per code (also the reason written for non-refusal codes).
fn text(code: c_int) -> &'static CStr {
    match code {
        code::OK => cstr(b"ok\0"),
        code::BAD_CREDENTIALS => cstr(b"authentication failed\0"),
        code::DISABLED => cstr(b"account disabled\0"),
        code::NOT_ALLOWED => cstr(b"not allowed for this service\0"),
        code::THROTTLED => cstr(b"too many failures, try again later\0"),
        code::BAD_INPUT => cstr(b"malformed request\0"),
        code::NO_SUCH_ACCOUNT => cstr(b"no such account\0"),
        code::UNAVAILABLE => cstr(b"authentication temporarily unavailable\0"),
        code::CONFIG => cstr(b"configuration error\0"),
        code::INVALID_ARGUMENT => cstr(b"invalid argument (NULL handle or required argument)\0"),
        code::INTERNAL => cstr(b"internal error\0"),
        _ => cstr(b"unknown saslgate result code\0"),
    }
}

/// Copies `msg` into a caller buffer, truncated on a UTF-8 boundary, NUL-terminated.
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes.
unsafe fn write_text(buf: *mut c_char, len: usize, msg: &str) {
    if buf.is_null() || len == 0 {
        return;
    }
    let mut n = msg.len().min(len - 1);
    while !msg.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: buf has len writable bytes (caller); n < len, so n bytes plus the NUL
    // fit; msg and buf cannot overlap (msg is Rust-owned).
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
}

/// A possibly-NULL C string argument.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid for `'a`.
unsafe fn arg<'a>(p: *const c_char) -> Option<&'a [u8]> {
    // SAFETY: caller contract; NULL handled.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
}

fn open_impl(config: Option<&[u8]>, db: Option<&[u8]>) -> Result<Gate, (c_int, String)> {
    use std::os::unix::ffi::OsStrExt;
    let mut cfg = match config {
        Some(p) => Config::load(Path::new(std::ffi::OsStr::from_bytes(p)))
            .map_err(|e| (code::CONFIG, e.to_string()))?,
        None => Config::default(),
    };
    if let Some(db) = db {
        cfg.db = PathBuf::from(std::ffi::OsStr::from_bytes(db));
    }
    Gate::open(cfg).map_err(|e| {
        let c = match e {
            crate::Error::Config(_) | crate::Error::Usage(_) => code::CONFIG,
            _ => code::UNAVAILABLE,
        };
        (c, e.to_string())
    })
}

/// See saslgate.h.
///
/// # Safety
/// Pointer arguments are NULL or valid as documented in saslgate.h.
#[no_mangle]
pub unsafe extern "C" fn saslgate_open(
    config_path: *const c_char,
    db_path: *const c_char,
    out: *mut *mut Handle,
    errbuf: *mut c_char,
    errlen: usize,
) -> c_int {
    guard(code::INTERNAL, || {
        if out.is_null() {
            // SAFETY: errbuf is NULL or errlen writable bytes.
            unsafe { write_text(errbuf, errlen, "saslgate_open: out is NULL") };
            return code::INVALID_ARGUMENT;
        }
        // SAFETY: out is non-NULL and writable.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: NULL or NUL-terminated strings (caller contract).
        let (config, db) = unsafe { (arg(config_path), arg(db_path)) };
        match open_impl(config, db) {
            Ok(gate) => {
                // SAFETY: out is non-NULL and writable.
                unsafe { *out = Box::into_raw(Box::new(Handle { gate })) };
                code::OK
            }
            Err((c, msg)) => {
                // SAFETY: errbuf is NULL or errlen writable bytes.
                unsafe { write_text(errbuf, errlen, &msg) };
                c
            }
        }
    })
}

fn decision_code(d: &Decision) -> (c_int, &'static str) {
    match d {
        Decision::Accepted { .. } => (code::OK, ""),
        Decision::Refused { reason, .. } => (refuse_code(*reason), reason.public_text()),
        Decision::Unavailable { .. } => {
            (code::UNAVAILABLE, "authentication temporarily unavailable")
        }
    }
}

/// See saslgate.h.
///
/// # Safety
/// `handle` is NULL or a live handle from `saslgate_open`; strings are NULL or
/// NUL-terminated; `reason` is NULL or `reason_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn saslgate_verify(
    handle: *const Handle,
    login: *const c_char,
    password: *const c_char,
    service: *const c_char,
    realm: *const c_char,
    client_addr: *const c_char,
    reason: *mut c_char,
    reason_len: usize,
) -> c_int {
    let result = guard((code::INTERNAL, ""), || {
        // SAFETY: handle is NULL or live (caller contract); strings NULL or valid.
        let (h, login, password, service, realm, addr) = unsafe {
            (
                handle.as_ref(),
                arg(login),
                arg(password),
                arg(service),
                arg(realm),
                arg(client_addr),
            )
        };
        let (Some(h), Some(login), Some(password), Some(service)) = (h, login, password, service)
        else {
            return (code::INVALID_ARGUMENT, "invalid argument");
        };
        let req = Request {
            login,
            password,
            service,
            realm,
            client_addr: addr,
        };
        decision_code(&h.gate.decide(&req))
    });
    finish(result, reason, reason_len)
}

/// See saslgate.h.
///
/// # Safety
/// As for [`saslgate_verify`].
#[no_mangle]
pub unsafe extern "C" fn saslgate_check_account(
    handle: *const Handle,
    login: *const c_char,
    service: *const c_char,
    realm: *const c_char,
    client_addr: *const c_char,
    reason: *mut c_char,
    reason_len: usize,
) -> c_int {
    let result = guard((code::INTERNAL, ""), || {
        // SAFETY: handle is NULL or live (caller contract); strings NULL or valid.
        let (h, login, service, realm, addr) = unsafe {
            (
                handle.as_ref(),
                arg(login),
                arg(service),
                arg(realm),
                arg(client_addr),
            )
        };
        let (Some(h), Some(login), Some(service)) = (h, login, service) else {
            return (code::INVALID_ARGUMENT, "invalid argument");
        };
        let req = Request {
            login,
            password: b"",
            service,
            realm,
            client_addr: addr,
        };
        decision_code(&h.gate.check_account(&req))
    });
    finish(result, reason, reason_len)
}

fn finish((c, public): (c_int, &str), reason: *mut c_char, reason_len: usize) -> c_int {
    let msg = if c == code::OK || !public.is_empty() {
        public
    } else {
        text(c).to_str().unwrap_or_default()
    };
    guard((), || {
        // SAFETY: reason is NULL or reason_len writable bytes (caller contract).
        unsafe { write_text(reason, reason_len, msg) }
    });
    c
}

/// See saslgate.h.
///
/// # Safety
/// `handle` is NULL or a live handle from `saslgate_open`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn saslgate_close(handle: *mut Handle) {
    guard((), || {
        if !handle.is_null() {
            // SAFETY: a non-NULL handle came from Box::into_raw in saslgate_open and
            // is closed once (caller contract).
            let h = unsafe { Box::from_raw(handle) };
            h.gate.flush();
        }
    })
}

/// See saslgate.h.
#[no_mangle]
pub extern "C" fn saslgate_strerror(code: c_int) -> *const c_char {
    guard(text(code::INTERNAL).as_ptr(), || text(code).as_ptr())
}

static VERSION_C: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// See saslgate.h.
#[no_mangle]
pub extern "C" fn saslgate_version() -> *const c_char {
    VERSION_C.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_text() {
        let texts: Vec<_> = (0..=10).map(text).collect();
        for (i, t) in texts.iter().enumerate() {
            assert!(!t.to_bytes().is_empty());
            assert!(
                texts.iter().skip(i + 1).all(|o| o != t),
                "duplicate text for {i}"
            );
        }
        assert_eq!(text(99).to_bytes(), b"unknown saslgate result code");
    }

    #[test]
    fn null_arguments_are_refused() {
        // SAFETY: NULL everywhere is part of the contract.
        unsafe {
            assert_eq!(
                saslgate_open(
                    std::ptr::null(),
                    std::ptr::null(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    0
                ),
                code::INVALID_ARGUMENT
            );
            let mut buf = [0x55 as c_char; 8];
            let rc = saslgate_verify(
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                buf.as_mut_ptr(),
                buf.len(),
            );
            assert_eq!(rc, code::INVALID_ARGUMENT);
            assert_eq!(CStr::from_ptr(buf.as_ptr()).to_bytes(), b"invalid");
            saslgate_close(std::ptr::null_mut());
        }
    }

    #[test]
    fn truncation_keeps_utf8_and_nul() {
        let mut buf = [0x55 as c_char; 4];
        // SAFETY: buf has 4 writable bytes.
        unsafe { write_text(buf.as_mut_ptr(), buf.len(), "aé€") };
        // SAFETY: write_text NUL-terminates.
        let s = unsafe { CStr::from_ptr(buf.as_ptr()) };
        assert_eq!(s.to_bytes(), "aé".as_bytes());
    }
}
