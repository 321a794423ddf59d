//! Following a run: watches (never polls) the run's Jobs and pods, streams the agent's events
//! from pod logs, and turns what Kubernetes reports into a result, so that no run is left
//! "running" when its pod can never finish: ImagePullBackOff and config errors fail at once,
//! an unschedulable pod fails after `pending_timeout`, and OOM kills, evictions and deadlines
//! are named in the run's error.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use futures::{AsyncBufReadExt as _, StreamExt as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use orchestrator_core::PluginError;
use orchestrator_core::run::RunRecords;
use orchestrator_core::run::{Event, RunRecord, RunStatus, StepStatus};
use orchestrator_core::store::Store;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::client::Connection;
use crate::launch::{api_error, retry};
use crate::manifest::CONTAINER;

/// Waiting reasons that never resolve by themselves: the run fails at once.
const FATAL_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// How long to wait for log streams to drain once every Job has finished.
const DRAIN: Duration = Duration::from_secs(10);

pub struct FollowOptions<'a> {
    /// The Jobs and pods to follow (see `manifest::run_job_selector` and `step_selector`).
    pub selector: String,
    pub step: Option<&'a str>,
    pub follow: bool,
    pub pending_timeout: Duration,
    /// The Jobs' `backoffLimit`: with retries, a failed agent is not the end of the run.
    pub pod_retries: i32,
}

/// What following found out, for the caller to record.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Why the run failed, when Kubernetes (not the agent) says so.
    pub failure: Option<String>,
    /// Exit code to record for the steps that were running, if a container ended.
    pub exit_code: Option<i32>,
    /// Steps the agent reported as running and never finished.
    pub running_steps: HashSet<String>,
    /// Whether the agent's stream already delivered the run's final status.
    pub saw_run_status: bool,
    /// The run has Jobs in the cluster (false: only the store knows it).
    pub found: bool,
    /// Following saw the run end (false: the reader stopped first, the run may go on).
    pub ended: bool,
    /// The run's Jobs were deleted while being followed (a cancel, or by hand).
    pub jobs_gone: bool,
}

enum Message {
    Line(String),
    End,
}

fn job_finished(job: &Job) -> Option<(bool, String)> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| (c.type_ == "Complete", c.reason.clone().unwrap_or_default()))
}

fn container_state(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerState> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)?
        .state
        .as_ref()
}

fn deliver(
    line: &str,
    options: &FollowOptions<'_>,
    outcome: &mut Outcome,
    sink: &mut dyn FnMut(Event) -> bool,
) -> bool {
    let event = match serde_json::from_str::<Event>(line) {
        Ok(event) => event,
        // Not an agent event: the agent's own diagnostics, or a container that is not ferry.
        Err(_) => Event::Notice {
            step: None,
            text: line.to_string(),
            time: Utc::now(),
        },
    };
    match &event {
        Event::StepStatus { step, status, .. } => {
            if *status == StepStatus::Running {
                outcome.running_steps.insert(step.clone());
            } else {
                outcome.running_steps.remove(step);
            }
        }
        Event::RunStatus { status, .. } if status.is_finished() => outcome.saw_run_status = true,
        _ => {}
    }
    if options.step.is_some() && event.step().is_some_and(|s| Some(s) != options.step) {
        return true;
    }
    sink(event)
}

fn spawn_log_stream(
    pods: &Api<Pod>,
    name: String,
    follow: bool,
    tx: mpsc::UnboundedSender<Message>,
) {
    let pods = pods.clone();
    tokio::spawn(async move {
        let params = LogParams {
            follow,
            container: Some(CONTAINER.to_string()),
            ..LogParams::default()
        };
        // A transient error (a 500, a reset) must not cost the follower the whole log.
        let what = format!("reading the log of pod {name}");
        match retry(&what, || pods.log_stream(&name, &params)).await {
            Ok(reader) => {
                let mut lines = reader.lines();
                while let Some(Ok(line)) = lines.next().await {
                    if tx.send(Message::Line(line)).is_err() {
                        return;
                    }
                }
            }
            Err(error) => {
                let _ = tx.send(Message::Line(format!(
                    "ferry: the log of pod {name} is not available: {error}"
                )));
            }
        }
        let _ = tx.send(Message::End);
    });
}

/// Whether a pod died of something a new pod may survive: it was evicted (node pressure, the
/// Eviction API, preemption) or OOM-killed as a whole. Image pulls, config errors and
/// deadlines would only fail again.
pub fn died_of_its_pod(pod: &Pod) -> bool {
    let evicted = pod
        .status
        .as_ref()
        .is_some_and(|s| s.reason.as_deref() == Some("Evicted"));
    let disrupted = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
        });
    let oom = container_state(pod)
        .and_then(|s| s.terminated.as_ref())
        .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"));
    evicted || disrupted || oom
}

/// Why a pod can never finish, if it cannot: a container that cannot start, an OOM kill (a
/// failure whatever the exit code says), an eviction.
fn pod_failure(pod: &Pod) -> Option<(String, Option<i32>)> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    if let Some(status) = &pod.status
        && status.reason.as_deref() == Some("Evicted")
    {
        return Some((
            format!(
                "pod {name} was evicted: {}",
                status.message.clone().unwrap_or_default()
            ),
            None,
        ));
    }
    let state = container_state(pod)?;
    if let Some(waiting) = &state.waiting
        && let Some(reason) = waiting.reason.as_deref()
        && FATAL_WAITING.contains(&reason)
    {
        let message = waiting.message.clone().unwrap_or_default();
        return Some((
            format!("pod {name} cannot start: {reason}: {message}"),
            None,
        ));
    }
    if let Some(terminated) = &state.terminated
        && terminated.reason.as_deref() == Some("OOMKilled")
    {
        let code = if terminated.exit_code == 0 {
            137
        } else {
            terminated.exit_code
        };
        return Some((
            format!("pod {name} was killed for using more memory than its limit (OOMKilled)"),
            Some(code),
        ));
    }
    None
}

fn to_chrono(time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp(time.0.as_second(), time.0.subsec_nanosecond().max(0) as u32)
        .unwrap_or_else(Utc::now)
}

/// Since when a pod has been unschedulable, from its PodScheduled condition (so that the
/// timeout counts from the real start, not from when this ferry began to watch).
fn unschedulable_since(pod: &Pod) -> Option<chrono::DateTime<Utc>> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let c = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    (c.reason.as_deref() == Some("Unschedulable")).then(|| {
        c.last_transition_time
            .as_ref()
            .map(to_chrono)
            .unwrap_or_else(Utc::now)
    })
}

fn pending_failure(pod: &Pod, timeout: Duration) -> Option<String> {
    let since = unschedulable_since(pod)?;
    let waited = (Utc::now() - since).to_std().unwrap_or_default();
    (waited >= timeout).then(|| {
        let name = pod.metadata.name.clone().unwrap_or_default();
        format!(
            "pod {name} could not be scheduled for {}; see `kubectl describe pod {name}` (node selector, tolerations, resources)",
            humantime::format_duration(timeout)
        )
    })
}

/// A watch error that retrying cannot fix.
fn fatal_watch_error(error: &watcher::Error) -> Option<PluginError> {
    let status = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.as_ref().clone(),
        watcher::Error::WatchError(s) => s.as_ref().clone(),
        _ => return None,
    };
    matches!(status.code, 401 | 403)
        .then(|| api_error("watching the run", kube::Error::Api(Box::new(status))))
}

/// Streams the run's events until it ends (or, without `follow`, until what exists has been
/// shown). Deletes the run's Jobs when Kubernetes says they can never succeed.
pub async fn follow(
    connection: &Connection,
    options: &FollowOptions<'_>,
    sink: &mut dyn FnMut(Event) -> bool,
) -> Result<Outcome, PluginError> {
    let ns = &connection.namespace;
    let jobs: Api<Job> = Api::namespaced(connection.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(connection.client.clone(), ns);
    let selector = options.selector.clone();
    let mut outcome = Outcome::default();
    let by_run = ListParams::default().labels(&selector);
    let listed = retry("listing the run's Jobs", || jobs.list(&by_run))
        .await
        .map_err(|e| api_error("listing the run's Jobs", e))?;
    if listed.items.is_empty() {
        return Ok(outcome);
    }
    outcome.found = true;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut streams_open = 0usize;
    let mut streamed: HashSet<String> = HashSet::new();

    if !options.follow {
        let pod_list = retry("listing the run's pods", || pods.list(&by_run))
            .await
            .map_err(|e| api_error("listing the run's pods", e))?;
        for pod in pod_list.items {
            let name = pod.metadata.name.clone().unwrap_or_default();
            if container_state(&pod).is_some_and(|s| s.running.is_some() || s.terminated.is_some())
            {
                spawn_log_stream(&pods, name, false, tx.clone());
                streams_open += 1;
            }
        }
        while streams_open > 0 {
            match rx.recv().await {
                Some(Message::Line(line)) => {
                    if !deliver(&line, options, &mut outcome, sink) {
                        return Ok(outcome);
                    }
                }
                Some(Message::End) | None => streams_open -= 1,
            }
        }
        return Ok(outcome);
    }

    let mut job_states: HashMap<String, Job> = listed
        .items
        .into_iter()
        .map(|j| (j.metadata.name.clone().unwrap_or_default(), j))
        .collect();
    let mut pod_events = watcher(pods.clone(), watcher::Config::default().labels(&selector))
        .default_backoff()
        .boxed();
    let mut job_events = watcher(jobs.clone(), watcher::Config::default().labels(&selector))
        .default_backoff()
        .boxed();
    let mut unschedulable: HashMap<String, Pod> = HashMap::new();
    let mut jobs_finished_at: Option<Instant> = None;
    let mut jobs_synced = false;
    let mut relisted: Option<HashMap<String, Job>> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));

    loop {
        tokio::select! {
            Some(event) = pod_events.next() => {
                let pod = match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
                    Ok(watcher::Event::Delete(pod)) => {
                        unschedulable.remove(&pod.metadata.name.clone().unwrap_or_default());
                        continue;
                    }
                    Ok(_) => continue,
                    Err(error) => match fatal_watch_error(&error) {
                        Some(fatal) => return Err(fatal),
                        None => {
                            tracing::debug!(%error, "pod watch error; the watcher retries with backoff");
                            continue;
                        }
                    },
                };
                let name = pod.metadata.name.clone().unwrap_or_default();
                if unschedulable_since(&pod).is_some() {
                    unschedulable.insert(name.clone(), pod.clone());
                } else {
                    unschedulable.remove(&name);
                }
                if let Some((failure, code)) = pod_failure(&pod)
                    && outcome.failure.is_none()
                {
                    outcome.failure = Some(failure);
                    outcome.exit_code = code;
                }
                if let Some(state) = container_state(&pod) {
                    if let Some(terminated) = &state.terminated
                        && outcome.exit_code.is_none()
                    {
                        outcome.exit_code = Some(terminated.exit_code);
                    }
                    if (state.running.is_some() || state.terminated.is_some()) && streamed.insert(name.clone()) {
                        spawn_log_stream(&pods, name, true, tx.clone());
                        streams_open += 1;
                    }
                }
            }
            Some(event) = job_events.next() => match event {
                Ok(watcher::Event::Apply(job)) => {
                    job_states.insert(job.metadata.name.clone().unwrap_or_default(), job);
                }
                Ok(watcher::Event::Delete(job)) => {
                    job_states.remove(&job.metadata.name.clone().unwrap_or_default());
                }
                // A (re)list: the new state replaces the old one once complete, so that the
                // Jobs are known (and can be deleted) in the meantime.
                Ok(watcher::Event::Init) => relisted = Some(HashMap::new()),
                Ok(watcher::Event::InitApply(job)) => {
                    relisted.get_or_insert_with(HashMap::new).insert(job.metadata.name.clone().unwrap_or_default(), job);
                }
                Ok(watcher::Event::InitDone) => {
                    job_states = relisted.take().unwrap_or_default();
                    jobs_synced = true;
                }
                Err(error) => {
                    if let Some(fatal) = fatal_watch_error(&error) {
                        return Err(fatal);
                    }
                    tracing::debug!(%error, "job watch error; the watcher retries with backoff");
                }
            },
            Some(message) = rx.recv() => match message {
                Message::Line(line) => {
                    if !deliver(&line, options, &mut outcome, sink) {
                        return Ok(outcome);
                    }
                }
                Message::End => streams_open = streams_open.saturating_sub(1),
            },
            _ = tick.tick() => {
                if outcome.failure.is_none() {
                    outcome.failure = unschedulable.values().find_map(|pod| pending_failure(pod, options.pending_timeout));
                }
            }
        }
        if let Some(failure) = &outcome.failure
            && !outcome.ended
        {
            sink(Event::Notice {
                step: None,
                text: failure.clone(),
                time: Utc::now(),
            });
            // It will not get better: stop the run's Jobs rather than leave them pending.
            crate::launch::delete_jobs(&jobs, job_states.keys()).await;
            outcome.ended = true;
            jobs_finished_at = Some(Instant::now());
        }
        // The agent reported the end and its log is complete (unless the Job may run the
        // pipeline again in a new pod).
        if outcome.saw_run_status && streams_open == 0 && options.pod_retries == 0 {
            outcome.ended = true;
            return Ok(outcome);
        }
        // Deleted (cancelled, or by hand): what happened is for the store to say.
        if jobs_synced && job_states.is_empty() && streams_open == 0 {
            outcome.ended = true;
            outcome.jobs_gone = true;
            return Ok(outcome);
        }
        if jobs_finished_at.is_none()
            && !job_states.is_empty()
            && job_states.values().all(|j| job_finished(j).is_some())
        {
            jobs_finished_at = Some(Instant::now());
            if job_states
                .values()
                .filter_map(job_finished)
                .any(|(ok, reason)| !ok && reason == "DeadlineExceeded")
                && outcome.failure.is_none()
            {
                outcome.failure =
                    Some("the run exceeded `active_deadline_seconds` and was stopped".into());
            }
            // Events may still be on their way for pods this watch has not seen running:
            // stream every pod of the run that has a log.
            if let Ok(list) = retry("listing the run's pods", || pods.list(&by_run)).await {
                for pod in list.items {
                    // The pod watch may lag the Job watch: a pod that ended for a reason
                    // Kubernetes knows (OOMKilled, evicted) must not read as "no result".
                    if outcome.failure.is_none()
                        && let Some((failure, code)) = pod_failure(&pod)
                    {
                        outcome.failure = Some(failure);
                        outcome.exit_code = code;
                    }
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    if container_state(&pod)
                        .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
                        && streamed.insert(name.clone())
                    {
                        spawn_log_stream(&pods, name, false, tx.clone());
                        streams_open += 1;
                    }
                }
            }
        }
        if let Some(at) = jobs_finished_at {
            if streams_open == 0 {
                outcome.ended = true;
                return Ok(outcome);
            }
            if at.elapsed() >= DRAIN {
                sink(Event::Notice {
                    step: None,
                    text: format!(
                        "stopped reading pod logs {}s after the run's Jobs ended; `ferry logs` reads the rest from the store",
                        DRAIN.as_secs()
                    ),
                    time: Utc::now(),
                });
                outcome.ended = true;
                return Ok(outcome);
            }
        }
    }
}

/// One look at a run that no ferry is following (`runs show`, `runs list`): whether it still
/// has Jobs (`found`) and whether Kubernetes says it can never finish (`failure`; its Jobs are
/// then deleted).
pub async fn assess(
    connection: &Connection,
    selector: &str,
    pending_timeout: Duration,
) -> Result<Outcome, PluginError> {
    let ns = &connection.namespace;
    let jobs: Api<Job> = Api::namespaced(connection.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(connection.client.clone(), ns);
    let by_run = ListParams::default().labels(selector);
    let job_list = retry("listing the run's Jobs", || jobs.list(&by_run))
        .await
        .map_err(|e| api_error("listing the run's Jobs", e))?
        .items;
    let pod_list = retry("listing the run's pods", || pods.list(&by_run))
        .await
        .map_err(|e| api_error("listing the run's pods", e))?
        .items;
    let mut outcome = Outcome {
        found: !job_list.is_empty(),
        ..Outcome::default()
    };
    for job in &job_list {
        let created = job
            .metadata
            .creation_timestamp
            .as_ref()
            .map(to_chrono)
            .unwrap_or_else(Utc::now);
        let stuck_suspended = job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
            && Utc::now() - created > chrono::Duration::seconds(60);
        if stuck_suspended {
            outcome.failure =
                Some("the run's launch was interrupted before its Job was started".into());
        }
        if let Some((false, reason)) = job_finished(job) {
            outcome.failure.get_or_insert(match reason.as_str() {
                "DeadlineExceeded" => {
                    "the run exceeded `active_deadline_seconds` and was stopped".into()
                }
                _ => format!("the run's Job failed ({reason})"),
            });
        }
    }
    for pod in &pod_list {
        if let Some((failure, code)) =
            pod_failure(pod).or_else(|| pending_failure(pod, pending_timeout).map(|f| (f, None)))
        {
            outcome.failure = Some(failure);
            outcome.exit_code = code.or(outcome.exit_code);
        }
    }
    if outcome.failure.is_some() {
        let names: Vec<String> = job_list
            .iter()
            .filter_map(|j| j.metadata.name.clone())
            .collect();
        crate::launch::delete_jobs(&jobs, names.iter()).await;
        outcome.ended = true;
    }
    Ok(outcome)
}

/// Records what Kubernetes said when the agent could not: a run whose record is not final
/// becomes failed with the reason, its running steps failed and the rest cancelled.
pub fn record_failure(
    store: &Store,
    run_id: &str,
    outcome: &Outcome,
) -> Result<Option<RunRecord>, PluginError> {
    RunRecords::new(store.clone()).update(run_id, |record| {
        if record.status.is_finished() {
            return false;
        }
        let now = Utc::now();
        record.status = RunStatus::Failed;
        record.finished_at = Some(now);
        record.error =
            Some(outcome.failure.clone().unwrap_or_else(|| {
                "the run's Job ended without its agent recording a result".into()
            }));
        for (name, step) in record.steps.iter_mut() {
            if step.status.is_finished() {
                continue;
            }
            if outcome.running_steps.contains(name) || step.status == StepStatus::Running {
                step.status = StepStatus::Failed;
                step.exit_code = outcome.exit_code;
                step.error = record.error.clone();
                step.finished_at = Some(now);
            } else {
                step.status = StepStatus::Cancelled;
            }
        }
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::RUN_LABEL;
    use crate::mock::{self, json_response, next, text_response};
    use serde_json::{Value, json};

    const RUN: &str = "20261127-101010-000-abcdef";

    fn job(conditions: Value) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "ferry-hello-1", "namespace": "default", "resourceVersion": "5", "labels": {RUN_LABEL: RUN}},
               "spec": {"template": {"spec": {"containers": []}}}, "status": {"conditions": conditions}})
    }

    fn pod(state: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ferry-hello-1-abcde", "namespace": "default", "resourceVersion": "6"},
               "spec": {"containers": [{"name": "ferry", "image": "ferry"}]},
               "status": {"phase": "Running", "containerStatuses": [{"name": "ferry", "image": "ferry", "imageID": "", "ready": true, "restartCount": 0, "state": state}]}})
    }

    fn list(kind: &str, items: Vec<Value>) -> Value {
        json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "10"}, "items": items})
    }

    /// Answers like an API server holding `jobs` and `pods`; watches stay open. Returns every
    /// request URI seen.
    async fn serve(
        mut handle: mock::MockHandle,
        jobs: Vec<Value>,
        pods: Vec<Value>,
        log: String,
    ) -> Vec<String> {
        let mut seen = Vec::new();
        let mut open_watches = Vec::new();
        while let Ok(Some((request, send))) = tokio::time::timeout(Duration::from_secs(2), async {
            Some(next(&mut handle).await)
        })
        .await
        {
            seen.push(format!("{} {}", request.method, request.uri));
            let uri = request.uri.clone();
            if uri.contains("watch=true") {
                open_watches.push(send);
            } else if uri.contains("/log?") {
                send.send_response(text_response(&log));
            } else if request.method == "DELETE" {
                send.send_response(json_response(200, &json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}})));
            } else if uri.contains("/jobs") {
                send.send_response(json_response(200, &list("JobList", jobs.clone())));
            } else if uri.contains("/pods") {
                send.send_response(json_response(200, &list("PodList", pods.clone())));
            } else {
                panic!("unexpected request {uri}");
            }
        }
        seen
    }

    fn options(follow: bool) -> FollowOptions<'static> {
        FollowOptions {
            selector: crate::manifest::run_selector(RUN),
            step: None,
            follow,
            pending_timeout: Duration::from_secs(60),
            pod_retries: 0,
        }
    }

    #[tokio::test]
    async fn agent_events_stream_from_the_pod_log_until_the_job_ends() {
        let (connection, handle) = mock::connection();
        let events = [
            Event::StepStatus {
                step: "greet".into(),
                status: StepStatus::Running,
                time: Utc::now(),
            },
            Event::Log {
                step: "greet".into(),
                stream: orchestrator_core::run::LogStream::Stdout,
                line: "hello".into(),
                time: Utc::now(),
            },
            Event::StepStatus {
                step: "greet".into(),
                status: StepStatus::Succeeded,
                time: Utc::now(),
            },
            Event::RunStatus {
                status: RunStatus::Succeeded,
                time: Utc::now(),
            },
        ];
        let mut log: String = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        log.push_str("ferry agent: a diagnostic line\n");
        let complete =
            json!([{"type": "Complete", "status": "True", "reason": "CompletionsReached"}]);
        let server = tokio::spawn(serve(
            handle,
            vec![job(complete)],
            vec![pod(
                json!({"running": {"startedAt": "2026-11-27T10:10:10Z"}}),
            )],
            log,
        ));
        let mut received = Vec::new();
        let outcome = follow(&connection, &options(true), &mut |e| {
            received.push(e);
            true
        })
        .await
        .unwrap();
        assert!(outcome.found && outcome.saw_run_status && outcome.failure.is_none());
        assert_eq!(&received[..4], &events[..]);
        assert!(
            matches!(&received[4], Event::Notice { text, .. } if text == "ferry agent: a diagnostic line")
        );
        let seen = server.await.unwrap();
        // Watch-driven: the pods are listed by the watcher (and once more when the Job has
        // ended), never polled; the log is read once.
        let pod_lists = seen
            .iter()
            .filter(|r| r.contains("/pods?") && !r.contains("watch=true"))
            .count();
        assert!(pod_lists <= 2, "{seen:#?}");
        let logs = seen
            .iter()
            .filter(|r| r.contains("/log?") && r.contains("container=ferry"))
            .count();
        assert_eq!(logs, 1, "{seen:#?}");
    }

    #[tokio::test]
    async fn an_image_that_cannot_be_pulled_fails_the_run_at_once_and_deletes_its_job() {
        let (connection, handle) = mock::connection();
        let waiting = json!({"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope\""}});
        let server = tokio::spawn(serve(
            handle,
            vec![job(json!([]))],
            vec![pod(waiting)],
            String::new(),
        ));
        let mut notices = Vec::new();
        let outcome = follow(&connection, &options(true), &mut |e| {
            if let Event::Notice { text, .. } = e {
                notices.push(text);
            }
            true
        })
        .await
        .unwrap();
        let failure = outcome.failure.unwrap();
        assert!(
            failure.contains("ImagePullBackOff") && failure.contains("Back-off pulling image"),
            "{failure}"
        );
        assert_eq!(notices, [failure]);
        let seen = server.await.unwrap();
        assert!(
            seen.iter()
                .any(|r| r.starts_with("DELETE") && r.contains("/jobs/ferry-hello-1")),
            "{seen:#?}"
        );
    }

    #[tokio::test]
    async fn a_run_without_jobs_is_left_to_the_store() {
        let (connection, handle) = mock::connection();
        let server = tokio::spawn(serve(handle, vec![], vec![], String::new()));
        let outcome = follow(&connection, &options(false), &mut |_| true)
            .await
            .unwrap();
        assert!(!outcome.found);
        assert_eq!(server.await.unwrap().len(), 1, "one list, nothing else");
    }
}
