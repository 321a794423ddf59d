//! storage-azure against a real Azure Blob server (Azurite, started by `scripts/test-all.sh`),
//! loaded as ferry loads it: from the built plugin library, through the conformance suite that
//! orchestrator-core publishes for every store plugin, then as the store of a real run.

use std::process::Command;

use orchestrator_core::store::conformance;
use test_support::check;
use test_support::{
    azure_settings, copy_dir, open_plugin_store, plugin_path, target_dir, unique_prefix,
};

#[test]
fn passes_the_conformance_suite() {
    let store = open_plugin_store(
        "storage-azure",
        azure_settings(&unique_prefix("conformance")),
    )
    .unwrap();
    conformance::run_all(&store);
}

#[test]
fn a_missing_container_and_a_dead_endpoint_say_what_to_fix() {
    let mut settings = azure_settings(&unique_prefix("errors"));
    settings["url"] = "az://no-such-container-ferry/x".into();
    settings["max_retries"] = 0.into();
    let store = open_plugin_store("storage-azure", settings).unwrap();
    let failure = check::probe(&store).unwrap_err();
    assert!(
        failure.hint.contains("container) does not exist"),
        "{failure}: {}",
        failure.hint
    );

    let mut settings = azure_settings(&unique_prefix("errors"));
    settings["endpoint"] = "http://127.0.0.1:9".into();
    settings["max_retries"] = 0.into();
    let store = open_plugin_store("storage-azure", settings).unwrap();
    let failure = check::probe(&store).unwrap_err();
    assert!(
        failure.hint.contains("cannot reach the store"),
        "{failure}: {}",
        failure.hint
    );
}

#[test]
fn examples_hello_runs_with_an_azure_store() {
    plugin_path("storage-azure");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    copy_dir(&repo.join("examples/hello"), &project.join("hello"));
    let settings = azure_settings(&unique_prefix("hello"));
    let table: Vec<String> = settings
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    std::fs::write(
        project.join("ferry.toml"),
        format!(
            "stack = \"azure\"\n\n[stacks.azure]\norchestrator = {{ plugin = \"local\" }}\nstore = {{ plugin = \"storage-azure\", settings = {{ {} }} }}\n",
            table.join(", ")
        ),
    )
    .unwrap();
    let ferry = target_dir().join("ferry");
    assert!(
        ferry.exists(),
        "{} is missing: run `cargo build --workspace` first",
        ferry.display()
    );
    let out = Command::new(&ferry)
        .args(["run", "hello"])
        .current_dir(project)
        .env("FERRY_PLUGIN_PATH", target_dir())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("hello, newcomer"), "{stdout}");

    // The run's record and outputs are in the container: another process lists them.
    let out = Command::new(&ferry)
        .args(["runs", "list", "--output", "json"])
        .current_dir(project)
        .env("FERRY_PLUGIN_PATH", target_dir())
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["status"], "succeeded", "{runs:#}");
}
