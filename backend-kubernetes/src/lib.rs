//! The `kubernetes` orchestrator plugin: runs pipelines as Kubernetes Jobs whose pods run
//! `ferry agent`, with the code package and every result in the stack's artifact store.
//!
//! Layout: `settings` (the stack settings), `names` (object names and label rules),
//! `manifest` (the objects of a run, pure), `client` (connecting), `launch` (creating the
//! objects idempotently), `follow` (watching a run to its end), `coordinator` (the in-cluster
//! side of `steps` mode: one Job per step), and this file, which ties them to ferry's
//! orchestrator interface.

pub mod client;
pub mod coordinator;
pub mod follow;
pub mod launch;
pub mod manifest;
#[cfg(test)]
mod mock;
pub mod names;
pub mod placement;
pub mod profile;
pub mod schedule;
pub mod settings;
pub mod volumes;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use orchestrator_core::run::RunRecords;
use orchestrator_core::run::{Event, RunPlan, RunRecord, RunStatus, StepStatus};
use orchestrator_core::schedule::{ScheduleReply, ScheduleRequest, ScheduleSpec};
use orchestrator_core::sdk::{OrchestratorPlugin, PluginConfig, PluginInfo, StoreConnection};
use orchestrator_core::store::Store;
use orchestrator_core::{ErrorKind, PluginError};

use client::Connection;
use manifest::RUN_LABEL;
use placement::Placement;
use settings::{Mode, Role, Settings};

/// How long `cancel` waits for the run's Jobs to be gone.
const CANCEL_WAIT: Duration = Duration::from_secs(60);

pub struct KubernetesOrchestrator {
    settings: Settings,
    store: Store,
    store_connection: Option<StoreConnection>,
    runtime: tokio::runtime::Runtime,
    /// Connected on first use, so that `ferry render` needs no cluster.
    connection: OnceLock<Connection>,
    /// `role = "coordinator"`: the plan `submit` received, run by `stream_events`.
    coordinating: Mutex<Option<RunPlan>>,
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
        if self.settings.mode == Mode::Pipeline
            && let Some(step) = plan
                .pipeline
                .steps
                .iter()
                .find(|s| s.profile.is_some() || s.kubernetes.is_some())
        {
            let what = match &step.profile {
                Some(profile) => format!("names pod profile `{profile}`"),
                None => "has a `kubernetes:` block".to_string(),
            };
            return Err(PluginError::invalid_input(format!(
                "kubernetes: step `{}` {what}, but mode = \"pipeline\" runs every step in one pod; set mode = \"steps\" to give each step a pod of its own",
                step.name
            )));
        }
        for step in &plan.pipeline.steps {
            profile::for_step(&self.settings, step)?;
        }
        if self.settings.mode == Mode::Pipeline
            && let Some(step) = plan.pipeline.steps.iter().find(|s| s.image.is_some())
        {
            return Err(PluginError::invalid_input(format!(
                "kubernetes: step `{}` sets its own `image`, but mode = \"pipeline\" runs every step in one container (image {}); set mode = \"steps\" or remove the step's image",
                step.name, self.settings.image
            )));
        }
        let store = self.store_connection.as_ref().ok_or_else(|| {
            PluginError::invalid_input(
                "kubernetes: this ferry did not pass the stack's store settings to the orchestrator; upgrade ferry",
            )
        })?;
        // With workload identity the store's settings go in a ConfigMap: no credentials there.
        if self.settings.store_credentials == settings::StoreCredentials::WorkloadIdentity
            && let Some(key) = store
                .settings
                .keys()
                .find(|k| orchestrator_core::store::settings::is_secret_key(k))
        {
            return Err(PluginError::invalid_input(format!(
                "kubernetes: store_credentials = \"workload-identity\" ships the store's settings in a ConfigMap, but they hold `{key}`; remove it (the pods' identity must reach the store) or use store_credentials = \"secret\""
            )));
        }
        Ok(manifest::run_objects(
            &self.settings,
            plan,
            namespace,
            store,
        ))
    }

    /// The cluster and namespace a recorded run lives in, and its pending timeout: from the
    /// record's placement, so that a reader's own settings never decide (see `placement`);
    /// records from before placements were kept are judged with this stack's settings.
    fn reach(&self, record: &RunRecord) -> Result<(Connection, Duration), PluginError> {
        let Some(placement) = Placement::from_record(record) else {
            return Ok((self.connection()?.clone(), self.settings.pending_timeout));
        };
        let connection = match self.connection() {
            Ok(own)
                if own.namespace == placement.namespace
                    && placement.check(&record.run_id, own).is_ok() =>
            {
                own.clone()
            }
            _ => self
                .runtime
                .block_on(client::connect(&placement.settings_for(&self.settings)))?,
        };
        placement.check(&record.run_id, &connection)?;
        Ok((connection, placement.pending_timeout()))
    }

    /// A schedule's objects, after checking its spec and its template plan as `submit` would
    /// check a run's: a schedule that could never run is refused before anything is created.
    fn schedule_objects(
        &self,
        spec: &ScheduleSpec,
        mut plan: RunPlan,
        namespace: &str,
    ) -> Result<schedule::ScheduleObjects, PluginError> {
        schedule::check_spec(spec)?;
        if !plan.is_template() {
            return Err(PluginError::invalid_input(
                "kubernetes: a schedule's plan must be a template (no run id); each firing mints one",
            ));
        }
        plan.schedule = Some(spec.name.clone());
        let mut probe = plan.clone();
        probe.mint_run_id(None);
        self.objects(&probe, namespace)?;
        let store = self.store_connection.as_ref().ok_or_else(|| {
            PluginError::invalid_input("kubernetes: no store settings to hand the schedule's runs")
        })?;
        Ok(schedule::objects(
            &self.settings,
            spec,
            &plan,
            namespace,
            store,
        ))
    }

    fn schedule_reply(
        &self,
        cron_job: &k8s_openapi::api::batch::v1::CronJob,
        connection: &Connection,
    ) -> ScheduleReply {
        ScheduleReply::Schedule {
            schedule: Box::new(schedule::info(cron_job, &connection.namespace)),
        }
    }

    fn set_suspended(&self, name: &str, suspend: bool) -> Result<ScheduleReply, PluginError> {
        let connection = self.connection()?;
        let cron_job = self
            .runtime
            .block_on(schedule::get(connection, &self.settings, name))?;
        let object = cron_job.metadata.name.clone().unwrap_or_default();
        let changed = self
            .runtime
            .block_on(schedule::set_suspended(connection, &object, suspend))?;
        Ok(self.schedule_reply(&changed, connection))
    }

    fn stored_record(&self, run_id: &str) -> Result<RunRecord, PluginError> {
        RunRecords::new(self.store.clone()).require(run_id)
    }

    fn run_jobs(&self, connection: &Connection, run_id: &str) -> Result<Vec<Job>, PluginError> {
        self.list_of_run(connection, run_id, "Jobs")
    }

    fn run_pods(&self, connection: &Connection, run_id: &str) -> Result<Vec<Pod>, PluginError> {
        self.list_of_run(connection, run_id, "pods")
    }

    fn list_of_run<K>(
        &self,
        connection: &Connection,
        run_id: &str,
        what: &str,
    ) -> Result<Vec<K>, PluginError>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(connection.client.clone(), &connection.namespace);
        let params = ListParams::default().labels(&manifest::run_selector(run_id));
        let what = format!("listing the run's {what}");
        self.runtime
            .block_on(launch::retry(&what, || api.list(&params)))
            .map(|list| list.items)
            .map_err(|e| launch::api_error(&what, e))
    }
}

/// A run the record calls unfinished while the cluster cannot be asked: shown (not stored) as
/// unknown, with when it was last heard of and what to do, rather than as running.
fn lost_contact(mut record: RunRecord, error: &PluginError) -> RunRecord {
    let last_news = record
        .heartbeat_at
        .or(record.started_at)
        .unwrap_or(record.created_at);
    record.error = Some(format!(
        "unknown: lost contact with the cluster, last news of the run at {}; {} (fix the kubeconfig, context or network and run `ferry runs show {}` again; `ferry runs cancel {}` once the cluster answers)",
        last_news.format("%Y-%m-%d %H:%M:%S UTC"),
        error.message(),
        record.run_id,
        record.run_id
    ));
    record
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
        let runtime = orchestrator_core::sdk::plugin_runtime(settings::NAME)?;
        Ok(Self {
            settings,
            store,
            store_connection: config.store,
            runtime,
            connection: OnceLock::new(),
            coordinating: Mutex::new(None),
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
        // What `run` would create, except the store's credentials.
        if let Some(secret) = objects.secret.as_mut() {
            manifest::mask(secret);
        }
        Ok(objects.to_yaml())
    }

    fn submit(&self, plan: RunPlan) -> Result<String, PluginError> {
        if self.settings.role == Role::Coordinator {
            // Inside the run's Job: `stream_events` runs the steps and relays their events.
            let run_id = plan.run_id.clone();
            *self.coordinating.lock().expect("coordinating lock") = Some(plan);
            return Ok(run_id);
        }
        if plan.is_template() {
            return Err(PluginError::invalid_input(
                "kubernetes: the run plan has no run id (a schedule's template is started by `ferry agent run`, which mints one)",
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
        Placement::of(&self.settings, connection).store_in(&mut record);
        RunRecords::new(self.store.clone()).put(&record)?;
        if let Err(error) =
            self.runtime
                .block_on(launch::launch(connection, &objects, &plan.run_id))
        {
            record.status = RunStatus::Failed;
            record.error = Some(error.message().to_string());
            record.finished_at = Some(Utc::now());
            RunRecords::new(self.store.clone()).put(&record)?;
            return Err(error);
        }
        Ok(plan.run_id)
    }

    fn status(&self, run_id: &str) -> Result<RunRecord, PluginError> {
        let record = self.stored_record(run_id)?;
        if record.status.is_finished() {
            return Ok(record);
        }
        // Not finished by the record: ask the cluster, so that a run nobody follows is not
        // shown as running forever when its pod can never finish or its Job is gone.
        let (connection, pending_timeout) = match self.reach(&record) {
            Ok(reached) => reached,
            Err(error) => return Ok(lost_contact(record, &error)),
        };
        match self.runtime.block_on(follow::assess(
            &connection,
            &manifest::run_job_selector(run_id),
            pending_timeout,
        )) {
            Ok(outcome) if outcome.failure.is_some() => {
                Ok(follow::record_failure(&self.store, run_id, &outcome)?.unwrap_or(record))
            }
            Ok(outcome) => {
                // A minute of grace: the record is written just before the Job is created.
                if !outcome.found && Utc::now() - record.created_at > chrono::Duration::seconds(60)
                {
                    let outcome = follow::Outcome {
                        failure: Some(
                            "lost: the run's Job no longer exists and its agent recorded no result"
                                .into(),
                        ),
                        ..follow::Outcome::default()
                    };
                    return Ok(
                        follow::record_failure(&self.store, run_id, &outcome)?.unwrap_or(record)
                    );
                }
                Ok(record)
            }
            Err(error) => Ok(lost_contact(record, &error)),
        }
    }

    fn stream_events(
        &self,
        run_id: &str,
        step: Option<&str>,
        follow: bool,
        sink: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(), PluginError> {
        let coordinating = self
            .coordinating
            .lock()
            .expect("coordinating lock")
            .take_if(|plan| plan.run_id == run_id);
        if let Some(plan) = coordinating {
            let connection = self.connection()?;
            self.runtime.block_on(coordinator::coordinate(
                connection,
                &self.settings,
                &plan,
                &self.store,
                sink,
            ))?;
            return Ok(());
        }
        let record = self.stored_record(run_id)?;
        let reached = self.reach(&record);
        let options = follow::FollowOptions {
            selector: manifest::run_job_selector(run_id),
            step,
            follow,
            pending_timeout: reached
                .as_ref()
                .map_or(self.settings.pending_timeout, |(_, timeout)| *timeout),
            pod_retries: self.settings.backoff_limit,
        };
        let outcome = match (record.status.is_finished(), reached) {
            (false, Ok((connection, _))) => {
                self.runtime
                    .block_on(follow::follow(&connection, &options, sink))?
            }
            (false, Err(error)) if follow => return Err(error),
            _ => follow::Outcome::default(),
        };
        if !outcome.found {
            // Finished, or its Jobs are gone: the store has the logs; `status` notices a run
            // that will never finish.
            return orchestrator_core::run::replay::stream(
                &self.store,
                run_id,
                step,
                follow,
                sink,
                || self.status(run_id),
                |_, _| None,
            );
        }
        if !follow || !outcome.ended {
            // Only shown what exists, or the reader stopped: the run goes on.
            return Ok(());
        }
        if outcome.jobs_gone && outcome.failure.is_none() {
            // Deleted under us: a cancel records the run itself once the pods are gone.
            let deadline = std::time::Instant::now() + CANCEL_WAIT;
            while std::time::Instant::now() < deadline
                && !self.stored_record(run_id)?.status.is_finished()
            {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let outcome = follow::Outcome {
            failure: outcome.failure.clone().or_else(|| {
                outcome
                    .jobs_gone
                    .then(|| "the run's Jobs were deleted before it finished".to_string())
            }),
            ..outcome
        };
        if let Some(record) = follow::record_failure(&self.store, run_id, &outcome)?
            && !outcome.saw_run_status
        {
            sink(Event::RunStatus {
                status: record.status,
                time: record.finished_at.unwrap_or_else(Utc::now),
            });
        }
        Ok(())
    }

    fn schedules(&self, request: ScheduleRequest) -> Result<ScheduleReply, PluginError> {
        match request {
            ScheduleRequest::Check { spec } => {
                schedule::check_spec(&spec)?;
                Ok(ScheduleReply::Checked)
            }
            ScheduleRequest::Render { spec, plan } => {
                let namespace = client::namespace_offline(&self.settings);
                let objects = self.schedule_objects(&spec, plan, &namespace)?;
                Ok(ScheduleReply::Rendered {
                    text: objects.to_masked_yaml(),
                })
            }
            ScheduleRequest::Create { spec, plan } => {
                let connection = self.connection()?;
                let objects = self.schedule_objects(&spec, plan, &connection.namespace)?;
                let created = self
                    .runtime
                    .block_on(schedule::create(connection, &objects, &spec))?;
                Ok(self.schedule_reply(&created, connection))
            }
            ScheduleRequest::List => {
                let connection = self.connection()?;
                let cron_jobs = self.runtime.block_on(schedule::list(connection))?;
                Ok(ScheduleReply::Schedules {
                    schedules: cron_jobs
                        .iter()
                        .map(|c| schedule::info(c, &connection.namespace))
                        .collect(),
                })
            }
            ScheduleRequest::Show { name } => {
                let connection = self.connection()?;
                let cron_job =
                    self.runtime
                        .block_on(schedule::get(connection, &self.settings, &name))?;
                Ok(self.schedule_reply(&cron_job, connection))
            }
            ScheduleRequest::Suspend { name } => self.set_suspended(&name, true),
            ScheduleRequest::Resume { name } => self.set_suspended(&name, false),
            ScheduleRequest::Delete { name } => {
                let connection = self.connection()?;
                let cron_job =
                    self.runtime
                        .block_on(schedule::get(connection, &self.settings, &name))?;
                let object = cron_job.metadata.name.clone().unwrap_or_default();
                self.runtime
                    .block_on(schedule::delete(connection, &object))?;
                Ok(ScheduleReply::Deleted { name })
            }
            ScheduleRequest::Trigger { name, run_id } => {
                if !orchestrator_core::run::is_valid_run_id(&run_id) {
                    return Err(PluginError::invalid_input(format!(
                        "kubernetes: `{run_id}` is not a run id"
                    )));
                }
                let connection = self.connection()?;
                let cron_job =
                    self.runtime
                        .block_on(schedule::get(connection, &self.settings, &name))?;
                let job = self
                    .runtime
                    .block_on(schedule::trigger(connection, &cron_job, &run_id))?;
                Ok(ScheduleReply::Triggered {
                    run_id,
                    launched: format!("Job {job} in namespace {}", connection.namespace),
                })
            }
        }
    }

    fn cancel(&self, run_id: &str) -> Result<(), PluginError> {
        let requested_at = Utc::now();
        let record = self.stored_record(run_id)?;
        let (connection, _) = self.reach(&record)?;
        let connection = &connection;
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
        // Until the pods are gone too: a pod in its grace period may still write.
        while !self.run_jobs(connection, run_id)?.is_empty()
            || !self.run_pods(connection, run_id)?.is_empty()
        {
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
        // The agent may have recorded the end in the meantime: its own cancel, an end it
        // reached before the request, or a failure the stop itself caused.
        let mut record = self.stored_record(run_id).unwrap_or(record);
        if mark_cancelled(&mut record, requested_at, Utc::now()) {
            RunRecords::new(self.store.clone()).put(&record)?;
        }
        Ok(())
    }
}

/// Records the end a cancel requested at `requested_at` gave the run, unless the run had ended
/// by itself before. Steps that failed after the request failed because their pod was stopped
/// (a runtime may signal every process of a container, not only its init), so they are
/// cancelled too; what succeeded stays succeeded. Returns whether the record changed.
fn mark_cancelled(record: &mut RunRecord, requested_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    let after_request = |at: Option<DateTime<Utc>>| at.is_none_or(|at| at >= requested_at);
    let ended_before = record.status.is_finished() && !after_request(record.finished_at);
    if ended_before || matches!(record.status, RunStatus::Succeeded | RunStatus::Cancelled) {
        return false;
    }
    record.status = RunStatus::Cancelled;
    record.error = None;
    record.finished_at = Some(now);
    for step in record.steps.values_mut() {
        let stopped = match step.status {
            StepStatus::Failed => after_request(step.finished_at),
            status => !status.is_finished(),
        };
        if stopped {
            step.status = StepStatus::Cancelled;
            step.finished_at = Some(now);
        }
    }
    true
}

orchestrator_core::export_orchestrator_plugin!(KubernetesOrchestrator);

#[cfg(test)]
mod cancel_tests {
    use super::*;
    use orchestrator_core::run::StepRecord;

    fn record(status: RunStatus, finished_at: Option<DateTime<Utc>>) -> RunRecord {
        let plan = crate::manifest::tests::plan();
        let mut record = RunRecord::new(&plan, "kubernetes");
        record.status = status;
        record.finished_at = finished_at;
        record
    }

    fn step(status: StepStatus, finished_at: Option<DateTime<Utc>>) -> StepRecord {
        let mut step = StepRecord::pending();
        step.status = status;
        step.finished_at = finished_at;
        step
    }

    #[test]
    fn a_run_the_stop_failed_is_recorded_cancelled_and_what_finished_before_stays() {
        let requested = Utc::now();
        let before = requested - chrono::Duration::seconds(5);
        let after = requested + chrono::Duration::seconds(1);
        let mut run = record(RunStatus::Failed, Some(after));
        run.error = Some("step nap failed".into());
        run.steps
            .insert("done".into(), step(StepStatus::Succeeded, Some(before)));
        run.steps
            .insert("broke".into(), step(StepStatus::Failed, Some(before)));
        run.steps
            .insert("nap".into(), step(StepStatus::Failed, Some(after)));
        run.steps
            .insert("later".into(), step(StepStatus::Pending, None));
        assert!(mark_cancelled(&mut run, requested, after));
        assert_eq!(run.status, RunStatus::Cancelled);
        assert_eq!(run.error, None);
        let status = |name: &str| run.steps[name].status;
        assert_eq!(status("done"), StepStatus::Succeeded);
        assert_eq!(status("broke"), StepStatus::Failed);
        assert_eq!(status("nap"), StepStatus::Cancelled);
        assert_eq!(status("later"), StepStatus::Cancelled);
    }

    #[test]
    fn a_run_that_ended_before_the_request_keeps_its_end() {
        let requested = Utc::now();
        let before = requested - chrono::Duration::seconds(5);
        for status in [RunStatus::Failed, RunStatus::Succeeded] {
            let mut run = record(status, Some(before));
            assert!(!mark_cancelled(&mut run, requested, requested));
            assert_eq!(run.status, status);
        }
        let mut running = record(RunStatus::Running, None);
        assert!(mark_cancelled(&mut running, requested, requested));
        assert_eq!(running.status, RunStatus::Cancelled);
    }
}
