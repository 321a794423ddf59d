//! Where a run's Jobs live, kept in its record (`RunRecord::placement`), so that whoever reads
//! the record later (`ferry runs list/show/cancel`, `ferry logs`) asks that cluster and
//! namespace with the run's own pending timeout, never with the reader's settings: a reader
//! whose ferry.toml names another namespace must see a live run as running, and must not
//! record it failed or delete anything because it looked in the wrong place.

use std::path::PathBuf;
use std::time::Duration;

use orchestrator_core::run::RunRecord;
use orchestrator_core::{ErrorKind, PluginError};
use serde::{Deserialize, Serialize};

use crate::client::Connection;
use crate::settings::Settings;

/// What the submitter knew of where it put the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// The API server's URL: which cluster.
    pub cluster_url: String,
    pub namespace: String,
    /// The kubeconfig context the submitter used, if it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The kubeconfig file the stack named, if it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// How long a pod of this run may stay unschedulable before the run is failed.
    pub pending_timeout_seconds: u64,
}

impl Placement {
    pub fn of(settings: &Settings, connection: &Connection) -> Placement {
        Placement {
            cluster_url: connection.cluster_url.clone(),
            namespace: connection.namespace.clone(),
            context: settings.context.clone(),
            kubeconfig: settings.kubeconfig.clone(),
            pending_timeout_seconds: settings.pending_timeout.as_secs(),
        }
    }

    /// Kept in the record.
    pub fn store_in(&self, record: &mut RunRecord) {
        if let serde_json::Value::Object(map) =
            serde_json::to_value(self).expect("placements serialise")
        {
            record.placement = map;
        }
    }

    /// The record's placement; `None` for runs recorded before ferry kept one (they are
    /// judged with the reader's settings, as then).
    pub fn from_record(record: &RunRecord) -> Option<Placement> {
        if record.placement.is_empty() {
            return None;
        }
        serde_json::from_value(serde_json::Value::Object(record.placement.clone())).ok()
    }

    pub fn pending_timeout(&self) -> Duration {
        Duration::from_secs(self.pending_timeout_seconds)
    }

    /// The reader's settings pointed at this placement: its namespace, its context, and its
    /// kubeconfig when that file exists here (else the reader's own way to the cluster, which
    /// [`Placement::check`] then compares).
    pub fn settings_for(&self, reader: &Settings) -> Settings {
        let mut settings = reader.clone();
        settings.namespace = Some(self.namespace.clone());
        if self.context.is_some() {
            settings.context = self.context.clone();
        }
        if let Some(path) = self.kubeconfig.as_ref().filter(|p| p.exists()) {
            settings.kubeconfig = Some(path.clone());
        }
        settings.pending_timeout = self.pending_timeout();
        settings
    }

    /// Whether `connection` reaches this placement's cluster; if not, what the reader should
    /// do (an `UNAVAILABLE` error, which readers show as "unknown", never as a failure).
    pub fn check(&self, run_id: &str, connection: &Connection) -> Result<(), PluginError> {
        if same_server(&connection.cluster_url, &self.cluster_url) {
            return Ok(());
        }
        let context = self
            .context
            .as_deref()
            .map(|c| format!(" (context `{c}`)"))
            .unwrap_or_default();
        Err(PluginError::new(
            ErrorKind::UNAVAILABLE,
            format!(
                "kubernetes: run {run_id} lives in namespace {} of the cluster at {}{context}, but {} reaches {}; use that cluster's kubeconfig (setting `kubeconfig` or $KUBECONFIG) to see or cancel it",
                self.namespace, self.cluster_url, connection.source, connection.cluster_url
            ),
        ))
    }
}

/// Two API server URLs name the same server (a trailing slash is no difference).
fn same_server(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement() -> Placement {
        Placement {
            cluster_url: "https://10.0.0.1:6443/".into(),
            namespace: "team-a".into(),
            context: Some("prod".into()),
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            pending_timeout_seconds: 900,
        }
    }

    #[test]
    fn a_reader_with_other_settings_is_pointed_at_the_runs_namespace_and_timeout() {
        let reader = Settings {
            namespace: Some("team-b".into()),
            pending_timeout: Duration::from_secs(5),
            ..Settings::default()
        };
        let settings = placement().settings_for(&reader);
        assert_eq!(settings.namespace.as_deref(), Some("team-a"));
        assert_eq!(settings.context.as_deref(), Some("prod"));
        assert_eq!(settings.pending_timeout, Duration::from_secs(900));
        // A kubeconfig this machine lacks is not imposed on the reader.
        assert_eq!(settings.kubeconfig, None);
    }

    #[test]
    fn the_placement_round_trips_through_the_record_and_names_its_cluster() {
        let mut record: RunRecord = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "run_id": "r", "pipeline": "p", "stack": "k8s",
            "orchestrator": "kubernetes", "status": "running",
            "created_at": "2026-12-04T10:00:00Z", "steps": {}
        }))
        .unwrap();
        assert_eq!(Placement::from_record(&record), None);
        placement().store_in(&mut record);
        assert_eq!(Placement::from_record(&record), Some(placement()));

        // The mock client's buffer spawns onto a runtime.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _inside = runtime.enter();
        let (mut connection, _handle) = crate::mock::connection();
        connection.cluster_url = "https://10.0.0.1:6443".into();
        assert!(placement().check("r", &connection).is_ok());
        connection.cluster_url = "https://127.0.0.1:41000/".into();
        let error = placement().check("r", &connection).unwrap_err();
        assert_eq!(error.kind, ErrorKind::UNAVAILABLE);
        assert!(
            error.message().contains("lives in namespace team-a of the cluster at https://10.0.0.1:6443/ (context `prod`)"),
            "{error}"
        );
    }
}
