//! `ferry runs list|show|cancel`

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use console::Style;
use orchestrator_core::run::{RunRecord, RunStatus};

use crate::args::{OutputFormat, RunsCommand, RunsListArgs, StatusArg};
use crate::context::{Context, run_ids};
use crate::output;
use crate::output::outln;
use crate::resolve::RunTarget;

pub fn run(ctx: &Context, command: RunsCommand) -> Result<ExitCode> {
    match command {
        RunsCommand::List(args) => {
            let stack = ctx.open_stack(args.stack.stack.as_deref())?;
            let since = args
                .since
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| chrono::Utc::now() - d);
            let mut records = Vec::new();
            for id in run_ids(&stack)? {
                if records.len() == args.limit {
                    break;
                }
                match stack.orchestrator.status(&id) {
                    Ok(record) => {
                        // Newest first: the first run older than --since ends the listing.
                        if since.is_some_and(|since| record.created_at < since) {
                            break;
                        }
                        if wanted(&record, &args) {
                            records.push(record);
                        }
                    }
                    // A run whose record is being written for the first time, or was removed.
                    Err(e) => tracing::warn!("skipping run {id}: {e}"),
                }
            }
            if args.output.output == OutputFormat::Json {
                output::json(&records)?;
                return Ok(ExitCode::SUCCESS);
            }
            if records.is_empty() {
                outln!(
                    "no runs in {} yet; start one with `ferry run`",
                    stack.store.url()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let mut header = vec!["RUN", "PIPELINE", "STATUS", "STARTED", "DURATION", "STEPS"];
            let mut rows: Vec<Vec<String>> = records.iter().map(list_row).collect();
            // The schedule that started a run, when any run listed has one.
            if records.iter().any(|r| r.schedule.is_some()) {
                header.push("SCHEDULE");
                for (row, record) in rows.iter_mut().zip(&records) {
                    row.push(record.schedule.clone().unwrap_or_else(|| "-".into()));
                }
            }
            output::table(&header, &rows);
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Show(args) => {
            let RunTarget { record, .. } = RunTarget::resolve(ctx, &args.run)?;
            if args.output.output == OutputFormat::Json {
                output::json(&record)?;
            } else {
                show(&record);
                if args.cache {
                    outln!();
                    output::cache_notes(&record);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Retry(_) => unreachable!("`runs retry` is `commands::run::retry`"),
        RunsCommand::Delete(_) => unreachable!("`runs delete` is `commands::gc::delete`"),
        RunsCommand::Cancel(args) => {
            let RunTarget { stack, record } = RunTarget::resolve(ctx, &args)?;
            stack
                .orchestrator
                .cancel(&record.run_id)
                .with_context(|| format!("cannot cancel run {}", record.run_id))?;
            outln!("cancelling run {}", record.run_id);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Whether a run passes `runs list`'s filters.
fn wanted(record: &RunRecord, args: &RunsListArgs) -> bool {
    let status = args.status.map(|s| match s {
        StatusArg::Pending => RunStatus::Pending,
        StatusArg::Running => RunStatus::Running,
        StatusArg::Succeeded => RunStatus::Succeeded,
        StatusArg::Failed => RunStatus::Failed,
        StatusArg::Cancelled => RunStatus::Cancelled,
    });
    args.pipeline.as_ref().is_none_or(|p| &record.pipeline == p)
        && status.is_none_or(|s| record.status == s)
        && args
            .schedule
            .as_ref()
            .is_none_or(|s| record.schedule.as_ref() == Some(s))
}

fn list_row(record: &RunRecord) -> Vec<String> {
    let done = record
        .steps
        .values()
        .filter(|s| s.status.is_finished())
        .count();
    vec![
        record.run_id.clone(),
        record.pipeline.clone(),
        output::run_status(record.status),
        record
            .started_at
            .unwrap_or(record.created_at)
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        record
            .duration()
            .map(output::duration)
            .unwrap_or_else(|| "-".into()),
        format!("{done}/{}", record.steps.len()),
    ]
}

fn show(record: &RunRecord) {
    let bold = Style::new().bold();
    outln!("{} {}", bold.apply_to("run"), record.run_id);
    outln!("{} {}", bold.apply_to("pipeline"), record.pipeline);
    outln!(
        "{} {}",
        bold.apply_to("status"),
        output::run_status(record.status)
    );
    if let Some(error) = &record.error {
        outln!("{} {error}", bold.apply_to("error"));
    }
    if let Some(schedule) = &record.schedule {
        outln!("{} {schedule}", bold.apply_to("schedule"));
    }
    if let Some(earlier) = &record.resumed_from {
        outln!("{} {earlier}", bold.apply_to("resumes"));
    }
    outln!(
        "{} {} ({})",
        bold.apply_to("stack"),
        record.stack,
        record.orchestrator
    );
    if let Some(duration) = record.duration() {
        outln!(
            "{} {}",
            bold.apply_to("duration"),
            output::duration(duration)
        );
    }
    if let Some(digest) = &record.code_digest {
        outln!(
            "{} {}",
            bold.apply_to("code"),
            &digest[..digest.len().min(16)]
        );
    }
    if !record.params.is_empty() {
        let params: Vec<String> = record
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        outln!("{} {}", bold.apply_to("params"), params.join(" "));
    }
    outln!();
    let rows: Vec<Vec<String>> = record
        .ordered_steps()
        .into_iter()
        .map(|(name, step)| {
            let duration = match (step.started_at, step.finished_at) {
                (Some(start), Some(end)) => output::duration(end - start),
                _ => "-".into(),
            };
            let note = match (&step.outputs_from, &step.error) {
                (Some(from), _) => format!("outputs of run {}", from.run_id),
                (None, Some(error)) => error.clone(),
                (None, None) => String::new(),
            };
            vec![
                format!("{} {name}", output::step_symbol(step.status)),
                output::step_status(step.status),
                step.attempts.to_string(),
                duration,
                step.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                note,
            ]
        })
        .collect();
    output::table(
        &["STEP", "STATUS", "ATTEMPTS", "DURATION", "EXIT", "NOTE"],
        &rows,
    );
}
