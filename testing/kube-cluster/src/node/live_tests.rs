//! Against the real control plane (run with `--ignored`, as root, with the binaries at
//! `$FERRY_KUBE_BIN` (kube-apiserver, kube-controller-manager, kube-scheduler, etcd)): the
//! node registers, runs pods, reports exits, image errors, OOM kills, logs and deletion.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, LogParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::{Image, NodeAgent, NodeConfig};
use crate::pki::Pki;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn kubeconfig(
    dir: &Path,
    name: &str,
    server: &str,
    ca: &Path,
    id: &crate::pki::Identity,
) -> PathBuf {
    let path = dir.join(format!("{name}.kubeconfig"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
        ca.display(),
        id.cert_file.display(),
        id.key_file.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

struct Procs(Vec<std::process::Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait_for<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn create_pod(api: &Api<Pod>, pod: serde_json::Value) {
    let pod: Pod = serde_json::from_value(pod).unwrap();
    wait_for("pod creation", 60, async || {
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => Some(()),
            Err(e) => {
                eprintln!("create pod: {e}");
                None
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane binaries ($FERRY_KUBE_BIN) and root"]
async fn node_runs_pods_against_the_real_control_plane() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("kube_cluster=debug")
        .try_init();
    let bin = PathBuf::from(std::env::var("FERRY_KUBE_BIN").expect("FERRY_KUBE_BIN"));
    // Kept after a failure for its logs (etcd.log, apiserver.log, cm.log, sched.log).
    let tmp = tempfile::Builder::new().prefix("ferry-node-live").tempdir().unwrap().keep();
    eprintln!("live test directory: {}", tmp.display());
    let dir = tmp.as_path();
    let pki = Pki::generate(&dir.join("pki")).unwrap();
    let serving = pki
        .server("apiserver", &["kubernetes.default.svc"])
        .unwrap();
    let admin = pki.client("admin", "admin", &["system:masters"]).unwrap();
    let node_id = pki
        .client("node", "system:node:ferry-node", &["system:nodes"])
        .unwrap();
    let kubelet_client = pki
        .client(
            "kubelet-client",
            "kube-apiserver-kubelet-client",
            &["system:masters"],
        )
        .unwrap();
    let cm = pki
        .client("cm", "system:kube-controller-manager", &[])
        .unwrap();
    let sched = pki.client("sched", "system:kube-scheduler", &[]).unwrap();
    let kubelet_serving = pki.server("kubelet", &[]).unwrap();
    let (sa_key, sa_pub) = pki.service_account_keys().unwrap();
    let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
    let server = format!("https://127.0.0.1:{api_port}");
    let ca = pki.ca_file();
    let mut procs = Procs(Vec::new());
    let log = |name: &str| std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    procs.0.push(
        std::process::Command::new(bin.join("etcd"))
            .args(["--data-dir", dir.join("etcd").to_str().unwrap()])
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .stderr(log("etcd"))
            .spawn()
            .unwrap(),
    );
    let p = |p: &Path| p.to_str().unwrap().to_string();
    procs.0.push(
        std::process::Command::new(bin.join("kube-apiserver"))
            .args([
                format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
                format!("--secure-port={api_port}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--tls-cert-file={}", p(&serving.cert_file)),
                format!("--tls-private-key-file={}", p(&serving.key_file)),
                format!("--client-ca-file={}", p(&ca)),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={}", p(&sa_pub)),
                format!("--service-account-signing-key-file={}", p(&sa_key)),
                "--authorization-mode=Node,RBAC".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
                format!(
                    "--kubelet-client-certificate={}",
                    p(&kubelet_client.cert_file)
                ),
                format!("--kubelet-client-key={}", p(&kubelet_client.key_file)),
                format!("--kubelet-certificate-authority={}", p(&ca)),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                format!("--cert-dir={}", p(&dir.join("certs"))),
            ])
            .stderr(log("apiserver"))
            .spawn()
            .unwrap(),
    );
    let admin_kc = kubeconfig(dir, "admin", &server, &ca, &admin);
    let kc = kubeconfig(dir, "cm", &server, &ca, &cm);
    procs.0.push(
        std::process::Command::new(bin.join("kube-controller-manager"))
            .args([
                format!("--kubeconfig={}", p(&kc)),
                format!("--service-account-private-key-file={}", p(&sa_key)),
                format!("--root-ca-file={}", p(&ca)),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                "--controllers=*".into(),
            ])
            .stderr(log("cm"))
            .spawn()
            .unwrap(),
    );
    let kc = kubeconfig(dir, "sched", &server, &ca, &sched);
    procs.0.push(
        std::process::Command::new(bin.join("kube-scheduler"))
            .args([
                format!("--kubeconfig={}", p(&kc)),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
            ])
            .stderr(log("sched"))
            .spawn()
            .unwrap(),
    );
    let client = wait_for("the API server", 90, async || {
        let kc = kube::config::Kubeconfig::read_from(&admin_kc).ok()?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .ok()?;
        let client = Client::try_from(config).ok()?;
        if let Err(e) = client.apiserver_version().await {
            eprintln!("API server not ready: {e}");
            return None;
        }
        Some(client)
    })
    .await;

    let node_kc = kubeconfig(dir, "node", &server, &ca, &node_id);
    let agent = NodeAgent::start(NodeConfig {
        name: "ferry-node".into(),
        kubeconfig: node_kc,
        data_dir: dir.join("node"),
        kubelet_port: 0,
        serving_cert_pem: kubelet_serving.cert_pem.clone(),
        serving_key_pem: kubelet_serving.key_pem.clone(),
        client_ca_pem: pki.ca_pem().to_string(),
        images: vec![Image {
            name: "busybox*".into(),
            path: vec!["/usr/bin".into(), "/bin".into()],
        }],
        cpu_millis: 4000,
        memory_bytes: 8 << 30,
        gpus: 1,
        max_pods: 50,
        labels: Default::default(),
        api_server: format!("127.0.0.1:{api_port}").parse().unwrap(),
        inherit_env: vec![],
    })
    .await
    .unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    wait_for("the node to lose its not-ready taint", 90, async || {
        let n = nodes.get("ferry-node").await.ok()?;
        let tainted = n
            .spec?
            .taints
            .unwrap_or_default()
            .iter()
            .any(|t| t.key.contains("not-ready"));
        (!tainted).then_some(())
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create_pod(&pods, json!({
        "metadata": {"name": "exits"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "busybox:1.36", "workingDir": "/workspace",
            "command": ["sh", "-c", "echo hello $(POD); cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; pwd; test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo token; echo $KUBERNETES_SERVICE_PORT; exit 3"],
            "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        }]},
    })).await;
    create_pod(
        &pods,
        json!({
            "metadata": {"name": "noimage"},
            "spec": {"containers": [{"name": "main", "image": "nothere:1", "command": ["true"]}]},
        }),
    )
    .await;
    create_pod(&pods, json!({
        "metadata": {"name": "oom"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "busybox", "resources": {"limits": {"memory": "50Mi"}},
            "command": ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"],
        }]},
    })).await;
    create_pod(&pods, json!({
        "metadata": {"name": "sleeper"},
        "spec": {"terminationGracePeriodSeconds": 5, "containers": [{
            "name": "main", "image": "busybox", "command": ["sh", "-c", "trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.2; done"],
        }]},
    })).await;

    let terminated = async |name: &str| {
        wait_for(name, 60, async || {
            let p = pods.get(name).await.ok()?;
            let s = p.status?;
            let t = s.container_statuses?.first()?.state.clone()?.terminated?;
            matches!(s.phase.as_deref(), Some("Failed" | "Succeeded"))
                .then_some((s.phase.unwrap(), t))
        })
        .await
    };
    let (phase, t) = terminated("exits").await;
    assert_eq!(phase, "Failed");
    assert_eq!(t.exit_code, 3);
    assert_eq!(t.reason.as_deref(), Some("Error"));
    let logs = pods.logs("exits", &LogParams::default()).await.unwrap();
    assert_eq!(
        logs,
        format!("hello exits\ndefault\n/workspace\ntoken\n{api_port}\n")
    );
    assert!(!Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token").exists());

    let (phase, t) = terminated("oom").await;
    assert_eq!(
        (phase.as_str(), t.exit_code, t.reason.as_deref()),
        ("Failed", 137, Some("OOMKilled"))
    );

    let waiting = wait_for("ImagePullBackOff", 30, async || {
        let p = pods.get("noimage").await.ok()?;
        let w = p
            .status?
            .container_statuses?
            .first()?
            .state
            .clone()?
            .waiting?;
        (w.reason.as_deref() == Some("ImagePullBackOff")).then_some(w)
    })
    .await;
    assert!(
        waiting
            .message
            .unwrap()
            .starts_with("Back-off pulling image \"nothere:1\"")
    );

    wait_for("sleeper running", 30, async || {
        let p = pods.get("sleeper").await.ok()?;
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    pods.delete("sleeper", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("sleeper gone", 30, async || {
        pods.get_opt("sleeper").await.ok()?.is_none().then_some(())
    })
    .await;
    pods.delete("noimage", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("noimage gone", 30, async || {
        pods.get_opt("noimage").await.ok()?.is_none().then_some(())
    })
    .await;

    agent.shutdown().await;
    drop(procs);
    let _ = std::fs::remove_dir_all(dir);
}
