//! Helpers for store plugins whose settings mirror `object_store`'s config keys: values as
//! strings, `scheme://bucket/prefix` URLs, retry settings, and refusing unknown keys.
//!
//! [`BucketSettings::parse`] is the skeleton every object-store driver shares (S3, GCS, Azure):
//! a driver says what differs in a [`BucketSpec`] and applies the keys it gets back to its
//! object_store builder.

use std::str::FromStr;
use std::time::Duration;

use crate::abi::PluginError;
use crate::sdk::PluginConfig;

/// A settings value as the string `object_store` expects (`true`, `30s`, `9000`).
pub fn value_string(key: &str, value: &serde_json::Value) -> Result<String, PluginError> {
    match value {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        // The value itself is not shown: it may hold a credential.
        _ => Err(PluginError::invalid_input(format!(
            "setting `{key}` must be a string, number or boolean"
        ))),
    }
}

/// `s3://bucket/some/prefix` → (`bucket`, `some/prefix`).
pub fn parse_bucket_url(url: &str, scheme: &str) -> Result<(String, String), PluginError> {
    let rest = url.strip_prefix(&format!("{scheme}://")).ok_or_else(|| {
        PluginError::invalid_input(format!(
            "`url` must look like {scheme}://bucket/prefix, found `{url}`"
        ))
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(PluginError::invalid_input(format!(
            "`url` `{url}` names no bucket; write {scheme}://bucket/prefix"
        )));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// The inverse of [`parse_bucket_url`], for the store's description: `s3://bucket/prefix`.
pub fn bucket_url(scheme: &str, bucket: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        format!("{scheme}://{bucket}")
    } else {
        format!("{scheme}://{bucket}/{prefix}")
    }
}

/// A plugin's documented keys followed by the retry keys every object-store plugin takes.
#[deprecated(
    since = "0.1.1",
    note = "`PluginInfo::config_keys` is static: list `RETRY_KEYS[0]`, `RETRY_KEYS[1]` in the \
            plugin's own keys, and `BucketSettings::parse` checks them"
)]
pub fn with_retry_keys(keys: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    keys.iter().chain(RETRY_KEYS).copied().collect()
}

/// Retry settings shared by the object-store plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    pub max_retries: usize,
    pub retry_timeout: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
        }
    }
}

/// The retry keys, for a driver's documented keys (`RETRY_KEYS[0], RETRY_KEYS[1]`).
pub const RETRY_KEYS: &[(&str, &str)] = &[
    (
        "max_retries",
        "retries of a failed request, with exponential backoff (default 10; 0 disables)",
    ),
    (
        "retry_timeout",
        "give up retrying a request after this long, e.g. \"3m\" (default 3m)",
    ),
];

impl RetrySettings {
    pub fn from_config(config: &PluginConfig) -> Result<Self, PluginError> {
        let mut retry = Self::default();
        if let Some(value) = config.settings.get("max_retries") {
            retry.max_retries = value
                .as_u64()
                .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| {
                    PluginError::invalid_input(format!(
                        "`max_retries` must be a whole number, found {value}"
                    ))
                })? as usize;
        }
        if let Some(text) = config.str_setting("retry_timeout")? {
            retry.retry_timeout = humantime::parse_duration(text).map_err(|e| {
                PluginError::invalid_input(format!(
                    "`retry_timeout` must be a duration such as \"3m\", found \"{text}\": {e}"
                ))
            })?;
        }
        Ok(retry)
    }
}

/// What differs between object-store drivers in [`BucketSettings::parse`]. `K` is the driver's
/// object_store config key type (`AmazonS3ConfigKey`, `GoogleConfigKey`, `AzureConfigKey`),
/// whose names and aliases are the settings' names.
pub struct BucketSpec<K> {
    /// The plugin's name, for messages: `storage-s3`.
    pub plugin: &'static str,
    /// The `url` setting's scheme: `s3` in `s3://bucket/prefix`.
    pub scheme: &'static str,
    /// What the store calls a bucket: `bucket`, or `container` on Azure.
    pub noun: &'static str,
    /// The setting that names the bucket (`bucket`, `container_name`) and its config key.
    pub bucket_setting: &'static str,
    pub bucket_key: K,
    /// The environment variable that names the bucket when no setting does: `AWS_BUCKET`.
    pub bucket_env: &'static str,
    /// The documented keys, for did-you-mean on an unknown one.
    pub documented: &'static [(&'static str, &'static str)],
}

/// An object-store driver's settings, parsed the same way for every driver: the bucket from
/// `url`, refined by the bucket setting, else the environment; the prefix from `url`, refined
/// by `prefix`; the retry keys; and every other setting checked against the driver's config
/// key type, for the driver to apply to its builder.
#[derive(Debug)]
pub struct BucketSettings<K> {
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the whole bucket.
    pub prefix: String,
    pub retry: RetrySettings,
    /// The other settings (`url`, `prefix` and the retry keys taken out),
    /// as config keys and `object_store` string values. The bucket's own key stays in: a
    /// builder may take it like any other.
    pub keys: Vec<(K, String)>,
    scheme: &'static str,
}

impl<K: FromStr + PartialEq> BucketSettings<K> {
    pub fn parse(config: &PluginConfig, spec: &BucketSpec<K>) -> Result<Self, PluginError> {
        let mut bucket = None;
        let mut prefix = String::new();
        // `url` first, so that the bucket setting and `prefix` refine it whatever the key order.
        if let Some(url) = config.settings.get("url") {
            let (b, p) = parse_bucket_url(&value_string("url", url)?, spec.scheme)?;
            bucket = Some(b);
            prefix = p;
        }
        let mut keys = Vec::new();
        for (name, value) in &config.settings {
            let text = value_string(name, value)?;
            match name.as_str() {
                "url" | "max_retries" | "retry_timeout" => {}
                "prefix" => prefix = text.trim_matches('/').to_string(),
                _ => {
                    let key = K::from_str(name)
                        .map_err(|_| unknown_key(spec.plugin, name, spec.documented))?;
                    if key == spec.bucket_key {
                        bucket = Some(text.clone());
                    }
                    keys.push((key, text));
                }
            }
        }
        let bucket = bucket
            .or_else(|| std::env::var(spec.bucket_env).ok())
            .ok_or_else(|| {
                let BucketSpec {
                    plugin,
                    scheme,
                    noun,
                    bucket_setting,
                    ..
                } = spec;
                PluginError::invalid_input(format!(
                    "{plugin} needs a {noun}: set `url = \"{scheme}://{noun}/prefix\"` or \
                     `{bucket_setting}` in the stack's store settings"
                ))
            })?;
        Ok(Self {
            bucket,
            prefix,
            retry: RetrySettings::from_config(config)?,
            keys,
            scheme: spec.scheme,
        })
    }

    /// The store as users see it: `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        bucket_url(self.scheme, &self.bucket, &self.prefix)
    }
}

/// Checks an `endpoint` setting; `Ok(true)` for a plain-http one, which is a deliberate choice
/// (a local server or emulator) that drivers allow unless the user said otherwise.
pub fn check_endpoint(endpoint: &str) -> Result<bool, PluginError> {
    if endpoint.starts_with("http://") {
        Ok(true)
    } else if endpoint.starts_with("https://") {
        Ok(false)
    } else {
        Err(PluginError::invalid_input(format!(
            "`endpoint` must be an http:// or https:// URL, found `{endpoint}`"
        )))
    }
}

/// An endpoint as shown to users: never with credentials, which can ride in the user part
/// (`http://user:pass@host/`) or the query string (a SAS token).
pub fn shown_endpoint(endpoint: &str) -> String {
    let endpoint = endpoint.split('?').next().unwrap_or_default();
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return endpoint.to_string();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{path}")
}

/// Whether a settings key looks like it holds a credential (`secret_access_key`, `token`,
/// `service_account_key`, `password`, ...): such values are never shown, logged, or shipped
/// outside a secret.
pub fn is_secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    ["secret", "password", "token", "credential", "private"]
        .iter()
        .any(|word| lower.contains(word))
        || lower.ends_with("_key")
        || lower == "key"
}

/// The error for a key nobody accepts: did-you-mean among the documented keys, else the list.
pub fn unknown_key(plugin: &str, key: &str, documented: &[(&str, &str)]) -> PluginError {
    let names: Vec<&str> = documented.iter().map(|(k, _)| *k).collect();
    let hint = match crate::suggest::did_you_mean(key, names.iter().copied()) {
        Some(best) => format!("did you mean `{best}`?"),
        None => format!("valid keys: {}", names.join(", ")),
    };
    PluginError::invalid_input(format!(
        "unknown setting `{key}` for plugin `{plugin}`; {hint}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver's config keys in miniature: a bucket key with an alias and one other key.
    #[derive(Debug, PartialEq)]
    enum Key {
        Bucket,
        Region,
    }

    impl FromStr for Key {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            match s {
                "bucket" | "toy_bucket" => Ok(Key::Bucket),
                "region" => Ok(Key::Region),
                _ => Err(()),
            }
        }
    }

    const SPEC: BucketSpec<Key> = BucketSpec {
        plugin: "storage-toy",
        scheme: "toy",
        noun: "bucket",
        bucket_setting: "bucket",
        bucket_key: Key::Bucket,
        bucket_env: "FERRY_TEST_TOY_BUCKET_UNSET",
        documented: &[
            ("url", ""),
            ("bucket", ""),
            ("prefix", ""),
            ("region", ""),
            RETRY_KEYS[0],
            RETRY_KEYS[1],
        ],
    };

    fn parse(json: serde_json::Value) -> Result<BucketSettings<Key>, PluginError> {
        BucketSettings::parse(&PluginConfig::new(json.as_object().unwrap().clone()), &SPEC)
    }

    #[test]
    fn bucket_settings_refine_the_url_and_hand_the_driver_its_own_keys() {
        // The bucket setting and `prefix` win over `url` whatever the keys' order.
        let settings = parse(serde_json::json!({
            "url": "toy://from-url/a/b/",
            "toy_bucket": "explicit",
            "prefix": "/team/",
            "region": "eu-1",
            "max_retries": 3,
        }))
        .unwrap();
        assert_eq!(settings.bucket, "explicit");
        assert_eq!(settings.prefix, "team");
        assert_eq!(settings.retry.max_retries, 3);
        assert_eq!(settings.keys.len(), 2, "{:?}", settings.keys);
        assert!(settings.keys.contains(&(Key::Region, "eu-1".into())));
        assert!(settings.keys.contains(&(Key::Bucket, "explicit".into())));
        assert_eq!(settings.url(), "toy://explicit/team");

        let error = parse(serde_json::json!({"bucket": "b", "regoin": "x"})).unwrap_err();
        assert!(
            error.message().contains(
                "unknown setting `regoin` for plugin `storage-toy`; did you mean `region`?"
            ),
            "{error}"
        );
        let error = parse(serde_json::json!({"region": "x"})).unwrap_err();
        assert_eq!(
            error.message(),
            "storage-toy needs a bucket: set `url = \"toy://bucket/prefix\"` or `bucket` in the stack's store settings"
        );
    }

    #[test]
    fn endpoints_are_checked_and_shown_without_credentials() {
        assert!(check_endpoint("http://127.0.0.1:9000").unwrap());
        assert!(!check_endpoint("https://s3.example").unwrap());
        assert!(check_endpoint("127.0.0.1:9000").is_err());
        assert_eq!(
            shown_endpoint("http://user:pass@host:9000/x?sig=secret"),
            "http://host:9000/x"
        );
        assert_eq!(shown_endpoint("https://host/acct"), "https://host/acct");
    }

    #[test]
    fn bucket_urls() {
        assert_eq!(
            parse_bucket_url("s3://b/p/q/", "s3").unwrap(),
            ("b".into(), "p/q".into())
        );
        assert_eq!(
            parse_bucket_url("gs://b", "gs").unwrap(),
            ("b".into(), String::new())
        );
        assert!(parse_bucket_url("s3:///p", "s3").is_err());
        assert!(
            parse_bucket_url("gs://b", "s3")
                .unwrap_err()
                .message()
                .contains("s3://bucket/prefix")
        );
    }
}
