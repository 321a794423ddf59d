//! The one cluster a test run shares, and a namespace per test inside it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, PostParams};

use crate::ClusterInfo;
use crate::kubeconfig::{self, Credentials};

/// Where `scripts/kube-cluster.sh start` puts the cluster unless `FERRY_TEST_KUBE_DIR` says.
fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/run/kube")
}

/// The running test cluster. Panics with what to start when there is none: a Kubernetes test
/// never passes without a cluster.
pub fn running() -> &'static ClusterInfo {
    static INFO: OnceLock<ClusterInfo> = OnceLock::new();
    INFO.get_or_init(|| {
        let dir = std::env::var_os("FERRY_TEST_KUBE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(default_dir);
        match ClusterInfo::read(&dir) {
            Ok(info) => info,
            Err(e) => panic!(
                "no test Kubernetes cluster is running ({e:#}).\n\
                 Start one with `scripts/kube-cluster.sh start` (it builds the control plane on \
                 first use), or run the whole suite with `scripts/test-all.sh`."
            ),
        }
    })
}

/// A namespace of one test in the shared cluster, with an admin kubeconfig whose context points
/// at it. Deleted (with everything in it, by the real namespace controller) when dropped.
pub struct TestNamespace {
    pub name: String,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestNamespace {
    /// Creates `<prefix>-<random>`; must be called inside a tokio runtime.
    pub async fn create(prefix: &str) -> anyhow::Result<TestNamespace> {
        let info = running();
        let mut suffix = [0u8; 4];
        getrandom::fill(&mut suffix).map_err(|e| anyhow::anyhow!("random: {e}"))?;
        let name = format!(
            "{prefix}-{}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let client = info.client().await?;
        let namespaces: Api<Namespace> = Api::all(client);
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "ferry.dev/test": "true" } }
        }))?;
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("create namespace {name}"))?;
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        let cert = std::fs::read_to_string(info.dir.join("pki/admin.crt"))?;
        let key = std::fs::read_to_string(info.dir.join("pki/admin.key"))?;
        kubeconfig::write(
            &kubeconfig,
            &info.api_url,
            &info.ca_pem()?,
            "ferry-admin",
            Credentials::Certificate {
                cert_pem: &cert,
                key_pem: &key,
            },
            Some(&name),
        )?;
        Ok(TestNamespace {
            name,
            kubeconfig,
            _dir: dir,
        })
    }

    /// Deletes the namespace (the namespace controller removes its objects, the node its pods).
    pub async fn delete(&self) -> anyhow::Result<()> {
        let client = running().client().await?;
        let namespaces: Api<Namespace> = Api::all(client);
        namespaces
            .delete(&self.name, &DeleteParams::background())
            .await
            .with_context(|| format!("delete namespace {}", self.name))?;
        Ok(())
    }
}
