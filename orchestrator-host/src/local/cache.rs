//! Step caching: a step whose definition, parameters, code and inputs match an earlier
//! successful step reuses that step's outputs instead of running.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use orchestrator_core::PluginError;
use orchestrator_core::pipeline::Step;
use orchestrator_core::run::{OutputFile, StepRef};
use orchestrator_core::store::{Store, layout};

/// Bump when the meaning of a key changes, so old entries stop matching.
const KEY_VERSION: &str = "ferry-step-cache-v2";

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
    working_dir: &Path,
    code_digest: Option<&str>,
    inputs: &[(&str, &[OutputFile])],
) -> String {
    let definition = serde_json::json!({
        "version": KEY_VERSION,
        "name": step.name,
        // Two pipelines in one project may share step names and commands but run them in
        // different folders, on different scripts.
        "working_dir": working_dir,
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

/// Download a hit's outputs into `out_dir`, checking each file's digest and restoring its
/// executable bit; any mismatch makes the hit unusable.
pub fn restore(store: &Store, entry: &CacheEntry, out_dir: &Path) -> Result<(), PluginError> {
    let prefix = layout::step_outputs(&entry.source.run_id, &entry.source.step);
    for file in &entry.outputs {
        let dest = out_dir.join(&file.path);
        store.get_file(&format!("{prefix}{}", file.path), &dest)?;
        let digest = file_digest(&dest)?;
        if digest != file.digest {
            return Err(PluginError::other(format!(
                "`{}` from run {} changed since it was cached (digest {digest}, expected {})",
                file.path, entry.source.run_id, file.digest
            )));
        }
        if file.executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).map_err(
                |e| PluginError::other(format!("cannot mark {} executable: {e}", dest.display())),
            )?;
        }
    }
    Ok(())
}

fn file_digest(path: &Path) -> Result<String, PluginError> {
    let mut hasher = blake3::Hasher::new();
    let mut file = std::fs::File::open(path)
        .map_err(|e| PluginError::other(format!("cannot read {}: {e}", path.display())))?;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|e| PluginError::other(format!("cannot read {}: {e}", path.display())))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

pub fn record(store: &Store, key: &str, entry: &CacheEntry) -> Result<(), PluginError> {
    store.put_json(&layout::cache_entry(key), entry)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_core::pipeline::Step;

    #[test]
    fn keys_change_with_what_matters_only() {
        let step = Step::shell("train", "python3 train.py");
        let params = BTreeMap::from([("lr".to_string(), "0.1".to_string())]);
        let base = cache_key(&step, &params, Path::new("."), Some("abc"), &[]);
        assert_eq!(
            base,
            cache_key(&step, &params, Path::new("."), Some("abc"), &[])
        );
        assert_ne!(
            base,
            cache_key(&step, &params, Path::new("."), Some("abd"), &[]),
            "code"
        );
        let other = BTreeMap::from([("lr".to_string(), "0.2".to_string())]);
        assert_ne!(
            base,
            cache_key(&step, &other, Path::new("."), Some("abc"), &[]),
            "params"
        );
        let input = [OutputFile {
            path: "data.csv".into(),
            size: 1,
            digest: "d1".into(),
            executable: false,
        }];
        assert_ne!(
            base,
            cache_key(
                &step,
                &params,
                Path::new("."),
                Some("abc"),
                &[("load", &input)]
            ),
            "inputs"
        );
        assert_ne!(
            base,
            cache_key(&step, &params, Path::new("other"), Some("abc"), &[]),
            "working directory"
        );
        let retried = step.clone().retries(3);
        assert_eq!(
            base,
            cache_key(&retried, &params, Path::new("."), Some("abc"), &[]),
            "retries"
        );
    }
}
