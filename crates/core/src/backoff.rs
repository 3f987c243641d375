//! Waits between attempts at a call to another system that failed (Temporal, the store, a
//! webhook receiver, a model API): doubling from a first wait up to a ceiling, with "equal
//! jitter" — each wait is drawn between half its nominal value and the nominal value — so
//! replicas or workers that failed together do not retry in lockstep. Built on `backon`'s
//! exponential back-off.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// A sequence of waits: the n-th failure in a row waits about `first · 2ⁿ⁻¹`, never more than
/// `max`. [`Backoff::reset`] after a success starts again from `first`.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    waits: backon::ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// Waits that start at `first` and double up to `max` (`max` below `first` is raised to it).
    pub fn new(first: Duration, max: Duration) -> Self {
        let max = max.max(first);
        // backon adds a random part of up to 100 % to each delay: halving the delays it doubles
        // draws every wait from [nominal / 2, nominal).
        let builder = ExponentialBuilder::new()
            .with_min_delay(first / 2)
            .with_max_delay(max / 2)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self { waits: builder.build(), builder, max }
    }

    /// The wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        self.waits.next().unwrap_or(self.max).min(self.max)
    }

    /// After a success: the next failure waits about `first` again.
    pub fn reset(&mut self) {
        self.waits = self.builder.build();
    }

    /// The wait after `failures` failures in a row (1 or more), for callers that keep the count
    /// rather than the sequence (a delivery whose attempts are stored).
    pub fn after(first: Duration, max: Duration, failures: u32) -> Duration {
        let mut waits = Self::new(first, max);
        let mut wait = waits.next_wait();
        // Past 32 doublings every ceiling a configuration allows has been reached.
        for _ in 1..failures.min(32) {
            wait = waits.next_wait();
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn nominal(failures: u32) -> Duration {
        FIRST.saturating_mul(2_u32.saturating_pow(failures - 1)).min(MAX)
    }

    #[test]
    fn each_wait_lies_between_half_its_nominal_value_and_the_nominal_value() {
        let mut backoff = Backoff::new(FIRST, MAX);
        for failures in 1..=12 {
            let wait = backoff.next_wait();
            let n = nominal(failures);
            assert!(wait >= n / 2 && wait <= n, "failure {failures}: waited {wait:?}, nominal {n:?}");
        }
    }

    #[test]
    fn waits_are_not_all_alike_so_replicas_do_not_retry_together() {
        let first: Vec<Duration> = (0..32).map(|_| Backoff::new(FIRST, MAX).next_wait()).collect();
        let distinct: std::collections::BTreeSet<_> = first.iter().collect();
        assert!(distinct.len() > 1, "32 independent back-offs all waited {:?}", first[0]);
    }

    #[test]
    fn a_reset_starts_again_from_the_first_wait() {
        let mut backoff = Backoff::new(FIRST, MAX);
        for _ in 0..8 {
            backoff.next_wait();
        }
        assert!(backoff.next_wait() >= MAX / 2);
        backoff.reset();
        assert!(backoff.next_wait() <= FIRST);
    }

    #[test]
    fn the_wait_after_n_failures_follows_the_same_sequence_and_stays_under_the_ceiling() {
        for failures in [1, 2, 3, 6, 40, u32::MAX] {
            let wait = Backoff::after(FIRST, MAX, failures);
            let n = nominal(failures.min(40));
            assert!(wait >= n / 2 && wait <= n, "after {failures}: {wait:?}, nominal {n:?}");
        }
    }
}
