//! Step caching: a step whose definition, parameters, code and inputs match an earlier
//! successful step reuses that step's outputs instead of running.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::abi::PluginError;
use crate::pipeline::Step;
use crate::run::{OutputFile, StepRef};
use crate::store::{Store, layout};

/// Bump when the meaning of a key changes, so old entries stop matching.
const KEY_VERSION: &str = "ferry-step-cache-v1";

/// What `cache/<key>.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheEntry {
    pub source: StepRef,
    pub outputs: Vec<OutputFile>,
    pub created_at: DateTime<Utc>,
}

/// The cache key of a step: everything that can change what it produces. Retries, timeout and
/// resources are left out: they change whether a step finishes, not what it writes.
pub fn cache_key(
    step: &Step,
    params: &BTreeMap<String, String>,
    code_digest: Option<&str>,
    inputs: &[(&str, &[OutputFile])],
) -> String {
    let definition = serde_json::json!({
        "version": KEY_VERSION,
        "name": step.name,
        "action": step.action,
        "env": step.env,
        "outputs": step.outputs,
        "params": params,
        "code": code_digest,
        "inputs": inputs
            .iter()
            .map(|(name, files)| {
                let files: Vec<_> = files.iter().map(|f| (&f.path, &f.digest)).collect();
                serde_json::json!({ "step": name, "files": files })
            })
            .collect::<Vec<_>>(),
    });
    blake3::hash(definition.to_string().as_bytes())
        .to_hex()
        .to_string()
}

/// The entry for `key`, if there is one whose outputs are all still in the store.
pub fn lookup(store: &Store, key: &str) -> Result<Option<CacheEntry>, PluginError> {
    let Some(entry) = store.get_json::<CacheEntry>(&layout::cache_entry(key))? else {
        return Ok(None);
    };
    let prefix = layout::step_outputs(&entry.source.run_id, &entry.source.step);
    for output in &entry.outputs {
        match store.head(&format!("{prefix}{}", output.path))? {
            Some(info) if info.size == output.size => {}
            // Outputs deleted or replaced since: a miss, not an error.
            _ => return Ok(None),
        }
    }
    Ok(Some(entry))
}

pub fn record(store: &Store, key: &str, entry: &CacheEntry) -> Result<(), PluginError> {
    store.put_json(&layout::cache_entry(key), entry)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Step;

    #[test]
    fn keys_change_with_what_matters_only() {
        let step = Step::shell("train", "python3 train.py");
        let params = BTreeMap::from([("lr".to_string(), "0.1".to_string())]);
        let base = cache_key(&step, &params, Some("abc"), &[]);
        assert_eq!(base, cache_key(&step, &params, Some("abc"), &[]));
        assert_ne!(base, cache_key(&step, &params, Some("abd"), &[]), "code");
        let other = BTreeMap::from([("lr".to_string(), "0.2".to_string())]);
        assert_ne!(base, cache_key(&step, &other, Some("abc"), &[]), "params");
        let input = [OutputFile {
            path: "data.csv".into(),
            size: 1,
            digest: "d1".into(),
        }];
        assert_ne!(
            base,
            cache_key(&step, &params, Some("abc"), &[("load", &input)]),
            "inputs"
        );
        let retried = step.clone().retries(3);
        assert_eq!(
            base,
            cache_key(&retried, &params, Some("abc"), &[]),
            "retries"
        );
    }
}
