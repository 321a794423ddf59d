//! `ferry`: run pipelines on your laptop today and on Kubernetes tomorrow.

mod args;
mod commands;
mod context;
pub(crate) mod detach;
mod interrupt;
mod output;
mod progress;
mod resolve;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};
use context::Context;

fn main() -> ExitCode {
    // Before any thread exists: it changes the environment.
    detach::take_from_env();
    let cli = Cli::parse();
    // console already limits colour to terminals; NO_COLOR (no-color.org) turns it off there too.
    if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        console::set_colors_enabled(false);
        console::set_colors_enabled_stderr(false);
    }
    init_tracing(cli.global.verbose);
    let verbose = cli.global.verbose;
    match dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            output::print_error(&error, verbose);
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    // Commands that need no configuration run before any is loaded.
    match cli.command {
        Command::Completions(args) => return commands::completions::run(args),
        Command::Init(args) => return commands::init::run(&cli.global, args),
        // The agent takes its store from the environment, not from any ferry.toml.
        Command::Agent(command) => return commands::agent::run(&cli.global, command),
        _ => {}
    }
    let ctx = Context::load(&cli.global)?;
    match cli.command {
        Command::Run(args) => commands::run::run(&ctx, args),
        Command::Render(args) => commands::run::render(&ctx, args),
        Command::Validate(args) => commands::validate::run(&ctx, args),
        Command::Package(args) => commands::package::run(&ctx, args),
        // A retry starts and follows a run, as `ferry run` does.
        Command::Runs(args::RunsCommand::Retry(args)) => commands::run::retry(&ctx, args),
        // Deleting runs is retention, as `ferry gc` is.
        Command::Runs(args::RunsCommand::Delete(args)) => commands::gc::delete(&ctx, args),
        Command::Gc(args) => commands::gc::run(&ctx, args),
        Command::Ui(args) => commands::ui::run(&ctx, args),
        Command::Runs(command) => commands::runs::run(&ctx, command),
        Command::Schedule(command) => commands::schedule::run(&ctx, command),
        Command::Logs(args) => commands::logs::run(&ctx, args),
        Command::Artifacts(command) => commands::artifacts::run(&ctx, command),
        Command::Stack(command) => commands::stack::run(&ctx, command),
        Command::Plugins(command) => commands::plugins::run(&ctx, command),
        Command::Completions(_) | Command::Init(_) | Command::Agent(_) => {
            unreachable!("handled above")
        }
    }
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = std::env::var(orchestrator_core::env_vars::FERRY_LOG)
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
