//! Replays the committed fuzz seeds (fuzz/seeds/TARGET/*) and every input a fuzz
//! run found to crash (fuzz/regressions/TARGET/*) through the same checks the
//! cargo-fuzz targets run (fuzz/src/lib.rs), on the stable compiler, in the
//! ordinary `cargo test`. See doc/hardening.md.

#[allow(unsafe_code)] // the fuzz kit's fake libsasl2 is C-shaped
#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod fuzzkit;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for kind in ["seeds", "regressions"] {
        let dir = root.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if !p.is_file() {
                continue;
            }
            let data = std::fs::read(&p).unwrap();
            let r = std::panic::catch_unwind(|| check(&data));
            assert!(r.is_ok(), "{target}: {} fails its check", p.display());
            n += 1;
        }
    }
    assert!(n > 0, "no seeds for {target} under {}", root.display());
}

#[test]
fn saslauthd_frame() {
    replay("saslauthd_frame", fuzzkit::check_frame);
}

#[test]
fn auth_http() {
    replay("auth_http", fuzzkit::check_auth_http);
}

#[test]
fn plain_message() {
    replay("plain_message", fuzzkit::check_plain);
}

#[test]
fn config_file() {
    replay("config_file", fuzzkit::check_config);
}

#[test]
fn cli_args() {
    replay("cli_args", fuzzkit::check_cli_args);
}

#[test]
fn decide() {
    replay("decide", fuzzkit::check_decide);
}

#[test]
fn plugin_mech() {
    replay("plugin_mech", fuzzkit::check_mech);
}
