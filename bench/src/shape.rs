//! The same-shape baseline of the end-to-end scenario: the pipeline's own workflow
//! (`etter_worker::workflows::RoleOnboarding` — the same code, patch markers, branches, activity
//! options and local bookkeeping), started the way the dispatcher starts it, on a worker whose
//! activities have the pipeline's names, inputs and outputs but bodies that answer at once.
//! What Temporal charges for the shape is then measured apart from what the activities' bodies
//! cost (store, graph, documents, the offline model): their ratio is the scenario's headline.

use std::sync::Arc;

use etter_core::lifecycle::RunState;
use etter_core::steps::StepName;
use etter_worker::activities::{
    AttemptsInput, BeginInput, OutcomeInput, OutcomeReport, RecordedStep, StepInput, StepReport, outcome_of,
};
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};

/// Activities registered under the pipeline's activity names, doing nothing: each step answers a
/// report as large as a real one (a SHA-256 output hash in hex), the bookkeeping answers what a
/// run without failures records.
pub struct ShapedActivities;

/// A step's report as the real activity answers it, without the work behind it.
fn report(input: &StepInput, step: StepName) -> Result<StepReport, ActivityError> {
    if input.step != step {
        let message = format!("{} was scheduled as the activity of {}", input.step.as_str(), step.as_str());
        return Err(ActivityError::application(ApplicationFailure::builder(message).non_retryable(true).build()));
    }
    Ok(StepReport { step, output_hash: format!("{:064x}", step as u64) })
}

/// The activities, in a module of their own: the workflow calls the pipeline's own activity
/// handles and these are found by name, so the handles the macro makes for them go unused.
mod registered {
    #![allow(dead_code, reason = "registered by name; called through the pipeline's own activity handles")]

    use super::*;

    #[activities]
    impl ShapedActivities {
        #[activity(name = "BeginRun")]
        pub async fn begin_run(
            self: Arc<Self>,
            _ctx: ActivityContext,
            _input: BeginInput,
        ) -> Result<(), ActivityError> {
            Ok(())
        }

        #[activity(name = "RecordOutcome")]
        pub async fn record_outcome(
            self: Arc<Self>,
            _ctx: ActivityContext,
            input: OutcomeInput,
        ) -> Result<OutcomeReport, ActivityError> {
            let failed: Vec<StepName> = input.failed.iter().map(|f| f.step).collect();
            Ok(OutcomeReport { state: outcome_of(&failed, input.cancelled) })
        }

        #[activity(name = "RecordedStep")]
        pub async fn recorded_step(
            self: Arc<Self>,
            _ctx: ActivityContext,
            _input: AttemptsInput,
        ) -> Result<RecordedStep, ActivityError> {
            Ok(RecordedStep { last_attempt: 0, completed: false })
        }

        #[activity(name = "RoleSetupActivity")]
        pub async fn role_setup(
            self: Arc<Self>,
            _ctx: ActivityContext,
            input: StepInput,
        ) -> Result<StepReport, ActivityError> {
            report(&input, StepName::RoleSetup)
        }

        #[activity(name = "DocumentLinkingActivity")]
        pub async fn document_linking(
            self: Arc<Self>,
            _ctx: ActivityContext,
            input: StepInput,
        ) -> Result<StepReport, ActivityError> {
            report(&input, StepName::DocumentLinking)
        }

        #[activity(name = "AIAssessmentActivity")]
        pub async fn ai_assessment(
            self: Arc<Self>,
            _ctx: ActivityContext,
            input: StepInput,
        ) -> Result<StepReport, ActivityError> {
            report(&input, StepName::AiAssessment)
        }

        #[activity(name = "StepExecutorActivity")]
        pub async fn step_executor(
            self: Arc<Self>,
            _ctx: ActivityContext,
            input: StepInput,
        ) -> Result<StepReport, ActivityError> {
            report(&input, StepName::StepExecutor)
        }

        #[activity(name = "StandardizationActivity")]
        pub async fn standardization(
            self: Arc<Self>,
            _ctx: ActivityContext,
            input: StepInput,
        ) -> Result<StepReport, ActivityError> {
            report(&input, StepName::Standardization)
        }

        #[activity(name = "SkillsMinerActivity")]
        pub async fn skills_miner(
            self: Arc<Self>,
            _ctx: ActivityContext,
            input: StepInput,
        ) -> Result<StepReport, ActivityError> {
            report(&input, StepName::SkillsMiner)
        }

        #[activity(name = "SkillsArchitectureActivity")]
        pub async fn skills_architecture(
            self: Arc<Self>,
            _ctx: ActivityContext,
            input: StepInput,
        ) -> Result<StepReport, ActivityError> {
            report(&input, StepName::SkillsArchitecture)
        }

        #[activity(name = "SkillsCatalogActivity")]
        pub async fn skills_catalog(
            self: Arc<Self>,
            _ctx: ActivityContext,
            input: StepInput,
        ) -> Result<StepReport, ActivityError> {
            report(&input, StepName::SkillsCatalog)
        }

        #[activity(name = "ReskillingActivity")]
        pub async fn reskilling(
            self: Arc<Self>,
            _ctx: ActivityContext,
            input: StepInput,
        ) -> Result<StepReport, ActivityError> {
            report(&input, StepName::Reskilling)
        }

        #[activity(name = "TaskFeasibilityActivity")]
        pub async fn task_feasibility(
            self: Arc<Self>,
            _ctx: ActivityContext,
            input: StepInput,
        ) -> Result<StepReport, ActivityError> {
            report(&input, StepName::TaskFeasibility)
        }

        #[activity(name = "FinalizeActivity")]
        pub async fn finalize(
            self: Arc<Self>,
            _ctx: ActivityContext,
            input: StepInput,
        ) -> Result<StepReport, ActivityError> {
            report(&input, StepName::Finalize)
        }
    }
}

/// Whether a same-shape run ended as a run of the pipeline without failures does.
pub fn ended_ready(state: RunState, completed: &[StepName]) -> bool {
    state == RunState::Ready && completed.len() == StepName::ALL.len()
}
