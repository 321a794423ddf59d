//! Where things live in an artifact store: the one place that spells out the key layout.
//!
//! ```text
//! packages/<blake3>.tar.zst
//! runs/<run-id>/run.json
//! runs/<run-id>/plan.json   (the plan the run was started with: `ferry runs retry` starts it again)
//! runs/<run-id>/steps/<step>/log
//! runs/<run-id>/steps/<step>/log.parts/<seq>   (the log while the step runs; see run::step_log)
//! runs/<run-id>/steps/<step>/result.json   (steps run one per container: the step's record)
//! runs/<run-id>/steps/<step>/outputs/...
//! cache/<cache-key>.json
//! ```

pub const RUNS_PREFIX: &str = "runs/";
pub const CACHE_PREFIX: &str = "cache/";
pub const PACKAGES_PREFIX: &str = "packages/";

pub fn run_prefix(run_id: &str) -> String {
    format!("{RUNS_PREFIX}{run_id}/")
}

pub fn run_record(run_id: &str) -> String {
    format!("{}run.json", run_prefix(run_id))
}

/// The plan a run was started with, kept so that the run can be started again.
pub fn run_plan(run_id: &str) -> String {
    format!("{}plan.json", run_prefix(run_id))
}

pub fn step_prefix(run_id: &str, step: &str) -> String {
    format!("{}steps/{step}/", run_prefix(run_id))
}

pub fn step_log(run_id: &str, step: &str) -> String {
    format!("{}log", step_prefix(run_id, step))
}

/// The parts of a step's log written while it runs, `00000000`, `00000001`, ...: what is left
/// of the log if the step's machine dies before the whole log is stored.
pub fn step_log_part(run_id: &str, step: &str, seq: u32) -> String {
    format!("{}log.parts/{seq:08}", step_prefix(run_id, step))
}

/// The record of one step that ran on its own (a Kubernetes step Job), written by the agent
/// that ran it; whoever coordinates the run merges it into `run.json`.
pub fn step_result(run_id: &str, step: &str) -> String {
    format!("{}result.json", step_prefix(run_id, step))
}

pub fn step_outputs(run_id: &str, step: &str) -> String {
    format!("{}outputs/", step_prefix(run_id, step))
}

pub fn cache_entry(cache_key: &str) -> String {
    format!("{CACHE_PREFIX}{cache_key}.json")
}

pub fn package(digest: &str) -> String {
    format!("{PACKAGES_PREFIX}{digest}.tar.zst")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout is what stores already hold: it must never change by accident.
    #[test]
    fn keys_are_spelled_as_documented() {
        assert_eq!(run_record("r1"), "runs/r1/run.json");
        assert_eq!(step_log("r1", "a"), "runs/r1/steps/a/log");
        assert_eq!(
            step_log_part("r1", "a", 12),
            "runs/r1/steps/a/log.parts/00000012"
        );
        assert_eq!(step_result("r1", "a"), "runs/r1/steps/a/result.json");
        assert_eq!(step_outputs("r1", "a"), "runs/r1/steps/a/outputs/");
        assert_eq!(cache_entry("k"), "cache/k.json");
        assert_eq!(package("d"), "packages/d.tar.zst");
    }
}
