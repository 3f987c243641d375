//! The run store written once over a backend's SQL primitives.
//!
//! [`SqlStore`] implements every [`RunStore`] operation — deduplication, run numbering, lifecycle
//! checks, idempotent step bookkeeping, event sequencing, batching, pagination — in terms of a
//! [`Tx`]: a transaction of one backend offering small, single-statement primitives. Most of those
//! are written once in SQL both dialects accept (`shared`); the PostgreSQL and SQLite modules write
//! only the rest, where the dialects differ (arrays, row locks, `SKIP LOCKED`), and how they bind
//! times and days — so the two stores cannot drift apart in behaviour.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{NaiveDate, TimeDelta};

use super::{
    Admission, Announce, Batch, BatchCreated, Change, Claim, ClaimTerms, CompanyLoad, Created, DEFAULT_PAGE_SIZE,
    Delivery, DocumentHash, EventScope, IDEMPOTENCY_TTL, MAX_PAGE_SIZE, NewBatch, NewRun, Notification,
    NotificationClaim, PageRequest, PipelineError, PutRequest, QueuePosition, RequestKey, Run, RunEvent, RunFilter,
    RunPage, RunStore, StepAttempt, StepRecorded, StepStats, StepStatus, StepTransition, StoreError, Timestamp,
    TokenCount, Transition, UsageRow, WatchScope, WorkersSeen,
    backend::{Backend, Tx},
    now,
    rows::{Cursor, RoleKey, RoleLatest, RoleRow, StoredRequest},
    shared::Portable as _,
    statement::Statements as _,
    values::{corrupt, id, number, to_i64},
};
use etter_core::audit::{AuditEntry, AuditEvent, AuditFilter, AuditHead, ChainKey};
use etter_core::ids::{BatchId, CompanyId, DraupRoleId, RoleId, RoleName, WorkflowId};
use etter_core::lifecycle::{self, RunState};
use etter_core::outputs::ContentHash;
use etter_core::steps::{Action, Plan, StepName};

const PAGE_TOKEN_VERSION: &str = "v1";

/// Encodes a history cursor as an opaque token (hex, so it is safe in any transport).
fn encode_page_token(cursor: &Cursor) -> String {
    let plain = format!("{PAGE_TOKEN_VERSION}|{}|{}", cursor.create_time.timestamp_micros(), cursor.workflow_id);
    hex::encode(plain)
}

fn decode_page_token(token: &str) -> Result<Cursor, StoreError> {
    let bytes = hex::decode(token).map_err(|_| StoreError::InvalidPageToken)?;
    let plain = String::from_utf8(bytes).map_err(|_| StoreError::InvalidPageToken)?;
    let mut parts = plain.splitn(3, '|');
    let (Some(PAGE_TOKEN_VERSION), Some(micros), Some(workflow_id)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(StoreError::InvalidPageToken);
    };
    let create_time = micros
        .parse::<i64>()
        .ok()
        .and_then(chrono::DateTime::from_timestamp_micros)
        .ok_or(StoreError::InvalidPageToken)?;
    let workflow_id = WorkflowId::parse(workflow_id).map_err(|_| StoreError::InvalidPageToken)?;
    Ok(Cursor { create_time, workflow_id })
}

fn delta(from: Timestamp, by: std::time::Duration) -> Result<Timestamp, StoreError> {
    TimeDelta::from_std(by)
        .ok()
        .and_then(|d| from.checked_add_signed(d))
        .ok_or_else(|| StoreError::InvalidArgument(format!("duration {by:?} is out of range")))
}

/// The [`RunStore`] over one backend.
pub(super) struct SqlStore<B> {
    backend: B,
    announce: Option<Arc<dyn Announce>>,
    /// Some roles were stored with ids of the form before ids had a dot: pushes look for them by
    /// company and name ([`RoleId::legacy`]), so their runs go on under the ids they have. Read
    /// once at start; nothing stores such ids any more.
    legacy_roles: bool,
}

impl<B: Backend> SqlStore<B> {
    pub(super) async fn new(backend: B, announce: Option<Arc<dyn Announce>>) -> Result<Self, StoreError> {
        let mut tx = backend.autocommit().await?;
        let legacy_roles = tx.any_legacy_role().await?;
        tx.commit().await?;
        Ok(SqlStore { backend, announce, legacy_roles })
    }

    /// Tells the announcer (if any) that a change of `run` was committed.
    fn moved(&self, run: &WorkflowId) {
        if let Some(announce) = &self.announce {
            announce.moved(run);
        }
    }

    /// [`RunStore::create_run`], and [`RunStore::create_run_and_claim`] when `terms` are given.
    async fn create_one(&self, new: NewRun, terms: Option<&ClaimTerms>) -> Result<Created, StoreError> {
        let now = now();
        // No room on a cap: nothing to claim, whatever the store holds.
        let terms = terms.filter(|t| t.company_room > 0 && t.total_room > 0);
        if B::CREATES_FIRST_RUN_IN_ONE_STATEMENT && new.expected_latest.is_none() && !self.legacy_roles {
            // Decided as the first run of a new role (most pushes: onboarding a company's roles);
            // written only if the role is new indeed.
            let role_id = RoleId::new(&new.company, &new.role_name);
            let fresh = RoleState::fresh(&role_id, &new);
            if let Decided::New(run, reason) = decide(&fresh, &role_id, new.clone(), None, now)? {
                let claim = terms
                    .filter(|_| run.state == RunState::Queued)
                    .map(|t| Ok::<_, StoreError>((t, delta(now, t.lease)?)))
                    .transpose()?;
                let first = first_event(&run, reason, now);
                if let Some(claimed) = self.backend.create_first_run(&run, &first, claim).await? {
                    self.created(&run);
                    return Ok(Created { run, created: true, claimed });
                }
            }
        }
        let mut tx = self.backend.write().await?;
        let mut created = create_in(&mut tx, vec![new], None, self.legacy_roles, now)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Conflict("the run was not processed".to_owned()))??;
        // Claimed in the same transaction: one commit (one WAL flush) per push, not two, and
        // the run is never visible unclaimed to a dispatch round.
        if let Some(terms) = terms
            && created.created
            && created.run.state == RunState::Queued
        {
            let run = &created.run;
            let at = super::now();
            let until = delta(at, terms.lease)?;
            created.claimed = tx.claim_run(&run.workflow_id, &run.company_id, at, terms, until).await?;
        }
        tx.commit().await?;
        if created.created {
            self.created(&created.run);
        }
        Ok(created)
    }

    /// Announces a new run, and the run it superseded (whose `superseded_by` changed).
    fn created(&self, run: &Run) {
        self.moved(&run.workflow_id);
        if let Some(previous) = &run.supersedes {
            self.moved(previous);
        }
    }
}

/// One state change of `run` inside `tx`: the lifecycle decides, the run and its event are
/// written, and a run that just ended gets its announcement queued. Nothing is written when the
/// change is refused.
async fn change_state<T: Tx>(
    tx: &mut T,
    run: &WorkflowId,
    change: Transition,
    now: Timestamp,
) -> Result<Run, StoreError> {
    let mut stored = tx.run(run, true).await?.ok_or_else(|| StoreError::not_found("run", run))?;
    let previous = stored.state;
    lifecycle::transition(previous, change.to)?;
    stored.state = change.to;
    if change.to == RunState::Processing {
        stored.start_time = Some(now);
    }
    if change.to.is_final() && stored.end_time.is_none() {
        stored.end_time = Some(now);
    }
    if change.error.is_some() {
        stored.error = change.error;
    }
    if change.to == RunState::ValidationError {
        if change.violations.is_empty() {
            return Err(StoreError::InvalidArgument("a run is rejected with at least one field violation".to_owned()));
        }
        stored.field_violations = change.violations;
    }
    if previous == RunState::Processing && change.to.is_final() {
        close_open_steps(tx, &mut stored, now).await?;
    }
    append(tx, &mut stored, now, Change::Status { previous: Some(previous), status: change.to, reason: change.reason })
        .await?;
    // The run just ended: its announcement is queued in the same transaction (never lost, never
    // twice: one row per run).
    if stored.notify && previous.is_active() && change.to.is_final() {
        tx.insert_notification(&stored, now).await?;
    }
    Ok(stored)
}

/// A PROCESSING run that ends with steps still open — cancelled by `Cancel`, or closed by the
/// server because its workflow ended without an outcome — has them closed in the same
/// transaction, before its final event: an open attempt and a planned step never reached become
/// CANCELLED in a cancelled run; otherwise an open attempt becomes FAILED with the run's error and
/// a step never reached SKIPPED. So a run's final event is always its last (a stream that stops
/// there misses nothing), and no step of an ended run shows running; the worker's own late
/// records of such a run change nothing ([`RunStore::record_step`]). A run the worker closes has
/// every step closed already.
async fn close_open_steps<T: Tx>(tx: &mut T, run: &mut Run, now: Timestamp) -> Result<(), StoreError> {
    let attempts = tx.steps(&run.workflow_id).await?;
    let planned: Vec<StepName> = run
        .plan
        .as_ref()
        .map(|plan| plan.steps.iter().filter(|(_, action)| *action == Action::Run).map(|(step, _)| *step).collect())
        .unwrap_or_default();
    let planned = |step: StepName| planned.contains(&step);
    let cancelled = run.state == RunState::Cancelled;
    for step in StepName::ALL {
        let latest = attempts.iter().filter(|a| a.step == step.as_str()).max_by_key(|a| a.attempt);
        let closed = match latest {
            Some(open) if !open.status.is_finished() => StepAttempt {
                status: if cancelled { StepStatus::Cancelled } else { StepStatus::Failed },
                finished_at: Some(now),
                error: if cancelled { open.error.clone() } else { run.error.clone().or_else(|| open.error.clone()) },
                update_time: now,
                ..open.clone()
            },
            None if planned(step) => StepAttempt {
                step: step.as_str().to_owned(),
                attempt: 1,
                status: if cancelled { StepStatus::Cancelled } else { StepStatus::Skipped },
                started_at: None,
                finished_at: Some(now),
                tokens: TokenCount::default(),
                input_hash: None,
                output_hash: None,
                error: None,
                reused_from: None,
                model: None,
                prompt_version: None,
                digest: None,
                update_time: now,
            },
            _ => continue,
        };
        tx.upsert_step(&run.workflow_id, &closed).await?;
        let change = Change::Step {
            step: closed.step.clone(),
            status: closed.status,
            attempt: closed.attempt,
            error: closed.error.clone(),
        };
        append(tx, run, now, change).await?;
    }
    Ok(())
}

/// Bumps the run's sequence and appends its event, writing the run back. The caller holds the
/// run's lock, so `sequence + 1` is free and commits in order.
async fn append<T: Tx>(tx: &mut T, run: &mut Run, now: Timestamp, change: Change) -> Result<u64, StoreError> {
    run.sequence += 1;
    run.update_time = now;
    tx.update_run(run).await?;
    tx.insert_event(&RunEvent { workflow_id: run.workflow_id.clone(), sequence: run.sequence, time: now, change })
        .await?;
    Ok(run.sequence)
}

/// What [`create_in`] knows of a role while it decides the chunk's items one after the other.
struct RoleState {
    row: RoleRow,
    /// Its latest run number, counting the runs this chunk created.
    last: u32,
    /// Its latest run, and where that run is if this chunk created it (an index into the new runs).
    latest: Option<(Run, Option<usize>)>,
    /// The Draup role of the last run this chunk created for it that had one.
    draup: Option<DraupRoleId>,
}

impl RoleState {
    /// A role with no row yet, as `new` would insert it.
    fn fresh(role_id: &RoleId, new: &NewRun) -> Self {
        let row = RoleRow {
            role_id: role_id.to_string(),
            company: new.company.to_string(),
            name: new.role_name.to_string(),
            last_run_number: 0,
        };
        RoleState { row, last: 0, latest: None, draup: None }
    }
}

/// A new run's first event: its status, and why it exists.
fn first_event(run: &Run, reason: String, now: Timestamp) -> RunEvent {
    RunEvent {
        workflow_id: run.workflow_id.clone(),
        sequence: 1,
        time: now,
        change: Change::Status { previous: None, status: run.state, reason },
    }
}

/// Creates runs inside `tx`, each as [`RunStore::create_run`] does and as if one after the other
/// in the order given (a role twice in `items` sees the run its first item created), with the
/// same statements whatever their number: the roles locked in one, their latest runs read (and
/// locked) in one, then the new runs, the roles' numbers, the runs they supersede and their first
/// events written in one each. An item's refusal is decided before any statement can fail, so the
/// transaction survives it; a refusal of the whole call (a rejected item without violations) comes
/// before any statement. At most [`super::BATCH_CHUNK_SIZE`] items: the statements' parameters
/// stay within both databases' limits.
async fn create_in<T: Tx>(
    tx: &mut T,
    items: Vec<NewRun>,
    batch: Option<&BatchId>,
    legacy_roles: bool,
    now: Timestamp,
) -> Result<Vec<Result<Created, StoreError>>, StoreError> {
    if items.iter().any(|new| matches!(&new.admission, Admission::Reject(violations) if violations.is_empty())) {
        return Err(StoreError::InvalidArgument("a rejected run needs at least one field violation".to_owned()));
    }
    let legacy: HashSet<String> = if legacy_roles {
        // Roles stored before ids had a dot go on under their ids: found by company and name.
        let ids: Vec<RoleId> = items.iter().map(|new| RoleId::legacy(&new.company, &new.role_name)).collect();
        let rows = tx.roles(&ids).await?;
        rows.into_iter()
            .filter(|row| {
                items.iter().any(|new| new.company.as_str() == row.company && new.role_name.as_str() == row.name)
            })
            .map(|row| row.role_id)
            .collect()
    } else {
        HashSet::new()
    };
    let items: Vec<(RoleId, NewRun)> = items
        .into_iter()
        .map(|new| {
            let old = RoleId::legacy(&new.company, &new.role_name);
            let id = if legacy.contains(old.as_str()) { old } else { RoleId::new(&new.company, &new.role_name) };
            (id, new)
        })
        .collect();
    let mut keys: Vec<RoleKey<'_>> =
        items.iter().map(|(id, new)| RoleKey { id, company: &new.company, name: &new.role_name }).collect();
    // Stable: of one role id's items, the first in request order inserts the role.
    keys.sort_by(|a, b| a.id.cmp(b.id));
    keys.dedup_by(|a, b| a.id == b.id);
    let mut roles: HashMap<String, RoleState> = HashMap::with_capacity(keys.len());
    for row in tx.lock_roles(&keys, now).await? {
        let last = number("run number", row.last_run_number)?;
        roles.insert(row.role_id.clone(), RoleState { row, last, latest: None, draup: None });
    }
    // The roles in lock order, for the statements after the items are decided.
    let order: Vec<RoleId> = keys.into_iter().map(|key| key.id.clone()).collect();
    let latest_ids: Vec<WorkflowId> = order
        .iter()
        .filter_map(|id| roles.get(id.as_str()).filter(|r| r.last > 0).map(|r| WorkflowId::for_run(id, r.last)))
        .collect();
    if !latest_ids.is_empty() {
        let mut found: HashMap<WorkflowId, Run> =
            tx.lock_runs(&latest_ids).await?.into_iter().map(|run| (run.workflow_id.clone(), run)).collect();
        for latest_id in latest_ids {
            let run =
                found.remove(&latest_id).ok_or_else(|| corrupt("latest run", latest_id.as_str(), "is missing"))?;
            if let Some(role) = roles.get_mut(run.role_id.as_str()) {
                role.latest = Some((run, None));
            }
        }
    }

    let mut runs: Vec<Run> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    let mut superseded: Vec<(WorkflowId, WorkflowId)> = Vec::new();
    let mut results = Vec::with_capacity(items.len());
    for (role_id, new) in items {
        let role =
            roles.get_mut(role_id.as_str()).ok_or_else(|| corrupt("role", role_id.as_str(), "was not locked"))?;
        let result = decide(role, &role_id, new, batch, now).map(|decided| match decided {
            Decided::Existing(run) => Created { run, created: false, claimed: false },
            Decided::New(run, reason) => {
                if let Some((previous, pending)) = role.latest.take() {
                    match pending {
                        Some(index) => runs[index].superseded_by = Some(run.workflow_id.clone()),
                        None => superseded.push((previous.workflow_id, run.workflow_id.clone())),
                    }
                }
                role.last = run.run_number;
                role.draup = run.draup_role_id.clone().or(role.draup.take());
                role.latest = Some((run.clone(), Some(runs.len())));
                runs.push(run.clone());
                reasons.push(reason);
                Created { run, created: true, claimed: false }
            }
        });
        results.push(result);
    }

    if !runs.is_empty() {
        tx.insert_runs(&runs).await?;
        let latest: Vec<RoleLatest<'_>> = order
            .iter()
            .filter_map(|id| {
                let role = roles.get(id.as_str())?;
                role.latest.as_ref().filter(|(_, pending)| pending.is_some())?;
                Some(RoleLatest { id, number: role.last, draup: role.draup.as_ref() })
            })
            .collect();
        tx.set_roles_latest(&latest, now).await?;
        if !superseded.is_empty() {
            tx.supersede(&superseded, now).await?;
        }
        let events: Vec<RunEvent> =
            runs.iter().zip(reasons).map(|(run, reason)| first_event(run, reason, now)).collect();
        tx.insert_events(&events).await?;
    }
    Ok(results)
}

/// One item, decided.
enum Decided {
    /// The role's latest run answers it: nothing is written.
    Existing(Run),
    /// A new run, and the reason for its first event.
    New(Run, String),
}

/// Decides one item of [`create_in`] against what is known of its role then.
fn decide(
    role: &RoleState,
    role_id: &RoleId,
    new: NewRun,
    batch: Option<&BatchId>,
    now: Timestamp,
) -> Result<Decided, StoreError> {
    if role.row.company != new.company.as_str() || role.row.name != new.role_name.as_str() {
        return Err(StoreError::RoleIdCollision {
            role_id: role_id.clone(),
            existing_company: id(role.row.company.clone(), CompanyId::parse)?,
            existing_name: id(role.row.name.clone(), RoleName::parse)?,
            new_company: new.company,
            new_name: new.role_name,
        });
    }
    let latest = role.latest.as_ref().map(|(run, _)| run);
    if let Some(expected) = &new.expected_latest
        && latest.map(|r| &r.workflow_id) != Some(expected)
    {
        let actual = latest.map_or_else(|| "none".to_owned(), |r| r.workflow_id.to_string());
        return Err(StoreError::Conflict(format!(
            "run {expected} is no longer the latest run of role {role_id} (the latest is {actual}); \
             look at the latest run and retry that one"
        )));
    }
    if let Some(latest) = latest
        && !new.force
        && latest.input_identity == new.input_identity
    {
        // The same valid inputs, still queued, running or READY; or the same invalid item
        // rejected again: the run that exists answers, nothing new is stored.
        let same = match new.admission {
            Admission::Queue | Admission::Validate => latest.state.is_active() || latest.state == RunState::Ready,
            Admission::Reject(_) => latest.state == RunState::ValidationError,
        };
        if same {
            return Ok(Decided::Existing(latest.clone()));
        }
    }
    lifecycle::may_start_new_run(latest.map(|r| r.state))?;

    let number =
        role.last.checked_add(1).ok_or_else(|| StoreError::Conflict(format!("role {role_id} has too many runs")))?;
    let (state, field_violations, error, end_time) = match new.admission {
        Admission::Queue => (RunState::Queued, Vec::new(), None, None),
        Admission::Validate => (RunState::Validating, Vec::new(), None, None),
        Admission::Reject(violations) => {
            let error = PipelineError::validation(&violations);
            (RunState::ValidationError, violations, Some(error), Some(now))
        }
    };
    let run = Run {
        workflow_id: WorkflowId::for_run(role_id, number),
        role_id: role_id.clone(),
        company_id: new.company,
        role_name: new.role_name,
        draup_role_id: new.draup_role_id,
        run_number: number,
        input_identity: new.input_identity,
        state,
        superseded_by: None,
        supersedes: latest.map(|r| r.workflow_id.clone()),
        batch_id: batch.cloned(),
        priority: new.priority,
        options: new.options,
        documents: new.documents,
        error,
        needs_review: false,
        field_violations,
        token_estimate: new.token_estimate,
        tokens_used: TokenCount::default(),
        sequence: 1,
        create_time: now,
        start_time: None,
        end_time,
        update_time: now,
        plan: new.plan,
        notify: new.notify,
        trace_id: new.trace_id,
        trace_parent: new.trace_parent,
        deadline: new.deadline,
        model: new.model,
    };
    Ok(Decided::New(run, new.reason))
}

#[async_trait]
impl<B: Backend> RunStore for SqlStore<B> {
    fn backend(&self) -> &'static str {
        B::NAME
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut tx = self.backend.autocommit().await?;
        tx.ping().await?;
        tx.commit().await
    }

    async fn close(&self) {
        self.backend.close().await;
    }

    #[tracing::instrument(skip_all, fields(company = %new.company, role = %new.role_name))]
    async fn create_run(&self, new: NewRun) -> Result<Created, StoreError> {
        self.create_one(new, None).await
    }

    #[tracing::instrument(skip_all, fields(company = %new.company, role = %new.role_name))]
    async fn create_run_and_claim(&self, new: NewRun, terms: &ClaimTerms) -> Result<Created, StoreError> {
        self.create_one(new, Some(terms)).await
    }

    #[tracing::instrument(skip_all, fields(batch = %batch.id, items = items.len()))]
    async fn create_batch(&self, batch: NewBatch, items: Vec<NewRun>) -> Result<BatchCreated, StoreError> {
        if let Some(item) = items.iter().find(|item| item.company != batch.company) {
            return Err(StoreError::InvalidArgument(format!(
                "batch {} of company {} has an item of company {}",
                batch.id, batch.company, item.company
            )));
        }
        let now = now();
        let stored = Batch {
            id: batch.id,
            company: batch.company,
            request_id: batch.request_id,
            item_count: u32::try_from(items.len())
                .map_err(|_| StoreError::InvalidArgument("too many batch items".to_owned()))?,
            create_time: now,
        };
        let mut results: Vec<Option<Result<Created, StoreError>>> = (0..items.len()).map(|_| None).collect();
        let mut items: Vec<(usize, NewRun)> = items.into_iter().enumerate().collect();
        let mut first = true;
        // Always at least one transaction, so an empty batch is stored too.
        while first || !items.is_empty() {
            let rest = items.split_off(items.len().min(super::BATCH_CHUNK_SIZE));
            // In request order: of one role's items, the first decides first (`create_in` locks
            // the roles themselves in the one order every writer uses).
            let chunk = std::mem::replace(&mut items, rest);
            let mut tx = self.backend.write().await?;
            if first && !tx.insert_batch(&stored).await? {
                return Err(StoreError::Conflict(format!("batch {} already exists", stored.id)));
            }
            first = false;
            let (indexes, chunk): (Vec<usize>, Vec<NewRun>) = chunk.into_iter().unzip();
            for (index, result) in
                indexes.into_iter().zip(create_in(&mut tx, chunk, Some(&stored.id), self.legacy_roles, now).await?)
            {
                match result {
                    Err(e) if !e.is_item_error() => return Err(e),
                    result => results[index] = Some(result),
                }
            }
            tx.commit().await?;
        }
        let items: Vec<Result<Created, StoreError>> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Conflict("batch item was not processed".to_owned()))))
            .collect();
        for created in items.iter().flatten().filter(|c| c.created) {
            self.created(&created.run);
        }
        Ok(BatchCreated { batch: stored, items })
    }

    #[tracing::instrument(skip_all, fields(items = items.len()))]
    async fn preview_runs(&self, mut items: Vec<NewRun>) -> Result<Vec<Result<Created, StoreError>>, StoreError> {
        let now = now();
        let mut results = Vec::with_capacity(items.len());
        while !items.is_empty() {
            let rest = items.split_off(items.len().min(super::BATCH_CHUNK_SIZE));
            let chunk = std::mem::replace(&mut items, rest);
            let mut tx = self.backend.write().await?;
            for result in create_in(&mut tx, chunk, None, self.legacy_roles, now).await? {
                match result {
                    Err(e) if !e.is_item_error() => return Err(e),
                    result => results.push(result),
                }
            }
            // Dropped without a commit: rolled back, nothing of it is stored.
            drop(tx);
        }
        Ok(results)
    }

    #[tracing::instrument(skip_all, fields(run = %run, to = %change.to))]
    async fn transition(&self, run: &WorkflowId, change: Transition) -> Result<Run, StoreError> {
        let mut tx = self.backend.write().await?;
        let stored = change_state(&mut tx, run, change, now()).await?;
        tx.commit().await?;
        self.moved(run);
        Ok(stored)
    }

    async fn worker_seen(&self, worker: &str, task_queue: &str, started: Timestamp) -> Result<(), StoreError> {
        let mut tx = self.backend.write().await?;
        tx.worker_seen(worker, task_queue, started, now()).await?;
        tx.commit().await
    }

    async fn worker_gone(&self, worker: &str) -> Result<(), StoreError> {
        let mut tx = self.backend.autocommit().await?;
        tx.worker_gone(worker, Timestamp::UNIX_EPOCH).await?;
        tx.commit().await
    }

    async fn workers_seen(&self, task_queue: &str, since: Timestamp) -> Result<WorkersSeen, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let (recent, known) = tx.workers_seen(task_queue, since).await?;
        tx.commit().await?;
        Ok(WorkersSeen { recent, known })
    }

    #[tracing::instrument(skip_all, fields(runs = changes.len()))]
    async fn transition_each(
        &self,
        changes: Vec<(WorkflowId, Transition)>,
    ) -> Result<Vec<Result<Run, StoreError>>, StoreError> {
        let now = now();
        let mut tx = self.backend.write().await?;
        let mut outcomes = Vec::with_capacity(changes.len());
        for (run, change) in changes {
            // A change the lifecycle refuses (or of a run that is gone) writes nothing of its own:
            // it is answered, and the others go on. Anything else undoes them all.
            match change_state(&mut tx, &run, change, now).await {
                Ok(stored) => outcomes.push(Ok(stored)),
                Err(e @ (StoreError::IllegalTransition(_) | StoreError::NotFound { .. })) => outcomes.push(Err(e)),
                Err(e) => return Err(e),
            }
        }
        tx.commit().await?;
        for stored in outcomes.iter().flatten() {
            self.moved(&stored.workflow_id);
        }
        Ok(outcomes)
    }

    async fn claim_notifications(&self, claim: &NotificationClaim) -> Result<Vec<Notification>, StoreError> {
        let until = delta(claim.now, claim.lease)?;
        let mut tx = self.backend.autocommit().await?;
        let claimed = tx.claim_notifications(claim, until).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    async fn settle_notification(
        &self,
        id: i64,
        claimer: &str,
        delivery: Delivery,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let settled = tx.settle_notification(id, claimer, &delivery, now).await?;
        tx.commit().await?;
        Ok(settled)
    }

    async fn set_needs_review(&self, run: &WorkflowId, needs_review: bool) -> Result<(), StoreError> {
        let mut tx = self.backend.autocommit().await?;
        if !tx.set_needs_review(run, needs_review, now()).await? {
            return Err(StoreError::not_found("run", run));
        }
        tx.commit().await?;
        self.moved(run);
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(run = %run, step = %step.step, attempt = step.attempt, status = %step.status))]
    async fn record_step(&self, run: &WorkflowId, step: StepTransition) -> Result<StepRecorded, StoreError> {
        if step.attempt == 0 {
            return Err(StoreError::InvalidArgument("step attempts are numbered from 1".to_owned()));
        }
        let now = now();
        let mut tx = self.backend.write().await?;
        let mut stored = tx.run(run, true).await?.ok_or_else(|| StoreError::not_found("run", run))?;
        // Under the run's lock, so a concurrent retry of the same bookkeeping waits and then sees it.
        if let Some(sequence) = tx.step_event(run, &step.step, step.attempt, step.status).await? {
            return Ok(StepRecorded { sequence, recorded: false });
        }
        let previous = tx.step_attempt(run, &step.step, step.attempt).await?;
        // Stale: the run ended (its open steps were closed with it), a later attempt exists, or
        // this one was closed as retrying (by the attempt that replaces it, a moment before that
        // one records itself) and now reports the step done. Nor may it start again (its RUNNING
        // record held up until after it was closed). Retrying to failed is not stale: the run's
        // close records a last attempt's end so.
        let closed_as_retrying = |p: &StepAttempt| {
            p.status == StepStatus::Retrying && matches!(step.status, StepStatus::Completed | StepStatus::Running)
        };
        if stored.state.is_final() && previous.is_none() {
            tracing::info!(%run, step = %step.step, attempt = step.attempt, status = %step.status,
                "a step reported after its run ended; the run stands as it ended");
            return Ok(StepRecorded { sequence: stored.sequence, recorded: false });
        }
        if let Some(previous) = previous.as_ref()
            && (stored.state.is_final()
                || closed_as_retrying(previous)
                || tx.step_attempt(run, &step.step, step.attempt + 1).await?.is_some())
        {
            // Replaced: only the spend of the stale attempt counts.
            let spent = step.tokens.unwrap_or(previous.tokens);
            let added = TokenCount {
                input: (spent.input - previous.tokens.input).max(0),
                output: (spent.output - previous.tokens.output).max(0),
            };
            if added != TokenCount::default() {
                let mut counted = previous.clone();
                counted.tokens.input += added.input;
                counted.tokens.output += added.output;
                counted.update_time = now;
                tx.upsert_step(run, &counted).await?;
                stored.tokens_used.input += added.input;
                stored.tokens_used.output += added.output;
                tx.add_usage(&stored.company_id, now.date_naive(), &step.step, added).await?;
                stored.update_time = now;
                tx.update_run(&stored).await?;
                tx.commit().await?;
            }
            tracing::info!(%run, step = %step.step, attempt = step.attempt, status = %step.status,
                "a replaced attempt reported late; its status stands");
            return Ok(StepRecorded { sequence: stored.sequence, recorded: false });
        }
        if let Some(previous) = &previous
            && previous.status.is_finished()
        {
            return Err(StoreError::Conflict(format!(
                "step {} attempt {} of run {run} is already {}; record a new attempt instead",
                step.step, step.attempt, previous.status
            )));
        }
        let previous_tokens = previous.as_ref().map(|p| p.tokens).unwrap_or_default();
        let tokens = step.tokens.unwrap_or(previous_tokens);
        let attempt = StepAttempt {
            step: step.step.clone(),
            attempt: step.attempt,
            status: step.status,
            started_at: previous
                .as_ref()
                .and_then(|p| p.started_at)
                .or((step.status == StepStatus::Running).then_some(now)),
            finished_at: step.status.is_finished().then_some(now),
            tokens,
            input_hash: step.input_hash.or_else(|| previous.as_ref().and_then(|p| p.input_hash.clone())),
            output_hash: step.output_hash.or_else(|| previous.as_ref().and_then(|p| p.output_hash.clone())),
            error: step.error.clone().or_else(|| previous.as_ref().and_then(|p| p.error.clone())),
            reused_from: step.reused_from.or_else(|| previous.as_ref().and_then(|p| p.reused_from.clone())),
            model: step.model.or_else(|| previous.as_ref().and_then(|p| p.model.clone())),
            prompt_version: step.prompt_version.or_else(|| previous.as_ref().and_then(|p| p.prompt_version.clone())),
            digest: step.digest.or_else(|| previous.as_ref().and_then(|p| p.digest.clone())),
            update_time: now,
        };
        tx.upsert_step(run, &attempt).await?;
        let added =
            TokenCount { input: tokens.input - previous_tokens.input, output: tokens.output - previous_tokens.output };
        if added != TokenCount::default() {
            stored.tokens_used.input += added.input;
            stored.tokens_used.output += added.output;
            tx.add_usage(&stored.company_id, now.date_naive(), &step.step, added).await?;
        }
        let change = Change::Step { step: step.step, status: step.status, attempt: step.attempt, error: step.error };
        let sequence = append(&mut tx, &mut stored, now, change).await?;
        tx.commit().await?;
        self.moved(run);
        Ok(StepRecorded { sequence, recorded: true })
    }

    async fn claim_queued(&self, claim: &Claim) -> Result<Vec<Run>, StoreError> {
        if claim.limit == 0 {
            return Ok(Vec::new());
        }
        let until = delta(claim.now, claim.lease)?;
        let mut tx = self.backend.autocommit().await?;
        let mut runs = tx.claim(claim, RunState::Queued, until).await?;
        tx.commit().await?;
        runs.sort_by(|a, b| {
            (b.priority, a.create_time, &a.workflow_id).cmp(&(a.priority, b.create_time, &b.workflow_id))
        });
        Ok(runs)
    }

    async fn claim_validating(&self, claim: &Claim) -> Result<Vec<Run>, StoreError> {
        if claim.limit == 0 {
            return Ok(Vec::new());
        }
        let until = delta(claim.now, claim.lease)?;
        let mut tx = self.backend.autocommit().await?;
        let mut runs = tx.claim(claim, RunState::Validating, until).await?;
        tx.commit().await?;
        runs.sort_by(|a, b| (a.create_time, &a.workflow_id).cmp(&(b.create_time, &b.workflow_id)));
        Ok(runs)
    }

    async fn release_claim(&self, run: &WorkflowId, claimer: &str) -> Result<(), StoreError> {
        let mut tx = self.backend.autocommit().await?;
        tx.release_claim(run, claimer).await?;
        tx.commit().await
    }

    async fn get_run(&self, run: &WorkflowId) -> Result<Run, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let stored = tx.run(run, false).await?.ok_or_else(|| StoreError::not_found("run", run))?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn latest_run(&self, role: &RoleId) -> Result<Run, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let latest = tx.latest_run(role).await?;
        tx.commit().await?;
        latest.ok_or_else(|| StoreError::not_found("role", role))
    }

    async fn steps(&self, run: &WorkflowId) -> Result<Vec<StepAttempt>, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let steps = tx.steps(run).await?;
        tx.commit().await?;
        Ok(steps)
    }

    async fn list_runs(&self, filter: &RunFilter, page: &PageRequest) -> Result<RunPage, StoreError> {
        let size = match page.size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let cursor = page.token.as_deref().filter(|t| !t.is_empty()).map(decode_page_token).transpose()?;
        let mut tx = self.backend.autocommit().await?;
        // One more than asked tells whether another page exists.
        let mut runs = tx.list_runs(filter, cursor.as_ref(), size + 1).await?;
        tx.commit().await?;
        let more = runs.len() > size as usize;
        runs.truncate(size as usize);
        let next_page_token = match runs.last() {
            Some(last) if more => Some(encode_page_token(&Cursor {
                create_time: last.create_time,
                workflow_id: last.workflow_id.clone(),
            })),
            _ => None,
        };
        Ok(RunPage { runs, next_page_token })
    }

    async fn get_batch(&self, batch: &BatchId) -> Result<Batch, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let stored = tx.batch(batch).await?.ok_or_else(|| StoreError::not_found("batch", batch))?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn batch_counts(&self, batch: &BatchId) -> Result<Vec<(RunState, u64)>, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let counts = tx.batch_counts(batch).await?;
        tx.commit().await?;
        Ok(counts)
    }

    async fn count_runs(&self, company: Option<&CompanyId>, states: &[RunState]) -> Result<u64, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let count = tx.count_runs(company, states).await?;
        tx.commit().await?;
        Ok(count)
    }

    async fn runs_in_states(
        &self,
        states: &[RunState],
        after: Option<&WorkflowId>,
        limit: u32,
    ) -> Result<Vec<Run>, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let runs = tx.runs_in_states(states, after, limit.min(MAX_PAGE_SIZE)).await?;
        tx.commit().await?;
        Ok(runs)
    }

    async fn step_stats(&self, per_step: u32) -> Result<Vec<StepStats>, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let stats = tx.step_stats(per_step.max(1)).await?;
        tx.commit().await?;
        Ok(stats)
    }

    async fn recently_ended(&self, state: RunState, limit: u32) -> Result<Vec<Run>, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let runs = tx.recently_ended(state, limit.max(1)).await?;
        tx.commit().await?;
        Ok(runs)
    }

    async fn last_queued_of_batch(
        &self,
        company: &CompanyId,
        batch: &BatchId,
    ) -> Result<Option<(u32, Option<Plan>)>, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let last = tx.last_queued_of_batch(company, batch).await?;
        tx.commit().await?;
        last.map(|(position, plan)| Ok((number("position", to_i64(position))?, plan))).transpose()
    }

    async fn waiting_past_deadline(&self, now: Timestamp, limit: u32) -> Result<Vec<WorkflowId>, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let runs = tx.waiting_past_deadline(now, limit.max(1)).await?;
        tx.commit().await?;
        Ok(runs)
    }

    async fn company_loads(&self) -> Result<Vec<CompanyLoad>, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let loads = tx.company_loads().await?;
        tx.commit().await?;
        Ok(loads)
    }

    async fn queue_position(&self, run: &WorkflowId) -> Result<Option<u32>, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let position = tx.queue_position(run).await?;
        tx.commit().await?;
        match position {
            0 => Ok(None),
            n => Ok(Some(number("position", to_i64(n))?)),
        }
    }

    async fn queue_positions(&self, company: &CompanyId) -> Result<Vec<QueuePosition>, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let positions = tx.queue_positions(company).await?;
        tx.commit().await?;
        Ok(positions)
    }

    async fn events_after(&self, run: &WorkflowId, after: u64, limit: u32) -> Result<Vec<RunEvent>, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let events = tx.events_after(run, after, limit).await?;
        tx.commit().await?;
        Ok(events)
    }

    async fn events_after_marks(
        &self,
        scope: &EventScope,
        marks: &[(WorkflowId, u64)],
        limit: u32,
    ) -> Result<Vec<RunEvent>, StoreError> {
        if marks.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.backend.autocommit().await?;
        let events = tx.events_after_marks(scope, marks, limit).await?;
        tx.commit().await?;
        Ok(events)
    }

    async fn sequence_heads(&self, scope: &WatchScope) -> Result<Vec<(WorkflowId, u64)>, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let heads = tx.sequence_heads(scope).await?;
        tx.commit().await?;
        Ok(heads)
    }

    async fn lookup_request(
        &self,
        key: &RequestKey,
        payload_hash: &str,
        now: Timestamp,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let record = tx.request(key).await?;
        tx.commit().await?;
        match record {
            Some(record) if record.expire_time > now => answer(key, payload_hash, record).map(Some),
            _ => Ok(None),
        }
    }

    async fn put_request_if_absent(
        &self,
        key: &RequestKey,
        payload_hash: &str,
        response: &[u8],
        now: Timestamp,
    ) -> Result<PutRequest, StoreError> {
        let record = StoredRequest {
            payload_hash: payload_hash.to_owned(),
            response: response.to_vec(),
            create_time: now,
            expire_time: delta(now, IDEMPOTENCY_TTL)?,
        };
        // Two statements, each its own transaction: the insert either takes the key or leaves an
        // unexpired one in place, which the read then answers (a transaction at READ COMMITTED
        // would see no more than this).
        let mut tx = self.backend.autocommit().await?;
        if tx.insert_request(key, &record).await? {
            tx.commit().await?;
            return Ok(PutRequest::Inserted);
        }
        let existing = tx
            .request(key)
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("request_id {} vanished while stored", key.request_id)))?;
        tx.commit().await?;
        answer(key, payload_hash, existing).map(PutRequest::Existing)
    }

    async fn purge_expired_requests(&self, now: Timestamp) -> Result<u64, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let purged = tx.purge_requests(now).await?;
        tx.commit().await?;
        Ok(purged)
    }

    async fn record_document_hash(
        &self,
        uri: &str,
        hash: &ContentHash,
        now: Timestamp,
    ) -> Result<Option<DocumentHash>, StoreError> {
        let mut tx = self.backend.write().await?;
        let previous = tx.document_hash(uri).await?;
        tx.put_document_hash(&DocumentHash { uri: uri.to_owned(), content_hash: hash.clone(), seen_time: now }).await?;
        tx.commit().await?;
        Ok(previous)
    }

    async fn document_hashes(&self, uris: &[String]) -> Result<Vec<DocumentHash>, StoreError> {
        if uris.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.backend.autocommit().await?;
        let hashes = tx.document_hashes(uris).await?;
        tx.commit().await?;
        Ok(hashes)
    }

    async fn usage(&self, company: &CompanyId, from: NaiveDate, to: NaiveDate) -> Result<Vec<UsageRow>, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let rows = tx.usage(company, from, to).await?;
        tx.commit().await?;
        Ok(rows)
    }

    async fn token_reservations(&self, company: &CompanyId) -> Result<i64, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let reserved = tx.token_reservations(company).await?;
        tx.commit().await?;
        Ok(reserved)
    }

    async fn append_audit(&self, key: &ChainKey, events: Vec<AuditEvent>) -> Result<AuditHead, StoreError> {
        let mut tx = self.backend.write().await?;
        let head = tx.lock_audit_head().await?;
        if events.is_empty() {
            return Ok(head);
        }
        let (entries, head) = etter_core::audit::chain(&head, events, key);
        for entry in &entries {
            tx.insert_audit(entry).await?;
        }
        tx.set_audit_head(&head, now()).await?;
        tx.commit().await?;
        Ok(head)
    }

    async fn audit_entries(&self, after: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let entries = tx.audit_entries(after, limit.clamp(1, 10_000)).await?;
        tx.commit().await?;
        Ok(entries)
    }

    async fn audit_head(&self) -> Result<AuditHead, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let head = tx.audit_head().await?;
        tx.commit().await?;
        Ok(head)
    }

    async fn list_audit(&self, filter: &AuditFilter, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let mut tx = self.backend.autocommit().await?;
        let entries = tx.list_audit(filter, limit.clamp(1, MAX_PAGE_SIZE)).await?;
        tx.commit().await?;
        Ok(entries)
    }
}

/// The stored response for a request key, or the reuse error when the payload differs.
fn answer(key: &RequestKey, payload_hash: &str, record: StoredRequest) -> Result<Vec<u8>, StoreError> {
    if record.payload_hash == payload_hash {
        Ok(record.response)
    } else {
        Err(StoreError::RequestIdReused { company: key.company.clone(), request_id: key.request_id.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_forgeries_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let cursor = Cursor { create_time: now(), workflow_id: WorkflowId::parse("role-onboard-cr-acme-x-7")? };
        let decoded = decode_page_token(&encode_page_token(&cursor))?;
        assert_eq!((decoded.create_time, decoded.workflow_id), (cursor.create_time, cursor.workflow_id));
        for forged in ["", "zz", "7631", &hex::encode("v2|1|role-onboard-cr-acme-x-7")] {
            assert!(matches!(decode_page_token(forged), Err(StoreError::InvalidPageToken)), "{forged:?}");
        }
        Ok(())
    }
}
