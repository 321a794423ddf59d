//! What every command needs: the working directory, the configuration, the plugin search path,
//! and the helpers commands share (opening a stack, listing runs, building and uploading the code
//! package with its progress display).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use console::Style;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use orchestrator_core::env_vars;
use orchestrator_core::run::RunRecords;
use orchestrator_core::store::Store;
use orchestrator_host::config::{Config, ConfigLoader, default_user_config_path};
use orchestrator_host::loader::SearchPath;
use orchestrator_host::package::{self, Package, Upload};
use orchestrator_host::stack::Stack;

use crate::args::GlobalArgs;
use crate::output;

pub struct Context {
    pub cwd: PathBuf,
    pub config: Config,
    pub search: SearchPath,
    pub verbose: u8,
}

impl Context {
    pub fn load(global: &GlobalArgs) -> Result<Self> {
        let cwd = working_dir(global)?;
        let config = ConfigLoader::new(&cwd)
            .user_config(default_user_config_path(std::env::var_os(
                env_vars::FERRY_CONFIG,
            )))
            .env(std::env::vars())
            .set(global.set.iter().cloned())
            .load()?;
        let search = SearchPath::standard(
            &global
                .plugin_dirs
                .iter()
                .map(|d| cwd.join(d))
                .collect::<Vec<_>>(),
            std::env::var(env_vars::FERRY_PLUGIN_PATH).ok().as_deref(),
            &config.plugin_dirs,
        );
        Ok(Self {
            cwd,
            config,
            search,
            verbose: global.verbose,
        })
    }

    /// Open a stack by name (default: the configured one).
    pub fn open_stack(&self, name: Option<&str>) -> Result<Stack> {
        let (name, stack) = self.config.stack(name)?;
        tracing::info!(stack = name, "opening stack");
        Stack::open(name, stack, &self.config.project_root, &self.search).map_err(|e| {
            let details = load_details(&e).map(str::to_string);
            if let Some(details) = details
                && self.verbose > 0
            {
                eprintln!("{details}");
            }
            anyhow::Error::new(e).context(format!("cannot open stack `{name}`"))
        })
    }

    /// Build (or reuse, when nothing changed) the package of the project at the config's root,
    /// printing its summary and warnings.
    pub fn build_package(&self) -> Result<Package> {
        let root = &self.config.project_root;
        let cache = root.join(package::files::FERRY_DIR).join("packages");
        let package = package::build_cached(root, &self.config.package, &cache)
            .with_context(|| format!("cannot package the project at {}", root.display()))?;
        let archive = &package.archive;
        eprintln!(
            "{} {} files, {} ({} uncompressed) · digest {}",
            Style::new().bold().for_stderr().apply_to("package"),
            archive.files,
            output::bytes(archive.compressed_size),
            output::bytes(archive.uncompressed_size),
            archive.digest
        );
        for warning in &package.warnings {
            eprintln!(
                "{} {warning}",
                Style::new().yellow().for_stderr().apply_to("warning:")
            );
        }
        Ok(package)
    }

    /// Upload with a progress bar (bytes, rate) unless the store already has the package.
    pub fn upload_package(&self, store: &Store, package: &Package) -> Result<Upload> {
        let bar = ProgressBar::with_draw_target(
            Some(package.archive.compressed_size),
            ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            ProgressStyle::with_template(
                "uploading {bar:30.cyan/dim} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
            )
            .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        let result = package::upload(store, package, &mut |done, _| bar.set_position(done));
        bar.finish_and_clear();
        let outcome = result?;
        match outcome {
            Upload::Unchanged => eprintln!(
                "unchanged, 0 bytes uploaded: {} already has {}",
                store.url(),
                package.key()
            ),
            Upload::Uploaded { bytes } => eprintln!(
                "uploaded {} to {}/{}",
                output::bytes(bytes),
                store.url(),
                package.key()
            ),
        }
        Ok(outcome)
    }
}

fn working_dir(global: &GlobalArgs) -> Result<PathBuf> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    match &global.directory {
        None => Ok(cwd),
        Some(dir) => {
            let dir = cwd.join(dir);
            dir.canonicalize()
                .with_context(|| format!("cannot use -C {}", dir.display()))
        }
    }
}

fn load_details(error: &orchestrator_host::stack::Error) -> Option<&str> {
    use orchestrator_host::loader::FindError;
    match error {
        orchestrator_host::stack::Error::Find { source, .. } => match source.as_ref() {
            FindError::Load(load) => load.details(),
            FindError::NotFound { .. } => None,
        },
        _ => None,
    }
}

/// Run ids in the store, newest first.
pub fn run_ids(stack: &Stack) -> Result<Vec<String>> {
    RunRecords::new(stack.store.clone())
        .ids()
        .with_context(|| format!("cannot list runs in {}", stack.store.url()))
}
