//! `ferry ui` in a real browser: Debian's headless Chromium driven by Playwright
//! (`testing/browser/ui.mjs`), against a dashboard serving a local project's store while a
//! run goes on. Both are installed by the README's test command (`scripts/servers.sh
//! install`); a machine without them fails here and says so.

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use support::Project;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tools() -> PathBuf {
    std::env::var_os("FERRY_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".tools"))
}

/// Stops the dashboard when the test ends, however it ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_dashboard_shows_a_new_run_live_its_dag_its_log_an_output_and_cancels_it_in_chromium() {
    let chromium = PathBuf::from(
        std::env::var_os("FERRY_TEST_CHROMIUM").unwrap_or("/usr/bin/chromium".into()),
    );
    let playwright = tools().join("npm-browser/node_modules/playwright-core/index.mjs");
    assert!(
        chromium.exists() && playwright.exists(),
        "the browser tests need Debian's Chromium ({}) and playwright-core ({}): run `scripts/servers.sh install` (as root, for the apt package) or scripts/test-all.sh",
        chromium.display(),
        playwright.display()
    );
    let project = Project::new();
    project.write(
        "pipeline.yaml",
        concat!(
            "name: ui-demo\nsteps:\n",
            "  make:\n    run: mkdir -p \"$FERRY_OUTPUT_DIR/data\" && printf 'forty-two\\n' > \"$FERRY_OUTPUT_DIR/data/result.txt\"\n    outputs: [data/result.txt]\n",
            "  slow:\n    inputs: [make]\n    run: for i in $(seq 1 300); do echo \"tick $i\"; sleep 0.2; done\n",
            "  after:\n    needs: [slow]\n    run: echo done\n",
        ),
    );
    let mut child = project
        .command(&["ui", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("ferry ui printed no address: {first}"))
        .to_string();
    // Into a folder of this run's own, so the checks below see what this run wrote; the
    // README's copies in docs/screenshots are refreshed only when asked.
    let shots_dir = tempfile::tempdir().unwrap();
    let shots = shots_dir.path().to_path_buf();
    let out = Command::new("node")
        .arg(repo().join("testing/browser/ui.mjs"))
        .env("UI_URL", &url)
        .env("FERRY_BIN", support::FERRY)
        .env("PROJECT_DIR", project.path())
        .env("EXPECTED_OUTPUT", "forty-two\n")
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .env("PLAYWRIGHT", &playwright)
        .envs(
            project
                .command(&[])
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
        )
        .output()
        .unwrap();
    drop(server);
    assert!(
        out.status.success(),
        "the browser session failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok "));
    for page in ["runs", "run", "step"] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "no screenshot of the {page} page"
        );
    }
    if std::env::var_os("FERRY_UPDATE_SCREENSHOTS").is_some() {
        let docs = repo().join("docs/screenshots");
        std::fs::create_dir_all(&docs).unwrap();
        for page in ["runs", "run", "step"] {
            let name = format!("{page}.png");
            std::fs::copy(shots.join(&name), docs.join(&name)).unwrap();
        }
    }
}

/// One HTTP/1.0 GET over a plain socket: status line and body.
fn http_get(address: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn off_loopback_the_dashboard_makes_up_a_token_prints_it_and_requires_it() {
    let project = Project::new();
    let mut child = project
        .command(&["ui", "--host", "0.0.0.0", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _server = Server(child);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap();
    let (address, query) = url
        .trim_start_matches("http://")
        .split_once('/')
        .unwrap_or_else(|| panic!("{first}"));
    let token = query
        .strip_prefix("?token=")
        .unwrap_or_else(|| panic!("no token in {url}"));
    assert_eq!(token.len(), 32, "{token}");
    let port = address.rsplit(':').next().unwrap();
    let local = format!("127.0.0.1:{port}");
    assert!(
        http_get(&local, "/").starts_with("HTTP/1.0 401"),
        "served without the token"
    );
    assert!(http_get(&local, "/?token=guess").starts_with("HTTP/1.0 401"));
    let admitted = http_get(&local, &format!("/?token={token}"));
    assert!(admitted.starts_with("HTTP/1.0 303"), "{admitted}");
    assert!(admitted.contains("ferry_ui_token="), "{admitted}");
}
