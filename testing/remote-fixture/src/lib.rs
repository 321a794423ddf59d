//! Test fixture: an orchestrator plugin that asks for the code package and does what a remote
//! agent does with it (fetch it from the store, verify and unpack it), then records a run
//! whose step logs list the files it found. Proves the `ferry run` → package → upload → plan
//! → plugin path without a cluster.

use chrono::Utc;
use orchestrator_core::PluginError;
use orchestrator_core::run::RunRecords;
use orchestrator_core::run::{Event, LogStream, RunPlan, RunRecord, RunStatus, StepStatus};
use orchestrator_core::sdk::{OrchestratorPlugin, PluginConfig, PluginInfo};
use orchestrator_core::store::{Store, layout};
use orchestrator_host::package::files;
use orchestrator_host::package::unpack::unpack_file;

pub struct RemoteFixture {
    store: Store,
}

impl OrchestratorPlugin for RemoteFixture {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "remote-fixture",
            version: env!("CARGO_PKG_VERSION"),
            description: "test fixture: unpacks the code package like a remote agent",
            config_keys: &[],
        }
    }

    fn new(_config: PluginConfig, store: Store) -> Result<Self, PluginError> {
        Ok(Self { store })
    }

    fn describe(&self) -> String {
        "remote fixture".into()
    }

    fn wants_code_package(&self) -> bool {
        true
    }

    fn render(&self, plan: &RunPlan) -> Result<String, PluginError> {
        Ok(format!("would fetch {:?}\n", plan.code.package_key))
    }

    fn submit(&self, plan: RunPlan) -> Result<String, PluginError> {
        let key = plan
            .code
            .package_key
            .as_deref()
            .ok_or_else(|| PluginError::invalid_input("the plan names no code package"))?;
        let digest = plan.code.digest.as_deref().unwrap_or_default();
        let scratch = tempfile::tempdir().map_err(|e| PluginError::other(e.to_string()))?;
        let archive = scratch.path().join("code.tar.zst");
        self.store.get_file(key, &archive)?;
        let code = scratch.path().join("code");
        unpack_file(&archive, digest, &code).map_err(|e| PluginError::other(e.to_string()))?;
        let listing: Vec<String> = files::select(&code, &[])
            .map_err(|e| PluginError::other(e.to_string()))?
            .files
            .into_iter()
            .map(|f| f.relative)
            .collect();
        let mut record = RunRecord::new(&plan, "remote-fixture");
        record.status = RunStatus::Succeeded;
        record.started_at = Some(Utc::now());
        record.finished_at = record.started_at;
        for (name, step) in record.steps.iter_mut() {
            step.status = StepStatus::Succeeded;
            let log = format!("unpacked {}\n", listing.join("\nunpacked "));
            self.store
                .put_bytes(&layout::step_log(&plan.run_id, name), log.as_bytes())?;
        }
        RunRecords::new(self.store.clone()).put(&record)?;
        Ok(plan.run_id)
    }

    fn status(&self, run_id: &str) -> Result<RunRecord, PluginError> {
        RunRecords::new(self.store.clone())
            .get(run_id)?
            .ok_or_else(|| PluginError::not_found(format!("no run `{run_id}`")))
    }

    fn stream_events(
        &self,
        run_id: &str,
        step: Option<&str>,
        _follow: bool,
        sink: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(), PluginError> {
        let record = self.status(run_id)?;
        for name in &record.step_order {
            if step.is_some_and(|s| s != name) {
                continue;
            }
            let log = self.store.get_bytes(&layout::step_log(run_id, name))?;
            for line in String::from_utf8_lossy(&log).lines() {
                let event = Event::Log {
                    step: name.clone(),
                    stream: LogStream::Stdout,
                    line: line.to_string(),
                    time: Utc::now(),
                };
                if !sink(event) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn cancel(&self, _run_id: &str) -> Result<(), PluginError> {
        Err(PluginError::unsupported("the fixture's runs end at once"))
    }
}

orchestrator_core::export_orchestrator_plugin!(RemoteFixture);
