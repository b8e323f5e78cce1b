//! Command-line value parsers: durations, service lists, `--since`, client
//! addresses, account names.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzkit::check_cli_args(data);
});
