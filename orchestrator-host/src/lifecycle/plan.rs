//! Building the plan of a new run: everything an orchestrator needs to run it, fixed before
//! submission (run id, pipeline, resolved parameters, where the code is and its digest).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::Utc;
use orchestrator_core::JSON_SCHEMA_VERSION;
use orchestrator_core::pipeline::Pipeline;
use orchestrator_core::run::{CodeInfo, RunPlan, new_run_id};

use crate::package::{self, Package};

/// What a new run is made of, resolved by the caller (the CLI resolves it from its arguments).
pub struct PlanRequest<'a> {
    /// The project's root: what is packaged, and what the plan's paths are relative to.
    pub project_root: &'a Path,
    /// `[package] include`: ignored files that still belong to the code (and to its digest).
    pub include: &'a [String],
    /// The pipeline file, absolute or relative to the working directory.
    pub pipeline_file: &'a Path,
    pub pipeline: Pipeline,
    /// Every parameter, defaults and overrides resolved (`Pipeline::resolve_params`).
    pub params: BTreeMap<String, String>,
    pub stack: &'a str,
    /// Run every step, even those with a cached result.
    pub no_cache: bool,
    /// The code package remote steps fetch (by key) and verify (by digest). Without one the
    /// plan carries the digest of the project tree as it is now.
    pub package: Option<&'a Package>,
}

impl PlanRequest<'_> {
    /// The plan, under a fresh run id, with the digest of the project's code (the cache keys
    /// start from it): the package's, else the tree's, so the project is read once either way.
    /// Steps run from the pipeline file's folder.
    pub fn build(self) -> Result<RunPlan, package::files::Error> {
        let root = self.project_root;
        let mut code = match self.package {
            Some(package) => CodeInfo {
                digest: Some(package.archive.digest.clone()),
                package_key: Some(package.key()),
                step_files: BTreeMap::new(),
            },
            None => CodeInfo {
                digest: Some(package::files::tree_digest(root, self.include)?),
                package_key: None,
                step_files: BTreeMap::new(),
            },
        };
        // Steps that say which files are their code: a cache key over those files only.
        if self.pipeline.steps.iter().any(|s| !s.code.is_empty()) {
            let listed;
            let selection = match self.package {
                Some(package) => &package.selection,
                None => {
                    listed = package::files::select(root, self.include)?;
                    &listed
                }
            };
            for step in self.pipeline.steps.iter().filter(|s| !s.code.is_empty()) {
                let digests = package::files::step_code_digests(selection, &step.name, &step.code)?;
                code.step_files.insert(step.name.clone(), digests);
            }
        }
        let relative = |path: &Path| -> PathBuf {
            path.strip_prefix(root)
                .map(Path::to_path_buf)
                .unwrap_or_else(|_| path.to_path_buf())
        };
        Ok(RunPlan {
            schema_version: JSON_SCHEMA_VERSION,
            run_id: new_run_id(),
            pipeline: self.pipeline,
            pipeline_file: relative(self.pipeline_file),
            params: self.params,
            project_root: root.to_path_buf(),
            working_dir: relative(self.pipeline_file.parent().unwrap_or(root)),
            stack: self.stack.to_string(),
            code,
            no_cache: self.no_cache,
            created_at: Utc::now(),
            only_step: None,
            prior_attempts: Vec::new(),
            // A scheduled run's plan is made in the cluster, from the schedule (`ferry schedule`).
            schedule: None,
            resumed_from: None,
            reuse: Default::default(),
        })
    }
}

/// Keeps a run's plan in the store (`runs/<id>/plan.json`), so that `ferry runs retry` can
/// start the same plan again. Written before the run is submitted.
pub fn keep(
    store: &orchestrator_core::store::Store,
    plan: &RunPlan,
) -> Result<(), orchestrator_core::PluginError> {
    store
        .put_bytes(
            &orchestrator_core::store::layout::run_plan(&plan.run_id),
            plan.to_json().as_bytes(),
        )
        .map(|_| ())
}

/// The plan run `run_id` was started with, if it was kept.
pub fn kept(
    store: &orchestrator_core::store::Store,
    run_id: &str,
) -> Result<Option<RunPlan>, orchestrator_core::PluginError> {
    let key = orchestrator_core::store::layout::run_plan(run_id);
    match store.get_bytes(&key) {
        Ok(bytes) => RunPlan::from_json(&String::from_utf8_lossy(&bytes)).map(Some),
        Err(e) if e.kind == orchestrator_core::ErrorKind::NOT_FOUND => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_to_the_project_and_the_digest_is_the_tree_digest() {
        let project = tempfile::tempdir().unwrap();
        let root = project.path();
        std::fs::create_dir(root.join("flows")).unwrap();
        let yaml = "name: p\nsteps:\n  a:\n    run: \"true\"\n";
        std::fs::write(root.join("flows/pipeline.yaml"), yaml).unwrap();
        let pipeline_file = root.join("flows/pipeline.yaml");
        let pipeline = Pipeline::from_file(&pipeline_file).unwrap();
        let plan = PlanRequest {
            project_root: root,
            include: &[],
            pipeline_file: &pipeline_file,
            pipeline,
            params: BTreeMap::from([("k".to_string(), "v".to_string())]),
            stack: "local",
            no_cache: true,
            package: None,
        }
        .build()
        .unwrap();
        assert_eq!(plan.pipeline_file, Path::new("flows/pipeline.yaml"));
        assert_eq!(plan.working_dir, Path::new("flows"));
        assert_eq!(plan.project_root, root);
        assert_eq!(plan.stack, "local");
        assert!(plan.no_cache);
        assert_eq!(plan.params["k"], "v");
        assert_eq!(
            plan.code.digest.as_deref(),
            Some(package::files::tree_digest(root, &[]).unwrap().as_str())
        );
        assert_eq!(plan.code.package_key, None);
    }

    #[test]
    fn a_shipped_plan_carries_the_package_digest_and_key() {
        let project = tempfile::tempdir().unwrap();
        let root = project.path();
        let yaml = "name: p\nsteps:\n  a:\n    run: \"true\"\n";
        std::fs::write(root.join("pipeline.yaml"), yaml).unwrap();
        let pipeline_file = root.join("pipeline.yaml");
        let out = tempfile::tempdir().unwrap();
        let package = package::build(
            root,
            &crate::config::PackageConfig::default(),
            &out.path().join("p.tar.zst"),
        )
        .unwrap();
        let plan = PlanRequest {
            project_root: root,
            include: &[],
            pipeline_file: &pipeline_file,
            pipeline: Pipeline::from_file(&pipeline_file).unwrap(),
            params: BTreeMap::new(),
            stack: "k8s",
            no_cache: false,
            package: Some(&package),
        }
        .build()
        .unwrap();
        assert_eq!(
            plan.code.digest.as_deref(),
            Some(package.archive.digest.as_str())
        );
        assert_eq!(plan.code.package_key, Some(package.key()));
        assert_eq!(plan.working_dir, Path::new(""));
    }
}
