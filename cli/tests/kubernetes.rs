//! `ferry run` on a Kubernetes stack, end to end, against the official control plane
//! (kube-apiserver, kube-controller-manager, kube-scheduler and etcd 1.37, testing/kube-cluster)
//! and SeaweedFS as the S3 store. The suite shares one cluster (`scripts/kube-cluster.sh
//! start`); each test works in a namespace of its own. The node runs each pod as a local
//! process: the image `ferry:test` is the `ferry` built next to this test, on the pod's PATH.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use kube_cluster::fault_proxy::{ApiFault, FaultProxy, Upstream};
use kube_cluster::{
    CPU_NODE, GPU_NODE, GPU_NODE_LABEL, GPU_NODE_TAINT, GPU_RESOURCE, TestNamespace, running,
};
use support::{Project, toml_table};
use test_support::{plugin_path, s3_settings, unique_prefix};

/// The name of the service account steps-mode tests bind the README's Role to.
const COORDINATOR_ACCOUNT: &str = "ferry-coordinator";

struct Cluster {
    runtime: tokio::runtime::Runtime,
    namespace: TestNamespace,
    client: kube::Client,
    /// In front of the API server when the test injects faults; ferry then talks to it.
    proxy: Option<FaultProxy>,
    /// What ferry and kubectl use: the namespace's kubeconfig, or the proxy's.
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// A namespace of the shared cluster; ferry talks to the API server directly.
    fn start() -> Self {
        Self::new(false)
    }

    /// As `start`, but ferry's requests go through a fault-injecting proxy (bearer token
    /// auth, since a proxy cannot forward a client certificate).
    fn behind_proxy() -> Self {
        Self::new(true)
    }

    fn new(proxied: bool) -> Self {
        plugin_path("backend-kubernetes");
        plugin_path("storage-s3");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let info = running();
        let namespace = runtime
            .block_on(TestNamespace::create("ferry-e2e"))
            .expect("create the test's namespace");
        let client = runtime.block_on(info.client()).expect("admin client");
        let dir = tempfile::tempdir().unwrap();
        let (proxy, kubeconfig) = if proxied {
            let ca = info.ca_pem().unwrap();
            let cert = info
                .pki()
                .unwrap()
                .server(&format!("proxy-{}", namespace.name), &[])
                .unwrap();
            let proxy = runtime
                .block_on(FaultProxy::start(
                    Upstream {
                        url: info.api_url.clone(),
                        ca_pem: ca.clone(),
                    },
                    &cert.cert_pem,
                    &cert.key_pem,
                ))
                .expect("start the fault proxy");
            let kubeconfig = dir.path().join("kubeconfig");
            proxy
                .write_kubeconfig(&kubeconfig, &ca, &info.admin_token, Some(&namespace.name))
                .unwrap();
            (Some(proxy), kubeconfig)
        } else {
            (None, namespace.kubeconfig.clone())
        };
        Cluster {
            runtime,
            namespace,
            client,
            proxy,
            kubeconfig,
            dir,
        }
    }

    fn ns(&self) -> &str {
        &self.namespace.name
    }

    fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig.clone()
    }

    fn proxy(&self) -> &FaultProxy {
        self.proxy.as_ref().expect("Cluster::behind_proxy")
    }

    /// A project with `examples/<example>` and a `k8s` stack: this cluster and an S3 prefix of
    /// its own.
    fn project(&self, example: &str, extra_settings: &str) -> Project {
        self.project_with_store(example, extra_settings, s3_settings(&unique_prefix("k8s")))
    }

    fn project_with_store(
        &self,
        example: &str,
        extra_settings: &str,
        store: serde_json::Value,
    ) -> Project {
        let project = Project::with_example(example);
        project.write(
            "ferry.toml",
            &format!(
                "stack = \"k8s\"\n\n[stacks.k8s.orchestrator]\nplugin = \"kubernetes\"\n\n[stacks.k8s.orchestrator.settings]\nkubeconfig = {:?}\nimage = \"ferry:test\"\npending_timeout = \"2s\"\n{extra_settings}\n\n[stacks.k8s.store]\nplugin = \"storage-s3\"\nsettings = {}\n",
                self.kubeconfig().display().to_string(),
                toml_table(&store),
            ),
        );
        project
    }

    /// Settings for steps mode: the coordinator runs as a service account bound to exactly
    /// the Role the README documents (created here, from the README's own text).
    fn steps_mode(&self) -> String {
        self.grant_coordinator_role(COORDINATOR_ACCOUNT, &readme_role());
        format!("mode = \"steps\"\nservice_account = \"{COORDINATOR_ACCOUNT}\"")
    }

    /// A service account in the test's namespace bound to `role` (YAML of a Role).
    fn grant_coordinator_role(&self, account: &str, role: &str) {
        let role = role
            .replace("name: ferry-coordinator", &format!("name: {account}"))
            .replace("namespace: ml", &format!("namespace: {}", self.ns()));
        let objects = format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{ name: {account}, namespace: {ns} }}\n---\n{role}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{ name: {account}, namespace: {ns} }}\nroleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: Role, name: {account} }}\nsubjects:\n  - {{ kind: ServiceAccount, name: {account}, namespace: {ns} }}\n",
            ns = self.ns()
        );
        let file = self.dir.path().join(format!("{account}-rbac.yaml"));
        std::fs::write(&file, objects).unwrap();
        kubectl(self, &["apply", "-f", file.to_str().unwrap()]);
    }

    fn jobs(&self) -> Vec<serde_json::Value> {
        self.list::<Job>()
    }

    fn pods(&self) -> Vec<serde_json::Value> {
        self.list::<Pod>()
    }

    /// Every object of kind `K` in the test's namespace, as JSON.
    fn list<K>(&self) -> Vec<serde_json::Value>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + serde::Serialize,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.ns());
        let list = self
            .runtime
            .block_on(api.list(&ListParams::default()))
            .expect("list objects in the test's namespace");
        list.items
            .iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            self.runtime.block_on(proxy.shutdown());
        }
        // The namespace controller removes everything in it, the node the pods' processes.
        if let Err(e) = self.runtime.block_on(self.namespace.delete()) {
            eprintln!("could not delete namespace {}: {e:#}", self.ns());
        }
    }
}

/// The Role the README's steps mode section documents, verbatim.
fn readme_role() -> String {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme
        .find("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n")
        .expect("the README documents the coordinator's Role");
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].to_string()
}

/// The Role the README's schedules section documents for launches, verbatim.
fn readme_launcher_role() -> String {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme
        .find("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: { name: ferry-launcher")
        .expect("the README documents the launcher's Role");
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].to_string()
}

fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    let out = kubectl_output(cluster, args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kubectl_output(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let kubectl = std::env::var_os("FERRY_TEST_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join(".tools/venv/bin/kubectl"));
    assert!(
        kubectl.exists(),
        "kubectl is not installed: run `scripts/servers.sh install`"
    );
    Command::new(kubectl)
        .args(args)
        .env("KUBECONFIG", &cluster.namespace.kubeconfig)
        .env("HOME", cluster.dir.path())
        .output()
        .unwrap()
}

fn run_id_of(project: &Project) -> String {
    let list = project.ferry(&["runs", "list", "--output", "json"]);
    list.success();
    let runs: Vec<serde_json::Value> = serde_json::from_str(&list.stdout()).unwrap();
    runs[0]["run_id"].as_str().unwrap().to_string()
}

#[test]
fn hello_runs_as_a_job_with_code_outputs_and_logs_in_s3() {
    let cluster = Cluster::start();
    let project = cluster.project("hello", "");
    let run = project.ferry(&["run", "hello"]);
    run.success();
    let stdout = run.stdout();
    assert!(
        stdout.contains("hello, newcomer"),
        "the report step's output is streamed:\n{stdout}"
    );

    let run_id = run_id_of(&project);
    let show = project.ferry(&["runs", "show", &run_id, "--output", "json"]);
    show.success();
    let record: serde_json::Value = serde_json::from_str(&show.stdout()).unwrap();
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert_eq!(record["steps"]["report"]["status"], "succeeded");
    assert_eq!(record["orchestrator"], "kubernetes", "{record:#}");

    // Outputs and logs are in the store, readable after the pod is gone.
    let artifacts = project.ferry(&["artifacts", "list", &run_id]);
    artifacts.success();
    assert!(
        artifacts.stdout().contains("poem.txt"),
        "{}",
        artifacts.stdout()
    );
    for job in cluster.jobs() {
        let name = job["metadata"]["name"].as_str().unwrap().to_string();
        kubectl(&cluster, &["delete", "job", &name, "--wait=true"]);
    }
    let logs = project.ferry(&["logs", &run_id, "report"]);
    logs.success();
    assert!(
        logs.stdout().contains("hello, newcomer"),
        "{}",
        logs.stdout()
    );
}

#[test]
fn kubectl_lists_exactly_the_runs_jobs_and_two_runs_do_not_collide() {
    let cluster = Cluster::start();
    let project = cluster.project("hello", "");
    let first = project.ferry(&["run", "hello", "--detach"]);
    first.success();
    let second = project.ferry(&["run", "hello", "--detach"]);
    second.success();
    let (a, b) = (
        first.stdout().trim().to_string(),
        second.stdout().trim().to_string(),
    );
    assert_ne!(a, b);
    for id in [&a, &b] {
        let names = kubectl(
            &cluster,
            &[
                "get",
                "jobs",
                "-l",
                &format!("ferry.dev/run-id={id}"),
                "-o",
                "name",
            ],
        );
        assert_eq!(
            names.lines().count(),
            1,
            "one Job per run in pipeline mode: {names}"
        );
        // Reattach: follow the detached run to its end.
        let logs = project.ferry(&["logs", "-f", id]);
        logs.success();
        assert!(
            logs.stdout().contains("hello, newcomer"),
            "{}",
            logs.stdout()
        );
    }
    assert_eq!(cluster.jobs().len(), 2);
    for id in [&a, &b] {
        let show = project.ferry(&["runs", "show", id, "--output", "json"]);
        let record: serde_json::Value = serde_json::from_str(&show.stdout()).unwrap();
        assert_eq!(record["status"], "succeeded", "{record:#}");
    }
}

#[test]
fn a_failing_step_fails_the_run_with_its_exit_code() {
    let cluster = Cluster::start();
    let project = cluster.project("hello", "");
    project.write(
        "hello/pipeline.yaml",
        "name: failing\nsteps:\n  broken:\n    run: echo about to fail; exit 7\n",
    );
    let run = project.ferry(&["run", "hello"]);
    run.failure(7);
    assert!(run.stdout().contains("about to fail"), "{}", run.stdout());
}

#[test]
fn image_pull_failures_pending_pods_and_oom_kills_end_the_run_with_the_reason() {
    // Nothing is staged: the node has no image `registry.invalid/...`, the real scheduler
    // finds no room for 64 CPUs, and the kernel kills a process over its memory cgroup's limit.
    let cluster = Cluster::start();
    let pull = cluster.project("hello", "");
    pull.write(
        "ferry.toml",
        &pull.read("ferry.toml").replace(
            "image = \"ferry:test\"",
            "image = \"registry.invalid/ferry:1\"",
        ),
    );
    let run = pull.ferry(&["run", "hello"]);
    run.failure(1);
    let out = format!("{}{}", run.stdout(), run.stderr());
    assert!(
        out.contains("ErrImagePull") || out.contains("ImagePullBackOff"),
        "{out}"
    );
    assert!(
        cluster.jobs().is_empty()
            || cluster
                .jobs()
                .iter()
                .all(|j| !j["metadata"]["deletionTimestamp"].is_null()),
        "the stuck Job is deleted"
    );

    let pending = cluster.project("hello", "");
    pending.write(
        "hello/pipeline.yaml",
        "name: pending\nsteps:\n  wait:\n    run: echo never\n    resources: { cpu: \"64\" }\n",
    );
    let run = pending.ferry(&["run", "hello"]);
    run.failure(1);
    let out = format!("{}{}", run.stdout(), run.stderr());
    assert!(out.contains("could not be scheduled"), "{out}");
    let events = kubectl(&cluster, &["get", "events", "-o", "json"]);
    assert!(
        events.contains("Insufficient cpu"),
        "the real scheduler said why: {events}"
    );

    let oom = cluster.project("hello", "");
    oom.write(
        "hello/pipeline.yaml",
        "name: oom\nsteps:\n  hog:\n    run: echo filling memory; exec python3 -c 'x = b\"a\" * (600 << 20)'\n    resources: { memory: 150Mi }\n",
    );
    let run = oom.ferry(&["run", "hello"]);
    assert_ne!(run.code(), 0, "an OOM kill is a failure");
    let out = format!("{}{}", run.stdout(), run.stderr());
    assert!(out.contains("OOMKilled"), "{out}");
    let record = oom.record(&run_id_of(&oom));
    assert_eq!(record["status"], "failed");
    // The kernel killed the largest process in the pod's memory cgroup: the step, not the
    // agent, which names the reason in the step's record.
    assert!(
        record["steps"]["hog"]["error"]
            .as_str()
            .unwrap()
            .contains("OOMKilled"),
        "{record:#}"
    );
    assert_eq!(record["steps"]["hog"]["exit_code"], 137, "{record:#}");
}

#[test]
fn an_oom_killed_step_is_retried_with_backoff_and_its_log_up_to_the_kill_is_kept() {
    let cluster = Cluster::start();
    let project = cluster.project("hello", "");
    project.write(
        "hello/pipeline.yaml",
        "name: oom\nsteps:\n  hog:\n    retries: 1\n    retry_delay: 1s\n    run: echo \"loading batch on attempt $FERRY_ATTEMPT\"; exec python3 -c 'x = b\"a\" * (600 << 20)'\n    resources: { memory: 150Mi }\n",
    );
    let run = project.ferry(&["run", "hello"]);
    assert_ne!(run.code(), 0, "{}", run.stderr());
    assert!(
        run.stdout().contains("retrying in"),
        "the retry waits: {}",
        run.stdout()
    );
    let id = run_id_of(&project);
    let record = project.record(&id);
    let hog = &record["steps"]["hog"];
    assert_eq!(hog["attempts"], 2, "{record:#}");
    let history = hog["attempt_history"].as_array().expect("attempt history");
    assert_eq!(history.len(), 2, "{record:#}");
    for attempt in history {
        assert!(
            attempt["reason"]
                .as_str()
                .unwrap_or("")
                .contains("OOMKilled"),
            "{attempt:#}"
        );
        assert_eq!(attempt["exit_code"], 137, "{attempt:#}");
    }
    let logs = project.ferry(&["logs", &id, "hog"]);
    logs.success();
    assert!(
        logs.stdout().contains("loading batch on attempt 2"),
        "the log up to the kill: {}",
        logs.stdout()
    );
    assert!(
        logs.stderr().contains("attempt 1: ")
            && logs.stderr().contains("attempt 2: ")
            && logs.stderr().contains("step `hog` failed: ")
            && logs.stderr().contains("OOMKilled"),
        "then the reason: {}",
        logs.stderr()
    );
}

#[test]
fn an_evicted_step_is_retried_in_a_new_pod_and_the_run_succeeds() {
    let cluster = Cluster::start();
    let project = cluster.project("hello", &cluster.steps_mode());
    project.write(
        "hello/pipeline.yaml",
        "name: evict\nsteps:\n  work:\n    retries: 1\n    retry_delay: 1s\n    cache: false\n    run: |\n      echo \"attempt $FERRY_ATTEMPT\"\n      if [ \"$FERRY_ATTEMPT\" = 1 ]; then sleep 120; fi\n",
    );
    let id = start_detached(&project);
    // Wait for the first attempt's pod to run, then evict it as a node drain would.
    let pod = wait_for_pod(&cluster, |p| {
        p["metadata"]["labels"]["ferry.dev/step"] == "work"
            && p["metadata"]["labels"]["ferry.dev/attempt"] == "1"
            && p["status"]["phase"] == "Running"
    });
    let pod = pod["metadata"]["name"].as_str().unwrap().to_string();
    // Give the agent time to start the step before its pod goes.
    std::thread::sleep(Duration::from_secs(2));
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), cluster.ns());
    cluster
        .runtime
        .block_on(pods.evict(&pod, &kube::api::EvictParams::default()))
        .expect("the Eviction API accepts the eviction");

    let record = wait_for_end(&project, &id);
    assert_eq!(record["status"], "succeeded", "{record:#}");
    let work = &record["steps"]["work"];
    assert_eq!(work["attempts"], 2, "{record:#}");
    let history = work["attempt_history"].as_array().expect("attempt history");
    assert_eq!(history.len(), 2, "{record:#}");
    assert!(history[0]["reason"].as_str().is_some(), "{record:#}");
    assert!(history[1]["reason"].is_null(), "{record:#}");
    let logs = project.ferry(&["logs", &id, "work"]);
    assert!(logs.stdout().contains("attempt 2"), "{}", logs.stdout());
}

#[test]
fn cancel_deletes_the_runs_jobs_and_records_the_run_as_cancelled() {
    let cluster = Cluster::start();
    for mode in ["pipeline", "steps"] {
        cancel_in_mode(&cluster, mode);
    }
}

fn mode_settings(cluster: &Cluster, mode: &str) -> String {
    if mode == "steps" {
        cluster.steps_mode()
    } else {
        format!("mode = {mode:?}")
    }
}

fn cancel_in_mode(cluster: &Cluster, mode: &str) {
    let project = cluster.project("hello", &mode_settings(cluster, mode));
    project.write(
        "hello/pipeline.yaml",
        "name: slow\nsteps:\n  nap:\n    run: sleep 60\n",
    );
    let id = start_detached(&project);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !cluster
        .pods()
        .iter()
        // In steps mode: the step's pod, not only the coordinator's.
        .any(|p| {
            p["status"]["phase"] == "Running"
                && (mode == "pipeline" || p["metadata"]["labels"]["ferry.dev/step"] == "nap")
        })
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{mode}: the pod never ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Someone follows the run while it is cancelled: following ends, it does not hang.
    let mut follower = project
        .command(&["logs", "-f", &id])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    project.ferry(&["runs", "cancel", &id]).success();
    assert!(
        cluster.jobs().is_empty(),
        "cancel waits until the Jobs are gone"
    );
    assert!(cluster.pods().is_empty(), "and their pods");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while follower.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "`ferry logs -f` still follows a cancelled run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let record = project.record(&id);
    assert_eq!(record["status"], "cancelled", "{mode}: {record:#}");
    assert_eq!(
        record["steps"]["nap"]["status"], "cancelled",
        "{mode}: {record:#}"
    );
}

#[test]
fn render_prints_every_object_and_no_credentials() {
    let cluster = Cluster::start();
    let project = cluster.project("hello", "extra_labels = { team = \"ml\" }");
    let render = project.ferry(&["render", "hello"]);
    render.success();
    let yaml = render.stdout();
    for kind in ["kind: ConfigMap", "kind: Secret", "kind: Job"] {
        assert!(yaml.contains(kind), "{kind} missing:\n{yaml}");
    }
    assert!(yaml.contains("team: ml"), "{yaml}");
    let secret = std::env::var("FERRY_TEST_S3_SECRET_ACCESS_KEY").unwrap();
    assert!(!yaml.contains(&secret), "render shows no store credentials");
    assert!(cluster.jobs().is_empty(), "render creates nothing");
}

#[test]
fn rendered_objects_pass_kubernetes_validate_for_a_matrix_of_settings() {
    let cluster = Cluster::start();
    let validate = std::env::var_os("FERRY_TEST_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/kubernetes-validate")
        });
    assert!(
        validate.exists(),
        "kubernetes-validate is not installed: run `scripts/servers.sh install`"
    );
    let matrix = [
        "",
        "image_pull_policy = \"Always\"\nnamespace = \"ml\"\njob_prefix = \"train-\"",
        "image_pull_policy = \"Never\"\nstore_credentials = \"workload-identity\"\nservice_account = \"ferry-runner\"",
        "mode = \"steps\"\nparallelism = 4\nservice_account = \"ferry-runner\"",
        concat!(
            "mode = \"steps\"\ngpus = 1\ngpu_resource = \"amd.com/gpu\"\npriority_class = \"batch-high\"\nrun_as_user = 1000\n",
            "profiles = { big = { resources = { limits = { memory = \"40Gi\" } }, gpus = 2 } }\n",
            "volumes = [{ mount = \"/data\", claim = \"datasets\", read_only = true }, { mount = \"/dev/shm\", memory = \"40Gi\" }, { mount = \"/scratch\", empty_dir = \"100Gi\" }, { mount = \"/tmp/cache\", empty_dir = true }, { mount = \"/etc/train\", config_map = \"train-config\" }, { mount = \"/var/secrets/wandb\", secret = \"wandb\" }]",
        ),
        concat!(
            "extra_labels = { team = \"ml\", \"example.com/cost-centre\" = \"42\" }\n",
            "extra_annotations = { \"example.com/owner\" = \"ana\" }\n",
            "image_pull_secrets = [\"regcred\"]\n",
            "node_selector = { \"kubernetes.io/os\" = \"linux\" }\n",
            "tolerations = [{ key = \"gpu\", operator = \"Exists\", effect = \"NoSchedule\" }]\n",
            "affinity = { nodeAffinity = { requiredDuringSchedulingIgnoredDuringExecution = { nodeSelectorTerms = [{ matchExpressions = [{ key = \"kubernetes.io/arch\", operator = \"In\", values = [\"amd64\"] }] }] } } }\n",
            "resources = { requests = { cpu = \"500m\", memory = \"1Gi\" }, limits = { memory = \"2Gi\" } }\n",
            "env = { LOG_LEVEL = \"debug\" }\n",
            "env_from_secrets = [\"wandb\"]\n",
            "ttl_seconds_after_finished = 60\nactive_deadline_seconds = 3600\nbackoff_limit = 2",
        ),
    ]
    // An explicit namespace: the test's own (a shared cluster has no `ml` to spare).
    .map(|settings| settings.replace("namespace = \"ml\"", &format!("namespace = {:?}", cluster.ns())));
    for (i, settings) in matrix.iter().enumerate() {
        let mut store = s3_settings(&unique_prefix("k8s"));
        if settings.contains("workload-identity") {
            // The store's settings travel in a ConfigMap then: credentials are refused.
            let with_keys = cluster.project_with_store("ml", settings, store.clone());
            let refused = with_keys.ferry(&["render", "ml"]);
            refused.failure(1);
            assert!(
                refused.stderr().contains("hold `access_key_id`")
                    || refused.stderr().contains("hold `secret_access_key`"),
                "{}",
                refused.stderr()
            );
            let map = store.as_object_mut().unwrap();
            map.remove("access_key_id");
            map.remove("secret_access_key");
        }
        let project = cluster.project_with_store("ml", settings, store);
        // A run's objects, and a schedule's (its CronJob's Jobs are launches).
        let schedule = [
            "--schedule",
            "nightly",
            "--cron",
            "0 2 * * 1-5",
            "--timezone",
            "Europe/Paris",
            "--concurrency",
            "replace",
            "--starting-deadline",
            "300",
            "--keep-failed",
            "2",
        ];
        for (what, extra) in [("run", &[][..]), ("schedule", &schedule[..])] {
            let mut args = vec!["render", "ml"];
            args.extend_from_slice(extra);
            let render = project.ferry(&args);
            render.success();
            let yaml = render.stdout();
            if what == "schedule" {
                assert!(yaml.contains("kind: CronJob"), "{yaml}");
                assert!(yaml.contains("timeZone: Europe/Paris"), "{yaml}");
            }
            let file = project.path().join(format!("rendered-{what}-{i}.yaml"));
            std::fs::write(&file, &yaml).unwrap();
            let out = Command::new(&validate)
                .args(["--strict", "--kubernetes-version", "1.37.0"])
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "settings {settings:?}, {what}: kubernetes-validate refused the rendered objects:\n{}\n{yaml}",
                String::from_utf8_lossy(&out.stdout),
            );
            // The real API server (admission, defaulting, strict field validation) accepts
            // exactly what ferry would create.
            let applied = kubectl_output(
                &cluster,
                &[
                    "create",
                    "--dry-run=server",
                    "--validate=strict",
                    "-f",
                    file.to_str().unwrap(),
                ],
            );
            let stderr = String::from_utf8_lossy(&applied.stderr);
            assert!(
                applied.status.success(),
                "settings {settings:?}, {what}: {stderr}"
            );
        }
    }
}

#[test]
fn the_ml_example_runs_on_kubernetes_in_both_modes() {
    let cluster = Cluster::start();
    for mode in ["pipeline", "steps"] {
        let project = cluster.project("ml", &mode_settings(&cluster, mode));
        let run = project.ferry(&["run", "ml"]);
        run.success();
        let record = project.record(&run_id_of(&project));
        assert_eq!(record["status"], "succeeded", "{mode}: {record:#}");
        let steps = record["steps"].as_object().unwrap();
        assert!(steps.len() >= 3, "{record:#}");
        assert!(
            steps.values().all(|s| s["status"] == "succeeded"),
            "{mode}: {record:#}"
        );
    }
}

fn wait_for_running_pod(cluster: &Cluster) {
    wait_for_pod(cluster, |p| p["status"]["phase"] == "Running");
}

/// Waits (at most 60 s) for a pod of the test's namespace that `matches`, and returns it.
fn wait_for_pod(
    cluster: &Cluster,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(pod) = cluster.pods().into_iter().find(|p| matches(p)) {
            return pod;
        }
        assert!(std::time::Instant::now() < deadline, "the pod never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ferry run hello --detach`, which must succeed; the run's id.
fn start_detached(project: &Project) -> String {
    project.run_id_from(&["run", "hello", "--detach"])
}

#[test]
fn ctrl_c_cancels_or_detaches_as_on_interrupt_says() {
    let cluster = Cluster::start();
    for policy in ["cancel", "detach"] {
        let project = cluster.project("hello", "");
        project.write(
            "hello/pipeline.yaml",
            "name: slow\nsteps:\n  nap:\n    run: sleep 60\n",
        );
        let child = project
            .command(&["run", "hello", "--on-interrupt", policy])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_running_pod(&cluster);
        // SAFETY: kill(2) on our own child process.
        unsafe { libc_kill(child.id() as i32, 2) };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected = if policy == "cancel" { 130 } else { 0 };
        assert_eq!(out.status.code(), Some(expected), "{stderr}");
        let id = run_id_of(&project);
        let record = project.record(&id);
        if policy == "cancel" {
            assert!(stderr.contains("cancelled run"), "{stderr}");
            assert_eq!(record["status"], "cancelled");
            assert!(cluster.jobs().is_empty());
        } else {
            assert!(stderr.contains(&format!("ferry logs -f {id}")), "{stderr}");
            assert_eq!(cluster.jobs().len(), 1, "the run goes on");
            assert_ne!(record["status"], "cancelled");
            project.ferry(&["runs", "cancel", &id]).success();
            assert!(cluster.jobs().is_empty());
        }
    }
}

#[test]
fn a_reader_with_another_namespace_sees_a_live_run_as_running_and_touches_nothing() {
    let cluster = Cluster::start();
    let project = cluster.project("hello", "");
    project.write(
        "hello/pipeline.yaml",
        "name: slow\nsteps:\n  nap:\n    run: sleep 120\n",
    );
    let submitted = std::time::Instant::now();
    project.ferry(&["run", "hello", "--detach"]).success();
    wait_for_running_pod(&cluster);
    let id = run_id_of(&project);
    // Past the minute of grace after which a run whose Job cannot be found is recorded lost.
    std::thread::sleep(Duration::from_secs(65).saturating_sub(submitted.elapsed()));
    let elsewhere = [
        "--set",
        "stacks.k8s.orchestrator.settings.namespace=team-b",
        "--set",
        "stacks.k8s.orchestrator.settings.pending_timeout=1ms",
    ];
    let show = [&elsewhere[..], &["runs", "show", &id, "--output", "json"]].concat();
    let list = [&elsewhere[..], &["runs", "list", "--output", "json"]].concat();
    for _ in 0..2 {
        let shown: serde_json::Value =
            serde_json::from_str(&project.ferry(&show).stdout()).unwrap();
        assert_eq!(shown["status"], "running", "{shown:#}");
        assert_eq!(shown["orchestrator"], "kubernetes", "{shown:#}");
        let listed = project.ferry(&list).stdout();
        assert!(
            listed.contains(&id) && listed.contains("running"),
            "{listed}"
        );
    }
    assert_eq!(cluster.jobs().len(), 1, "the reader deleted nothing");
    // What the store holds is untouched: the owner still sees it running, and it has a
    // placement naming this namespace.
    let stored = project.record(&id);
    assert_eq!(stored["status"], "running", "{stored:#}");
    assert_eq!(stored["placement"]["namespace"], cluster.ns(), "{stored:#}");
    project.ferry(&["runs", "cancel", &id]).success();
    assert!(cluster.jobs().is_empty());
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

#[test]
fn steps_never_see_the_store_credentials_the_agent_got() {
    let cluster = Cluster::start();
    let project = cluster.project("hello", "");
    project.write(
        "hello/pipeline.yaml",
        r#"name: snoop
steps:
  env:
    run: |
      echo "uid=$(id -u)"
      echo "parent=$(cat /proc/$PPID/comm)"
      env
      tr '\0' '\n' < /proc/$PPID/environ || echo "agent environ refused"
      od -c /proc/$PPID/mem > /dev/null 2>&1 || echo "agent memory refused"
"#,
    );
    let run = project.ferry(&["run", "hello"]);
    run.success();
    let secret = std::env::var("FERRY_TEST_S3_SECRET_ACCESS_KEY").unwrap();
    let logs = project.ferry(&["logs", &run_id_of(&project), "env"]);
    logs.success();
    assert!(
        logs.stdout().contains("FERRY_RUN_ID"),
        "the step's environment is printed:\n{}",
        logs.stdout()
    );
    // The step runs as the runtime image's non-root user, beside the agent that started it,
    // and the agent (non-dumpable) refuses it its environment and memory.
    for expected in [
        "uid=10001",
        "parent=ferry",
        "agent environ refused",
        "agent memory refused",
    ] {
        assert!(
            logs.stdout().contains(expected),
            "{expected}:\n{}",
            logs.stdout()
        );
    }
    for output in [run.stdout(), run.stderr(), logs.stdout()] {
        assert!(
            !output.contains(&secret),
            "the store secret leaked:\n{output}"
        );
        assert!(!output.contains("FERRY_AGENT_STORE"), "{output}");
    }
}

#[test]
fn a_detached_run_that_can_never_start_is_shown_failed_not_running() {
    // The node has no image `registry.invalid/...`: ErrImagePull, then ImagePullBackOff.
    let cluster = Cluster::start();
    let project = cluster.project("hello", "");
    project.write(
        "ferry.toml",
        &project.read("ferry.toml").replace(
            "image = \"ferry:test\"",
            "image = \"registry.invalid/ferry:1\"",
        ),
    );
    let id = start_detached(&project);
    // Nobody follows: `runs show` asks the cluster, which says the pod can never start.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let record = loop {
        let show = project.ferry(&["runs", "show", &id, "--output", "json"]);
        show.success();
        let record: serde_json::Value = serde_json::from_str(&show.stdout()).unwrap();
        if record["status"] == "failed" {
            break record;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {} after 60 s",
            record["status"]
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let error = record["error"].as_str().unwrap();
    assert!(
        error.contains("ErrImagePull") || error.contains("ImagePullBackOff"),
        "{error}"
    );
    assert!(
        cluster
            .jobs()
            .iter()
            .all(|j| !j["metadata"]["deletionTimestamp"].is_null()),
        "its Job is deleted"
    );
}

/// Who created each Job in the test's namespace, from the API server's audit log.
fn job_creators(cluster: &Cluster) -> Vec<String> {
    let audit = std::fs::read_to_string(running().dir.join("logs/audit.log"))
        .expect("the API server's audit log");
    audit
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| {
            e["objectRef"]["namespace"] == cluster.ns()
                && e["objectRef"]["resource"] == "jobs"
                && e["verb"] == "create"
                && e["responseStatus"]["code"] == 201
        })
        .map(|e| {
            e["user"]["username"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[test]
fn a_coordinator_whose_account_lacks_a_rule_fails_with_what_it_needs() {
    let cluster = Cluster::start();
    // The README's Role without `create` on jobs.
    let role = readme_role().replace(
        "verbs: [\"get\", \"list\", \"watch\", \"create\", \"delete\"]",
        "verbs: [\"get\", \"list\", \"watch\", \"delete\"]",
    );
    assert_ne!(role, readme_role(), "the rule was removed");
    cluster.grant_coordinator_role("ferry-limited", &role);
    let project = cluster.project(
        "hello",
        "mode = \"steps\"\nservice_account = \"ferry-limited\"",
    );
    let run = project.ferry(&["run", "hello"]);
    run.failure(1);
    let out = format!("{}{}", run.stdout(), run.stderr());
    assert!(
        out.contains("cannot create resource \"jobs\""),
        "the API server's refusal: {out}"
    );
    assert!(
        out.contains(
            "its service account `ferry-limited` needs get, list, watch, create and delete on jobs"
        ) && out.contains("see the README's steps mode section for a Role"),
        "{out}"
    );
}

/// Polls `ferry runs show` until the run has ended; nothing else follows it meanwhile.
fn wait_for_end(project: &Project, id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let show = project.ferry(&["runs", "show", id, "--output", "json"]);
        show.success();
        let record: serde_json::Value = serde_json::from_str(&show.stdout()).unwrap();
        if !matches!(record["status"].as_str(), Some("pending" | "running")) {
            return record;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run {id} still {} after 120 s",
            record["status"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn steps_mode_runs_one_job_per_step_and_a_detached_run_finishes_by_itself() {
    let cluster = Cluster::start();
    let project = cluster.project("hello", &cluster.steps_mode());
    let id = start_detached(&project);
    // The coordinator runs in the cluster: the run ends with nobody following it.
    let record = wait_for_end(&project, &id);
    assert_eq!(record["status"], "succeeded", "{record:#}");
    for step in ["fetch", "count-words", "count-lines", "shout", "report"] {
        assert_eq!(record["steps"][step]["status"], "succeeded", "{record:#}");
        // Where the step's time went outside its command, in the order it happened (one
        // machine, one clock): bench/k8s-bench.sh splits the gaps between steps with these.
        let step_record = &record["steps"][step];
        let at = |value: &serde_json::Value| {
            let text = value
                .as_str()
                .unwrap_or_else(|| panic!("step `{step}` lacks a time: {step_record:#}"));
            chrono::DateTime::parse_from_rfc3339(text).unwrap()
        };
        let timings = &step_record["timings"];
        let attempt = &step_record["attempt_history"][0];
        let order = [
            at(&timings["scheduled_at"]),
            at(&timings["submitted_at"]),
            at(&timings["agent_started_at"]),
            at(&attempt["started_at"]),
            at(&attempt["finished_at"]),
            at(&step_record["finished_at"]),
            at(&timings["seen_finished_at"]),
        ];
        assert!(
            order.windows(2).all(|w| w[0] <= w[1]),
            "step `{step}`'s times are out of order: {step_record:#}"
        );
    }
    // The step Jobs were created by the coordinator as its service account, with nothing but
    // the token the node mounted (its pod has no kubeconfig).
    let creators = job_creators(&cluster);
    let account = format!(
        "system:serviceaccount:{}:{COORDINATOR_ACCOUNT}",
        cluster.ns()
    );
    assert_eq!(
        creators.iter().filter(|user| **user == account).count(),
        5,
        "{creators:?}"
    );
    for pod in cluster.pods() {
        let env = pod["spec"]["containers"][0]["env"].to_string();
        assert!(!env.contains("KUBECONFIG"), "{env}");
    }

    let names = kubectl(
        &cluster,
        &[
            "get",
            "jobs",
            "-l",
            &format!("ferry.dev/run-id={id}"),
            "-o",
            "name",
        ],
    );
    assert_eq!(
        names.lines().count(),
        6,
        "a coordinator and five steps: {names}"
    );
    let jobs = cluster.jobs();
    let coordinator = jobs
        .iter()
        .find(|j| j["metadata"]["labels"]["ferry.dev/step"].is_null())
        .expect("the coordinator's Job");
    for job in jobs
        .iter()
        .filter(|j| !j["metadata"]["labels"]["ferry.dev/step"].is_null())
    {
        assert_eq!(
            job["metadata"]["ownerReferences"][0]["uid"], coordinator["metadata"]["uid"],
            "step Jobs go when the coordinator's Job goes: {job:#}"
        );
    }

    // Attached, the same pipeline again: steps stream their logs, upstream steps are cached.
    let run = project.ferry(&["run", "hello"]);
    run.success();
    let stdout = run.stdout();
    assert!(stdout.contains("hello, newcomer"), "{stdout}");
    assert!(stdout.contains("cached"), "{stdout}");

    // Logs outlive the Jobs and pods.
    let coordinator_name = coordinator["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    kubectl(
        &cluster,
        &["delete", "job", &coordinator_name, "--wait=true"],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while cluster
        .jobs()
        .iter()
        .any(|j| j["metadata"]["labels"]["ferry.dev/run-id"] == id.as_str())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the step Jobs were not collected"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = project.ferry(&["logs", &id, "report"]);
    logs.success();
    assert!(
        logs.stdout().contains("hello, newcomer"),
        "{}",
        logs.stdout()
    );
}

#[test]
fn steps_mode_fails_a_step_alone_skips_what_needs_it_and_honours_step_images() {
    let cluster = Cluster::start();
    let pipeline = "name: mixed\nsteps:\n  ok:\n    run: echo fine > \"$FERRY_OUTPUT_DIR/ok.txt\"\n    outputs: [ok.txt]\n  broken:\n    run: echo about to fail; exit 7\n    inputs: [ok]\n  after-broken:\n    run: echo never\n    needs: [broken]\n  elsewhere:\n    run: echo never either\n    image: registry.invalid/trainer:2\n  reads-ok:\n    run: cat \"$FERRY_INPUT_OK/ok.txt\"\n    inputs: [ok]\n";
    let project = cluster.project("hello", &cluster.steps_mode());
    project.write("hello/pipeline.yaml", pipeline);
    let run = project.ferry(&["run", "hello"]);
    run.failure(7);
    let stdout = run.stdout();
    assert!(stdout.contains("about to fail"), "{stdout}");
    assert!(
        stdout.contains("fine"),
        "an input read from the store:\n{stdout}"
    );
    let record = project.record(&run_id_of(&project));
    let steps = &record["steps"];
    assert_eq!(record["status"], "failed", "{record:#}");
    assert_eq!(steps["ok"]["status"], "succeeded");
    assert_eq!(steps["reads-ok"]["status"], "succeeded");
    assert_eq!(steps["broken"]["status"], "failed");
    assert_eq!(steps["broken"]["exit_code"], 7);
    assert_eq!(steps["after-broken"]["status"], "skipped");
    assert_eq!(steps["elsewhere"]["status"], "failed");
    let error = steps["elsewhere"]["error"].as_str().unwrap();
    assert!(
        error.contains("ErrImagePull") || error.contains("ImagePullBackOff"),
        "the step with its own image fails with the pod's reason: {error}"
    );

    // The same pipeline in pipeline mode cannot honour a step's image: refused up front.
    let pipeline_mode = cluster.project("hello", "");
    pipeline_mode.write("hello/pipeline.yaml", pipeline);
    let refused = pipeline_mode.ferry(&["run", "hello"]);
    assert_ne!(refused.code(), 0);
    assert!(
        refused
            .stderr()
            .contains("step `elsewhere` sets its own `image`"),
        "{}",
        refused.stderr()
    );
}

#[test]
fn a_gpu_profile_step_lands_on_the_gpu_node_while_cpu_steps_run_elsewhere() {
    let cluster = Cluster::start();
    let (label_key, label_value) = GPU_NODE_LABEL;
    let taint_key = GPU_NODE_TAINT.0;
    let profiles = format!(
        "profiles = {{ gpu = {{ gpus = 1, gpu_resource = \"{GPU_RESOURCE}\", node_selector = {{ \"{label_key}\" = \"{label_value}\" }}, tolerations = [{{ key = \"{taint_key}\", operator = \"Exists\", effect = \"NoSchedule\" }}] }} }}"
    );
    let project = cluster.project("hello", &format!("{}\n{profiles}", cluster.steps_mode()));
    let pipeline = r#"name: mixed
steps:
  prep:
    run: echo prep
  train:
    needs: [prep]
    profile: gpu
    run: echo train
  evaluate:
    needs: [train]
    kubernetes:
      resources: { requests: { cpu: 100m } }
    run: echo evaluate
"#;
    project.write("hello/pipeline.yaml", pipeline);
    let run = project.ferry(&["run", "hello"]);
    run.success();
    let pods = cluster.pods();
    let pod_of = |step: &str| {
        pods.iter()
            .find(|p| p["metadata"]["labels"]["ferry.dev/step"] == step)
            .unwrap_or_else(|| panic!("no pod for step {step}: {pods:#?}"))
    };
    let train = pod_of("train");
    assert_eq!(train["spec"]["nodeName"], GPU_NODE, "{train:#}");
    assert_eq!(
        train["spec"]["containers"][0]["resources"]["limits"][GPU_RESOURCE], "1",
        "{train:#}"
    );
    for step in ["prep", "evaluate"] {
        let pod = pod_of(step);
        assert_eq!(pod["spec"]["nodeName"], CPU_NODE, "{pod:#}");
        assert!(
            pod["spec"]["containers"][0]["resources"]["limits"][GPU_RESOURCE].is_null(),
            "{pod:#}"
        );
    }
    assert_eq!(
        pod_of("evaluate")["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "100m"
    );

    // A misspelt profile is refused before anything is created, with the closest name.
    project.write(
        "hello/pipeline.yaml",
        &pipeline.replace("profile: gpu", "profile: gpus"),
    );
    let jobs_before = cluster.jobs().len();
    let refused = project.ferry(&["run", "hello"]);
    assert_ne!(refused.code(), 0);
    assert!(
        refused.stderr().contains("names profile `gpus`")
            && refused.stderr().contains("did you mean `gpu`?"),
        "{}",
        refused.stderr()
    );
    assert_eq!(cluster.jobs().len(), jobs_before);

    // Pipeline mode runs every step in one pod: a step's own pod settings are refused.
    let pipeline_mode = cluster.project("hello", &profiles);
    pipeline_mode.write("hello/pipeline.yaml", pipeline);
    let refused = pipeline_mode.ferry(&["run", "hello"]);
    assert_ne!(refused.code(), 0);
    assert!(
        refused.stderr().contains("set mode = \"steps\""),
        "{}",
        refused.stderr()
    );
}

#[test]
fn a_step_writes_to_a_claim_that_a_later_run_reads_and_dev_shm_is_memory_of_its_size() {
    let cluster = Cluster::start();
    // A hostPath PersistentVolume on the test node, bound to a claim in the test's namespace,
    // writable by the runtime image's user.
    use std::os::unix::fs::PermissionsExt as _;
    let disk = cluster.dir.path().join("pv-datasets");
    std::fs::create_dir(&disk).unwrap();
    std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o777)).unwrap();
    let pv = format!("datasets-{}", cluster.ns());
    let objects = format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{ name: {pv} }}\nspec:\n  capacity: {{ storage: 1Gi }}\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n  storageClassName: \"\"\n  hostPath: {{ path: {disk:?} }}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{ name: datasets, namespace: {ns} }}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n  volumeName: {pv}\n  resources: {{ requests: {{ storage: 1Gi }} }}\n",
        disk = disk.display().to_string(),
        ns = cluster.ns()
    );
    let file = cluster.dir.path().join("datasets.yaml");
    std::fs::write(&file, objects).unwrap();
    kubectl(&cluster, &["apply", "-f", file.to_str().unwrap()]);

    let volumes = r#"volumes = [{ mount = "/data", claim = "datasets" }, { mount = "/dev/shm", memory = "64Mi" }]"#;
    let project = cluster.project("hello", volumes);
    project.write(
        "hello/pipeline.yaml",
        "name: write\nsteps:\n  write:\n    cache: false\n    run: |\n      echo \"weights from $FERRY_RUN_ID\" > /data/model.txt\n      grep ' /dev/shm ' /proc/mounts\n",
    );
    let first = project.ferry(&["run", "hello"]);
    first.success();
    let first_id = run_id_of(&project);
    let shm = project.ferry(&["logs", &first_id, "write"]).stdout();
    assert!(
        shm.contains("tmpfs") && shm.contains("size=65536k"),
        "/dev/shm is a 64Mi tmpfs: {shm}"
    );
    assert_eq!(
        std::fs::read_to_string(disk.join("model.txt")).unwrap(),
        format!("weights from {first_id}\n")
    );

    // A later run, read-only this time, finds what the first one wrote.
    let read_only = r#"volumes = [{ mount = "/data", claim = "datasets", read_only = true }]"#;
    let reader = cluster.project("hello", read_only);
    reader.write(
        "hello/pipeline.yaml",
        "name: read\nsteps:\n  read:\n    cache: false\n    run: |\n      cat /data/model.txt\n      touch /data/other 2>/dev/null && echo wrote || echo refused\n",
    );
    reader.ferry(&["run", "hello"]).success();
    let log = reader
        .ferry(&["logs", &run_id_of(&reader), "read"])
        .stdout();
    assert!(log.contains(&format!("weights from {first_id}")), "{log}");
    assert!(log.contains("refused"), "a read-only claim: {log}");
    assert!(!disk.join("other").exists());
}

#[test]
fn steps_mode_runs_at_most_parallelism_steps_at_once() {
    let cluster = Cluster::start();
    let project = cluster.project(
        "hello",
        &format!("{}\nparallelism = 2", cluster.steps_mode()),
    );
    // The steps run as the runtime image's user (uid 10001) and write beside the test, on
    // the host the test node's processes share: let them in.
    use std::os::unix::fs::PermissionsExt as _;
    let shared = project.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    for (dir, mode) in [(project.path(), 0o755), (shared.as_path(), 0o777)] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let trace = shared.join("trace.txt");
    let step = format!(
        "    run: echo \"start $(date +%s%N)\" >> {trace}; sleep 1; echo \"end $(date +%s%N)\" >> {trace}\n    cache: false\n",
        trace = trace.display()
    );
    let pipeline = format!(
        "name: wide\nsteps:\n{}",
        (1..=4)
            .map(|i| format!("  s{i}:\n{step}"))
            .collect::<String>()
    );
    project.write("hello/pipeline.yaml", &pipeline);
    project.ferry(&["run", "hello"]).success();
    let mut marks: Vec<(u128, i32)> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| {
            let (kind, at) = l.split_once(' ').unwrap();
            (at.parse().unwrap(), if kind == "start" { 1 } else { -1 })
        })
        .collect();
    assert_eq!(marks.len(), 8, "four steps started and ended");
    marks.sort();
    let (mut now, mut most) = (0, 0);
    for (_, delta) in marks {
        now += delta;
        most = most.max(now);
    }
    assert_eq!(
        most, 2,
        "at most two steps at once, and two did run together"
    );
}

fn base64_decode(text: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Every command line on this machine, for a secret that must not be on one.
fn command_lines() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .collect()
}

#[test]
fn a_planted_store_secret_appears_only_inside_secret_objects() {
    let cluster = Cluster::start();
    // The S3 server's secret key, fresh for every server start, is the marker.
    let secret = std::env::var("FERRY_TEST_S3_SECRET_ACCESS_KEY").unwrap();
    let mut seen: Vec<(String, String)> = Vec::new();
    for mode in ["pipeline", "steps"] {
        let prefix = unique_prefix("secrets");
        let project = cluster.project_with_store(
            "hello",
            &mode_settings(&cluster, mode),
            s3_settings(&prefix),
        );
        project.write(
            "hello/pipeline.yaml",
            "name: quiet\nsteps:\n  nap:\n    run: sleep 1; echo rested\n  fail:\n    run: echo failing; exit 3\n    needs: [nap]\n",
        );
        let (out, err) = (
            project.path().join("run.out"),
            project.path().join("run.err"),
        );
        let mut child = project
            .command(&["-vv", "run", "hello"])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        // While the run goes on: no process on this machine carries it on its command line.
        let status = loop {
            for line in command_lines() {
                seen.push((format!("{mode}: a command line"), line));
            }
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(status.code(), Some(3), "the failed step's exit code");
        seen.push((
            format!("{mode}: ferry -vv run stdout"),
            std::fs::read_to_string(&out).unwrap(),
        ));
        seen.push((
            format!("{mode}: ferry -vv run stderr"),
            std::fs::read_to_string(&err).unwrap(),
        ));
        // Every object the run left in the store: records, results, logs, outputs.
        let store = test_support::open_plugin_store("storage-s3", s3_settings(&prefix)).unwrap();
        let objects = store.list("", true).unwrap().objects;
        assert!(
            objects.len() >= 5,
            "record, logs, package, cache: {objects:?}"
        );
        for object in objects {
            let bytes = store.get_bytes(&object.key).unwrap();
            seen.push((
                format!("{mode}: store object {}", object.key),
                String::from_utf8_lossy(&bytes).into(),
            ));
        }
        let id = run_id_of(&project);
        for args in [
            vec!["-vv", "render", "hello"],
            vec!["runs", "show", &id, "--output", "json"],
            vec!["runs", "list", "--output", "json"],
            vec!["logs", &id],
            vec!["stack", "show"],
            vec!["-vv", "stack", "check"],
        ] {
            let run = project.ferry(&args);
            seen.push((
                format!("{mode}: ferry {args:?}"),
                run.stdout() + &run.stderr(),
            ));
        }
        // An error path: a store that refuses the request must not quote the settings.
        let broken = project
            .read("ferry.toml")
            .replace("http://127.0.0.1", "http://127.0.0.2");
        assert_ne!(
            broken,
            project.read("ferry.toml"),
            "the endpoint was replaced"
        );
        project.write("ferry.toml", &broken);
        let run = project.ferry(&["-vv", "runs", "list"]);
        assert_ne!(run.code(), 0, "the store is unreachable: {}", run.stdout());
        seen.push((
            format!("{mode}: an unreachable store"),
            run.stdout() + &run.stderr(),
        ));
    }
    // Every object the API server holds in the namespace, except Secrets; and every write it
    // received there (the API server's own audit log, request bodies included), except to
    // Secrets.
    let objects = kubectl(
        &cluster,
        &[
            "get",
            "pods,jobs,configmaps,serviceaccounts,events,roles,rolebindings",
            "-o",
            "json",
        ],
    );
    seen.push(("the namespace's objects".into(), objects));
    let mut secret_writes = 0;
    let audit = std::fs::read_to_string(running().dir.join("logs/audit.log"))
        .expect("the API server's audit log");
    for line in audit.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        if event["objectRef"]["namespace"] != cluster.ns() {
            continue;
        }
        let body = event["requestObject"].to_string();
        if event["objectRef"]["resource"] == "secrets" {
            // The server logs a Secret as stored: `stringData` folded into base64 `data`.
            let values = event["requestObject"]["data"].as_object().cloned();
            secret_writes += usize::from(values.into_iter().flatten().any(|(_, value)| {
                base64_decode(value.as_str().unwrap_or_default()).contains(&secret)
            }));
            continue;
        }
        seen.push((
            format!("request {} {}", event["verb"], event["requestURI"]),
            body,
        ));
    }
    assert!(
        secret_writes >= 2,
        "the store settings do travel, in each run's Secret"
    );
    for (place, text) in &seen {
        assert!(
            !text.contains(&secret),
            "the store secret appears in {place}:\n{text}"
        );
    }
}

#[test]
fn api_errors_lost_replies_and_dropped_watches_give_one_job_and_a_finished_run() {
    // ferry's requests go through a fault-injecting proxy in front of the real API server.
    // (In steps mode the coordinator reaches the API server from its pod, directly.)
    let cluster = Cluster::behind_proxy();
    for mode in ["pipeline", "steps"] {
        // Job creates fail twice with a 500, then one is carried out but its reply is lost
        // (a 500 after the write): ferry must retry and meet its own Job, not make a second.
        // ConfigMap and Secret creates are slow; a burst of list/watch requests fails.
        cluster.proxy().set_faults(vec![
            ApiFault {
                method: Some("POST".into()),
                path_contains: Some("/jobs".into()),
                count: 2,
                status: Some(500),
                ..ApiFault::default()
            },
            ApiFault {
                method: Some("POST".into()),
                path_contains: Some("/configmaps".into()),
                count: 1,
                status: Some(500),
                after_apply: true,
                ..ApiFault::default()
            },
            ApiFault {
                method: Some("POST".into()),
                path_contains: Some("/secrets".into()),
                count: 1,
                delay_ms: 1500,
                ..ApiFault::default()
            },
            ApiFault {
                method: Some("GET".into()),
                path_contains: Some("/pods".into()),
                count: 3,
                status: Some(500),
                ..ApiFault::default()
            },
        ]);
        let project = cluster.project("hello", &mode_settings(&cluster, mode));
        project.write(
            "hello/pipeline.yaml",
            "name: flaky\nsteps:\n  first:\n    run: sleep 1; echo one\n  second:\n    run: echo two\n    needs: [first]\n",
        );
        let child = project
            .command(&["-vv", "run", "hello"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Mid-run, every watch the server holds is cut: followers must resume, not hang.
        wait_for_running_pod(&cluster);
        cluster.proxy().drop_watches();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("two"),
            "{mode}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = run_id_of(&project);
        let jobs = kubectl(
            &cluster,
            &[
                "get",
                "jobs",
                "-l",
                &format!("ferry.dev/run-id={id}"),
                "-o",
                "name",
            ],
        );
        let expected = if mode == "pipeline" { 1 } else { 3 };
        assert_eq!(
            jobs.lines().count(),
            expected,
            "{mode}: no duplicate Jobs: {jobs}"
        );
        let record = project.record(&id);
        assert_eq!(record["status"], "succeeded", "{mode}: {record:#}");
    }
}

#[test]
fn a_run_whose_cluster_cannot_be_reached_is_shown_as_unknown_with_what_to_do() {
    // ferry reaches the cluster through a proxy, which then goes away.
    let mut cluster = Cluster::behind_proxy();
    let project = cluster.project("hello", "");
    project.write(
        "hello/pipeline.yaml",
        "name: away\nsteps:\n  nap:\n    run: sleep 60\n",
    );
    let id = start_detached(&project);
    wait_for_running_pod(&cluster);
    // The cluster can no longer be reached; the record still says running.
    let proxy = cluster.proxy.take().unwrap();
    cluster.runtime.block_on(proxy.shutdown());
    let show = project.ferry(&["runs", "show", &id]);
    show.success();
    let out = show.stdout();
    assert!(
        out.contains("unknown: lost contact with the cluster, last news of the run at"),
        "{out}"
    );
    assert!(out.contains(&format!("ferry runs cancel {id}")), "{out}");
}

#[test]
fn a_steps_coordinator_whose_pod_dies_is_replaced_and_the_run_finishes() {
    let cluster = Cluster::start();
    let project = cluster.project(
        "hello",
        &format!("{}\nbackoff_limit = 1", cluster.steps_mode()),
    );
    project.write(
        "hello/pipeline.yaml",
        "name: resilient\nsteps:\n  first:\n    run: sleep 2; echo first done\n  second:\n    run: echo second done\n    needs: [first]\n",
    );
    let id = start_detached(&project);
    // Once the first step runs, its coordinator's pod is deleted: the Job starts another,
    // which takes up the running step instead of starting it twice.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let coordinator_pod = loop {
        let pods = cluster.pods();
        let step_running = pods.iter().any(|p| {
            p["metadata"]["labels"]["ferry.dev/step"] == "first"
                && p["status"]["phase"] == "Running"
        });
        if step_running
            && let Some(pod) = pods
                .iter()
                .find(|p| p["metadata"]["labels"]["ferry.dev/step"].is_null())
        {
            break pod["metadata"]["name"].as_str().unwrap().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first step never ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    kubectl(
        &cluster,
        &["delete", "pod", &coordinator_pod, "--wait=false"],
    );
    let record = wait_for_end(&project, &id);
    assert_eq!(record["status"], "succeeded", "{record:#}");
    let jobs = kubectl(
        &cluster,
        &[
            "get",
            "jobs",
            "-l",
            &format!("ferry.dev/run-id={id}"),
            "-o",
            "name",
        ],
    );
    assert_eq!(jobs.lines().count(), 3, "no step started twice: {jobs}");
    let coordinator = cluster
        .jobs()
        .into_iter()
        .find(|j| j["metadata"]["labels"]["ferry.dev/step"].is_null())
        .unwrap();
    assert_eq!(
        coordinator["status"]["failed"], 1,
        "the first coordinator pod was lost and replaced: {coordinator:#}"
    );
    let logs = project.ferry(&["logs", &id, "second"]);
    assert!(logs.stdout().contains("second done"), "{}", logs.stdout());
}

/// Polls the store until run `id` exists and has ended (a schedule's launch writes its record
/// once its pod has started).
fn wait_for_scheduled_run(project: &Project, id: &str, within: Duration) -> serde_json::Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let show = project.ferry(&["runs", "show", id, "--output", "json"]);
        if let Ok(record) = serde_json::from_str::<serde_json::Value>(&show.stdout())
            && !matches!(record["status"].as_str(), Some("pending" | "running"))
        {
            return record;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run {id} has not ended within {within:?}: {}{}",
            show.stdout(),
            show.stderr()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The newest run whose record names `schedule`, once one exists.
fn wait_for_a_run_of(project: &Project, schedule: &str, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let list = project.ferry(&["runs", "list", "--output", "json"]);
        list.success();
        let records: Vec<serde_json::Value> = serde_json::from_str(&list.stdout()).unwrap();
        if let Some(record) = records.iter().find(|r| r["schedule"] == schedule) {
            return record["run_id"].as_str().unwrap().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "schedule {schedule} started no run within {within:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_schedule_runs_its_pipeline_when_triggered_and_when_its_cron_fires() {
    let cluster = Cluster::start();
    cluster.grant_coordinator_role("ferry-launcher", &readme_launcher_role());
    let project = cluster.project("hello", "service_account = \"ferry-launcher\"");

    // Suspended: it only runs when triggered.
    let created = project.ferry(&[
        "schedule",
        "create",
        "nightly",
        "--cron",
        "30 2 * * *",
        "--suspended",
        "hello",
        "--param",
        "name=scheduler",
    ]);
    created.success();
    assert!(
        created
            .stdout()
            .contains("schedule nightly created: `30 2 * * *` runs pipeline hello"),
        "{}",
        created.stdout()
    );
    let cron_jobs: serde_json::Value = serde_json::from_str(&kubectl(
        &cluster,
        &[
            "get",
            "cronjobs",
            "-l",
            "ferry.dev/schedule=nightly",
            "-o",
            "json",
        ],
    ))
    .unwrap();
    let cron_job = &cron_jobs["items"][0];
    assert_eq!(cron_job["spec"]["schedule"], "30 2 * * *", "{cron_job:#}");
    assert_eq!(cron_job["spec"]["suspend"], true, "{cron_job:#}");
    assert_eq!(
        cron_job["spec"]["concurrencyPolicy"], "Forbid",
        "{cron_job:#}"
    );
    let listed = project.ferry(&["schedule", "list", "--output", "json"]);
    listed.success();
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout()).unwrap();
    assert_eq!(listed[0]["spec"]["name"], "nightly", "{listed:#}");
    assert_eq!(listed[0]["pipeline"], "hello", "{listed:#}");
    assert_eq!(listed[0]["params"]["name"], "scheduler", "{listed:#}");

    let triggered = project.ferry(&["schedule", "trigger", "nightly"]);
    triggered.success();
    let id = triggered.stdout().trim().to_string();
    let record = wait_for_scheduled_run(&project, &id, Duration::from_secs(180));
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert_eq!(record["schedule"], "nightly", "{record:#}");
    assert_eq!(record["params"]["name"], "scheduler", "{record:#}");
    let report = project.ferry(&["logs", &id, "report"]);
    report.success();
    assert!(report.stdout().contains("scheduler"), "{}", report.stdout());
    let runs = project.ferry(&["runs", "list"]);
    assert!(
        runs.stdout().contains("SCHEDULE") && runs.stdout().contains("nightly"),
        "{}",
        runs.stdout()
    );
    let shown = project.ferry(&["schedule", "show", "nightly"]);
    shown.success();
    assert!(shown.stdout().contains(&id), "{}", shown.stdout());

    // Every minute, by itself: its run has an id of its own.
    project
        .ferry(&[
            "schedule",
            "create",
            "minutely",
            "--cron",
            "* * * * *",
            "hello",
        ])
        .success();
    let fired = wait_for_a_run_of(&project, "minutely", Duration::from_secs(150));
    assert_ne!(fired, id);
    let record = wait_for_scheduled_run(&project, &fired, Duration::from_secs(180));
    assert_eq!(record["status"], "succeeded", "{record:#}");

    for name in ["nightly", "minutely"] {
        project.ferry(&["schedule", "delete", name]).success();
    }
    let left = kubectl(&cluster, &["get", "cronjobs", "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
    let gone = project.ferry(&["schedule", "show", "nightly"]);
    assert!(
        gone.stderr().contains("no schedule `nightly`"),
        "{}",
        gone.stderr()
    );
}

#[test]
fn a_retry_from_a_step_reuses_the_earlier_outputs_in_the_cluster_in_both_modes() {
    let cluster = Cluster::start();
    for mode in ["pipeline", "steps"] {
        let project = cluster.project("hello", &mode_settings(&cluster, mode));
        project.ferry(&["run", "hello"]).success();
        let first = run_id_of(&project);
        let retry = project.ferry(&["runs", "retry", &first, "--from", "report"]);
        retry.success();
        let again = run_id_of(&project);
        assert_ne!(again, first);
        let record = project.record(&again);
        assert_eq!(record["status"], "succeeded", "{mode}: {record:#}");
        assert_eq!(record["resumed_from"], first.as_str(), "{mode}: {record:#}");
        for reused in ["fetch", "count-words", "count-lines", "shout"] {
            assert_eq!(
                record["steps"][reused]["status"], "cached",
                "{mode} {reused}: {record:#}"
            );
            assert_eq!(
                record["steps"][reused]["outputs_from"]["run_id"],
                first.as_str()
            );
        }
        assert_eq!(
            record["steps"]["report"]["status"], "succeeded",
            "{mode}: {record:#}"
        );
        let report = project.ferry(&["logs", &again, "report"]);
        report.success();
        assert!(
            report.stdout().contains("hello"),
            "{mode}: {}",
            report.stdout()
        );
    }
}

#[test]
fn the_python_sdk_example_runs_on_kubernetes_in_both_modes() {
    let cluster = Cluster::start();
    let sdk = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../python");
    for mode in ["pipeline", "steps"] {
        // The test node runs pods on this machine: the image's python is this machine's, and
        // the SDK comes from the repository (an image would have it installed).
        let settings = format!(
            "{}\nenv = {{ PYTHONPATH = {:?} }}",
            mode_settings(&cluster, mode),
            sdk.display().to_string()
        );
        let project = cluster.project("ml-python", &settings);
        let compiled = Command::new("/usr/bin/python3")
            .args(["-m", "ferry", "compile", "training:training"])
            .current_dir(project.path().join("ml-python"))
            .env("PYTHONPATH", &sdk)
            .env("FERRY_PYTHON", "/usr/bin/python3")
            .output()
            .unwrap();
        assert!(
            compiled.status.success(),
            "{}",
            String::from_utf8_lossy(&compiled.stderr)
        );
        project.write(
            "ml-python/pipeline.json",
            &String::from_utf8_lossy(&compiled.stdout),
        );
        let run = project.ferry(&["run", "ml-python/pipeline.json", "--param", "epochs=60"]);
        run.success();
        let id = run_id_of(&project);
        let record = project.record(&id);
        assert_eq!(record["status"], "succeeded", "{mode}: {record:#}");
        for step in ["load", "split", "train", "evaluate"] {
            assert_eq!(
                record["steps"][step]["status"], "succeeded",
                "{mode} {step}: {record:#}"
            );
        }
        let log = project.ferry(&["logs", &id, "evaluate"]);
        assert!(
            log.stdout().contains("test accuracy"),
            "{mode}: {}",
            log.stdout()
        );
    }
}
