//! `kube-test-server`: runs the test API server until SIGINT/SIGTERM, for tests and people
//! who drive it from outside (kubectl, a ferry process).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kube_test_server::{ServerConfig, TestServer};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A Kubernetes API server for tests: real REST and watch protocol, pods run as local processes"
)]
struct Args {
    /// Directory for pod working directories and the kubeconfig (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Port on 127.0.0.1 (0 picks a free one; the kubeconfig says which).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Serve HTTPS with a CA generated at start, and require a bearer token.
    #[arg(long)]
    tls: bool,
    /// Bearer token to require (random with --tls when not given).
    #[arg(long)]
    token: Option<String>,
    /// Also write the kubeconfig here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Delay before a failed Job pod is replaced, in milliseconds (doubles per failure).
    #[arg(long, default_value_t = 200)]
    job_backoff_ms: u64,
    /// Copy this variable from the server's environment into every pod (repeatable).
    #[arg(long = "pod-env", value_name = "NAME")]
    pod_env: Vec<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env(
            "KUBE_TEST_SERVER_LOG",
        ))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = ServerConfig::new(&args.data_dir)
        .port(args.port)
        .tls(args.tls);
    config.token = args.token;
    config.job_backoff = Duration::from_millis(args.job_backoff_ms);
    config.pod_inherit_env = args.pod_env;
    let server = TestServer::start(config).await?;
    if let Some(path) = &args.kubeconfig {
        std::fs::copy(server.kubeconfig(), path)?;
    }
    // One line on stdout that scripts wait for.
    println!(
        "kube-test-server ready url={} kubeconfig={}",
        server.url(),
        server.kubeconfig().display()
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    server.shutdown().await;
    Ok(())
}
