//! The run plan: everything an orchestrator needs to run a pipeline, as one JSON document.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::abi::{JSON_SCHEMA_VERSION, PluginError};
use crate::pipeline::Pipeline;

/// Which code a run uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CodeInfo {
    /// blake3 digest of the project's files (see `package::files::tree_digest`).
    pub digest: Option<String>,
    /// The store key of the code package, for orchestrators that ship code elsewhere.
    pub package_key: Option<String>,
    /// Steps that declare their `code`: path → digest of each project file their globs match
    /// (what their cache keys cover instead of `digest`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub step_files: BTreeMap<String, BTreeMap<String, String>>,
}

/// What `submit` receives. Serialised with a schema version so it can grow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    pub schema_version: u32,
    pub run_id: String,
    pub pipeline: Pipeline,
    /// The pipeline file, relative to the project root.
    pub pipeline_file: PathBuf,
    /// Resolved pipeline parameters (defaults merged with `--param`).
    pub params: BTreeMap<String, String>,
    /// Where the project lives on the submitting machine.
    pub project_root: PathBuf,
    /// Directory steps run in, relative to the project root (the pipeline file's directory).
    pub working_dir: PathBuf,
    /// The stack's name, for the record.
    pub stack: String,
    pub code: CodeInfo,
    /// `--no-cache`: run every step even when a cached result exists.
    pub no_cache: bool,
    pub created_at: DateTime<Utc>,
    /// Run only this step, reading its inputs from the results of the same run's upstream
    /// steps in the store and writing its own result to `steps/<step>/result.json` instead of
    /// the run record (what each container runs when a backend gives every step its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_step: Option<String>,
    /// With `only_step`: the step's earlier attempts that ended with their pod (evicted, the
    /// pod OOM-killed, its node gone), which a backend that starts a new pod for the step
    /// hands on. They count against the step's `retries`, and its record keeps them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prior_attempts: Vec<super::AttemptRecord>,
    /// The schedule this run was started by (`ferry schedule`), for its record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// `ferry runs retry`: the run this one starts again, for its record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<String>,
    /// `ferry runs retry`: steps that do not run again, by name, and the earlier outputs they
    /// take instead (verified by digest when restored, like a cache hit's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reuse: BTreeMap<String, ReusedOutputs>,
}

/// The stored outputs a step of a resumed run takes instead of running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReusedOutputs {
    /// Where they are stored.
    pub source: super::StepRef,
    pub outputs: Vec<super::OutputFile>,
}

impl RunPlan {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("run plans serialise")
    }

    pub fn from_json(text: &str) -> Result<Self, PluginError> {
        #[derive(Deserialize)]
        struct Version {
            schema_version: u32,
        }
        let version: Version = serde_json::from_str(text)
            .map_err(|e| PluginError::invalid_input(format!("malformed run plan: {e}")))?;
        if version.schema_version > JSON_SCHEMA_VERSION {
            return Err(PluginError::invalid_input(format!(
                "the run plan uses schema version {} but this plugin understands up to {JSON_SCHEMA_VERSION}; upgrade the plugin",
                version.schema_version
            )));
        }
        serde_json::from_str(text)
            .map_err(|e| PluginError::invalid_input(format!("malformed run plan: {e}")))
    }
}
