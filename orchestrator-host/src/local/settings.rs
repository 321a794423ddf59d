//! Settings of the `local` orchestrator.

use std::path::PathBuf;
use std::time::Duration;

use orchestrator_core::PluginError;
use orchestrator_core::pipeline::Resources;
use orchestrator_core::sdk::PluginConfig;

pub(super) const KEYS: &[(&str, &str)] = &[
    (
        "parallelism",
        "steps running at once (default: number of CPU cores)",
    ),
    (
        "work_dir",
        "scratch folder for step outputs and temp files, relative to the project root (default .ferry/work)",
    ),
    (
        "keep_work_dirs",
        "keep each run's scratch folder after it ends, for debugging (default false)",
    ),
    (
        "cpu_budget",
        "cpu all steps running at once may ask for in their `resources`, e.g. \"4\" or \"3500m\" (default: no limit)",
    ),
    (
        "memory_budget",
        "memory all steps running at once may ask for in their `resources`, e.g. \"16Gi\" (default: no limit)",
    ),
    (
        "grace_period",
        "time a step gets between SIGTERM and SIGKILL on timeout or cancel (default 5s)",
    ),
];

#[derive(Debug, Clone)]
pub struct LocalSettings {
    pub parallelism: usize,
    pub work_dir: PathBuf,
    pub keep_work_dirs: bool,
    pub grace_period: Duration,
    /// `cpu_budget`, in millicores.
    pub cpu_budget: Option<u64>,
    /// `memory_budget`, in bytes.
    pub memory_budget: Option<u64>,
}

impl LocalSettings {
    pub fn from_config(config: &PluginConfig) -> Result<Self, PluginError> {
        let parallelism = match config.settings.get("parallelism") {
            None => std::thread::available_parallelism().map_or(2, |n| n.get()),
            Some(value) => match value.as_u64() {
                Some(n @ 1..=1024) => n as usize,
                _ => {
                    return Err(PluginError::invalid_input(format!(
                        "`parallelism` must be a whole number from 1 to 1024, found {value}"
                    )));
                }
            },
        };
        let work_dir =
            config.resolve_path(config.str_setting("work_dir")?.unwrap_or(".ferry/work"));
        let keep_work_dirs = match config.settings.get("keep_work_dirs") {
            None => false,
            Some(value) => value.as_bool().ok_or_else(|| {
                PluginError::invalid_input(format!(
                    "`keep_work_dirs` must be true or false, found {value}"
                ))
            })?,
        };
        let grace_period = match config.str_setting("grace_period")? {
            None => Duration::from_secs(5),
            Some(text) => humantime::parse_duration(text).map_err(|e| {
                PluginError::invalid_input(format!(
                    "`grace_period` must be a duration such as \"5s\", found \"{text}\": {e}"
                ))
            })?,
        };
        let budget = |key: &str, what: &str| -> Result<Option<Resources>, PluginError> {
            let Some(text) = config.str_setting(key)? else {
                return Ok(None);
            };
            let resources = match what {
                "cpu" => Resources::new().cpu(text),
                _ => Resources::new().memory(text),
            };
            let parsed = match what {
                "cpu" => resources.cpu_millis(),
                _ => resources.memory_bytes(),
            };
            match parsed {
                Some(n) if n > 0 => Ok(Some(resources)),
                _ => Err(PluginError::invalid_input(format!(
                    "`{key}` must be a {what} quantity such as {}, found \"{text}\"",
                    if what == "cpu" {
                        "\"4\" or \"3500m\""
                    } else {
                        "\"16Gi\""
                    }
                ))),
            }
        };
        let cpu_budget = budget("cpu_budget", "cpu")?.and_then(|r| r.cpu_millis());
        let memory_budget = budget("memory_budget", "memory")?.and_then(|r| r.memory_bytes());
        Ok(Self {
            parallelism,
            work_dir,
            keep_work_dirs,
            grace_period,
            cpu_budget,
            memory_budget,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> PluginConfig {
        PluginConfig::new(json.as_object().unwrap().clone()).with_project_root("/proj")
    }

    #[test]
    fn defaults_and_overrides() {
        let s = LocalSettings::from_config(&config(serde_json::json!({}))).unwrap();
        assert!(s.parallelism >= 1);
        assert_eq!(s.work_dir, PathBuf::from("/proj/.ferry/work"));
        let s = LocalSettings::from_config(&config(
            serde_json::json!({"parallelism": 3, "grace_period": "2s", "keep_work_dirs": true}),
        ))
        .unwrap();
        assert_eq!(
            (s.parallelism, s.grace_period.as_secs(), s.keep_work_dirs),
            (3, 2, true)
        );
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        for (json, needle) in [
            (serde_json::json!({"parallelism": 0}), "from 1 to 1024"),
            (serde_json::json!({"parallelism": "many"}), "whole number"),
            (serde_json::json!({"grace_period": "soon"}), "duration"),
            (
                serde_json::json!({"keep_work_dirs": "yes"}),
                "true or false",
            ),
        ] {
            let err = LocalSettings::from_config(&config(json)).unwrap_err();
            assert!(err.message().contains(needle), "{err}");
        }
    }
}
