//! `ferry ui`: serves the dashboard (crate `ui`) over the stack's store until interrupted.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context as _, Result};

use crate::args::UiArgs;
use crate::context::Context;
use crate::output::outln;

pub fn run(ctx: &Context, args: UiArgs) -> Result<ExitCode> {
    let stack = ctx.open_stack(args.stack.stack.as_deref())?;
    // Off this machine, nobody may read the runs (or cancel one) without the token.
    let token = if args.host.is_loopback() {
        args.token
    } else {
        Some(args.token.unwrap_or_else(ui::random_token))
    };
    let query = token
        .as_ref()
        .map(|t| format!("/?token={t}"))
        .unwrap_or_else(|| "/".into());
    let state = ui::AppState::new(stack, ui::Access::new(token));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the dashboard's runtime")?;
    let open = args.open;
    runtime
        .block_on(ui::serve(
            state,
            SocketAddr::new(args.host, args.port),
            move |address| {
                let url = format!("http://{address}{query}");
                outln!("ferry ui: {url} (Ctrl-C stops it)");
                if open {
                    let _ = std::process::Command::new("xdg-open").arg(&url).spawn();
                }
            },
        ))
        .with_context(|| format!("cannot serve the dashboard on {}:{}", args.host, args.port))?;
    Ok(ExitCode::SUCCESS)
}
