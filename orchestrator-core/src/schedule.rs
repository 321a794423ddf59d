//! Schedules: a pipeline run on a cron schedule by the orchestrator itself, with nobody's
//! ferry running (`ferry schedule`). Only orchestrators that run without the submitting
//! machine can keep one (Kubernetes: a CronJob); the others answer
//! [`ErrorKind::UNSUPPORTED`](crate::ErrorKind::UNSUPPORTED).
//!
//! A schedule keeps a *template* plan: the pipeline, its parameters and the code package, all
//! fixed when the schedule is created. Its run id is empty; each time the schedule fires, the
//! run gets a fresh id ([`RunPlan::mint_run_id`]) and `schedule` names the schedule in its
//! record.
//!
//! Requests and replies cross the plugin boundary as JSON ([`ScheduleRequest::to_json`],
//! [`ScheduleReply::from_json`]), like run plans.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::abi::{JSON_SCHEMA_VERSION, PluginError};
use crate::run::RunPlan;

/// Longest schedule name: the orchestrator derives object names from it (a CronJob's name
/// may have 52 characters, and ferry prefixes it).
pub const MAX_NAME: usize = 40;

/// What happens when a schedule fires while its previous run is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// Start the new run beside the old one.
    Allow,
    /// Skip this firing; the old run goes on. The default: a nightly retrain that overruns
    /// should not start a second one on the same data.
    #[default]
    Forbid,
    /// Cancel the old run and start the new one.
    Replace,
}

impl Concurrency {
    pub fn name(self) -> &'static str {
        match self {
            Concurrency::Allow => "allow",
            Concurrency::Forbid => "forbid",
            Concurrency::Replace => "replace",
        }
    }
}

fn default_successful_history() -> u32 {
    3
}

fn default_failed_history() -> u32 {
    1
}

/// When and how a schedule starts runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// Lowercase letters, digits and '-', starting with a letter; see [`check_name`].
    pub name: String,
    /// A five-field cron expression (`30 2 * * *`) or a macro (`@daily`).
    pub cron: String,
    /// The IANA time zone the expression is read in (`Europe/Paris`); UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default)]
    pub concurrency: Concurrency,
    /// A firing missed by more than this (the cluster was down, the schedule suspended) is
    /// skipped rather than started late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_seconds: Option<u64>,
    /// How many finished launches of each kind the orchestrator keeps for inspection (the
    /// runs' records stay in the store regardless).
    #[serde(default = "default_successful_history")]
    pub successful_history: u32,
    #[serde(default = "default_failed_history")]
    pub failed_history: u32,
    /// Created suspended: nothing fires until `ferry schedule resume`.
    #[serde(default)]
    pub suspend: bool,
}

impl ScheduleSpec {
    pub fn new(name: impl Into<String>, cron: impl Into<String>) -> Self {
        ScheduleSpec {
            name: name.into(),
            cron: cron.into(),
            timezone: None,
            concurrency: Concurrency::default(),
            starting_deadline_seconds: None,
            successful_history: default_successful_history(),
            failed_history: default_failed_history(),
            suspend: false,
        }
    }
}

/// Whether `name` can name a schedule; the error says what is wrong with it.
pub fn check_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_NAME {
        return Err(format!(
            "schedule name `{name}` must have 1 to {MAX_NAME} characters"
        ));
    }
    let ok = bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if !ok {
        return Err(format!(
            "schedule name `{name}` must consist of lower case letters, digits and '-', start with a letter and not end with '-'"
        ));
    }
    Ok(())
}

/// A schedule as the orchestrator knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    pub spec: ScheduleSpec,
    pub pipeline: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The code every run of the schedule uses (pinned when it was created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// When it last fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired_at: Option<DateTime<Utc>>,
    /// When a run it started last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_succeeded_at: Option<DateTime<Utc>>,
    /// The next firings the orchestrator can tell (empty if it cannot compute them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next_fire_times: Vec<DateTime<Utc>>,
    /// Launches in progress.
    #[serde(default)]
    pub active: u32,
    /// Where the schedule lives, for people (`namespace ml`).
    #[serde(default)]
    pub place: String,
}

/// What the host asks of an orchestrator's schedules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ScheduleRequest {
    /// Create a schedule that runs `plan` (a template: its run id is empty). Refused before
    /// anything is created when the spec is invalid or the name is taken.
    Create {
        spec: ScheduleSpec,
        plan: RunPlan,
    },
    /// Whether the orchestrator would accept `spec` (its name, its cron expression): asked
    /// first, before the code package is even built.
    Check {
        spec: ScheduleSpec,
    },
    /// What `Create` would create, human-readable, without creating it.
    Render {
        spec: ScheduleSpec,
        plan: RunPlan,
    },
    List,
    Show {
        name: String,
    },
    Suspend {
        name: String,
    },
    Resume {
        name: String,
    },
    /// Remove the schedule; runs it started go on to their end.
    Delete {
        name: String,
    },
    /// Start a run of the schedule now, under `run_id`.
    Trigger {
        name: String,
        run_id: String,
    },
}

/// The orchestrator's answer to a [`ScheduleRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum ScheduleReply {
    /// To `Check`: the spec is acceptable.
    Checked,
    /// To `Render`.
    Rendered { text: String },
    /// To `Create`, `Show`, `Suspend`, `Resume`.
    Schedule { schedule: Box<ScheduleInfo> },
    /// To `List`, by name.
    Schedules { schedules: Vec<ScheduleInfo> },
    /// To `Trigger`: the run that was started, and what started it (`Job nightly-manual-x`).
    Triggered { run_id: String, launched: String },
    /// To `Delete`.
    Deleted { name: String },
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    schema_version: u32,
    #[serde(flatten)]
    body: T,
}

fn to_json<T: Serialize>(body: &T) -> String {
    serde_json::to_string(&Envelope {
        schema_version: JSON_SCHEMA_VERSION,
        body,
    })
    .expect("schedule messages serialise")
}

fn from_json<T: for<'de> Deserialize<'de>>(text: &str, what: &str) -> Result<T, PluginError> {
    serde_json::from_str::<Envelope<T>>(text)
        .map(|e| e.body)
        .map_err(|e| PluginError::invalid_input(format!("malformed schedule {what}: {e}")))
}

impl ScheduleRequest {
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    pub fn from_json(text: &str) -> Result<Self, PluginError> {
        from_json(text, "request")
    }
}

impl ScheduleReply {
    fn name(&self) -> &'static str {
        match self {
            ScheduleReply::Checked => "checked",
            ScheduleReply::Rendered { .. } => "rendered",
            ScheduleReply::Schedule { .. } => "schedule",
            ScheduleReply::Schedules { .. } => "schedules",
            ScheduleReply::Triggered { .. } => "triggered",
            ScheduleReply::Deleted { .. } => "deleted",
        }
    }

    fn wrong(&self, wanted: &str) -> PluginError {
        PluginError::other(format!(
            "the orchestrator answered `{}` where `{wanted}` was due; upgrade the plugin",
            self.name()
        ))
    }

    /// The answer to `Create`, `Show`, `Suspend`, `Resume`.
    pub fn into_schedule(self) -> Result<ScheduleInfo, PluginError> {
        match self {
            ScheduleReply::Schedule { schedule } => Ok(*schedule),
            other => Err(other.wrong("schedule")),
        }
    }

    /// The answer to `List`.
    pub fn into_schedules(self) -> Result<Vec<ScheduleInfo>, PluginError> {
        match self {
            ScheduleReply::Schedules { schedules } => Ok(schedules),
            other => Err(other.wrong("schedules")),
        }
    }

    /// The answer to `Render`.
    pub fn into_rendered(self) -> Result<String, PluginError> {
        match self {
            ScheduleReply::Rendered { text } => Ok(text),
            other => Err(other.wrong("rendered")),
        }
    }

    /// The answer to `Trigger`: the run id and what started it.
    pub fn into_triggered(self) -> Result<(String, String), PluginError> {
        match self {
            ScheduleReply::Triggered { run_id, launched } => Ok((run_id, launched)),
            other => Err(other.wrong("triggered")),
        }
    }

    pub fn to_json(&self) -> String {
        to_json(self)
    }

    pub fn from_json(text: &str) -> Result<Self, PluginError> {
        from_json(text, "reply")
    }
}

impl RunPlan {
    /// Whether this plan is a schedule's template (no run id yet).
    pub fn is_template(&self) -> bool {
        self.run_id.is_empty()
    }

    /// Gives a template its run's id: `run_id` if one was chosen (`ferry schedule trigger`),
    /// else a new one.
    pub fn mint_run_id(&mut self, run_id: Option<String>) {
        if self.is_template() {
            self.run_id = run_id.unwrap_or_else(crate::run::new_run_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_with_a_schema_version() {
        let request = ScheduleRequest::Trigger {
            name: "nightly".into(),
            run_id: "20261204-010000-000-abcdef".into(),
        };
        let json = request.to_json();
        assert!(json.contains("\"schema_version\":1"), "{json}");
        assert!(json.contains("\"action\":\"trigger\""), "{json}");
        assert_eq!(ScheduleRequest::from_json(&json).unwrap(), request);
        let reply = ScheduleReply::Deleted {
            name: "nightly".into(),
        };
        assert_eq!(ScheduleReply::from_json(&reply.to_json()).unwrap(), reply);
        let error = ScheduleRequest::from_json("{\"action\":\"explode\"}").unwrap_err();
        assert!(
            error.message().contains("malformed schedule request"),
            "{error}"
        );
    }

    #[test]
    fn a_spec_defaults_to_forbid_and_small_histories() {
        let spec: ScheduleSpec =
            serde_json::from_str(r#"{"name": "nightly", "cron": "0 2 * * *"}"#).unwrap();
        assert_eq!(spec, ScheduleSpec::new("nightly", "0 2 * * *"));
        assert_eq!(spec.concurrency, Concurrency::Forbid);
        assert_eq!((spec.successful_history, spec.failed_history), (3, 1));
    }

    #[test]
    fn names_are_dns_labels_that_start_with_a_letter() {
        assert!(check_name("nightly-retrain-2").is_ok());
        for bad in [
            "",
            "Nightly",
            "2nightly",
            "nightly-",
            "night_ly",
            &"a".repeat(41),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
