//! `ferry gc` and `ferry runs delete`: retention (`orchestrator_host::retention` decides what
//! may go and removes it safely); this module pins the schedules' code, prints what was (or
//! would be) removed with sizes, and removes a local run's files outside the store.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use orchestrator_core::ErrorKind;
use orchestrator_core::schedule::{ScheduleReply, ScheduleRequest};
use orchestrator_host::package::human_size;
use orchestrator_host::retention::{self, KeepReason, Policy, Totals};
use orchestrator_host::stack::Stack;

use crate::args::{GcArgs, OutputFormat, RunsDeleteArgs};
use crate::context::Context;
use crate::output::{self, hint, outln};

pub fn run(ctx: &Context, args: GcArgs) -> Result<ExitCode> {
    if args.keep_last.is_none() && args.older_than.is_none() {
        return Err(hint(
            "ferry gc needs a rule: nothing would be removed",
            "say what to keep, e.g. `ferry gc --keep-last 20` or `ferry gc --older-than 30d` (both: runs that pass both go)",
        ));
    }
    let stack = ctx.open_stack(args.stack.stack.as_deref())?;
    let mut policy = Policy::default().keep_packages(schedule_packages(&stack)?);
    if let Some(n) = args.keep_last {
        policy = policy.keep_last(n);
    }
    if let Some(age) = args.older_than {
        policy = policy
            .older_than(chrono::TimeDelta::from_std(age).context("--older-than is too long")?);
    }
    execute(ctx, &stack, &policy, args.dry_run, args.output.output)
}

pub fn delete(ctx: &Context, args: RunsDeleteArgs) -> Result<ExitCode> {
    let stack = ctx.open_stack(args.stack.stack.as_deref())?;
    let policy = Policy::default()
        .runs(args.runs.iter().cloned())
        .keep_packages(schedule_packages(&stack)?);
    execute(ctx, &stack, &policy, args.dry_run, args.output.output)
}

/// The code of the stack's schedules: their packages stay whatever runs remain. A stack that
/// keeps no schedules pins nothing; one whose schedules cannot be listed stops the removal.
fn schedule_packages(stack: &Stack) -> Result<Vec<String>> {
    match stack
        .orchestrator
        .schedules(&ScheduleRequest::List)
        .and_then(ScheduleReply::into_schedules)
    {
        Ok(schedules) => Ok(schedules
            .into_iter()
            .filter_map(|s| s.code_digest)
            .collect()),
        Err(e) if e.kind == ErrorKind::UNSUPPORTED => Ok(Vec::new()),
        Err(e) => Err(hint(
            format!(
                "cannot list the schedules of stack `{}` (their code packages must stay): {}",
                stack.name,
                e.message()
            ),
            "make the cluster reachable and try again",
        )),
    }
}

fn execute(
    ctx: &Context,
    stack: &Stack,
    policy: &Policy,
    dry_run: bool,
    format: OutputFormat,
) -> Result<ExitCode> {
    let plan = retention::plan(&stack.store, policy, chrono::Utc::now())
        .with_context(|| format!("cannot decide what to remove from {}", stack.store.url()))?;
    if dry_run {
        if format == OutputFormat::Json {
            output::json(
                &serde_json::json!({ "dry_run": true, "plan": plan, "totals": plan.totals() }),
            )?;
        } else {
            print_removal(
                Removal {
                    runs: &plan.runs,
                    packages: &plan.packages,
                    kept: &plan.kept,
                    notices: &plan.notices,
                    totals: plan.totals(),
                },
                "would remove",
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = retention::apply(&stack.store, &plan)
        .with_context(|| format!("removing from {} stopped", stack.store.url()))?;
    // A local run's own files outside the store (a background ferry's output).
    for run in &report.runs {
        let log = crate::detach::log_file(&ctx.config.project_root, &run.run_id);
        let _ = std::fs::remove_file(log);
    }
    if format == OutputFormat::Json {
        output::json(
            &serde_json::json!({ "dry_run": false, "report": report, "totals": report.totals() }),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    print_removal(
        Removal {
            runs: &report.runs,
            packages: &report.packages,
            kept: &report.skipped,
            notices: &[],
            totals: report.totals(),
        },
        "removed",
    );
    Ok(ExitCode::SUCCESS)
}

/// What a plan or a report says, for people.
struct Removal<'a> {
    runs: &'a [retention::RemovedRun],
    packages: &'a [retention::RemovedObject],
    kept: &'a [retention::Kept],
    notices: &'a [retention::Notice],
    totals: Totals,
}

fn print_removal(plan: Removal<'_>, verb: &str) {
    for run in plan.runs {
        outln!(
            "{verb} run {} ({}, {}, {} objects, {})",
            run.run_id,
            run.pipeline,
            run.status,
            run.objects,
            human_size(run.bytes)
        );
    }
    for package in plan.packages {
        outln!(
            "{verb} package {} ({})",
            package.key,
            human_size(package.bytes)
        );
    }
    // Only what a user would want to know stays, not every run a rule keeps.
    for kept in plan.kept.iter().filter(|k| {
        !matches!(
            k.reason,
            KeepReason::AmongNewest { .. }
                | KeepReason::NotOlderThan { .. }
                | KeepReason::UsedBy { .. }
        )
    }) {
        outln!("{kept}");
    }
    for notice in plan.notices {
        outln!("{notice}");
    }
    let Totals {
        runs,
        cache_entries,
        cache_bytes,
        packages,
        bytes,
        ..
    } = plan.totals;
    outln!(
        "{verb} {runs} run{}, {cache_entries} cache entr{} ({}), {packages} package{}: {} in all",
        if runs == 1 { "" } else { "s" },
        if cache_entries == 1 { "y" } else { "ies" },
        human_size(cache_bytes),
        if packages == 1 { "" } else { "s" },
        human_size(bytes)
    );
}
