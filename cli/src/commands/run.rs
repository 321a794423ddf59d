//! `ferry run` and `ferry render`.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use console::Style;
use orchestrator_core::run::{ReusedOutputs, RunPlan, RunRecords, new_run_id};
use orchestrator_core::schedule::{ScheduleReply, ScheduleRequest};
use orchestrator_host::lifecycle;
use orchestrator_host::stack::Stack;

use crate::args::{OutputFormat, RenderArgs, RunArgs, RunRetryArgs};
use crate::context::Context;
use crate::detach;
use crate::output::hint;
use crate::output::outln;
use crate::progress::RunDisplay;
use crate::resolve::{self, RunOptions, RunTarget};

pub fn run(ctx: &Context, args: RunArgs) -> Result<ExitCode> {
    let options = RunOptions::resolve(ctx, &args.pipeline)?;
    // An orchestrator that runs steps from this process (the local one) goes on in a
    // background ferry when detached (see `detach`).
    if args.detach && !options.stack.orchestrator.wants_code_package() {
        let (plan, stack) = options.into_plan(ctx, args.no_cache, None)?;
        return detach_locally(ctx, &plan, &stack, args.output.output == OutputFormat::Json);
    }
    // Remote orchestrators run steps elsewhere: ship the code first.
    let package = if options.stack.orchestrator.wants_code_package() {
        let package = ctx.build_package()?;
        ctx.upload_package(&options.stack.store, &package)?;
        Some(package)
    } else {
        None
    };
    let (plan, stack) = options.into_plan(ctx, args.no_cache, package.as_ref())?;
    let how = StartArgs {
        detach: args.detach,
        on_interrupt: args.on_interrupt,
        explain_cache: args.explain_cache,
        json: args.output.output == OutputFormat::Json,
    };
    start(plan, &stack, how)
}

/// `ferry runs retry RUN [--from STEP]`: the run's kept plan again, under a new id, with
/// the outputs of the steps that succeeded (and are not `--from` or after it) reused.
pub fn retry(ctx: &Context, args: RunRetryArgs) -> Result<ExitCode> {
    let RunTarget { stack, record } = RunTarget::resolve(ctx, &args.run)?;
    if !record.status.is_finished() {
        return Err(hint(
            format!("run {} is still {}", record.run_id, record.status),
            format!(
                "wait for it, or cancel it first (`ferry runs cancel {}`)",
                record.run_id
            ),
        ));
    }
    let mut plan = lifecycle::plan::kept(&stack.store, &record.run_id)
        .with_context(|| format!("cannot read the plan of run {}", record.run_id))?
        .ok_or_else(|| {
            hint(
                format!(
                    "run {} has no kept plan (it was started by an older ferry)",
                    record.run_id
                ),
                "start the pipeline again with `ferry run`",
            )
        })?;
    let again = resolve::steps_to_run_again(&plan.pipeline, &record, args.from.as_deref())?;
    plan.reuse = record
        .steps
        .iter()
        .filter(|(name, step)| step.status.is_success() && !again.contains(name.as_str()))
        .map(|(name, step)| {
            let reused = ReusedOutputs {
                source: step.outputs_location(&record.run_id, name),
                outputs: step.outputs.clone(),
            };
            (name.clone(), reused)
        })
        .collect();
    plan.resumed_from = Some(record.run_id.clone());
    plan.run_id = new_run_id();
    plan.created_at = chrono::Utc::now();
    plan.schedule = None;
    // The local orchestrator runs the project in place, where it is now.
    if !stack.orchestrator.wants_code_package() {
        plan.project_root = ctx.config.project_root.clone();
    }
    if args.detach && !stack.orchestrator.wants_code_package() {
        return detach_locally(ctx, &plan, &stack, false);
    }
    let how = StartArgs {
        detach: args.detach,
        on_interrupt: args.on_interrupt,
        explain_cache: false,
        json: false,
    };
    start(plan, &stack, how)
}

/// Submits `plan` and follows it to its end (or prints its id with `detach`); the exit code
/// is the run's.
fn start(mut plan: RunPlan, stack: &Stack, args: StartArgs) -> Result<ExitCode> {
    // The background ferry of a detached local run: the id the detaching ferry printed.
    if let Some(run_id) = detach::run_id_from_env() {
        plan.run_id = run_id;
    }
    lifecycle::plan::keep(&stack.store, &plan)
        .with_context(|| format!("cannot store the plan of run {}", plan.run_id))?;
    let dim = Style::new().dim();
    let header = format!(
        "{} {} {}",
        Style::new()
            .bold()
            .apply_to(format!("▶ {}", plan.pipeline.name)),
        dim.apply_to(format!("run {}", plan.run_id)),
        dim.apply_to(format!(
            "· stack {} · {} · {}",
            stack.name,
            stack.orchestrator.describe(),
            stack.store.url()
        )),
    );
    // With --detach or JSON, stdout carries only what scripts read.
    if args.detach || args.json {
        eprintln!("{header}");
    } else {
        outln!("{header}");
    }
    let mut display = RunDisplay::new(&plan);
    let remote = stack.orchestrator.wants_code_package();
    let run_id = plan.run_id.clone();
    let followed = std::thread::scope(|scope| -> Result<bool> {
        // Guards Ctrl-C from the moment the run may exist in the cluster (submit included);
        // closing `done` ends the guard.
        let (done, watching) = std::sync::mpsc::channel::<()>();
        if remote && !args.detach {
            let orchestrator = &stack.orchestrator;
            let run_id = run_id.as_str();
            scope.spawn(move || {
                crate::interrupt::guard(orchestrator, run_id, args.on_interrupt, watching)
            });
        }
        let submitted = stack
            .orchestrator
            .submit(&plan)
            .with_context(|| format!("cannot start pipeline `{}`", plan.pipeline.name))?;
        debug_assert_eq!(submitted, run_id, "orchestrators run a plan under its id");
        if args.detach {
            if args.json {
                crate::output::json_line(&serde_json::json!({ "run_id": run_id }));
            } else {
                outln!("{run_id}");
            }
            eprintln!(
                "{}",
                dim.apply_to(format!("detached; follow with `ferry logs -f {run_id}`, check with `ferry runs show {run_id}`"))
            );
            return Ok(false);
        }
        let followed = stack
            .orchestrator
            .stream_events(&run_id, None, true, |event| {
                if args.json {
                    // A reader that went away (a closed pipe) stops the following, not the run.
                    crate::output::json_line(&event)
                } else {
                    display.show(event);
                    true
                }
            })
            .with_context(|| format!("lost track of run {run_id}"));
        drop(done);
        followed.map(|()| true)
    })?;
    if !followed {
        return Ok(ExitCode::SUCCESS);
    }
    let record = stack
        .orchestrator
        .status(&run_id)
        .with_context(|| format!("cannot read the result of run {run_id}"))?;
    if args.json {
        crate::output::json_line(&serde_json::json!({ "event": "result", "record": record }));
        return Ok(ExitCode::from(lifecycle::exit_status(&record)));
    }
    display.finish(&record);
    if args.explain_cache {
        crate::output::cache_notes(&record);
    }
    Ok(ExitCode::from(lifecycle::exit_status(&record)))
}

/// What `start` needs of the command's arguments.
struct StartArgs {
    detach: bool,
    on_interrupt: crate::args::OnInterrupt,
    explain_cache: bool,
    /// `--output json`: events as JSON lines, then the record, instead of the display.
    json: bool,
}

/// `--detach` on the local stack: the plan is checked here, then a background ferry runs it
/// under the same id; prints the run id once its record exists.
fn detach_locally(ctx: &Context, plan: &RunPlan, stack: &Stack, json: bool) -> Result<ExitCode> {
    let run_id = plan.run_id.clone();
    let log = detach::log_file(&ctx.config.project_root, &run_id);
    let records = RunRecords::new(stack.store.clone());
    let pid = detach::spawn(&run_id, &log, || {
        records.get(&run_id).ok().flatten().is_some()
    })?;
    if json {
        crate::output::json_line(&serde_json::json!({ "run_id": run_id, "pid": pid }));
    } else {
        outln!("{run_id}");
    }
    eprintln!(
        "{}",
        Style::new().dim().apply_to(format!(
            "running in the background (pid {pid}, output in {}); follow with `ferry logs -f {run_id}`, stop with `ferry runs cancel {run_id}`",
            log.display()
        ))
    );
    Ok(ExitCode::SUCCESS)
}

pub fn render(ctx: &Context, args: RenderArgs) -> Result<ExitCode> {
    let options = RunOptions::resolve(ctx, &args.pipeline)?;
    // What would be shipped is part of what would be created (nothing is uploaded).
    let package = if options.stack.orchestrator.wants_code_package() {
        Some(ctx.build_package()?)
    } else {
        None
    };
    let (plan, stack) = options.into_plan(ctx, false, package.as_ref())?;
    let rendered = match (&args.schedule, &args.cron) {
        (Some(name), Some(cron)) => {
            let spec = resolve::schedule_spec(name, cron, &args.when);
            let request = ScheduleRequest::Render {
                spec,
                plan: resolve::into_template(plan, name),
            };
            stack
                .orchestrator
                .schedules(&request)
                .and_then(ScheduleReply::into_rendered)
                .with_context(|| {
                    format!(
                        "cannot render schedule `{name}` on stack `{}` (orchestrator `{}`)",
                        stack.name,
                        stack.orchestrator.name()
                    )
                })?
        }
        _ => stack
            .orchestrator
            .render(&plan)
            .with_context(|| format!("cannot render pipeline `{}`", plan.pipeline.name))?,
    };
    crate::output::text(&rendered);
    if !rendered.ends_with('\n') {
        outln!();
    }
    Ok(ExitCode::SUCCESS)
}
