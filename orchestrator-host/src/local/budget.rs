//! What the steps running at once may ask for in all (`cpu_budget`, `memory_budget`): a step
//! starts only once its `resources` requests fit beside those of the steps already running.
//! In a Kubernetes pipeline-mode pod the budget is the pod's own requests, so that steps
//! running side by side never ask for more than the pod was given.

use orchestrator_core::pipeline::Resources;
use tokio::sync::{Semaphore, SemaphorePermit};

const MIB: u64 = 1024 * 1024;

/// One resource's budget, in permits (millicores, MiB).
struct Pool {
    permits: Semaphore,
    total: u32,
}

impl Pool {
    fn new(total: u64) -> Self {
        let total = total
            .min(Semaphore::MAX_PERMITS as u64)
            .min(u32::MAX as u64) as u32;
        Pool {
            permits: Semaphore::new(total as usize),
            total,
        }
    }
}

pub(super) struct Budget {
    cpu_millis: Option<Pool>,
    memory_mib: Option<Pool>,
}

/// A step's share of the budget, given back when it is dropped.
pub(super) struct Admitted<'a> {
    _permits: Vec<SemaphorePermit<'a>>,
}

impl Budget {
    pub(super) fn new(cpu_millis: Option<u64>, memory_bytes: Option<u64>) -> Self {
        Budget {
            cpu_millis: cpu_millis.map(Pool::new),
            memory_mib: memory_bytes.map(|b| Pool::new(b / MIB)),
        }
    }

    /// Waits until `resources` fit beside the running steps'; `Err` says why they never can.
    /// cpu is always taken before memory, so that two waiting steps never hold what the
    /// other waits for.
    pub(super) async fn admit(&self, resources: &Resources) -> Result<Admitted<'_>, String> {
        let wants = [
            (
                &self.cpu_millis,
                resources.cpu_millis(),
                "cpu",
                resources.cpu.as_deref(),
                "cpu_budget",
            ),
            (
                &self.memory_mib,
                resources.memory_bytes().map(|b| b.div_ceil(MIB)),
                "memory",
                resources.memory.as_deref(),
                "memory_budget",
            ),
        ];
        let mut permits = Vec::new();
        for (pool, want, what, written, key) in wants {
            let (Some(pool), Some(want)) = (pool, want) else {
                continue;
            };
            if want > u64::from(pool.total) {
                return Err(format!(
                    "the step asks for {what} {} but all steps together may only have {} (`{key}`; on Kubernetes, the pod's requests): lower the step's `resources` or raise the budget",
                    written.unwrap_or_default(),
                    show(what, pool.total),
                ));
            }
            if want == 0 {
                continue;
            }
            let permit = pool
                .permits
                .acquire_many(want as u32)
                .await
                .map_err(|_| "the run is ending".to_string())?;
            permits.push(permit);
        }
        Ok(Admitted { _permits: permits })
    }
}

fn show(what: &str, total: u32) -> String {
    match what {
        "cpu" if total.is_multiple_of(1000) => format!("{}", total / 1000),
        "cpu" => format!("{total}m"),
        _ => format!("{total}Mi"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_step_starts_only_once_its_requests_fit_beside_the_running_ones() {
        let budget = Budget::new(Some(2000), Some(4 * 1024 * MIB));
        let big = Resources::new().cpu("1500m").memory("3Gi");
        let first = budget.admit(&big).await.unwrap();
        // A second one does not fit until the first is done.
        let waiting = tokio::time::timeout(Duration::from_millis(100), budget.admit(&big)).await;
        assert!(
            waiting.is_err(),
            "admitted beside a step it does not fit beside"
        );
        // A small one does.
        let small = Resources::new().cpu("500m").memory("1Gi");
        let _second = budget.admit(&small).await.unwrap();
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), budget.admit(&big))
            .await
            .expect("admitted once the first step is done")
            .unwrap();
        // Steps that ask for nothing are never held back.
        budget.admit(&Resources::new()).await.unwrap();
    }

    #[tokio::test]
    async fn a_step_larger_than_the_whole_budget_is_refused_with_the_numbers() {
        let budget = Budget::new(None, Some(2 * 1024 * MIB));
        let error = budget
            .admit(&Resources::new().memory("3Gi"))
            .await
            .err()
            .unwrap();
        assert!(error.contains("memory 3Gi"), "{error}");
        assert!(error.contains("only have 2048Mi"), "{error}");
    }
}
