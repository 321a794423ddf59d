//! Every checked-in fuzz corpus input (`fuzz/corpus/<target>/`), replayed through the same
//! entry points the fuzz targets call, on the stable toolchain: inputs a fuzzer found once stay
//! regression tests, and the seeds (examples, real records, broken files) keep parsing without
//! a panic. The fuzzing itself runs with `scripts/fuzz.sh` (nightly, cargo-fuzz).

use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 4,
        "{target}: a corpus of {} inputs",
        inputs.len()
    );
    inputs
}

#[test]
fn pipeline_files() {
    for (name, data) in corpus("pipeline_yaml") {
        let result = std::panic::catch_unwind(|| orchestrator_host::fuzz::pipeline_yaml(&data));
        assert!(result.is_ok(), "{name} panicked");
    }
}

#[test]
fn config_files() {
    for (name, data) in corpus("config_toml") {
        let result = std::panic::catch_unwind(|| orchestrator_host::fuzz::config_toml(&data));
        assert!(result.is_ok(), "{name} panicked");
    }
}

#[test]
fn run_records_and_plans() {
    for (name, data) in corpus("run_record") {
        let result = std::panic::catch_unwind(|| orchestrator_host::fuzz::run_record(&data));
        assert!(result.is_ok(), "{name} panicked");
    }
}

#[test]
fn code_packages() {
    let scratch = tempfile::tempdir().unwrap();
    for (name, data) in corpus("unpack") {
        let result =
            std::panic::catch_unwind(|| orchestrator_host::fuzz::unpack(&data, scratch.path()));
        assert!(result.is_ok(), "{name} panicked");
    }
}

/// The seeds are what they claim: the examples parse, the broken ones are refused.
#[test]
fn the_seeds_cover_valid_and_invalid_inputs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let text = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
    assert!(
        orchestrator_core::pipeline::Pipeline::from_yaml_str(
            &text("pipeline_yaml/every-key.yaml"),
            None
        )
        .is_ok()
    );
    assert!(
        orchestrator_core::pipeline::Pipeline::from_yaml_str(
            &text("pipeline_yaml/cycle.yaml"),
            None
        )
        .is_err()
    );
    orchestrator_host::config::check_project_file(&text("config_toml/stacks.toml")).unwrap();
    assert!(orchestrator_host::config::check_project_file(&text("config_toml/typo.toml")).is_err());
    serde_json::from_str::<orchestrator_core::run::RunRecord>(&text(
        "run_record/run-succeeded.json",
    ))
    .unwrap();
    orchestrator_core::run::RunPlan::from_json(&text("run_record/plan.json")).unwrap();
}
