//! `ferry agent run`: what a remote orchestrator's pod runs. It opens the stack's store from
//! `FERRY_AGENT_STORE`, fetches the code package the plan names, verifies and unpacks it, runs
//! the pipeline with the local orchestrator against that store, and reports every event as
//! one JSON object per line on stdout (the machine that follows the run reads them from the
//! pod log). Diagnostics go to stderr. The exit code is the failed step's, like `ferry run`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use orchestrator_core::config::ComponentConfig;
use orchestrator_core::env_vars::{FERRY_AGENT_PLAN, FERRY_AGENT_STORE, FERRY_PLUGIN_PATH};
use orchestrator_core::loader::SearchPath;
use orchestrator_core::local::LocalOrchestrator;
use orchestrator_core::package::unpack::unpack_file;
use orchestrator_core::run::{RunPlan, RunRecord, RunStatus};
use orchestrator_core::sdk::{OrchestratorPlugin as _, PluginConfig, StoreConnection};
use orchestrator_core::stack;
use orchestrator_core::store::{Store, layout};

use crate::args::{AgentCommand, GlobalArgs};

pub fn run(global: &GlobalArgs, command: AgentCommand) -> Result<ExitCode> {
    match command {
        AgentCommand::Run => run_plan(global),
    }
}

fn env_json(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: `ferry agent` runs inside a pod started by a remote orchestrator, which sets it")
    })
}

fn run_plan(global: &GlobalArgs) -> Result<ExitCode> {
    let mut plan =
        RunPlan::from_json(&env_json(FERRY_AGENT_PLAN)?).context("reading the run plan")?;
    let connection: StoreConnection = serde_json::from_str(&env_json(FERRY_AGENT_STORE)?)
        .context("reading the store settings")?;
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let search = SearchPath::standard(
        &global.plugin_dirs,
        std::env::var(FERRY_PLUGIN_PATH).ok().as_deref(),
        &[],
    );
    let component = ComponentConfig {
        plugin: connection.plugin.clone(),
        settings: connection.settings.clone(),
    };
    let settings_root = connection
        .project_root
        .clone()
        .unwrap_or_else(|| cwd.clone());
    let (store, _) = stack::open_store(&component, &settings_root, &search).with_context(|| {
        format!(
            "opening the artifact store (plugin `{}`)",
            connection.plugin
        )
    })?;

    let code: PathBuf = cwd.join("code");
    if let Err(error) = fetch_code(&store, &plan, &cwd, &code) {
        // The store is reachable: say there why the run never started.
        record_failure(&store, &plan, &format!("{error:#}"));
        return Err(error);
    }
    eprintln!(
        "ferry agent: run {} of `{}`, code {} unpacked in {}",
        plan.run_id,
        plan.pipeline.name,
        plan.code.digest.as_deref().unwrap_or_default(),
        code.display()
    );

    // The record the submitting orchestrator wrote names it; the local orchestrator that runs
    // the steps here would name itself. Keep the submitter's name for the final record.
    let submitted_by = store
        .get_json::<RunRecord>(&layout::run_record(&plan.run_id))
        .ok()
        .flatten()
        .map(|r| r.orchestrator);
    let store_for_record = store.clone();
    plan.project_root = code.clone();
    let orchestrator = LocalOrchestrator::new(
        PluginConfig::new(Default::default()).with_project_root(&code),
        store,
    )
    .context("starting the local orchestrator")?;
    let run_id = orchestrator.submit(plan).context("starting the run")?;
    let stdout = std::io::stdout();
    orchestrator
        .stream_events(&run_id, None, true, &mut |event| {
            use std::io::Write as _;
            let line = serde_json::to_string(&event).expect("events serialise");
            let mut out = stdout.lock();
            // A closed stdout (the pod log is gone) must not stop the run.
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            true
        })
        .context("following the run")?;
    let mut record = orchestrator
        .status(&run_id)
        .context("reading the run's result")?;
    if let Some(name) = submitted_by
        && record.orchestrator != name
    {
        record.orchestrator = name;
        if let Err(error) = store_for_record.put_json(&layout::run_record(&run_id), &record) {
            eprintln!("ferry agent: cannot update the run record: {error}");
        }
    }
    Ok(crate::commands::run::exit_code(&record))
}

/// Fetches the plan's code package, verifies its digest and unpacks it into `code`.
fn fetch_code(store: &Store, plan: &RunPlan, cwd: &Path, code: &Path) -> Result<()> {
    let key = plan
        .code
        .package_key
        .as_deref()
        .context("the run plan names no code package")?;
    let digest = plan
        .code
        .digest
        .as_deref()
        .context("the run plan has no code digest")?;
    let archive = cwd.join(".ferry-package.tar.zst");
    store
        .get_file(key, &archive)
        .with_context(|| format!("fetching the code package {key} from {}", store.url()))?;
    unpack_file(&archive, digest, code)
        .with_context(|| format!("unpacking the code package {key}"))?;
    let _ = std::fs::remove_file(&archive);
    Ok(())
}

/// Records a run that never started, so that nobody waits for it.
fn record_failure(store: &Store, plan: &RunPlan, error: &str) {
    let key = layout::run_record(&plan.run_id);
    let mut record = match store.get_json::<RunRecord>(&key) {
        Ok(Some(record)) => record,
        _ => RunRecord::new(plan, "agent"),
    };
    record.status = RunStatus::Failed;
    record.error = Some(format!("the agent could not start the run: {error}"));
    record.finished_at = Some(chrono::Utc::now());
    if let Err(write_error) = store.put_json(&key, &record) {
        eprintln!("ferry agent: cannot record the failure: {write_error}");
    }
}
