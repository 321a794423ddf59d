//! `ferry run --detach` on a stack whose orchestrator runs inside the ferry process (the
//! local one): the run goes on in a background ferry of its own, started here with the same
//! arguments minus `--detach`, in a session of its own (closing the terminal does not reach
//! it), with its output in a file and its run id chosen by this process. Its record carries
//! its pid and heartbeat (`local::liveness`), so `ferry logs -f`, `runs show` and `runs cancel`
//! reach it from any terminal, and a background ferry that dies is shown as interrupted.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Set on the background ferry: the id its run must have.
const DETACHED_RUN_ENV: &str = "FERRY_DETACHED_RUN";

/// How long the detaching ferry waits for the background one to record its run.
const STARTUP_WAIT: Duration = Duration::from_secs(30);

static DETACHED_RUN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Takes the detaching ferry's run id out of the environment, so that a step of the run (a
/// `ferry run` inside a step, say) does not inherit it. `main` calls it before anything else,
/// while the process has one thread.
pub fn take_from_env() {
    let id = std::env::var(DETACHED_RUN_ENV)
        .ok()
        .filter(|id| orchestrator_core::run::is_valid_run_id(id));
    if std::env::var_os(DETACHED_RUN_ENV).is_some() {
        // SAFETY: single-threaded at this point (see above).
        unsafe { std::env::remove_var(DETACHED_RUN_ENV) };
    }
    let _ = DETACHED_RUN.set(id);
}

/// In the background ferry: the run id the detaching ferry chose (and printed).
pub fn run_id_from_env() -> Option<String> {
    DETACHED_RUN.get().cloned().flatten()
}

/// Where a background ferry's own output goes (the steps' logs go to the store as always).
pub fn log_file(project_root: &Path, run_id: &str) -> PathBuf {
    project_root
        .join(".ferry")
        .join("detached")
        .join(format!("{run_id}.log"))
}

/// Starts the background ferry for `run_id` and returns its pid once `recorded()` says its
/// run's record exists; if it exits first, the error quotes its output.
pub fn spawn(run_id: &str, log: &Path, recorded: impl Fn() -> bool) -> Result<u32> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let out =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    let exe = std::env::current_exe().context("cannot find the ferry executable")?;
    let args: Vec<OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    let mut command = Command::new(exe);
    command
        .args(&args)
        .env(DETACHED_RUN_ENV, run_id)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: setsid(2) only, between fork and exec, as the standard library allows.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command
        .spawn()
        .context("cannot start the background ferry")?;
    let deadline = Instant::now() + STARTUP_WAIT;
    loop {
        if recorded() {
            return Ok(child.id());
        }
        if let Some(status) = child.try_wait()? {
            let output = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = output.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "the background ferry exited ({status}) before starting run {run_id}: {}",
                tail.join(" / ")
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the background ferry (pid {}) has not recorded run {run_id} after {}s; its output is in {}",
                child.id(),
                STARTUP_WAIT.as_secs(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
