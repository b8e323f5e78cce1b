//! The plugin's PLAIN message split (`[authzid] NUL authcid NUL passwd`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzkit::check_plain(data);
});
