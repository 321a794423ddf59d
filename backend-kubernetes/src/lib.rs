//! The `kubernetes` orchestrator plugin: runs pipelines as Kubernetes Jobs whose pods run
//! `ferry agent`, with the code package and every result in the stack's artifact store.
//!
//! Layout: `settings` (the stack settings), `names` (object names and label rules),
//! `manifest` (the objects of a run, pure), `client` (connecting), `launch` (creating the
//! objects idempotently), `follow` (watching a run to its end), and this file, which ties them
//! to ferry's orchestrator interface.

pub mod client;
pub mod follow;
pub mod launch;
pub mod manifest;
#[cfg(test)]
mod mock;
pub mod names;
pub mod settings;

use std::sync::OnceLock;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, ListParams};
use orchestrator_core::abi::{ErrorKind, PluginError};
use orchestrator_core::run::{Event, RunPlan, RunRecord, RunStatus, StepStatus};
use orchestrator_core::sdk::{OrchestratorPlugin, PluginConfig, PluginInfo, StoreConnection};
use orchestrator_core::store::{Store, layout};

use client::Connection;
use manifest::RUN_LABEL;
use settings::{Mode, Settings};

/// How long `cancel` waits for the run's Jobs to be gone.
const CANCEL_WAIT: Duration = Duration::from_secs(60);

pub struct KubernetesOrchestrator {
    settings: Settings,
    store: Store,
    store_connection: Option<StoreConnection>,
    runtime: tokio::runtime::Runtime,
    /// Connected on first use, so that `ferry render` needs no cluster.
    connection: OnceLock<Connection>,
}

impl KubernetesOrchestrator {
    fn connection(&self) -> Result<&Connection, PluginError> {
        if let Some(connection) = self.connection.get() {
            return Ok(connection);
        }
        let connection = self.runtime.block_on(client::connect(&self.settings))?;
        Ok(self.connection.get_or_init(|| connection))
    }

    fn objects(
        &self,
        plan: &RunPlan,
        namespace: &str,
    ) -> Result<manifest::RunObjects, PluginError> {
        if plan.code.package_key.is_none() {
            return Err(PluginError::invalid_input(
                "kubernetes: the run plan names no code package; ferry uploads one before submitting",
            ));
        }
        let store = self.store_connection.as_ref().ok_or_else(|| {
            PluginError::invalid_input(
                "kubernetes: this ferry did not pass the stack's store settings to the orchestrator; upgrade ferry",
            )
        })?;
        Ok(manifest::run_objects(
            &self.settings,
            plan,
            namespace,
            store,
        ))
    }

    fn stored_record(&self, run_id: &str) -> Result<RunRecord, PluginError> {
        self.store
            .get_json(&layout::run_record(run_id))?
            .ok_or_else(|| {
                PluginError::not_found(format!("no run `{run_id}` in {}", self.store.url()))
            })
    }

    fn run_jobs(&self, connection: &Connection, run_id: &str) -> Result<Vec<Job>, PluginError> {
        let jobs: Api<Job> = Api::namespaced(connection.client.clone(), &connection.namespace);
        let selector = format!("{RUN_LABEL}={run_id}");
        let params = ListParams::default().labels(&selector);
        self.runtime
            .block_on(launch::retry("listing the run's Jobs", || {
                jobs.list(&params)
            }))
            .map(|list| list.items)
            .map_err(|e| launch::api_error("listing the run's Jobs", e))
    }
}

impl OrchestratorPlugin for KubernetesOrchestrator {
    fn info() -> PluginInfo {
        PluginInfo {
            name: settings::NAME,
            version: env!("CARGO_PKG_VERSION"),
            description: "runs pipelines as Kubernetes Jobs; code and results go through the artifact store",
            config_keys: settings::KEYS,
        }
    }

    fn validate(config: &PluginConfig) -> Result<(), PluginError> {
        Settings::from_config(config).map(|_| ())
    }

    fn new(config: PluginConfig, store: Store) -> Result<Self, PluginError> {
        let settings = Settings::from_config(&config)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferry-kubernetes")
            .enable_all()
            .build()
            .map_err(|e| PluginError::other(format!("kubernetes: cannot start a runtime: {e}")))?;
        Ok(Self {
            settings,
            store,
            store_connection: config.store,
            runtime,
            connection: OnceLock::new(),
        })
    }

    fn describe(&self) -> String {
        let mode = match self.settings.mode {
            Mode::Pipeline => "one Job per run",
            Mode::Steps => "one Job per step",
        };
        format!(
            "Kubernetes Jobs ({mode}) in namespace {}",
            client::namespace_offline(&self.settings)
        )
    }

    fn wants_code_package(&self) -> bool {
        true
    }

    fn render(&self, plan: &RunPlan) -> Result<String, PluginError> {
        let namespace = client::namespace_offline(&self.settings);
        let mut objects = self.objects(plan, &namespace)?;
        // What `run` would create, except the store's credentials: render output gets pasted
        // into tickets and chats.
        if let Some(secret) = objects.secret.as_mut()
            && let Some(data) = secret.string_data.as_mut()
        {
            for value in data.values_mut() {
                *value = "<the stack's store settings, credentials included; not shown>".into();
            }
        }
        Ok(objects.to_yaml())
    }

    fn submit(&self, plan: RunPlan) -> Result<String, PluginError> {
        if self.settings.mode == Mode::Steps {
            return Err(PluginError::unsupported(
                "kubernetes: mode = \"steps\" is not available yet; use mode = \"pipeline\" (one Job runs the whole pipeline)",
            ));
        }
        let connection = self.connection()?;
        let objects = self.objects(&plan, &connection.namespace)?;
        // The record exists before anything runs, so that the run is listed (and can be
        // cancelled) even if its pod never starts.
        let mut record = RunRecord::new(&plan, settings::NAME);
        record.host = Some(format!(
            "{} namespace {}",
            connection.source, connection.namespace
        ));
        self.store
            .put_json(&layout::run_record(&plan.run_id), &record)?;
        if let Err(error) =
            self.runtime
                .block_on(launch::launch(connection, &objects, &plan.run_id))
        {
            record.status = RunStatus::Failed;
            record.error = Some(error.message().to_string());
            record.finished_at = Some(Utc::now());
            self.store
                .put_json(&layout::run_record(&plan.run_id), &record)?;
            return Err(error);
        }
        Ok(plan.run_id)
    }

    fn status(&self, run_id: &str) -> Result<RunRecord, PluginError> {
        let mut record = self.stored_record(run_id)?;
        if record.status.is_finished() {
            return Ok(record);
        }
        // Not finished by the record: ask the cluster, so that a run whose Job is gone is not
        // shown as running forever.
        if let Ok(connection) = self.connection()
            && let Ok(jobs) = self.run_jobs(connection, run_id)
            && jobs.is_empty()
            && Utc::now() - record.created_at > chrono::Duration::seconds(60)
        {
            record.status = RunStatus::Failed;
            record.error = Some(
                "lost: the run's Job no longer exists and its agent recorded no result".into(),
            );
        }
        Ok(record)
    }

    fn stream_events(
        &self,
        run_id: &str,
        step: Option<&str>,
        follow: bool,
        sink: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(), PluginError> {
        let record = self.stored_record(run_id)?;
        let options = follow::FollowOptions {
            run_id,
            step,
            follow,
            pending_timeout: self.settings.pending_timeout,
        };
        let outcome = match (record.status.is_finished(), self.connection()) {
            (false, Ok(connection)) => self
                .runtime
                .block_on(follow::follow(connection, &options, sink))?,
            (false, Err(error)) if follow => return Err(error),
            _ => follow::Outcome::default(),
        };
        if !outcome.found {
            // Finished, or its Jobs are gone: the store has the logs.
            return orchestrator_core::local::stream_stored_run(
                &self.store,
                run_id,
                step,
                follow,
                sink,
                || self.stored_record(run_id),
            );
        }
        if follow {
            let record = follow::record_failure(&self.store, run_id, &outcome)?;
            if let Some(record) = record
                && !outcome.saw_run_status
            {
                sink(Event::RunStatus {
                    status: record.status,
                    time: record.finished_at.unwrap_or_else(Utc::now),
                });
            }
        }
        Ok(())
    }

    fn cancel(&self, run_id: &str) -> Result<(), PluginError> {
        let mut record = self.stored_record(run_id)?;
        let connection = self.connection()?;
        let jobs: Api<Job> = Api::namespaced(connection.client.clone(), &connection.namespace);
        for job in self.run_jobs(connection, run_id)? {
            let name = job.metadata.name.unwrap_or_default();
            let what = format!("deleting Job {name}");
            let params = DeleteParams::background();
            match self
                .runtime
                .block_on(launch::retry(&what, || jobs.delete(&name, &params)))
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(launch::api_error(&what, error)),
            }
        }
        let deadline = std::time::Instant::now() + CANCEL_WAIT;
        while !self.run_jobs(connection, run_id)?.is_empty() {
            if std::time::Instant::now() > deadline {
                return Err(PluginError::new(
                    ErrorKind::TIMEOUT,
                    format!(
                        "kubernetes: the Jobs of run {run_id} were deleted but are still there after {}s; check `kubectl get jobs -l {RUN_LABEL}={run_id}`",
                        CANCEL_WAIT.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The agent may have recorded the end in the meantime.
        record = self.stored_record(run_id).unwrap_or(record);
        if !record.status.is_finished() {
            let now = Utc::now();
            record.status = RunStatus::Cancelled;
            record.finished_at = Some(now);
            for step in record
                .steps
                .values_mut()
                .filter(|s| !s.status.is_finished())
            {
                step.status = StepStatus::Cancelled;
                step.finished_at = Some(now);
            }
            self.store.put_json(&layout::run_record(run_id), &record)?;
        }
        Ok(())
    }
}

orchestrator_core::export_orchestrator_plugin!(KubernetesOrchestrator);
