//! The pages, as maud templates: every value is HTML-escaped unless it is marked otherwise,
//! and only ferry's own SVG is.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use orchestrator_core::run::{RunRecord, StepRecord};

use orchestrator_host::package::human_size;

use crate::AppState;
use crate::store::{LOG_TAIL, Listing, LogTail, RunView};
use crate::{ListQuery, dag};

/// A URL path segment or path, percent-encoded except for unreserved characters and `/`.
fn encode(path: &str) -> String {
    let mut out = String::new();
    for byte in path.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn query_value(value: &str) -> String {
    encode(value).replace('/', "%2F")
}

/// What a page watches live (`data-*` attributes `app.js` reads).
#[derive(Default)]
struct Live<'a> {
    what: Option<&'a str>,
    run: Option<&'a str>,
    step: Option<&'a str>,
}

fn layout(state: &AppState, title: &str, live: Live<'_>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ferry" }
                link rel="stylesheet" href="/assets/app.css";
            }
            body data-live=[live.what] data-run=[live.run] data-step=[live.step] {
                header {
                    a href="/" { "ferry" }
                    span class="store" { "stack " (state.stack.name) " · " (state.stack.store.url()) }
                }
                main { (content) }
                script src="/assets/app.js" {}
            }
        }
    }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

fn duration(d: Option<chrono::Duration>) -> String {
    let Some(d) = d else { return "-".into() };
    let ms = d.num_milliseconds().max(0);
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
    }
}

fn step_duration(step: &StepRecord) -> Option<chrono::Duration> {
    Some(step.finished_at.unwrap_or_else(Utc::now) - step.started_at?)
}

fn status(text: &str) -> Markup {
    html! { span class=(format!("status status-{text}")) { (text) } }
}

pub(crate) fn error(code: StatusCode, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { (code.as_u16()) " · ferry" } link rel="stylesheet" href="/assets/app.css"; }
            body { main { h1 { (code.as_u16()) " " (code.canonical_reason().unwrap_or_default()) } p class="error" { (message) } p { a href="/" { "all runs" } } } }
        }
    }
}

const STATUSES: [&str; 5] = ["pending", "running", "succeeded", "failed", "cancelled"];

pub(crate) fn runs(state: &AppState, query: &ListQuery, listing: &Listing) -> Markup {
    let pipeline = query.pipeline.clone().unwrap_or_default();
    let chosen = query.status.clone().unwrap_or_default();
    let link = |page: usize| {
        format!(
            "/?page={page}&pipeline={}&status={}",
            query_value(&pipeline),
            query_value(&chosen)
        )
    };
    layout(
        state,
        "runs",
        Live {
            what: Some("runs"),
            ..Live::default()
        },
        html! {
            h1 { "Runs" }
            form class="filters" method="get" action="/" {
                label { "pipeline " input type="text" name="pipeline" value=(pipeline); }
                label { "status "
                    select name="status" {
                        option value="" selected[chosen.is_empty()] { "any" }
                        @for s in STATUSES { option value=(s) selected[chosen == s] { (s) } }
                    }
                }
                button type="submit" { "filter" }
            }
            table {
                thead { tr { th { "run" } th { "pipeline" } th { "status" } th { "started" } th { "duration" } th { "steps" } th { "schedule" } } }
                tbody id="runs" { (runs_table(listing)) }
            }
            div class="pager" {
                @if listing.page > 1 { a href=(link(listing.page - 1)) rel="prev" { "← newer" } }
                span class="note" { "page " (listing.page) }
                @if listing.has_more { a href=(link(listing.page + 1)) rel="next" { "older →" } }
            }
        },
    )
}

pub(crate) fn runs_table(listing: &Listing) -> Markup {
    html! {
        @if listing.runs.is_empty() {
            tr { td colspan="7" class="note" { "no runs here yet; start one with `ferry run`" } }
        }
        @for record in &listing.runs {
            @let done = record.steps.values().filter(|s| s.status.is_finished()).count();
            tr data-run=(record.run_id) data-status=(record.status.as_str()) {
                td class="mono" { a href=(format!("/runs/{}", encode(&record.run_id))) { (record.run_id) } }
                td { (record.pipeline) }
                td { (status(record.status.as_str())) }
                td { (time(record.started_at.or(Some(record.created_at)))) }
                td { (duration(record.duration())) }
                td { (done) "/" (record.steps.len()) }
                td { (record.schedule.as_deref().unwrap_or("-")) }
            }
        }
    }
}

pub(crate) fn run(state: &AppState, view: &RunView) -> Markup {
    let record = &view.record;
    layout(
        state,
        &format!("run {}", record.run_id),
        Live {
            what: Some("run"),
            run: Some(&record.run_id),
            step: None,
        },
        html! {
            h1 { (record.pipeline) " " span class="mono note" { (record.run_id) } }
            div id="run-body" { (run_body(state, view)) }
        },
    )
}

pub(crate) fn run_body(state: &AppState, view: &RunView) -> Markup {
    let record = &view.record;
    let pipeline = view.pipeline.clone().unwrap_or_else(|| steps_alone(record));
    let run_url = format!("/runs/{}", encode(&record.run_id));
    html! {
        dl class="facts" {
            dt { "status" } dd { (status(record.status.as_str())) }
            @if let Some(error) = &record.error { dt { "error" } dd { (error) } }
            dt { "stack" } dd { (record.stack) " (" (record.orchestrator) ")" }
            dt { "created" } dd { (time(Some(record.created_at))) }
            dt { "duration" } dd { (duration(record.duration())) }
            @if let Some(code) = &record.code_digest { dt { "code" } dd class="mono" { (code) } }
            @if let Some(schedule) = &record.schedule { dt { "schedule" } dd { (schedule) } }
            @if let Some(earlier) = &record.resumed_from { dt { "resumes" } dd { a href=(format!("/runs/{}", encode(earlier))) { (earlier) } } }
            dt { "parameters" } dd {
                @if record.params.is_empty() { span class="note" { "none" } }
                @for (k, v) in &record.params { code { (k) "=" (v) } " " }
            }
        }
        @if !record.status.is_finished() {
            form method="post" action=(format!("{run_url}/cancel")) data-confirm=(format!("Cancel run {}? Its running steps are stopped.", record.run_id)) {
                input type="hidden" name="csrf" value=(state.access.csrf());
                p { button class="danger" type="submit" { "Cancel run" } }
            }
        }
        h2 { "Steps" }
        (dag::svg(&pipeline, record, |step| format!("{run_url}/steps/{}", encode(step))))
        h2 { "Timeline" }
        (timeline(record))
        h2 { "Attempts" }
        table {
            thead { tr { th { "step" } th { "status" } th { "attempts" } th { "duration" } th { "reason" } th { "cache" } } }
            tbody {
                @for (name, step) in record.ordered_steps() {
                    tr data-step=(name) {
                        td { a href=(format!("{run_url}/steps/{}", encode(name))) { (name) } }
                        td { (status(step.status.as_str())) }
                        td { (step.attempts) }
                        td { (duration(step_duration(step))) }
                        td {
                            @if let Some(error) = &step.error { (error) }
                            @for attempt in step.attempt_history.iter().filter(|a| a.reason.is_some()) {
                                div class="note" { "attempt " (attempt.number) ": " (attempt.reason.as_deref().unwrap_or_default()) }
                            }
                        }
                        td class="note" { (step.cache_note.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// A record without a kept plan: its steps, with no edges.
fn steps_alone(record: &RunRecord) -> orchestrator_core::pipeline::Pipeline {
    let mut yaml = format!("name: {}\nsteps:\n", record.pipeline);
    for (name, _) in record.ordered_steps() {
        yaml.push_str(&format!("  {name}: {{run: \"true\"}}\n"));
    }
    orchestrator_core::pipeline::Pipeline::from_yaml_str(&yaml, None).unwrap_or_else(|_| {
        orchestrator_core::pipeline::Pipeline::builder(&record.pipeline)
            .build()
            .expect("an empty pipeline is valid")
    })
}

fn timeline(record: &RunRecord) -> Markup {
    let start = record.started_at.unwrap_or(record.created_at);
    let end = record.finished_at.unwrap_or_else(Utc::now);
    let span = (end - start).num_milliseconds().max(1) as f64;
    html! {
        div class="timeline" {
            @for (name, step) in record.ordered_steps() {
                div class="row" {
                    span { (name) }
                    div class="track" {
                        @if let Some(started) = step.started_at {
                            @let from = ((started - start).num_milliseconds().max(0) as f64 / span * 100.0).min(100.0);
                            @let to = ((step.finished_at.unwrap_or(end) - start).num_milliseconds().max(0) as f64 / span * 100.0).min(100.0);
                            div class=(format!("bar status-{}", step.status.as_str())) style=(format!("left:{from:.2}%;width:{:.2}%", (to - from).max(0.3))) {}
                        }
                    }
                    span class="note" { (duration(step_duration(step))) }
                }
            }
        }
    }
}

pub(crate) fn step(
    state: &AppState,
    view: &RunView,
    name: &str,
    step: &StepRecord,
    tail: &LogTail,
) -> Markup {
    let record = &view.record;
    let run_url = format!("/runs/{}", encode(&record.run_id));
    let step_url = format!("{run_url}/steps/{}", encode(name));
    let live = !tail.stored && !step.status.is_finished();
    let body = if live {
        Live {
            what: Some("log"),
            run: Some(&record.run_id),
            step: Some(name),
        }
    } else {
        Live::default()
    };
    layout(
        state,
        &format!("{name} · run {}", record.run_id),
        body,
        html! {
            h1 { a href=(run_url) { (record.pipeline) } " / " (name) }
            dl class="facts" {
                dt { "status" } dd { (status(step.status.as_str())) }
                @if let Some(error) = &step.error { dt { "reason" } dd { (error) } }
                @if let Some(code) = step.exit_code { dt { "exit code" } dd { (code) } }
                dt { "attempts" } dd { (step.attempts) }
                dt { "duration" } dd { (duration(step_duration(step))) }
                dt { "cache" } dd { (step.cache_note.as_deref().unwrap_or("-")) }
                @if let Some(from) = &step.outputs_from { dt { "outputs from" } dd { a href=(format!("/runs/{}/steps/{}", encode(&from.run_id), encode(&from.step))) { "run " (from.run_id) } } }
            }
            h2 { "Outputs" }
            @if step.outputs.is_empty() { p class="note" { "none" } } @else {
                table {
                    thead { tr { th { "path" } th { "size" } th { "digest" } } }
                    tbody {
                        @for output in &step.outputs {
                            tr {
                                td { a href=(format!("{step_url}/outputs/{}", encode(&output.path))) download { (output.path) } }
                                td { (human_size(output.size)) }
                                td class="mono note" { (&output.digest[..output.digest.len().min(16)]) }
                            }
                        }
                    }
                }
            }
            h2 { "Log" }
            @if tail.stored {
                @if tail.cut > 0 {
                    p class="note" { "the last " (human_size(LOG_TAIL)) " of " (human_size(tail.cut + tail.text.len() as u64)) "; " a href=(format!("{step_url}/log")) { "the whole log" } }
                } @else {
                    p class="note" { a href=(format!("{step_url}/log")) { "download" } }
                }
                pre id="log" class="log" { (tail.text) }
            } @else if live {
                p class="note" { "live: lines appear as the step writes them" }
                pre id="log" class="log" data-lines="0" {}
            } @else {
                p class="note" { "the step wrote nothing to its log" }
            }
        },
    )
}

pub(crate) fn compare(state: &AppState, a: &RunView, b: &RunView) -> Markup {
    let (ra, rb) = (&a.record, &b.record);
    let params: BTreeSet<&String> = ra.params.keys().chain(rb.params.keys()).collect();
    let steps: Vec<&str> = {
        let mut names: Vec<&str> = ra.ordered_steps().into_iter().map(|(n, _)| n).collect();
        for (n, _) in rb.ordered_steps() {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        names
    };
    let cell = |r: &RunRecord, step: &str| -> Markup {
        match r.steps.get(step) {
            Some(s) => {
                html! { (status(s.status.as_str())) " " span class="note" { (duration(step_duration(s))) } }
            }
            None => html! { span class="note" { "-" } },
        }
    };
    layout(
        state,
        "compare",
        Live::default(),
        html! {
            h1 { "Compare" }
            table {
                thead { tr { th {} th { a href=(format!("/runs/{}", encode(&ra.run_id))) { (ra.run_id) } } th { a href=(format!("/runs/{}", encode(&rb.run_id))) { (rb.run_id) } } } }
                tbody {
                    tr { th { "status" } td { (status(ra.status.as_str())) } td { (status(rb.status.as_str())) } }
                    tr { th { "duration" } td { (duration(ra.duration())) } td { (duration(rb.duration())) } }
                    tr { th { "code" } td class="mono" { (ra.code_digest.as_deref().map(|d| &d[..d.len().min(12)]).unwrap_or("-")) } td class="mono" { (rb.code_digest.as_deref().map(|d| &d[..d.len().min(12)]).unwrap_or("-")) } }
                    @for key in params {
                        @let (va, vb) = (ra.params.get(key), rb.params.get(key));
                        tr class=(if va == vb { "same" } else { "differs" }) {
                            th { "param " (key) }
                            td { (va.map(String::as_str).unwrap_or("-")) }
                            td { (vb.map(String::as_str).unwrap_or("-")) }
                        }
                    }
                    @for step in steps {
                        tr { th { "step " (step) } td { (cell(ra, step)) } td { (cell(rb, step)) } }
                    }
                }
            }
        },
    )
}
