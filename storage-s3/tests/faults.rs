//! The S3 server dies in the middle of a large upload: the upload fails with a clear error,
//! no half-written object is ever visible, and once the server is back the next upload works.
//!
//! Runs its own SeaweedFS (scripts/servers.sh on a spare port, sharing the venv of the main
//! test servers), so killing it disturbs no other test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use test_support::{open_plugin_store, server_env};

/// A SeaweedFS pair started with scripts/servers.sh in a tools folder of its own.
struct Dedicated {
    tools: tempfile::TempDir,
    env: Vec<(String, String)>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn servers(tools: &Path, port: u16, command: &str) -> std::process::Output {
    Command::new("bash")
        .arg(repo().join("scripts/servers.sh"))
        .arg(command)
        .env("FERRY_TOOLS_DIR", tools)
        .env("FERRY_S3_PORT", port.to_string())
        .output()
        .unwrap()
}

impl Dedicated {
    fn start() -> Self {
        // The main servers' venv (FERRY_TEST_PYTHON is <tools>/venv/bin/python).
        let python = PathBuf::from(server_env("FERRY_TEST_PYTHON"));
        let venv = python.parent().unwrap().parent().unwrap().to_path_buf();
        let tools = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&venv, tools.path().join("venv")).unwrap();
        let mut last = String::new();
        for attempt in 0..5u16 {
            let port = 21_000 + (std::process::id() as u16 % 900) * 20 + attempt * 7_000 % 20_000;
            let output = servers(tools.path(), port, "start");
            if output.status.success() {
                let env = std::fs::read_to_string(tools.path().join("run/servers.env"))
                    .unwrap()
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                return Self { tools, env };
            }
            last = String::from_utf8_lossy(&output.stderr).into_owned();
        }
        panic!("could not start a dedicated SeaweedFS: {last}");
    }

    fn var(&self, name: &str) -> &str {
        &self.env.iter().find(|(k, _)| k == name).unwrap().1
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "url": format!("s3://{}/faults", self.var("FERRY_TEST_S3_BUCKET")),
            "endpoint": self.var("FERRY_TEST_S3_ENDPOINT"),
            "region": "us-east-1",
            "access_key_id": self.var("FERRY_TEST_S3_ACCESS_KEY_ID"),
            "secret_access_key": self.var("FERRY_TEST_S3_SECRET_ACCESS_KEY"),
            "max_retries": 1,
            "retry_timeout": "3s",
            "timeout": "10s",
        })
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        let port = self
            .var("FERRY_TEST_S3_ENDPOINT")
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        servers(self.tools.path(), port, "stop");
    }
}

fn cmdline(pid: &str) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[test]
fn a_server_killed_mid_upload_leaves_no_partial_object_and_the_next_upload_works() {
    let servers = Dedicated::start();
    let store = open_plugin_store("storage-s3", servers.settings()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let mut data = Vec::new();
    for _ in 0..160 {
        data.extend_from_slice(&chunk);
    }
    std::fs::write(&big, &data).unwrap();

    let pid = servers.var("FERRY_TEST_SEAWEEDFS_PID").to_string();
    let argv = cmdline(&pid);
    let tmpdir = Path::new(&argv.iter().find(|a| a.starts_with("-dir=")).unwrap()[5..])
        .parent()
        .unwrap()
        .join("tmp");
    let killed = AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        let upload = scope.spawn(|| {
            store.put_file_with_progress("models/big.bin", &big, &mut |done, _| {
                // Kill the server once a third is on its way, from this very callback.
                if done > 50 * 1024 * 1024 && !killed.swap(true, Ordering::SeqCst) {
                    Command::new("kill").args(["-9", &pid]).status().unwrap();
                }
            })
        });
        upload.join().unwrap()
    });
    assert!(
        killed.load(Ordering::SeqCst),
        "the upload finished before the kill"
    );
    let error = result.expect_err("an upload to a dead server must fail");
    let message = error.to_string();
    assert!(
        message.contains("cannot upload `models/big.bin`"),
        "{message}"
    );
    assert!(
        !message.contains(servers.var("FERRY_TEST_S3_SECRET_ACCESS_KEY")),
        "{message}"
    );

    // Bring the same server back on the same data.
    let mut relaunched = Command::new(&argv[0])
        .args(&argv[1..])
        .env("TMPDIR", &tmpdir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = servers.tools.path().join("run/seaweedfs/weed.pid");
    std::fs::write(&pid_file, format!("{}\n", relaunched.id())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let listing = loop {
        match store.list("models", true) {
            Ok(listing) => break listing,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("the relaunched server never answered: {e}"),
        }
    };
    assert!(
        listing.objects.is_empty(),
        "a partial object is visible: {listing:?}"
    );
    assert!(store.head("models/big.bin").unwrap().is_none());

    let info = store.put_file("models/big.bin", &big).unwrap();
    assert_eq!(info.size, data.len() as u64);
    let back = dir.path().join("back.bin");
    store.get_file("models/big.bin", &back).unwrap();
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the retried upload is complete"
    );
    // Stopping the servers stops the relaunched process (its pid is in weed.pid); reap it.
    drop(servers);
    relaunched.wait().unwrap();
}
