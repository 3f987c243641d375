//! `Cancel`: stops a QUEUED or PROCESSING run; the run becomes CANCELLED and keeps what its
//! finished steps wrote (docs/ARCHITECTURE.md, "The lifecycle").
//!
//! - **QUEUED**: no workflow exists yet, so the run is moved to CANCELLED at once (Temporal is not
//!   needed). If the dispatcher started its workflow meanwhile, the dispatcher finds the run
//!   CANCELLED when it books the start and cancels that workflow.
//! - **PROCESSING**: Temporal is asked to cancel the workflow first (the cancellation reaches the
//!   running activity through its heartbeats), then the run is moved to CANCELLED, its open steps
//!   closed CANCELLED in the same write (the worker's later reports change nothing). If
//!   Temporal cannot be reached the answer is `UNAVAILABLE` and nothing changes, so a run is never
//!   shown CANCELLED while its workflow runs on unaware.

use crate::orchestrator::{Orchestrator, OrchestratorError};
use etter_core::lifecycle::RunState;
use etter_proto::v1 as pb;
use etter_store::{PipelineError, Run, RunStore, StoreError, Transition};

use crate::limits::Limits;
use crate::{
    error::ApiError,
    estimate::Estimator,
    idempotency::{self, Idempotency},
    principal::Principal,
    status,
};

/// The `ErrorInfo.reason` of an invalid Cancel request.
const INVALID_REQUEST: &str = "INVALID_REQUEST";

/// Longest `reason` a caller may give.
pub const MAX_REASON_CHARS: usize = 1000;

/// What a Cancel needs from the server.
pub struct CancelContext<'a> {
    /// The run store.
    pub store: &'a dyn RunStore,
    /// Temporal, to cancel running workflows.
    pub orchestrator: &'a dyn Orchestrator,
    /// `[dispatch]`, for the status estimates.
    pub estimator: &'a Estimator,
    /// Calls per minute and queued-run caps.
    pub limits: &'a Limits,
}

/// The run's error once cancelled.
fn cancelled_error(reason: &str) -> PipelineError {
    PipelineError {
        code: "CANCELLED".to_owned(),
        message: reason.to_owned(),
        recoverable: true,
        step: None,
        action: Some("Retry the role to run the steps that did not finish".to_owned()),
    }
}

fn not_active(run: &Run) -> ApiError {
    let id = run.workflow_id.to_string();
    ApiError::precondition(
        "RUN_NOT_ACTIVE",
        id.clone(),
        format!(
            "run {id} is {} and has already ended; only QUEUED or PROCESSING runs can be cancelled (Retry a \
             FAILED, DEGRADED, STALE or CANCELLED run to run it again)",
            run.state
        ),
    )
}

fn orchestrator_error(run: &Run, err: OrchestratorError) -> ApiError {
    match err {
        OrchestratorError::Unavailable(detail) => ApiError::Unavailable(format!(
            "cannot cancel the workflow of run {}: {detail}; the run is unchanged, retry the Cancel later",
            run.workflow_id
        )),
        other => ApiError::Internal(format!("cannot cancel the workflow of run {}: {other}", run.workflow_id)),
    }
}

/// `Cancel`: authorize, validate, answer a retried `request_id` with its first answer, and cancel
/// the run as its state requires (see the module docs).
pub async fn cancel(
    cx: &CancelContext<'_>,
    principal: &Principal,
    request: pb::CancelRequest,
) -> Result<pb::CancelResponse, ApiError> {
    principal.require_operator()?;
    if request.workflow_id.is_empty() {
        return Err(ApiError::invalid(INVALID_REQUEST, "workflow_id", "the run to cancel is required"));
    }
    if request.reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::invalid(INVALID_REQUEST, "reason", format!("at most {MAX_REASON_CHARS} characters")));
    }
    let request_id = idempotency::request_id(&request.request_id, INVALID_REQUEST)?;
    let run = status::visible_run(cx.store, principal, &request.workflow_id).await?;
    principal.authorize_write(&run.company_id)?;
    cx.limits.admit_call(&run.company_id)?;
    let mut payload = request.clone();
    payload.request_id.clear();
    let idempotency =
        Idempotency::new(cx.store, "Cancel", &run.company_id, request_id, idempotency::payload_hash(&payload));
    if let Some(answer) = idempotency.replay().await? {
        return Ok(answer);
    }

    let mut reason = format!("cancelled by {}", principal.user);
    let given = request.reason.trim();
    if !given.is_empty() {
        reason = format!("{reason}: {given}");
    }
    let cancelled = cancel_run(cx, run, &reason).await?;
    let sources = status::StatusContext { store: cx.store, estimator: cx.estimator, finished: None, kept: None };
    let response = pb::CancelResponse { run: Some(status::run_status(&sources, &cancelled).await?) };
    idempotency.remember(response).await
}

async fn cancel_run(cx: &CancelContext<'_>, run: Run, reason: &str) -> Result<Run, ApiError> {
    let change = || Transition::failing(RunState::Cancelled, reason, cancelled_error(reason));
    let mut run = run;
    // At most three times: a VALIDATING run may be queued, and a QUEUED run may turn PROCESSING,
    // between the read and the write.
    for _ in 0..3 {
        match run.state {
            RunState::Validating | RunState::Queued => match cx.store.transition(&run.workflow_id, change()).await {
                Ok(cancelled) => {
                    // Started (PROCESSING) and cancelled in between our read and our write:
                    // its workflow runs, so ask Temporal to stop it too (best effort; the run
                    // is CANCELLED either way and the worker leaves it so).
                    if cancelled.start_time.is_some()
                        && let Err(e) = cx.orchestrator.cancel(&cancelled.workflow_id, reason).await
                    {
                        tracing::warn!(workflow_id = %cancelled.workflow_id, error = %e,
                            "the run was cancelled while it started; its workflow could not be cancelled");
                    }
                    return Ok(cancelled);
                }
                Err(StoreError::IllegalTransition(_)) => run = cx.store.get_run(&run.workflow_id).await?,
                Err(e) => return Err(e.into()),
            },
            RunState::Processing => {
                cx.orchestrator.cancel(&run.workflow_id, reason).await.map_err(|e| orchestrator_error(&run, e))?;
                return match cx.store.transition(&run.workflow_id, change()).await {
                    Ok(cancelled) => Ok(cancelled),
                    // The worker recorded an outcome (or another Cancel won) in the meantime.
                    Err(StoreError::IllegalTransition(_)) => {
                        let now = cx.store.get_run(&run.workflow_id).await?;
                        if now.state == RunState::Cancelled { Ok(now) } else { Err(not_active(&now)) }
                    }
                    Err(e) => Err(e.into()),
                };
            }
            _ => return Err(not_active(&run)),
        }
    }
    Err(not_active(&run))
}
