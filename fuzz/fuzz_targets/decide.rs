//! The whole login decision (`Gate::decide`) on arbitrary bytes against a small
//! fixture database (bcrypt cost 4): normalisation, throttling, the
//! password + code split, app passwords, policy, audit.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzkit::check_decide(data);
});
