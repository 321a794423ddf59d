//! `ferry schedule create|list|show|suspend|resume|delete|trigger`: pipelines run on a cron
//! schedule by the stack's orchestrator, with nobody's ferry running. The orchestrator keeps
//! the schedule (Kubernetes: a CronJob); its runs are ordinary runs, in the stack's store,
//! whose records name the schedule.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use console::Style;
use orchestrator_core::run::{RunRecord, new_run_id};
use orchestrator_core::schedule::{ScheduleInfo, ScheduleReply, ScheduleRequest};
use orchestrator_host::stack::Stack;

use crate::args::{OutputFormat, ScheduleCommand, ScheduleCreateArgs};
use crate::context::{Context, run_ids};
use crate::output::{self, outln};
use crate::resolve::{self, RunOptions};

/// How many of the newest runs `schedule show` looks through for the schedule's.
const RECENT_RUNS_SCANNED: usize = 200;
/// How many of the schedule's runs it lists.
const RECENT_RUNS_SHOWN: usize = 5;

pub fn run(ctx: &Context, command: ScheduleCommand) -> Result<ExitCode> {
    match command {
        ScheduleCommand::Create(args) => create(ctx, args),
        ScheduleCommand::List(args) => {
            let stack = ctx.open_stack(args.stack.stack.as_deref())?;
            let schedules = ask(
                &stack,
                &ScheduleRequest::List,
                ScheduleReply::into_schedules,
            )?;
            if args.output.output == OutputFormat::Json {
                output::json(&schedules)?;
                return Ok(ExitCode::SUCCESS);
            }
            if schedules.is_empty() {
                outln!(
                    "no schedules on stack `{}`; create one with `ferry schedule create NAME --cron EXPR`",
                    stack.name
                );
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = schedules.iter().map(list_row).collect();
            output::table(
                &[
                    "SCHEDULE",
                    "CRON",
                    "PIPELINE",
                    "STATE",
                    "LAST FIRED",
                    "NEXT",
                ],
                &rows,
            );
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Show(args) => {
            let stack = ctx.open_stack(args.schedule.stack.stack.as_deref())?;
            let name = args.schedule.name;
            let info = one(&stack, &ScheduleRequest::Show { name: name.clone() })?;
            let runs = recent_runs(&stack, &name)?;
            if args.output.output == OutputFormat::Json {
                output::json(&serde_json::json!({ "schedule": info, "recent_runs": runs }))?;
            } else {
                show(&info, &runs);
            }
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Suspend(args) => {
            let stack = ctx.open_stack(args.stack.stack.as_deref())?;
            one(
                &stack,
                &ScheduleRequest::Suspend {
                    name: args.name.clone(),
                },
            )?;
            outln!(
                "schedule {} suspended; `ferry schedule resume {}` lets it fire again",
                args.name,
                args.name
            );
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Resume(args) => {
            let stack = ctx.open_stack(args.stack.stack.as_deref())?;
            let info = one(
                &stack,
                &ScheduleRequest::Resume {
                    name: args.name.clone(),
                },
            )?;
            outln!("schedule {} resumed{}", args.name, next_firing(&info));
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Delete(args) => {
            let stack = ctx.open_stack(args.stack.stack.as_deref())?;
            ask(
                &stack,
                &ScheduleRequest::Delete {
                    name: args.name.clone(),
                },
                Ok,
            )?;
            outln!(
                "schedule {} deleted; the records of its runs stay in {}",
                args.name,
                stack.store.url()
            );
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Trigger(args) => {
            let stack = ctx.open_stack(args.stack.stack.as_deref())?;
            let request = ScheduleRequest::Trigger {
                name: args.name.clone(),
                run_id: new_run_id(),
            };
            let (run_id, launched) = ask(&stack, &request, ScheduleReply::into_triggered)?;
            outln!("{run_id}");
            eprintln!(
                "{}",
                Style::new().dim().apply_to(format!(
                    "started run {run_id} of schedule {} ({launched}); follow with `ferry logs -f {run_id}`",
                    args.name
                ))
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn create(ctx: &Context, args: ScheduleCreateArgs) -> Result<ExitCode> {
    let spec = resolve::schedule_spec(&args.name, &args.cron, &args.when);
    let options = RunOptions::resolve(ctx, &args.pipeline)?;
    // A stack that keeps no schedules, a bad name or cron expression: refused before the
    // package is built.
    ask(
        &options.stack,
        &ScheduleRequest::Check { spec: spec.clone() },
        Ok,
    )?;
    let package = if options.stack.orchestrator.wants_code_package() {
        Some(ctx.build_package()?)
    } else {
        None
    };
    let (plan, stack) = options.into_plan(ctx, false, package.as_ref())?;
    let plan = resolve::into_template(plan, &spec.name);
    // A plan its runs could not run (a profile in pipeline mode, say) is refused here, before
    // the package is uploaded.
    ask(
        &stack,
        &ScheduleRequest::Render {
            spec: spec.clone(),
            plan: plan.clone(),
        },
        ScheduleReply::into_rendered,
    )?;
    if let Some(package) = &package {
        ctx.upload_package(&stack.store, package)?;
    }
    let info = one(&stack, &ScheduleRequest::Create { spec, plan })?;
    let digest = info.code_digest.as_deref().unwrap_or_default();
    outln!(
        "schedule {} created: `{}`{} runs pipeline {} with code {}{}",
        info.spec.name,
        info.spec.cron,
        info.spec
            .timezone
            .as_ref()
            .map(|tz| format!(" ({tz})"))
            .unwrap_or_default(),
        info.pipeline,
        &digest[..digest.len().min(12)],
        if info.spec.suspend {
            "; suspended until `ferry schedule resume`".to_string()
        } else {
            next_firing(&info)
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Asks the stack's orchestrator and takes the reply `expect` wants; an orchestrator that
/// keeps no schedules (the local one) answers in one line.
fn ask<T>(
    stack: &Stack,
    request: &ScheduleRequest,
    expect: impl FnOnce(ScheduleReply) -> Result<T, orchestrator_core::PluginError>,
) -> Result<T> {
    stack
        .orchestrator
        .schedules(request)
        .and_then(expect)
        .with_context(|| {
            format!(
                "stack `{}` (orchestrator `{}`)",
                stack.name,
                stack.orchestrator.name()
            )
        })
}

fn one(stack: &Stack, request: &ScheduleRequest) -> Result<ScheduleInfo> {
    ask(stack, request, ScheduleReply::into_schedule)
}

fn next_firing(info: &ScheduleInfo) -> String {
    match info.next_fire_times.first() {
        Some(next) => format!("; next run at {}", local(next)),
        None => String::new(),
    }
}

fn local(time: &chrono::DateTime<chrono::Utc>) -> String {
    time.with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn state(info: &ScheduleInfo) -> String {
    match (info.spec.suspend, info.active) {
        (true, _) => Style::new().yellow().apply_to("suspended").to_string(),
        (false, 0) => "active".to_string(),
        (false, n) => format!("running ({n})"),
    }
}

fn list_row(info: &ScheduleInfo) -> Vec<String> {
    vec![
        info.spec.name.clone(),
        match &info.spec.timezone {
            Some(tz) => format!("{} ({tz})", info.spec.cron),
            None => info.spec.cron.clone(),
        },
        info.pipeline.clone(),
        state(info),
        info.last_fired_at
            .as_ref()
            .map(local)
            .unwrap_or_else(|| "-".into()),
        info.next_fire_times
            .first()
            .map(local)
            .unwrap_or_else(|| "-".into()),
    ]
}

/// The schedule's newest runs, from the store.
fn recent_runs(stack: &Stack, name: &str) -> Result<Vec<RunRecord>> {
    let records = orchestrator_core::run::RunRecords::new(stack.store.clone());
    let mut runs = Vec::new();
    for id in run_ids(stack)?.into_iter().take(RECENT_RUNS_SCANNED) {
        if let Ok(Some(record)) = records.get(&id)
            && record.schedule.as_deref() == Some(name)
        {
            runs.push(record);
            if runs.len() == RECENT_RUNS_SHOWN {
                break;
            }
        }
    }
    Ok(runs)
}

fn show(info: &ScheduleInfo, runs: &[RunRecord]) {
    let bold = Style::new().bold();
    let spec = &info.spec;
    outln!("{} {}", bold.apply_to("schedule"), spec.name);
    outln!(
        "{} {}{}",
        bold.apply_to("cron"),
        spec.cron,
        spec.timezone
            .as_ref()
            .map(|tz| format!(" ({tz})"))
            .unwrap_or_else(|| " (UTC)".into())
    );
    outln!("{} {}", bold.apply_to("state"), state(info));
    outln!("{} {}", bold.apply_to("pipeline"), info.pipeline);
    if !info.params.is_empty() {
        let params: Vec<String> = info
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        outln!("{} {}", bold.apply_to("params"), params.join(" "));
    }
    if let Some(digest) = &info.code_digest {
        outln!(
            "{} {}",
            bold.apply_to("code"),
            &digest[..digest.len().min(16)]
        );
    }
    outln!(
        "{} {}{}",
        bold.apply_to("concurrency"),
        spec.concurrency.name(),
        spec.starting_deadline_seconds
            .map(|s| format!(", a firing more than {s}s late is skipped"))
            .unwrap_or_default()
    );
    outln!(
        "{} keeps {} succeeded and {} failed launches",
        bold.apply_to("history"),
        spec.successful_history,
        spec.failed_history
    );
    outln!("{} {}", bold.apply_to("where"), info.place);
    if let Some(last) = &info.last_fired_at {
        outln!("{} {}", bold.apply_to("last fired"), local(last));
    }
    if let Some(last) = &info.last_succeeded_at {
        outln!("{} {}", bold.apply_to("last succeeded"), local(last));
    }
    if !info.next_fire_times.is_empty() {
        let next: Vec<String> = info.next_fire_times.iter().map(local).collect();
        outln!("{} {}", bold.apply_to("next"), next.join(", "));
    }
    outln!();
    if runs.is_empty() {
        outln!(
            "no runs yet; `ferry schedule trigger {}` starts one now",
            spec.name
        );
        return;
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.run_id.clone(),
                output::run_status(r.status),
                local(&r.started_at.unwrap_or(r.created_at)),
                r.duration()
                    .map(output::duration)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    output::table(&["RUN", "STATUS", "STARTED", "DURATION"], &rows);
}
