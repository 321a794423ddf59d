//! Starting and stopping the whole cluster: certificates, etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and the nodes, in that order, each waited for.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::Api;
use serde::{Deserialize, Serialize};

use crate::kubeconfig::{self, Credentials};
use crate::node::{Image, NodeAgent, NodeConfig, Taint};
use crate::pki::Pki;
use crate::process::{Supervised, free_port, log_tail};
use crate::{ETCD_VERSION, KUBERNETES_VERSION};

/// The controllers the tests meet on a real cluster. Left out: those for objects ferry never
/// creates (deployments, services, CSRs, ...).
const CONTROLLERS: &[&str] = &[
    "job-controller",
    // Creates Jobs from CronJobs on their schedule: scheduled pipelines are CronJobs.
    "cronjob-controller",
    // Binds PersistentVolumeClaims to PersistentVolumes (pods with claims stay unscheduled
    // until their claims are bound).
    "persistentvolume-binder-controller",
    // The API server's StorageObjectInUseProtection admission puts a finalizer on every PVC
    // and PV; only these controllers lift it, so without them a claim (and the namespace
    // holding it) could never be deleted.
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "pod-garbage-collector-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "disruption-controller",
    "clusterrole-aggregation-controller",
];

/// Writes with their request bodies; node heartbeats (Leases) and reads are left out.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    resources: [{ group: coordination.k8s.io, resources: [leases] }]
  - level: Request
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
";

/// The name of the default cluster's CPU node (no GPUs, no taints).
pub const CPU_NODE: &str = "ferry-node";
/// The name of the default cluster's GPU node.
pub const GPU_NODE: &str = "ferry-gpu-node";
/// The extended resource the GPU node advertises (2 of them), as NVIDIA's device plugin names it.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// The GPU node's label: key and value. Outside `kubernetes.io/` and `k8s.io/`, so the
/// NodeRestriction admission plugin lets a kubelet set it on itself.
pub const GPU_NODE_LABEL: (&str, &str) = ("ferry.dev/accelerator", "nvidia-test");
/// The GPU node's taint: key, value, effect, as GKE and EKS taint their GPU node pools. A pod
/// must tolerate it to land there; a pod without the toleration never does.
pub const GPU_NODE_TAINT: (&str, &str, &str) = ("nvidia.com/gpu", "present", "NoSchedule");

/// One node of the cluster: what it advertises and how it registers.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The Node's name; its kubelet identity is `system:node:<name>`.
    pub name: String,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// `nvidia.com/gpu` capacity (0 = not advertised).
    pub gpus: u32,
    pub max_pods: u32,
    /// Extra labels (NodeRestriction refuses most of `kubernetes.io/` and `k8s.io/`).
    pub labels: BTreeMap<String, String>,
    /// Taints the node registers with (a kubelet's `--register-with-taints`).
    pub taints: Vec<Taint>,
}

impl NodeSpec {
    /// 8 CPUs, 16 GiB, 110 pods, no GPUs, no labels, no taints.
    pub fn new(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            cpu_millis: 8_000,
            memory_bytes: 16 << 30,
            gpus: 0,
            max_pods: 110,
            labels: BTreeMap::new(),
            taints: Vec::new(),
        }
    }
}

/// What to start. [`ClusterConfig::new`] gives the nodes that suit the tests.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Everything the cluster writes: certificates, etcd's data, logs, pod directories.
    pub dir: PathBuf,
    /// Where `etcd`, `kube-apiserver`, `kube-controller-manager` and `kube-scheduler` are.
    pub bin_dir: PathBuf,
    /// The nodes, each with its own agent; the first is [`ClusterInfo::node_name`].
    pub nodes: Vec<NodeSpec>,
    /// Images every node "has"; any other image fails to pull.
    pub images: Vec<Image>,
    /// Host variables copied into every pod.
    pub pod_inherit_env: Vec<String>,
}

impl ClusterConfig {
    /// Two nodes: [`CPU_NODE`] (no GPUs) and [`GPU_NODE`] (2 [`GPU_RESOURCE`], the label
    /// [`GPU_NODE_LABEL`] and the taint [`GPU_NODE_TAINT`]), so that tests meet GPU scheduling
    /// as on a cluster with a GPU pool: only pods that tolerate the taint land there.
    pub fn new(dir: impl Into<PathBuf>, bin_dir: impl Into<PathBuf>) -> ClusterConfig {
        let (label, label_value) = GPU_NODE_LABEL;
        let (key, value, effect) = GPU_NODE_TAINT;
        let gpu = NodeSpec {
            gpus: 2,
            labels: BTreeMap::from([(label.to_string(), label_value.to_string())]),
            taints: vec![Taint {
                key: key.into(),
                value: value.into(),
                effect: effect.into(),
            }],
            ..NodeSpec::new(GPU_NODE)
        };
        ClusterConfig {
            dir: dir.into(),
            bin_dir: bin_dir.into(),
            nodes: vec![NodeSpec::new(CPU_NODE), gpu],
            images: Vec::new(),
            pod_inherit_env: Vec::new(),
        }
    }
}

/// What a client needs to use a running cluster, written to `<dir>/cluster.json` so that other
/// processes (the test binaries, a person's shell) can find it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub dir: PathBuf,
    /// `https://127.0.0.1:PORT` of kube-apiserver.
    pub api_url: String,
    pub api_addr: SocketAddr,
    /// An admin kubeconfig (client certificate, group system:masters).
    pub kubeconfig: PathBuf,
    pub ca_file: PathBuf,
    /// A bearer token of the same admin (static token file), for clients behind a proxy,
    /// which cannot forward client certificates.
    pub admin_token: String,
    /// The first node ([`CPU_NODE`] in the default cluster), as before there were several.
    pub node_name: String,
    /// Every node, in the order of [`ClusterConfig::nodes`].
    #[serde(default)]
    pub node_names: Vec<String>,
    pub kubernetes_version: String,
    pub etcd_version: String,
    /// Process ids of the control plane (etcd, kube-apiserver, kube-controller-manager,
    /// kube-scheduler) and of the process running the node agents (`node-agent`), which runs
    /// as root: a test can check that a pod cannot read that process's files.
    pub pids: BTreeMap<String, u32>,
}

impl ClusterInfo {
    /// Reads `<dir>/cluster.json` of a running cluster.
    pub fn read(dir: &Path) -> anyhow::Result<ClusterInfo> {
        let path = dir.join("cluster.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("read {} (is the cluster running?)", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }

    pub fn ca_pem(&self) -> anyhow::Result<String> {
        std::fs::read_to_string(&self.ca_file)
            .with_context(|| format!("read {}", self.ca_file.display()))
    }

    /// The cluster's certificate authority, to issue more certificates.
    pub fn pki(&self) -> anyhow::Result<Pki> {
        Pki::load(&self.dir.join("pki"))
    }

    /// A kube client with the admin kubeconfig.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        admin_client(&self.kubeconfig).await
    }
}

/// A running cluster. Stop it with [`Cluster::stop`]; dropping it kills the processes too.
pub struct Cluster {
    info: ClusterInfo,
    processes: Vec<Supervised>,
    nodes: Vec<NodeAgent>,
}

impl Cluster {
    /// Starts everything and returns once the API server is ready, the `default` service
    /// account exists and every node is Ready without the not-ready taint (so pods can be
    /// scheduled; a node's own taints stay).
    pub async fn start(config: ClusterConfig) -> anyhow::Result<Cluster> {
        anyhow::ensure!(
            !config.nodes.is_empty(),
            "the cluster needs at least one node"
        );
        let mut names = std::collections::BTreeSet::new();
        for node in &config.nodes {
            anyhow::ensure!(
                names.insert(node.name.as_str()),
                "two nodes are named {:?}: node names must be unique",
                node.name
            );
        }
        let mut cluster = Cluster {
            info: ClusterInfo {
                dir: config.dir.clone(),
                api_url: String::new(),
                api_addr: "127.0.0.1:0".parse()?,
                kubeconfig: config.dir.join("kubeconfig"),
                ca_file: config.dir.join("pki/ca.crt"),
                admin_token: String::new(),
                node_name: config.nodes[0].name.clone(),
                node_names: config.nodes.iter().map(|n| n.name.clone()).collect(),
                kubernetes_version: KUBERNETES_VERSION.into(),
                etcd_version: ETCD_VERSION.into(),
                pids: BTreeMap::new(),
            },
            processes: Vec::new(),
            nodes: Vec::new(),
        };
        // On failure `cluster` is dropped and kill_on_drop stops what was started.
        cluster.boot(&config).await?;
        Ok(cluster)
    }

    async fn boot(&mut self, config: &ClusterConfig) -> anyhow::Result<()> {
        let dir = &config.dir;
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
        let bin = |name: &str| config.bin_dir.join(name);
        for name in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ] {
            anyhow::ensure!(
                bin(name).is_file(),
                "{} is missing: build the control plane with `scripts/kube-cluster.sh build`",
                bin(name).display()
            );
        }

        let pki = Pki::generate(&dir.join("pki"))?;
        let apiserver_cert = pki.server(
            "apiserver",
            &[
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )?;
        let admin = pki.client("admin", "ferry-admin", &["system:masters"])?;
        let kubelet_client = pki.client(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            &["system:masters"],
        )?;
        let kcm = pki.client("controller-manager", "system:kube-controller-manager", &[])?;
        let scheduler = pki.client("scheduler", "system:kube-scheduler", &[])?;
        let (sa_private, sa_public) = pki.service_account_keys()?;
        let admin_token = random_token()?;
        let tokens = dir.join("pki/tokens.csv");
        std::fs::write(
            &tokens,
            format!("{admin_token},ferry-admin,ferry-admin,\"system:masters\"\n"),
        )?;

        // etcd
        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd = Supervised::spawn(
            "etcd",
            &bin("etcd"),
            &[
                "--name=ferry".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=ferry={peer_url}"),
                "--listen-metrics-urls=".into(),
                // Tests need no durability across a power cut; fsync would dominate on CI disks.
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            &logs.join("etcd.log"),
        )?;
        self.track(etcd);
        self.wait_for("etcd", Duration::from_secs(30), || async {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", etcd_client))
                .await
                .is_ok())
        })
        .await?;

        // kube-apiserver, with an audit log of every write and its body: tests read what the
        // server was sent (that no credential travels outside a Secret, say).
        let audit_policy = dir.join("audit-policy.yaml");
        std::fs::write(&audit_policy, AUDIT_POLICY)?;
        let api_port = free_port()?;
        let api_addr: SocketAddr = format!("127.0.0.1:{api_port}").parse()?;
        let api_url = format!("https://{api_addr}");
        let path = |p: &Path| p.display().to_string();
        let apiserver = Supervised::spawn(
            "kube-apiserver",
            &bin("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                // Without it the server advertises the machine's other interface.
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--tls-cert-file={}", path(&apiserver_cert.cert_file)),
                format!("--tls-private-key-file={}", path(&apiserver_cert.key_file)),
                format!("--client-ca-file={}", path(&pki.ca_file())),
                format!("--token-auth-file={}", path(&tokens)),
                "--authorization-mode=Node,RBAC".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", path(&sa_public)),
                format!("--service-account-signing-key-file={}", path(&sa_private)),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                // No service network here: nothing would answer on the Service's endpoints.
                "--endpoint-reconciler-type=none".into(),
                format!(
                    "--kubelet-client-certificate={}",
                    path(&kubelet_client.cert_file)
                ),
                format!("--kubelet-client-key={}", path(&kubelet_client.key_file)),
                format!("--kubelet-certificate-authority={}", path(&pki.ca_file())),
                "--kubelet-preferred-address-types=InternalIP".into(),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                // Compaction every 20 s instead of 5 min: a watch resuming from an old
                // resourceVersion meets 410 Gone within a test's lifetime.
                "--etcd-compaction-interval=20s".into(),
                // ConfigMaps are watched straight from etcd (no watch cache, which answers an
                // old resourceVersion with the current state): the tests see real 410s there.
                // Pods and Jobs keep the cache, as everywhere.
                "--watch-cache-sizes=configmaps#0".into(),
                format!("--audit-policy-file={}", path(&audit_policy)),
                format!("--audit-log-path={}", path(&logs.join("audit.log"))),
                "--audit-log-format=json".into(),
                format!("--cert-dir={}", path(&dir.join("pki"))),
                "--v=1".into(),
            ],
            &logs.join("kube-apiserver.log"),
        )?;
        self.track(apiserver);
        self.info.api_url = api_url.clone();
        self.info.api_addr = api_addr;
        self.info.admin_token = admin_token;
        kubeconfig::write(
            &self.info.kubeconfig,
            &api_url,
            pki.ca_pem(),
            "ferry-admin",
            Credentials::Certificate {
                cert_pem: &admin.cert_pem,
                key_pem: &admin.key_pem,
            },
            None,
        )?;
        let client = admin_client(&self.info.kubeconfig).await?;
        self.wait_for("kube-apiserver /readyz", Duration::from_secs(120), || {
            let client = client.clone();
            async move {
                let request = http::Request::get("/readyz").body(Vec::new())?;
                Ok(matches!(client.request_text(request).await, Ok(body) if body.trim() == "ok"))
            }
        })
        .await?;

        // kube-controller-manager and kube-scheduler, each with its own identity.
        let write_user = |name: &str, user: &str, id: &crate::pki::Identity| {
            let file = dir.join(format!("{name}.kubeconfig"));
            kubeconfig::write(
                &file,
                &api_url,
                pki.ca_pem(),
                user,
                Credentials::Certificate {
                    cert_pem: &id.cert_pem,
                    key_pem: &id.key_pem,
                },
                None,
            )
            .map(|()| file)
        };
        let kcm_config = write_user("controller-manager", "system:kube-controller-manager", &kcm)?;
        let controller_manager = Supervised::spawn(
            "kube-controller-manager",
            &bin("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", path(&kcm_config)),
                format!("--authentication-kubeconfig={}", path(&kcm_config)),
                format!("--authorization-kubeconfig={}", path(&kcm_config)),
                format!("--controllers={}", CONTROLLERS.join(",")),
                // Each controller acts as its own service account, with its bootstrap Role.
                "--use-service-account-credentials=true".into(),
                format!("--service-account-private-key-file={}", path(&sa_private)),
                format!("--root-ca-file={}", path(&pki.ca_file())),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()?),
                "--v=1".into(),
            ],
            &logs.join("kube-controller-manager.log"),
        )?;
        self.track(controller_manager);
        let scheduler_config = write_user("scheduler", "system:kube-scheduler", &scheduler)?;
        let scheduler = Supervised::spawn(
            "kube-scheduler",
            &bin("kube-scheduler"),
            &[
                format!("--kubeconfig={}", path(&scheduler_config)),
                format!("--authentication-kubeconfig={}", path(&scheduler_config)),
                format!("--authorization-kubeconfig={}", path(&scheduler_config)),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()?),
                "--v=1".into(),
            ],
            &logs.join("kube-scheduler.log"),
        )?;
        self.track(scheduler);

        // The nodes, each with the credentials of its own kubelet (Node authorizer,
        // NodeRestriction), its own serving certificate, kubelet port and data directory.
        for spec in &config.nodes {
            let user = format!("system:node:{}", spec.name);
            let credentials =
                pki.client(&format!("node-{}", spec.name), &user, &["system:nodes"])?;
            let serving = pki.server(&format!("kubelet-{}", spec.name), &[spec.name.as_str()])?;
            let kubeconfig = write_user(&format!("node-{}", spec.name), &user, &credentials)?;
            let node = NodeAgent::start(NodeConfig {
                name: spec.name.clone(),
                kubeconfig,
                data_dir: dir.join("nodes").join(&spec.name),
                kubelet_port: 0,
                serving_cert_pem: serving.cert_pem.clone(),
                serving_key_pem: serving.key_pem.clone(),
                client_ca_pem: pki.ca_pem().to_string(),
                images: config.images.clone(),
                cpu_millis: spec.cpu_millis,
                memory_bytes: spec.memory_bytes,
                gpus: spec.gpus,
                max_pods: spec.max_pods,
                labels: spec.labels.clone(),
                taints: spec.taints.clone(),
                api_server: api_addr,
                inherit_env: config.pod_inherit_env.clone(),
            })
            .await
            .with_context(|| format!("start the node agent of {}", spec.name))?;
            self.nodes.push(node);
        }

        // Ready for pods: the ServiceAccount admission plugin refuses pods until `default`
        // exists, and the scheduler skips a node until node-lifecycle-controller has lifted
        // its not-ready taint.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        self.wait_for(
            "the default service account",
            Duration::from_secs(60),
            || {
                let accounts = accounts.clone();
                async move { Ok(accounts.get_opt("default").await?.is_some()) }
            },
        )
        .await?;
        let nodes: Api<Node> = Api::all(client.clone());
        for spec in &config.nodes {
            let name = spec.name.clone();
            self.wait_for(
                &format!("node {name} Ready without the not-ready taint"),
                Duration::from_secs(90),
                || {
                    let nodes = nodes.clone();
                    let name = name.clone();
                    async move { Ok(nodes.get_opt(&name).await?.is_some_and(|n| schedulable(&n))) }
                },
            )
            .await?;
        }

        for process in &self.processes {
            if let Some(pid) = process.pid() {
                self.info.pids.insert(process.name.to_string(), pid);
            }
        }
        self.info
            .pids
            .insert("node-agent".into(), std::process::id());
        let info = serde_json::to_string_pretty(&self.info)?;
        std::fs::write(dir.join("cluster.json"), info)?;
        Ok(())
    }

    fn track(&mut self, process: Supervised) {
        self.processes.push(process);
    }

    /// Polls `ready` every 100 ms until it says yes; fails early, with the log's tail, if a
    /// program of the control plane exits meanwhile.
    async fn wait_for<F, Fut>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<bool>>,
    {
        let started = Instant::now();
        let mut last_error = None;
        loop {
            for process in &mut self.processes {
                process.check_alive()?;
            }
            match ready().await {
                Ok(true) => {
                    tracing::info!("{what}: ready after {:.1?}", started.elapsed());
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => last_error = Some(e),
            }
            if started.elapsed() > timeout {
                let logs: Vec<String> = self
                    .processes
                    .iter()
                    .map(|p| format!("--- {}:\n{}", p.log.display(), log_tail(&p.log, 15)))
                    .collect();
                anyhow::bail!(
                    "{what}: not ready after {timeout:?} (last error: {}); logs:\n{}",
                    last_error.map_or("none".into(), |e| format!("{e:#}")),
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn info(&self) -> &ClusterInfo {
        &self.info
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.info.kubeconfig
    }

    /// Stops the nodes first (their pods' processes, all nodes at once), then the control
    /// plane in reverse order.
    pub async fn stop(mut self) {
        futures::future::join_all(self.nodes.drain(..).map(NodeAgent::shutdown)).await;
        while let Some(process) = self.processes.pop() {
            process.stop(Duration::from_secs(10)).await;
        }
        let _ = std::fs::remove_file(self.info.dir.join("cluster.json"));
    }
}

/// Ready, and without the taints the node lifecycle controller puts on a node that is not
/// (yet) ready or reachable. Taints the node registered with are its own and stay.
fn schedulable(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let lifecycle_tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| {
            t.iter().any(|t| {
                t.key == "node.kubernetes.io/not-ready" || t.key == "node.kubernetes.io/unreachable"
            })
        });
    ready && !lifecycle_tainted
}

async fn admin_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("read {}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("random token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
