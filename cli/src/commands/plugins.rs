//! `ferry plugins list|inspect`

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use console::Style;
use orchestrator_core::loader::{self, LIBRARY_EXTENSION, PluginDescription};
use orchestrator_core::stack::builtin_plugins;

use crate::args::{OutputFormat, PluginsCommand};
use crate::context::Context;
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
            println!("{} {}", bold.apply_to("name"), description.name);
            println!("{} {}", bold.apply_to("kind"), description.kind);
            println!("{} {}", bold.apply_to("version"), description.version);
            println!(
                "{} {}",
                bold.apply_to("interface"),
                description.interface_version
            );
            println!("{} {}", bold.apply_to("path"), path);
            println!(
                "{} {}",
                bold.apply_to("description"),
                description.description
            );
            if description.config_keys.is_empty() {
                println!("{} none", bold.apply_to("settings"));
            } else {
                println!("{}", bold.apply_to("settings"));
                for (key, doc) in &description.config_keys {
                    println!("  {key:<16} {doc}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
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
