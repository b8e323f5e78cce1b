//! FFI faces: the libsasl2 plugin and the C ABI (being written).
