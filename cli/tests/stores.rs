//! Artifact stores swapped by configuration alone: the same `ferry` binary runs
//! `examples/hello` on the local, S3 and GCS stacks; what it writes to S3 reads back with a
//! standard client (boto3) at the documented layout, and the other way round.
//!
//! Needs the test servers (`scripts/test-all.sh` starts them) and the plugin libraries.

mod support;

use std::process::Command;

use support::{Project, toml_table};
use test_support::{gcs_settings, plugin_path, s3_settings, server_env, unique_prefix};

fn interop(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/s3-interop.py");
    let output = Command::new(server_env("FERRY_TEST_PYTHON"))
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "s3-interop.py {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn runs(project: &Project, stack: &str) -> Vec<serde_json::Value> {
    let list = project.ferry(&["runs", "list", "--stack", stack, "--output", "json"]);
    list.success();
    serde_json::from_str::<Vec<serde_json::Value>>(&list.stdout()).unwrap()
}

#[test]
fn one_binary_runs_hello_on_local_s3_and_gcs_by_changing_only_ferry_toml() {
    plugin_path("storage-s3");
    plugin_path("storage-gcs");
    let project = Project::with_example("hello");
    let s3_prefix = unique_prefix("swap");
    let gcs_prefix = unique_prefix("swap");
    let stacks = format!(
        "[stacks.s3]\norchestrator = {{ plugin = \"local\" }}\nstore = {{ plugin = \"storage-s3\", settings = {} }}\n\n\
         [stacks.gcs]\norchestrator = {{ plugin = \"local\" }}\nstore = {{ plugin = \"storage-gcs\", settings = {} }}\n",
        toml_table(&s3_settings(&s3_prefix)),
        toml_table(&gcs_settings(&gcs_prefix)),
    );
    let mut ids = Vec::new();
    for stack in ["local", "s3", "gcs"] {
        project.write("ferry.toml", &format!("stack = \"{stack}\"\n\n{stacks}"));
        let run = project.ferry(&["run", "hello"]);
        run.success();
        assert!(run.stdout().contains("report"), "{}", run.stdout());
        let listed = runs(&project, stack);
        assert_eq!(
            listed.len(),
            1,
            "{stack}: one run in this store: {listed:#?}"
        );
        assert_eq!(listed[0]["status"], "succeeded");
        let id = listed[0]["run_id"].as_str().unwrap().to_string();
        let logs = project.ferry(&["logs", &id, "report", "--stack", stack]);
        logs.success();
        assert!(
            logs.stdout().contains("hello, newcomer"),
            "{stack}: {}",
            logs.stdout()
        );
        project
            .ferry(&[
                "artifacts",
                "get",
                &id,
                "report",
                "--stack",
                stack,
                "-o",
                &format!("out-{stack}"),
            ])
            .success();
        assert!(
            project
                .read(&format!("out-{stack}/report.txt"))
                .contains("lines")
        );
        ids.push(id);
    }
    // The local store only has the local run.
    let local_runs = std::fs::read_dir(project.path().join(".ferry/artifacts/runs"))
        .unwrap()
        .count();
    assert_eq!(local_runs, 1);

    // Interop, ferry → boto3: the S3 run is where the documented layout says.
    let bucket = server_env("FERRY_TEST_S3_BUCKET");
    let s3_id = &ids[1];
    let keys = interop(&["list", &bucket, &format!("{s3_prefix}/runs/{s3_id}/")]);
    for expected in [
        format!("{s3_prefix}/runs/{s3_id}/run.json"),
        format!("{s3_prefix}/runs/{s3_id}/steps/report/log"),
        format!("{s3_prefix}/runs/{s3_id}/steps/report/outputs/report.txt"),
    ] {
        assert!(
            keys.lines().any(|k| k == expected),
            "missing {expected} in\n{keys}"
        );
    }
    let record_file = project.path().join("record.json");
    interop(&[
        "get",
        &bucket,
        &format!("{s3_prefix}/runs/{s3_id}/run.json"),
        record_file.to_str().unwrap(),
    ]);
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record_file).unwrap()).unwrap();
    assert_eq!(record["run_id"], s3_id.as_str());

    // Interop, boto3 → ferry: a record another tool wrote at the layout is a run ferry lists.
    let copied_id = "20000101-000000-000-c0ffee";
    let mut copied = record.clone();
    copied["run_id"] = copied_id.into();
    std::fs::write(&record_file, serde_json::to_vec(&copied).unwrap()).unwrap();
    interop(&[
        "put",
        &bucket,
        &format!("{s3_prefix}/runs/{copied_id}/run.json"),
        record_file.to_str().unwrap(),
    ]);
    let listed = runs(&project, "s3");
    assert!(
        listed.iter().any(|r| r["run_id"] == copied_id),
        "{listed:#?}"
    );
}

#[test]
fn a_bad_s3_secret_fails_the_run_clearly_and_never_shows_the_secret() {
    plugin_path("storage-s3");
    let project = Project::with_example("hello");
    let mut settings = s3_settings(&unique_prefix("badsecret"));
    settings["secret_access_key"] = "marker-secret-do-not-print".into();
    settings["max_retries"] = 0.into();
    project.write(
        "ferry.toml",
        &format!(
            "stack = \"s3\"\n[stacks.s3]\norchestrator = {{ plugin = \"local\" }}\nstore = {{ plugin = \"storage-s3\", settings = {} }}\n",
            toml_table(&settings)
        ),
    );
    for args in [
        &["run", "hello", "-v"][..],
        &["stack", "check"][..],
        &["stack", "show"][..],
    ] {
        let run = project.ferry(args);
        let all = format!("{}{}", run.stdout(), run.stderr());
        assert!(
            !all.contains("marker-secret-do-not-print"),
            "{args:?} leaked the secret:\n{all}"
        );
        if args[0] != "stack" || args[1] == "check" {
            run.failure(1);
        }
    }
    let check = project.ferry(&["stack", "check"]);
    assert!(
        check.stderr().contains("refused the credentials"),
        "{}",
        check.stderr()
    );
}

#[test]
fn s3_credentials_and_bucket_can_come_from_the_standard_environment() {
    plugin_path("storage-s3");
    let project = Project::new();
    let prefix = unique_prefix("env");
    project.write(
        "ferry.toml",
        &format!(
            "stack = \"s3\"\n[stacks.s3]\norchestrator = {{ plugin = \"local\" }}\nstore = {{ plugin = \"storage-s3\", settings = {{ prefix = \"{prefix}\" }} }}\n"
        ),
    );
    let output = project
        .command(&["stack", "check"])
        .env(
            "AWS_ACCESS_KEY_ID",
            server_env("FERRY_TEST_S3_ACCESS_KEY_ID"),
        )
        .env(
            "AWS_SECRET_ACCESS_KEY",
            server_env("FERRY_TEST_S3_SECRET_ACCESS_KEY"),
        )
        .env("AWS_REGION", server_env("FERRY_TEST_S3_REGION"))
        .env("AWS_ENDPOINT", server_env("FERRY_TEST_S3_ENDPOINT"))
        .env("AWS_BUCKET", server_env("FERRY_TEST_S3_BUCKET"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("the store works"), "{stdout}");
    let expected_url = format!("s3://{}/{prefix}", server_env("FERRY_TEST_S3_BUCKET"));
    assert!(stdout.contains(&expected_url), "{stdout}");
}

#[test]
fn a_slow_store_works_within_its_timeout_and_fails_clearly_beyond_it() {
    plugin_path("storage-s3");
    let endpoint = server_env("FERRY_TEST_S3_ENDPOINT");
    // 200 ms on every chunk, both ways: several seconds for a whole run.
    let proxy = test_support::SlowProxy::start(
        endpoint.trim_start_matches("http://"),
        std::time::Duration::from_millis(200),
    );
    let project = Project::with_example("hello");
    let mut settings = s3_settings(&unique_prefix("slow"));
    settings["endpoint"] = proxy.url().into();
    let stack = |settings: &serde_json::Value| {
        format!(
            "stack = \"slow\"\n\n[stacks.slow]\norchestrator = {{ plugin = \"local\" }}\nstore = {{ plugin = \"storage-s3\", settings = {} }}\n",
            toml_table(settings)
        )
    };
    project.write("ferry.toml", &stack(&settings));
    let run = project.ferry(&["run", "hello"]);
    run.success();
    assert!(run.stdout().contains("hello, newcomer"), "{}", run.stdout());

    // A timeout shorter than the store's answers: a clear failure, not a hang.
    settings["timeout"] = "100ms".into();
    settings["max_retries"] = 0.into();
    project.write("ferry.toml", &stack(&settings));
    let started = std::time::Instant::now();
    let check = project.ferry(&["stack", "check"]);
    assert_ne!(check.code(), 0);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "it gave up as configured"
    );
    assert!(
        check
            .stderr()
            .contains("did not answer in time: raise `timeout`"),
        "{}",
        check.stderr()
    );
}
