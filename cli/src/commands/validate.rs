//! `ferry validate [PIPELINE]`

use std::process::ExitCode;

use anyhow::Result;
use console::Style;

use crate::args::ValidateArgs;
use crate::commands::run::load_pipeline;
use crate::context::Context;
use crate::output::outln;

pub fn run(ctx: &Context, args: ValidateArgs) -> Result<ExitCode> {
    let path = ctx.pipeline_path(args.pipeline.as_deref());
    let pipeline = load_pipeline(&path)?;
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
