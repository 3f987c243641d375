//! Estimates of a run's duration and tokens before there are measurements.
//!
//! A documented, deliberately simple model until measured recent runs feed it:
//! - **tokens**: every planned LLM-using step costs `dispatch.estimate_llm_step_tokens`;
//! - **duration**: the plan's longest dependency path (parallel branches overlap), each step
//!   `dispatch.estimate_step_duration`; a run that has finished some steps has the unfinished
//!   fraction of that left;
//! - **queue wait**: runs start in waves of `dispatch.max_processing_per_company`; a queued run at
//!   position `p` waits `(p - 1) / cap` whole runs.

use std::collections::BTreeMap;

use etter_pipeline::{
    config::DispatchConfig,
    steps::{Action, Plan, StepName},
};

/// Estimated LLM tokens of a plan.
pub fn tokens(plan: &Plan, config: &DispatchConfig) -> i64 {
    let llm_steps = plan.steps.iter().filter(|(s, a)| *a == Action::Run && s.spec().uses_llm).count();
    i64::try_from(llm_steps).unwrap_or(i64::MAX).saturating_mul(config.estimate_llm_step_tokens)
}

/// Steps on the plan's longest dependency path.
fn path_length(plan: &Plan) -> u64 {
    let mut depth: BTreeMap<StepName, u64> = BTreeMap::new();
    for (step, action) in &plan.steps {
        if *action != Action::Run {
            continue;
        }
        let spec = step.spec();
        let before = if spec.runs_last {
            depth.values().copied().max().unwrap_or(0)
        } else {
            spec.needs.iter().filter_map(|n| depth.get(n)).copied().max().unwrap_or(0)
        };
        depth.insert(*step, before + 1);
    }
    depth.values().copied().max().unwrap_or(0)
}

/// Estimated seconds of a whole run of `plan`.
pub fn run_seconds(plan: &Plan, config: &DispatchConfig) -> i64 {
    let seconds = path_length(plan).saturating_mul(config.estimate_step_duration.as_secs());
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// Estimated seconds until a run ends: queue wait (when queued at `position`) plus what is left
/// of its steps (`finished` of `total`).
pub fn remaining_seconds(plan: &Plan, config: &DispatchConfig, position: Option<u32>, finished: usize) -> i64 {
    let whole = run_seconds(plan, config);
    let total = plan.total().max(1);
    let left = total.saturating_sub(finished);
    let running = whole.saturating_mul(i64::try_from(left).unwrap_or(0)) / i64::try_from(total).unwrap_or(1);
    let waves = position.map_or(0, |p| u64::from(p.saturating_sub(1)) / config.max_processing_per_company.max(1));
    running.saturating_add(whole.saturating_mul(i64::try_from(waves).unwrap_or(i64::MAX)))
}

#[cfg(test)]
mod tests {
    use etter_pipeline::steps::plan_new;

    use super::*;

    #[test]
    fn estimates_follow_the_plan() {
        let config = DispatchConfig::default();
        let step = i64::try_from(config.estimate_step_duration.as_secs()).unwrap_or(0);
        // role_setup → document_linking → ai_assessment → skills_miner → architecture → catalog
        // → reskilling → finalize.
        assert_eq!(run_seconds(&plan_new(false), &config), 8 * step);
        assert_eq!(run_seconds(&plan_new(true), &config), 4 * step);
        assert_eq!(tokens(&plan_new(true), &config), config.estimate_llm_step_tokens);
        assert_eq!(tokens(&plan_new(false), &config), 8 * config.estimate_llm_step_tokens);
        let plan = plan_new(true);
        assert_eq!(remaining_seconds(&plan, &config, Some(1), 0), 4 * step);
        assert_eq!(remaining_seconds(&plan, &config, None, 2), 2 * step);
        assert_eq!(remaining_seconds(&plan, &config, None, 4), 0);
        let cap = u32::try_from(config.max_processing_per_company).unwrap_or(u32::MAX);
        assert_eq!(remaining_seconds(&plan, &config, Some(cap + 1), 0), 8 * step);
    }
}
