//! The built-in `local` orchestrator: runs a pipeline's steps as processes on this machine.
//!
//! Steps run in DAG order with a parallelism cap. Each step runs in the pipeline's directory
//! with its own output and scratch directories and the documented `FERRY_*` environment, in its
//! own process group so that a timeout or a cancel ends everything it started. Outputs, logs
//! and the run record go to the stack's artifact store.
//!
//! `scheduler` runs a plan as a whole, `step` one step from its slot to its result, `process`
//! that step's process, and `liveness` keeps a running record's heartbeat and judges other
//! ferry processes' runs; `events` holds a live run's shared state, `cache` the step cache.

mod budget;
mod cache;
mod events;
mod liveness;
mod log_shipper;
mod oom;
mod process;
mod scheduler;
mod settings;
mod step;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use orchestrator_core::PluginError;
use orchestrator_core::pipeline::Action;
use orchestrator_core::run::RunRecords;
use orchestrator_core::run::{Event, RunPlan, RunRecord, RunStatus, is_valid_run_id};
use orchestrator_core::sdk::{OrchestratorPlugin, PluginConfig, PluginInfo};
use orchestrator_core::store::Store;

use events::RunState;
pub use settings::LocalSettings;
use step::StepDirs;

/// The `local` orchestrator.
pub struct LocalOrchestrator {
    store: Store,
    settings: LocalSettings,
    /// Always `Some` until dropped; see the `Drop` impl.
    runtime: Option<tokio::runtime::Runtime>,
    runs: Mutex<HashMap<String, Arc<RunState>>>,
}

impl OrchestratorPlugin for LocalOrchestrator {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "local",
            version: env!("CARGO_PKG_VERSION"),
            description: "runs steps as processes on this machine",
            config_keys: settings::KEYS,
        }
    }

    fn validate(config: &PluginConfig) -> Result<(), PluginError> {
        config.check_keys(&Self::info())?;
        LocalSettings::from_config(config).map(|_| ())
    }

    fn new(config: PluginConfig, store: Store) -> Result<Self, PluginError> {
        let settings = LocalSettings::from_config(&config)?;
        let runtime = orchestrator_core::sdk::plugin_runtime("local")?;
        Ok(Self {
            store,
            settings,
            runtime: Some(runtime),
            runs: Mutex::new(HashMap::new()),
        })
    }

    fn describe(&self) -> String {
        format!(
            "local processes (parallelism {})",
            self.settings.parallelism
        )
    }

    /// A readable description of what `submit` would do, for `ferry render`.
    fn render(&self, plan: &RunPlan) -> Result<String, PluginError> {
        let mut out = format!(
            "# local orchestrator: {} steps, at most {} at once, in {}\n",
            plan.pipeline.steps.len(),
            self.settings.parallelism,
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
        Ok(out)
    }

    fn submit(&self, plan: RunPlan) -> Result<String, PluginError> {
        if !is_valid_run_id(&plan.run_id) {
            return Err(PluginError::invalid_input(format!(
                "invalid run id `{}`",
                plan.run_id
            )));
        }
        // Plans arrive as JSON across the plugin boundary: check them as if parsed from YAML,
        // since step names become paths and a bad graph would never finish.
        plan.pipeline.validate().map_err(|e| {
            PluginError::invalid_input(format!("invalid pipeline in run plan: {e}"))
        })?;
        if let Some(step) = &plan.only_step
            && plan.pipeline.step(step).is_none()
        {
            return Err(PluginError::invalid_input(format!(
                "the run plan asks for step `{step}` alone, but pipeline `{}` has no such step",
                plan.pipeline.name
            )));
        }
        let mut record = RunRecord::new(&plan, "local");
        // A run submitted elsewhere and run here (`ferry agent` in a pod) stays the
        // submitter's: its name and where it placed the run are what readers judge it by.
        if plan.only_step.is_none()
            && let Ok(Some(submitted)) = RunRecords::new(self.store.clone()).get(&plan.run_id)
        {
            record.orchestrator = submitted.orchestrator;
            record.placement = submitted.placement;
            record.schedule = submitted.schedule.or(record.schedule);
            record.created_at = submitted.created_at;
        }
        record.host = Some(liveness::host_name());
        record.pid = Some(std::process::id());
        let state = Arc::new(RunState::new(record, plan.only_step.clone()));
        // The first record is written before `submit` returns, so the run is listed at once.
        state.write_record(&self.store)?;
        let run_id = plan.run_id.clone();
        self.runs
            .lock()
            .expect("runs lock")
            .insert(run_id.clone(), Arc::clone(&state));
        let store = self.store.clone();
        let settings = self.settings.clone();
        self.runtime
            .as_ref()
            .expect("runtime lives until drop")
            .spawn(scheduler::execute(plan, state, store, settings));
        Ok(run_id)
    }

    fn status(&self, run_id: &str) -> Result<RunRecord, PluginError> {
        if let Some(state) = self.live(run_id) {
            return Ok(state.record());
        }
        self.stored_record(run_id)
    }

    fn stream_events(
        &self,
        run_id: &str,
        step: Option<&str>,
        follow: bool,
        sink: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(), PluginError> {
        if let Some(state) = self.live(run_id) {
            state.stream(step, follow, sink);
            return Ok(());
        }
        let live_log = |record: &RunRecord, step: &str| {
            (record.host.as_deref() == Some(liveness::host_name().as_str()))
                .then(|| StepDirs::new(&self.settings.work_dir.join(run_id), step).log)
        };
        orchestrator_core::run::replay::stream(
            &self.store,
            run_id,
            step,
            follow,
            sink,
            || self.stored_record(run_id),
            live_log,
        )
    }

    fn cancel(&self, run_id: &str) -> Result<(), PluginError> {
        if let Some(state) = self.live(run_id) {
            state.cancel();
            return Ok(());
        }
        let record = self.stored_record(run_id)?;
        if record.status.is_finished() {
            return Err(PluginError::invalid_input(format!(
                "run `{run_id}` already ended ({})",
                record.status
            )));
        }
        liveness::cancel_foreign(&record)
    }
}

impl Drop for LocalOrchestrator {
    fn drop(&mut self) {
        // Never block in drop: the host may drop the orchestrator on an async thread.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl LocalOrchestrator {
    fn live(&self, run_id: &str) -> Option<Arc<RunState>> {
        self.runs.lock().expect("runs lock").get(run_id).cloned()
    }

    /// A record from the store; a run whose orchestrator process is gone is reported as failed
    /// ("interrupted") instead of running forever.
    fn stored_record(&self, run_id: &str) -> Result<RunRecord, PluginError> {
        if !is_valid_run_id(run_id) {
            return Err(PluginError::invalid_input(format!(
                "`{run_id}` is not a run id (see `ferry runs list`)"
            )));
        }
        let mut record: RunRecord = RunRecords::new(self.store.clone())
            .get(run_id)?
            .ok_or_else(|| {
                PluginError::not_found(format!(
                    "no run `{run_id}` in {} (see `ferry runs list`)",
                    self.store.url()
                ))
            })?;
        if !record.status.is_finished() {
            if liveness::orchestrator_is_gone(&record) {
                record.status = RunStatus::Failed;
                record.error = Some(format!(
                    "interrupted: the ferry process (pid {}) that ran it is gone",
                    record.pid.unwrap_or_default()
                ));
            } else if let Some(last) = record.heartbeat_at
                && chrono::Utc::now() - last > liveness::stale_after()
            {
                // Another machine's ferry (or a reused pid): silence means it is gone.
                record.status = RunStatus::Failed;
                record.error = Some(format!(
                    "interrupted: no heartbeat from ferry on {} since {last}",
                    record.host.as_deref().unwrap_or("an unknown host")
                ));
            }
        }
        Ok(record)
    }
}
