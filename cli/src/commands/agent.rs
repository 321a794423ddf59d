//! `ferry agent run`: what a remote orchestrator's pod runs. The runtime is
//! `orchestrator_host::lifecycle::agent`; this command prints its events, one JSON object per
//! line on stdout (the machine that follows the run reads them from the pod log), and exits
//! with the failed step's code, like `ferry run`. Diagnostics go to stderr.

use std::process::ExitCode;

use anyhow::Result;
use orchestrator_core::env_vars::FERRY_PLUGIN_PATH;
use orchestrator_core::run::Event;
use orchestrator_host::lifecycle::{self, agent::Agent};
use orchestrator_host::loader::SearchPath;

use crate::args::{AgentCommand, GlobalArgs};

pub fn run(global: &GlobalArgs, command: AgentCommand) -> Result<ExitCode> {
    let AgentCommand::Run { step } = command;
    let search = SearchPath::standard(
        &global.plugin_dirs,
        std::env::var(FERRY_PLUGIN_PATH).ok().as_deref(),
        &[],
    );
    let record = Agent::from_env(search, step)?.run(&mut print_event)?;
    Ok(ExitCode::from(lifecycle::exit_status(&record)))
}

/// One event as a JSON line on stdout, which the following machine reads from the pod log.
fn print_event(event: Event) -> bool {
    use std::io::Write as _;
    let line = serde_json::to_string(&event).expect("events serialise");
    let mut out = std::io::stdout().lock();
    // A closed stdout (the pod log is gone) must not stop the run.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    true
}
