//! `Retry`: a new run of a FAILED, DEGRADED, STALE or CANCELLED role that re-runs only what is
//! needed and reuses the kept outputs of the run it supersedes (docs/ARCHITECTURE.md, "The lifecycle" and "The step graph").
//!
//! The plan is made here, once, and kept with the new run (the dispatcher hands it to the
//! workflow): a STALE run is re-planned from its documents' current content hashes
//! ([`etter_core::steps::plan_rerun`], with the early cutoff); any other run from what its steps left
//! ([`etter_core::steps::plan_retry`]: failed and not-reached steps, or the steps the caller names, with what
//! depends on them). Steps named by the caller always win: a STALE run retried with explicit
//! `steps` is planned by `plan_retry` too (those steps and their dependents run, even if their
//! inputs did not change).
//!
//! A Retry may choose the model the steps it re-runs ask (one of `models.allowed`); the new run
//! keeps it and the worker asks it. With a model and no steps, every step that asks a model
//! re-runs, so a READY run may be retried that way too: the point is to compare the answers.

use etter_core::ids::{RoleId, WorkflowId};
use etter_core::lifecycle::RunState;
use etter_core::steps::{DocumentKind, Plan, PlanError, StepName};
use etter_proto::v1 as pb;
use etter_store::{Admission, NewRun, Run, RunStore, StoreError};

use crate::limits::Limits;
use crate::trace::RequestTrace;
use crate::{
    convert::StoredOptions,
    error::ApiError,
    estimate::Estimator,
    idempotency::{self, Idempotency},
    principal::Principal,
    status,
};

/// The `ErrorInfo.reason` of an invalid Retry request.
const INVALID_REQUEST: &str = "INVALID_REQUEST";

/// The `ErrorInfo.reason` of a Retry choosing a model the server does not allow.
const MODEL_NOT_ALLOWED: &str = "MODEL_NOT_ALLOWED";

/// What a Retry needs from the server.
pub struct RetryContext<'a> {
    /// The run store.
    pub store: &'a dyn RunStore,
    /// ETAs and token estimates from measured step costs.
    pub estimator: &'a Estimator,
    /// The request's trace, kept with the new run.
    pub trace: RequestTrace,
    /// Calls per minute and queued-run caps.
    pub limits: &'a Limits,
    /// Creates the new run, and starts it at once as a push's.
    pub dispatcher: &'a std::sync::Arc<crate::dispatch::Dispatcher>,
    /// The models a Retry may choose.
    pub models: &'a crate::config::ModelsConfig,
}

/// The target and steps of a Retry, checked before anything is read.
pub(crate) struct ValidRetry {
    target: Target,
    steps: Vec<StepName>,
    request_id: Option<etter_core::ids::RequestId>,
    model: Option<String>,
}

enum Target {
    Run(String),
    Role(RoleId),
}

pub(crate) fn validate(
    request: &pb::RetryRequest,
    models: &crate::config::ModelsConfig,
) -> Result<ValidRetry, ApiError> {
    use pb::retry_request::Target as Pb;
    let target = match &request.target {
        Some(Pb::WorkflowId(id)) => {
            WorkflowId::parse(id).map_err(|e| ApiError::invalid(INVALID_REQUEST, "workflow_id", e.problem))?;
            Target::Run(id.clone())
        }
        Some(Pb::RoleId(id)) => {
            Target::Role(RoleId::parse(id).map_err(|e| ApiError::invalid(INVALID_REQUEST, "role_id", e.problem))?)
        }
        None => return Err(ApiError::invalid(INVALID_REQUEST, "target", "set workflow_id or role_id")),
    };
    let steps = etter_core::steps::parse_steps(&request.steps)
        .map_err(|e| ApiError::invalid(INVALID_REQUEST, "steps", e.to_string()))?;
    let request_id = idempotency::request_id(&request.request_id, INVALID_REQUEST)?;
    let model = match request.model.as_str() {
        "" => None,
        model if models.allows(model) => Some(model.to_owned()),
        model if models.allowed.is_empty() => {
            return Err(ApiError::invalid(
                MODEL_NOT_ALLOWED,
                "model",
                format!(
                    "model `{model}` cannot be chosen: this server allows no model choice (models.allowed is empty)"
                ),
            ));
        }
        model => {
            return Err(ApiError::invalid(
                MODEL_NOT_ALLOWED,
                "model",
                format!("model `{model}` is not allowed; allowed models: {}", models.allowed.join(", ")),
            ));
        }
    };
    Ok(ValidRetry { target, steps, request_id, model })
}

/// Refuses a Retry of a run in `state` with what to do instead; `Ok` for the states that allow one
/// (and for a READY run when the Retry chooses a model).
fn check_retryable(run: &Run, with_model: bool) -> Result<(), ApiError> {
    let id = run.workflow_id.to_string();
    let what_to_do = match run.state {
        RunState::Failed | RunState::Degraded | RunState::Stale | RunState::Cancelled => return Ok(()),
        RunState::Ready if with_model => return Ok(()),
        RunState::Ready => {
            "every step completed, so there is nothing to retry; to run it again anyway, Push the role with \
             options.force_rerun, or Retry it with another model"
        }
        RunState::Validating | RunState::Queued | RunState::Processing => {
            "it has not ended yet; wait for it to end (watch it), or Cancel it and then Retry"
        }
        RunState::ValidationError => {
            "it was rejected for invalid inputs and never ran; Push the role again with corrected inputs"
        }
    };
    Err(ApiError::precondition("RUN_NOT_RETRYABLE", id.clone(), format!("run {id} is {}: {what_to_do}", run.state)))
}

/// The plan of the new run.
async fn plan(store: &dyn RunStore, old: &Run, explicit: &[StepName]) -> Result<Plan, ApiError> {
    let prior = etter_store::prior_steps(&store.steps(&old.workflow_id).await?);
    let skip = StoredOptions::of(&old.options).skip_enhancement_workflows;
    let plan = if old.state == RunState::Stale && explicit.is_empty() {
        let uris: Vec<String> = old.documents.iter().map(|d| d.uri.clone()).collect();
        let hashes = store.document_hashes(&uris).await?;
        // Documents whose hash was never recorded are left out: the steps consuming them see a
        // changed input and run.
        let documents: Vec<(DocumentKind, _)> = old
            .documents
            .iter()
            .filter_map(|d| {
                let hash = hashes.iter().find(|h| h.uri == d.uri)?;
                Some((d.step_kind(), hash.content_hash.clone()))
            })
            .collect();
        etter_core::steps::plan_rerun(&prior, &old.role_identity(), &documents, skip)
    } else {
        etter_core::steps::plan_retry(&prior, explicit, skip).map_err(|e| plan_error(old, e))?
    };
    if plan.to_run().is_empty() {
        return Err(plan_error(old, PlanError::NothingToRun));
    }
    Ok(plan)
}

/// What a Retry with a model and no steps re-runs: the steps that ask a model, those the run's
/// options leave in; for a STALE run, from its documents on (they changed: the steps read them
/// again, and `document_linking` records what they hold now).
fn model_steps(state: RunState, skip_enhancement: bool) -> Vec<StepName> {
    let stale = (state == RunState::Stale).then_some(StepName::DocumentLinking);
    let asking = StepName::ALL.into_iter().filter(|s| s.spec().uses_llm && (s.is_critical() || !skip_enhancement));
    stale.into_iter().chain(asking).collect()
}

fn plan_error(old: &Run, err: PlanError) -> ApiError {
    match err {
        PlanError::UnknownStep(_) | PlanError::SkippedByOptions(_) => {
            ApiError::invalid(INVALID_REQUEST, "steps", err.to_string())
        }
        PlanError::NothingToRun => ApiError::precondition(
            "NOTHING_TO_RETRY",
            old.workflow_id.to_string(),
            format!("{err}; name the steps to re-run in `steps`, or Push the role with options.force_rerun"),
        ),
    }
}

/// The run a Retry is about: by workflow id (a run of another company is NOT_FOUND), or a role's
/// latest run.
async fn target_run(store: &dyn RunStore, principal: &Principal, target: &Target) -> Result<Run, ApiError> {
    match target {
        Target::Run(id) => status::visible_run(store, principal, id).await,
        Target::Role(role) => {
            let run = store.latest_run(role).await?;
            principal.authorize_read(&run.company_id, "role", role.as_str())?;
            Ok(run)
        }
    }
}

/// `Retry`: authorize, validate, answer a retried `request_id` with its first answer, check that
/// the run is the role's latest and has ended in a retryable state, plan, and create the new run
/// (QUEUED) superseding it.
pub async fn retry(
    cx: &RetryContext<'_>,
    principal: &Principal,
    request: pb::RetryRequest,
) -> Result<pb::RetryResponse, ApiError> {
    principal.require_operator()?;
    let valid = validate(&request, cx.models)?;
    let old = target_run(cx.store, principal, &valid.target).await?;
    principal.authorize_write(&old.company_id)?;
    cx.limits.admit_call(&old.company_id)?;
    let mut payload = request.clone();
    payload.request_id.clear();
    let idempotency =
        Idempotency::new(cx.store, "Retry", &old.company_id, valid.request_id, idempotency::payload_hash(&payload));
    if let Some(answer) = idempotency.replay().await? {
        return Ok(answer);
    }

    let latest = cx.store.latest_run(&old.role_id).await?;
    if latest.workflow_id != old.workflow_id {
        let id = old.workflow_id.to_string();
        return Err(ApiError::precondition(
            "NOT_LATEST_RUN",
            id.clone(),
            format!(
                "run {id} is not the latest run of role {}: {} is; retry that run (or retry by role_id)",
                old.role_id, latest.workflow_id
            ),
        ));
    }
    check_retryable(&old, valid.model.is_some())?;
    cx.limits.admit_queued(cx.store, &old.company_id, 1).await?;
    let steps = if valid.model.is_some() && valid.steps.is_empty() {
        model_steps(old.state, StoredOptions::of(&old.options).skip_enhancement_workflows)
    } else {
        valid.steps
    };
    let plan = plan(cx.store, &old, &steps).await?;
    let new = NewRun {
        company: old.company_id.clone(),
        role_name: old.role_name.clone(),
        draup_role_id: old.draup_role_id.clone(),
        input_identity: old.input_identity.clone(),
        documents: old.documents.clone(),
        options: old.options.clone(),
        priority: old.priority,
        token_estimate: cx.estimator.tokens(&plan),
        force: true,
        expected_latest: Some(old.workflow_id.clone()),
        admission: Admission::Queue,
        plan: Some(plan),
        reason: format!("retry of {} by {}", old.workflow_id, principal.user),
        notify: old.notify,
        trace_id: cx.trace.id.clone(),
        trace_parent: cx.trace.parent.clone(),
        // A deadline belongs to the push that set it.
        deadline: None,
        model: valid.model,
    };
    cx.limits.admit_tokens(cx.store, &new.company, 1, new.token_estimate).await?;
    let created = match cx.dispatcher.create(cx.store, new).await {
        Ok(created) => created,
        Err(StoreError::Conflict(message)) => {
            return Err(ApiError::Aborted {
                reason: "CONCURRENT_RETRY",
                subject: old.workflow_id.to_string(),
                description: format!("another request created a new run of the role first: {message}"),
            });
        }
        Err(e) => return Err(e.into()),
    };
    if created.created {
        etter_telemetry::metrics::runs_created("retry", 1);
    }
    // Like a push, the answer comes from the store alone (no outputs summary).
    let sources = status::StatusContext { store: cx.store, estimator: cx.estimator, finished: None, kept: None };
    let response = pb::RetryResponse {
        run: Some(status::run_status(&sources, &created.run).await?),
        superseded_workflow_id: old.workflow_id.to_string(),
    };
    idempotency.remember(response).await
}

#[cfg(test)]
mod tests {
    use etter_core::steps::PriorOutcome;
    use etter_store::{StepAttempt, StepStatus};

    use super::*;

    fn attempt(step: &str, attempt: u32, status: StepStatus) -> StepAttempt {
        StepAttempt {
            step: step.to_owned(),
            attempt,
            status,
            started_at: None,
            finished_at: None,
            tokens: Default::default(),
            input_hash: Some(format!("in-{step}-{attempt}")),
            output_hash: (status == StepStatus::Completed || status == StepStatus::Reused)
                .then(|| format!("out-{step}")),
            error: None,
            reused_from: None,
            model: None,
            prompt_version: None,
            digest: None,
            update_time: etter_store::now(),
        }
    }

    #[test]
    fn the_latest_attempt_of_each_step_decides() {
        let attempts = vec![
            attempt("role_setup", 1, StepStatus::Reused),
            attempt("ai_assessment", 2, StepStatus::Completed),
            attempt("ai_assessment", 1, StepStatus::Retrying),
            attempt("task_feasibility", 1, StepStatus::Retrying),
            attempt("task_feasibility", 3, StepStatus::Failed),
            attempt("task_feasibility", 2, StepStatus::Retrying),
            attempt("reskilling", 1, StepStatus::Cancelled),
            attempt("an_old_step", 1, StepStatus::Completed),
        ];
        let prior = etter_store::prior_steps(&attempts);
        let outcome = |s: StepName| prior.get(&s).map(|p| p.outcome);
        assert_eq!(outcome(StepName::RoleSetup), Some(PriorOutcome::Completed));
        assert_eq!(outcome(StepName::AiAssessment), Some(PriorOutcome::Completed));
        assert_eq!(prior[&StepName::AiAssessment].input_hash.as_deref(), Some("in-ai_assessment-2"));
        assert_eq!(outcome(StepName::TaskFeasibility), Some(PriorOutcome::Failed));
        assert_eq!(outcome(StepName::Reskilling), Some(PriorOutcome::NotRun));
        assert_eq!(outcome(StepName::Finalize), None);
        assert_eq!(prior.len(), 4);
    }

    #[test]
    fn unknown_steps_are_field_violations_on_steps() {
        let request = pb::RetryRequest {
            target: Some(pb::retry_request::Target::RoleId("cr-acme-claims-adjuster".into())),
            steps: vec!["skills_miner".into(), "nope".into()],
            ..Default::default()
        };
        let models = crate::config::ModelsConfig::default();
        match validate(&request, &models) {
            Err(ApiError::InvalidArgument { violations, .. }) => {
                assert_eq!(violations.len(), 1);
                assert_eq!(violations[0].field, "steps");
                assert!(violations[0].description.contains("nope"), "{}", violations[0].description);
            }
            Err(other) => panic!("expected INVALID_ARGUMENT, got {other:?}"),
            Ok(_) => panic!("an unknown step must be refused"),
        }
        let no_target = pb::RetryRequest::default();
        assert!(matches!(validate(&no_target, &models), Err(ApiError::InvalidArgument { .. })));
    }

    #[test]
    fn a_model_must_be_allowed_and_a_refusal_lists_the_allowed_ones() {
        let request = |model: &str| pb::RetryRequest {
            target: Some(pb::retry_request::Target::RoleId("cr-acme-claims-adjuster".into())),
            model: model.into(),
            ..Default::default()
        };
        let models = crate::config::ModelsConfig { allowed: vec!["gpt-4o".into(), "gpt-4o-mini".into()] };
        assert!(validate(&request("gpt-4o-mini"), &models).is_ok_and(|v| v.model.as_deref() == Some("gpt-4o-mini")));
        assert!(validate(&request(""), &models).is_ok_and(|v| v.model.is_none()));
        match validate(&request("o3"), &models) {
            Err(ApiError::InvalidArgument { violations, .. }) => {
                assert_eq!(violations[0].field, "model");
                assert!(violations[0].description.contains("gpt-4o, gpt-4o-mini"), "{}", violations[0].description);
            }
            other => panic!("expected INVALID_ARGUMENT, got {:?}", other.err()),
        }
        let none = crate::config::ModelsConfig { allowed: Vec::new() };
        assert!(matches!(validate(&request("gpt-4o"), &none), Err(ApiError::InvalidArgument { .. })));
    }

    #[test]
    fn a_model_alone_re_runs_the_steps_that_ask_one() {
        let all = model_steps(RunState::Ready, false);
        assert!(all.contains(&StepName::AiAssessment) && all.contains(&StepName::Reskilling));
        assert!(!all.contains(&StepName::RoleSetup) && !all.contains(&StepName::Finalize));
        assert!(!all.contains(&StepName::DocumentLinking), "a READY run's documents are as they were");
        let critical = model_steps(RunState::Failed, true);
        assert!(critical.iter().all(|s| s.is_critical()) && critical.contains(&StepName::AiAssessment));
        // A STALE run's documents changed: they are read again too.
        assert!(model_steps(RunState::Stale, false).contains(&StepName::DocumentLinking));
    }
}
