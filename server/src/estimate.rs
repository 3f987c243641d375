//! Estimates of a run's duration and tokens, from measured data: the mean duration and
//! tokens of each step's recent completed attempts ([`RunStore::step_stats`], refreshed every
//! [`REFRESH_EVERY`]), falling back to the configured per-step defaults for a step that has not
//! completed yet (`dispatch.estimate_step_duration`, `dispatch.estimate_llm_step_tokens`).
//! - **tokens**: the sum over the plan's steps that run;
//! - **duration**: the plan's longest dependency path (parallel branches overlap), each step its
//!   measured mean; a run that has finished some steps has the unfinished fraction of that left;
//! - **queue wait**: runs start in waves of `dispatch.max_processing_per_company`; a queued run at
//!   position `p` waits `(p - 1) / cap` whole runs.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

use crate::config::DispatchConfig;
use etter_core::error::chain;
use etter_core::steps::{Action, Plan, StepName};
use etter_store::{RunStore, StepStats, StoreError};

/// How often the measurements are re-read.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// Completed attempts measured per step (the most recent ones).
pub const SAMPLES_PER_STEP: u32 = 50;

/// What one step costs, measured or assumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StepCost {
    duration: Duration,
    tokens: i64,
}

/// Estimates for plans, from the latest measurements.
#[derive(Debug)]
pub struct Estimator {
    config: DispatchConfig,
    measured: RwLock<BTreeMap<StepName, StepCost>>,
    /// (currency, price of a million tokens), when prices are configured.
    price: Option<(String, f64)>,
}

impl Estimator {
    /// An estimator with nothing measured yet (the configured defaults).
    pub fn new(config: DispatchConfig) -> Self {
        Self { config, measured: RwLock::new(BTreeMap::new()), price: None }
    }

    /// Prices estimates and usage with `limits.currency` and `limits.price_per_million_tokens`.
    pub fn with_prices(mut self, limits: &crate::config::LimitsConfig) -> Self {
        self.price = (!limits.currency.is_empty()).then(|| (limits.currency.clone(), limits.price_per_million_tokens));
        self
    }

    /// What `tokens` cost, in millionths of the currency, and the currency (0 and empty without
    /// prices).
    pub fn price(&self, tokens: i64) -> (i64, String) {
        match &self.price {
            // A price per million tokens is, per token, that many millionths.
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
            Some((currency, per_million)) => (((tokens as f64) * per_million).round() as i64, currency.clone()),
            None => (0, String::new()),
        }
    }

    /// The contract's estimate of `tokens`.
    pub fn token_estimate(&self, tokens: i64) -> etter_proto::v1::TokenEstimate {
        let (cost_micros, currency) = self.price(tokens);
        etter_proto::v1::TokenEstimate { total_tokens: tokens, cost_micros, currency }
    }

    /// Re-reads the measurements from the store.
    pub async fn refresh(&self, store: &dyn RunStore) -> Result<(), StoreError> {
        let stats = store.step_stats(SAMPLES_PER_STEP).await?;
        self.set_measurements(&stats);
        Ok(())
    }

    /// Replaces the measurements (steps this version does not know are ignored).
    pub fn set_measurements(&self, stats: &[StepStats]) {
        let measured: BTreeMap<StepName, StepCost> = stats
            .iter()
            .filter(|s| s.samples > 0)
            .filter_map(|s| {
                let step = StepName::parse(&s.step)?;
                Some((step, StepCost { duration: s.mean_duration, tokens: s.mean_tokens.max(0) }))
            })
            .collect();
        match self.measured.write() {
            Ok(mut guard) => *guard = measured,
            Err(poisoned) => *poisoned.into_inner() = measured,
        }
    }

    fn cost(&self, step: StepName) -> StepCost {
        let measured = match self.measured.read() {
            Ok(guard) => guard.get(&step).copied(),
            Err(poisoned) => poisoned.into_inner().get(&step).copied(),
        };
        measured.unwrap_or(StepCost {
            duration: self.config.estimate_step_duration,
            tokens: if step.spec().uses_llm { self.config.estimate_llm_step_tokens } else { 0 },
        })
    }

    /// Estimated LLM tokens of a plan.
    pub fn tokens(&self, plan: &Plan) -> i64 {
        plan.steps
            .iter()
            .filter(|(_, a)| *a == Action::Run)
            .fold(0_i64, |sum, (step, _)| sum.saturating_add(self.cost(*step).tokens))
    }

    /// Estimated seconds of a whole run of `plan`: its longest dependency path.
    pub fn run_seconds(&self, plan: &Plan) -> i64 {
        let mut done_at: BTreeMap<StepName, Duration> = BTreeMap::new();
        for (step, action) in &plan.steps {
            if *action != Action::Run {
                continue;
            }
            let spec = step.spec();
            let start = if spec.runs_last {
                done_at.values().copied().max().unwrap_or_default()
            } else {
                spec.needs.iter().filter_map(|n| done_at.get(n)).copied().max().unwrap_or_default()
            };
            done_at.insert(*step, start + self.cost(*step).duration);
        }
        let longest = done_at.values().copied().max().unwrap_or_default();
        i64::try_from(longest.as_secs()).unwrap_or(i64::MAX)
    }

    /// Estimated seconds until a run ends: queue wait (when queued at `position`) plus what is
    /// left of its steps (`finished` of `total`).
    pub fn remaining_seconds(&self, plan: &Plan, position: Option<u32>, finished: usize) -> i64 {
        let whole = self.run_seconds(plan);
        let total = plan.total().max(1);
        let left = total.saturating_sub(finished);
        let running = whole.saturating_mul(i64::try_from(left).unwrap_or(0)) / i64::try_from(total).unwrap_or(1);
        let waves =
            position.map_or(0, |p| u64::from(p.saturating_sub(1)) / self.config.max_processing_per_company.max(1));
        running.saturating_add(whole.saturating_mul(i64::try_from(waves).unwrap_or(i64::MAX)))
    }
}

/// Re-reads the measurements every [`REFRESH_EVERY`] until `stop` resolves (the caller reads them
/// once at start).
pub async fn refresh_periodically(
    estimator: std::sync::Arc<Estimator>,
    store: std::sync::Arc<dyn RunStore>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = tokio::time::sleep(REFRESH_EVERY) => {}
            () = &mut stop => return,
        }
        if let Err(e) = estimator.refresh(store.as_ref()).await {
            tracing::warn!(error = %chain(&e), "cannot read step measurements; estimates keep the previous ones");
        }
    }
}

#[cfg(test)]
mod tests {
    use etter_core::steps::plan_new;

    use super::*;

    #[test]
    fn without_measurements_the_configured_defaults_apply() {
        let config = DispatchConfig::default();
        let estimator = Estimator::new(config.clone());
        let step = i64::try_from(config.estimate_step_duration.as_secs()).unwrap_or(0);
        // role_setup → document_linking → ai_assessment → skills_miner → architecture → catalog
        // → reskilling → finalize.
        assert_eq!(estimator.run_seconds(&plan_new(false)), 8 * step);
        assert_eq!(estimator.run_seconds(&plan_new(true)), 4 * step);
        assert_eq!(estimator.tokens(&plan_new(true)), config.estimate_llm_step_tokens);
        assert_eq!(estimator.tokens(&plan_new(false)), 8 * config.estimate_llm_step_tokens);
        let plan = plan_new(true);
        assert_eq!(estimator.remaining_seconds(&plan, Some(1), 0), 4 * step);
        assert_eq!(estimator.remaining_seconds(&plan, None, 2), 2 * step);
        assert_eq!(estimator.remaining_seconds(&plan, None, 4), 0);
        let cap = u32::try_from(config.max_processing_per_company).unwrap_or(u32::MAX);
        assert_eq!(estimator.remaining_seconds(&plan, Some(cap + 1), 0), 8 * step);
    }

    #[test]
    fn measurements_replace_the_defaults_step_by_step() {
        let config = DispatchConfig::default();
        let estimator = Estimator::new(config.clone());
        let measured = |step: &str, secs: u64, tokens: i64| StepStats {
            step: step.to_owned(),
            samples: 3,
            mean_duration: Duration::from_secs(secs),
            mean_tokens: tokens,
        };
        estimator.set_measurements(&[
            measured("role_setup", 1, 0),
            measured("document_linking", 2, 0),
            measured("ai_assessment", 100, 1500),
            measured("finalize", 1, 0),
            measured("a_step_of_a_newer_version", 9, 9),
        ]);
        // Critical path only: 1 + 2 + 100 + 1 measured seconds; the assessment's measured tokens.
        assert_eq!(estimator.run_seconds(&plan_new(true)), 104);
        assert_eq!(estimator.tokens(&plan_new(true)), 1500);
        // Unmeasured enhancement steps keep the defaults.
        let step = i64::try_from(config.estimate_step_duration.as_secs()).unwrap_or(0);
        assert_eq!(estimator.run_seconds(&plan_new(false)), 1 + 2 + 100 + 4 * step + 1);
        assert_eq!(estimator.tokens(&plan_new(false)), 1500 + 7 * config.estimate_llm_step_tokens);
    }
}
