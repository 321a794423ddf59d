//! What every command needs: the working directory, the configuration, the plugin search path.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use orchestrator_core::env_vars;
use orchestrator_core::run::{RunRecord, RunRecords};
use orchestrator_host::config::{Config, ConfigLoader, default_user_config_path};
use orchestrator_host::loader::SearchPath;
use orchestrator_host::stack::Stack;

use crate::args::GlobalArgs;
use crate::output::hint;

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

    /// The pipeline file: an explicit path (a directory means its pipeline.yaml), else the
    /// configured default.
    pub fn pipeline_path(&self, arg: Option<&Path>) -> PathBuf {
        match arg {
            Some(path) => {
                let path = self.cwd.join(path);
                if path.is_dir() {
                    path.join(orchestrator_host::config::DEFAULT_PIPELINE)
                } else {
                    path
                }
            }
            None => self.config.pipeline.clone(),
        }
    }

    /// Resolve `latest` or a run id to a run record from the store.
    pub fn find_run(&self, stack: &Stack, run: &str) -> Result<RunRecord> {
        let run_id = if run == "latest" || run == "last" {
            latest_run_id(stack)?.ok_or_else(|| {
                hint(
                    format!("no runs in {}", stack.store.url()),
                    "start one with `ferry run`",
                )
            })?
        } else {
            run.to_string()
        };
        stack
            .orchestrator
            .status(&run_id)
            .with_context(|| format!("cannot read run `{run_id}`"))
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

fn latest_run_id(stack: &Stack) -> Result<Option<String>> {
    RunRecords::new(stack.store.clone())
        .latest()
        .with_context(|| format!("cannot list runs in {}", stack.store.url()))
}
