//! A step's process: starting it in its own process group, supervising it until it ends,
//! times out or is cancelled, capturing its output line by line, and saying how it ended.
//!
//! Kept apart from the step's logic because it is where step processes are started and
//! stopped: process groups, the watchdog, the signals that end a step and the pipes it writes
//! to are handled here and nowhere else. The step module decides what the process is given
//! and what its ending means for the step.

use std::io::Write;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use super::events::RunState;
use super::oom;
use super::scheduler::Context;
use orchestrator_core::env_vars;
use orchestrator_core::pipeline::{Action, Step};
use orchestrator_core::run::{Event, LogStream};

/// Longest log line kept in one piece.
const MAX_LINE: u64 = 64 * 1024;

/// How a step's process ended.
pub(super) enum Ended {
    Exited(i32),
    Signalled(i32),
    /// SIGKILLed by the kernel's OOM killer at the memory limit of ferry's cgroup.
    OutOfMemory,
    TimedOut(Duration),
    Cancelled,
    SpawnFailed(String),
}

impl Ended {
    pub(super) fn exit_code(&self) -> Option<i32> {
        match self {
            Ended::Exited(code) => Some(*code),
            Ended::Signalled(signal) => Some(128 + signal),
            Ended::OutOfMemory => Some(128 + libc::SIGKILL),
            _ => None,
        }
    }

    pub(super) fn describe(&self, step: &Step) -> String {
        match self {
            Ended::Exited(code) => format!("exited with code {code}"),
            Ended::Signalled(signal) => format!("killed by signal {signal}"),
            Ended::OutOfMemory => format!(
                "OOMKilled: the kernel's out-of-memory killer ended it (signal 9) at the memory limit of the container or cgroup it ran in; raise `resources.memory` of step `{}`",
                step.name
            ),
            Ended::TimedOut(limit) => format!(
                "timed out after {}; raise `timeout` in step `{}` if it needs longer",
                humantime::format_duration(*limit),
                step.name
            ),
            Ended::Cancelled => "cancelled".to_string(),
            Ended::SpawnFailed(why) => why.clone(),
        }
    }
}

/// Ends the run's step process groups if ferry itself dies without doing so (SIGKILL, a
/// crash), so that no step outlives the ferry that ran it. One tiny `sh` per run, outside every
/// group, reads a pipe only ferry holds: `+PGID` and `-PGID` lines say which groups are
/// running; the kernel closes the pipe when ferry dies, and end of file without a `done` line
/// means ferry is gone, so it kills the groups still listed. One per run, not one per step:
/// a spawn is the largest part of a short step's cost.
pub(super) struct Watchdog {
    stdin: tokio::sync::Mutex<Option<tokio::process::ChildStdin>>,
    process: tokio::sync::Mutex<Option<tokio::process::Child>>,
}

impl Watchdog {
    // No `--` before the group: dash's `kill` does not take it.
    const SCRIPT: &str = r#"groups=""
while read -r line; do
  case "$line" in
    done) exit 0 ;;
    +*) groups="$groups ${line#+}" ;;
    -*) keep=""; for g in $groups; do [ "$g" = "${line#-}" ] || keep="$keep $g"; done; groups="$keep" ;;
  esac
done
for g in $groups; do kill -KILL "-$g"; done"#;

    pub(super) fn new() -> Self {
        Watchdog {
            stdin: tokio::sync::Mutex::new(None),
            process: tokio::sync::Mutex::new(None),
        }
    }

    fn spawn() -> Option<(tokio::process::Child, tokio::process::ChildStdin)> {
        let mut process = Command::new("sh")
            .args(["-c", Self::SCRIPT, "ferry-run-watchdog"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Not in a step's group (it outlives them) nor in ferry's (a Ctrl-C is for ferry).
            .process_group(0)
            .spawn()
            .map_err(|e| tracing::debug!("cannot start the run's step watchdog: {e}"))
            .ok()?;
        let stdin = process.stdin.take()?;
        Some((process, stdin))
    }

    async fn say(&self, line: String) {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = self.stdin.lock().await;
        if stdin.is_none() {
            // Started with the run's first step.
            if let Some((process, pipe)) = Self::spawn() {
                *self.process.lock().await = Some(process);
                *stdin = Some(pipe);
            }
        }
        if let Some(pipe) = stdin.as_mut()
            && pipe.write_all(line.as_bytes()).await.is_err()
        {
            *stdin = None;
        }
    }

    /// A step's group runs: kill it if ferry dies.
    async fn watch(&self, pgid: i32) {
        self.say(format!("+{pgid}\n")).await;
    }

    /// A step's group is stopped.
    async fn forget(&self, pgid: i32) {
        self.say(format!("-{pgid}\n")).await;
    }

    /// The run is over: the watchdog may go.
    pub(super) async fn release(&self) {
        use tokio::io::AsyncWriteExt as _;
        if let Some(mut pipe) = self.stdin.lock().await.take() {
            let _ = pipe.write_all(b"done\n").await;
        }
        if let Some(mut process) = self.process.lock().await.take() {
            let _ = process.wait().await;
        }
    }
}

/// Run `step`'s action with `env` until it ends, times out or the run is cancelled, its
/// output going to `log` and to the run's events.
pub(super) async fn run_process(
    ctx: &Context,
    step: &Step,
    env: Vec<(String, String)>,
    log: Arc<Mutex<std::fs::File>>,
) -> Ended {
    let oom_kills_before = oom::kills();
    let ended = supervise(ctx, step, env, log).await;
    if matches!(ended, Ended::Signalled(libc::SIGKILL)) && oom::kills() > oom_kills_before {
        return Ended::OutOfMemory;
    }
    ended
}

/// Spawn the step's command in its own process group and wait for the group to be done with.
async fn supervise(
    ctx: &Context,
    step: &Step,
    env: Vec<(String, String)>,
    log: Arc<Mutex<std::fs::File>>,
) -> Ended {
    let mut command = match &step.action {
        Action::Shell(script) => {
            let path = env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v);
            let mut c = Command::new(shell(path));
            c.arg("-c").arg(script);
            c
        }
        Action::Command(argv) => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    let program = match &step.action {
        Action::Shell(_) => "sh".to_string(),
        Action::Command(argv) => argv[0].clone(),
    };
    let cwd = ctx.plan.project_root.join(&ctx.plan.working_dir);
    command
        .current_dir(&cwd)
        .envs(env)
        // Inside a remote agent these hold the run plan and the store's credentials: steps
        // must never see them (a step that prints its environment would leak them to logs).
        .env_remove(env_vars::FERRY_AGENT_PLAN)
        .env_remove(env_vars::FERRY_AGENT_STORE)
        .env_remove(env_vars::FERRY_AGENT_ORCHESTRATOR)
        .env_remove(env_vars::FERRY_AGENT_PRIOR_ATTEMPTS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout or cancel reaches everything the step started,
        // and the terminal's Ctrl-C reaches ferry only, which then stops steps in order.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Ended::SpawnFailed(format!(
                "cannot start `{program}` in {}: {e}",
                cwd.display()
            ));
        }
    };
    let pgid = child.id().map(|id| id as i32);
    if let Some(pgid) = pgid {
        ctx.state.add_process_group(pgid);
    }
    if let Some(pgid) = pgid {
        ctx.watchdog.watch(pgid).await;
    }
    let readers = [
        child.stdout.take().map(|out| {
            tokio::spawn(forward_lines(
                out,
                LogStream::Stdout,
                step.name.clone(),
                Arc::clone(&ctx.state),
                Arc::clone(&log),
            ))
        }),
        child.stderr.take().map(|err| {
            tokio::spawn(forward_lines(
                err,
                LogStream::Stderr,
                step.name.clone(),
                Arc::clone(&ctx.state),
                Arc::clone(&log),
            ))
        }),
    ];
    let mut cancel = ctx.state.cancelled();
    let timeout = step.timeout.unwrap_or(Duration::MAX);
    let deadline = tokio::time::sleep(timeout.min(Duration::from_secs(100 * 365 * 24 * 3600)));
    tokio::pin!(deadline);
    let ended = tokio::select! {
        status = child.wait() => match status {
            Ok(status) => exit_of(status),
            Err(e) => Ended::SpawnFailed(format!("lost track of `{program}`: {e}")),
        },
        _ = &mut deadline => {
            stop_group(&mut child, pgid, ctx.settings.grace_period).await;
            Ended::TimedOut(timeout)
        }
        _ = wait_cancelled(&mut cancel) => {
            stop_group(&mut child, pgid, ctx.settings.grace_period).await;
            Ended::Cancelled
        }
    };
    // Whatever the step left running in the background ends with it; otherwise a daemon
    // holding the pipes open would keep the step "running" forever.
    if let Some(pgid) = pgid {
        signal_group(pgid, libc::SIGKILL);
        ctx.state.remove_process_group(pgid);
        ctx.watchdog.forget(pgid).await;
    }
    // A process that escaped the group (setsid, a double fork) may hold the pipes open; it
    // must not keep the step running.
    for mut reader in readers.into_iter().flatten() {
        if tokio::time::timeout(Duration::from_secs(2), &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
    }
    ended
}

/// The `sh` that a `PATH` search would find, searched once per distinct `PATH` and
/// remembered, as a shell's command hash does. Spawning plain `sh` makes the spawn try
/// `execve` in every `PATH` folder before the right one: ten failed calls per step on a
/// typical developer `PATH`. A `PATH` with an empty or relative entry (which means the
/// step's working folder) is left to the normal search.
fn shell(step_path: Option<&String>) -> std::ffi::OsString {
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;
    static FOUND: Mutex<Option<HashMap<std::ffi::OsString, std::path::PathBuf>>> = Mutex::new(None);
    let Some(path) = step_path
        .map(std::ffi::OsString::from)
        .or_else(|| std::env::var_os("PATH"))
    else {
        return "sh".into();
    };
    let mut found = FOUND
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let found = found.get_or_insert_with(HashMap::new);
    if let Some(shell) = found.get(&path) {
        return shell.clone().into();
    }
    let dirs: Vec<std::path::PathBuf> = std::env::split_paths(&path).collect();
    if dirs.iter().any(|d| !d.is_absolute()) {
        return "sh".into();
    }
    let hit = dirs.into_iter().map(|d| d.join("sh")).find(|candidate| {
        std::fs::metadata(candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    });
    match hit {
        Some(shell) => {
            found.insert(path, shell.clone());
            shell.into()
        }
        None => "sh".into(),
    }
}

async fn wait_cancelled(cancel: &mut tokio::sync::watch::Receiver<bool>) {
    while !*cancel.borrow_and_update() {
        if cancel.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn exit_of(status: std::process::ExitStatus) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ended::Exited(code),
        (None, Some(signal)) => Ended::Signalled(signal),
        (None, None) => Ended::Exited(-1),
    }
}

/// Send `signal` to every process in group `pgid`.
pub(super) fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: killpg has no memory-safety preconditions; errors (e.g. ESRCH) are ignored.
    unsafe {
        libc::killpg(pgid, signal);
    }
}

/// SIGTERM the step's process group, then SIGKILL after the grace period.
async fn stop_group(child: &mut tokio::process::Child, pgid: Option<i32>, grace: Duration) {
    if let Some(pgid) = pgid {
        signal_group(pgid, libc::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
        signal_group(pgid, libc::SIGKILL);
    }
    let _ = child.kill().await;
}

async fn forward_lines(
    pipe: impl AsyncRead + Unpin,
    stream: LogStream,
    step: String,
    state: Arc<RunState>,
    log: Arc<Mutex<std::fs::File>>,
) {
    use tokio::io::AsyncReadExt;
    let mut reader = BufReader::new(pipe);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        // Longer "lines" (binary output, progress bars without newlines) are cut into pieces,
        // so memory stays bounded whatever a step prints.
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buffer)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let _ = log.lock().expect("log lock").write_all(&buffer);
                let line = String::from_utf8_lossy(&buffer);
                state.emit(Event::Log {
                    step: step.clone(),
                    stream,
                    line: line.trim_end_matches(['\n', '\r']).to_string(),
                    time: Utc::now(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shell;
    use std::os::unix::fs::PermissionsExt;

    fn put(dir: &std::path::Path, mode: u32) -> std::path::PathBuf {
        let sh = dir.join("sh");
        std::fs::write(&sh, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(mode)).unwrap();
        sh
    }

    #[test]
    fn the_shell_is_the_first_executable_sh_on_the_path_as_a_search_would_find() {
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        put(a.path(), 0o644); // not executable: skipped, as execvp skips it
        let found = put(b.path(), 0o755);
        put(c.path(), 0o755);
        let path = std::env::join_paths([a.path(), b.path(), c.path()])
            .unwrap()
            .into_string()
            .unwrap();
        assert_eq!(shell(Some(&path)), found.into_os_string());
        // Remembered per PATH: with that `sh` gone, a search would now find c's; the
        // remembered answer is still b's.
        std::fs::remove_file(b.path().join("sh")).unwrap();
        assert_eq!(shell(Some(&path)), b.path().join("sh").into_os_string());
        // A relative entry means the step's working folder: left to the normal search.
        let relative = format!("bin:{path}");
        assert_eq!(shell(Some(&relative)), std::ffi::OsString::from("sh"));
        // Nowhere on the PATH: the spawn fails with the usual error.
        let empty = tempfile::tempdir().unwrap();
        let nowhere = empty.path().display().to_string();
        assert_eq!(shell(Some(&nowhere)), std::ffi::OsString::from("sh"));
    }
}
