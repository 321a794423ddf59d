//! Plugin files loaded through the loader: the example store passes the conformance suite
//! across the binary boundary, and a panicking plugin returns errors instead of aborting.
//!
//! Needs the workspace's plugin libraries: run `cargo build --workspace` before `cargo test`.

use std::path::PathBuf;

use orchestrator_core::store::conformance;
use orchestrator_core::{ErrorKind, PluginKind};
use orchestrator_host::config::ComponentConfig;
use orchestrator_host::loader::{self, SearchPath, SearchSource};
use orchestrator_host::stack::{Origin, open_store};

fn target_dir() -> PathBuf {
    // tests run from target/<profile>/deps/
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn plugin(name: &str) -> PathBuf {
    let path = target_dir().join(format!("lib{}.so", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` (same profile) before the tests",
        path.display()
    );
    path
}

fn search() -> SearchPath {
    SearchPath {
        dirs: vec![(target_dir(), SearchSource::CommandLine)],
    }
}

fn component(plugin: &str, settings: serde_json::Value) -> ComponentConfig {
    ComponentConfig {
        plugin: plugin.to_string(),
        settings: settings.as_object().unwrap().clone(),
    }
}

#[test]
fn the_example_store_plugin_passes_the_conformance_suite() {
    plugin("example-store");
    let dir = tempfile::tempdir().unwrap();
    let (store, origin) = open_store(
        &component("example-store", serde_json::json!({"root": "store"})),
        dir.path(),
        &search(),
    )
    .unwrap();
    assert_eq!(origin, Origin::File(plugin("example-store")));
    conformance::run_all(&store);
}

#[test]
fn a_plugin_panic_becomes_an_error() {
    let path = plugin("panicking-store");
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_store(
        &component(path.to_str().unwrap(), serde_json::json!({})),
        dir.path(),
        &search(),
    )
    .unwrap();
    let error = store.put_bytes("a", b"x").unwrap_err();
    assert_eq!(error.kind, ErrorKind::PANICKED);
    assert!(
        error.message().contains("put_bytes exploded on purpose"),
        "{error}"
    );
    let error = store.list("", true).unwrap_err();
    assert_eq!(error.kind, ErrorKind::PANICKED);
    // Still usable after panics.
    assert_eq!(store.url(), "panic://");
}

#[test]
fn loading_checks_the_kind_and_loads_each_file_separately() {
    let example = loader::load(&plugin("example-store")).unwrap();
    let panicking = loader::load(&plugin("panicking-store")).unwrap();
    assert_eq!(example.description.name, "example-store");
    assert_eq!(
        panicking.description.name, "panicking-store",
        "a second file is not the first plugin again"
    );
    let error = loader::load_kind(&plugin("example-store"), PluginKind::ORCHESTRATOR).unwrap_err();
    assert!(
        error.to_string().contains("is an artifact-store plugin"),
        "{error}"
    );
    let found = loader::find(&search(), "example-store", PluginKind::ARTIFACT_STORE).unwrap();
    assert_eq!(found.path, plugin("example-store"));
    let missing = loader::find(&search(), "example-stor", PluginKind::ARTIFACT_STORE).unwrap_err();
    assert!(
        missing.to_string().contains("did you mean `example-store`"),
        "{missing}"
    );
}
