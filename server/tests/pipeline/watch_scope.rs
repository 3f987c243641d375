//! WatchStatus over a batch and over a company's active runs: one stream carries many runs, and a
//! stream resumed with its `resume_token` misses nothing and repeats nothing. The test plays the
//! worker's part through the run store (Temporal is unreachable, so nothing else moves the runs).

use std::collections::BTreeMap;

use anyhow::{Context as _, bail, ensure};
use etter_core::ids::WorkflowId;
use etter_core::lifecycle::RunState;
use etter_proto::v1::{
    self as pb, PushBatchItem, PushBatchRequest, WatchStatusRequest, pipeline_service_client::PipelineServiceClient,
    watch_status_request::Scope, watch_status_response::Kind,
};
use etter_store::StoreLocation;
use etter_store::{self, Transition};
use tonic::{Code, Streaming};

use super::{DEADLINE, acme, closed_port_url, doc_uri, play_worker, push_request};
use crate::{Server, with_token};

type Stream = Streaming<pb::WatchStatusResponse>;

/// Everything one stream delivered.
#[derive(Default)]
struct Seen {
    /// Runs of the snapshot, with the sequence they were at.
    snapshot: BTreeMap<String, u64>,
    /// Event sequences per run, in arrival order.
    events: BTreeMap<String, Vec<u64>>,
    /// Queue positions of the heartbeats that carried any.
    queues: Vec<Vec<(String, i32)>>,
    /// The last batch progress received.
    batch: Option<pb::BatchProgress>,
    /// The last resume token.
    token: String,
    /// Whether the server ended the stream.
    ended: bool,
}

impl Seen {
    /// Reads until `stop` says so or the stream ends.
    async fn read(&mut self, stream: &mut Stream, mut stop: impl FnMut(&Seen) -> bool) -> anyhow::Result<()> {
        let started = tokio::time::Instant::now();
        while !stop(self) {
            ensure!(
                started.elapsed() < DEADLINE,
                "the awaited messages did not arrive within {DEADLINE:?}: snapshot of {} runs, {} events of {} runs, {} heartbeats with queues; events of the first runs {:?}",
                self.snapshot.len(),
                self.event_count(),
                self.events.len(),
                self.queues.len(),
                self.events.iter().take(3).collect::<Vec<_>>()
            );
            let message =
                tokio::time::timeout(DEADLINE, stream.message()).await.context("no watch message in time")??;
            let Some(message) = message else {
                self.ended = true;
                return Ok(());
            };
            if !message.resume_token.is_empty() {
                self.token = message.resume_token;
            }
            match message.kind.context("a message without a kind")? {
                Kind::Snapshot(snapshot) => {
                    ensure!(self.events.is_empty(), "a snapshot after events");
                    for run in snapshot.runs {
                        self.snapshot.insert(run.workflow_id, run.sequence);
                    }
                    if snapshot.batch.is_some() {
                        self.batch = snapshot.batch;
                    }
                }
                Kind::Event(event) => self.events.entry(event.workflow_id).or_default().push(event.sequence),
                Kind::Heartbeat(heartbeat) => {
                    if !heartbeat.queue.is_empty() {
                        self.queues
                            .push(heartbeat.queue.into_iter().map(|q| (q.workflow_id, q.position_in_queue)).collect());
                    }
                    if heartbeat.batch.is_some() {
                        self.batch = heartbeat.batch;
                    }
                }
            }
        }
        Ok(())
    }

    fn event_count(&self) -> usize {
        self.events.values().map(Vec::len).sum()
    }
}

#[tokio::test]
async fn batch_and_company_watches_carry_every_run_and_resume_exactly() -> anyhow::Result<()> {
    let closed = closed_port_url()?;
    let server = Server::start(&[("ETTER_TEMPORAL__ADDRESS", closed.as_str())]).await?;
    let company = format!("{}watch", acme());
    let token = server.token(&["--company", &company, "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let store = etter_store::connect(&StoreLocation::Sqlite(server.data_dir.join("etter.db"))).await?;
    let doc = |i: usize| doc_uri(&server, &format!("jd-{i}.pdf"));

    let items: Vec<PushBatchItem> = (0..40)
        .map(|i| PushBatchItem {
            role_name: format!("Watched Role {i:02}"),
            documents: vec![pb::Document {
                r#type: pb::DocumentType::JobDescription as i32,
                uri: doc(i),
                ..Default::default()
            }],
            // Every eighth item lacks its Draup role: 5 rejected items.
            draup_role_id: if i % 8 == 7 { String::new() } else { format!("draup-role-{i}") },
            options: None,
            client_ref: String::new(),
        })
        .collect();
    let batch = api
        .push_batch(with_token(
            PushBatchRequest {
                company_id: company.clone(),
                items,
                default_options: Some(pb::RunOptions { skip_enhancement_workflows: true, ..Default::default() }),
                request_id: String::new(),
                validate_only: false,
            },
            &token,
        )?)
        .await?
        .into_inner();
    let accepted: Vec<String> = batch
        .items
        .iter()
        .filter(|i| i.outcome == pb::BatchItemOutcome::Accepted as i32)
        .map(|i| i.workflow_id.clone())
        .collect();
    ensure!(accepted.len() == 35);

    let watch =
        |scope: Scope, resume_token: String| WatchStatusRequest { scope: Some(scope), after_sequence: 0, resume_token };
    let company_scope = || Scope::CompanyId(company.clone());
    let batch_scope = || Scope::BatchId(batch.batch_id.clone());
    let mut whole = api.watch_status(with_token(watch(company_scope(), String::new()), &token)?).await?.into_inner();
    let mut of_batch = api.watch_status(with_token(watch(batch_scope(), String::new()), &token)?).await?.into_inner();
    let mut hopping = api.watch_status(with_token(watch(company_scope(), String::new()), &token)?).await?.into_inner();
    let (mut seen_whole, mut seen_batch, mut seen_hopping) = (Seen::default(), Seen::default(), Seen::default());
    // A crowd of company watchers at the same marks as `whole` (nothing moves while they open):
    // streams in step share the server's looks at the store, and each must still get every event
    // exactly once, however they fall in and out of step (these are read only at the end).
    let mut crowd = Vec::new();
    for _ in 0..6 {
        crowd.push(api.watch_status(with_token(watch(company_scope(), String::new()), &token)?).await?.into_inner());
    }

    // Snapshots: the company's 35 queued runs; the batch's 40 runs with its progress. Then a
    // heartbeat with queue positions (the test server beats every 200 ms).
    seen_whole.read(&mut whole, |s| !s.queues.is_empty()).await?;
    ensure!(
        seen_whole.snapshot.len() == 35 && seen_whole.snapshot.values().all(|s| *s == 1),
        "{:?}",
        seen_whole.snapshot
    );
    let positions: Vec<i32> = seen_whole.queues[0].iter().map(|(_, p)| *p).collect();
    ensure!(positions == (1..=35).collect::<Vec<_>>(), "queue positions in dispatch order: {positions:?}");
    seen_batch.read(&mut of_batch, |s| s.batch.is_some() && !s.snapshot.is_empty()).await?;
    ensure!(seen_batch.snapshot.len() == 40, "{}", seen_batch.snapshot.len());
    let progress = seen_batch.batch.clone().context("batch progress")?;
    ensure!(progress.total == 40 && progress.done == 5, "{progress:?}");
    seen_hopping.read(&mut hopping, |s| !s.token.is_empty()).await?;

    // The worker's part: each run goes PROCESSING, four steps, READY: events 2 to 11. A single push
    // arrives half-way; the hopping watcher reconnects with its token twice.
    let critical = ["role_setup", "document_linking", "ai_assessment", "finalize"];
    let mut late = None;
    for (n, run) in accepted.iter().enumerate() {
        let run = WorkflowId::parse(run)?;
        store.transition(&run, Transition::to(RunState::Processing, "dispatched by the test")).await?;
        play_worker(store.as_ref(), &run, &critical).await?;
        store.transition(&run, Transition::to(RunState::Ready, "finalized by the test")).await?;
        if n == 12 || n == 24 {
            // Leave mid-stream, after some of what was just written, and come back with the token.
            let target = seen_hopping.event_count() + 17;
            seen_hopping.read(&mut hopping, |s| s.event_count() >= target).await?;
            drop(hopping);
            hopping = api
                .watch_status(with_token(watch(company_scope(), seen_hopping.token.clone()), &token)?)
                .await?
                .into_inner();
        }
        if n == 17 {
            let pushed = api
                .push(with_token(
                    pb::PushRequest {
                        company_id: company.clone(),
                        role_name: "Late Role".into(),
                        documents: vec![pb::Document {
                            r#type: pb::DocumentType::JobDescription as i32,
                            uri: doc(99),
                            ..Default::default()
                        }],
                        draup_role_id: "draup-role-99".into(),
                        options: Some(pb::RunOptions { skip_enhancement_workflows: true, ..Default::default() }),
                        request_id: String::new(),
                        validate_only: false,
                    },
                    &token,
                )?)
                .await?
                .into_inner();
            late = Some(WorkflowId::parse(&pushed.workflow_id)?);
        }
    }
    let late = late.context("the late push")?;
    store.transition(&late, Transition::to(RunState::Processing, "dispatched by the test")).await?;
    play_worker(store.as_ref(), &late, &critical).await?;
    store.transition(&late, Transition::to(RunState::Ready, "finalized by the test")).await?;

    // Every run's events after the snapshot, exactly once and in order: 2..=11 for the batch's
    // runs, 1..=11 for the run pushed while the watches were open.
    let expected =
        |run: &str| -> Vec<u64> { if run == late.as_str() { (1..=11).collect() } else { (2..=11).collect() } };
    let all_runs: Vec<String> = accepted.iter().cloned().chain([late.to_string()]).collect();
    let complete = |s: &Seen| all_runs.iter().all(|r| s.events.get(r).is_some_and(|e| e.len() >= expected(r).len()));
    seen_whole.read(&mut whole, complete).await?;
    seen_hopping.read(&mut hopping, complete).await?;
    for (name, seen) in [("continuous", &seen_whole), ("resumed twice", &seen_hopping)] {
        for run in &all_runs {
            let got = seen.events.get(run).cloned().unwrap_or_default();
            ensure!(got == expected(run), "{name} watcher, {run}: {got:?}");
        }
        ensure!(seen.events.len() == all_runs.len(), "{name}: events of runs outside the scope");
    }
    for (i, stream) in crowd.iter_mut().enumerate() {
        let mut seen = Seen::default();
        seen.read(stream, complete).await?;
        ensure!(seen.snapshot == seen_whole.snapshot, "crowd watcher {i}: another snapshot");
        ensure!(seen.events == seen_whole.events, "crowd watcher {i}: other events than the continuous watcher's");
    }

    // The batch watch ends by itself once every run of the batch ended; the late push is not in it.
    seen_batch.read(&mut of_batch, |_| false).await?;
    ensure!(seen_batch.ended);
    for run in &accepted {
        ensure!(seen_batch.events.get(run) == Some(&(2..=11).collect()), "batch watcher, {run}");
    }
    ensure!(!seen_batch.events.contains_key(late.as_str()) && seen_batch.events.len() == 35);

    // Resuming an ended batch with its last token: nothing to send, the stream ends.
    let mut again =
        api.watch_status(with_token(watch(batch_scope(), seen_batch.token.clone()), &token)?).await?.into_inner();
    let mut nothing = Seen::default();
    nothing.read(&mut again, |_| false).await?;
    ensure!(nothing.ended && nothing.events.is_empty() && nothing.snapshot.is_empty());

    // Wrong uses are refused with the field that is wrong.
    let refused = |scope: Scope, token: String, after_sequence: u64| WatchStatusRequest {
        scope: Some(scope),
        after_sequence,
        resume_token: token,
    };
    let cases = [
        (refused(company_scope(), seen_batch.token.clone(), 0), Code::InvalidArgument),
        (refused(batch_scope(), "w1.garbage".into(), 0), Code::InvalidArgument),
        (refused(batch_scope(), String::new(), 3), Code::InvalidArgument),
        (refused(Scope::CompanyId("globex".into()), String::new(), 0), Code::PermissionDenied),
        (refused(Scope::BatchId("batch-0000000000000000000000000000beef".into()), String::new(), 0), Code::NotFound),
    ];
    for (request, code) in cases {
        match api.watch_status(with_token(request.clone(), &token)?).await {
            Err(status) => ensure!(status.code() == code, "{request:?}: {status:?}"),
            Ok(_) => bail!("{request:?} must be refused"),
        }
    }
    store.close().await;
    Ok(())
}

/// Without Redis, a change written by another process (here: the test, through its own store
/// connection, as the worker would) wakes the streams it concerns through the server's frequent
/// look at the store, long before the streams' own polls would find it.
#[tokio::test]
async fn without_redis_another_process_s_change_reaches_watchers_before_their_own_poll() -> anyhow::Result<()> {
    let closed = closed_port_url()?;
    let server = Server::start(&[
        ("ETTER_TEMPORAL__ADDRESS", closed.as_str()),
        // No Redis, even when the environment names one.
        ("ETTER_REDIS__URL", ""),
        // Streams poll once a minute; the server looks for changes every 20 ms.
        ("ETTER_SERVER__WATCH_POLL_INTERVAL", "60s"),
        ("ETTER_SERVER__WATCH_HEARTBEAT_INTERVAL", "60s"),
        ("ETTER_SERVER__CHANGE_POLL_INTERVAL", "20ms"),
    ])
    .await?;
    let company = format!("{}looked", acme());
    let token = server.token(&["--company", &company, "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let store = etter_store::connect(&StoreLocation::Sqlite(server.data_dir.join("etter.db"))).await?;
    let pushed = api
        .push(with_token(
            pb::PushRequest { company_id: company.clone(), ..push_request("Looked Role", &doc_uri(&server, "jd.pdf")) },
            &token,
        )?)
        .await?
        .into_inner();
    let watch =
        |scope: Scope| WatchStatusRequest { scope: Some(scope), after_sequence: 0, resume_token: String::new() };
    let mut of_company =
        api.watch_status(with_token(watch(Scope::CompanyId(company.clone())), &token)?).await?.into_inner();
    let mut of_run =
        api.watch_status(with_token(watch(Scope::WorkflowId(pushed.workflow_id.clone())), &token)?).await?.into_inner();
    let (mut seen_company, mut seen_run) = (Seen::default(), Seen::default());
    seen_company.read(&mut of_company, |s| !s.token.is_empty()).await?;
    seen_run.read(&mut of_run, |s| !s.snapshot.is_empty()).await?;

    let run = WorkflowId::parse(&pushed.workflow_id)?;
    let written = tokio::time::Instant::now();
    store.transition(&run, Transition::to(RunState::Processing, "dispatched by the test")).await?;
    let moved = |s: &Seen| s.events.get(run.as_str()).is_some_and(|e| e.contains(&2));
    seen_company.read(&mut of_company, moved).await?;
    seen_run.read(&mut of_run, moved).await?;
    // The streams' own polls would take a minute; 10 s leaves room for a loaded machine.
    let took = written.elapsed();
    ensure!(took < std::time::Duration::from_secs(10), "the change took {took:?} to reach both watchers");
    store.close().await;
    Ok(())
}

/// A watch is in place once `WatchStatus` has answered: a change written right after (before the
/// client read anything) arrives as an event after the snapshot, never folded unseen into it, on
/// every scope. A client that opens a watch and then pushes sees every change of its push.
#[tokio::test]
async fn a_change_written_as_soon_as_the_watch_answered_arrives_as_an_event() -> anyhow::Result<()> {
    let closed = closed_port_url()?;
    // Streams poll once a minute, so only the server's own look at the store finds the change
    // (the test writes through its own connection, which tells no Redis).
    let server = Server::start(&[
        ("ETTER_TEMPORAL__ADDRESS", closed.as_str()),
        ("ETTER_REDIS__URL", ""),
        ("ETTER_SERVER__WATCH_POLL_INTERVAL", "60s"),
        ("ETTER_SERVER__CHANGE_POLL_INTERVAL", "20ms"),
    ])
    .await?;
    let company = format!("{}opened", acme());
    let token = server.token(&["--company", &company, "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let store = etter_store::connect(&StoreLocation::Sqlite(server.data_dir.join("etter.db"))).await?;
    // Enough runs that a snapshot takes the server a while to read.
    let items: Vec<PushBatchItem> = (0..500)
        .map(|i| PushBatchItem {
            role_name: format!("Opened Role {i:03}"),
            documents: vec![pb::Document {
                r#type: pb::DocumentType::JobDescription as i32,
                uri: doc_uri(&server, &format!("jd-{i}.pdf")),
                ..Default::default()
            }],
            draup_role_id: format!("draup-role-{i}"),
            options: None,
            client_ref: String::new(),
        })
        .collect();
    let batch = api
        .push_batch(with_token(
            PushBatchRequest {
                company_id: company.clone(),
                items,
                default_options: None,
                request_id: String::new(),
                validate_only: false,
            },
            &token,
        )?)
        .await?
        .into_inner();
    let runs: Vec<WorkflowId> =
        batch.items.iter().map(|i| WorkflowId::parse(&i.workflow_id)).collect::<Result<_, _>>()?;
    let watch =
        |scope: Scope| WatchStatusRequest { scope: Some(scope), after_sequence: 0, resume_token: String::new() };
    let scopes = [Scope::CompanyId(company.clone()), Scope::BatchId(batch.batch_id.clone())];
    for (round, scope) in scopes.into_iter().enumerate() {
        let run = &runs[round];
        let mut stream = api.watch_status(with_token(watch(scope.clone()), &token)?).await?.into_inner();
        let before = store.get_run(run).await?.sequence;
        store.transition(run, Transition::to(RunState::Processing, "dispatched by the test")).await?;
        let mut seen = Seen::default();
        let moved = |s: &Seen| s.events.get(run.as_str()).is_some_and(|e| e.contains(&(before + 1)));
        seen.read(&mut stream, moved).await.with_context(|| format!("{scope:?}"))?;
        ensure!(seen.snapshot.get(run.as_str()) == Some(&before), "{scope:?}: snapshot {:?}", seen.snapshot);
        ensure!(seen.events.get(run.as_str()) == Some(&vec![before + 1]), "{scope:?}: events {:?}", seen.events);
    }
    store.close().await;
    Ok(())
}
