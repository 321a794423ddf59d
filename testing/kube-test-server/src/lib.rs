//! A Kubernetes API server for tests: the real REST and watch protocol over HTTP or TLS with a
//! bearer token, a job controller, a garbage collector and a kubelet that runs each pod's
//! container command as a local process.
//!
//! It exists because no real API server can be installed where ferry is tested. It is honest
//! enough for `kubectl` and the `kube` crate; what it does not do is listed in the README.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let server = kube_test_server::TestServer::start(kube_test_server::ServerConfig::new("/tmp/kts")).await?;
//! println!("KUBECONFIG={}", server.kubeconfig().display());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod api;
mod discovery;
mod events;
pub mod faults;
mod job_controller;
mod kubeconfig;
mod kubelet;
mod lifecycle;
mod logs;
pub mod patch;
pub mod resources;
pub mod selector;
mod server;
pub mod status;
pub mod store;
mod strategy;
mod table;
mod tls;
pub mod validation;
mod watch;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch as signal;

pub use faults::{ApiFault, FaultConfig, OomKill, PodMatch};
pub use resources::Resource;

/// How to run the test cluster. `new` gives defaults that suit tests.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where pods get their working directories and volumes, and the kubeconfig is written.
    pub data_dir: PathBuf,
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Serve HTTPS with a CA generated at start (written into the kubeconfig).
    pub tls: bool,
    /// Require `Authorization: Bearer <token>` on every request. A random token when `tls` is
    /// on and none is given.
    pub token: Option<String>,
    /// Name of the one node pods are scheduled on.
    pub node_name: String,
    /// Labels of that node, checked against `nodeSelector`.
    pub node_labels: BTreeMap<String, String>,
    /// Allocatable CPU in millicores and memory in bytes, checked against pod requests.
    pub node_cpu_millis: u64,
    pub node_memory_bytes: u64,
    /// `PATH` of pod processes (the server's own when `None`). Pods get a clean environment:
    /// their container's `env`, `HOSTNAME`, `HOME` and this.
    pub pod_path: Option<OsString>,
    /// Variables copied from the server's environment into every pod (e.g. `LLVM_PROFILE_FILE`).
    pub pod_inherit_env: Vec<String>,
    /// Delay before a failed Job pod is replaced, doubled per failure (the real controller
    /// starts at 10 s; tests cannot wait that long).
    pub job_backoff: Duration,
    /// Changes kept for watches that resume from a resourceVersion.
    pub history_limit: usize,
    /// Interval of watch BOOKMARK events when clients allow them.
    pub bookmark_interval: Duration,
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            data_dir: data_dir.into(),
            port: 0,
            tls: false,
            token: None,
            node_name: "kube-test-node".into(),
            node_labels: BTreeMap::from([
                (
                    "kubernetes.io/hostname".to_string(),
                    "kube-test-node".to_string(),
                ),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
                (
                    "kubernetes.io/arch".to_string(),
                    std::env::consts::ARCH
                        .replace("x86_64", "amd64")
                        .replace("aarch64", "arm64"),
                ),
            ]),
            node_cpu_millis: 8_000,
            node_memory_bytes: 32 << 30,
            pod_path: None,
            pod_inherit_env: Vec::new(),
            job_backoff: Duration::from_millis(200),
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(2),
        }
    }

    #[must_use]
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    #[must_use]
    pub fn pod_path(mut self, path: impl Into<OsString>) -> Self {
        self.pod_path = Some(path.into());
        self
    }
}

/// One API request as the server saw it, for tests that check what a client did (no duplicate
/// creates, watches rather than polls, no secret in a request body outside Secrets).
#[derive(Clone, Debug, Serialize)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    /// Request body of writes, as sent.
    pub body: String,
}

/// The state every part of the server shares.
pub struct Cluster {
    pub config: ServerConfig,
    pub store: store::Store,
    pub faults: faults::Faults,
    pub(crate) logs: logs::LogStore,
    requests: Mutex<Vec<RequestRecord>>,
    /// Bumped to end every open watch (a test's "the watch dropped").
    pub(crate) watch_epoch: signal::Sender<u64>,
    /// Set to true at shutdown.
    pub(crate) shutdown: signal::Sender<bool>,
    pub(crate) kubelet: kubelet::Kubelet,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    fn new(config: ServerConfig) -> Arc<Self> {
        let cluster = Arc::new(Cluster {
            store: store::Store::new(config.history_limit),
            faults: faults::Faults::default(),
            logs: logs::LogStore::default(),
            requests: Mutex::new(Vec::new()),
            watch_epoch: signal::channel(0).0,
            shutdown: signal::channel(false).0,
            kubelet: kubelet::Kubelet::default(),
            config,
        });
        for namespace in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            cluster
                .store
                .create(
                    Resource::Namespace,
                    "",
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": {"kubernetes.io/metadata.name": namespace}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
                )
                .expect("a fresh store takes the built-in namespaces");
            strategy::ensure_default_service_account(&cluster, namespace);
        }
        cluster
    }

    pub(crate) fn record_request(&self, record: RequestRecord) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// A running test server. Dropping it stops the server and kills every pod process.
pub struct TestServer {
    cluster: Arc<Cluster>,
    addr: SocketAddr,
    url: String,
    kubeconfig: PathBuf,
    token: Option<String>,
    ca_pem: Option<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// Binds, writes `<data_dir>/kubeconfig` and starts the controllers. Must run inside a
    /// multi-threaded tokio runtime.
    pub async fn start(mut config: ServerConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let data_dir = std::fs::canonicalize(&config.data_dir)?;
        config.data_dir = data_dir.clone();
        if config.tls && config.token.is_none() {
            config.token = Some(store::new_uid().replace('-', ""));
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{}", config.port))?;
        let addr = listener.local_addr()?;
        let tls = if config.tls {
            Some(tls::generate()?)
        } else {
            None
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        let token = config.token.clone();
        let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
        let kubeconfig = data_dir.join("kubeconfig");
        kubeconfig::write(&kubeconfig, &url, ca_pem.as_deref(), token.as_deref())?;

        let cluster = Cluster::new(config);
        let tasks = vec![
            tokio::spawn(server::serve(
                cluster.clone(),
                listener,
                tls.map(|t| t.server_config),
            )),
            tokio::spawn(job_controller::run(cluster.clone())),
            tokio::spawn(lifecycle::run_garbage_collector(cluster.clone())),
            tokio::spawn(kubelet::run(cluster.clone())),
        ];
        Ok(TestServer {
            cluster,
            addr,
            url,
            kubeconfig,
            token,
            ca_pem,
            tasks,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig with one context, `kube-test-server`, namespace `default`.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Replaces the fault configuration.
    pub fn set_faults(&self, faults: FaultConfig) {
        self.cluster.faults.set(faults);
    }

    pub fn update_faults(&self, f: impl FnOnce(&mut FaultConfig)) {
        self.cluster.faults.update(f);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.cluster
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Ends every open watch stream, as a dropped connection would.
    pub fn drop_watches(&self) {
        self.cluster.watch_epoch.send_modify(|epoch| *epoch += 1);
    }

    /// Evicts running pods that match (the node "disappeared" under them): the process is
    /// killed and the pod fails with reason `Evicted`. Returns the evicted pods' names.
    pub async fn evict(&self, pods: &PodMatch, message: &str) -> Vec<String> {
        kubelet::evict(&self.cluster, pods, message).await
    }

    /// A snapshot of one object, for assertions.
    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        self.cluster
            .store
            .get(resource, namespace, name)
            .map(|o| (*o).clone())
    }

    /// A snapshot of all objects of a type in a namespace.
    pub fn list(&self, resource: Resource, namespace: &str) -> Vec<Value> {
        self.cluster
            .store
            .list(resource, Some(namespace))
            .0
            .into_iter()
            .map(|o| (*o).clone())
            .collect()
    }

    /// Stops serving and kills every pod process (SIGKILL to each process group).
    pub async fn shutdown(mut self) {
        self.stop();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    fn stop(&mut self) {
        let _ = self.cluster.shutdown.send(true);
        self.cluster.kubelet.kill_all();
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Resolves once the server is shutting down. (Awaiting `wait_for` directly in a `select!`
/// would keep its non-`Send` guard in the future.)
pub(crate) async fn stopped(shutdown: &mut signal::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
