//! The objects of a run, built by pure functions (the seed's `create_job_object`): one
//! ConfigMap with the run plan, one Secret with the store's settings, and the Jobs.
//!
//! Nothing secret is ever a literal in a Job spec: the agent reads the plan and the store
//! settings from environment variables that reference the ConfigMap and the Secret. The run's
//! Job is created suspended; the ConfigMap and Secret are then created with an owner reference
//! to it (so they go when it goes), and only then is the Job resumed.
//!
//! In `pipeline` mode that Job runs the whole pipeline. In `steps` mode it is the run's
//! coordinator: its agent hands the plan to this plugin inside the cluster, which creates one
//! Job per step (owned by the coordinator's Job, so that deleting it deletes them).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use orchestrator_core::pipeline::Step;
use orchestrator_core::run::RunPlan;
use orchestrator_core::sdk::StoreConnection;
use serde_json::{Value, json};

use crate::names;
use crate::settings::{Mode, Settings, StoreCredentials};

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const RUN_LABEL: &str = "ferry.dev/run-id";
pub const PIPELINE_LABEL: &str = "ferry.dev/pipeline";
pub const STEP_LABEL: &str = "ferry.dev/step";
/// On a step's Job and pod: which attempt of the step it runs (a step whose pod died is
/// retried in a new Job).
pub const ATTEMPT_LABEL: &str = "ferry.dev/attempt";
/// Exact step and pipeline names (labels may only hold a sanitized form).
pub const STEP_ANNOTATION: &str = "ferry.dev/step-name";
pub const PIPELINE_ANNOTATION: &str = "ferry.dev/pipeline-name";
pub const CODE_ANNOTATION: &str = "ferry.dev/code-digest";
/// On a schedule's CronJob, its launches and the runs they start: the schedule's name.
pub const SCHEDULE_LABEL: &str = "ferry.dev/schedule";
/// On a schedule's CronJob: the pipeline parameters of its runs, as JSON.
pub const PARAMS_ANNOTATION: &str = "ferry.dev/params";

/// Keys in the ConfigMap and Secret, and the variables the agent reads them from.
pub const PLAN_KEY: &str = "plan.json";
pub const STORE_KEY: &str = "store.json";
pub const ORCHESTRATOR_KEY: &str = "orchestrator.json";
pub const PLAN_ENV: &str = orchestrator_core::env_vars::FERRY_AGENT_PLAN;
pub const STORE_ENV: &str = orchestrator_core::env_vars::FERRY_AGENT_STORE;
pub const ORCHESTRATOR_ENV: &str = orchestrator_core::env_vars::FERRY_AGENT_ORCHESTRATOR;
/// Where the agent unpacks the code inside the container.
pub const WORK_DIR: &str = "/workspace";
pub const CONTAINER: &str = "ferry";

/// Everything `ferry run` creates for one run, in creation order.
#[derive(Clone, Debug)]
pub struct RunObjects {
    pub namespace: String,
    pub jobs: Vec<Job>,
    pub config_map: ConfigMap,
    pub secret: Option<Secret>,
    /// `steps` mode: the Jobs the coordinator will create, one per step (shown by `render`;
    /// at run time they also get an owner reference to the coordinator's Job).
    pub step_jobs: Vec<Job>,
}

impl RunObjects {
    /// Every object as one multi-document YAML stream (`ferry render`, which masks the
    /// Secret's value first).
    pub fn to_yaml(&self) -> String {
        let docs = std::iter::once(serde_json::to_value(&self.config_map))
            .chain(self.secret.iter().map(serde_json::to_value))
            .chain(
                self.jobs
                    .iter()
                    .chain(&self.step_jobs)
                    .map(serde_json::to_value),
            );
        yaml_stream(docs.map(|d| d.expect("objects serialise")))
    }
}

/// Objects as one multi-document YAML stream.
pub(crate) fn yaml_stream(docs: impl IntoIterator<Item = Value>) -> String {
    docs.into_iter()
        .map(|d| {
            format!(
                "---\n{}",
                serde_saphyr::to_string(&d).expect("JSON values serialise as YAML")
            )
        })
        .collect()
}

/// A Secret as `ferry render` shows it: its keys, not its values (render output gets pasted
/// into tickets and chats).
pub(crate) fn mask(secret: &mut Secret) {
    for value in secret.string_data.iter_mut().flat_map(|d| d.values_mut()) {
        *value = "<the stack's store settings, credentials included; not shown>".into();
    }
}

pub(crate) fn labels(
    settings: &Settings,
    plan: &RunPlan,
    step: Option<&str>,
) -> BTreeMap<String, String> {
    let mut labels = settings.extra_labels.clone();
    // ferry's own labels win: `runs cancel` and `kubectl get -l` rely on them.
    labels.insert(MANAGED_BY.into(), "ferry".into());
    // A schedule's template has no run yet: each launch mints its own.
    if !plan.is_template() {
        labels.insert(RUN_LABEL.into(), names::label_value(&plan.run_id));
    }
    if let Some(schedule) = &plan.schedule {
        labels.insert(SCHEDULE_LABEL.into(), names::label_value(schedule));
    }
    labels.insert(
        PIPELINE_LABEL.into(),
        names::label_value(&plan.pipeline.name),
    );
    if let Some(step) = step {
        labels.insert(STEP_LABEL.into(), names::label_value(step));
    }
    labels
}

pub(crate) fn annotations(
    settings: &Settings,
    plan: &RunPlan,
    step: Option<&str>,
) -> BTreeMap<String, String> {
    let mut annotations = settings.extra_annotations.clone();
    annotations.insert(PIPELINE_ANNOTATION.into(), plan.pipeline.name.clone());
    if let Some(step) = step {
        annotations.insert(STEP_ANNOTATION.into(), step.to_string());
    }
    if let Some(digest) = &plan.code.digest {
        annotations.insert(CODE_ANNOTATION.into(), digest.clone());
    }
    annotations
}

/// Every object of a run (`runs cancel`, `kubectl get -l`).
pub fn run_selector(run_id: &str) -> String {
    format!("{RUN_LABEL}={}", names::label_value(run_id))
}

/// The Job that runs (pipeline mode) or coordinates (steps mode) a run, and its pods: what the
/// submitting machine follows. Step Jobs are the coordinator's to follow.
pub fn run_job_selector(run_id: &str) -> String {
    format!("{},!{STEP_LABEL}", run_selector(run_id))
}

/// One step's Job and pods in `steps` mode.
pub fn step_selector(run_id: &str, step: &str) -> String {
    format!(
        "{},{STEP_LABEL}={}",
        run_selector(run_id),
        names::label_value(step)
    )
}

/// The Job and pods of one attempt of a step.
pub fn attempt_selector(run_id: &str, step: &str, attempt: u32) -> String {
    format!("{},{ATTEMPT_LABEL}={attempt}", step_selector(run_id, step))
}

/// Makes a step's Job the one of `attempt`: labelled with it and, after the first, named
/// apart (the earlier attempt's Job stays, with its pod's status, for `kubectl describe`)
/// and handing the earlier attempts to the agent.
pub fn mark_attempt(
    job: &mut Job,
    settings: &Settings,
    plan: &RunPlan,
    step: &Step,
    attempt: u32,
    prior: &[orchestrator_core::run::AttemptRecord],
) {
    let label = (ATTEMPT_LABEL.to_string(), attempt.to_string());
    job.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(label.0.clone(), label.1.clone());
    let Some(spec) = job.spec.as_mut() else {
        return;
    };
    spec.template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default)
        .insert(label.0, label.1);
    if attempt > 1 {
        job.metadata.name = Some(names::job_name(
            &settings.job_prefix,
            &plan.pipeline.name,
            Some(&format!("{}-attempt-{attempt}", step.name)),
            &plan.run_id,
        ));
    }
    if !prior.is_empty()
        && let Some(pod) = spec.template.spec.as_mut()
        && let Some(container) = pod.containers.first_mut()
    {
        container
            .env
            .get_or_insert_with(Vec::new)
            .push(k8s_openapi::api::core::v1::EnvVar {
                name: orchestrator_core::env_vars::FERRY_AGENT_PRIOR_ATTEMPTS.into(),
                value: Some(serde_json::to_string(prior).expect("attempts serialise")),
                value_from: None,
            });
    }
}

/// The name of the Job that runs or coordinates a run.
pub fn run_job_name(settings: &Settings, plan: &RunPlan) -> String {
    names::job_name(
        &settings.job_prefix,
        &plan.pipeline.name,
        None,
        &plan.run_id,
    )
}

/// The settings the coordinator of a `steps` run gets (in the ConfigMap): the stack's, minus
/// where the submitting machine found its cluster, plus the namespace it resolved. Inside the
/// pod the cluster is found the standard way (in-cluster service account).
pub fn coordinator_settings(settings: &Settings, namespace: &str) -> Value {
    let mut map = settings.source.clone();
    for key in ["kubeconfig", "kubernetes_config_path", "context"] {
        map.remove(key);
    }
    map.insert("namespace".into(), json!(namespace));
    map.insert("role".into(), json!("coordinator"));
    json!({ "plugin": crate::settings::NAME, "settings": map })
}

/// The settings a schedule's launcher gets: the coordinator's, but it submits runs.
pub fn launcher_settings(settings: &Settings, namespace: &str) -> Value {
    let mut component = coordinator_settings(settings, namespace);
    if let Some(map) = component["settings"].as_object_mut() {
        map.remove("role");
    }
    component
}

/// The per-run ConfigMap and Secret share the name of the run's first Job.
pub fn config_name(settings: &Settings, plan: &RunPlan) -> String {
    run_job_name(settings, plan)
}

/// The largest of some quantities (kept as written); malformed ones never win.
fn largest<'a>(quantities: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    quantities
        .filter_map(|q| orchestrator_core::pipeline::quantity(q).map(|v| (v, q)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, q)| q)
}

/// A step's container resources (`steps` mode): the stack's defaults, overridden by the
/// step's own (pipeline mode sizes its one pod with `pipeline_sizing`). Memory is also the limit: a step that asks for 2Gi is killed above 2Gi
/// rather than starving its neighbours.
fn resources(settings: &Settings, steps: &[&Step]) -> Value {
    let mut resources = settings.resources.clone().unwrap_or_else(|| json!({}));
    {
        let r = orchestrator_core::pipeline::Resources {
            cpu: largest(steps.iter().filter_map(|s| s.resources.cpu.as_deref()))
                .map(str::to_string),
            memory: largest(steps.iter().filter_map(|s| s.resources.memory.as_deref()))
                .map(str::to_string),
            gpu: steps
                .iter()
                .filter_map(|s| s.resources.gpu)
                .max()
                .or(settings.gpus),
        };
        if let Some(cpu) = &r.cpu {
            resources["requests"]["cpu"] = json!(cpu);
        }
        if let Some(memory) = &r.memory {
            resources["requests"]["memory"] = json!(memory);
            resources["limits"]["memory"] = json!(memory);
        }
        if let Some(gpu) = r.gpu {
            resources["limits"][settings.gpu_resource.as_str()] = json!(gpu.to_string());
        }
    }
    resources
}

/// The most steps of `plan` that can ever run at the same time: the size of the largest set
/// of steps none of which depends on another, even indirectly (the DAG's width: Dilworth's
/// theorem, by a maximum matching over the reachability relation). A chain has width 1.
pub fn dag_width(pipeline: &orchestrator_core::pipeline::Pipeline) -> usize {
    let order = pipeline.topological_order();
    let index: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let n = order.len();
    // reaches[i][j]: step j depends on step i, directly or not.
    let mut reaches = vec![vec![false; n]; n];
    for (j, step) in order.iter().enumerate() {
        for dep in pipeline.dependencies(step) {
            if let Some(&i) = index.get(dep) {
                reaches[i][j] = true;
                // Whatever reaches the dependency (all computed: it comes earlier) reaches j.
                for row in reaches.iter_mut() {
                    if row[i] {
                        row[j] = true;
                    }
                }
            }
        }
    }
    fn augment(
        u: usize,
        reaches: &[Vec<bool>],
        seen: &mut [bool],
        matched: &mut [Option<usize>],
    ) -> bool {
        for v in 0..reaches.len() {
            if reaches[u][v] && !seen[v] {
                seen[v] = true;
                if matched[v].is_none_or(|w| augment(w, reaches, seen, matched)) {
                    matched[v] = Some(u);
                    return true;
                }
            }
        }
        false
    }
    let mut matched = vec![None; n];
    let matching = (0..n)
        .filter(|&u| augment(u, &reaches, &mut vec![false; n], &mut matched))
        .count();
    n - matching
}

/// Pipeline mode: one pod runs every step, up to `parallelism` at once and never more than
/// the DAG's width. It asks for the sum of that many of the largest cpu and memory requests
/// (each summed apart: an upper bound of what runs at once), unless the stack's `resources`
/// set a request itself, which is then the pod's size. Either way the pod's agent admits a
/// step only while the requests of the steps running fit in what the pod asked for: the
/// returned local-orchestrator settings (`parallelism`, `cpu_budget`, `memory_budget`).
fn pipeline_sizing(settings: &Settings, plan: &RunPlan) -> (Value, Value) {
    let steps = &plan.pipeline.steps;
    let at_once = settings.parallelism.min(dag_width(&plan.pipeline)).max(1);
    let largest_sum = |mut values: Vec<u64>| -> Option<u64> {
        values.sort_unstable_by(|a, b| b.cmp(a));
        (!values.is_empty()).then(|| values.into_iter().take(at_once).sum())
    };
    let mut resources = settings.resources.clone().unwrap_or_else(|| json!({}));
    if resources["requests"]["cpu"].is_null()
        && let Some(millis) = largest_sum(
            steps
                .iter()
                .filter_map(|s| s.resources.cpu_millis())
                .collect(),
        )
    {
        resources["requests"]["cpu"] = json!(format!("{millis}m"));
    }
    if resources["requests"]["memory"].is_null()
        && let Some(bytes) = largest_sum(
            steps
                .iter()
                .filter_map(|s| s.resources.memory_bytes())
                .collect(),
        )
    {
        let memory = json!(format!("{}Mi", bytes.div_ceil(1024 * 1024)));
        resources["requests"]["memory"] = memory.clone();
        if resources["limits"]["memory"].is_null() {
            resources["limits"]["memory"] = memory;
        }
    }
    if let Some(gpu) = steps
        .iter()
        .filter_map(|s| s.resources.gpu)
        .max()
        .or(settings.gpus)
    {
        resources["limits"][settings.gpu_resource.as_str()] = json!(gpu.to_string());
    }
    let mut local = json!({ "parallelism": at_once });
    for (request, key) in [("cpu", "cpu_budget"), ("memory", "memory_budget")] {
        if let Some(value) = resources["requests"][request].as_str() {
            local[key] = json!(value);
        }
    }
    (resources, local)
}

/// What a Job of a run does.
#[derive(Clone, Copy)]
pub enum JobKind<'a> {
    /// Runs the whole pipeline.
    Pipeline,
    /// Starts and follows one Job per step (`steps` mode).
    Coordinator,
    /// Runs one step (`steps` mode).
    Step(&'a Step),
    /// A schedule's launch: mints the run's id and starts the run like `ferry run` would from
    /// a laptop, then follows it (its CronJob's concurrency policy counts it as active until
    /// the run ends, and deleting it cancels the run).
    Launcher,
}

/// The coordinator only starts Jobs and relays logs: it asks for little, whatever the steps
/// ask for (a GPU default would otherwise be held for the whole run).
fn coordinator_resources() -> Value {
    json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}})
}

pub fn job(
    settings: &Settings,
    plan: &RunPlan,
    namespace: &str,
    kind: JobKind<'_>,
    config: &str,
) -> Job {
    let step = match kind {
        JobKind::Step(step) => Some(step),
        JobKind::Pipeline | JobKind::Coordinator | JobKind::Launcher => None,
    };
    // A step's profile and `kubernetes:` block were checked when the run was submitted; the
    // fallback only keeps a coordinator of a newer plan from aborting.
    let own_settings = step.and_then(|s| crate::profile::for_step(settings, s).ok().flatten());
    let settings = own_settings.as_ref().unwrap_or(settings);
    let step_name = step.map(|s| s.name.as_str());
    let name = names::job_name(
        &settings.job_prefix,
        &plan.pipeline.name,
        step_name,
        &plan.run_id,
    );
    let labels = labels(settings, plan, step_name);
    let annotations = annotations(settings, plan, step_name);
    let mut env = vec![
        json!({"name": PLAN_ENV, "valueFrom": {"configMapKeyRef": {"name": config, "key": PLAN_KEY}}}),
    ];
    // With workload identity the store's settings hold no credentials and travel in the
    // ConfigMap; otherwise only ever in the Secret.
    let store_source = match settings.store_credentials {
        StoreCredentials::Secret => "secretKeyRef",
        StoreCredentials::WorkloadIdentity => "configMapKeyRef",
    };
    env.push(
        json!({"name": STORE_ENV, "valueFrom": {store_source: {"name": config, "key": STORE_KEY}}}),
    );
    if let JobKind::Coordinator | JobKind::Launcher = kind {
        env.push(json!({"name": ORCHESTRATOR_ENV, "valueFrom": {"configMapKeyRef": {"name": config, "key": ORCHESTRATOR_KEY}}}));
    }
    for (key, value) in &settings.env {
        env.push(json!({"name": key, "value": value}));
    }
    let mut args = vec!["agent".to_string(), "run".to_string()];
    if let Some(step) = step_name {
        args.push("--step".into());
        args.push(step.to_string());
    }
    let resources = match kind {
        JobKind::Pipeline => {
            let (resources, local) = pipeline_sizing(settings, plan);
            env.push(json!({"name": orchestrator_core::env_vars::FERRY_AGENT_LOCAL_SETTINGS, "value": local.to_string()}));
            resources
        }
        JobKind::Coordinator | JobKind::Launcher => coordinator_resources(),
        JobKind::Step(step) => resources(settings, &[step]),
    };
    let image = step
        .and_then(|s| s.image.as_deref())
        .unwrap_or(&settings.image);
    let mut pod_volumes = None;
    let mut container = json!({
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy.as_str(),
        "command": ["ferry"],
        "args": args,
        "workingDir": WORK_DIR,
        "env": env,
        "resources": resources,
    });
    if !settings.env_from_secrets.is_empty() {
        container["envFrom"] = settings
            .env_from_secrets
            .iter()
            .map(|s| json!({"secretRef": {"name": s}}))
            .collect();
    }
    // The coordinator and the launcher only start Jobs: they mount nothing (a ReadWriteOnce
    // claim one held would keep the steps' pods off other nodes).
    if !matches!(kind, JobKind::Coordinator | JobKind::Launcher) && !settings.volumes.is_empty() {
        let (volumes, mounts) = crate::volumes::render(&settings.volumes);
        container["volumeMounts"] = json!(mounts);
        pod_volumes = Some(volumes);
    }
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "containers": [container],
        "securityContext": security_context(settings.run_as_user),
    });
    if let Some(sa) = &settings.service_account {
        pod_spec["serviceAccountName"] = json!(sa);
    }
    if let Some(volumes) = pod_volumes {
        pod_spec["volumes"] = json!(volumes);
    }
    if let Some(class) = &settings.priority_class {
        pod_spec["priorityClassName"] = json!(class);
    }
    if !settings.image_pull_secrets.is_empty() {
        pod_spec["imagePullSecrets"] = settings
            .image_pull_secrets
            .iter()
            .map(|s| json!({"name": s}))
            .collect();
    }
    if !settings.node_selector.is_empty() {
        pod_spec["nodeSelector"] = json!(settings.node_selector);
    }
    if let Some(t) = &settings.tolerations {
        pod_spec["tolerations"] = t.clone();
    }
    if let Some(a) = &settings.affinity {
        pod_spec["affinity"] = a.clone();
    }
    // The run's Job starts suspended (see the module doc); step Jobs are created by the
    // coordinator once the ConfigMap exists, and start at once.
    let launcher = matches!(kind, JobKind::Launcher);
    let mut spec = json!({
        "suspend": step.is_none() && !launcher,
        // A launch that failed after starting its run must not start a second one.
        "backoffLimit": if launcher { 0 } else { settings.backoff_limit },
        "template": {
            "metadata": { "labels": labels, "annotations": annotations },
            "spec": pod_spec,
        },
    });
    // A schedule's finished launches are kept by its history limits, not a TTL.
    if let Some(ttl) = settings.ttl_seconds_after_finished.filter(|_| !launcher) {
        spec["ttlSecondsAfterFinished"] = json!(ttl);
    }
    if let Some(deadline) = settings.active_deadline_seconds {
        spec["activeDeadlineSeconds"] = json!(deadline);
    }
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": name, "namespace": namespace, "labels": labels, "annotations": annotations },
        "spec": spec,
    });
    serde_json::from_value(job).expect("the Job literal has the Job shape")
}

/// All objects of a run.
pub fn run_objects(
    settings: &Settings,
    plan: &RunPlan,
    namespace: &str,
    store: &StoreConnection,
) -> RunObjects {
    let config = config_name(settings, plan);
    let labels = labels(settings, plan, None);
    let annotations = annotations(settings, plan, None);
    let (jobs, step_jobs) = match settings.mode {
        Mode::Pipeline => (
            vec![job(settings, plan, namespace, JobKind::Pipeline, &config)],
            Vec::new(),
        ),
        Mode::Steps => (
            vec![job(
                settings,
                plan,
                namespace,
                JobKind::Coordinator,
                &config,
            )],
            plan.pipeline
                .steps
                .iter()
                .map(|step| job(settings, plan, namespace, JobKind::Step(step), &config))
                .collect(),
        ),
    };
    let orchestrator =
        (settings.mode == Mode::Steps).then(|| coordinator_settings(settings, namespace));
    let (config_map, secret) = config_objects(
        settings,
        plan,
        json!({ "name": config, "namespace": namespace, "labels": labels, "annotations": annotations }),
        store,
        orchestrator,
    );
    RunObjects {
        namespace: namespace.to_string(),
        jobs,
        config_map,
        secret,
        step_jobs,
    }
}

/// The ConfigMap (the plan; the orchestrator's settings for an agent that hands the plan on;
/// the store's settings under workload identity) and the Secret (the store's settings) that a
/// run's or a schedule's Jobs read, under `metadata`.
pub(crate) fn config_objects(
    settings: &Settings,
    plan: &RunPlan,
    metadata: Value,
    store: &StoreConnection,
    orchestrator: Option<Value>,
) -> (ConfigMap, Option<Secret>) {
    let store_json = serde_json::to_string(store).expect("settings serialise");
    let mut data = json!({ PLAN_KEY: plan.to_json() });
    if let Some(orchestrator) = orchestrator {
        data[ORCHESTRATOR_KEY] = json!(orchestrator.to_string());
    }
    if settings.store_credentials == StoreCredentials::WorkloadIdentity {
        data[STORE_KEY] = json!(store_json);
    }
    let config_map = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": data,
    }))
    .expect("the ConfigMap literal has the ConfigMap shape");
    let secret = match settings.store_credentials {
        StoreCredentials::Secret => Some(
            serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": metadata,
                "type": "Opaque",
                "stringData": { STORE_KEY: store_json },
            }))
            .expect("the Secret literal has the Secret shape"),
        ),
        StoreCredentials::WorkloadIdentity => None,
    };
    (config_map, secret)
}

/// Who the pod's processes are. Not root by default: the agent holds the store's credentials
/// and marks itself non-dumpable, which keeps a step of the same uid out of its memory and
/// `/proc/<agent>/environ`, but not a step running as root.
fn security_context(uid: i64) -> Value {
    if uid == 0 {
        json!({"runAsUser": 0, "runAsGroup": 0})
    } else {
        json!({"runAsUser": uid, "runAsGroup": uid, "runAsNonRoot": true})
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use orchestrator_core::pipeline::Pipeline;
    use orchestrator_core::sdk::PluginConfig;

    pub(crate) fn plan() -> RunPlan {
        let pipeline = Pipeline::from_yaml_str(
            "name: hello\nsteps:\n  greet:\n    run: echo hi\n  train_model-2:\n    run: echo train\n    needs: [greet]\n    resources: {cpu: \"2\", memory: 1Gi, gpu: 1}\n",
            None,
        )
        .unwrap();
        RunPlan {
            schema_version: 1,
            run_id: "20261127-101010-000-abcdef".into(),
            pipeline,
            pipeline_file: "pipeline.yaml".into(),
            params: BTreeMap::new(),
            project_root: "/project".into(),
            working_dir: "".into(),
            stack: "k8s".into(),
            code: orchestrator_core::run::CodeInfo {
                digest: Some("d1g".into()),
                package_key: Some("packages/d1g.tar.zst".into()),
                step_files: Default::default(),
            },
            no_cache: false,
            created_at: chrono::Utc::now(),
            only_step: None,
            prior_attempts: Vec::new(),
            schedule: None,
            resumed_from: None,
            reuse: Default::default(),
        }
    }

    fn store() -> StoreConnection {
        StoreConnection {
            plugin: "s3".into(),
            settings: json!({"bucket": "b", "secret_access_key": "MARKER-SECRET"})
                .as_object()
                .unwrap()
                .clone(),
            project_root: None,
        }
    }

    #[test]
    fn pipeline_mode_sizes_its_pod_for_what_can_run_at_once_and_tells_the_agent() {
        let pod = |yaml: &str, settings: &Settings| {
            let mut plan = plan();
            plan.pipeline = Pipeline::from_yaml_str(yaml, None).unwrap();
            let job = serde_json::to_value(&run_objects(settings, &plan, "ml", &store()).jobs[0])
                .unwrap();
            let container = job["spec"]["template"]["spec"]["containers"][0].clone();
            let local = container["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == "FERRY_AGENT_LOCAL_SETTINGS")
                .map(|e| serde_json::from_str::<Value>(e["value"].as_str().unwrap()).unwrap())
                .unwrap();
            (container["resources"].clone(), local)
        };
        // A chain runs one step at a time: the largest step, as before.
        let chain = "name: hello\nsteps:\n  greet:\n    run: echo hi\n  train_model-2:\n    run: echo train\n    needs: [greet]\n    resources: {cpu: \"2\", memory: 1Gi, gpu: 1}\n";
        let (resources, local) = pod(chain, &Settings::default());
        assert_eq!(resources["requests"]["cpu"], "2000m");
        assert_eq!(resources["limits"]["memory"], "1024Mi");
        assert_eq!(resources["limits"]["nvidia.com/gpu"], "1");
        assert_eq!(
            local,
            json!({"parallelism": 1, "cpu_budget": "2000m", "memory_budget": "1024Mi"})
        );
        // Three independent steps and a join: three at once, the three largest added up.
        let fan = "name: f\nsteps:\n  a: {run: x, resources: {cpu: 500m, memory: 1Gi}}\n  b: {run: x, resources: {cpu: '1', memory: 2Gi}}\n  c: {run: x, resources: {memory: 512Mi}}\n  d: {run: x, needs: [a, b, c], resources: {cpu: '4', memory: 1Gi}}\n";
        let (resources, local) = pod(fan, &Settings::default());
        assert_eq!(resources["requests"]["cpu"], "5500m", "{resources}");
        // d is among the largest although it never runs beside a, b or c: an upper bound.
        assert_eq!(resources["requests"]["memory"], "4096Mi", "{resources}");
        assert_eq!(local["parallelism"], 3);
        // `parallelism` caps it; the stack's own request is the pod's size and budget.
        let settings = Settings {
            parallelism: 2,
            resources: Some(json!({"requests": {"memory": "3Gi"}})),
            ..Settings::default()
        };
        let (resources, local) = pod(fan, &settings);
        assert_eq!(resources["requests"]["cpu"], "5000m", "{resources}");
        assert_eq!(resources["requests"]["memory"], "3Gi", "{resources}");
        assert_eq!(
            local,
            json!({"parallelism": 2, "cpu_budget": "5000m", "memory_budget": "3Gi"})
        );
        assert_eq!(largest(["500m", "1", "0.75"].into_iter()), Some("1"));
        assert_eq!(largest(["512Mi", "1G", "1Gi"].into_iter()), Some("1Gi"));
    }

    #[test]
    fn the_width_of_a_dag_is_its_largest_set_of_independent_steps() {
        let width = |yaml: &str| dag_width(&Pipeline::from_yaml_str(yaml, None).unwrap());
        assert_eq!(
            width(
                "name: c\nsteps:\n  a: {run: x}\n  b: {run: x, needs: [a]}\n  c: {run: x, needs: [b]}\n"
            ),
            1
        );
        assert_eq!(
            width(
                "name: d\nsteps:\n  a: {run: x}\n  b: {run: x, needs: [a]}\n  c: {run: x, needs: [a]}\n  d: {run: x, needs: [b, c]}\n"
            ),
            2
        );
        // Two chains (a-b, c-d) that e joins: never more than two at once.
        assert_eq!(
            width(
                "name: z\nsteps:\n  a: {run: x}\n  b: {run: x, needs: [a]}\n  c: {run: x}\n  d: {run: x, needs: [c]}\n  e: {run: x, needs: [d, a]}\n"
            ),
            2
        );
        assert_eq!(
            width("name: w\nsteps:\n  a: {run: x}\n  b: {run: x}\n  c: {run: x}\n"),
            3
        );
    }

    #[test]
    fn secrets_only_ever_sit_in_the_secret() {
        let objects = run_objects(&Settings::default(), &plan(), "ml", &store());
        for job in &objects.jobs {
            let text = serde_json::to_string(job).unwrap();
            assert!(!text.contains("MARKER-SECRET"), "{text}");
        }
        assert!(
            !serde_json::to_string(&objects.config_map)
                .unwrap()
                .contains("MARKER-SECRET")
        );
        let secret = serde_json::to_string(objects.secret.as_ref().unwrap()).unwrap();
        assert!(secret.contains("MARKER-SECRET"));
        let env = serde_json::to_value(&objects.jobs[0]).unwrap()["spec"]["template"]["spec"]["containers"][0]["env"].clone();
        assert_eq!(env[1]["valueFrom"]["secretKeyRef"]["key"], STORE_KEY);
    }

    #[test]
    fn ferry_labels_win_over_extra_labels_and_names_fit() {
        let mut settings = Settings {
            store_credentials: StoreCredentials::WorkloadIdentity,
            ..Settings::default()
        };
        settings
            .extra_labels
            .insert(RUN_LABEL.into(), "spoofed".into());
        settings.extra_labels.insert("team".into(), "ml".into());
        let objects = run_objects(&settings, &plan(), "ml", &store());
        assert!(objects.secret.is_none());
        let job = &objects.jobs[0];
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[RUN_LABEL], "20261127-101010-000-abcdef");
        assert_eq!(labels["team"], "ml");
        names::check_dns_label(job.metadata.name.as_deref().unwrap()).unwrap();
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.suspend, Some(true));
        assert_eq!(
            spec.template
                .spec
                .as_ref()
                .unwrap()
                .restart_policy
                .as_deref(),
            Some("Never")
        );
    }

    #[test]
    fn steps_mode_has_a_modest_coordinator_and_a_job_per_step_with_its_image() {
        let settings = Settings::from_config(&PluginConfig::new(
            json!({"mode": "steps", "kubeconfig": "/home/ana/.kube/config", "context": "prod", "namespace": "ml"})
                .as_object()
                .unwrap()
                .clone(),
        ))
        .unwrap();
        let mut plan = plan();
        plan.pipeline.steps[1].image = Some("registry.example/trainer:3".into());
        let objects = run_objects(&settings, &plan, "ml", &store());
        assert_eq!(
            objects.jobs.len(),
            1,
            "only the coordinator is created up front"
        );
        let coordinator = serde_json::to_value(&objects.jobs[0]).unwrap();
        let container = &coordinator["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["resources"]["requests"]["cpu"], "100m");
        assert!(
            container["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == ORCHESTRATOR_ENV
                    && e["valueFrom"]["configMapKeyRef"]["key"] == ORCHESTRATOR_KEY)
        );
        assert!(coordinator["metadata"]["labels"][STEP_LABEL].is_null());

        // The coordinator finds its cluster in the pod, not through this machine's kubeconfig.
        let shipped: Value = serde_json::from_str(
            objects.config_map.data.as_ref().unwrap()[ORCHESTRATOR_KEY].as_str(),
        )
        .unwrap();
        assert_eq!(shipped["plugin"], "kubernetes");
        assert_eq!(shipped["settings"]["role"], "coordinator");
        assert_eq!(shipped["settings"]["namespace"], "ml");
        assert!(shipped["settings"].get("kubeconfig").is_none());
        assert!(shipped["settings"].get("context").is_none());

        assert_eq!(objects.step_jobs.len(), 2);
        let train = serde_json::to_value(&objects.step_jobs[1]).unwrap();
        assert_eq!(train["metadata"]["labels"][STEP_LABEL], "train_model-2");
        assert_eq!(
            train["metadata"]["annotations"][STEP_ANNOTATION],
            "train_model-2"
        );
        assert_eq!(train["spec"]["suspend"], false);
        let container = &train["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "registry.example/trainer:3");
        assert_eq!(container["resources"]["requests"]["cpu"], "2");
        assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], "1");
        assert_eq!(
            container["args"],
            json!(["agent", "run", "--step", "train_model-2"])
        );
        let greet = serde_json::to_value(&objects.step_jobs[0]).unwrap();
        assert_eq!(
            greet["spec"]["template"]["spec"]["containers"][0]["image"],
            settings.image
        );
        assert_eq!(
            step_selector(&plan.run_id, "train_model-2"),
            "ferry.dev/run-id=20261127-101010-000-abcdef,ferry.dev/step=train_model-2"
        );
        assert_eq!(
            run_job_selector(&plan.run_id),
            "ferry.dev/run-id=20261127-101010-000-abcdef,!ferry.dev/step"
        );
    }
}
