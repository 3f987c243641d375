//! Many roles at once end to end: a PushBatch of 300 through the real server, dispatcher,
//! Temporal and worker, followed by one company-scope WatchStatus stream that is reconnected
//! twice with its resume token.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use etter_proto::v1::{
    BatchItemOutcome, Document, DocumentType, HistoryRequest, PushBatchItem, PushBatchRequest, RoleStatus, RunOptions,
    RunStatus, WatchStatusRequest, run_event, watch_status_request, watch_status_response,
};
use etter_tests::stack::{Client, Stack};

/// Bounds the whole batch: 270 runs on a 2-core machine.
const BATCH_WITHIN: Duration = Duration::from_secs(600);
/// Bounds the wait for one stream message (heartbeats come every second in the stack).
const MESSAGE_WITHIN: Duration = Duration::from_secs(30);

/// What the company stream delivered, across reconnections.
#[derive(Default)]
struct Seen {
    /// Event sequences per run, in arrival order.
    events: BTreeMap<String, Vec<u64>>,
    /// Runs whose final status change arrived.
    ended: BTreeSet<String>,
    /// The last resume token.
    token: String,
    /// Snapshot messages received (only the first stream sends one).
    snapshots: usize,
}

impl Seen {
    /// Reads `stream` until `stop` holds or the overall deadline passes.
    async fn read(
        &mut self,
        stream: &mut tonic::Streaming<etter_proto::v1::WatchStatusResponse>,
        deadline: tokio::time::Instant,
        stop: impl Fn(&Seen) -> bool,
    ) -> Result<()> {
        while !stop(self) {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the batch did not finish in time: {} runs ended, {} events",
                self.ended.len(),
                self.events.values().map(Vec::len).sum::<usize>()
            );
            let message = tokio::time::timeout(MESSAGE_WITHIN, stream.message())
                .await
                .context("the stream went quiet")??
                .context("the company stream ended by itself")?;
            if !message.resume_token.is_empty() {
                self.token = message.resume_token;
            }
            match message.kind.context("a message without a kind")? {
                watch_status_response::Kind::Snapshot(_) => self.snapshots += 1,
                watch_status_response::Kind::Event(event) => {
                    if let Some(run_event::Change::StatusChange(change)) = &event.change
                        && !matches!(change.status(), RoleStatus::Queued | RoleStatus::Processing)
                    {
                        self.ended.insert(event.workflow_id.clone());
                    }
                    self.events.entry(event.workflow_id).or_default().push(event.sequence);
                }
                watch_status_response::Kind::Heartbeat(_) => {}
            }
        }
        Ok(())
    }
}

fn company_watch(stack: &Stack, resume_token: String) -> WatchStatusRequest {
    WatchStatusRequest {
        scope: Some(watch_status_request::Scope::CompanyId(stack.company.clone())),
        after_sequence: 0,
        resume_token,
    }
}

/// Every run of a batch, through History's pages.
async fn batch_runs(client: &mut Client, stack: &Stack, batch_id: &str) -> Result<Vec<RunStatus>> {
    let mut request = HistoryRequest {
        company_id: stack.company.clone(),
        batch_id: batch_id.to_owned(),
        page_size: 100,
        ..Default::default()
    };
    let mut runs = Vec::new();
    loop {
        let page = client.history(request.clone()).await?.into_inner();
        runs.extend(page.runs);
        if page.next_page_token.is_empty() {
            return Ok(runs);
        }
        request.page_token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_300_runs_to_the_end_and_one_resumed_company_stream_sees_every_event_once() -> Result<()> {
    let stack = Stack::new("batch").await?;
    let server = stack.start_server().await?;
    let worker = stack.start_worker(&[]).await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;
    let deadline = tokio::time::Instant::now() + BATCH_WITHIN;

    // The stream is open before the batch arrives: every run is new to it, from sequence 1.
    let mut seen = Seen::default();
    let mut stream = client.watch_status(company_watch(&stack, String::new())).await?.into_inner();
    seen.read(&mut stream, deadline, |s| s.snapshots == 1 && !s.token.is_empty()).await?;

    let items: Vec<PushBatchItem> = (0..300)
        .map(|i| PushBatchItem {
            role_name: format!("Engineer {i:03}"),
            documents: vec![Document {
                r#type: DocumentType::JobDescription as i32,
                uri: jd.clone(),
                ..Default::default()
            }],
            // Every tenth item is invalid: no Draup role.
            draup_role_id: if i % 10 == 9 { String::new() } else { format!("draup-role-{i}") },
            options: None,
            client_ref: format!("row {}", i + 2),
        })
        .collect();
    let request = PushBatchRequest {
        company_id: stack.company.clone(),
        items,
        default_options: Some(RunOptions { skip_enhancement_workflows: true, ..Default::default() }),
        request_id: "e2e-batch-300".to_owned(),
        validate_only: false,
    };
    let batch = client.push_batch(request.clone()).await?.into_inner();
    let outcome = |o: BatchItemOutcome| batch.items.iter().filter(|i| i.outcome == o as i32).count();
    ensure!(outcome(BatchItemOutcome::Accepted) == 270 && outcome(BatchItemOutcome::Rejected) == 30);
    for item in batch.items.iter().filter(|i| i.outcome == BatchItemOutcome::Rejected as i32) {
        let fields: Vec<&str> = item.field_violations.iter().map(|v| v.field.as_str()).collect();
        ensure!(fields == ["draup_role_id"] && item.status == RoleStatus::ValidationError as i32, "{item:?}");
    }
    let accepted: BTreeSet<String> = batch
        .items
        .iter()
        .filter(|i| i.outcome == BatchItemOutcome::Accepted as i32)
        .map(|i| i.workflow_id.clone())
        .collect();

    // Reconnect twice with the token while the runs are under way.
    for ended_before_leaving in [60, 150] {
        seen.read(&mut stream, deadline, |s| s.ended.len() >= ended_before_leaving).await?;
        drop(stream);
        stream = client.watch_status(company_watch(&stack, seen.token.clone())).await?.into_inner();
    }
    seen.read(&mut stream, deadline, |s| accepted.iter().all(|run| s.ended.contains(run))).await?;
    ensure!(seen.snapshots == 1, "a resumed stream sends no snapshot");

    // Every run ended; the stream carried each of its events exactly once, in order.
    let runs = batch_runs(&mut client, &stack, &batch.batch_id).await?;
    ensure!(runs.len() == 300, "{} runs in the batch's history", runs.len());
    for run in &runs {
        let state = RoleStatus::try_from(run.status)?;
        if !accepted.contains(&run.workflow_id) {
            ensure!(state == RoleStatus::ValidationError, "{run:?}");
            ensure!(!seen.events.contains_key(&run.workflow_id), "a rejected run is never active");
            continue;
        }
        ensure!(state == RoleStatus::Ready, "{}: {state:?} {:?}", run.workflow_id, run.error);
        let got = seen.events.get(&run.workflow_id).cloned().unwrap_or_default();
        ensure!(got == (1..=run.sequence).collect::<Vec<_>>(), "{}: {got:?} of {}", run.workflow_id, run.sequence);
    }
    ensure!(seen.events.len() == 270, "events of {} runs", seen.events.len());

    // The same batch again creates nothing; the batch reports itself done.
    let again = client.push_batch(request.clone()).await?.into_inner();
    ensure!(!again.created && again.batch_id == batch.batch_id && again.items == batch.items);
    let resent = client.push_batch(PushBatchRequest { request_id: String::new(), ..request }).await?.into_inner();
    if resent.items.iter().any(|i| i.outcome == BatchItemOutcome::Accepted as i32) {
        bail!("re-sending the batch queued new runs: {resent:?}");
    }
    let progress = batch_runs(&mut client, &stack, &batch.batch_id).await?.len();
    ensure!(progress == 300, "re-sending added runs to the first batch");

    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}
