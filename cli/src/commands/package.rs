//! `ferry package`: build the code package, list it, write it, upload it.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use console::Style;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use orchestrator_core::store::Store;
use orchestrator_host::package::{self, Package, Upload, files::FileKind};

use crate::args::PackageArgs;
use crate::commands::run::load_pipeline;
use crate::context::Context;
use crate::output;

pub fn run(ctx: &Context, args: PackageArgs) -> Result<ExitCode> {
    let package = build(ctx)?;
    if args.list {
        for file in &package.selection.files {
            let size = match &file.kind {
                FileKind::File { size, .. } => output::bytes(*size),
                FileKind::Symlink { target } => format!("-> {}", target.display()),
            };
            if !output::line(format!("{:>10}  {}", size, file.relative)) {
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    report_missing(ctx, args.pipeline.as_deref(), &package)?;
    if let Some(out) = &args.out {
        let out = ctx.cwd.join(out);
        // A hard link costs nothing; copy when the destination is on another file system.
        let _ = std::fs::remove_file(&out);
        if std::fs::hard_link(&package.archive.path, &out).is_err() {
            std::fs::copy(&package.archive.path, &out)
                .with_context(|| format!("cannot write the package to {}", out.display()))?;
        }
        eprintln!("wrote {}", out.display());
    }
    if args.upload {
        let stack = ctx.open_stack(args.stack.as_deref())?;
        upload(&stack.store, &package)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Build (or reuse, when nothing changed) the package of the project at the config's root,
/// printing its summary and warnings.
pub fn build(ctx: &Context) -> Result<Package> {
    let root = &ctx.config.project_root;
    let cache = root.join(package::files::FERRY_DIR).join("packages");
    let package = package::build_cached(root, &ctx.config.package, &cache)
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

fn report_missing(ctx: &Context, pipeline: Option<&Path>, package: &Package) -> Result<()> {
    let path = ctx.pipeline_path(pipeline);
    if pipeline.is_none() && !path.exists() {
        return Ok(());
    }
    let pipeline = load_pipeline(&path)?;
    let root = &ctx.config.project_root;
    let working_dir = path
        .parent()
        .and_then(|p| p.strip_prefix(root).ok())
        .unwrap_or(Path::new(""));
    for (step, file) in
        package::missing_references(&pipeline, root, working_dir, &package.selection)
    {
        eprintln!(
            "{} step `{step}` uses {file}, which is ignored and not in the package; add it to `include` under [package] in ferry.toml",
            Style::new().yellow().for_stderr().apply_to("warning:")
        );
    }
    Ok(())
}

/// Upload with a progress bar (bytes, rate) unless the store already has the package.
pub fn upload(store: &Store, package: &Package) -> Result<Upload> {
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
