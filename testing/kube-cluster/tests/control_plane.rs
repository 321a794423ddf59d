//! What ferry relies on from Kubernetes, checked against the real control plane of the shared
//! test cluster (`scripts/kube-cluster.sh start`): the API server's version and semantics, the
//! real Job and CronJob controllers, garbage collector, TTL controller, PersistentVolume binder
//! and scheduler (GPU requests, taints and tolerations), RBAC and service-account tokens, the
//! Eviction API; and what the nodes report for the things they fake (image pulls, volumes,
//! users) or hand to the kernel (memory limits, tmpfs sizes, uids).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use futures::{AsyncBufReadExt as _, StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
};
use kube::api::{EvictParams, LogParams, Patch, PatchParams, PostParams, WatchParams};
use kube::core::WatchEvent;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use kube_cluster::{
    CPU_NODE, GPU_NODE, GPU_NODE_LABEL, GPU_NODE_TAINT, GPU_RESOURCE, TestNamespace, running,
};
use serde_json::json;

struct Env {
    runtime: tokio::runtime::Runtime,
    client: Client,
    namespace: TestNamespace,
}

impl Env {
    fn new() -> Env {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = runtime.block_on(running().client()).unwrap();
        let namespace = runtime
            .block_on(TestNamespace::create("control-plane"))
            .unwrap();
        Env {
            runtime,
            client,
            namespace,
        }
    }

    fn ns(&self) -> &str {
        &self.namespace.name
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Waits (at most `secs`) until `condition` holds for the named object, which must exist.
    fn wait<K, C>(&self, api: &Api<K>, name: &str, secs: u64, condition: C) -> K
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        K: kube::Resource<DynamicType = ()>,
        C: kube::runtime::wait::Condition<K>,
    {
        self.wait_opt(api, name, secs, condition)
            .unwrap_or_else(|| panic!("{name} was deleted while waiting"))
    }

    /// Waits until the named object is gone.
    fn wait_gone<K>(&self, api: &Api<K>, name: &str, secs: u64)
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        K: kube::Resource<DynamicType = ()>,
    {
        let gone = self.wait_opt(api, name, secs, |k: Option<&K>| k.is_none());
        assert!(gone.is_none());
    }

    fn wait_opt<K, C>(&self, api: &Api<K>, name: &str, secs: u64, condition: C) -> Option<K>
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        K: kube::Resource<DynamicType = ()>,
        C: kube::runtime::wait::Condition<K>,
    {
        let found = self.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(secs),
                await_condition(api.clone(), name, condition),
            )
            .await
        });
        match found {
            Ok(Ok(object)) => object,
            Ok(Err(e)) => panic!("waiting for {name}: {e}"),
            Err(_) => {
                let now = self.block_on(api.get_opt(name)).unwrap();
                panic!("{name}: condition not met after {secs} s: {now:#?}")
            }
        }
    }

    fn job(&self, name: &str, spec: serde_json::Value) -> Job {
        let job: Job = serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": spec,
        }))
        .unwrap();
        self.block_on(self.jobs().create(&PostParams::default(), &job))
            .unwrap()
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    fn create<K>(&self, api: &Api<K>, object: serde_json::Value) -> K
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
        K: serde::Serialize,
    {
        let object: K = serde_json::from_value(object).unwrap();
        self.block_on(api.create(&PostParams::default(), &object))
            .unwrap()
    }

    /// The log of a pod whose container has terminated.
    fn log_of(&self, pod: &str) -> String {
        self.wait(&self.pods(), pod, 60, container_terminated);
        self.block_on(self.pods().logs(pod, &LogParams::default()))
            .unwrap()
    }

    /// Waits until the pod has an event with `reason` whose message contains `text`.
    fn wait_for_event(&self, pod: &str, reason: &str, text: &str, secs: u64) -> Event {
        let events: Api<Event> = Api::namespaced(self.client.clone(), self.ns());
        let params = kube::api::ListParams::default()
            .fields(&format!("involvedObject.name={pod},reason={reason}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let list = self.block_on(events.list(&params)).unwrap();
            if let Some(e) = list
                .items
                .iter()
                .find(|e| e.message.as_deref().is_some_and(|m| m.contains(text)))
            {
                return e.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {reason} event of {pod} saying {text:?} after {secs} s; its events: {:#?}",
                list.items
                    .iter()
                    .map(|e| (&e.reason, &e.message))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn pod(&self, name: &str, spec: serde_json::Value) -> Pod {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": spec,
        }))
        .unwrap();
        self.block_on(self.pods().create(&PostParams::default(), &pod))
            .unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.runtime.block_on(self.namespace.delete());
    }
}

/// A pod template running `script` with sh in the image the node has.
fn template(script: &str) -> serde_json::Value {
    json!({
        "spec": {
            "restartPolicy": "Never",
            "containers": [{ "name": "main", "image": "ferry:test", "command": ["sh", "-c", script] }],
        }
    })
}

fn pod_spec(script: &str) -> serde_json::Value {
    template(script)["spec"].clone()
}

fn condition(job: &Job, kind: &str) -> Option<(String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

fn job_failed(job: Option<&Job>) -> bool {
    job.is_some_and(|j| condition(j, "Failed").is_some())
}

fn container_terminated(pod: Option<&Pod>) -> bool {
    pod.is_some_and(|p| terminated(p).is_some())
}

fn terminated(pod: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStateTerminated> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .clone()
}

#[test]
fn the_api_server_is_the_official_kube_apiserver_1_37_and_the_node_is_ready() {
    let env = Env::new();
    let version = env.block_on(env.client.apiserver_version()).unwrap();
    assert_eq!(version.git_version, kube_cluster::KUBERNETES_VERSION);
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "37")
    );
    let nodes: Api<Node> = Api::all(env.client.clone());
    assert_eq!(running().node_name, CPU_NODE);
    assert_eq!(running().node_names, [CPU_NODE, GPU_NODE]);
    for name in &running().node_names {
        let node = env.block_on(nodes.get(name)).unwrap();
        let status = node.status.unwrap();
        assert_eq!(status.capacity.unwrap()["cpu"].0, "8", "{name}");
        assert!(
            status
                .conditions
                .unwrap()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            "{name} is not Ready"
        );
    }
    // The CPU node: no GPUs, and no taint once node-lifecycle-controller lifted the not-ready
    // one (the node's Lease was fresh).
    let node = env.block_on(nodes.get(CPU_NODE)).unwrap();
    let capacity = node.status.unwrap().capacity.unwrap();
    assert!(!capacity.contains_key(GPU_RESOURCE), "{capacity:?}");
    assert!(node.spec.unwrap().taints.unwrap_or_default().is_empty());
}

#[test]
fn the_gpu_node_advertises_two_gpus_its_label_and_only_its_own_taint() {
    let env = Env::new();
    let nodes: Api<Node> = Api::all(env.client.clone());
    let node = env.block_on(nodes.get(GPU_NODE)).unwrap();
    let status = node.status.unwrap();
    assert_eq!(status.capacity.unwrap()[GPU_RESOURCE].0, "2");
    assert_eq!(status.allocatable.unwrap()[GPU_RESOURCE].0, "2");
    let (label, value) = GPU_NODE_LABEL;
    assert_eq!(
        node.metadata.labels.unwrap()[label],
        value,
        "NodeRestriction let the kubelet set its label"
    );
    // Registered with it; the not-ready taint is gone, the node's own stays.
    let taints: Vec<(String, Option<String>, String)> = node
        .spec
        .unwrap()
        .taints
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.value, t.effect))
        .collect();
    let (key, value, effect) = GPU_NODE_TAINT;
    assert_eq!(
        taints,
        [(key.to_string(), Some(value.to_string()), effect.to_string())]
    );
}

fn scheduled_on(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.node_name.clone()
}

#[test]
fn a_gpu_pod_that_tolerates_the_taint_runs_on_the_gpu_node_and_plain_pods_never_land_there() {
    let env = Env::new();
    let (key, value, effect) = GPU_NODE_TAINT;
    let mut gpu = pod_spec("echo trained");
    gpu["containers"][0]["resources"] = json!({"limits": {GPU_RESOURCE: "1"}});
    gpu["tolerations"] =
        json!([{"key": key, "operator": "Equal", "value": value, "effect": effect}]);
    env.pod("train", gpu.clone());
    // Asking for a GPU without tolerating the taint fits no node: the scheduler says why.
    let mut untolerated = gpu.clone();
    untolerated["tolerations"] = json!([]);
    env.pod("intolerant", untolerated);
    for i in 0..6 {
        env.pod(&format!("plain-{i}"), pod_spec("true"));
    }
    let pod = env.wait(&env.pods(), "train", 60, container_terminated);
    assert_eq!(scheduled_on(&pod).as_deref(), Some(GPU_NODE));
    assert_eq!(terminated(&pod).unwrap().exit_code, 0);
    assert_eq!(env.log_of("train"), "trained\n");
    for i in 0..6 {
        let name = format!("plain-{i}");
        let pod = env.wait(&env.pods(), &name, 60, |p: Option<&Pod>| {
            p.is_some_and(|p| scheduled_on(p).is_some())
        });
        assert_eq!(scheduled_on(&pod).as_deref(), Some(CPU_NODE), "{name}");
    }
    let pod = env.wait(&env.pods(), "intolerant", 60, |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.conditions.as_ref())
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable")
                })
            })
    });
    let message = pod
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .and_then(|c| c.message)
        .unwrap_or_default();
    assert!(
        message.contains(&format!("Insufficient {GPU_RESOURCE}"))
            && message.contains("untolerated taint"),
        "{message}"
    );
}

#[test]
fn a_job_completes_and_its_log_streams_through_the_api_server() {
    let env = Env::new();
    env.job(
        "hello",
        json!({ "backoffLimit": 0, "template": template("echo one; sleep 1; echo two") }),
    );
    // Follow the log while the pod runs: the API server proxies it from the node.
    let pod_name = loop {
        let pods = env.block_on(env.pods().list(&Default::default())).unwrap();
        if let Some(pod) = pods.items.into_iter().next() {
            break pod.metadata.name.unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    env.wait(&env.pods(), &pod_name, 60, conditions::is_pod_running());
    let lines: Vec<String> = env.block_on(async {
        let stream = env
            .pods()
            .log_stream(
                &pod_name,
                &LogParams {
                    follow: true,
                    ..LogParams::default()
                },
            )
            .await
            .unwrap();
        stream.lines().try_collect().await.unwrap()
    });
    assert_eq!(lines, ["one", "two"]);
    let job = env.wait(&env.jobs(), "hello", 60, conditions::is_job_completed());
    assert_eq!(condition(&job, "Complete").unwrap().0, "CompletionsReached");
    assert_eq!(job.status.unwrap().succeeded, Some(1));
}

#[test]
fn the_job_controller_replaces_failed_pods_until_the_backoff_limit() {
    let env = Env::new();
    env.job(
        "flaky",
        json!({ "backoffLimit": 1, "template": template("exit 3") }),
    );
    // The real controller waits 10 s before the replacement.
    let job = env.wait(&env.jobs(), "flaky", 90, job_failed);
    assert_eq!(condition(&job, "Failed").unwrap().0, "BackoffLimitExceeded");
    assert_eq!(job.status.unwrap().failed, Some(2));
}

#[test]
fn a_pod_failure_policy_fails_the_job_at_once_on_its_exit_code() {
    let env = Env::new();
    env.job(
        "policy",
        json!({
            "backoffLimit": 6,
            "podFailurePolicy": { "rules": [
                { "action": "FailJob", "onExitCodes": { "operator": "In", "values": [42] } }
            ]},
            "template": template("exit 42"),
        }),
    );
    let job = env.wait(&env.jobs(), "policy", 60, job_failed);
    let (reason, message) = condition(&job, "Failed").unwrap();
    assert_eq!(reason, "PodFailurePolicy", "{message}");
    assert_eq!(job.status.unwrap().failed, Some(1), "no retry");
}

#[test]
fn active_deadline_seconds_stops_the_job_and_its_pod() {
    let env = Env::new();
    env.job(
        "late",
        json!({ "activeDeadlineSeconds": 2, "template": template("sleep 60") }),
    );
    let job = env.wait(&env.jobs(), "late", 60, job_failed);
    assert_eq!(condition(&job, "Failed").unwrap().0, "DeadlineExceeded");
    // The controller deleted the pod; the node stopped its process.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !env
        .block_on(env.pods().list(&Default::default()))
        .unwrap()
        .items
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "the pod stays");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ttl_after_finished_deletes_the_job_and_the_garbage_collector_its_pods_and_owned_objects() {
    let env = Env::new();
    let job = env.job(
        "brief",
        json!({ "ttlSecondsAfterFinished": 1, "suspend": true, "template": template("true") }),
    );
    // An object owned by the Job, as ferry's ConfigMap is.
    let config: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "brief-plan", "ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "Job", "name": "brief",
            "uid": job.metadata.uid.clone().unwrap(),
        }]},
        "data": { "plan": "{}" },
    }))
    .unwrap();
    let configs: Api<ConfigMap> = Api::namespaced(env.client.clone(), env.ns());
    env.block_on(configs.create(&PostParams::default(), &config))
        .unwrap();
    // Suspended: no pod until resumed.
    std::thread::sleep(Duration::from_secs(2));
    let pods = env.block_on(env.pods().list(&Default::default())).unwrap();
    assert!(pods.items.is_empty(), "a suspended Job starts no pod");
    env.block_on(env.jobs().patch(
        "brief",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    ))
    .unwrap();
    env.wait_gone(&env.jobs(), "brief", 90);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pods = env.block_on(env.pods().list(&Default::default())).unwrap();
        let config = env.block_on(configs.get_opt("brief-plan")).unwrap();
        if pods.items.is_empty() && config.is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the Job's dependents stay: {} pods, config {}",
            pods.items.len(),
            config.is_some()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn writes_conflict_on_a_stale_resource_version_and_a_duplicate_name() {
    let env = Env::new();
    let configs: Api<ConfigMap> = Api::namespaced(env.client.clone(), env.ns());
    let config: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"k": "1"}})).unwrap();
    let created = env
        .block_on(configs.create(&PostParams::default(), &config))
        .unwrap();
    let duplicate = env
        .block_on(configs.create(&PostParams::default(), &config))
        .unwrap_err();
    assert!(
        matches!(&duplicate, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{duplicate}"
    );
    let mut first = created.clone();
    first.data = Some([("k".to_string(), "2".to_string())].into());
    env.block_on(configs.replace("c", &PostParams::default(), &first))
        .unwrap();
    let mut stale = created;
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    let conflict = env
        .block_on(configs.replace("c", &PostParams::default(), &stale))
        .unwrap_err();
    assert!(
        matches!(&conflict, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
        "{conflict}"
    );
}

#[test]
fn a_watch_resumes_from_a_resource_version_and_a_too_old_one_is_gone() {
    let env = Env::new();
    let configs: Api<ConfigMap> = Api::namespaced(env.client.clone(), env.ns());
    let make = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    };
    let a = env
        .block_on(configs.create(&PostParams::default(), &make("a")))
        .unwrap();
    env.block_on(configs.create(&PostParams::default(), &make("b")))
        .unwrap();
    // Resuming after `a` delivers `b`, and nothing before it.
    let rv = a.metadata.resource_version.unwrap();
    let first = env.block_on(async {
        let mut stream = configs
            .watch(&WatchParams::default().timeout(10), &rv)
            .await
            .unwrap()
            .boxed();
        stream.try_next().await.unwrap().unwrap()
    });
    match first {
        WatchEvent::Added(c) => assert_eq!(c.metadata.name.as_deref(), Some("b")),
        other => panic!("expected b to be added: {other:?}"),
    }
    // Once etcd has compacted past it (the API server compacts every 20 s here, every 5 min
    // by default), resuming from that resourceVersion is answered 410 Gone: a client must
    // list again. (ConfigMaps bypass the watch cache in this cluster, see cluster.rs.)
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let answer = env.block_on(async {
            let mut stream = configs
                .watch(&WatchParams::default().timeout(5), &rv)
                .await?
                .boxed();
            stream.try_next().await
        });
        match answer {
            Ok(Some(WatchEvent::Error(e))) if e.code == 410 => break,
            Err(kube::Error::Api(s)) if s.code == 410 => break,
            Ok(Some(WatchEvent::Added(_) | WatchEvent::Bookmark(_))) | Ok(None) => {}
            other => panic!("expected events or 410 Gone: {other:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "resourceVersion {rv} never became too old"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn the_kernel_kills_a_container_over_its_memory_limit_and_the_node_reports_oom_killed() {
    let env = Env::new();
    let mut spec = pod_spec("exec python3 -c 'x = b\"a\" * (400 << 20)'");
    spec["containers"][0]["resources"] = json!({"limits": {"memory": "64Mi"}});
    env.pod("hog", spec);
    let pod = env.wait(&env.pods(), "hog", 60, container_terminated);
    let state = terminated(&pod).unwrap();
    assert_eq!(state.reason.as_deref(), Some("OOMKilled"), "{state:?}");
    assert_eq!(state.exit_code, 137);
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Failed"));
}

#[test]
fn an_image_the_node_lacks_is_err_image_pull_then_image_pull_back_off() {
    let env = Env::new();
    let mut spec = pod_spec("true");
    spec["containers"][0]["image"] = json!("registry.invalid/nothing:1");
    env.pod("pull", spec);
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(seen.contains(&"ErrImagePull".to_string())
        && seen.contains(&"ImagePullBackOff".to_string()))
    {
        let pod = env.block_on(env.pods().get("pull")).unwrap();
        let reason = pod
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c.first()?.state.as_ref()?.waiting.as_ref()?.reason.clone());
        if let Some(reason) = reason
            && !seen.contains(&reason)
        {
            seen.push(reason);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reasons seen: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_scheduler_leaves_a_pod_larger_than_the_node_pending_with_the_reason() {
    let env = Env::new();
    let mut spec = pod_spec("true");
    spec["containers"][0]["resources"] = json!({"requests": {"cpu": "64"}});
    env.pod("huge", spec);
    let pod = env.wait(&env.pods(), "huge", 60, |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.conditions.as_ref())
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable")
                })
            })
    });
    let conditions = pod.status.unwrap().conditions.unwrap();
    let scheduled = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap();
    assert!(
        scheduled
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("Insufficient cpu"),
        "{scheduled:?}"
    );
}

#[test]
fn the_eviction_api_stops_a_pod_gracefully() {
    let env = Env::new();
    let marker = tempfile::tempdir().unwrap();
    let file = marker.path().join("terminated");
    let script = format!(
        "trap 'echo got TERM > {}; exit 0' TERM; while true; do sleep 0.1; done",
        file.display()
    );
    env.pod("evictee", pod_spec(&script));
    env.wait(&env.pods(), "evictee", 60, conditions::is_pod_running());
    env.block_on(env.pods().evict("evictee", &EvictParams::default()))
        .unwrap();
    let pod = env.block_on(env.pods().get("evictee"));
    if let Ok(pod) = pod {
        let disruption = pod
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "DisruptionTarget");
        assert_eq!(
            disruption.and_then(|c| c.reason).as_deref(),
            Some("EvictionByEvictionAPI")
        );
    }
    env.wait_gone(&env.pods(), "evictee", 60);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        "got TERM",
        "the container had SIGTERM and its grace period"
    );
}

#[test]
fn a_pod_gets_its_own_service_account_token_and_only_the_rights_rbac_gives() {
    let env = Env::new();
    // Inside its mount namespace the pod sees the projected token; it reaches the API server
    // the in-cluster way, as the namespace's `default` account, which may list nothing.
    let script = r#"d=/var/run/secrets/kubernetes.io/serviceaccount
cat $d/namespace; echo
test -s $d/token && echo has-token
python3 - <<'EOF'
import json, os, ssl, urllib.request, urllib.error
d = "/var/run/secrets/kubernetes.io/serviceaccount"
ns = open(d + "/namespace").read()
url = "https://%s:%s/api/v1/namespaces/%s/pods" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"], ns)
req = urllib.request.Request(url, headers={"Authorization": "Bearer " + open(d + "/token").read()})
try:
    urllib.request.urlopen(req, context=ssl.create_default_context(cafile=d + "/ca.crt"))
    print("listed")
except urllib.error.HTTPError as e:
    print(e.code, json.load(e)["message"])
EOF"#;
    env.pod("sa", pod_spec(script));
    env.wait(&env.pods(), "sa", 60, container_terminated);
    let log = env
        .block_on(env.pods().logs("sa", &LogParams::default()))
        .unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], env.ns(), "{log}");
    assert_eq!(lines[1], "has-token", "{log}");
    assert!(
        lines[2].starts_with(&format!(
            "403 pods is forbidden: User \"system:serviceaccount:{}:default\" cannot list resource \"pods\"",
            env.ns()
        )),
        "{log}"
    );
    // The host's own directory stays empty.
    let host = std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token");
    assert!(
        !host.exists(),
        "the token is only inside the pod's mount namespace"
    );
}

#[test]
fn kubectl_creates_gets_waits_for_follows_the_logs_of_and_deletes_a_job() {
    let env = Env::new();
    let kubectl = std::env::var_os("FERRY_TEST_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/kubectl")
        });
    assert!(
        kubectl.exists(),
        "kubectl is not installed: run `scripts/servers.sh install`"
    );
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(&kubectl)
            .args(args)
            .env("KUBECONFIG", &env.namespace.kubeconfig)
            .env("HOME", home.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let file = home.path().join("job.yaml");
    std::fs::write(
        &file,
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: counted\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: main\n          image: ferry:test\n          command: [sh, -c, 'for i in 1 2 3; do echo line $i; sleep 0.5; done']\n",
    )
    .unwrap();
    assert!(run(&["create", "-f", file.to_str().unwrap()]).contains("job.batch/counted created"));
    let logs = run(&["logs", "-f", "job/counted"]);
    assert_eq!(logs, "line 1\nline 2\nline 3\n");
    run(&[
        "wait",
        "--for=condition=Complete",
        "job/counted",
        "--timeout=60s",
    ]);
    let table = run(&["get", "jobs"]);
    assert!(
        table.contains("counted") && table.contains("Complete"),
        "{table}"
    );
    run(&["delete", "job", "counted", "--wait=true"]);
    let gone = env.block_on(env.jobs().get_opt("counted")).unwrap();
    assert!(gone.is_none());
}

/// Deletes a cluster-scoped object (a PersistentVolume) when the test ends, passed or not:
/// the namespace's deletion does not take it along.
struct Deleting<'a, K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    env: &'a Env,
    api: Api<K>,
    name: String,
}

impl<K> Drop for Deleting<'_, K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    fn drop(&mut self) {
        let _ = self
            .env
            .block_on(self.api.delete(&self.name, &Default::default()));
    }
}

impl Env {
    fn volumes(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }

    /// A PersistentVolume named `<namespace>-<suffix>` of `class`, 1Gi, ReadWriteOnce, with
    /// `source` (e.g. `{"hostPath": {...}}`); deleted when the guard is dropped.
    fn volume(
        &self,
        suffix: &str,
        class: &str,
        source: serde_json::Value,
    ) -> Deleting<'_, PersistentVolume> {
        let name = format!("{}-{suffix}", self.ns());
        let mut spec = json!({
            "storageClassName": class,
            "capacity": { "storage": "1Gi" },
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
        });
        for (k, v) in source.as_object().unwrap() {
            spec[k] = v.clone();
        }
        self.create(
            &self.volumes(),
            json!({ "metadata": { "name": name }, "spec": spec }),
        );
        Deleting {
            env: self,
            api: self.volumes(),
            name,
        }
    }

    fn claim(&self, name: &str, class: &str) {
        self.create(
            &self.claims(),
            json!({
                "metadata": { "name": name },
                "spec": {
                    "storageClassName": class,
                    "accessModes": ["ReadWriteOnce"],
                    "resources": { "requests": { "storage": "1Gi" } },
                },
            }),
        );
    }
}

/// A pod spec mounting claim `claim` at /data (`read_only`: the pod volume's readOnly).
fn claim_pod(script: &str, claim: &str, read_only: bool) -> serde_json::Value {
    let mut spec = pod_spec(script);
    spec["volumes"] = json!([{
        "name": "data",
        "persistentVolumeClaim": { "claimName": claim, "readOnly": read_only },
    }]);
    spec["containers"][0]["volumeMounts"] = json!([{ "name": "data", "mountPath": "/data" }]);
    spec
}

fn waiting_reason(pod: &Pod) -> Option<(String, String)> {
    let waiting = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .clone()?;
    Some((waiting.reason?, waiting.message.unwrap_or_default()))
}

#[test]
fn a_claim_binds_to_a_host_path_volume_that_one_pod_writes_and_a_read_only_pod_reads() {
    let env = Env::new();
    let host = tempfile::tempdir().unwrap();
    // DirectoryOrCreate: the node creates it, as a kubelet does.
    let path = host.path().join("data");
    let pv = env.volume(
        "manual",
        "manual",
        json!({"hostPath": {"path": path, "type": "DirectoryOrCreate"}}),
    );
    env.claim("data", "manual");
    // The real binder binds the claim to the volume (the scheduler waits for it).
    let claim = env.wait(
        &env.claims(),
        "data",
        60,
        |c: Option<&PersistentVolumeClaim>| {
            c.and_then(|c| c.status.as_ref()?.phase.clone()).as_deref() == Some("Bound")
        },
    );
    assert_eq!(
        claim.spec.unwrap().volume_name.as_deref(),
        Some(pv.name.as_str())
    );

    env.pod(
        "writer",
        claim_pod("echo hello > /data/greeting && echo wrote", "data", false),
    );
    assert_eq!(env.log_of("writer"), "wrote\n");
    assert_eq!(
        std::fs::read_to_string(path.join("greeting")).unwrap(),
        "hello\n"
    );

    env.pod(
        "reader",
        claim_pod(
            // The shell's complaint on stdout, so that it keeps its place in the log.
            "cat /data/greeting; (echo more > /data/greeting) 2>&1 || echo write-refused",
            "data",
            true,
        ),
    );
    let log = env.log_of("reader");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert_eq!(lines[0], "hello", "{log}");
    assert!(lines[1].ends_with("Read-only file system"), "{log}");
    assert_eq!(lines[2], "write-refused", "{log}");
    assert_eq!(
        std::fs::read_to_string(path.join("greeting")).unwrap(),
        "hello\n",
        "the read-only pod changed nothing"
    );
}

#[test]
fn a_pod_whose_claim_is_not_bound_waits_with_failed_mount_events_until_it_is() {
    let env = Env::new();
    let class = format!("late-{}", env.ns());
    env.claim("late", &class);
    // Bound to the node directly: the scheduler would wait for the claim to be bound, the
    // node sees a pod whose claim is not (as after a claim's volume is lost).
    let mut spec = claim_pod("echo mounted", "late", false);
    spec["nodeName"] = json!(CPU_NODE);
    env.pod("early", spec);
    let event = env.wait_for_event(
        "early",
        "FailedMount",
        &format!("error processing PVC {}/late: PVC is not bound", env.ns()),
        60,
    );
    assert!(
        event
            .message
            .unwrap()
            .starts_with("Unable to attach or mount volumes: unmounted volumes=[data]"),
    );
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let pod = env.block_on(env.pods().get("early")).unwrap();
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    assert_eq!(
        waiting_reason(&pod).map(|(r, _)| r).as_deref(),
        Some("ContainerCreating")
    );

    // Once a volume appears the binder binds the claim, and the node, retrying, starts the pod.
    let host = tempfile::tempdir().unwrap();
    let _pv = env.volume(
        "late",
        &class,
        json!({"hostPath": {"path": host.path(), "type": "Directory"}}),
    );
    let pod = env.wait(&env.pods(), "early", 90, container_terminated);
    assert_eq!(terminated(&pod).unwrap().exit_code, 0);

    // A volume this node has no plugin for is refused the way a kubelet refuses it.
    let nfs_class = format!("nfs-{}", env.ns());
    let nfs = env.volume(
        "nfs",
        &nfs_class,
        json!({"nfs": {"server": "127.0.0.1", "path": "/exports/x"}}),
    );
    env.claim("shared", &nfs_class);
    env.wait(
        &env.claims(),
        "shared",
        60,
        |c: Option<&PersistentVolumeClaim>| {
            c.and_then(|c| c.status.as_ref()?.phase.clone()).as_deref() == Some("Bound")
        },
    );
    env.pod("nfs-user", claim_pod("true", "shared", false));
    env.wait_for_event(
        "nfs-user",
        "FailedMount",
        &format!(
            "failed to get Plugin from volumeSpec for volume \"{}\" err=no volume plugin matched",
            nfs.name
        ),
        60,
    );
}

#[test]
fn a_memory_empty_dir_is_a_tmpfs_of_its_size_limit() {
    let env = Env::new();
    let mut spec = pod_spec(
        "stat -f -c %T /dev/shm; stat -c %a /dev/shm; df -k /dev/shm | tail -n 1 | awk '{print $2}'
dd if=/dev/zero of=/dev/shm/fill bs=1M count=16 2>&1 | head -n 1
echo used $(du -k /dev/shm/fill | cut -f1)",
    );
    spec["volumes"] =
        json!([{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}]);
    spec["containers"][0]["volumeMounts"] = json!([{"name": "shm", "mountPath": "/dev/shm"}]);
    env.pod("shm", spec);
    let log = env.log_of("shm");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[..3], ["tmpfs", "1777", "8192"], "{log}");
    assert!(
        lines[3].contains("No space left on device"),
        "writing 16 MiB into 8 MiB: {log}"
    );
    assert_eq!(lines[4], "used 8192", "{log}");
}

#[test]
fn a_pod_runs_as_its_security_context_user_with_its_groups_and_volume_ownership() {
    let env = Env::new();
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), env.ns());
    env.create(
        &secrets,
        json!({"metadata": {"name": "creds"}, "stringData": {"key": "s3cr3t"}}),
    );
    // Files only root may read, next to one anyone may.
    let planted = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(planted.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (file, mode) in [("public", 0o644), ("private", 0o600)] {
        let p = planted.path().join(file);
        std::fs::write(&p, format!("{file}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let agent = running().pids["node-agent"];
    let script = format!(
        r#"id -u; id -g; id -G
grep NoNewPrivs /proc/self/status
cat /proc/{agent}/environ > /dev/null 2>&1 && echo environ-read || echo environ-refused
cat /planted/public; cat /planted/private > /dev/null 2>&1 && echo private-read || echo private-refused
touch /scratch/made && stat -c '%a %g' /scratch && stat -c %g /scratch/made
stat -c '%u %g %a' /secret/key
t=/var/run/secrets/kubernetes.io/serviceaccount/token
stat -c '%u %g %a' $(readlink -f $t); test -r $t && echo token-readable
touch made-here && echo workdir-writable"#
    );
    let mut spec = pod_spec(&script);
    spec["securityContext"] = json!({
        "runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [4000],
    });
    spec["containers"][0]["securityContext"] = json!({"allowPrivilegeEscalation": false});
    spec["volumes"] = json!([
        {"name": "scratch", "emptyDir": {}},
        {"name": "secret", "secret": {"secretName": "creds"}},
        {"name": "planted", "hostPath": {"path": planted.path(), "type": "Directory"}},
    ]);
    spec["containers"][0]["volumeMounts"] = json!([
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "secret", "mountPath": "/secret"},
        {"name": "planted", "mountPath": "/planted"},
    ]);
    env.pod("user", spec);
    let log = env.log_of("user");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "1000", "runAsUser: {log}");
    assert_eq!(lines[1], "3000", "runAsGroup: {log}");
    let groups: Vec<&str> = lines[2].split_whitespace().collect();
    for g in ["3000", "2000", "4000"] {
        assert!(groups.contains(&g), "fsGroup and supplementalGroups: {log}");
    }
    assert_eq!(
        lines[3], "NoNewPrivs:\t1",
        "allowPrivilegeEscalation: false: {log}"
    );
    assert_eq!(
        lines[4], "environ-refused",
        "the node agent's (root's) /proc files: {log}"
    );
    assert_eq!(lines[5..7], ["public", "private-refused"], "{log}");
    // emptyDir: 0777, with fsGroup's setgid: what the pod creates there is the group's.
    assert_eq!(lines[7..9], ["2777 2000", "2000"], "{log}");
    // Secret files: root's, fsGroup's group, defaultMode 0644.
    assert_eq!(lines[9], "0 2000 644", "{log}");
    // The token belongs to the user every container runs as, 0600, and fsGroup may read it.
    assert_eq!(lines[10..12], ["1000 2000 640", "token-readable"], "{log}");
    assert_eq!(lines[12], "workdir-writable", "{log}");
    assert_eq!(lines.len(), 13, "{log}");
}

#[test]
fn run_as_non_root_without_a_non_root_user_is_a_create_container_config_error() {
    let env = Env::new();
    let mut implicit = pod_spec("echo ran");
    implicit["securityContext"] = json!({"runAsNonRoot": true});
    let created = env.pod("implicit-root", implicit);
    let mut explicit = pod_spec("echo ran");
    explicit["containers"][0]["securityContext"] = json!({"runAsNonRoot": true, "runAsUser": 0});
    let created_explicit = env.pod("explicit-root", explicit);
    let cases = [
        (
            "implicit-root",
            created,
            "container has runAsNonRoot and image will run as root",
        ),
        (
            "explicit-root",
            created_explicit,
            "container's runAsUser breaks non-root policy",
        ),
    ];
    for (name, created, text) in cases {
        let pod = env.wait(&env.pods(), name, 60, |p: Option<&Pod>| {
            p.and_then(waiting_reason)
                .is_some_and(|(r, _)| r == "CreateContainerConfigError")
        });
        let uid = created.metadata.uid.unwrap();
        let expected = format!(
            "{text} (pod: \"{name}_{}({uid})\", container: main)",
            env.ns()
        );
        assert_eq!(waiting_reason(&pod).unwrap().1, expected);
        assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
        env.wait_for_event(name, "Failed", &format!("Error: {expected}"), 30);
    }
}

#[test]
fn the_cronjob_controller_creates_a_job_every_minute_that_completes() {
    let env = Env::new();
    let cronjobs: Api<CronJob> = Api::namespaced(env.client.clone(), env.ns());
    let cronjob = env.create(
        &cronjobs,
        json!({
            "metadata": { "name": "tick" },
            "spec": {
                "schedule": "* * * * *",
                "concurrencyPolicy": "Forbid",
                "jobTemplate": { "spec": { "backoffLimit": 0, "template": template("echo tick") } },
            },
        }),
    );
    // What `kubectl create job --from=cronjob/tick` sends: the template, marked manual, owned
    // by the CronJob.
    let template_spec = serde_json::to_value(&cronjob.spec.job_template.spec).unwrap();
    env.create(
        &env.jobs(),
        json!({
            "metadata": {
                "name": "tick-manual",
                "annotations": { "cronjob.kubernetes.io/instantiate": "manual" },
                "ownerReferences": [{
                    "apiVersion": "batch/v1", "kind": "CronJob", "name": "tick",
                    "uid": cronjob.metadata.uid.clone().unwrap(), "controller": true,
                }],
            },
            "spec": template_spec,
        }),
    );
    env.wait(
        &env.jobs(),
        "tick-manual",
        60,
        conditions::is_job_completed(),
    );

    // The scheduled one: within a minute of the next minute's start.
    let deadline = std::time::Instant::now() + Duration::from_secs(100);
    let scheduled = loop {
        let jobs = env.block_on(env.jobs().list(&Default::default())).unwrap();
        if let Some(job) = jobs.items.into_iter().find(|j| {
            j.metadata.name.as_deref() != Some("tick-manual")
                && j.metadata.owner_references.as_ref().is_some_and(|o| {
                    o.iter().any(|o| {
                        o.kind == "CronJob" && o.name == "tick" && o.controller == Some(true)
                    })
                })
        }) {
            break job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the CronJob controller created no Job in 100 s"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let name = scheduled.metadata.name.unwrap();
    assert!(name.starts_with("tick-"), "{name}");
    assert!(
        scheduled
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("batch.kubernetes.io/cronjob-scheduled-timestamp"),
        "the controller marks when it was scheduled"
    );
    let job = env.wait(&env.jobs(), &name, 60, conditions::is_job_completed());
    assert_eq!(job.status.unwrap().succeeded, Some(1));
    let cronjob = env.wait(&cronjobs, "tick", 30, |c: Option<&CronJob>| {
        c.and_then(|c| c.status.as_ref()?.last_successful_time.as_ref())
            .is_some()
    });
    assert!(cronjob.status.unwrap().last_schedule_time.is_some());
}
