//! `ferry init [DIR]`: a ferry.toml and a small example pipeline to start from.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use orchestrator_host::config::{DEFAULT_PIPELINE, PROJECT_FILE, init_template};

use crate::args::{GlobalArgs, InitArgs};
use crate::output::hint;
use crate::output::outln;

const EXAMPLE_PIPELINE: &str = r#"# A pipeline is a DAG of steps; `ferry run` runs it. Reference: ferry's README.
name: example
params:
  greeting: hello
steps:
  greet:
    run: echo "$FERRY_PARAM_GREETING from $FERRY_STEP" > "$FERRY_OUTPUT_DIR/greeting.txt"
    outputs: [greeting.txt]
  shout:
    inputs: [greet]
    run: tr a-z A-Z < "$FERRY_INPUT_GREET/greeting.txt" | tee "$FERRY_OUTPUT_DIR/shout.txt"
    outputs: [shout.txt]
"#;

pub fn run(global: &GlobalArgs, args: InitArgs) -> Result<ExitCode> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let base = global
        .directory
        .as_ref()
        .map_or(cwd.clone(), |d| cwd.join(d));
    let dir = base.join(&args.dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = args.name.unwrap_or_else(|| {
        dir.canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "project".to_string())
    });
    let files = [
        (PROJECT_FILE, init_template(&name)),
        (DEFAULT_PIPELINE, EXAMPLE_PIPELINE.to_string()),
    ];
    for (file, _) in &files {
        let path = dir.join(file);
        if path.exists() {
            return Err(hint(
                format!("{} already exists", path.display()),
                "ferry init never overwrites files; remove it or initialise another directory",
            ));
        }
    }
    for (file, content) in &files {
        write_new(&dir.join(file), content)?;
        outln!("created {}", dir.join(file).display());
    }
    let shown = dir.strip_prefix(&cwd).unwrap_or(&dir);
    let cd = if shown.as_os_str().is_empty() {
        String::new()
    } else {
        format!("-C {} ", shown.display())
    };
    outln!("next: ferry {cd}run");
    Ok(ExitCode::SUCCESS)
}

fn write_new(path: &Path, content: &str) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(content.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
