//! saslgated's wire parser (src/daemon/protocol.rs): whatever bytes a local client
//! writes to the socket, as the daemon sees them after a read that would block.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzkit::check_frame(data);
});
