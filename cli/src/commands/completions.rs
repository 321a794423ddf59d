//! `ferry completions SHELL`

use std::process::ExitCode;

use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs};

pub fn run(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    clap_complete::generate(
        args.shell,
        &mut Cli::command(),
        "ferry",
        &mut std::io::stdout(),
    );
    Ok(ExitCode::SUCCESS)
}
