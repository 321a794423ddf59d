//! The other commands as a process: validate (with a table of bad pipelines), init, runs,
//! logs, artifacts, stack, render, completions, and the error messages users meet first.

mod support;

use support::Project;

const GOOD: &str = r#"
name: good
params:
  epochs: 3
steps:
  a:
    run: echo "epochs=$FERRY_PARAM_EPOCHS" | tee "$FERRY_OUTPUT_DIR/a.txt"
    outputs: [a.txt]
  b:
    inputs: [a]
    run: cat "$FERRY_INPUT_A/a.txt"
"#;

/// Bad pipeline files: (what it is, file content, expected `line:column`, expected message part).
const BAD_PIPELINES: &[(&str, &str, &str, &str)] = &[
    (
        "yaml syntax",
        "name: x\nsteps: [\n",
        "2:8",
        "unclosed bracket",
    ),
    (
        "missing name",
        "steps:\n  a:\n    run: echo\n",
        "1:1",
        "missing required key `name`",
    ),
    (
        "missing steps",
        "name: x\n",
        "1:1",
        "missing required key `steps`",
    ),
    (
        "unknown top-level key",
        "name: x\nstpes:\n  a:\n    run: echo\n",
        "2:1",
        "did you mean `steps`",
    ),
    (
        "unknown step key",
        "name: x\nsteps:\n  a:\n    run: echo\n    nedds: [b]\n",
        "5:5",
        "did you mean `needs`",
    ),
    (
        "bad pipeline name",
        "name: Bad Name\nsteps:\n  a:\n    run: echo\n",
        "1:7",
        "invalid pipeline name",
    ),
    (
        "bad step name",
        "name: x\nsteps:\n  Bad_Step:\n    run: echo\n",
        "3:3",
        "invalid step name",
    ),
    (
        "duplicate step",
        "name: x\nsteps:\n  a:\n    run: echo\n  a:\n    run: echo\n",
        "5:3",
        "duplicate step `a`",
    ),
    (
        "run and command",
        "name: x\nsteps:\n  a:\n    run: echo\n    command: [echo]\n",
        "5:5",
        "both `run` and `command`",
    ),
    (
        "neither run nor command",
        "name: x\nsteps:\n  a:\n    needs: []\n",
        "3:3",
        "neither `run` nor `command`",
    ),
    (
        "empty command",
        "name: x\nsteps:\n  a:\n    command: []\n",
        "4:14",
        "empty",
    ),
    (
        "unknown need",
        "name: x\nsteps:\n  prepare:\n    run: echo\n  b:\n    run: echo\n    needs: [prepair]\n",
        "7:13",
        "did you mean `prepare`",
    ),
    (
        "self dependency",
        "name: x\nsteps:\n  a:\n    run: echo\n    needs: [a]\n",
        "5:13",
        "itself",
    ),
    (
        "cycle",
        "name: x\nsteps:\n  a:\n    run: echo\n    needs: [b]\n  b:\n    run: echo\n    needs: [a]\n",
        "",
        "dependency cycle: ",
    ),
    (
        "unknown input",
        "name: x\nsteps:\n  a:\n    run: echo\n    inputs: [nothing]\n",
        "5:14",
        "unknown step `nothing`",
    ),
    (
        "bad retries type",
        "name: x\nsteps:\n  a:\n    run: echo\n    retries: many\n",
        "5:14",
        "retries",
    ),
    (
        "bad timeout",
        "name: x\nsteps:\n  a:\n    run: echo\n    timeout: soon\n",
        "5:14",
        "timeout",
    ),
    (
        "escaping output",
        "name: x\nsteps:\n  a:\n    run: echo\n    outputs: [../up.txt]\n",
        "5:15",
        "..",
    ),
    (
        "reserved env",
        "name: x\nsteps:\n  a:\n    run: echo\n    env: { FERRY_STEP: x }\n",
        "5:12",
        "FERRY_",
    ),
    (
        "bad memory",
        "name: x\nsteps:\n  a:\n    run: echo\n    resources: { memory: lots }\n",
        "5:26",
        "invalid memory `lots`",
    ),
];

#[test]
fn validate_accepts_a_good_pipeline() {
    let project = Project::new();
    project.write("pipeline.yaml", GOOD);
    let run = project.ferry(&["validate"]);
    run.success();
    assert!(
        run.stdout()
            .contains("pipeline `good` with 2 steps is valid"),
        "{}",
        run.stdout()
    );
}

#[test]
fn validate_reports_each_bad_pipeline_where_it_is_wrong() {
    let mut failures = Vec::new();
    for (case, content, location, message) in BAD_PIPELINES {
        let project = Project::new();
        project.write("pipeline.yaml", content);
        let run = project.ferry(&["validate"]);
        let stderr = run.stderr();
        let first = stderr.lines().next().unwrap_or_default().to_string();
        let at = format!("pipeline.yaml:{location}");
        let ok = run.code() == 1
            && stderr.contains(&at)
            && stderr.contains(message)
            && first.starts_with("error: ")
            && stderr.contains("hint: fix the");
        if !ok {
            failures.push(format!(
                "{case}: exit {}, expected `{at}` and `{message}`:\n{stderr}",
                run.code()
            ));
        }
        assert!(
            !project.path().join(".ferry").exists(),
            "{case}: validate must not write anything"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        BAD_PIPELINES.len(),
        failures.join("\n")
    );
    assert!(BAD_PIPELINES.len() >= 15);
}

#[test]
fn a_bad_pipeline_is_refused_by_run_before_anything_is_written() {
    let project = Project::new();
    project.write("pipeline.yaml", BAD_PIPELINES[4].1);
    let run = project.ferry(&["run"]);
    run.failure(1);
    assert!(
        run.stderr().contains("did you mean `needs`"),
        "{}",
        run.stderr()
    );
    assert!(
        !project.path().join(".ferry").exists(),
        "nothing written for a bad pipeline"
    );
}

#[test]
fn missing_pipeline_and_bad_params_say_what_to_do() {
    let project = Project::new();
    let run = project.ferry(&["run"]);
    run.failure(1);
    assert!(
        run.stderr().contains("no pipeline file at"),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains("hint: "), "{}", run.stderr());

    project.write("pipeline.yaml", GOOD);
    let run = project.ferry(&["run", "--param", "epoch=4"]);
    run.failure(1);
    assert!(
        run.stderr().contains("did you mean `epochs`"),
        "{}",
        run.stderr()
    );
    let run = project.ferry(&["run", "--param", "epochs"]);
    run.failure(2);
    assert!(run.stderr().contains("NAME=VALUE"), "{}", run.stderr());
    let run = project.ferry(&["run", "--stack", "prod"]);
    run.failure(1);
    assert!(
        run.stderr().contains("unknown stack `prod`"),
        "{}",
        run.stderr()
    );
    let run = project.ferry(&[
        "run",
        "--set",
        "stacks.local.orchestrator.settings.paralelism=2",
    ]);
    run.failure(1);
    assert!(
        run.stderr().contains("did you mean `parallelism`"),
        "{}",
        run.stderr()
    );
    assert!(
        !project.path().join(".ferry/artifacts/runs").exists(),
        "no run was recorded"
    );
}

#[test]
fn init_scaffolds_a_runnable_project_and_never_overwrites() {
    let project = Project::new();
    project.ferry(&["init", "demo"]).success();
    assert!(project.path().join("demo/ferry.toml").is_file());
    assert!(project.path().join("demo/pipeline.yaml").is_file());
    let run = project.ferry(&["-C", "demo", "run"]);
    run.success();
    assert!(run.stdout().contains("HELLO"), "{}", run.stdout());
    let again = project.ferry(&["init", "demo"]);
    again.failure(1);
    assert!(
        again.stderr().contains("already exists"),
        "{}",
        again.stderr()
    );
}

#[test]
fn runs_logs_and_artifacts_read_back_a_run() {
    let project = Project::new();
    project.write("pipeline.yaml", GOOD);
    project.ferry(&["run", "-p", "epochs=7"]).success();
    let run_id = project.latest_record()["run_id"]
        .as_str()
        .unwrap()
        .to_string();

    let list = project.ferry(&["runs", "list"]);
    list.success();
    assert!(
        list.stdout().contains(&run_id) && list.stdout().contains("succeeded"),
        "{}",
        list.stdout()
    );
    let json = project.ferry(&["runs", "list", "--output", "json"]);
    let runs: serde_json::Value = serde_json::from_str(&json.stdout()).unwrap();
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    let listed = |args: &[&str]| -> usize {
        let mut all = vec!["runs", "list", "--output", "json"];
        all.extend_from_slice(args);
        let out = project.ferry(&all);
        out.success();
        serde_json::from_str::<Vec<serde_json::Value>>(&out.stdout())
            .unwrap()
            .len()
    };
    let pipeline = project.latest_record()["pipeline"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        listed(&["--pipeline", &pipeline, "--status", "succeeded"]),
        1
    );
    assert_eq!(listed(&["--since", "1h"]), 1);
    assert_eq!(listed(&["--status", "failed"]), 0);
    assert_eq!(listed(&["--pipeline", "another"]), 0);
    assert_eq!(listed(&["--schedule", "nightly"]), 0);
    project
        .ferry(&["runs", "list", "--status", "sideways"])
        .failure(2);

    let show = project.ferry(&["runs", "show", "latest"]);
    show.success();
    assert!(show.stdout().contains("epochs=7"), "{}", show.stdout());
    let show_json = project.ferry(&["runs", "show", &run_id, "--output", "json"]);
    let record: serde_json::Value = serde_json::from_str(&show_json.stdout()).unwrap();
    assert_eq!(record["steps"]["a"]["status"], "succeeded");

    let logs = project.ferry(&["logs", &run_id]);
    logs.success();
    assert!(logs.stdout().contains("a │ epochs=7"), "{}", logs.stdout());
    let step_logs = project.ferry(&["logs", "latest", "b"]);
    assert_eq!(step_logs.stdout().trim(), "epochs=7");
    let missing_step = project.ferry(&["logs", "latest", "c"]);
    missing_step.failure(1);
    assert!(
        missing_step.stderr().contains("no step `c`"),
        "{}",
        missing_step.stderr()
    );

    let artifacts = project.ferry(&["artifacts", "list", "latest"]);
    artifacts.success();
    assert!(
        artifacts.stdout().contains("a.txt"),
        "{}",
        artifacts.stdout()
    );
    project
        .ferry(&["artifacts", "get", "latest", "a", "-o", "downloaded"])
        .success();
    assert_eq!(project.read("downloaded/a.txt"), "epochs=7\n");
    let missing = project.ferry(&["artifacts", "get", "latest", "a", "nope.txt"]);
    missing.failure(1);
    assert!(
        missing.stderr().contains("no output `nope.txt`"),
        "{}",
        missing.stderr()
    );

    let unknown = project.ferry(&["runs", "show", "20990101-000000-000-abcdef"]);
    unknown.failure(1);
    assert!(
        unknown
            .stderr()
            .contains("no run `20990101-000000-000-abcdef`"),
        "{}",
        unknown.stderr()
    );
    let hostile = project.ferry(&["runs", "show", "../../etc"]);
    hostile.failure(1);
    assert!(
        hostile.stderr().contains("not a run id"),
        "{}",
        hostile.stderr()
    );
}

#[test]
fn stack_commands_describe_the_default_stack_without_any_file() {
    let project = Project::new();
    let list = project.ferry(&["stack", "list"]);
    list.success();
    assert!(list.stdout().contains("local*"), "{}", list.stdout());
    let show = project.ferry(&["stack", "show"]);
    show.success();
    assert!(show.stdout().contains("built-in"), "{}", show.stdout());
    assert!(show.stdout().contains("file://"), "{}", show.stdout());
}

#[test]
fn secrets_in_settings_are_never_shown() {
    let project = Project::new();
    project.write(
        "ferry.toml",
        "[stacks.local]\norchestrator = { plugin = \"local\" }\nstore = { plugin = \"local\" }\n\n[stacks.other]\norchestrator = { plugin = \"local\" }\nstore = { plugin = \"example-store\", settings = { root = \"x\", secret_token = \"hunter2-marker\" } }\n",
    );
    for args in [
        &["stack", "list", "--output", "json"][..],
        &["stack", "list"][..],
    ] {
        let run = project.ferry(args);
        run.success();
        assert!(!run.stdout().contains("hunter2-marker"), "{}", run.stdout());
    }
}

#[test]
fn render_shows_what_would_run_without_running_it() {
    let project = Project::new();
    project.write("pipeline.yaml", GOOD);
    let run = project.ferry(&["render"]);
    run.success();
    assert!(
        run.stdout().contains("a:") && run.stdout().contains("after: a"),
        "{}",
        run.stdout()
    );
    assert!(
        !project.path().join(".ferry/artifacts/runs").exists(),
        "render runs nothing"
    );
}

#[test]
fn version_and_completions_work() {
    let project = Project::new();
    let version = project.ferry(&["--version"]);
    version.success();
    assert!(
        version.stdout().starts_with("ferry "),
        "{}",
        version.stdout()
    );
    let completions = project.ferry(&["completions", "bash"]);
    completions.success();
    assert!(
        completions.stdout().contains("_ferry"),
        "bash completion function"
    );
    let usage = project.ferry(&["runs", "frobnicate"]);
    usage.failure(2);
}

#[test]
fn every_reporting_command_speaks_json_for_scripts() {
    let project = Project::new();
    project.write("pipeline.yaml", GOOD);
    let parse_lines = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };

    // `ferry run`: the events as JSON lines, the record last.
    let run = project.ferry(&["run", "--output", "json"]);
    run.success();
    let events = parse_lines(&run.stdout());
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "step_status" && e["status"] == "running"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e["event"] == "log"), "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "result");
    assert_eq!(last["record"]["status"], "succeeded");
    let run_id = last["record"]["run_id"].as_str().unwrap().to_string();

    // `ferry logs`: the same events, replayed.
    let logs = project.ferry(&["logs", &run_id, "--output", "json"]);
    logs.success();
    let replayed = parse_lines(&logs.stdout());
    assert!(
        replayed
            .iter()
            .any(|e| e["event"] == "log" && e["step"] == "a"),
        "{replayed:?}"
    );

    // `ferry validate`: valid, and every problem with its place.
    let valid = project.ferry(&["validate", "--output", "json"]);
    valid.success();
    let valid: serde_json::Value = serde_json::from_str(&valid.stdout()).unwrap();
    assert_eq!(valid["valid"], true);
    project.write(
        "bad.yaml",
        "name: x\nsteps:\n  a:\n    run: echo\n    needz: [b]\n",
    );
    let invalid = project.ferry(&["validate", "bad.yaml", "--output", "json"]);
    invalid.failure(1);
    let invalid: serde_json::Value = serde_json::from_str(&invalid.stdout()).unwrap();
    assert_eq!(invalid["valid"], false);
    assert_eq!(invalid["problems"][0]["line"], 5, "{invalid:#}");
    assert!(
        invalid["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("needz")
    );

    // `ferry package`: what was built.
    let package = project.ferry(&["package", "--output", "json"]);
    package.success();
    let package: serde_json::Value = serde_json::from_str(&package.stdout()).unwrap();
    let digest = package["digest"].as_str().unwrap();
    assert_eq!(package["key"], format!("packages/{digest}.tar.zst"));
    assert!(package["files"].as_u64().unwrap() >= 1);

    // `ferry stack check`: each operation with its latency.
    let check = project.ferry(&["stack", "check", "--output", "json"]);
    check.success();
    let check: serde_json::Value = serde_json::from_str(&check.stdout()).unwrap();
    assert_eq!(check["ok"], true, "{check:#}");
    assert!(
        check["operations"].as_array().unwrap().len() >= 3,
        "{check:#}"
    );
}
