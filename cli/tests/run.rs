//! `ferry run` on the local stack, as a process: DAG order, parallelism, outputs, logs, retries,
//! timeouts, caching, failure handling, cancellation.

mod support;

use std::time::{Duration, Instant};

use support::{Project, process_alive};

#[test]
fn hello_example_runs_end_to_end_and_stores_everything() {
    let project = Project::with_example("hello");
    let run = project.ferry(&["run", "hello"]);
    run.success();
    let record = project.latest_record();
    assert_eq!(record["status"], "succeeded", "{record:#}");
    let run_id = record["run_id"].as_str().unwrap();
    let steps = record["steps"].as_object().unwrap();
    assert!(
        steps.len() >= 4,
        "hello has a fan-out and a fan-in: {record:#}"
    );
    for (name, step) in steps {
        assert_eq!(step["status"], "succeeded", "step {name}");
        let log = project
            .path()
            .join(format!(".ferry/artifacts/runs/{run_id}/steps/{name}/log"));
        assert!(log.is_file(), "log of {name} saved in the store");
        for output in step["outputs"].as_array().unwrap() {
            let path = output["path"].as_str().unwrap();
            let stored = project.path().join(format!(
                ".ferry/artifacts/runs/{run_id}/steps/{name}/outputs/{path}"
            ));
            assert_eq!(
                std::fs::metadata(&stored).unwrap().len(),
                output["size"].as_u64().unwrap(),
                "{name}/{path} stored with its recorded size"
            );
        }
    }
    // Output lines are prefixed by their step.
    assert!(
        run.stdout().lines().any(|l| l.contains(" │ ")),
        "{}",
        run.stdout()
    );
    assert!(run.stdout().contains("succeeded"));
}

#[test]
fn outputs_flow_to_downstream_steps_and_the_env_contract_holds() {
    let project = Project::new();
    project.write(
        "pipeline.yaml",
        r#"
name: contract
params:
  greeting: hi
  rounds: 3
steps:
  make-data:
    run: printf 'a b c\n' > "$FERRY_OUTPUT_DIR/data.txt"; mkdir -p "$FERRY_OUTPUT_DIR/sub"; echo deep > "$FERRY_OUTPUT_DIR/sub/file"
    outputs: [data.txt, sub/file]
  use-data:
    inputs: [make-data]
    params: { rounds: 5 }
    env: { MY_VAR: mine }
    run: |
      set -eu
      test "$(cat "$FERRY_INPUT_MAKE_DATA/data.txt")" = "a b c"
      test "$(cat "$FERRY_INPUTS_DIR/make-data/sub/file")" = deep
      {
        echo "run=$FERRY_RUN_ID"
        echo "pipeline=$FERRY_PIPELINE"
        echo "step=$FERRY_STEP"
        echo "attempt=$FERRY_ATTEMPT"
        echo "greeting=$FERRY_PARAM_GREETING"
        echo "rounds=$FERRY_PARAM_ROUNDS"
        echo "my=$MY_VAR"
        echo "cwd=$(pwd)"
        echo "tmp=$TMPDIR"
        echo "work=$FERRY_WORK_DIR"
        echo "project=$FERRY_PROJECT_DIR"
      } > "$FERRY_OUTPUT_DIR/env.txt"
    outputs: [env.txt]
"#,
    );
    project
        .ferry(&["run", "--param", "greeting=hello there"])
        .success();
    let record = project.latest_record();
    let run_id = record["run_id"].as_str().unwrap();
    let env = project.read(&format!(
        ".ferry/artifacts/runs/{run_id}/steps/use-data/outputs/env.txt"
    ));
    let root = project.path().canonicalize().unwrap();
    for expected in [
        format!("run={run_id}"),
        "pipeline=contract".into(),
        "step=use-data".into(),
        "attempt=1".into(),
        "greeting=hello there".into(),
        "rounds=5".into(),
        "my=mine".into(),
        format!("cwd={}", root.display()),
        format!("project={}", root.display()),
    ] {
        assert!(
            env.lines().any(|l| l == expected),
            "missing `{expected}` in\n{env}"
        );
    }
    let work = env.lines().find_map(|l| l.strip_prefix("work=")).unwrap();
    assert!(
        env.contains(&format!("tmp={work}")),
        "TMPDIR is the step's work dir"
    );
    assert!(work.contains(run_id) && work.contains("use-data"), "{work}");
    assert_eq!(record["params"]["greeting"], "hello there");
    // The scratch folder is removed once the run ends.
    assert!(!project.path().join(".ferry/work").join(run_id).exists());
}

#[test]
fn independent_steps_really_run_at_the_same_time() {
    // Each side waits for the other's marker: this only finishes if both run at once.
    let project = Project::new();
    project.write(
        "pipeline.yaml",
        r#"
name: rendezvous
steps:
  start:
    run: mkdir -p "$FERRY_OUTPUT_DIR" && echo go
  left:
    needs: [start]
    timeout: 20s
    run: touch "$FERRY_PROJECT_DIR/left.ready"; while [ ! -e "$FERRY_PROJECT_DIR/right.ready" ]; do sleep 0.02; done
  right:
    needs: [start]
    timeout: 20s
    run: touch "$FERRY_PROJECT_DIR/right.ready"; while [ ! -e "$FERRY_PROJECT_DIR/left.ready" ]; do sleep 0.02; done
  join:
    needs: [left, right]
    run: echo joined
"#,
    );
    project
        .ferry(&[
            "run",
            "--set",
            "stacks.local.orchestrator.settings.parallelism=2",
        ])
        .success();
}

#[test]
fn the_parallelism_cap_is_respected() {
    // Every step takes a lock directory; a second step running at once would fail to.
    let mut steps = String::new();
    for i in 0..4 {
        steps.push_str(&format!(
            "  s{i}:\n    run: mkdir \"$FERRY_PROJECT_DIR/lock\" && sleep 0.1 && rmdir \"$FERRY_PROJECT_DIR/lock\"\n"
        ));
    }
    let project = Project::new();
    project.write("pipeline.yaml", &format!("name: capped\nsteps:\n{steps}"));
    project
        .ferry(&[
            "run",
            "--set",
            "stacks.local.orchestrator.settings.parallelism=1",
        ])
        .success();
}

#[test]
fn a_failed_step_fails_the_run_and_skips_what_depends_on_it() {
    let project = Project::new();
    project.write(
        "pipeline.yaml",
        r#"
name: failing
steps:
  ok:
    run: echo fine
  broken:
    run: echo "about to fail" >&2; exit 3
  after-broken:
    needs: [broken]
    run: echo never
  after-that:
    needs: [after-broken]
    run: echo never either
  independent:
    needs: [ok]
    run: echo still runs
"#,
    );
    let run = project.ferry(&["run"]);
    run.failure(3); // the failed step's exit code
    let record = project.latest_record();
    assert_eq!(record["status"], "failed");
    assert_eq!(record["steps"]["broken"]["status"], "failed");
    assert_eq!(record["steps"]["broken"]["exit_code"], 3);
    assert_eq!(record["steps"]["after-broken"]["status"], "skipped");
    assert_eq!(record["steps"]["after-that"]["status"], "skipped");
    assert_eq!(record["steps"]["independent"]["status"], "succeeded");
    assert!(
        record["error"].as_str().unwrap().contains("broken"),
        "{record:#}"
    );
    assert!(
        run.stdout().contains("about to fail"),
        "stderr of steps is shown"
    );
    assert!(
        run.stdout().contains("ferry logs"),
        "tells where the logs are"
    );
    let run_id = record["run_id"].as_str().unwrap();
    let log = project.read(&format!(".ferry/artifacts/runs/{run_id}/steps/broken/log"));
    assert!(
        log.contains("about to fail"),
        "the failing step's log is kept: {log}"
    );
}

#[test]
fn retries_run_a_step_again_until_it_succeeds() {
    let project = Project::new();
    project.write(
        "pipeline.yaml",
        r#"
name: flaky
steps:
  flaky:
    retries: 2
    run: |
      n=$(cat "$FERRY_PROJECT_DIR/count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$FERRY_PROJECT_DIR/count"
      echo "attempt $FERRY_ATTEMPT"
      [ "$n" -ge 2 ]
"#,
    );
    let run = project.ferry(&["run"]);
    run.success();
    let record = project.latest_record();
    assert_eq!(record["steps"]["flaky"]["attempts"], 2);
    assert!(run.stdout().contains("retrying"), "{}", run.stdout());
}

#[test]
fn a_missing_declared_output_fails_the_step() {
    let project = Project::new();
    project.write(
        "pipeline.yaml",
        "name: lazy\nsteps:\n  lazy:\n    run: echo did nothing\n    outputs: [model.bin]\n",
    );
    let run = project.ferry(&["run"]);
    run.failure(1);
    assert!(
        run.stdout()
            .contains("did not write its declared output `model.bin`"),
        "{}",
        run.stdout()
    );
}

#[test]
fn logs_of_a_failed_step_end_with_why_it_failed_and_an_empty_log_says_so() {
    let project = Project::new();
    project.write(
        "pipeline.yaml",
        r#"
name: reasons
steps:
  lazy:
    run: echo did nothing
    outputs: [model.bin]
  silent:
    run: exit 3
"#,
    );
    project.ferry(&["run"]).failure(1);
    let lazy = project.ferry(&["logs", "latest", "lazy"]);
    lazy.success();
    assert_eq!(lazy.stdout().trim(), "did nothing");
    assert!(
        lazy.stderr().contains("step `lazy` failed: ")
            && lazy
                .stderr()
                .contains("did not write its declared output `model.bin`"),
        "{}",
        lazy.stderr()
    );
    let silent = project.ferry(&["logs", "latest", "silent"]);
    silent.success();
    assert_eq!(silent.stdout(), "");
    assert!(
        silent
            .stderr()
            .contains("step `silent` wrote nothing to its log")
            && silent.stderr().contains("step `silent` failed: ")
            && silent.stderr().contains('3'),
        "{}",
        silent.stderr()
    );
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let project = Project::new();
    project.write(
        "pipeline.yaml",
        r#"
name: slow
steps:
  slow:
    timeout: 500ms
    run: sleep 30 & echo $! > "$FERRY_PROJECT_DIR/child.pid"; wait
"#,
    );
    let started = Instant::now();
    let run = project.ferry(&[
        "run",
        "--set",
        "stacks.local.orchestrator.settings.grace_period=\"1s\"",
    ]);
    run.failure(1);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the timeout did not stop the step"
    );
    assert!(
        run.stdout().contains("timed out after 500ms"),
        "{}",
        run.stdout()
    );
    let pid: i32 = project.read("child.pid").trim().parse().unwrap();
    assert!(
        !process_alive(pid),
        "the step's background child {pid} outlived the timeout"
    );
}

#[test]
fn unchanged_steps_are_cached_and_changes_invalidate_the_cache() {
    let project = Project::new();
    project.write("script.sh", "echo v1 > \"$FERRY_OUTPUT_DIR/out.txt\"\n");
    project.write(
        "pipeline.yaml",
        r#"
name: cached
params:
  size: 1
steps:
  produce:
    run: sh script.sh
    outputs: [out.txt]
  consume:
    inputs: [produce]
    run: cp "$FERRY_INPUT_PRODUCE/out.txt" "$FERRY_OUTPUT_DIR/copy.txt"
    outputs: [copy.txt]
  never-cached:
    cache: false
    run: echo always
"#,
    );
    project.ferry(&["run"]).success();
    let first = project.latest_record();
    let run = project.ferry(&["run"]);
    run.success();
    let second = project.latest_record();
    assert_eq!(second["steps"]["produce"]["status"], "cached");
    assert_eq!(second["steps"]["consume"]["status"], "cached");
    assert_eq!(second["steps"]["never-cached"]["status"], "succeeded");
    assert_eq!(
        second["steps"]["consume"]["outputs_from"]["run_id"],
        first["run_id"]
    );
    assert!(run.stdout().contains("cached"), "{}", run.stdout());

    project.ferry(&["run", "--no-cache"]).success();
    assert_eq!(
        project.latest_record()["steps"]["produce"]["status"],
        "succeeded"
    );

    project.ferry(&["run", "--param", "size=2"]).success();
    assert_eq!(
        project.latest_record()["steps"]["produce"]["status"],
        "succeeded",
        "a parameter change re-runs"
    );

    project.write("script.sh", "echo v2 > \"$FERRY_OUTPUT_DIR/out.txt\"\n");
    project.ferry(&["run", "--param", "size=2"]).success();
    let changed = project.latest_record();
    assert_eq!(
        changed["steps"]["produce"]["status"], "succeeded",
        "a code change re-runs"
    );
    let run_id = changed["run_id"].as_str().unwrap();
    assert_eq!(
        project.read(&format!(
            ".ferry/artifacts/runs/{run_id}/steps/consume/outputs/copy.txt"
        )),
        "v2\n",
        "downstream of a changed step runs again with the new input"
    );
}

#[test]
fn cached_outputs_keep_their_executable_bit() {
    let project = Project::new();
    project.write(
        "pipeline.yaml",
        r#"
name: tools
steps:
  build:
    run: printf '#!/bin/sh\necho built tool ran\n' > "$FERRY_OUTPUT_DIR/tool"; chmod +x "$FERRY_OUTPUT_DIR/tool"
    outputs: [tool]
  use:
    inputs: [build]
    cache: false
    run: '"$FERRY_INPUT_BUILD/tool"'
"#,
    );
    project.ferry(&["run"]).success();
    let run = project.ferry(&["run"]);
    run.success();
    assert_eq!(
        project.latest_record()["steps"]["build"]["status"],
        "cached"
    );
    assert!(run.stdout().contains("built tool ran"), "{}", run.stdout());
}

#[test]
fn pipelines_in_different_folders_do_not_share_cache_entries() {
    let project = Project::new();
    for (dir, word) in [("a", "alpha"), ("b", "beta")] {
        project.write(
            &format!("{dir}/word.sh"),
            &format!("echo {word} > \"$FERRY_OUTPUT_DIR/word.txt\"\n"),
        );
        project.write(
            &format!("{dir}/pipeline.yaml"),
            "name: same\nsteps:\n  say:\n    run: sh word.sh\n    outputs: [word.txt]\n",
        );
    }
    project.ferry(&["run", "a"]).success();
    project.ferry(&["run", "b"]).success();
    let record = project.latest_record();
    assert_eq!(
        record["steps"]["say"]["status"], "succeeded",
        "b must not reuse a's output"
    );
    let run_id = record["run_id"].as_str().unwrap();
    assert_eq!(
        project.read(&format!(
            ".ferry/artifacts/runs/{run_id}/steps/say/outputs/word.txt"
        )),
        "beta\n"
    );
}

#[test]
fn logs_follow_a_run_started_by_another_process() {
    use std::io::{BufRead, BufReader};
    let project = Project::new();
    project.write(
        "pipeline.yaml",
        r#"
name: live
steps:
  talk:
    timeout: 30s
    run: |
      echo first
      while [ ! -e "$FERRY_PROJECT_DIR/go" ]; do sleep 0.02; done
      echo second
"#,
    );
    let mut run = project
        .command(&["run"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let runs = project.path().join(".ferry/artifacts/runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&runs).map_or(true, |mut d| d.next().is_none()) {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut logs = project
        .command(&["logs", "latest", "talk", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(logs.stdout.take().unwrap()).lines();
    // "first" arrives while the step is still running: it waits for `go`.
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    project.write("go", "");
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    assert!(
        lines.next().is_none(),
        "each line once, and the stream ends with the step"
    );
    assert!(logs.wait().unwrap().success());
    assert!(run.wait().unwrap().success());
}

#[test]
fn ctrl_c_cancels_the_run_and_stops_its_steps() {
    let project = Project::new();
    project.write(
        "pipeline.yaml",
        r#"
name: long
steps:
  long:
    run: echo $$ > "$FERRY_PROJECT_DIR/step.pid"; sleep 60
  after:
    needs: [long]
    run: echo never
"#,
    );
    let mut child = project
        .command(&["run"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid_file = project.path().join("step.pid");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pid_file.exists() {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: sending SIGINT to the ferry process this test started.
    unsafe {
        libc_kill(child.id() as i32, 2);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "a cancelled run exits 130");
    let record = project.latest_record();
    assert_eq!(record["status"], "cancelled", "{record:#}");
    assert_eq!(record["steps"]["long"]["status"], "cancelled");
    assert_eq!(record["steps"]["after"]["status"], "cancelled");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!process_alive(pid), "the step process survived the cancel");
}

#[test]
fn a_killed_ferry_leaves_no_step_behind_and_a_run_reported_as_interrupted() {
    let project = Project::new();
    // The step and a background process it started: both must go when ferry is SIGKILLed.
    project.write(
        "pipeline.yaml",
        "name: orphan\nsteps:\n  wait:\n    run: sleep 30 & echo $! > \"$FERRY_PROJECT_DIR/background.pid\"; echo $$ > \"$FERRY_PROJECT_DIR/step.pid\"; touch \"$FERRY_PROJECT_DIR/started\"; sleep 30\n",
    );
    let mut child = project
        .command(&["run"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !project.path().join("started").exists() {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for file in ["step.pid", "background.pid"] {
        let pid: i32 = project.read(file).trim().parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while support::process_alive(pid) {
            assert!(
                Instant::now() < deadline,
                "{file}: process {pid} outlived the SIGKILLed ferry"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let list = project.ferry(&["runs", "list", "--output", "json"]);
    list.success();
    let runs: serde_json::Value = serde_json::from_str(&list.stdout()).unwrap();
    assert_eq!(runs[0]["status"], "failed", "{runs:#}");
    assert!(
        runs[0]["error"].as_str().unwrap().contains("interrupted"),
        "{runs:#}"
    );
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

#[test]
fn the_ml_example_trains_and_evaluates_a_model() {
    let project = Project::with_example("ml");
    let run = project.ferry(&["run", "ml", "--param", "epochs=100"]);
    run.success();
    let record = project.latest_record();
    let run_id = record["run_id"].as_str().unwrap();
    let metrics: serde_json::Value = serde_json::from_str(&project.read(&format!(
        ".ferry/artifacts/runs/{run_id}/steps/evaluate/outputs/metrics.json"
    )))
    .unwrap();
    assert!(metrics["accuracy"].as_f64().unwrap() >= 0.85, "{metrics:#}");
    // The quality gate is a real gate: an unreachable threshold fails the run.
    let gated = project.ferry(&[
        "run",
        "ml",
        "--param",
        "epochs=100",
        "--param",
        "min_accuracy=1.01",
    ]);
    gated.failure(1);
    assert_eq!(
        project.latest_record()["steps"]["evaluate"]["status"],
        "failed"
    );
}

#[test]
fn hostile_parameter_values_reach_steps_byte_for_byte() {
    let project = Project::new();
    project.write(
        "pipeline.yaml",
        "name: hostile\nparams:\n  x: {}\nsteps:\n  echo:\n    run: printf '%s' \"$FERRY_PARAM_X\" > \"$FERRY_OUTPUT_DIR/x.txt\"\n    outputs: [x.txt]\n",
    );
    // Shell metacharacters, quotes, a newline, unicode and length: passed in the environment,
    // never spliced into a command line, so nothing is interpreted.
    let value = format!(
        "$(touch pwned); `touch pwned2` ' \" \\ ; rm -rf / # \nünïcødé {}",
        "long ".repeat(2000)
    );
    let run = project.ferry(&["run", "--param", &format!("x={value}")]);
    run.success();
    let record = project.latest_record();
    let id = record["run_id"].as_str().unwrap();
    let stored = std::fs::read_to_string(
        project
            .path()
            .join(".ferry/artifacts/runs")
            .join(id)
            .join("steps/echo/outputs/x.txt"),
    )
    .unwrap();
    assert_eq!(stored, value);
    assert_eq!(record["params"]["x"], value.as_str());
    assert!(!project.path().join("pwned").exists());
    assert!(!project.path().join("pwned2").exists());
}

/// Polls until run `id` has ended (at most `within`).
fn wait_until_ended(project: &Project, id: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let record = project.record(id);
        if !matches!(record["status"].as_str(), Some("pending" | "running")) {
            return record;
        }
        assert!(Instant::now() < deadline, "still going: {record:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The session id of a process (field 6 of /proc/PID/stat).
fn session_of(pid: i64) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    after_name
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_detached_local_run_outlives_its_terminal_and_is_followed_cancelled_or_judged_from_another() {
    let project = Project::new();
    project.write(
        "pipeline.yaml",
        "name: bg\nsteps:\n  a:\n    run: sleep 1; echo done > \"$FERRY_OUTPUT_DIR/out.txt\"\n    outputs: [out.txt]\n  b:\n    inputs: [a]\n    run: cat \"$FERRY_INPUT_A\"/out.txt\n",
    );
    // The starting ferry returns at once (and its pipes close: the background one has none).
    let started = project.ferry(&["run", "--detach"]);
    started.success();
    let id = started.stdout().trim().to_string();
    assert!(
        started.stderr().contains("running in the background"),
        "{}",
        started.stderr()
    );
    let record = project.record(&id);
    assert_eq!(record["status"], "running", "{record:#}");
    let pid = record["pid"].as_i64().unwrap();
    // A session of its own: the terminal's hangup never reaches it.
    assert_eq!(session_of(pid), pid);
    // `logs -f` from another terminal follows it to its end.
    let followed = project.ferry(&["logs", "-f", &id, "b"]);
    followed.success();
    assert_eq!(followed.stdout().trim(), "done");
    let record = wait_until_ended(&project, &id, Duration::from_secs(20));
    assert_eq!(record["status"], "succeeded", "{record:#}");

    project.write(
        "pipeline.yaml",
        "name: bg\nsteps:\n  nap:\n    run: sleep 60\n",
    );
    let id = project.run_id_from(&["run", "--detach"]);
    project.ferry(&["runs", "cancel", &id]).success();
    let record = wait_until_ended(&project, &id, Duration::from_secs(20));
    assert_eq!(record["status"], "cancelled", "{record:#}");

    // A background ferry that dies is shown failed, never running forever.
    let id = project.run_id_from(&["run", "--detach"]);
    let pid = project.record(&id)["pid"].as_i64().unwrap();
    // SAFETY: kill(2) on the background ferry this test started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(pid as i32) {
        assert!(Instant::now() < deadline, "pid {pid} survived SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
    let record = project.record(&id);
    assert_eq!(record["status"], "failed", "{record:#}");
    assert!(
        record["error"].as_str().unwrap().starts_with("interrupted"),
        "{record:#}"
    );
}

#[test]
fn a_retry_runs_only_what_failed_or_was_skipped_and_from_reruns_a_step_and_what_follows() {
    let project = Project::new();
    project.write(
        "pipeline.yaml",
        concat!(
            "name: resume\nsteps:\n",
            "  prep:\n    run: echo prep >> \"$FERRY_PROJECT_DIR/prep-ran\"; echo data > \"$FERRY_OUTPUT_DIR/d.txt\"\n    outputs: [d.txt]\n    cache: false\n",
            "  train:\n    inputs: [prep]\n    run: test ! -f \"$FERRY_PROJECT_DIR/broken\" && cat \"$FERRY_INPUT_PREP/d.txt\" > \"$FERRY_OUTPUT_DIR/m.txt\"\n    outputs: [m.txt]\n    cache: false\n",
            "  report:\n    inputs: [train]\n    run: cat \"$FERRY_INPUT_TRAIN/m.txt\"\n    cache: false\n",
        ),
    );
    project.write("broken", "");
    project.ferry(&["run"]).failure(1);
    let failed = project.latest_record();
    let failed_id = failed["run_id"].as_str().unwrap().to_string();
    assert_eq!(failed["steps"]["train"]["status"], "failed", "{failed:#}");
    assert_eq!(failed["steps"]["report"]["status"], "skipped", "{failed:#}");

    // Fixed: the retry reuses prep's outputs and runs train and report.
    std::fs::remove_file(project.path().join("broken")).unwrap();
    let retry = project.ferry(&["runs", "retry", &failed_id]);
    retry.success();
    let resumed = project.latest_record();
    assert_eq!(resumed["status"], "succeeded", "{resumed:#}");
    assert_eq!(resumed["resumed_from"], failed_id.as_str(), "{resumed:#}");
    assert_eq!(resumed["steps"]["prep"]["status"], "cached", "{resumed:#}");
    assert_eq!(
        resumed["steps"]["prep"]["outputs_from"]["run_id"],
        failed_id.as_str()
    );
    assert_eq!(
        resumed["steps"]["train"]["status"], "succeeded",
        "{resumed:#}"
    );
    let prep_runs = || std::fs::read_to_string(project.path().join("prep-ran")).unwrap();
    assert_eq!(prep_runs().lines().count(), 1, "prep ran again");
    let report = project.ferry(&["logs", "latest", "report"]);
    assert_eq!(report.stdout().trim(), "data");

    // --from reruns that step and what follows it, and nothing before it.
    let resumed_id = resumed["run_id"].as_str().unwrap().to_string();
    project
        .ferry(&["runs", "retry", &resumed_id, "--from", "train"])
        .success();
    let again = project.latest_record();
    assert_eq!(again["steps"]["prep"]["status"], "cached", "{again:#}");
    assert_eq!(
        again["steps"]["prep"]["outputs_from"]["run_id"],
        failed_id.as_str()
    );
    assert_eq!(again["steps"]["train"]["status"], "succeeded", "{again:#}");
    assert_eq!(
        again["steps"]["train"]["outputs_from"],
        serde_json::Value::Null
    );
    assert_eq!(prep_runs().lines().count(), 1, "prep ran again");
    let from_everything = project.ferry(&["runs", "retry", &resumed_id, "--from", "prep"]);
    from_everything.success();
    assert_eq!(prep_runs().lines().count(), 2);

    let typo = project.ferry(&["runs", "retry", &resumed_id, "--from", "trian"]);
    typo.failure(1);
    assert!(
        typo.stderr()
            .contains("has no step `trian` (did you mean `train`?)"),
        "{}",
        typo.stderr()
    );
}

#[test]
fn a_change_to_one_steps_declared_code_reruns_only_that_step_and_explain_cache_says_why() {
    let project = Project::new();
    project
        .write("prep.sh", "echo rows > \"$FERRY_OUTPUT_DIR/rows.txt\"\n")
        .write("train.sh", "cat \"$FERRY_INPUT_PREP/rows.txt\" > \"$FERRY_OUTPUT_DIR/model.txt\"; echo \"$FERRY_PARAM_EPOCHS\" >> \"$FERRY_OUTPUT_DIR/model.txt\"\n")
        .write("evaluate.sh", "echo \"score at $FERRY_PARAM_THRESHOLD\"\n")
        .write("README.md", "notes\n")
        .write(
            "pipeline.yaml",
            concat!(
                "name: narrow\nparams:\n  epochs: { default: \"1\" }\n  threshold: { default: \"0.5\" }\nsteps:\n",
                "  prep: { code: [prep.sh], uses_params: [], run: sh prep.sh, outputs: [rows.txt] }\n",
                "  train: { inputs: [prep], code: [train.sh], uses_params: [epochs], run: sh train.sh, outputs: [model.txt] }\n",
                "  evaluate: { inputs: [train], code: [evaluate.sh], uses_params: [threshold], run: sh evaluate.sh }\n",
            ),
        );
    let statuses = |project: &Project| -> Vec<String> {
        let record = project.latest_record();
        ["prep", "train", "evaluate"]
            .iter()
            .map(|s| record["steps"][*s]["status"].as_str().unwrap().to_string())
            .collect()
    };
    project.ferry(&["run"]).success();
    assert_eq!(statuses(&project), ["succeeded", "succeeded", "succeeded"]);

    // evaluate's own file: only evaluate runs again, and --explain-cache says why.
    project.write(
        "evaluate.sh",
        "echo \"final score at $FERRY_PARAM_THRESHOLD\"\n",
    );
    let run = project.ferry(&["run", "--explain-cache"]);
    run.success();
    assert_eq!(statuses(&project), ["cached", "cached", "succeeded"]);
    let out = run.stdout();
    assert!(out.contains("code changed: evaluate.sh"), "{out}");
    assert!(out.contains("hit: the outputs of run"), "{out}");

    // A parameter only evaluate reads: the same.
    let run = project.ferry(&["run", "--explain-cache", "--param", "threshold=0.7"]);
    run.success();
    assert_eq!(statuses(&project), ["cached", "cached", "succeeded"]);
    assert!(
        run.stdout()
            .contains("parameter `threshold` changed (0.5 → 0.7)"),
        "{}",
        run.stdout()
    );
    // A file no step declares, and a parameter train reads.
    project.write("README.md", "more notes\n");
    project
        .ferry(&["run", "--param", "threshold=0.7"])
        .success();
    assert_eq!(statuses(&project), ["cached", "cached", "cached"]);
    project
        .ferry(&["run", "--param", "threshold=0.7", "--param", "epochs=2"])
        .success();
    assert_eq!(statuses(&project), ["cached", "succeeded", "succeeded"]);
    let shown = project.ferry(&["runs", "show", "latest", "--cache"]);
    assert!(
        shown
            .stdout()
            .contains("parameter `epochs` changed (1 → 2)"),
        "{}",
        shown.stdout()
    );

    // A glob that matches nothing is refused before anything runs.
    project.write(
        "pipeline.yaml",
        "name: narrow\nsteps:\n  prep: { code: [src/prep/**], run: sh prep.sh }\n",
    );
    let refused = project.ferry(&["run"]);
    refused.failure(1);
    assert!(
        refused
            .stderr()
            .contains("code glob `src/prep/**` of step `prep` matches no file of the project"),
        "{}",
        refused.stderr()
    );
}

#[test]
fn a_step_that_ferry_fails_says_why_on_its_line_in_the_summary_and_in_its_logs() {
    let project = Project::new();
    project.write(
        "pipeline.yaml",
        "name: r\nsteps:\n  a:\n    run: mkdir -p d && ln -s \"$PWD/d\" \"$FERRY_OUTPUT_DIR/out\"\n    outputs: [out]\n  b:\n    run: exit 3\n",
    );
    let run = project.ferry(&["run"]);
    // The exit code of the first failed step that has one.
    run.failure(3);
    let out = run.stdout();
    let why = "is a symbolic link to a directory; outputs must be files or real directories";
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .map(str::to_string)
    };
    assert!(
        line("a │").is_some_and(|_| out.lines().any(|l| l.starts_with("a") && l.contains(why))),
        "{out}"
    );
    assert!(
        line("step a failed:").is_some_and(|l| l.contains(why)),
        "{out}"
    );
    assert!(
        line("step b failed:").is_some_and(|l| l.contains("exited with code 3")),
        "{out}"
    );
    let logs = project.ferry(&["logs", "latest", "a"]);
    assert!(
        logs.stderr().contains("wrote nothing to its log"),
        "{}",
        logs.stderr()
    );
    assert!(logs.stderr().contains(why), "{}", logs.stderr());
}

#[test]
fn gc_and_runs_delete_remove_old_runs_with_sizes_and_leave_a_concurrent_run_whole() {
    let project = Project::new();
    project.write(
        "pipeline.yaml",
        "name: keep\nsteps:\n  a:\n    run: echo out > \"$FERRY_OUTPUT_DIR/o.txt\"\n    outputs: [o.txt]\n    cache: false\n",
    );
    let mut finished = Vec::new();
    for _ in 0..4 {
        project.ferry(&["run"]).success();
        finished.push(
            project.latest_record()["run_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // A run going on beside the removal, in a background ferry.
    project.write(
        "pipeline.yaml",
        "name: keep\nsteps:\n  a:\n    run: sleep 2; echo late > \"$FERRY_OUTPUT_DIR/o.txt\"\n    outputs: [o.txt]\n    cache: false\n",
    );
    let live = project.run_id_from(&["run", "--detach"]);

    let refused = project.ferry(&["gc"]);
    refused.failure(1);
    assert!(
        refused.stderr().contains("--keep-last 20"),
        "{}",
        refused.stderr()
    );
    let dry = project.ferry(&["gc", "--keep-last", "2", "--dry-run"]);
    dry.success();
    assert!(
        dry.stdout().contains("would remove 3 runs"),
        "{}",
        dry.stdout()
    );
    assert_eq!(
        project
            .ferry(&["runs", "list", "--output", "json"])
            .stdout()
            .matches("\"run_id\"")
            .count(),
        5
    );

    let gc = project.ferry(&["gc", "--keep-last", "2"]);
    gc.success();
    for old in &finished[..3] {
        assert!(
            gc.stdout()
                .contains(&format!("removed run {old} (keep, succeeded")),
            "{}",
            gc.stdout()
        );
        assert!(
            !project
                .path()
                .join(format!(".ferry/artifacts/runs/{old}"))
                .exists()
        );
    }
    assert!(gc.stdout().contains("removed 3 runs"), "{}", gc.stdout());

    let busy = project.ferry(&["runs", "delete", &live]);
    busy.failure(1);
    assert!(
        busy.stderr()
            .contains(&format!("run {live} is still running")),
        "{}",
        busy.stderr()
    );
    assert!(
        busy.stderr().contains("ferry runs cancel"),
        "{}",
        busy.stderr()
    );

    // The concurrent run finishes whole.
    let record = wait_until_ended(&project, &live, Duration::from_secs(20));
    assert_eq!(record["status"], "succeeded", "{record:#}");
    let out = project.path().join("got");
    project
        .ferry(&["artifacts", "get", &live, "a", "-o", out.to_str().unwrap()])
        .success();
    assert_eq!(
        std::fs::read_to_string(out.join("o.txt")).unwrap().trim(),
        "late"
    );

    project.ferry(&["runs", "delete", &finished[3]]).success();
    project.ferry(&["runs", "show", &finished[3]]).failure(1);
    assert_eq!(
        project
            .ferry(&["runs", "list", "--output", "json"])
            .stdout()
            .matches("\"run_id\"")
            .count(),
        1
    );
}
