//! The handlers against a real local store: status codes, escaping of hostile text,
//! downloads that cannot leave the run, the token and the CSRF check.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use orchestrator_core::run::{OutputFile, RunRecord, RunStatus, StepRecord, StepStatus};
use orchestrator_core::store::layout;
use orchestrator_host::config::{ComponentConfig, StackConfig};
use orchestrator_host::loader::SearchPath;
use orchestrator_host::stack::Stack;
use tower::ServiceExt as _;

use super::*;

const RUN: &str = "20261204-101010-000-abcdef";
const HOSTILE: &str = "<script>alert('x')</script>\"><img src=x onerror=alert(1)>";

struct Fixture {
    _dir: tempfile::TempDir,
    state: Shared,
}

fn fixture(token: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let component = |plugin: &str, settings: serde_json::Value| ComponentConfig {
        plugin: plugin.into(),
        settings: settings.as_object().unwrap().clone(),
    };
    let config = StackConfig {
        orchestrator: component("local", serde_json::json!({})),
        store: component(
            "local",
            serde_json::json!({"path": dir.path().join("store")}),
        ),
    };
    let stack = Stack::open(
        "local",
        &config,
        dir.path(),
        &SearchPath::standard(&[], None, &[]),
    )
    .unwrap();
    // A finished run whose texts are hostile, with one output and a log.
    let mut step = StepRecord::pending();
    step.status = StepStatus::Failed;
    step.error = Some(HOSTILE.into());
    step.outputs = vec![OutputFile {
        path: "model/weights.bin".into(),
        size: 5,
        digest: blake3::hash(b"bytes").to_hex().to_string(),
        executable: false,
    }];
    let record = RunRecord {
        schema_version: 1,
        run_id: RUN.into(),
        pipeline: "train".into(),
        pipeline_file: None,
        stack: "local".into(),
        orchestrator: "local".into(),
        code_digest: Some("c0de".into()),
        params: BTreeMap::from([("note".to_string(), HOSTILE.to_string())]),
        status: RunStatus::Failed,
        created_at: chrono::Utc::now(),
        started_at: None,
        finished_at: Some(chrono::Utc::now()),
        heartbeat_at: None,
        error: None,
        host: None,
        pid: None,
        steps: BTreeMap::from([("fit".to_string(), step)]),
        step_order: vec!["fit".into()],
        placement: Default::default(),
        schedule: None,
        resumed_from: None,
    };
    let store = &stack.store;
    store.put_json(&layout::run_record(RUN), &record).unwrap();
    store
        .put_bytes(
            &layout::step_log(RUN, "fit"),
            format!("epoch 1 {HOSTILE}\n").as_bytes(),
        )
        .unwrap();
    store
        .put_bytes(
            &format!("{}model/weights.bin", layout::step_outputs(RUN, "fit")),
            b"bytes",
        )
        .unwrap();
    Fixture {
        state: AppState::new(stack, Access::new(token.map(str::to_string))),
        _dir: dir,
    }
}

/// Runs `future` on a runtime of its own: the store and orchestrator block, and must be made
/// and dropped outside one.
fn block<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

async fn get(state: &Shared, uri: &str) -> (StatusCode, String, axum::http::HeaderMap) {
    send(state, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn send(
    state: &Shared,
    request: Request<Body>,
) -> (StatusCode, String, axum::http::HeaderMap) {
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), headers)
}

#[test]
fn pages_answer_with_the_run_and_escape_every_hostile_text() {
    let f = fixture(None);
    block(async {
        for uri in [
            "/",
            &format!("/runs/{RUN}"),
            &format!("/runs/{RUN}/steps/fit"),
        ] {
            let (status, body, _) = get(&f.state, uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            assert!(
                !body.contains("<script>alert"),
                "{uri} carries the raw script: {body}"
            );
            assert!(!body.contains("<img src=x"), "{uri} carries the raw tag");
            assert!(body.contains(RUN), "{uri}");
        }
        let (_, run, _) = get(&f.state, &format!("/runs/{RUN}")).await;
        assert!(
            run.contains("&lt;script&gt;alert"),
            "the parameter, escaped: {run}"
        );
        assert!(run.contains("class=\"node status-failed\""), "{run}");
        let (_, step, _) = get(&f.state, &format!("/runs/{RUN}/steps/fit")).await;
        assert!(
            step.contains("epoch 1 &lt;script&gt;"),
            "the log, escaped: {step}"
        );
        assert!(step.contains("/outputs/model/weights.bin"), "{step}");
    });
}

#[test]
fn unknown_runs_steps_and_bad_ids_are_404_and_400() {
    let f = fixture(None);
    block(async {
        assert_eq!(
            get(&f.state, "/runs/20260101-000000-000-000000").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&f.state, "/runs/..%2Fcache").await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            get(&f.state, &format!("/runs/{RUN}/steps/nope")).await.0,
            StatusCode::NOT_FOUND
        );
    });
}

#[test]
fn an_output_downloads_whole_and_no_other_path_does() {
    let f = fixture(None);
    block(async {
        let (status, body, headers) = get(
            &f.state,
            &format!("/runs/{RUN}/steps/fit/outputs/model/weights.bin"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "bytes");
        assert!(
            headers[header::CONTENT_DISPOSITION]
                .to_str()
                .unwrap()
                .contains("weights.bin")
        );
        for path in [
            "../../run.json",
            "..%2F..%2Frun.json",
            "model/../../../run.json",
            "weights.bin",
        ] {
            let (status, _, _) =
                get(&f.state, &format!("/runs/{RUN}/steps/fit/outputs/{path}")).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
    });
}

#[test]
fn cancel_needs_the_pages_csrf_token() {
    let f = fixture(None);
    block(async {
        let post = |csrf: &str| {
            Request::post(format!("/runs/{RUN}/cancel"))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("csrf={csrf}")))
                .unwrap()
        };
        let (status, body, _) = send(&f.state, post("guessed")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        // The page's own token goes through to the orchestrator (the run is finished: it says so).
        let csrf = f.state.access.csrf().to_string();
        let (status, body, _) = send(&f.state, post(&csrf)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert!(body.contains("already ended"), "{body}");
        // GET cannot cancel.
        assert_eq!(
            get(&f.state, &format!("/runs/{RUN}/cancel")).await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    });
}

#[test]
fn with_a_token_nothing_is_served_without_it() {
    let f = fixture(Some("s3cret-token"));
    block(async {
        let (status, body, _) = get(&f.state, "/").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("needs its token"), "{body}");
        assert_eq!(
            get(&f.state, "/assets/app.js").await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(&f.state, "/?token=wrong").await.0,
            StatusCode::UNAUTHORIZED
        );
        // The token once in the address: a cookie, and the address without it.
        let (status, _, headers) = get(&f.state, "/?token=s3cret-token&page=1").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "/?page=1");
        let cookie = headers[header::SET_COOKIE].to_str().unwrap();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        let with_cookie = Request::get("/")
            .header(header::COOKIE, "ferry_ui_token=s3cret-token")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&f.state, with_cookie).await.0, StatusCode::OK);
        let with_bearer = Request::get("/")
            .header(header::AUTHORIZATION, "Bearer s3cret-token")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&f.state, with_bearer).await.0, StatusCode::OK);
    });
}

#[test]
fn no_page_shows_the_stores_settings() {
    let f = fixture(None);
    block(async {
        for uri in [
            "/",
            &format!("/runs/{RUN}"),
            &format!("/runs/{RUN}/steps/fit"),
        ] {
            let body = get(&f.state, uri).await.1;
            assert!(!body.contains("\"path\""), "{uri}");
            assert!(!body.contains("settings"), "{uri}");
        }
    });
}

/// `n` more finished runs of pipeline `pipeline`, one second apart, older than the fixture's.
fn more_runs(state: &Shared, n: usize, pipeline: &str) -> Vec<String> {
    let store = &state.stack.store;
    (0..n)
        .map(|i| {
            let id = format!("20250101-0000{:02}-000-{:06x}", i % 60, i);
            let mut record: RunRecord =
                serde_json::from_slice(&store.get_bytes(&layout::run_record(RUN)).unwrap())
                    .unwrap();
            record.run_id = id.clone();
            record.pipeline = pipeline.into();
            record.status = RunStatus::Succeeded;
            store.put_json(&layout::run_record(&id), &record).unwrap();
            id
        })
        .collect()
}

#[test]
fn the_runs_list_pages_by_fifty_and_filters_by_pipeline_and_status() {
    let f = fixture(None);
    more_runs(&f.state, 59, "nightly");
    block(async {
        let (_, first, _) = get(&f.state, "/").await;
        assert_eq!(first.matches("<tr data-run=").count(), 50);
        assert!(first.contains("rel=\"next\""), "an older page: {first}");
        assert!(first.contains(RUN), "the newest run comes first");
        let (_, second, _) = get(&f.state, "/?page=2").await;
        assert_eq!(second.matches("<tr data-run=").count(), 10);
        assert!(!second.contains("rel=\"next\""));
        let (_, train, _) = get(&f.state, "/?pipeline=train").await;
        assert_eq!(train.matches("<tr data-run=").count(), 1);
        let (_, failed, _) = get(&f.state, "/?status=failed").await;
        assert_eq!(failed.matches("<tr data-run=").count(), 1);
        let (_, fragment, _) = get(&f.state, "/fragment/runs?status=succeeded").await;
        assert_eq!(fragment.matches("<tr data-run=").count(), 50);
        assert!(!fragment.contains("<html"), "a fragment, not a page");
    });
}

#[test]
fn compare_puts_two_runs_side_by_side_and_marks_what_differs() {
    let f = fixture(None);
    let other = more_runs(&f.state, 1, "train").remove(0);
    block(async {
        let (status, body, _) = get(&f.state, &format!("/compare?a={RUN}&b={other}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("step fit"), "{body}");
        assert!(
            body.contains("status-failed") && body.contains("status-succeeded"),
            "{body}"
        );
        assert!(!body.contains("<script>alert"), "escaped");
        let (status, _, _) = get(&f.state, &format!("/compare?a={RUN}&b=nope")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = get(&f.state, &format!("/compare?a={RUN}&b=..%2Fcache")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    });
}

#[test]
fn on_loopback_a_request_naming_another_host_is_refused() {
    let f = fixture(None);
    block(async {
        for host in [
            "127.0.0.1:8765",
            "localhost:8765",
            "[::1]:8765",
            "localhost",
        ] {
            let request = Request::get("/")
                .header(header::HOST, host)
                .body(Body::empty())
                .unwrap();
            assert_eq!(send(&f.state, request).await.0, StatusCode::OK, "{host}");
        }
        for host in [
            "evil.example:8765",
            "evil.example",
            "127.0.0.1.evil.example",
        ] {
            let request = Request::get("/")
                .header(header::HOST, host)
                .body(Body::empty())
                .unwrap();
            let (status, body, _) = send(&f.state, request).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{host}");
            assert!(body.contains("answers only to 127.0.0.1"), "{body}");
        }
    });
}
