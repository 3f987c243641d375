//! `WatchStatus`. For one run (here): the snapshot, then every event in sequence order,
//! heartbeats while quiet, and a clean end when the run is over or the stream's lifetime is up.
//! For a batch or a company's active runs: [`scoped`], resumed with a [`token`].
//!
//! Events come from the run store (the source of truth), polled every
//! `server.watch_poll_interval`; sequences are gap-free and commit in order, so a cursor that
//! advances to the last sequence sent misses nothing and repeats nothing — within one stream and
//! across a resume with `after_sequence`. (Wake-ups through Redis, or the server's frequent look at
//! the store without it, only make this faster.)
//!
//! Each event carries the run's status as read when the event was sent, which may already include
//! later changes; the events themselves are exact.

mod outbox;
mod scoped;
mod shared;
pub(crate) mod token;
pub mod wire;

pub use shared::SharedReads;

use std::{sync::Arc, time::Duration};

use crate::config::Config;
use etter_core::ids::WorkflowId;
use etter_proto::v1 as pb;
use etter_store::fanout;
use etter_store::{Run, RunStore};
use tokio::{
    sync::{broadcast, watch},
    time::Instant,
};
use tonic::Status;

use crate::limits::Limits;
use crate::tokens::TokenKeys;
use crate::{convert, error::ApiError, estimate::Estimator, graph::GraphReader, principal::Principal, status};
use wire::FrameStream;

/// Events read per store query.
const EVENT_PAGE: u32 = 256;

/// How a watch stream paces itself.
#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    /// How often the store is polled for new events.
    pub poll_interval: Duration,
    /// A stream quiet for this long sends a heartbeat.
    pub heartbeat_interval: Duration,
    /// A stream ends after this long.
    pub max_lifetime: Duration,
}

/// What a watch needs from the server.
#[derive(Clone)]
pub struct WatchContext {
    /// The run store.
    pub store: Arc<dyn RunStore>,
    /// The role graph, for finished runs' outputs summaries.
    pub graph: Arc<GraphReader>,
    /// The configuration: `[dispatch]` for estimates, `server.dashboard_url`.
    pub config: Arc<Config>,
    /// Duration estimates for heartbeats.
    pub estimator: Arc<Estimator>,
    /// Pacing.
    pub settings: WatchSettings,
    /// Turns true when the server drains: streams end so clients reconnect elsewhere.
    pub drain: watch::Receiver<bool>,
    /// Ids of runs that moved, to poll the store at once rather than at the next interval.
    pub moved: fanout::Hub,
    /// Calls per minute (opening a stream is one call).
    pub limits: Arc<Limits>,
    /// Store reads shared by the streams (see [`shared`]).
    pub shared: Arc<SharedReads>,
    /// Step attempts kept from earlier status reads.
    pub kept_steps: Arc<status::KeptSteps>,
    /// The keys resume tokens are sealed with.
    pub tokens: Arc<TokenKeys>,
}

/// Waits `nap`, or less: until a run `relevant` accepts has moved, or wake-ups were lost.
/// Answers the instant the stream's next look must start from: when the server learned of the
/// move that woke it, or when the nap ended. Reads started since then (shared with other streams
/// or not) see everything that woke it.
async fn nap_until_moved(
    nap: Duration,
    moved: &mut broadcast::Receiver<fanout::Moved>,
    relevant: impl Fn(&WorkflowId) -> bool,
) -> Instant {
    let sleep = tokio::time::sleep(nap);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return sleep.deadline(),
            received = moved.recv() => match received {
                Ok(moved) if relevant(&moved.run) => return Instant::from_std(moved.at),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return Instant::now(),
                Err(broadcast::error::RecvError::Closed) => {
                    (&mut sleep).await;
                    return sleep.deadline();
                }
            },
        }
    }
}

/// Opens a watch: validates and authorizes the request, then streams from a task of its own.
pub async fn watch_status(
    cx: WatchContext,
    principal: &Principal,
    request: pb::WatchStatusRequest,
) -> Result<FrameStream, ApiError> {
    use pb::watch_status_request::Scope;
    let workflow_id = match request.scope {
        Some(Scope::WorkflowId(id)) => id,
        Some(Scope::BatchId(_) | Scope::CompanyId(_)) if request.after_sequence != 0 => {
            return Err(ApiError::invalid(
                "INVALID_REQUEST",
                "after_sequence",
                "belongs to one-run watches; batch and company watches resume with resume_token",
            ));
        }
        Some(Scope::BatchId(id)) => {
            return scoped::open(cx, principal, scoped::Requested::Batch(id), &request.resume_token).await;
        }
        Some(Scope::CompanyId(id)) => {
            return scoped::open(cx, principal, scoped::Requested::Company(id), &request.resume_token).await;
        }
        None => {
            return Err(ApiError::invalid("INVALID_REQUEST", "scope", "set workflow_id, batch_id or company_id"));
        }
    };
    if !request.resume_token.is_empty() {
        return Err(ApiError::invalid(
            "INVALID_REQUEST",
            "resume_token",
            "a one-run watch resumes with after_sequence; resume tokens belong to batch and company scopes",
        ));
    }
    let run = status::visible_run(cx.store.as_ref(), principal, &workflow_id).await?;
    cx.limits.admit_call(&run.company_id)?;
    if request.after_sequence > run.sequence {
        return Err(ApiError::invalid(
            "INVALID_REQUEST",
            "after_sequence",
            format!("is beyond the run's latest event ({})", run.sequence),
        ));
    }
    Ok(outbox::drive(32, |tx| stream_run(cx, run, request.after_sequence, tx)))
}

type Sender = outbox::Outbox;

fn message(kind: pb::watch_status_response::Kind) -> Result<wire::Frame, Status> {
    Ok(wire::Frame::Message(Box::new(pb::WatchStatusResponse { kind: Some(kind), resume_token: String::new() })))
}

/// Streams one run until it is over, the lifetime is up, the server drains or the client leaves.
async fn stream_run(mut cx: WatchContext, run: Run, after: u64, tx: Sender) {
    let deadline = Instant::now() + cx.settings.max_lifetime;
    if let Err(e) = stream_until_done(&mut cx, run, after, &tx, deadline).await {
        tx.send(Err(Status::from(e))).await;
    }
}

async fn stream_until_done(
    cx: &mut WatchContext,
    run: Run,
    after: u64,
    tx: &Sender,
    deadline: Instant,
) -> Result<(), ApiError> {
    use pb::watch_status_response::Kind;
    let store = Arc::clone(&cx.store);
    let (graph, config) = (Arc::clone(&cx.graph), Arc::clone(&cx.config));
    let sources = status::StatusContext {
        store: store.as_ref(),
        estimator: &cx.estimator,
        finished: Some(status::Finished { graph: graph.as_ref(), server: &config.server }),
        kept: Some(&cx.kept_steps),
    };
    let wf = run.workflow_id.clone();
    let mut moved = cx.moved.subscribe();
    let mut cursor = after;
    let mut last = run;
    if after == 0 {
        let snapshot = status::run_status(&sources, &last).await?;
        let snapshot = pb::Snapshot { runs: vec![snapshot], last: true, batch: None };
        tx.send(message(Kind::Snapshot(snapshot))).await;
        cursor = last.sequence;
    }
    let mut last_sent = Instant::now();
    loop {
        if last.state.is_final() && cursor >= last.sequence {
            return Ok(());
        }
        let events = store.events_after(&wf, cursor, EVENT_PAGE).await?;
        if !events.is_empty() {
            last = store.get_run(&wf).await?;
            let status = status::run_status(&sources, &last).await?;
            for event in &events {
                let kind = Kind::Event(convert::event(event, Some(status.clone())));
                tx.send(message(kind)).await;
                cursor = event.sequence;
            }
            last_sent = Instant::now();
            if last.state.is_final() && cursor >= last.sequence {
                return Ok(());
            }
            if events.len() == EVENT_PAGE as usize && Instant::now() < deadline {
                continue;
            }
        } else if last_sent.elapsed() >= cx.settings.heartbeat_interval {
            // Where the run stands if it waits (queued, or processing with no step running).
            let quiet = status::StatusContext { finished: None, ..sources };
            let now = status::run_status(&quiet, &last).await?;
            let queue = if now.wait_reason == pb::WaitReason::Unspecified as i32 {
                Vec::new()
            } else {
                vec![pb::QueuePosition {
                    workflow_id: wf.to_string(),
                    position_in_queue: now.position_in_queue,
                    estimated_duration_seconds: now.estimated_duration_seconds,
                    wait_reason: now.wait_reason,
                }]
            };
            let heartbeat =
                pb::Heartbeat { server_time: Some(convert::timestamp(etter_store::now())), queue, batch: None };
            tx.send(message(Kind::Heartbeat(heartbeat))).await;
            last_sent = Instant::now();
        }
        let now = Instant::now();
        if now >= deadline {
            // Clients resume with after_sequence = the last sequence they received.
            return Ok(());
        }
        let nap = cx.settings.poll_interval.min(deadline - now);
        tokio::select! {
            _ = nap_until_moved(nap, &mut moved, |run| *run == wf) => {}
            _ = cx.drain.changed() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use etter_store::Announce as _;

    use super::*;

    fn run(role: &str) -> WorkflowId {
        WorkflowId::parse(&format!("role-onboard-cr-acme-{role}-1")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn a_stream_woken_by_a_move_looks_from_when_the_server_learned_it() {
        let hub = fanout::Hub::new();
        let mut moved = hub.subscribe();
        let before = Instant::now();
        hub.moved(&run("other"));
        hub.moved(&run("analyst"));
        let after = Instant::now();
        let woken = nap_until_moved(Duration::from_secs(30), &mut moved, |r| *r == run("analyst")).await;
        // The move's own instant, not when this stream got to run (nor the irrelevant move's).
        assert!(before <= woken && woken <= after, "{woken:?} not within {before:?}..{after:?}");
    }

    #[tokio::test]
    async fn a_stream_woken_by_its_nap_looks_from_the_nap_s_end() {
        let hub = fanout::Hub::new();
        let mut moved = hub.subscribe();
        let started = Instant::now();
        let woken = nap_until_moved(Duration::from_millis(30), &mut moved, |_| true).await;
        assert!(woken >= started + Duration::from_millis(30) && woken <= Instant::now());
    }
}
