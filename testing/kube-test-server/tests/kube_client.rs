//! The `kube` crate's typed API against the test server: the client paths ferry's Kubernetes
//! backend uses (TLS, bearer token, create, list, watch, await_condition, log_stream, delete
//! with propagation) and the server's controllers and faults.

mod support;

use std::time::Duration;

use futures::{AsyncBufReadExt as _, StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube_test_server::{ApiFault, FaultConfig, OomKill, PodMatch};
use serde_json::json;
use support::{eventually, job, start};

const WAIT: Duration = Duration::from_secs(20);

fn api_error(error: kube::Error) -> Box<kube::core::Status> {
    match error {
        kube::Error::Api(status) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn finished(jobs: &Api<Job>, name: &str) -> Job {
    let is_finished = |job: Option<&Job>| {
        job.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
            })
    };
    tokio::time::timeout(WAIT, await_condition(jobs.clone(), name, is_finished))
        .await
        .expect("job finishes in time")
        .expect("watch works")
        .expect("job exists")
}

fn condition<'a>(
    job: &'a Job,
    kind: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
}

async fn pods_of(pods: &Api<Pod>, job: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .unwrap()
        .items
}

fn terminated(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStateTerminated> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .as_ref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_list_and_errors_as_status_objects() {
    let h = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(h.client.clone());
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "a", "labels": {"app": "x"}}, "data": {"k": "v"}}),
    )
    .unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
    assert_eq!(cms.get("a").await.unwrap().data.unwrap()["k"], "v");

    let exists = api_error(cms.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!(
        (exists.code, exists.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(exists.message, "configmaps \"a\" already exists");
    let missing = api_error(cms.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));

    let bad: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "Bad_Name"}})).unwrap();
    let invalid = api_error(cms.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
    assert!(
        invalid.message.starts_with(
            "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""
        ),
        "{}",
        invalid.message
    );

    let generated: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap();
    let generated = cms
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let name = generated.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    let selected = cms
        .list(&ListParams::default().labels("app=x"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);
    assert!(selected.metadata.resource_version.is_some());
    let none = cms
        .list(&ListParams::default().labels("app notin (x)"))
        .await
        .unwrap();
    assert_eq!(none.items.len(), 1, "only the generated one lacks app=x");
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=a"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let unsupported = api_error(
        cms.list(&ListParams::default().fields("data.k=v"))
            .await
            .unwrap_err(),
    );
    assert_eq!(unsupported.code, 400);

    let other_ns: Api<ConfigMap> = Api::namespaced(h.client.clone(), "missing");
    let error = api_error(
        other_ns
            .create(&PostParams::default(), &cm)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (error.code, error.message.as_str()),
        (404, "namespaces \"missing\" not found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_updates_conflict_and_patches_apply() {
    let h = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(h.client.clone());
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "a"}, "data": {"k": "1"}})).unwrap();
    let first = cms.create(&PostParams::default(), &cm).await.unwrap();
    let mut second = first.clone();
    second.data = Some([("k".to_string(), "2".to_string())].into());
    let second = cms
        .replace("a", &PostParams::default(), &second)
        .await
        .unwrap();
    assert_ne!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    let conflict = api_error(
        cms.replace("a", &PostParams::default(), &first)
            .await
            .unwrap_err(),
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));

    let merged = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"l": "1"}}, "data": {"k": null, "j": "3"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(merged.metadata.labels.unwrap()["l"], "1");
    assert_eq!(
        merged.data.unwrap(),
        [("j".to_string(), "3".to_string())].into()
    );
    let strategic = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"finalizers": ["x/y"]}})),
        )
        .await
        .unwrap();
    assert_eq!(strategic.metadata.finalizers.unwrap(), ["x/y"]);
    let json_patch: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/data/j", "value": "4"}]))
            .unwrap();
    let patched = cms
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(json_patch))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["j"], "4");

    // A finalizer holds the object after delete until it is removed.
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    let held = cms.get("a").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_error(cms.get("a").await.unwrap_err()).code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_its_pod_as_a_process_and_logs_follow() {
    let h = start().await;
    let jobs: Api<Job> = Api::default_namespaced(h.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(h.client.clone());
    let manifest: Job = serde_json::from_value(job(
        "hello",
        "for i in 1 2 3; do echo line $i; sleep 0.2; done; echo err >&2",
    ))
    .unwrap();
    let created = jobs
        .create(&PostParams::default(), &manifest)
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    assert_eq!(
        created
            .spec
            .as_ref()
            .unwrap()
            .selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["batch.kubernetes.io/controller-uid"],
        uid
    );

    let pod_name = eventually("the job's pod", WAIT, || {
        h.server
            .list(kube_test_server::Resource::Pod, "default")
            .first()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
    })
    .await;
    tokio::time::timeout(
        WAIT,
        await_condition(pods.clone(), &pod_name, conditions::is_pod_running()),
    )
    .await
    .unwrap()
    .unwrap();
    let logs = pods
        .log_stream(
            &pod_name,
            &LogParams {
                follow: true,
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    let lines: Vec<String> = logs.lines().try_collect().await.unwrap();
    assert_eq!(lines, ["line 1", "line 2", "line 3", "err"]);

    let done = finished(&jobs, "hello").await;
    assert!(
        condition(&done, "Complete").is_some() && condition(&done, "SuccessCriteriaMet").is_some()
    );
    let status = done.status.unwrap();
    assert_eq!((status.succeeded, status.active), (Some(1), Some(0)));
    assert!(status.completion_time.is_some());
    let pod = pods.get(&pod_name).await.unwrap();
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels["job-name"], "hello");
    assert_eq!(labels["batch.kubernetes.io/controller-uid"], uid);
    assert_eq!(pod.metadata.owner_references.as_ref().unwrap()[0].uid, uid);
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    assert_eq!(terminated(&pod).unwrap().exit_code, 0);

    let tail = pods
        .logs(
            &pod_name,
            &LogParams {
                tail_lines: Some(2),
                timestamps: true,
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    let tail: Vec<&str> = tail.lines().collect();
    assert_eq!(tail.len(), 2);
    assert!(
        tail[1].ends_with(" err") && tail[1].contains('T') && tail[1].contains('Z'),
        "{tail:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pods_are_replaced_up_to_the_backoff_limit() {
    let h = start().await;
    let jobs: Api<Job> = Api::default_namespaced(h.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(h.client.clone());
    let mut manifest = job("flaky", "echo trying; exit 3");
    manifest["spec"]["backoffLimit"] = json!(2);
    jobs.create(
        &PostParams::default(),
        &serde_json::from_value(manifest).unwrap(),
    )
    .await
    .unwrap();
    let done = finished(&jobs, "flaky").await;
    let failed = condition(&done, "Failed").expect("job failed");
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert!(condition(&done, "FailureTarget").is_some());
    assert_eq!(done.status.as_ref().unwrap().failed, Some(3));
    let all = pods_of(&pods, "flaky").await;
    assert_eq!(all.len(), 3);
    for pod in &all {
        let t = terminated(pod).unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_stream_changes_resume_from_a_version_and_follow_selectors() {
    let h = support::start_with(|mut c| {
        c.bookmark_interval = Duration::from_millis(200);
        c
    })
    .await;
    let cms: Api<ConfigMap> = Api::default_namespaced(h.client.clone());
    let start_rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    let stream = watcher(cms.clone(), watcher::Config::default().labels("app=w")).applied_objects();
    let collector = tokio::spawn(async move {
        stream
            .take(2)
            .map(|o| o.unwrap().metadata.labels.unwrap()["step"].clone())
            .collect::<Vec<_>>()
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cm = |step: &str| -> ConfigMap {
        serde_json::from_value(
            json!({"metadata": {"name": "w", "labels": {"app": "w", "step": step}}}),
        )
        .unwrap()
    };
    cms.create(&PostParams::default(), &cm("1")).await.unwrap();
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"step": "2"}}})),
    )
    .await
    .unwrap();
    let seen = tokio::time::timeout(WAIT, collector)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, ["1", "2"]);

    // Leaving the selector is a DELETED event for the selector's watchers.
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    let events: Vec<WatchEvent<ConfigMap>> = cms
        .watch(
            &WatchParams::default().labels("app=w").timeout(1),
            &start_rv,
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let bookmarks = events
        .iter()
        .filter(|e| matches!(e, WatchEvent::Bookmark(_)))
        .count();
    assert!(
        bookmarks >= 2,
        "a 1 s watch with 200 ms bookmarks got {bookmarks}"
    );
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| !matches!(e, WatchEvent::Bookmark(_)))
        .map(|e| match e {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
            WatchEvent::Bookmark(_) => "BOOKMARK",
            WatchEvent::Error(_) => "ERROR",
        })
        .collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);

    // Streaming lists (sendInitialEvents) end their initial state with the bookmark kube waits for.
    let initial = watcher(cms.clone(), watcher::Config::default().streaming_lists());
    let first = tokio::time::timeout(
        WAIT,
        initial
            .take_while(|e| futures::future::ready(!matches!(e, Ok(watcher::Event::InitDone))))
            .collect::<Vec<_>>(),
    )
    .await
    .expect("the initial-events-end bookmark arrives");
    assert!(first.iter().any(
        |e| matches!(e, Ok(watcher::Event::InitApply(o)) if o.metadata.name.as_deref() == Some("w"))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_propagation_background_orphan_and_foreground() {
    let h = start().await;
    let jobs: Api<Job> = Api::default_namespaced(h.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(h.client.clone());
    for name in ["bg", "orphan", "fg"] {
        jobs.create(
            &PostParams::default(),
            &serde_json::from_value(job(name, "sleep 30")).unwrap(),
        )
        .await
        .unwrap();
    }
    for name in ["bg", "orphan", "fg"] {
        eventually("pods running", WAIT, || {
            let all = h.server.list(kube_test_server::Resource::Pod, "default");
            all.iter()
                .any(|p| {
                    p["metadata"]["labels"]["job-name"] == name && p["status"]["phase"] == "Running"
                })
                .then_some(())
        })
        .await;
    }

    let bg = jobs.get("bg").await.unwrap();
    jobs.delete("bg", &DeleteParams::background())
        .await
        .unwrap();
    tokio::time::timeout(
        WAIT,
        await_condition(
            jobs.clone(),
            "bg",
            conditions::is_deleted(bg.metadata.uid.as_deref().unwrap()),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    eventually("bg's pods gone", WAIT, || {
        h.server
            .list(kube_test_server::Resource::Pod, "default")
            .iter()
            .all(|p| p["metadata"]["labels"]["job-name"] != "bg")
            .then_some(())
    })
    .await;

    // batch/v1 Jobs orphan their pods when no policy is given.
    jobs.delete("orphan", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let orphans = pods_of(&pods, "orphan").await;
    assert_eq!(orphans.len(), 1);
    assert!(
        orphans[0]
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(|r| r.is_empty())
    );

    let fg = jobs
        .delete("fg", &DeleteParams::foreground())
        .await
        .unwrap();
    let pending = fg
        .left()
        .expect("foreground delete returns the object being deleted");
    assert!(
        pending
            .metadata
            .finalizers
            .unwrap()
            .contains(&"foregroundDeletion".to_string())
    );
    tokio::time::timeout(
        WAIT,
        await_condition(
            jobs.clone(),
            "fg",
            conditions::is_deleted(pending.metadata.uid.as_deref().unwrap()),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        pods_of(&pods, "fg").await.is_empty(),
        "foreground: the pods went before the job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_ttl_and_graceful_pod_deletion() {
    let h = start().await;
    let jobs: Api<Job> = Api::default_namespaced(h.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(h.client.clone());

    let mut slow = job("slow", "sleep 30");
    slow["spec"]["activeDeadlineSeconds"] = json!(1);
    jobs.create(
        &PostParams::default(),
        &serde_json::from_value(slow).unwrap(),
    )
    .await
    .unwrap();
    let done = finished(&jobs, "slow").await;
    assert_eq!(
        condition(&done, "Failed").unwrap().reason.as_deref(),
        Some("DeadlineExceeded")
    );

    let mut short = job("short", "true");
    short["spec"]["ttlSecondsAfterFinished"] = json!(0);
    let short = jobs
        .create(
            &PostParams::default(),
            &serde_json::from_value(short).unwrap(),
        )
        .await
        .unwrap();
    tokio::time::timeout(
        WAIT,
        await_condition(
            jobs.clone(),
            "short",
            conditions::is_deleted(short.metadata.uid.as_deref().unwrap()),
        ),
    )
    .await
    .unwrap()
    .unwrap();

    // A deleted pod's process gets SIGTERM first, and its pod goes when it has exited.
    let marker = tempfile::NamedTempFile::new().unwrap();
    let script = format!(
        "trap 'echo terminated > {0}; exit 0' TERM; echo ready > {0}; while true; do sleep 0.05; done",
        marker.path().display()
    );
    jobs.create(
        &PostParams::default(),
        &serde_json::from_value(job("graceful", &script)).unwrap(),
    )
    .await
    .unwrap();
    let pod = eventually("running pod", WAIT, || {
        h.server
            .list(kube_test_server::Resource::Pod, "default")
            .into_iter()
            .find(|p| {
                p["metadata"]["labels"]["job-name"] == "graceful"
                    && p["status"]["phase"] == "Running"
            })
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
    })
    .await;
    // Only once the shell has its trap: a SIGTERM before that would just kill it.
    eventually("the trap to be set", WAIT, || {
        (std::fs::read_to_string(marker.path())
            .unwrap_or_default()
            .trim()
            == "ready")
            .then_some(())
    })
    .await;
    let uid = pods.get(&pod).await.unwrap().metadata.uid.unwrap();
    pods.delete(&pod, &DeleteParams::default()).await.unwrap();
    tokio::time::timeout(
        WAIT,
        await_condition(pods.clone(), &pod, conditions::is_deleted(&uid)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(marker.path()).unwrap().trim(),
        "terminated"
    );
    // The pod ended with exit 0 and was then removed: counted as a success, not replaced.
    let creates = h
        .server
        .list(kube_test_server::Resource::Event, "default")
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "graceful" && e["reason"] == "SuccessfulCreate")
        .count();
    assert_eq!(creates, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_from_configmaps_and_secrets_volumes_and_working_dir() {
    let h = start().await;
    let jobs: Api<Job> = Api::default_namespaced(h.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(h.client.clone());
    let cms: Api<ConfigMap> = Api::default_namespaced(h.client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(h.client.clone());
    cms.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "plan"}, "data": {"plan.json": "{\"steps\":1}", "MODE": "steps"}})).unwrap())
        .await
        .unwrap();

    let mut manifest = job(
        "env",
        "echo \"$MODE $TOKEN $CFG_MODE $POD $GREETING\"; cat etc/ferry/plan.json; echo; cat etc/creds/token; echo; pwd",
    );
    let spec = &mut manifest["spec"]["template"]["spec"];
    spec["containers"][0]["workingDir"] = json!("/");
    spec["containers"][0]["env"] = json!([
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "plan", "key": "MODE"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "GREETING", "value": "hi-$(MODE)"},
    ]);
    spec["containers"][0]["envFrom"] =
        json!([{"configMapRef": {"name": "plan"}, "prefix": "CFG_"}]);
    spec["containers"][0]["volumeMounts"] = json!([
        {"name": "plan", "mountPath": "/etc/ferry"},
        {"name": "creds", "mountPath": "/etc/creds", "readOnly": true},
    ]);
    spec["volumes"] = json!([
        {"name": "plan", "configMap": {"name": "plan"}},
        {"name": "creds", "secret": {"secretName": "creds"}},
    ]);
    jobs.create(
        &PostParams::default(),
        &serde_json::from_value(manifest).unwrap(),
    )
    .await
    .unwrap();

    // The secret is missing: the container waits with CreateContainerConfigError, as on a node.
    let waiting = eventually("CreateContainerConfigError", WAIT, || {
        h.server
            .list(kube_test_server::Resource::Pod, "default")
            .into_iter()
            .find_map(|p| {
                let waiting = &p["status"]["containerStatuses"][0]["state"]["waiting"];
                (waiting["reason"] == "CreateContainerConfigError")
                    .then(|| waiting["message"].as_str().unwrap().to_string())
            })
    })
    .await;
    assert_eq!(waiting, "secret \"creds\" not found");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let done = finished(&jobs, "env").await;
    assert!(condition(&done, "Complete").is_some());
    let pod = &pods_of(&pods, "env").await[0];
    let log = pods
        .logs(pod.metadata.name.as_deref().unwrap(), &LogParams::default())
        .await
        .unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "steps s3cr3t steps default hi-steps");
    assert_eq!(lines[1], "{\"steps\":1}");
    assert_eq!(lines[2], "s3cr3t");
    assert!(
        lines[3].ends_with("/root"),
        "working dir is the pod root: {}",
        lines[3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_failures_unschedulable_pods_and_oom_kills() {
    let h = start().await;
    h.server.set_faults(FaultConfig {
        image_pull_failures: vec!["registry.invalid/*".into()],
        unschedulable: vec![PodMatch {
            label_selector: "pending=yes".into(),
            ..PodMatch::default()
        }],
        oom_kills: vec![OomKill {
            pods: PodMatch {
                label_selector: "oom=yes".into(),
                ..PodMatch::default()
            },
            after_ms: 100,
            exit_code: 137,
        }],
        api: vec![],
    });
    let jobs: Api<Job> = Api::default_namespaced(h.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(h.client.clone());

    let mut pull = job("pull", "true");
    pull["spec"]["template"]["spec"]["containers"][0]["image"] = json!("registry.invalid/nope:1");
    let mut pending = job("pending", "true");
    pending["spec"]["template"]["metadata"] = json!({"labels": {"pending": "yes"}});
    let mut oom = job("oom", "sleep 10");
    oom["spec"]["template"]["metadata"] = json!({"labels": {"oom": "yes"}});
    let mut selector = job("selector", "true");
    selector["spec"]["template"]["spec"]["nodeSelector"] = json!({"gpu": "a100"});
    for manifest in [pull, pending, oom, selector] {
        jobs.create(
            &PostParams::default(),
            &serde_json::from_value(manifest).unwrap(),
        )
        .await
        .unwrap();
    }

    let reasons = eventually("both image pull reasons", WAIT, || {
        let pod = h
            .server
            .list(kube_test_server::Resource::Pod, "default")
            .into_iter()
            .find(|p| p["metadata"]["labels"]["job-name"] == "pull")?;
        let reason = pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            .as_str()?
            .to_string();
        (reason == "ImagePullBackOff").then_some(reason)
    })
    .await;
    assert_eq!(reasons, "ImagePullBackOff");
    let events = h.server.list(kube_test_server::Resource::Event, "default");
    assert!(events.iter().any(
        |e| e["reason"] == "Failed" && e["message"].as_str().unwrap().contains("ErrImagePull")
    ));

    for name in ["pending", "selector"] {
        let message = eventually("unschedulable", WAIT, || {
            let pod = h
                .server
                .list(kube_test_server::Resource::Pod, "default")
                .into_iter()
                .find(|p| p["metadata"]["labels"]["job-name"] == name)?;
            let scheduled = pod["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "PodScheduled")?
                .clone();
            (scheduled["reason"] == "Unschedulable")
                .then(|| scheduled["message"].as_str().unwrap().to_string())
        })
        .await;
        assert!(message.starts_with("0/1 nodes are available"), "{message}");
    }

    let done = finished(&jobs, "oom").await;
    assert!(condition(&done, "Failed").is_some());
    let t = terminated(&pods_of(&pods, "oom").await[0]).unwrap().clone();
    assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("OOMKilled")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_faults_lost_replies_and_evictions() {
    let h = start().await;
    let jobs: Api<Job> = Api::default_namespaced(h.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(h.client.clone());

    // The create happens, the reply is lost: the retry meets the client's own object.
    h.server.update_faults(|f| {
        f.api.push(ApiFault {
            method: Some("POST".into()),
            path_contains: Some("/jobs".into()),
            count: 1,
            delay_ms: 0,
            status: Some(500),
            after_apply: true,
        })
    });
    let manifest: Job = serde_json::from_value(job("lost", "sleep 30")).unwrap();
    let lost = api_error(
        jobs.create(&PostParams::default(), &manifest)
            .await
            .unwrap_err(),
    );
    assert_eq!(lost.code, 500);
    let retry = api_error(
        jobs.create(&PostParams::default(), &manifest)
            .await
            .unwrap_err(),
    );
    assert_eq!(retry.reason, "AlreadyExists");
    let posts = h
        .server
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/jobs"))
        .count();
    assert_eq!(posts, 2);
    assert_eq!(
        jobs.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );

    // An error before the request is carried out changes nothing.
    h.server.update_faults(|f| {
        f.api.push(ApiFault {
            method: Some("DELETE".into()),
            path_contains: None,
            count: 1,
            delay_ms: 50,
            status: Some(500),
            after_apply: false,
        })
    });
    assert_eq!(
        api_error(
            jobs.delete("lost", &DeleteParams::background())
                .await
                .unwrap_err()
        )
        .code,
        500
    );
    assert!(jobs.get("lost").await.is_ok());

    // The node goes away under a running pod.
    let name = eventually("running pod", WAIT, || {
        h.server
            .list(kube_test_server::Resource::Pod, "default")
            .into_iter()
            .find(|p| p["status"]["phase"] == "Running")
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
    })
    .await;
    let evicted = h
        .server
        .evict(
            &PodMatch {
                name_prefix: Some("lost-".into()),
                ..PodMatch::default()
            },
            "The node was low on resource: memory.",
        )
        .await;
    assert_eq!(evicted, std::slice::from_ref(&name));
    let done = finished(&jobs, "lost").await;
    assert_eq!(
        condition(&done, "Failed").unwrap().reason.as_deref(),
        Some("BackoffLimitExceeded")
    );
    let pod = pods.get(&name).await.unwrap();
    let status = pod.status.unwrap();
    assert_eq!(
        (status.phase.as_deref(), status.reason.as_deref()),
        (Some("Failed"), Some("Evicted"))
    );
    assert!(
        status
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_dropped_watches_end() {
    let h = start().await;
    let text = std::fs::read_to_string(h.server.kubeconfig()).unwrap();
    let wrong = text.replace(h.server.token().unwrap(), "not-the-token");
    let path = h.server.kubeconfig().with_file_name("wrong-kubeconfig");
    std::fs::write(&path, wrong).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    assert_eq!(
        api_error(cms.list(&ListParams::default()).await.unwrap_err()).code,
        401
    );

    let cms: Api<ConfigMap> = Api::default_namespaced(h.client.clone());
    let stream = cms.watch(&WatchParams::default(), "0").await.unwrap();
    let drain = tokio::spawn(async move { stream.collect::<Vec<_>>().await.len() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.server.drop_watches();
    tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .expect("the watch ends when dropped")
        .unwrap();
}
