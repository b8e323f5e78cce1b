//! Small safe wrappers around the libsasl2 utility functions a plugin receives
//! (`sasl_utils_t`): logging, error strings, options. Every raw pointer is checked
//! for NULL before use.

use super::sys;
use std::ffi::{c_char, c_int, c_uint, CStr, CString};

/// The plugin name libsasl2 passes to option lookups (`sasl_getopt_t`).
pub const PLUGIN_NAME: &CStr = cstr(b"saslgate\0");

/// `CStr` from a NUL-terminated literal, at compile time.
pub const fn cstr(bytes: &'static [u8]) -> &'static CStr {
    match CStr::from_bytes_with_nul(bytes) {
        Ok(s) => s,
        Err(_) => panic!("not a NUL-terminated string without inner NUL"),
    }
}

const FMT_S: &CStr = cstr(b"%s\0");

/// A C string for a message: inner NUL bytes become `?` so nothing is cut silently.
pub fn c_message(msg: &str) -> CString {
    let bytes: Vec<u8> = msg.bytes().map(|b| if b == 0 { b'?' } else { b }).collect();
    CString::new(bytes).unwrap_or_default()
}

/// Logs through libsasl2's log callback (the host's logging: syslog for Postfix
/// and Cyrus). Never writes to stdout/stderr.
///
/// # Safety
/// `utils` is NULL or points to a valid `sasl_utils_t` for the duration of the call.
pub unsafe fn log(utils: *const sys::sasl_utils_t, level: c_int, msg: &str) {
    // SAFETY: the caller guarantees utils is NULL or valid; as_ref checks NULL.
    let Some(u) = (unsafe { utils.as_ref() }) else {
        return;
    };
    let Some(logf) = u.log else { return };
    let text = c_message(&format!("saslgate: {msg}"));
    // SAFETY: log is libsasl2's printf-style logger; the format "%s" consumes exactly
    // one NUL-terminated string argument, which `text` is and outlives the call.
    unsafe { logf(u.conn, level, FMT_S.as_ptr(), text.as_ptr()) };
}

/// Sets the connection's error detail (`sasl_errdetail`) through `seterror`.
///
/// # Safety
/// As for [`log`].
pub unsafe fn seterror(utils: *const sys::sasl_utils_t, msg: &str) {
    // SAFETY: the caller guarantees utils is NULL or valid; as_ref checks NULL.
    let Some(u) = (unsafe { utils.as_ref() }) else {
        return;
    };
    let Some(setf) = u.seterror else { return };
    let text = c_message(msg);
    // SAFETY: seterror is printf-style; "%s" consumes exactly one NUL-terminated
    // string argument, which `text` is and outlives the call.
    unsafe { setf(u.conn, 0, FMT_S.as_ptr(), text.as_ptr()) };
}

/// Reads one option through libsasl2's `getopt` (the service's SASL configuration:
/// Postfix `smtpd.conf`, Cyrus `sasl_*` lines in imapd.conf, or the application's
/// getopt callback). Empty values count as unset.
///
/// # Safety
/// As for [`log`].
pub unsafe fn getopt(utils: *const sys::sasl_utils_t, option: &CStr) -> Option<String> {
    // SAFETY: the caller guarantees utils is NULL or valid; as_ref checks NULL.
    let u = unsafe { utils.as_ref() }?;
    let f = u.getopt?;
    let mut value: *const c_char = std::ptr::null();
    let mut len: c_uint = 0;
    // SAFETY: getopt is libsasl2's option lookup for this context; it only writes the
    // two out-pointers, which point to live locals.
    let rc = unsafe {
        f(
            u.getopt_context,
            PLUGIN_NAME.as_ptr(),
            option.as_ptr(),
            &mut value,
            &mut len,
        )
    };
    if rc != sys::SASL_OK || value.is_null() {
        return None;
    }
    // SAFETY: value is non-NULL and, per the getopt contract, points to `len` bytes
    // (or a NUL-terminated string when len is 0) owned by the configuration, valid
    // for at least the duration of this call; we copy it at once.
    let bytes = unsafe {
        if len > 0 {
            std::slice::from_raw_parts(value.cast::<u8>(), len as usize)
        } else {
            CStr::from_ptr(value).to_bytes()
        }
    };
    let text = String::from_utf8_lossy(bytes).trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// Bytes of a possibly-NULL C string with an optional length (0 = use strlen).
///
/// # Safety
/// `ptr` is NULL, or points to `len` readable bytes (len > 0), or to a NUL-terminated
/// string (len == 0), valid for the lifetime `'a`.
pub unsafe fn opt_bytes<'a>(ptr: *const c_char, len: c_uint) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: ptr is non-NULL; the caller guarantees the length/termination contract.
    let b = unsafe {
        if len > 0 {
            std::slice::from_raw_parts(ptr.cast::<u8>(), len as usize)
        } else {
            CStr::from_ptr(ptr).to_bytes()
        }
    };
    Some(b)
}

/// Printable form of a login name for log lines (escapes control characters).
pub fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}
