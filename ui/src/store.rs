//! What the pages read, through the stack's plugins: run records (judged by the orchestrator,
//! so a run whose process died shows as such), kept plans (for the DAG), logs and outputs
//! (streamed from a temporary file, never held whole in memory).

use std::convert::Infallible;
use std::io::{Read as _, Seek as _, SeekFrom};

use axum::body::Body;
use axum::response::sse::Event as SseEvent;
use futures::Stream;
use orchestrator_core::ErrorKind;
use orchestrator_core::pipeline::Pipeline;
use orchestrator_core::run::{Event, RunRecord, RunRecords, is_valid_run_id};
use orchestrator_core::store::layout;

use crate::{ListQuery, PageError, Shared};

/// Runs per page of the runs list.
pub(crate) const PAGE_SIZE: usize = 50;
/// How much of a finished step's log its page shows (the whole log is a download).
pub(crate) const LOG_TAIL: u64 = 256 * 1024;

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PageError> + Send + 'static,
) -> Result<T, PageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PageError::failed(format!("the dashboard's worker failed: {e}")))?
}

/// One page of runs, newest first.
pub(crate) struct Listing {
    pub runs: Vec<RunRecord>,
    pub page: usize,
    pub has_more: bool,
}

impl Listing {
    /// What the live list compares: which runs, in which state.
    pub fn signature(&self) -> String {
        self.runs
            .iter()
            .map(|r| format!("{}:{}", r.run_id, r.status))
            .collect::<Vec<_>>()
            .join(",")
    }
}

pub(crate) async fn list(state: &Shared, query: &ListQuery) -> Result<Listing, PageError> {
    let state = state.clone();
    let page = query.page.unwrap_or(1).max(1);
    let pipeline = query.pipeline.clone().filter(|p| !p.is_empty());
    let status = query.status.clone().filter(|s| !s.is_empty());
    blocking(move || {
        let ids = RunRecords::new(state.stack.store.clone())
            .ids()
            .map_err(|e| {
                PageError::failed(format!(
                    "cannot list the runs in {}: {e}",
                    state.stack.store.url()
                ))
            })?;
        let filtered = pipeline.is_some() || status.is_some();
        let skip = (page - 1) * PAGE_SIZE;
        let mut runs = Vec::new();
        let mut matched = 0usize;
        // Without filters, only the page's records are read.
        let candidates: Box<dyn Iterator<Item = String>> = if filtered {
            Box::new(ids.into_iter())
        } else {
            let total = ids.len();
            let page_ids: Vec<String> = ids.into_iter().skip(skip).take(PAGE_SIZE + 1).collect();
            matched = skip.min(total);
            Box::new(page_ids.into_iter())
        };
        let mut has_more = false;
        for id in candidates {
            let Ok(record) = state.stack.orchestrator.status(&id) else {
                continue;
            };
            if pipeline.as_ref().is_some_and(|p| &record.pipeline != p)
                || status.as_ref().is_some_and(|s| record.status.as_str() != s)
            {
                continue;
            }
            matched += 1;
            if matched <= skip {
                continue;
            }
            if runs.len() == PAGE_SIZE {
                has_more = true;
                break;
            }
            runs.push(record);
        }
        Ok(Listing {
            runs,
            page,
            has_more,
        })
    })
    .await
}

/// A run as its pages show it.
pub(crate) struct RunView {
    pub record: RunRecord,
    /// From the run's kept plan: the steps' dependencies (runs recorded before plans were
    /// kept have none, and their DAG shows the steps alone).
    pub pipeline: Option<Pipeline>,
}

fn check_id(run: &str) -> Result<(), PageError> {
    if is_valid_run_id(run) {
        Ok(())
    } else {
        Err(PageError::bad(format!("`{run}` is not a run id")))
    }
}

pub(crate) async fn run(state: &Shared, run: &str) -> Result<RunView, PageError> {
    check_id(run)?;
    let (state, run) = (state.clone(), run.to_string());
    blocking(move || {
        let record = state.stack.orchestrator.status(&run).map_err(|e| {
            if e.kind == ErrorKind::NOT_FOUND {
                PageError::not_found(format!("no run {run} in {}", state.stack.store.url()))
            } else {
                PageError::failed(format!("cannot read run {run}: {}", e.message()))
            }
        })?;
        let pipeline = orchestrator_host::lifecycle::plan::kept(&state.stack.store, &run)
            .ok()
            .flatten()
            .map(|plan| plan.pipeline);
        Ok(RunView { record, pipeline })
    })
    .await
}

pub(crate) async fn cancel(state: &Shared, run: &str) -> Result<(), PageError> {
    check_id(run)?;
    let (state, run) = (state.clone(), run.to_string());
    blocking(move || {
        state
            .stack
            .orchestrator
            .cancel(&run)
            .map_err(|e| PageError::failed(format!("cannot cancel run {run}: {}", e.message())))
    })
    .await
}

/// A store object in a temporary file that is already unlinked: readable, never left behind.
fn fetch(state: &Shared, key: &str) -> Result<Option<std::fs::File>, PageError> {
    let temp = tempfile::NamedTempFile::new()
        .map_err(|e| PageError::failed(format!("cannot make a temporary file: {e}")))?;
    match state.stack.store.get_file(key, temp.path()) {
        Ok(_) => {}
        Err(e) if e.kind == ErrorKind::NOT_FOUND => return Ok(None),
        Err(e) => {
            return Err(PageError::failed(format!(
                "cannot read {key} from {}: {}",
                state.stack.store.url(),
                e.message()
            )));
        }
    }
    let file = std::fs::File::open(temp.path())
        .map_err(|e| PageError::failed(format!("cannot reopen the download: {e}")))?;
    Ok(Some(file))
}

fn stream(file: std::fs::File) -> Body {
    Body::from_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::from_std(file),
    ))
}

fn check_step(view: &RunView, step: &str) -> Result<(), PageError> {
    if view.record.steps.contains_key(step) {
        Ok(())
    } else {
        Err(PageError::not_found(format!(
            "run {} has no step `{step}`",
            view.record.run_id
        )))
    }
}

/// The end of a finished step's log, for its page.
pub(crate) struct LogTail {
    pub text: String,
    /// Bytes before `text` that the page leaves out.
    pub cut: u64,
    /// Whether the whole log is stored (the step has ended).
    pub stored: bool,
}

pub(crate) async fn log_tail(state: &Shared, run: &str, step: &str) -> Result<LogTail, PageError> {
    let view = self::run(state, run).await?;
    check_step(&view, step)?;
    let (state, key) = (state.clone(), layout::step_log(run, step));
    blocking(move || {
        let Some(mut file) = fetch(&state, &key)? else {
            return Ok(LogTail {
                text: String::new(),
                cut: 0,
                stored: false,
            });
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let cut = len.saturating_sub(LOG_TAIL);
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(cut))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|e| PageError::failed(format!("cannot read the log: {e}")))?;
        Ok(LogTail {
            text: String::from_utf8_lossy(&bytes).into_owned(),
            cut,
            stored: true,
        })
    })
    .await
}

pub(crate) async fn whole_log(state: &Shared, run: &str, step: &str) -> Result<Body, PageError> {
    let view = self::run(state, run).await?;
    check_step(&view, step)?;
    let (state, key) = (state.clone(), layout::step_log(run, step));
    let file = blocking(move || fetch(&state, &key)).await?;
    file.map(stream).ok_or_else(|| {
        PageError::not_found(format!(
            "step `{step}` of run {run} has no stored log yet (it is stored when the step ends; its page shows it live)"
        ))
    })
}

/// A running step's log lines as they come (from its start), then `end`.
pub(crate) async fn follow_log(
    state: &Shared,
    run: &str,
    step: &str,
) -> Result<impl Stream<Item = Result<SseEvent, Infallible>> + use<>, PageError> {
    let view = self::run(state, run).await?;
    check_step(&view, step)?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<String>(256);
    let (state, run, step) = (state.clone(), run.to_string(), step.to_string());
    tokio::task::spawn_blocking(move || {
        let _ =
            state
                .stack
                .orchestrator
                .stream_events(&run, Some(&step), true, |event| match event {
                    // A closed page closes the channel, which stops the following.
                    Event::Log { line, .. } => sender.blocking_send(line).is_ok(),
                    _ => !sender.is_closed(),
                });
    });
    Ok(futures::stream::unfold(
        Some(receiver),
        |receiver| async move {
            let mut receiver = receiver?;
            match receiver.recv().await {
                Some(line) => Some((
                    Ok(SseEvent::default().event("line").data(line)),
                    Some(receiver),
                )),
                None => Some((Ok(SseEvent::default().event("end").data("1")), None)),
            }
        },
    ))
}

/// One output of a step, as the step's record lists it: nothing else can be downloaded, so
/// no path leaves the run's outputs.
pub(crate) async fn output(
    state: &Shared,
    run: &str,
    step: &str,
    path: &str,
) -> Result<(String, Body), PageError> {
    let view = self::run(state, run).await?;
    check_step(&view, step)?;
    let record = &view.record.steps[step];
    if !record.outputs.iter().any(|o| o.path == path) {
        return Err(PageError::not_found(format!(
            "step `{step}` of run {run} has no output `{path}`"
        )));
    }
    let from = record.outputs_location(run, step);
    let key = format!("{}{path}", layout::step_outputs(&from.run_id, &from.step));
    let state = state.clone();
    let file = blocking(move || fetch(&state, &key))
        .await?
        .ok_or_else(|| {
            PageError::not_found(format!("output `{path}` is no longer in the store"))
        })?;
    let name = path.rsplit('/').next().unwrap_or(path).to_string();
    Ok((name, stream(file)))
}
