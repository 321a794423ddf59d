//! `ferry run` and `ferry render`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use chrono::Utc;
use console::Style;
use orchestrator_core::JSON_SCHEMA_VERSION;
use orchestrator_core::pipeline::Pipeline;
use orchestrator_core::run::{CodeInfo, RunPlan, RunRecord, RunStatus, StepStatus, new_run_id};
use orchestrator_host::package;
use orchestrator_host::stack::Stack;

use crate::args::{PipelineArgs, RenderArgs, RunArgs};
use crate::context::Context;
use crate::output::hint;
use crate::output::outln;
use crate::progress::RunDisplay;

pub fn run(ctx: &Context, args: RunArgs) -> Result<ExitCode> {
    let (mut plan, stack) = prepare(ctx, &args.pipeline, args.no_cache)?;
    // Remote orchestrators run steps elsewhere: ship the code first.
    if stack.orchestrator.wants_code_package() {
        let package = crate::commands::package::build(ctx)?;
        crate::commands::package::upload(&stack.store, &package)?;
        plan.code.digest = Some(package.archive.digest.clone());
        plan.code.package_key = Some(package.key());
    }
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
    // With --detach, stdout carries only the run id, for scripts.
    if args.detach {
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
            outln!("{run_id}");
            eprintln!(
                "{}",
                dim.apply_to(format!("detached; follow with `ferry logs -f {run_id}`, check with `ferry runs show {run_id}`"))
            );
            return Ok(false);
        }
        let followed = stack
            .orchestrator
            .stream_events(&run_id, None, true, |event| {
                display.show(event);
                true
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
    display.finish(&record);
    Ok(exit_code(&record))
}

/// 0 for success, 130 for a cancelled run, else the exit code of the first step that failed
/// with one (1 when none did, e.g. a step that timed out).
pub fn exit_code(record: &RunRecord) -> ExitCode {
    match record.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        RunStatus::Cancelled => ExitCode::from(crate::EXIT_CANCELLED),
        _ => record
            .ordered_steps()
            .into_iter()
            .filter(|(_, step)| step.status == StepStatus::Failed)
            .find_map(|(_, step)| step.exit_code)
            .and_then(|code| u8::try_from(code).ok())
            .filter(|code| *code != 0)
            .map_or(ExitCode::FAILURE, ExitCode::from),
    }
}

pub fn render(ctx: &Context, args: RenderArgs) -> Result<ExitCode> {
    let (mut plan, stack) = prepare(ctx, &args.pipeline, false)?;
    // What would be shipped is part of what would be created (nothing is uploaded).
    if stack.orchestrator.wants_code_package() {
        let package = crate::commands::package::build(ctx)?;
        plan.code.digest = Some(package.archive.digest.clone());
        plan.code.package_key = Some(package.key());
    }
    let rendered = stack
        .orchestrator
        .render(&plan)
        .with_context(|| format!("cannot render pipeline `{}`", plan.pipeline.name))?;
    crate::output::text(&rendered);
    if !rendered.ends_with('\n') {
        outln!();
    }
    Ok(ExitCode::SUCCESS)
}

/// Read and validate a pipeline file.
pub fn load_pipeline(path: &Path) -> Result<Pipeline> {
    if !path.exists() {
        return Err(hint(
            format!("no pipeline file at {}", path.display()),
            "pass a pipeline file or directory (`ferry run examples/hello`), or create one with `ferry init`",
        ));
    }
    Pipeline::from_file(path).map_err(|e| {
        let count = e.diagnostics.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        hint(
            format!("{e}"),
            format!("fix the {count} {noun} above in {}", path.display()),
        )
    })
}

/// Parse `NAME=VALUE` arguments.
pub fn parse_params(raw: &[String]) -> Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .ok_or_else(|| {
                    hint(
                        format!("invalid --param `{pair}`"),
                        "write parameters as NAME=VALUE, e.g. --param epochs=10",
                    )
                })
        })
        .collect()
}

/// Everything up to submission: pipeline, parameters, stack, code digest, plan.
fn prepare(ctx: &Context, args: &PipelineArgs, no_cache: bool) -> Result<(RunPlan, Stack)> {
    let path = ctx.pipeline_path(args.pipeline.as_deref());
    let pipeline = load_pipeline(&path)?;
    let overrides = parse_params(&args.params)?;
    let params = pipeline.resolve_params(&overrides).map_err(|e| {
        hint(
            e.to_string(),
            format!(
                "set parameters with --param NAME=VALUE; `{}` declares them under `params:`",
                path.display()
            ),
        )
    })?;
    let stack = ctx.open_stack(args.stack.as_deref())?;
    let project_root = ctx.config.project_root.clone();
    let digest = package::files::tree_digest(&project_root, &ctx.config.package.include)
        .with_context(|| format!("cannot read the project at {}", project_root.display()))?;
    let relative = |p: &Path| -> PathBuf {
        p.strip_prefix(&project_root)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let working_dir = relative(path.parent().unwrap_or(&project_root));
    let plan = RunPlan {
        schema_version: JSON_SCHEMA_VERSION,
        run_id: new_run_id(),
        pipeline,
        pipeline_file: relative(&path),
        params,
        project_root: project_root.clone(),
        working_dir,
        stack: stack.name.clone(),
        code: CodeInfo {
            digest: Some(digest),
            package_key: None,
        },
        no_cache,
        created_at: Utc::now(),
        only_step: None,
    };
    Ok((plan, stack))
}
