//! The node: a small kubelet that registers a real Node with the real API server and runs the
//! pods the real scheduler binds to it as local processes. A cluster may run several, each
//! with its own identity, kubelet port, serving certificate, data directory and cgroups.
//!
//! It uses only what the Node authorizer and the NodeRestriction admission plugin let a
//! kubelet (`system:node:<name>` in `system:nodes`) do: create/patch its own Node (with the
//! taints it registers with) and Lease, list/watch pods with `spec.nodeName=<name>`, read the
//! ConfigMaps, Secrets, PersistentVolumeClaims and PersistentVolumes of its pods, request their
//! service-account tokens, patch their status, delete them, create events.
//!
//! What it fakes, and reports the way a kubelet would:
//! - images: a container's image must match one of [`NodeConfig::images`] (else
//!   `ErrImagePull` / `ImagePullBackOff`); "running" an image means putting its directories
//!   first on `PATH`. There is no entrypoint, so every container needs a `command`; there is
//!   no image `USER` either, so a container without `runAsUser` runs as the agent (root), and
//!   `runAsNonRoot` without a non-root `runAsUser` is refused (`CreateContainerConfigError`,
//!   the kubelet's message).
//! - GPUs: `nvidia.com/gpu` is only advertised ([`NodeConfig::gpus`]); the scheduler counts
//!   it, a pod gets no device.
//! - the network: pods share the host's; podIP = hostIP = 127.0.0.1. There is no service
//!   proxy, so `KUBERNETES_SERVICE_HOST`/`PORT` point at the API server's own address
//!   ([`NodeConfig::api_server`]) rather than at a cluster IP.
//! - isolation: each container has its own mount namespace (volumes and a private working
//!   directory bind-mounted where the spec says) and, when the memory cgroup v1 controller is
//!   available, its own memory cgroup (`limits.memory` enforced by the kernel, `OOMKilled`);
//!   otherwise it sees the host and has no CPU limit. It shares the host's PID namespace and
//!   file system otherwise.
//! - users: `runAsUser`, `runAsGroup`, `supplementalGroups` and `fsGroup` (pod or container)
//!   give the process its uid, gid and groups (the host's /etc/passwd and /etc/group stand in
//!   for the image's), `allowPrivilegeEscalation: false` sets `no_new_privs`; `fsGroup` owns
//!   the files of emptyDir, configMap, secret, downwardAPI and projected volumes (group read,
//!   write for emptyDirs, setgid directories), and the user every container shares owns the
//!   projected token (0600). The private working directory belongs to the container's user.
//! - volumes: emptyDir (0777; `medium: Memory` is a tmpfs of the kubelet's size: `sizeLimit`,
//!   the pod's memory limit or the node's memory, whichever is smallest), configMap, secret,
//!   downwardAPI and projected (read-only mounts, as a kubelet's), hostPath, and
//!   persistentVolumeClaim: a claim that is missing or not bound keeps the pod
//!   `ContainerCreating` with `FailedMount` events, retried; a bound claim's hostPath or
//!   local PersistentVolume is bind-mounted (read-only with `readOnly`); other
//!   PersistentVolume sources are refused as by a kubelet without their plugin.
//!
//! Not supported: probes (a running container is ready), sidecar init containers
//! (`restartPolicy: Always` on an init container is run like any init container), ephemeral
//! containers, exec/attach/port-forward, other volume types (CSI, NFS, ephemeral, image,
//! block devices), emptyDir size limits on disk (no eviction), capabilities, seccomp,
//! AppArmor, SELinux, user namespaces (`hostUsers: false`), `fsGroupChangePolicy` (ownership
//! is always applied), the `user` field of container statuses, and updates of volumes after
//! a pod starts.

mod env;
mod logs;
mod pods;
mod process;
mod security;
mod status;
mod volumes;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The kubelet version the node reports (the control plane's).
pub const KUBELET_VERSION: &str = "v1.37.2";
/// What the node reports as its container runtime.
pub const CONTAINER_RUNTIME_VERSION: &str = "ferry-process://0.1.0";

/// How the node agent is set up.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's name, e.g. "ferry-node".
    pub name: String,
    /// Credentials of this node: user `system:node:<name>`, group `system:nodes`.
    pub kubeconfig: PathBuf,
    /// Pod directories, logs and cgroup names derive from here.
    pub data_dir: PathBuf,
    /// HTTPS port of the kubelet API on 127.0.0.1; 0 picks a free one.
    pub kubelet_port: u16,
    /// Kubelet serving certificate (SAN 127.0.0.1), PEM.
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    /// CA of the API server's kubelet client certificate: clients of the kubelet API must
    /// present a certificate it signed (except for `/healthz`).
    pub client_ca_pem: String,
    /// The images this node "has".
    pub images: Vec<Image>,
    /// Capacity and allocatable.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// `nvidia.com/gpu` capacity (0 = not advertised).
    pub gpus: u32,
    pub max_pods: u32,
    /// Extra node labels; kubernetes.io/hostname, kubernetes.io/os and kubernetes.io/arch are
    /// added. NodeRestriction rejects labels a kubelet may not set (most of `kubernetes.io/`
    /// and `k8s.io/` outside the kubelet's own, and `node-restriction.kubernetes.io/`).
    pub labels: BTreeMap<String, String>,
    /// Taints the Node registers with (a kubelet's `--register-with-taints`). NodeRestriction
    /// lets a kubelet set taints only when it creates its Node, so an existing Node keeps the
    /// taints it has.
    pub taints: Vec<Taint>,
    /// Where pods reach the API server (`KUBERNETES_SERVICE_HOST`/`PORT`): there is no service
    /// proxy here, so this is the API server's own address.
    pub api_server: SocketAddr,
    /// Host environment variables copied into every pod (e.g. LLVM_PROFILE_FILE).
    pub inherit_env: Vec<String>,
}

/// A node taint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// An image the node has.
#[derive(Clone, Debug)]
pub struct Image {
    /// The exact image name, or a prefix ending in '*'.
    pub name: String,
    /// Directories put first on the pod's PATH: what "is in" the image.
    pub path: Vec<PathBuf>,
}

impl Image {
    fn matches(&self, image: &str) -> bool {
        match self.name.strip_suffix('*') {
            Some(prefix) => image.starts_with(prefix),
            None => image == self.name,
        }
    }
}

/// The image entry for `image`: an exact name wins over a prefix, a longer prefix over a
/// shorter one.
fn find_image<'a>(images: &'a [Image], image: &str) -> Option<&'a Image> {
    images.iter().filter(|i| i.matches(image)).max_by_key(|i| {
        if i.name.ends_with('*') {
            i.name.len()
        } else {
            usize::MAX
        }
    })
}

/// What the node's tasks share.
pub(super) struct Shared {
    config: NodeConfig,
    client: Client,
    logs: Arc<logs::LogRegistry>,
    spawner: process::Spawner,
    cgroups: Option<process::CgroupRoot>,
    shutdown: watch::Receiver<bool>,
    /// The agent's PATH when it started: what follows the image directories in a pod's PATH.
    host_path: OsString,
    facts: env::NodeFacts,
    /// The agent's own uid: what a container without runAsUser runs as (no image has a USER).
    agent_uid: u32,
}

impl Shared {
    fn node_name(&self) -> &str {
        &self.config.name
    }

    /// Records a v1 Event about a pod, as a kubelet does (best effort, in the background).
    fn event(&self, pod: &Value, kind: &str, reason: &str, message: &str, container: Option<&str>) {
        let namespace = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let now = status::now_rfc3339();
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let mut involved = json!({
            "apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": name,
            "uid": pod["metadata"]["uid"], "resourceVersion": pod["metadata"]["resourceVersion"],
        });
        if let Some(c) = container {
            let field = if pod["spec"]["initContainers"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|x| x["name"] == c))
            {
                "initContainers"
            } else {
                "containers"
            };
            involved["fieldPath"] = json!(format!("spec.{field}{{{c}}}"));
        }
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": { "name": format!("{name}.{nanos:x}"), "namespace": namespace },
            "involvedObject": involved,
            "reason": reason, "message": message, "type": kind,
            "source": { "component": "kubelet", "host": self.config.name },
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": "kubelet", "reportingInstance": self.config.name,
        });
        let client = self.client.clone();
        tokio::spawn(async move {
            let event: Event = match serde_json::from_value(event) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "building an event");
                    return;
                }
            };
            let api: Api<Event> = Api::namespaced(client, &namespace);
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %e, "creating an event");
            }
        });
    }
}

/// Resolves once the agent is shutting down (or its controller is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is not Send: drop it here, not across a select! arm.
    let _ = shutdown.wait_for(|s| *s).await;
}

/// A running node agent. Dropping it without [`NodeAgent::shutdown`] asks the pod workers to
/// stop their processes, but does not wait for them.
pub struct NodeAgent {
    shared: Arc<Shared>,
    port: u16,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pods: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for NodeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAgent")
            .field("name", &self.shared.config.name)
            .field("kubelet_port", &self.port)
            .finish()
    }
}

impl NodeAgent {
    /// Registers the Node, starts heartbeats, the pod watch and the kubelet HTTPS server;
    /// returns once the Node object exists.
    pub async fn start(config: NodeConfig) -> anyhow::Result<NodeAgent> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&config.kubeconfig)
            .with_context(|| format!("read the node kubeconfig {}", config.kubeconfig.display()))?;
        let client_config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .context("load the node kubeconfig")?;
        let client = Client::try_from(client_config).context("build the node's API client")?;
        std::fs::create_dir_all(config.data_dir.join("pods"))
            .with_context(|| format!("create {}", config.data_dir.display()))?;

        let tls = logs::tls_config(
            &config.serving_cert_pem,
            &config.serving_key_pem,
            &config.client_ca_pem,
        )?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.kubelet_port))
            .await
            .with_context(|| {
                format!("bind the kubelet API on 127.0.0.1:{}", config.kubelet_port)
            })?;
        let port = listener.local_addr().context("kubelet API address")?.port();

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let spawner = process::Spawner::start(tokio::runtime::Handle::current())
            .context("start the node's spawner thread")?;
        let cgroups = process::CgroupRoot::create(&config.name);
        let facts = env::NodeFacts {
            node_name: config.name.clone(),
            cpu_millis: config.cpu_millis,
            memory_bytes: config.memory_bytes,
            ephemeral_bytes: ephemeral_storage(&config.data_dir),
        };
        let shared = Arc::new(Shared {
            client,
            logs: Arc::default(),
            spawner,
            cgroups,
            shutdown: shutdown_rx.clone(),
            host_path: std::env::var_os("PATH")
                .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            facts,
            // SAFETY: getuid has no preconditions.
            agent_uid: unsafe { libc::getuid() },
            config,
        });

        let server = tokio::spawn(logs::serve(
            listener,
            tls,
            shared.logs.clone(),
            shutdown_rx.clone(),
        ));
        let registered = register_until(&shared, port, Duration::from_secs(60)).await;
        let transition = match registered {
            Ok(t) => t,
            Err(e) => {
                let _ = shutdown_tx.send(true);
                server.abort();
                shared.spawner.stop().await;
                if let Some(c) = &shared.cgroups {
                    c.remove();
                }
                return Err(e);
            }
        };
        let heartbeat = tokio::spawn(heartbeats(shared.clone(), port, transition));
        let pods = tokio::spawn(pods::run(shared.clone()));
        Ok(NodeAgent {
            shared,
            port,
            shutdown: shutdown_tx,
            tasks: vec![server, heartbeat],
            pods: Some(pods),
        })
    }

    /// The port of the kubelet API on 127.0.0.1.
    pub fn kubelet_port(&self) -> u16 {
        self.port
    }

    /// Stops every pod process (SIGTERM to its process group, a short grace, SIGKILL), waits
    /// for them, removes their cgroups; leaves API objects alone.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(pods) = self.pods.take() {
            let _ = pods.await;
        }
        // The pods' tmpfs volumes: a mount left behind would keep the directory from being
        // removed (and its memory in use).
        volumes::unmount_under(&self.shared.config.data_dir);
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        if let Some(c) = &self.shared.cgroups {
            c.remove();
        }
        // Only now: the spawner thread's exit would SIGKILL (PDEATHSIG) anything left.
        self.shared.spawner.stop().await;
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Bytes available for ephemeral storage: the size of the file system holding `data_dir`.
fn ephemeral_storage(dir: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return 100 << 30;
    };
    // SAFETY: statvfs fills the zeroed struct; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) == 0 {
            return (st.f_blocks as u64).saturating_mul(st.f_frsize as u64);
        }
    }
    100 << 30
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `1500` → "1500m", `2000` → "2".
fn cpu_quantity(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Bytes as a kubelet reports memory: in Ki when exact.
fn bytes_quantity(bytes: u64) -> String {
    if bytes.is_multiple_of(1024) && bytes > 0 {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// The node's labels: the configured ones plus those every kubelet sets.
fn node_labels(config: &NodeConfig) -> BTreeMap<String, String> {
    let mut labels = config.labels.clone();
    for (k, v) in [
        ("kubernetes.io/hostname", config.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch()),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", arch()),
    ] {
        labels.entry(k.to_string()).or_insert_with(|| v.to_string());
    }
    labels
}

/// The Node's spec at registration: its taints.
fn node_spec(config: &NodeConfig) -> Value {
    let taints: Vec<Value> = config
        .taints
        .iter()
        .map(|t| json!({ "key": t.key, "value": t.value, "effect": t.effect }))
        .collect();
    json!({ "taints": taints })
}

fn node_conditions(heartbeat: &str, transition: &str) -> Value {
    let c = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": heartbeat, "lastTransitionTime": transition,
        })
    };
    json!([
        c(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        c(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        c(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        c(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status"
        ),
    ])
}

/// The Node's full status.
fn node_status(
    config: &NodeConfig,
    facts: &env::NodeFacts,
    port: u16,
    now: &str,
    transition: &str,
) -> Value {
    let mut resources = json!({
        "cpu": cpu_quantity(config.cpu_millis),
        "memory": bytes_quantity(config.memory_bytes),
        "pods": config.max_pods.to_string(),
        "ephemeral-storage": bytes_quantity(facts.ephemeral_bytes),
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
    });
    if config.gpus > 0 {
        resources["nvidia.com/gpu"] = json!(config.gpus.to_string());
    }
    let images: Vec<Value> = config
        .images
        .iter()
        .filter(|i| !i.name.ends_with('*'))
        .map(|i| json!({ "names": [i.name, status::image_id(&i.name)], "sizeBytes": 0 }))
        .collect();
    let machine_id = read_trimmed("/etc/machine-id");
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": node_conditions(now, transition),
        "addresses": [
            { "type": "InternalIP", "address": "127.0.0.1" },
            { "type": "Hostname", "address": config.name },
        ],
        "daemonEndpoints": { "kubeletEndpoint": { "Port": port } },
        "nodeInfo": {
            "machineID": machine_id,
            "systemUUID": machine_id,
            "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
            "osImage": os_image(),
            "containerRuntimeVersion": CONTAINER_RUNTIME_VERSION,
            "kubeletVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": arch(),
        },
        "images": images,
    })
}

/// Registers the Node (retrying API errors until `timeout`); returns the conditions'
/// lastTransitionTime.
async fn register_until(shared: &Shared, port: u16, timeout: Duration) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match register(shared, port).await {
            Ok(t) => return Ok(t),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(node = shared.node_name(), error = %format!("{e:#}"), "registering the node; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.context(format!("register node {}", shared.node_name()))),
        }
    }
}

/// Creates the Node, or updates its labels if it exists; then writes its status.
async fn register(shared: &Shared, port: u16) -> anyhow::Result<String> {
    let config = &shared.config;
    let api: Api<Node> = Api::all(shared.client.clone());
    let now = status::now_rfc3339();
    let labels = node_labels(config);
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": config.name, "labels": labels },
        "spec": node_spec(config),
        "status": node_status(config, &shared.facts, port, &now, &now),
    }))
    .context("build the Node object")?;
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            api.patch(
                &config.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "labels": labels } })),
            )
            .await
            .context("update the existing Node's labels")?;
        }
        Err(e) => return Err(anyhow::Error::new(e).context("create the Node")),
    }
    // The status in a create may be dropped or stale (an existing node): write it explicitly.
    api.patch_status(
        &config.name,
        &PatchParams::default(),
        &Patch::Strategic(
            json!({ "status": node_status(config, &shared.facts, port, &now, &now) }),
        ),
    )
    .await
    .context("write the Node's status")?;
    Ok(now)
}

/// Renews the Lease every 10 s and refreshes the Node's conditions every 20 s.
async fn heartbeats(shared: Arc<Shared>, port: u16, transition: String) {
    let mut shutdown = shared.shutdown.clone();
    let mut lease_tick = tokio::time::interval(Duration::from_secs(10));
    let mut status_tick = tokio::time::interval(Duration::from_secs(20));
    lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut transition = transition;
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = lease_tick.tick() => {
                if let Err(e) = renew_lease(&shared).await {
                    tracing::warn!(node = shared.node_name(), error = %format!("{e:#}"), "renewing the node lease");
                }
            }
            _ = status_tick.tick() => {
                let api: Api<Node> = Api::all(shared.client.clone());
                let now = status::now_rfc3339();
                let patch = json!({ "status": { "conditions": node_conditions(&now, &transition) } });
                match api.patch_status(shared.node_name(), &PatchParams::default(), &Patch::Strategic(patch)).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        // Someone deleted the Node: register again, as a kubelet does.
                        match register(&shared, port).await {
                            Ok(t) => transition = t,
                            Err(e) => tracing::warn!(node = shared.node_name(), error = %format!("{e:#}"), "re-registering the node"),
                        }
                    }
                    Err(e) => tracing::warn!(node = shared.node_name(), error = %e, "updating the node status"),
                }
            }
        }
    }
}

/// RFC 3339 with microseconds, as `metav1.MicroTime` serialises.
fn now_micro() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

async fn renew_lease(shared: &Shared) -> anyhow::Result<()> {
    let name = shared.node_name();
    let api: Api<Lease> = Api::namespaced(shared.client.clone(), "kube-node-lease");
    match api.get_opt(name).await.context("get the node lease")? {
        Some(mut lease) => {
            let mut value = serde_json::to_value(&lease).context("serialise the lease")?;
            value["spec"]["holderIdentity"] = json!(name);
            value["spec"]["leaseDurationSeconds"] = json!(40);
            value["spec"]["renewTime"] = json!(now_micro());
            lease = serde_json::from_value(value).context("build the lease")?;
            api.replace(name, &PostParams::default(), &lease)
                .await
                .context("update the node lease")?;
        }
        None => {
            let node = Api::<Node>::all(shared.client.clone())
                .get(name)
                .await
                .context("get the Node for the lease's owner")?;
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {
                    "name": name, "namespace": "kube-node-lease",
                    "ownerReferences": [{
                        "apiVersion": "v1", "kind": "Node", "name": name,
                        "uid": node.metadata.uid.unwrap_or_default(),
                    }],
                },
                "spec": { "holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro() },
            }))
            .context("build the lease")?;
            api.create(&PostParams::default(), &lease)
                .await
                .context("create the node lease")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str) -> Image {
        Image {
            name: name.into(),
            path: vec![PathBuf::from(format!("/images/{name}"))],
        }
    }

    #[test]
    fn images_match_exactly_or_by_prefix() {
        let images = [
            image("busybox*"),
            image("busybox:1.36"),
            image("ferry/*"),
            image("ferry/worker*"),
        ];
        assert_eq!(
            find_image(&images, "busybox:1.36").unwrap().name,
            "busybox:1.36"
        );
        assert_eq!(
            find_image(&images, "busybox:latest").unwrap().name,
            "busybox*"
        );
        assert_eq!(
            find_image(&images, "ferry/worker:dev").unwrap().name,
            "ferry/worker*"
        );
        assert_eq!(find_image(&images, "ferry/cli").unwrap().name, "ferry/*");
        assert!(find_image(&images, "alpine").is_none());
        assert!(find_image(&[image("exact")], "exactly").is_none());
    }

    #[test]
    fn node_status_advertises_what_the_config_says() {
        let config = NodeConfig {
            name: "n1".into(),
            kubeconfig: "/k".into(),
            data_dir: "/d".into(),
            kubelet_port: 0,
            serving_cert_pem: String::new(),
            serving_key_pem: String::new(),
            client_ca_pem: String::new(),
            images: vec![image("busybox:1.36"), image("any*")],
            cpu_millis: 1500,
            memory_bytes: 4 << 30,
            gpus: 2,
            max_pods: 20,
            labels: BTreeMap::from([("pool".to_string(), "a".to_string())]),
            taints: vec![Taint {
                key: "nvidia.com/gpu".into(),
                value: "present".into(),
                effect: "NoSchedule".into(),
            }],
            api_server: "127.0.0.1:6443".parse().unwrap(),
            inherit_env: vec![],
        };
        let facts = env::NodeFacts {
            node_name: "n1".into(),
            cpu_millis: 1500,
            memory_bytes: 4 << 30,
            ephemeral_bytes: 10 << 30,
        };
        let s = node_status(
            &config,
            &facts,
            10250,
            "2024-01-01T00:01:00Z",
            "2024-01-01T00:00:00Z",
        );
        assert_eq!(s["capacity"]["cpu"], "1500m");
        assert_eq!(s["allocatable"]["memory"], "4194304Ki");
        assert_eq!(s["capacity"]["pods"], "20");
        assert_eq!(s["capacity"]["nvidia.com/gpu"], "2");
        assert_eq!(s["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
        assert_eq!(
            s["addresses"][0],
            json!({"type": "InternalIP", "address": "127.0.0.1"})
        );
        assert_eq!(s["nodeInfo"]["kubeletVersion"], "v1.37.2");
        assert_eq!(s["images"].as_array().unwrap().len(), 1);
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["reason"], "KubeletReady");
        assert_eq!(ready["lastHeartbeatTime"], "2024-01-01T00:01:00Z");
        assert_eq!(ready["lastTransitionTime"], "2024-01-01T00:00:00Z");
        // The status deserialises into the real type.
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": "n1"}, "status": s})).unwrap();
        assert_eq!(node.status.unwrap().capacity.unwrap()["cpu"].0, "1500m");
        let labels = node_labels(&config);
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["pool"], "a");
        assert_eq!(
            node_spec(&config)["taints"],
            json!([{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}])
        );
        assert_eq!(cpu_quantity(2000), "2");
        assert_eq!(bytes_quantity(1000), "1000");
    }
}
