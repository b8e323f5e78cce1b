//! The plugin's PLAIN and LOGIN mechanisms through their C entry points
//! (mech_new / mech_step / mech_dispose), called the way libsasl2 calls them
//! with a fake `sasl_utils_t`, against the fixture database.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzkit::check_mech(data);
});
