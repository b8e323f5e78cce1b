//! `Config::parse`: the TOML configuration file (read by the CLI, the daemon and
//! the plugin inside Postfix / Cyrus processes).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzkit::check_config(data);
});
