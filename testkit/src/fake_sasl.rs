//! The one fake libsasl2 of the project: a `sasl_utils_t` and server params
//! whose callbacks (getopt, log, seterror, checkpass, canon_user with the
//! auxprop lookup it triggers) record what the plugin did, and drivers that call
//! the plugin's C entry points the way libsasl2 does (`sasl_server_plug_init`,
//! `mech_new` / `mech_step` / `mech_dispose`, `mech_free`). The real libsasl2 is
//! exercised by c-tests/ and the integration tests; this fake lets unit tests and
//! the fuzz target reach every branch without it.
//!
//! This file is compiled twice: as `saslgate_testkit::fake_sasl` (for tests/ and
//! fuzz/) and inside the plugin's unit tests (`src/ffi/plugin/tests.rs`, by
//! `#[path]`), which need the crate's test-only hooks. Each includer provides a
//! sibling module `api` with the plugin's `sys` bindings and entry points.
#![allow(unsafe_code)]
#![allow(dead_code)]

use super::api::{sasl_auxprop_plug_init, sasl_server_plug_init, sys};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::ptr;

/// What the fake libsasl2 recorded for one connection, and what it answers.
pub struct Fake {
    /// What `getopt` hands out (the plugin's options from the service's config).
    pub options: HashMap<String, CString>,
    pub logs: Vec<String>,
    pub errors: Vec<String>,
    /// canon_user's copies of the identities (what libsasl2 keeps in the conn).
    pub authid: CString,
    pub user: CString,
    pub canon_calls: Vec<(String, u32)>,
    /// Accounts `checkpass` (the stock verifier behind the plugin) accepts.
    pub stock_accounts: Vec<(Vec<u8>, Vec<u8>)>,
    /// The auxprop plug canon_user consults, as libsasl2 would (see [`use_auxprop`]).
    pub auxprop: *const sys::sasl_auxprop_plug_t,
}

impl Default for Fake {
    fn default() -> Self {
        Fake {
            options: HashMap::new(),
            logs: Vec::new(),
            errors: Vec::new(),
            authid: CString::default(),
            user: CString::default(),
            canon_calls: Vec::new(),
            stock_accounts: vec![(b"dave".to_vec(), b"stock pw".to_vec())],
            auxprop: ptr::null(),
        }
    }
}

thread_local! {
    static FAKE: RefCell<Fake> = RefCell::new(Fake::default());
    static CURRENT_SPARAMS: Cell<*mut sys::sasl_server_params_t> = const { Cell::new(ptr::null_mut()) };
}

/// The recording of this thread's fake.
pub fn with_fake<T>(f: impl FnOnce(&mut Fake) -> T) -> T {
    FAKE.with(|x| f(&mut x.borrow_mut()))
}

/// Starts a new recording with these `getopt` options (the auxprop plug in
/// use stays).
pub fn reset_fake(options: &[(&str, &str)]) {
    with_fake(|f| {
        let auxprop = f.auxprop;
        *f = Fake::default();
        f.auxprop = auxprop;
        for (k, v) in options {
            f.options
                .insert((*k).to_string(), CString::new(*v).unwrap());
        }
    });
}

/// Makes canon_user run this auxprop plug's lookup (as libsasl2 does during
/// canonicalisation); a null pointer turns that off.
pub fn use_auxprop(plug: *const sys::sasl_auxprop_plug_t) {
    with_fake(|f| f.auxprop = plug);
}

unsafe extern "C" fn fake_getopt(
    _ctx: *mut c_void,
    _plugin: *const c_char,
    option: *const c_char,
    result: *mut *const c_char,
    len: *mut c_uint,
) -> c_int {
    // SAFETY: libsasl2-style call from the plugin: option is a C string, result and
    // len are writable (len may be NULL). The value lives in the recording until
    // the next reset, like libsasl2's config strings.
    unsafe {
        let name = CStr::from_ptr(option).to_string_lossy().into_owned();
        with_fake(|f| match f.options.get(&name) {
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
/// functions). Elsewhere the loggers stay NULL, which the plugin must handle.
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
    // SAFETY: the plugin passes the canonical authid (ulen bytes) and a copy of
    // passlen password bytes followed by a NUL. (The bytes may contain a NUL
    // themselves: stock LOGIN hands such a password on unchanged, and so does the
    // plugin's stock path.)
    let (user, pass) = unsafe {
        assert_eq!(
            *pass.add(passlen as usize),
            0,
            "checkpass password not NUL-terminated at passlen"
        );
        (
            std::slice::from_raw_parts(user.cast::<u8>(), ulen as usize),
            std::slice::from_raw_parts(pass.cast::<u8>(), passlen as usize),
        )
    };
    let known = with_fake(|f| {
        f.stock_accounts
            .iter()
            .any(|(u, p)| u.as_slice() == user && p.as_slice() == pass)
    });
    if known {
        sys::SASL_OK
    } else {
        sys::SASL_BADAUTH
    }
}

unsafe extern "C" fn fake_canon(
    _conn: *mut sys::sasl_conn_t,
    name: *const c_char,
    len: c_uint,
    flags: c_uint,
    op: *mut sys::sasl_out_params_t,
) -> c_int {
    // SAFETY: name has len bytes (or is NUL-terminated when len is 0).
    let bytes = unsafe {
        if len == 0 {
            CStr::from_ptr(name).to_bytes().to_vec()
        } else {
            std::slice::from_raw_parts(name.cast::<u8>(), len as usize).to_vec()
        }
    };
    // libsasl2's canon_user trims surrounding white space and refuses what cannot
    // be a C string.
    if bytes.contains(&0) || bytes.len() > 255 {
        return sys::SASL_BADPROT;
    }
    let trimmed = String::from_utf8_lossy(&bytes).trim().to_string();
    // The auxprop lookup libsasl2 runs during canonicalisation.
    let aux = auxprop_lookup_as_libsasl2(&trimmed);
    with_fake(|f| {
        f.canon_calls.push((trimmed.clone(), flags));
        if trimmed.is_empty() {
            return sys::SASL_FAIL;
        }
        let c = CString::new(trimmed.clone()).unwrap();
        // SAFETY: op is the caller's out-params; the strings live in the
        // recording until the next canon_user or reset, like libsasl2's copies.
        unsafe {
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
        }
        let externally = flags & sys::SASL_CU_EXTERNALLY_VERIFIED as c_uint != 0;
        match aux {
            sys::SASL_NOUSER | sys::SASL_NOMECH if externally => sys::SASL_OK,
            sys::SASL_NOMECH => sys::SASL_OK,
            rc => rc,
        }
    })
}

fn auxprop_lookup_as_libsasl2(user: &str) -> c_int {
    let plug = with_fake(|f| f.auxprop);
    let sp = CURRENT_SPARAMS.with(|c| c.get());
    if plug.is_null() || sp.is_null() {
        return sys::SASL_NOMECH;
    }
    let c = CString::new(user).unwrap();
    // SAFETY: plug is a live auxprop plug of this test (see use_auxprop), sp the
    // live fake params of the current connection.
    unsafe {
        let plug = &*plug;
        (plug.auxprop_lookup.unwrap())(plug.glob_context, sp, 0, c.as_ptr(), user.len() as c_uint)
    }
}

/// One fake connection: utils + params, heap-pinned.
pub struct Conn {
    pub utils: Box<sys::sasl_utils_t>,
    pub sparams: Box<sys::sasl_server_params_t>,
    service: CString,
    remote: CString,
    realm: CString,
}

impl Conn {
    /// A connection for `service` from 192.0.2.7, with no server realm.
    pub fn new(service: &str) -> Conn {
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
            realm: CString::default(),
        };
        CURRENT_SPARAMS.with(|p| p.set(&mut *c.sparams));
        c
    }

    /// The server's realm (`user_realm`), as Postfix's `smtpd_sasl_local_domain`.
    pub fn with_realm(mut self, realm: &str) -> Conn {
        self.realm = CString::new(realm).unwrap();
        self.sparams.user_realm = self.realm.as_ptr();
        self.sparams.urlen = realm.len() as c_uint;
        self
    }

    /// No client address (a server that does not tell libsasl2).
    pub fn without_remote(mut self) -> Conn {
        self.sparams.ipremoteport = ptr::null();
        self.sparams.ipremlen = 0;
        self
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        CURRENT_SPARAMS.with(|p| p.set(ptr::null_mut()));
    }
}

/// The two mechanism plugs (PLAIN, LOGIN), through the real entry point.
pub struct Plugs {
    list: *mut sys::sasl_server_plug_t,
}

pub const PLAIN: usize = 0;
pub const LOGIN: usize = 1;

impl Plugs {
    pub fn init() -> Plugs {
        let utils: sys::sasl_utils_t = Default::default();
        let (mut ver, mut list, mut count) = (0, ptr::null_mut(), 0);
        // SAFETY: valid out-pointers; utils with no callbacks.
        let rc = unsafe { sasl_server_plug_init(&utils, 4, &mut ver, &mut list, &mut count) };
        assert_eq!((rc, ver, count), (sys::SASL_OK, 4, 2));
        Plugs { list }
    }

    pub fn plug(&self, i: usize) -> &sys::sasl_server_plug_t {
        assert!(i < 2);
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

/// The auxprop plug, through the real entry point (freed on drop).
pub struct Auxprop {
    plug: *mut sys::sasl_auxprop_plug_t,
}

impl Auxprop {
    pub fn init() -> Auxprop {
        let utils: sys::sasl_utils_t = Default::default();
        let (mut ver, mut plug) = (0, ptr::null_mut());
        // SAFETY: valid out-pointers; utils with no callbacks.
        let rc = unsafe { sasl_auxprop_plug_init(&utils, 8, &mut ver, &mut plug, ptr::null()) };
        assert_eq!(rc, sys::SASL_OK);
        Auxprop { plug }
    }

    pub fn plug(&self) -> &sys::sasl_auxprop_plug_t {
        // SAFETY: alive until Drop.
        unsafe { &*self.plug }
    }
}

impl Drop for Auxprop {
    fn drop(&mut self) {
        use_auxprop(ptr::null());
        let p = self.plug();
        if let Some(free) = p.auxprop_free {
            // SAFETY: once, as libsasl2 does at sasl_done.
            unsafe { free(p.glob_context, ptr::null()) };
        }
    }
}

/// Result of running one exchange.
pub struct Outcome {
    pub rc: c_int,
    /// Every step's result.
    pub rcs: Vec<c_int>,
    /// The server's challenges.
    pub prompts: Vec<String>,
    /// The authorization identity set by a successful exchange.
    pub user: String,
    /// The authentication identity set by a successful exchange.
    pub authid: Vec<u8>,
}

/// Runs one exchange as libsasl2 does: stops at the first result that is not
/// SASL_CONTINUE.
pub fn run(plugs: &Plugs, conn: &mut Conn, mech: usize, inputs: &[&[u8]]) -> Outcome {
    exchange(plugs, conn, mech, inputs, true)
}

/// Runs one exchange; with `stop` false, sends every input whatever the results
/// (a misbehaving caller). An empty input is sent as a NULL pointer, as libsasl2
/// does for an empty client response.
pub fn exchange(
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
        let data = if input.is_empty() {
            ptr::null()
        } else {
            input.as_ptr().cast()
        };
        // SAFETY: input is a live slice (or NULL with length 0); out-pointers are locals.
        rc = unsafe {
            (plug.mech_step.unwrap())(
                ctx,
                &mut *conn.sparams,
                data,
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
    let authid = if rc == sys::SASL_OK && !op.authid.is_null() {
        // SAFETY: set by fake_canon to a live CString.
        unsafe { CStr::from_ptr(op.authid) }.to_bytes().to_vec()
    } else {
        Vec::new()
    };
    // SAFETY: dispose once, as libsasl2 does.
    unsafe { (plug.mech_dispose.unwrap())(ctx, &*conn.utils) };
    Outcome {
        rc,
        rcs,
        prompts,
        user,
        authid,
    }
}
