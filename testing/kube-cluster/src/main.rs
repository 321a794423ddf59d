//! `kube-cluster up`: the test cluster in the foreground until SIGINT or SIGTERM, for
//! `scripts/kube-cluster.sh start` and for a person who wants a cluster to poke at.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use kube_cluster::node::Image;
use kube_cluster::{Cluster, ClusterConfig};

#[derive(Parser)]
#[command(about = "The official Kubernetes control plane on loopback, with a process-running node")]
enum Args {
    /// Start the cluster and keep it running until SIGINT or SIGTERM.
    Up {
        /// State directory: certificates, etcd data, logs, pods, kubeconfig, cluster.json.
        #[arg(long)]
        dir: PathBuf,
        /// Directory holding etcd, kube-apiserver, kube-controller-manager, kube-scheduler.
        #[arg(long)]
        bin_dir: PathBuf,
        /// An image the node has: NAME=DIR[:DIR...], the directories put first on the pod's
        /// PATH. A NAME ending in `*` matches by prefix. Other images fail to pull.
        #[arg(long = "image", value_name = "NAME=DIRS")]
        images: Vec<String>,
        /// Host environment variables copied into every pod.
        #[arg(long = "pod-env", value_name = "VAR")]
        pod_env: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KUBE_CLUSTER_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let Args::Up {
        dir,
        bin_dir,
        images,
        pod_env,
    } = Args::parse();
    let mut config = ClusterConfig::new(&dir, &bin_dir);
    for image in images {
        let (name, dirs) = image
            .split_once('=')
            .with_context(|| format!("--image {image:?}: expected NAME=DIR[:DIR...]"))?;
        config.images.push(Image {
            name: name.to_string(),
            path: std::env::split_paths(dirs).collect(),
        });
    }
    config.pod_inherit_env = pod_env;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let cluster = tokio::select! {
            cluster = Cluster::start(config) => cluster?,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted while starting"),
            _ = terminate.recv() => anyhow::bail!("terminated while starting"),
        };
        let info = cluster.info();
        println!(
            "kube-cluster ready api={} kubeconfig={} version={}",
            info.api_url,
            info.kubeconfig.display(),
            info.kubernetes_version
        );
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        eprintln!("kube-cluster: stopping");
        cluster.stop().await;
        Ok(())
    })
}
