//! Third-party plugins as a third party meets ferry: `plugins/template` copied out of this
//! repository and built as its own cargo project against orchestrator-core, then loaded by the
//! `ferry` built here through `FERRY_PLUGIN_PATH` and used in a run; installed with
//! `ferry plugins install`; and the interface policy of PLUGINS.md: a plugin built against a
//! newer patch of the interface (one more field after the last prefix field) loads into this
//! older ferry, and one built against another minor is refused in one line.
//!
//! The builds share `target/third-party-plugins` and the workspace's Cargo.lock, so only the
//! first one compiles orchestrator-core's dependencies. They run offline: every crate they need
//! is already in the local registry because the workspace uses it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use support::Project;
use test_support::copy_dir;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// One cargo at a time: the builds share a target directory (cargo would serialise them on
/// its lock anyway, with less readable output).
static CARGO: Mutex<()> = Mutex::new(());

fn replace_in(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(
        text.contains(from),
        "{} no longer contains {from:?}: update this test",
        file.display()
    );
    std::fs::write(file, text.replacen(from, to, 1)).unwrap();
}

/// `cargo ARGS` in `dir`, as a plugin author would run it, with this workspace's toolchain.
fn cargo(dir: &Path, args: &[&str]) -> std::process::Output {
    let _one = CARGO.lock().unwrap_or_else(|e| e.into_inner());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(args).arg("--offline").current_dir(dir).env(
        "CARGO_TARGET_DIR",
        repo().join("target/third-party-plugins"),
    );
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") && key != "CARGO_HOME" {
            command.env_remove(&key);
        }
    }
    command
        .env(
            "CARGO_TARGET_DIR",
            repo().join("target/third-party-plugins"),
        )
        .output()
        .unwrap()
}

fn check(output: &std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The template copied to `dir`, depending on the orchestrator-core at `core` (an absolute
/// path), with the workspace's lock file and toolchain. With `host`, my-orchestrator builds
/// against the orchestrator-host there; without, the copy holds my-store alone (a host depends
/// on its own orchestrator-core, which must then be `core`).
fn template_at(dir: &Path, core: &Path, host: Option<&Path>) -> PathBuf {
    let project = dir.join("my-plugins");
    copy_dir(&repo().join("plugins/template"), &project);
    let manifest = project.join("Cargo.toml");
    replace_in(
        &manifest,
        &format!(
            "orchestrator-core = {{ version = \"{}\", path = \"../../orchestrator-core\" }}",
            orchestrator_core::INTERFACE_VERSION
        ),
        &format!(
            "orchestrator-core = {{ path = {:?} }}",
            core.display().to_string()
        ),
    );
    let host_line = "orchestrator-host = { path = \"../../orchestrator-host\" }";
    match host {
        Some(host) => replace_in(
            &manifest,
            host_line,
            &format!(
                "orchestrator-host = {{ path = {:?} }}",
                host.display().to_string()
            ),
        ),
        None => {
            replace_in(&manifest, host_line, "");
            replace_in(
                &manifest,
                "members = [\"my-store\", \"my-orchestrator\"]",
                "members = [\"my-store\"]",
            );
        }
    }
    std::fs::copy(repo().join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
    std::fs::copy(
        repo().join("rust-toolchain.toml"),
        project.join("rust-toolchain.toml"),
    )
    .unwrap();
    project
}

/// orchestrator-core copied out as a workspace of its own, at interface version `version`.
fn core_at(dir: &Path, version: &str) -> PathBuf {
    let workspace = dir.join(format!("ferry-{version}"));
    let core = workspace.join("orchestrator-core");
    copy_dir(&repo().join("orchestrator-core"), &core);
    replace_in(
        &core.join("Cargo.toml"),
        &format!("version = \"{}\"", orchestrator_core::INTERFACE_VERSION),
        &format!("version = \"{version}\""),
    );
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    // Keep the shared settings and dependency versions; only the members change.
    let manifest: String = manifest
        .lines()
        .filter(|l| !l.starts_with("members = ") && !l.starts_with("exclude = "))
        .filter(|l| !l.contains("path = \"testing/") && !l.starts_with("orchestrator-"))
        .map(|l| {
            if l == "[workspace]" {
                "[workspace]\nmembers = [\"orchestrator-core\"]".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(workspace.join("Cargo.toml"), manifest).unwrap();
    std::fs::copy(repo().join("Cargo.lock"), workspace.join("Cargo.lock")).unwrap();
    core
}

/// Builds the template's crates (`packages`) and returns the directory holding the libraries.
fn build(project: &Path, packages: &[&str]) -> PathBuf {
    let mut args = vec!["build"];
    for package in packages {
        args.extend(["-p", package]);
    }
    check(&cargo(project, &args), "building the plugin template");
    repo().join("target/third-party-plugins/debug")
}

/// A project with examples/hello and a stack made of the template's two plugins.
fn hello_on_template_plugins() -> Project {
    let project = Project::with_example("hello");
    project.write(
        "ferry.toml",
        "stack = \"mine\"\n\n[stacks.mine]\norchestrator = { plugin = \"my-orchestrator\" }\nstore = { plugin = \"my-store\", settings = { root = \"my-artifacts\" } }\n",
    );
    project
}

#[test]
fn the_template_builds_out_of_tree_passes_conformance_and_runs_a_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let template = template_at(
        dir.path(),
        &repo().join("orchestrator-core"),
        Some(&repo().join("orchestrator-host")),
    );
    let libs = build(&template, &["my-store", "my-orchestrator"]);
    // The template's own test: the artifact-store conformance suite, on the built library.
    let tested = cargo(&template, &["test", "-p", "my-store"]);
    check(&tested, "the template's conformance test");
    let report = String::from_utf8_lossy(&tested.stdout);
    assert!(
        report.contains("passes_the_conformance_suite ... ok"),
        "{report}"
    );

    // A ferry built separately (this workspace's) loads both through FERRY_PLUGIN_PATH, and
    // it is a newer host around the same interface: host-only changes leave plugins loading.
    assert_ne!(
        env!("CARGO_PKG_VERSION"),
        orchestrator_core::INTERFACE_VERSION,
        "ferry's version and the plugin interface version are separate"
    );
    let project = hello_on_template_plugins();
    let run = project
        .command(&["run", "hello"])
        .env("FERRY_PLUGIN_PATH", &libs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("hello, newcomer"), "{stdout}");
    assert!(
        std::fs::read_dir(project.path().join("my-artifacts/runs"))
            .unwrap()
            .count()
            == 1,
        "the run's record is in my-store's folder"
    );

    let list = project
        .command(&["plugins", "list", "--output", "json"])
        .env("FERRY_PLUGIN_PATH", &libs)
        .output()
        .unwrap();
    let list: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
    for (name, kind) in [
        ("my-store", "artifact-store"),
        ("my-orchestrator", "orchestrator"),
    ] {
        let entry = list
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed: {list:#?}"));
        assert_eq!(entry["kind"], kind, "{entry:#}");
        assert_eq!(
            entry["interface_version"],
            orchestrator_core::INTERFACE_VERSION
        );
        assert_eq!(entry["status"], "ok (FERRY_PLUGIN_PATH)", "{entry:#}");
    }

    let inspect = project
        .command(&["plugins", "inspect", "my-store"])
        .env("FERRY_PLUGIN_PATH", &libs)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(inspect.status.success(), "{text}");
    for expected in [
        "name my-store",
        "kind artifact-store",
        "root",
        "folder holding the objects",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }

    // Settings are checked against the keys the plugin declares, with a did-you-mean.
    project.write(
        "ferry.toml",
        &project
            .read("ferry.toml")
            .replace("root = \"my-artifacts\"", "rot = \"my-artifacts\""),
    );
    let typo = project
        .command(&["run", "hello"])
        .env("FERRY_PLUGIN_PATH", &libs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert!(!typo.status.success());
    assert!(stderr.contains("did you mean `root`"), "{stderr}");

    // `ferry plugins install` copies it where ferry finds it with no FERRY_PLUGIN_PATH.
    let store_lib = libs.join("libmy_store.so");
    let orchestrator_lib = libs.join("libmy_orchestrator.so");
    for lib in [&store_lib, &orchestrator_lib] {
        let install = project
            .command(&["plugins", "install", lib.to_str().unwrap()])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&install.stdout);
        assert!(
            install.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&install.stderr)
        );
        assert!(out.contains("installed my-"), "{out}");
    }
    project.write(
        "ferry.toml",
        &project
            .read("ferry.toml")
            .replace("rot = \"my-artifacts\"", "root = \"my-artifacts\""),
    );
    project.ferry(&["run", "hello"]).success();

    // A second file claiming the same name: refused, naming both; --force replaces.
    let renamed = dir.path().join("libmy_store_v2.so");
    std::fs::copy(&store_lib, &renamed).unwrap();
    let twice = project.ferry(&["plugins", "install", renamed.to_str().unwrap()]);
    assert_ne!(twice.code(), 0);
    let stderr = twice.stderr();
    assert!(
        stderr.contains("libmy_store.so") && stderr.contains("libmy_store_v2.so"),
        "{stderr}"
    );
    assert!(stderr.contains("--force"), "{stderr}");
    project
        .ferry(&["plugins", "install", "--force", renamed.to_str().unwrap()])
        .success();
    let list = project.ferry(&["plugins", "list", "--output", "json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&list.stdout()).unwrap();
    let stores: Vec<&serde_json::Value> = list.iter().filter(|e| e["name"] == "my-store").collect();
    assert_eq!(stores.len(), 1, "{list:#?}");
    assert!(
        stores[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("libmy_store_v2.so")
    );
}

#[test]
fn a_plugin_built_for_a_newer_patch_of_the_interface_loads_into_this_ferry() {
    let dir = tempfile::tempdir().unwrap();
    let (major, minor) = interface_major_minor();
    let newer = format!("{major}.{minor}.99");
    let core = core_at(dir.path(), &newer);
    // An additive change, as PLUGINS.md allows in a patch: one more entry point, after the
    // last prefix field of the root module.
    replace_in(
        &core.join("src/abi/mod.rs"),
        "    ) -> RResult<OrchestratorBox, PluginError>,\n}",
        "    ) -> RResult<OrchestratorBox, PluginError>,\n    /// Added in a newer interface.\n    pub newer_entry_point: Option<extern \"C\" fn() -> u32>,\n}",
    );
    let sdk = core.join("src/sdk.rs");
    for _ in 0..2 {
        replace_in(
            &sdk,
            "    }\n    .leak_into_prefix()",
            "        newer_entry_point: None,\n    }\n    .leak_into_prefix_",
        );
    }
    let text = std::fs::read_to_string(&sdk)
        .unwrap()
        .replace(".leak_into_prefix_", ".leak_into_prefix()");
    std::fs::write(&sdk, text).unwrap();

    let template = template_at(dir.path(), &core, None);
    let libs = build(&template, &["my-store"]);
    let project = hello_on_template_plugins();
    project.write(
        "ferry.toml",
        "stack = \"mine\"\n\n[stacks.mine]\norchestrator = { plugin = \"local\" }\nstore = { plugin = \"my-store\", settings = { root = \"my-artifacts\" } }\n",
    );
    let list = project
        .command(&["plugins", "list", "--output", "json"])
        .env("FERRY_PLUGIN_PATH", &libs)
        .output()
        .unwrap();
    let list: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
    let entry = list.iter().find(|e| e["name"] == "my-store").unwrap();
    assert_eq!(entry["interface_version"], newer.as_str(), "{entry:#}");
    let run = project
        .command(&["run", "hello"])
        .env("FERRY_PLUGIN_PATH", &libs)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn a_plugin_built_for_another_interface_minor_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (major, minor) = interface_major_minor();
    let other = format!("{major}.{}.0", minor + 1);
    let core = core_at(dir.path(), &other);
    let template = template_at(dir.path(), &core, None);
    let libs = build(&template, &["my-store"]);
    let lib = libs.join("libmy_store.so");
    let project = hello_on_template_plugins();
    project.write(
        "ferry.toml",
        &format!(
            "stack = \"mine\"\n\n[stacks.mine]\norchestrator = {{ plugin = \"local\" }}\nstore = {{ plugin = {:?}, settings = {{ root = \"my-artifacts\" }} }}\n",
            lib.display().to_string()
        ),
    );
    let run = project.ferry(&["run", "hello"]);
    assert_ne!(run.code(), 0);
    let stderr = run.stderr();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let line = errors[0];
    for expected in [
        "libmy_store.so",
        &format!("built for plugin interface {other}"),
        &format!("this ferry speaks {}", orchestrator_core::INTERFACE_VERSION),
        "rebuild the plugin against orchestrator-core",
    ] {
        assert!(line.contains(expected), "{expected:?} in: {line}");
    }
    assert!(
        !project.path().join("my-artifacts").exists(),
        "nothing was written"
    );
}

fn interface_major_minor() -> (u64, u64) {
    let mut parts = orchestrator_core::INTERFACE_VERSION
        .split('.')
        .map(|p| p.parse::<u64>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}
