//! Schedules as CronJobs (`ferry schedule`).
//!
//! A schedule is a CronJob whose Jobs are *launches*: each runs `ferry agent run` with the
//! schedule's template plan (pipeline, parameters and code package fixed at creation) and this
//! plugin as its orchestrator, in the submitter's role. The agent mints the run's id, and the
//! launch then does what `ferry run` does from a laptop: it writes the record (with its
//! placement), creates the run's objects and follows the run to its end. So a scheduled run is
//! an ordinary run (listed, followed, cancelled, judged like any other), and the CronJob's
//! concurrency policy counts a launch as active for as long as its run goes on; a launch that
//! is deleted (`replace`, `ferry schedule delete`) cancels its run.
//!
//! The CronJob is created suspended, its ConfigMap and Secret (the plan, the store settings)
//! owned by it, and only then resumed, as a run's Job is: it never fires without its plan, and
//! deleting it takes them along.

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, EnvVar, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use orchestrator_core::run::RunPlan;
use orchestrator_core::schedule::{self, Concurrency, ScheduleInfo, ScheduleSpec};
use orchestrator_core::sdk::StoreConnection;
use orchestrator_core::{ErrorKind, PluginError};
use serde_json::json;

use crate::client::Connection;
use crate::launch::{api_error, retry};
use crate::manifest::{
    self, CODE_ANNOTATION, JobKind, MANAGED_BY, PARAMS_ANNOTATION, PIPELINE_ANNOTATION,
    SCHEDULE_LABEL,
};
use crate::names;
use crate::settings::Settings;

/// How many firings `ferry schedule show` lists ahead.
const NEXT_FIRINGS: usize = 3;

/// Everything `ferry schedule create` creates, in creation order.
#[derive(Clone, Debug)]
pub struct ScheduleObjects {
    pub cron_job: CronJob,
    pub config_map: ConfigMap,
    pub secret: Option<Secret>,
}

impl ScheduleObjects {
    /// Every object as one YAML stream, the Secret's value masked (`ferry render`).
    pub fn to_masked_yaml(&self) -> String {
        let secret = self.secret.clone().map(|mut secret| {
            manifest::mask(&mut secret);
            secret
        });
        let docs = std::iter::once(serde_json::to_value(&self.config_map))
            .chain(secret.iter().map(serde_json::to_value))
            .chain(std::iter::once(serde_json::to_value(&self.cron_job)));
        manifest::yaml_stream(docs.map(|d| d.expect("objects serialise")))
    }
}

/// Checks a spec before anything is created: the name, the cron expression in the dialect
/// CronJobs use (five fields or a macro such as `@daily`, no seconds, no `TZ=` prefix), the
/// time zone's shape. The API server checks again (the time zone against its database).
pub fn check_spec(spec: &ScheduleSpec) -> Result<croner::Cron, PluginError> {
    schedule::check_name(&spec.name).map_err(PluginError::invalid_input)?;
    let cron = spec.cron.trim();
    let refuse = |why: String| {
        PluginError::invalid_input(format!(
            "`{}` is not a cron expression a CronJob accepts: {why}; write five fields, minute hour day-of-month month day-of-week (`30 2 * * *` is 02:30 every day), or @hourly, @daily, @weekly, @monthly, @yearly",
            spec.cron
        ))
    };
    if cron.contains("TZ=") {
        return Err(refuse(
            "a time zone goes in --timezone, not in the expression".into(),
        ));
    }
    if cron.starts_with("@every") {
        return Err(refuse("`@every` is not supported".into()));
    }
    if !cron.starts_with('@') && cron.split_whitespace().count() != 5 {
        return Err(refuse(format!(
            "it has {} fields, not 5",
            cron.split_whitespace().count()
        )));
    }
    let parsed = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(cron)
        .map_err(|e| refuse(e.to_string()))?;
    if let Some(tz) = &spec.timezone
        && (tz.is_empty() || tz.contains(char::is_whitespace) || tz.starts_with('/'))
    {
        return Err(PluginError::invalid_input(format!(
            "`{tz}` is not a time zone; give an IANA name such as `Europe/Paris` or `UTC`"
        )));
    }
    Ok(parsed)
}

/// The next firings of a spec, when they can be told here: in UTC only (other zones are the
/// cluster's to compute).
pub fn next_firings(spec: &ScheduleSpec, after: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let utc = spec
        .timezone
        .as_deref()
        .is_none_or(|tz| matches!(tz, "UTC" | "Etc/UTC"));
    match check_spec(spec) {
        Ok(cron) if utc => cron.iter_after(after).take(NEXT_FIRINGS).collect(),
        _ => Vec::new(),
    }
}

/// ferry's concurrency choices and the CronJob `concurrencyPolicy` each one is.
const CONCURRENCY_POLICIES: [(Concurrency, &str); 3] = [
    (Concurrency::Allow, "Allow"),
    (Concurrency::Forbid, "Forbid"),
    (Concurrency::Replace, "Replace"),
];

fn concurrency_policy(concurrency: Concurrency) -> &'static str {
    CONCURRENCY_POLICIES
        .iter()
        .find(|(c, _)| *c == concurrency)
        .map_or("Forbid", |(_, policy)| policy)
}

/// The schedule's objects; `plan` is its template (no run id, `schedule` set).
pub fn objects(
    settings: &Settings,
    spec: &ScheduleSpec,
    plan: &RunPlan,
    namespace: &str,
    store: &StoreConnection,
) -> ScheduleObjects {
    let name = names::schedule_name(&settings.job_prefix, &spec.name);
    let labels = manifest::labels(settings, plan, None);
    let mut annotations = manifest::annotations(settings, plan, None);
    annotations.insert(
        PARAMS_ANNOTATION.into(),
        serde_json::to_string(&plan.params).expect("parameters serialise"),
    );
    let (config_map, secret) = manifest::config_objects(
        settings,
        plan,
        json!({ "name": name, "namespace": namespace, "labels": labels, "annotations": annotations }),
        store,
        Some(manifest::launcher_settings(settings, namespace)),
    );
    let launch = manifest::job(settings, plan, namespace, JobKind::Launcher, &name);
    let mut spec_json = json!({
        "schedule": spec.cron.trim(),
        "concurrencyPolicy": concurrency_policy(spec.concurrency),
        "successfulJobsHistoryLimit": spec.successful_history,
        "failedJobsHistoryLimit": spec.failed_history,
        // Resumed once the ConfigMap and Secret exist (see the module doc).
        "suspend": true,
        "jobTemplate": {
            "metadata": { "labels": labels, "annotations": launch.metadata.annotations },
            "spec": launch.spec,
        },
    });
    if let Some(tz) = &spec.timezone {
        spec_json["timeZone"] = json!(tz);
    }
    if let Some(deadline) = spec.starting_deadline_seconds {
        spec_json["startingDeadlineSeconds"] = json!(deadline);
    }
    let cron_job = serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": { "name": name, "namespace": namespace, "labels": labels, "annotations": annotations },
        "spec": spec_json,
    }))
    .expect("the CronJob literal has the CronJob shape");
    ScheduleObjects {
        cron_job,
        config_map,
        secret,
    }
}

/// What a CronJob ferry made says about its schedule.
pub fn info(cron_job: &CronJob, namespace: &str) -> ScheduleInfo {
    let meta = &cron_job.metadata;
    let label = |key: &str| meta.labels.as_ref().and_then(|l| l.get(key)).cloned();
    let annotation = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key)).cloned();
    let cron_spec = cron_job.spec.clone();
    let status = cron_job.status.clone().unwrap_or_default();
    let defaults = ScheduleSpec::new("", "");
    let spec = ScheduleSpec {
        name: label(SCHEDULE_LABEL).unwrap_or_default(),
        cron: cron_spec.schedule.clone(),
        timezone: cron_spec.time_zone.clone(),
        concurrency: CONCURRENCY_POLICIES
            .iter()
            .find(|(_, policy)| cron_spec.concurrency_policy.as_deref() == Some(*policy))
            .map_or(defaults.concurrency, |(c, _)| *c),
        starting_deadline_seconds: cron_spec
            .starting_deadline_seconds
            .and_then(|s| u64::try_from(s).ok()),
        successful_history: cron_spec
            .successful_jobs_history_limit
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(defaults.successful_history),
        failed_history: cron_spec
            .failed_jobs_history_limit
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(defaults.failed_history),
        suspend: cron_spec.suspend.unwrap_or(false),
    };
    let next_fire_times = if spec.suspend {
        Vec::new()
    } else {
        next_firings(&spec, Utc::now())
    };
    ScheduleInfo {
        pipeline: annotation(PIPELINE_ANNOTATION).unwrap_or_default(),
        params: annotation(PARAMS_ANNOTATION)
            .and_then(|p| serde_json::from_str(&p).ok())
            .unwrap_or_default(),
        code_digest: annotation(CODE_ANNOTATION),
        created_at: meta.creation_timestamp.as_ref().map(to_chrono),
        last_fired_at: status.last_schedule_time.as_ref().map(to_chrono),
        last_succeeded_at: status.last_successful_time.as_ref().map(to_chrono),
        next_fire_times,
        active: status.active.map(|a| a.len() as u32).unwrap_or(0),
        place: format!("namespace {namespace}"),
        spec,
    }
}

fn to_chrono(time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> DateTime<Utc> {
    DateTime::from_timestamp(time.0.as_second(), time.0.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
}

fn owner_reference(cron_job: &CronJob) -> OwnerReference {
    OwnerReference {
        api_version: "batch/v1".into(),
        kind: "CronJob".into(),
        name: cron_job.metadata.name.clone().unwrap_or_default(),
        uid: cron_job.metadata.uid.clone().unwrap_or_default(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    }
}

/// Creates the schedule's objects and resumes its CronJob unless it was asked suspended.
/// Nothing stays behind if a step fails.
pub async fn create(
    connection: &Connection,
    objects: &ScheduleObjects,
    spec: &ScheduleSpec,
) -> Result<CronJob, PluginError> {
    let ns = &connection.namespace;
    let cron_jobs: Api<CronJob> = Api::namespaced(connection.client.clone(), ns);
    let name = objects.cron_job.metadata.name.clone().unwrap_or_default();
    let what = format!("creating CronJob {name}");
    let post = PostParams::default();
    let created = match retry(&what, || cron_jobs.create(&post, &objects.cron_job)).await {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 409 => {
            return Err(PluginError::new(
                ErrorKind::ALREADY_EXISTS,
                format!(
                    "kubernetes: a schedule `{}` already exists in namespace {ns} (CronJob {name}); delete it first (`ferry schedule delete {}`) or choose another name",
                    spec.name, spec.name
                ),
            ));
        }
        Err(error) => return Err(api_error(&what, error)),
    };
    let owner = owner_reference(&created);
    let result = async {
        let mut config_map = objects.config_map.clone();
        config_map.metadata.owner_references = Some(vec![owner.clone()]);
        let config_maps: Api<ConfigMap> = Api::namespaced(connection.client.clone(), ns);
        let what = format!("creating ConfigMap {name}");
        retry(&what, || config_maps.create(&post, &config_map))
            .await
            .map_err(|e| api_error(&what, e))?;
        if let Some(secret) = &objects.secret {
            let mut secret = secret.clone();
            secret.metadata.owner_references = Some(vec![owner]);
            let secrets: Api<Secret> = Api::namespaced(connection.client.clone(), ns);
            let what = format!("creating Secret {name}");
            retry(&what, || secrets.create(&post, &secret))
                .await
                .map_err(|e| api_error(&what, e))?;
        }
        if spec.suspend {
            Ok(created.clone())
        } else {
            set_suspended(connection, &name, false).await
        }
    }
    .await;
    if result.is_err() {
        let what = format!("deleting CronJob {name}");
        let params = DeleteParams::background();
        if let Err(error) = retry(&what, || cron_jobs.delete(&name, &params)).await {
            tracing::warn!(%error, "{what}");
        }
    }
    result
}

/// The CronJob of schedule `schedule`; a missing one is an error saying how to list them.
pub async fn get(
    connection: &Connection,
    settings: &Settings,
    schedule: &str,
) -> Result<CronJob, PluginError> {
    let cron_jobs: Api<CronJob> = Api::namespaced(connection.client.clone(), &connection.namespace);
    let name = names::schedule_name(&settings.job_prefix, schedule);
    let what = format!("reading CronJob {name}");
    match retry(&what, || cron_jobs.get_opt(&name)).await {
        Ok(Some(cron_job)) if is_ferrys(&cron_job) => Ok(cron_job),
        Ok(_) => Err(PluginError::not_found(format!(
            "kubernetes: no schedule `{schedule}` in namespace {} (`ferry schedule list` shows the schedules there)",
            connection.namespace
        ))),
        Err(error) => Err(api_error(&what, error)),
    }
}

fn is_ferrys(cron_job: &CronJob) -> bool {
    let labels = cron_job.metadata.labels.as_ref();
    labels.and_then(|l| l.get(MANAGED_BY)).map(String::as_str) == Some("ferry")
        && labels.is_some_and(|l| l.contains_key(SCHEDULE_LABEL))
}

/// Every schedule in the namespace, by name.
pub async fn list(connection: &Connection) -> Result<Vec<CronJob>, PluginError> {
    let cron_jobs: Api<CronJob> = Api::namespaced(connection.client.clone(), &connection.namespace);
    let params = ListParams::default().labels(&format!("{MANAGED_BY}=ferry,{SCHEDULE_LABEL}"));
    let what = "listing the schedules' CronJobs";
    let mut items = retry(what, || cron_jobs.list(&params))
        .await
        .map_err(|e| api_error(what, e))?
        .items;
    items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(items)
}

/// Suspends or resumes the CronJob `name`.
pub async fn set_suspended(
    connection: &Connection,
    name: &str,
    suspend: bool,
) -> Result<CronJob, PluginError> {
    let cron_jobs: Api<CronJob> = Api::namespaced(connection.client.clone(), &connection.namespace);
    let what = format!(
        "{} CronJob {name}",
        if suspend { "suspending" } else { "resuming" }
    );
    let patch = Patch::Merge(json!({"spec": {"suspend": suspend}}));
    let params = PatchParams::default();
    retry(&what, || cron_jobs.patch(name, &params, &patch))
        .await
        .map_err(|e| api_error(&what, e))
}

/// Deletes the CronJob `name` with its launches (which cancel their runs) and its ConfigMap
/// and Secret.
pub async fn delete(connection: &Connection, name: &str) -> Result<(), PluginError> {
    let cron_jobs: Api<CronJob> = Api::namespaced(connection.client.clone(), &connection.namespace);
    let what = format!("deleting CronJob {name}");
    let params = DeleteParams::background();
    match retry(&what, || cron_jobs.delete(name, &params)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(api_error(&what, error)),
    }
}

/// Starts a launch of the CronJob now, as `kubectl create job --from=cronjob/NAME` does, whose
/// run gets `run_id`; returns the launch's Job name.
pub async fn trigger(
    connection: &Connection,
    cron_job: &CronJob,
    run_id: &str,
) -> Result<String, PluginError> {
    let cron_name = cron_job.metadata.name.clone().unwrap_or_default();
    let template = cron_job.spec.job_template.clone();
    // `-` and ten characters, as the CronJob controller's `-<minutes>`: the name fits.
    let name = format!(
        "{cron_name}-{}",
        &blake3::hash(run_id.as_bytes()).to_hex()[..10]
    );
    let mut annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    annotations.insert("cronjob.kubernetes.io/instantiate".into(), "manual".into());
    let mut job = Job {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(connection.namespace.clone()),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                controller: Some(true),
                ..owner_reference(cron_job)
            }]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    if let Some(container) = job
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .and_then(|p| p.containers.first_mut())
    {
        container.env.get_or_insert_with(Vec::new).push(EnvVar {
            name: orchestrator_core::env_vars::FERRY_AGENT_RUN_ID.into(),
            value: Some(run_id.into()),
            value_from: None,
        });
    }
    let jobs: Api<Job> = Api::namespaced(connection.client.clone(), &connection.namespace);
    let what = format!("creating Job {name}");
    let post = PostParams::default();
    retry(&what, || jobs.create(&post, &job))
        .await
        .map_err(|e| api_error(&what, e))?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_fields_and_macros_pass_and_the_rest_is_refused_with_what_to_write() {
        for good in [
            "* * * * *",
            "30 2 * * 1-5",
            "*/15 * * * *",
            "@daily",
            "@hourly",
        ] {
            check_spec(&ScheduleSpec::new("nightly", good)).unwrap();
        }
        for (bad, why) in [
            ("* * * *", "it has 4 fields, not 5"),
            ("0 * * * * *", "it has 6 fields, not 5"),
            ("61 * * * *", "not a cron expression a CronJob accepts"),
            ("TZ=UTC 0 2 * * *", "--timezone"),
            ("@every 5m", "`@every` is not supported"),
            ("tomorrow", "not a cron expression"),
        ] {
            let error = check_spec(&ScheduleSpec::new("nightly", bad)).unwrap_err();
            assert!(error.message().contains(why), "{bad}: {error}");
            assert!(error.message().contains("five fields"), "{bad}: {error}");
        }
        let error = check_spec(&ScheduleSpec::new("Nightly", "@daily")).unwrap_err();
        assert!(error.message().contains("lower case"), "{error}");
    }

    #[test]
    fn next_firings_are_told_in_utc_only() {
        let after = DateTime::parse_from_rfc3339("2026-12-04T10:20:30Z")
            .unwrap()
            .with_timezone(&Utc);
        let spec = ScheduleSpec::new("nightly", "30 2 * * *");
        let times: Vec<String> = next_firings(&spec, after)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect();
        assert_eq!(
            times,
            [
                "2026-12-05T02:30:00+00:00",
                "2026-12-06T02:30:00+00:00",
                "2026-12-07T02:30:00+00:00"
            ]
        );
        let mut paris = spec;
        paris.timezone = Some("Europe/Paris".into());
        assert!(next_firings(&paris, after).is_empty());
    }
}
