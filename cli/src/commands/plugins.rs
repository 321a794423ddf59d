//! `ferry plugins list|inspect|install`

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use console::Style;
use orchestrator_host::loader::{self, LIBRARY_EXTENSION, PluginDescription};
use orchestrator_host::stack::builtin_plugins;

use crate::args::{OutputFormat, PluginInstallArgs, PluginsCommand};
use crate::context::Context;
use crate::output::outln;
use crate::output::{self, hint};

#[derive(serde::Serialize)]
struct Entry {
    name: String,
    kind: String,
    version: String,
    interface_version: String,
    path: String,
    status: String,
}

fn entry(description: &PluginDescription, path: String, status: String) -> Entry {
    Entry {
        name: description.name.clone(),
        kind: description.kind.to_string(),
        version: description.version.clone(),
        interface_version: description.interface_version.clone(),
        path,
        status,
    }
}

pub fn run(ctx: &Context, command: PluginsCommand) -> Result<ExitCode> {
    match command {
        PluginsCommand::List(args) => {
            let builtins = builtin_plugins();
            let discovery = loader::discover(&ctx.search);
            let mut entries: Vec<Entry> = builtins
                .iter()
                .map(|d| entry(d, "built-in".into(), "ok".into()))
                .collect();
            for (plugin, source) in &discovery.plugins {
                let d = &plugin.description;
                let shadowed_by_builtin = builtins
                    .iter()
                    .any(|b| b.name == d.name && b.kind == d.kind);
                let status = if shadowed_by_builtin {
                    "shadowed by the built-in".to_string()
                } else {
                    format!("ok ({source})")
                };
                entries.push(entry(d, plugin.path.display().to_string(), status));
            }
            for (plugin, _) in &discovery.shadowed {
                let winner = discovery
                    .plugins
                    .iter()
                    .find(|(p, _)| p.description.name == plugin.description.name)
                    .map(|(p, _)| p.path.display().to_string())
                    .unwrap_or_default();
                entries.push(entry(
                    &plugin.description,
                    plugin.path.display().to_string(),
                    format!("shadowed by {winner}"),
                ));
            }
            for (error, _) in &discovery.failed {
                entries.push(Entry {
                    name: "?".into(),
                    kind: "?".into(),
                    version: "?".into(),
                    interface_version: "?".into(),
                    path: error.path().display().to_string(),
                    status: format!("error: {error}"),
                });
                if ctx.verbose > 0
                    && let Some(details) = error.details()
                {
                    eprintln!("{details}");
                }
            }
            if args.output == OutputFormat::Json {
                output::json(&entries)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| {
                    let status = if e.status.starts_with("error") {
                        Style::new().red().apply_to(&e.status).to_string()
                    } else {
                        e.status.clone()
                    };
                    vec![
                        e.name.clone(),
                        e.kind.clone(),
                        e.version.clone(),
                        e.interface_version.clone(),
                        e.path.clone(),
                        status,
                    ]
                })
                .collect();
            output::table(
                &["NAME", "KIND", "VERSION", "INTERFACE", "PATH", "STATUS"],
                &rows,
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Install(args) => install(ctx, &args),
        PluginsCommand::Inspect(args) => {
            let (description, path) = find_any(ctx, &args.plugin)?;
            if args.output.output == OutputFormat::Json {
                output::json(&serde_json::json!({
                    "name": description.name,
                    "kind": description.kind.to_string(),
                    "version": description.version,
                    "interface_version": description.interface_version,
                    "description": description.description,
                    "path": path,
                    "settings": description.config_keys.iter()
                        .map(|(k, d)| serde_json::json!({"key": k, "doc": d}))
                        .collect::<Vec<_>>(),
                }))?;
                return Ok(ExitCode::SUCCESS);
            }
            let bold = Style::new().bold();
            outln!("{} {}", bold.apply_to("name"), description.name);
            outln!("{} {}", bold.apply_to("kind"), description.kind);
            outln!("{} {}", bold.apply_to("version"), description.version);
            outln!(
                "{} {}",
                bold.apply_to("interface"),
                description.interface_version
            );
            outln!("{} {}", bold.apply_to("path"), path);
            outln!(
                "{} {}",
                bold.apply_to("description"),
                description.description
            );
            if description.config_keys.is_empty() {
                outln!("{} none", bold.apply_to("settings"));
            } else {
                outln!("{}", bold.apply_to("settings"));
                for (key, doc) in &description.config_keys {
                    outln!("  {key:<16} {doc}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `ferry plugins install PATH`: the file must load as a plugin of this ferry's interface; it is
/// copied (atomically) into the user plugin directory, where it is found from then on.
fn install(ctx: &Context, args: &PluginInstallArgs) -> Result<ExitCode> {
    let source = ctx.cwd.join(&args.path);
    let plugin = loader::load(&source)?;
    let name = plugin.description.name.clone();
    let dir = loader::user_plugin_dir().ok_or_else(|| {
        hint(
            "cannot tell where the user plugin directory is (no home or XDG data directory)",
            "set HOME or XDG_DATA_HOME, or put the file in a directory on FERRY_PLUGIN_PATH",
        )
    })?;
    let file_name = source
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{} names no file", source.display()))?;
    let dest = dir.join(file_name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;

    // Two files claiming one name in one directory: which one wins would depend on file
    // names. Refuse, naming both, unless asked to replace.
    let in_dir = loader::discover(&loader::SearchPath {
        dirs: vec![(dir.clone(), loader::SearchSource::UserData)],
    });
    let others: Vec<std::path::PathBuf> = in_dir
        .plugins
        .into_iter()
        .chain(in_dir.shadowed)
        .filter(|(p, _)| p.description.name == name && p.path.file_name() != Some(file_name))
        .map(|(p, _)| p.path)
        .collect();
    if let Some(other) = others.first() {
        if !args.force {
            return Err(hint(
                format!(
                    "{} already holds plugin `{name}` in {}; installing {} too would make two files claim one name",
                    dir.display(),
                    other.display(),
                    source.display()
                ),
                "remove it, or pass --force to replace it",
            ));
        }
        for other in &others {
            std::fs::remove_file(other)
                .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", other.display()))?;
        }
    }
    if source.canonicalize().ok() != dest.canonicalize().ok() {
        let temp = dir.join(format!(
            ".{}.installing-{}",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        std::fs::copy(&source, &temp)
            .and_then(|_| std::fs::rename(&temp, &dest))
            .map_err(|e| {
                let _ = std::fs::remove_file(&temp);
                anyhow::anyhow!(
                    "cannot copy {} to {}: {e}",
                    source.display(),
                    dest.display()
                )
            })?;
    }
    let d = &plugin.description;
    outln!(
        "installed {} {} ({} plugin, interface {}) to {}",
        d.name,
        d.version,
        d.kind,
        d.interface_version,
        dest.display()
    );
    // The user directory comes last on the search path: say when something else wins.
    if builtin_plugins()
        .iter()
        .any(|b| b.name == d.name && b.kind == d.kind)
    {
        eprintln!(
            "warning: ferry's built-in `{}` takes precedence over it; give the plugin another name to use it",
            d.name
        );
    } else if let Ok(winner) = loader::find(&ctx.search, &d.name, d.kind)
        && winner.path.canonicalize().ok() != dest.canonicalize().ok()
    {
        // Resolved exactly as a stack naming the plugin would resolve it.
        eprintln!(
            "warning: {} comes earlier on the search path and is the `{}` ferry uses; remove it, or see `ferry plugins list`",
            winner.path.display(),
            d.name
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A plugin by path, built-in name or name on the search path.
fn find_any(ctx: &Context, name: &str) -> Result<(PluginDescription, String)> {
    if name.contains('/') || name.ends_with(LIBRARY_EXTENSION) {
        let path = ctx.cwd.join(name);
        let plugin = loader::load(Path::new(&path))?;
        return Ok((plugin.description, plugin.path.display().to_string()));
    }
    if let Some(builtin) = builtin_plugins().into_iter().find(|d| d.name == name) {
        return Ok((builtin, "built-in".into()));
    }
    let discovery = loader::discover(&ctx.search);
    if let Some((plugin, _)) = discovery
        .plugins
        .iter()
        .find(|(p, _)| p.description.name == name)
    {
        return Ok((
            plugin.description.clone(),
            plugin.path.display().to_string(),
        ));
    }
    let mut known: Vec<String> = builtin_plugins().into_iter().map(|d| d.name).collect();
    known.extend(
        discovery
            .plugins
            .iter()
            .map(|(p, _)| p.description.name.clone()),
    );
    let suggestion =
        orchestrator_core::suggest::did_you_mean(name, known.iter().map(String::as_str))
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
    Err(hint(
        format!("no plugin named `{name}`"),
        format!("{suggestion}`ferry plugins list` shows the plugins ferry can find"),
    ))
}
