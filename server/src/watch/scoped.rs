//! `WatchStatus` for a batch or for a company's active runs: one stream carries many runs (a
//! browser has few connections).
//!
//! The stream keeps a high-water mark per run (the last sequence sent). Each poll reads the
//! scope's sequence heads, asks the store for the events after the marks of the runs that moved
//! (plus runs new to the scope, from sequence 1), and sends them in order, each with a
//! `resume_token` that encodes the marks after it ([`super::token`]). A resumed stream starts
//! from the token's marks: it sends no snapshot, and exactly the events the client has not seen.
//!
//! - **Batch scope:** every run of the batch; the stream ends once every run has ended and its
//!   events were sent.
//! - **Company scope:** the company's QUEUED and PROCESSING runs, including runs pushed after the
//!   watch started; a run that ends is followed until its final event. The store is asked for
//!   runs that ended in the last [`RECENT_ENDS`] too, so a run that starts and ends between two
//!   looks is still followed; a run leaves the stream's marks once it is older than that.
//!
//! Queue positions and ETAs travel in heartbeats (and batch progress, for batch scopes), never
//! as one event per queued run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use etter_core::ids::{BatchId, CompanyId, WorkflowId};
use etter_core::lifecycle::RunState;
use etter_core::steps::Plan;
use etter_proto::v1 as pb;
use etter_store::{self, Batch, EventScope, PageRequest, Run, RunFilter, WatchScope};
use pb::watch_status_response::Kind;
use tokio::time::Instant;
use tonic::Status;

use super::wire::FrameStream;
use super::{
    EVENT_PAGE, Sender, WatchContext,
    shared::{MarksKey, StatusRead},
    token::{self, TokenScope},
    wire::{self, Frame},
};
use crate::{batch, convert, error::ApiError, principal::Principal, status};

/// Runs per snapshot message.
const SNAPSHOT_CHUNK: usize = 100;
/// A company stream also looks at runs that ended this recently, so a run that starts and ends
/// between two looks (or while a client reconnects) is not missed.
const RECENT_ENDS: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// What a scoped watch follows.
#[derive(Clone)]
pub enum Scope {
    /// Every run of a batch.
    Batch(Batch),
    /// A company's active runs.
    Company(CompanyId),
}

impl Scope {
    /// The scope a request names, once the caller may see it: a batch of another company is
    /// `NOT_FOUND`, a company the caller does not act for is `PERMISSION_DENIED`.
    pub async fn authorize(cx: &WatchContext, principal: &Principal, scope: Requested) -> Result<Self, ApiError> {
        match scope {
            Requested::Batch(id) => {
                let batch_id =
                    BatchId::parse(&id).map_err(|e| ApiError::invalid("INVALID_REQUEST", "batch_id", e.to_string()))?;
                let batch = cx.store.get_batch(&batch_id).await?;
                principal.authorize_read(&batch.company, "batch", &id)?;
                cx.limits.admit_call(&batch.company)?;
                Ok(Scope::Batch(batch))
            }
            Requested::Company(id) => {
                let company = CompanyId::parse(&id)
                    .map_err(|e| ApiError::invalid("INVALID_REQUEST", "company_id", e.to_string()))?;
                principal.authorize_company(&company)?;
                cx.limits.admit_call(&company)?;
                Ok(Scope::Company(company))
            }
        }
    }

    fn company(&self) -> &CompanyId {
        match self {
            Scope::Batch(batch) => &batch.company,
            Scope::Company(company) => company,
        }
    }

    /// The key of the scope's shared reads.
    fn key(&self) -> String {
        match self {
            Scope::Batch(batch) => format!("batch:{}", batch.id),
            Scope::Company(company) => format!("company:{company}"),
        }
    }

    fn token_scope(&self) -> TokenScope {
        match self {
            Scope::Batch(batch) => TokenScope::Batch(batch.id.to_string()),
            Scope::Company(company) => TokenScope::Company(company.to_string()),
        }
    }

    /// What this scope's resume tokens are sealed for.
    fn binding(&self) -> Vec<u8> {
        token::binding(self.company().as_str(), &self.token_scope())
    }

    /// The runs the store may read events of for this scope: no mark a client sends can reach
    /// beyond it.
    fn event_scope(&self) -> EventScope {
        match self {
            Scope::Batch(batch) => EventScope { company: batch.company.clone(), batch: Some(batch.id.clone()) },
            Scope::Company(company) => EventScope { company: company.clone(), batch: None },
        }
    }

    fn store_scope(&self) -> WatchScope {
        match self {
            Scope::Batch(batch) => WatchScope::Batch(batch.id.clone()),
            Scope::Company(company) => {
                WatchScope::ActiveInCompany { company: company.clone(), ended_since: etter_store::now() - RECENT_ENDS }
            }
        }
    }

    /// The runs in scope now, for the snapshot.
    fn filter(&self) -> RunFilter {
        let (batch, states) = match self {
            Scope::Batch(batch) => (Some(batch.id.clone()), Vec::new()),
            Scope::Company(_) => (None, vec![RunState::Validating, RunState::Queued, RunState::Processing]),
        };
        RunFilter {
            company: self.company().clone(),
            states,
            role: None,
            batch,
            created_after: None,
            created_before: None,
            needs_review: None,
        }
    }
}

/// A scope as the request names it, before it is checked.
pub enum Requested {
    /// `batch_id`.
    Batch(String),
    /// `company_id`.
    Company(String),
}

/// Opens a scoped watch: from `resume_token` when given (which must be of the same scope), else
/// with a snapshot.
pub async fn open(
    cx: WatchContext,
    principal: &Principal,
    requested: Requested,
    resume_token: &str,
) -> Result<FrameStream, ApiError> {
    let scope = Scope::authorize(&cx, principal, requested).await?;
    let marks = if resume_token.is_empty() {
        None
    } else {
        let (token_scope, marks) = token::decode(&cx.tokens, &scope.binding(), resume_token)
            .map_err(|e| ApiError::invalid("INVALID_REQUEST", "resume_token", e.to_string()))?;
        if token_scope != scope.token_scope() {
            return Err(ApiError::invalid(
                "INVALID_REQUEST",
                "resume_token",
                "was issued for another scope; resume with the scope the token came from",
            ));
        }
        Some(marks)
    };
    let deadline = Instant::now() + cx.settings.max_lifetime;
    let mut watch = Watch { cx, scope, marks: BTreeMap::new(), plans: HashMap::new(), idle: HashMap::new(), deadline };
    // The snapshot is read before the call answers: once a client has its answer, every change
    // after it reaches the client as an event (a client that opens a watch, then pushes, sees
    // each step of its push), and a store that cannot answer fails the call itself.
    let opening = match marks {
        Some(marks) => {
            watch.marks = marks;
            Vec::new()
        }
        None => watch.snapshot().await?,
    };
    Ok(super::outbox::drive(64, |tx| watch.run(opening, tx)))
}

struct Watch {
    cx: WatchContext,
    scope: Scope,
    /// The last sequence sent, per run, until the stream follows (which keeps them shared).
    marks: BTreeMap<WorkflowId, u64>,
    /// The plans of runs read so far (heartbeat ETAs).
    plans: HashMap<WorkflowId, Plan>,
    /// Runs last seen processing with no step running (waiting for a worker), with their ETA then.
    idle: HashMap<WorkflowId, Idle>,
    deadline: Instant,
}

impl Watch {
    /// Sends `opening` (the snapshot, unless resumed), then follows the scope.
    async fn run(mut self, opening: Vec<pb::WatchStatusResponse>, tx: Sender) {
        for message in opening {
            tx.send(Ok(Frame::Message(Box::new(message)))).await;
        }
        if let Err(e) = self.follow(&tx).await {
            tx.send(Err(Status::from(e))).await;
        }
    }

    fn token(&self) -> String {
        self.token_after(&self.marks)
    }

    fn token_after(&self, marks: &BTreeMap<WorkflowId, u64>) -> String {
        token::encode(&self.cx.tokens, &self.scope.binding(), &self.scope.token_scope(), marks)
    }

    /// The runs in scope now, in chunks; the last chunk carries the batch's progress and the
    /// first token.
    async fn snapshot(&mut self) -> Result<Vec<pb::WatchStatusResponse>, ApiError> {
        let store = self.cx.store.clone();
        let filter = self.scope.filter();
        if let Scope::Company(_) = self.scope {
            // Runs that ended a moment ago are not shown, but their past is not news either.
            self.marks = store.sequence_heads(&self.scope.store_scope()).await?.into_iter().collect();
        }
        let positions = self.positions().await?;
        let mut runs = Vec::new();
        let mut page = PageRequest { size: etter_store::MAX_PAGE_SIZE, token: None };
        loop {
            let listed = store.list_runs(&filter, &page).await?;
            runs.extend(listed.runs);
            match listed.next_page_token {
                Some(token) => page.token = Some(token),
                None => break,
            }
        }
        let mut chunks = runs.chunks(SNAPSHOT_CHUNK).peekable();
        if chunks.peek().is_none() {
            let snapshot = pb::Snapshot { runs: Vec::new(), last: true, batch: self.batch_progress().await? };
            return Ok(vec![message(Kind::Snapshot(snapshot), self.token())]);
        }
        let mut messages = Vec::with_capacity(runs.len().div_ceil(SNAPSHOT_CHUNK));
        while let Some(chunk) = chunks.next() {
            let mut statuses = Vec::with_capacity(chunk.len());
            for run in chunk {
                let attempts = self.cx.kept_steps.steps(store.as_ref(), run).await?;
                let status =
                    status::assemble(run, &attempts, positions.get(&run.workflow_id).copied(), &self.cx.estimator);
                if let Some(eta) = idle_eta(&status) {
                    self.idle.insert(run.workflow_id.clone(), eta);
                }
                statuses.push(status);
                self.marks.insert(run.workflow_id.clone(), run.sequence);
                self.plans.insert(run.workflow_id.clone(), status::plan_of(run));
            }
            let last = chunks.peek().is_none();
            let batch = if last { self.batch_progress().await? } else { None };
            let token = if last { self.token() } else { String::new() };
            messages.push(message(Kind::Snapshot(pb::Snapshot { runs: statuses, last, batch }), token));
        }
        Ok(messages)
    }

    /// Sends events as they are recorded until the scope is over (batch), the lifetime is up, the
    /// server drains or the client leaves.
    async fn follow(&mut self, tx: &Sender) -> Result<(), ApiError> {
        let mut moved = self.cx.moved.subscribe();
        // Workflow ids of the company's runs start so (legacy ids of a company whose id extends
        // this one's match too: an extra look at the store, never a missed one).
        let prefixes = self.scope.company().workflow_prefixes();
        let key: Arc<str> = self.scope.key().into();
        let mut marks = MarksKey::new(std::mem::take(&mut self.marks));
        let mut last_sent = Instant::now();
        // Every read of a look starts after `looked`: when the stream was woken, i.e. when the
        // server learned of the move (looks shared with other streams too, so none answers from
        // before the change that woke this stream).
        let mut looked = Instant::now();
        loop {
            let pass = self
                .cx
                .shared
                .passes
                .get(&(Arc::clone(&key), marks.clone()), looked, || {
                    look(self.cx.clone(), self.scope.clone(), Arc::clone(&key), marks.clone(), looked)
                })
                .await?;
            for frame in &pass.frames {
                tx.send(Ok(Frame::Encoded(frame.clone()))).await;
            }
            marks = pass.marks.clone();
            for (run, plan) in &pass.plans {
                if !self.plans.contains_key(run) {
                    self.plans.insert(run.clone(), plan.clone());
                }
            }
            for (run, idle) in &pass.idle {
                match idle {
                    Some(idle) => self.idle.insert(run.clone(), *idle),
                    None => self.idle.remove(run),
                };
            }
            if !pass.frames.is_empty() {
                last_sent = Instant::now();
            } else if pass.over {
                return Ok(());
            } else if last_sent.elapsed() >= self.cx.settings.heartbeat_interval {
                tx.send(Ok(Frame::Message(Box::new(self.heartbeat(marks.marks()).await?)))).await;
                last_sent = Instant::now();
            }
            let now = Instant::now();
            if now >= self.deadline {
                // Clients resume with the last resume_token they received.
                return Ok(());
            }
            if pass.full {
                looked = Instant::now();
                continue;
            }
            let nap = self.cx.settings.poll_interval.min(self.deadline - now);
            tokio::select! {
                woken = super::nap_until_moved(nap, &mut moved, |run| prefixes.iter().any(|prefix| run.as_str().starts_with(prefix.as_str()))) => {
                    looked = woken;
                }
                _ = self.cx.drain.changed() => return Ok(()),
            }
        }
    }

    /// Queue positions (with ETAs) of the queued runs in scope, and the batch's progress.
    async fn heartbeat(&mut self, marks: &BTreeMap<WorkflowId, u64>) -> Result<pb::WatchStatusResponse, ApiError> {
        // Runs that left the stream need no plan any more.
        self.plans.retain(|run, _| marks.contains_key(run));
        let positions = self.shared_positions().await?;
        let mut queue = Vec::new();
        for (run, position) in &positions {
            if !marks.contains_key(run) {
                continue;
            }
            let plan = match self.plans.get(run) {
                Some(plan) => plan.clone(),
                None => {
                    let plan = status::plan_of(&self.cx.store.get_run(run).await?);
                    self.plans.insert(run.clone(), plan.clone());
                    plan
                }
            };
            queue.push(pb::QueuePosition {
                workflow_id: run.to_string(),
                position_in_queue: i32::try_from(*position).unwrap_or(i32::MAX),
                estimated_duration_seconds: self.cx.estimator.remaining_seconds(&plan, Some(*position), 0),
                wait_reason: self.cx.estimator.conditions().queued(self.scope.company(), *position) as i32,
            });
        }
        // Runs being checked, and processing runs with no step running (waiting for a worker), are
        // placed too, at position 0.
        self.idle.retain(|run, _| marks.contains_key(run) && !positions.contains_key(run));
        let conditions = self.cx.estimator.conditions();
        for (run, idle) in &self.idle {
            let reason = if idle.validating { conditions.validating() } else { conditions.processing() };
            queue.push(pb::QueuePosition {
                workflow_id: run.to_string(),
                position_in_queue: 0,
                estimated_duration_seconds: idle.eta,
                wait_reason: reason as i32,
            });
        }
        queue.sort_by_key(|q| q.position_in_queue);
        let heartbeat = pb::Heartbeat {
            server_time: Some(convert::timestamp(etter_store::now())),
            queue,
            batch: self.batch_progress().await?,
        };
        Ok(message(Kind::Heartbeat(heartbeat), self.token_after(marks)))
    }

    /// [`Self::positions`], shared with the other streams of the company.
    async fn shared_positions(&self) -> Result<HashMap<WorkflowId, u32>, ApiError> {
        let (store, company) = (self.cx.store.clone(), self.scope.company().clone());
        let read = || async move {
            let positions = store.queue_positions(&company).await?;
            Ok(positions.into_iter().map(|p| (p.workflow_id, p.position)).collect::<Vec<_>>())
        };
        let positions = self.cx.shared.positions.get(self.scope.company(), Instant::now(), read).await?;
        Ok(positions.iter().cloned().collect())
    }

    async fn positions(&self) -> Result<HashMap<WorkflowId, u32>, ApiError> {
        let positions = self.cx.store.queue_positions(self.scope.company()).await?;
        Ok(positions.into_iter().map(|p| (p.workflow_id, p.position)).collect())
    }

    async fn batch_progress(&self) -> Result<Option<pb::BatchProgress>, ApiError> {
        match &self.scope {
            Scope::Batch(batch) => Ok(Some(batch::progress(self.cx.store.as_ref(), &self.cx.estimator, batch).await?)),
            Scope::Company(_) => Ok(None),
        }
    }
}

/// What one look at the store found for the streams of a scope at the same marks: the frames to
/// send (each event with its run's status and the token after it), and the marks after them.
/// Streams at those marks woken before the look started share it ([`super::shared`]).
pub struct Pass {
    /// Encoded `WatchStatusResponse`s, in order.
    frames: Vec<Bytes>,
    /// The marks after the frames.
    marks: MarksKey,
    /// Plans of the runs the frames are about (heartbeat ETAs).
    plans: Vec<(WorkflowId, Plan)>,
    /// Of the runs the frames are about, whether each waits for a worker (its ETA) or not.
    idle: Vec<(WorkflowId, Option<Idle>)>,
    /// A full page of events was read: look again at once.
    full: bool,
    /// A batch whose runs have all ended, every event sent: the stream is over.
    over: bool,
}

/// Reads the scope's sequence heads, the events after `from` of the runs that moved (and of runs
/// new to the scope, from sequence 1), and each moved run's status, all started after `looked`.
async fn look(
    cx: WatchContext,
    scope: Scope,
    key: Arc<str>,
    from: MarksKey,
    looked: Instant,
) -> Result<Pass, ApiError> {
    let (store, shared) = (Arc::clone(&cx.store), Arc::clone(&cx.shared));
    let heads = {
        let (store, scope) = (Arc::clone(&store), scope.store_scope());
        let read = || async move { Ok(store.sequence_heads(&scope).await?) };
        shared.heads.get(&key, looked, read).await?
    };
    let heads: HashMap<&WorkflowId, u64> = heads.iter().map(|(run, head)| (run, *head)).collect();
    let mut marks = from.marks().clone();
    for run in heads.keys() {
        if !marks.contains_key(*run) {
            marks.insert((*run).clone(), 0);
        }
    }
    // Runs that moved, and runs that left the scope (their last events may be unsent).
    let wanted: Vec<(WorkflowId, u64)> = marks
        .iter()
        .filter(|(run, mark)| heads.get(run).is_none_or(|head| head > *mark))
        .map(|(run, mark)| (run.clone(), *mark))
        .collect();
    let events = if wanted.is_empty() {
        Arc::default()
    } else {
        let (store, marks, within) = (Arc::clone(&store), wanted.clone(), scope.event_scope());
        let read = || async move { Ok(store.events_after_marks(&within, &marks, EVENT_PAGE).await?) };
        shared.events.get(&(Arc::clone(&key), wanted.clone()), looked, read).await?
    };
    let full = events.len() == EVENT_PAGE as usize;
    let (token_scope, binding) = (scope.token_scope(), scope.binding());
    let (mut frames, mut plans, mut idle) = (Vec::with_capacity(events.len()), Vec::new(), Vec::new());
    let mut current: Option<Arc<StatusRead>> = None;
    for event in events.iter() {
        let read = match &current {
            Some(read) if read.status.workflow_id == event.workflow_id.as_str() => Arc::clone(read),
            _ => {
                let read = shared
                    .statuses
                    .get(&event.workflow_id, looked, || {
                        let (cx, workflow_id) = (cx.clone(), event.workflow_id.clone());
                        async move {
                            let sources = status::StatusContext {
                                store: cx.store.as_ref(),
                                estimator: &cx.estimator,
                                finished: Some(status::Finished {
                                    graph: cx.graph.as_ref(),
                                    server: &cx.config.server,
                                }),
                                kept: Some(&cx.kept_steps),
                            };
                            let run: Run = cx.store.get_run(&workflow_id).await?;
                            Ok(StatusRead::new(status::plan_of(&run), status::run_status(&sources, &run).await?))
                        }
                    })
                    .await?;
                plans.push((event.workflow_id.clone(), read.plan.clone()));
                idle.push((event.workflow_id.clone(), idle_eta(&read.status)));
                current = Some(Arc::clone(&read));
                read
            }
        };
        if let Some(mark) = marks.get_mut(&event.workflow_id) {
            *mark = event.sequence;
        } else {
            marks.insert(event.workflow_id.clone(), event.sequence);
        }
        frames.push(wire::event_bytes(&read.event(event), &token::encode(&cx.tokens, &binding, &token_scope, &marks)));
    }
    if !full {
        // A run that left the company's active runs and has nothing more to send is done.
        let moved: HashSet<&WorkflowId> = events.iter().map(|e| &e.workflow_id).collect();
        for (run, _) in &wanted {
            if !heads.contains_key(run) && !moved.contains(run) {
                marks.remove(run);
            }
        }
    }
    let over = match &scope {
        Scope::Batch(batch) if events.is_empty() && heads.iter().all(|(run, head)| marks.get(*run) == Some(head)) => {
            store.batch_counts(&batch.id).await?.iter().all(|(state, _)| !state.is_active())
        }
        _ => false,
    };
    Ok(Pass { frames, marks: MarksKey::new(marks), plans, idle, full, over })
}

fn message(kind: Kind, resume_token: String) -> pb::WatchStatusResponse {
    pb::WatchStatusResponse { kind: Some(kind), resume_token }
}

/// The ETA of a run that waits outside the queue: VALIDATING (its documents are being checked),
/// or processing with no step running (waiting for a worker); `None` for any other run.
fn idle_eta(status: &pb::RunStatus) -> Option<Idle> {
    let validating = status.status == pb::RoleStatus::Validating as i32;
    let idle = status.status == pb::RoleStatus::Processing as i32 && status.current_steps.is_empty();
    (validating || idle).then_some(Idle { eta: status.estimated_duration_seconds, validating })
}

/// A run placed at position 0 in heartbeats: waiting, but not in the queue.
#[derive(Debug, Clone, Copy)]
struct Idle {
    /// Its ETA when last read.
    eta: i64,
    /// VALIDATING (else processing with no step running).
    validating: bool,
}
