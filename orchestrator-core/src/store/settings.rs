//! Helpers for store plugins whose settings mirror `object_store`'s config keys: values as
//! strings, `scheme://bucket/prefix` URLs, retry settings, and refusing unknown keys.

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
