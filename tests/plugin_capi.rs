//! The C ABI (include/saslgate.h) called through its `extern "C"` functions, the way
//! a C program calls them, against a real database. (c-tests/run.sh does the same
//! from C, plus the libsasl2 plugin; this keeps the ABI covered by `cargo test`.)

use saslgate::ffi::capi::{self, code, Handle};
use saslgate::store::Store;
use saslgate::{Config, SecretBytes};
use std::ffi::{c_char, CStr, CString};
use std::ptr;

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn make_db(dir: &std::path::Path) -> CString {
    let db = dir.join("sg.db");
    let cfg = Config {
        db: db.clone(),
        bcrypt_cost: 4,
        ..Config::default()
    };
    let mut store = Store::create(&cfg).unwrap();
    store.add_account("alice", "default").unwrap();
    store
        .set_master_password("alice", &SecretBytes::from_slice(b"alice pw"), false)
        .unwrap();
    store.add_account("carol", "default").unwrap();
    store
        .set_master_password("carol", &SecretBytes::from_slice(b"carol pw"), false)
        .unwrap();
    store.set_disabled("carol", true).unwrap();
    c(db.to_str().unwrap())
}

fn open(db: &CString) -> *mut Handle {
    let mut h: *mut Handle = ptr::null_mut();
    let mut err = [0 as c_char; 200];
    // SAFETY: valid C strings and buffers.
    let rc = unsafe {
        capi::saslgate_open(
            ptr::null(),
            db.as_ptr(),
            &mut h,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    assert_eq!(rc, code::OK);
    assert!(!h.is_null());
    h
}

fn verify(h: *const Handle, login: &str, pw: &str, service: &str) -> (i32, String) {
    let (login, pw, service) = (c(login), c(pw), c(service));
    let addr = c("127.0.0.1");
    let mut reason = [0 as c_char; 128];
    // SAFETY: valid C strings and buffer; h is a live handle.
    let rc = unsafe {
        capi::saslgate_verify(
            h,
            login.as_ptr(),
            pw.as_ptr(),
            service.as_ptr(),
            ptr::null(),
            addr.as_ptr(),
            reason.as_mut_ptr(),
            reason.len(),
        )
    };
    // SAFETY: saslgate_verify NUL-terminates the reason buffer.
    let reason = unsafe { CStr::from_ptr(reason.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    (rc, reason)
}

#[test]
fn open_verify_check_close() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let h = open(&db);
    assert_eq!(
        verify(h, "alice", "alice pw", "imap"),
        (code::OK, String::new())
    );
    assert_eq!(verify(h, "alice", "nope", "imap").0, code::BAD_CREDENTIALS);
    assert_eq!(verify(h, "nobody", "nope", "imap").0, code::BAD_CREDENTIALS);
    let (rc, reason) = verify(h, "carol", "carol pw", "imap");
    assert_eq!((rc, reason.as_str()), (code::DISABLED, "account disabled"));

    let (nobody, imap) = (c("nobody"), c("imap"));
    // SAFETY: valid C strings; NULL reason buffer is allowed.
    let rc = unsafe {
        capi::saslgate_check_account(
            h,
            nobody.as_ptr(),
            imap.as_ptr(),
            ptr::null(),
            ptr::null(),
            ptr::null_mut(),
            0,
        )
    };
    assert_eq!(rc, code::NO_SUCH_ACCOUNT);
    // SAFETY: h is live and closed once; NULL is accepted.
    unsafe {
        capi::saslgate_close(h);
        capi::saslgate_close(ptr::null_mut());
    }
}

#[test]
fn open_failures_have_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let missing = c(dir.path().join("missing.db").to_str().unwrap());
    let bad_conf_path = dir.path().join("bad.conf");
    std::fs::write(&bad_conf_path, "bcrypt_cots = 4\n").unwrap();
    let bad_conf = c(bad_conf_path.to_str().unwrap());
    let mut h: *mut Handle = ptr::null_mut();
    let mut err = [0 as c_char; 200];
    // SAFETY: valid strings and buffers.
    unsafe {
        assert_eq!(
            capi::saslgate_open(
                ptr::null(),
                missing.as_ptr(),
                &mut h,
                err.as_mut_ptr(),
                err.len()
            ),
            code::UNAVAILABLE
        );
        assert!(h.is_null());
        assert!(!CStr::from_ptr(err.as_ptr()).to_bytes().is_empty());
        assert_eq!(
            capi::saslgate_open(bad_conf.as_ptr(), ptr::null(), &mut h, ptr::null_mut(), 0),
            code::CONFIG
        );
        assert_eq!(
            capi::saslgate_open(
                ptr::null(),
                missing.as_ptr(),
                ptr::null_mut(),
                ptr::null_mut(),
                0
            ),
            code::INVALID_ARGUMENT
        );
    }
}

#[test]
fn strings_are_static_and_never_null() {
    for code in -1..=12 {
        let p = capi::saslgate_strerror(code);
        assert!(!p.is_null());
    }
    // SAFETY: static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(capi::saslgate_version()) };
    assert_eq!(v.to_str().unwrap(), saslgate::VERSION);
}

#[test]
fn one_handle_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let h = open(&db) as usize;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                (0..3)
                    .all(|_| verify(h as *const Handle, "alice", "alice pw", "imap").0 == code::OK)
            })
        })
        .collect();
    assert!(threads.into_iter().all(|t| t.join().unwrap()));
    // SAFETY: all users of the handle have finished.
    unsafe { capi::saslgate_close(h as *mut Handle) };
}
