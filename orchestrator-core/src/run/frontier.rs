//! The DAG frontier of a run: which steps may start now, and which will never run. Pure
//! bookkeeping with no I/O, shared by every orchestrator that schedules steps itself (the
//! local orchestrator, the Kubernetes steps-mode coordinator, third-party plugins).

use std::collections::{HashMap, HashSet};

use crate::pipeline::{Pipeline, Step};
use crate::run::StepStatus;

/// A decision the frontier took.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<'p> {
    /// Every dependency succeeded: start the step, then report its end with
    /// [`Frontier::finish`].
    Start(&'p Step),
    /// The step will never run: `status` is [`StepStatus::Skipped`] after a dependency that
    /// did not succeed, or [`StepStatus::Cancelled`] once the run is cancelled. The frontier
    /// counts it finished already.
    End {
        step: &'p Step,
        status: StepStatus,
        reason: String,
    },
}

/// Steps waiting, running and finished, in the pipeline's topological order.
#[derive(Debug, Clone)]
pub struct Frontier<'p> {
    pipeline: &'p Pipeline,
    pending: Vec<&'p Step>,
    running: HashSet<&'p str>,
    finished: HashMap<String, StepStatus>,
    parallelism: usize,
}

impl<'p> Frontier<'p> {
    /// Every step of `pipeline`, at most `parallelism` running at once (at least one).
    pub fn new(pipeline: &'p Pipeline, parallelism: usize) -> Self {
        Self {
            pipeline,
            pending: pipeline.topological_order(),
            running: HashSet::new(),
            finished: HashMap::new(),
            parallelism: parallelism.max(1),
        }
    }

    /// One step of `pipeline` alone, its dependencies already ended as `upstream` says.
    pub fn single(
        pipeline: &'p Pipeline,
        step: &'p Step,
        upstream: impl IntoIterator<Item = (String, StepStatus)>,
    ) -> Self {
        Self {
            pipeline,
            pending: vec![step],
            running: HashSet::new(),
            finished: upstream.into_iter().collect(),
            parallelism: 1,
        }
    }

    /// Takes every decision possible now, in topological order: steps to end without running
    /// (after a dependency that did not succeed, or all of them once `cancelled`), and steps
    /// to start, as many as the parallelism leaves room for.
    pub fn advance(&mut self, cancelled: bool) -> Vec<Decision<'p>> {
        let mut decisions = Vec::new();
        let mut still_pending = Vec::new();
        for step in std::mem::take(&mut self.pending) {
            let deps: Vec<&str> = self.pipeline.dependencies(step).collect();
            let blocker = deps
                .iter()
                .find(|d| self.finished.get(**d).is_some_and(|s| !s.is_success()));
            let (status, reason) = match blocker {
                _ if cancelled => (
                    StepStatus::Cancelled,
                    "cancelled before it started".to_string(),
                ),
                Some(dep) => (
                    StepStatus::Skipped,
                    format!("skipped: `{dep}` did not succeed"),
                ),
                None => {
                    let ready = deps.iter().all(|d| self.finished.contains_key(*d));
                    if ready && self.running.len() < self.parallelism {
                        self.running.insert(&step.name);
                        decisions.push(Decision::Start(step));
                    } else {
                        still_pending.push(step);
                    }
                    continue;
                }
            };
            self.finished.insert(step.name.clone(), status);
            decisions.push(Decision::End {
                step,
                status,
                reason,
            });
        }
        self.pending = still_pending;
        decisions
    }

    /// A started step ended with `status`.
    pub fn finish(&mut self, step: &str, status: StepStatus) {
        self.running.remove(step);
        self.finished.insert(step.to_string(), status);
    }

    /// Steps started and not yet finished.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// How a step ended, if it has.
    pub fn status(&self, step: &str) -> Option<StepStatus> {
        self.finished.get(step).copied()
    }

    /// Steps that can never start: with nothing running, whatever is still pending waits for
    /// a step that will never end. Validation makes this impossible; an orchestrator fails
    /// these rather than let a run look successful.
    pub fn stranded(&self) -> Vec<&'p Step> {
        if self.running.is_empty() {
            self.pending.clone()
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Pipeline;
    use proptest::prelude::*;

    fn pipeline(steps: &[(&str, &[&str])]) -> Pipeline {
        let yaml: String = std::iter::once("name: p\nsteps:\n".to_string())
            .chain(steps.iter().map(|(name, needs)| {
                format!(
                    "  {name}:\n    run: \"true\"\n    needs: [{}]\n",
                    needs.join(", ")
                )
            }))
            .collect();
        Pipeline::from_yaml_str(&yaml, None).unwrap_or_else(|e| panic!("{yaml}\n{e}"))
    }

    fn names(decisions: &[Decision<'_>]) -> Vec<String> {
        decisions
            .iter()
            .map(|d| match d {
                Decision::Start(step) => format!("start {}", step.name),
                Decision::End { step, status, .. } => format!("{status:?} {}", step.name),
            })
            .collect()
    }

    #[test]
    fn starts_what_is_ready_within_the_parallelism() {
        let p = pipeline(&[("a", &[]), ("b", &[]), ("c", &["a", "b"])]);
        let mut frontier = Frontier::new(&p, 1);
        assert_eq!(names(&frontier.advance(false)), ["start a"]);
        assert!(frontier.advance(false).is_empty(), "b waits for a slot");
        frontier.finish("a", StepStatus::Succeeded);
        assert_eq!(names(&frontier.advance(false)), ["start b"]);
        frontier.finish("b", StepStatus::Cached);
        assert_eq!(names(&frontier.advance(false)), ["start c"]);
        frontier.finish("c", StepStatus::Succeeded);
        assert!(frontier.advance(false).is_empty());
        assert_eq!(frontier.running(), 0);
        assert!(frontier.stranded().is_empty());
    }

    #[test]
    fn a_failure_skips_everything_downstream_and_names_the_step() {
        let p = pipeline(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &[])]);
        let mut frontier = Frontier::new(&p, 4);
        assert_eq!(names(&frontier.advance(false)), ["start a", "start d"]);
        frontier.finish("a", StepStatus::Failed);
        let decisions = frontier.advance(false);
        assert_eq!(names(&decisions), ["Skipped b", "Skipped c"]);
        let Decision::End { reason, .. } = &decisions[1] else {
            unreachable!()
        };
        assert_eq!(reason, "skipped: `b` did not succeed");
        assert_eq!(frontier.status("c"), Some(StepStatus::Skipped));
    }

    #[test]
    fn cancelling_ends_every_waiting_step() {
        let p = pipeline(&[("a", &[]), ("b", &["a"]), ("c", &[])]);
        let mut frontier = Frontier::new(&p, 1);
        assert_eq!(names(&frontier.advance(false)), ["start a"]);
        assert_eq!(
            names(&frontier.advance(true)),
            ["Cancelled b", "Cancelled c"]
        );
        frontier.finish("a", StepStatus::Cancelled);
        assert!(frontier.advance(true).is_empty());
    }

    #[test]
    fn a_single_step_starts_after_its_recorded_upstream() {
        let p = pipeline(&[("a", &[]), ("b", &["a"])]);
        let step = p.step("b").unwrap();
        let mut ok = Frontier::single(&p, step, [("a".to_string(), StepStatus::Succeeded)]);
        assert_eq!(names(&ok.advance(false)), ["start b"]);
        let mut failed = Frontier::single(&p, step, [("a".to_string(), StepStatus::Failed)]);
        assert_eq!(names(&failed.advance(false)), ["Skipped b"]);
    }

    /// A random DAG: step `i` may need any earlier step.
    fn dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
        (1usize..12).prop_flat_map(|n| {
            (0..n)
                .map(|i| proptest::collection::vec(0..i.max(1), 0..=i.min(3)))
                .collect::<Vec<_>>()
                .prop_map(|needs| {
                    needs
                        .into_iter()
                        .enumerate()
                        .map(|(i, mut deps)| {
                            deps.retain(|d| *d < i);
                            deps.sort_unstable();
                            deps.dedup();
                            deps
                        })
                        .collect()
                })
        })
    }

    proptest! {
        /// Whatever the DAG, the parallelism, the order steps end in and their outcomes:
        /// every step ends exactly once, none starts before all it needs succeeded, none is
        /// skipped unless something it needs did not succeed, and the parallelism holds.
        #[test]
        fn every_step_ends_exactly_once_and_nothing_starts_early(
            needs in dag(),
            parallelism in 1usize..4,
            outcomes in proptest::collection::vec(0u8..4, 12),
            picks in proptest::collection::vec(0usize..100, 12),
            cancel_at in proptest::option::of(0usize..12),
        ) {
            let names: Vec<String> = (0..needs.len()).map(|i| format!("s{i}")).collect();
            let deps: Vec<Vec<&str>> = needs
                .iter()
                .map(|d| d.iter().map(|j| names[*j].as_str()).collect())
                .collect();
            let spec: Vec<(&str, &[&str])> =
                names.iter().zip(&deps).map(|(n, d)| (n.as_str(), d.as_slice())).collect();
            let p = pipeline(&spec);
            let mut frontier = Frontier::new(&p, parallelism);
            let mut ended: HashMap<String, StepStatus> = HashMap::new();
            let mut running: Vec<String> = Vec::new();
            let mut round = 0;
            loop {
                let cancelled = cancel_at.is_some_and(|c| round >= c);
                for decision in frontier.advance(cancelled) {
                    match decision {
                        Decision::Start(step) => {
                            for dep in p.dependencies(step) {
                                prop_assert!(
                                    ended.get(dep).is_some_and(|s| s.is_success()),
                                    "{} started before {dep} succeeded", step.name
                                );
                            }
                            prop_assert!(!ended.contains_key(&step.name));
                            running.push(step.name.clone());
                        }
                        Decision::End { step, status, .. } => {
                            if status == StepStatus::Skipped {
                                let blocked = p.dependencies(step).any(|d| {
                                    ended.get(d).is_some_and(|s| !s.is_success())
                                });
                                prop_assert!(blocked, "{} skipped without cause", step.name);
                            }
                            prop_assert!(
                                ended.insert(step.name.clone(), status).is_none(),
                                "{} ended twice", step.name
                            );
                        }
                    }
                }
                prop_assert!(running.len() <= parallelism);
                prop_assert_eq!(running.len(), frontier.running());
                if running.is_empty() {
                    break;
                }
                let name = running.remove(picks[round % picks.len()] % running.len());
                let status = match outcomes[round % outcomes.len()] {
                    0 => StepStatus::Failed,
                    1 => StepStatus::Cached,
                    _ => StepStatus::Succeeded,
                };
                prop_assert!(ended.insert(name.clone(), status).is_none(), "{name} ended twice");
                frontier.finish(&name, status);
                round += 1;
            }
            prop_assert!(frontier.stranded().is_empty());
            prop_assert_eq!(ended.len(), names.len(), "every step ends");
        }
    }
}
