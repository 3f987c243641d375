//! Retry and Cancel against the real run store, with Temporal unreachable: runs stay where the
//! tests put them (no dispatch), and the tests play the worker through the store API, so what
//! Retry plans and what Cancel does without Temporal is asserted exactly. The end-to-end behaviour
//! with a real worker is in `tests/suites/rerun.rs`.

use std::collections::BTreeMap;

use anyhow::{Context as _, ensure};
use etter_core::ids::WorkflowId;
use etter_core::lifecycle::RunState;
use etter_core::outputs::ContentHash;
use etter_core::steps::{Action, DocumentKind, StepName};
use etter_proto::v1::{self as pb, CancelRequest, RetryRequest, get_status_request::Target, retry_request};
use etter_store::StoreLocation;
use etter_store::{self, RunStore, StepStatus, StepTransition, Transition};
use tonic::Code;
use tonic_types::StatusExt as _;

use super::{
    PipelineServiceClient, Server, acme, doc_uri, push_request, server_without_temporal, status_of, violations,
    with_token,
};

async fn open_store(server: &Server) -> anyhow::Result<std::sync::Arc<dyn RunStore>> {
    Ok(etter_store::connect(&StoreLocation::Sqlite(server.data_dir.join("etter.db"))).await?)
}

/// The `PreconditionFailure` type of a FAILED_PRECONDITION (and its description).
fn precondition(status: &tonic::Status) -> anyhow::Result<(String, String)> {
    ensure!(status.code() == Code::FailedPrecondition, "expected FAILED_PRECONDITION, got {status:?}");
    let failure = status.get_details_precondition_failure().context("no PreconditionFailure")?;
    let violation = failure.violations.into_iter().next().context("no violation")?;
    Ok((violation.r#type, violation.description))
}

fn cancel(workflow_id: &str, request_id: &str) -> CancelRequest {
    CancelRequest { workflow_id: workflow_id.into(), reason: "wrong documents".into(), request_id: request_id.into() }
}

fn retry(target: retry_request::Target, steps: &[&str]) -> RetryRequest {
    RetryRequest {
        target: Some(target),
        steps: steps.iter().map(|s| (*s).to_owned()).collect(),
        request_id: String::new(),
        ..Default::default()
    }
}

#[tokio::test]
async fn cancel_needs_temporal_only_for_running_runs() -> anyhow::Result<()> {
    let server = server_without_temporal().await?;
    let operator = server.token(&["--company", &acme(), "--role", "operator", "--user", "jane"])?;
    let viewer = server.token(&["--company", &acme(), "--role", "viewer"])?;
    let other = server.token(&["--company", "globex", "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let store = open_store(&server).await?;

    // QUEUED: no workflow exists, Temporal is not needed.
    let queued = api.push(with_token(push_request("Claims Adjuster", &doc_uri(&server, "jd.pdf")), &operator)?).await?;
    let queued = queued.into_inner().workflow_id;
    let denied = api.cancel(with_token(cancel(&queued, ""), &viewer)?).await.err().context("a viewer")?;
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let hidden = api.cancel(with_token(cancel(&queued, ""), &other)?).await.err().context("another company")?;
    assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");

    let answer = api.cancel(with_token(cancel(&queued, "cancel-1"), &operator)?).await?.into_inner();
    let run = answer.run.clone().context("no run")?;
    assert_eq!(run.status(), pb::RoleStatus::Cancelled);
    let error = run.error.context("a cancelled run says why")?;
    assert_eq!(error.code, "CANCELLED");
    assert!(error.message.contains("jane") && error.message.contains("wrong documents"), "{error:?}");
    let seen = status_of(&mut api, &operator, Target::WorkflowId(queued.clone())).await?;
    assert_eq!(seen.status(), pb::RoleStatus::Cancelled);
    // The same request_id: the first answer; without it, the run has ended.
    let replayed = api.cancel(with_token(cancel(&queued, "cancel-1"), &operator)?).await?.into_inner();
    assert_eq!(replayed, answer);
    let ended = api.cancel(with_token(cancel(&queued, ""), &operator)?).await.err().context("ended")?;
    assert_eq!(precondition(&ended)?.0, "RUN_NOT_ACTIVE");

    // PROCESSING: the workflow must be cancelled first; Temporal is down, so nothing changes.
    let running = api.push(with_token(push_request("Underwriter", &doc_uri(&server, "uw.pdf")), &operator)?).await?;
    let running = WorkflowId::parse(&running.into_inner().workflow_id)?;
    store.transition(&running, Transition::to(RunState::Processing, "dispatched by the test")).await?;
    let before = store.get_run(&running).await?;
    let unavailable =
        api.cancel(with_token(cancel(running.as_str(), ""), &operator)?).await.err().context("Temporal is down")?;
    assert_eq!(unavailable.code(), Code::Unavailable, "{unavailable:?}");
    let after = store.get_run(&running).await?;
    assert_eq!((after.state, after.sequence), (RunState::Processing, before.sequence), "unchanged");
    store.close().await;
    Ok(())
}

/// Plays the worker for a run of the critical path: each step's attempt with the input hash the
/// worker computes, and a made-up output hash; `failing` fails instead, and ends the run there.
async fn play_steps(
    store: &dyn RunStore,
    run: &WorkflowId,
    documents: &[(DocumentKind, ContentHash)],
    failing: Option<StepName>,
) -> anyhow::Result<()> {
    let stored = store.get_run(run).await?;
    let identity = stored.role_identity();
    let mut outputs = BTreeMap::new();
    for step in [StepName::RoleSetup, StepName::DocumentLinking, StepName::AiAssessment, StepName::Finalize] {
        store.record_step(run, StepTransition::new(step.as_str(), 1, StepStatus::Running)).await?;
        if Some(step) == failing {
            store.record_step(run, StepTransition::new(step.as_str(), 1, StepStatus::Failed)).await?;
            return Ok(());
        }
        let mut done = StepTransition::new(step.as_str(), 1, StepStatus::Completed);
        done.input_hash = Some(etter_core::steps::input_hash(step, &identity, documents, &outputs));
        done.output_hash = Some(format!("out-{step}"));
        store.record_step(run, done).await?;
        outputs.insert(step, format!("out-{step}"));
    }
    Ok(())
}

fn actions(plan: &etter_core::steps::Plan) -> Vec<(&'static str, Action)> {
    plan.steps.iter().filter(|(_, a)| *a != Action::Skip).map(|(s, a)| (s.as_str(), *a)).collect()
}

#[tokio::test]
async fn retry_plans_from_what_the_old_run_left() -> anyhow::Result<()> {
    let server = server_without_temporal().await?;
    let operator = server.token(&["--company", &acme(), "--role", "operator", "--user", "jane"])?;
    let viewer = server.token(&["--company", &acme(), "--role", "viewer"])?;
    let other = server.token(&["--company", "globex", "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let store = open_store(&server).await?;
    let pushed = api.push(with_token(push_request("Claims Adjuster", &doc_uri(&server, "jd.pdf")), &operator)?).await?;
    let pushed = pushed.into_inner();
    let old = WorkflowId::parse(&pushed.workflow_id)?;
    let by_run = || retry_request::Target::WorkflowId(pushed.workflow_id.clone());

    // Still queued: nothing to retry yet, and the refusal says what to do.
    let active = api.retry(with_token(retry(by_run(), &[]), &operator)?).await.err().context("QUEUED")?;
    let (kind, description) = precondition(&active)?;
    assert_eq!(kind, "RUN_NOT_RETRYABLE");
    assert!(description.contains("Cancel"), "{description}");

    store.transition(&old, Transition::to(RunState::Processing, "dispatched by the test")).await?;
    play_steps(store.as_ref(), &old, &[], Some(StepName::AiAssessment)).await?;
    store.transition(&old, Transition::to(RunState::Failed, "ai_assessment failed")).await?;

    let denied = api.retry(with_token(retry(by_run(), &[]), &viewer)?).await.err().context("a viewer")?;
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    for target in [by_run(), retry_request::Target::RoleId(pushed.role_id.clone())] {
        let hidden = api.retry(with_token(retry(target, &[]), &other)?).await.err().context("another company")?;
        assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");
    }
    // The run skips enhancements: naming one is a field violation on `steps`.
    let skipped = api.retry(with_token(retry(by_run(), &["skills_miner"]), &operator)?).await.err().context("skip")?;
    assert_eq!((skipped.code(), violations(&skipped)), (Code::InvalidArgument, vec!["steps".to_owned()]));

    let answer = api.retry(with_token(retry(by_run(), &[]), &operator)?).await?.into_inner();
    let new = answer.run.context("no run")?;
    assert_eq!((new.status(), new.run_number, new.supersedes.as_str()), (pb::RoleStatus::Queued, 2, old.as_str()));
    let stored = store.get_run(&WorkflowId::parse(&new.workflow_id)?).await?;
    let plan = stored.plan.context("the new run keeps its plan")?;
    assert_eq!(
        actions(&plan),
        [
            ("role_setup", Action::Reuse),
            ("document_linking", Action::Reuse),
            ("ai_assessment", Action::Run),
            ("finalize", Action::Run)
        ]
    );
    assert!(!plan.early_cutoff);
    assert_eq!(store.get_run(&old).await?.superseded_by.as_ref(), Some(&stored.workflow_id));
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn retry_of_a_stale_run_reruns_what_its_changed_documents_feed() -> anyhow::Result<()> {
    let server = server_without_temporal().await?;
    let operator = server.token(&["--company", &acme(), "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let store = open_store(&server).await?;
    let uri = doc_uri(&server, "jd.pdf");
    let pushed = api.push(with_token(push_request("Claims Adjuster", &uri), &operator)?).await?.into_inner();
    let old = WorkflowId::parse(&pushed.workflow_id)?;
    let before = ContentHash("a".repeat(64));
    store.record_document_hash(&uri, &before, etter_store::now()).await?;
    store.transition(&old, Transition::to(RunState::Processing, "dispatched by the test")).await?;
    play_steps(store.as_ref(), &old, &[(DocumentKind::JobDescription, before)], None).await?;
    store.transition(&old, Transition::to(RunState::Ready, "done")).await?;
    store.transition(&old, Transition::to(RunState::Stale, "marked by the test")).await?;
    let by_role = || retry_request::Target::RoleId(pushed.role_id.clone());

    // Nothing actually changed: every step's inputs hash as before, so there is nothing to re-run.
    let nothing = api.retry(with_token(retry(by_role(), &[]), &operator)?).await.err().context("unchanged")?;
    assert_eq!(precondition(&nothing)?.0, "NOTHING_TO_RETRY");

    // The job description changed: every step reading it, and what follows, re-runs.
    store.record_document_hash(&uri, &ContentHash("b".repeat(64)), etter_store::now()).await?;
    let answer = api.retry(with_token(retry(by_role(), &[]), &operator)?).await?.into_inner();
    assert_eq!(answer.superseded_workflow_id, old.as_str());
    let new = WorkflowId::parse(&answer.run.context("no run")?.workflow_id)?;
    let plan = store.get_run(&new).await?.plan.context("the new run keeps its plan")?;
    assert_eq!(
        actions(&plan),
        [
            ("role_setup", Action::Reuse),
            ("document_linking", Action::Run),
            ("ai_assessment", Action::Run),
            ("finalize", Action::Run)
        ]
    );
    assert!(plan.early_cutoff, "a STALE re-run stops where an output comes out unchanged");
    store.close().await;
    Ok(())
}
