//! The scheduler and kubelet of the one node: binds pods, "pulls" images, resolves env and
//! volumes, runs each container's command as a local process group, streams its output to
//! the pod log, reports phases and exit codes, and stops the process when the pod is deleted.
//!
//! What a real node does and this one cannot: images are not run, so a container needs an
//! explicit `command`; the process sees the host file system, so volumes are files under the
//! pod's own directory (`<data>/pods/<ns>/<pod>/root`, which is also the default working
//! directory) and an absolute `mountPath` or `workingDir` is taken relative to that root.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;
use tokio::sync::watch;

use crate::Cluster;
use crate::events::{self, EventType};
use crate::faults::PodMatch;
use crate::logs::LogBuffer;
use crate::resources::Resource;
use crate::store::{ChangeKind, name_of, namespace_of, now_rfc3339, uid_of};

/// The kubelet's view of one pod it runs.
struct PodHandle {
    uid: String,
    /// Bumped whenever the pod changes; every waiter has its own receiver, so no wake-up is
    /// lost and each container's supervisor sees it.
    wake: Arc<watch::Sender<u64>>,
    /// Process groups of the running containers.
    groups: Arc<Mutex<Vec<i32>>>,
    /// Set when the pod is evicted, with the message to report.
    evicted: Arc<Mutex<Option<String>>>,
    dir: PathBuf,
}

impl PodHandle {
    /// SIGKILLs the pod's process groups and wakes its task.
    fn kill(&self) {
        for pgid in self.groups.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            signal_group(*pgid, libc::SIGKILL);
        }
        bump(&self.wake);
    }
}

#[derive(Default)]
pub struct Kubelet {
    pods: Mutex<HashMap<(String, String), PodHandle>>,
}

fn bump(wake: &watch::Sender<u64>) {
    wake.send_modify(|v| *v += 1);
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; it has no memory effects.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

impl Kubelet {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), PodHandle>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// SIGKILLs every pod process (server shutdown).
    pub fn kill_all(&self) {
        for handle in self.lock().values() {
            handle.kill();
        }
    }

    /// The pod is gone from the API: stop anything left and remove its directory.
    pub fn forget(&self, namespace: &str, name: &str) {
        let handle = self
            .lock()
            .remove(&(namespace.to_string(), name.to_string()));
        if let Some(handle) = handle {
            handle.kill();
            let dir = handle.dir;
            std::thread::spawn(move || {
                let _ = std::fs::remove_dir_all(&dir);
            });
        }
    }

    fn wake(&self, namespace: &str, name: &str) {
        if let Some(handle) = self.lock().get(&(namespace.to_string(), name.to_string())) {
            bump(&handle.wake);
        }
    }
}

pub async fn run(cluster: Arc<Cluster>) {
    let mut changes = cluster.store.subscribe();
    let mut shutdown = cluster.shutdown.subscribe();
    adopt_pods(&cluster);
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            _ = crate::stopped(&mut shutdown) => return,
        };
        match change {
            Ok(change) if change.resource == Resource::Pod => {
                let (ns, name) = (namespace_of(&change.object), name_of(&change.object));
                match change.kind {
                    ChangeKind::Added => start_pod(&cluster, &change.object),
                    ChangeKind::Modified => cluster.kubelet.wake(ns, name),
                    ChangeKind::Deleted => cluster.kubelet.forget(ns, name),
                }
            }
            // A ConfigMap or Secret a waiting pod needs may have appeared.
            Ok(change)
                if matches!(
                    change.resource,
                    Resource::ConfigMap | Resource::Secret | Resource::ServiceAccount
                ) =>
            {
                for handle in cluster.kubelet.lock().values() {
                    bump(&handle.wake);
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => adopt_pods(&cluster),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Starts tasks for pods without one (after missed changes) and wakes the others.
fn adopt_pods(cluster: &Arc<Cluster>) {
    for pod in cluster.store.list(Resource::Pod, None).0 {
        start_pod(cluster, &pod);
        cluster.kubelet.wake(namespace_of(&pod), name_of(&pod));
    }
}

fn start_pod(cluster: &Arc<Cluster>, pod: &Value) {
    let key = (namespace_of(pod).to_string(), name_of(pod).to_string());
    let uid = uid_of(pod).to_string();
    let mut pods = cluster.kubelet.lock();
    if pods.get(&key).is_some_and(|h| h.uid == uid) {
        return;
    }
    let dir = cluster
        .config
        .data_dir
        .join("pods")
        .join(&key.0)
        .join(format!("{}-{}", key.1, &uid[..8.min(uid.len())]));
    let handle = PodHandle {
        uid: uid.clone(),
        wake: Arc::new(watch::channel(0).0),
        groups: Arc::default(),
        evicted: Arc::default(),
        dir: dir.clone(),
    };
    let task = PodTask {
        cluster: cluster.clone(),
        namespace: key.0.clone(),
        name: key.1.clone(),
        uid,
        wake: handle.wake.clone(),
        wake_rx: tokio::sync::Mutex::new(handle.wake.subscribe()),
        groups: handle.groups.clone(),
        evicted: handle.evicted.clone(),
        dir,
    };
    pods.insert(key, handle);
    drop(pods);
    tokio::spawn(task.run());
}

/// Evicts matching pods: their processes are killed and they fail with reason `Evicted`.
pub async fn evict(cluster: &Arc<Cluster>, pods: &PodMatch, message: &str) -> Vec<String> {
    let mut evicted = Vec::new();
    for pod in cluster.store.list(Resource::Pod, None).0 {
        if !pods.matches(&pod)
            || matches!(
                pod["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            )
        {
            continue;
        }
        let kubelet = cluster.kubelet.lock();
        if let Some(handle) =
            kubelet.get(&(namespace_of(&pod).to_string(), name_of(&pod).to_string()))
        {
            *handle.evicted.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.to_string());
            handle.kill();
            evicted.push(name_of(&pod).to_string());
        }
    }
    evicted
}

/// Why a container cannot start yet: a reason for `state.waiting` and a message.
struct Waiting {
    reason: &'static str,
    message: String,
}

struct PodTask {
    cluster: Arc<Cluster>,
    namespace: String,
    name: String,
    uid: String,
    wake: Arc<watch::Sender<u64>>,
    wake_rx: tokio::sync::Mutex<watch::Receiver<u64>>,
    groups: Arc<Mutex<Vec<i32>>>,
    evicted: Arc<Mutex<Option<String>>>,
    dir: PathBuf,
}

/// The end of one container.
struct Exit {
    code: i32,
    reason: &'static str,
    message: Option<String>,
    started_at: String,
    finished_at: String,
}

impl PodTask {
    /// The pod as stored now, if it is still this pod.
    fn current(&self) -> Option<Arc<Value>> {
        self.cluster
            .store
            .get(Resource::Pod, &self.namespace, &self.name)
            .filter(|p| uid_of(p) == self.uid)
    }

    fn is_deleting(pod: &Value) -> bool {
        !pod["metadata"]["deletionTimestamp"].is_null()
    }

    fn update_status(&self, f: impl FnOnce(&mut Value)) -> Option<Arc<Value>> {
        self.cluster
            .store
            .update(Resource::Pod, &self.namespace, &self.name, |current| {
                let mut next = current.clone();
                f(&mut next["status"]);
                Ok(next)
            })
            .ok()
    }

    fn event(
        &self,
        pod: &Value,
        event_type: EventType,
        reason: &str,
        message: &str,
        component: &str,
    ) {
        events::record(
            &self.cluster,
            Resource::Pod,
            pod,
            event_type,
            reason,
            message,
            component,
        );
    }

    fn eviction(&self) -> Option<String> {
        self.evicted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits for a change to the pod (or a retry interval).
    async fn wait(&self, retry: Duration) {
        let mut wake = self.wake_rx.lock().await;
        let _ = tokio::time::timeout(retry, wake.changed()).await;
    }

    async fn run(self) {
        if self.cluster.is_shutting_down() {
            return;
        }
        let Some(pod) = self.schedule().await else {
            return;
        };
        let containers: Vec<Value> = pod["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let Some(pod) = self.pull_images(&containers).await else {
            return;
        };
        let Some(prepared) = self.prepare(&containers).await else {
            return;
        };
        let exits = self.run_containers(&pod, prepared).await;
        self.finish(exits).await;
    }

    /// The pod, while it is still to be started: a pod deleted or evicted before its
    /// containers ran is removed or failed here, and `None` ends the task.
    fn still_to_start(&self) -> Option<Arc<Value>> {
        let pod = self.current()?;
        if Self::is_deleting(&pod) {
            self.remove_unstarted(&pod);
            return None;
        }
        if let Some(message) = self.eviction() {
            self.fail_unstarted(&pod, &message);
            return None;
        }
        Some(pod)
    }

    /// Binds the pod to the node, or leaves it Pending with the scheduler's reason.
    async fn schedule(&self) -> Option<Arc<Value>> {
        let mut reported = false;
        loop {
            let pod = self.still_to_start()?;
            if !pod["spec"]["nodeName"].is_null() {
                return Some(pod);
            }
            match self.unschedulable_reason(&pod) {
                Some(message) => {
                    if !reported {
                        reported = true;
                        self.update_status(|status| {
                            set_condition(
                                status,
                                "PodScheduled",
                                "False",
                                Some("Unschedulable"),
                                Some(&message),
                            );
                        });
                        self.event(
                            &pod,
                            EventType::Warning,
                            "FailedScheduling",
                            &message,
                            events::SCHEDULER,
                        );
                    }
                    self.wait(Duration::from_secs(1)).await;
                }
                None => {
                    let node = self.cluster.config.node_name.clone();
                    let bound = self.cluster.store.update(
                        Resource::Pod,
                        &self.namespace,
                        &self.name,
                        |current| {
                            let mut next = current.clone();
                            next["spec"]["nodeName"] = json!(node);
                            set_condition(&mut next["status"], "PodScheduled", "True", None, None);
                            Ok(next)
                        },
                    );
                    let Ok(bound) = bound else { return None };
                    self.event(
                        &bound,
                        EventType::Normal,
                        "Scheduled",
                        &format!(
                            "Successfully assigned {}/{} to {node}",
                            self.namespace, self.name
                        ),
                        events::SCHEDULER,
                    );
                    return Some(bound);
                }
            }
        }
    }

    fn unschedulable_reason(&self, pod: &Value) -> Option<String> {
        let config = &self.cluster.config;
        const SUFFIX: &str =
            " preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
        if self.cluster.faults.unschedulable(pod) {
            return Some(format!(
                "0/1 nodes are available: 1 node(s) had untolerated taint {{node.kubernetes.io/unschedulable: }}.{SUFFIX}"
            ));
        }
        let selector_ok = pod["spec"]["nodeSelector"]
            .as_object()
            .into_iter()
            .flatten()
            .all(|(k, v)| config.node_labels.get(k).map(String::as_str) == v.as_str());
        let affinity_ok = node_affinity_matches(&pod["spec"]["affinity"], &config.node_labels);
        if !selector_ok || !affinity_ok {
            return Some(format!(
                "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.{SUFFIX}"
            ));
        }
        let mut cpu = 0i128;
        let mut memory = 0i128;
        for container in pod["spec"]["containers"].as_array().into_iter().flatten() {
            let requests = &container["resources"]["requests"];
            cpu += requests["cpu"]
                .as_str()
                .and_then(crate::validation::quantity_milli_value)
                .unwrap_or(0);
            memory += requests["memory"]
                .as_str()
                .and_then(crate::validation::quantity_milli_value)
                .unwrap_or(0)
                / 1000;
        }
        let mut short = Vec::new();
        if cpu > i128::from(config.node_cpu_millis) {
            short.push("1 Insufficient cpu");
        }
        if memory > i128::from(config.node_memory_bytes) {
            short.push("1 Insufficient memory");
        }
        if !short.is_empty() {
            return Some(format!(
                "0/1 nodes are available: {}.{SUFFIX}",
                short.join(", ")
            ));
        }
        None
    }

    /// Pod removed before anything ran: nothing to stop.
    fn remove_unstarted(&self, pod: &Value) {
        let _ = self.cluster.store.remove(
            Resource::Pod,
            &self.namespace,
            &self.name,
            Some(uid_of(pod)),
        );
        self.cluster.kubelet.forget(&self.namespace, &self.name);
        self.cluster.logs.remove_pod(&self.namespace, &self.name);
    }

    fn fail_unstarted(&self, pod: &Value, message: &str) {
        self.update_status(|status| {
            status["phase"] = json!("Failed");
            status["reason"] = json!("Evicted");
            status["message"] = json!(message);
            set_condition(
                status,
                "DisruptionTarget",
                "True",
                Some("TerminationByKubelet"),
                Some(message),
            );
        });
        self.event(pod, EventType::Warning, "Evicted", message, events::KUBELET);
    }

    /// Pulls every image, or reports ErrImagePull / ImagePullBackOff until the pod goes.
    async fn pull_images(&self, containers: &[Value]) -> Option<Arc<Value>> {
        let mut attempt = 0u32;
        loop {
            let pod = self.still_to_start()?;
            let failing: Vec<String> = containers
                .iter()
                .filter_map(|c| c["image"].as_str())
                .filter(|image| self.cluster.faults.image_fails_to_pull(image))
                .map(str::to_string)
                .collect();
            if failing.is_empty() {
                for container in containers {
                    let image = container["image"].as_str().unwrap_or_default();
                    if container["imagePullPolicy"] == "Always" {
                        self.event(
                            &pod,
                            EventType::Normal,
                            "Pulling",
                            &format!("Pulling image \"{image}\""),
                            events::KUBELET,
                        );
                        self.event(
                            &pod,
                            EventType::Normal,
                            "Pulled",
                            &format!("Successfully pulled image \"{image}\" in 0s (0s including waiting). Image size: 0 bytes."),
                            events::KUBELET,
                        );
                    } else {
                        self.event(
                            &pod,
                            EventType::Normal,
                            "Pulled",
                            &format!("Container image \"{image}\" already present on machine and can be accessed by the pod"),
                            events::KUBELET,
                        );
                    }
                }
                return Some(pod);
            }
            // Alternate as a real kubelet does: a pull attempt fails (ErrImagePull), then it
            // backs off (ImagePullBackOff).
            let back_off = attempt % 2 == 1;
            attempt += 1;
            let image = failing[0].clone();
            let (reason, message) = if back_off {
                (
                    "ImagePullBackOff",
                    format!("Back-off pulling image \"{image}\""),
                )
            } else {
                (
                    "ErrImagePull",
                    format!(
                        "rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": not found"
                    ),
                )
            };
            self.set_waiting(containers, |c| {
                if failing.iter().any(|f| c["image"] == f.as_str()) {
                    Some((reason, message.clone()))
                } else {
                    None
                }
            });
            if back_off {
                self.event(
                    &pod,
                    EventType::Normal,
                    "BackOff",
                    &message,
                    events::KUBELET,
                );
            } else {
                self.event(
                    &pod,
                    EventType::Normal,
                    "Pulling",
                    &format!("Pulling image \"{image}\""),
                    events::KUBELET,
                );
                self.event(
                    &pod,
                    EventType::Warning,
                    "Failed",
                    &format!("Failed to pull image \"{image}\": {message}"),
                    events::KUBELET,
                );
                self.event(
                    &pod,
                    EventType::Warning,
                    "Failed",
                    &format!("Error: {reason}"),
                    events::KUBELET,
                );
            }
            self.wait(Duration::from_millis(500)).await;
        }
    }

    /// Writes `state.waiting` for the containers `waiting` names (others: ContainerCreating).
    fn set_waiting(
        &self,
        containers: &[Value],
        waiting: impl Fn(&Value) -> Option<(&'static str, String)>,
    ) {
        let statuses: Vec<Value> = containers
            .iter()
            .map(|c| {
                let (reason, message) = waiting(c).unwrap_or(("ContainerCreating", String::new()));
                let mut state = json!({ "reason": reason });
                if !message.is_empty() {
                    state["message"] = json!(message);
                }
                json!({
                    "name": c["name"], "image": c["image"], "imageID": "", "ready": false, "restartCount": 0,
                    "started": false, "state": { "waiting": state }, "lastState": {},
                })
            })
            .collect();
        self.update_status(|status| {
            status["containerStatuses"] = json!(statuses);
            set_condition(status, "Initialized", "True", None, None);
            set_condition(
                status,
                "Ready",
                "False",
                Some("ContainersNotReady"),
                Some("containers with unready status"),
            );
            set_condition(
                status,
                "ContainersReady",
                "False",
                Some("ContainersNotReady"),
                Some("containers with unready status"),
            );
        });
    }

    /// Resolves env and volumes for every container, waiting while a ConfigMap or Secret is
    /// missing (CreateContainerConfigError), as a real kubelet retries.
    async fn prepare(&self, containers: &[Value]) -> Option<Vec<Prepared>> {
        let mut reported = String::new();
        loop {
            let pod = self.still_to_start()?;
            let result: Result<Vec<Prepared>, Waiting> = (|| {
                let root = self.dir.join("root");
                materialise_volumes(&self.cluster, &pod, &self.dir, &root)?;
                containers
                    .iter()
                    .map(|c| prepare_container(&self.cluster, &pod, c, &root))
                    .collect()
            })();
            match result {
                Ok(prepared) => return Some(prepared),
                Err(waiting) => {
                    if reported != waiting.message {
                        reported = waiting.message.clone();
                        self.set_waiting(containers, |_| {
                            Some((waiting.reason, waiting.message.clone()))
                        });
                        self.event(
                            &pod,
                            EventType::Warning,
                            "Failed",
                            &format!("Error: {}", waiting.message),
                            events::KUBELET,
                        );
                    }
                    self.wait(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn run_containers(&self, pod: &Value, prepared: Vec<Prepared>) -> Vec<(Value, Exit)> {
        let started_at = now_rfc3339();
        let mut running = Vec::new();
        for p in prepared {
            let log = self
                .cluster
                .logs
                .start(&self.namespace, &self.name, &p.name);
            match spawn(&p, log.clone()) {
                Ok(child) => {
                    self.groups
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(child.pgid);
                    self.event(
                        pod,
                        EventType::Normal,
                        "Created",
                        &format!("Created container: {}", p.name),
                        events::KUBELET,
                    );
                    self.event(
                        pod,
                        EventType::Normal,
                        "Started",
                        &format!("Started container {}", p.name),
                        events::KUBELET,
                    );
                    running.push((p, Some(child), log));
                }
                Err(message) => {
                    log.close();
                    self.event(
                        pod,
                        EventType::Warning,
                        "Failed",
                        &format!("Error: {message}"),
                        events::KUBELET,
                    );
                    running.push((
                        Prepared {
                            start_error: Some(message),
                            ..p
                        },
                        None,
                        log,
                    ));
                }
            }
        }
        let statuses: Vec<Value> = running
            .iter()
            .map(|(p, child, _)| match child {
                Some(child) => json!({
                    "name": p.name, "image": p.image, "imageID": image_id(&p.image), "ready": true, "restartCount": 0,
                    "started": true, "containerID": format!("kube-test://{}", child.pgid),
                    "state": { "running": { "startedAt": started_at } }, "lastState": {},
                }),
                None => json!({
                    "name": p.name, "image": p.image, "imageID": "", "ready": false, "restartCount": 0, "started": false,
                    "state": { "waiting": { "reason": "RunContainerError", "message": p.start_error } }, "lastState": {},
                }),
            })
            .collect();
        let all_started = running.iter().all(|(_, c, _)| c.is_some());
        self.update_status(|status| {
            status["phase"] = json!("Running");
            status["hostIP"] = json!("127.0.0.1");
            status["hostIPs"] = json!([{ "ip": "127.0.0.1" }]);
            status["podIP"] = json!("127.0.0.1");
            status["podIPs"] = json!([{ "ip": "127.0.0.1" }]);
            status["startTime"] = json!(started_at);
            status["containerStatuses"] = json!(statuses);
            set_condition(status, "PodReadyToStartContainers", "True", None, None);
            set_condition(status, "Initialized", "True", None, None);
            if all_started {
                set_condition(status, "ContainersReady", "True", None, None);
                set_condition(status, "Ready", "True", None, None);
            }
        });

        let oom = self.cluster.faults.oom_kill(pod);
        let mut exits = Vec::new();
        let mut waits = Vec::new();
        for (p, child, log) in running {
            let Some(child) = child else {
                let now = now_rfc3339();
                exits.push((
                    json!({"name": p.name, "image": p.image}),
                    Exit {
                        code: 128,
                        reason: "StartError",
                        message: p.start_error.clone(),
                        started_at: now.clone(),
                        finished_at: now,
                    },
                ));
                continue;
            };
            waits.push(self.supervise(p, child, log, oom.clone(), started_at.clone()));
        }
        exits.extend(futures::future::join_all(waits).await);
        exits
    }

    /// Waits for one container's process, stopping it when the pod is deleted, evicted or
    /// OOM-killed by a fault.
    async fn supervise(
        &self,
        p: Prepared,
        mut child: Child,
        log: Arc<LogBuffer>,
        oom: Option<crate::faults::OomKill>,
        started_at: String,
    ) -> (Value, Exit) {
        let oom_at = oom
            .as_ref()
            .map(|o| tokio::time::Instant::now() + Duration::from_millis(o.after_ms));
        let mut oom_killed = false;
        let mut stop_deadline: Option<tokio::time::Instant> = None;
        let mut wake = self.wake.subscribe();
        let status = loop {
            let oom_sleep = async {
                match oom_at {
                    Some(at) if !oom_killed => tokio::time::sleep_until(at).await,
                    _ => std::future::pending().await,
                }
            };
            let kill_sleep = async {
                match stop_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                status = child.process.wait() => break status,
                _ = oom_sleep => {
                    oom_killed = true;
                    signal_group(child.pgid, libc::SIGKILL);
                }
                _ = kill_sleep => {
                    signal_group(child.pgid, libc::SIGKILL);
                    stop_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
                }
                _ = wake.changed() => {
                    if stop_deadline.is_none() {
                        let pod = self.current();
                        if let Some(pod) = pod.as_ref().filter(|p| Self::is_deleting(p)) {
                            let grace = pod["metadata"]["deletionGracePeriodSeconds"].as_u64().unwrap_or(30);
                            self.event(pod, EventType::Normal, "Killing", &format!("Stopping container {}", p.name), events::KUBELET);
                            signal_group(child.pgid, libc::SIGTERM);
                            stop_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(grace));
                        } else if pod.is_none() {
                            signal_group(child.pgid, libc::SIGKILL);
                            stop_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
                        }
                    }
                }
            }
        };
        // The output pipes may still hold data after exit; the readers close the log at EOF.
        // A daemonised grandchild can keep the pipes open: give up on it after a moment.
        let _ = tokio::time::timeout(Duration::from_secs(2), child.output_done).await;
        log.close();
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|g| *g != child.pgid);
        let code = match status {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt as _;
                status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(9))
            }
            Err(_) => 128,
        };
        let (code, reason) = match (&oom, oom_killed) {
            (Some(oom), true) => (oom.exit_code, "OOMKilled"),
            _ if code == 0 => (0, "Completed"),
            _ => (code, "Error"),
        };
        let exit = Exit {
            code,
            reason,
            message: None,
            started_at,
            finished_at: now_rfc3339(),
        };
        (
            json!({ "name": p.name, "image": p.image, "containerID": format!("kube-test://{}", child.pgid) }),
            exit,
        )
    }

    /// Reports the pod's end; removes it if it was being deleted.
    async fn finish(&self, exits: Vec<(Value, Exit)>) {
        let eviction = self.eviction();
        // The phase follows the exit codes alone: a container OOM-killed with exit code 0 (as
        // some runtimes report) leaves a Succeeded pod, and clients must look at the reason.
        let succeeded = eviction.is_none() && exits.iter().all(|(_, e)| e.code == 0);
        let statuses: Vec<Value> = exits
            .iter()
            .map(|(c, e)| {
                let mut terminated = json!({
                    "exitCode": e.code, "reason": e.reason, "startedAt": e.started_at, "finishedAt": e.finished_at,
                });
                if let Some(m) = &e.message {
                    terminated["message"] = json!(m);
                }
                if let Some(id) = c.get("containerID") {
                    terminated["containerID"] = id.clone();
                }
                json!({
                    "name": c["name"], "image": c["image"], "imageID": image_id(c["image"].as_str().unwrap_or_default()),
                    "containerID": c.get("containerID").cloned().unwrap_or(Value::Null),
                    "ready": false, "restartCount": 0, "started": false,
                    "state": { "terminated": terminated }, "lastState": {},
                })
            })
            .collect();
        let Some(updated) = self.update_status(|status| {
            status["phase"] = json!(if succeeded { "Succeeded" } else { "Failed" });
            status["containerStatuses"] = json!(statuses);
            let why = if succeeded {
                "PodCompleted"
            } else {
                "PodFailed"
            };
            set_condition(status, "PodReadyToStartContainers", "False", None, None);
            set_condition(status, "Ready", "False", Some(why), None);
            set_condition(status, "ContainersReady", "False", Some(why), None);
            if let Some(message) = &eviction {
                status["reason"] = json!("Evicted");
                status["message"] = json!(message);
                set_condition(
                    status,
                    "DisruptionTarget",
                    "True",
                    Some("TerminationByKubelet"),
                    Some(message),
                );
            }
        }) else {
            return;
        };
        if let Some(message) = &eviction {
            self.event(
                &updated,
                EventType::Warning,
                "Evicted",
                message,
                events::KUBELET,
            );
        }
        if Self::is_deleting(&updated) {
            self.remove_unstarted(&updated);
        }
    }
}

fn image_id(image: &str) -> String {
    let digest = fake_digest(image);
    format!("{image}@sha256:{digest}")
}

/// A stable fake digest for an image name (the node has no real images).
fn fake_digest(text: &str) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut out = String::new();
    for salt in 0u64..4 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (salt, text).hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

pub(crate) fn set_condition(
    status: &mut Value,
    kind: &str,
    value: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let conditions = status["conditions"].as_array_mut().expect("set above");
    let now = now_rfc3339();
    let existing = conditions.iter_mut().find(|c| c["type"] == kind);
    let mut condition =
        json!({ "type": kind, "status": value, "lastProbeTime": null, "lastTransitionTime": now });
    if let Some(reason) = reason {
        condition["reason"] = json!(reason);
    }
    if let Some(message) = message {
        condition["message"] = json!(message);
    }
    match existing {
        Some(old) => {
            if old["status"] == value {
                condition["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = condition;
        }
        None => conditions.push(condition),
    }
}

/// `requiredDuringSchedulingIgnoredDuringExecution` node affinity against the node's labels.
fn node_affinity_matches(
    affinity: &Value,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let terms = &affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    let Some(terms) = terms.as_array() else {
        return true;
    };
    // Terms are ORed, expressions within a term ANDed.
    terms.iter().any(|term| {
        term["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|expr| {
                let value = expr["key"].as_str().and_then(|k| labels.get(k));
                let values: Vec<&str> = expr["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                match expr["operator"].as_str() {
                    Some("In") => value.is_some_and(|v| values.contains(&v.as_str())),
                    Some("NotIn") => value.is_none_or(|v| !values.contains(&v.as_str())),
                    Some("Exists") => value.is_some(),
                    Some("DoesNotExist") => value.is_none(),
                    Some("Gt") => value
                        .and_then(|v| v.parse::<i64>().ok())
                        .zip(values.first().and_then(|v| v.parse::<i64>().ok()))
                        .is_some_and(|(a, b)| a > b),
                    Some("Lt") => value
                        .and_then(|v| v.parse::<i64>().ok())
                        .zip(values.first().and_then(|v| v.parse::<i64>().ok()))
                        .is_some_and(|(a, b)| a < b),
                    _ => false,
                }
            })
    })
}

/// A container ready to start.
struct Prepared {
    name: String,
    image: String,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    home: PathBuf,
    path: std::ffi::OsString,
    inherit: Vec<(String, std::ffi::OsString)>,
    /// Stands in for the service-account token a real kubelet mounts: a kubeconfig for this
    /// server, so that in-pod clients find the API the standard way (`$KUBECONFIG`).
    service_account_kubeconfig: Option<PathBuf>,
    start_error: Option<String>,
}

struct Child {
    process: tokio::process::Child,
    pgid: i32,
    output_done: tokio::task::JoinHandle<()>,
}

/// Maps an absolute container path into the pod's root directory.
fn in_root(root: &Path, container_path: &str) -> PathBuf {
    let relative = container_path.trim_start_matches('/');
    let mut out = root.to_path_buf();
    for part in Path::new(relative).components() {
        if let std::path::Component::Normal(p) = part {
            out.push(p);
        }
    }
    out
}

fn lookup_config(
    cluster: &Cluster,
    resource: Resource,
    namespace: &str,
    name: &str,
) -> Option<serde_json::Map<String, Value>> {
    let object = cluster.store.get(resource, namespace, name)?;
    let mut data = serde_json::Map::new();
    let decode = resource == Resource::Secret;
    for (key, value) in object["data"].as_object().into_iter().flatten() {
        let text = value.as_str().unwrap_or_default();
        let decoded = if decode {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        } else {
            text.to_string()
        };
        data.insert(key.clone(), json!(decoded));
    }
    if resource == Resource::ConfigMap {
        for (key, value) in object["binaryData"].as_object().into_iter().flatten() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.as_str().unwrap_or_default())
                .unwrap_or_default();
            data.insert(key.clone(), json!(String::from_utf8_lossy(&bytes)));
        }
    }
    Some(data)
}

fn kind_word(resource: Resource) -> &'static str {
    if resource == Resource::Secret {
        "secret"
    } else {
        "configmap"
    }
}

/// Expands `$(VAR)` from the variables defined so far; `$$(VAR)` is a literal `$(VAR)`.
fn expand(text: &str, vars: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match vars.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn field_ref(pod: &Value, path: &str, cluster: &Cluster) -> Option<String> {
    let meta = &pod["metadata"];
    let value = match path {
        "metadata.name" => meta["name"].as_str()?.to_string(),
        "metadata.namespace" => meta["namespace"].as_str()?.to_string(),
        "metadata.uid" => meta["uid"].as_str()?.to_string(),
        "spec.nodeName" => cluster.config.node_name.clone(),
        "spec.serviceAccountName" => pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .to_string(),
        "status.podIP" | "status.hostIP" => "127.0.0.1".to_string(),
        _ => {
            for (prefix, field) in [
                ("metadata.labels['", "labels"),
                ("metadata.annotations['", "annotations"),
            ] {
                if let Some(key) = path.strip_prefix(prefix).and_then(|k| k.strip_suffix("']")) {
                    return Some(meta[field][key].as_str().unwrap_or_default().to_string());
                }
            }
            return None;
        }
    };
    Some(value)
}

fn prepare_container(
    cluster: &Cluster,
    pod: &Value,
    container: &Value,
    root: &Path,
) -> Result<Prepared, Waiting> {
    let namespace = namespace_of(pod);
    let name = container["name"].as_str().unwrap_or_default().to_string();
    let config_error = |message: String| Waiting {
        reason: "CreateContainerConfigError",
        message,
    };
    let mut env: Vec<(String, String)> = Vec::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = source["prefix"].as_str().unwrap_or_default();
        for (field, resource) in [
            ("configMapRef", Resource::ConfigMap),
            ("secretRef", Resource::Secret),
        ] {
            let reference = &source[field];
            if reference.is_null() {
                continue;
            }
            let ref_name = reference["name"].as_str().unwrap_or_default();
            match lookup_config(cluster, resource, namespace, ref_name) {
                Some(data) => {
                    for (k, v) in data {
                        env.push((
                            format!("{prefix}{k}"),
                            v.as_str().unwrap_or_default().to_string(),
                        ));
                    }
                }
                None if reference["optional"].as_bool() == Some(true) => {}
                None => {
                    return Err(config_error(format!(
                        "{} \"{ref_name}\" not found",
                        kind_word(resource)
                    )));
                }
            }
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let var_name = var["name"].as_str().unwrap_or_default().to_string();
        let value = if let Some(value) = var["value"].as_str() {
            expand(value, &env)
        } else if var["valueFrom"].is_null() {
            String::new()
        } else {
            let from = &var["valueFrom"];
            let mut found = None;
            for (field, resource, word) in [
                ("configMapKeyRef", Resource::ConfigMap, "ConfigMap"),
                ("secretKeyRef", Resource::Secret, "Secret"),
            ] {
                let reference = &from[field];
                if reference.is_null() {
                    continue;
                }
                let ref_name = reference["name"].as_str().unwrap_or_default();
                let key = reference["key"].as_str().unwrap_or_default();
                let optional = reference["optional"].as_bool() == Some(true);
                match lookup_config(cluster, resource, namespace, ref_name) {
                    Some(data) => match data.get(key) {
                        Some(v) => found = Some(v.as_str().unwrap_or_default().to_string()),
                        None if optional => found = Some(String::new()),
                        None => {
                            return Err(config_error(format!(
                                "couldn't find key {key} in {word} {namespace}/{ref_name}"
                            )));
                        }
                    },
                    None if optional => found = Some(String::new()),
                    None => {
                        return Err(config_error(format!(
                            "{} \"{ref_name}\" not found",
                            kind_word(resource)
                        )));
                    }
                }
            }
            if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
                found = Some(
                    field_ref(pod, path, cluster)
                        .ok_or_else(|| config_error(format!("unsupported fieldPath: {path}")))?,
                );
            }
            if let Some(resource) = from["resourceFieldRef"]["resource"].as_str() {
                found = Some(resource_field(container, resource, cluster));
            }
            match found {
                Some(v) => v,
                // An optional reference whose object is missing leaves the variable unset.
                None => continue,
            }
        };
        env.push((var_name, value));
    }
    let mut argv: Vec<String> = container["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| expand(s, &env))
        .collect();
    argv.extend(
        container["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|s| expand(s, &env)),
    );
    let start_error = if container["command"].as_array().is_none_or(|c| c.is_empty()) {
        Some(format!(
            "kube-test-server runs containers as local processes and cannot read the entrypoint of image \"{}\": give container \"{name}\" a command",
            container["image"].as_str().unwrap_or_default()
        ))
    } else {
        None
    };
    let cwd = match container["workingDir"].as_str() {
        Some(dir) if !dir.is_empty() => in_root(root, dir),
        _ => root.to_path_buf(),
    };
    std::fs::create_dir_all(&cwd).map_err(|e| Waiting {
        reason: "CreateContainerError",
        message: format!("creating working directory: {e}"),
    })?;
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume = mount["name"].as_str().unwrap_or_default();
        let target = in_root(root, mount["mountPath"].as_str().unwrap_or_default());
        let mut source = root
            .parent()
            .expect("root has a parent")
            .join("volumes")
            .join(volume);
        if let Some(sub) = mount["subPath"].as_str().filter(|s| !s.is_empty()) {
            source = source.join(sub);
        }
        if let Some(parent) = target.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::remove_file(&target);
        std::os::unix::fs::symlink(&source, &target).map_err(|e| Waiting {
            reason: "CreateContainerError",
            message: format!("mounting volume {volume} at {}: {e}", target.display()),
        })?;
    }
    let inherit = cluster
        .config
        .pod_inherit_env
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (k.clone(), v)))
        .collect();
    Ok(Prepared {
        name,
        image: container["image"].as_str().unwrap_or_default().to_string(),
        argv,
        env,
        cwd,
        home: root.to_path_buf(),
        path: cluster
            .config
            .pod_path
            .clone()
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default(),
        inherit,
        service_account_kubeconfig: (pod["spec"]["automountServiceAccountToken"] != false)
            .then(|| cluster.config.data_dir.join("kubeconfig")),
        start_error,
    })
}

/// `resourceFieldRef`: limits fall back to the node's allocatable, as on a real node; CPU is
/// rounded up to whole cores, memory in bytes (divisor 1).
fn resource_field(container: &Value, resource: &str, cluster: &Cluster) -> String {
    let (section, kind) = resource.split_once('.').unwrap_or(("limits", resource));
    let value = container["resources"][section][kind]
        .as_str()
        .and_then(crate::validation::quantity_milli_value);
    match kind {
        "cpu" => {
            let millis = value.unwrap_or(i128::from(cluster.config.node_cpu_millis));
            ((millis + 999) / 1000).to_string()
        }
        _ => {
            let bytes = value
                .map(|m| m / 1000)
                .unwrap_or(i128::from(cluster.config.node_memory_bytes));
            bytes.to_string()
        }
    }
}

/// Writes ConfigMap, Secret and emptyDir volumes under `<pod dir>/volumes/<name>`.
fn materialise_volumes(
    cluster: &Cluster,
    pod: &Value,
    dir: &Path,
    root: &Path,
) -> Result<(), Waiting> {
    let namespace = namespace_of(pod);
    let io = |e: std::io::Error| Waiting {
        reason: "CreateContainerError",
        message: e.to_string(),
    };
    std::fs::create_dir_all(root).map_err(io)?;
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = volume["name"].as_str().unwrap_or_default();
        let target = dir.join("volumes").join(name);
        std::fs::create_dir_all(&target).map_err(io)?;
        let (resource, reference, ref_name) = if !volume["configMap"].is_null() {
            (
                Resource::ConfigMap,
                &volume["configMap"],
                volume["configMap"]["name"].as_str().unwrap_or_default(),
            )
        } else if !volume["secret"].is_null() {
            (
                Resource::Secret,
                &volume["secret"],
                volume["secret"]["secretName"].as_str().unwrap_or_default(),
            )
        } else if !volume["emptyDir"].is_null() {
            continue;
        } else {
            return Err(Waiting {
                reason: "CreateContainerConfigError",
                message: format!(
                    "volume {name}: kube-test-server supports configMap, secret and emptyDir volumes only"
                ),
            });
        };
        let data = match lookup_config(cluster, resource, namespace, ref_name) {
            Some(data) => data,
            None if reference["optional"].as_bool() == Some(true) => continue,
            None => {
                return Err(Waiting {
                    reason: "CreateContainerConfigError",
                    message: format!("{} \"{ref_name}\" not found", kind_word(resource)),
                });
            }
        };
        let items: Vec<(String, String)> = match reference["items"].as_array() {
            Some(items) => items
                .iter()
                .map(|i| {
                    (
                        i["key"].as_str().unwrap_or_default().to_string(),
                        i["path"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
            None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
        };
        for (key, path) in items {
            let Some(value) = data.get(&key) else {
                return Err(Waiting {
                    reason: "CreateContainerConfigError",
                    message: format!("configmap references non-existent config key: {key}"),
                });
            };
            let file = in_root(&target, &path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::write(&file, value.as_str().unwrap_or_default()).map_err(io)?;
            let mode = reference["defaultMode"].as_u64().unwrap_or(0o644) as u32;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        }
    }
    Ok(())
}

fn spawn(p: &Prepared, log: Arc<LogBuffer>) -> Result<Child, String> {
    if let Some(error) = &p.start_error {
        return Err(error.clone());
    }
    let mut command = tokio::process::Command::new(&p.argv[0]);
    command
        .args(&p.argv[1..])
        .env_clear()
        .env("PATH", &p.path)
        .env("HOME", &p.home)
        .env("HOSTNAME", "kube-test-pod")
        .current_dir(&p.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in &p.inherit {
        command.env(k, v);
    }
    if let Some(kubeconfig) = &p.service_account_kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    for (k, v) in &p.env {
        command.env(k, v);
    }
    let mut process = command.spawn().map_err(|e| {
        format!(
            "failed to create containerd task: failed to create shim task: OCI runtime create failed: exec: \"{}\": {e}",
            p.argv[0]
        )
    })?;
    let pgid = process
        .id()
        .ok_or("the process exited before it could be tracked")? as i32;
    let stdout = process.stdout.take().expect("piped");
    let stderr = process.stderr.take().expect("piped");
    let output_done = tokio::spawn(async move {
        let pump = |mut reader: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    log: Arc<LogBuffer>| async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => log.append(&buf[..n]),
                }
            }
        };
        tokio::join!(
            pump(Box::new(stdout), log.clone()),
            pump(Box::new(stderr), log)
        );
    });
    Ok(Child {
        process,
        pgid,
        output_done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_expand_like_kubernetes() {
        let vars = vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "x y".to_string()),
        ];
        assert_eq!(expand("$(A)-$(B)", &vars), "1-x y");
        assert_eq!(expand("$$(A) $(MISSING) $", &vars), "$(A) $(MISSING) $");
    }

    #[test]
    fn absolute_container_paths_land_under_the_pod_root() {
        let root = Path::new("/data/pods/ns/p/root");
        assert_eq!(
            in_root(root, "/etc/ferry/plan"),
            Path::new("/data/pods/ns/p/root/etc/ferry/plan")
        );
        assert_eq!(
            in_root(root, "/../../escape"),
            Path::new("/data/pods/ns/p/root/escape")
        );
    }

    #[test]
    fn required_node_affinity_is_checked_against_node_labels() {
        let labels = std::collections::BTreeMap::from([(
            "kubernetes.io/os".to_string(),
            "linux".to_string(),
        )]);
        let wants = |op: &str, values: Value| json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/os", "operator": op, "values": values}]}]}}});
        assert!(node_affinity_matches(
            &wants("In", json!(["linux"])),
            &labels
        ));
        assert!(!node_affinity_matches(
            &wants("In", json!(["windows"])),
            &labels
        ));
        assert!(!node_affinity_matches(
            &wants("DoesNotExist", json!([])),
            &labels
        ));
        assert!(node_affinity_matches(&Value::Null, &labels));
    }
}
