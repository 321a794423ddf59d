//! `ferry artifacts list|get`

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use orchestrator_core::run::RunRecord;
use orchestrator_core::store::layout;

use crate::args::{ArtifactsCommand, OutputFormat};
use crate::context::Context;
use crate::output::outln;
use crate::output::{self, hint};
use crate::resolve::RunTarget;

#[derive(serde::Serialize)]
struct Artifact {
    step: String,
    path: String,
    size: u64,
    digest: String,
    /// The run whose stored outputs hold the file (differs for cached steps).
    stored_in_run: String,
    key: String,
}

fn artifacts(record: &RunRecord, only: Option<&str>) -> Result<Vec<Artifact>> {
    if let Some(step) = only
        && !record.steps.contains_key(step)
    {
        let known: Vec<&str> = record.step_order.iter().map(String::as_str).collect();
        return Err(hint(
            format!("run {} has no step `{step}`", record.run_id),
            format!("its steps are: {}", known.join(", ")),
        ));
    }
    let mut found = Vec::new();
    for (name, step) in record.ordered_steps() {
        if only.is_some_and(|s| s != name) {
            continue;
        }
        let location = step.outputs_location(&record.run_id, name);
        for file in &step.outputs {
            found.push(Artifact {
                step: name.to_string(),
                path: file.path.clone(),
                size: file.size,
                digest: file.digest.clone(),
                key: format!(
                    "{}{}",
                    layout::step_outputs(&location.run_id, &location.step),
                    file.path
                ),
                stored_in_run: location.run_id.clone(),
            });
        }
    }
    Ok(found)
}

pub fn run(ctx: &Context, command: ArtifactsCommand) -> Result<ExitCode> {
    match command {
        ArtifactsCommand::List(args) => {
            let RunTarget { record, .. } = RunTarget::resolve(ctx, &args.run)?;
            let found = artifacts(&record, args.step.as_deref())?;
            if args.output.output == OutputFormat::Json {
                output::json(&found)?;
                return Ok(ExitCode::SUCCESS);
            }
            if found.is_empty() {
                outln!("run {} has no outputs", record.run_id);
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = found
                .iter()
                .map(|a| {
                    let note = if a.stored_in_run != record.run_id {
                        format!("cached from {}", a.stored_in_run)
                    } else {
                        String::new()
                    };
                    vec![a.step.clone(), a.path.clone(), output::bytes(a.size), note]
                })
                .collect();
            output::table(&["STEP", "PATH", "SIZE", "NOTE"], &rows);
            Ok(ExitCode::SUCCESS)
        }
        ArtifactsCommand::Get(args) => {
            let RunTarget { stack, record } = RunTarget::resolve(ctx, &args.run)?;
            let mut found = artifacts(&record, Some(&args.step))?;
            if let Some(path) = &args.path {
                found.retain(|a| &a.path == path || a.path.starts_with(&format!("{path}/")));
                if found.is_empty() {
                    return Err(hint(
                        format!(
                            "step `{}` of run {} has no output `{path}`",
                            args.step, record.run_id
                        ),
                        format!(
                            "see its outputs with `ferry artifacts list {} {}`",
                            record.run_id, args.step
                        ),
                    ));
                }
            }
            let out = ctx.cwd.join(&args.out);
            let mut total = 0;
            for artifact in &found {
                let dest = out.join(&artifact.path);
                stack
                    .store
                    .get_file(&artifact.key, &dest)
                    .with_context(|| format!("cannot download {}", artifact.path))?;
                total += artifact.size;
                outln!("{}", dest.display());
            }
            eprintln!(
                "downloaded {} files ({})",
                found.len(),
                output::bytes(total)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
