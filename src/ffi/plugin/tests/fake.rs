//! The fake libsasl2 the plugin's unit tests drive the C entry points with: a
//! `sasl_utils_t` and server params whose callbacks (getopt, log, seterror,
//! checkpass, canon_user with the auxprop lookup it triggers) record what the plugin
//! did, the way libsasl2 calls them (the real libsasl2 is exercised by c-tests/).

use super::super::auxprop::auxprop_lookup;
use super::super::{sasl_server_plug_init, sys};
use crate::store::{AdminStore, Store};
use crate::{Config, SecretBytes};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::ptr;

/// What the fake libsasl2 recorded for one connection.
#[derive(Default)]
pub(super) struct Fake {
    pub(super) options: HashMap<&'static str, CString>,
    pub(super) logs: Vec<String>,
    pub(super) errors: Vec<String>,
    /// canon_user's copy of the identity (what libsasl2 keeps in the conn).
    pub(super) authid: CString,
    pub(super) user: CString,
    pub(super) canon_calls: Vec<(String, u32)>,
}

thread_local! {
    static FAKE: RefCell<Fake> = RefCell::new(Fake::default());
}

pub(super) fn with_fake<T>(f: impl FnOnce(&mut Fake) -> T) -> T {
    FAKE.with(|x| f(&mut x.borrow_mut()))
}

unsafe extern "C" fn fake_getopt(
    _ctx: *mut c_void,
    _plugin: *const c_char,
    option: *const c_char,
    result: *mut *const c_char,
    len: *mut c_uint,
) -> c_int {
    // SAFETY: libsasl2-style call from the plugin: option is a C string, result and
    // len are writable (len may be NULL).
    unsafe {
        let name = CStr::from_ptr(option)
            .to_str()
            .unwrap_or_default()
            .to_string();
        with_fake(|f| match f.options.get(name.as_str()) {
            Some(v) => {
                *result = v.as_ptr();
                if !len.is_null() {
                    *len = v.as_bytes().len() as c_uint;
                }
                sys::SASL_OK
            }
            None => sys::SASL_FAIL,
        })
    }
}

/// The plugin always calls log/seterror with the format "%s" and one string
/// argument; on the SysV x86_64 and AAPCS64 (Linux) ABIs a variadic call with one
/// pointer argument passes it exactly like this non-variadic signature, so this
/// stands in for libsasl2's variadic loggers (stable Rust cannot define C-variadic
/// functions).
unsafe extern "C" fn fake_log(
    _conn: *mut sys::sasl_conn_t,
    _level: c_int,
    fmt: *const c_char,
    arg: *const c_char,
) {
    // SAFETY: fmt and arg are the "%s" format and the NUL-terminated message.
    let (fmt, msg) = unsafe { (CStr::from_ptr(fmt), CStr::from_ptr(arg)) };
    assert_eq!(fmt.to_bytes(), b"%s");
    with_fake(|f| f.logs.push(msg.to_string_lossy().into_owned()));
}

unsafe extern "C" fn fake_seterror(
    _conn: *mut sys::sasl_conn_t,
    _flags: c_uint,
    fmt: *const c_char,
    arg: *const c_char,
) {
    // SAFETY: as for fake_log.
    let (fmt, msg) = unsafe { (CStr::from_ptr(fmt), CStr::from_ptr(arg)) };
    assert_eq!(fmt.to_bytes(), b"%s");
    with_fake(|f| f.errors.push(msg.to_string_lossy().into_owned()));
}

unsafe extern "C" fn fake_checkpass(
    _conn: *mut sys::sasl_conn_t,
    user: *const c_char,
    ulen: c_uint,
    pass: *const c_char,
    passlen: c_uint,
) -> c_int {
    // SAFETY: the plugin passes the canonical authid (ulen bytes) and a
    // NUL-terminated password of passlen bytes.
    unsafe {
        let user = std::slice::from_raw_parts(user.cast::<u8>(), ulen as usize);
        let pass_c = CStr::from_ptr(pass).to_bytes();
        assert_eq!(pass_c.len(), passlen as usize, "password is NUL-terminated");
        if user == b"dave" && pass_c == b"stock pw" {
            sys::SASL_OK
        } else {
            sys::SASL_BADAUTH
        }
    }
}

unsafe extern "C" fn fake_canon(
    _conn: *mut sys::sasl_conn_t,
    name: *const c_char,
    len: c_uint,
    flags: c_uint,
    op: *mut sys::sasl_out_params_t,
) -> c_int {
    // SAFETY: name has len bytes (or is NUL-terminated when len is 0); op is ours.
    unsafe {
        let bytes = if len == 0 {
            CStr::from_ptr(name).to_bytes().to_vec()
        } else {
            std::slice::from_raw_parts(name.cast::<u8>(), len as usize).to_vec()
        };
        let trimmed = String::from_utf8_lossy(&bytes).trim().to_string();
        // The auxprop lookup libsasl2 runs during canonicalisation.
        let aux = auxprop_lookup_as_libsasl2(&trimmed, flags);
        with_fake(|f| {
            f.canon_calls.push((trimmed.clone(), flags));
            if trimmed.is_empty() {
                return sys::SASL_FAIL;
            }
            let c = CString::new(trimmed.clone()).unwrap();
            if flags & sys::SASL_CU_AUTHID as c_uint != 0 {
                f.authid = c.clone();
                (*op).authid = f.authid.as_ptr();
                (*op).alen = trimmed.len() as c_uint;
            }
            if flags & sys::SASL_CU_AUTHZID as c_uint != 0 {
                f.user = c;
                (*op).user = f.user.as_ptr();
                (*op).ulen = trimmed.len() as c_uint;
            }
            let externally = flags & sys::SASL_CU_EXTERNALLY_VERIFIED as c_uint != 0;
            match aux {
                sys::SASL_NOUSER | sys::SASL_NOMECH if externally => sys::SASL_OK,
                sys::SASL_NOMECH => sys::SASL_OK,
                rc => rc,
            }
        })
    }
}

thread_local! {
    /// The auxprop instance the canon callback consults (as libsasl2 would), if any.
    pub(super) static AUX_GLOB: Cell<*mut c_void> = const { Cell::new(ptr::null_mut()) };
    static CURRENT_SPARAMS: Cell<*mut sys::sasl_server_params_t> = const { Cell::new(ptr::null_mut()) };
}

fn auxprop_lookup_as_libsasl2(user: &str, _flags: c_uint) -> c_int {
    let glob = AUX_GLOB.with(|g| g.get());
    let sp = CURRENT_SPARAMS.with(|c| c.get());
    if glob.is_null() || sp.is_null() {
        return sys::SASL_NOMECH;
    }
    let c = CString::new(user).unwrap();
    // SAFETY: glob is a live AuxInstance of this test, sp the live fake params.
    unsafe { auxprop_lookup(glob, sp, 0, c.as_ptr(), user.len() as c_uint) }
}

/// One fake connection: utils + params, heap-pinned.
pub(super) struct Conn {
    pub(super) utils: Box<sys::sasl_utils_t>,
    pub(super) sparams: Box<sys::sasl_server_params_t>,
    service: CString,
    remote: CString,
}

impl Conn {
    pub(super) fn new(service: &str) -> Conn {
        let service = CString::new(service).unwrap();
        let remote = CString::new("192.0.2.7;4711").unwrap();
        let mut utils: Box<sys::sasl_utils_t> = Box::default();
        utils.getopt = Some(fake_getopt);
        utils.checkpass = Some(fake_checkpass);
        if cfg!(all(
            target_os = "linux",
            any(target_arch = "x86_64", target_arch = "aarch64")
        )) {
            // SAFETY: see fake_log: same argument passing for the calls the plugin
            // makes ("%s" plus one pointer).
            unsafe {
                utils.log = Some(std::mem::transmute::<
                    unsafe extern "C" fn(
                        *mut sys::sasl_conn_t,
                        c_int,
                        *const c_char,
                        *const c_char,
                    ),
                    unsafe extern "C" fn(*mut sys::sasl_conn_t, c_int, *const c_char, ...),
                >(fake_log));
                utils.seterror = Some(std::mem::transmute::<
                    unsafe extern "C" fn(
                        *mut sys::sasl_conn_t,
                        c_uint,
                        *const c_char,
                        *const c_char,
                    ),
                    unsafe extern "C" fn(*mut sys::sasl_conn_t, c_uint, *const c_char, ...),
                >(fake_seterror));
            }
        }
        let mut sparams: Box<sys::sasl_server_params_t> = Box::default();
        sparams.service = service.as_ptr();
        sparams.servicelen = service.as_bytes().len() as c_uint;
        sparams.ipremoteport = remote.as_ptr();
        sparams.ipremlen = remote.as_bytes().len() as c_uint;
        sparams.utils = &*utils;
        sparams.canon_user = Some(fake_canon);
        let mut c = Conn {
            utils,
            sparams,
            service,
            remote,
        };
        CURRENT_SPARAMS.with(|p| p.set(&mut *c.sparams));
        let _ = (&c.service, &c.remote);
        c
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        CURRENT_SPARAMS.with(|p| p.set(ptr::null_mut()));
    }
}

/// The two mechanism plugs, through the real entry point.
pub(super) struct Plugs {
    list: *mut sys::sasl_server_plug_t,
}

impl Plugs {
    pub(super) fn init() -> Plugs {
        let utils: sys::sasl_utils_t = Default::default();
        let (mut ver, mut list, mut count) = (0, ptr::null_mut(), 0);
        // SAFETY: valid out-pointers; utils with no callbacks.
        let rc = unsafe { sasl_server_plug_init(&utils, 4, &mut ver, &mut list, &mut count) };
        assert_eq!((rc, ver, count), (sys::SASL_OK, 4, 2));
        Plugs { list }
    }
    pub(super) fn plug(&self, i: usize) -> &sys::sasl_server_plug_t {
        // SAFETY: list has two entries, alive until Drop.
        unsafe { &*self.list.add(i) }
    }
}

impl Drop for Plugs {
    fn drop(&mut self) {
        for i in 0..2 {
            let p = *self.plug(i);
            // SAFETY: as libsasl2 does at sasl_done: mech_free once per mechanism.
            unsafe { (p.mech_free.unwrap())(p.glob_context, ptr::null()) };
        }
    }
}

/// Result of running one exchange.
pub(super) struct Outcome {
    pub(super) rc: c_int,
    /// Every step's result.
    pub(super) rcs: Vec<c_int>,
    pub(super) prompts: Vec<String>,
    pub(super) user: String,
}

/// Runs one exchange as libsasl2 does: stops at the first result that is not
/// SASL_CONTINUE.
pub(super) fn run(plugs: &Plugs, conn: &mut Conn, mech: usize, inputs: &[&[u8]]) -> Outcome {
    exchange(plugs, conn, mech, inputs, true)
}

/// Runs one exchange; with `stop` false, sends every input whatever the results
/// (a misbehaving caller).
pub(super) fn exchange(
    plugs: &Plugs,
    conn: &mut Conn,
    mech: usize,
    inputs: &[&[u8]],
    stop: bool,
) -> Outcome {
    let plug = *plugs.plug(mech);
    let mut ctx: *mut c_void = ptr::null_mut();
    // SAFETY: as libsasl2 calls it: glob_context from the plug, valid sparams.
    let rc = unsafe {
        (plug.mech_new.unwrap())(
            plug.glob_context,
            &mut *conn.sparams,
            ptr::null(),
            0,
            &mut ctx,
        )
    };
    assert_eq!(rc, sys::SASL_OK);
    let mut op: sys::sasl_out_params_t = Default::default();
    let mut prompts = Vec::new();
    let mut rc = sys::SASL_FAIL;
    let mut rcs = Vec::new();
    for input in inputs {
        let (mut out, mut outlen) = (ptr::null(), 0);
        // SAFETY: input is a live slice; out-pointers are locals.
        rc = unsafe {
            (plug.mech_step.unwrap())(
                ctx,
                &mut *conn.sparams,
                input.as_ptr().cast(),
                input.len() as c_uint,
                &mut out,
                &mut outlen,
                &mut op,
            )
        };
        if !out.is_null() {
            // SAFETY: out points to outlen bytes (static prompts).
            let s = unsafe { std::slice::from_raw_parts(out.cast::<u8>(), outlen as usize) };
            prompts.push(String::from_utf8_lossy(s).into_owned());
        }
        rcs.push(rc);
        if stop && rc != sys::SASL_CONTINUE {
            break;
        }
    }
    let user = if rc == sys::SASL_OK && !op.user.is_null() {
        // SAFETY: set by fake_canon to a live CString.
        unsafe { CStr::from_ptr(op.user) }
            .to_string_lossy()
            .into_owned()
    } else {
        String::new()
    };
    // SAFETY: dispose once, as libsasl2 does.
    unsafe { (plug.mech_dispose.unwrap())(ctx, &*conn.utils) };
    Outcome {
        rc,
        rcs,
        prompts,
        user,
    }
}

pub(super) fn reset_fake(options: &[(&'static str, &str)]) {
    with_fake(|f| {
        *f = Fake::default();
        for (k, v) in options {
            f.options.insert(k, CString::new(*v).unwrap());
        }
    });
}

pub(super) fn test_db() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sg.db");
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
    (dir, db.to_string_lossy().into_owned())
}
