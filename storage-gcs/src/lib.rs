//! The `storage-gcs` artifact-store plugin: Google Cloud Storage through `object_store`'s GCS
//! client (its XML API), loaded by ferry at run time.
//!
//! Settings use object_store's `GoogleConfigKey` names and aliases (`service_account` or
//! `google_service_account`, `service_account_key`, `application_credentials`, ...), plus
//! `url = "gs://bucket/prefix"`, `prefix`, `max_retries` and `retry_timeout`. Unset keys come
//! from the standard `GOOGLE_*` environment variables and application default credentials.
//!
//! ferry's artifact store needs put, get, head, list and delete only; it never relies on
//! server-side copy or generation preconditions (the GCS-compatible servers available for
//! tests do not implement them faithfully).

use std::sync::Arc;

use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use orchestrator_core::PluginError;
use orchestrator_core::sdk::{PluginConfig, PluginInfo};
use orchestrator_core::store::object_store_backend::{
    ObjectStoreBackend, ObjectStoreConfig, ObjectStorePlugin,
};
use orchestrator_core::store::settings::{BucketSettings, BucketSpec, RETRY_KEYS};

const NAME: &str = "storage-gcs";

/// The documented keys; every alias object_store accepts for them works too.
const KEYS: &[(&str, &str)] = &[
    ("url", "gs://bucket/prefix: bucket and key prefix in one"),
    ("bucket", "bucket name (alias: google_bucket, bucket_name)"),
    (
        "prefix",
        "key prefix inside the bucket, e.g. \"team/ferry\"",
    ),
    (
        "service_account",
        "path to a service-account JSON file (alias: google_service_account)",
    ),
    (
        "service_account_key",
        "the service-account JSON itself (alias: google_service_account_key)",
    ),
    (
        "application_credentials",
        "application default credentials file (alias: google_application_credentials)",
    ),
    (
        "skip_signature",
        "send unauthenticated requests (public buckets)",
    ),
    (
        "allow_http",
        "allow plain http endpoints (local test servers)",
    ),
    ("timeout", "request timeout, e.g. \"30s\""),
    ("connect_timeout", "connect timeout, e.g. \"5s\""),
    RETRY_KEYS[0],
    RETRY_KEYS[1],
];

const SPEC: BucketSpec<GoogleConfigKey> = BucketSpec {
    plugin: NAME,
    scheme: "gs",
    noun: "bucket",
    bucket_setting: "bucket",
    bucket_key: GoogleConfigKey::Bucket,
    bucket_env: "GOOGLE_BUCKET",
    documented: KEYS,
};

pub struct Gcs;

/// The plugin ferry loads.
pub type GcsStore = ObjectStorePlugin<Gcs>;

struct Parsed {
    builder: GoogleCloudStorageBuilder,
    settings: BucketSettings<GoogleConfigKey>,
}

fn parse(config: &PluginConfig) -> Result<Parsed, PluginError> {
    let settings = BucketSettings::parse(config, &SPEC)?;
    let mut builder = GoogleCloudStorageBuilder::from_env();
    for (key, text) in &settings.keys {
        let text = match key {
            // Relative to the project, like every path in ferry's config.
            GoogleConfigKey::ServiceAccount | GoogleConfigKey::ApplicationCredentials => {
                config.resolve_path(text).display().to_string()
            }
            _ => text.clone(),
        };
        builder = builder.with_config(*key, text);
    }
    builder = builder
        .with_bucket_name(&settings.bucket)
        .with_retry(settings.retry.into());
    Ok(Parsed { builder, settings })
}

impl ObjectStoreConfig for Gcs {
    fn info() -> PluginInfo {
        PluginInfo {
            name: NAME,
            version: env!("CARGO_PKG_VERSION"),
            description: "artifacts in Google Cloud Storage",
            config_keys: KEYS,
        }
    }

    fn validate(config: &PluginConfig) -> Result<(), PluginError> {
        parse(config).map(|_| ())
    }

    fn build(config: &PluginConfig) -> Result<ObjectStoreBackend, PluginError> {
        let parsed = parse(config)?;
        let store = parsed.builder.build().map_err(|e| {
            PluginError::invalid_input(format!(
                "cannot configure GCS bucket `{}`: {e}; check `service_account` or GOOGLE_APPLICATION_CREDENTIALS",
                parsed.settings.bucket
            ))
        })?;
        let url = parsed.settings.url();
        ObjectStoreBackend::new(Arc::new(store), &parsed.settings.prefix, url)
    }
}

orchestrator_core::export_store_plugin!(GcsStore);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> PluginConfig {
        PluginConfig::new(json.as_object().unwrap().clone())
    }

    #[test]
    fn urls_aliases_and_unknown_keys() {
        let parsed = parse(&config(serde_json::json!({
            "url": "gs://bucket/team",
            "google_service_account": "/nonexistent/sa.json",
            "allow_http": true,
        })))
        .unwrap();
        assert_eq!(
            (
                parsed.settings.bucket.as_str(),
                parsed.settings.prefix.as_str()
            ),
            ("bucket", "team")
        );
        let error = parse(&config(
            serde_json::json!({"bucket": "b", "service_acount": "x"}),
        ))
        .err()
        .unwrap();
        assert!(
            error.message().contains("did you mean `service_account`"),
            "{error}"
        );
        let error = parse(&config(serde_json::json!({"prefix": "p"})))
            .err()
            .unwrap();
        assert!(error.message().contains("needs a bucket"), "{error}");
    }
}
