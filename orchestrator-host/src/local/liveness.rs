//! Whether a run's orchestrator is still alive: the heartbeat a running record carries, and
//! how a reader that is not that orchestrator tells a live run from an interrupted one, or
//! reaches it to cancel it.
//!
//! Both sides of the contract are here, as they must agree: the writer refreshes
//! `heartbeat_at` every `HEARTBEAT`, the reader trusts a same-host pid check first and the
//! heartbeat's age otherwise.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::scheduler::{Context, write_record};
use orchestrator_core::PluginError;
use orchestrator_core::run::RunRecord;

/// How often a running record proves its orchestrator is alive.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Refresh the run record's heartbeat every `HEARTBEAT`, until aborted.
pub(super) async fn heartbeat(ctx: Arc<Context>) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        ctx.state.update(|r| r.heartbeat_at = Some(Utc::now()));
        let _ = write_record(&ctx).await;
    }
}

/// A running record whose heartbeat is older than this belongs to a dead orchestrator.
pub(super) fn stale_after() -> chrono::Duration {
    chrono::Duration::from_std(HEARTBEAT * 4).expect("small duration")
}

/// This machine's name, kept in a run's record: a record's pid can only be checked on its host.
pub(super) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    let result = unsafe { libc::kill(pid as i32, 0) };
    let exists = result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    // A zombie exists until its parent reaps it, which may be never: a detached ferry whose
    // parent exited is reparented to an init that may not reap (containers). It runs nothing.
    exists && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().next())
            == Some("Z")
    })
}

/// Whether a running record's orchestrator process is known to be gone: same host, and the
/// process no longer exists.
pub(super) fn orchestrator_is_gone(record: &RunRecord) -> bool {
    match (&record.host, record.pid) {
        (Some(host), Some(pid)) if *host == host_name() => !process_alive(pid),
        _ => false,
    }
}

/// Cancel a run started by another ferry process on this machine: ask it to stop (SIGTERM
/// makes it cancel gracefully, as Ctrl-C would).
pub(super) fn cancel_foreign(record: &RunRecord) -> Result<(), PluginError> {
    match (&record.host, record.pid) {
        (Some(host), Some(pid)) if *host == host_name() && process_alive(pid) => {
            // SAFETY: plain kill(2); the pid is the orchestrator process named in the record.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
            Ok(())
        }
        (Some(host), _) if *host != host_name() => Err(PluginError::unsupported(format!(
            "run `{}` is running on {host}; cancel it there",
            record.run_id
        ))),
        _ => Err(PluginError::not_found(format!(
            "run `{}` has no live ferry process; it was interrupted",
            record.run_id
        ))),
    }
}
