//! `cargo +nightly fuzz run config_file`: see fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_fuzz::config_file(data));
