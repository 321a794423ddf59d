//! The run record, `runs/<run-id>/run.json`: the one source of truth about a run.
//!
//! Any machine that can read the store can list and inspect runs, so the record carries
//! everything `ferry runs show` prints. Fields are only ever added (with `#[serde(default)]`),
//! so records written by older ferry versions stay readable.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::RunPlan;
use crate::abi::JSON_SCHEMA_VERSION;

macro_rules! status_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!("unknown status `{other}`")),
                }
            }
        }
    };
}

status_enum! {
    /// Where a run is in its life.
    RunStatus {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

status_enum! {
    /// Where a step is in its life.
    StepStatus {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
        /// Not run because a step it depends on failed or was cancelled.
        Skipped => "skipped",
        /// Not run: an earlier identical step's outputs were reused.
        Cached => "cached",
    }
}

impl RunStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl StepStatus {
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }

    /// Whether downstream steps may use this step's outputs.
    pub fn is_success(self) -> bool {
        matches!(self, Self::Succeeded | Self::Cached)
    }
}

/// A step of a given run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRef {
    pub run_id: String,
    pub step: String,
}

/// One output file a step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path relative to the step's output directory.
    pub path: String,
    pub size: u64,
    /// blake3 of the content.
    pub digest: String,
    /// Restored on download, so a cached tool stays runnable.
    #[serde(default)]
    pub executable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub status: StepStatus,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why the step failed, was skipped or cancelled, in words a user can act on.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub cache_key: Option<String>,
    /// Set when the step was a cache hit: whose outputs it reuses.
    #[serde(default)]
    pub outputs_from: Option<StepRef>,
    #[serde(default)]
    pub outputs: Vec<OutputFile>,
    /// Every attempt that ended, in order, with how it ended (`attempts` counts them all,
    /// including one still running).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempt_history: Vec<AttemptRecord>,
    /// What the step's cache key covered, to tell why a later run's key differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_basis: Option<CacheBasis>,
    /// Why the step was a cache hit or a miss, for people (`ferry run --explain-cache`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_note: Option<String>,
    /// When ferry itself did what it does around the step's command, for a step run by a
    /// remote backend (interface 0.1.5): with `attempt_history` it splits the time between
    /// dependent steps into ferry's and the cluster's.
    #[serde(default, skip_serializing_if = "StepTimings::is_empty")]
    pub timings: StepTimings,
}

/// Moments in a remotely run step's life outside its command, each taken by the ferry
/// process involved on its own clock (on different machines they are only as close as the
/// clocks are). Local steps leave them empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTimings {
    /// The coordinator began to start the step: its dependencies had all ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// The cluster had accepted the step's Job (the create call returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<DateTime<Utc>>,
    /// The step's agent started in its pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_started_at: Option<DateTime<Utc>>,
    /// The coordinator learned that the step's Job had ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_finished_at: Option<DateTime<Utc>>,
}

impl StepTimings {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What a step's cache key is computed from, kept apart so that two keys can be compared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheBasis {
    /// Digest of the step's definition: its command, env, outputs and folder.
    pub definition: String,
    /// The parameters the key covers, with their values.
    pub params: BTreeMap<String, String>,
    /// The code the key covers: path → digest of each file the step's `code` globs match,
    /// or `"*"` → the whole project's digest.
    pub code: BTreeMap<String, String>,
    /// `step/path` → digest of every input file.
    pub inputs: BTreeMap<String, String>,
}

/// How one attempt of a step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub number: u32,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why it failed (`OOMKilled: ...`, `exit code 3`, `evicted: ...`); `None` if it succeeded.
    #[serde(default)]
    pub reason: Option<String>,
}

impl StepRecord {
    pub fn pending() -> Self {
        Self {
            status: StepStatus::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            exit_code: None,
            error: None,
            cache_key: None,
            outputs_from: None,
            outputs: Vec::new(),
            attempt_history: Vec::new(),
            cache_basis: None,
            cache_note: None,
            timings: StepTimings::default(),
        }
    }

    /// The run and step whose stored outputs hold this step's results.
    pub fn outputs_location(&self, run_id: &str, step: &str) -> StepRef {
        self.outputs_from.clone().unwrap_or_else(|| StepRef {
            run_id: run_id.to_string(),
            step: step.to_string(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema_version: u32,
    pub run_id: String,
    pub pipeline: String,
    #[serde(default)]
    pub pipeline_file: Option<String>,
    pub stack: String,
    /// The orchestrator that ran it (`local`, `kubernetes`, ...).
    pub orchestrator: String,
    #[serde(default)]
    pub code_digest: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub status: RunStatus,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Last time the orchestrator proved it was alive; a running record whose heartbeat is
    /// stale belongs to an orchestrator that died.
    #[serde(default)]
    pub heartbeat_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub error: Option<String>,
    /// Host name and process id of the orchestrator, for "who is running this?".
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    /// Steps in pipeline order.
    pub steps: BTreeMap<String, StepRecord>,
    /// Step names in pipeline (file) order; `steps` is a map for easy lookup.
    #[serde(default)]
    pub step_order: Vec<String>,
    /// Where the orchestrator put the run's work, in its own terms (Kubernetes: the cluster,
    /// namespace and what judging the run needs). Whoever reads the record later asks there,
    /// never with its own settings.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub placement: serde_json::Map<String, serde_json::Value>,
    /// The schedule that started the run, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The run this one started again (`ferry runs retry`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<String>,
}

impl RunRecord {
    /// A fresh record for a plan: every step pending.
    pub fn new(plan: &RunPlan, orchestrator: &str) -> Self {
        Self {
            schema_version: JSON_SCHEMA_VERSION,
            run_id: plan.run_id.clone(),
            pipeline: plan.pipeline.name.clone(),
            pipeline_file: Some(plan.pipeline_file.display().to_string()),
            stack: plan.stack.clone(),
            orchestrator: orchestrator.to_string(),
            code_digest: plan.code.digest.clone(),
            params: plan.params.clone(),
            status: RunStatus::Pending,
            created_at: plan.created_at,
            started_at: None,
            finished_at: None,
            heartbeat_at: None,
            error: None,
            host: None,
            pid: None,
            steps: plan
                .pipeline
                .steps
                .iter()
                .map(|s| (s.name.clone(), StepRecord::pending()))
                .collect(),
            step_order: plan.pipeline.steps.iter().map(|s| s.name.clone()).collect(),
            placement: serde_json::Map::new(),
            schedule: plan.schedule.clone(),
            resumed_from: plan.resumed_from.clone(),
        }
    }

    /// Steps in pipeline order (falls back to name order for records without `step_order`).
    pub fn ordered_steps(&self) -> Vec<(&str, &StepRecord)> {
        if self.step_order.len() == self.steps.len() {
            self.step_order
                .iter()
                .filter_map(|name| self.steps.get(name).map(|r| (name.as_str(), r)))
                .collect()
        } else {
            self.steps.iter().map(|(k, v)| (k.as_str(), v)).collect()
        }
    }

    pub fn duration(&self) -> Option<chrono::Duration> {
        Some(self.finished_at? - self.started_at?)
    }

    /// Ends the run from its steps' outcomes: failed if a step failed (the error names them),
    /// else cancelled if a step was cancelled, else succeeded.
    pub fn finish_from_steps(&mut self, at: DateTime<Utc>) {
        let any = |s: StepStatus| self.steps.values().any(|r| r.status == s);
        let failed: Vec<&str> = self
            .ordered_steps()
            .into_iter()
            .filter(|(_, r)| r.status == StepStatus::Failed)
            .map(|(name, _)| name)
            .collect();
        (self.status, self.error) = if !failed.is_empty() {
            let error = format!("step {} failed", failed.join(", "));
            (RunStatus::Failed, Some(error))
        } else if any(StepStatus::Cancelled) {
            (RunStatus::Cancelled, Some("cancelled".to_string()))
        } else {
            (RunStatus::Succeeded, None)
        };
        self.finished_at = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_as_lowercase_words() {
        for status in [StepStatus::Cached, StepStatus::Skipped, StepStatus::Running] {
            assert_eq!(status.as_str().parse::<StepStatus>().unwrap(), status);
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{status}\"")
            );
        }
        assert!(RunStatus::Cancelled.is_finished());
        assert!(!RunStatus::Running.is_finished());
    }

    #[test]
    fn a_minimal_old_record_still_parses() {
        let text = r#"{"schema_version":1,"run_id":"r","pipeline":"p","stack":"local",
            "orchestrator":"local","status":"succeeded","created_at":"2026-01-01T00:00:00Z",
            "steps":{"a":{"status":"succeeded"}}}"#;
        let record: RunRecord = serde_json::from_str(text).unwrap();
        assert_eq!(record.steps["a"].status, StepStatus::Succeeded);
        assert_eq!(record.ordered_steps().len(), 1);
    }
}
