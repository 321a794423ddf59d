//! Pod status as a kubelet reports it: container states, the phase (`getPhase` in
//! pkg/kubelet/kubelet_pods.go), and the kubelet-owned conditions (pkg/kubelet/status/
//! generate.go). Pure functions of the node's view of a pod, so that they can be tested.

use std::collections::HashMap;

use serde_json::{Value, json};

/// RFC 3339 with second precision, as `metav1.Time` serialises.
pub(super) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub container_id: Option<String>,
}

impl Terminated {
    /// What a kubelet reports for a container it lost track of (a node restarted under it).
    pub(super) fn status_unknown() -> Terminated {
        Terminated {
            exit_code: 137,
            signal: None,
            reason: "ContainerStatusUnknown".into(),
            message: Some("The container could not be located when the pod was terminated".into()),
            started_at: None,
            finished_at: None,
            container_id: None,
        }
    }

    fn to_json(&self) -> Value {
        let mut t = json!({ "exitCode": self.exit_code, "reason": self.reason });
        if let Some(signal) = self.signal {
            t["signal"] = json!(signal);
        }
        if let Some(m) = &self.message {
            t["message"] = json!(m);
        }
        t["startedAt"] = json!(self.started_at);
        t["finishedAt"] = json!(self.finished_at);
        if let Some(id) = &self.container_id {
            t["containerID"] = json!(id);
        }
        t
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: String,
    },
    Terminated(Terminated),
}

impl State {
    pub fn waiting(reason: &str, message: Option<String>) -> State {
        State::Waiting {
            reason: reason.to_string(),
            message,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            State::Waiting { reason, message } => {
                let mut w = json!({ "reason": reason });
                if let Some(m) = message {
                    w["message"] = json!(m);
                }
                json!({ "waiting": w })
            }
            State::Running { started_at } => json!({ "running": { "startedAt": started_at } }),
            State::Terminated(t) => json!({ "terminated": t.to_json() }),
        }
    }
}

/// What the status of one container is built from.
#[derive(Clone, Debug)]
pub(super) struct ContainerView {
    pub name: String,
    pub image: String,
    pub state: State,
    pub last: Option<Terminated>,
    pub restart_count: u32,
    /// The container ID of the running or last instance.
    pub container_id: Option<String>,
    /// Whether an instance of this container was ever created (then imageID is known).
    pub ever_ran: bool,
}

impl ContainerView {
    pub fn to_json(&self) -> Value {
        let running = matches!(self.state, State::Running { .. });
        let mut s = json!({
            "name": self.name,
            "image": self.image,
            "imageID": if self.ever_ran { image_id(&self.image) } else { String::new() },
            "ready": running,
            "started": running,
            "restartCount": self.restart_count,
            "state": self.state.to_json(),
            "lastState": self.last.as_ref().map(|t| json!({ "terminated": t.to_json() })).unwrap_or(json!({})),
        });
        let id = match &self.state {
            State::Terminated(t) => t.container_id.clone(),
            State::Running { .. } => self.container_id.clone(),
            State::Waiting { .. } => None,
        };
        if let Some(id) = id {
            s["containerID"] = json!(id);
        }
        s
    }
}

/// `<repository>@sha256:<digest>`: a stable fake digest (there are no real images here).
pub(super) fn image_id(image: &str) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let repository = match image.rfind(['/', ':', '@']) {
        Some(i) if image.as_bytes()[i] == b':' || image.as_bytes()[i] == b'@' => &image[..i],
        _ => image,
    };
    let mut digest = String::new();
    for salt in 0u64..4 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (salt, image).hash(&mut h);
        digest.push_str(&format!("{:016x}", h.finish()));
    }
    format!("{repository}@sha256:{digest}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// The kubelet's `getPhase` (without sidecar containers and container restart rules).
pub(super) fn phase(
    restart_policy: &str,
    init: &[ContainerView],
    main: &[ContainerView],
    pod_is_terminal: bool,
) -> Phase {
    let mut pending_init = 0;
    let mut failed_init = 0;
    for c in init {
        match &c.state {
            State::Running { .. } => pending_init += 1,
            State::Terminated(t) => {
                if t.exit_code != 0 {
                    failed_init += 1;
                }
            }
            State::Waiting { .. } => match &c.last {
                Some(last) if last.exit_code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_init += 1,
            },
        }
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in main {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } => {
                if c.last.is_some() {
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    if failed_init > 0 && restart_policy == "Never" {
        return Phase::Failed;
    }
    if pending_init > 0 || waiting > 0 {
        return Phase::Pending;
    }
    if running > 0 {
        return Phase::Running;
    }
    if stopped > 0 {
        if pod_is_terminal {
            return if stopped == succeeded {
                Phase::Succeeded
            } else {
                Phase::Failed
            };
        }
        if restart_policy == "Always" {
            return Phase::Running;
        }
        if stopped == succeeded {
            return Phase::Succeeded;
        }
        if restart_policy == "Never" {
            return Phase::Failed;
        }
        return Phase::Running;
    }
    Phase::Pending
}

/// Keeps `lastTransitionTime` of each condition until its status changes.
#[derive(Default, Debug)]
pub(super) struct ConditionClock {
    seen: HashMap<String, (String, String)>,
}

impl ConditionClock {
    fn condition(
        &mut self,
        kind: &str,
        status: bool,
        reason: Option<&str>,
        message: Option<String>,
        generation: Option<i64>,
    ) -> Value {
        let status = if status { "True" } else { "False" };
        let entry = self
            .seen
            .entry(kind.to_string())
            .or_insert_with(|| (status.to_string(), now_rfc3339()));
        if entry.0 != status {
            *entry = (status.to_string(), now_rfc3339());
        }
        // Explicit nulls: in a strategic merge patch they delete a reason or message that an
        // earlier status of the same condition had.
        let mut c = json!({
            "type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": entry.1,
            "reason": reason, "message": message,
        });
        if let Some(g) = generation {
            c["observedGeneration"] = json!(g);
        }
        c
    }
}

/// Go's `fmt.Sprint` of a string slice: `[a b]`.
fn go_list(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

/// Everything the kubelet-owned part of a pod's status is built from.
pub(super) struct PodView<'a> {
    pub phase: Phase,
    pub reason: Option<&'a str>,
    pub message: Option<&'a str>,
    pub start_time: &'a str,
    pub sandbox_ready: bool,
    pub init: &'a [ContainerView],
    pub main: &'a [ContainerView],
    pub generation: Option<i64>,
}

/// The status to patch (strategic merge: conditions merge by type, so the scheduler's
/// PodScheduled and the API server's DisruptionTarget are left alone).
pub(super) fn render(view: &PodView<'_>, clock: &mut ConditionClock) -> Value {
    let generation = view.generation;
    let terminal_reason = match view.phase {
        Phase::Succeeded => Some("PodCompleted"),
        Phase::Failed => Some("PodFailed"),
        _ => None,
    };

    // Initialized.
    let any_main_started = view
        .main
        .iter()
        .any(|c| c.ever_ran || !matches!(c.state, State::Waiting { .. }) || c.last.is_some());
    let incomplete: Vec<&str> = view
        .init
        .iter()
        .filter(|c| !matches!(&c.state, State::Terminated(t) if t.exit_code == 0))
        .map(|c| c.name.as_str())
        .collect();
    let initialized = if view.phase == Phase::Succeeded {
        clock.condition("Initialized", true, Some("PodCompleted"), None, generation)
    } else if any_main_started || incomplete.is_empty() {
        clock.condition("Initialized", true, None, None, generation)
    } else {
        clock.condition(
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: {}",
                go_list(&incomplete)
            )),
            generation,
        )
    };

    // ContainersReady and Ready (no readiness probes or gates here: running = ready).
    let unready: Vec<&str> = view
        .main
        .iter()
        .filter(|c| !matches!(c.state, State::Running { .. }))
        .map(|c| c.name.as_str())
        .collect();
    let (ready, reason, message) = match terminal_reason {
        Some(r) => (false, Some(r), None),
        None if unready.is_empty() => (true, None, None),
        None => (
            false,
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: {}",
                go_list(&unready)
            )),
        ),
    };
    let containers_ready = clock.condition(
        "ContainersReady",
        ready,
        reason,
        message.clone(),
        generation,
    );
    let pod_ready = clock.condition("Ready", ready, reason, message, generation);
    let sandbox = clock.condition(
        "PodReadyToStartContainers",
        view.sandbox_ready,
        None,
        None,
        generation,
    );

    let mut status = json!({
        "phase": view.phase.as_str(),
        "hostIP": "127.0.0.1",
        "hostIPs": [{ "ip": "127.0.0.1" }],
        "podIP": "127.0.0.1",
        "podIPs": [{ "ip": "127.0.0.1" }],
        "startTime": view.start_time,
        "conditions": [sandbox, initialized, pod_ready, containers_ready],
        "containerStatuses": view.main.iter().map(ContainerView::to_json).collect::<Vec<_>>(),
    });
    if !view.init.is_empty() {
        status["initContainerStatuses"] = view
            .init
            .iter()
            .map(ContainerView::to_json)
            .collect::<Vec<_>>()
            .into();
    }
    if let Some(g) = generation {
        status["observedGeneration"] = json!(g);
    }
    if let Some(r) = view.reason {
        status["reason"] = json!(r);
    }
    if let Some(m) = view.message {
        status["message"] = json!(m);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, state: State, last: Option<Terminated>) -> ContainerView {
        ContainerView {
            name: name.into(),
            image: "busybox:1.36".into(),
            state,
            last,
            restart_count: 0,
            container_id: Some("ferry-process://42".into()),
            ever_ran: true,
        }
    }

    fn exited(code: i32) -> Terminated {
        Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: Some("2024-01-01T00:00:00Z".into()),
            finished_at: Some("2024-01-01T00:00:01Z".into()),
            container_id: Some("ferry-process://42".into()),
        }
    }

    fn running() -> State {
        State::Running {
            started_at: "2024-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn phase_follows_get_phase() {
        let t = |c| State::Terminated(exited(c));
        let w = State::waiting("ContainerCreating", None);
        assert_eq!(
            phase("Never", &[], &[view("a", w.clone(), None)], false),
            Phase::Pending
        );
        assert_eq!(
            phase("Never", &[], &[view("a", running(), None)], false),
            Phase::Running
        );
        assert_eq!(
            phase("Never", &[], &[view("a", t(0), None)], false),
            Phase::Succeeded
        );
        assert_eq!(
            phase("Never", &[], &[view("a", t(1), None)], false),
            Phase::Failed
        );
        assert_eq!(
            phase("OnFailure", &[], &[view("a", t(1), None)], false),
            Phase::Running
        );
        assert_eq!(
            phase("Always", &[], &[view("a", t(0), None)], false),
            Phase::Running
        );
        assert_eq!(
            phase("Always", &[], &[view("a", t(0), None)], true),
            Phase::Succeeded
        );
        // Waiting to restart counts as stopped, not as waiting.
        let backoff = view(
            "a",
            State::waiting("CrashLoopBackOff", None),
            Some(exited(1)),
        );
        assert_eq!(phase("OnFailure", &[], &[backoff], false), Phase::Running);
        // One running, one not yet started: Pending.
        assert_eq!(
            phase(
                "Never",
                &[],
                &[view("a", running(), None), view("b", w.clone(), None)],
                false
            ),
            Phase::Pending
        );
        // Init containers.
        let main = [view("m", State::waiting("PodInitializing", None), None)];
        assert_eq!(
            phase("Never", &[view("i", running(), None)], &main, false),
            Phase::Pending
        );
        assert_eq!(
            phase("Never", &[view("i", t(2), None)], &main, false),
            Phase::Failed
        );
        assert_eq!(
            phase("OnFailure", &[view("i", t(2), None)], &main, false),
            Phase::Pending
        );
    }

    #[test]
    fn conditions_and_container_statuses_match_a_kubelet() {
        let mut clock = ConditionClock::default();
        let init = [view("setup", State::Terminated(exited(0)), None)];
        let main = [
            view("a", running(), None),
            view(
                "b",
                State::waiting("ErrImagePull", Some("not found".into())),
                None,
            ),
        ];
        let status = render(
            &PodView {
                phase: Phase::Pending,
                reason: None,
                message: None,
                start_time: "2024-01-01T00:00:00Z",
                sandbox_ready: true,
                init: &init,
                main: &main,
                generation: Some(1),
            },
            &mut clock,
        );
        assert_eq!(status["phase"], "Pending");
        assert_eq!(status["podIPs"][0]["ip"], "127.0.0.1");
        let conditions = status["conditions"].as_array().unwrap();
        let find = |t: &str| conditions.iter().find(|c| c["type"] == t).unwrap().clone();
        assert_eq!(find("Initialized")["status"], "True");
        assert_eq!(find("Ready")["status"], "False");
        assert_eq!(find("Ready")["reason"], "ContainersNotReady");
        assert_eq!(
            find("ContainersReady")["message"],
            "containers with unready status: [b]"
        );
        assert_eq!(find("PodReadyToStartContainers")["status"], "True");
        let a = &status["containerStatuses"][0];
        assert_eq!(a["ready"], true);
        assert_eq!(a["containerID"], "ferry-process://42");
        assert!(
            a["imageID"]
                .as_str()
                .unwrap()
                .starts_with("busybox@sha256:")
        );
        assert_eq!(a["state"]["running"]["startedAt"], "2024-01-01T00:00:00Z");
        let b = &status["containerStatuses"][1];
        assert_eq!(b["state"]["waiting"]["reason"], "ErrImagePull");
        assert!(b.get("containerID").is_none());
        assert_eq!(
            status["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );

        // Terminal: Ready False with PodFailed, transition time kept per status.
        let failed = [view("a", State::Terminated(exited(137)), None)];
        let status = render(
            &PodView {
                phase: Phase::Failed,
                reason: Some("DeadlineExceeded"),
                message: Some("Pod was active on the node longer than the specified deadline"),
                start_time: "2024-01-01T00:00:00Z",
                sandbox_ready: false,
                init: &[],
                main: &failed,
                generation: None,
            },
            &mut clock,
        );
        assert_eq!(status["reason"], "DeadlineExceeded");
        let ready = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()
            .clone();
        assert_eq!(ready["reason"], "PodFailed");
        assert!(ready["message"].is_null());
        assert_eq!(
            status["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            137
        );
    }

    #[test]
    fn uninitialized_pods_name_the_incomplete_init_containers() {
        let mut clock = ConditionClock::default();
        let init = [
            view("one", State::Terminated(exited(0)), None),
            view("two", running(), None),
        ];
        let main = [ContainerView {
            ever_ran: false,
            ..view("m", State::waiting("PodInitializing", None), None)
        }];
        let status = render(
            &PodView {
                phase: Phase::Pending,
                reason: None,
                message: None,
                start_time: "t",
                sandbox_ready: true,
                init: &init,
                main: &main,
                generation: None,
            },
            &mut clock,
        );
        let init_cond = &status["conditions"][1];
        assert_eq!(init_cond["type"], "Initialized");
        assert_eq!(init_cond["status"], "False");
        assert_eq!(
            init_cond["message"],
            "containers with incomplete status: [two]"
        );
        assert_eq!(status["containerStatuses"][0]["imageID"], "");
    }

    #[test]
    fn image_ids_drop_the_tag() {
        assert!(image_id("registry:5000/app:v1").starts_with("registry:5000/app@sha256:"));
        assert!(image_id("busybox").starts_with("busybox@sha256:"));
        assert_eq!(image_id("a:1"), image_id("a:1"));
        assert_ne!(image_id("a:1"), image_id("a:2"));
    }
}
