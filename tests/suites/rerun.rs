//! Retry, Cancel and STALE re-runs end to end: real server and worker
//! processes, faults injected into the worker (`ETTER_TEST_FAULTS`), and what ran asserted from the
//! attempt records GetStatus shows (COMPLETED: executed by the run; REUSED: the earlier run's
//! output kept).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use etter_proto::v1::{
    CancelRequest, CompareRunsRequest, CompareRunsResponse, Document, DocumentType, OutputKind, PushRequest,
    RetryRequest, RetryResponse, RoleStatus, RunStatus, StepProgress, StepState, retry_request,
};
use etter_tests::stack::{Client, Stack, run_status as status};
use tonic::Code;
use tonic_types::StatusExt as _;

/// Bounds every wait on the pipeline, so a broken run fails the test instead of hanging it.
const RUN_WITHIN: Duration = Duration::from_secs(120);
/// How soon a cancelled activity must notice (heartbeats; the stack's heartbeat timeout is 2 s).
const CANCEL_NOTICED_WITHIN: Duration = Duration::from_secs(15);

const ALL_STEPS: [&str; 11] = [
    "role_setup",
    "document_linking",
    "ai_assessment",
    "step_executor",
    "standardization",
    "skills_miner",
    "skills_architecture",
    "skills_catalog",
    "reskilling",
    "task_feasibility",
    "finalize",
];

fn push_request(stack: &Stack, role: &str, jd: &str) -> PushRequest {
    PushRequest {
        company_id: stack.company.clone(),
        role_name: role.to_owned(),
        documents: vec![Document {
            r#type: DocumentType::JobDescription as i32,
            uri: jd.to_owned(),
            ..Default::default()
        }],
        draup_role_id: "draup-role-42001".to_owned(),
        options: None,
        request_id: String::new(),
        validate_only: false,
    }
}

fn retry_run(workflow_id: &str, steps: &[&str], request_id: &str) -> RetryRequest {
    RetryRequest {
        target: Some(retry_request::Target::WorkflowId(workflow_id.to_owned())),
        steps: steps.iter().map(|s| (*s).to_owned()).collect(),
        request_id: request_id.to_owned(),
        ..Default::default()
    }
}

fn retry_role(role_id: &str) -> RetryRequest {
    RetryRequest {
        target: Some(retry_request::Target::RoleId(role_id.to_owned())),
        steps: Vec::new(),
        request_id: String::new(),
        ..Default::default()
    }
}

fn cancel_request(workflow_id: &str) -> CancelRequest {
    CancelRequest { workflow_id: workflow_id.to_owned(), reason: "e2e test".to_owned(), request_id: String::new() }
}

/// CompareRuns of `base` and `run`.
async fn compare(client: &mut Client, base: &RunStatus, run: &RunStatus) -> Result<CompareRunsResponse> {
    let request =
        CompareRunsRequest { base_workflow_id: base.workflow_id.clone(), workflow_id: run.workflow_id.clone() };
    Ok(client.compare_runs(request).await?.into_inner())
}

fn state(run: &RunStatus) -> Result<RoleStatus> {
    Ok(RoleStatus::try_from(run.status)?)
}

/// Polls GetStatus until `done` accepts the run, failing after `within`.
async fn wait_until(
    client: &mut Client,
    workflow_id: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&RunStatus) -> Result<bool>,
) -> Result<RunStatus> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let run = status(client, workflow_id).await?;
        if done(&run)? {
            return Ok(run);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{workflow_id}: {what} did not happen within {within:?}: {run:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls GetStatus until the run is in a final state.
async fn wait_final(client: &mut Client, workflow_id: &str) -> Result<RunStatus> {
    wait_until(client, workflow_id, RUN_WITHIN, "reaching a final state", |run| {
        Ok(!matches!(state(run)?, RoleStatus::Queued | RoleStatus::Processing))
    })
    .await
}

/// Each step's state in a run's status.
fn steps(run: &RunStatus) -> Result<BTreeMap<String, StepState>> {
    let progress = run.progress.as_ref().context("a status without progress")?;
    progress.steps.iter().map(|s| Ok((s.name.clone(), StepState::try_from(s.status)?))).collect()
}

/// The steps of a run in `wanted`.
fn steps_in(run: &RunStatus, wanted: StepState) -> Result<BTreeSet<String>> {
    Ok(steps(run)?.into_iter().filter(|(_, s)| *s == wanted).map(|(name, _)| name).collect())
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn all_but(excluded: &[&str]) -> BTreeSet<String> {
    ALL_STEPS.iter().filter(|s| !excluded.contains(s)).map(|s| (*s).to_owned()).collect()
}

/// The one `PreconditionFailure` violation of a FAILED_PRECONDITION: (type, description).
fn precondition(status: &tonic::Status) -> Result<(String, String)> {
    ensure!(status.code() == Code::FailedPrecondition, "expected FAILED_PRECONDITION, got {status:?}");
    let failure = status.get_details_precondition_failure().context("no PreconditionFailure detail")?;
    let violation = failure.violations.first().context("a PreconditionFailure without violations")?;
    let info = status.get_details_error_info().context("no ErrorInfo detail")?;
    ensure!(info.domain == "etter.pipeline" && info.reason == violation.r#type, "{info:?} vs {violation:?}");
    Ok((violation.r#type.clone(), violation.description.clone()))
}

/// Pushes one role and waits for its first run to end in `expected`.
async fn push_and_end(client: &mut Client, request: PushRequest, expected: RoleStatus) -> Result<RunStatus> {
    let pushed = client.push(request).await?.into_inner();
    let done = wait_final(client, &pushed.workflow_id).await?;
    ensure!(state(&done)? == expected, "expected {expected:?}: {done:#?}");
    ensure!(done.run_number == 1, "{done:#?}");
    Ok(done)
}

/// Retries and waits for the new run to end READY; checks the supersede links both ways.
async fn retry_to_ready(client: &mut Client, request: RetryRequest, old: &str) -> Result<RunStatus> {
    let answer = client.retry(request).await?.into_inner();
    follow_retry(client, answer, old).await
}

/// Waits for the run a Retry answered to end READY; checks the supersede links both ways and that
/// every reused step names the old run and carries its output hash.
async fn follow_retry(client: &mut Client, answer: RetryResponse, old: &str) -> Result<RunStatus> {
    ensure!(answer.superseded_workflow_id == old, "{answer:#?}");
    let new = answer.run.context("Retry answered without the new run")?;
    ensure!(new.run_number == 2 && new.workflow_id.ends_with("-2") && new.supersedes == old, "{new:#?}");
    let done = wait_final(client, &new.workflow_id).await?;
    ensure!(state(&done)? == RoleStatus::Ready, "the retry must end READY: {done:#?}");
    let progress = done.progress.as_ref().context("progress")?;
    ensure!(progress.current == progress.total, "{progress:?}");
    let previous = status(client, old).await?;
    ensure!(previous.superseded_by == done.workflow_id, "the old run names its successor: {previous:#?}");
    for step in steps_in(&done, StepState::Reused)? {
        let record = done.progress.iter().flat_map(|p| &p.steps).find(|s| s.name == step).context("step")?;
        ensure!(record.reused_from == old && !record.output_hash.is_empty(), "{record:#?}");
    }
    Ok(done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enhancement_failure_degrades_and_retry_runs_only_the_failed_step() -> Result<()> {
    let stack = Stack::new("retrydegraded").await?;
    let server = stack.start_server().await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;

    let faulty = stack.start_worker(&[("ETTER_TEST_FAULTS", "fail:task_feasibility")]).await?;
    let old = push_and_end(&mut client, push_request(&stack, "Software Engineer", &jd), RoleStatus::Degraded).await?;
    ensure!(steps_in(&old, StepState::Failed)? == names(&["task_feasibility"]), "{old:#?}");
    ensure!(steps_in(&old, StepState::Completed)? == all_but(&["task_feasibility"]), "{old:#?}");
    faulty.stop().await?;
    let worker = stack.start_worker(&[]).await?;

    // An unknown step name is a field violation on `steps`; nothing is created.
    let refused = client.retry(retry_run(&old.workflow_id, &["no_such_step"], "")).await.err().context("unknown")?;
    ensure!(refused.code() == Code::InvalidArgument, "{refused:?}");
    let fields: Vec<String> = refused
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    ensure!(fields == ["steps"], "{fields:?}: {refused:?}");
    ensure!(status(&mut client, &old.workflow_id).await?.superseded_by.is_empty(), "nothing was created");

    // The same request_id twice: the same new run, the same answer.
    let request = retry_run(&old.workflow_id, &[], "retry-degraded-1");
    let first = client.retry(request.clone()).await?.into_inner();
    let again = client.retry(request).await?.into_inner();
    ensure!(again == first, "a retried Retry answers the first answer: {first:#?}\n{again:#?}");
    let new_id = first.run.as_ref().map(|r| r.workflow_id.clone()).context("no run")?;

    // The old run is no longer the role's latest: retrying it again is refused and says which is.
    let stale = client.retry(retry_run(&old.workflow_id, &[], "retry-degraded-2")).await.err().context("latest")?;
    let (kind, description) = precondition(&stale)?;
    ensure!(kind == "NOT_LATEST_RUN" && description.contains(&new_id), "{description}");

    // Only the failed enhancement and finalize (which summarises every output) run again.
    let done =
        retry_to_ready(&mut client, retry_run(&old.workflow_id, &[], "retry-degraded-1"), &old.workflow_id).await?;
    ensure!(done.workflow_id == new_id, "{done:#?}");
    ensure!(steps_in(&done, StepState::Completed)? == names(&["task_feasibility", "finalize"]), "{done:#?}");
    ensure!(steps_in(&done, StepState::Reused)? == all_but(&["task_feasibility", "finalize"]), "{done:#?}");

    // A READY role has nothing to retry; the refusal says what to do instead.
    let ready = client.retry(retry_role(&done.role_id)).await.err().context("Retry of a READY run")?;
    let (kind, description) = precondition(&ready)?;
    ensure!(kind == "RUN_NOT_RETRYABLE" && description.contains("force_rerun"), "{description}");
    // Said once: the state, then why and what to do.
    ensure!(description.matches("READY").count() == 1, "{description}");
    ensure!(description.contains("is READY: every step completed"), "{description}");

    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_failure_fails_and_retry_resumes_at_the_failed_step() -> Result<()> {
    let stack = Stack::new("retryfailed").await?;
    let server = stack.start_server().await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;

    let faulty = stack.start_worker(&[("ETTER_TEST_FAULTS", "fail:ai_assessment")]).await?;
    let old = push_and_end(&mut client, push_request(&stack, "Software Engineer", &jd), RoleStatus::Failed).await?;
    ensure!(steps_in(&old, StepState::Completed)? == names(&["role_setup", "document_linking"]), "{old:#?}");
    ensure!(steps_in(&old, StepState::Failed)? == names(&["ai_assessment"]), "{old:#?}");
    faulty.stop().await?;
    let worker = stack.start_worker(&[]).await?;

    // By role id: its latest run, the FAILED one.
    let done = retry_to_ready(&mut client, retry_role(&old.role_id), &old.workflow_id).await?;
    let kept = ["role_setup", "document_linking"];
    ensure!(steps_in(&done, StepState::Completed)? == all_but(&kept), "{done:#?}");
    ensure!(steps_in(&done, StepState::Reused)? == names(&kept), "{done:#?}");

    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}

/// `plan_retry` with explicit steps: the named steps and their dependents run (and finalize, which
/// runs whenever anything does); steps outside that set keep their output when they have one and
/// are left out otherwise — so the failed task_feasibility, not named, is SKIPPED, not re-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_of_explicit_steps_runs_them_and_their_dependents() -> Result<()> {
    let stack = Stack::new("retryexplicit").await?;
    let server = stack.start_server().await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;

    // The fault stays: task_feasibility would fail again if the retry ran it.
    let worker = stack.start_worker(&[("ETTER_TEST_FAULTS", "fail:task_feasibility")]).await?;
    let old = push_and_end(&mut client, push_request(&stack, "Software Engineer", &jd), RoleStatus::Degraded).await?;

    let answer = client.retry(retry_run(&old.workflow_id, &["skills_miner"], "")).await?.into_inner();
    let planned = answer.run.as_ref().and_then(|r| r.progress.as_ref()).context("no progress")?;
    ensure!(planned.total == 10, "every step but the skipped task_feasibility is planned: {planned:?}");
    let done = follow_retry(&mut client, answer, &old.workflow_id).await?;
    let ran = ["skills_miner", "skills_architecture", "skills_catalog", "reskilling", "finalize"];
    ensure!(steps_in(&done, StepState::Completed)? == names(&ran), "{done:#?}");
    ensure!(steps_in(&done, StepState::Skipped)? == names(&["task_feasibility"]), "{done:#?}");
    let mut not_reused = ran.to_vec();
    not_reused.push("task_feasibility");
    ensure!(steps_in(&done, StepState::Reused)? == all_but(&not_reused), "{done:#?}");

    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_a_long_activity_stops_it_and_keeps_what_finished() -> Result<()> {
    let stack = Stack::new("cancel").await?;
    let server = stack.start_server().await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;

    let mut paused = stack.start_worker(&[("ETTER_TEST_FAULTS", "pause_after:ai_assessment")]).await?;
    let pushed = client.push(push_request(&stack, "Software Engineer", &jd)).await?.into_inner();
    paused
        .wait_for_line(RUN_WITHIN, |line| line.contains("\"fault\":\"paused\"") && line.contains("ai_assessment"))
        .await?;

    let answer = client.cancel(cancel_request(&pushed.workflow_id)).await?.into_inner();
    let cancelled = answer.run.context("Cancel answered without the run")?;
    ensure!(state(&cancelled)? == RoleStatus::Cancelled, "{cancelled:#?}");
    let error = cancelled.error.as_ref().context("a cancelled run says why")?;
    ensure!(error.code == "CANCELLED" && error.message.contains("e2e test"), "{error:#?}");
    ensure!(state(&status(&mut client, &pushed.workflow_id).await?)? == RoleStatus::Cancelled, "GetStatus");

    // The running activity notices through its heartbeats and the worker records it.
    let noticed =
        wait_until(&mut client, &pushed.workflow_id, CANCEL_NOTICED_WITHIN, "ai_assessment CANCELLED", |run| {
            Ok(steps(run)?.get("ai_assessment") == Some(&StepState::Cancelled))
        })
        .await?;
    ensure!(state(&noticed)? == RoleStatus::Cancelled, "the run stays CANCELLED: {noticed:#?}");
    ensure!(steps_in(&noticed, StepState::Completed)? == names(&["role_setup", "document_linking"]), "{noticed:#?}");

    // A final run cannot be cancelled again.
    let again = client.cancel(cancel_request(&pushed.workflow_id)).await.err().context("Cancel of CANCELLED")?;
    ensure!(precondition(&again)?.0 == "RUN_NOT_ACTIVE", "{again:?}");
    paused.stop().await?;

    // A CANCELLED role can be retried: what finished is reused.
    let worker = stack.start_worker(&[]).await?;
    let done = retry_to_ready(&mut client, retry_role(&pushed.role_id), &pushed.workflow_id).await?;
    let kept = ["role_setup", "document_linking"];
    ensure!(steps_in(&done, StepState::Completed)? == all_but(&kept), "{done:#?}");
    ensure!(steps_in(&done, StepState::Reused)? == names(&kept), "{done:#?}");

    // Cancel of a READY run is refused and says why.
    let ready = client.cancel(cancel_request(&done.workflow_id)).await.err().context("Cancel of READY")?;
    let (kind, description) = precondition(&ready)?;
    ensure!(kind == "RUN_NOT_ACTIVE" && description.contains("READY"), "{description}");
    ensure!(state(&status(&mut client, &done.workflow_id).await?)? == RoleStatus::Ready, "unchanged");

    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_process_map_makes_the_role_stale_and_its_rerun_runs_only_what_it_reaches() -> Result<()> {
    let stack = Stack::new("stale").await?;
    let server = stack.start_server().await?;
    let worker = stack.start_worker(&[]).await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("claims_adjuster_jd.pdf")?;
    let map_path = stack.docs.join("claims_process_map.md");
    let map_uri = format!("file://{}", map_path.display());
    std::fs::write(&map_path, "# Claims handling\n\n1. Receive the first notice of loss.\n2. Assign an adjuster.\n")?;
    let mut request = push_request(&stack, "Claims Adjuster", &jd);
    request.documents.push(Document {
        r#type: DocumentType::ProcessMap as i32,
        uri: map_uri.clone(),
        ..Default::default()
    });
    let first = push_and_end(&mut client, request, RoleStatus::Ready).await?;

    // Nothing changed: the scan checks the role and leaves it READY.
    let report = stack.scan().await?;
    ensure!(report["marked_stale"].as_array().is_some_and(Vec::is_empty), "{report}");
    ensure!(report["scanned"].as_u64().is_some_and(|n| n >= 1), "{report}");

    // Only the process map changes; the on-demand scan marks the role STALE.
    std::fs::write(
        &map_path,
        "# Claims handling\n\n1. Receive the first notice of loss.\n2. Assign an adjuster.\n3. Close the file.\n",
    )?;
    let report = stack.scan().await?;
    let marked: Vec<&str> =
        report["marked_stale"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
    ensure!(marked == [first.workflow_id.as_str()], "{report}");
    let stale = status(&mut client, &first.workflow_id).await?;
    ensure!(state(&stale)? == RoleStatus::Stale, "{stale:#?}");

    let done = retry_to_ready(&mut client, retry_role(&first.role_id), &first.workflow_id).await?;
    // What reads the process map ran, and so did the assessment (it reads every document) and the
    // summary (a linked document changed); the role setup never did.
    let ran = names(&["document_linking", "ai_assessment", "task_feasibility", "finalize"]);
    ensure!(steps_in(&done, StepState::Completed)? == ran, "{done:#?}");
    // The early cutoff: the assessment came out unchanged, so nothing that reads only the
    // assessment ran again.
    let ran: Vec<&str> = ran.iter().map(String::as_str).collect();
    ensure!(steps_in(&done, StepState::Reused)? == all_but(&ran), "{done:#?}");
    let output = |run: &RunStatus, step: &str| {
        run.progress.iter().flat_map(|p| &p.steps).find(|s| s.name == step).map(|s| s.output_hash.clone())
    };
    ensure!(output(&done, "ai_assessment") == output(&first, "ai_assessment"), "{done:#?}");
    ensure!(output(&done, "document_linking") != output(&first, "document_linking"), "{done:#?}");

    // Each run shows the content its documents had; only the process map's changed.
    let hashes = |run: &RunStatus| run.documents.iter().map(|d| d.content_hash.clone()).collect::<Vec<_>>();
    let (before, after) = (hashes(&first), hashes(&done));
    ensure!(before.iter().chain(&after).all(|h| h.len() == 64), "{before:?} / {after:?}");
    ensure!(before[0] == after[0] && before[1] != after[1], "{before:?} / {after:?}");

    // The comparison tells the same story step by step.
    let compared = compare(&mut client, &first, &done).await?;
    let step = |name: &str| compared.steps.iter().find(|s| s.step == name).context(format!("no {name} compared"));
    let ran: BTreeSet<String> = compared.steps.iter().filter(|s| s.ran).map(|s| s.step.clone()).collect();
    ensure!(ran == names(&["document_linking", "ai_assessment", "task_feasibility", "finalize"]), "{ran:?}");
    let linking = step("document_linking")?;
    ensure!(linking.input_changed && linking.output_changed, "{linking:#?}");
    // The changed document is the one output of the step that differs, by its content hash.
    let [changed] = linking.changed.as_slice() else { bail!("one document changed: {linking:#?}") };
    let (was, now) = (changed.base.as_ref().context("base")?, changed.run.as_ref().context("run")?);
    ensure!(was.key == map_uri && was.content_hash == before[1] && now.content_hash == after[1], "{changed:#?}");
    ensure!(linking.added.is_empty() && linking.removed.is_empty(), "{linking:#?}");
    let assessment = step("ai_assessment")?;
    ensure!(assessment.input_changed && !assessment.output_changed, "{assessment:#?}");
    ensure!(assessment.added.is_empty() && assessment.removed.is_empty() && assessment.changed.is_empty());
    let reused = step("skills_miner")?;
    ensure!(!reused.ran && !reused.input_changed && !reused.output_changed, "{reused:#?}");
    let state_of = |p: &Option<StepProgress>| p.as_ref().map(|p| p.status);
    ensure!(state_of(&reused.run) == Some(StepState::Reused as i32), "{reused:#?}");
    ensure!(state_of(&reused.base) == Some(StepState::Completed as i32), "{reused:#?}");
    ensure!(compared.base.as_ref().map(|r| &r.workflow_id) == Some(&first.workflow_id));

    // The re-run is the role's current state; scanning again finds nothing new.
    let report = stack.scan().await?;
    ensure!(report["marked_stale"].as_array().is_some_and(Vec::is_empty), "{report}");

    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_another_model_re_runs_the_ai_steps_with_it_and_the_comparison_shows_the_difference() -> Result<()>
{
    let stack = Stack::new("model").await?;
    let server = stack.start_server().await?;
    let worker = stack.start_worker(&[]).await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("claims_adjuster_jd.pdf")?;
    let first = push_and_end(&mut client, push_request(&stack, "Claims Adjuster", &jd), RoleStatus::Ready).await?;
    let step = |run: &RunStatus, name: &str| -> Result<StepProgress> {
        run.progress.iter().flat_map(|p| &p.steps).find(|s| s.name == name).cloned().context(format!("no {name}"))
    };
    // The worker's own model answered the AI steps; steps that ask none record none.
    ensure!(step(&first, "ai_assessment")?.model == "offline" && step(&first, "ai_assessment")?.prompt_version == "1");
    ensure!(step(&first, "role_setup")?.model.is_empty() && step(&first, "finalize")?.model.is_empty());
    // The outputs summary leads with the ranked tasks and the surest skills, with their scores.
    let outputs = first.outputs.as_ref().context("a READY run has an outputs summary")?;
    ensure!(!outputs.leading_tasks.is_empty() && !outputs.leading_skills.is_empty(), "{outputs:#?}");
    ensure!(outputs.leading_tasks.iter().all(|t| t.kind == OutputKind::Task as i32 && t.scores.contains_key("rank")));
    ensure!(
        outputs.leading_tasks[0].scores["rank"] == 1.0 && outputs.leading_tasks[0].scores.contains_key("automation")
    );
    let confidence: Vec<f64> = outputs.leading_skills.iter().map(|s| s.scores["confidence"]).collect();
    ensure!(confidence.windows(2).all(|w| w[0] >= w[1]), "surest first: {confidence:?}");

    // A model the server does not allow is refused, naming those it does.
    let mut refused = retry_run(&first.workflow_id, &[], "");
    refused.model = "gpt-4o".to_owned();
    let status = client.retry(refused).await.err().context("a model outside models.allowed was accepted")?;
    ensure!(status.code() == Code::InvalidArgument, "{status:?}");
    let violations = status.get_details_bad_request().context("no BadRequest")?.field_violations;
    ensure!(violations.iter().any(|v| v.field == "model" && v.description.contains("offline, offline-cautious")));

    // A READY run may be retried with another model: every step that asks one runs with it.
    let mut request = retry_run(&first.workflow_id, &[], "");
    request.model = "offline-cautious".to_owned();
    let done = retry_to_ready(&mut client, request, &first.workflow_id).await?;
    let ai = ["ai_assessment", "step_executor", "standardization", "skills_miner", "skills_architecture"];
    for name in ai.iter().chain(&["skills_catalog", "reskilling", "task_feasibility"]) {
        let progress = step(&done, name)?;
        ensure!(
            progress.status == StepState::Completed as i32 && progress.model == "offline-cautious",
            "{progress:#?}"
        );
    }
    ensure!(steps_in(&done, StepState::Reused)? == names(&["role_setup", "document_linking"]), "{done:#?}");

    let compared = compare(&mut client, &first, &done).await?;
    let assessment = compared.steps.iter().find(|s| s.step == "ai_assessment").context("ai_assessment")?;
    ensure!(assessment.ran && assessment.model_changed && assessment.output_changed, "{assessment:#?}");
    ensure!(!assessment.input_changed, "the documents did not change: {assessment:#?}");
    // The same tasks, scored differently.
    ensure!(assessment.added.is_empty() && assessment.removed.is_empty() && !assessment.changed.is_empty());
    for change in &assessment.changed {
        let (was, now) = (change.base.as_ref().context("base")?, change.run.as_ref().context("run")?);
        ensure!(was.key == now.key && now.scores["confidence"] <= was.scores["confidence"], "{change:#?}");
    }
    let setup = compared.steps.iter().find(|s| s.step == "role_setup").context("role_setup")?;
    ensure!(!setup.ran && !setup.model_changed && !setup.output_changed, "{setup:#?}");

    // Two runs of different roles are not compared.
    let other = push_and_end(&mut client, push_request(&stack, "Claims Manager", &jd), RoleStatus::Ready).await?;
    let mismatch = client
        .compare_runs(CompareRunsRequest {
            base_workflow_id: first.workflow_id.clone(),
            workflow_id: other.workflow_id.clone(),
        })
        .await
        .err()
        .context("runs of two roles were compared")?;
    ensure!(mismatch.code() == Code::InvalidArgument && mismatch.message().contains("one role"), "{mismatch:?}");

    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}
