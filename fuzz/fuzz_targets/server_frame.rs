//! `cargo +nightly fuzz run server_frame`: see fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_fuzz::server_frame(data));
