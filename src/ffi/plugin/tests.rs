//! Fake-C-caller tests: drive the mechanism and auxprop callbacks with a fake
//! `sasl_utils_t` and fake server params ([`fake`]), the way libsasl2 does (the real
//! libsasl2 is exercised by c-tests/).

/// What the shared fake libsasl2 drives (see testkit/src/fake_sasl.rs).
mod api {
    pub use super::super::{sasl_auxprop_plug_init, sasl_server_plug_init};
    pub use crate::ffi::sys;
}
#[path = "../../../testkit/src/fake_sasl.rs"]
mod fake;

use super::auxprop::{auxprop_lookup, auxprop_store};
use super::*;
use crate::ffi::guard::inject;
use fake::{exchange, reset_fake, run, use_auxprop, with_fake, Conn, Plugs};
use std::ffi::CString;

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

/// LOGIN's states: Start -> WantUser -> WantPassword -> Done, an initial response
/// as the username, an oversized field refused without moving on, and a step after
/// Done refused as stock LOGIN does.
#[test]
fn login_state_machine() {
    let (_dir, db) = test_db();
    reset_fake(&[("saslgate_db", &db)]);
    let plugs = Plugs::init();
    let mut conn = Conn::new("imap");
    let cont = sys::SASL_CONTINUE;
    let o = exchange(
        &plugs,
        &mut conn,
        1,
        &[b"", b"alice", b"alice pw", b"again"],
        false,
    );
    assert_eq!(o.prompts, ["Username:", "Password:"]);
    assert_eq!(o.rcs, [cont, cont, sys::SASL_OK, sys::SASL_FAIL]);
    assert!(with_fake(|f| f
        .logs
        .iter()
        .any(|l| l.ends_with("Invalid LOGIN server step 4"))));
    // initial response = username
    let o = run(&plugs, &mut conn, 1, &[b"alice", b"alice pw"]);
    assert_eq!(
        (o.prompts.len(), o.rc, o.user.as_str()),
        (1, sys::SASL_OK, "alice")
    );
    // an oversized username is refused and the exchange stays where it was
    let long = [b'x'; 1025];
    let o = exchange(
        &plugs,
        &mut conn,
        1,
        &[b"", &long, b"alice", b"alice pw"],
        false,
    );
    assert_eq!(o.rcs, [cont, sys::SASL_BADPROT, cont, sys::SASL_OK]);
    // so is an oversized password
    let o = exchange(&plugs, &mut conn, 1, &[b"alice", &long, b"alice pw"], false);
    assert_eq!(o.rcs, [cont, sys::SASL_BADPROT, sys::SASL_OK]);
    // empty fields where saslgate decides
    let o = run(&plugs, &mut conn, 1, &[b"", b"", b"alice pw"]);
    assert_eq!(o.rc, sys::SASL_BADPROT);
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

/// Every "cannot decide" of the plugin, mechanism or auxprop gate, storage or
/// configuration, tells the client the plugin's one text.
#[test]
fn unavailable_is_the_plugins_one_text() {
    let only_unavailable_text =
        || with_fake(|f| f.errors == [crate::ffi::UNAVAILABLE_TEXT.to_string()]);
    let plugs = Plugs::init();
    let aux = AuxPlugin::init();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    for options in [
        [("saslgate_config", "/nonexistent/saslgate.conf")],
        [("saslgate_db", missing.to_str().unwrap())],
    ] {
        reset_fake(&options);
        let mut conn = Conn::new("imap");
        let o = run(&plugs, &mut conn, 0, &[b"\0alice\0alice pw"]);
        assert_eq!(o.rc, sys::SASL_UNAVAIL, "{options:?}");
        assert!(
            only_unavailable_text(),
            "{options:?}: {:?}",
            with_fake(|f| f.errors.clone())
        );
        reset_fake(&options);
        assert_eq!(
            aux.lookup(&mut conn, "alice"),
            sys::SASL_UNAVAIL,
            "{options:?}"
        );
        assert!(
            only_unavailable_text(),
            "{options:?}: {:?}",
            with_fake(|f| f.errors.clone())
        );
    }
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

/// The auxprop plugin as libsasl2 gets it from `sasl_auxprop_plug_init`,
/// freed on drop as at `sasl_done`.
struct AuxPlugin {
    plug: sys::sasl_auxprop_plug_t,
}

impl AuxPlugin {
    fn init() -> AuxPlugin {
        let utils: sys::sasl_utils_t = Default::default();
        let (mut ver, mut aux) = (0, ptr::null_mut());
        // SAFETY: valid out-pointers; `utils` is read during the call only.
        let rc = unsafe { sasl_auxprop_plug_init(&utils, 8, &mut ver, &mut aux, ptr::null()) };
        assert_eq!(rc, sys::SASL_OK);
        // SAFETY: aux was just set by the entry point.
        let plug = unsafe { *aux };
        AuxPlugin { plug }
    }

    /// `auxprop_lookup` of `user` (the authentication identity) on `conn`.
    fn lookup(&self, conn: &mut Conn, user: &str) -> c_int {
        let c = CString::new(user).unwrap();
        let p = &self.plug;
        // SAFETY: as libsasl2 calls it.
        unsafe { (p.auxprop_lookup.unwrap())(p.glob_context, &mut *conn.sparams, 0, c.as_ptr(), 0) }
    }
}

impl Drop for AuxPlugin {
    fn drop(&mut self) {
        // SAFETY: once, as libsasl2 does at sasl_done.
        unsafe { (self.plug.auxprop_free.unwrap())(self.plug.glob_context, ptr::null()) };
    }
}

#[test]
fn a_panic_in_the_auxprop_gate_is_logged_with_its_location() {
    let (_dir, db) = test_db();
    let aux = AuxPlugin::init();
    reset_fake(&[("saslgate_db", &db)]);
    let mut conn = Conn::new("imap");
    inject::arm("auxprop_lookup");
    assert_eq!(aux.lookup(&mut conn, "alice"), sys::SASL_UNAVAIL);
    assert!(with_fake(|f| f.logs.iter().any(|l| l
        .contains("internal error in auxprop_lookup: injected panic")
        && has_location(l, "src/ffi/plugin/auxprop.rs"))));
}

#[test]
fn auxprop_gate() {
    let (_dir, db) = test_db();
    let aux = AuxPlugin::init();
    let plug = aux.plug;
    // SAFETY: static name.
    assert_eq!(unsafe { CStr::from_ptr(plug.name) }.to_bytes(), b"saslgate");
    let lookup = |conn: &mut Conn, user: &str| aux.lookup(conn, user);

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
    use_auxprop(&plug);
    reset_fake(&[("saslgate_db", &db)]);
    let plugs = Plugs::init();
    let o = run(&plugs, &mut conn, 0, &[b"carol\0alice\0alice pw"]);
    assert_eq!(o.rc, sys::SASL_DISABLED);
    let o = run(&plugs, &mut conn, 0, &[b"\0alice\0alice pw"]);
    assert_eq!(o.rc, sys::SASL_OK);
    use_auxprop(ptr::null());
    drop(plugs);
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

/// The plugin's share of issue 14: an alias logs in as (and is canonicalised
/// to) its account, a blocked client address is refused, and a
/// `tls_required` service needs an external security layer (TLS).
#[test]
fn aliases_blocks_and_tls_required_in_the_plugin() {
    use crate::store::{AdminStore, SqliteStore};
    let (_dir, conf) = test_db_requiring_tls_for_imap();
    let cfg = crate::Config::load(&conf).unwrap();
    SqliteStore::open(&cfg)
        .unwrap()
        .add_alias("alice", "ally")
        .unwrap();
    reset_fake(&[("saslgate_config", conf.to_str().unwrap())]);
    let plugs = Plugs::init();
    // imap over TLS (external SSF, as Cyrus sets after STARTTLS).
    let mut conn = Conn::new("imap");
    conn.sparams.external_ssf = 256;
    let o = run(&plugs, &mut conn, 0, &[b"\0Ally\0alice pw"]);
    assert_eq!(
        (o.rc, o.user.as_str()),
        (sys::SASL_OK, "alice"),
        "canonical name"
    );
    let o = run(&plugs, &mut conn, 1, &[b"ally", b"alice pw"]);
    assert_eq!((o.rc, o.user.as_str()), (sys::SASL_OK, "alice"));
    // imap in the clear: refused before any check, with SASL_ENCRYPT.
    let mut plain = Conn::new("imap");
    plain.sparams.external_ssf = 0;
    let o = run(&plugs, &mut plain, 0, &[b"\0alice\0alice pw"]);
    assert_eq!(o.rc, sys::SASL_ENCRYPT);
    assert!(with_fake(|f| f
        .errors
        .contains(&"encryption required".to_string())));
    // Another service in the clear is fine.
    let mut smtp = Conn::new("smtp");
    let o = run(&plugs, &mut smtp, 0, &[b"\0ally\0alice pw"]);
    assert_eq!((o.rc, o.user.as_str()), (sys::SASL_OK, "alice"));
    // The fake client is 192.0.2.7: block its network.
    SqliteStore::open(&cfg)
        .unwrap()
        .add_block("192.0.2.0/24", None)
        .unwrap();
    let o = run(&plugs, &mut smtp, 0, &[b"\0alice\0alice pw"]);
    assert_eq!(o.rc, sys::SASL_NOAUTHZ);
    assert!(with_fake(|f| f
        .errors
        .contains(&"access denied".to_string())));
}

/// The auxprop gate (other mechanisms) applies `tls_required` as saslgate's
/// own PLAIN and LOGIN do: a name looked up for a listed service on a
/// connection without an external security layer is refused with
/// `SASL_ENCRYPT`; with TLS, or for another service, it is not.
#[test]
fn the_auxprop_gate_applies_tls_required() {
    let (_dir, conf) = test_db_requiring_tls_for_imap();
    let aux = AuxPlugin::init();
    let lookup = |conn: &mut Conn, user: &str| aux.lookup(conn, user);
    reset_fake(&[("saslgate_config", conf.to_str().unwrap())]);
    let mut clear = Conn::new("imap");
    clear.sparams.external_ssf = 0;
    assert_eq!(lookup(&mut clear, "alice"), sys::SASL_ENCRYPT);
    assert!(with_fake(|f| f
        .errors
        .contains(&"encryption required".to_string())));
    let mut tls = Conn::new("imap");
    tls.sparams.external_ssf = 256;
    assert_eq!(lookup(&mut tls, "alice"), sys::SASL_OK);
    let mut smtp = Conn::new("smtp");
    smtp.sparams.external_ssf = 0;
    assert_eq!(lookup(&mut smtp, "alice"), sys::SASL_OK);
}

/// A proxy ticket is accepted once when it was issued for a backend this host
/// serves (proxy_ticket_backends) and, where libsasl2 tells the address the
/// connection arrived on (iplocalport), for that address; others are refused.
#[test]
fn a_proxy_ticket_for_the_connections_local_address() {
    let (dir, db) = test_db();
    let conf = dir.path().join("saslgate.conf");
    std::fs::write(
        &conf,
        format!(
            "db = {db:?}\nbcrypt_cost = 4\n\
             proxy_ticket_backends = [\"127.0.0.1:10143\", \"127.0.0.1:10144\"]\n"
        ),
    )
    .unwrap();
    let gate = crate::Gate::open(crate::Config::load(&conf).unwrap()).unwrap();
    let issue = |at: &str| {
        let t = gate
            .issue_ticket("alice", "imap", at.parse().unwrap())
            .unwrap();
        [&b"\0alice\0"[..], t.as_bytes()].concat()
    };
    let (here, other, third) = (
        issue("127.0.0.1:10143"),
        issue("127.0.0.1:10144"),
        issue("127.0.0.1:10143"),
    );
    reset_fake(&[("saslgate_config", conf.to_str().unwrap())]);
    let plugs = Plugs::init();
    let local = CString::new("127.0.0.1;10143").unwrap();
    let mut conn = Conn::new("imap");
    conn.sparams.iplocalport = local.as_ptr();
    conn.sparams.iploclen = local.as_bytes().len() as std::ffi::c_uint;
    let o = run(&plugs, &mut conn, 0, &[&here]);
    assert_eq!((o.rc, o.user.as_str()), (sys::SASL_OK, "alice"));
    // Used up.
    assert_eq!(run(&plugs, &mut conn, 0, &[&here]).rc, sys::SASL_BADAUTH);
    // Issued for another backend (served here) than this connection's.
    assert_eq!(run(&plugs, &mut conn, 0, &[&other]).rc, sys::SASL_BADAUTH);
    // A connection whose local address the server did not tell: the
    // configured list decides.
    let mut unknown = Conn::new("imap");
    let o = run(&plugs, &mut unknown, 0, &[&third]);
    assert_eq!((o.rc, o.user.as_str()), (sys::SASL_OK, "alice"));
}

/// A database with alice (password "alice pw") and carol (disabled).
/// [`test_db`] and a config file for it with `tls_required = ["imap"]`.
fn test_db_requiring_tls_for_imap() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, db) = test_db();
    let conf = dir.path().join("saslgate.conf");
    std::fs::write(
        &conf,
        format!("db = {db:?}\nbcrypt_cost = 4\ntls_required = [\"imap\"]\n"),
    )
    .unwrap();
    (dir, conf)
}

fn test_db() -> (tempfile::TempDir, String) {
    use crate::store::{AdminStore, SqliteStore};
    use crate::{Config, SecretBytes};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sg.db");
    let cfg = Config {
        db: db.clone(),
        bcrypt_cost: 4,
        ..Config::default()
    };
    let mut store = SqliteStore::create(&cfg).unwrap();
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
