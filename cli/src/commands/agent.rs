//! `ferry agent run`: what a remote orchestrator's pod runs. It opens the stack's store from
//! `FERRY_AGENT_STORE`, fetches the code package the plan names, verifies and unpacks it, runs
//! the pipeline with the local orchestrator against that store, and reports every event as
//! one JSON object per line on stdout (the machine that follows the run reads them from the
//! pod log). Diagnostics go to stderr. The exit code is the failed step's, like `ferry run`.
//!
//! Two variations: `--step NAME` runs one step of the run (its inputs come from the upstream
//! steps' results in the store, and its result goes to `steps/NAME/result.json`), and with
//! `FERRY_AGENT_ORCHESTRATOR` set the agent hands the plan to that orchestrator plugin instead
//! of running steps itself (the Kubernetes coordinator, which starts one Job per step).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use orchestrator_core::env_vars::{
    FERRY_AGENT_ORCHESTRATOR, FERRY_AGENT_PLAN, FERRY_AGENT_STORE, FERRY_PLUGIN_PATH,
};
use orchestrator_core::run::RunRecords;
use orchestrator_core::run::{RunPlan, RunRecord, RunStatus, StepRecord, StepStatus};
use orchestrator_core::sdk::{OrchestratorPlugin as _, PluginConfig, StoreConnection};
use orchestrator_core::store::Store;
use orchestrator_host::config::ComponentConfig;
use orchestrator_host::loader::SearchPath;
use orchestrator_host::local::LocalOrchestrator;
use orchestrator_host::package::unpack::unpack_file;
use orchestrator_host::stack;

use crate::args::{AgentCommand, GlobalArgs};

pub fn run(global: &GlobalArgs, command: AgentCommand) -> Result<ExitCode> {
    match command {
        AgentCommand::Run { step } => run_plan(global, step),
    }
}

fn env_json(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: `ferry agent` runs inside a pod started by a remote orchestrator, which sets it")
    })
}

fn run_plan(global: &GlobalArgs, only_step: Option<String>) -> Result<ExitCode> {
    let mut plan =
        RunPlan::from_json(&env_json(FERRY_AGENT_PLAN)?).context("reading the run plan")?;
    plan.only_step = only_step;
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

    if let Ok(orchestrator) = std::env::var(FERRY_AGENT_ORCHESTRATOR) {
        let result = coordinate(
            &orchestrator,
            plan.clone(),
            &store,
            connection,
            &cwd,
            &search,
        );
        if let Err(error) = &result {
            record_failure(&store, &plan, &format!("{error:#}"));
        }
        return result;
    }

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
    let submitted_by = match plan.only_step {
        Some(_) => None,
        None => RunRecords::new(store.clone())
            .get(&plan.run_id)
            .ok()
            .flatten()
            .map(|r| r.orchestrator),
    };
    let store_for_record = store.clone();
    plan.project_root = code.clone();
    let orchestrator = LocalOrchestrator::new(
        PluginConfig::new(Default::default()).with_project_root(&code),
        store,
    )
    .context("starting the local orchestrator")?;
    let run_id = orchestrator.submit(plan).context("starting the run")?;
    orchestrator
        .stream_events(&run_id, None, true, &mut print_event)
        .context("following the run")?;
    let mut record = orchestrator
        .status(&run_id)
        .context("reading the run's result")?;
    if let Some(name) = submitted_by
        && record.orchestrator != name
    {
        record.orchestrator = name;
        if let Err(error) = RunRecords::new(store_for_record).put(&record) {
            eprintln!("ferry agent: cannot update the run record: {error}");
        }
    }
    Ok(crate::commands::run::exit_code(&record))
}

/// One event as a JSON line on stdout, which the following machine reads from the pod log.
fn print_event(event: orchestrator_core::run::Event) -> bool {
    use std::io::Write as _;
    let line = serde_json::to_string(&event).expect("events serialise");
    let mut out = std::io::stdout().lock();
    // A closed stdout (the pod log is gone) must not stop the run.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    true
}

/// Hands the plan to the orchestrator named in `FERRY_AGENT_ORCHESTRATOR` (which the
/// submitting orchestrator wrote) and relays its events until the run ends.
fn coordinate(
    orchestrator: &str,
    plan: RunPlan,
    store: &Store,
    connection: StoreConnection,
    cwd: &Path,
    search: &SearchPath,
) -> Result<ExitCode> {
    let component: ComponentConfig = serde_json::from_str(orchestrator)
        .with_context(|| format!("reading {FERRY_AGENT_ORCHESTRATOR}"))?;
    let (orchestrator, _) =
        stack::open_orchestrator(&component, cwd, store, Some(connection), search)
            .with_context(|| format!("opening the orchestrator (plugin `{}`)", component.plugin))?;
    eprintln!(
        "ferry agent: run {} of `{}` coordinated by `{}`",
        plan.run_id, plan.pipeline.name, component.plugin
    );
    let run_id = orchestrator.submit(&plan).context("starting the run")?;
    orchestrator
        .stream_events(&run_id, None, true, print_event)
        .context("following the run")?;
    let record = orchestrator
        .status(&run_id)
        .context("reading the run's result")?;
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

/// Records a run (or, with `--step`, a step) that never started, so that nobody waits for it.
fn record_failure(store: &Store, plan: &RunPlan, error: &str) {
    if let Some(step) = &plan.only_step {
        let mut result = StepRecord::pending();
        result.status = StepStatus::Failed;
        result.error = Some(format!("the agent could not start the step: {error}"));
        result.finished_at = Some(chrono::Utc::now());
        if let Err(write_error) =
            RunRecords::new(store.clone()).put_step_result(&plan.run_id, step, &result)
        {
            eprintln!("ferry agent: cannot record the failure: {write_error}");
        }
        return;
    }
    let records = RunRecords::new(store.clone());
    let mut record = match records.get(&plan.run_id) {
        Ok(Some(record)) => record,
        _ => RunRecord::new(plan, "agent"),
    };
    record.status = RunStatus::Failed;
    record.error = Some(format!("the agent could not start the run: {error}"));
    record.finished_at = Some(chrono::Utc::now());
    if let Err(write_error) = records.put(&record) {
        eprintln!("ferry agent: cannot record the failure: {write_error}");
    }
}
