//! A role's onboarding end to end: Push over gRPC → the dispatcher → Temporal → the worker
//! process → PostgreSQL, Neo4j → GetStatus and WatchStatus, with the crashes an operator meets —
//! a worker killed mid-step, a server killed right after it acknowledged pushes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use etter_core::ids::RoleId;
use etter_graph::{RoleGraph, SnapshotScope};
use etter_proto::v1::{
    Document, DocumentType, PushRequest, PushResponse, RoleStatus, RunStatus, StepState, WatchStatusRequest,
    WatchStatusResponse, run_event, watch_status_request, watch_status_response,
};
use etter_tests::stack::{Client, Profile, Stack, run_status as status};
use tokio_stream::StreamExt as _;
use tonic_types::StatusExt as _;

/// Bounds every wait on the pipeline, so a broken run fails the test instead of hanging it.
const RUN_WITHIN: Duration = Duration::from_secs(120);

fn push_request(stack: &Stack, role: &str, documents: &[(DocumentType, String)], request_id: &str) -> PushRequest {
    PushRequest {
        company_id: stack.company.clone(),
        role_name: role.to_owned(),
        documents: documents
            .iter()
            .map(|(kind, uri)| Document { r#type: *kind as i32, uri: uri.clone(), ..Default::default() })
            .collect(),
        draup_role_id: "draup-role-31011".to_owned(),
        options: None,
        request_id: request_id.to_owned(),
        validate_only: false,
    }
}

/// Polls GetStatus until the run is in a final state.
async fn wait_final(client: &mut Client, workflow_id: &str) -> Result<RunStatus> {
    let deadline = tokio::time::Instant::now() + RUN_WITHIN;
    loop {
        let run = status(client, workflow_id).await?;
        let state = RoleStatus::try_from(run.status)?;
        if !matches!(state, RoleStatus::Queued | RoleStatus::Processing) {
            return Ok(run);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{workflow_id} still {state:?} after {RUN_WITHIN:?}: {run:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Watches one run from `after` until the server ends the stream (the run ended), or until
/// `stop_after` events when given.
async fn watch(
    client: &mut Client,
    workflow_id: &str,
    after: u64,
    stop_after: Option<usize>,
) -> Result<Vec<WatchStatusResponse>> {
    let request = WatchStatusRequest {
        scope: Some(watch_status_request::Scope::WorkflowId(workflow_id.to_owned())),
        after_sequence: after,
        resume_token: String::new(),
    };
    let mut stream = client.watch_status(request).await?.into_inner();
    let mut received = Vec::new();
    let mut events = 0;
    let collect = async {
        while let Some(message) = stream.next().await {
            let message = message?;
            if matches!(message.kind, Some(watch_status_response::Kind::Event(_))) {
                events += 1;
            }
            received.push(message);
            if stop_after.is_some_and(|n| events >= n) {
                break;
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(RUN_WITHIN, collect).await.context("the watch did not end")??;
    Ok(received)
}

/// The events of a watch: (sequence, what changed), in the order received.
fn events(messages: &[WatchStatusResponse]) -> Vec<(u64, String)> {
    messages
        .iter()
        .filter_map(|m| match &m.kind {
            Some(watch_status_response::Kind::Event(event)) => {
                let change = match &event.change {
                    Some(run_event::Change::StatusChange(s)) => format!("status {:?}", RoleStatus::try_from(s.status)),
                    Some(run_event::Change::StepChange(s)) => {
                        let state =
                            StepState::try_from(s.status).map_or_else(|_| s.status.to_string(), |st| format!("{st:?}"));
                        format!("step {} {state} #{}", s.step, s.attempt)
                    }
                    None => "nothing".to_owned(),
                };
                Some((event.sequence, change))
            }
            _ => None,
        })
        .collect()
}

async fn graph() -> Result<std::sync::Arc<dyn RoleGraph>> {
    let config = etter_graph::GraphConfig {
        uri: etter_tests::service_setting("ETTER_GRAPH__URI", "neo4j")?,
        ..Default::default()
    };
    Ok(etter_graph::open(&config, &std::env::temp_dir()).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_pdf_reaches_ready_and_every_watcher_sees_every_step() -> Result<()> {
    let stack = Stack::new("ready").await?;
    let server = stack.start_server().await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("claims_adjuster_jd.pdf")?;
    let request = push_request(&stack, "Claims Adjuster", &[(DocumentType::JobDescription, jd)], "req-ready-1");

    // Nothing runs it yet (no worker): the run is QUEUED or dispatched, never missing. The push
    // carries the caller's trace.
    let mut traced = tonic::Request::new(request.clone());
    traced.metadata_mut().insert("traceparent", format!("00-{TRACE_ID}-b7ad6b7169203331-01").parse()?);
    let pushed: PushResponse = client.push(traced).await?.into_inner();
    ensure!(pushed.created && pushed.workflow_id.ends_with("-1"), "{pushed:?}");
    let first = status(&mut client, &pushed.workflow_id).await?;
    ensure!(
        matches!(RoleStatus::try_from(first.status)?, RoleStatus::Queued | RoleStatus::Processing),
        "right after Push: {first:?}"
    );

    // Dispatched, with no worker yet: the run sits at PROCESSING, so both watchers below start
    // from the same snapshot.
    let deadline = tokio::time::Instant::now() + RUN_WITHIN;
    let snapshot_sequence = loop {
        let run = status(&mut client, &pushed.workflow_id).await?;
        if RoleStatus::try_from(run.status)? == RoleStatus::Processing {
            break run.sequence;
        }
        ensure!(tokio::time::Instant::now() < deadline, "never dispatched: {run:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Two watchers: one stays, one drops after three events and resumes with after_sequence.
    let mut steady = client.clone();
    let mut flaky = client.clone();
    let workflow_id = pushed.workflow_id.clone();
    let steady_watch = tokio::spawn({
        let id = workflow_id.clone();
        async move { watch(&mut steady, &id, 0, None).await }
    });
    let flaky_watch = tokio::spawn({
        let id = workflow_id.clone();
        async move {
            let first = watch(&mut flaky, &id, 0, Some(3)).await?;
            let resume_at = events(&first).last().map_or(0, |(seq, _)| *seq);
            let rest = watch(&mut flaky, &id, resume_at, None).await?;
            anyhow::Ok((first, rest))
        }
    });

    let worker = stack.start_worker(&[("ETTER_LOG__FORMAT", "json")]).await?;
    let done = wait_final(&mut client, &workflow_id).await?;
    ensure!(RoleStatus::try_from(done.status)? == RoleStatus::Ready, "{done:#?}");
    let progress = done.progress.context("progress")?;
    ensure!(progress.current == progress.total && progress.total == 11, "{progress:?}");
    ensure!(done.trace_id == TRACE_ID, "the run keeps the push's trace id: {:?}", done.trace_id);
    // The trace went through Temporal into every activity: the worker logged each step's
    // completion, and the run's end, under the push's trace id.
    let traced = traced_worker_lines(&worker.log_text()?, &workflow_id);
    let completed: BTreeSet<&str> =
        traced.iter().filter(|(message, _)| message == "step completed").map(|(_, step)| step.as_str()).collect();
    ensure!(completed.len() == 11, "steps logged under the trace: {completed:?}");
    ensure!(traced.iter().any(|(message, _)| message == "run ended"), "the run's end under the trace: {traced:?}");

    let steady = steady_watch.await??;
    ensure!(
        matches!(steady.first().and_then(|m| m.kind.as_ref()), Some(watch_status_response::Kind::Snapshot(_))),
        "the snapshot comes first: {:?}",
        steady.first()
    );
    let continuous = events(&steady);
    // After the snapshot, every event in order and gap-free.
    let sequences: Vec<u64> = continuous.iter().map(|(s, _)| *s).collect();
    let expected: Vec<u64> = (snapshot_sequence + 1..=snapshot_sequence + sequences.len() as u64).collect();
    ensure!(sequences == expected, "after snapshot {snapshot_sequence}, in order and gap-free: {sequences:?}");
    ensure!(continuous.last().is_some_and(|(_, c)| c.contains("Ready")), "ends with READY: {continuous:#?}");
    for step in ["role_setup", "document_linking", "ai_assessment", "skills_miner", "finalize"] {
        ensure!(
            continuous.iter().any(|(_, c)| c.starts_with(&format!("step {step} ")) && c.contains("Completed")),
            "{step} completed is missing from {continuous:#?}"
        );
    }
    let (first, rest) = flaky_watch.await??;
    let mut union = events(&first);
    union.extend(events(&rest));
    ensure!(union == continuous, "resumed watch {union:#?}\ndiffers from the continuous one {continuous:#?}");

    // Same inputs again → the same run; the same request_id → the same answer.
    let again = client
        .push(push_request(
            &stack,
            "Claims Adjuster",
            &[(DocumentType::JobDescription, stack.document("claims_adjuster_jd.pdf")?)],
            "req-ready-2",
        ))
        .await?
        .into_inner();
    ensure!(again.workflow_id == workflow_id && !again.created, "{again:?}");
    let retried = client.push(request).await?.into_inner();
    ensure!(retried.workflow_id == workflow_id, "{retried:?}");

    // The graph holds the role's tasks.
    let role = RoleId::parse(&pushed.role_id)?;
    let outputs = graph().await?.role_outputs(&role).await?.context("the role is not in Neo4j")?;
    ensure!(outputs.visible, "finalize made it visible");
    let names: Vec<&str> = outputs.assessment.tasks.iter().map(|t| t.name.as_str()).collect();
    ensure!(
        names.iter().any(|n| n.contains("Inspect damaged vehicles and properties and photograph the damage")),
        "{names:#?}"
    );

    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}

/// The trace id the first push sends in its `traceparent` header.
const TRACE_ID: &str = "8e3a5a2b9c7d4f1e0a6b5c4d3e2f1a0b";

/// The (message, step) of every JSON log line of the worker that was logged for `run` in a span
/// carrying [`TRACE_ID`].
fn traced_worker_lines(log: &str, run: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["span"]["trace_id"] == TRACE_ID && line["span"]["run"] == run)
        .map(|line| {
            let message = line["fields"]["message"].as_str().unwrap_or_default().to_owned();
            let step = line["span"]["step"].as_str().unwrap_or_default().to_owned();
            (message, step)
        })
        .collect()
}

/// Node and relationship counts of a role's part of the graph, by label and type.
async fn shape(graph: &dyn RoleGraph, role: &RoleId) -> Result<BTreeMap<String, usize>> {
    let snapshot = graph.snapshot(&SnapshotScope::Role(role.clone())).await?;
    let mut counts = BTreeMap::new();
    for node in &snapshot.nodes {
        *counts.entry(format!("node {:?}", node.node.label)).or_insert(0) += 1;
    }
    for edge in &snapshot.edges {
        *counts.entry(format!("edge {:?}", edge.rel)).or_insert(0) += 1;
    }
    let mut seen = std::collections::BTreeSet::new();
    for edge in &snapshot.edges {
        ensure!(seen.insert(format!("{edge:?}")), "duplicated relationship {edge:?}");
    }
    Ok(counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_assessment_is_replaced_and_nothing_is_duplicated() -> Result<()> {
    let stack = Stack::new("workerkill").await?;
    let server = stack.start_server().await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("claims_adjuster_jd.pdf")?;

    // The first worker writes the assessment, then stops before recording it — and is killed there.
    let mut doomed = stack.start_worker(&[("ETTER_TEST_FAULTS", "pause_after:ai_assessment")]).await?;
    let victim = client
        .push(push_request(&stack, "Claims Adjuster", &[(DocumentType::JobDescription, jd.clone())], ""))
        .await?
        .into_inner();
    doomed.wait_for_line(RUN_WITHIN, |line| line.contains("\"fault\"") && line.contains("ai_assessment")).await?;
    let during = status(&mut client, &victim.workflow_id).await?;
    ensure!(during.current_steps.contains(&"ai_assessment".to_owned()), "{during:#?}");
    doomed.kill().await?;

    let worker = stack.start_worker(&[]).await?;
    let done = wait_final(&mut client, &victim.workflow_id).await?;
    ensure!(RoleStatus::try_from(done.status)? == RoleStatus::Ready, "{done:#?}");

    // A role pushed with the same document and never interrupted, for comparison.
    let calm = client
        .push(push_request(&stack, "Claims Adjuster Calm", &[(DocumentType::JobDescription, jd)], ""))
        .await?
        .into_inner();
    let calm_done = wait_final(&mut client, &calm.workflow_id).await?;
    ensure!(RoleStatus::try_from(calm_done.status)? == RoleStatus::Ready, "{calm_done:#?}");

    let graph = graph().await?;
    let victim_shape = shape(graph.as_ref(), &RoleId::parse(&victim.role_id)?).await?;
    let calm_shape = shape(graph.as_ref(), &RoleId::parse(&calm.role_id)?).await?;
    ensure!(victim_shape == calm_shape, "after the crash {victim_shape:#?}\nwithout one {calm_shape:#?}");
    ensure!(victim_shape.get("edge Performs").copied().unwrap_or(0) > 0, "{victim_shape:#?}");

    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_right_after_acknowledging_pushes_loses_none() -> Result<()> {
    let stack = Stack::new("serverkill").await?;
    let server = stack.start_server().await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;
    let mut acknowledged = Vec::new();
    for n in 1..=5 {
        let role = format!("Software Engineer {n}");
        let pushed = client
            .push(push_request(&stack, &role, &[(DocumentType::JobDescription, jd.clone())], &format!("req-{n}")))
            .await?
            .into_inner();
        acknowledged.push(pushed);
    }
    server.kill().await?;

    let server = stack.start_server().await?;
    let worker = stack.start_worker(&[]).await?;
    let mut client = stack.client(&server).await?;
    for pushed in &acknowledged {
        let done = wait_final(&mut client, &pushed.workflow_id).await?;
        ensure!(RoleStatus::try_from(done.status)? == RoleStatus::Ready, "{done:#?}");
        // Once: the role has exactly this one run, and it became READY exactly once.
        ensure!(done.run_number == 1 && done.superseded_by.is_empty(), "{done:#?}");
        // Every event after the run's creation (event 1).
        let history = watch(&mut client, &pushed.workflow_id, 1, None).await?;
        let readies = events(&history).iter().filter(|(_, c)| c.contains("Ready")).count();
        ensure!(readies == 1, "{} became READY {readies} times", pushed.workflow_id);
    }
    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_document_is_refused_at_the_push_and_one_that_fails_later_fails_its_run() -> Result<()> {
    let stack = Stack::new("baddoc").await?;
    let server = stack.start_server().await?;
    let mut client = stack.client(&server).await?;

    // Missing when pushed: refused there, naming the field and the URI; nothing is queued.
    let missing = format!("file://{}", stack.docs.join("not-uploaded-yet.pdf").display());
    let refused = client
        .push(push_request(&stack, "Missing Adjuster", &[(DocumentType::JobDescription, missing.clone())], ""))
        .await
        .err()
        .context("a push of a missing document must be refused")?;
    ensure!(refused.code() == tonic::Code::InvalidArgument, "{refused:?}");
    let bad = refused.get_details_bad_request().context("BadRequest missing")?;
    ensure!(
        bad.field_violations.len() == 1
            && bad.field_violations[0].field == "documents[0].uri"
            && bad.field_violations[0].description.contains(&missing),
        "{bad:?}"
    );

    // What only reading the whole document shows (corrupt), or a document removed after its push
    // was accepted, fails the run with an error naming it.
    let corrupt = stack.document("corrupt.pdf")?;
    let removed = stack.document("software_engineer_jd.txt")?;
    let mut pushed = Vec::new();
    for (role, uri, code) in
        [("Corrupt Adjuster", &corrupt, "DOCUMENT_CORRUPT"), ("Removed Adjuster", &removed, "DOCUMENT_NOT_FOUND")]
    {
        let run = client
            .push(push_request(&stack, role, &[(DocumentType::JobDescription, uri.clone())], ""))
            .await?
            .into_inner();
        pushed.push((run.workflow_id, uri, code));
    }
    // No worker has run anything yet: the removal comes before the run reads the document.
    std::fs::remove_file(stack.docs.join("software_engineer_jd.txt"))?;
    let worker = stack.start_worker(&[]).await?;
    for (workflow_id, uri, code) in pushed {
        let done = wait_final(&mut client, &workflow_id).await?;
        ensure!(RoleStatus::try_from(done.status)? == RoleStatus::Failed, "{done:#?}");
        let error = done.error.context("a FAILED run carries its error")?;
        ensure!(error.code == code && error.message.contains(uri.as_str()), "{code}: {error:#?}");
        ensure!(!error.recoverable && error.step == "document_linking", "{error:#?}");
    }
    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}

/// With history, the ETA a push answers is within a factor of 2 of what the run then takes, and
/// an unfinished run never reads 0; on both profiles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_history_the_eta_of_a_new_run_is_within_a_factor_of_two_of_what_it_takes() -> Result<()> {
    for profile in [Profile::Postgres, Profile::Embedded] {
        eta_within_a_factor_of_two(profile).await.with_context(|| profile.name())?;
    }
    Ok(())
}

async fn eta_within_a_factor_of_two(profile: Profile) -> Result<()> {
    let stack = Stack::with_profile("eta", profile).await?;
    // Estimates re-read the measurements quickly, so the history below counts at once.
    let server = stack.start_server_with(&[("ETTER_DISPATCH__ESTIMATE_REFRESH_INTERVAL", "200ms")]).await?;
    // Runs of the offline model end within a second, where the scheduling noise of a loaded
    // machine is as large as the run: three sequential steps take 2 s longer each, so a run lasts
    // about as long as the estimate it is measured against can be meaningfully compared with.
    let worker = stack
        .start_worker(&[("ETTER_TEST_FAULTS", "slow:role_setup; slow:document_linking; slow:ai_assessment")])
        .await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;
    let push = |role: String| push_request(&stack, &role, &[(DocumentType::JobDescription, jd.clone())], "");
    // History: three runs, one after another.
    for n in 0..3 {
        let pushed = client.push(push(format!("History Role {n}"))).await?.into_inner();
        ensure!(pushed.estimated_duration_seconds > 0, "a queued run reads 0: {pushed:?}");
        let done = wait_final(&mut client, &pushed.workflow_id).await?;
        ensure!(RoleStatus::try_from(done.status)? == RoleStatus::Ready, "{done:#?}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let started = tokio::time::Instant::now();
    let pushed = client.push(push("Measured Role".to_owned())).await?.into_inner();
    let eta = pushed.estimated_duration_seconds;
    loop {
        let run = status(&mut client, &pushed.workflow_id).await?;
        let state = RoleStatus::try_from(run.status)?;
        if !matches!(state, RoleStatus::Queued | RoleStatus::Processing) {
            ensure!(state == RoleStatus::Ready, "{run:#?}");
            break;
        }
        ensure!(run.estimated_duration_seconds > 0, "an unfinished run reads 0: {run:#?}");
        ensure!(started.elapsed() < RUN_WITHIN, "still {state:?}: {run:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The contract counts whole seconds, rounded up: compare with the time taken rounded up too.
    let took = started.elapsed().as_secs_f64().ceil().max(1.0);
    #[allow(clippy::cast_precision_loss)]
    let estimated = eta as f64;
    ensure!(
        estimated <= 2.0 * took && took <= 2.0 * estimated,
        "{}: the push estimated {eta} s, the run took {took} s",
        profile.name()
    );
    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}
