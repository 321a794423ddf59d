//! One step of a run, from taking a slot to its saved result: its scratch folders, its inputs,
//! the cache, its attempts, its output checks and uploads, and its entry in the record.
//!
//! Everything here is about a single step and runs inside that step's task; the scheduler
//! only hands it the step's `StepInputs` and gets back an `Outcome`. Running the process itself
//! is `process`'s business: this module decides what the process is given (`StepEnv`) and what
//! its ending means for the step.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::Utc;

use super::cache::{self, CacheEntry};
use super::log_shipper::{LogShipper, WholeLog};
use super::process::{Ended, run_process};
use super::scheduler::{Context, notice, set_step_status, write_record, write_record_soon};
use orchestrator_core::PluginError;
use orchestrator_core::env_vars::{self, env_suffix};
use orchestrator_core::pipeline::Step;
use orchestrator_core::run::retry::Backoff;
use orchestrator_core::run::{AttemptRecord, OutputFile, RunPlan, StepRef, StepStatus};
use orchestrator_core::sdk::blocking;
use orchestrator_core::store::{Store, layout};

/// How a step ended.
pub(super) struct Outcome {
    pub(super) status: StepStatus,
    pub(super) outputs: Vec<OutputFile>,
}

impl Outcome {
    fn without_outputs(status: StepStatus) -> Self {
        Self {
            status,
            outputs: Vec::new(),
        }
    }
}

/// A step's scratch folder in the run's: `out/`, `work/`, `in/` and its live `log`.
pub(super) struct StepDirs {
    /// `$FERRY_OUTPUT_DIR`: what the step writes, uploaded when it succeeds.
    pub(super) out: PathBuf,
    /// `$FERRY_WORK_DIR` and `$TMPDIR`.
    work: PathBuf,
    /// `$FERRY_INPUTS_DIR`: a link per input to that step's `out/`.
    inputs: PathBuf,
    /// The step's output while it runs, every attempt's; saved to the store at the end.
    pub(super) log: PathBuf,
}

impl StepDirs {
    pub(super) fn new(run_dir: &Path, step: &str) -> Self {
        let dir = run_dir.join("steps").join(step);
        Self {
            out: dir.join("out"),
            work: dir.join("work"),
            inputs: dir.join("in"),
            log: dir.join("log"),
        }
    }

    /// Made in place rather than on the blocking pool: three `mkdir`s in ferry's own work
    /// folder take microseconds, less than the two thread hand-offs a pool call costs.
    fn create(&self) -> Result<(), PluginError> {
        for dir in [&self.out, &self.work, &self.inputs] {
            std::fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
        }
        Ok(())
    }

    /// Start `out/` afresh, so that what a step finally leaves there is all its own work.
    async fn empty_out(&self) -> Result<(), PluginError> {
        let _ = tokio::fs::remove_dir_all(&self.out).await;
        tokio::fs::create_dir_all(&self.out)
            .await
            .map_err(|e| io_error("create", &self.out, e))
    }
}

/// An upstream step whose outputs a step reads.
struct Input {
    step: String,
    /// That step's `out/` on this machine.
    dir: PathBuf,
    /// What it produced: part of the reading step's cache key.
    outputs: Vec<OutputFile>,
}

/// What a step reads: one `Input` per name in its `inputs`, in that order.
pub(super) struct StepInputs(Vec<Input>);

impl StepInputs {
    /// The inputs of `step` in `run_dir`, given the outputs of the steps finished so far.
    pub(super) fn of(
        step: &Step,
        run_dir: &Path,
        outputs: &HashMap<String, Vec<OutputFile>>,
    ) -> Self {
        Self(
            step.inputs
                .iter()
                .map(|name| Input {
                    step: name.clone(),
                    dir: StepDirs::new(run_dir, name).out,
                    outputs: outputs.get(name).cloned().unwrap_or_default(),
                })
                .collect(),
        )
    }

    /// Link each input's folder into `inputs_dir` under its step's name.
    async fn stage(&self, inputs_dir: &Path) -> Result<(), PluginError> {
        for input in &self.0 {
            let link = inputs_dir.join(&input.step);
            let _ = tokio::fs::remove_file(&link).await;
            tokio::fs::symlink(&input.dir, &link)
                .await
                .map_err(|e| io_error("link", &link, e))?;
        }
        Ok(())
    }

    /// The inputs as `cache::cache_key` takes them.
    fn for_cache_key(&self) -> Vec<(&str, &[OutputFile])> {
        self.0
            .iter()
            .map(|i| (i.step.as_str(), i.outputs.as_slice()))
            .collect()
    }
}

/// What a step's process is given besides its command: the step's own `env`, then the
/// documented `FERRY_*` variables (which win over it), its inputs and its parameters.
struct StepEnv<'a> {
    plan: &'a RunPlan,
    step: &'a Step,
    params: &'a BTreeMap<String, String>,
    dirs: &'a StepDirs,
    inputs: &'a StepInputs,
}

impl StepEnv<'_> {
    /// The variables of attempt `attempt` (from 1), in the order they are set.
    fn vars(&self, attempt: u32) -> Vec<(String, String)> {
        let plan = self.plan;
        let mut env: Vec<(String, String)> = self
            .step
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let path = |p: &Path| p.display().to_string();
        env.extend([
            (env_vars::FERRY_RUN_ID.into(), plan.run_id.clone()),
            (env_vars::FERRY_PIPELINE.into(), plan.pipeline.name.clone()),
            (env_vars::FERRY_STEP.into(), self.step.name.clone()),
            (env_vars::FERRY_ATTEMPT.into(), attempt.to_string()),
            (env_vars::FERRY_OUTPUT_DIR.into(), path(&self.dirs.out)),
            (env_vars::FERRY_WORK_DIR.into(), path(&self.dirs.work)),
            ("TMPDIR".into(), path(&self.dirs.work)),
            (env_vars::FERRY_INPUTS_DIR.into(), path(&self.dirs.inputs)),
            (env_vars::FERRY_PROJECT_DIR.into(), path(&plan.project_root)),
        ]);
        for input in &self.inputs.0 {
            env.push((
                format!(
                    "{}{}",
                    env_vars::FERRY_INPUT_PREFIX,
                    env_suffix(&input.step)
                ),
                path(&input.dir),
            ));
        }
        for (name, value) in self.params {
            env.push((
                format!("{}{}", env_vars::FERRY_PARAM_PREFIX, env_suffix(name)),
                value.clone(),
            ));
        }
        env
    }
}

/// How a step's attempts went.
struct Attempts {
    /// The last attempt's: `Err` says why it failed.
    result: Result<(), String>,
    exit_code: Option<i32>,
    /// How many ran.
    count: u32,
    /// How each ended.
    history: Vec<AttemptRecord>,
}

fn round_to_millis(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(d.as_millis() as u64)
}

/// Run one step: cache lookup, attempts, output checks, uploads, record.
pub(super) async fn run_step(ctx: &Arc<Context>, name: &str, inputs: StepInputs) -> Outcome {
    let Ok(_slot) = ctx.slots.acquire().await else {
        return Outcome::without_outputs(StepStatus::Cancelled);
    };
    if ctx.state.is_cancelled() {
        set_step_status(
            ctx,
            name,
            StepStatus::Cancelled,
            Some("cancelled before it started".into()),
        );
        return Outcome::without_outputs(StepStatus::Cancelled);
    }
    let resources = ctx
        .plan
        .pipeline
        .step(name)
        .map(|s| s.resources.clone())
        .unwrap_or_default();
    let _admitted = match ctx.budget.admit(&resources).await {
        Ok(admitted) => admitted,
        Err(reason) => {
            ctx.state.emit(notice(Some(name), reason.clone()));
            set_step_status(ctx, name, StepStatus::Failed, Some(reason));
            let _ = write_record(ctx).await;
            return Outcome::without_outputs(StepStatus::Failed);
        }
    };
    match try_run_step(ctx, name, &inputs).await {
        Ok(outcome) => outcome,
        Err(e) => {
            let message = e.to_string();
            ctx.state.emit(notice(Some(name), message.clone()));
            set_step_status(ctx, name, StepStatus::Failed, Some(message));
            let _ = write_record(ctx).await;
            Outcome::without_outputs(StepStatus::Failed)
        }
    }
}

/// `run_step` once it holds a slot; an `Err` is ferry's failure, not the step's.
async fn try_run_step(
    ctx: &Arc<Context>,
    name: &str,
    inputs: &StepInputs,
) -> Result<Outcome, PluginError> {
    let plan = &ctx.plan;
    let step = plan
        .pipeline
        .step(name)
        .ok_or_else(|| PluginError::other(format!("step `{name}` is not in the plan")))?
        .clone();
    let dirs = StepDirs::new(&ctx.run_dir, name);
    dirs.create()?;
    inputs.stage(&dirs.inputs).await?;
    let params = plan.pipeline.step_params(&step, &plan.params);

    // A resumed run (`ferry runs retry`): a step that succeeded before takes its outputs.
    if let Some(reused) = plan.reuse.get(name) {
        return reuse_earlier(ctx, name, reused, &dirs).await;
    }
    // Cache: a hit downloads the earlier outputs so downstream steps can read them here.
    let inputs_for_key = inputs.for_cache_key();
    let basis = cache::cache_basis(
        &step,
        &params,
        &plan.working_dir,
        &plan.code,
        &inputs_for_key,
    );
    let cache_key = (step.cache && !plan.no_cache)
        .then(|| cache::cache_key(&step, &basis, &plan.working_dir, &inputs_for_key));
    if let Some(key) = &cache_key
        && let Some(outcome) = reuse_cached(ctx, name, key, &basis, &dirs).await?
    {
        return Ok(outcome);
    }
    let note = match &cache_key {
        None if plan.no_cache => "not looked up: --no-cache".to_string(),
        None => "not cached: the step sets `cache: false`".to_string(),
        Some(_) => {
            let earlier = earlier_basis(ctx, name).await;
            cache::explain_miss(&basis, earlier.as_ref().map(|(id, b)| (id.as_str(), b)))
        }
    };
    ctx.state.update(|r| {
        if let Some(s) = r.steps.get_mut(name) {
            s.cache_note = Some(note);
            s.cache_basis = Some(basis);
        }
    });

    set_step_status(ctx, name, StepStatus::Running, None);
    write_record_soon(ctx);
    let env = StepEnv {
        plan,
        step: &step,
        params: &params,
        dirs: &dirs,
        inputs,
    };
    let shipper = LogShipper::start(&ctx.store, &plan.run_id, name, &dirs.log);
    let attempts = run_attempts(ctx, &step, &env, &dirs).await?;
    // The log is saved whatever happened: it is what explains a failure.
    let log = shipper.stop().await;
    record_result(ctx, name, &dirs, attempts, cache_key, log).await
}

/// How many of the store's newest runs a miss looks through for the same step's last basis.
const EARLIER_RUNS_SCANNED: usize = 30;

/// The cache basis of the same step in the newest earlier run of this pipeline that kept one.
async fn earlier_basis(
    ctx: &Arc<Context>,
    step: &str,
) -> Option<(String, orchestrator_core::run::CacheBasis)> {
    let earlier = ctx
        .earlier_runs
        .get_or_init(|| async {
            let records = orchestrator_core::run::RunRecords::new(ctx.store.clone());
            let (pipeline, own) = (ctx.plan.pipeline.name.clone(), ctx.plan.run_id.clone());
            blocking(move || {
                let ids = records.ids()?;
                Ok(ids
                    .into_iter()
                    .filter(|id| *id != own)
                    .take(EARLIER_RUNS_SCANNED)
                    .filter_map(|id| records.get(&id).ok().flatten())
                    .filter(|r| r.pipeline == pipeline)
                    .collect::<Vec<_>>())
            })
            .await
            .unwrap_or_default()
        })
        .await;
    earlier.iter().find_map(|record| {
        let basis = record.steps.get(step)?.cache_basis.clone()?;
        Some((record.run_id.clone(), basis))
    })
}

/// The earlier outputs for `key`, restored into `out/` and recorded as the step's result; `None`
/// when the step has to run.
async fn reuse_cached(
    ctx: &Arc<Context>,
    name: &str,
    key: &str,
    basis: &orchestrator_core::run::CacheBasis,
    dirs: &StepDirs,
) -> Result<Option<Outcome>, PluginError> {
    let Some(entry) = restore_cached(ctx, name, key, dirs).await? else {
        return Ok(None);
    };
    let text = format!(
        "cached: reusing the outputs of run {} (use --no-cache to run it)",
        entry.source.run_id
    );
    let note = format!("hit: the outputs of run {}", entry.source.run_id);
    record_reused(ctx, name, entry, text, |s| {
        s.cache_key = Some(key.to_string());
        s.cache_note = Some(note);
        s.cache_basis = Some(basis.clone());
    })
    .await
    .map(Some)
}

/// A step of a resumed run that does not run again: the earlier run's outputs, restored and
/// verified into `out/` for the steps downstream. Outputs that cannot be restored fail the
/// step: running it instead would not be the retry the user asked for.
async fn reuse_earlier(
    ctx: &Arc<Context>,
    name: &str,
    reused: &orchestrator_core::run::ReusedOutputs,
    dirs: &StepDirs,
) -> Result<Outcome, PluginError> {
    let entry = CacheEntry {
        source: reused.source.clone(),
        outputs: reused.outputs.clone(),
        created_at: Utc::now(),
    };
    let store = ctx.store.clone();
    let out = dirs.out.clone();
    let entry = blocking(move || cache::restore(&store, &entry, &out).map(|()| entry))
        .await
        .map_err(|e| {
            PluginError::other(format!(
                "the outputs of step `{}` of run {} cannot be reused: {e}; retry with `--from {name}` to run it again",
                reused.source.step, reused.source.run_id
            ))
        })?;
    let text = format!(
        "reused: the outputs of run {} (this run resumes it)",
        entry.source.run_id
    );
    record_reused(ctx, name, entry, text, |_| {}).await
}

/// A step that takes earlier outputs instead of running (a cache hit, a resumed run): says so,
/// records where its outputs are (and what `also` adds) and writes the record once.
async fn record_reused(
    ctx: &Arc<Context>,
    name: &str,
    entry: CacheEntry,
    text: String,
    also: impl FnOnce(&mut orchestrator_core::run::StepRecord),
) -> Result<Outcome, PluginError> {
    ctx.state.emit(notice(Some(name), text));
    ctx.state.update(|r| {
        if let Some(s) = r.steps.get_mut(name) {
            s.outputs_from = Some(entry.source.clone());
            s.outputs = entry.outputs.clone();
            also(s);
        }
    });
    set_step_status(ctx, name, StepStatus::Cached, None);
    write_record(ctx).await?;
    Ok(Outcome {
        status: StepStatus::Cached,
        outputs: entry.outputs,
    })
}

/// The cache entry for `key` with its outputs restored into `out/`, if there is a usable one.
async fn restore_cached(
    ctx: &Arc<Context>,
    name: &str,
    key: &str,
    dirs: &StepDirs,
) -> Result<Option<CacheEntry>, PluginError> {
    let store = ctx.store.clone();
    let lookup_key = key.to_string();
    let hit = match blocking(move || cache::lookup(&store, &lookup_key)).await {
        Ok(hit) => hit,
        // The cache is an optimisation: when it cannot be read the step simply runs.
        Err(e) => {
            let text = format!("cache lookup failed, running the step: {e}");
            ctx.state.emit(notice(Some(name), text));
            None
        }
    };
    let Some(entry) = hit else {
        return Ok(None);
    };
    let store = ctx.store.clone();
    let out = dirs.out.clone();
    match blocking(move || cache::restore(&store, &entry, &out).map(|()| entry)).await {
        Ok(entry) => Ok(Some(entry)),
        Err(e) => {
            let text = format!("cached outputs unusable, running the step: {e}");
            ctx.state.emit(notice(Some(name), text));
            dirs.empty_out().await?;
            Ok(None)
        }
    }
}

/// Run the step's process until an attempt succeeds, the attempts run out or the run is
/// cancelled. Every attempt writes into an empty `out/` and to the same log.
async fn run_attempts(
    ctx: &Arc<Context>,
    step: &Step,
    env: &StepEnv<'_>,
    dirs: &StepDirs,
) -> Result<Attempts, PluginError> {
    let log = Arc::new(Mutex::new(
        std::fs::File::create(&dirs.log).map_err(|e| io_error("create", &dirs.log, e))?,
    ));
    let backoff = Backoff::of(step);
    let attempts = backoff.attempts();
    // Attempts that ended with an earlier pod (a backend retrying the step in a new one).
    let prior = match &ctx.plan.only_step {
        Some(only) if *only == step.name => ctx.plan.prior_attempts.clone(),
        _ => Vec::new(),
    };
    let first = (prior.len() as u32 + 1).min(attempts);
    let mut last = Attempts {
        result: Err(String::new()),
        exit_code: None,
        count: first - 1,
        history: prior,
    };
    for attempt in first..=attempts {
        if attempt > first {
            dirs.empty_out().await?;
        }
        let started_at = Utc::now();
        let ended = run_process(ctx, step, env.vars(attempt), Arc::clone(&log)).await;
        let exit_code = ended.exit_code();
        let result = match ended {
            Ended::Exited(0) => check_outputs(step, &dirs.out),
            other => Err(other.describe(step)),
        };
        last.history.push(AttemptRecord {
            number: attempt,
            started_at: Some(started_at),
            finished_at: Some(Utc::now()),
            exit_code,
            reason: result.as_ref().err().cloned(),
        });
        last.result = result;
        last.exit_code = exit_code;
        last.count = attempt;
        if last.result.is_ok() || ctx.state.is_cancelled() {
            break;
        }
        if attempt < attempts {
            let reason = last.result.as_ref().err().cloned().unwrap_or_default();
            let delay = backoff.delay(attempt);
            ctx.state.emit(notice(
                Some(&step.name),
                format!(
                    "attempt {attempt} of {attempts} failed ({reason}); retrying in {}",
                    humantime::format_duration(round_to_millis(delay))
                ),
            ));
            let _ = writeln!(
                log.lock().expect("log lock"),
                "--- ferry: attempt {attempt} failed ({reason}); retrying in {} ---",
                humantime::format_duration(round_to_millis(delay))
            );
            // A cancel during the wait ends the step at once.
            let mut cancelled = ctx.state.cancelled();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = cancelled.wait_for(|c| *c) => break,
            }
        }
    }
    Ok(last)
}

/// The step's status from its attempts; on success its outputs are uploaded and, for a cached
/// step, made the cache's entry for `cache_key`. The log, the outputs and the record are stored
/// in one trip to the blocking pool: between dependent steps, each hand-off is time no step
/// runs.
async fn record_result(
    ctx: &Arc<Context>,
    name: &str,
    dirs: &StepDirs,
    attempts: Attempts,
    cache_key: Option<String>,
    log: WholeLog,
) -> Result<Outcome, PluginError> {
    let Attempts {
        result,
        exit_code,
        count,
        history,
    } = attempts;
    let status = match &result {
        Ok(()) => StepStatus::Succeeded,
        Err(_) if ctx.state.is_cancelled() => StepStatus::Cancelled,
        Err(_) => StepStatus::Failed,
    };
    let (ctx, name, out_dir) = (Arc::clone(ctx), name.to_string(), dirs.out.clone());
    blocking(move || {
        log.store()?;
        let mut outputs = Vec::new();
        if status == StepStatus::Succeeded {
            outputs = store_outputs(&ctx, &name, &out_dir, cache_key.as_deref())?;
        }
        ctx.state.update(|r| {
            if let Some(s) = r.steps.get_mut(&name) {
                s.attempts = count;
                s.attempt_history = history.clone();
                s.exit_code = exit_code;
                s.cache_key = cache_key.clone();
                s.outputs = outputs.clone();
            }
        });
        if let Err(reason) = &result {
            ctx.state.emit(notice(Some(&name), reason.clone()));
        }
        set_step_status(&ctx, &name, status, result.err());
        ctx.state.write_record(&ctx.store)?;
        Ok(Outcome { status, outputs })
    })
    .await
}

/// Upload a succeeded step's outputs, and record them in the cache under `cache_key`. Blocks.
fn store_outputs(
    ctx: &Context,
    name: &str,
    out_dir: &Path,
    cache_key: Option<&str>,
) -> Result<Vec<OutputFile>, PluginError> {
    let plan = &ctx.plan;
    let prefix = layout::step_outputs(&plan.run_id, name);
    let outputs = upload_outputs(&ctx.store, out_dir, &prefix)?;
    if let Some(key) = cache_key {
        let entry = CacheEntry {
            source: StepRef {
                run_id: plan.run_id.clone(),
                step: name.to_string(),
            },
            outputs: outputs.clone(),
            created_at: Utc::now(),
        };
        cache::record(&ctx.store, key, &entry)?;
    }
    Ok(outputs)
}

pub(super) fn io_error(what: &str, path: &Path, e: std::io::Error) -> PluginError {
    PluginError::other(format!("cannot {what} {}: {e}", path.display()))
}

fn check_outputs(step: &Step, out_dir: &Path) -> Result<(), String> {
    let missing: Vec<&str> = step
        .outputs
        .iter()
        .filter(|o| !out_dir.join(o).exists())
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "exited 0 but did not write its declared output {} to $FERRY_OUTPUT_DIR",
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Upload every file under `dir` to `prefix`, returning what was stored (sorted by path).
fn upload_outputs(store: &Store, dir: &Path, prefix: &str) -> Result<Vec<OutputFile>, PluginError> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files).map_err(|e| io_error("read outputs in", dir, e))?;
    files.sort();
    let mut outputs = Vec::new();
    for relative in files {
        let path = dir.join(&relative);
        let mut hasher = blake3::Hasher::new();
        let size = std::io::copy(
            &mut std::fs::File::open(&path).map_err(|e| io_error("read", &path, e))?,
            &mut hasher,
        )
        .map_err(|e| io_error("read", &path, e))?;
        store.put_file(&format!("{prefix}{relative}"), &path)?;
        outputs.push(OutputFile {
            path: relative,
            size,
            digest: hasher.finalize().to_hex().to_string(),
            executable: is_executable(&path),
        });
    }
    Ok(outputs)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// Files under `dir`, relative, `/`-separated. A symbolic link to a file counts as that file
/// (its content is stored); links to directories are refused, as they could loop or escape.
fn collect_files(root: &Path, dir: &Path, files: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let mut kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_symlink() {
            kind = std::fs::metadata(&path)?.file_type();
            if kind.is_dir() {
                return Err(std::io::Error::other(format!(
                    "{} is a symbolic link to a directory; outputs must be files or real directories",
                    path.display()
                )));
            }
        }
        if kind.is_dir() {
            collect_files(root, &path, files)?;
        } else if kind.is_file() {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            files.push(parts.join("/"));
        }
    }
    Ok(())
}
