//! Printing: errors with hints, tables, statuses, durations, JSON.

use std::fmt;

use console::Style;
use orchestrator_core::run::{RunStatus, StepStatus};
use orchestrator_host::errors;

/// An error with one line of what to do about it.
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

pub fn hint(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        message: message.into(),
        hint: hint.into(),
    })
}

/// `error: what failed: why` on one line, then `hint: what to do` when there is one.
pub fn print_error(error: &anyhow::Error, verbose: u8) {
    let red = Style::new().red().bold().for_stderr();
    let root: &(dyn std::error::Error + 'static) = error.as_ref();
    eprintln!("{} {}", red.apply_to("error:"), errors::chain(root));
    let hint = error
        .chain()
        .find_map(|e| e.downcast_ref::<Hinted>())
        .map(|hinted| hinted.hint.clone())
        .or_else(|| errors::hint(root));
    if let Some(hint) = hint {
        eprintln!(
            "{} {hint}",
            Style::new().cyan().for_stderr().apply_to("hint:")
        );
    }
    if verbose > 1 {
        eprintln!("{error:?}");
    }
}

/// Print a line to stdout. Returns false when stdout is gone (`ferry logs | head`): callers
/// stop producing output, and nothing panics (a panic inside a plugin callback would abort).
/// Every write to stdout goes through here or [`text`]; `outln!` is the `println!` of ferry.
pub fn line(text: impl fmt::Display) -> bool {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{text}").is_ok()
}

/// Print to stdout without a newline; false when stdout is gone, as for [`line`].
pub fn text(text: impl fmt::Display) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    write!(out, "{text}").and_then(|()| out.flush()).is_ok()
}

/// `println!` through [`line`]: a closed stdout ends output quietly instead of panicking.
macro_rules! outln {
    () => {
        $crate::output::line("")
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

pub fn run_status(status: RunStatus) -> String {
    let style = match status {
        RunStatus::Succeeded => Style::new().green(),
        RunStatus::Failed => Style::new().red(),
        RunStatus::Cancelled => Style::new().yellow(),
        RunStatus::Running | RunStatus::Pending => Style::new().cyan(),
    };
    style.apply_to(status.as_str()).to_string()
}

pub fn step_status(status: StepStatus) -> String {
    let style = match status {
        StepStatus::Succeeded => Style::new().green(),
        StepStatus::Cached => Style::new().green().dim(),
        StepStatus::Failed => Style::new().red(),
        StepStatus::Cancelled | StepStatus::Skipped => Style::new().yellow(),
        StepStatus::Running | StepStatus::Pending => Style::new().cyan(),
    };
    style.apply_to(status.as_str()).to_string()
}

pub fn step_symbol(status: StepStatus) -> String {
    let (symbol, style) = match status {
        StepStatus::Succeeded => ("✓", Style::new().green()),
        StepStatus::Cached => ("↺", Style::new().green()),
        StepStatus::Failed => ("✗", Style::new().red()),
        StepStatus::Cancelled => ("■", Style::new().yellow()),
        StepStatus::Skipped => ("-", Style::new().yellow()),
        StepStatus::Running => ("▶", Style::new().cyan()),
        StepStatus::Pending => ("·", Style::new().dim()),
    };
    style.apply_to(symbol).to_string()
}

pub fn duration(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

pub fn bytes(n: u64) -> String {
    orchestrator_host::package::human_size(n)
}

/// A plain table: a header row and left-aligned columns sized to their widest cell (ANSI
/// colour codes do not count towards width).
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(console::measure_text_width(cell));
        }
    }
    let bold = Style::new().bold();
    let line: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, h)| pad(&bold.apply_to(h).to_string(), h.len(), widths[i]))
        .collect();
    self::line(line.join("  ").trim_end());
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| pad(c, console::measure_text_width(c), widths[i]))
            .collect();
        if !self::line(line.join("  ").trim_end()) {
            return;
        }
    }
}

fn pad(text: &str, width: usize, target: usize) -> String {
    format!("{text}{}", " ".repeat(target.saturating_sub(width)))
}

/// For each step of a run, why it was a cache hit or a miss (`--explain-cache`, `--cache`).
pub fn cache_notes(record: &orchestrator_core::run::RunRecord) {
    let rows: Vec<Vec<String>> = record
        .ordered_steps()
        .into_iter()
        .map(|(name, step)| {
            vec![
                name.to_string(),
                step.cache_note
                    .clone()
                    .unwrap_or_else(|| format!("{}: never looked up", step.status)),
            ]
        })
        .collect();
    table(&["STEP", "CACHE"], &rows);
}

/// One value as a single JSON line (NDJSON); false when stdout is closed.
pub fn json_line<T: serde::Serialize>(value: &T) -> bool {
    line(serde_json::to_string(value).expect("values serialise"))
}

pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    line(serde_json::to_string_pretty(value)?);
    Ok(())
}
