//! Fuzz `orchestrator_host::fuzz::pipeline_yaml`: any bytes must give a result, never a panic.
//!
//! Run with `scripts/fuzz.sh 60 pipeline_yaml` (or `cargo +nightly fuzz run pipeline_yaml fuzz/corpus/pipeline_yaml` from
//! `orchestrator-core/`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| orchestrator_host::fuzz::pipeline_yaml(data));
