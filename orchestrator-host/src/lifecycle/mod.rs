//! The run lifecycle on the host's side: a run is planned ([`plan`]), submitted to the stack's
//! orchestrator, followed, and ends in a record whose [`exit_status`] is what `ferry run` and
//! `ferry agent` exit with. [`agent`] is the runtime of `ferry agent` inside a remote
//! orchestrator's pod.
//!
//! What plugins need of the lifecycle too (the DAG frontier, the run-record repository, replay
//! of a stored run) is part of the contract: `orchestrator_core::run`.

pub mod agent;
pub mod plan;

use orchestrator_core::run::{RunRecord, RunStatus, StepStatus};

/// The exit status of a cancelled run, as for Ctrl-C.
pub const EXIT_CANCELLED: u8 = 130;

/// 0 for success, [`EXIT_CANCELLED`] for a cancelled run, else the exit code of the first step
/// that failed with one (1 when none did, e.g. a step that timed out).
pub fn exit_status(record: &RunRecord) -> u8 {
    match record.status {
        RunStatus::Succeeded => 0,
        RunStatus::Cancelled => EXIT_CANCELLED,
        _ => record
            .ordered_steps()
            .into_iter()
            .filter(|(_, step)| step.status == StepStatus::Failed)
            .find_map(|(_, step)| step.exit_code)
            .and_then(|code| u8::try_from(code).ok())
            .filter(|code| *code != 0)
            .unwrap_or(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_core::run::StepRecord;

    fn record(status: RunStatus, steps: &[(&str, StepStatus, Option<i32>)]) -> RunRecord {
        let mut record: RunRecord = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "run_id": "r", "pipeline": "p", "stack": "s",
            "orchestrator": "local", "status": "running", "params": {},
            "created_at": "2026-01-01T00:00:00Z", "steps": {}
        }))
        .expect("a minimal record parses");
        record.status = status;
        for (name, status, code) in steps {
            let mut step = StepRecord::pending();
            step.status = *status;
            step.exit_code = *code;
            record.steps.insert(name.to_string(), step);
        }
        record
    }

    #[test]
    fn exit_status_follows_the_run_and_its_first_failed_step() {
        assert_eq!(exit_status(&record(RunStatus::Succeeded, &[])), 0);
        assert_eq!(exit_status(&record(RunStatus::Cancelled, &[])), 130);
        let failed = record(
            RunStatus::Failed,
            &[
                ("a", StepStatus::Succeeded, Some(0)),
                ("b", StepStatus::Failed, Some(3)),
            ],
        );
        assert_eq!(exit_status(&failed), 3);
        // A step that failed without an exit code (a timeout), or with one out of range.
        assert_eq!(
            exit_status(&record(
                RunStatus::Failed,
                &[("a", StepStatus::Failed, None)]
            )),
            1
        );
        assert_eq!(
            exit_status(&record(
                RunStatus::Failed,
                &[("a", StepStatus::Failed, Some(300))]
            )),
            1
        );
    }
}
