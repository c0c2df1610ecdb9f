//! `cargo +nightly fuzz run hello`: see fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_fuzz::hello(data));
