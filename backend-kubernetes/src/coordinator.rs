//! The coordinator of a `steps` run. It runs inside the cluster, in the run's own Job (whose
//! agent hands the plan to this plugin with `role = "coordinator"`), so that the run goes on
//! when the submitting machine detaches or goes away.
//!
//! It starts one Job per step in DAG order, at most `parallelism` at once, each owned by the
//! coordinator's Job (deleting the run's Job deletes them). Each step Job is followed with the
//! same watch-driven code the submitting machine uses, so an image that cannot be pulled, a
//! pod that cannot be scheduled or an OOM kill ends that step with the reason, and the steps
//! downstream of it are skipped. The steps' events are relayed on the coordinator's own log,
//! which is what `ferry run` and `ferry logs -f` stream, and `run.json` is kept up to date from
//! the result each step's agent writes to the store.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::core::ObjectMeta;
use orchestrator_core::PluginError;
use orchestrator_core::pipeline::Step;
use orchestrator_core::run::RunRecords;
use orchestrator_core::run::retry::Backoff;
use orchestrator_core::run::{
    AttemptRecord, Decision, Event, Frontier, RunPlan, RunRecord, RunStatus, StepRecord, StepStatus,
};
use orchestrator_core::sdk::blocking;
use orchestrator_core::store::Store;
use tokio::sync::mpsc;

use crate::client::Connection;
use crate::follow::{self, FollowOptions};
use crate::launch::{self, api_error, retry};
use crate::manifest::{self, JobKind};
use crate::settings::{self, Settings};

/// An API error inside the coordinator's pod, where a refusal is about its service account.
fn in_pod(error: PluginError, settings: &Settings) -> PluginError {
    if error.kind != orchestrator_core::ErrorKind::PERMISSION_DENIED {
        return error;
    }
    PluginError::new(
        error.kind,
        format!(
            "{} [in the coordinator pod: its service account `{}` needs get, list, watch, create and delete on jobs and get, list and watch on pods and pods/log in the namespace; see the README's steps mode section for a Role]",
            error.message(),
            settings.service_account.as_deref().unwrap_or("default")
        ),
    )
}

/// A step being run: its Job created and followed to a result.
type StepRun<'a> = Pin<Box<dyn Future<Output = (String, StepRecord)> + 'a>>;

async fn write_record(store: &Store, record: &RunRecord) -> Result<(), PluginError> {
    let (store, record) = (store.clone(), record.clone());
    blocking(move || {
        RunRecords::new(store.clone()).put(&record)?;
        Ok(())
    })
    .await
}

/// What a step's agent recorded, if it got that far.
async fn stored_result(store: &Store, run_id: &str, step: &str) -> Option<StepRecord> {
    let (records, run_id, step) = (
        RunRecords::new(store.clone()),
        run_id.to_string(),
        step.to_string(),
    );
    blocking(move || records.step_result(&run_id, &step))
        .await
        .ok()
        .flatten()
}

fn failed(mut result: StepRecord, error: String, exit_code: Option<i32>) -> StepRecord {
    result.status = StepStatus::Failed;
    result.error = Some(error);
    result.exit_code = exit_code.or(result.exit_code);
    result.finished_at = Some(Utc::now());
    result
}

/// Everything the step runs share.
struct Shared<'a> {
    connection: &'a Connection,
    settings: &'a Settings,
    plan: &'a RunPlan,
    store: &'a Store,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    config: String,
    events: mpsc::UnboundedSender<Event>,
}

impl Shared<'_> {
    /// Runs the step to its result: its Job (or the one a restarted coordinator meets
    /// again), and, while its `retries` allow, a new Job for each attempt whose pod died
    /// (evicted, OOM-killed as a whole), after the step's backoff. The new pod's agent gets
    /// the earlier attempts, so that they count against the retries and stay in the record.
    async fn run_step(&self, step: &Step) -> StepRecord {
        let scheduled_at = Utc::now();
        let run_id = &self.plan.run_id;
        // A restarted coordinator must not run a finished step again.
        if let Some(result) = stored_result(self.store, run_id, &step.name).await
            && result.status.is_finished()
        {
            return result;
        }
        let backoff = Backoff::of(step);
        let mut prior: Vec<AttemptRecord> = Vec::new();
        loop {
            let attempt = prior.len() as u32 + 1;
            let started_at = Utc::now();
            let (mut result, pod_died) = self.run_attempt(step, attempt, &prior).await;
            result.timings.scheduled_at = Some(scheduled_at);
            let used = attempt.max(result.attempts);
            if !pod_died || result.status.is_success() || used >= backoff.attempts() {
                return with_prior_attempts(result, prior);
            }
            let reason = result
                .error
                .clone()
                .unwrap_or_else(|| "the pod died".into());
            prior = if result.attempt_history.len() >= attempt as usize {
                result.attempt_history.clone()
            } else {
                let mut history = prior;
                history.push(AttemptRecord {
                    number: attempt,
                    started_at: result.started_at.or(Some(started_at)),
                    finished_at: Some(Utc::now()),
                    exit_code: result.exit_code,
                    reason: None,
                });
                history
            };
            // What Kubernetes says ended the attempt wins over what its agent saw (SIGTERM).
            if let Some(last) = prior.last_mut() {
                last.reason = Some(reason.clone());
                last.exit_code = result.exit_code.or(last.exit_code);
            }
            let delay = backoff.delay(attempt);
            let _ = self.events.send(Event::Notice {
                step: Some(step.name.clone()),
                text: format!(
                    "attempt {attempt} of {} failed ({reason}); retrying in a new pod in {}",
                    backoff.attempts(),
                    humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
                ),
                time: Utc::now(),
            });
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt: creates its Job and follows it. Also says whether the attempt ended
    /// because its pod died (a new pod may do better).
    async fn run_attempt(
        &self,
        step: &Step,
        attempt: u32,
        prior: &[AttemptRecord],
    ) -> (StepRecord, bool) {
        let run_id = &self.plan.run_id;
        let mut job = manifest::job(
            self.settings,
            self.plan,
            &self.connection.namespace,
            JobKind::Step(step),
            &self.config,
        );
        manifest::mark_attempt(&mut job, self.settings, self.plan, step, attempt, prior);
        job.metadata = ObjectMeta {
            owner_references: Some(vec![self.owner.clone()]),
            ..job.metadata
        };
        let jobs: Api<Job> =
            Api::namespaced(self.connection.client.clone(), &self.connection.namespace);
        if let Err(error) = launch::create_idempotent(&jobs, &job, run_id).await {
            let error = in_pod(error, self.settings);
            return (
                failed(StepRecord::pending(), error.message().to_string(), None),
                false,
            );
        }
        let submitted_at = Utc::now();
        let selector = manifest::attempt_selector(run_id, &step.name, attempt);
        let options = FollowOptions {
            selector: selector.clone(),
            step: None,
            follow: true,
            pending_timeout: self.settings.pending_timeout,
            pod_retries: self.settings.backoff_limit,
        };
        let events = self.events.clone();
        let outcome = follow::follow(self.connection, &options, &mut |event| match event {
            // The step's agent ends its one-step run; the run's end is the coordinator's.
            Event::RunStatus { .. } => true,
            event => events.send(event).is_ok(),
        })
        .await;
        let seen_finished_at = Utc::now();
        let mut result = stored_result(self.store, run_id, &step.name)
            .await
            .unwrap_or_else(StepRecord::pending);
        result.timings.submitted_at = Some(submitted_at);
        result.timings.seen_finished_at = Some(seen_finished_at);
        // The agent had started the step and never finished it (killed with its pod), or
        // stopped it on a SIGTERM nobody in the run sent (an eviction deletes the pod).
        let cut_short = matches!(result.status, StepStatus::Running | StepStatus::Cancelled);
        let record = match outcome {
            Err(error) => {
                return (
                    failed(
                        result,
                        format!("lost track of the step's Job: {}", error.message()),
                        None,
                    ),
                    false,
                );
            }
            Ok(outcome) if outcome.jobs_gone => {
                return (
                    failed(
                        result,
                        "the step's Job was deleted before it finished".into(),
                        None,
                    ),
                    false,
                );
            }
            // Kubernetes says why the agent could not finish (or ran out of memory even if
            // it exited 0): that wins over what the agent recorded.
            Ok(outcome) if outcome.failure.is_some() => {
                let reason = outcome.failure.unwrap_or_default();
                failed(result, reason, outcome.exit_code)
            }
            Ok(_) if result.status.is_finished() => result,
            Ok(outcome) => failed(
                result,
                "the step's Job ended without its agent recording a result".into(),
                outcome.exit_code,
            ),
        };
        let pod_died =
            !record.status.is_success() && (cut_short || self.a_pod_died(&selector).await);
        (record, pod_died)
    }

    async fn a_pod_died(&self, selector: &str) -> bool {
        let pods: Api<Pod> =
            Api::namespaced(self.connection.client.clone(), &self.connection.namespace);
        let params = ListParams::default().labels(selector);
        let list = retry("listing the step's pods", || pods.list(&params)).await;
        list.is_ok_and(|l| l.items.iter().any(follow::died_of_its_pod))
    }
}

/// The step's record with the attempts of earlier pods first (an agent that got them already
/// has them).
fn with_prior_attempts(mut result: StepRecord, prior: Vec<AttemptRecord>) -> StepRecord {
    if prior.is_empty() {
        return result;
    }
    let known = result
        .attempt_history
        .first()
        .is_some_and(|first| first.number == 1);
    if !known {
        let mut history = prior;
        history.append(&mut result.attempt_history);
        result.attempt_history = history;
    }
    result.attempts = result.attempts.max(result.attempt_history.len() as u32);
    result
}

/// Runs the plan's steps as Jobs until every step has ended; returns the final record.
pub async fn coordinate(
    connection: &Connection,
    settings: &Settings,
    plan: &RunPlan,
    store: &Store,
    sink: &mut dyn FnMut(Event) -> bool,
) -> Result<RunRecord, PluginError> {
    let jobs: Api<Job> = Api::namespaced(connection.client.clone(), &connection.namespace);
    let own_name = manifest::run_job_name(settings, plan);
    let what = format!("reading the run's Job {own_name}");
    let own = retry(&what, || jobs.get(&own_name))
        .await
        .map_err(|e| in_pod(api_error(&what, e), settings))?;

    let existing = {
        let (records, run_id) = (RunRecords::new(store.clone()), plan.run_id.clone());
        blocking(move || records.get(&run_id)).await?
    };
    let mut record = existing.unwrap_or_else(|| RunRecord::new(plan, settings::NAME));
    record.status = RunStatus::Running;
    record.started_at.get_or_insert_with(Utc::now);
    record.host = Some(format!(
        "Job {own_name} in namespace {}",
        connection.namespace
    ));
    write_record(store, &record).await?;
    sink(Event::RunStatus {
        status: RunStatus::Running,
        time: Utc::now(),
    });

    let (events, mut relayed) = mpsc::unbounded_channel();
    let shared = Shared {
        connection,
        settings,
        plan,
        store,
        owner: launch::owner_reference(&own),
        config: manifest::config_name(settings, plan),
        events,
    };
    let mut frontier = Frontier::new(&plan.pipeline, settings.parallelism);
    let mut running: FuturesUnordered<StepRun<'_>> = FuturesUnordered::new();
    let mut reader_gone = false;
    // Whether `record` changed since it was last written: relayed log lines do not change it,
    // and must not each cost a write to the store.
    let mut changed = false;

    loop {
        for decision in frontier.advance(false) {
            match decision {
                Decision::End {
                    step,
                    status,
                    reason,
                } => {
                    let now = Utc::now();
                    if let Some(r) = record.steps.get_mut(&step.name) {
                        r.status = status;
                        r.error = Some(reason);
                        r.finished_at = Some(now);
                    }
                    changed = true;
                    reader_gone |= !sink(Event::StepStatus {
                        step: step.name.clone(),
                        status,
                        time: now,
                    });
                }
                Decision::Start(step) => {
                    let shared = &shared;
                    running.push(Box::pin(async move {
                        (step.name.clone(), shared.run_step(step).await)
                    }));
                }
            }
        }
        if std::mem::take(&mut changed) {
            write_record(store, &record).await?;
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            Some((name, result)) = running.next() => {
                let reported = record.steps.get(&name).map(|r| r.status);
                if result.status == StepStatus::Failed && reported != Some(StepStatus::Failed) {
                    // Ended by Kubernetes, not by the agent: nobody said so yet.
                    let time = Utc::now();
                    if let Some(error) = &result.error {
                        reader_gone |= !sink(Event::Notice { step: Some(name.clone()), text: error.clone(), time });
                    }
                    reader_gone |= !sink(Event::StepStatus { step: name.clone(), status: StepStatus::Failed, time });
                }
                frontier.finish(&name, result.status);
                record.steps.insert(name, result);
                changed = true;
            }
            Some(event) = relayed.recv() => {
                if let Event::StepStatus { step, status, time } = &event
                    && let Some(r) = record.steps.get_mut(step)
                {
                    r.status = *status;
                    if *status == StepStatus::Running {
                        r.started_at = Some(*time);
                    }
                    changed = true;
                }
                // A reader that went away (the pod log) must not stop the run.
                if !reader_gone {
                    reader_gone = !sink(event);
                }
            }
        }
    }
    // Events relayed after their step's result arrived.
    while let Ok(event) = relayed.try_recv() {
        if !reader_gone {
            reader_gone = !sink(event);
        }
    }

    record.finish_from_steps(Utc::now());
    write_record(store, &record).await?;
    sink(Event::RunStatus {
        status: record.status,
        time: record.finished_at.unwrap_or_else(Utc::now),
    });
    Ok(record)
}
