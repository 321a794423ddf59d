//! The runtime of `ferry agent run`, what a remote orchestrator's pod runs. It opens the
//! stack's store from `FERRY_AGENT_STORE`, fetches the code package the plan in
//! `FERRY_AGENT_PLAN` names, verifies and unpacks it, and runs the pipeline with the local
//! orchestrator against that store, handing every event to the caller (the CLI prints them as
//! JSON lines, which the machine that follows the run reads from the pod log).
//!
//! Two variations: with a step named, the agent runs one step of the run (its inputs come from
//! the upstream steps' results in the store, and its result goes to `steps/NAME/result.json`);
//! with `FERRY_AGENT_ORCHESTRATOR` set, it hands the plan to that orchestrator plugin instead of
//! running steps itself (the Kubernetes coordinator, which starts one Job per step).
//!
//! When the agent cannot start what it was asked to run, it says why in the store (the run's
//! or the step's record), so that nobody waits for it.

use std::path::{Path, PathBuf};

use orchestrator_core::PluginError;
use orchestrator_core::env_vars::{
    FERRY_AGENT_LOCAL_SETTINGS, FERRY_AGENT_ORCHESTRATOR, FERRY_AGENT_PLAN,
    FERRY_AGENT_PRIOR_ATTEMPTS, FERRY_AGENT_RUN_ID, FERRY_AGENT_STORE,
};
use orchestrator_core::host::OrchestratorHandle;
use orchestrator_core::run::{
    Event, RunPlan, RunRecord, RunRecords, RunStatus, StepRecord, StepStatus,
};
use orchestrator_core::sdk::{OrchestratorPlugin as _, PluginConfig, StoreConnection};
use orchestrator_core::store::Store;
use thiserror::Error;

use crate::config::ComponentConfig;
use crate::loader::SearchPath;
use crate::local::LocalOrchestrator;
use crate::package::unpack::{UnpackError, unpack_file};
use crate::stack;

/// Why the agent could not run what it was asked to.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error(
        "{name} is not set: `ferry agent` runs inside a pod started by a remote orchestrator, which sets it"
    )]
    MissingEnv { name: &'static str },
    #[error("reading the run plan")]
    Plan(#[source] PluginError),
    #[error("reading {what}")]
    Malformed {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("reading the working directory")]
    WorkingDir(#[source] std::io::Error),
    #[error("opening the {component} (plugin `{plugin}`)")]
    Open {
        component: &'static str,
        plugin: String,
        #[source]
        source: stack::Error,
    },
    #[error("the run plan {0}")]
    PlanIncomplete(&'static str),
    #[error("fetching the code package {key} from {url}")]
    Fetch {
        key: String,
        url: String,
        #[source]
        source: PluginError,
    },
    #[error("unpacking the code package {key}")]
    Unpack {
        key: String,
        #[source]
        source: UnpackError,
    },
    /// Starting, following or reading the result of the run.
    #[error("{doing}")]
    Run {
        doing: &'static str,
        #[source]
        source: PluginError,
    },
}

type Result<T, E = AgentError> = std::result::Result<T, E>;

/// What the agent was asked to run and where, read from the environment.
pub struct Agent {
    plan: RunPlan,
    store: Store,
    connection: StoreConnection,
    /// The pod's working directory: the code is unpacked under it.
    workdir: PathBuf,
    search: SearchPath,
    /// A schedule's launch: the plan was a template, whose run this agent started (and
    /// cancels if it is stopped).
    launch: bool,
}

/// When this process's agent began, as a step's record gives it
/// (`StepTimings::agent_started_at`): set first thing by [`Agent::from_env`].
static STARTED_AT: std::sync::OnceLock<chrono::DateTime<chrono::Utc>> = std::sync::OnceLock::new();

/// When the agent in this process started, if this process is one.
pub(crate) fn started_at() -> Option<chrono::DateTime<chrono::Utc>> {
    STARTED_AT.get().copied()
}

impl Agent {
    /// Reads the plan and the store settings the submitting orchestrator put in the
    /// environment, and opens the store. `only_step` runs one step of the run.
    pub fn from_env(search: SearchPath, only_step: Option<String>) -> Result<Self> {
        STARTED_AT.get_or_init(chrono::Utc::now);
        // Before anything else reads the environment or starts a thread (see take_secret_env).
        let store_settings = take_secret_env(FERRY_AGENT_STORE)?;
        let mut plan = RunPlan::from_json(&env(FERRY_AGENT_PLAN)?).map_err(AgentError::Plan)?;
        plan.only_step = only_step;
        // A schedule's template: this launch's run gets its id here.
        let launch = plan.is_template();
        plan.mint_run_id(std::env::var(FERRY_AGENT_RUN_ID).ok());
        if let Ok(prior) = std::env::var(FERRY_AGENT_PRIOR_ATTEMPTS) {
            plan.prior_attempts =
                serde_json::from_str(&prior).map_err(|source| AgentError::Malformed {
                    what: "the step's earlier attempts",
                    source,
                })?;
        }
        let connection: StoreConnection =
            serde_json::from_str(&store_settings).map_err(|source| AgentError::Malformed {
                what: "the store settings",
                source,
            })?;
        let workdir = std::env::current_dir().map_err(AgentError::WorkingDir)?;
        let component = ComponentConfig {
            plugin: connection.plugin.clone(),
            settings: connection.settings.clone(),
        };
        let settings_root = connection.project_root.as_deref().unwrap_or(&workdir);
        let (store, _) =
            stack::open_store(&component, settings_root, &search).map_err(|source| {
                AgentError::Open {
                    component: "artifact store",
                    plugin: connection.plugin.clone(),
                    source,
                }
            })?;
        Ok(Self {
            plan,
            store,
            connection,
            workdir,
            search,
            launch,
        })
    }

    /// Runs the plan (or its one step) to its end, handing every event to `sink`, and returns
    /// the final record. Diagnostics go to stderr.
    pub fn run(&self, sink: &mut dyn FnMut(Event) -> bool) -> Result<RunRecord> {
        match std::env::var(FERRY_AGENT_ORCHESTRATOR) {
            Ok(orchestrator) => self
                .coordinate(&orchestrator, sink)
                .inspect_err(|error| self.record_failure(&crate::errors::one_line(error))),
            Err(_) => self.run_steps(sink),
        }
    }

    /// Hands the plan to the orchestrator named in `FERRY_AGENT_ORCHESTRATOR` (which the
    /// submitting orchestrator wrote) and relays its events until the run ends.
    fn coordinate(
        &self,
        orchestrator: &str,
        sink: &mut dyn FnMut(Event) -> bool,
    ) -> Result<RunRecord> {
        let opened = serde_json::from_str::<ComponentConfig>(orchestrator)
            .map_err(|source| AgentError::Malformed {
                what: FERRY_AGENT_ORCHESTRATOR,
                source,
            })
            .and_then(|component| {
                stack::open_orchestrator(
                    &component,
                    &self.workdir,
                    &self.store,
                    Some(self.connection.clone()),
                    &self.search,
                )
                .map(|(handle, _)| (handle, component.plugin.clone()))
                .map_err(|source| AgentError::Open {
                    component: "orchestrator",
                    plugin: component.plugin,
                    source,
                })
            });
        let (orchestrator, plugin) = opened?;
        eprintln!(
            "ferry agent: run {} of `{}` coordinated by `{plugin}`",
            self.plan.run_id, self.plan.pipeline.name
        );
        std::thread::scope(|scope| -> Result<()> {
            // Closed when this scope ends, which stops the watch for SIGTERM.
            let (_followed, done) = tokio::sync::oneshot::channel::<()>();
            if self.launch {
                let (orchestrator, run_id) = (&orchestrator, self.plan.run_id.as_str());
                scope.spawn(move || cancel_when_stopped(orchestrator, run_id, done));
            }
            if self.launch
                && let Err(error) = crate::lifecycle::plan::keep(&self.store, &self.plan)
            {
                eprintln!(
                    "ferry agent: cannot keep the run's plan (`ferry runs retry` will not find it): {error}"
                );
            }
            let run_id = orchestrator
                .submit(&self.plan)
                .map_err(run("starting the run"))?;
            orchestrator
                .stream_events(&run_id, None, true, &mut *sink)
                .map_err(run("following the run"))
        })?;
        let run_id = self.plan.run_id.clone();
        orchestrator
            .status(&run_id)
            .map_err(run("reading the run's result"))
    }

    /// Fetches the code and runs the plan's steps here, with the local orchestrator.
    fn run_steps(&self, sink: &mut dyn FnMut(Event) -> bool) -> Result<RunRecord> {
        let code = self.workdir.join("code");
        // The store is reachable: say there why the run never started. Failures after this
        // point are the run's own, and the local orchestrator records them.
        self.fetch_code(&code)
            .inspect_err(|error| self.record_failure(&crate::errors::one_line(error)))?;
        eprintln!(
            "ferry agent: run {} of `{}`, code {} unpacked in {}",
            self.plan.run_id,
            self.plan.pipeline.name,
            self.plan.code.digest.as_deref().unwrap_or_default(),
            code.display()
        );
        let mut plan = self.plan.clone();
        plan.project_root = code.clone();
        // What the pod was sized for (parallelism, cpu and memory budgets), if it says.
        let settings = match std::env::var(FERRY_AGENT_LOCAL_SETTINGS) {
            Ok(json) => serde_json::from_str(&json).map_err(|source| AgentError::Malformed {
                what: FERRY_AGENT_LOCAL_SETTINGS,
                source,
            })?,
            Err(_) => Default::default(),
        };
        let local = LocalOrchestrator::new(
            PluginConfig::new(settings).with_project_root(&code),
            self.store.clone(),
        )
        .map_err(run("starting the local orchestrator"))?;
        let run_id = local.submit(plan).map_err(run("starting the run"))?;
        local
            .stream_events(&run_id, None, true, &mut *sink)
            .map_err(run("following the run"))?;
        // The local orchestrator kept the submitter's name and placement in the record.
        let record = local
            .status(&run_id)
            .map_err(run("reading the run's result"))?;
        Ok(record)
    }

    /// Fetches the plan's code package, verifies its digest and unpacks it into `code`.
    fn fetch_code(&self, code: &Path) -> Result<()> {
        let (Some(key), Some(digest)) = (&self.plan.code.package_key, &self.plan.code.digest)
        else {
            let missing = match self.plan.code.package_key {
                None => "names no code package",
                Some(_) => "has no code digest",
            };
            return Err(AgentError::PlanIncomplete(missing));
        };
        let archive = self.workdir.join(".ferry-package.tar.zst");
        self.store
            .get_file(key, &archive)
            .map_err(|source| AgentError::Fetch {
                key: key.to_string(),
                url: self.store.url(),
                source,
            })?;
        unpack_file(&archive, digest, code).map_err(|source| AgentError::Unpack {
            key: key.to_string(),
            source,
        })?;
        let _ = std::fs::remove_file(&archive);
        Ok(())
    }

    /// Records a run (or the one step) that never started, so that nobody waits for it.
    fn record_failure(&self, error: &str) {
        let records = RunRecords::new(self.store.clone());
        let plan = &self.plan;
        let written = if let Some(step) = &plan.only_step {
            let mut result = StepRecord::pending();
            result.status = StepStatus::Failed;
            result.error = Some(format!("the agent could not start the step: {error}"));
            result.finished_at = Some(chrono::Utc::now());
            records.put_step_result(&plan.run_id, step, &result)
        } else {
            let mut record = match records.get(&plan.run_id) {
                Ok(Some(record)) => record,
                _ => RunRecord::new(plan, "agent"),
            };
            record.status = RunStatus::Failed;
            record.error = Some(format!("the agent could not start the run: {error}"));
            record.finished_at = Some(chrono::Utc::now());
            records.put(&record)
        };
        if let Err(write_error) = written {
            eprintln!("ferry agent: cannot record the failure: {write_error}");
        }
    }
}

/// A schedule's launch that is stopped (its CronJob replaced it, or the schedule was deleted)
/// cancels its run: the run goes with the launch that the schedule counts as active.
fn cancel_when_stopped(
    orchestrator: &OrchestratorHandle,
    run_id: &str,
    done: tokio::sync::oneshot::Receiver<()>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let stopped = runtime.block_on(async {
        let Ok(mut terminate) = signal(SignalKind::terminate()) else {
            return false;
        };
        tokio::select! {
            _ = terminate.recv() => true,
            _ = done => false,
        }
    });
    if stopped {
        eprintln!("ferry agent: this launch was stopped (SIGTERM); cancelling run {run_id}");
        if let Err(error) = orchestrator.cancel(run_id) {
            eprintln!("ferry agent: cannot cancel run {run_id}: {error}");
        }
        // The run is over: nothing is left to follow.
        std::process::exit(143);
    }
}

fn env(name: &'static str) -> Result<String> {
    std::env::var(name).map_err(|_| AgentError::MissingEnv { name })
}

/// Reads a variable that holds credentials and leaves no trace of it where a step running as
/// the same user could look:
/// - the process becomes non-dumpable, so that `/proc/<agent>/environ`, `/proc/<agent>/mem`
///   and ptrace are refused to every process without `CAP_SYS_PTRACE` (a step running as
///   root in the container keeps that: the guarantee needs a non-root user, see
///   RELIABILITY.md);
/// - the value's bytes in the process's initial environment block (what `/proc/PID/environ`
///   shows) are overwritten, and the variable is removed, so that no child inherits it.
///
/// Must run before the process has other threads: changing the environment is only sound
/// then. `ferry agent run` calls it first thing.
fn take_secret_env(name: &'static str) -> Result<String> {
    let value = env(name)?;
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_DUMPABLE) takes plain integers and has no memory effects.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let c_name = std::ffi::CString::new(name).expect("variable names have no NUL");
    // SAFETY: single-threaded (see above). getenv points into the environment block, whose
    // bytes up to the terminating NUL are ours to overwrite (with the same length, so that
    // the block stays well formed) before the variable is removed.
    unsafe {
        let original = libc::getenv(c_name.as_ptr());
        if !original.is_null() {
            let len = libc::strlen(original);
            std::ptr::write_bytes(original, b'x', len);
        }
        std::env::remove_var(name);
    }
    Ok(value)
}

fn run(doing: &'static str) -> impl Fn(PluginError) -> AgentError {
    move |source| AgentError::Run { doing, source }
}
