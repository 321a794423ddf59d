//! The `storage-s3` artifact-store plugin: Amazon S3 and S3-compatible servers through
//! `object_store`'s S3 client, loaded by ferry at run time.
//!
//! Settings use object_store's `AmazonS3ConfigKey` names and aliases (`access_key_id` or
//! `aws_access_key_id`, `endpoint` or `aws_endpoint_url`, ...), plus `url = "s3://bucket/prefix"`,
//! `prefix`, `max_retries` and `retry_timeout`. Unset keys come from the standard `AWS_*`
//! environment variables, then from instance or container credentials where object_store
//! supports them.

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use orchestrator_core::PluginError;
use orchestrator_core::sdk::{PluginConfig, PluginInfo};
use orchestrator_core::store::object_store_backend::{
    ObjectStoreBackend, ObjectStoreConfig, ObjectStorePlugin,
};
use orchestrator_core::store::settings::{
    BucketSettings, BucketSpec, RETRY_KEYS, check_endpoint, shown_endpoint,
};

const NAME: &str = "storage-s3";

/// The documented keys; every alias object_store accepts for them works too.
const KEYS: &[(&str, &str)] = &[
    ("url", "s3://bucket/prefix: bucket and key prefix in one"),
    ("bucket", "bucket name (alias: aws_bucket, bucket_name)"),
    (
        "prefix",
        "key prefix inside the bucket, e.g. \"team/ferry\"",
    ),
    (
        "region",
        "AWS region (alias: aws_region; default from AWS_REGION, else us-east-1)",
    ),
    (
        "endpoint",
        "custom endpoint URL for S3-compatible servers (alias: aws_endpoint_url)",
    ),
    (
        "access_key_id",
        "static access key id (alias: aws_access_key_id)",
    ),
    (
        "secret_access_key",
        "static secret access key (alias: aws_secret_access_key)",
    ),
    (
        "session_token",
        "session token for temporary credentials (alias: aws_session_token, token)",
    ),
    (
        "virtual_hosted_style_request",
        "true: bucket.endpoint/key; false (default): endpoint/bucket/key",
    ),
    (
        "allow_http",
        "allow plain http endpoints (set automatically for an http:// endpoint)",
    ),
    ("skip_signature", "send unsigned requests (public buckets)"),
    (
        "imdsv1_fallback",
        "allow falling back to IMDSv1 for instance credentials",
    ),
    ("role_arn", "role to assume with a web identity token"),
    (
        "web_identity_token_file",
        "web identity token file (EKS IRSA)",
    ),
    ("timeout", "request timeout, e.g. \"30s\""),
    ("connect_timeout", "connect timeout, e.g. \"5s\""),
    RETRY_KEYS[0],
    RETRY_KEYS[1],
];

const SPEC: BucketSpec<AmazonS3ConfigKey> = BucketSpec {
    plugin: NAME,
    scheme: "s3",
    noun: "bucket",
    bucket_setting: "bucket",
    bucket_key: AmazonS3ConfigKey::Bucket,
    bucket_env: "AWS_BUCKET",
    documented: KEYS,
};

pub struct S3;

/// The plugin ferry loads.
pub type S3Store = ObjectStorePlugin<S3>;

/// Settings split into what the builder takes and what ferry handles itself.
struct Parsed {
    builder: AmazonS3Builder,
    settings: BucketSettings<AmazonS3ConfigKey>,
    endpoint: Option<String>,
}

fn parse(config: &PluginConfig) -> Result<Parsed, PluginError> {
    let settings = BucketSettings::parse(config, &SPEC)?;
    let mut builder = AmazonS3Builder::from_env();
    let mut endpoint = std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .ok();
    let mut allow_http = None;
    for (key, text) in &settings.keys {
        match key {
            AmazonS3ConfigKey::Endpoint => endpoint = Some(text.clone()),
            AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp) => {
                allow_http = Some(text.clone())
            }
            _ => {}
        }
        builder = builder.with_config(*key, text);
    }
    if let Some(endpoint) = &endpoint
        && check_endpoint(endpoint)?
        && allow_http.is_none()
    {
        builder = builder.with_allow_http(true);
    }
    builder = builder
        .with_bucket_name(&settings.bucket)
        .with_retry(settings.retry.into());
    Ok(Parsed {
        builder,
        settings,
        endpoint,
    })
}

impl ObjectStoreConfig for S3 {
    fn info() -> PluginInfo {
        PluginInfo {
            name: NAME,
            version: env!("CARGO_PKG_VERSION"),
            description: "artifacts in Amazon S3 or an S3-compatible server",
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
                "cannot configure S3 bucket `{}`: {e}",
                parsed.settings.bucket
            ))
        })?;
        let mut url = parsed.settings.url();
        if let Some(endpoint) = &parsed.endpoint {
            url.push_str(&format!(" at {}", shown_endpoint(endpoint)));
        }
        ObjectStoreBackend::new(Arc::new(store), &parsed.settings.prefix, url)
    }
}

orchestrator_core::export_store_plugin!(S3Store);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> PluginConfig {
        PluginConfig::new(json.as_object().unwrap().clone())
    }

    #[test]
    fn urls_aliases_and_unknown_keys() {
        let parsed = parse(&config(serde_json::json!({
            "url": "s3://bucket/team/ferry/",
            "aws_access_key_id": "AKIA",
            "secret_access_key": "s3cr3t",
            "endpoint": "http://127.0.0.1:8333",
            "max_retries": 2,
        })))
        .unwrap();
        assert_eq!(
            (
                parsed.settings.bucket.as_str(),
                parsed.settings.prefix.as_str()
            ),
            ("bucket", "team/ferry")
        );
        let error = parse(&config(
            serde_json::json!({"bucket": "b", "acess_key_id": "x"}),
        ))
        .err()
        .unwrap();
        assert!(
            error.message().contains("did you mean `access_key_id`"),
            "{error}"
        );
        let error = parse(&config(serde_json::json!({"bucket": "b", "zzz": "x"})))
            .err()
            .unwrap();
        assert!(
            error.message().contains("valid keys: url, bucket"),
            "{error}"
        );
        let error = parse(&config(
            serde_json::json!({"bucket": "b", "endpoint": "ftp://x"}),
        ))
        .err()
        .unwrap();
        assert!(error.message().contains("http:// or https://"), "{error}");
    }

    #[test]
    fn secrets_stay_out_of_the_url() {
        let backend = S3::build(&config(serde_json::json!({
            "url": "s3://bucket/p",
            "access_key_id": "AKIAEXAMPLE",
            "secret_access_key": "very-secret-marker",
            "region": "us-east-1",
            "endpoint": "http://127.0.0.1:1",
        })))
        .unwrap();
        assert_eq!(backend.url(), "s3://bucket/p at http://127.0.0.1:1");
        assert!(!backend.url().contains("very-secret-marker"));
        let backend = S3::build(&config(serde_json::json!({
            "url": "s3://bucket",
            "prefix": "team/ferry",
            "endpoint": "http://user:pass-marker@127.0.0.1:1",
        })))
        .unwrap();
        assert_eq!(
            backend.url(),
            "s3://bucket/team/ferry at http://127.0.0.1:1",
            "prefix refines url"
        );
    }
}
