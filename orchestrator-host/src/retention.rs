//! Store retention: which runs, cache entries and code packages `ferry runs delete` and
//! `ferry gc` remove, and removing them without breaking what stays.
//!
//! [`plan`] decides and changes nothing (what `--dry-run` prints); [`apply`] deletes what a plan
//! names, re-checking first whatever may have changed since.
//!
//! # What is never removed
//!
//! - A run that has not finished (pending or running), however old: its orchestrator may still
//!   write to it. One whose orchestrator died stays until it is cancelled.
//! - A run whose record cannot be read, and a run folder without a record: ferry cannot tell
//!   whether they are finished.
//! - A run whose outputs a kept run reuses (a cache hit or a resumed run names them in a step's
//!   `outputs_from`): the kept run's outputs, and the inputs of its downstream steps, live there.
//! - A cache entry whose outputs belong to a kept run.
//! - A package that a kept run names (its `code_digest`), whatever that run's status; one the
//!   caller pins ([`Policy::keep_packages`]: the code of schedules, which the store knows
//!   nothing of); and one stored less than [`PACKAGE_GRACE`] ago.
//! - Anything at all while some run record is not even JSON: what that run uses is unknown.
//!
//! # Running beside runs that start
//!
//! Stores have no locks, so safety comes from order and re-checks:
//! - `ferry run` uploads the package before the run's record exists. [`PACKAGE_GRACE`] covers a
//!   package uploaded in that gap; [`apply`] then re-reads every record that was new or not
//!   finished when the plan was made, just before it deletes runs and again before packages,
//!   and keeps what those records now name.
//! - Cache entries go first, so that no run starting afterwards gets a cache hit on outputs
//!   about to go; a hit found just before is caught by the re-check once the run records it,
//!   in `run.json` or in a step's `result.json`.
//! - A run's `run.json` is deleted last: a crash midway leaves a record, which a later `gc`
//!   finds and finishes.
//!
//! What is left is a window of a few store calls: a run that looked its cache entry up before
//! the entries went and records the hit only after the re-check, or a `ferry run` whose package
//! was already stored (an upload keeps an existing package, and with it its old time) and whose
//! record appears only after the re-check.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use orchestrator_core::run::{RunRecord, RunRecords, RunStatus, StepRef, is_valid_run_id};
use orchestrator_core::store::{ObjectInfo, Store, layout};
use orchestrator_core::{ErrorKind, PluginError};

/// How long a package is kept even when no run names it: a `ferry run` stores its package
/// before the run's record exists, and its orchestrator may take a while to write that record.
pub const PACKAGE_GRACE: TimeDelta = TimeDelta::hours(1);

#[non_exhaustive]
#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot {action} `{key}` in {url}")]
    Store {
        action: &'static str,
        key: String,
        url: String,
        #[source]
        source: PluginError,
    },
    #[error("`{run_id}` is not a run id")]
    InvalidRunId { run_id: String },
    #[error("no run `{run_id}` in {url}")]
    UnknownRun { run_id: String, url: String },
    #[error("run {run_id} is still {status}")]
    Unfinished { run_id: String, status: RunStatus },
    #[error("the record of run {run_id} cannot be read: {reason}")]
    UnreadableRun { run_id: String, reason: String },
    #[error("run {by_run} reuses the outputs of step `{step}` of run {run_id}")]
    OutputsReused {
        run_id: String,
        step: String,
        by_run: String,
    },
    #[error(
        "the record of run {run_id} is not JSON, so ferry cannot tell which runs and packages it uses"
    )]
    ReferencesUnknown { run_id: String },
    #[error("name the runs to delete or give a retention rule (keep last, older than), not both")]
    MixedPolicy,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What to do about it, printed on its own line after the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::InvalidRunId { .. } => Some(
                "run ids look like 20261127-104512-123-3fa9c1; `ferry runs list` shows them".into(),
            ),
            Self::UnknownRun { .. } => {
                Some("`ferry runs list` shows the runs of this store".into())
            }
            Self::Unfinished { run_id, .. } => Some(format!(
                "cancel it first (`ferry runs cancel {run_id}`) or wait for it"
            )),
            Self::UnreadableRun { run_id, .. } => Some(format!(
                "ferry deletes only runs it knows are finished; if nothing runs it any more, \
                 remove `{}` from the store by hand",
                layout::run_prefix(run_id)
            )),
            Self::OutputsReused { run_id, by_run, .. } => {
                Some(format!("delete run {by_run} too, or keep run {run_id}"))
            }
            Self::ReferencesUnknown { run_id } => Some(format!(
                "repair `{}`, or remove `{}` from the store by hand",
                layout::run_record(run_id),
                layout::run_prefix(run_id)
            )),
            Self::Store { .. } | Self::MixedPolicy => None,
        }
    }
}

/// What to remove: either the runs named in `runs` (`ferry runs delete`) or the finished runs
/// that a retention rule lets go (`ferry gc`); giving both is an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the newest `n` runs, counted over all runs (finished or not) newest first.
    pub keep_last: Option<usize>,
    /// Keep runs created less than this long ago.
    pub older_than: Option<TimeDelta>,
    /// Remove exactly these runs; each must exist and be finished.
    pub runs: Vec<String>,
    /// Packages to keep even when no run names them, as digests (a schedule's `code_digest`)
    /// or keys (`packages/<digest>.tar.zst`): schedules live in the orchestrator, not in the
    /// store, so the caller lists their code here.
    pub keep_packages: Vec<String>,
}

impl Policy {
    #[must_use]
    pub fn keep_last(mut self, runs: usize) -> Self {
        self.keep_last = Some(runs);
        self
    }

    #[must_use]
    pub fn older_than(mut self, age: TimeDelta) -> Self {
        self.older_than = Some(age);
        self
    }

    #[must_use]
    pub fn runs(mut self, run_ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.runs = run_ids.into_iter().map(Into::into).collect();
        self
    }

    #[must_use]
    pub fn keep_packages(mut self, packages: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.keep_packages = packages.into_iter().map(Into::into).collect();
        self
    }

    fn has_rule(&self) -> bool {
        self.keep_last.is_some() || self.older_than.is_some()
    }
}

/// A run that goes, everything under `runs/<run-id>/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedRun {
    pub run_id: String,
    pub pipeline: String,
    pub status: RunStatus,
    pub created_at: DateTime<Utc>,
    /// The run's code: its package is `packages/<code_digest>.tar.zst` when it had one.
    pub code_digest: Option<String>,
    /// Sum of the listed sizes of its objects.
    pub bytes: u64,
    pub objects: usize,
}

/// A cache entry or a package that goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedObject {
    pub key: String,
    pub bytes: u64,
    pub modified: DateTime<Utc>,
}

/// Something a plan or its application leaves in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Item {
    Run(String),
    /// By store key.
    CacheEntry(String),
    /// By store key.
    Package(String),
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Run(id) => write!(f, "run {id}"),
            Self::CacheEntry(key) => write!(f, "cache entry `{key}`"),
            Self::Package(key) => write!(f, "package `{key}`"),
        }
    }
}

/// Why something stays.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum KeepReason {
    Unfinished {
        status: RunStatus,
    },
    Unreadable {
        error: String,
    },
    /// A run folder without `run.json`.
    NoRecord,
    AmongNewest {
        keep_last: usize,
    },
    NotOlderThan {
        cutoff: DateTime<Utc>,
    },
    /// `by_run` reuses the outputs of `step` of this run.
    OutputsReused {
        by_run: String,
        step: String,
    },
    /// A package that `run_id` names.
    UsedBy {
        run_id: String,
    },
    /// A package in [`Policy::keep_packages`].
    Pinned,
    /// A package stored less than [`PACKAGE_GRACE`] before the plan's time.
    Fresh {
        stored_at: DateTime<Utc>,
    },
    /// Some run record is not JSON: what that run uses is unknown, so nothing goes.
    ReferencesUnknown {
        run_id: String,
    },
    /// A cache entry written again since the plan was made, now for a run that stays.
    CacheEntryRewritten {
        run_id: String,
    },
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unfinished { status } => write!(f, "it is still {status}"),
            Self::Unreadable { error } => write!(f, "it cannot be read: {error}"),
            Self::NoRecord => write!(f, "it has no run.json (a run being created?)"),
            Self::AmongNewest { keep_last } => write!(f, "it is among the newest {keep_last} runs"),
            Self::NotOlderThan { cutoff } => write!(
                f,
                "it was created after {} (the age limit)",
                cutoff.format("%Y-%m-%d %H:%M UTC")
            ),
            Self::OutputsReused { by_run, step } => {
                write!(f, "run {by_run} reuses the outputs of its step `{step}`")
            }
            Self::UsedBy { run_id } => write!(f, "run {run_id} uses it"),
            Self::Pinned => write!(f, "a schedule uses it"),
            Self::Fresh { stored_at } => write!(
                f,
                "it was stored at {}, too recently: a run starting now may use it",
                stored_at.format("%Y-%m-%d %H:%M UTC")
            ),
            Self::ReferencesUnknown { run_id } => write!(
                f,
                "the record of run {run_id} is not JSON, so what that run uses is unknown"
            ),
            Self::CacheEntryRewritten { run_id } => {
                write!(f, "it was written again since, for run {run_id}")
            }
        }
    }
}

/// Something that stays, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    pub item: Item,
    pub reason: KeepReason,
}

impl fmt::Display for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} stays: {}", self.item, self.reason)
    }
}

/// What a plan wants the user to know beside its items.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    /// Neither `keep_last` nor `older_than`: `gc` without a rule removes nothing.
    NoRule,
    /// See [`KeepReason::ReferencesUnknown`].
    ReferencesUnknown { run_id: String },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRule => write!(
                f,
                "no retention rule (keep last, older than) given: nothing is removed"
            ),
            Self::ReferencesUnknown { run_id } => write!(
                f,
                "nothing is removed: the record of run {run_id} is not JSON, so the runs and \
                 packages it uses are unknown"
            ),
        }
    }
}

/// Counts and bytes of a plan or a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub runs: usize,
    pub run_bytes: u64,
    pub cache_entries: usize,
    pub cache_bytes: u64,
    pub packages: usize,
    pub package_bytes: u64,
    /// All of the above bytes.
    pub bytes: u64,
}

impl Totals {
    fn of(
        runs: &[RemovedRun],
        cache_entries: &[RemovedObject],
        packages: &[RemovedObject],
    ) -> Self {
        let sum = |objects: &[RemovedObject]| objects.iter().map(|o| o.bytes).sum::<u64>();
        let run_bytes = runs.iter().map(|r| r.bytes).sum();
        let (cache_bytes, package_bytes) = (sum(cache_entries), sum(packages));
        Self {
            runs: runs.len(),
            run_bytes,
            cache_entries: cache_entries.len(),
            cache_bytes,
            packages: packages.len(),
            package_bytes,
            bytes: run_bytes + cache_bytes + package_bytes,
        }
    }
}

/// What [`apply`] would remove, and what stays for a reason worth telling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcPlan {
    /// Newest first.
    pub runs: Vec<RemovedRun>,
    pub cache_entries: Vec<RemovedObject>,
    pub packages: Vec<RemovedObject>,
    /// Runs that stay (all of them for `gc`, none for explicit ids), packages that stay, and
    /// cache entries that cannot be read.
    pub kept: Vec<Kept>,
    pub notices: Vec<Notice>,
    /// Runs whose record was final when planning (finished and readable): what they use cannot
    /// change, so [`apply`] re-reads only the others.
    #[serde(skip)]
    settled_runs: BTreeSet<String>,
}

impl GcPlan {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.cache_entries.is_empty() && self.packages.is_empty()
    }

    pub fn totals(&self) -> Totals {
        Totals::of(&self.runs, &self.cache_entries, &self.packages)
    }
}

/// What [`apply`] removed, and what it left because the store changed since the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// With the bytes actually deleted (a run may have grown a log part since planning).
    pub runs: Vec<RemovedRun>,
    pub cache_entries: Vec<RemovedObject>,
    pub packages: Vec<RemovedObject>,
    pub skipped: Vec<Kept>,
}

impl GcReport {
    pub fn totals(&self) -> Totals {
        Totals::of(&self.runs, &self.cache_entries, &self.packages)
    }
}

/// Decides what goes under `policy`, as of `now` (the age limit and [`PACKAGE_GRACE`] count
/// back from it). Reads the store, changes nothing.
pub fn plan(store: &Store, policy: &Policy, now: DateTime<Utc>) -> Result<GcPlan> {
    let explicit = !policy.runs.is_empty();
    if explicit && policy.has_rule() {
        return Err(Error::MixedPolicy);
    }
    if !explicit && !policy.has_rule() {
        return Ok(GcPlan {
            notices: vec![Notice::NoRule],
            ..GcPlan::default()
        });
    }
    if let Some(bad) = policy.runs.iter().find(|id| !is_valid_run_id(id)) {
        return Err(Error::InvalidRunId {
            run_id: bad.clone(),
        });
    }

    let runs = read_runs(store)?;
    let mut plan = GcPlan {
        settled_runs: runs
            .iter()
            .filter(|run| run.is_settled())
            .map(|run| run.id.clone())
            .collect(),
        ..GcPlan::default()
    };
    let removed = if explicit {
        named_runs(store, &runs, &policy.runs)?
    } else {
        let removed = runs_past_rule(&runs, policy, now, &mut plan.kept);
        if let Some(run) = runs.iter().find(|run| run.uses.is_none()) {
            let reason = || KeepReason::ReferencesUnknown {
                run_id: run.id.clone(),
            };
            plan.kept.extend(removed.into_iter().map(|id| Kept {
                item: Item::Run(id),
                reason: reason(),
            }));
            plan.notices.push(Notice::ReferencesUnknown {
                run_id: run.id.clone(),
            });
            return Ok(plan);
        }
        removed
    };

    for run in runs.iter().filter(|run| removed.contains(&run.id)) {
        let Record::Read(record) = &run.record else {
            continue; // only runs with a finished record are ever removable
        };
        let (bytes, objects) = sizes(store, &layout::run_prefix(&run.id))?;
        plan.runs.push(RemovedRun {
            run_id: run.id.clone(),
            pipeline: record.pipeline.clone(),
            status: record.status,
            created_at: record.created_at,
            code_digest: record.code_digest.clone(),
            bytes,
            objects,
        });
    }
    if !removed.is_empty() {
        plan.cache_entries = cache_entries_of(store, &removed, &mut plan.kept)?;
    }
    // `runs delete` takes the packages only its runs leave unused; `gc` every unused one.
    let candidates = if explicit {
        packages_of(store, &plan.runs)?
    } else {
        let prefix = layout::PACKAGES_PREFIX;
        let listing = store
            .list(prefix, true)
            .map_err(store_error(store, "list", prefix))?;
        listing.objects
    };
    let keepers = runs.iter().filter(|run| !removed.contains(&run.id));
    let used_by = packages_used_by(keepers);
    let pinned: BTreeSet<&str> = policy
        .keep_packages
        .iter()
        .map(|package| package_digest(package).unwrap_or(package))
        .collect();
    let fresh_after = now
        .checked_sub_signed(PACKAGE_GRACE)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    for info in candidates {
        // Anything else under `packages/` is not ferry's to judge.
        let Some(digest) = package_digest(&info.key) else {
            continue;
        };
        let reason = if let Some(run_id) = used_by.get(digest) {
            Some(KeepReason::UsedBy {
                run_id: run_id.to_string(),
            })
        } else if pinned.contains(digest) {
            Some(KeepReason::Pinned)
        } else if info.modified > fresh_after {
            Some(KeepReason::Fresh {
                stored_at: info.modified,
            })
        } else {
            None
        };
        match reason {
            Some(reason) => plan.kept.push(Kept {
                item: Item::Package(info.key),
                reason,
            }),
            None => plan.packages.push(RemovedObject {
                key: info.key,
                bytes: info.size,
                modified: info.modified,
            }),
        }
    }
    Ok(plan)
}

/// Deletes what `plan` names: cache entries, then runs (each one's `run.json` last), then
/// packages. Whatever the store says changed since the plan was made is left and reported in
/// [`GcReport::skipped`]. Stops at the first store error: what is left is found again by the
/// next `gc`.
pub fn apply(store: &Store, plan: &GcPlan) -> Result<GcReport> {
    let mut report = GcReport::default();
    let planned: BTreeSet<&str> = plan.runs.iter().map(|run| run.run_id.as_str()).collect();

    // Before the runs are re-checked: a run that then stays costs a cache miss, while the other
    // order would let a run starting meanwhile hit outputs about to go.
    for entry in &plan.cache_entries {
        let source = match read_cache_source(store, &entry.key)? {
            None => continue, // gone already
            Some(Ok(source)) => source,
            Some(Err(error)) => {
                report.skip(
                    Item::CacheEntry(entry.key.clone()),
                    KeepReason::Unreadable { error },
                );
                continue;
            }
        };
        if !planned.contains(source.run_id.as_str()) {
            let reason = KeepReason::CacheEntryRewritten {
                run_id: source.run_id,
            };
            report.skip(Item::CacheEntry(entry.key.clone()), reason);
            continue;
        }
        delete(store, &entry.key)?;
        report.cache_entries.push(entry.clone());
    }

    // Every run planned for removal, as it is now; and every run whose uses may have changed.
    let mut rereads = Vec::with_capacity(plan.runs.len());
    let mut doomed = BTreeSet::new();
    for removed in &plan.runs {
        let run = read_run(store, &removed.run_id)?;
        match &run.record {
            Record::Absent => {
                doomed.insert(run.id.clone());
            }
            Record::Read(record) if record.status.is_finished() => {
                doomed.insert(run.id.clone());
            }
            Record::Read(record) => {
                let reason = KeepReason::Unfinished {
                    status: record.status,
                };
                report.skip(Item::Run(run.id.clone()), reason);
            }
            Record::Unreadable(error) => {
                let reason = KeepReason::Unreadable {
                    error: error.clone(),
                };
                report.skip(Item::Run(run.id.clone()), reason);
            }
        }
        rereads.push(run);
    }
    let mut current = unsettled_runs(store, plan, &planned)?;
    current.extend(rereads.iter().cloned());
    if let Some(run) = current.iter().find(|run| run.uses.is_none()) {
        report.leave_the_rest(&doomed, &plan.packages, &run.id);
        return Ok(report);
    }
    for (run_id, reuse) in reused_by_keepers(&current, &doomed) {
        doomed.remove(&run_id);
        let reason = KeepReason::OutputsReused {
            by_run: reuse.run_id,
            step: reuse.step,
        };
        report.skip(Item::Run(run_id), reason);
    }
    for removed in plan.runs.iter().filter(|run| doomed.contains(&run.run_id)) {
        let (bytes, objects) = delete_run(store, &removed.run_id)?;
        report.runs.push(RemovedRun {
            bytes,
            objects,
            ..removed.clone()
        });
    }

    // Runs may have started while runs were deleted: read them again, as late as possible.
    let mut users = unsettled_runs(store, plan, &planned)?;
    users.extend(rereads.into_iter().filter(|run| !doomed.contains(&run.id)));
    if let Some(run) = users.iter().find(|run| run.uses.is_none()) {
        report.leave_the_rest(&BTreeSet::new(), &plan.packages, &run.id);
        return Ok(report);
    }
    let used_by = packages_used_by(&users);
    for package in &plan.packages {
        let user = package_digest(&package.key).and_then(|digest| used_by.get(digest));
        if let Some(run_id) = user {
            let reason = KeepReason::UsedBy {
                run_id: run_id.to_string(),
            };
            report.skip(Item::Package(package.key.clone()), reason);
            continue;
        }
        delete(store, &package.key)?;
        report.packages.push(package.clone());
    }
    Ok(report)
}

impl GcReport {
    fn skip(&mut self, item: Item, reason: KeepReason) {
        self.skipped.push(Kept { item, reason });
    }

    /// A record that is not JSON appeared: what it uses is unknown, so `runs` and `packages`
    /// stay.
    fn leave_the_rest(
        &mut self,
        runs: &BTreeSet<String>,
        packages: &[RemovedObject],
        unknown: &str,
    ) {
        let reason = || KeepReason::ReferencesUnknown {
            run_id: unknown.to_string(),
        };
        for run_id in runs {
            self.skip(Item::Run(run_id.clone()), reason());
        }
        for package in packages {
            self.skip(Item::Package(package.key.clone()), reason());
        }
    }
}

/// A run as the store has it now.
#[derive(Debug, Clone)]
struct Run {
    id: String,
    record: Record,
    /// What it uses; `None` when its record (or a step's result) is not even JSON.
    uses: Option<Uses>,
}

#[derive(Debug, Clone)]
enum Record {
    /// A run folder without `run.json`.
    Absent,
    Unreadable(String),
    Read(Box<RunRecord>),
}

/// What of the store a run needs besides its own folder.
#[derive(Debug, Clone, Default)]
struct Uses {
    code_digest: Option<String>,
    /// Steps of other runs whose outputs it reuses.
    outputs_of: Vec<StepRef>,
}

impl Uses {
    /// Read from the JSON rather than from a parsed [`RunRecord`], so that a record ferry
    /// cannot parse (a newer ferry's, a damaged one) still protects what it names.
    fn of_record(record: &Value) -> Option<Self> {
        let record = record.as_object()?;
        let steps = record.get("steps").and_then(Value::as_object);
        Some(Self {
            code_digest: record
                .get("code_digest")
                .and_then(Value::as_str)
                .map(str::to_string),
            outputs_of: steps
                .into_iter()
                .flat_map(|steps| steps.values())
                .filter_map(outputs_from)
                .collect(),
        })
    }
}

/// The `outputs_from` of a step record, as JSON.
fn outputs_from(step: &Value) -> Option<StepRef> {
    serde_json::from_value(step.get("outputs_from")?.clone()).ok()
}

impl Run {
    /// Finished with a readable record: nothing it uses can change any more.
    fn is_settled(&self) -> bool {
        matches!(&self.record, Record::Read(record) if record.status.is_finished())
    }
}

/// Every run of the store, newest first.
fn read_runs(store: &Store) -> Result<Vec<Run>> {
    run_ids(store)?
        .iter()
        .map(|id| read_run(store, id))
        .collect()
}

fn run_ids(store: &Store) -> Result<Vec<String>> {
    RunRecords::new(store.clone())
        .ids()
        .map_err(store_error(store, "list", layout::RUNS_PREFIX))
}

/// The runs whose uses [`plan`] could not take as final: new since, or unfinished then.
fn unsettled_runs(store: &Store, plan: &GcPlan, planned: &BTreeSet<&str>) -> Result<Vec<Run>> {
    run_ids(store)?
        .iter()
        .filter(|id| !plan.settled_runs.contains(*id) && !planned.contains(id.as_str()))
        .map(|id| read_run(store, id))
        .collect()
}

fn read_run(store: &Store, run_id: &str) -> Result<Run> {
    let (record, uses) = match read_bytes(store, &layout::run_record(run_id))? {
        None => (Record::Absent, Some(Uses::default())),
        Some(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Err(e) => (Record::Unreadable(format!("not JSON: {e}")), None),
            Ok(value) => {
                let uses = Uses::of_record(&value);
                let record = match serde_json::from_value::<RunRecord>(value) {
                    Ok(record) => Record::Read(Box::new(record)),
                    Err(e) => Record::Unreadable(e.to_string()),
                };
                (record, uses)
            }
        },
    };
    let mut run = Run {
        id: run_id.to_string(),
        record,
        uses,
    };
    // A step that ran on its own records a cache hit in its `result.json` before whoever
    // coordinates the run merges it into `run.json`, and its downstream steps read from there.
    if !run.is_settled() {
        let from_steps = step_results_reuse(store, run_id)?;
        run.uses = match (run.uses.take(), from_steps) {
            (Some(mut uses), Some(reused)) => {
                uses.outputs_of.extend(reused);
                Some(uses)
            }
            _ => None,
        };
    }
    Ok(run)
}

/// The `outputs_from` of the steps of `run_id` that recorded a result on their own; `None`
/// when one of those results is not JSON.
fn step_results_reuse(store: &Store, run_id: &str) -> Result<Option<Vec<StepRef>>> {
    let steps_prefix = format!("{}steps/", layout::run_prefix(run_id));
    let listing =
        store
            .list(&steps_prefix, false)
            .map_err(store_error(store, "list", &steps_prefix))?;
    let mut reused = Vec::new();
    for prefix in &listing.prefixes {
        let Some(step) = prefix.strip_prefix(&steps_prefix) else {
            continue;
        };
        let key = layout::step_result(run_id, step.trim_end_matches('/'));
        let Some(bytes) = read_bytes(store, &key)? else {
            continue;
        };
        let Ok(result) = serde_json::from_slice::<Value>(&bytes) else {
            return Ok(None);
        };
        reused.extend(outputs_from(&result));
    }
    Ok(Some(reused))
}

/// The runs named for `runs delete`: each must exist and have finished, and no other run may
/// reuse their outputs.
fn named_runs(store: &Store, runs: &[Run], wanted: &[String]) -> Result<BTreeSet<String>> {
    let by_id: BTreeMap<&str, &Run> = runs.iter().map(|run| (run.id.as_str(), run)).collect();
    let mut named = BTreeSet::new();
    for run_id in wanted {
        let unknown = || Error::UnknownRun {
            run_id: run_id.clone(),
            url: store.url(),
        };
        let run = by_id.get(run_id.as_str()).ok_or_else(unknown)?;
        match &run.record {
            Record::Absent => return Err(unknown()),
            Record::Unreadable(reason) => {
                return Err(Error::UnreadableRun {
                    run_id: run_id.clone(),
                    reason: reason.clone(),
                });
            }
            Record::Read(record) if !record.status.is_finished() => {
                return Err(Error::Unfinished {
                    run_id: run_id.clone(),
                    status: record.status,
                });
            }
            Record::Read(_) => {
                named.insert(run_id.clone());
            }
        }
    }
    if let Some(run) = runs.iter().find(|run| run.uses.is_none()) {
        return Err(Error::ReferencesUnknown {
            run_id: run.id.clone(),
        });
    }
    if let Some((run_id, reuse)) = reused_by_keepers(runs, &named).into_iter().next() {
        return Err(Error::OutputsReused {
            run_id,
            step: reuse.step,
            by_run: reuse.run_id,
        });
    }
    Ok(named)
}

/// The runs `gc` removes under the rule of `policy`; why each other run stays goes to `kept`.
fn runs_past_rule(
    runs: &[Run],
    policy: &Policy,
    now: DateTime<Utc>,
    kept: &mut Vec<Kept>,
) -> BTreeSet<String> {
    let cutoff = policy.older_than.map(|age| {
        now.checked_sub_signed(age)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    });
    let mut removed = BTreeSet::new();
    for (index, run) in runs.iter().enumerate() {
        match why_keep(run, index, policy.keep_last, cutoff) {
            Some(reason) => kept.push(Kept {
                item: Item::Run(run.id.clone()),
                reason,
            }),
            None => {
                removed.insert(run.id.clone());
            }
        }
    }
    for (run_id, reuse) in reused_by_keepers(runs, &removed) {
        removed.remove(&run_id);
        kept.push(Kept {
            item: Item::Run(run_id),
            reason: KeepReason::OutputsReused {
                by_run: reuse.run_id,
                step: reuse.step,
            },
        });
    }
    removed
}

/// Why `gc` keeps the `index`-th newest run, if it does.
fn why_keep(
    run: &Run,
    index: usize,
    keep_last: Option<usize>,
    cutoff: Option<DateTime<Utc>>,
) -> Option<KeepReason> {
    let record = match &run.record {
        Record::Absent => return Some(KeepReason::NoRecord),
        Record::Unreadable(error) => {
            return Some(KeepReason::Unreadable {
                error: error.clone(),
            });
        }
        Record::Read(record) => record,
    };
    if !record.status.is_finished() {
        return Some(KeepReason::Unfinished {
            status: record.status,
        });
    }
    if let Some(keep_last) = keep_last
        && index < keep_last
    {
        return Some(KeepReason::AmongNewest { keep_last });
    }
    if let Some(cutoff) = cutoff
        && record.created_at >= cutoff
    {
        return Some(KeepReason::NotOlderThan { cutoff });
    }
    None
}

/// The runs in `removable` whose outputs a run outside it reuses, directly or through another
/// such run, each with the step of the first run found to reuse it (`StepRef` names the run
/// that reuses and the step reused).
fn reused_by_keepers(runs: &[Run], removable: &BTreeSet<String>) -> BTreeMap<String, StepRef> {
    let by_id: BTreeMap<&str, &Run> = runs.iter().map(|run| (run.id.as_str(), run)).collect();
    let mut saved: BTreeMap<String, StepRef> = BTreeMap::new();
    let mut keepers: Vec<&str> = runs
        .iter()
        .filter(|run| !removable.contains(&run.id))
        .map(|run| run.id.as_str())
        .collect();
    while let Some(keeper) = keepers.pop() {
        let Some(uses) = by_id.get(keeper).and_then(|run| run.uses.as_ref()) else {
            continue;
        };
        for source in &uses.outputs_of {
            if removable.contains(&source.run_id) && !saved.contains_key(&source.run_id) {
                let reuse = StepRef {
                    run_id: keeper.to_string(),
                    step: source.step.clone(),
                };
                saved.insert(source.run_id.clone(), reuse);
                keepers.push(&source.run_id);
            }
        }
    }
    saved
}

/// The stored packages of `runs`.
fn packages_of(store: &Store, runs: &[RemovedRun]) -> Result<Vec<ObjectInfo>> {
    let digests: BTreeSet<&str> = runs
        .iter()
        .filter_map(|run| run.code_digest.as_deref())
        .collect();
    let mut found = Vec::new();
    for digest in digests {
        let key = layout::package(digest);
        if let Some(info) = store.head(&key).map_err(store_error(store, "read", &key))? {
            found.push(info);
        }
    }
    Ok(found)
}

/// Package digest → a run that names it.
fn packages_used_by<'a>(runs: impl IntoIterator<Item = &'a Run>) -> BTreeMap<&'a str, &'a str> {
    runs.into_iter()
        .filter_map(|run| Some((run.uses.as_ref()?.code_digest.as_deref()?, run.id.as_str())))
        .collect()
}

/// What `cache/<key>.json` says about where its outputs are; only `source` matters here
/// (the whole entry is `local::cache::CacheEntry`).
#[derive(Deserialize)]
struct CacheSource {
    source: StepRef,
}

/// The cache entries whose outputs are in `removed` runs; entries that cannot be read stay.
fn cache_entries_of(
    store: &Store,
    removed: &BTreeSet<String>,
    kept: &mut Vec<Kept>,
) -> Result<Vec<RemovedObject>> {
    let prefix = layout::CACHE_PREFIX;
    let listing = store
        .list(prefix, true)
        .map_err(store_error(store, "list", prefix))?;
    let mut entries = Vec::new();
    for info in listing.objects {
        // Only what `layout::cache_entry` names: `cache/<key>.json`, nothing nested.
        let is_entry = info
            .key
            .strip_prefix(prefix)
            .and_then(|name| name.strip_suffix(".json"))
            .is_some_and(|cache_key| !cache_key.is_empty() && !cache_key.contains('/'));
        if !is_entry {
            continue;
        }
        match read_cache_source(store, &info.key)? {
            None => {}
            Some(Err(error)) => kept.push(Kept {
                item: Item::CacheEntry(info.key),
                reason: KeepReason::Unreadable { error },
            }),
            Some(Ok(source)) if removed.contains(&source.run_id) => entries.push(RemovedObject {
                key: info.key,
                bytes: info.size,
                modified: info.modified,
            }),
            Some(Ok(_)) => {}
        }
    }
    Ok(entries)
}

/// `None` when the entry is gone; `Some(Err)` when it cannot be parsed.
fn read_cache_source(
    store: &Store,
    key: &str,
) -> Result<Option<std::result::Result<StepRef, String>>> {
    let Some(bytes) = read_bytes(store, key)? else {
        return Ok(None);
    };
    Ok(Some(
        serde_json::from_slice::<CacheSource>(&bytes)
            .map(|entry| entry.source)
            .map_err(|e| e.to_string()),
    ))
}

/// The digest in a package key, `packages/<digest>.tar.zst`.
fn package_digest(key: &str) -> Option<&str> {
    let digest = key
        .strip_prefix(layout::PACKAGES_PREFIX)?
        .strip_suffix(".tar.zst")?;
    (!digest.is_empty() && !digest.contains('/')).then_some(digest)
}

/// Total listed size and count of the objects under `prefix`.
fn sizes(store: &Store, prefix: &str) -> Result<(u64, usize)> {
    let listing = store
        .list(prefix, true)
        .map_err(store_error(store, "list", prefix))?;
    let bytes = listing.objects.iter().map(|o| o.size).sum();
    Ok((bytes, listing.objects.len()))
}

/// Deletes everything under `runs/<run_id>/`, `run.json` last; returns the bytes and objects.
fn delete_run(store: &Store, run_id: &str) -> Result<(u64, usize)> {
    let prefix = layout::run_prefix(run_id);
    let record_key = layout::run_record(run_id);
    let listing = store
        .list(&prefix, true)
        .map_err(store_error(store, "list", &prefix))?;
    let (records, rest): (Vec<ObjectInfo>, Vec<ObjectInfo>) = listing
        .objects
        .into_iter()
        .partition(|object| object.key == record_key);
    let mut bytes = 0;
    for object in &rest {
        delete(store, &object.key)?;
        bytes += object.size;
    }
    // Last: until it goes, the run is listed, and the next `gc` finishes what this one began.
    delete(store, &record_key)?;
    bytes += records.iter().map(|o| o.size).sum::<u64>();
    Ok((bytes, rest.len() + records.len()))
}

fn delete(store: &Store, key: &str) -> Result<()> {
    store.delete(key).map_err(store_error(store, "delete", key))
}

/// `None` when `key` does not exist.
fn read_bytes(store: &Store, key: &str) -> Result<Option<Vec<u8>>> {
    match store.get_bytes(key) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind == ErrorKind::NOT_FOUND => Ok(None),
        Err(e) => Err(store_error(store, "read", key)(e)),
    }
}

fn store_error(
    store: &Store,
    action: &'static str,
    key: &str,
) -> impl FnOnce(PluginError) -> Error {
    let (key, url) = (key.to_string(), store.url());
    move |source| Error::Store {
        action,
        key,
        url,
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    use orchestrator_core::sdk::{PluginConfig, PluginInfo, StorePlugin};
    use orchestrator_core::store::ListResult;
    use serde_json::json;

    use super::*;
    use crate::stores::MemoryStore;

    fn memory_store() -> Store {
        Store::from_plugin(MemoryStore::new(PluginConfig::default()).unwrap())
    }

    /// A plan's time at which packages stored during the test are past [`PACKAGE_GRACE`].
    fn later() -> DateTime<Utc> {
        Utc::now() + PACKAGE_GRACE + TimeDelta::minutes(5)
    }

    /// Stores a run created `age_days` ago with one step `a`: its log and, unless the step
    /// reuses the outputs of step `a` of run `reuses`, a 100-byte output.
    fn put_run(
        store: &Store,
        age_days: i64,
        status: &str,
        code: Option<&str>,
        reuses: Option<&str>,
    ) -> String {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let created_at = Utc::now() - TimeDelta::days(age_days);
        let run_id = format!(
            "{}-{:06x}",
            created_at.format("%Y%m%d-%H%M%S-%3f"),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let step = match reuses {
            Some(source) => {
                json!({"status": "cached", "outputs_from": {"run_id": source, "step": "a"}})
            }
            None => json!({"status": "succeeded"}),
        };
        let record = json!({
            "schema_version": 1, "run_id": run_id, "pipeline": "train", "stack": "local",
            "orchestrator": "local", "status": status, "created_at": created_at,
            "code_digest": code, "steps": {"a": step},
        });
        store
            .put_json(&layout::run_record(&run_id), &record)
            .unwrap();
        store
            .put_bytes(&layout::step_log(&run_id, "a"), b"log line\n")
            .unwrap();
        if reuses.is_none() {
            let output = format!("{}model.bin", layout::step_outputs(&run_id, "a"));
            store.put_bytes(&output, &[0; 100]).unwrap();
        }
        run_id
    }

    fn put_cache_entry(store: &Store, cache_key: &str, run_id: &str) -> String {
        let entry = json!({
            "source": {"run_id": run_id, "step": "a"}, "outputs": [], "created_at": Utc::now(),
        });
        let key = layout::cache_entry(cache_key);
        store.put_json(&key, &entry).unwrap();
        key
    }

    fn put_package(store: &Store, digest: &str) -> String {
        let key = layout::package(digest);
        store.put_bytes(&key, &[7; 50]).unwrap();
        key
    }

    fn exists(store: &Store, key: &str) -> bool {
        store.head(key).unwrap().is_some()
    }

    fn removed_runs(plan: &GcPlan) -> Vec<&str> {
        plan.runs.iter().map(|run| run.run_id.as_str()).collect()
    }

    fn keys(objects: &[RemovedObject]) -> Vec<&str> {
        objects.iter().map(|object| object.key.as_str()).collect()
    }

    fn reason<'a>(kept: &'a [Kept], item: &Item) -> Option<&'a KeepReason> {
        kept.iter().find(|k| &k.item == item).map(|k| &k.reason)
    }

    fn run(id: &str) -> Item {
        Item::Run(id.to_string())
    }

    fn package(key: &str) -> Item {
        Item::Package(key.to_string())
    }

    #[test]
    fn keep_last_keeps_the_newest_runs_counted_over_all_runs() {
        let store = memory_store();
        let oldest = put_run(&store, 5, "succeeded", None, None);
        let old = put_run(&store, 4, "failed", None, None);
        let middle = put_run(&store, 3, "cancelled", None, None);
        let newer = put_run(&store, 2, "succeeded", None, None);
        let running = put_run(&store, 1, "running", None, None);

        let plan = plan(&store, &Policy::default().keep_last(3), later()).unwrap();

        assert_eq!(removed_runs(&plan), [old.as_str(), oldest.as_str()]);
        let among_newest = KeepReason::AmongNewest { keep_last: 3 };
        assert_eq!(reason(&plan.kept, &run(&middle)), Some(&among_newest));
        assert_eq!(reason(&plan.kept, &run(&newer)), Some(&among_newest));
        let unfinished = KeepReason::Unfinished {
            status: RunStatus::Running,
        };
        assert_eq!(reason(&plan.kept, &run(&running)), Some(&unfinished));
        assert_eq!(plan.runs[0].pipeline, "train");
        assert_eq!(plan.runs[0].status, RunStatus::Failed);
    }

    #[test]
    fn older_than_removes_runs_created_before_the_cutoff_and_combines_with_keep_last() {
        let store = memory_store();
        let ancient = put_run(&store, 40, "succeeded", None, None);
        let old = put_run(&store, 20, "succeeded", None, None);
        let recent = put_run(&store, 5, "succeeded", None, None);
        let now = later();

        let month = Policy::default().older_than(TimeDelta::days(30));
        let plan = plan(&store, &month, now).unwrap();
        assert_eq!(removed_runs(&plan), [ancient.as_str()]);
        let cutoff = now - TimeDelta::days(30);
        assert_eq!(
            reason(&plan.kept, &run(&old)),
            Some(&KeepReason::NotOlderThan { cutoff })
        );

        // Both rules must let a run go.
        let both = Policy::default()
            .keep_last(2)
            .older_than(TimeDelta::days(10));
        let plan = super::plan(&store, &both, now).unwrap();
        assert_eq!(removed_runs(&plan), [ancient.as_str()]);
        assert!(matches!(
            reason(&plan.kept, &run(&old)),
            Some(KeepReason::AmongNewest { keep_last: 2 })
        ));
        assert!(matches!(
            reason(&plan.kept, &run(&recent)),
            Some(KeepReason::AmongNewest { .. })
        ));
    }

    #[test]
    fn an_unfinished_run_is_never_removed_however_old() {
        let store = memory_store();
        let running = put_run(&store, 400, "running", Some("p1"), None);
        let pending = put_run(&store, 300, "pending", None, None);
        let package_key = put_package(&store, "p1");

        let everything = Policy::default()
            .keep_last(0)
            .older_than(TimeDelta::days(1));
        let plan = plan(&store, &everything, later()).unwrap();

        assert!(plan.is_empty(), "{plan:?}");
        for (id, status) in [
            (&running, RunStatus::Running),
            (&pending, RunStatus::Pending),
        ] {
            let expected = KeepReason::Unfinished { status };
            assert_eq!(reason(&plan.kept, &run(id)), Some(&expected));
        }
        let used = KeepReason::UsedBy {
            run_id: running.clone(),
        };
        assert_eq!(reason(&plan.kept, &package(&package_key)), Some(&used));
    }

    #[test]
    fn gc_without_a_rule_removes_nothing_and_says_so() {
        let store = memory_store();
        put_run(&store, 100, "succeeded", None, None);
        let plan = plan(&store, &Policy::default(), later()).unwrap();
        assert!(plan.is_empty());
        assert_eq!(plan.notices, [Notice::NoRule]);
    }

    #[test]
    fn named_runs_must_exist_be_finished_and_not_mix_with_rules() {
        let store = memory_store();
        let done = put_run(&store, 3, "succeeded", None, None);
        let other = put_run(&store, 2, "failed", None, None);
        let running = put_run(&store, 1, "running", None, None);
        let now = later();

        let plan = plan(&store, &Policy::default().runs([&done]), now).unwrap();
        assert_eq!(removed_runs(&plan), [done.as_str()]);
        assert!(plan.kept.is_empty(), "only the named runs are judged");
        assert_eq!(reason(&plan.kept, &run(&other)), None);

        let missing = "20200101-000000-000-000000";
        let error = super::plan(&store, &Policy::default().runs([missing]), now).unwrap_err();
        assert!(matches!(error, Error::UnknownRun { ref run_id, .. } if run_id == missing));
        assert_eq!(
            error.to_string(),
            format!("no run `{missing}` in memory://")
        );

        let error =
            super::plan(&store, &Policy::default().runs([&done, &running]), now).unwrap_err();
        assert_eq!(error.to_string(), format!("run {running} is still running"));
        assert_eq!(
            error.hint().unwrap(),
            format!("cancel it first (`ferry runs cancel {running}`) or wait for it")
        );
        assert_eq!(
            crate::errors::chain(&error),
            format!("run {running} is still running")
        );

        let error = super::plan(&store, &Policy::default().runs(["../cache"]), now).unwrap_err();
        assert!(matches!(error, Error::InvalidRunId { .. }), "{error}");

        let mixed = Policy::default().runs([&done]).keep_last(1);
        let error = super::plan(&store, &mixed, now).unwrap_err();
        assert!(matches!(error, Error::MixedPolicy), "{error}");
    }

    #[test]
    fn records_that_cannot_be_read_stay_and_still_protect_what_they_name() {
        let store = memory_store();
        let old = put_run(&store, 10, "succeeded", None, None);
        // Valid JSON that is not a record this ferry can parse (say, a newer one's).
        let strange = "20200102-000000-000-000001";
        let strange_record = json!({"run_id": strange, "status": "archived", "code_digest": "p1"});
        store
            .put_json(&layout::run_record(strange), &strange_record)
            .unwrap();
        let p1 = put_package(&store, "p1");

        let gc = Policy::default().keep_last(0);
        let plan = plan(&store, &gc, later()).unwrap();
        assert_eq!(removed_runs(&plan), [old.as_str()]);
        assert!(matches!(
            reason(&plan.kept, &run(strange)),
            Some(KeepReason::Unreadable { .. })
        ));
        let used = KeepReason::UsedBy {
            run_id: strange.to_string(),
        };
        assert_eq!(reason(&plan.kept, &package(&p1)), Some(&used));
        let error = super::plan(&store, &Policy::default().runs([strange]), later()).unwrap_err();
        assert!(matches!(error, Error::UnreadableRun { .. }), "{error}");

        // A record that is not JSON at all could name anything: nothing goes.
        let garbage = "20200103-000000-000-000002";
        store
            .put_bytes(&layout::run_record(garbage), b"{\"run_id\": ")
            .unwrap();
        let plan = super::plan(&store, &gc, later()).unwrap();
        assert!(plan.is_empty(), "{plan:?}");
        let unknown = Notice::ReferencesUnknown {
            run_id: garbage.to_string(),
        };
        assert_eq!(plan.notices, [unknown]);
        let error = super::plan(&store, &Policy::default().runs([&old]), later()).unwrap_err();
        assert!(matches!(error, Error::ReferencesUnknown { .. }), "{error}");
    }

    #[test]
    fn cache_entries_of_removed_runs_go_and_those_of_kept_runs_stay() {
        let store = memory_store();
        let old = put_run(&store, 10, "succeeded", None, None);
        let new = put_run(&store, 1, "succeeded", None, None);
        let old_entry = put_cache_entry(&store, "k-old", &old);
        let new_entry = put_cache_entry(&store, "k-new", &new);
        store.put_bytes("cache/broken.json", b"not json").unwrap();

        let plan = plan(&store, &Policy::default().keep_last(1), later()).unwrap();
        assert_eq!(removed_runs(&plan), [old.as_str()]);
        assert_eq!(keys(&plan.cache_entries), [old_entry.as_str()]);
        assert!(matches!(
            reason(&plan.kept, &Item::CacheEntry("cache/broken.json".into())),
            Some(KeepReason::Unreadable { .. })
        ));

        let report = apply(&store, &plan).unwrap();
        assert_eq!(keys(&report.cache_entries), [old_entry.as_str()]);
        assert!(!exists(&store, &old_entry));
        assert!(exists(&store, &new_entry));
        assert!(exists(&store, "cache/broken.json"));
        assert!(
            store
                .list(&layout::run_prefix(&old), true)
                .unwrap()
                .objects
                .is_empty()
        );
        assert!(exists(&store, &layout::run_record(&new)));
    }

    #[test]
    fn packages_go_only_when_unused_unpinned_and_not_fresh() {
        let store = memory_store();
        let old = put_run(&store, 10, "succeeded", Some("p-old"), None);
        let kept = put_run(&store, 1, "failed", Some("p-kept"), None);
        let [p_old, p_kept, p_orphan, p_scheduled, p_scheduled_key] = [
            "p-old",
            "p-kept",
            "p-orphan",
            "p-scheduled",
            "p-scheduled-key",
        ]
        .map(|digest| put_package(&store, digest));
        store
            .put_bytes("packages/not-a-package.txt", b"left alone")
            .unwrap();
        let gc = Policy::default()
            .keep_last(1)
            .keep_packages(["p-scheduled", p_scheduled_key.as_str()]);

        // Just stored: a `ferry run` may be about to name them.
        let plan = plan(&store, &gc, Utc::now()).unwrap();
        assert_eq!(removed_runs(&plan), [old.as_str()]);
        assert!(plan.packages.is_empty(), "{plan:?}");
        for fresh in [&p_old, &p_orphan] {
            assert!(matches!(
                reason(&plan.kept, &package(fresh)),
                Some(KeepReason::Fresh { .. })
            ));
        }

        let plan = super::plan(&store, &gc, later()).unwrap();
        assert_eq!(keys(&plan.packages), [p_old.as_str(), p_orphan.as_str()]);
        let used = KeepReason::UsedBy {
            run_id: kept.clone(),
        };
        assert_eq!(reason(&plan.kept, &package(&p_kept)), Some(&used));
        for pinned in [&p_scheduled, &p_scheduled_key] {
            assert_eq!(
                reason(&plan.kept, &package(pinned)),
                Some(&KeepReason::Pinned)
            );
        }
        assert_eq!(plan.runs[0].code_digest.as_deref(), Some("p-old"));

        apply(&store, &plan).unwrap();
        assert!(!exists(&store, &p_old) && !exists(&store, &p_orphan));
        assert!(exists(&store, &p_kept) && exists(&store, &p_scheduled));
        assert!(exists(&store, "packages/not-a-package.txt"));
    }

    #[test]
    fn deleting_named_runs_takes_only_the_packages_they_leave_unused() {
        let store = memory_store();
        let a = put_run(&store, 3, "succeeded", Some("shared"), None);
        put_run(&store, 2, "succeeded", Some("shared"), None);
        let c = put_run(&store, 1, "succeeded", Some("own"), None);
        let [shared, own, _orphan] =
            ["shared", "own", "orphan"].map(|digest| put_package(&store, digest));

        let plan = plan(&store, &Policy::default().runs([&a]), later()).unwrap();
        assert!(plan.packages.is_empty());
        assert!(matches!(
            reason(&plan.kept, &package(&shared)),
            Some(KeepReason::UsedBy { .. })
        ));

        let plan = super::plan(&store, &Policy::default().runs([&c]), later()).unwrap();
        assert_eq!(keys(&plan.packages), [own.as_str()], "not the orphan");
    }

    #[test]
    fn a_run_whose_outputs_a_kept_run_reuses_stays() {
        let store = memory_store();
        let source = put_run(&store, 10, "succeeded", None, None);
        let reuser = put_run(&store, 5, "succeeded", None, Some(&source));
        let newest = put_run(&store, 1, "succeeded", None, Some(&reuser));

        // `newest` reuses `reuser`, which reuses `source`: both stay.
        let plan = plan(&store, &Policy::default().keep_last(1), later()).unwrap();
        assert!(removed_runs(&plan).is_empty(), "{plan:?}");
        let reused_by = |by: &str| KeepReason::OutputsReused {
            by_run: by.to_string(),
            step: "a".into(),
        };
        assert_eq!(reason(&plan.kept, &run(&source)), Some(&reused_by(&reuser)));
        assert_eq!(reason(&plan.kept, &run(&reuser)), Some(&reused_by(&newest)));

        let error = super::plan(&store, &Policy::default().runs([&source]), later()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("run {reuser} reuses the outputs of step `a` of run {source}")
        );
        let all = Policy::default().runs([&source, &reuser, &newest]);
        let plan = super::plan(&store, &all, later()).unwrap();
        assert_eq!(plan.runs.len(), 3);
    }

    #[test]
    fn a_run_recorded_between_plan_and_apply_keeps_its_package_and_the_outputs_it_reuses() {
        let store = memory_store();
        let old = put_run(&store, 10, "succeeded", Some("p1"), None);
        let reused = put_run(&store, 9, "succeeded", None, None);
        let running = put_run(&store, 8, "running", None, None);
        let p1 = put_package(&store, "p1");
        let everything = Policy::default().keep_last(0);
        let plan = plan(&store, &everything, later()).unwrap();
        assert_eq!(removed_runs(&plan), [reused.as_str(), old.as_str()]);
        assert_eq!(keys(&plan.packages), [p1.as_str()]);

        // Meanwhile a `ferry run` records its run, on the code about to go, and a step of the
        // run that was going on reuses outputs about to go, recorded in its `result.json`.
        let started = put_run(&store, 0, "pending", Some("p1"), None);
        let hit = json!({"status": "cached", "outputs_from": {"run_id": reused, "step": "a"}});
        store
            .put_json(&layout::step_result(&running, "b"), &hit)
            .unwrap();

        let report = apply(&store, &plan).unwrap();
        assert_eq!(report.runs.len(), 1);
        assert_eq!(report.runs[0].run_id, old);
        assert!(report.packages.is_empty());
        let used = KeepReason::UsedBy { run_id: started };
        assert_eq!(reason(&report.skipped, &package(&p1)), Some(&used));
        let reuse = KeepReason::OutputsReused {
            by_run: running,
            step: "a".into(),
        };
        assert_eq!(reason(&report.skipped, &run(&reused)), Some(&reuse));
        assert!(exists(&store, &p1));
        assert!(exists(&store, &layout::run_record(&reused)));
        assert!(!exists(&store, &layout::run_record(&old)));
    }

    #[test]
    fn a_run_that_is_no_longer_finished_when_applying_stays() {
        let store = memory_store();
        let id = put_run(&store, 10, "succeeded", None, None);
        let plan = plan(&store, &Policy::default().runs([&id]), later()).unwrap();
        RunRecords::new(store.clone())
            .update(&id, |record| {
                record.status = RunStatus::Running;
                true
            })
            .unwrap();
        let report = apply(&store, &plan).unwrap();
        assert!(report.runs.is_empty());
        let unfinished = KeepReason::Unfinished {
            status: RunStatus::Running,
        };
        assert_eq!(reason(&report.skipped, &run(&id)), Some(&unfinished));
        assert!(exists(&store, &layout::run_record(&id)));
    }

    #[test]
    fn byte_totals_are_the_listed_sizes() {
        let store = memory_store();
        let id = put_run(&store, 10, "succeeded", Some("p1"), None);
        let entry = put_cache_entry(&store, "k", &id);
        let p1 = put_package(&store, "p1");
        let size = |key: &str| store.head(key).unwrap().unwrap().size;
        let record_size = size(&layout::run_record(&id));
        let run_bytes = record_size + b"log line\n".len() as u64 + 100;

        let plan = plan(&store, &Policy::default().runs([&id]), later()).unwrap();
        assert_eq!((plan.runs[0].bytes, plan.runs[0].objects), (run_bytes, 3));
        let totals = plan.totals();
        assert_eq!(
            totals,
            Totals {
                runs: 1,
                run_bytes,
                cache_entries: 1,
                cache_bytes: size(&entry),
                packages: 1,
                package_bytes: size(&p1),
                bytes: run_bytes + size(&entry) + size(&p1),
            }
        );
        assert_eq!(size(&p1), 50);
        assert_eq!(apply(&store, &plan).unwrap().totals(), totals);
    }

    /// A store that logs deletes and can be made to fail one key's delete.
    struct Watched {
        inner: Store,
        deleted: Arc<Mutex<Vec<String>>>,
        fail_on: Arc<Mutex<Option<String>>>,
    }

    impl StorePlugin for Watched {
        fn info() -> PluginInfo {
            PluginInfo {
                name: "watched",
                version: "0",
                description: "a test store that logs deletes",
                config_keys: &[],
            }
        }

        fn new(_config: PluginConfig) -> Result<Self, PluginError> {
            Err(PluginError::unsupported("built by the test"))
        }

        fn url(&self) -> String {
            self.inner.url()
        }

        fn put_file(&self, key: &str, path: &std::path::Path) -> Result<ObjectInfo, PluginError> {
            self.inner.put_file(key, path)
        }

        fn get_file(&self, key: &str, path: &std::path::Path) -> Result<ObjectInfo, PluginError> {
            self.inner.get_file(key, path)
        }

        fn put_bytes(&self, key: &str, data: &[u8]) -> Result<ObjectInfo, PluginError> {
            self.inner.put_bytes(key, data)
        }

        fn get_bytes(&self, key: &str) -> Result<Vec<u8>, PluginError> {
            self.inner.get_bytes(key)
        }

        fn head(&self, key: &str) -> Result<ObjectInfo, PluginError> {
            self.inner
                .head(key)?
                .ok_or_else(|| PluginError::not_found(key))
        }

        fn list(&self, prefix: &str, recursive: bool) -> Result<ListResult, PluginError> {
            self.inner.list(prefix, recursive)
        }

        fn delete(&self, key: &str) -> Result<(), PluginError> {
            if self.fail_on.lock().unwrap().as_deref() == Some(key) {
                return Err(PluginError::other("connection reset"));
            }
            self.deleted.lock().unwrap().push(key.to_string());
            self.inner.delete(key)
        }
    }

    #[test]
    fn apply_deletes_cache_then_runs_with_their_record_last_then_packages() {
        let deleted = Arc::new(Mutex::new(Vec::new()));
        let fail_on = Arc::new(Mutex::new(None));
        let store = Store::from_plugin(Watched {
            inner: memory_store(),
            deleted: deleted.clone(),
            fail_on: fail_on.clone(),
        });
        let id = put_run(&store, 10, "succeeded", Some("p1"), None);
        let entry = put_cache_entry(&store, "k", &id);
        let p1 = put_package(&store, "p1");

        let plan = plan(&store, &Policy::default().runs([&id]), later()).unwrap();
        apply(&store, &plan).unwrap();
        let log = layout::step_log(&id, "a");
        let output = format!("{}model.bin", layout::step_outputs(&id, "a"));
        let record = layout::run_record(&id);
        assert_eq!(*deleted.lock().unwrap(), [entry, log, output, record, p1]);

        // A failure midway leaves the record, so the run is still listed; the next try finishes.
        let id = put_run(&store, 10, "succeeded", None, None);
        let output = format!("{}model.bin", layout::step_outputs(&id, "a"));
        let record = layout::run_record(&id);
        let policy = Policy::default().runs([&id]);
        *fail_on.lock().unwrap() = Some(output.clone());
        let plan = super::plan(&store, &policy, later()).unwrap();
        let error = apply(&store, &plan).unwrap_err();
        assert!(
            matches!(error, Error::Store { action: "delete", ref key, .. } if *key == output),
            "{error}"
        );
        assert!(exists(&store, &record) && exists(&store, &output));

        *fail_on.lock().unwrap() = None;
        let plan = super::plan(&store, &policy, later()).unwrap();
        assert_eq!(removed_runs(&plan), [id.as_str()]);
        apply(&store, &plan).unwrap();
        assert!(
            store
                .list(&layout::run_prefix(&id), true)
                .unwrap()
                .objects
                .is_empty()
        );
    }
}
