//! The entry points of ferry's fuzz targets (`orchestrator-host/fuzz`), one per input ferry
//! parses from outside: pipeline files, `ferry.toml`, run records and plans read back from a
//! store, and code packages. Each takes arbitrary bytes and must return, never panic. The same
//! functions replay the checked-in corpora in the ordinary test suite
//! (`tests/fuzz_corpus.rs`), so every input a fuzzer ever found stays a regression test.

use std::path::Path;

use orchestrator_core::pipeline::Pipeline;
use orchestrator_core::run::{RunPlan, RunRecord};

/// A pipeline file: parsed and validated (locations, did-you-mean, cycles, names).
pub fn pipeline_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(pipeline) = Pipeline::from_yaml_str(text, Some(Path::new("pipeline.yaml"))) {
        // What ferry does next with a valid pipeline must hold too.
        let _ = pipeline.topological_order();
        let _ = pipeline.validate();
    }
}

/// A `ferry.toml`: parsed, checked key by key and merged over the defaults.
pub fn config_toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::check_project_file(text);
    }
}

/// A run record or run plan as read back from a store (written by any ferry, or damaged).
pub fn run_record(data: &[u8]) {
    if let Ok(record) = serde_json::from_slice::<RunRecord>(data) {
        let _ = record.ordered_steps();
        let _ = record.duration();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = RunPlan::from_json(text);
    }
}

/// A code package (`.tar.zst`), unpacked into a scratch directory under `scratch` without a
/// digest check, with small limits; see [`crate::package::unpack::fuzz_unpack`].
pub fn unpack(data: &[u8], scratch: &Path) {
    let _ = crate::package::unpack::fuzz_unpack(data, scratch);
}
