//! When a failed step is tried again: one policy for every orchestrator, so that a step's
//! `retries` and `retry_delay` mean the same on a laptop and on a cluster.
//!
//! The wait before retry `n` (1 for the first) is `retry_delay × 2^(n-1)`, capped at
//! [`MAX_DELAY`] (or at `retry_delay` itself when that is larger), then scaled by a random
//! factor in [0.5, 1.0] ("equal jitter"), so that steps that failed together (a node that went
//! away, a store that was briefly down) do not all come back at the same instant.

use std::time::Duration;

use crate::pipeline::Step;

/// The first wait when a step sets no `retry_delay`.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(1);
/// No wait grows beyond this by doubling.
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// A step's retry policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first retry.
    pub base: Duration,
    /// How many times the step may be tried after its first attempt fails.
    pub retries: u32,
}

impl Backoff {
    pub fn of(step: &Step) -> Backoff {
        Backoff {
            base: step.retry_delay.unwrap_or(DEFAULT_DELAY),
            retries: step.retries,
        }
    }

    /// Attempts in all: the first plus the retries.
    pub fn attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// The longest wait before retry `retry` (1-based): the doubling, capped, before jitter.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let cap = MAX_DELAY.max(self.base);
        let doublings = retry.saturating_sub(1).min(32);
        self.base
            .checked_mul(1u32 << doublings.min(31))
            .map_or(cap, |d| d.min(cap))
    }

    /// The wait before retry `retry` (1-based), with jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        self.ceiling(retry).mul_f64(0.5 + 0.5 * unit_random())
    }
}

/// A number in [0, 1) from the operating system's generator; 1.0 (no jitter, the full
/// wait) if it cannot be read, which only makes the wait longer, never shorter.
fn unit_random() -> f64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_jitter_stays_within_half() {
        let backoff = Backoff {
            base: Duration::from_secs(2),
            retries: 20,
        };
        assert_eq!(backoff.attempts(), 21);
        assert_eq!(backoff.ceiling(1), Duration::from_secs(2));
        assert_eq!(backoff.ceiling(2), Duration::from_secs(4));
        assert_eq!(backoff.ceiling(3), Duration::from_secs(8));
        assert_eq!(backoff.ceiling(9), Duration::from_secs(300));
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(300));
        for retry in 1..=12 {
            let delay = backoff.delay(retry);
            let ceiling = backoff.ceiling(retry);
            assert!(
                delay <= ceiling && delay >= ceiling / 2,
                "{retry}: {delay:?}"
            );
        }
    }

    #[test]
    fn a_base_above_the_cap_is_kept_and_zero_means_at_once() {
        let long = Backoff {
            base: Duration::from_secs(600),
            retries: 3,
        };
        assert_eq!(long.ceiling(3), Duration::from_secs(600));
        let none = Backoff {
            base: Duration::ZERO,
            retries: 3,
        };
        assert_eq!(none.delay(2), Duration::ZERO);
    }

    #[test]
    fn a_step_without_a_delay_gets_the_default() {
        let step = Step::shell("a", "true").retries(2);
        assert_eq!(Backoff::of(&step).base, DEFAULT_DELAY);
        let step = step.retry_delay(Duration::from_millis(10));
        assert_eq!(Backoff::of(&step).base, Duration::from_millis(10));
    }
}
