//! Fake-C-caller tests: drive the mechanism callbacks with a fake `sasl_utils_t`
//! and fake server params, as libsasl2 would.
