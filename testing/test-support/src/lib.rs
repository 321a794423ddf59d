//! Test support shared by ferry's test targets: where the built plugins are, and the
//! settings of the test servers that `scripts/test-all.sh` starts.
//!
//! A test that needs a server fails with what to start when it is missing; it never skips.

use std::path::{Path, PathBuf};

use orchestrator_core::store::Store;
use orchestrator_host::config::ComponentConfig;
use orchestrator_host::loader::{SearchPath, SearchSource};
use orchestrator_host::stack::open_store;

/// `ferry stack check`'s probe, for the store plugins' tests.
pub use orchestrator_host::stack::check;

/// `target/<profile>/`, found from the running test binary (`target/<profile>/deps/<test>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .to_path_buf()
}

/// The built library of a workspace plugin; fails with what to run when it is missing
/// (`cargo test` does not build cdylibs; `cargo build --workspace` does).
pub fn plugin_path(package: &str) -> PathBuf {
    let path = target_dir().join(format!("lib{}.so", package.replace('-', "_")));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` (same profile) before the tests; \
         `cargo test` alone does not build plugin libraries",
        path.display()
    );
    path
}

/// A test-server setting from the environment, or a failure that says how to start them.
pub fn server_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{name} is not set: this test needs the test servers. Run `scripts/test-all.sh`, or \
             start them by hand with `source scripts/servers.sh && ferry_tools_install && \
             ferry_servers_start` (then `source .tools/run/servers.env` in other shells)"
        ),
    }
}

/// Store settings for the S3 test server (SeaweedFS with signature checks), under `prefix`.
pub fn s3_settings(prefix: &str) -> serde_json::Value {
    serde_json::json!({
        "url": format!("s3://{}/{prefix}", server_env("FERRY_TEST_S3_BUCKET")),
        "endpoint": server_env("FERRY_TEST_S3_ENDPOINT"),
        "region": server_env("FERRY_TEST_S3_REGION"),
        "access_key_id": server_env("FERRY_TEST_S3_ACCESS_KEY_ID"),
        "secret_access_key": server_env("FERRY_TEST_S3_SECRET_ACCESS_KEY"),
    })
}

/// Store settings for the GCS test server (SeaweedFS's XML endpoint, see TESTING.md).
pub fn gcs_settings(prefix: &str) -> serde_json::Value {
    serde_json::json!({
        "url": format!("gs://{}/{prefix}", server_env("FERRY_TEST_GCS_BUCKET")),
        "service_account": server_env("FERRY_TEST_GCS_SERVICE_ACCOUNT"),
        "allow_http": true,
    })
}

/// Store settings for the Azure Blob test server (Azurite), under `prefix`.
pub fn azure_settings(prefix: &str) -> serde_json::Value {
    serde_json::json!({
        "url": format!("az://{}/{prefix}", server_env("FERRY_TEST_AZURE_CONTAINER")),
        "use_emulator": true,
        "endpoint": server_env("FERRY_TEST_AZURE_ENDPOINT"),
    })
}

/// Open a plugin store from the target directory, as ferry would.
pub fn open_plugin_store(plugin: &str, settings: serde_json::Value) -> Result<Store, String> {
    plugin_path(plugin);
    let component = ComponentConfig {
        plugin: plugin.to_string(),
        settings: settings.as_object().cloned().unwrap_or_default(),
    };
    let search = SearchPath {
        dirs: vec![(target_dir(), SearchSource::CommandLine)],
    };
    open_store(&component, Path::new("."), &search)
        .map(|(store, _)| store)
        .map_err(|e| orchestrator_host::errors::chain(&e))
}

/// A prefix no other test run uses.
pub fn unique_prefix(test: &str) -> String {
    format!("tests/{}-{test}", orchestrator_core::run::new_run_id())
}

/// A TCP proxy on loopback that slows a server down: every chunk read in either direction is
/// held for `delay` before it is passed on. For tests of slow stores (timeouts, retries).
pub struct SlowProxy {
    pub addr: std::net::SocketAddr,
}

impl SlowProxy {
    /// Forwards connections to `upstream` (`host:port`) for as long as the test runs.
    pub fn start(upstream: &str, delay: std::time::Duration) -> SlowProxy {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buffer = vec![0u8; 64 * 1024];
                        while let Ok(n) = from.read(&mut buffer) {
                            if n == 0 {
                                break;
                            }
                            std::thread::sleep(delay);
                            if to.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        SlowProxy { addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Copies a directory tree (files and directories; build output in `target/` is left out).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "target" {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
