//! Running a plan: DAG scheduling, step processes, outputs, logs and the record.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::LocalSettings;
use super::cache::{self, CacheEntry};
use super::events::RunState;
use orchestrator_core::PluginError;
use orchestrator_core::env_vars::{self, env_suffix};
use orchestrator_core::pipeline::{Action, Step};
use orchestrator_core::run::RunRecords;
use orchestrator_core::run::{
    Decision, Event, Frontier, LogStream, OutputFile, RunPlan, RunRecord, RunStatus, StepRef,
    StepStatus,
};
use orchestrator_core::sdk::blocking;
use orchestrator_core::store::{Store, layout};

/// How often a running record proves its orchestrator is alive.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(15);
/// Longest log line kept in one piece.
const MAX_LINE: u64 = 64 * 1024;

/// Everything the step tasks share.
struct Context {
    plan: RunPlan,
    state: Arc<RunState>,
    store: Store,
    settings: LocalSettings,
    run_dir: PathBuf,
    slots: Semaphore,
}

/// How a step ended.
struct Outcome {
    status: StepStatus,
    outputs: Vec<OutputFile>,
}

/// Run a whole plan; always leaves a finished record behind.
pub(super) async fn execute(
    plan: RunPlan,
    state: Arc<RunState>,
    store: Store,
    settings: LocalSettings,
) {
    let run_dir = settings.work_dir.join(&plan.run_id);
    let ctx = Arc::new(Context {
        slots: Semaphore::new(settings.parallelism),
        plan,
        state,
        store,
        settings,
        run_dir,
    });
    let signals = tokio::spawn(cancel_on_signals(Arc::clone(&ctx.state)));
    let heartbeat = tokio::spawn(heartbeat(Arc::clone(&ctx)));
    let error = schedule(&ctx).await.err();
    heartbeat.abort();
    signals.abort();

    let status = ctx.state.update(|record| {
        record.finish_from_steps(Utc::now());
        if let Some(error) = &error {
            record.status = RunStatus::Failed;
            record.error = Some(error.to_string());
        } else if record.status == RunStatus::Succeeded && ctx.state.is_cancelled() {
            record.status = RunStatus::Cancelled;
            record.error = Some("cancelled".to_string());
        }
        record.heartbeat_at = record.finished_at;
        record.status
    });
    if let Err(e) = write_record(&ctx).await {
        ctx.state.emit(notice(
            None,
            format!("could not save the final run record: {e}"),
        ));
    }
    if !ctx.settings.keep_work_dirs {
        let _ = tokio::fs::remove_dir_all(&ctx.run_dir).await;
    }
    ctx.state.emit(Event::RunStatus {
        status,
        time: Utc::now(),
    });
    ctx.state.finish();
}

fn notice(step: Option<&str>, text: String) -> Event {
    Event::Notice {
        step: step.map(str::to_string),
        text,
        time: Utc::now(),
    }
}

async fn write_record(ctx: &Arc<Context>) -> Result<(), PluginError> {
    let ctx = Arc::clone(ctx);
    tokio::task::spawn_blocking(move || ctx.state.write_record(&ctx.store))
        .await
        .map_err(|e| PluginError::other(format!("record writer failed: {e}")))?
}

async fn heartbeat(ctx: Arc<Context>) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        ctx.state.update(|r| r.heartbeat_at = Some(Utc::now()));
        let _ = write_record(&ctx).await;
    }
}

/// Ctrl-C (or SIGTERM) cancels the run gracefully; a second one exits at once.
/// The handlers are installed here, before any step starts, so that a Ctrl-C arriving while
/// the first step spins up is already a cancel and not the default "terminate ferry".
fn cancel_on_signals(state: Arc<RunState>) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(interrupt), Ok(terminate)) = handlers else {
            return;
        };
        watch_signals(state, interrupt, terminate).await;
    }
}

async fn watch_signals(
    state: Arc<RunState>,
    mut interrupt: tokio::signal::unix::Signal,
    mut terminate: tokio::signal::unix::Signal,
) {
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        seen += 1;
        if seen > 1 {
            // Exiting skips destructors: stop the steps' process groups first, or they would
            // outlive ferry. The record stays "running" and is reported as interrupted.
            for pgid in state.process_groups() {
                signal_group(pgid, libc::SIGKILL);
            }
            std::process::exit(130);
        }
        state.emit(notice(
            None,
            "cancelling: stopping running steps (press Ctrl-C again to exit at once)".into(),
        ));
        state.cancel();
    }
}

/// Start steps as their dependencies finish, at most `parallelism` at once.
async fn schedule(ctx: &Arc<Context>) -> Result<(), PluginError> {
    ctx.state.update(|r| {
        r.status = RunStatus::Running;
        r.started_at = Some(Utc::now());
        r.heartbeat_at = r.started_at;
    });
    write_record(ctx).await?;
    ctx.state.emit(Event::RunStatus {
        status: RunStatus::Running,
        time: Utc::now(),
    });
    tokio::fs::create_dir_all(&ctx.run_dir).await.map_err(|e| {
        PluginError::other(format!(
            "cannot create the run's scratch folder {}: {e}",
            ctx.run_dir.display()
        ))
    })?;

    let pipeline = &ctx.plan.pipeline;
    // Parallelism is the step slots' business (`run_step`): a cache hit takes no slot.
    let (mut frontier, mut outputs): (Frontier<'_>, HashMap<String, Vec<OutputFile>>) =
        match &ctx.plan.only_step {
            None => (Frontier::new(pipeline, usize::MAX), HashMap::new()),
            Some(name) => {
                let step = pipeline.step(name).ok_or_else(|| {
                    PluginError::invalid_input(format!("step `{name}` is not in the plan"))
                })?;
                let upstream = upstream_results(ctx, step).await?;
                let statuses = upstream.iter().map(|(n, o)| (n.clone(), o.status));
                let frontier = Frontier::single(pipeline, step, statuses.collect::<Vec<_>>());
                let outputs = upstream.into_iter().map(|(n, o)| (n, o.outputs)).collect();
                (frontier, outputs)
            }
        };
    let mut running: JoinSet<(String, Outcome)> = JoinSet::new();
    let mut task_steps: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut cancel = ctx.state.cancelled();

    loop {
        for decision in frontier.advance(ctx.state.is_cancelled()) {
            let step = match decision {
                Decision::End {
                    step,
                    status,
                    reason,
                } => {
                    set_step_status(ctx, &step.name, status, Some(reason));
                    continue;
                }
                Decision::Start(step) => step,
            };
            let inputs: Vec<(String, PathBuf, Vec<OutputFile>)> = step
                .inputs
                .iter()
                .map(|name| {
                    (
                        name.clone(),
                        output_dir(&ctx.run_dir, name),
                        outputs.get(name).cloned().unwrap_or_default(),
                    )
                })
                .collect();
            let ctx = Arc::clone(ctx);
            let name = step.name.clone();
            let handle = running.spawn(async move {
                let outcome = run_step(&ctx, &name, inputs).await;
                (name, outcome)
            });
            task_steps.insert(handle.id(), step.name.clone());
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            joined = running.join_next_with_id() => match joined {
                Some(Ok((_, (name, outcome)))) => {
                    frontier.finish(&name, outcome.status);
                    outputs.insert(name, outcome.outputs);
                }
                // A step task that panicked: that step failed; the others go on.
                Some(Err(e)) => {
                    let name = task_steps.get(&e.id()).cloned().unwrap_or_default();
                    let reason = format!("ferry's task for this step failed: {e}");
                    set_step_status(ctx, &name, StepStatus::Failed, Some(reason));
                    frontier.finish(&name, StepStatus::Failed);
                }
                None => break,
            },
            // Wake up to mark pending steps cancelled; running ones stop by themselves.
            _ = cancel.changed() => {}
        }
    }
    for step in frontier.stranded() {
        let reason = "never became ready to run (its dependencies did not all finish)".to_string();
        set_step_status(ctx, &step.name, StepStatus::Failed, Some(reason));
    }
    if let Err(e) = write_record(ctx).await {
        ctx.state
            .emit(notice(None, format!("could not save the run record: {e}")));
    }
    Ok(())
}

/// For a step run on its own: the results its upstream steps recorded in the store, with the
/// outputs it reads downloaded (and verified) where its inputs expect them.
async fn upstream_results(
    ctx: &Arc<Context>,
    step: &Step,
) -> Result<HashMap<String, Outcome>, PluginError> {
    let mut results = HashMap::new();
    let run_id = &ctx.plan.run_id;
    for dep in ctx.plan.pipeline.dependencies(step) {
        let (records, id, name) = (
            RunRecords::new(ctx.store.clone()),
            run_id.clone(),
            dep.to_string(),
        );
        let record = blocking(move || records.step_result(&id, &name)).await?;
        let record = record.filter(|r| r.status.is_success()).ok_or_else(|| {
            PluginError::invalid_input(format!(
                "step `{}` needs `{dep}`, which has no successful result in run {run_id} ({})",
                step.name,
                layout::step_result(run_id, dep)
            ))
        })?;
        if step.inputs.iter().any(|i| i == dep) {
            let entry = CacheEntry {
                source: record.outputs_location(run_id, dep),
                outputs: record.outputs.clone(),
                created_at: Utc::now(),
            };
            let out = output_dir(&ctx.run_dir, dep);
            tokio::fs::create_dir_all(&out)
                .await
                .map_err(|e| io_error("create", &out, e))?;
            let store = ctx.store.clone();
            blocking(move || cache::restore(&store, &entry, &out))
                .await
                .map_err(|e| {
                    PluginError::other(format!("cannot fetch the outputs of `{dep}`: {e}"))
                })?;
        }
        results.insert(
            dep.to_string(),
            Outcome {
                status: record.status,
                outputs: record.outputs,
            },
        );
    }
    Ok(results)
}

fn set_step_status(ctx: &Context, step: &str, status: StepStatus, error: Option<String>) {
    ctx.state.update(|r| {
        if let Some(record) = r.steps.get_mut(step) {
            record.status = status;
            if status.is_finished() {
                record.finished_at = Some(Utc::now());
            } else if status == StepStatus::Running {
                record.started_at = Some(Utc::now());
            }
            if error.is_some() {
                record.error = error;
            }
        }
    });
    ctx.state.emit(Event::StepStatus {
        step: step.to_string(),
        status,
        time: Utc::now(),
    });
}

/// A step's scratch folder in the run's: `out/`, `work/`, `in/` and its live `log`.
pub(super) fn step_dir(run_dir: &Path, step: &str) -> PathBuf {
    run_dir.join("steps").join(step)
}

fn output_dir(run_dir: &Path, step: &str) -> PathBuf {
    step_dir(run_dir, step).join("out")
}

/// Run one step: cache lookup, attempts, output checks, uploads, record.
async fn run_step(
    ctx: &Arc<Context>,
    name: &str,
    inputs: Vec<(String, PathBuf, Vec<OutputFile>)>,
) -> Outcome {
    let Ok(_slot) = ctx.slots.acquire().await else {
        return Outcome {
            status: StepStatus::Cancelled,
            outputs: Vec::new(),
        };
    };
    if ctx.state.is_cancelled() {
        set_step_status(
            ctx,
            name,
            StepStatus::Cancelled,
            Some("cancelled before it started".into()),
        );
        return Outcome {
            status: StepStatus::Cancelled,
            outputs: Vec::new(),
        };
    }
    match try_run_step(ctx, name, &inputs).await {
        Ok(outcome) => outcome,
        Err(e) => {
            let message = e.to_string();
            ctx.state.emit(notice(Some(name), message.clone()));
            set_step_status(ctx, name, StepStatus::Failed, Some(message));
            let _ = write_record(ctx).await;
            Outcome {
                status: StepStatus::Failed,
                outputs: Vec::new(),
            }
        }
    }
}

async fn try_run_step(
    ctx: &Arc<Context>,
    name: &str,
    inputs: &[(String, PathBuf, Vec<OutputFile>)],
) -> Result<Outcome, PluginError> {
    let plan = &ctx.plan;
    let step = plan
        .pipeline
        .step(name)
        .ok_or_else(|| PluginError::other(format!("step `{name}` is not in the plan")))?
        .clone();
    let step_dir = step_dir(&ctx.run_dir, name);
    let out_dir = output_dir(&ctx.run_dir, name);
    let work_dir = step_dir.join("work");
    let inputs_dir = step_dir.join("in");
    for dir in [&out_dir, &work_dir, &inputs_dir] {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| io_error("create", dir, e))?;
    }
    for (input, dir, _) in inputs {
        let link = inputs_dir.join(input);
        let _ = tokio::fs::remove_file(&link).await;
        tokio::fs::symlink(dir, &link)
            .await
            .map_err(|e| io_error("link", &link, e))?;
    }
    let params = plan.pipeline.step_params(&step, &plan.params);

    // Cache: a hit downloads the earlier outputs so downstream steps can read them here.
    let cache_key = (step.cache && !plan.no_cache).then(|| {
        let inputs: Vec<(&str, &[OutputFile])> = inputs
            .iter()
            .map(|(n, _, o)| (n.as_str(), o.as_slice()))
            .collect();
        cache::cache_key(
            &step,
            &params,
            &plan.working_dir,
            plan.code.digest.as_deref(),
            &inputs,
        )
    });
    if let Some(key) = &cache_key {
        let store = ctx.store.clone();
        let lookup_key = key.clone();
        let hit = match blocking(move || cache::lookup(&store, &lookup_key)).await {
            Ok(hit) => hit,
            // The cache is an optimisation: when it cannot be read the step simply runs.
            Err(e) => {
                let text = format!("cache lookup failed, running the step: {e}");
                ctx.state.emit(notice(Some(name), text));
                None
            }
        };
        let hit = match hit {
            Some(entry) => {
                let store = ctx.store.clone();
                let out = out_dir.clone();
                match blocking(move || cache::restore(&store, &entry, &out).map(|()| entry)).await {
                    Ok(entry) => Some(entry),
                    Err(e) => {
                        let text = format!("cached outputs unusable, running the step: {e}");
                        ctx.state.emit(notice(Some(name), text));
                        let _ = tokio::fs::remove_dir_all(&out_dir).await;
                        tokio::fs::create_dir_all(&out_dir)
                            .await
                            .map_err(|e| io_error("create", &out_dir, e))?;
                        None
                    }
                }
            }
            None => None,
        };
        if let Some(entry) = hit {
            ctx.state.emit(notice(
                Some(name),
                format!(
                    "cached: reusing the outputs of run {} (use --no-cache to run it)",
                    entry.source.run_id
                ),
            ));
            ctx.state.update(|r| {
                if let Some(s) = r.steps.get_mut(name) {
                    s.cache_key = Some(key.clone());
                    s.outputs_from = Some(entry.source.clone());
                    s.outputs = entry.outputs.clone();
                }
            });
            set_step_status(ctx, name, StepStatus::Cached, None);
            write_record(ctx).await?;
            return Ok(Outcome {
                status: StepStatus::Cached,
                outputs: entry.outputs,
            });
        }
    }

    set_step_status(ctx, name, StepStatus::Running, None);
    write_record(ctx).await?;

    let log_path = step_dir.join("log");
    let log = Arc::new(Mutex::new(
        std::fs::File::create(&log_path).map_err(|e| io_error("create", &log_path, e))?,
    ));
    let attempts = step.retries + 1;
    let mut result = Err(String::new());
    let mut exit_code = None;
    let mut attempt_no = 0;
    for attempt in 1..=attempts {
        attempt_no = attempt;
        if attempt > 1 {
            let _ = tokio::fs::remove_dir_all(&out_dir).await;
            tokio::fs::create_dir_all(&out_dir)
                .await
                .map_err(|e| io_error("create", &out_dir, e))?;
        }
        let env = step_env(
            ctx,
            &step,
            &params,
            attempt,
            &out_dir,
            &work_dir,
            &inputs_dir,
            inputs,
        );
        let oom_kills_before = super::oom::kills();
        let mut ended = run_process(ctx, &step, env, Arc::clone(&log)).await;
        if matches!(ended, Ended::Signalled(libc::SIGKILL))
            && super::oom::kills() > oom_kills_before
        {
            ended = Ended::OutOfMemory;
        }
        exit_code = ended.exit_code();
        result = match ended {
            Ended::Exited(0) => check_outputs(&step, &out_dir),
            other => Err(other.describe(&step)),
        };
        if result.is_ok() || ctx.state.is_cancelled() {
            break;
        }
        if attempt < attempts {
            let reason = result.as_ref().err().cloned().unwrap_or_default();
            ctx.state.emit(notice(
                Some(name),
                format!("attempt {attempt} of {attempts} failed ({reason}); retrying"),
            ));
            let _ = writeln!(
                log.lock().expect("log lock"),
                "--- ferry: attempt {attempt} failed ({reason}); retrying ---"
            );
        }
    }
    drop(log);

    // The log is saved whatever happened: it is what explains a failure.
    {
        let store = ctx.store.clone();
        let key = layout::step_log(&plan.run_id, name);
        let path = log_path.clone();
        blocking(move || store.put_file(&key, &path).map(|_| ())).await?;
    }

    let status = match &result {
        Ok(()) => StepStatus::Succeeded,
        Err(_) if ctx.state.is_cancelled() => StepStatus::Cancelled,
        Err(_) => StepStatus::Failed,
    };
    let mut outputs = Vec::new();
    if status == StepStatus::Succeeded {
        let store = ctx.store.clone();
        let prefix = layout::step_outputs(&plan.run_id, name);
        let dir = out_dir.clone();
        outputs = blocking(move || upload_outputs(&store, &dir, &prefix)).await?;
        if let Some(key) = &cache_key {
            let entry = CacheEntry {
                source: StepRef {
                    run_id: plan.run_id.clone(),
                    step: name.to_string(),
                },
                outputs: outputs.clone(),
                created_at: Utc::now(),
            };
            let store = ctx.store.clone();
            let key = key.clone();
            blocking(move || cache::record(&store, &key, &entry)).await?;
        }
    }
    ctx.state.update(|r| {
        if let Some(s) = r.steps.get_mut(name) {
            s.attempts = attempt_no;
            s.exit_code = exit_code;
            s.cache_key = cache_key.clone();
            s.outputs = outputs.clone();
        }
    });
    if let Err(reason) = &result {
        ctx.state.emit(notice(Some(name), reason.clone()));
    }
    set_step_status(ctx, name, status, result.err());
    write_record(ctx).await?;
    Ok(Outcome { status, outputs })
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> PluginError {
    PluginError::other(format!("cannot {what} {}: {e}", path.display()))
}

#[allow(clippy::too_many_arguments)]
fn step_env(
    ctx: &Context,
    step: &Step,
    params: &BTreeMap<String, String>,
    attempt: u32,
    out_dir: &Path,
    work_dir: &Path,
    inputs_dir: &Path,
    inputs: &[(String, PathBuf, Vec<OutputFile>)],
) -> Vec<(String, String)> {
    let plan = &ctx.plan;
    let mut env: Vec<(String, String)> = step
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let path = |p: &Path| p.display().to_string();
    env.extend([
        (env_vars::FERRY_RUN_ID.into(), plan.run_id.clone()),
        (env_vars::FERRY_PIPELINE.into(), plan.pipeline.name.clone()),
        (env_vars::FERRY_STEP.into(), step.name.clone()),
        (env_vars::FERRY_ATTEMPT.into(), attempt.to_string()),
        (env_vars::FERRY_OUTPUT_DIR.into(), path(out_dir)),
        (env_vars::FERRY_WORK_DIR.into(), path(work_dir)),
        ("TMPDIR".into(), path(work_dir)),
        (env_vars::FERRY_INPUTS_DIR.into(), path(inputs_dir)),
        (env_vars::FERRY_PROJECT_DIR.into(), path(&plan.project_root)),
    ]);
    for (name, dir, _) in inputs {
        env.push((
            format!("{}{}", env_vars::FERRY_INPUT_PREFIX, env_suffix(name)),
            path(dir),
        ));
    }
    for (name, value) in params {
        env.push((
            format!("{}{}", env_vars::FERRY_PARAM_PREFIX, env_suffix(name)),
            value.clone(),
        ));
    }
    env
}

/// How a step's process ended.
enum Ended {
    Exited(i32),
    Signalled(i32),
    /// SIGKILLed by the kernel's OOM killer at the memory limit of ferry's cgroup.
    OutOfMemory,
    TimedOut(Duration),
    Cancelled,
    SpawnFailed(String),
}

impl Ended {
    fn exit_code(&self) -> Option<i32> {
        match self {
            Ended::Exited(code) => Some(*code),
            Ended::Signalled(signal) => Some(128 + signal),
            Ended::OutOfMemory => Some(128 + libc::SIGKILL),
            _ => None,
        }
    }

    fn describe(&self, step: &Step) -> String {
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

/// Ends a step's process group if ferry itself dies without doing so (SIGKILL, a crash), so that
/// no step outlives the ferry that ran it. A tiny `sh`, outside the group, waits on a pipe only
/// ferry holds: the kernel closes it when ferry dies, and end of file without a `done` line
/// means ferry is gone.
struct Watchdog {
    stdin: tokio::process::ChildStdin,
    process: tokio::process::Child,
}

impl Watchdog {
    // No `--` before the group: dash's `kill` does not take it.
    const SCRIPT: &str = r#"read -r line; [ "$line" = done ] || kill -KILL "-$1""#;

    fn start(pgid: i32) -> Option<Watchdog> {
        let mut process = Command::new("sh")
            .args(["-c", Self::SCRIPT, "ferry-step-watchdog", &pgid.to_string()])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Not in the step's group (it outlives it) nor in ferry's (a Ctrl-C is for ferry).
            .process_group(0)
            .spawn()
            .map_err(|e| tracing::debug!("cannot start a step watchdog: {e}"))
            .ok()?;
        let stdin = process.stdin.take()?;
        Some(Watchdog { stdin, process })
    }

    /// The step's group is stopped: the watchdog may go.
    async fn release(mut self) {
        use tokio::io::AsyncWriteExt as _;
        let _ = self.stdin.write_all(b"done\n").await;
        drop(self.stdin);
        let _ = self.process.wait().await;
    }
}

async fn run_process(
    ctx: &Arc<Context>,
    step: &Step,
    env: Vec<(String, String)>,
    log: Arc<Mutex<std::fs::File>>,
) -> Ended {
    let mut command = match &step.action {
        Action::Shell(script) => {
            let mut c = Command::new("sh");
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
    let watchdog = pgid.and_then(Watchdog::start);
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
    }
    if let Some(watchdog) = watchdog {
        watchdog.release().await;
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

fn signal_group(pgid: i32, signal: i32) {
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

fn check_outputs(step: &Step, out_dir: &Path) -> Result<(), String> {
    let missing: Vec<&str> = step
        .outputs
        .iter()
        .filter(|o| !out_dir.join(o).exists())
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "exited 0 but did not write its declared output {} to $FERRY_OUTPUT_DIR",
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Upload every file under `dir` to `prefix`, returning what was stored (sorted by path).
fn upload_outputs(store: &Store, dir: &Path, prefix: &str) -> Result<Vec<OutputFile>, PluginError> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files).map_err(|e| io_error("read outputs in", dir, e))?;
    files.sort();
    let mut outputs = Vec::new();
    for relative in files {
        let path = dir.join(&relative);
        let mut hasher = blake3::Hasher::new();
        let size = std::io::copy(
            &mut std::fs::File::open(&path).map_err(|e| io_error("read", &path, e))?,
            &mut hasher,
        )
        .map_err(|e| io_error("read", &path, e))?;
        store.put_file(&format!("{prefix}{relative}"), &path)?;
        outputs.push(OutputFile {
            path: relative,
            size,
            digest: hasher.finalize().to_hex().to_string(),
            executable: is_executable(&path),
        });
    }
    Ok(outputs)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// Files under `dir`, relative, `/`-separated. A symbolic link to a file counts as that file
/// (its content is stored); links to directories are refused, as they could loop or escape.
fn collect_files(root: &Path, dir: &Path, files: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let mut kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_symlink() {
            kind = std::fs::metadata(&path)?.file_type();
            if kind.is_dir() {
                return Err(std::io::Error::other(format!(
                    "{} is a symbolic link to a directory; outputs must be files or real directories",
                    path.display()
                )));
            }
        }
        if kind.is_dir() {
            collect_files(root, &path, files)?;
        } else if kind.is_file() {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            files.push(parts.join("/"));
        }
    }
    Ok(())
}

/// A readable description of what `submit` would do, for `ferry render`.
pub(super) fn render(plan: &RunPlan, settings: &LocalSettings) -> String {
    let mut out = format!(
        "# local orchestrator: {} steps, at most {} at once, in {}\n",
        plan.pipeline.steps.len(),
        settings.parallelism,
        plan.project_root.join(&plan.working_dir).display()
    );
    for step in plan.pipeline.topological_order() {
        let command = match &step.action {
            Action::Shell(script) => format!("sh -c {script:?}"),
            Action::Command(argv) => format!("{argv:?}"),
        };
        out.push_str(&format!("{}:\n  command: {command}\n", step.name));
        let deps: Vec<&str> = plan.pipeline.dependencies(step).collect();
        if !deps.is_empty() {
            out.push_str(&format!("  after: {}\n", deps.join(", ")));
        }
        if !step.outputs.is_empty() {
            out.push_str(&format!("  outputs: {}\n", step.outputs.join(", ")));
        }
    }
    out
}

pub(super) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    let result = unsafe { libc::kill(pid as i32, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
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
