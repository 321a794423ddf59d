//! The `storage-azure` artifact-store plugin: Azure Blob Storage through `object_store`'s Azure
//! client, loaded by ferry at run time. It is written the way a third party would write a
//! plugin: it depends on orchestrator-core's published SDK only (the plugin traits, the export
//! macro and the object_store bridge every object-store driver shares).
//!
//! Settings use object_store's `AzureConfigKey` names and aliases (`account_name` or
//! `azure_storage_account_name`, `access_key`, `sas_token`, `client_id`, ...), plus
//! `url = "az://container/prefix"`, `prefix`, `max_retries` and `retry_timeout`. Unset keys come
//! from the standard `AZURE_*` environment variables, then from managed or workload identity
//! where object_store supports them.
//!
//! Azurite (the Azure Storage emulator): `use_emulator = true` with `endpoint` set to the
//! emulator's address (`http://127.0.0.1:10000`) reaches its well-known `devstoreaccount1`
//! account with the emulator's published key, unless `account_name`/`access_key` say otherwise.

use std::sync::Arc;

use object_store::ClientConfigKey;
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use orchestrator_core::PluginError;
use orchestrator_core::sdk::{PluginConfig, PluginInfo};
use orchestrator_core::store::object_store_backend::{
    ObjectStoreBackend, ObjectStoreConfig, ObjectStorePlugin,
};
use orchestrator_core::store::settings::{
    BucketSettings, BucketSpec, RETRY_KEYS, check_endpoint, shown_endpoint,
};

const NAME: &str = "storage-azure";

/// Azurite's well-known account and key (published in Microsoft's emulator documentation; not
/// a secret).
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The documented keys; every alias object_store accepts for them works too.
const KEYS: &[(&str, &str)] = &[
    (
        "url",
        "az://container/prefix: container and key prefix in one",
    ),
    (
        "container_name",
        "container name (alias: azure_container_name)",
    ),
    (
        "prefix",
        "key prefix inside the container, e.g. \"team/ferry\"",
    ),
    (
        "account_name",
        "storage account (alias: azure_storage_account_name)",
    ),
    (
        "access_key",
        "storage account key (alias: azure_storage_account_key, account_key)",
    ),
    (
        "sas_token",
        "shared access signature, query-string form (alias: sas_key)",
    ),
    (
        "client_id",
        "service principal or managed identity client id",
    ),
    ("client_secret", "service principal secret"),
    ("tenant_id", "Entra ID tenant of the service principal"),
    ("federated_token_file", "workload identity token file (AKS)"),
    (
        "use_azure_cli",
        "take a token from `az account get-access-token`",
    ),
    (
        "endpoint",
        "blob service URL, for sovereign clouds, private endpoints or Azurite",
    ),
    (
        "use_emulator",
        "true: Azurite at `endpoint` (default http://127.0.0.1:10000) with its well-known account",
    ),
    ("allow_http", "allow plain http endpoints"),
    ("timeout", "request timeout, e.g. \"30s\""),
    ("connect_timeout", "connect timeout, e.g. \"5s\""),
    RETRY_KEYS[0],
    RETRY_KEYS[1],
];

const SPEC: BucketSpec<AzureConfigKey> = BucketSpec {
    plugin: NAME,
    scheme: "az",
    noun: "container",
    bucket_setting: "container_name",
    bucket_key: AzureConfigKey::ContainerName,
    bucket_env: "AZURE_CONTAINER_NAME",
    documented: KEYS,
};

pub struct Azure;

/// The plugin ferry loads.
pub type AzureStore = ObjectStorePlugin<Azure>;

/// Settings split into what the builder takes and what ferry handles itself.
struct Parsed {
    builder: MicrosoftAzureBuilder,
    settings: BucketSettings<AzureConfigKey>,
    /// Where the blobs are, for the store's description (never with credentials).
    shown_endpoint: Option<String>,
}

fn truthy(text: &str) -> bool {
    matches!(
        text.to_ascii_lowercase().as_str(),
        "true" | "1" | "yes" | "on"
    )
}

fn parse(config: &PluginConfig) -> Result<Parsed, PluginError> {
    let settings = BucketSettings::parse(config, &SPEC)?;
    let mut builder = MicrosoftAzureBuilder::from_env();
    let mut endpoint = None;
    let mut emulator = false;
    let mut account = None;
    let mut key = None;
    let mut allow_http = None;
    for (name, text) in &settings.keys {
        match name {
            AzureConfigKey::Endpoint => endpoint = Some(text.clone()),
            AzureConfigKey::AccountName => account = Some(text.clone()),
            AzureConfigKey::AccessKey => key = Some(text.clone()),
            AzureConfigKey::Client(ClientConfigKey::AllowHttp) => allow_http = Some(text.clone()),
            // Handled below: object_store's own emulator mode reads the address from an
            // environment variable, which a plugin must not set for its host.
            AzureConfigKey::UseEmulator => {
                emulator = truthy(text);
                continue;
            }
            _ => {}
        }
        builder = builder.with_config(*name, text);
    }
    if emulator {
        // Azurite serves accounts path-style: http://host:port/<account>/<container>/<blob>.
        let account = account.unwrap_or_else(|| EMULATOR_ACCOUNT.to_string());
        let base = endpoint
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:10000".to_string());
        let base = base.trim_end_matches('/');
        let account_url = if base.ends_with(&format!("/{account}")) {
            base.to_string()
        } else {
            format!("{base}/{account}")
        };
        builder = builder
            .with_account(&account)
            .with_endpoint(account_url.clone());
        if key.is_none() {
            builder = builder.with_access_key(EMULATOR_KEY);
        }
        endpoint = Some(account_url);
    }
    if let Some(endpoint) = &endpoint
        && check_endpoint(endpoint)?
        && allow_http.is_none()
    {
        builder = builder.with_allow_http(true);
    }
    builder = builder
        .with_container_name(&settings.bucket)
        .with_retry(settings.retry.into());
    Ok(Parsed {
        builder,
        settings,
        shown_endpoint: endpoint.as_deref().map(shown_endpoint),
    })
}

impl ObjectStoreConfig for Azure {
    fn info() -> PluginInfo {
        PluginInfo {
            name: NAME,
            version: env!("CARGO_PKG_VERSION"),
            description: "artifacts in Azure Blob Storage (or Azurite)",
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
                "cannot configure Azure container `{}`: {e}; set `account_name` and a credential (`access_key`, `sas_token`, a service principal) or AZURE_STORAGE_* variables",
                parsed.settings.bucket
            ))
        })?;
        let mut url = parsed.settings.url();
        if let Some(endpoint) = &parsed.shown_endpoint {
            url.push_str(&format!(" at {endpoint}"));
        }
        ObjectStoreBackend::new(Arc::new(store), &parsed.settings.prefix, url)
    }
}

orchestrator_core::export_store_plugin!(AzureStore);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> PluginConfig {
        PluginConfig::new(json.as_object().unwrap().clone())
    }

    #[test]
    fn urls_aliases_emulator_and_unknown_keys() {
        let parsed = parse(&config(serde_json::json!({
            "url": "az://ferry/team/runs/",
            "use_emulator": true,
            "endpoint": "http://127.0.0.1:10100",
        })))
        .unwrap();
        assert_eq!(parsed.settings.bucket, "ferry");
        assert_eq!(parsed.settings.prefix, "team/runs");
        assert_eq!(
            parsed.shown_endpoint.as_deref(),
            Some("http://127.0.0.1:10100/devstoreaccount1")
        );

        let error = parse(&config(
            serde_json::json!({"url": "az://c", "acount_name": "x"}),
        ))
        .err()
        .unwrap();
        assert!(
            error.message().contains("did you mean `account_name`"),
            "{error}"
        );
        let error = parse(&config(serde_json::json!({"account_name": "x"})))
            .err()
            .unwrap();
        assert!(error.message().contains("needs a container"), "{error}");
        let error = parse(&config(
            serde_json::json!({"url": "az://c", "endpoint": "127.0.0.1:1"}),
        ))
        .err()
        .unwrap();
        assert!(error.message().contains("http:// or https://"), "{error}");
    }
}
