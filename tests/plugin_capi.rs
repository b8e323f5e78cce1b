//! The C ABI (include/saslgate.h) called through its `extern "C"` functions, the way
//! a C program calls them, against a real database. (c-tests/run.sh does the same
//! from C, plus the libsasl2 plugin; this keeps the ABI covered by `cargo test`.)
#![allow(unsafe_code)] // calls the C ABI as a C program would

use saslgate::ffi::capi::{self, Handle, SaslgateResult};
use saslgate::store::{AdminStore, SqliteStore};
use saslgate::{Config, SecretBytes};
use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr;
use std::time::{Duration, Instant};

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
    assert_eq!(rc, SaslgateResult::Ok);
    assert!(!h.is_null());
    h
}

fn verify(h: *const Handle, login: &str, pw: &str, service: &str) -> (SaslgateResult, String) {
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
        (SaslgateResult::Ok, String::new())
    );
    assert_eq!(
        verify(h, "alice", "nope", "imap").0,
        SaslgateResult::BadCredentials
    );
    assert_eq!(
        verify(h, "nobody", "nope", "imap").0,
        SaslgateResult::BadCredentials
    );
    let (rc, reason) = verify(h, "carol", "carol pw", "imap");
    assert_eq!(
        (rc, reason.as_str()),
        (SaslgateResult::Disabled, "account disabled")
    );

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
    assert_eq!(rc, SaslgateResult::NoSuchAccount);
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
            SaslgateResult::Unavailable
        );
        assert!(h.is_null());
        assert!(!CStr::from_ptr(err.as_ptr()).to_bytes().is_empty());
        assert_eq!(
            capi::saslgate_open(bad_conf.as_ptr(), ptr::null(), &mut h, ptr::null_mut(), 0),
            SaslgateResult::Config
        );
        assert_eq!(
            capi::saslgate_open(
                ptr::null(),
                missing.as_ptr(),
                ptr::null_mut(),
                ptr::null_mut(),
                0
            ),
            SaslgateResult::InvalidArgument
        );
    }
}

/// A handle whose database went away answers the C ABI's one "unavailable"
/// text, and `saslgate_strerror` says the same.
#[test]
fn a_lost_database_answers_the_one_unavailable_text() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let h = open(&db);
    assert_eq!(verify(h, "alice", "alice pw", "imap").0, SaslgateResult::Ok);
    std::fs::rename(dir.path().join("sg.db"), dir.path().join("moved.db")).unwrap();
    // The engine looks at the path at most every 0.1 s: ask until it has seen.
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let answer = verify(h, "alice", "alice pw", "imap");
        if answer.0 != SaslgateResult::Ok || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = saslgate::ffi::UNAVAILABLE_TEXT;
    assert_eq!(answer, (SaslgateResult::Unavailable, text.to_string()));
    // SAFETY: a static NUL-terminated string.
    let shown = unsafe { CStr::from_ptr(capi::saslgate_strerror(answer.0 as c_int)) };
    assert_eq!(shown.to_str().unwrap(), text);
    // SAFETY: h is live and closed once.
    unsafe { capi::saslgate_close(h) };
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
                (0..3).all(|_| {
                    verify(h as *const Handle, "alice", "alice pw", "imap").0 == SaslgateResult::Ok
                })
            })
        })
        .collect();
    assert!(threads.into_iter().all(|t| t.join().unwrap()));
    // SAFETY: all users of the handle have finished.
    unsafe { capi::saslgate_close(h as *mut Handle) };
}

// ---------------------------------------------------------------------------
// include/saslgate.h against the code
// ---------------------------------------------------------------------------
//
// The header is written by hand (it is documentation for C programmers too); this
// check keeps it from drifting: every enumerator of `saslgate_result` and every
// `#define` with a value must equal the Rust definition, every `SaslgateResult`
// variant must be in the header, and the header's functions must be exactly the
// `#[no_mangle] extern "C" fn saslgate_*` of src/ffi, with the same parameters.

/// `BadCredentials` -> `SASLGATE_BAD_CREDENTIALS`.
fn c_name(variant: &str) -> String {
    let mut out = String::from("SASLGATE");
    for ch in variant.chars() {
        if ch.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

/// The header without comments.
fn strip_c_comments(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        match rest[start..].find("*/") {
            Some(end) => rest = &rest[start + end + 2..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// A C type in one spelling: `const char*`, `saslgate_t**`, `size_t`.
fn normalise_c_type(t: &str) -> String {
    let t = t.replace('*', " * ");
    let words: Vec<&str> = t.split_whitespace().collect();
    let mut out = String::new();
    for w in words {
        if w == "*" {
            out.push('*');
        } else {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(w);
        }
    }
    out
}

/// The C parameter's type (its name dropped).
fn c_param_type(p: &str) -> String {
    let p = p.trim();
    let name_start = p
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    normalise_c_type(&p[..name_start])
}

/// Does Rust type `rust` implement C type `c` at this ABI?
fn types_match(c: &str, rust: &str, is_return: bool) -> bool {
    let rust: String = rust.split_whitespace().collect::<Vec<_>>().join(" ");
    let ok: &[&str] = match c {
        "const char*" => &["*const c_char"],
        "char*" => &["*mut c_char"],
        "saslgate_t*" => &["*const Handle", "*mut Handle"],
        "saslgate_t**" => &["*mut *mut Handle"],
        "size_t" => &["usize"],
        "int" if is_return => &["c_int", "SaslgateResult"],
        "int" => &["c_int"],
        "void" => &["()"],
        _ => &[],
    };
    ok.contains(&rust.as_str())
}

/// `name -> (return type, parameter types)` of the header's functions.
fn header_functions(header: &str) -> Vec<(String, String, Vec<String>)> {
    let body: String = strip_c_comments(header)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    for stmt in body.split([';', '{', '}']) {
        let Some(open) = stmt.find('(') else { continue };
        let Some(close) = stmt.rfind(')') else {
            continue;
        };
        let before = stmt[..open].trim();
        let name_start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let name = &before[name_start..];
        if !name.starts_with("saslgate_") {
            continue;
        }
        let ret = normalise_c_type(&before[..name_start]);
        let params = stmt[open + 1..close].trim();
        let params = if params == "void" || params.is_empty() {
            Vec::new()
        } else {
            params.split(',').map(c_param_type).collect()
        };
        out.push((name.to_string(), ret, params));
    }
    out
}

/// The same for the Rust `#[no_mangle] extern "C" fn saslgate_*` in `source`.
fn rust_functions(source: &str) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for chunk in source.split("#[no_mangle]").skip(1) {
        let Some(fn_at) = chunk.find("fn ") else {
            continue;
        };
        let sig = &chunk[fn_at + 3..];
        let Some(open) = sig.find('(') else { continue };
        let name = sig[..open].trim().to_string();
        if !name.starts_with("saslgate_") {
            continue;
        }
        // The parameter list ends at the first ')' at depth 0.
        let mut depth = 0;
        let mut close = open;
        for (i, ch) in sig[open..].char_indices() {
            match ch {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let params: Vec<String> = sig[open + 1..close]
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once(':').map_or(p, |(_, t)| t).trim().to_string())
            .collect();
        let after = &sig[close + 1..sig.find('{').unwrap_or(sig.len())];
        let ret = after
            .trim()
            .strip_prefix("->")
            .map_or("()".to_string(), |r| r.trim().to_string());
        out.push((name, ret, params));
    }
    out
}

/// Every difference between the header and the code (empty: they agree).
fn header_mismatches(header: &str, rust_source: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let text = strip_c_comments(header);

    // saslgate_result
    let mut enumerators: Vec<(String, i64)> = Vec::new();
    match text.split_once("typedef enum saslgate_result {") {
        None => bad.push("no `typedef enum saslgate_result {` in the header".into()),
        Some((_, rest)) => {
            let body = rest.split('}').next().unwrap_or_default();
            for item in body.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                match item.split_once('=') {
                    Some((n, v)) => match v.trim().parse::<i64>() {
                        Ok(v) => enumerators.push((n.trim().to_string(), v)),
                        Err(_) => bad.push(format!("enumerator {item:?}: value is not a number")),
                    },
                    None => bad.push(format!("enumerator {item:?} has no explicit value")),
                }
            }
        }
    }
    for r in SaslgateResult::ALL {
        let name = c_name(&format!("{r:?}"));
        match enumerators.iter().find(|(n, _)| *n == name) {
            None => bad.push(format!(
                "{name} ({r:?} = {}) is missing from the header",
                r as c_int
            )),
            Some((_, v)) if *v != r as c_int as i64 => bad.push(format!(
                "{name} is {v} in the header, {} in the code",
                r as c_int
            )),
            Some(_) => {}
        }
    }
    for (n, v) in &enumerators {
        if !SaslgateResult::ALL
            .iter()
            .any(|r| c_name(&format!("{r:?}")) == *n)
        {
            bad.push(format!(
                "{n} = {v} is in the header but not in SaslgateResult"
            ));
        }
    }

    // #define NAME VALUE
    let defines: &[(&str, i64)] = &[("SASLGATE_ABI_VERSION", capi::ABI_VERSION as i64)];
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() >= 3 && words[0] == "#define" {
            match defines.iter().find(|(n, _)| *n == words[1]) {
                None => bad.push(format!("#define {} has no Rust definition", words[1])),
                Some((_, v)) if words[2].parse::<i64>() != Ok(*v) => bad.push(format!(
                    "#define {} {} in the header, {v} in the code",
                    words[1], words[2]
                )),
                Some(_) => {}
            }
        }
    }
    for (n, _) in defines {
        if !text.contains(&format!("#define {n} ")) {
            bad.push(format!("#define {n} is missing from the header"));
        }
    }

    // functions
    let c_fns = header_functions(header);
    let rust_fns = rust_functions(rust_source);
    for (name, ret, params) in &c_fns {
        let Some((_, rret, rparams)) = rust_fns.iter().find(|(n, _, _)| n == name) else {
            bad.push(format!(
                "{name} is declared in the header but not exported by the code"
            ));
            continue;
        };
        if !types_match(ret, rret, true) {
            bad.push(format!(
                "{name} returns {ret} in the header, {rret} in the code"
            ));
        }
        if params.len() != rparams.len() {
            bad.push(format!(
                "{name} has {} parameters in the header, {} in the code",
                params.len(),
                rparams.len()
            ));
            continue;
        }
        for (i, (c, r)) in params.iter().zip(rparams).enumerate() {
            if !types_match(c, r, false) {
                bad.push(format!(
                    "{name} parameter {}: {c} in the header, {r} in the code",
                    i + 1
                ));
            }
        }
    }
    for (name, _, _) in &rust_fns {
        if !c_fns.iter().any(|(n, _, _)| n == name) {
            bad.push(format!(
                "{name} is exported by the code but not declared in the header"
            ));
        }
    }
    bad
}

fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The Rust sources of src/ffi (where every exported C function lives).
fn ffi_sources() -> String {
    fn walk(dir: &std::path::Path, out: &mut String) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(&p).unwrap());
                out.push('\n');
            }
        }
    }
    let mut out = String::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ffi"),
        &mut out,
    );
    out
}

#[test]
fn header_matches_the_code() {
    let header = repo_file("include/saslgate.h");
    let source = ffi_sources();
    // the parsers found something at all
    assert_eq!(header_functions(&header).len(), 6);
    assert_eq!(rust_functions(&source).len(), 6);
    let bad = header_mismatches(&header, &source);
    assert!(
        bad.is_empty(),
        "include/saslgate.h and src/ffi differ:\n{}",
        bad.join("\n")
    );
}

/// The check fails on each kind of drift (so it cannot pass vacuously).
#[test]
fn header_check_catches_drift() {
    let header = repo_file("include/saslgate.h");
    let source = ffi_sources();
    let drifts: &[(&str, &str)] = &[
        ("SASLGATE_THROTTLED = 4,", "SASLGATE_THROTTLED = 5,"),
        ("SASLGATE_DISABLED = 2,", "SASLGATE_ACCOUNT_DISABLED = 2,"),
        (
            "SASLGATE_TLS_REQUIRED = 12 ",
            "SASLGATE_TLS_REQUIRED = 12, SASLGATE_NEW = 13 ",
        ),
        (
            "#define SASLGATE_ABI_VERSION 1",
            "#define SASLGATE_ABI_VERSION 2",
        ),
        ("void saslgate_close(", "void saslgate_free("),
        (
            "const char *saslgate_strerror(int code)",
            "const char *saslgate_strerror(long code)",
        ),
        ("char *errbuf, size_t errlen);", "char *errbuf);"),
    ];
    for (from, to) in drifts {
        assert!(
            header.contains(from),
            "test out of date: {from:?} not in the header"
        );
        let drifted = header.replacen(from, to, 1);
        let bad = header_mismatches(&drifted, &source);
        assert!(!bad.is_empty(), "drift {from:?} -> {to:?} not caught");
    }
    // and on the Rust side
    let renamed = source.replacen("fn saslgate_version(", "fn saslgate_version2(", 1);
    assert!(!header_mismatches(&header, &renamed).is_empty());
    let retyped = source.replacen("errlen: usize", "errlen: c_int", 1);
    assert!(!header_mismatches(&header, &retyped).is_empty());
}
