//! Hands the target triple to `tools::compile_sasl_program`, which asks the
//! `cc` crate for the C compiler of this target.
fn main() {
    let target = std::env::var("TARGET").expect("cargo sets TARGET for build scripts");
    println!("cargo:rustc-env=TESTKIT_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
