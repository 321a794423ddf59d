//! Running a plan as a whole: the DAG loop, cancel on signals, and the run's record and notices.
//!
//! This is the one place that sees every step at once: it decides what starts when (through
//! the pure `Frontier`), owns the run's `Context` that step tasks share, and leaves a finished
//! record behind whatever happens. What one step does is `step`'s business; how its process is
//! run, `process`'s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::LocalSettings;
use super::budget::Budget;
use super::cache::{self, CacheEntry};
use super::events::RunState;
use super::liveness;
use super::process::signal_group;
use super::step::{Outcome, StepDirs, StepInputs, io_error, run_step};
use orchestrator_core::PluginError;
use orchestrator_core::pipeline::Step;
use orchestrator_core::run::RunRecords;
use orchestrator_core::run::{
    Decision, Event, Frontier, OutputFile, RunPlan, RunStatus, StepStatus,
};
use orchestrator_core::sdk::blocking;
use orchestrator_core::store::{Store, layout};

/// Everything the step tasks share.
pub(super) struct Context {
    pub(super) plan: RunPlan,
    pub(super) state: Arc<RunState>,
    pub(super) store: Store,
    pub(super) settings: LocalSettings,
    pub(super) run_dir: PathBuf,
    pub(super) slots: Semaphore,
    pub(super) budget: Budget,
    /// This pipeline's newest earlier runs, read once on the first cache miss to explain it.
    pub(super) earlier_runs: tokio::sync::OnceCell<Vec<orchestrator_core::run::RunRecord>>,
    /// Kills the steps' process groups if this ferry dies (`process::Watchdog`).
    pub(super) watchdog: super::process::Watchdog,
    /// Record writes nothing waits for ([`write_record_soon`]), awaited before the last one.
    pub(super) background_writes: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
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
        budget: Budget::new(settings.cpu_budget, settings.memory_budget),
        earlier_runs: tokio::sync::OnceCell::new(),
        watchdog: super::process::Watchdog::new(),
        background_writes: std::sync::Mutex::new(Vec::new()),
        plan,
        state,
        store,
        settings,
        run_dir,
    });
    let signals = tokio::spawn(cancel_on_signals(Arc::clone(&ctx.state)));
    let heartbeat = tokio::spawn(liveness::heartbeat(Arc::clone(&ctx)));
    let error = schedule(&ctx).await.err();
    ctx.watchdog.release().await;
    heartbeat.abort();
    signals.abort();

    let pending = std::mem::take(
        &mut *ctx
            .background_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for write in pending {
        let _ = write.await;
    }
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

pub(super) fn notice(step: Option<&str>, text: String) -> Event {
    Event::Notice {
        step: step.map(str::to_string),
        text,
        time: Utc::now(),
    }
}

pub(super) async fn write_record(ctx: &Arc<Context>) -> Result<(), PluginError> {
    let ctx = Arc::clone(ctx);
    tokio::task::spawn_blocking(move || ctx.state.write_record(&ctx.store))
        .await
        .map_err(|e| PluginError::other(format!("record writer failed: {e}")))?
}

/// Save the record on the blocking pool without waiting for it: for a change nothing waits
/// on, such as a step starting, so that its process starts meanwhile. Each write takes the
/// newest state when it runs (`RunState::write_record` snapshots under its lock), so a late
/// one never puts an older state back. A failure is a notice; the step's result, written
/// with [`write_record`], still fails the step if the store stays unwritable.
pub(super) fn write_record_soon(ctx: &Arc<Context>) {
    let writer = Arc::clone(ctx);
    let write = tokio::task::spawn_blocking(move || {
        if let Err(e) = writer.state.write_record(&writer.store) {
            writer
                .state
                .emit(notice(None, format!("could not save the run record: {e}")));
        }
    });
    let mut pending = ctx
        .background_writes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    pending.retain(|w| !w.is_finished());
    pending.push(write);
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
        // One step in a remote backend's pod: when its agent began is part of the step's time.
        if let Some(step) = ctx.plan.only_step.as_ref().and_then(|s| r.steps.get_mut(s)) {
            step.timings.agent_started_at = crate::lifecycle::agent::started_at();
        }
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
    // Parallelism is the step slots' business (`run_step`), not the frontier's.
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
            let inputs = StepInputs::of(step, &ctx.run_dir, &outputs);
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
            let out = StepDirs::new(&ctx.run_dir, dep).out;
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

pub(super) fn set_step_status(
    ctx: &Context,
    step: &str,
    status: StepStatus,
    error: Option<String>,
) {
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
