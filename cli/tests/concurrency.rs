//! Many ferry processes writing to one artifact store at once: 50 runs started together must
//! leave 50 distinct, complete run records (none lost, none mixed up), on the local store and
//! on S3 from two "machines" (two projects with their own homes, one bucket prefix).
//!
//! Needs the S3 test server (`scripts/test-all.sh` starts it) and the plugin libraries.

mod support;

use std::collections::BTreeSet;
use std::process::{Child, Stdio};

use support::{Project, toml_table};
use test_support::{plugin_path, s3_settings, unique_prefix};

const RUNS: usize = 50;

/// A pipeline whose one step writes which process ran it, so records cannot be swapped.
const PIPELINE: &str = "name: many\nparams:\n  tag: {}\nsteps:\n  mark:\n    run: echo \"$FERRY_PARAM_TAG\" > \"$FERRY_OUTPUT_DIR/tag.txt\"; echo \"tag $FERRY_PARAM_TAG\"\n    outputs: [tag.txt]\n    cache: false\n";

fn start(project: &Project, tag: usize) -> Child {
    project
        .command(&["run", "p", "--param", &format!("tag={tag}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_all(children: Vec<Child>) {
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a concurrent run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every run is listed once, succeeded, with its own parameter and its own output.
fn check_records(project: &Project, expected_tags: &BTreeSet<String>) {
    let list = project.ferry(&["runs", "list", "--output", "json", "--limit", "1000"]);
    list.success();
    let runs: Vec<serde_json::Value> = serde_json::from_str(&list.stdout()).unwrap();
    let ids: BTreeSet<&str> = runs.iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert_eq!(
        ids.len(),
        expected_tags.len(),
        "distinct run ids: {runs:#?}"
    );
    let mut tags = BTreeSet::new();
    for id in ids {
        let show = project.ferry(&["runs", "show", id, "--output", "json"]);
        show.success();
        let record: serde_json::Value = serde_json::from_str(&show.stdout()).unwrap();
        assert_eq!(record["status"], "succeeded", "{record:#}");
        assert_eq!(record["steps"]["mark"]["status"], "succeeded", "{record:#}");
        assert!(record["finished_at"].is_string(), "complete: {record:#}");
        let tag = record["params"]["tag"].as_str().unwrap().to_string();
        let logs = project.ferry(&["logs", id, "mark"]);
        logs.success();
        assert!(
            logs.stdout().contains(&format!("tag {tag}")),
            "run {id}'s log belongs to tag {tag}: {}",
            logs.stdout()
        );
        assert!(tags.insert(tag), "two records carry one tag");
    }
    assert_eq!(&tags, expected_tags);
}

#[test]
fn fifty_runs_at_once_leave_fifty_complete_records_in_the_local_store() {
    let project = Project::new();
    project.write("p/pipeline.yaml", PIPELINE);
    let children: Vec<Child> = (0..RUNS).map(|tag| start(&project, tag)).collect();
    wait_all(children);
    let tags = (0..RUNS).map(|t| t.to_string()).collect();
    check_records(&project, &tags);
}

#[test]
fn two_machines_worth_of_runs_share_one_s3_prefix_without_losing_any() {
    plugin_path("storage-s3");
    let settings = s3_settings(&unique_prefix("concurrency"));
    let config = format!(
        "stack = \"s3\"\n\n[stacks.s3]\norchestrator = {{ plugin = \"local\" }}\nstore = {{ plugin = \"storage-s3\", settings = {} }}\n",
        toml_table(&settings)
    );
    // Two projects with their own HOME and work folders: two machines sharing one bucket.
    let machines = [Project::new(), Project::new()];
    for machine in &machines {
        machine.write("p/pipeline.yaml", PIPELINE);
        machine.write("ferry.toml", &config);
    }
    let children: Vec<Child> = (0..RUNS)
        .map(|tag| start(&machines[tag % 2], tag))
        .collect();
    wait_all(children);
    let tags = (0..RUNS).map(|t| t.to_string()).collect();
    // Either machine sees every run.
    for machine in &machines {
        check_records(machine, &tags);
    }
}
