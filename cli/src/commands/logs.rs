//! `ferry logs RUN [STEP] [-f]`
//!
//! The log goes to stdout, unchanged, so that it can be piped. For one step, what the log
//! cannot say goes to stderr after it: that the log is empty, why the step failed (the reason
//! ferry or the cluster recorded: an OOM kill, an eviction, a refused output), and how each
//! earlier attempt ended.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use console::Style;
use orchestrator_core::run::{Event, RunRecord, StepRecord, StepStatus};

use crate::args::{LogsArgs, OutputFormat};
use crate::context::Context;
use crate::output;
use crate::resolve::RunTarget;

pub fn run(ctx: &Context, args: LogsArgs) -> Result<ExitCode> {
    let RunTarget { stack, record } = RunTarget::resolve(ctx, &args.run)?;
    let width = record.steps.keys().map(String::len).max().unwrap_or(0);
    let whole_run = args.step.is_none();
    let json = args.output.output == OutputFormat::Json;
    let mut lines = 0usize;
    stack
        .orchestrator
        .stream_events(
            &record.run_id,
            args.step.as_deref(),
            args.follow,
            |event| match event {
                event if json => {
                    lines += usize::from(matches!(event, Event::Log { .. }));
                    output::json_line(&event)
                }
                Event::Log { step, line, .. } if whole_run => {
                    lines += 1;
                    output::line(format!("{step:<width$} │ {line}"))
                }
                Event::Log { line, .. } => {
                    lines += 1;
                    output::line(line)
                }
                _ => true,
            },
        )
        .with_context(|| format!("cannot read the logs of run {}", record.run_id))?;
    if let Some(step) = args.step.as_deref().filter(|_| !json) {
        // Following may have outlived the record read at the start.
        let record = if args.follow {
            stack.orchestrator.status(&record.run_id).unwrap_or(record)
        } else {
            record
        };
        for line in step_trailer(&record, step, lines == 0, args.follow) {
            eprintln!("{}", Style::new().dim().for_stderr().apply_to(line));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `ferry logs RUN STEP` says after the log: the lines a user would otherwise have to
/// find in `ferry runs show`.
fn step_trailer(record: &RunRecord, step: &str, empty: bool, followed: bool) -> Vec<String> {
    let Some(s) = record.steps.get(step) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    if empty {
        lines.push(match s.status {
            StepStatus::Pending => format!("step `{step}` has not started yet"),
            StepStatus::Cached => format!(
                "step `{step}` was a cache hit{}: it did not run, so it has no log of its own",
                cached_from(s)
            ),
            StepStatus::Skipped => format!("step `{step}` did not run, so it has no log"),
            _ => format!("step `{step}` wrote nothing to its log"),
        });
    }
    if s.attempt_history.len() > 1 || (s.attempt_history.len() == 1 && s.status.is_success()) {
        for attempt in &s.attempt_history {
            let how = attempt.reason.as_deref().unwrap_or("succeeded");
            lines.push(format!("attempt {}: {how}", attempt.number));
        }
    }
    match s.status {
        StepStatus::Failed | StepStatus::Cancelled | StepStatus::Skipped => {
            let reason = s
                .error
                .clone()
                .or_else(|| s.exit_code.map(|c| format!("exit code {c}")))
                .unwrap_or_else(|| "no reason was recorded".into());
            lines.push(format!("step `{step}` {}: {reason}", s.status));
        }
        StepStatus::Running if !followed => lines.push(format!(
            "step `{step}` is still running; follow it with `ferry logs -f {} {step}`",
            record.run_id
        )),
        _ => {}
    }
    lines
}

fn cached_from(step: &StepRecord) -> String {
    step.outputs_from
        .as_ref()
        .map(|from| format!(" (outputs from run {} step `{}`)", from.run_id, from.step))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_core::run::AttemptRecord;

    fn record_with(step: StepRecord) -> RunRecord {
        let mut record: RunRecord = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "run_id": "r1", "pipeline": "p", "stack": "local",
            "orchestrator": "local", "status": "failed",
            "created_at": "2026-12-04T00:00:00Z", "steps": {}
        }))
        .unwrap();
        record.steps.insert("train".into(), step);
        record
    }

    fn step(status: StepStatus) -> StepRecord {
        serde_json::from_value(serde_json::json!({ "status": status.to_string() })).unwrap()
    }

    #[test]
    fn a_failed_step_ends_with_its_reason_and_every_attempt() {
        let mut s = step(StepStatus::Failed);
        s.error = Some("OOMKilled: the container exceeded its memory limit (64Mi)".into());
        s.attempt_history = (1..=2)
            .map(|number| AttemptRecord {
                number,
                started_at: None,
                finished_at: None,
                exit_code: Some(137),
                reason: Some("OOMKilled".into()),
            })
            .collect();
        let lines = step_trailer(&record_with(s), "train", false, false);
        assert_eq!(
            lines,
            [
                "attempt 1: OOMKilled",
                "attempt 2: OOMKilled",
                "step `train` failed: OOMKilled: the container exceeded its memory limit (64Mi)",
            ]
        );
    }

    #[test]
    fn an_empty_log_says_so_and_why() {
        let mut s = step(StepStatus::Failed);
        s.error = Some("`out` is a symbolic link to a directory".into());
        let lines = step_trailer(&record_with(s), "train", true, false);
        assert_eq!(
            lines,
            [
                "step `train` wrote nothing to its log",
                "step `train` failed: `out` is a symbolic link to a directory",
            ]
        );
        let lines = step_trailer(
            &record_with(step(StepStatus::Pending)),
            "train",
            true,
            false,
        );
        assert_eq!(lines, ["step `train` has not started yet"]);
    }

    #[test]
    fn a_succeeded_step_with_a_log_adds_nothing_and_a_running_one_says_how_to_follow() {
        assert!(
            step_trailer(
                &record_with(step(StepStatus::Succeeded)),
                "train",
                false,
                false
            )
            .is_empty()
        );
        let lines = step_trailer(
            &record_with(step(StepStatus::Running)),
            "train",
            false,
            false,
        );
        assert_eq!(
            lines,
            ["step `train` is still running; follow it with `ferry logs -f r1 train`"]
        );
        assert!(
            step_trailer(
                &record_with(step(StepStatus::Running)),
                "train",
                false,
                true
            )
            .is_empty()
        );
    }
}
