//! The checks behind every fuzz target, kept in a library so that the committed
//! seeds and every crash found can be replayed by an ordinary `cargo test`
//! (tests/fuzz_corpus.rs in the main crate includes this file) without
//! libFuzzer, sanitizers or a nightly compiler.
//!
//! Each `check_*` function must not panic for any input; a panic (or an
//! assertion below) is a finding.

#![allow(clippy::missing_safety_doc)]

use saslgate::config::{parse_duration, Config};
use saslgate::crypto::Canonical;
use saslgate::daemon::protocol::{self, Parse};
use saslgate::engine::Credential;
use saslgate::secret::SecretBytes;
use saslgate::store::{AdminStore, SqliteStore};
use saslgate::{Decision, Gate, Request};
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

// ---------------------------------------------------------------- auth_http requests

/// saslgated's `auth_http` face (src/daemon/http/request.rs): any bytes as a
/// request head from nginx, then the answer built for it; and nginx's
/// escaping undone for any value (a round trip).
pub fn check_auth_http(data: &[u8]) {
    use saslgate::daemon::http::request::{parse_head, unescape, Method, MAX_FIELD};
    use saslgate::daemon::http::response::Answer;
    use saslgate::RefuseReason;

    // nginx's side of the escaping: space, '%' and bytes below 0x20 as %XX.
    fn escape(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in raw {
            if b <= 0x20 || b == b'%' {
                out.extend_from_slice(format!("%{b:02X}").as_bytes());
            } else {
                out.push(b);
            }
        }
        out
    }
    if data.len() <= MAX_FIELD {
        let back = unescape(&escape(data)).expect("nginx-escaped value refused");
        assert_eq!(&back[..], data, "escaping round trip changed the value");
    }
    if let Ok(v) = unescape(data) {
        assert!(v.len() <= MAX_FIELD);
        // Only escapes and bytes nginx sends raw were taken.
        assert!(!data.iter().any(|&b| b <= 0x20));
        assert_eq!(&unescape(&escape(&v)).unwrap()[..], &v[..]);
    }
    let Ok(Some(req)) = parse_head(data) else {
        return;
    };
    assert!(req.user.len() <= MAX_FIELD && req.pass.len() <= MAX_FIELD);
    assert!(req
        .protocol
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()));
    if let Method::Unsupported(m) = &req.method {
        assert!(m != "plain");
        assert!(req.pass.is_empty());
    }
    // Whatever the request, the answer is one well-formed head nginx can read.
    let answers = [
        Answer::refused(
            RefuseReason::BadCredentials,
            &req.protocol,
            Duration::from_millis(1500),
            req.attempt,
        ),
        Answer::refused(
            RefuseReason::Throttled,
            &req.protocol,
            Duration::ZERO,
            req.attempt,
        ),
        Answer::unavailable(&req.protocol),
        Answer::unsupported_method(&req.protocol),
        Answer::malformed(&req.protocol),
    ];
    for a in answers {
        let bytes = a.to_bytes();
        assert!(bytes.len() < 1024);
        assert!(bytes.ends_with(b"\r\n\r\n"));
        assert_eq!(bytes.windows(4).filter(|w| w == b"\r\n\r\n").count(), 1);
        assert_eq!(
            a.wait.is_some(),
            matches!(a.status, "authentication failed") && req.attempt <= 2
        );
    }
}

// ---------------------------------------------------------------- saslauthd frames

/// `protocol::parse` with a field limit taken from the first byte (1..=256 or the
/// default 1024), then the rest as the bytes read from the socket.
pub fn check_frame(data: &[u8]) {
    let (limit, buf) = match data.split_first() {
        Some((&b, rest)) if b < 0x80 => (usize::from(b) * 2 + 1, rest),
        Some((_, rest)) => (protocol::DEFAULT_FIELD_LIMIT, rest),
        None => (protocol::DEFAULT_FIELD_LIMIT, data),
    };
    assert!(buf.len() <= usize::MAX / 2);
    match protocol::parse(buf, limit) {
        Parse::NeedMore => {
            // A frame that needs more cannot already hold five whole fields plus more.
        }
        Parse::Bad(e) => {
            let _ = e.to_string();
        }
        Parse::Complete(r) => {
            assert!(r.fields == 4 || r.fields == 5);
            let realm = r.realm.unwrap_or_default();
            let addr = r.client_addr.unwrap_or_default();
            for f in [r.login, r.password, r.service, realm, addr] {
                assert!(f.len() <= limit, "field over the limit accepted");
                assert!(!f.contains(&0), "NUL byte accepted");
            }
            assert!(!matches!(&r.realm, Some(x) if x.is_empty()));
            assert!(!matches!(&r.client_addr, Some(x) if x.is_empty()));
            // Re-encoding gives back exactly the bytes received.
            let mut fields: Vec<&[u8]> = vec![r.login, r.password, r.service, realm];
            if r.fields == 5 {
                fields.push(addr);
            }
            assert_eq!(protocol::encode_request(&fields), buf, "round trip");
            assert!(buf.len() <= protocol::max_frame(limit));
        }
    }
    // Every strict prefix of a complete request is incomplete, refused or (cut
    // right after the fourth field) the 4-field request: never a 5-field one.
    let complete = matches!(protocol::parse(buf, limit), Parse::Complete(_));
    if complete && buf.len() < 64 {
        for cut in 0..buf.len() {
            if let Parse::Complete(r) = protocol::parse(&buf[..cut], limit) {
                assert_eq!(r.fields, 4, "a prefix parsed as a 5-field request");
            }
        }
    }
    let text = String::from_utf8_lossy(buf);
    let answer = protocol::encode_answer(&text);
    assert_eq!(
        usize::from(u16::from_be_bytes([answer[0], answer[1]])),
        answer.len() - 2
    );
}

// ---------------------------------------------------------------- PLAIN

pub fn check_plain(data: &[u8]) {
    if let Ok((authz, authc, pass)) = saslgate::ffi::plugin::parse_plain(data) {
        assert!(!authz.contains(&0) && !authc.contains(&0) && !pass.contains(&0));
        let mut joined = authz.to_vec();
        joined.push(0);
        joined.extend_from_slice(authc);
        joined.push(0);
        joined.extend_from_slice(pass);
        assert_eq!(
            joined, data,
            "PLAIN split is not a partition of the message"
        );
    } else {
        assert!(data.iter().filter(|&&b| b == 0).count() != 2);
    }
}

// ---------------------------------------------------------------- config file

pub fn check_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Config::parse(text) {
        assert!((4..=31).contains(&c.bcrypt_cost));
        // Parsing is deterministic.
        assert_eq!(Config::parse(text).ok(), Some(c));
    }
}

// ---------------------------------------------------------------- CLI values

pub fn check_cli_args(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let aliases = Config::default().service_aliases;
    if let Ok(d) = parse_duration(&text) {
        let _ = d.as_secs();
    }
    if let Ok(list) = saslgate::names::service_list(&text, &aliases) {
        let mut sorted = list.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, list, "service list not sorted/deduplicated");
        for s in &list {
            assert!(!s.is_empty() && !s.contains(','));
            // Normalised names are fixed points.
            assert_eq!(
                saslgate::names::service_list(s, &aliases).unwrap(),
                vec![s.clone()]
            );
        }
    }
    for now in [0i64, saslgate::timefmt::now()] {
        let _ = saslgate::timefmt::parse_since(&text, now);
    }
    let _ = saslgate::names::parse_client_addr(data);
    if let Ok(name) = saslgate::names::account_name(&text) {
        assert_eq!(saslgate::names::account_name(&name).as_ref(), Ok(&name));
    }
    let _ = saslgate::names::login_candidates(&text, Some(&text), |r| r.len() % 2 == 0);
    let _ = saslgate::totp::decode_secret(&text);
}

// ---------------------------------------------------------------- fixture database

pub const ALICE_PW: &[u8] = b"alice master pw";
pub const BOB_PW: &[u8] = b"bob pw";
pub const CAROL_PW: &[u8] = b"carol pw";
/// JBSWY3DPEHPK3PXP, decoded.
pub const TOTP_SECRET: &[u8] = b"Hello!\xde\xad\xbe\xef";

/// A database made once per process (bcrypt cost 4) in a temp dir (on /dev/shm
/// when there is one, so failure records cost no disk syncs):
/// - alice: master password, app passwords (imap only; restricted), plan default
/// - bob: master password + TOTP + 20 one-time codes
/// - carol: disabled; dave@example.org: plain account; eve: plan without imap
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub config: Config,
    pub gate: Gate,
    pub app_imap: SecretBytes,
    pub app_restricted: SecretBytes,
    pub codes: Vec<SecretBytes>,
    /// Canonical one-time codes already accepted once.
    pub used_codes: Mutex<HashSet<Vec<u8>>>,
    /// TOTP steps already accepted.
    pub used_steps: Mutex<HashSet<i64>>,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::Builder::new().prefix("sg-fuzz").tempdir_in(shm)
        } else {
            tempfile::Builder::new().prefix("sg-fuzz").tempdir()
        }
        .expect("temp dir");
        let mut config = Config::parse(
            r#"
            bcrypt_cost = 4
            cache_ttl = "30s"
            audit_retention = "30s"
            flush_interval = "1s"
            [throttle]
            address_failures = 40
            address_window = "10s"
            address_block = "2s"
            account_address_failures = 20
            account_address_window = "10s"
            account_address_block = "2s"
            slowdown_failures = 1000000
            "#,
        )
        .expect("fixture config");
        config.db = dir.path().join("fuzz.db");
        remove_at_exit(dir.path());
        let mut s = SqliteStore::create(&config).expect("create fixture db");
        let pw = |p: &[u8]| SecretBytes::from_slice(p);
        s.add_account("alice", "default").unwrap();
        s.set_master_password("alice", &pw(ALICE_PW), false)
            .unwrap();
        let (_, app_imap) = s
            .add_app_password("alice", "phone", &["imap".into()], false, None)
            .unwrap();
        let (_, app_restricted) = s
            .add_app_password("alice", "scanner", &[], true, None)
            .unwrap();
        s.add_account("bob", "default").unwrap();
        s.set_master_password("bob", &pw(BOB_PW), false).unwrap();
        s.enable_totp("bob", TOTP_SECRET).unwrap();
        let codes = s.generate_codes("bob", 20).unwrap();
        s.add_account("carol", "default").unwrap();
        s.set_master_password("carol", &pw(CAROL_PW), false)
            .unwrap();
        s.set_disabled("carol", true).unwrap();
        s.add_account("dave@example.org", "default").unwrap();
        s.set_master_password("dave@example.org", &pw(b"dave pw"), false)
            .unwrap();
        s.set_plan_services("smtponly", &["smtp".into()]).unwrap();
        s.add_account("eve", "smtponly").unwrap();
        s.set_master_password("eve", &pw(b"eve pw"), false).unwrap();
        drop(s);
        let gate = Gate::open(config.clone()).expect("open fixture gate");
        Fixture {
            _dir: dir,
            config,
            gate,
            app_imap,
            app_restricted,
            codes,
            used_codes: Mutex::new(HashSet::new()),
            used_steps: Mutex::new(HashSet::new()),
        }
    })
}

/// The fixture lives in a `static` (never dropped), so its temp dir is removed
/// by an exit handler (libFuzzer and the test harness both end with `exit`).
fn remove_at_exit(dir: &std::path::Path) {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    extern "C" fn cleanup() {
        if let Some(d) = DIR.get() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    extern "C" {
        fn atexit(f: extern "C" fn()) -> std::ffi::c_int;
    }
    if DIR.set(dir.to_path_buf()).is_ok() {
        // SAFETY: registers a plain function; it only removes a directory.
        unsafe { atexit(cleanup) };
    }
}

/// Replaces the placeholders `@APP@`, `@RAPP@`, `@CODEn@` (n = 0..9) and `@TOTP@`
/// by the fixture's secrets, so that mutations reach the accepting paths.
pub fn expand(f: &Fixture, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut rep = |pat: &[u8], with: &[u8]| {
        while let Some(i) = out.windows(pat.len()).position(|w| w == pat) {
            out.splice(i..i + pat.len(), with.iter().copied());
        }
    };
    rep(b"@APP@", f.app_imap.as_bytes());
    rep(b"@RAPP@", f.app_restricted.as_bytes());
    let totp = saslgate::totp::code_at(
        TOTP_SECRET,
        saslgate::totp::step_of(saslgate::timefmt::now()),
    );
    rep(b"@TOTP@", &totp);
    for (i, c) in f.codes.iter().enumerate().take(10) {
        rep(format!("@CODE{i}@").as_bytes(), c.as_bytes());
    }
    out
}

/// The fields of a request: the first byte says which optional fields are there,
/// the rest is split at 0xFF bytes (login, password, service, realm, address).
pub struct Fields {
    pub parts: Vec<Vec<u8>>,
    pub realm: bool,
    pub addr: bool,
}

pub fn split_fields(f: &Fixture, data: &[u8]) -> Fields {
    let (flags, rest) = data.split_first().map_or((0, data), |(a, b)| (*a, b));
    let mut parts: Vec<Vec<u8>> = rest.split(|&b| b == 0xff).map(|p| expand(f, p)).collect();
    parts.resize(5, Vec::new());
    Fields {
        parts,
        realm: flags & 1 != 0,
        addr: flags & 2 != 0,
    }
}

/// What an accepted login must satisfy, whatever the input.
pub fn check_accepted(f: &Fixture, login: &[u8], password: &[u8], service: &str, d: &Decision) {
    let Decision::Accepted {
        account,
        credential,
    } = d
    else {
        return;
    };
    let canon = |len| saslgate::crypto::canonical_generated(password, len);
    let same_code = |a: &Canonical, b: &Canonical| a.as_bytes() == b.as_bytes();
    match credential {
        Credential::Master => {
            let ok = (account == "alice" && password == ALICE_PW)
                || (account == "dave@example.org" && password == b"dave pw")
                || (account == "eve" && password == b"eve pw" && service == "smtp");
            assert!(
                ok,
                "master login accepted for {account} with a wrong password"
            );
        }
        Credential::MasterAndTotp => {
            assert_eq!(account, "bob");
            assert_eq!(password.len(), BOB_PW.len() + 6);
            assert_eq!(&password[..BOB_PW.len()], BOB_PW);
            let step = saslgate::totp::matching_step(
                TOTP_SECRET,
                &password[BOB_PW.len()..],
                saslgate::timefmt::now(),
            )
            .expect("accepted TOTP code is not current");
            assert!(
                f.used_steps.lock().unwrap().insert(step),
                "TOTP step accepted twice"
            );
        }
        Credential::MasterAndCode => {
            assert_eq!(account, "bob");
            assert_eq!(&password[..BOB_PW.len()], BOB_PW);
            let tail = &password[BOB_PW.len()..];
            let c = saslgate::crypto::canonical_generated(tail, saslgate::crypto::CODE_LEN)
                .expect("accepted code has the code shape");
            let known = f.codes.iter().any(|k| {
                saslgate::crypto::canonical_generated(k.as_bytes(), saslgate::crypto::CODE_LEN)
                    .is_some_and(|k| same_code(&k, &c))
            });
            assert!(known, "unknown one-time code accepted");
            assert!(
                f.used_codes.lock().unwrap().insert(c.as_bytes().to_vec()),
                "one-time code accepted twice"
            );
        }
        Credential::AppPassword { .. } => {
            assert_eq!(account, "alice");
            let c = canon(saslgate::crypto::APP_PASSWORD_LEN).expect("app password shape");
            let imap = canonical_app(&f.app_imap);
            let restricted = canonical_app(&f.app_restricted);
            let ok = (same_code(&c, &imap) && service == "imap")
                || (same_code(&c, &restricted) && service == "smtp");
            assert!(ok, "app password accepted out of its scope");
        }
        Credential::PolicyOnly => panic!("decide() answered PolicyOnly"),
        // The fuzz fixture issues no tickets and configures no ticket backends.
        Credential::ProxyTicket => panic!("proxy ticket accepted without one issued"),
    }
    let _ = login;
}

fn canonical_app(s: &SecretBytes) -> Canonical {
    saslgate::crypto::canonical_generated(s.as_bytes(), saslgate::crypto::APP_PASSWORD_LEN)
        .expect("fixture app password")
}

/// The service a request ends up with after normalisation (for the scope checks).
fn normal_service(f: &Fixture, raw: &[u8]) -> String {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| saslgate::names::service_name(s, &f.config.service_aliases).ok())
        .unwrap_or_default()
}

pub fn check_decide(data: &[u8]) {
    let f = fixture();
    let fields = split_fields(f, data);
    let p = &fields.parts;
    let req = Request {
        login: &p[0],
        password: &p[1],
        service: &p[2],
        realm: fields.realm.then_some(&p[3][..]),
        client_addr: fields.addr.then_some(&p[4][..]),
        local_addr: None,
        secure: None,
    };
    let d = f.gate.decide(&req);
    if std::env::var_os("FUZZKIT_VERBOSE").is_some() {
        eprintln!("decide {:?} -> {d:?}", String::from_utf8_lossy(&p[0]));
    }
    if let Decision::Unavailable { cause } = &d {
        panic!("healthy database answered unavailable: {cause}");
    }
    if let Decision::Refused { delay, .. } = &d {
        assert!(*delay <= Duration::from_secs(60));
    }
    check_accepted(f, &p[0], &p[1], &normal_service(f, &p[2]), &d);
    // The policy-only check (auxprop gate) on the same input.
    match f.gate.check_account(&req) {
        Decision::Unavailable { cause } => panic!("check_account unavailable: {cause}"),
        Decision::Accepted { credential, .. } => assert_eq!(credential, Credential::PolicyOnly),
        Decision::Refused { .. } => {}
    }
}

// ---------------------------------------------------------------- plugin mechanisms

pub mod mech;
pub use mech::check_mech;
