//! `cargo +nightly fuzz run control_request`: see fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_fuzz::control_request(data));
