//! Test support: a throwaway project directory and a way to run `ferry` in it as a process.

#![allow(dead_code, unused_imports)] // each test target uses a different part of it

use std::path::Path;
use std::process::{Command, Output};

pub use test_support::copy_dir;

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// Where the workspace's plugin libraries are (next to `ferry`), shared with other test targets.
pub use test_support::plugin_path;

pub struct Project {
    pub dir: tempfile::TempDir,
    home: tempfile::TempDir,
}

pub struct Run {
    pub output: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    #[track_caller]
    pub fn success(&self) -> &Self {
        assert_eq!(
            self.code(),
            0,
            "ferry failed\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }

    #[track_caller]
    pub fn failure(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
}

impl Project {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// A project holding a copy of one of the repository's examples.
    pub fn with_example(name: &str) -> Self {
        let project = Self::new();
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(name);
        copy_dir(&source, &project.path().join(name));
        project
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, relative: &str, content: &str) -> &Self {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        self
    }

    pub fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.path().join(relative))
            .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
    }

    /// `ferry` with a clean, isolated environment (no user config, no user plugins).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(FERRY);
        command.args(args).current_dir(self.path());
        for (key, _) in std::env::vars() {
            if key.starts_with("FERRY_") || key == "RUST_LOG" || key == "RUST_BACKTRACE" {
                command.env_remove(key);
            }
        }
        command
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("XDG_DATA_HOME", self.home.path().join("data"))
            .env("NO_COLOR", "1");
        command
    }

    /// `ferry runs show RUN --output json`, which must succeed, parsed.
    pub fn record(&self, run_id: &str) -> serde_json::Value {
        let show = self.ferry(&["runs", "show", run_id, "--output", "json"]);
        show.success();
        serde_json::from_str(&show.stdout()).unwrap()
    }

    /// `ferry ARGS` that prints a run id (`run --detach`, `schedule trigger`), which must
    /// succeed; the id.
    pub fn run_id_from(&self, args: &[&str]) -> String {
        let started = self.ferry(args);
        started.success();
        started.stdout().trim().to_string()
    }

    pub fn ferry(&self, args: &[&str]) -> Run {
        Run {
            output: self.command(args).output().unwrap(),
        }
    }

    /// The record of the newest run, read straight from the local store.
    pub fn latest_record(&self) -> serde_json::Value {
        let runs = self.path().join(".ferry/artifacts/runs");
        let mut ids: Vec<_> = std::fs::read_dir(&runs)
            .unwrap_or_else(|e| panic!("no runs in {}: {e}", runs.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        let id = ids.last().expect("at least one run");
        serde_json::from_str(&std::fs::read_to_string(runs.join(id).join("run.json")).unwrap())
            .unwrap()
    }
}

pub fn process_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true)
}

/// A flat JSON object as a TOML inline table (JSON strings and numbers are valid TOML).
pub fn toml_table(settings: &serde_json::Value) -> String {
    let fields: Vec<String> = settings
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    format!("{{ {} }}", fields.join(", "))
}
