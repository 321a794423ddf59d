//! `ferry validate [PIPELINE]`

use std::process::ExitCode;

use anyhow::Result;
use console::Style;

use crate::args::ValidateArgs;
use crate::context::Context;
use crate::output::outln;
use crate::resolve::PipelineFile;

pub fn run(ctx: &Context, args: ValidateArgs) -> Result<ExitCode> {
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
