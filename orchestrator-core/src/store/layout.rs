//! Where things live in an artifact store: the one place that spells out the key layout.
//!
//! ```text
//! packages/<blake3>.tar.zst
//! runs/<run-id>/run.json
//! runs/<run-id>/steps/<step>/log
//! runs/<run-id>/steps/<step>/result.json   (steps run one per container: the step's record)
//! runs/<run-id>/steps/<step>/outputs/...
//! cache/<cache-key>.json
//! ```

pub const RUNS_PREFIX: &str = "runs/";
pub const CACHE_PREFIX: &str = "cache/";
pub const PACKAGES_PREFIX: &str = "packages/";

pub fn run_prefix(run_id: &str) -> String {
    format!("runs/{run_id}/")
}

pub fn run_record(run_id: &str) -> String {
    format!("runs/{run_id}/run.json")
}

pub fn step_prefix(run_id: &str, step: &str) -> String {
    format!("runs/{run_id}/steps/{step}/")
}

pub fn step_log(run_id: &str, step: &str) -> String {
    format!("runs/{run_id}/steps/{step}/log")
}

/// The record of one step that ran on its own (a Kubernetes step Job), written by the agent
/// that ran it; whoever coordinates the run merges it into `run.json`.
pub fn step_result(run_id: &str, step: &str) -> String {
    format!("runs/{run_id}/steps/{step}/result.json")
}

pub fn step_outputs(run_id: &str, step: &str) -> String {
    format!("runs/{run_id}/steps/{step}/outputs/")
}

pub fn cache_entry(cache_key: &str) -> String {
    format!("cache/{cache_key}.json")
}

pub fn package(digest: &str) -> String {
    format!("packages/{digest}.tar.zst")
}
