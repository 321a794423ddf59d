//! `ferry ui`: a web dashboard served by the ferry binary itself, over the stack's artifact
//! store (through its plugin, so a team's S3 or GCS store shows the team's runs) and its
//! orchestrator (which judges a run that is still going, and cancels it).
//!
//! - [`router`]: the pages (`pages`), the live updates (server-sent events: a page re-fetches
//!   its fragment when what it shows changed), downloads, cancel.
//! - Safety: read-only except cancel, a POST carrying the server's CSRF token; bound to
//!   127.0.0.1 unless told otherwise, and then a token is required (`auth`); a download is one
//!   of the outputs the step's record lists, so no path leaves the run's prefix; settings and
//!   credentials are never rendered; every text is HTML-escaped (maud).
//! - Assets are compiled in (`assets/`); nothing is fetched from the internet.

mod auth;
mod dag;
mod pages;
mod store;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::Stream;
use orchestrator_host::stack::Stack;
use serde::Deserialize;

pub use auth::{Access, random_token};

/// How often live pages look for changes.
const POLL: Duration = Duration::from_millis(700);

/// What every handler shares.
pub struct AppState {
    pub(crate) stack: Stack,
    pub(crate) access: Access,
}

impl AppState {
    pub fn new(stack: Stack, access: Access) -> Arc<Self> {
        Arc::new(Self { stack, access })
    }
}

type Shared = Arc<AppState>;

/// Every route of the dashboard.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(runs_page))
        .route("/fragment/runs", get(runs_fragment))
        .route("/events/runs", get(runs_events))
        .route("/runs/{run}", get(run_page))
        .route("/fragment/runs/{run}", get(run_fragment))
        .route("/events/runs/{run}", get(run_events))
        .route("/runs/{run}/cancel", post(cancel))
        .route("/runs/{run}/steps/{step}", get(step_page))
        .route("/runs/{run}/steps/{step}/log", get(step_log))
        .route("/events/runs/{run}/steps/{step}", get(step_events))
        .route("/runs/{run}/steps/{step}/outputs/{*path}", get(download))
        .route("/compare", get(compare))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ))
        .with_state(state)
}

/// Serves the dashboard on `address` until the process is stopped; `ready` gets the bound
/// address (port 0 picks a free one).
pub async fn serve(
    state: Shared,
    address: SocketAddr,
    ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    ready(listener.local_addr()?);
    axum::serve(listener, router(state)).await
}

/// A page's error: a status and a line that says what failed.
pub(crate) struct PageError(StatusCode, String);

impl PageError {
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, what.into())
    }
    pub(crate) fn bad(what: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, what.into())
    }
    pub(crate) fn failed(what: impl Into<String>) -> Self {
        Self(StatusCode::BAD_GATEWAY, what.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        (self.0, Html(pages::error(self.0, &self.1).into_string())).into_response()
    }
}

type PageResult = Result<Response, PageError>;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    pipeline: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

async fn runs_page(State(state): State<Shared>, Query(query): Query<ListQuery>) -> PageResult {
    let listing = store::list(&state, &query).await?;
    Ok(Html(pages::runs(&state, &query, &listing).into_string()).into_response())
}

async fn runs_fragment(State(state): State<Shared>, Query(query): Query<ListQuery>) -> PageResult {
    let listing = store::list(&state, &query).await?;
    Ok(Html(pages::runs_table(&listing).into_string()).into_response())
}

async fn runs_events(
    State(state): State<Shared>,
    Query(query): Query<ListQuery>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    changes(move || {
        let state = state.clone();
        let query = ListQuery {
            page: query.page,
            pipeline: query.pipeline.clone(),
            status: query.status.clone(),
        };
        async move {
            store::list(&state, &query)
                .await
                .map(|l| l.signature())
                .unwrap_or_default()
        }
    })
}

async fn run_page(State(state): State<Shared>, Path(run): Path<String>) -> PageResult {
    let view = store::run(&state, &run).await?;
    Ok(Html(pages::run(&state, &view).into_string()).into_response())
}

async fn run_fragment(State(state): State<Shared>, Path(run): Path<String>) -> PageResult {
    let view = store::run(&state, &run).await?;
    Ok(Html(pages::run_body(&state, &view).into_string()).into_response())
}

async fn run_events(
    State(state): State<Shared>,
    Path(run): Path<String>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    changes(move || {
        let (state, run) = (state.clone(), run.clone());
        async move {
            store::run(&state, &run)
                .await
                .map(|v| serde_json::to_string(&v.record).unwrap_or_default())
                .unwrap_or_default()
        }
    })
}

/// A stream that says `ready` once it has looked (the page then fetches its fragment again,
/// so that nothing that changed between its rendering and this look is missed), then
/// `changed` whenever `look()` gives another answer than last time.
fn changes<F, Fut>(look: F) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = String> + Send,
{
    // Browsers drop an event whose data is empty (the SSE rules), hence the `1`s.
    let stream = futures::stream::unfold((look, None::<blake3::Hash>), |(look, last)| async move {
        let Some(last) = last else {
            let first = blake3::hash(look().await.as_bytes());
            return Some((
                Ok(SseEvent::default().event("ready").data("1")),
                (look, Some(first)),
            ));
        };
        loop {
            tokio::time::sleep(POLL).await;
            let now = blake3::hash(look().await.as_bytes());
            if now != last {
                return Some((
                    Ok(SseEvent::default().event("changed").data("1")),
                    (look, Some(now)),
                ));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[derive(Deserialize)]
struct CancelForm {
    csrf: String,
}

async fn cancel(
    State(state): State<Shared>,
    Path(run): Path<String>,
    Form(form): Form<CancelForm>,
) -> PageResult {
    if !state.access.csrf_matches(&form.csrf) {
        return Err(PageError(
            StatusCode::FORBIDDEN,
            "this cancel did not come from ferry's own page (its CSRF token is missing or stale); reload the run's page and press Cancel there".into(),
        ));
    }
    store::cancel(&state, &run).await?;
    Ok(Redirect::to(&format!("/runs/{run}")).into_response())
}

async fn step_page(
    State(state): State<Shared>,
    Path((run, step)): Path<(String, String)>,
) -> PageResult {
    let view = store::run(&state, &run).await?;
    let Some(record) = view.record.steps.get(&step) else {
        return Err(PageError::not_found(format!(
            "run {run} has no step `{step}`"
        )));
    };
    let tail = store::log_tail(&state, &run, &step).await?;
    Ok(Html(pages::step(&state, &view, &step, record, &tail).into_string()).into_response())
}

async fn step_log(
    State(state): State<Shared>,
    Path((run, step)): Path<(String, String)>,
) -> PageResult {
    let body = store::whole_log(&state, &run, &step).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

async fn step_events(
    State(state): State<Shared>,
    Path((run, step)): Path<(String, String)>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, PageError> {
    let lines = store::follow_log(&state, &run, &step).await?;
    Ok(Sse::new(lines).keep_alive(KeepAlive::default()))
}

async fn download(
    State(state): State<Shared>,
    Path((run, step, path)): Path<(String, String, String)>,
) -> PageResult {
    let (name, body) = store::output(&state, &run, &step, &path).await?;
    let disposition = format!(
        "attachment; filename=\"{}\"",
        name.replace(['"', '\\', '\r', '\n'], "_")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
struct CompareQuery {
    a: String,
    b: String,
}

async fn compare(State(state): State<Shared>, Query(query): Query<CompareQuery>) -> PageResult {
    let a = store::run(&state, &query.a).await?;
    let b = store::run(&state, &query.b).await?;
    Ok(Html(pages::compare(&state, &a, &b).into_string()).into_response())
}

async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../assets/app.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../assets/app.js"),
    )
}

#[cfg(test)]
mod tests;
