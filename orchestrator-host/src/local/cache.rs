//! Step caching: a step whose definition, parameters, code and inputs match an earlier
//! successful step reuses that step's outputs instead of running.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use orchestrator_core::PluginError;
use orchestrator_core::pipeline::Step;
use orchestrator_core::run::{CacheBasis, CodeInfo, OutputFile, StepRef};
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

/// What a step's cache key covers: the step's definition, the parameters it reads (those in
/// `uses_params` and its own, or all of them when it does not say), its code (the files its
/// `code` globs match, or the whole project), and its inputs. Retries, timeout and resources
/// are left out: they change whether a step finishes, not what it writes.
pub fn cache_basis(
    step: &Step,
    params: &BTreeMap<String, String>,
    working_dir: &Path,
    code: &CodeInfo,
    inputs: &[(&str, &[OutputFile])],
) -> CacheBasis {
    let definition = serde_json::json!({
        "name": step.name,
        "working_dir": working_dir,
        "action": step.action,
        "env": step.env,
        "outputs": step.outputs,
    });
    let params = match &step.uses_params {
        None => params.clone(),
        Some(used) => params
            .iter()
            .filter(|(k, _)| used.contains(k) || step.params.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let code = match code.step_files.get(&step.name) {
        Some(files) if !step.code.is_empty() => files.clone(),
        _ => code
            .digest
            .iter()
            .map(|d| (WHOLE_PROJECT.to_string(), d.clone()))
            .collect(),
    };
    CacheBasis {
        definition: blake3::hash(definition.to_string().as_bytes())
            .to_hex()
            .to_string(),
        params,
        code,
        inputs: inputs
            .iter()
            .flat_map(|(name, files)| {
                files
                    .iter()
                    .map(move |f| (format!("{name}/{}", f.path), f.digest.clone()))
            })
            .collect(),
    }
}

/// `CacheBasis::code`'s key for the whole project's digest.
const WHOLE_PROJECT: &str = "*";

/// The cache key of a step: a digest of everything its basis covers. Steps that declare
/// neither `code` nor `uses_params` get the key they always had.
pub fn cache_key(
    step: &Step,
    basis: &CacheBasis,
    working_dir: &Path,
    inputs: &[(&str, &[OutputFile])],
) -> String {
    let mut definition = serde_json::json!({
        "version": KEY_VERSION,
        "name": step.name,
        // Two pipelines in one project may share step names and commands but run them in
        // different folders, on different scripts.
        "working_dir": working_dir,
        "action": step.action,
        "env": step.env,
        "outputs": step.outputs,
        "params": basis.params,
        "code": basis.code.get(WHOLE_PROJECT),
        "inputs": inputs
            .iter()
            .map(|(name, files)| {
                let files: Vec<_> = files.iter().map(|f| (&f.path, &f.digest)).collect();
                serde_json::json!({ "step": name, "files": files })
            })
            .collect::<Vec<_>>(),
    });
    if !step.code.is_empty() {
        definition["code_files"] = serde_json::json!(basis.code);
    }
    blake3::hash(definition.to_string().as_bytes())
        .to_hex()
        .to_string()
}

/// Why a step missed the cache, told against the basis of the same step in an earlier run.
pub fn explain_miss(current: &CacheBasis, earlier: Option<(&str, &CacheBasis)>) -> String {
    let Some((run_id, before)) = earlier else {
        return "miss: no earlier run of this step to reuse".to_string();
    };
    let mut changes = Vec::new();
    if current.definition != before.definition {
        changes.push("the step's command, env or outputs changed".to_string());
    }
    let diff = |now: &BTreeMap<String, String>, then: &BTreeMap<String, String>| {
        let mut changed: Vec<String> = Vec::new();
        for (k, v) in now {
            match then.get(k) {
                Some(old) if old == v => {}
                Some(_) => changed.push(k.clone()),
                None => changed.push(format!("{k} (new)")),
            }
        }
        for k in then.keys().filter(|k| !now.contains_key(*k)) {
            changed.push(format!("{k} (gone)"));
        }
        changed
    };
    for (k, v) in &current.params {
        match before.params.get(k) {
            Some(old) if old == v => {}
            Some(old) => changes.push(format!("parameter `{k}` changed ({old} → {v})")),
            None => changes.push(format!("parameter `{k}` is new ({v})")),
        }
    }
    for k in before
        .params
        .keys()
        .filter(|k| !current.params.contains_key(*k))
    {
        changes.push(format!("parameter `{k}` is no longer set"));
    }
    let code = diff(&current.code, &before.code);
    match (code.as_slice(), current.code.contains_key(WHOLE_PROJECT)) {
        ([], _) => {}
        (_, true) => changes.push(
            "the project's code changed (declare the step's `code:` files to narrow this)"
                .to_string(),
        ),
        (files, false) => changes.push(format!("code changed: {}", short_list(files))),
    }
    let inputs = diff(&current.inputs, &before.inputs);
    if !inputs.is_empty() {
        changes.push(format!("inputs changed: {}", short_list(&inputs)));
    }
    if changes.is_empty() {
        format!(
            "miss: same inputs as run {run_id}, but its cached outputs are gone or it was not cached"
        )
    } else {
        format!("miss against run {run_id}: {}", changes.join("; "))
    }
}

fn short_list(items: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        text.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    text
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

    fn code(digest: &str) -> CodeInfo {
        CodeInfo {
            digest: Some(digest.into()),
            ..CodeInfo::default()
        }
    }

    fn cache_key(
        step: &Step,
        params: &BTreeMap<String, String>,
        working_dir: &Path,
        digest: Option<&str>,
        inputs: &[(&str, &[OutputFile])],
    ) -> String {
        let code = digest.map(code).unwrap_or_default();
        let basis = cache_basis(step, params, working_dir, &code, inputs);
        super::cache_key(step, &basis, working_dir, inputs)
    }

    #[test]
    fn a_step_that_declares_nothing_keeps_the_key_it_always_had() {
        let step = Step::shell("train", "python3 train.py");
        let params = BTreeMap::from([("lr".to_string(), "0.1".to_string())]);
        // The formula of ferry-step-cache-v2 before `code` and `uses_params` existed.
        let before = blake3::hash(
            serde_json::json!({
                "version": KEY_VERSION, "name": step.name, "working_dir": Path::new("."),
                "action": step.action, "env": step.env, "outputs": step.outputs,
                "params": params, "code": Some("abc"), "inputs": Vec::<serde_json::Value>::new(),
            })
            .to_string()
            .as_bytes(),
        )
        .to_hex()
        .to_string();
        assert_eq!(
            cache_key(&step, &params, Path::new("."), Some("abc"), &[]),
            before
        );
    }

    #[test]
    fn declared_code_and_parameters_narrow_the_key_and_misses_say_what_changed() {
        let mut step = Step::shell("evaluate", "python3 evaluate.py");
        step.code = vec!["evaluate.py".into()];
        step.uses_params = Some(vec!["threshold".into()]);
        let params = |epochs: &str, threshold: &str| {
            BTreeMap::from([
                ("epochs".to_string(), epochs.to_string()),
                ("threshold".to_string(), threshold.to_string()),
            ])
        };
        let files = |digest: &str| CodeInfo {
            digest: Some(format!("whole-{digest}")),
            package_key: None,
            step_files: BTreeMap::from([(
                "evaluate".to_string(),
                BTreeMap::from([("evaluate.py".to_string(), digest.to_string())]),
            )]),
        };
        let key = |p: &BTreeMap<String, String>, c: &CodeInfo| {
            let basis = cache_basis(&step, p, Path::new("."), c, &[]);
            (super::cache_key(&step, &basis, Path::new("."), &[]), basis)
        };
        let (base, base_basis) = key(&params("10", "0.5"), &files("e1"));
        // Another parameter, or another file of the project: the same key.
        let (same, _) = key(&params("20", "0.5"), &files("e1"));
        assert_eq!(base, same);
        let mut elsewhere = files("e1");
        elsewhere.digest = Some("whole-other".into());
        assert_eq!(base, key(&params("10", "0.5"), &elsewhere).0);
        // Its parameter or its file: another key, and the miss names it.
        let (by_param, basis) = key(&params("10", "0.7"), &files("e1"));
        assert_ne!(base, by_param);
        assert_eq!(
            explain_miss(&basis, Some(("run-1", &base_basis))),
            "miss against run run-1: parameter `threshold` changed (0.5 → 0.7)"
        );
        let (by_code, basis) = key(&params("10", "0.5"), &files("e2"));
        assert_ne!(base, by_code);
        assert_eq!(
            explain_miss(&basis, Some(("run-1", &base_basis))),
            "miss against run run-1: code changed: evaluate.py"
        );
        assert_eq!(
            explain_miss(&basis, None),
            "miss: no earlier run of this step to reuse"
        );
    }

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
