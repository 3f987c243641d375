//! `CompareRuns`: two runs of one role, step by step — which steps ran and which reused an
//! earlier output, whose inputs changed, what each took (duration, tokens, model), and how the
//! outputs differ, from the digests each step keeps in the run store (the role graph holds only
//! the latest run's outputs).

use etter_core::digest;
use etter_core::steps::StepName;
use etter_proto::v1 as pb;
use etter_store::{Run, RunStore, StepAttempt};

use crate::{
    convert,
    error::{ApiError, Violation},
    estimate::Estimator,
    limits::Limits,
    principal::Principal,
    status,
};

/// The `ErrorInfo.reason` of an invalid CompareRuns request.
const INVALID_REQUEST: &str = "INVALID_REQUEST";

/// What `CompareRuns` reads.
pub struct CompareContext<'a> {
    /// The run store.
    pub store: &'a dyn RunStore,
    /// ETAs, for the two runs' statuses.
    pub estimator: &'a Estimator,
    /// Calls per minute.
    pub limits: &'a Limits,
}

/// `CompareRuns`: both runs must be visible to the caller and of one role.
pub async fn compare_runs(
    cx: &CompareContext<'_>,
    principal: &Principal,
    request: pb::CompareRunsRequest,
) -> Result<pb::CompareRunsResponse, ApiError> {
    let missing: Vec<Violation> =
        [("base_workflow_id", &request.base_workflow_id), ("workflow_id", &request.workflow_id)]
            .into_iter()
            .filter(|(_, id)| id.is_empty())
            .map(|(field, _)| Violation::new(field, "is required: the workflow id of a run"))
            .collect();
    if !missing.is_empty() {
        return Err(ApiError::InvalidArgument { reason: INVALID_REQUEST, violations: missing });
    }
    let base = visible(cx.store, principal, &request.base_workflow_id, "base_workflow_id").await?;
    let run = visible(cx.store, principal, &request.workflow_id, "workflow_id").await?;
    if base.role_id != run.role_id {
        return Err(ApiError::invalid(
            INVALID_REQUEST,
            "workflow_id",
            format!(
                "run {} is of role {}, the base run {} of role {}: compare two runs of one role",
                run.workflow_id, run.role_id, base.workflow_id, base.role_id
            ),
        ));
    }
    cx.limits.admit_call(&run.company_id)?;
    let (base_attempts, run_attempts) =
        tokio::try_join!(cx.store.steps(&base.workflow_id), cx.store.steps(&run.workflow_id))?;
    let sources = status::StatusContext { store: cx.store, estimator: cx.estimator, finished: None, kept: None };
    let base_status = status::status_with(&sources, &base, &base_attempts).await?;
    let run_status = status::status_with(&sources, &run, &run_attempts).await?;
    let steps = StepName::ALL
        .into_iter()
        .map(|step| compare_step(step, (&base_status, &base_attempts), (&run_status, &run_attempts)))
        .collect();
    Ok(pb::CompareRunsResponse { base: Some(base_status), run: Some(run_status), steps })
}

/// A run the caller may see; a malformed id is a violation of `field`.
async fn visible(store: &dyn RunStore, principal: &Principal, id: &str, field: &str) -> Result<Run, ApiError> {
    etter_core::ids::WorkflowId::parse(id).map_err(|e| ApiError::invalid(INVALID_REQUEST, field, e.to_string()))?;
    status::visible_run(store, principal, id).await
}

/// One step of both runs.
fn compare_step(
    step: StepName,
    (base_status, base_attempts): (&pb::RunStatus, &[StepAttempt]),
    (run_status, run_attempts): (&pb::RunStatus, &[StepAttempt]),
) -> pb::StepComparison {
    let progress = |status: &pb::RunStatus| {
        status.progress.as_ref().and_then(|p| p.steps.iter().find(|s| s.name == step.as_str())).cloned()
    };
    let (base, run) = (progress(base_status), progress(run_status));
    let differ = |field: fn(&pb::StepProgress) -> &str| match (&base, &run) {
        (Some(a), Some(b)) => !field(a).is_empty() && !field(b).is_empty() && field(a) != field(b),
        _ => false,
    };
    let ran = run.as_ref().is_some_and(|r| {
        matches!(
            pb::StepState::try_from(r.status),
            Ok(pb::StepState::Completed | pb::StepState::Failed | pb::StepState::Running | pb::StepState::Retrying)
        )
    });
    let diff = match (status::kept_digest(base_attempts, step), status::kept_digest(run_attempts, step)) {
        (Some(a), Some(b)) => digest::diff(&a.items, &b.items),
        _ => digest::ItemDiff::default(),
    };
    pb::StepComparison {
        step: step.as_str().to_owned(),
        ran,
        input_changed: differ(|p| &p.input_hash),
        output_changed: differ(|p| &p.output_hash),
        model_changed: differ(|p| &p.model),
        base,
        run,
        added: diff.added.iter().map(convert::output_item).collect(),
        removed: diff.removed.iter().map(convert::output_item).collect(),
        changed: diff
            .changed
            .iter()
            .map(|(a, b)| pb::OutputChange { base: Some(convert::output_item(a)), run: Some(convert::output_item(b)) })
            .collect(),
    }
}
