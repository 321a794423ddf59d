//! The run's DAG as SVG: a layered layout (each step one column right of its furthest
//! dependency, steps in a column ordered by the mean row of their dependencies), drawn with
//! a link and a status class per step so that the page can recolour it live.
//!
//! Written here rather than taken from a layout crate: pipelines are DAGs of tens of steps,
//! the layout is a few dozen lines, and the page needs per-step links and classes that the
//! Rust graph-layout crates (layout-rs) do not emit.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use maud::{Markup, PreEscaped, html};
use orchestrator_core::pipeline::Pipeline;
use orchestrator_core::run::RunRecord;

const BOX_W: f64 = 150.0;
const BOX_H: f64 = 36.0;
const GAP_X: f64 = 70.0;
const GAP_Y: f64 = 22.0;
const MARGIN: f64 = 10.0;

/// Where each step goes: (column, row).
pub fn layout(pipeline: &Pipeline) -> BTreeMap<String, (usize, usize)> {
    let order = pipeline.topological_order();
    let mut column: BTreeMap<&str, usize> = BTreeMap::new();
    for step in &order {
        let c = pipeline
            .dependencies(step)
            .filter_map(|d| column.get(d))
            .map(|c| c + 1)
            .max()
            .unwrap_or(0);
        column.insert(&step.name, c);
    }
    let columns = column.values().copied().max().map_or(0, |m| m + 1);
    let mut rows: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for c in 0..columns {
        // Barycentre of the dependencies' rows, then file order: edges cross less.
        let mut here: Vec<(f64, usize, &str)> = order
            .iter()
            .enumerate()
            .filter(|(_, s)| column[s.name.as_str()] == c)
            .map(|(i, s)| {
                let parents: Vec<f64> = pipeline
                    .dependencies(s)
                    .filter_map(|d| rows.get(d).map(|(_, r)| *r as f64))
                    .collect();
                let centre = if parents.is_empty() {
                    i as f64
                } else {
                    parents.iter().sum::<f64>() / parents.len() as f64
                };
                (centre, i, s.name.as_str())
            })
            .collect();
        here.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (row, (_, _, name)) in here.into_iter().enumerate() {
            rows.insert(name.to_string(), (c, row));
        }
    }
    rows
}

fn position((column, row): (usize, usize)) -> (f64, f64) {
    (
        MARGIN + column as f64 * (BOX_W + GAP_X),
        MARGIN + row as f64 * (BOX_H + GAP_Y),
    )
}

/// The DAG of `record`'s pipeline; each step links to `step_url(name)`.
pub fn svg(pipeline: &Pipeline, record: &RunRecord, step_url: impl Fn(&str) -> String) -> Markup {
    let places = layout(pipeline);
    let width = places.values().map(|p| p.0).max().map_or(0, |m| m + 1) as f64 * (BOX_W + GAP_X);
    let height = places.values().map(|p| p.1).max().map_or(0, |m| m + 1) as f64 * (BOX_H + GAP_Y);
    let mut edges = String::new();
    for step in &pipeline.steps {
        let Some(&to) = places.get(&step.name) else {
            continue;
        };
        let (x2, y2) = position(to);
        for dep in pipeline.dependencies(step) {
            let Some(&from) = places.get(dep) else {
                continue;
            };
            let (x1, y1) = position(from);
            let (sx, sy, ex, ey) = (x1 + BOX_W, y1 + BOX_H / 2.0, x2, y2 + BOX_H / 2.0);
            let mid = (sx + ex) / 2.0;
            let _ = write!(
                edges,
                r#"<path class="edge" d="M{sx:.1},{sy:.1} C{mid:.1},{sy:.1} {mid:.1},{ey:.1} {ex:.1},{ey:.1}"/>"#
            );
        }
    }
    html! {
        svg class="dag" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="the run's steps and their dependencies"
            width=(format!("{:.0}", width.max(BOX_W) + MARGIN)) height=(format!("{:.0}", height.max(BOX_H) + MARGIN)) {
            defs { marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto" { path d="M0,0 L10,5 L0,10 z" {} } }
            g class="edges" { (PreEscaped(edges)) }
            @for step in &pipeline.steps {
                @if let Some(&place) = places.get(&step.name) {
                    @let (x, y) = position(place);
                    @let status = record.steps.get(&step.name).map(|s| s.status.as_str()).unwrap_or("pending");
                    a href=(step_url(&step.name)) {
                        g class=(format!("node status-{status}")) data-step=(step.name) {
                            rect x=(format!("{x:.1}")) y=(format!("{y:.1}")) width=(BOX_W) height=(BOX_H) rx="6" {}
                            text x=(format!("{:.1}", x + 10.0)) y=(format!("{:.1}", y + 15.0)) class="name" { (truncate(&step.name, 20)) }
                            text x=(format!("{:.1}", x + 10.0)) y=(format!("{:.1}", y + 29.0)) class="status" { (status) }
                        }
                    }
                }
            }
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut short: String = text.chars().take(max - 1).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_go_right_of_their_dependencies_and_siblings_stack() {
        let pipeline = Pipeline::from_yaml_str(
            "name: p\nsteps:\n  a: {run: x}\n  b: {run: x, needs: [a]}\n  c: {run: x, needs: [a]}\n  d: {run: x, needs: [b, c]}\n",
            None,
        )
        .unwrap();
        let places = layout(&pipeline);
        assert_eq!(places["a"], (0, 0));
        assert_eq!(places["b"], (1, 0));
        assert_eq!(places["c"], (1, 1));
        assert_eq!(places["d"], (2, 0));
    }
}
