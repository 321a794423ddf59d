//! `ferry validate [PIPELINE]`

use std::process::ExitCode;

use anyhow::Result;
use console::Style;
use orchestrator_core::pipeline::Pipeline;

use crate::args::{OutputFormat, ValidateArgs};
use crate::context::Context;
use crate::output::{self, outln};
use crate::resolve::PipelineFile;

pub fn run(ctx: &Context, args: ValidateArgs) -> Result<ExitCode> {
    if args.output.output == OutputFormat::Json {
        return json(ctx, &args);
    }
    let PipelineFile { path, pipeline } = PipelineFile::resolve(ctx, args.pipeline.as_deref())?;
    outln!(
        "{} {}: pipeline `{}` with {} step{} is valid",
        Style::new().green().apply_to("✓"),
        path.strip_prefix(&ctx.cwd).unwrap_or(&path).display(),
        pipeline.name,
        pipeline.steps.len(),
        if pipeline.steps.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

/// `{"file", "valid", "pipeline", "steps", "problems": [{file, line, column, message, hint}]}`;
/// exit 1 when invalid, as without `--output json`.
fn json(ctx: &Context, args: &ValidateArgs) -> Result<ExitCode> {
    let path = PipelineFile::path(ctx, args.pipeline.as_deref());
    let (valid, pipeline, problems) = match Pipeline::from_file(&path) {
        Ok(pipeline) => (true, Some(pipeline), Vec::new()),
        Err(error) => (false, None, error.diagnostics),
    };
    output::json(&serde_json::json!({
        "file": path,
        "valid": valid,
        "pipeline": pipeline.as_ref().map(|p| p.name.clone()),
        "steps": pipeline.as_ref().map(|p| p.steps.iter().map(|s| s.name.clone()).collect::<Vec<_>>()),
        "problems": problems,
    }))?;
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
