//! Drives the plugin's PLAIN and LOGIN mechanisms through the C entry points
//! (`sasl_server_plug_init`, then `mech_new` / `mech_step` / `mech_dispose`) the way
//! libsasl2 does, with a fake `sasl_utils_t` (getopt, canon_user, checkpass; no
//! loggers: the plugin skips NULL ones).

use super::{fixture, Fixture, ALICE_PW, BOB_PW};
use saslgate::ffi::plugin::sasl_server_plug_init;
use saslgate::ffi::sys;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::ptr;
use std::sync::OnceLock;

thread_local! {
    /// Option values the fake getopt hands out (kept alive here).
    static OPTIONS: RefCell<Vec<(CString, CString)>> = const { RefCell::new(Vec::new()) };
    /// canon_user's copies of the identities (libsasl2 keeps them in the conn).
    static CANON: RefCell<(CString, CString)> = RefCell::new((CString::default(), CString::default()));
}

unsafe extern "C" fn fake_getopt(
    _ctx: *mut c_void,
    _plugin: *const c_char,
    option: *const c_char,
    result: *mut *const c_char,
    len: *mut c_uint,
) -> c_int {
    // SAFETY: called by the plugin with a C-string option and writable result/len.
    unsafe {
        let name = CStr::from_ptr(option);
        OPTIONS.with(|o| {
            for (k, v) in o.borrow().iter() {
                if k.as_c_str() == name {
                    *result = v.as_ptr();
                    if !len.is_null() {
                        *len = v.as_bytes().len() as c_uint;
                    }
                    return sys::SASL_OK;
                }
            }
            sys::SASL_FAIL
        })
    }
}

unsafe extern "C" fn fake_checkpass(
    _conn: *mut sys::sasl_conn_t,
    _user: *const c_char,
    _ulen: c_uint,
    pass: *const c_char,
    passlen: c_uint,
) -> c_int {
    // SAFETY: the plugin passes a copy of passlen bytes followed by a NUL. (The
    // bytes may contain a NUL themselves: stock LOGIN hands such a password on
    // unchanged, and so does the plugin's stock path; found by this target.)
    let terminated = unsafe { *pass.add(passlen as usize) == 0 };
    assert!(
        terminated,
        "checkpass password not NUL-terminated at passlen"
    );
    sys::SASL_BADAUTH
}

unsafe extern "C" fn fake_canon(
    _conn: *mut sys::sasl_conn_t,
    name: *const c_char,
    len: c_uint,
    flags: c_uint,
    op: *mut sys::sasl_out_params_t,
) -> c_int {
    // SAFETY: name has len bytes (NUL-terminated when len is 0); op is ours.
    unsafe {
        let bytes = if len == 0 {
            CStr::from_ptr(name).to_bytes().to_vec()
        } else {
            std::slice::from_raw_parts(name.cast::<u8>(), len as usize).to_vec()
        };
        if bytes.is_empty() || bytes.contains(&0) || bytes.len() > 255 {
            return sys::SASL_BADPROT;
        }
        let c = CString::new(bytes.clone()).unwrap();
        CANON.with(|k| {
            let mut k = k.borrow_mut();
            if flags & sys::SASL_CU_AUTHID as c_uint != 0 {
                k.0 = c.clone();
                (*op).authid = k.0.as_ptr();
                (*op).alen = bytes.len() as c_uint;
            }
            if flags & sys::SASL_CU_AUTHZID as c_uint != 0 {
                k.1 = c;
                (*op).user = k.1.as_ptr();
                (*op).ulen = bytes.len() as c_uint;
            }
        });
        sys::SASL_OK
    }
}

struct Plugs(*mut sys::sasl_server_plug_t);
// SAFETY: the plug list is static data of the plugin, read-only after init.
unsafe impl Send for Plugs {}
// SAFETY: as above.
unsafe impl Sync for Plugs {}

fn plugs() -> &'static Plugs {
    static P: OnceLock<Plugs> = OnceLock::new();
    P.get_or_init(|| {
        let utils: sys::sasl_utils_t = Default::default();
        let (mut ver, mut list, mut count) = (0, ptr::null_mut(), 0);
        // SAFETY: valid out-pointers; utils without callbacks (as at plugin load).
        let rc = unsafe { sasl_server_plug_init(&utils, 4, &mut ver, &mut list, &mut count) };
        assert_eq!((rc, count), (sys::SASL_OK, 2));
        Plugs(list)
    })
}

fn config_path(f: &Fixture) -> CString {
    static PATH: OnceLock<CString> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = f.config.db.with_file_name("plugin.conf");
        let text = format!(
            "db = \"{}\"\nbcrypt_cost = 4\n[throttle]\naddress_failures = 40\n\
             address_window = \"10s\"\naddress_block = \"2s\"\n\
             account_address_failures = 20\naccount_address_window = \"10s\"\n\
             account_address_block = \"2s\"\nslowdown_failures = 1000000\n",
            f.config.db.display()
        );
        std::fs::write(&path, text).unwrap();
        CString::new(path.to_string_lossy().into_owned()).unwrap()
    })
    .clone()
}

/// First byte: bit 0 LOGIN (else PLAIN), bit 1 stock path (no saslgate options),
/// bits 2-3 service (imap, smtp, pop3, empty), bit 4 realm "example.org", bit 5 no
/// client address. The rest: the client's steps, split at 0xFF bytes.
pub fn check_mech(data: &[u8]) {
    let f = fixture();
    let (flags, rest) = data.split_first().map_or((0, data), |(a, b)| (*a, b));
    let login_mech = flags & 1 != 0;
    let stock = flags & 2 != 0;
    let service = ["imap", "smtp", "pop3", ""][usize::from((flags >> 2) & 3)];
    let steps: Vec<Vec<u8>> = rest
        .split(|&b| b == 0xff)
        .take(4)
        .map(|p| super::expand(f, p))
        .collect();

    OPTIONS.with(|o| {
        let mut o = o.borrow_mut();
        o.clear();
        if !stock {
            o.push((CString::new("saslgate_config").unwrap(), config_path(f)));
        }
    });
    let service_c = CString::new(service).unwrap();
    let realm = CString::new("example.org").unwrap();
    let remote = CString::new("192.0.2.9;4711").unwrap();
    let mut utils: Box<sys::sasl_utils_t> = Box::default();
    utils.getopt = Some(fake_getopt);
    utils.checkpass = Some(fake_checkpass);
    let mut sp: Box<sys::sasl_server_params_t> = Box::default();
    sp.service = service_c.as_ptr();
    sp.servicelen = service.len() as c_uint;
    if flags & 0x10 != 0 {
        sp.user_realm = realm.as_ptr();
        sp.urlen = 11;
    }
    if flags & 0x20 == 0 {
        sp.ipremoteport = remote.as_ptr();
        sp.ipremlen = remote.as_bytes().len() as c_uint;
    }
    sp.utils = &*utils;
    sp.canon_user = Some(fake_canon);

    let plug = plugs();
    // SAFETY: the list has two entries (PLAIN, LOGIN) for the life of the process.
    let plug = unsafe { *plug.0.add(usize::from(login_mech)) };
    let mut ctx: *mut c_void = ptr::null_mut();
    // SAFETY: as libsasl2 calls it.
    let rc =
        unsafe { (plug.mech_new.unwrap())(plug.glob_context, &mut *sp, ptr::null(), 0, &mut ctx) };
    assert_eq!(rc, sys::SASL_OK);
    let mut op: sys::sasl_out_params_t = Default::default();
    let mut rc = sys::SASL_CONTINUE;
    let mut sent: Vec<&[u8]> = Vec::new();
    for input in &steps {
        let (mut out, mut outlen) = (ptr::null(), 0);
        // SAFETY: input is a live slice, out-pointers are locals, op is ours.
        rc = unsafe {
            (plug.mech_step.unwrap())(
                ctx,
                &mut *sp,
                if input.is_empty() {
                    ptr::null()
                } else {
                    input.as_ptr().cast()
                },
                input.len() as c_uint,
                &mut out,
                &mut outlen,
                &mut op,
            )
        };
        sent.push(input);
        if !out.is_null() {
            // SAFETY: out points to outlen bytes (static prompts).
            let s = unsafe { std::slice::from_raw_parts(out.cast::<u8>(), outlen as usize) };
            assert!(
                s == b"Username:" || s == b"Password:",
                "unexpected server challenge"
            );
        }
        if rc != sys::SASL_CONTINUE {
            break;
        }
    }
    if std::env::var_os("FUZZKIT_VERBOSE").is_some() {
        eprintln!("mech login={login_mech} stock={stock} service={service:?} -> rc {rc}");
    }
    if rc == sys::SASL_OK {
        assert!(
            !stock,
            "stock path accepted although checkpass always refuses"
        );
        assert!(!op.authid.is_null());
        // SAFETY: set by fake_canon to a live CString.
        let authid = unsafe { CStr::from_ptr(op.authid) }.to_bytes().to_vec();
        let password: &[u8] = if login_mech {
            // The password is the last input the exchange consumed.
            sent.last().copied().unwrap_or_default()
        } else {
            let msg = sent.last().copied().unwrap_or_default();
            saslgate::ffi::plugin::parse_plain(msg)
                .expect("accepted PLAIN message")
                .2
        };
        let canon_service =
            saslgate::names::service_name(service, &f.config.service_aliases).unwrap_or_default();
        let app =
            saslgate::crypto::canonical_generated(password, saslgate::crypto::APP_PASSWORD_LEN);
        let is_app = |s: &saslgate::SecretBytes| {
            let k = saslgate::crypto::canonical_generated(
                s.as_bytes(),
                saslgate::crypto::APP_PASSWORD_LEN,
            );
            matches!((&app, k), (Some(a), Some(k)) if a.as_bytes() == k.as_bytes())
        };
        let ok = match authid.as_slice() {
            b"alice" => {
                password == ALICE_PW
                    || (is_app(&f.app_imap) && canon_service == "imap")
                    || (is_app(&f.app_restricted) && canon_service == "smtp")
            }
            b"bob" => password.starts_with(BOB_PW) && password.len() > BOB_PW.len(),
            b"dave@example.org" => password == b"dave pw",
            b"eve" => password == b"eve pw" && canon_service == "smtp",
            _ => false,
        };
        assert!(
            ok,
            "plugin accepted {:?} with a password that is not theirs",
            String::from_utf8_lossy(&authid)
        );
    }
    // SAFETY: dispose once, as libsasl2 does.
    unsafe { (plug.mech_dispose.unwrap())(ctx, &*utils) };
}
