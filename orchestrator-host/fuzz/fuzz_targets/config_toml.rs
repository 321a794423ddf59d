//! Fuzz `orchestrator_host::fuzz::config_toml`: any bytes must give a result, never a panic.
//!
//! Run with `scripts/fuzz.sh 60 config_toml` (or `cargo +nightly fuzz run config_toml fuzz/corpus/config_toml` from
//! `orchestrator-core/`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| orchestrator_host::fuzz::config_toml(data));
