//! The interface between the server and the worker: the onboarding workflow's registered name,
//! its task queue and its input and output.
//!
//! The server starts workflows through this interface by name (it never depends on the worker
//! crate); the worker registers its workflow under the same name. Payloads carry ids, hashes and
//! small summaries only — document text and step outputs live in the stores, never in workflow
//! history.

use serde::{Deserialize, Serialize};

use crate::ids::{CompanyId, RoleId, TraceId, WorkflowId};
use crate::lifecycle::RunState;
use crate::steps::{Action, StepName};

/// The registered name of the parent workflow (`RoleOnboardingWorkflow`, the name the Temporal UI shows).
pub const ROLE_ONBOARDING_WORKFLOW: &str = "RoleOnboardingWorkflow";
/// The registered name of the AI assessment child workflow.
pub const AI_ASSESSMENT_WORKFLOW: &str = "AIAssessmentWorkflow";
/// The registered name of the top-tasks child workflow.
pub const TOP_TASKS_WORKFLOW: &str = "TopTasksWorkflow";
/// The registered name of the skills-analysis child workflow.
pub const SKILLS_ANALYSIS_WORKFLOW: &str = "SkillsAnalysisWorkflow";

/// The registered name of the staleness scan: re-hashes the documents of READY and
/// DEGRADED roles and marks changed ones STALE. Run by the worker's schedule and on demand.
pub const STALENESS_SCAN_WORKFLOW: &str = "StalenessScanWorkflow";

/// The input of [`ROLE_ONBOARDING_WORKFLOW`]: which run to execute and what to do with each step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleOnboardingInput {
    /// The run (also the Temporal workflow id).
    pub workflow_id: WorkflowId,
    /// The run's role.
    pub role_id: RoleId,
    /// The role's company.
    pub company_id: CompanyId,
    /// What the run does with each step, in topological order (see [`crate::steps::Plan`]).
    pub plan: Vec<(StepName, Action)>,
    /// The earlier run whose kept outputs `Reuse` steps take, if any.
    pub reuse_from: Option<WorkflowId>,
    /// Reuse a `Run` step's earlier output (from `reuse_from`) when its input hash came out
    /// unchanged at run time ([`crate::steps::Plan::early_cutoff`]).
    #[serde(default)]
    pub early_cutoff: bool,
    /// The trace id of the request that created the run, carried into activities' spans.
    #[serde(default)]
    pub trace_id: Option<TraceId>,
    /// Tells this run from another with the same workflow id: ids restart from `-1` in a new run
    /// store while Temporal keeps the closed workflows of an old one. The run's creation time and
    /// trace id, kept in the workflow's memo ([`RUN_KEY_MEMO`]); empty for inputs of older servers.
    #[serde(default)]
    pub run_key: String,
}

/// The memo field of an onboarding workflow holding its input's `run_key`.
pub const RUN_KEY_MEMO: &str = "etter_run_key";

/// The output of [`ROLE_ONBOARDING_WORKFLOW`]: the outcome the last activity recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleOnboardingOutput {
    /// READY, DEGRADED, FAILED or CANCELLED.
    pub state: RunState,
    /// Steps that completed or were reused.
    pub completed: Vec<StepName>,
    /// Steps that failed.
    pub failed: Vec<StepName>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RoleName;

    #[test]
    fn the_input_round_trips_as_json_and_stays_small() -> anyhow::Result<()> {
        let company = CompanyId::parse("liberty")?;
        let role = RoleId::new(&company, &RoleName::parse("Claims Adjuster")?);
        let input = RoleOnboardingInput {
            workflow_id: WorkflowId::for_run(&role, 1),
            role_id: role,
            company_id: company,
            plan: crate::steps::plan_new(false).steps,
            reuse_from: None,
            early_cutoff: false,
            trace_id: Some(TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736")?),
            run_key: "2026-11-26T09:00:00.000000Z/4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
        };
        let json = serde_json::to_string(&input)?;
        assert_eq!(serde_json::from_str::<RoleOnboardingInput>(&json)?, input);
        // Ids and a plan only: far below Temporal's payload limits, nothing of the documents.
        assert!(json.len() < 1024, "{} bytes: {json}", json.len());
        Ok(())
    }
}
