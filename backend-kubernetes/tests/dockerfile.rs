//! The runtime image's Dockerfile against what the backend renders, for what can be checked
//! without building it (this machine cannot build containers): the user, the working
//! directory, the entrypoint, where the plugins go, and what examples need.

use backend_kubernetes::manifest::{CONTAINER, WORK_DIR};
use backend_kubernetes::settings::RUNTIME_IMAGE_UID;

fn dockerfile() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../Dockerfile");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The instructions of the final stage (after the last `FROM`), continuation lines joined.
fn runtime_stage() -> Vec<String> {
    let text = dockerfile().replace("\\\n", " ");
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    lines[last_from..].to_vec()
}

fn instruction<'a>(stage: &'a [String], name: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter_map(|l| l.strip_prefix(name).map(str::trim))
        .collect()
}

#[test]
fn the_image_runs_as_the_user_the_backend_renders_and_it_is_not_root() {
    let stage = runtime_stage();
    let users = instruction(&stage, "USER ");
    assert_eq!(users.last(), Some(&RUNTIME_IMAGE_UID.to_string().as_str()));
    let created = format!("useradd --uid {RUNTIME_IMAGE_UID}");
    assert!(
        stage.iter().any(|l| l.contains(&created)),
        "the image creates uid {RUNTIME_IMAGE_UID}"
    );
    assert_ne!(RUNTIME_IMAGE_UID, 0);
}

#[test]
fn the_working_directory_exists_and_belongs_to_that_user() {
    let stage = runtime_stage();
    assert_eq!(instruction(&stage, "WORKDIR ").last(), Some(&WORK_DIR));
    assert!(
        stage
            .iter()
            .any(|l| l.contains(&format!("mkdir {WORK_DIR}"))
                && l.contains(&format!("chown ferry {WORK_DIR}"))),
        "{WORK_DIR} is made and given to the ferry user: {stage:#?}"
    );
}

#[test]
fn the_entrypoint_is_the_ferry_binary_the_plugin_loader_looks_beside() {
    let stage = runtime_stage();
    assert_eq!(instruction(&stage, "ENTRYPOINT "), [r#"["ferry"]"#]);
    assert_eq!(CONTAINER, "ferry");
    let copies = instruction(&stage, "COPY ");
    assert!(
        copies
            .iter()
            .any(|c| c.ends_with("/target/release/ferry /usr/local/bin/ferry")),
        "{copies:#?}"
    );
    // orchestrator-host's loader looks in ../lib/ferry/plugins beside the executable.
    let plugins = copies
        .iter()
        .find(|c| c.ends_with(" /usr/local/lib/ferry/plugins/"))
        .expect("the plugins are copied to /usr/local/lib/ferry/plugins/");
    let build = stage_of_build();
    for library in [
        "libbackend_kubernetes.so",
        "libstorage_s3.so",
        "libstorage_gcs.so",
        "libstorage_azure.so",
    ] {
        assert!(plugins.contains(library), "{library} in {plugins}");
        let package = library
            .trim_start_matches("lib")
            .trim_end_matches(".so")
            .replace('_', "-");
        assert!(
            build.contains(&format!("-p {package}")),
            "{package} is built: {build}"
        );
    }
}

#[test]
fn the_image_has_python3_for_the_ml_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/ml/pipeline.yaml");
    let example = std::fs::read_to_string(example).unwrap();
    assert!(example.contains("python3"), "examples/ml runs python3");
    let stage = runtime_stage();
    let installs = instruction(&stage, "RUN ");
    assert!(
        installs
            .iter()
            .any(|r| r.contains("apt-get install") && r.split_whitespace().any(|w| w == "python3")),
        "{installs:#?}"
    );
}

/// The `cargo build` line of the build stage.
fn stage_of_build() -> String {
    dockerfile()
        .lines()
        .find(|l| l.contains("cargo build"))
        .unwrap()
        .to_string()
}
