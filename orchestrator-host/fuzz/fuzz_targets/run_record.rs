//! Fuzz `orchestrator_host::fuzz::run_record`: any bytes must give a result, never a panic.
//!
//! Run with `scripts/fuzz.sh 60 run_record` (or `cargo +nightly fuzz run run_record fuzz/corpus/run_record` from
//! `orchestrator-core/`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| orchestrator_host::fuzz::run_record(data));
