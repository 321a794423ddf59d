//! Shared by the test targets: a server per test, a kube client for it, and the external
//! tools (kubectl, kubernetes-validate) that `scripts/servers.sh install` puts in `.tools`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_test_server::{ServerConfig, TestServer};

pub struct Harness {
    pub server: TestServer,
    pub client: kube::Client,
    _dir: tempfile::TempDir,
}

/// A TLS server with a bearer token (the paths real clusters use) and a client from its
/// kubeconfig.
pub async fn start() -> Harness {
    start_with(|c| c).await
}

pub async fn start_with(configure: impl FnOnce(ServerConfig) -> ServerConfig) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = configure(ServerConfig::new(dir.path()).tls(true));
    let server = TestServer::start(config).await.expect("test server starts");
    let client = client_for(&server).await;
    Harness {
        server,
        client,
        _dir: dir,
    }
}

pub async fn client_for(server: &TestServer) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig reads");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    kube::Client::try_from(config).expect("client builds")
}

/// An external tool: `$FERRY_TEST_<NAME>` or `<repo>/.tools/venv/bin/<name>`. Missing tools
/// fail the test with what to run.
pub fn tool(name: &str) -> PathBuf {
    let variable = format!("FERRY_TEST_{}", name.to_uppercase().replace('-', "_"));
    if let Some(path) = std::env::var_os(&variable) {
        return PathBuf::from(path);
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = repo.join(".tools/venv/bin").join(name);
    assert!(
        path.exists(),
        "{name} is not installed: run `scripts/servers.sh install` (puts it in .tools/venv) or set {variable}"
    );
    path
}

/// Polls `check` until it returns Some, failing after `timeout` with `what`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Job manifest running `script` with `sh -c`.
pub fn job(name: &str, script: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": name },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{ "name": "main", "image": "busybox:1.36", "command": ["sh", "-c", script] }]
                }
            }
        }
    })
}
