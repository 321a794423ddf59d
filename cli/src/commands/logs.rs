//! `ferry logs RUN [STEP] [-f]`

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use orchestrator_core::run::Event;

use crate::args::LogsArgs;
use crate::context::Context;
use crate::output;
use crate::resolve::RunTarget;

pub fn run(ctx: &Context, args: LogsArgs) -> Result<ExitCode> {
    let RunTarget { stack, record } = RunTarget::resolve(ctx, &args.run)?;
    let width = record.steps.keys().map(String::len).max().unwrap_or(0);
    let whole_run = args.step.is_none();
    stack
        .orchestrator
        .stream_events(
            &record.run_id,
            args.step.as_deref(),
            args.follow,
            |event| match event {
                Event::Log { step, line, .. } if whole_run => {
                    output::line(format!("{step:<width$} │ {line}"))
                }
                Event::Log { line, .. } => output::line(line),
                _ => true,
            },
        )
        .with_context(|| format!("cannot read the logs of run {}", record.run_id))?;
    Ok(ExitCode::SUCCESS)
}
