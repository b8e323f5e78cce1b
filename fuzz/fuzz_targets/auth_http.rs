//! saslgated's auth_http face (src/daemon/http/request.rs, response.rs): any
//! bytes as the request head nginx would send, then the answers built for it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzkit::check_auth_http(data);
});
