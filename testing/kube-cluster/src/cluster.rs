//! Starting and stopping the whole cluster: certificates, etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and the node, in that order, each waited for.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::Api;
use serde::{Deserialize, Serialize};

use crate::kubeconfig::{self, Credentials};
use crate::node::{Image, NodeAgent, NodeConfig};
use crate::pki::Pki;
use crate::process::{Supervised, free_port, log_tail};
use crate::{ETCD_VERSION, KUBERNETES_VERSION};

/// The controllers the tests meet on a real cluster. Left out: those for objects ferry never
/// creates (deployments, services, volumes, CSRs, ...).
const CONTROLLERS: &[&str] = &[
    "job-controller",
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

/// What to start. [`ClusterConfig::new`] gives a node that suits the tests.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Everything the cluster writes: certificates, etcd's data, logs, pod directories.
    pub dir: PathBuf,
    /// Where `etcd`, `kube-apiserver`, `kube-controller-manager` and `kube-scheduler` are.
    pub bin_dir: PathBuf,
    pub node_name: String,
    pub node_cpu_millis: u64,
    pub node_memory_bytes: u64,
    pub node_gpus: u32,
    pub node_max_pods: u32,
    pub node_labels: BTreeMap<String, String>,
    /// Images the node "has"; any other image fails to pull.
    pub images: Vec<Image>,
    /// Host variables copied into every pod.
    pub pod_inherit_env: Vec<String>,
}

impl ClusterConfig {
    pub fn new(dir: impl Into<PathBuf>, bin_dir: impl Into<PathBuf>) -> ClusterConfig {
        ClusterConfig {
            dir: dir.into(),
            bin_dir: bin_dir.into(),
            node_name: "ferry-node".into(),
            node_cpu_millis: 8_000,
            node_memory_bytes: 16 << 30,
            node_gpus: 2,
            node_max_pods: 110,
            node_labels: BTreeMap::new(),
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
    pub node_name: String,
    pub kubernetes_version: String,
    pub etcd_version: String,
    /// Process ids of the control plane (etcd, apiserver, controller-manager, scheduler).
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
    node: Option<NodeAgent>,
}

impl Cluster {
    /// Starts everything and returns once the API server is ready, the `default` service
    /// account exists and the node is Ready without taints (so pods can be scheduled).
    pub async fn start(config: ClusterConfig) -> anyhow::Result<Cluster> {
        let mut cluster = Cluster {
            info: ClusterInfo {
                dir: config.dir.clone(),
                api_url: String::new(),
                api_addr: "127.0.0.1:0".parse()?,
                kubeconfig: config.dir.join("kubeconfig"),
                ca_file: config.dir.join("pki/ca.crt"),
                admin_token: String::new(),
                node_name: config.node_name.clone(),
                kubernetes_version: KUBERNETES_VERSION.into(),
                etcd_version: ETCD_VERSION.into(),
                pids: BTreeMap::new(),
            },
            processes: Vec::new(),
            node: None,
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
        let node_user = format!("system:node:{}", config.node_name);
        let node_client = pki.client("node", &node_user, &["system:nodes"])?;
        let kubelet_serving = pki.server("kubelet", &[config.node_name.as_str()])?;
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

        // The node, with the credentials of a kubelet (Node authorizer, NodeRestriction).
        let node_config = write_user("node", &node_user, &node_client)?;
        let node = NodeAgent::start(NodeConfig {
            name: config.node_name.clone(),
            kubeconfig: node_config,
            data_dir: dir.join("node"),
            kubelet_port: 0,
            serving_cert_pem: kubelet_serving.cert_pem.clone(),
            serving_key_pem: kubelet_serving.key_pem.clone(),
            client_ca_pem: pki.ca_pem().to_string(),
            images: config.images.clone(),
            cpu_millis: config.node_cpu_millis,
            memory_bytes: config.node_memory_bytes,
            gpus: config.node_gpus,
            max_pods: config.node_max_pods,
            labels: config.node_labels.clone(),
            api_server: api_addr,
            inherit_env: config.pod_inherit_env.clone(),
        })
        .await
        .context("start the node agent")?;
        self.node = Some(node);

        // Ready for pods: the ServiceAccount admission plugin refuses pods until `default`
        // exists, and the scheduler skips the node until node-lifecycle-controller has lifted
        // the not-ready taint.
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
        let node_name = config.node_name.clone();
        self.wait_for(
            "a Ready node without taints",
            Duration::from_secs(90),
            || {
                let nodes = nodes.clone();
                let node_name = node_name.clone();
                async move {
                    let Some(node) = nodes.get_opt(&node_name).await? else {
                        return Ok(false);
                    };
                    let untainted = node
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .is_none_or(|t| t.is_empty());
                    let ready = node
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    Ok(untainted && ready)
                }
            },
        )
        .await?;

        for process in &self.processes {
            if let Some(pid) = process.pid() {
                self.info.pids.insert(process.name.to_string(), pid);
            }
        }
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

    /// Stops the node first (its pods' processes), then the control plane in reverse order.
    pub async fn stop(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
        while let Some(process) = self.processes.pop() {
            process.stop(Duration::from_secs(10)).await;
        }
        let _ = std::fs::remove_file(self.info.dir.join("cluster.json"));
    }
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
