//! Ctrl-C while following a run on a remote stack: the run lives in the cluster, so stopping
//! ferry must not silently leave it running nor silently kill it. Ask (on a terminal), or do
//! what `--on-interrupt` says. Local runs handle Ctrl-C themselves (they cancel).

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

use orchestrator_host::stack::OrchestratorHandle;

use crate::args::OnInterrupt;

/// Waits for Ctrl-C (or SIGTERM) until `done` closes; on a signal, cancels or detaches as the
/// policy says and exits the process.
pub fn guard(
    orchestrator: &OrchestratorHandle,
    run_id: &str,
    policy: OnInterrupt,
    done: Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::warn!(%error, "no Ctrl-C handling for this run");
            return;
        }
    };
    let interrupted = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return false;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = interrupt.recv() => return true,
                _ = terminate.recv() => return true,
                _ = tick.tick() => {
                    if matches!(done.try_recv(), Err(TryRecvError::Disconnected) | Ok(())) {
                        return false;
                    }
                }
            }
        }
    });
    if !interrupted {
        return;
    }
    let cancel = match policy {
        OnInterrupt::Cancel => true,
        OnInterrupt::Detach => false,
        OnInterrupt::Ask if std::io::stdin().is_terminal() => {
            eprint!("\nrun {run_id} is still running in the cluster. Cancel it? [y/N] ");
            let _ = std::io::stderr().flush();
            let mut answer = String::new();
            let _ = std::io::stdin().lock().read_line(&mut answer);
            matches!(answer.trim(), "y" | "Y" | "yes")
        }
        OnInterrupt::Ask => false,
    };
    if cancel {
        eprintln!("cancelling run {run_id}…");
        match orchestrator.cancel(run_id) {
            Ok(()) => eprintln!("cancelled run {run_id}"),
            Err(error) => {
                eprintln!(
                    "error: could not cancel run {run_id}: {error}\nhint: retry with `ferry runs cancel {run_id}`"
                );
                std::process::exit(1);
            }
        }
        std::process::exit(i32::from(orchestrator_host::lifecycle::EXIT_CANCELLED));
    }
    // Detached: the run goes on, nothing failed.
    eprintln!(
        "\ndetached: run {run_id} goes on in the cluster; follow it with `ferry logs -f {run_id}`, stop it with `ferry runs cancel {run_id}`"
    );
    std::process::exit(0);
}
