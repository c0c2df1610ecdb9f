//! `cargo +nightly fuzz run log_segment`: see fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_fuzz::log_segment(data));
