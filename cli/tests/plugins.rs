//! Plugins loaded at run time by the `ferry` binary: the example store plugin runs a pipeline,
//! and broken plugins (panicking, wrong kind, not a plugin) each give one clear line.
//!
//! Needs the workspace's plugin libraries: run `cargo build --workspace` before `cargo test`.

mod support;

use support::{Project, plugin_path};

const STACKS: &str = r#"
[stacks.example]
orchestrator = { plugin = "local" }
store = { plugin = "example-store", settings = { root = "example-artifacts" } }

[stacks.boom]
orchestrator = { plugin = "local" }
store = { plugin = "panicking-store" }

[stacks.upside-down]
orchestrator = { plugin = "example-store" }
store = { plugin = "local" }

[stacks.typo]
orchestrator = { plugin = "local" }
store = { plugin = "example-store", settings = { rot = "x" } }
"#;

fn project() -> Project {
    plugin_path("example-store");
    plugin_path("panicking-store");
    let project = Project::with_example("hello");
    project.write("ferry.toml", STACKS);
    project
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error:")).collect()
}

#[test]
fn a_pipeline_runs_with_a_store_plugin_loaded_at_run_time() {
    let project = project();
    let run = project.ferry(&["run", "hello", "--stack", "example"]);
    run.success();
    assert!(
        run.stdout().contains("example-store://"),
        "{}",
        run.stdout()
    );
    let runs = project.path().join("example-artifacts/runs");
    let ids: Vec<_> = std::fs::read_dir(&runs).unwrap().collect();
    assert_eq!(ids.len(), 1, "the run record went to the plugin's store");
    assert!(
        !project.path().join(".ferry/artifacts/runs").exists(),
        "not to the local store"
    );

    let list = project.ferry(&["runs", "list", "--stack", "example"]);
    list.success();
    assert!(list.stdout().contains("succeeded"), "{}", list.stdout());

    let show = project.ferry(&["stack", "show", "example"]);
    show.success();
    let path = plugin_path("example-store");
    assert!(
        show.stdout().contains(&path.display().to_string()),
        "names the plugin file:\n{}",
        show.stdout()
    );
}

#[test]
fn a_panicking_plugin_is_an_error_not_a_crash() {
    let project = project();
    let run = project.ferry(&["run", "hello", "--stack", "boom"]);
    run.failure(1);
    let stderr = run.stderr();
    assert_eq!(error_lines(&stderr).len(), 1, "{stderr}");
    assert!(
        stderr.contains("plugin `panicking-store` panicked at testing/panicking-store/src/lib.rs:"),
        "names the plugin and where it panicked: {stderr}"
    );
    assert!(stderr.contains("put_bytes exploded on purpose"), "{stderr}");
    assert!(
        !stderr.contains("thread '"),
        "no raw panic output: {stderr}"
    );
}

#[test]
fn a_plugin_of_the_wrong_kind_is_refused_in_one_line() {
    let project = project();
    let run = project.ferry(&["run", "hello", "--stack", "upside-down"]);
    run.failure(1);
    let stderr = run.stderr();
    let lines = error_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("libexample_store.so"),
        "names the file: {stderr}"
    );
    assert!(
        lines[0].contains("is an artifact-store plugin, but an orchestrator plugin is needed"),
        "says what was expected and found: {stderr}"
    );
}

#[test]
fn plugin_settings_are_checked_against_the_keys_it_declares() {
    let project = project();
    let run = project.ferry(&["run", "hello", "--stack", "typo"]);
    run.failure(1);
    assert!(
        run.stderr()
            .contains("unknown setting `rot` for plugin `example-store`; did you mean `root`?"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_file_that_is_not_a_plugin_is_reported_in_one_line() {
    let project = project();
    let bogus = project.path().join("bogus-plugins");
    std::fs::create_dir_all(&bogus).unwrap();
    std::fs::write(
        bogus.join("libnotaplugin.so"),
        "this is not a shared library",
    )
    .unwrap();
    // A real shared library that is not a ferry plugin.
    let libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
    ]
    .iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("a libc to stand in for a foreign shared library");
    std::fs::copy(libc, bogus.join("libforeign.so")).unwrap();

    let list = project.ferry(&["plugins", "list", "--plugin-dir", "bogus-plugins"]);
    list.success();
    let stdout = list.stdout();
    let row = stdout
        .lines()
        .find(|l| l.contains("libnotaplugin.so"))
        .expect(&stdout);
    assert!(
        row.contains("not a ferry plugin (the file is not a loadable shared library)"),
        "{row}"
    );
    let row = stdout
        .lines()
        .find(|l| l.contains("libforeign.so"))
        .expect(&stdout);
    assert!(
        row.contains("not a ferry plugin (it exports no ferry plugin module)"),
        "{row}"
    );
    assert!(
        stdout.contains("example-store"),
        "good plugins are still listed:\n{stdout}"
    );

    project.write(
        "ferry.toml",
        &format!(
            "[stacks.bad]\norchestrator = {{ plugin = \"local\" }}\nstore = {{ plugin = \"{}\" }}\n",
            bogus.join("libnotaplugin.so").display()
        ),
    );
    let run = project.ferry(&["run", "hello", "--stack", "bad"]);
    run.failure(1);
    let stderr = run.stderr();
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line, no report without -v: {stderr}"
    );
    assert!(
        stderr.contains("libnotaplugin.so: not a ferry plugin"),
        "{stderr}"
    );
    assert!(stderr.contains("rebuild it"), "says what to do: {stderr}");
}

#[test]
fn the_plugin_path_has_a_visible_precedence() {
    let project = project();
    let elsewhere = project.path().join("env-plugins");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::copy(
        plugin_path("example-store"),
        elsewhere.join("libexample_store.so"),
    )
    .unwrap();
    let list = project
        .command(&["plugins", "list", "--output", "json"])
        .env("FERRY_PLUGIN_PATH", &elsewhere)
        .output()
        .unwrap();
    assert!(list.status.success());
    let entries: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let example: Vec<&serde_json::Value> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "example-store")
        .collect();
    assert_eq!(example.len(), 2, "{entries:#}");
    assert!(
        example[0]["path"].as_str().unwrap().contains("env-plugins"),
        "FERRY_PLUGIN_PATH wins: {entries:#}"
    );
    assert!(
        example[0]["status"]
            .as_str()
            .unwrap()
            .contains("FERRY_PLUGIN_PATH")
    );
    assert!(
        example[1]["status"]
            .as_str()
            .unwrap()
            .starts_with("shadowed by"),
        "{entries:#}"
    );
}

#[test]
fn plugins_inspect_shows_metadata_and_settings() {
    let project = project();
    let run = project.ferry(&["plugins", "inspect", "example-store"]);
    run.success();
    let stdout = run.stdout();
    let interface = format!("interface {}", orchestrator_core::INTERFACE_VERSION);
    for expected in [
        "name example-store",
        "kind artifact-store",
        &interface,
        "root",
        "directory holding the artifacts",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?}:\n{stdout}");
    }
    let builtin = project.ferry(&["plugins", "inspect", "local", "--output", "json"]);
    builtin.success();
    let missing = project.ferry(&["plugins", "inspect", "example-stor"]);
    missing.failure(1);
    assert!(
        missing.stderr().contains("did you mean `example-store`"),
        "{}",
        missing.stderr()
    );
}
