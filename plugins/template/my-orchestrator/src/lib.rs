//! `my-orchestrator`: a ferry orchestrator that runs steps on this machine one at a time (for
//! a workstation with a single GPU, say), by handing runs to the built-in local orchestrator.
//!
//! An orchestrator implements `OrchestratorPlugin`: `submit` starts a run and returns its id
//! at once; `status` and `stream_events` report on it from the run record in the artifact store
//! (so that any machine can follow it); `cancel` stops it. Start from here and replace the
//! delegation with calls to your scheduler, keeping run records and step logs in `store`.
//!
//! ```toml
//! [stacks.mine]
//! orchestrator = { plugin = "my-orchestrator", settings = { work_dir = "/scratch/ferry" } }
//! store = { plugin = "my-store" }
//! ```

use orchestrator_core::PluginError;
use orchestrator_core::run::{Event, RunPlan, RunRecord};
use orchestrator_core::sdk::{OrchestratorPlugin, PluginConfig, PluginInfo};
use orchestrator_core::store::Store;
use orchestrator_host::local::LocalOrchestrator;

const KEYS: &[(&str, &str)] = &[(
    "work_dir",
    "scratch folder for step outputs, relative to the project root (default .ferry/work)",
)];

pub struct MyOrchestrator {
    inner: LocalOrchestrator,
}

impl OrchestratorPlugin for MyOrchestrator {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "my-orchestrator",
            version: env!("CARGO_PKG_VERSION"),
            description: "runs steps on this machine, one at a time",
            config_keys: KEYS,
        }
    }

    fn new(mut config: PluginConfig, store: Store) -> Result<Self, PluginError> {
        // Our settings are checked already (only KEYS); the local orchestrator takes the rest.
        config.settings.insert(
            "parallelism".into(),
            orchestrator_core::sdk::serde_json::Value::from(1),
        );
        Ok(Self {
            inner: LocalOrchestrator::new(config, store)?,
        })
    }

    fn describe(&self) -> String {
        "local processes, one step at a time (my-orchestrator)".into()
    }

    fn render(&self, plan: &RunPlan) -> Result<String, PluginError> {
        self.inner.render(plan)
    }

    fn submit(&self, plan: RunPlan) -> Result<String, PluginError> {
        self.inner.submit(plan)
    }

    fn status(&self, run_id: &str) -> Result<RunRecord, PluginError> {
        self.inner.status(run_id)
    }

    fn stream_events(
        &self,
        run_id: &str,
        step: Option<&str>,
        follow: bool,
        sink: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(), PluginError> {
        self.inner.stream_events(run_id, step, follow, sink)
    }

    fn cancel(&self, run_id: &str) -> Result<(), PluginError> {
        self.inner.cancel(run_id)
    }
}

orchestrator_core::export_orchestrator_plugin!(MyOrchestrator);
