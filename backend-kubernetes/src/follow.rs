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
use kube::api::{Api, DeleteParams, ListParams, LogParams};
use kube::runtime::watcher;
use orchestrator_core::abi::PluginError;
use orchestrator_core::run::{Event, RunRecord, RunStatus, StepStatus};
use orchestrator_core::store::{Store, layout};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::client::Connection;
use crate::launch::{api_error, retry};
use crate::manifest::{CONTAINER, RUN_LABEL};

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
const DRAIN: Duration = Duration::from_secs(3);

pub struct FollowOptions<'a> {
    pub run_id: &'a str,
    pub step: Option<&'a str>,
    pub follow: bool,
    pub pending_timeout: Duration,
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

fn unschedulable(pod: &Pod) -> Option<String> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let c = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    (c.reason.as_deref() == Some("Unschedulable")).then(|| c.message.clone().unwrap_or_default())
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
        match pods.log_stream(&name, &params).await {
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
    let selector = format!("{RUN_LABEL}={}", options.run_id);
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
    let mut pod_events =
        watcher(pods.clone(), watcher::Config::default().labels(&selector)).boxed();
    let mut job_events =
        watcher(jobs.clone(), watcher::Config::default().labels(&selector)).boxed();
    let mut pending_since: HashMap<String, Instant> = HashMap::new();
    let mut all_finished_at: Option<Instant> = None;
    // Until the pods have been listed once, a finished Job may still have logs to stream.
    let mut pods_synced = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));

    loop {
        tokio::select! {
            Some(event) = pod_events.next() => {
                let pod = match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
                    Ok(watcher::Event::InitDone) => {
                        pods_synced = true;
                        continue;
                    }
                    Ok(_) => continue,
                    Err(error) => {
                        tracing::debug!(%error, "pod watch error; the watcher retries");
                        continue;
                    }
                };
                let name = pod.metadata.name.clone().unwrap_or_default();
                match unschedulable(&pod) {
                    Some(_) => { pending_since.entry(name.clone()).or_insert_with(Instant::now); }
                    None => { pending_since.remove(&name); }
                }
                if let Some(state) = container_state(&pod) {
                    if let Some(waiting) = &state.waiting
                        && let Some(reason) = waiting.reason.as_deref()
                        && FATAL_WAITING.contains(&reason)
                        && outcome.failure.is_none()
                    {
                        outcome.failure = Some(format!(
                            "pod {name} cannot start: {reason}: {}",
                            waiting.message.clone().unwrap_or_default()
                        ));
                    }
                    if let Some(terminated) = &state.terminated {
                        outcome.exit_code = Some(terminated.exit_code);
                        if terminated.reason.as_deref() == Some("OOMKilled") && outcome.failure.is_none() {
                            // A failure whatever the exit code says.
                            outcome.failure = Some(format!("pod {name} was killed for using more memory than its limit (OOMKilled)"));
                            outcome.exit_code = Some(if terminated.exit_code == 0 { 137 } else { terminated.exit_code });
                        }
                    }
                    if (state.running.is_some() || state.terminated.is_some()) && streamed.insert(name.clone()) {
                        spawn_log_stream(&pods, name.clone(), true, tx.clone());
                        streams_open += 1;
                    }
                }
                if let Some(status) = &pod.status
                    && status.reason.as_deref() == Some("Evicted")
                    && outcome.failure.is_none()
                {
                    outcome.failure = Some(format!("pod {name} was evicted: {}", status.message.clone().unwrap_or_default()));
                }
            }
            Some(event) = job_events.next() => {
                if let Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job)) = event {
                    job_states.insert(job.metadata.name.clone().unwrap_or_default(), job);
                }
            }
            Some(message) = rx.recv() => match message {
                Message::Line(line) => {
                    if !deliver(&line, options, &mut outcome, sink) {
                        return Ok(outcome);
                    }
                }
                Message::End => streams_open = streams_open.saturating_sub(1),
            },
            _ = tick.tick() => {
                if outcome.failure.is_none()
                    && let Some((pod, since)) = pending_since.iter().next()
                    && since.elapsed() >= options.pending_timeout
                {
                    outcome.failure = Some(format!(
                        "pod {pod} could not be scheduled for {}; see `kubectl describe pod {pod}` (node selector, tolerations, resources)",
                        humantime::format_duration(options.pending_timeout)
                    ));
                }
            }
        }
        if let Some(failure) = &outcome.failure
            && all_finished_at.is_none()
        {
            sink(Event::Notice {
                step: None,
                text: failure.clone(),
                time: Utc::now(),
            });
            // It will not get better: stop the run's Jobs rather than leave them pending.
            for name in job_states.keys() {
                let _ = jobs.delete(name, &DeleteParams::background()).await;
            }
            all_finished_at = Some(Instant::now());
        }
        if all_finished_at.is_none() && job_states.values().all(|j| job_finished(j).is_some()) {
            all_finished_at = Some(Instant::now());
            if let Some((false, reason)) = job_states
                .values()
                .find_map(job_finished)
                .filter(|(ok, _)| !ok)
                && reason == "DeadlineExceeded"
            {
                outcome.failure =
                    Some("the run exceeded `active_deadline_seconds` and was stopped".into());
            }
        }
        if let Some(at) = all_finished_at
            && ((pods_synced && streams_open == 0) || at.elapsed() >= DRAIN)
        {
            return Ok(outcome);
        }
    }
}

/// Records what Kubernetes said when the agent could not: a run whose record is not final
/// becomes failed with the reason, its running steps failed and the rest cancelled.
pub fn record_failure(
    store: &Store,
    run_id: &str,
    outcome: &Outcome,
) -> Result<Option<RunRecord>, PluginError> {
    let Some(mut record) = store.get_json::<RunRecord>(&layout::run_record(run_id))? else {
        return Ok(None);
    };
    if record.status.is_finished() {
        return Ok(Some(record));
    }
    let now = Utc::now();
    record.status = RunStatus::Failed;
    record.finished_at = Some(now);
    record.error = Some(
        outcome
            .failure
            .clone()
            .unwrap_or_else(|| "the run's Job ended without its agent recording a result".into()),
    );
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
    store.put_json(&layout::run_record(run_id), &record)?;
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;
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
            run_id: RUN,
            step: None,
            follow,
            pending_timeout: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn agent_events_stream_from_the_pod_log_until_the_job_ends() {
        let (client, handle) = mock::client();
        let connection = Connection {
            client,
            namespace: "default".into(),
            source: "test".into(),
        };
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
        assert!(
            seen.iter()
                .any(|r| r.contains("/pods?") && r.contains("watch=true")),
            "pods are watched: {seen:#?}"
        );
        assert!(
            seen.iter().any(|r| r.contains("/log?")
                && r.contains("follow=true")
                && r.contains("container=ferry")),
            "{seen:#?}"
        );
    }

    #[tokio::test]
    async fn an_image_that_cannot_be_pulled_fails_the_run_at_once_and_deletes_its_job() {
        let (client, handle) = mock::client();
        let connection = Connection {
            client,
            namespace: "default".into(),
            source: "test".into(),
        };
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
        let (client, handle) = mock::client();
        let connection = Connection {
            client,
            namespace: "default".into(),
            source: "test".into(),
        };
        let server = tokio::spawn(serve(handle, vec![], vec![], String::new()));
        let outcome = follow(&connection, &options(false), &mut |_| true)
            .await
            .unwrap();
        assert!(!outcome.found);
        assert_eq!(server.await.unwrap().len(), 1, "one list, nothing else");
    }
}
