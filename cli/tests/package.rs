//! `ferry package` as a process: listing, writing, uploading once, size guard, warnings.

mod support;

use support::Project;

fn project() -> Project {
    let project = Project::new();
    project.write(".gitignore", "data/\n*.log\n");
    project.write("train.py", "print('train')\n");
    project.write("data/train.csv", "1,2\n");
    project.write("debug.log", "noise\n");
    project.write(
        "pipeline.yaml",
        "name: p\nsteps:\n  train:\n    run: python3 train.py data/train.csv\n",
    );
    project
}

#[test]
fn list_shows_what_ships_and_warns_about_ignored_files_steps_use() {
    let project = project();
    let run = project.ferry(&["package", "--list"]);
    run.success();
    let stdout = run.stdout();
    for shipped in [".gitignore", "pipeline.yaml", "train.py"] {
        assert!(
            stdout.lines().any(|l| l.ends_with(shipped)),
            "{shipped} missing:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("debug.log") && !stdout.contains("train.csv"),
        "{stdout}"
    );
    let stderr = run.stderr();
    assert!(stderr.contains("package 3 files"), "{stderr}");
    assert!(stderr.contains("digest "), "{stderr}");
    assert!(
        stderr
            .contains("step `train` uses data/train.csv, which is ignored and not in the package"),
        "{stderr}"
    );

    project.write("ferry.toml", "[package]\ninclude = [\"data/train.csv\"]\n");
    let run = project.ferry(&["package", "--list"]);
    run.success();
    assert!(run.stdout().contains("data/train.csv"), "{}", run.stdout());
    assert!(
        !run.stderr().contains("not in the package"),
        "{}",
        run.stderr()
    );
}

#[test]
fn out_writes_the_same_bytes_every_time() {
    let project = project();
    project.write(".gitignore", "data/\n*.log\n*.tar.zst\n");
    project
        .ferry(&["package", "--out", "one.tar.zst"])
        .success();
    // Touch every file: the package must not change.
    for file in ["train.py", "pipeline.yaml", ".gitignore"] {
        let content = project.read(file);
        project.write(file, &content);
    }
    project
        .ferry(&["package", "--out", "two.tar.zst"])
        .success();
    let one = std::fs::read(project.path().join("one.tar.zst")).unwrap();
    let two = std::fs::read(project.path().join("two.tar.zst")).unwrap();
    assert!(
        !one.is_empty() && one == two,
        "packages differ after touching files"
    );
}

#[test]
fn uploading_twice_sends_nothing_the_second_time() {
    let project = project();
    let first = project.ferry(&["package", "--upload"]);
    first.success();
    assert!(first.stderr().contains("uploaded "), "{}", first.stderr());
    let packages = project.path().join(".ferry/artifacts/packages");
    let stored: Vec<_> = std::fs::read_dir(&packages).unwrap().collect();
    assert_eq!(stored.len(), 1);
    let second = project.ferry(&["package", "--upload"]);
    second.success();
    assert!(
        second.stderr().contains("unchanged, 0 bytes uploaded"),
        "{}",
        second.stderr()
    );
    project.write("train.py", "print('changed')\n");
    let third = project.ferry(&["package", "--upload"]);
    assert!(third.stderr().contains("uploaded "), "{}", third.stderr());
    assert_eq!(std::fs::read_dir(&packages).unwrap().count(), 2);
}

#[test]
fn oversized_packages_are_refused_with_the_largest_files() {
    let project = project();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..2 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(project.path().join("weights.bin"), noise).unwrap();
    project.write("ferry.toml", "[package]\nmax_size_mib = 1\n");
    let run = project.ferry(&["package", "--upload"]);
    run.failure(1);
    let stderr = run.stderr();
    assert!(stderr.contains("over the limit of 1.0 MiB"), "{stderr}");
    assert!(stderr.contains("weights.bin (2.0 MiB)"), "{stderr}");
    assert!(
        !project.path().join(".ferry/artifacts/packages").exists(),
        "nothing uploaded"
    );

    project.write("ferry.toml", "[package]\nmax_size = 1\n");
    let run = project.ferry(&["package"]);
    run.failure(1);
    assert!(
        run.stderr().contains("did you mean `max_size_mib`"),
        "{}",
        run.stderr()
    );
}

#[test]
fn run_on_a_remote_stack_packages_uploads_and_hands_the_package_to_the_orchestrator() {
    support::plugin_path("remote-fixture");
    let project = project();
    project.write(
        "ferry.toml",
        "[stacks.remote]\norchestrator = { plugin = \"remote-fixture\" }\nstore = { plugin = \"local\" }\n",
    );
    let first = project.ferry(&["run", "--stack", "remote"]);
    first.success();
    let stderr = first.stderr();
    assert!(
        stderr.contains("package 4 files"),
        "with ferry.toml: {stderr}"
    );
    assert!(stderr.contains("uploaded "), "{stderr}");
    let stdout = first.stdout();
    // The orchestrator fetched, verified and unpacked the package: the files it found.
    for shipped in [
        "unpacked train.py",
        "unpacked pipeline.yaml",
        "unpacked .gitignore",
    ] {
        assert!(stdout.contains(shipped), "{shipped}:\n{stdout}");
    }
    assert!(
        !stdout.contains("debug.log"),
        "ignored files are not shipped:\n{stdout}"
    );
    let second = project.ferry(&["run", "--stack", "remote"]);
    second.success();
    assert!(
        second.stderr().contains("unchanged, 0 bytes uploaded"),
        "{}",
        second.stderr()
    );
}
