//! Several server replicas on one PostgreSQL: runs pushed through one replica are watched
//! through another, and a replica killed while dispatching loses and duplicates nothing — the
//! other replica's dispatcher takes its expired claims over (claims use `SKIP LOCKED`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{
    Document, DocumentType, GetStatusRequest, PushRequest, RoleStatus, RunOptions, StepState, WatchStatusRequest,
    get_status_request, run_event, watch_status_request, watch_status_response,
};
use etter_tests::stack::Stack;

const WITHIN: Duration = Duration::from_secs(300);
/// Short claims, so the surviving replica takes the dead one's over within seconds.
const DISPATCH: [(&str, &str); 2] = [("ETTER_DISPATCH__LEASE", "3s"), ("ETTER_DISPATCH__TEMPORAL_TIMEOUT", "2s")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_dispatch_loses_nothing_and_another_replica_streams_every_run() -> Result<()> {
    let stack = Stack::new("replicas").await?;
    let a = stack.start_server_with(&DISPATCH).await?;
    let b = stack.start_server_with(&DISPATCH).await?;
    let worker = stack.start_worker(&[]).await?;
    let mut via_a = stack.client(&a).await?;
    let mut via_b = stack.client_as(&b, "viewer").await?;
    let jd = stack.document("customer_success_manager_jd.md")?;

    // A watcher on replica B, before anything is pushed.
    let watch = WatchStatusRequest {
        scope: Some(watch_status_request::Scope::CompanyId(stack.company.clone())),
        after_sequence: 0,
        resume_token: String::new(),
    };
    let mut stream = via_b.watch_status(watch).await?.into_inner();
    // The stream's starting point is its snapshot: a run pushed before the snapshot is read
    // would be in it, and its stream would start after the events the snapshot covers.
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .context("no snapshot from B")??
            .context("B's stream ended before its snapshot")?;
        if let Some(watch_status_response::Kind::Snapshot(snapshot)) = message.kind {
            ensure!(snapshot.runs.is_empty(), "a new company has runs: {:?}", snapshot.runs);
            if snapshot.last {
                break;
            }
        }
    }

    // Twenty pushes through A, then A dies without a drain while its dispatcher is at work.
    let mut pushed = BTreeSet::new();
    for i in 0..20 {
        let request = PushRequest {
            company_id: stack.company.clone(),
            role_name: format!("Success Manager {i:02}"),
            documents: vec![Document {
                r#type: DocumentType::JobDescription as i32,
                uri: jd.clone(),
                ..Default::default()
            }],
            draup_role_id: format!("draup-role-{i}"),
            options: Some(RunOptions { skip_enhancement_workflows: true, ..Default::default() }),
            request_id: String::new(),
            validate_only: false,
        };
        pushed.insert(via_a.push(request).await?.into_inner().workflow_id);
    }
    a.kill().await?;

    // B's stream sees every run pushed through A end, each event once and in order.
    let mut events: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut ended: BTreeMap<String, RoleStatus> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !pushed.iter().all(|run| ended.contains_key(run)) {
        ensure!(tokio::time::Instant::now() < deadline, "{} of 20 runs ended in time", ended.len());
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .context("B's stream went quiet")??
            .context("B's stream ended")?;
        if let Some(watch_status_response::Kind::Event(event)) = message.kind {
            if let Some(run_event::Change::StatusChange(change)) = &event.change
                && !matches!(change.status(), RoleStatus::Queued | RoleStatus::Processing)
            {
                ended.insert(event.workflow_id.clone(), change.status());
            }
            events.entry(event.workflow_id).or_default().push(event.sequence);
        }
    }
    for run in &pushed {
        ensure!(ended.get(run) == Some(&RoleStatus::Ready), "{run}: {:?}", ended.get(run));
        let status = via_b
            .get_status(GetStatusRequest { target: Some(get_status_request::Target::WorkflowId(run.clone())) })
            .await?
            .into_inner()
            .run
            .context("GetStatus without a run")?;
        let got = events.get(run).cloned().unwrap_or_default();
        ensure!(got == (1..=status.sequence).collect::<Vec<_>>(), "{run}: {got:?} of {}", status.sequence);
        // One run per role, and every step completed in one attempt, or in more only after the
        // earlier attempt failed and said so (a transient error retried, not a second dispatch).
        ensure!(status.run_number == 1 && status.supersedes.is_empty(), "{status:?}");
        for step in status.progress.iter().flat_map(|p| &p.steps) {
            let state = StepState::try_from(step.status)?;
            if step.attempts > 1 {
                eprintln!("{run} {}: {} attempts, earlier error {:?}", step.name, step.attempts, step.error);
            }
            ensure!(
                state == StepState::Skipped
                    || (state == StepState::Completed && (step.attempts == 1 || step.error.is_some())),
                "{run} {}: {state:?} after {} attempts; {:?}",
                step.name,
                step.attempts,
                step.error
            );
        }
    }
    ensure!(events.keys().cloned().collect::<BTreeSet<_>>() == pushed, "events of other runs");

    worker.stop().await?;
    b.stop().await?;
    stack.cleanup().await
}
