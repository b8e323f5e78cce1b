//! The C ABI declared in `include/saslgate.h`: open / verify / check / close,
//! error strings, version. Every function runs inside the panic boundary and
//! checks every pointer for NULL before reading it.
//!
//! [`SaslgateResult`] is the one definition of the result codes: its values are
//! those of `saslgate_result` in the hand-written header, and a test
//! (`tests/plugin_capi.rs`, `header_matches_the_code`) reads the header and fails
//! if a value, a name or an exported function differs from this file.

use super::guard::guard_with;
use super::util::{self, cstr};
use super::UNAVAILABLE_TEXT;
use crate::{Config, Decision, Error, Gate, RefuseReason, Request};
use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `SASLGATE_ABI_VERSION` in saslgate.h.
pub const ABI_VERSION: c_int = 1;

/// `saslgate_result` in saslgate.h: `SaslgateResult::BadCredentials` is
/// `SASLGATE_BAD_CREDENTIALS`. Stable: a value keeps its meaning in every later
/// version and a retired value is never reused.
///
/// The functions return this type; the header declares them returning `int`
/// (unchanged since 0.1, and a C enum's underlying type is the compiler's choice),
/// which is the same 32-bit return value on every Linux ABI.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslgateResult {
    Ok = 0,
    BadCredentials = 1,
    Disabled = 2,
    NotAllowed = 3,
    Throttled = 4,
    BadInput = 5,
    NoSuchAccount = 6,
    Unavailable = 7,
    Config = 8,
    InvalidArgument = 9,
    Internal = 10,
    Blocked = 11,
    TlsRequired = 12,
}

impl SaslgateResult {
    /// Every code, in value order.
    pub const ALL: [SaslgateResult; 13] = [
        SaslgateResult::Ok,
        SaslgateResult::BadCredentials,
        SaslgateResult::Disabled,
        SaslgateResult::NotAllowed,
        SaslgateResult::Throttled,
        SaslgateResult::BadInput,
        SaslgateResult::NoSuchAccount,
        SaslgateResult::Unavailable,
        SaslgateResult::Config,
        SaslgateResult::InvalidArgument,
        SaslgateResult::Internal,
        SaslgateResult::Blocked,
        SaslgateResult::TlsRequired,
    ];

    /// The code of a refusal.
    pub fn from_refusal(reason: RefuseReason) -> SaslgateResult {
        match reason {
            RefuseReason::BadCredentials => SaslgateResult::BadCredentials,
            RefuseReason::Disabled => SaslgateResult::Disabled,
            RefuseReason::NotAllowed => SaslgateResult::NotAllowed,
            RefuseReason::Throttled => SaslgateResult::Throttled,
            RefuseReason::BadInput => SaslgateResult::BadInput,
            RefuseReason::NoSuchAccount => SaslgateResult::NoSuchAccount,
            RefuseReason::Blocked => SaslgateResult::Blocked,
            RefuseReason::TlsRequired => SaslgateResult::TlsRequired,
        }
    }

    /// The code of a decision (`saslgate_verify`, `saslgate_check_account`).
    pub fn from_decision(decision: &Decision) -> SaslgateResult {
        match decision {
            Decision::Accepted { .. } => SaslgateResult::Ok,
            Decision::Refused { reason, .. } => SaslgateResult::from_refusal(*reason),
            Decision::Unavailable { .. } => SaslgateResult::Unavailable,
        }
    }

    /// The code of an error of the core (`saslgate_open`).
    pub fn from_error(error: &Error) -> SaslgateResult {
        match error {
            // (braced patterns: they stay valid if a variant gains fields)
            Error::Config { .. } | Error::Usage { .. } => SaslgateResult::Config,
            Error::Storage { .. }
            | Error::Database { .. }
            | Error::TooNew { .. }
            | Error::NotFound { .. }
            | Error::Exists { .. }
            | Error::Io { .. } => SaslgateResult::Unavailable,
        }
    }

    /// The code with this value, if there is one.
    pub fn from_c(code: c_int) -> Option<SaslgateResult> {
        SaslgateResult::ALL
            .into_iter()
            .find(|r| *r as c_int == code)
    }

    /// Short English text: `saslgate_strerror`, and the client-safe `reason` of
    /// `saslgate_verify` / `saslgate_check_account` (refusals: the engine's
    /// [`RefuseReason::public_text`], the same text every face shows).
    pub fn text(self) -> &'static str {
        match self {
            SaslgateResult::Ok => "ok",
            SaslgateResult::BadCredentials => RefuseReason::BadCredentials.public_text(),
            SaslgateResult::Disabled => RefuseReason::Disabled.public_text(),
            SaslgateResult::NotAllowed => RefuseReason::NotAllowed.public_text(),
            SaslgateResult::Throttled => RefuseReason::Throttled.public_text(),
            SaslgateResult::BadInput => RefuseReason::BadInput.public_text(),
            SaslgateResult::NoSuchAccount => RefuseReason::NoSuchAccount.public_text(),
            SaslgateResult::Unavailable => UNAVAILABLE_TEXT,
            SaslgateResult::Config => "configuration error",
            SaslgateResult::InvalidArgument => {
                "invalid argument (NULL handle or required argument)"
            }
            SaslgateResult::Internal => INTERNAL_TEXT,
            SaslgateResult::Blocked => RefuseReason::Blocked.public_text(),
            SaslgateResult::TlsRequired => RefuseReason::TlsRequired.public_text(),
        }
    }
}

const INTERNAL_TEXT: &str = "internal error";
/// `saslgate_strerror`'s answer when it fails itself (no allocation needed).
const INTERNAL_CTEXT: &CStr = cstr(b"internal error\0");
const UNKNOWN_CTEXT: &CStr = cstr(b"unknown saslgate result code\0");

/// NUL-terminated copies of [`SaslgateResult::text`], made once, for
/// `saslgate_strerror` (which returns static strings).
fn c_texts() -> &'static [CString] {
    static TEXTS: OnceLock<Vec<CString>> = OnceLock::new();
    TEXTS.get_or_init(|| {
        SaslgateResult::ALL
            .iter()
            .map(|r| util::c_message(r.text()))
            .collect()
    })
}

/// The C ABI's panic answer: the panic (message and location) goes to syslog
/// (facility authpriv), the C ABI's only log: the library never writes to
/// stdout/stderr of its host.
fn log_panic(func: &str, msg: &str) {
    let line = format!("saslgate: internal error in {func}: {msg}");
    #[cfg(test)]
    PANIC_LOG.with(|l| l.borrow_mut().push(line.clone()));
    #[cfg(not(test))]
    {
        let line = util::c_message(&line);
        // SAFETY: syslog is printf-style; "%s" consumes exactly one NUL-terminated
        // string, which `line` is and outlives the call.
        unsafe {
            libc::syslog(
                libc::LOG_AUTHPRIV | libc::LOG_ERR,
                cstr(b"%s\0").as_ptr(),
                line.as_ptr(),
            )
        };
    }
}

#[cfg(test)]
thread_local! {
    /// What log_panic would have sent to syslog (the unit tests read it).
    static PANIC_LOG: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`guard_with`] for the C ABI: a panic is logged and answered with `on_panic`.
fn guard_c<T>(func: &'static str, on_panic: T, body: impl FnOnce() -> T) -> T {
    guard_with(
        move |msg| {
            log_panic(func, msg);
            on_panic
        },
        body,
    )
}

/// `saslgate_t`: the opaque handle.
pub struct Handle {
    gate: Gate,
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

fn open_impl(config: Option<&[u8]>, db: Option<&[u8]>) -> Result<Gate, (SaslgateResult, Error)> {
    use std::os::unix::ffi::OsStrExt;
    let mut cfg = match config {
        // Whatever stops the file from loading (missing, unreadable, invalid), it is
        // the configuration the caller named that is wrong.
        Some(p) => Config::load(Path::new(std::ffi::OsStr::from_bytes(p)))
            .map_err(|e| (SaslgateResult::Config, e))?,
        None => Config::default(),
    };
    if let Some(db) = db {
        cfg.db = PathBuf::from(std::ffi::OsStr::from_bytes(db));
    }
    Gate::open(cfg).map_err(|e| (SaslgateResult::from_error(&e), e))
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
) -> SaslgateResult {
    guard_c("saslgate_open", SaslgateResult::Internal, || {
        if out.is_null() {
            // SAFETY: errbuf is NULL or errlen writable bytes.
            unsafe { write_text(errbuf, errlen, "saslgate_open: out is NULL") };
            return SaslgateResult::InvalidArgument;
        }
        // SAFETY: out is non-NULL and writable.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: NULL or NUL-terminated strings (caller contract).
        let (config, db) = unsafe { (arg(config_path), arg(db_path)) };
        match open_impl(config, db) {
            Ok(gate) => {
                // SAFETY: out is non-NULL and writable.
                unsafe { *out = Box::into_raw(Box::new(Handle { gate })) };
                SaslgateResult::Ok
            }
            Err((result, e)) => {
                // SAFETY: errbuf is NULL or errlen writable bytes.
                unsafe { write_text(errbuf, errlen, &e.to_string()) };
                result
            }
        }
    })
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
) -> SaslgateResult {
    let result = guard_c("saslgate_verify", SaslgateResult::Internal, || {
        #[cfg(test)]
        super::guard::inject::point("saslgate_verify");
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
            return SaslgateResult::InvalidArgument;
        };
        let req = Request {
            login,
            password,
            service,
            realm,
            client_addr: addr,
            local_addr: None,
            secure: None,
        };
        SaslgateResult::from_decision(&h.gate.decide(&req))
    });
    // SAFETY: reason is NULL or reason_len writable bytes (caller contract).
    unsafe { write_reason(result, reason, reason_len) }
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
) -> SaslgateResult {
    let result = guard_c("saslgate_check_account", SaslgateResult::Internal, || {
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
            return SaslgateResult::InvalidArgument;
        };
        let req = Request {
            login,
            password: b"",
            service,
            realm,
            client_addr: addr,
            local_addr: None,
            secure: None,
        };
        SaslgateResult::from_decision(&h.gate.check_account(&req))
    });
    // SAFETY: reason is NULL or reason_len writable bytes (caller contract).
    unsafe { write_reason(result, reason, reason_len) }
}

/// Writes the client-safe text of `result` ("" for `Ok`) and returns `result`.
///
/// # Safety
/// `reason` is NULL or `reason_len` writable bytes.
unsafe fn write_reason(
    result: SaslgateResult,
    reason: *mut c_char,
    reason_len: usize,
) -> SaslgateResult {
    let msg = match result {
        SaslgateResult::Ok => "",
        other => other.text(),
    };
    guard_c("write_reason", (), || {
        // SAFETY: forwarded caller contract.
        unsafe { write_text(reason, reason_len, msg) }
    });
    result
}

/// See saslgate.h.
///
/// # Safety
/// `handle` is NULL or a live handle from `saslgate_open`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn saslgate_close(handle: *mut Handle) {
    guard_c("saslgate_close", (), || {
        if !handle.is_null() {
            // SAFETY: a non-NULL handle came from Box::into_raw in saslgate_open and
            // is closed once (caller contract).
            let h = unsafe { Box::from_raw(handle) };
            h.gate.flush();
        }
    })
}

/// See saslgate.h. Takes an `int`, not the enum: C may pass any value.
#[no_mangle]
pub extern "C" fn saslgate_strerror(code: c_int) -> *const c_char {
    guard_c("saslgate_strerror", INTERNAL_CTEXT.as_ptr(), || {
        let index = SaslgateResult::from_c(code).map(|r| r as usize);
        match index.and_then(|i| c_texts().get(i)) {
            Some(text) => text.as_ptr(),
            None => UNKNOWN_CTEXT.as_ptr(),
        }
    })
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
    use std::time::Duration;

    fn strerror(code: c_int) -> &'static [u8] {
        // SAFETY: saslgate_strerror returns a static NUL-terminated string.
        unsafe { CStr::from_ptr(saslgate_strerror(code)) }.to_bytes()
    }

    #[test]
    fn every_code_has_its_own_text() {
        let texts: Vec<_> = SaslgateResult::ALL
            .iter()
            .map(|r| strerror(*r as c_int))
            .collect();
        for (i, t) in texts.iter().enumerate() {
            assert!(!t.is_empty());
            assert_eq!(*t, SaslgateResult::ALL[i].text().as_bytes());
            assert!(
                texts.iter().skip(i + 1).all(|o| o != t),
                "duplicate text for {i}"
            );
        }
        assert_eq!(strerror(99), b"unknown saslgate result code");
        assert_eq!(strerror(-1), b"unknown saslgate result code");
        assert_eq!(INTERNAL_CTEXT.to_bytes(), INTERNAL_TEXT.as_bytes());
    }

    #[test]
    fn all_is_complete_and_in_value_order() {
        for (i, r) in SaslgateResult::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert_eq!(SaslgateResult::from_c(i as c_int), Some(*r));
        }
        assert_eq!(
            SaslgateResult::from_c(SaslgateResult::ALL.len() as c_int),
            None
        );
        // one C int, as the header's `int` return type
        assert_eq!(
            std::mem::size_of::<SaslgateResult>(),
            std::mem::size_of::<c_int>()
        );
    }

    #[test]
    fn refusals_keep_the_engines_public_text() {
        for reason in [
            RefuseReason::BadCredentials,
            RefuseReason::Disabled,
            RefuseReason::NotAllowed,
            RefuseReason::Throttled,
            RefuseReason::BadInput,
            RefuseReason::NoSuchAccount,
            RefuseReason::Blocked,
            RefuseReason::TlsRequired,
        ] {
            let refused = Decision::Refused {
                reason,
                detail: String::new(),
                retry_after: None,
                delay: Duration::ZERO,
            };
            let r = SaslgateResult::from_decision(&refused);
            assert_eq!(r, SaslgateResult::from_refusal(reason));
            assert_eq!(r.text(), reason.public_text(), "{reason:?}");
        }
        let unavailable = Decision::Unavailable {
            cause: String::new(),
        };
        assert_eq!(
            SaslgateResult::from_decision(&unavailable),
            SaslgateResult::Unavailable
        );
        assert_eq!(
            SaslgateResult::from_error(&Error::Usage(String::new())),
            SaslgateResult::Config
        );
        assert_eq!(
            SaslgateResult::from_error(&Error::from(rusqlite::Error::InvalidQuery)),
            SaslgateResult::Unavailable
        );
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
                SaslgateResult::InvalidArgument
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
            assert_eq!(rc, SaslgateResult::InvalidArgument);
            assert_eq!(CStr::from_ptr(buf.as_ptr()).to_bytes(), b"invalid");
            saslgate_close(std::ptr::null_mut());
        }
    }

    /// The C ABI's panic boundary: the defined result, the generic reason for the
    /// client, and the message with its location in the log.
    #[test]
    fn a_panic_is_logged_with_its_location_and_answered_internal() {
        PANIC_LOG.with(|l| l.borrow_mut().clear());
        super::super::guard::inject::arm("saslgate_verify");
        let mut buf = [0x55 as c_char; 64];
        // SAFETY: NULL arguments are allowed; buf has buf.len() writable bytes.
        let rc = unsafe {
            saslgate_verify(
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        assert_eq!(rc, SaslgateResult::Internal);
        // SAFETY: write_reason NUL-terminates.
        let reason = unsafe { CStr::from_ptr(buf.as_ptr()) };
        assert_eq!(reason.to_bytes(), b"internal error");
        let logged = PANIC_LOG.with(|l| l.borrow().clone());
        assert_eq!(logged.len(), 1, "{logged:?}");
        let line = &logged[0];
        assert!(
            line.starts_with(
                "saslgate: internal error in saslgate_verify: injected panic in saslgate_verify at src/ffi/capi.rs:"
            ),
            "{line}"
        );
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
