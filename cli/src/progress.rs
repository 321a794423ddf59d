//! What `ferry run` shows while a run goes on: step logs prefixed by step, status lines, and
//! (on a terminal) a progress line with the steps running now.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use console::Style;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use orchestrator_core::run::{Event, LogStream, RunPlan, RunRecord, RunStatus, StepStatus};

use crate::output;

const PALETTE: [console::Color; 6] = [
    console::Color::Cyan,
    console::Color::Magenta,
    console::Color::Blue,
    console::Color::Yellow,
    console::Color::Green,
    console::Color::Red,
];

pub struct RunDisplay {
    run_id: String,
    width: usize,
    styles: HashMap<String, Style>,
    started: HashMap<String, DateTime<Utc>>,
    running: BTreeSet<String>,
    bar: ProgressBar,
}

impl RunDisplay {
    pub fn new(plan: &RunPlan) -> Self {
        let steps = &plan.pipeline.steps;
        let styles = steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), Style::new().fg(PALETTE[i % PALETTE.len()])))
            .collect();
        let width = steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
        // The bar only draws on a terminal; piped output gets the plain lines alone.
        let bar =
            ProgressBar::with_draw_target(Some(steps.len() as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner:.cyan} {pos}/{len} steps {elapsed:.dim} {msg}")
                .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            run_id: plan.run_id.clone(),
            width,
            styles,
            started: HashMap::new(),
            running: BTreeSet::new(),
            bar,
        }
    }

    fn prefix(&self, step: &str) -> String {
        let style = self.styles.get(step).cloned().unwrap_or_default();
        style
            .apply_to(format!("{step:<width$} │", width = self.width))
            .to_string()
    }

    fn print(&self, line: String) {
        self.bar.suspend(|| output::line(&line));
    }

    pub fn show(&mut self, event: Event) {
        match event {
            Event::Log {
                step, stream, line, ..
            } => {
                let line = match stream {
                    LogStream::Stdout => line,
                    LogStream::Stderr => Style::new().red().apply_to(line).to_string(),
                };
                self.print(format!("{} {line}", self.prefix(&step)));
            }
            Event::StepStatus { step, status, time } => self.step_status(step, status, time),
            // The cache notice says whose outputs are reused; the status line would repeat it.
            Event::Notice {
                step: Some(step),
                text,
                ..
            } if text.starts_with("cached:") => {
                self.bar.inc(1);
                let text = text.trim_start_matches("cached:").trim();
                self.print(format!(
                    "{} {} cached: {}",
                    self.prefix(&step),
                    output::step_symbol(StepStatus::Cached),
                    Style::new().dim().apply_to(text)
                ));
            }
            Event::Notice { step, text, .. } => {
                let prefix = step.as_deref().map(|s| self.prefix(s)).unwrap_or_default();
                self.print(format!(
                    "{prefix} {}",
                    Style::new().dim().italic().apply_to(text)
                ));
            }
            Event::RunStatus { .. } => {}
        }
    }

    fn step_status(&mut self, step: String, status: StepStatus, time: DateTime<Utc>) {
        let symbol = output::step_symbol(status);
        match status {
            StepStatus::Running => {
                self.started.insert(step.clone(), time);
                self.running.insert(step.clone());
                self.print(format!("{} {symbol} started", self.prefix(&step)));
            }
            StepStatus::Pending | StepStatus::Cached => {}
            _ => {
                self.running.remove(&step);
                self.bar.inc(1);
                let took = self
                    .started
                    .get(&step)
                    .map(|start| format!(" in {}", output::duration(time - *start)))
                    .unwrap_or_default();
                self.print(format!(
                    "{} {symbol} {}{took}",
                    self.prefix(&step),
                    output::step_status(status)
                ));
            }
        }
        let running: Vec<&str> = self.running.iter().map(String::as_str).collect();
        self.bar.set_message(if running.is_empty() {
            String::new()
        } else {
            format!("running: {}", running.join(", "))
        });
    }

    pub fn finish(&self, record: &RunRecord) {
        self.bar.finish_and_clear();
        let mut counts: Vec<(StepStatus, usize)> = Vec::new();
        for (_, step) in record.ordered_steps() {
            match counts.iter_mut().find(|(s, _)| *s == step.status) {
                Some((_, n)) => *n += 1,
                None => counts.push((step.status, 1)),
            }
        }
        let summary: Vec<String> = counts
            .iter()
            .map(|(status, n)| format!("{n} {status}"))
            .collect();
        let took = record
            .duration()
            .map(|d| format!(" in {}", output::duration(d)))
            .unwrap_or_default();
        let symbol = match record.status {
            RunStatus::Succeeded => Style::new().green().apply_to("✓"),
            RunStatus::Cancelled => Style::new().yellow().apply_to("■"),
            _ => Style::new().red().apply_to("✗"),
        };
        output::line(format!(
            "{symbol} run {} {}{took} ({})",
            self.run_id,
            output::run_status(record.status),
            summary.join(", ")
        ));
        let dim = Style::new().dim();
        match record.status {
            RunStatus::Succeeded => {
                output::line(format!(
                    "  {}",
                    dim.apply_to(format!("outputs: ferry artifacts list {}", self.run_id))
                ));
            }
            _ => {
                // Why, where the user looks: each failed step with its reason (exit code,
                // OOM kill, timeout, or what ferry refused), not only "step a failed".
                let failed_steps: Vec<(&str, &orchestrator_core::run::StepRecord)> = record
                    .ordered_steps()
                    .into_iter()
                    .filter(|(_, s)| s.status == StepStatus::Failed)
                    .collect();
                let generic = failed_steps.iter().any(|(name, _)| {
                    record.error.as_deref() == Some(&format!("step {name} failed"))
                });
                if let Some(error) = record.error.as_ref().filter(|_| !generic) {
                    output::line(format!("  {error}"));
                }
                for (name, step) in &failed_steps {
                    let reason = match (&step.error, step.exit_code) {
                        (Some(error), _) => error.clone(),
                        (None, Some(code)) => format!("exited with code {code}"),
                        (None, None) => "no reason recorded".to_string(),
                    };
                    output::line(format!("  step {name} failed: {reason}"));
                }
                let failed = record
                    .ordered_steps()
                    .into_iter()
                    .find(|(_, s)| s.status == StepStatus::Failed)
                    .map(|(name, _)| format!(" {name}"))
                    .unwrap_or_default();
                output::line(format!(
                    "  {}",
                    dim.apply_to(format!("logs: ferry logs {}{failed}", self.run_id))
                ));
            }
        }
    }
}
