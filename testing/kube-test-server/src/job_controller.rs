//! The Job controller: creates pods from the template, replaces failed ones up to
//! `backoffLimit`, enforces `activeDeadlineSeconds`, writes the status counts and the
//! SuccessCriteriaMet/Complete or FailureTarget/Failed conditions, and deletes finished Jobs
//! after `ttlSecondsAfterFinished`.
//!
//! Supported shapes: `completionMode: NonIndexed` with parallelism and completions up to any
//! number; `restartPolicy: Never` (failed pods are replaced) and `OnFailure` (treated the
//! same: the test kubelet does not restart containers in place).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::Cluster;
use crate::events::{self, EventType};
use crate::kubelet::set_condition;
use crate::lifecycle::{self, DeleteOptions, Propagation};
use crate::resources::Resource;
use crate::store::{ChangeKind, name_of, namespace_of, now_rfc3339, uid_of};
use crate::strategy;

type JobKey = (String, String);

/// What the controller remembers between passes: pods it has counted (their objects may be
/// deleted later, the counts must stay), and when it may next replace a failed pod.
#[derive(Default)]
struct JobMemory {
    succeeded: HashSet<String>,
    failed: HashSet<String>,
    not_before: Option<tokio::time::Instant>,
    ttl_scheduled: bool,
    deadline_scheduled: bool,
}

fn parse_time(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

pub async fn run(cluster: Arc<Cluster>) {
    let mut changes = cluster.store.subscribe();
    let mut shutdown = cluster.shutdown.subscribe();
    let (requeue, mut queue) = mpsc::unbounded_channel::<JobKey>();
    let mut memory: HashMap<String, JobMemory> = HashMap::new();
    loop {
        let key = tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => match change.resource {
                    Resource::Job => {
                        if change.kind == ChangeKind::Deleted {
                            memory.remove(uid_of(&change.object));
                            continue;
                        }
                        (namespace_of(&change.object).to_string(), name_of(&change.object).to_string())
                    }
                    Resource::Pod => match owner_job(&change.object) {
                        Some(job) => {
                            // Count the pod's end from the change itself: by the time this
                            // reconcile reads the store, a deleted pod may be gone, and an
                            // uncounted success would be replaced (the real controller holds
                            // pods with a tracking finalizer for the same reason).
                            if let Some(owner) = owner_uid(&change.object) {
                                count_pod(memory.entry(owner).or_default(), &change.object, cluster.config.job_backoff);
                            }
                            (namespace_of(&change.object).to_string(), job)
                        }
                        None => continue,
                    },
                    _ => continue,
                },
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    for job in cluster.store.list(Resource::Job, None).0 {
                        let _ = requeue.send((namespace_of(&job).to_string(), name_of(&job).to_string()));
                    }
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            Some(key) = queue.recv() => key,
            _ = crate::stopped(&mut shutdown) => return,
        };
        reconcile(&cluster, &key, &mut memory, &requeue);
    }
}

/// Records a finished pod in its Job's memory, once; a failure delays the replacement (the
/// real controller backs off exponentially too).
fn count_pod(mem: &mut JobMemory, pod: &Value, base_backoff: Duration) {
    match pod["status"]["phase"].as_str() {
        Some("Succeeded") => {
            mem.succeeded.insert(uid_of(pod).to_string());
        }
        Some("Failed") if mem.failed.insert(uid_of(pod).to_string()) => {
            let doublings = mem.failed.len().saturating_sub(1).min(6) as u32;
            let backoff = (base_backoff * 2u32.pow(doublings)).min(Duration::from_secs(5));
            mem.not_before = Some(tokio::time::Instant::now() + backoff);
        }
        _ => {}
    }
}

fn owner_uid(pod: &Value) -> Option<String> {
    pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["kind"] == "Job" && r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
        .map(str::to_string)
}

fn owner_job(pod: &Value) -> Option<String> {
    pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["kind"] == "Job" && r["controller"] == true)
        .and_then(|r| r["name"].as_str())
        .map(str::to_string)
}

fn requeue_after(requeue: &mpsc::UnboundedSender<JobKey>, key: &JobKey, delay: Duration) {
    let requeue = requeue.clone();
    let key = key.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = requeue.send(key);
    });
}

fn is_finished(job: &Value) -> bool {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
}

fn has_condition(status: &Value, kind: &str) -> bool {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

fn reconcile(
    cluster: &Cluster,
    key: &JobKey,
    memory: &mut HashMap<String, JobMemory>,
    requeue: &mpsc::UnboundedSender<JobKey>,
) {
    let (namespace, name) = key;
    let Some(job) = cluster.store.get(Resource::Job, namespace, name) else {
        return;
    };
    let uid = uid_of(&job).to_string();
    let mem = memory.entry(uid.clone()).or_default();
    let spec = &job["spec"];

    if is_finished(&job) {
        schedule_ttl(cluster, &job, mem, requeue, key);
        return;
    }
    if !job["metadata"]["deletionTimestamp"].is_null() {
        return;
    }

    let pods: Vec<Arc<Value>> = cluster
        .store
        .list(Resource::Pod, Some(namespace))
        .0
        .into_iter()
        .filter(|p| {
            p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| {
                    refs.iter()
                        .any(|r| r["uid"] == uid.as_str() && r["controller"] == true)
                })
        })
        .collect();
    for pod in &pods {
        count_pod(mem, pod, cluster.config.job_backoff);
    }
    let is_active =
        |p: &&Arc<Value>| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    let active: Vec<&Arc<Value>> = pods
        .iter()
        .filter(|p| is_active(p) && p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    let terminating = pods
        .iter()
        .filter(|p| is_active(p) && !p["metadata"]["deletionTimestamp"].is_null())
        .count();
    let ready = active
        .iter()
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .count();
    let completions = spec["completions"].as_u64().unwrap_or(1) as usize;
    let parallelism = spec["parallelism"].as_u64().unwrap_or(1) as usize;
    let backoff_limit = spec["backoffLimit"].as_u64().unwrap_or(6) as usize;
    let suspended = spec["suspend"].as_bool() == Some(true);
    let now = chrono::Utc::now();
    let start_time = job["status"]["startTime"].as_str().and_then(parse_time);

    // What the job has come to, if anything.
    let mut target: Option<(&str, &str, &str)> = None;
    if mem.succeeded.len() >= completions {
        target = Some((
            "SuccessCriteriaMet",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        ));
    } else if mem.failed.len() > backoff_limit {
        target = Some((
            "FailureTarget",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ));
    } else if let (Some(deadline), Some(start)) =
        (spec["activeDeadlineSeconds"].as_i64(), start_time)
    {
        if now >= start + chrono::Duration::seconds(deadline) {
            target = Some((
                "FailureTarget",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ));
        } else if !mem.deadline_scheduled {
            mem.deadline_scheduled = true;
            let wait = (start + chrono::Duration::seconds(deadline) - now)
                .to_std()
                .unwrap_or_default();
            requeue_after(requeue, key, wait + Duration::from_millis(20));
        }
    }

    let already_targeted = has_condition(&job["status"], "SuccessCriteriaMet")
        || has_condition(&job["status"], "FailureTarget");
    if let Some((condition, reason, _)) = target
        && !already_targeted
    {
        // Stop whatever still runs: a real controller deletes the remaining pods.
        for pod in &active {
            let _ = lifecycle::delete(
                cluster,
                Resource::Pod,
                namespace,
                name_of(pod),
                &DeleteOptions::default(),
            );
            events::record(
                cluster,
                Resource::Job,
                &job,
                EventType::Normal,
                "SuccessfulDelete",
                &format!("Deleted pod: {}", name_of(pod)),
                events::JOB_CONTROLLER,
            );
        }
        if condition == "FailureTarget" {
            events::record(
                cluster,
                Resource::Job,
                &job,
                EventType::Warning,
                reason,
                target.expect("set").2,
                events::JOB_CONTROLLER,
            );
        }
    }

    // New pods while the job is neither done nor suspended.
    let mut created = 0usize;
    if target.is_none() && !already_targeted && !suspended {
        let wanted = parallelism.min(completions.saturating_sub(mem.succeeded.len()));
        let missing = wanted.saturating_sub(active.len() + terminating);
        let waiting = mem
            .not_before
            .is_some_and(|t| t > tokio::time::Instant::now());
        if missing > 0 && waiting {
            requeue_after(
                requeue,
                key,
                mem.not_before
                    .expect("checked")
                    .saturating_duration_since(tokio::time::Instant::now()),
            );
        } else {
            for _ in 0..missing {
                match create_pod(cluster, &job) {
                    Ok(pod) => {
                        created += 1;
                        events::record(
                            cluster,
                            Resource::Job,
                            &job,
                            EventType::Normal,
                            "SuccessfulCreate",
                            &format!("Created pod: {}", name_of(&pod)),
                            events::JOB_CONTROLLER,
                        );
                    }
                    Err(message) => {
                        events::record(
                            cluster,
                            Resource::Job,
                            &job,
                            EventType::Warning,
                            "FailedCreate",
                            &format!("Error creating: {message}"),
                            events::JOB_CONTROLLER,
                        );
                        requeue_after(requeue, key, Duration::from_secs(1));
                        break;
                    }
                }
            }
        }
    }

    let active_now = active.len() + created;
    let still_running = active_now + terminating;
    let succeeded = mem.succeeded.len();
    let failed = mem.failed.len();
    let result = cluster
        .store
        .update(Resource::Job, namespace, name, |current| {
            let mut next = current.clone();
            let status = &mut next["status"];
            if status["startTime"].is_null() && !suspended {
                status["startTime"] = json!(now_rfc3339());
            }
            status["active"] = json!(active_now);
            status["ready"] = json!(ready);
            status["terminating"] = json!(terminating);
            status["uncountedTerminatedPods"] = json!({});
            if succeeded > 0 {
                status["succeeded"] = json!(succeeded);
            }
            if failed > 0 {
                status["failed"] = json!(failed);
            }
            if let Some((condition, reason, message)) = target
                && !has_condition(status, condition)
            {
                set_condition(status, condition, "True", Some(reason), Some(message));
            }
            // The final condition waits until no pod of the job is left running, and repeats the
            // target's reason and message.
            if let Some((reason, message)) = target_reason(status)
                && still_running == 0
            {
                if has_condition(status, "SuccessCriteriaMet") {
                    set_condition(status, "Complete", "True", Some(&reason), Some(&message));
                    status["completionTime"] = json!(now_rfc3339());
                } else {
                    set_condition(status, "Failed", "True", Some(&reason), Some(&message));
                }
                status["active"] = json!(0);
            }
            Ok(next)
        });
    if let Ok(updated) = result
        && is_finished(&updated)
        && !is_finished(&job)
    {
        if has_condition(&updated["status"], "Complete") {
            events::record(
                cluster,
                Resource::Job,
                &updated,
                EventType::Normal,
                "Completed",
                "Job completed",
                events::JOB_CONTROLLER,
            );
        }
        schedule_ttl(cluster, &updated, mem, requeue, key);
    }
}

/// Reason and message of the SuccessCriteriaMet or FailureTarget condition, if set.
fn target_reason(status: &Value) -> Option<(String, String)> {
    let condition = status["conditions"].as_array()?.iter().find(|c| {
        (c["type"] == "SuccessCriteriaMet" || c["type"] == "FailureTarget") && c["status"] == "True"
    })?;
    Some((
        condition["reason"].as_str().unwrap_or_default().to_string(),
        condition["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ))
}

/// `ttlSecondsAfterFinished`: the TTL controller deletes the Job (foreground, so its pods go
/// first) once that long has passed since it finished.
fn schedule_ttl(
    cluster: &Cluster,
    job: &Value,
    mem: &mut JobMemory,
    requeue: &mpsc::UnboundedSender<JobKey>,
    key: &JobKey,
) {
    let Some(ttl) = job["spec"]["ttlSecondsAfterFinished"].as_i64() else {
        return;
    };
    let finished_at = job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
        .filter_map(|c| c["lastTransitionTime"].as_str().and_then(parse_time))
        .next()
        .unwrap_or_else(chrono::Utc::now);
    let expires = finished_at + chrono::Duration::seconds(ttl);
    let now = chrono::Utc::now();
    if now >= expires {
        let options = DeleteOptions {
            propagation: Some(Propagation::Foreground),
            uid: Some(uid_of(job).to_string()),
            ..DeleteOptions::default()
        };
        let _ = lifecycle::delete(
            cluster,
            Resource::Job,
            namespace_of(job),
            name_of(job),
            &options,
        );
    } else if !mem.ttl_scheduled {
        mem.ttl_scheduled = true;
        requeue_after(
            requeue,
            key,
            (expires - now).to_std().unwrap_or_default() + Duration::from_millis(20),
        );
    }
}

/// A pod from the Job's template, owned by it, as the real controller makes them.
fn create_pod(cluster: &Cluster, job: &Value) -> Result<Arc<Value>, String> {
    let namespace = namespace_of(job);
    let template = &job["spec"]["template"];
    let mut metadata = template["metadata"].clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["generateName"] = json!(format!("{}-", name_of(job)));
    metadata["namespace"] = json!(namespace);
    metadata["ownerReferences"] = json!([{
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": name_of(job),
        "uid": uid_of(job),
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
    if let Some(m) = metadata.as_object_mut() {
        m.remove("name");
    }
    let mut pod = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"].clone() });
    strategy::prepare_for_create(Resource::Pod, &mut pod);
    strategy::admit(cluster, Resource::Pod, namespace, &pod).map_err(|e| e.message)?;
    let causes = crate::validation::validate(Resource::Pod, &pod, None);
    if !causes.is_empty() {
        let error = crate::status::ApiError::invalid(Resource::Pod, "", &causes);
        return Err(error.message);
    }
    cluster
        .store
        .create(Resource::Pod, namespace, pod)
        .map_err(|e| e.message)
}
