//! The pod watch and one worker per pod.
//!
//! The watch (`spec.nodeName=<node>`, kube's watcher: relists after dropped watches and 410s)
//! hands each pod's latest object to its worker. A worker owns everything about its pod: it
//! reconciles in a loop (start what can start, handle exits, deletion and the active deadline),
//! then writes the status a kubelet would if it changed, then sleeps until the pod changes, a
//! process exits or a timer (back-off, retry, grace period) is due.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Shared;
use super::env;
use super::logs::LogFile;
use super::process::{self, Launch, ProcessExit};
use super::security;
use super::status::{
    self, ConditionClock, ContainerView, Phase, PodView, State, Terminated, now_rfc3339,
};
use super::volumes;

/// First and longest wait between two restarts of a crashed container. A kubelet starts at
/// 10 s (1 s with the ReduceDefaultCrashLoopBackOffDecay feature) and doubles up to 5 min;
/// the shorter range keeps tests quick.
const CRASH_BACKOFF_START: Duration = Duration::from_secs(1);
const CRASH_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Image pull back-off, as a kubelet: 10 s doubling up to 5 min.
const PULL_BACKOFF_START: Duration = Duration::from_secs(10);
const PULL_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How long ErrImagePull shows before ImagePullBackOff (the kubelet's next sync).
const PULL_ERROR_SHOWN: Duration = Duration::from_secs(2);
/// Retry interval for missing ConfigMaps/Secrets and failed volume set-up.
const CONFIG_RETRY: Duration = Duration::from_secs(2);

struct WorkerHandle {
    updates: watch::Sender<Option<Arc<Value>>>,
    join: tokio::task::JoinHandle<()>,
}

/// Watches the node's pods until shutdown, then waits for every worker to stop its processes.
pub(super) async fn run(shared: Arc<Shared>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let config =
        watcher::Config::default().fields(&format!("spec.nodeName={}", shared.node_name()));
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut relisted: Option<HashSet<String>> = None;
    let mut shutdown = shared.shutdown.clone();
    loop {
        let event = tokio::select! {
            _ = super::stopped(&mut shutdown) => break,
            event = stream.next() => event,
        };
        match event {
            Some(Ok(Event::Init)) => relisted = Some(HashSet::new()),
            Some(Ok(Event::InitApply(pod))) => {
                if let Some(uid) = pod.metadata.uid.clone()
                    && let Some(seen) = relisted.as_mut()
                {
                    seen.insert(uid);
                }
                dispatch(&shared, &mut workers, &pod);
            }
            Some(Ok(Event::InitDone)) => {
                // Pods missing from a relist were deleted while the watch was down.
                if let Some(seen) = relisted.take() {
                    for (uid, w) in &workers {
                        if !seen.contains(uid) {
                            w.updates.send_replace(None);
                        }
                    }
                }
            }
            Some(Ok(Event::Apply(pod))) => dispatch(&shared, &mut workers, &pod),
            Some(Ok(Event::Delete(pod))) => {
                if let Some(w) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                    w.updates.send_replace(None);
                }
            }
            Some(Err(e)) => {
                tracing::warn!(node = shared.node_name(), error = %e, "pod watch failed; retrying");
            }
            None => {
                tracing::warn!(node = shared.node_name(), "pod watch ended; restarting it");
                tokio::time::sleep(Duration::from_secs(1)).await;
                let api: Api<Pod> = Api::all(shared.client.clone());
                let config = watcher::Config::default()
                    .fields(&format!("spec.nodeName={}", shared.node_name()));
                stream = watcher::watcher(api, config).default_backoff().boxed();
            }
        }
        workers.retain(|_, w| !w.join.is_finished());
    }
    for (_, w) in workers {
        let _ = w.join.await;
    }
}

fn dispatch(shared: &Arc<Shared>, workers: &mut HashMap<String, WorkerHandle>, pod: &Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let value = match serde_json::to_value(pod) {
        Ok(v) => Arc::new(v),
        Err(e) => {
            tracing::warn!(error = %e, "serialising a pod");
            return;
        }
    };
    if let Some(w) = workers.get(&uid) {
        w.updates.send_replace(Some(value));
        return;
    }
    let (tx, rx) = watch::channel(Some(value.clone()));
    let worker = Worker::new(shared.clone(), value, rx);
    let join = tokio::spawn(worker.run());
    workers.insert(uid, WorkerHandle { updates: tx, join });
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Which {
    Init(usize),
    Main(usize),
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum PullStage {
    /// The next attempt pulls (and fails: ErrImagePull).
    Pull,
    /// The next attempt shows ImagePullBackOff until `until`.
    BackOff { until: Instant },
}

struct Instance {
    pid: i32,
    cgroup_procs: Option<PathBuf>,
    started_at: String,
    container_id: String,
}

/// One container of the pod.
struct Slot {
    spec: Value,
    name: String,
    image: String,
    state: State,
    last: Option<Terminated>,
    restart_count: u32,
    instance: Option<Instance>,
    container_id: Option<String>,
    ever_ran: bool,
    /// Not to be (re)started before this.
    next_try: Option<Instant>,
    /// Terminated for good.
    done: bool,
    crash_backoff: Duration,
    pull: PullStage,
    pull_failures: u32,
    pull_error: String,
    pulled_event: bool,
    /// The last error reported by event, so that a retry loop does not repeat it.
    reported: Option<String>,
}

impl Slot {
    fn new(spec: &Value, waiting: &str) -> Slot {
        Slot {
            name: spec["name"].as_str().unwrap_or_default().to_string(),
            image: spec["image"].as_str().unwrap_or_default().to_string(),
            spec: spec.clone(),
            state: State::waiting(waiting, None),
            last: None,
            restart_count: 0,
            instance: None,
            container_id: None,
            ever_ran: false,
            next_try: None,
            done: false,
            crash_backoff: CRASH_BACKOFF_START,
            pull: PullStage::Pull,
            pull_failures: 0,
            pull_error: String::new(),
            pulled_event: false,
            reported: None,
        }
    }

    fn view(&self) -> ContainerView {
        ContainerView {
            name: self.name.clone(),
            image: self.image.clone(),
            state: self.state.clone(),
            last: self.last.clone(),
            restart_count: self.restart_count,
            container_id: self
                .instance
                .as_ref()
                .map(|i| i.container_id.clone())
                .or_else(|| self.container_id.clone()),
            ever_ran: self.ever_ran,
        }
    }

    fn succeeded(&self) -> bool {
        matches!(&self.state, State::Terminated(t) if t.exit_code == 0)
    }
}

/// Graceful termination in progress.
struct Terminating {
    kill_at: Instant,
    grace: i64,
    killed: bool,
    /// Finish by deleting the pod (graceful deletion), not just by reporting it.
    delete: bool,
}

enum Wake {
    Update,
    Gone,
    Exit(Which, ProcessExit),
    Timer,
    Shutdown,
}

struct Worker {
    shared: Arc<Shared>,
    updates: watch::Receiver<Option<Arc<Value>>>,
    shutdown: watch::Receiver<bool>,
    pod: Arc<Value>,
    namespace: String,
    name: String,
    uid: String,
    dir: PathBuf,
    restart_policy: String,
    init: Vec<Slot>,
    main: Vec<Slot>,
    start_time: String,
    active_deadline: Option<Instant>,
    volumes: Option<HashMap<String, volumes::Volume>>,
    volume_retry_at: Option<Instant>,
    reported_volume_error: Option<String>,
    /// Failed by the node itself (active deadline): reason and message.
    forced: Option<(&'static str, &'static str)>,
    terminating: Option<Terminating>,
    /// Nothing runs any more and nothing will: the final status.
    finalized: bool,
    delete_sent: bool,
    stopping: bool,
    vanished: bool,
    clock: ConditionClock,
    published: Option<Value>,
    retry_at: Option<Instant>,
    exits: FuturesUnordered<BoxFuture<'static, (Which, ProcessExit)>>,
}

fn grace_of(pod: &Value) -> i64 {
    pod["metadata"]["deletionGracePeriodSeconds"]
        .as_i64()
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
}

fn is_deleting(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
}

/// Go's time.Duration formatting for whole seconds: `10s`, `1m20s`.
fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{}h{}m{}s", s / 3600, (s % 3600) / 60, s % 60)
    }
}

impl Worker {
    fn new(
        shared: Arc<Shared>,
        pod: Arc<Value>,
        updates: watch::Receiver<Option<Arc<Value>>>,
    ) -> Worker {
        let meta = &pod["metadata"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let uid = text(&meta["uid"]);
        let init_specs = pod["spec"]["initContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let main_waiting = if init_specs.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let init = init_specs
            .iter()
            .map(|c| Slot::new(c, "PodInitializing"))
            .collect();
        let main = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| Slot::new(c, main_waiting))
            .collect();
        let start_time = pod["status"]["startTime"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(now_rfc3339);
        let active_deadline = pod["spec"]["activeDeadlineSeconds"].as_i64().map(|secs| {
            let start = chrono::DateTime::parse_from_rfc3339(&start_time)
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or_else(|_| chrono::Utc::now());
            let left = (start + chrono::Duration::seconds(secs)) - chrono::Utc::now();
            Instant::now() + left.to_std().unwrap_or(Duration::ZERO)
        });
        Worker {
            dir: shared.config.data_dir.join("pods").join(&uid),
            shutdown: shared.shutdown.clone(),
            restart_policy: pod["spec"]["restartPolicy"]
                .as_str()
                .unwrap_or("Always")
                .to_string(),
            namespace: text(&meta["namespace"]),
            name: text(&meta["name"]),
            uid,
            shared,
            updates,
            pod,
            init,
            main,
            start_time,
            active_deadline,
            volumes: None,
            volume_retry_at: None,
            reported_volume_error: None,
            forced: None,
            terminating: None,
            finalized: false,
            delete_sent: false,
            stopping: false,
            vanished: false,
            clock: ConditionClock::default(),
            published: None,
            retry_at: None,
            exits: FuturesUnordered::new(),
        }
    }

    fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.shared.client.clone(), &self.namespace)
    }

    fn slot(&mut self, which: Which) -> &mut Slot {
        match which {
            Which::Init(i) => &mut self.init[i],
            Which::Main(i) => &mut self.main[i],
        }
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.init.iter().chain(self.main.iter())
    }

    fn running(&self) -> usize {
        self.slots().filter(|s| s.instance.is_some()).count()
    }

    fn event(&self, kind: &str, reason: &str, message: &str, container: Option<&str>) {
        self.shared
            .event(&self.pod, kind, reason, message, container);
    }

    fn pod_desc(&self) -> String {
        format!("{}_{}({})", self.name, self.namespace, self.uid)
    }

    async fn run(mut self) {
        if matches!(
            self.pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        ) {
            // Terminated before this node saw it: nothing to run; finish a deletion.
            self.idle_terminal().await;
            return;
        }
        let names: Vec<String> = self.slots().map(|s| s.name.clone()).collect();
        self.shared
            .logs
            .register_pod(&self.namespace, &self.name, &self.uid, &names);
        self.adopt_previous_status();
        loop {
            if self.stopping_now() {
                let grace = if self.vanished {
                    Duration::from_secs(1)
                } else {
                    Duration::from_secs(2)
                };
                self.stop_all(grace).await;
                if self.vanished {
                    self.cleanup().await;
                }
                return;
            }
            self.step().await;
            self.publish().await;
            if self.finalized
                && self.terminating.as_ref().is_some_and(|t| t.delete)
                && !self.delete_sent
                && self.published.is_some()
            {
                self.delete_pod().await;
            }
            let until = self.next_wake();
            match self.wait(until).await {
                Wake::Update => {}
                Wake::Gone => self.vanished = true,
                Wake::Shutdown => self.stopping = true,
                Wake::Exit(which, exit) => self.on_exit(which, exit),
                Wake::Timer => {}
            }
        }
    }

    fn stopping_now(&self) -> bool {
        self.vanished || self.stopping || *self.shutdown.borrow()
    }

    /// A pod this node already reported running, seen again by a fresh agent: its processes
    /// are gone, which a kubelet reports as ContainerStatusUnknown (exit 137).
    fn adopt_previous_status(&mut self) {
        let pod = self.pod.clone();
        let previous = |field: &str, name: &str| -> Option<Value> {
            pod["status"][field]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["name"] == name))
                .cloned()
        };
        for which in (0..self.init.len())
            .map(Which::Init)
            .chain((0..self.main.len()).map(Which::Main))
        {
            let field = if matches!(which, Which::Init(_)) {
                "initContainerStatuses"
            } else {
                "containerStatuses"
            };
            let name = self.slot(which).name.clone();
            let Some(old) = previous(field, &name) else {
                continue;
            };
            let state = &old["state"];
            let terminated = if state["running"].is_object() {
                Terminated::status_unknown()
            } else if let Some(t) = state["terminated"].as_object() {
                Terminated {
                    exit_code: t.get("exitCode").and_then(Value::as_i64).unwrap_or(0) as i32,
                    signal: None,
                    reason: t
                        .get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or("Error")
                        .into(),
                    message: t.get("message").and_then(Value::as_str).map(str::to_string),
                    started_at: t
                        .get("startedAt")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    finished_at: t
                        .get("finishedAt")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    container_id: t
                        .get("containerID")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                }
            } else {
                continue;
            };
            let slot = self.slot(which);
            slot.restart_count = old["restartCount"].as_u64().unwrap_or(0) as u32;
            slot.ever_ran = true;
            self.record_exit(which, terminated);
        }
    }

    async fn idle_terminal(mut self) {
        loop {
            if is_deleting(&self.pod) && !self.delete_sent {
                self.delete_pod().await;
            }
            let until = (!self.delete_sent && is_deleting(&self.pod))
                .then(|| Instant::now() + Duration::from_secs(1));
            match self.wait(until).await {
                Wake::Gone => {
                    self.cleanup().await;
                    return;
                }
                Wake::Shutdown => return,
                _ => {}
            }
        }
    }

    /// Makes progress: deletion, deadline, volumes, init containers, containers.
    async fn step(&mut self) {
        let now = Instant::now();
        if is_deleting(&self.pod) {
            let grace = grace_of(&self.pod);
            match &mut self.terminating {
                None => self.begin_termination(grace, true),
                Some(t) => {
                    t.delete = true;
                    // A second delete with a shorter grace period shortens the wait.
                    if grace < t.grace {
                        t.grace = grace;
                        t.kill_at = t
                            .kill_at
                            .min(now + Duration::from_secs(grace.max(0) as u64));
                    }
                }
            }
        }
        if self.terminating.is_none()
            && self.forced.is_none()
            && !self.finalized
            && self.active_deadline.is_some_and(|d| now >= d)
        {
            let message = "Pod was active on the node longer than the specified deadline";
            self.forced = Some(("DeadlineExceeded", message));
            self.event("Normal", "DeadlineExceeded", message, None);
            let grace = self.pod["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30);
            self.begin_termination(grace, false);
        }
        if let Some(t) = &mut self.terminating {
            if !t.killed && now >= t.kill_at {
                t.killed = true;
                self.signal_all(libc::SIGKILL);
            }
            if self.running() == 0 && !self.finalized {
                self.finalize();
            }
            return;
        }
        if self.finalized {
            return;
        }
        if self.phase().is_terminal() {
            // Everything has run and nothing restarts.
            self.finalized = true;
            return;
        }
        if self.volumes.is_none() {
            if self.volume_retry_at.is_some_and(|t| now < t) {
                return;
            }
            match volumes::materialise(
                &self.shared.client,
                &self.pod,
                &self.dir,
                &self.shared.facts,
                security::volume_owners(&self.pod),
            )
            .await
            {
                Ok(v) => {
                    self.volumes = Some(v);
                    self.reported_volume_error = None;
                }
                Err(e) => {
                    let message = e.event_message();
                    if self.reported_volume_error.as_ref() != Some(&message) {
                        self.event("Warning", "FailedMount", &message, None);
                        self.reported_volume_error = Some(message);
                    }
                    self.volume_retry_at = Some(now + CONFIG_RETRY);
                    return;
                }
            }
        }
        for i in 0..self.init.len() {
            let slot = &self.init[i];
            if slot.succeeded() {
                continue;
            }
            if slot.instance.is_some() || slot.done || slot.next_try.is_some_and(|t| now < t) {
                return;
            }
            self.try_start(Which::Init(i)).await;
            return;
        }
        for i in 0..self.main.len() {
            let slot = &self.main[i];
            if slot.instance.is_some() || slot.done || slot.next_try.is_some_and(|t| now < t) {
                continue;
            }
            self.try_start(Which::Main(i)).await;
        }
        if self.phase().is_terminal() {
            self.finalized = true;
        }
    }

    fn begin_termination(&mut self, grace: i64, delete: bool) {
        // A kubelet never waits less than 2 s for a graceful stop (minimumGracePeriodInSeconds).
        let grace = grace.max(2);
        for s in self.init.iter().chain(self.main.iter()) {
            if s.instance.is_some() {
                self.shared.event(
                    &self.pod,
                    "Normal",
                    "Killing",
                    &format!("Stopping container {}", s.name),
                    Some(&s.name),
                );
            }
        }
        self.signal_all(libc::SIGTERM);
        self.terminating = Some(Terminating {
            kill_at: Instant::now() + Duration::from_secs(grace as u64),
            grace,
            killed: false,
            delete,
        });
    }

    fn signal_all(&self, signal: i32) {
        for s in self.slots() {
            if let Some(i) = &s.instance {
                process::signal_instance(i.pid, i.cgroup_procs.as_deref(), signal);
            }
        }
    }

    /// The kubelet's TerminatePod: once the pod has run, containers that never got to run are
    /// reported terminated with ContainerStatusUnknown, and the phase is made terminal.
    fn finalize(&mut self) {
        let started = self.main.iter().any(|s| s.ever_ran || s.last.is_some());
        let uid = self.uid.clone();
        let (namespace, name) = (self.namespace.clone(), self.name.clone());
        for s in self.init.iter_mut().chain(self.main.iter_mut()) {
            if matches!(s.state, State::Waiting { .. }) && started {
                s.state = State::Terminated(Terminated::status_unknown());
            }
            s.done = true;
            self.shared
                .logs
                .set_waiting(&namespace, &name, &uid, &s.name, None);
        }
        self.finalized = true;
    }

    /// The phase as a kubelet computes it.
    fn phase(&self) -> Phase {
        if self.forced.is_some() {
            return Phase::Failed;
        }
        let init: Vec<ContainerView> = self.init.iter().map(Slot::view).collect();
        let main: Vec<ContainerView> = self.main.iter().map(Slot::view).collect();
        let terminal = self.terminating.is_some();
        let phase = status::phase(&self.restart_policy, &init, &main, terminal);
        if self.finalized && !phase.is_terminal() {
            return Phase::Failed;
        }
        phase
    }

    fn set_waiting(&mut self, which: Which, reason: &str, message: Option<String>) {
        let (ns, name, uid) = (self.namespace.clone(), self.name.clone(), self.uid.clone());
        let slot = self.slot(which);
        slot.state = State::waiting(reason, message);
        let container = slot.name.clone();
        self.shared
            .logs
            .set_waiting(&ns, &name, &uid, &container, Some(reason));
    }

    /// Reports a container error once per distinct message (a retry loop would repeat it).
    fn report_failure(
        &mut self,
        which: Which,
        reason: &str,
        message: String,
        retry: Option<Duration>,
    ) {
        let slot = self.slot(which);
        let first = slot.reported.as_ref() != Some(&message);
        slot.reported = Some(message.clone());
        slot.next_try = retry
            .map(|r| Instant::now() + r)
            .or(Some(Instant::now() + Duration::from_secs(3600)));
        let container = slot.name.clone();
        self.set_waiting(which, reason, Some(message.clone()));
        if first {
            self.event(
                "Warning",
                "Failed",
                &format!("Error: {message}"),
                Some(&container),
            );
        }
    }

    fn image_pull_failed(&mut self, which: Which) {
        let now = Instant::now();
        let slot = self.slot(which);
        let image = slot.image.clone();
        let container = slot.name.clone();
        match slot.pull {
            PullStage::Pull => {
                slot.pull_failures += 1;
                let backoff = PULL_BACKOFF_START
                    .saturating_mul(1 << (slot.pull_failures - 1).min(10))
                    .min(PULL_BACKOFF_MAX);
                let error = format!(
                    "rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": {image}: not found"
                );
                slot.pull_error = error.clone();
                slot.pull = PullStage::BackOff {
                    until: now + backoff,
                };
                slot.next_try = Some(now + PULL_ERROR_SHOWN);
                self.set_waiting(which, "ErrImagePull", Some(error.clone()));
                self.event(
                    "Normal",
                    "Pulling",
                    &format!("Pulling image \"{image}\""),
                    Some(&container),
                );
                self.event(
                    "Warning",
                    "Failed",
                    &format!("Failed to pull image \"{image}\": {error}"),
                    Some(&container),
                );
                self.event("Warning", "Failed", "Error: ErrImagePull", Some(&container));
            }
            PullStage::BackOff { until } => {
                let message = format!(
                    "Back-off pulling image \"{image}\": ErrImagePull: {}",
                    slot.pull_error
                );
                slot.pull = PullStage::Pull;
                slot.next_try = Some(until.max(now + Duration::from_secs(1)));
                self.set_waiting(which, "ImagePullBackOff", Some(message));
                self.event(
                    "Normal",
                    "BackOff",
                    &format!("Back-off pulling image \"{image}\""),
                    Some(&container),
                );
                self.event(
                    "Warning",
                    "Failed",
                    "Error: ImagePullBackOff",
                    Some(&container),
                );
            }
        }
    }

    /// Tries to start one container instance.
    async fn try_start(&mut self, which: Which) {
        let shared = self.shared.clone();
        let (spec, name, image) = {
            let s = self.slot(which);
            (s.spec.clone(), s.name.clone(), s.image.clone())
        };
        let Some(found) = super::find_image(&shared.config.images, &image) else {
            self.image_pull_failed(which);
            return;
        };
        let image_path = found.path.clone();
        {
            let s = self.slot(which);
            s.pull = PullStage::Pull;
            s.pull_failures = 0;
            let first = !s.pulled_event;
            s.pulled_event = true;
            if first {
                self.event(
                    "Normal",
                    "Pulled",
                    &format!("Container image \"{image}\" already present on machine and can be accessed by the pod"),
                    Some(&name),
                );
            }
        }
        let command: Vec<String> = spec["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        if command.is_empty() {
            let message = format!(
                "failed to generate container \"{name}\" spec: no command specified (node {} runs containers as local processes and cannot use the entrypoint of image \"{image}\": give the container a command)",
                shared.node_name()
            );
            self.report_failure(which, "CreateContainerError", message, None);
            return;
        }
        let service = env::service_env(shared.config.api_server);
        let sources = match env::fetch_sources(&shared.client, &self.namespace, &spec).await {
            Ok(s) => s,
            Err(m) => {
                self.report_failure(which, "CreateContainerConfigError", m, Some(CONFIG_RETRY));
                return;
            }
        };
        let resolved = match env::resolve(&self.pod, &spec, &sources, &shared.facts, &service) {
            Ok(e) => e,
            Err(m) => {
                self.report_failure(which, "CreateContainerConfigError", m, Some(CONFIG_RETRY));
                return;
            }
        };
        // generateContainerConfig: runAsNonRoot is checked once the environment is known.
        let security = match security::process_security(
            &self.pod,
            &spec,
            &self.pod_desc(),
            shared.agent_uid,
        ) {
            Ok(s) => s,
            Err(m) => {
                self.report_failure(which, "CreateContainerConfigError", m, Some(CONFIG_RETRY));
                return;
            }
        };
        let expand = |s: &str| env::expand(s, |k| resolved.get(k));
        let mut argv: Vec<String> = command.iter().map(|s| expand(s)).collect();
        argv.extend(
            spec["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(expand),
        );
        let fresh = self.dir.join("containers").join(&name).join("workdir");
        let plan = std::fs::create_dir_all(&fresh)
            .map_err(|e| format!("mkdir {}: {e}", fresh.display()))
            .and_then(|()| {
                // The private working directory stands in for the container's writable
                // layer: its user must be able to write there.
                match &security.identity {
                    Some(id) => std::os::unix::fs::chown(&fresh, Some(id.uid), Some(id.gid))
                        .map_err(|e| format!("chown {}: {e}", fresh.display())),
                    None => Ok(()),
                }
            })
            .and_then(|()| {
                volumes::mount_plan(
                    &spec,
                    self.volumes.as_ref().expect("volumes are set up first"),
                    &resolved,
                    &fresh,
                )
            })
            .and_then(|(mounts, cwd)| {
                volumes::prepare_mount_points(&mounts, &cwd).map(|()| (mounts, cwd))
            });
        let (mounts, cwd) = match plan {
            Ok(p) => p,
            Err(m) => {
                self.report_failure(which, "CreateContainerError", m, Some(CONFIG_RETRY));
                return;
            }
        };

        // The environment: runtime defaults, the inherited host variables, then Kubernetes'.
        let mut path = std::ffi::OsString::new();
        for dir in &image_path {
            path.push(dir.as_os_str());
            path.push(":");
        }
        path.push(&shared.host_path);
        let mut envs: Vec<(String, std::ffi::OsString)> = vec![
            ("PATH".into(), path),
            ("HOSTNAME".into(), self.name.clone().into()),
            (
                "HOME".into(),
                security
                    .identity
                    .as_ref()
                    .map_or_else(|| "/root".into(), |i| i.home.clone().into()),
            ),
        ];
        for key in &shared.config.inherit_env {
            if let Some(v) = std::env::var_os(key) {
                envs.push((key.clone(), v));
            }
        }
        for (k, v) in &resolved.0 {
            envs.retain(|(e, _)| e != k);
            envs.push((k.clone(), v.into()));
        }

        // The instance is created from here on (restartCount counts created instances).
        let restart_count = {
            let s = self.slot(which);
            if s.last.is_some() {
                s.restart_count += 1;
            }
            s.reported = None;
            s.restart_count
        };
        let path_var = envs
            .iter()
            .find(|(k, _)| k == "PATH")
            .and_then(|(_, v)| v.to_str().map(str::to_string));
        let started_at = now_rfc3339();
        if let Err(e) = process::find_program(&argv[0], path_var.as_deref(), &cwd, &mounts) {
            let message = format!(
                "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: exec: \"{}\": {e}: unknown",
                argv[0]
            );
            self.start_failed(which, message, started_at);
            return;
        }
        let limit = spec["resources"]["limits"]["memory"]
            .as_str()
            .and_then(env::parse_quantity)
            .map(|n| ((n + env::NANO - 1) / env::NANO).max(0) as u64);
        let cgroup = match &shared.cgroups {
            Some(root) => match root.container(&format!("{}-{name}", self.uid), limit) {
                Ok(c) => Some(c),
                Err(e) if limit.is_some() => {
                    let message = format!("failed to create the container's memory cgroup: {e}");
                    self.report_failure(which, "CreateContainerError", message, Some(CONFIG_RETRY));
                    return;
                }
                Err(e) => {
                    tracing::warn!(pod = %self.pod_desc(), container = %name, error = %e, "no cgroup for a container");
                    None
                }
            },
            None => {
                if limit.is_some() {
                    tracing::warn!(pod = %self.pod_desc(), container = %name, "no memory cgroup on this host: limits.memory is not enforced");
                }
                None
            }
        };
        let log_path = self
            .dir
            .join("logs")
            .join(&name)
            .join(format!("{restart_count}.log"));
        let log = match LogFile::create(log_path.clone()) {
            Ok(l) => l,
            Err(e) => {
                let message = format!("create the log file {}: {e}", log_path.display());
                self.report_failure(which, "CreateContainerError", message, Some(CONFIG_RETRY));
                return;
            }
        };
        shared
            .logs
            .add_instance(&self.namespace, &self.name, &self.uid, &name, log.clone());
        self.event(
            "Normal",
            "Created",
            &format!("Created container: {name}"),
            Some(&name),
        );
        let launch = Launch {
            argv,
            env: envs,
            cwd,
            mounts,
            cgroup,
            security,
        };
        match process::launch(&shared.spawner, launch, log.clone()).await {
            Ok(started) => {
                let container_id = format!("ferry-process://{}", started.pid);
                self.event(
                    "Normal",
                    "Started",
                    &format!("Started container {name}"),
                    Some(&name),
                );
                let exit = started.exit;
                self.exits.push(Box::pin(async move {
                    let exit = exit.await.unwrap_or_else(|e| ProcessExit {
                        code: 128,
                        oom_killed: false,
                        finished_at: format!("(the wait task failed: {e})"),
                    });
                    (which, exit)
                }));
                let (ns, pod_name, uid) =
                    (self.namespace.clone(), self.name.clone(), self.uid.clone());
                let s = self.slot(which);
                s.instance = Some(Instance {
                    pid: started.pid,
                    cgroup_procs: started.cgroup_procs,
                    started_at: started_at.clone(),
                    container_id: container_id.clone(),
                });
                s.container_id = Some(container_id);
                s.ever_ran = true;
                s.state = State::Running { started_at };
                shared.logs.set_waiting(&ns, &pod_name, &uid, &name, None);
            }
            Err(message) => {
                log.close();
                self.start_failed(which, message, started_at);
            }
        }
    }

    /// The instance was created but its process could not start: StartError, exit 128.
    fn start_failed(&mut self, which: Which, message: String, started_at: String) {
        let name = self.slot(which).name.clone();
        self.event(
            "Warning",
            "Failed",
            &format!("Error: {message}"),
            Some(&name),
        );
        self.slot(which).ever_ran = true;
        let _ = started_at;
        self.record_exit(
            which,
            Terminated {
                exit_code: 128,
                signal: None,
                reason: "StartError".into(),
                message: Some(message),
                started_at: Some("1970-01-01T00:00:00Z".into()),
                finished_at: Some(now_rfc3339()),
                container_id: None,
            },
        );
    }

    fn on_exit(&mut self, which: Which, exit: ProcessExit) {
        let slot = self.slot(which);
        let Some(instance) = slot.instance.take() else {
            return;
        };
        let reason = if exit.oom_killed {
            "OOMKilled"
        } else if exit.code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let finished_at = if exit.finished_at.starts_with('(') {
            now_rfc3339()
        } else {
            exit.finished_at
        };
        let terminated = Terminated {
            exit_code: exit.code,
            signal: None,
            reason: reason.into(),
            message: None,
            started_at: Some(instance.started_at),
            finished_at: Some(finished_at),
            container_id: Some(instance.container_id),
        };
        self.record_exit(which, terminated);
    }

    /// An instance ended: restart it (by restart policy, after a back-off) or leave it
    /// terminated.
    fn record_exit(&mut self, which: Which, terminated: Terminated) {
        let stopping = self.terminating.is_some() || self.forced.is_some() || self.stopping;
        let policy = {
            let own = self.slot(which).spec["restartPolicy"]
                .as_str()
                .map(str::to_string);
            match which {
                // Init containers of an Always pod restart on failure only.
                Which::Init(_) if self.restart_policy == "Always" => "OnFailure".to_string(),
                _ => own.unwrap_or_else(|| self.restart_policy.clone()),
            }
        };
        let restart = !stopping
            && match policy.as_str() {
                "Always" => true,
                "OnFailure" => terminated.exit_code != 0,
                _ => false,
            };
        let (ns, name, uid) = (self.namespace.clone(), self.name.clone(), self.uid.clone());
        let desc = self.pod_desc();
        let slot = self.slot(which);
        let container = slot.name.clone();
        if restart {
            let delay = slot.crash_backoff;
            slot.crash_backoff = (delay * 2).min(CRASH_BACKOFF_MAX);
            slot.next_try = Some(Instant::now() + delay);
            slot.last = Some(terminated);
            slot.state = State::waiting(
                "CrashLoopBackOff",
                Some(format!(
                    "back-off {} restarting failed container={container} pod={desc}",
                    go_duration(delay)
                )),
            );
            self.shared
                .logs
                .set_waiting(&ns, &name, &uid, &container, Some("CrashLoopBackOff"));
            self.event(
                "Warning",
                "BackOff",
                &format!("Back-off restarting failed container {container} in pod {desc}"),
                Some(&container),
            );
        } else {
            slot.state = State::Terminated(terminated);
            slot.done = true;
            self.shared
                .logs
                .set_waiting(&ns, &name, &uid, &container, None);
        }
    }

    fn view_status(&mut self) -> Value {
        let phase = self.phase();
        let init: Vec<ContainerView> = self.init.iter().map(Slot::view).collect();
        let main: Vec<ContainerView> = self.main.iter().map(Slot::view).collect();
        let (reason, message) = match self.forced {
            Some((r, m)) => (Some(r), Some(m)),
            None => (None, None),
        };
        status::render(
            &PodView {
                phase,
                reason,
                message,
                start_time: &self.start_time,
                sandbox_ready: !self.finalized,
                init: &init,
                main: &main,
                generation: self.pod["metadata"]["generation"].as_i64(),
            },
            &mut self.clock,
        )
    }

    /// Writes the status if it changed.
    async fn publish(&mut self) {
        let status = self.view_status();
        if self.published.as_ref() == Some(&status) {
            return;
        }
        let patch = Patch::Strategic(json!({ "status": status }));
        match self
            .pods_api()
            .patch_status(&self.name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                self.published = Some(status);
                self.retry_at = None;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                // Gone; the watch will say so.
                self.retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
            Err(e) => {
                tracing::warn!(pod = %self.pod_desc(), error = %e, "writing the pod status; retrying");
                self.retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    /// Finishes a graceful deletion: the kubelet deletes with grace 0 once nothing runs.
    async fn delete_pod(&mut self) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.pods_api().delete(&self.name, &params).await {
            Ok(_) => self.delete_sent = true,
            // Gone already, or a new pod of the same name (uid precondition failed).
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => self.delete_sent = true,
            Err(e) => {
                tracing::warn!(pod = %self.pod_desc(), error = %e, "deleting the pod; retrying");
                self.retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    /// When the loop must look again without an event.
    fn next_wake(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut times: Vec<Instant> = Vec::new();
        if let Some(t) = &self.terminating {
            if !t.killed {
                times.push(t.kill_at);
            }
        } else if !self.finalized {
            times.extend(self.active_deadline);
            times.extend(self.volume_retry_at.filter(|_| self.volumes.is_none()));
            times.extend(
                self.slots()
                    .filter(|s| s.instance.is_none() && !s.done)
                    .filter_map(|s| s.next_try),
            );
        }
        times.extend(self.retry_at);
        // Only future times: a slot blocked behind an init container must not spin the loop.
        times.into_iter().filter(|t| *t > now).min().or_else(|| {
            // Something due right now (e.g. a retry that has just come due).
            self.retry_at.map(|_| now + Duration::from_millis(200))
        })
    }

    async fn wait(&mut self, until: Option<Instant>) -> Wake {
        // A fallback wake-up, so that nothing can stall for good.
        let until = until.unwrap_or_else(|| Instant::now() + Duration::from_secs(10));
        let has_exits = !self.exits.is_empty();
        let wake = tokio::select! {
            _ = super::stopped(&mut self.shutdown) => Wake::Shutdown,
            changed = self.updates.changed() => match changed {
                Ok(()) => Wake::Update,
                Err(_) => Wake::Gone,
            },
            Some((which, exit)) = self.exits.next(), if has_exits => Wake::Exit(which, exit),
            _ = tokio::time::sleep_until(until) => Wake::Timer,
        };
        if let Wake::Update = wake {
            match self.updates.borrow_and_update().clone() {
                Some(pod) => self.pod = pod,
                None => return Wake::Gone,
            }
        }
        wake
    }

    /// SIGTERM, `grace`, SIGKILL; waits for every process (no API writes).
    async fn stop_all(&mut self, grace: Duration) {
        self.stopping = true;
        self.signal_all(libc::SIGTERM);
        for (signal_after, wait) in [
            (Some(libc::SIGKILL), grace),
            (None, Duration::from_secs(10)),
        ] {
            let deadline = Instant::now() + wait;
            while !self.exits.is_empty() {
                match tokio::time::timeout_at(deadline, self.exits.next()).await {
                    Ok(Some((which, exit))) => self.on_exit(which, exit),
                    Ok(None) | Err(_) => break,
                }
            }
            if let Some(signal) = signal_after {
                self.signal_all(signal);
            }
        }
        if self.running() > 0 {
            tracing::warn!(pod = %self.pod_desc(), "container processes did not end after SIGKILL");
        }
    }

    /// The pod is gone: its logs and directory go too.
    async fn cleanup(&mut self) {
        self.shared
            .logs
            .remove_pod(&self.namespace, &self.name, &self.uid);
        let dir = self.dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            // Memory-backed emptyDirs are mounted in the pod's directory.
            volumes::unmount_under(&dir);
            if dir.exists()
                && let Err(e) = std::fs::remove_dir_all(&dir)
            {
                tracing::warn!(dir = %dir.display(), error = %e, "removing a pod directory");
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_secs(40)), "40s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
    }

    #[test]
    fn grace_comes_from_the_deletion_then_the_spec() {
        assert_eq!(
            grace_of(
                &json!({"metadata": {"deletionGracePeriodSeconds": 5}, "spec": {"terminationGracePeriodSeconds": 9}})
            ),
            5
        );
        assert_eq!(
            grace_of(&json!({"metadata": {}, "spec": {"terminationGracePeriodSeconds": 9}})),
            9
        );
        assert_eq!(grace_of(&json!({"metadata": {}, "spec": {}})), 30);
        assert!(is_deleting(
            &json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}})
        ));
        assert!(!is_deleting(&json!({"metadata": {}})));
    }
}
