//! `ferry package`: build the code package, list it, write it, upload it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use console::Style;
use orchestrator_host::package::{self, Package, files::FileKind};

use crate::args::{OutputFormat, PackageArgs};
use crate::context::Context;
use crate::output;
use crate::resolve::PipelineFile;

pub fn run(ctx: &Context, args: PackageArgs) -> Result<ExitCode> {
    let package = ctx.build_package()?;
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
    let mut uploaded_to = None;
    if args.upload {
        let stack = ctx.open_stack(args.stack.as_deref())?;
        ctx.upload_package(&stack.store, &package)?;
        uploaded_to = Some(stack.store.url());
    }
    if args.output.output == OutputFormat::Json {
        output::json(&serde_json::json!({
            "digest": package.archive.digest,
            "key": package.key(),
            "bytes": package.archive.compressed_size,
            "files": package.selection.files.len(),
            "source_bytes": package.selection.total_size(),
            "written_to": args.out.as_ref().map(|o| ctx.cwd.join(o)),
            "uploaded_to": uploaded_to,
            "warnings": package.warnings,
        }))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn report_missing(ctx: &Context, pipeline: Option<&Path>, package: &Package) -> Result<()> {
    // Without --pipeline, a project with no default pipeline file has nothing to check.
    if pipeline.is_none() && !PipelineFile::path(ctx, None).exists() {
        return Ok(());
    }
    let PipelineFile { path, pipeline } = PipelineFile::resolve(ctx, pipeline)?;
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
