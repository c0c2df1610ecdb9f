//! `cargo +nightly fuzz run client_frame`: see fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_fuzz::client_frame(data));
