//! `ferry stack list|show`

use std::process::ExitCode;

use anyhow::Result;
use console::Style;
use orchestrator_host::config::ComponentConfig;

use crate::args::{OutputFormat, StackCommand};
use crate::context::Context;
use crate::output;
use crate::output::outln;

pub fn run(ctx: &Context, command: StackCommand) -> Result<ExitCode> {
    match command {
        StackCommand::List(args) => {
            let stacks = &ctx.config.stacks;
            if args.output == OutputFormat::Json {
                let redacted: serde_json::Map<String, serde_json::Value> = stacks
                    .iter()
                    .map(|(name, stack)| {
                        (
                            name.clone(),
                            serde_json::json!({
                                "default": *name == ctx.config.default_stack,
                                "orchestrator": component_json(&stack.orchestrator),
                                "store": component_json(&stack.store),
                            }),
                        )
                    })
                    .collect();
                output::json(&redacted)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = stacks
                .iter()
                .map(|(name, stack)| {
                    let marker = if *name == ctx.config.default_stack {
                        "*"
                    } else {
                        ""
                    };
                    vec![
                        format!("{name}{marker}"),
                        stack.orchestrator.plugin.clone(),
                        stack.store.plugin.clone(),
                    ]
                })
                .collect();
            output::table(&["STACK", "ORCHESTRATOR", "STORE"], &rows);
            outln!("{}", Style::new().dim().apply_to("* the default stack"));
            Ok(ExitCode::SUCCESS)
        }
        StackCommand::Check(args) => check(
            ctx,
            args.name.as_deref(),
            args.output.output == OutputFormat::Json,
        ),
        StackCommand::Show(args) => {
            let (name, config) = ctx.config.stack(args.name.as_deref())?;
            let stack = ctx.open_stack(Some(name))?;
            if args.output.output == OutputFormat::Json {
                output::json(&serde_json::json!({
                    "name": name,
                    "orchestrator": {
                        "plugin": config.orchestrator.plugin,
                        "origin": stack.orchestrator_origin.to_string(),
                        "description": stack.orchestrator.describe(),
                        "settings": redact(&config.orchestrator.settings),
                    },
                    "store": {
                        "plugin": config.store.plugin,
                        "origin": stack.store_origin.to_string(),
                        "url": stack.store.url(),
                        "settings": redact(&config.store.settings),
                    },
                }))?;
                return Ok(ExitCode::SUCCESS);
            }
            let bold = Style::new().bold();
            outln!("{} {name}", bold.apply_to("stack"));
            outln!(
                "{} {} ({}) — {}",
                bold.apply_to("orchestrator"),
                config.orchestrator.plugin,
                stack.orchestrator_origin,
                stack.orchestrator.describe()
            );
            print_settings(&config.orchestrator);
            outln!(
                "{} {} ({}) — {}",
                bold.apply_to("store"),
                config.store.plugin,
                stack.store_origin,
                stack.store.url()
            );
            print_settings(&config.store);
            if let Some(file) = &ctx.config.project_file {
                outln!("{} {}", bold.apply_to("config"), file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(ctx: &Context, name: Option<&str>, json: bool) -> Result<ExitCode> {
    let (name, _) = ctx.config.stack(name)?;
    let stack = ctx.open_stack(Some(name))?;
    if json {
        // `{"stack", "store", "ok", "operations": [{"operation", "ms"}], "error", "hint"}`.
        let (ok, operations, error, hint) =
            match orchestrator_host::stack::check::probe(&stack.store) {
                Ok(timings) => (
                    true,
                    timings
                        .iter()
                        .map(|t| serde_json::json!({ "operation": t.operation, "ms": t.took.as_secs_f64() * 1000.0 }))
                        .collect(),
                    None,
                    None,
                ),
                Err(failure) => (false, Vec::new(), Some(failure.to_string()), Some(failure.hint.clone())),
            };
        output::json(&serde_json::json!({
            "stack": name, "store": stack.store.url(), "ok": ok,
            "operations": operations, "error": error, "hint": hint,
        }))?;
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    outln!(
        "checking stack `{name}`: store {} ({})",
        stack.store.url(),
        stack.store_origin
    );
    match orchestrator_host::stack::check::probe(&stack.store) {
        Ok(timings) => {
            for timing in timings {
                outln!(
                    "  {} {:<10} {:>8.1} ms",
                    Style::new().green().apply_to("✓"),
                    timing.operation,
                    timing.took.as_secs_f64() * 1000.0
                );
            }
            outln!(
                "{} the store works; orchestrator: {}",
                Style::new().green().apply_to("✓"),
                stack.orchestrator.describe()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => Err(crate::output::hint(
            format!("the store of stack `{name}` failed the check: {failure}"),
            failure.hint,
        )),
    }
}

fn component_json(component: &ComponentConfig) -> serde_json::Value {
    serde_json::json!({ "plugin": component.plugin, "settings": redact(&component.settings) })
}

fn print_settings(component: &ComponentConfig) {
    for (key, value) in redact(&component.settings) {
        outln!("    {key} = {value}");
    }
}

/// Settings with secret-looking values replaced by `***`: output must never show credentials.
pub fn redact(
    settings: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    settings
        .iter()
        .map(|(key, value)| {
            let value = if orchestrator_core::store::settings::is_secret_key(key) {
                serde_json::Value::String("***".into())
            } else {
                value.clone()
            };
            (key.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hidden() {
        let settings = serde_json::json!({
            "secret_access_key": "s3cr3t", "access_key_id": "AKIA", "token": "t", "bucket": "b"
        });
        let redacted = redact(settings.as_object().unwrap());
        assert_eq!(redacted["secret_access_key"], "***");
        assert_eq!(redacted["token"], "***");
        assert_eq!(redacted["bucket"], "b");
        assert_eq!(redacted["access_key_id"], "AKIA");
    }
}
