//! Connecting to the cluster: the kubeconfig the settings name, else `$KUBECONFIG`, else
//! `~/.kube/config`, else the in-cluster service account. When nothing works, both causes are
//! reported, since either may be the one the user meant.

use kube::config::{KubeConfigOptions, Kubeconfig};
use orchestrator_core::{ErrorKind, PluginError};

use crate::settings::Settings;

/// A client and the namespace the run's objects go to.
#[derive(Clone)]
pub struct Connection {
    pub client: kube::Client,
    pub namespace: String,
    /// Where the connection came from, for `describe` and errors.
    pub source: String,
    /// The API server's URL: which cluster this is.
    pub cluster_url: String,
}

fn unavailable(message: String) -> PluginError {
    PluginError::new(ErrorKind::UNAVAILABLE, message)
}

pub async fn connect(settings: &Settings) -> Result<Connection, PluginError> {
    let options = KubeConfigOptions {
        context: settings.context.clone(),
        ..KubeConfigOptions::default()
    };
    let (config, source) = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                unavailable(format!(
                    "kubernetes: cannot read the kubeconfig {} (setting `kubeconfig`): {e}",
                    path.display()
                ))
            })?;
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| {
                    unavailable(format!("kubernetes: kubeconfig {}: {e}", path.display()))
                })?;
            (config, format!("kubeconfig {}", path.display()))
        }
        None => match kube::Config::from_kubeconfig(&options).await {
            Ok(config) => {
                let from = std::env::var("KUBECONFIG")
                    .map(|k| format!("$KUBECONFIG ({k})"))
                    .unwrap_or_else(|_| "~/.kube/config".into());
                (config, from)
            }
            // A context or $KUBECONFIG the user chose must work: falling back to the cluster
            // this process happens to run in would submit somewhere else.
            Err(kubeconfig_error)
                if settings.context.is_some() || std::env::var_os("KUBECONFIG").is_some() =>
            {
                return Err(unavailable(format!(
                    "kubernetes: the kubeconfig ($KUBECONFIG or the stack's `context`) does not work: {kubeconfig_error}"
                )));
            }
            Err(kubeconfig_error) => match kube::Config::incluster() {
                Ok(config) => (config, "in-cluster service account".to_string()),
                Err(in_cluster_error) => {
                    return Err(unavailable(format!(
                        "kubernetes: no cluster to talk to: kubeconfig ($KUBECONFIG or ~/.kube/config): {kubeconfig_error}; in-cluster: {in_cluster_error}. Set `kubeconfig` in the stack's orchestrator settings or export KUBECONFIG"
                    )));
                }
            },
        },
    };
    let namespace = settings
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let cluster_url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|e| {
        unavailable(format!(
            "kubernetes: cannot build a client from {source}: {e}"
        ))
    })?;
    Ok(Connection {
        client,
        namespace,
        source,
        cluster_url,
    })
}

/// The namespace without contacting the cluster (for `render`): the setting, else the
/// kubeconfig context's, else `default`.
pub fn namespace_offline(settings: &Settings) -> String {
    if let Some(ns) = &settings.namespace {
        return ns.clone();
    }
    let kubeconfig = match &settings.kubeconfig {
        Some(path) => Kubeconfig::read_from(path).ok(),
        None => Kubeconfig::read().ok(),
    };
    kubeconfig
        .and_then(|k| {
            let context = settings.context.clone().or(k.current_context.clone())?;
            k.contexts
                .into_iter()
                .find(|c| c.name == context)?
                .context?
                .namespace
        })
        .unwrap_or_else(|| "default".to_string())
}
