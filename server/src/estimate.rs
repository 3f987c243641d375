//! Estimates of a run's duration and tokens, from measured data, re-read every
//! `dispatch.estimate_refresh_interval`: the mean duration and tokens of each step's recent completed attempts
//! ([`RunStore::step_stats`]), falling back to the configured per-step defaults for a step that has
//! not completed yet (`dispatch.estimate_step_duration`, `dispatch.estimate_llm_step_tokens`); and
//! what recent READY runs took as a whole ([`RunStore::recently_ended`]).
//! - **tokens**: the sum over the plan's steps that run;
//! - **duration**: the plan's longest dependency path (parallel branches overlap), each step its
//!   measured mean, plus the **overhead** of a run: what recent runs took beyond their own path
//!   (starting the workflow, Temporal scheduling each activity, the bookkeeping between steps). A
//!   run that has finished some steps has the unfinished fraction of that left;
//! - **queue wait**: a queued run at position `p` waits for `p - 1` runs to start before it, at
//!   the rate recent runs started; with no recent starts to measure, runs start in waves of
//!   `dispatch.max_processing_per_company` and it waits `(p - 1) / cap` whole runs;
//! - **dispatch**: a queued run then takes what recent runs that did not wait took from push to
//!   workflow start (the lower quartile of their creation-to-start times).
//!
//! The estimator also answers why a run waits ([`Conditions`], kept by the dispatcher and the
//! health loop): what holds a run back is what its ETA cannot see.
//!
//! Durations are kept to the microsecond; the contract's whole seconds are rounded up, so an
//! unfinished run never reads 0.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::DispatchConfig;
use crate::wait::Conditions;
use etter_core::error::chain;
use etter_core::lifecycle::RunState;
use etter_core::steps::{Action, Plan, StepName};
use etter_store::{Run, RunStore, StepStats, StoreError, Timestamp};

/// Completed attempts measured per step (the most recent ones).
pub const SAMPLES_PER_STEP: u32 = 50;

/// What one step costs, measured or assumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StepCost {
    duration: Duration,
    tokens: i64,
}

/// What recent whole runs measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RunCost {
    /// Mean time a run took beyond its own steps' path.
    overhead: Duration,
    /// How long a run that did not wait took from its push to its workflow's start: the lower
    /// quartile of recent runs' time from creation to start (those that waited behind others
    /// are above it; their wait is the queue's term).
    dispatch: Duration,
    /// Mean time between two runs starting, when runs started recently.
    start_interval: Option<Duration>,
}

/// When a run that ended ran, and its plan.
#[derive(Debug, Clone)]
pub struct RunTiming {
    /// Its steps.
    pub plan: Plan,
    /// When it was pushed.
    pub create: Timestamp,
    /// When its workflow started.
    pub start: Timestamp,
    /// When it ended.
    pub end: Timestamp,
}

impl RunTiming {
    /// The timing of an ended run (none for a run without a plan or not started).
    fn of(run: &Run) -> Option<Self> {
        Some(Self { plan: run.plan.clone()?, create: run.create_time, start: run.start_time?, end: run.end_time? })
    }
}

/// Recent READY runs measured for the overhead and the start rate.
pub const RUNS_MEASURED: u32 = 50;
/// Starts further back than this say nothing of the current rate.
const START_RATE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Estimates for plans, from the latest measurements.
#[derive(Debug)]
pub struct Estimator {
    config: DispatchConfig,
    measured: RwLock<BTreeMap<StepName, StepCost>>,
    runs: RwLock<RunCost>,
    /// (currency, price of a million tokens), when prices are configured.
    price: Option<(String, f64)>,
    /// What holds runs back (why a run waits).
    conditions: Arc<Conditions>,
}

impl Estimator {
    /// An estimator with nothing measured yet (the configured defaults).
    pub fn new(config: DispatchConfig) -> Self {
        let conditions = Arc::new(Conditions::new(&config));
        Self {
            config,
            measured: RwLock::new(BTreeMap::new()),
            runs: RwLock::new(RunCost::default()),
            price: None,
            conditions,
        }
    }

    /// Reads why runs wait from `conditions` (kept by the dispatcher and the health loop).
    #[must_use]
    pub fn with_conditions(mut self, conditions: Arc<Conditions>) -> Self {
        self.conditions = conditions;
        self
    }

    /// What holds runs back.
    pub fn conditions(&self) -> &Conditions {
        &self.conditions
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
        let (stats, recent) = futures::try_join!(
            store.step_stats(SAMPLES_PER_STEP),
            store.recently_ended(RunState::Ready, RUNS_MEASURED)
        )?;
        self.set_measurements(&stats);
        let timings: Vec<RunTiming> = recent.iter().filter_map(RunTiming::of).collect();
        self.measure_runs(&timings, etter_store::now());
        Ok(())
    }

    /// Measures, from recent READY runs (with the step measurements already set), what a run
    /// costs beyond its steps and how often runs start.
    pub fn measure_runs(&self, recent: &[RunTiming], now: Timestamp) {
        let beyond_steps: Vec<Duration> = recent
            .iter()
            .filter_map(|run| {
                let took = (run.end - run.start).to_std().ok()?;
                Some(took.saturating_sub(self.steps_path(&run.plan)))
            })
            .collect();
        let overhead = mean(&beyond_steps);
        let mut to_start: Vec<Duration> =
            recent.iter().filter_map(|run| (run.start - run.create).to_std().ok()).collect();
        to_start.sort_unstable();
        let dispatch = to_start.get(to_start.len() / 4).copied().unwrap_or_default();
        let window = chrono::TimeDelta::from_std(START_RATE_WINDOW).unwrap_or(chrono::TimeDelta::MAX);
        let mut starts: Vec<Timestamp> =
            recent.iter().map(|run| run.start).filter(|start| now - *start <= window).collect();
        starts.sort_unstable();
        let start_interval = match (starts.first(), starts.last()) {
            (Some(first), Some(last)) if starts.len() >= 3 => {
                (*last - *first).to_std().ok().map(|span| span / u32::try_from(starts.len() - 1).unwrap_or(u32::MAX))
            }
            _ => None,
        };
        let cost = RunCost { overhead, dispatch, start_interval };
        match self.runs.write() {
            Ok(mut guard) => *guard = cost,
            Err(poisoned) => *poisoned.into_inner() = cost,
        }
    }

    fn run_cost(&self) -> RunCost {
        match self.runs.read() {
            Ok(guard) => *guard,
            Err(poisoned) => *poisoned.into_inner(),
        }
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

    /// The longest dependency path of `plan`'s steps, each its measured (or assumed) mean.
    fn steps_path(&self, plan: &Plan) -> Duration {
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
        done_at.values().copied().max().unwrap_or_default()
    }

    /// Estimated time of a whole run of `plan`: its steps' longest path and the measured
    /// overhead of a run.
    pub fn run_duration(&self, plan: &Plan) -> Duration {
        self.steps_path(plan) + self.run_cost().overhead
    }

    /// Estimated time until a run ends: while queued at `position`, its wait for the runs ahead
    /// and its dispatch; then what is left of it (`finished` of its steps done).
    pub fn remaining(&self, plan: &Plan, position: Option<u32>, finished: usize) -> Duration {
        let whole = self.run_duration(plan);
        let dispatch = if position.is_some() { self.run_cost().dispatch } else { Duration::ZERO };
        let total = u32::try_from(plan.total().max(1)).unwrap_or(u32::MAX);
        let left = u32::try_from(plan.total().saturating_sub(finished)).unwrap_or(0).min(total);
        let running = whole * left / total;
        let ahead = position.map_or(0, |p| p.saturating_sub(1));
        let wait = match self.run_cost().start_interval {
            Some(interval) => interval.saturating_mul(ahead),
            None => {
                let cap = u32::try_from(self.config.max_processing_per_company.max(1)).unwrap_or(u32::MAX);
                whole.saturating_mul(ahead / cap)
            }
        };
        running.saturating_add(wait).saturating_add(dispatch)
    }

    /// [`Estimator::remaining`] in the contract's whole seconds, rounded up: a run that is not
    /// over never reads 0.
    pub fn remaining_seconds(&self, plan: &Plan, position: Option<u32>, finished: usize) -> i64 {
        whole_seconds(self.remaining(plan, position, finished)).max(1)
    }

    /// [`Estimator::run_duration`] in whole seconds, rounded up.
    pub fn run_seconds(&self, plan: &Plan) -> i64 {
        whole_seconds(self.run_duration(plan)).max(1)
    }
}

/// A duration in whole seconds, rounded up.
fn whole_seconds(duration: Duration) -> i64 {
    let rounded_up = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    i64::try_from(rounded_up).unwrap_or(i64::MAX)
}

/// The mean of `durations` (zero for none).
fn mean(durations: &[Duration]) -> Duration {
    let total: Duration = durations.iter().sum();
    u32::try_from(durations.len()).ok().filter(|n| *n > 0).map_or(Duration::ZERO, |n| total / n)
}

/// Re-reads the measurements every `dispatch.estimate_refresh_interval` until `stop` resolves
/// (the caller reads them once at start).
pub async fn refresh_periodically(
    estimator: std::sync::Arc<Estimator>,
    store: std::sync::Arc<dyn RunStore>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let every = estimator.config.estimate_refresh_interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
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

    fn measured(step: &str, millis: u64, tokens: i64) -> StepStats {
        StepStats {
            step: step.to_owned(),
            samples: 3,
            mean_duration: Duration::from_millis(millis),
            mean_tokens: tokens,
        }
    }

    #[test]
    fn without_measurements_the_configured_defaults_apply() {
        let config = DispatchConfig::default();
        let estimator = Estimator::new(config.clone());
        let step = config.estimate_step_duration;
        // role_setup → document_linking → ai_assessment → skills_miner → architecture → catalog
        // → reskilling → finalize.
        assert_eq!(estimator.run_duration(&plan_new(false)), 8 * step);
        assert_eq!(estimator.run_duration(&plan_new(true)), 4 * step);
        assert_eq!(estimator.tokens(&plan_new(true)), config.estimate_llm_step_tokens);
        assert_eq!(estimator.tokens(&plan_new(false)), 8 * config.estimate_llm_step_tokens);
        let plan = plan_new(true);
        assert_eq!(estimator.remaining(&plan, Some(1), 0), 4 * step);
        assert_eq!(estimator.remaining(&plan, None, 2), 2 * step);
        assert_eq!(estimator.remaining(&plan, None, 4), Duration::ZERO);
        // Nothing measured of the start rate: runs start in waves of the company's cap.
        let cap = u32::try_from(config.max_processing_per_company).unwrap_or(u32::MAX);
        assert_eq!(estimator.remaining(&plan, Some(cap + 1), 0), 8 * step);
    }

    #[test]
    fn measurements_replace_the_defaults_step_by_step_to_the_millisecond() {
        let config = DispatchConfig::default();
        let estimator = Estimator::new(config.clone());
        estimator.set_measurements(&[
            measured("role_setup", 120, 0),
            measured("document_linking", 250, 0),
            measured("ai_assessment", 900, 1500),
            measured("finalize", 30, 0),
            measured("a_step_of_a_newer_version", 9, 9),
        ]);
        // Critical path only, kept to the millisecond: 120 + 250 + 900 + 30 ms.
        assert_eq!(estimator.run_duration(&plan_new(true)), Duration::from_millis(1300));
        assert_eq!(estimator.tokens(&plan_new(true)), 1500);
        // In whole seconds, rounded up: never the 0 that truncating 1.3 s to 1 s and below gave.
        assert_eq!(estimator.run_seconds(&plan_new(true)), 2);
        assert_eq!(estimator.remaining_seconds(&plan_new(true), None, 3), 1);
        // Unmeasured enhancement steps keep the defaults.
        let step = config.estimate_step_duration;
        assert_eq!(estimator.run_duration(&plan_new(false)), Duration::from_millis(1300) + 4 * step);
        assert_eq!(estimator.tokens(&plan_new(false)), 1500 + 7 * config.estimate_llm_step_tokens);
    }

    #[test]
    fn recent_runs_add_their_overhead_and_their_start_rate_paces_the_queue() {
        let estimator = Estimator::new(DispatchConfig::default());
        let all = ["role_setup", "document_linking", "ai_assessment", "finalize"];
        estimator.set_measurements(&all.map(|s| measured(s, 250, 0)));
        let plan = plan_new(true);
        assert_eq!(estimator.run_duration(&plan), Duration::from_secs(1));
        // Four runs of that plan, started 2 s apart, each taking 3 s: 2 s beyond their steps. The
        // first three started 100 ms after their push, the last waited 5 s in the queue.
        let now = etter_store::now();
        let runs: Vec<RunTiming> = (0..4)
            .map(|n| {
                let start = now - chrono::TimeDelta::seconds(10 - 2 * n);
                let waited = if n == 3 { chrono::TimeDelta::seconds(5) } else { chrono::TimeDelta::milliseconds(100) };
                RunTiming {
                    plan: plan.clone(),
                    create: start - waited,
                    start,
                    end: start + chrono::TimeDelta::seconds(3),
                }
            })
            .collect();
        estimator.measure_runs(&runs, now);
        assert_eq!(estimator.run_duration(&plan), Duration::from_secs(3));
        let dispatch = Duration::from_millis(100);
        // Fifth in the queue: four starts ahead, one every 2 s, its dispatch, then its own 3 s.
        assert_eq!(estimator.remaining(&plan, Some(5), 0), Duration::from_secs(8 + 3) + dispatch);
        // Started: no dispatch left.
        assert_eq!(estimator.remaining(&plan, None, 0), Duration::from_secs(3));
        // Starts older than the window say nothing of the rate now: waves again.
        estimator.measure_runs(&runs, now + chrono::TimeDelta::hours(1));
        assert_eq!(estimator.remaining(&plan, Some(2), 0), Duration::from_secs(3) + dispatch);
    }
}
