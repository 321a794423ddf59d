//! Creating a run's objects: idempotent and retried, so that a lost reply or a flaky API
//! server never leaves two Jobs for one run, nor a Job without its plan.
//!
//! Order: the Jobs are created suspended; the ConfigMap and Secret are created owned by the
//! first Job (they go when it goes, so nothing is left behind); then the Jobs are resumed. A
//! failure before the resume deletes what was created.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::NamespaceResourceScope;
use orchestrator_core::{ErrorKind, PluginError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::Connection;
use crate::manifest::{RUN_LABEL, RunObjects};

/// Attempts of one API call that fails transiently (5xx, 429, connection errors).
const ATTEMPTS: u32 = 6;

/// Whether an error is worth retrying: the server or the network failed, not the request.
pub fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// An API error as a plugin error, with what to do where ferry knows.
pub fn api_error(what: &str, error: kube::Error) -> PluginError {
    match &error {
        kube::Error::Api(status) => {
            let hint = match status.code {
                401 => "; the kubeconfig's credentials were refused",
                403 => {
                    "; the kubeconfig's user lacks permission (it needs to create, watch and delete Jobs, Pods, ConfigMaps and Secrets in the namespace)"
                }
                404 if status.message.contains("namespaces") => {
                    "; create the namespace or set `namespace` in the stack"
                }
                _ => "",
            };
            let kind = match status.code {
                401 => ErrorKind::UNAUTHENTICATED,
                403 => ErrorKind::PERMISSION_DENIED,
                404 => ErrorKind::NOT_FOUND,
                409 => ErrorKind::ALREADY_EXISTS,
                400 | 422 => ErrorKind::INVALID_INPUT,
                _ => ErrorKind::UNAVAILABLE,
            };
            PluginError::new(
                kind,
                format!(
                    "kubernetes: {what}: {} ({}){hint}",
                    status.message, status.code
                ),
            )
        }
        _ => PluginError::new(
            ErrorKind::UNAVAILABLE,
            format!("kubernetes: {what}: {error}"),
        ),
    }
}

/// Runs `call` until it succeeds or fails for a reason other than a transient one.
pub async fn retry<T, F, Fut>(what: &str, mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        match call().await {
            Err(error) if attempt < ATTEMPTS && is_transient(&error) => {
                tracing::debug!(what, attempt, %error, "transient API error; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(3));
            }
            other => return other,
        }
    }
    unreachable!("the last attempt returns")
}

/// Creates `object` unless the run already created it: a 409 for an object carrying this
/// run's label is the reply to an earlier attempt that got lost.
pub async fn create_idempotent<K>(api: &Api<K>, object: &K, run_id: &str) -> Result<K, PluginError>
where
    K: kube::Resource<Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let what = format!("creating {kind} {name}");
    let params = PostParams::default();
    match retry(&what, || api.create(&params, object)).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = retry(&what, || api.get(&name))
                .await
                .map_err(|e| api_error(&what, e))?;
            let owner = existing
                .meta()
                .labels
                .as_ref()
                .and_then(|l| l.get(RUN_LABEL))
                .cloned();
            if owner.as_deref() == Some(crate::names::label_value(run_id).as_str()) {
                Ok(existing)
            } else {
                Err(PluginError::new(
                    ErrorKind::ALREADY_EXISTS,
                    format!(
                        "kubernetes: {kind} {name} already exists and belongs to {}; delete it or change `job_prefix`",
                        owner
                            .map(|r| format!("run {r}"))
                            .unwrap_or_else(|| "something other than ferry".into())
                    ),
                ))
            }
        }
        Err(error) => Err(api_error(&what, error)),
    }
}

/// Makes an object go when `job` goes (garbage collection by owner).
pub fn owner_reference(job: &k8s_openapi::api::batch::v1::Job) -> OwnerReference {
    OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job.metadata.name.clone().unwrap_or_default(),
        uid: job.metadata.uid.clone().unwrap_or_default(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    }
}

/// Creates every object of the run and starts its Jobs.
pub async fn launch(
    connection: &Connection,
    objects: &RunObjects,
    run_id: &str,
) -> Result<(), PluginError> {
    let ns = &objects.namespace;
    let jobs: Api<k8s_openapi::api::batch::v1::Job> =
        Api::namespaced(connection.client.clone(), ns);
    let mut created = Vec::new();
    let result = async {
        for job in &objects.jobs {
            created.push(create_idempotent(&jobs, job, run_id).await?);
        }
        let owner = owner_reference(&created[0]);
        let mut config_map = objects.config_map.clone();
        config_map.metadata.owner_references = Some(vec![owner.clone()]);
        create_idempotent(
            &Api::namespaced(connection.client.clone(), ns),
            &config_map,
            run_id,
        )
        .await?;
        if let Some(secret) = &objects.secret {
            let mut secret = secret.clone();
            secret.metadata.owner_references = Some(vec![owner]);
            create_idempotent(
                &Api::namespaced(connection.client.clone(), ns),
                &secret,
                run_id,
            )
            .await?;
        }
        for job in &created {
            let name = job.metadata.name.clone().unwrap_or_default();
            let what = format!("starting Job {name}");
            let resume = Patch::Merge(serde_json::json!({"spec": {"suspend": false}}));
            let params = PatchParams::default();
            retry(&what, || jobs.patch(&name, &params, &resume))
                .await
                .map_err(|e| api_error(&what, e))?;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        // Nothing half-made stays behind: the Jobs take their ConfigMap and Secret with them.
        let names: Vec<String> = created
            .iter()
            .filter_map(|j| j.metadata.name.clone())
            .collect();
        delete_jobs(&jobs, names.iter()).await;
    }
    result
}

/// Deletes Jobs with their pods (background propagation), retrying transient errors; a Job
/// already gone is fine.
pub async fn delete_jobs<'a>(
    jobs: &Api<k8s_openapi::api::batch::v1::Job>,
    names: impl Iterator<Item = &'a String>,
) {
    let params = DeleteParams::background();
    for name in names {
        let what = format!("deleting Job {name}");
        match retry(&what, || jobs.delete(name, &params)).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => tracing::warn!(%error, "{what}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{self, json_response, next, status};
    use crate::settings::Settings;
    use serde_json::json;

    const RUN: &str = "20261127-101010-000-abcdef";

    fn objects() -> RunObjects {
        let plan = crate::manifest::tests::plan();
        let store = orchestrator_core::sdk::StoreConnection {
            plugin: "local".into(),
            ..Default::default()
        };
        crate::manifest::run_objects(&Settings::default(), &plan, "default", &store)
    }

    fn with_uid(mut object: serde_json::Value) -> serde_json::Value {
        object["metadata"]["uid"] = json!("job-uid");
        object
    }

    #[tokio::test]
    async fn a_create_whose_reply_was_lost_meets_its_own_object() {
        let (client, mut handle) = mock::client();
        let job = objects().jobs.remove(0);
        let server = tokio::spawn(async move {
            let (seen, send) = next(&mut handle).await;
            assert_eq!(
                (seen.method.as_str(), seen.uri.as_str()),
                ("POST", "/apis/batch/v1/namespaces/default/jobs?")
            );
            // The Job was created, then the reply was lost.
            send.send_response(json_response(
                500,
                &status(500, "InternalError", "etcd timeout"),
            ));
            let (seen, send) = next(&mut handle).await;
            assert_eq!(seen.method, "POST");
            let name = seen.body["metadata"]["name"].as_str().unwrap().to_string();
            send.send_response(json_response(
                409,
                &status(409, "AlreadyExists", "jobs.batch exists"),
            ));
            let (seen, send) = next(&mut handle).await;
            assert_eq!(seen.method, "GET");
            assert!(seen.uri.ends_with(&format!("/jobs/{name}")), "{}", seen.uri);
            let mut existing = serde_json::to_value(job_clone()).unwrap();
            existing["metadata"]["uid"] = json!("the-first-one");
            send.send_response(json_response(200, &existing));
        });
        let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client, "default");
        let created = create_idempotent(&jobs, &job, RUN).await.unwrap();
        assert_eq!(
            created.metadata.uid.as_deref(),
            Some("the-first-one"),
            "no second Job"
        );
        server.await.unwrap();
    }

    fn job_clone() -> k8s_openapi::api::batch::v1::Job {
        objects().jobs.remove(0)
    }

    #[tokio::test]
    async fn a_name_taken_by_another_run_is_refused_with_what_to_do() {
        let (client, mut handle) = mock::client();
        let server = tokio::spawn(async move {
            let (_, send) = next(&mut handle).await;
            send.send_response(json_response(409, &status(409, "AlreadyExists", "exists")));
            let (_, send) = next(&mut handle).await;
            let mut other = serde_json::to_value(job_clone()).unwrap();
            other["metadata"]["labels"][RUN_LABEL] = json!("20261127-000000-000-ffffff");
            send.send_response(json_response(200, &other));
        });
        let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client, "default");
        let error = create_idempotent(&jobs, &job_clone(), RUN)
            .await
            .unwrap_err();
        assert!(
            error
                .message()
                .contains("belongs to run 20261127-000000-000-ffffff"),
            "{error}"
        );
        assert!(error.message().contains("job_prefix"), "{error}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn launch_creates_suspended_then_owned_config_then_resumes() {
        let (connection, mut handle) = mock::connection();
        let server = tokio::spawn(async move {
            let (seen, send) = next(&mut handle).await;
            assert!(seen.uri.contains("/jobs"));
            assert_eq!(seen.body["spec"]["suspend"], true, "created suspended");
            send.send_response(json_response(201, &with_uid(seen.body.clone())));
            let (seen, send) = next(&mut handle).await;
            assert!(seen.uri.contains("/configmaps"), "{}", seen.uri);
            assert_eq!(
                seen.body["metadata"]["ownerReferences"][0]["uid"],
                "job-uid"
            );
            send.send_response(json_response(201, &seen.body));
            let (seen, send) = next(&mut handle).await;
            assert!(seen.uri.contains("/secrets"), "{}", seen.uri);
            assert_eq!(seen.body["metadata"]["ownerReferences"][0]["kind"], "Job");
            send.send_response(json_response(201, &seen.body));
            let (seen, send) = next(&mut handle).await;
            assert_eq!(seen.method, "PATCH");
            assert_eq!(seen.body, json!({"spec": {"suspend": false}}));
            send.send_response(json_response(
                200,
                &with_uid(serde_json::to_value(job_clone()).unwrap()),
            ));
        });
        launch(&connection, &objects(), RUN).await.unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_launch_deletes_what_it_created() {
        let (connection, mut handle) = mock::connection();
        let server = tokio::spawn(async move {
            let (seen, send) = next(&mut handle).await;
            send.send_response(json_response(201, &with_uid(seen.body.clone())));
            let (_, send) = next(&mut handle).await;
            send.send_response(json_response(
                403,
                &status(
                    403,
                    "Forbidden",
                    "configmaps is forbidden: User cannot create",
                ),
            ));
            let (seen, send) = next(&mut handle).await;
            assert_eq!(seen.method, "DELETE");
            assert!(seen.uri.contains("/jobs/"), "{}", seen.uri);
            assert_eq!(
                seen.body["propagationPolicy"], "Background",
                "the pods go too"
            );
            send.send_response(json_response(200, &status(200, "", "")));
        });
        let error = launch(&connection, &objects(), RUN).await.unwrap_err();
        assert!(error.message().contains("lacks permission"), "{error}");
        server.await.unwrap();
    }
}
