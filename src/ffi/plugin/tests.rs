//! Fake-C-caller tests: drive the mechanism and auxprop callbacks with a fake
//! `sasl_utils_t` and fake server params, the way libsasl2 does (the real libsasl2
//! is exercised by c-tests/).

use super::auxprop::{auxprop_lookup, auxprop_store};
use super::*;
use crate::ffi::guard::inject;
use crate::store::Store;
use crate::{Config, SecretBytes};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_uint, CString};

/// What the fake libsasl2 recorded for one connection.
#[derive(Default)]
struct Fake {
    options: HashMap<&'static str, CString>,
    logs: Vec<String>,
    errors: Vec<String>,
    /// canon_user's copy of the identity (what libsasl2 keeps in the conn).
    authid: CString,
    user: CString,
    canon_calls: Vec<(String, u32)>,
}

thread_local! {
    static FAKE: RefCell<Fake> = RefCell::new(Fake::default());
}

fn with_fake<T>(f: impl FnOnce(&mut Fake) -> T) -> T {
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
    static AUX_GLOB: Cell<*mut c_void> = const { Cell::new(ptr::null_mut()) };
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
struct Conn {
    utils: Box<sys::sasl_utils_t>,
    sparams: Box<sys::sasl_server_params_t>,
    service: CString,
    remote: CString,
}

impl Conn {
    fn new(service: &str) -> Conn {
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
struct Plugs {
    list: *mut sys::sasl_server_plug_t,
}

impl Plugs {
    fn init() -> Plugs {
        let utils: sys::sasl_utils_t = Default::default();
        let (mut ver, mut list, mut count) = (0, ptr::null_mut(), 0);
        // SAFETY: valid out-pointers; utils with no callbacks.
        let rc = unsafe { sasl_server_plug_init(&utils, 4, &mut ver, &mut list, &mut count) };
        assert_eq!((rc, ver, count), (sys::SASL_OK, 4, 2));
        Plugs { list }
    }
    fn plug(&self, i: usize) -> &sys::sasl_server_plug_t {
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
struct Outcome {
    rc: c_int,
    prompts: Vec<String>,
    user: String,
}

fn run(plugs: &Plugs, conn: &mut Conn, mech: usize, inputs: &[&[u8]]) -> Outcome {
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
        if rc != sys::SASL_CONTINUE {
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
    Outcome { rc, prompts, user }
}

fn reset_fake(options: &[(&'static str, &str)]) {
    with_fake(|f| {
        *f = Fake::default();
        for (k, v) in options {
            f.options.insert(k, CString::new(*v).unwrap());
        }
    });
}

fn test_db() -> (tempfile::TempDir, String) {
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

#[test]
fn plug_init_declares_stock_flags_plus_hash_strength() {
    let plugs = Plugs::init();
    let (plain, login) = (*plugs.plug(0), *plugs.plug(1));
    // SAFETY: static names.
    unsafe {
        assert_eq!(CStr::from_ptr(plain.mech_name).to_bytes(), b"PLAIN");
        assert_eq!(CStr::from_ptr(login.mech_name).to_bytes(), b"LOGIN");
    }
    let stock = (sys::SASL_SEC_NOANONYMOUS | sys::SASL_SEC_PASS_CREDENTIALS) as u32;
    assert_eq!(plain.security_flags & 0xffff, stock);
    assert_eq!(plain.security_flags >> 16, 184 / 8);
    assert_eq!(login.security_flags, plain.security_flags);
    assert_eq!(
        plain.features,
        (sys::SASL_FEAT_WANT_CLIENT_FIRST | sys::SASL_FEAT_ALLOWS_PROXY) as u32
    );
    assert_eq!(login.features, 0);
    assert_eq!(plain.max_ssf, 0);
}

#[test]
fn plug_init_checks_its_arguments() {
    let (mut ver, mut list, mut count) = (0, ptr::null_mut(), 0);
    // SAFETY: NULL utils and NULL out-pointers are part of what must be handled.
    unsafe {
        assert_eq!(
            sasl_server_plug_init(ptr::null(), 4, ptr::null_mut(), &mut list, &mut count),
            sys::SASL_BADPARAM
        );
        assert_eq!(
            sasl_server_plug_init(ptr::null(), 3, &mut ver, &mut list, &mut count),
            sys::SASL_BADVERS
        );
        let mut aux = ptr::null_mut();
        assert_eq!(
            sasl_auxprop_plug_init(ptr::null(), 8, ptr::null_mut(), &mut aux, ptr::null()),
            sys::SASL_BADPARAM
        );
        assert_eq!(
            sasl_auxprop_plug_init(ptr::null(), 7, &mut ver, &mut aux, ptr::null()),
            sys::SASL_BADVERS
        );
    }
}

#[test]
fn null_pointers_from_the_caller_are_refused() {
    let plugs = Plugs::init();
    let plain = *plugs.plug(0);
    let mut conn = Conn::new("imap");
    // SAFETY: the callbacks must cope with these NULLs.
    unsafe {
        let mut ctx = ptr::null_mut();
        assert_eq!(
            (plain.mech_new.unwrap())(
                plain.glob_context,
                &mut *conn.sparams,
                ptr::null(),
                0,
                ptr::null_mut()
            ),
            sys::SASL_BADPARAM
        );
        assert_eq!(
            (plain.mech_new.unwrap())(
                ptr::null_mut(),
                &mut *conn.sparams,
                ptr::null(),
                0,
                &mut ctx
            ),
            sys::SASL_BADPARAM
        );
        assert_eq!(
            (plain.mech_new.unwrap())(
                plain.glob_context,
                ptr::null_mut(),
                ptr::null(),
                0,
                &mut ctx
            ),
            sys::SASL_BADPARAM
        );
        let (mut out, mut outlen) = (ptr::null(), 0);
        let mut op: sys::sasl_out_params_t = Default::default();
        assert_eq!(
            (plain.mech_step.unwrap())(
                ptr::null_mut(),
                &mut *conn.sparams,
                ptr::null(),
                0,
                &mut out,
                &mut outlen,
                &mut op
            ),
            sys::SASL_BADPARAM
        );
        (plain.mech_dispose.unwrap())(ptr::null_mut(), ptr::null());
        (plain.mech_free.unwrap())(ptr::null_mut(), ptr::null());
        assert_eq!(
            auxprop_lookup(ptr::null_mut(), ptr::null_mut(), 0, ptr::null(), 0),
            sys::SASL_BADPARAM
        );
        assert_eq!(
            auxprop_store(
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null(),
                0
            ),
            sys::SASL_OK
        );
    }
}

#[test]
fn stock_behaviour_without_saslgate_options() {
    reset_fake(&[]);
    let plugs = Plugs::init();
    let mut conn = Conn::new("smtp");
    let o = run(&plugs, &mut conn, 0, &[b"\0dave\0stock pw"]);
    assert_eq!((o.rc, o.user.as_str()), (sys::SASL_OK, "dave"));
    let o = run(&plugs, &mut conn, 0, &[b"\0dave\0wrong"]);
    assert_eq!(o.rc, sys::SASL_BADAUTH);
    assert!(with_fake(|f| f
        .errors
        .contains(&"Password verification failed".to_string())));
    let o = run(&plugs, &mut conn, 0, &[b"dave"]);
    assert_eq!(o.rc, sys::SASL_BADPROT);
    let o = run(&plugs, &mut conn, 1, &[b"", b"dave", b"stock pw"]);
    assert_eq!(o.prompts, ["Username:", "Password:"]);
    assert_eq!((o.rc, o.user.as_str()), (sys::SASL_OK, "dave"));
    // canonicalised like stock LOGIN: authid + authzid, externally verified
    let flags = with_fake(|f| f.canon_calls.last().unwrap().1);
    assert_eq!(
        flags,
        (sys::SASL_CU_AUTHID | sys::SASL_CU_AUTHZID | sys::SASL_CU_EXTERNALLY_VERIFIED) as u32
    );
    let o = run(&plugs, &mut conn, 1, &[&[b'x'; 1025]]);
    assert_eq!(o.rc, sys::SASL_BADPROT);
}

#[test]
fn saslgate_decides_where_enabled() {
    let (_dir, db) = test_db();
    reset_fake(&[("saslgate_db", &db)]);
    let plugs = Plugs::init();
    let mut conn = Conn::new("imap");
    let o = run(&plugs, &mut conn, 0, &[b"\0alice\0alice pw"]);
    assert_eq!((o.rc, o.user.as_str()), (sys::SASL_OK, "alice"));
    let o = run(&plugs, &mut conn, 0, &[b"\0ALICE\0alice pw"]);
    assert_eq!(
        (o.rc, o.user.as_str()),
        (sys::SASL_OK, "alice"),
        "canonical account name"
    );
    let o = run(&plugs, &mut conn, 0, &[b"\0alice\0wrong"]);
    assert_eq!(o.rc, sys::SASL_BADAUTH);
    let o = run(&plugs, &mut conn, 0, &[b"\0nobody\0wrong"]);
    assert_eq!(o.rc, sys::SASL_BADAUTH);
    let o = run(&plugs, &mut conn, 0, &[b"\0carol\0carol pw"]);
    assert_eq!(o.rc, sys::SASL_DISABLED);
    assert!(with_fake(|f| f
        .errors
        .contains(&"account disabled".to_string())));
    let o = run(&plugs, &mut conn, 0, &[b"\0dave\0stock pw"]);
    assert_eq!(
        o.rc,
        sys::SASL_BADAUTH,
        "stock checkpass is not used where saslgate decides"
    );
    let o = run(&plugs, &mut conn, 1, &[b"alice", b"alice pw"]);
    assert_eq!(o.prompts, ["Password:"]);
    assert_eq!(o.rc, sys::SASL_OK);
    let o = run(&plugs, &mut conn, 0, &[b"\0\0x"]);
    assert_eq!(o.rc, sys::SASL_BADPROT);
    // logs went through utils->log, with the client address
    assert!(with_fake(|f| f.logs.iter().any(|l| l
        .contains("192.0.2.7;4711")
        && l.contains("accepted as alice"))));
}

#[test]
fn broken_configuration_fails_closed() {
    reset_fake(&[("saslgate_config", "/nonexistent/saslgate.conf")]);
    let plugs = Plugs::init();
    let mut conn = Conn::new("imap");
    let o = run(&plugs, &mut conn, 0, &[b"\0alice\0alice pw"]);
    assert_eq!(o.rc, sys::SASL_UNAVAIL);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    reset_fake(&[("saslgate_db", missing.to_str().unwrap())]);
    let o = run(&plugs, &mut conn, 0, &[b"\0alice\0alice pw"]);
    assert_eq!(o.rc, sys::SASL_UNAVAIL);
}

/// The plugin's panic boundary is where a panic ends: logged through libsasl2's log
/// callback with its message and location, answered "unavailable" (as a storage
/// failure), and the plugin keeps working.
#[test]
fn a_panic_is_logged_with_its_location_and_answered_unavailable() {
    reset_fake(&[]);
    let plugs = Plugs::init();
    let mut conn = Conn::new("imap");
    inject::arm("mech_step");
    let o = run(&plugs, &mut conn, 0, &[b"\0dave\0stock pw"]);
    assert_eq!(o.rc, sys::SASL_UNAVAIL);
    let line = with_fake(|f| {
        f.logs
            .iter()
            .find(|l| l.contains("internal error in mech_step"))
            .cloned()
    })
    .expect("a log line for the panic");
    assert!(line.contains("injected panic in mech_step"), "{line}");
    assert!(has_location(&line, "src/ffi/plugin/mech.rs"), "{line}");
    assert!(with_fake(|f| f
        .errors
        .contains(&crate::ffi::UNAVAILABLE_TEXT.to_string())));
    // and the plugin keeps working
    let o = run(&plugs, &mut conn, 0, &[b"\0dave\0stock pw"]);
    assert_eq!(o.rc, sys::SASL_OK);
}

/// `<file>:<line>:<column>` with numbers, for that file.
fn has_location(line: &str, file: &str) -> bool {
    line.split(&format!(" at {file}:"))
        .nth(1)
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(l, c)| {
            l.parse::<u32>().is_ok() && c.chars().next().is_some_and(|ch| ch.is_ascii_digit())
        })
}

#[test]
fn a_panic_in_the_auxprop_gate_is_logged_with_its_location() {
    let (_dir, db) = test_db();
    let utils: sys::sasl_utils_t = Default::default();
    let (mut ver, mut aux) = (0, ptr::null_mut());
    // SAFETY: valid out-pointers.
    let rc = unsafe { sasl_auxprop_plug_init(&utils, 8, &mut ver, &mut aux, ptr::null()) };
    assert_eq!(rc, sys::SASL_OK);
    // SAFETY: aux was just set by the entry point.
    let plug = unsafe { *aux };
    reset_fake(&[("saslgate_db", &db)]);
    let mut conn = Conn::new("imap");
    let c = CString::new("alice").unwrap();
    inject::arm("auxprop_lookup");
    // SAFETY: as libsasl2 calls it.
    let rc = unsafe {
        (plug.auxprop_lookup.unwrap())(plug.glob_context, &mut *conn.sparams, 0, c.as_ptr(), 0)
    };
    assert_eq!(rc, sys::SASL_UNAVAIL);
    assert!(with_fake(|f| f.logs.iter().any(|l| l
        .contains("internal error in auxprop_lookup: injected panic")
        && has_location(l, "src/ffi/plugin/auxprop.rs"))));
    // SAFETY: once, as libsasl2 does at sasl_done.
    unsafe { (plug.auxprop_free.unwrap())(plug.glob_context, ptr::null()) };
}

#[test]
fn auxprop_gate() {
    let (_dir, db) = test_db();
    let utils: sys::sasl_utils_t = Default::default();
    let (mut ver, mut aux) = (0, ptr::null_mut());
    // SAFETY: valid out-pointers.
    let rc = unsafe { sasl_auxprop_plug_init(&utils, 8, &mut ver, &mut aux, ptr::null()) };
    assert_eq!(rc, sys::SASL_OK);
    // SAFETY: aux was just set by the entry point.
    let plug = unsafe { *aux };
    // SAFETY: static name.
    assert_eq!(unsafe { CStr::from_ptr(plug.name) }.to_bytes(), b"saslgate");
    let lookup = |conn: &mut Conn, user: &str| {
        let c = CString::new(user).unwrap();
        // SAFETY: as libsasl2 calls it.
        unsafe {
            (plug.auxprop_lookup.unwrap())(plug.glob_context, &mut *conn.sparams, 0, c.as_ptr(), 0)
        }
    };

    reset_fake(&[]);
    let mut conn = Conn::new("imap");
    assert_eq!(
        lookup(&mut conn, "carol"),
        sys::SASL_NOMECH,
        "not enabled: stays out"
    );

    reset_fake(&[("saslgate_db", &db)]);
    assert_eq!(lookup(&mut conn, "alice"), sys::SASL_OK);
    assert_eq!(lookup(&mut conn, "carol"), sys::SASL_DISABLED);
    assert_eq!(lookup(&mut conn, "nobody"), sys::SASL_NOUSER);
    reset_fake(&[("saslgate_db", &db), ("saslgate_auxprop_unknown", "refuse")]);
    assert_eq!(lookup(&mut conn, "nobody"), sys::SASL_NOAUTHZ);
    {
        let _own = OwnMechScope::enter();
        assert_eq!(
            lookup(&mut conn, "carol"),
            sys::SASL_NOMECH,
            "saslgate's own mechanism decides"
        );
    }

    // Through saslgate's PLAIN, the gate is skipped for the authentication identity
    // but applies to a distinct authorization identity.
    AUX_GLOB.with(|g| g.set(plug.glob_context));
    reset_fake(&[("saslgate_db", &db)]);
    let plugs = Plugs::init();
    let o = run(&plugs, &mut conn, 0, &[b"carol\0alice\0alice pw"]);
    assert_eq!(o.rc, sys::SASL_DISABLED);
    let o = run(&plugs, &mut conn, 0, &[b"\0alice\0alice pw"]);
    assert_eq!(o.rc, sys::SASL_OK);
    AUX_GLOB.with(|g| g.set(ptr::null_mut()));
    drop(plugs);
    // SAFETY: once, as libsasl2 does at sasl_done.
    unsafe { (plug.auxprop_free.unwrap())(plug.glob_context, ptr::null()) };
}

#[test]
fn plain_parser_matches_rfc4616_and_stock() {
    assert_eq!(parse_plain(b"\0a\0p"), Ok((&b""[..], &b"a"[..], &b"p"[..])));
    assert_eq!(
        parse_plain(b"z\0a\0p"),
        Ok((&b"z"[..], &b"a"[..], &b"p"[..]))
    );
    assert_eq!(parse_plain(b"\0a\0"), Ok((&b""[..], &b"a"[..], &b""[..])));
    assert!(parse_plain(b"").is_err());
    assert!(parse_plain(b"a").is_err());
    assert!(parse_plain(b"\0a").is_err());
    assert!(parse_plain(b"\0a\0p\0").is_err());
}
