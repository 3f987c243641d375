//! The statements of the run store whose SQL both dialects accept (`$n` placeholders,
//! `ON CONFLICT`, `RETURNING`, `FILTER`, row values), written once as [`Portable`]: each method
//! builds its [`Statement`] and runs it through the backend's [`Statements`], which binds times
//! and days the backend's way. The statements whose SQL differs are each backend's own.

use std::future::Future;

use chrono::NaiveDate;

use super::{
    Batch, Change, ClaimTerms, CompanyLoad, Delivery, DocumentHash, QueuePosition, RequestKey, Run, RunEvent,
    StepAttempt, StepStatus, StoreError, Timestamp, TokenCount, UsageRow, WatchScope,
    rows::{self, RoleKey, RoleLatest, RoleRow, StoredRequest},
    statement::{Arg, Builder, Row, Statement, Statements, json_arg},
    values::{id, number, run_state, to_i64},
};
use etter_core::audit::{AuditEntry, AuditHead};
use etter_core::ids::{BatchId, CompanyId, DraupRoleId, RoleId, TraceId, TraceParent, WorkflowId};
use etter_core::lifecycle::RunState;
use etter_core::steps::Plan;

/// Columns of `runs`, in the order [`run_args`] binds them ([`rows::decode_run`] reads them by
/// name).
macro_rules! run_columns {
    () => {
        "workflow_id, role_id, company_id, role_name, draup_role_id, run_number, input_identity, state, \
         superseded_by, supersedes, batch_id, priority, options, documents, error, needs_review, field_violations, \
         token_estimate, tokens_in, tokens_out, last_sequence, create_time, start_time, end_time, update_time, plan, \
         notify, trace_id, deadline, trace_parent, model"
    };
}
pub(super) use run_columns;

/// Columns of `run_steps` that [`rows::decode_step`] reads.
macro_rules! step_columns {
    () => {
        "step, attempt, status, started_at, finished_at, tokens_in, tokens_out, input_hash, output_hash, error, \
         reused_from, update_time, model, prompt_version, digest"
    };
}

/// Columns of `run_events` that [`rows::decode_event`] reads.
macro_rules! event_columns {
    () => {
        "workflow_id, sequence, event_time, payload"
    };
}

/// Columns of `notifications` that [`rows::decode_notification`] reads.
macro_rules! notification_columns {
    () => {
        "id, workflow_id, company_id, state, create_time, attempts"
    };
}
pub(super) use notification_columns;

/// Columns of `audit_log`, in the order [`Portable::insert_audit`] binds them.
macro_rules! audit_columns {
    () => {
        "seq, time, actor, role, company_id, action, target, outcome, reason, request_id, trace_id, peer, \
         prev_hash, hash"
    };
}
pub(super) use audit_columns;

/// `INSERT INTO run_events (…) `, before its values, in the order [`event_args`] binds them.
pub(super) const INSERT_EVENTS_HEAD: &str =
    "INSERT INTO run_events (workflow_id, sequence, event_time, kind, step, attempt, step_status, payload) ";

/// A run by id.
pub(super) const SELECT_RUN: &str = concat!("SELECT ", run_columns!(), " FROM runs WHERE workflow_id = $1");

/// Whether the claim of the run in `c` may be made: `c (run, at, claimer, claim_until, company,
/// company_room, total_room)` is a CTE of the claim's terms. A claimer is named, no other QUEUED
/// run is claimable at `at`, and fewer than `company_room` runs of the company and `total_room`
/// runs in all are PROCESSING ([`super::RunStore::create_run_and_claim`]).
macro_rules! claim_room {
    () => {
        "c.claimer IS NOT NULL \
         AND NOT EXISTS (SELECT 1 FROM runs q WHERE q.state = 'QUEUED' AND q.workflow_id <> c.run \
           AND (q.claim_expires_at IS NULL OR q.claim_expires_at <= c.at)) \
         AND (SELECT COUNT(*) FROM runs p WHERE p.state = 'PROCESSING' AND p.company_id = c.company) < c.company_room \
         AND (SELECT COUNT(*) FROM runs p WHERE p.state = 'PROCESSING') < c.total_room"
    };
}
pub(super) use claim_room;

/// The CTE [`claim_room`] reads, up to the values of its columns (in this order) and its `)`.
macro_rules! claim_terms {
    () => {
        "c (run, at, claimer, claim_until, company, company_room, total_room) AS (SELECT "
    };
}
pub(super) use claim_terms;

/// `run`'s values, in [`run_columns`] order.
pub(super) fn run_args(run: &Run) -> Result<[Arg<'_>; 31], StoreError> {
    Ok([
        run.workflow_id.as_str().into(),
        run.role_id.as_str().into(),
        run.company_id.as_str().into(),
        run.role_name.as_str().into(),
        run.draup_role_id.as_ref().map(DraupRoleId::as_str).into(),
        i64::from(run.run_number).into(),
        run.input_identity.as_str().into(),
        run.state.as_str().into(),
        run.superseded_by.as_ref().map(WorkflowId::as_str).into(),
        run.supersedes.as_ref().map(WorkflowId::as_str).into(),
        run.batch_id.as_ref().map(BatchId::as_str).into(),
        run.priority.rank().into(),
        json_arg(Some(&run.options))?,
        json_arg(Some(&run.documents))?,
        json_arg(run.error.as_ref())?,
        run.needs_review.into(),
        json_arg(Some(&run.field_violations))?,
        run.token_estimate.into(),
        run.tokens_used.input.into(),
        run.tokens_used.output.into(),
        to_i64(run.sequence).into(),
        run.create_time.into(),
        run.start_time.into(),
        run.end_time.into(),
        run.update_time.into(),
        json_arg(run.plan.as_ref())?,
        run.notify.into(),
        run.trace_id.as_ref().map(TraceId::as_str).into(),
        run.deadline.into(),
        run.trace_parent.as_ref().map(TraceParent::as_str).into(),
        run.model.as_deref().into(),
    ])
}

/// `event`'s values, in [`INSERT_EVENTS_HEAD`] order: besides its payload, its kind and, for a
/// step event, its idempotency key (step, attempt, status).
pub(super) fn event_args(event: &RunEvent) -> Result<[Arg<'_>; 8], StoreError> {
    let (kind, step, attempt, status) = match &event.change {
        Change::Status { .. } => ("status", None, None, None),
        Change::Step { step, status, attempt, .. } => {
            ("step", Some(step.as_str()), Some(i64::from(*attempt)), Some(status.as_str()))
        }
    };
    Ok([
        event.workflow_id.as_str().into(),
        to_i64(event.sequence).into(),
        event.time.into(),
        kind.into(),
        step.into(),
        attempt.into(),
        status.into(),
        json_arg(Some(&event.change))?,
    ])
}

/// The statements of the run store that are the same on both dialects, for every backend's
/// connection.
pub(super) trait Portable: Statements + Sized {
    /// Checks the connection with the cheapest statement.
    fn ping(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move { self.execute(Statement::new("SELECT 1")).await.map(drop) }
    }

    // Workers.

    /// Records that `worker` of `task_queue` runs at `now` (it started at `started`), and forgets
    /// workers of the queue not seen for a day.
    fn worker_seen(
        &mut self,
        worker: &str,
        task_queue: &str,
        started: Timestamp,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let upsert = Statement::new(
                "INSERT INTO workers (worker_id, task_queue, start_time, seen_time) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (worker_id) DO UPDATE SET seen_time = excluded.seen_time",
            )
            .bind(worker)
            .bind(task_queue)
            .bind(started)
            .bind(now);
            self.execute(upsert).await?;
            let forget = Statement::new("DELETE FROM workers WHERE task_queue = $1 AND seen_time < $2")
                .bind(task_queue)
                .bind(now - chrono::TimeDelta::days(1));
            self.execute(forget).await.map(drop)
        }
    }

    /// Marks `worker` gone (seen at `at`, long ago): it stopped.
    fn worker_gone(&mut self, worker: &str, at: Timestamp) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let sql = Statement::new("UPDATE workers SET seen_time = $2 WHERE worker_id = $1").bind(worker).bind(at);
            self.execute(sql).await.map(drop)
        }
    }

    /// Of the workers of `task_queue` the store knows: how many were seen at or after `since`, and
    /// how many in all.
    fn workers_seen(
        &mut self,
        task_queue: &str,
        since: Timestamp,
    ) -> impl Future<Output = Result<(u64, u64), StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "SELECT COUNT(*) AS known, COALESCE(SUM(CASE WHEN seen_time >= $2 THEN 1 ELSE 0 END), 0) AS recent \
                 FROM workers WHERE task_queue = $1",
            )
            .bind(task_queue)
            .bind(since);
            let row = self.fetch_one(sql).await?;
            Ok((number("recent", row.int("recent")?)?, number("known", row.int("known")?)?))
        }
    }

    // Roles.

    /// Inserts the roles that are absent and answers every one of them (in any order), each row
    /// locked until the transaction ends: an `ON CONFLICT DO UPDATE` locks the existing row on
    /// PostgreSQL; SQLite has one writer anyway. `roles` must hold each role id once, sorted by
    /// it: the one order every writer locks roles in, so concurrent writers cannot deadlock.
    fn lock_roles(
        &mut self,
        roles: &[RoleKey<'_>],
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<RoleRow>, StoreError>> + Send {
        async move {
            let mut sql =
                Builder::new::<Self>("INSERT INTO roles (role_id, company_id, role_name, create_time, update_time) ");
            sql.values(roles.iter().map(|role| {
                [
                    role.id.as_str().into(),
                    role.company.as_str().into(),
                    role.name.as_str().into(),
                    now.into(),
                    now.into(),
                ]
            }))
            .push(
                " ON CONFLICT (role_id) DO UPDATE SET update_time = roles.update_time \
                 RETURNING role_id, company_id, role_name, last_run_number",
            );
            decode_all(self.fetch_all(sql.build()).await?, rows::decode_role)
        }
    }

    /// The roles of these ids that exist (in any order), not locked.
    fn roles(&mut self, ids: &[RoleId]) -> impl Future<Output = Result<Vec<RoleRow>, StoreError>> + Send {
        async move {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut sql = Builder::new::<Self>(
                "SELECT role_id, company_id, role_name, last_run_number FROM roles WHERE role_id IN ",
            );
            sql.tuple(ids.iter().map(|id| id.as_str().into()));
            decode_all(self.fetch_all(sql.build()).await?, rows::decode_role)
        }
    }

    /// Whether any role was stored with an id of the form before ids had a dot.
    fn any_legacy_role(&mut self) -> impl Future<Output = Result<bool, StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "SELECT COUNT(*) AS n FROM (SELECT 1 FROM roles WHERE role_id NOT LIKE '%.%' LIMIT 1) AS legacy",
            );
            Ok(self.fetch_one(sql).await?.int("n")? > 0)
        }
    }

    /// Sets the roles' latest run numbers (and their Draup roles, where given).
    fn set_roles_latest(
        &mut self,
        roles: &[RoleLatest<'_>],
        now: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let mut sql = Builder::new::<Self>("WITH v (role_id, n, draup, t) AS (");
            sql.values(roles.iter().map(|role| {
                [
                    role.id.as_str().into(),
                    i64::from(role.number).into(),
                    role.draup.map(DraupRoleId::as_str).into(),
                    now.into(),
                ]
            }))
            .push(
                ") UPDATE roles SET last_run_number = v.n, draup_role_id = COALESCE(v.draup, roles.draup_role_id), \
                 update_time = v.t FROM v WHERE roles.role_id = v.role_id",
            );
            self.execute(sql.build()).await.map(drop)
        }
    }

    // Runs.

    /// The latest run of a role (the one numbered `roles.last_run_number`).
    fn latest_run(&mut self, role: &RoleId) -> impl Future<Output = Result<Option<Run>, StoreError>> + Send {
        async move {
            let sql = Statement::new(concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs WHERE role_id = $1 AND run_number = (SELECT last_run_number FROM roles WHERE role_id = $1)"
            ))
            .bind(role.as_str());
            self.fetch_optional(sql).await?.as_ref().map(rows::decode_run).transpose()
        }
    }

    /// Inserts new runs, in one statement.
    fn insert_runs(&mut self, runs: &[Run]) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let mut sql = Builder::new::<Self>(concat!("INSERT INTO runs (", run_columns!(), ") "));
            sql.values(runs.iter().map(run_args).collect::<Result<Vec<_>, _>>()?);
            self.execute(sql.build()).await.map(drop)
        }
    }

    /// Marks runs superseded: `(run, by)` pairs, in one statement.
    fn supersede(
        &mut self,
        runs: &[(WorkflowId, WorkflowId)],
        now: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let mut sql = Builder::new::<Self>("WITH v (workflow_id, by_run, t) AS (");
            sql.values(runs.iter().map(|(run, by)| [run.as_str().into(), by.as_str().into(), now.into()])).push(
                ") UPDATE runs SET superseded_by = v.by_run, update_time = v.t FROM v WHERE runs.workflow_id = v.workflow_id",
            );
            self.execute(sql.build()).await.map(drop)
        }
    }

    /// The `limit` runs that ended in `state` most recently, newest first.
    fn recently_ended(
        &mut self,
        state: RunState,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Run>, StoreError>> + Send {
        async move {
            let sql = Statement::new(concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs WHERE state = $1 AND end_time IS NOT NULL ORDER BY end_time DESC, workflow_id LIMIT $2"
            ))
            .bind(state.as_str())
            .bind(i64::from(limit));
            decode_all(self.fetch_all(sql).await?, rows::decode_run)
        }
    }

    /// Up to `limit` runs not started yet (VALIDATING or QUEUED) whose deadline is at or before
    /// `now`, earliest first.
    fn waiting_past_deadline(
        &mut self,
        now: Timestamp,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<WorkflowId>, StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "SELECT workflow_id FROM runs WHERE state IN ('VALIDATING', 'QUEUED') AND deadline IS NOT NULL \
                 AND deadline <= $1 \
                 ORDER BY deadline, workflow_id LIMIT $2",
            )
            .bind(now)
            .bind(i64::from(limit));
            decode_all(self.fetch_all(sql).await?, |row| id(row.text("workflow_id")?, WorkflowId::parse))
        }
    }

    /// Writes a run's mutable fields back. A run keeps its claim only while it stays QUEUED (the
    /// CASE reads the state before the update): one that leaves QUEUED drops the dispatcher's
    /// claim, one that leaves VALIDATING the document checker's.
    fn update_run(&mut self, run: &Run) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "UPDATE runs SET state = $2, superseded_by = $3, error = $4, needs_review = $5, tokens_in = $6, \
                 tokens_out = $7, last_sequence = $8, start_time = $9, end_time = $10, update_time = $11, \
                 field_violations = $12, \
                 claimed_by = CASE WHEN $2 = 'QUEUED' AND state = 'QUEUED' THEN claimed_by ELSE NULL END, \
                 claim_expires_at = CASE WHEN $2 = 'QUEUED' AND state = 'QUEUED' THEN claim_expires_at ELSE NULL END \
                 WHERE workflow_id = $1",
            )
            .bind(run.workflow_id.as_str())
            .bind(run.state.as_str())
            .bind(run.superseded_by.as_ref().map(WorkflowId::as_str))
            .bind_json(run.error.as_ref())
            .bind(run.needs_review)
            .bind(run.tokens_used.input)
            .bind(run.tokens_used.output)
            .bind(to_i64(run.sequence))
            .bind(run.start_time)
            .bind(run.end_time)
            .bind(run.update_time)
            .bind_json(Some(&run.field_violations));
            self.execute(sql).await.map(drop)
        }
    }

    /// Sets whether a run needs review; false when there is no such run.
    fn set_needs_review(
        &mut self,
        id: &WorkflowId,
        needs_review: bool,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        async move {
            let sql = Statement::new("UPDATE runs SET needs_review = $2, update_time = $3 WHERE workflow_id = $1")
                .bind(id.as_str())
                .bind(needs_review)
                .bind(now);
            Ok(self.execute(sql).await? == 1)
        }
    }

    // Dispatch.

    /// Claims run `run` of `company` on `terms` if it is QUEUED and claimable at `at` and
    /// [`claim_room`] allows it, in one statement; answers whether it did. On PostgreSQL two such
    /// claims at once may both see room; SQLite has one writer at a time.
    fn claim_run(
        &mut self,
        run: &WorkflowId,
        company: &CompanyId,
        at: Timestamp,
        terms: &ClaimTerms,
        until: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        async move {
            let sql = Statement::new(concat!(
                "WITH ",
                claim_terms!(),
                "$1, $2, $3, $4, $5, $6, $7) \
                 UPDATE runs SET claimed_by = c.claimer, claim_expires_at = c.claim_until FROM c \
                 WHERE runs.workflow_id = c.run AND runs.state = 'QUEUED' \
                   AND (runs.claim_expires_at IS NULL OR runs.claim_expires_at <= c.at) AND ",
                claim_room!(),
                " RETURNING workflow_id"
            ))
            .bind(run.as_str())
            .bind(at)
            .bind(terms.claimer.as_str())
            .bind(until)
            .bind(company.as_str())
            .bind(to_i64(terms.company_room))
            .bind(to_i64(terms.total_room));
            Ok(self.fetch_optional(sql).await?.is_some())
        }
    }

    /// Gives up `claimer`'s claim of a run.
    fn release_claim(&mut self, id: &WorkflowId, claimer: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "UPDATE runs SET claimed_by = NULL, claim_expires_at = NULL WHERE workflow_id = $1 AND claimed_by = $2",
            )
            .bind(id.as_str())
            .bind(claimer);
            self.execute(sql).await.map(drop)
        }
    }

    /// Per company with active runs: how many are queued and how many processing.
    fn company_loads(&mut self) -> impl Future<Output = Result<Vec<CompanyLoad>, StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "SELECT company_id, \
                   COUNT(*) FILTER (WHERE state = 'QUEUED') AS queued, \
                   COUNT(*) FILTER (WHERE state = 'PROCESSING') AS processing \
                 FROM runs WHERE state IN ('QUEUED', 'PROCESSING') GROUP BY company_id ORDER BY company_id",
            );
            decode_all(self.fetch_all(sql).await?, rows::decode_load)
        }
    }

    /// A queued run's place in its company's dispatch order (priority first, then oldest, ties by
    /// id), from 1; 0 when it is not queued.
    fn queue_position(&mut self, id: &WorkflowId) -> impl Future<Output = Result<u64, StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "SELECT COUNT(*) AS n FROM runs q JOIN runs r ON q.company_id = r.company_id \
                 WHERE r.workflow_id = $1 AND r.state = 'QUEUED' AND q.state = 'QUEUED' \
                 AND (q.priority > r.priority OR (q.priority = r.priority \
                   AND (q.create_time < r.create_time \
                     OR (q.create_time = r.create_time AND q.workflow_id <= r.workflow_id))))",
            )
            .bind(id.as_str());
            number("position", self.fetch_one(sql).await?.int("n")?)
        }
    }

    /// The queued run of `batch` that its company starts last: its place in the company's dispatch
    /// order and its plan; `None` when none of the batch's runs is queued.
    fn last_queued_of_batch(
        &mut self,
        company: &CompanyId,
        batch: &BatchId,
    ) -> impl Future<Output = Result<Option<(u64, Option<Plan>)>, StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "WITH q AS (SELECT workflow_id, batch_id, plan, \
                   ROW_NUMBER() OVER (ORDER BY priority DESC, create_time, workflow_id) AS position \
                   FROM runs WHERE company_id = $1 AND state = 'QUEUED') \
                 SELECT position, plan FROM q WHERE batch_id = $2 ORDER BY position DESC LIMIT 1",
            )
            .bind(company.as_str())
            .bind(batch.as_str());
            match self.fetch_optional(sql).await? {
                Some(row) => Ok(Some((number("position", row.int("position")?)?, row.opt_json("plan")?))),
                None => Ok(None),
            }
        }
    }

    /// Every queued run of a company with its place in the dispatch order.
    fn queue_positions(
        &mut self,
        company: &CompanyId,
    ) -> impl Future<Output = Result<Vec<QueuePosition>, StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "SELECT workflow_id, ROW_NUMBER() OVER (ORDER BY priority DESC, create_time, workflow_id) AS position \
                 FROM runs WHERE company_id = $1 AND state = 'QUEUED' ORDER BY position",
            )
            .bind(company.as_str());
            decode_all(self.fetch_all(sql).await?, rows::decode_position)
        }
    }

    /// The tokens a company's active runs are still estimated to use (estimate minus what they
    /// used). PostgreSQL sums BIGINTs as NUMERIC: the cast keeps the answer an integer on both.
    fn token_reservations(&mut self, company: &CompanyId) -> impl Future<Output = Result<i64, StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "SELECT CAST(COALESCE(SUM(CASE WHEN token_estimate > tokens_in + tokens_out \
                   THEN token_estimate - tokens_in - tokens_out ELSE 0 END), 0) AS BIGINT) AS reserved \
                 FROM runs WHERE company_id = $1 AND state IN ('VALIDATING', 'QUEUED', 'PROCESSING')",
            )
            .bind(company.as_str());
            self.fetch_one(sql).await?.int("reserved")
        }
    }

    // Events.

    /// Appends one event.
    fn insert_event(&mut self, event: &RunEvent) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.insert_events(std::slice::from_ref(event))
    }

    /// Appends events, in one statement.
    fn insert_events(&mut self, events: &[RunEvent]) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let mut sql = Builder::new::<Self>(INSERT_EVENTS_HEAD);
            sql.values(events.iter().map(event_args).collect::<Result<Vec<_>, _>>()?);
            self.execute(sql.build()).await.map(drop)
        }
    }

    /// The sequence of the event that recorded this step attempt reaching `status`, if one did.
    fn step_event(
        &mut self,
        id: &WorkflowId,
        step: &str,
        attempt: u32,
        status: StepStatus,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "SELECT sequence FROM run_events \
                 WHERE workflow_id = $1 AND kind = 'step' AND step = $2 AND attempt = $3 AND step_status = $4",
            )
            .bind(id.as_str())
            .bind(step)
            .bind(i64::from(attempt))
            .bind(status.as_str());
            self.fetch_optional(sql).await?.map(|r| number("sequence", r.int("sequence")?)).transpose()
        }
    }

    /// Up to `limit` of a run's events after sequence `after`, in order.
    fn events_after(
        &mut self,
        id: &WorkflowId,
        after: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<RunEvent>, StoreError>> + Send {
        async move {
            let sql = Statement::new(concat!(
                "SELECT ",
                event_columns!(),
                " FROM run_events WHERE workflow_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
            ))
            .bind(id.as_str())
            .bind(to_i64(after))
            .bind(i64::from(limit));
            decode_all(self.fetch_all(sql).await?, rows::decode_event)
        }
    }

    /// The latest event sequence of each run in `scope`, by run.
    fn sequence_heads(
        &mut self,
        scope: &WatchScope,
    ) -> impl Future<Output = Result<Vec<(WorkflowId, u64)>, StoreError>> + Send {
        async move {
            let sql = match scope {
                WatchScope::Batch(batch) => Statement::new(
                    "SELECT workflow_id, last_sequence FROM runs WHERE batch_id = $1 ORDER BY workflow_id",
                )
                .bind(batch.as_str()),
                WatchScope::ActiveInCompany { company, ended_since } => Statement::new(
                    "SELECT workflow_id, last_sequence FROM runs WHERE company_id = $1 \
                     AND (state IN ('VALIDATING', 'QUEUED', 'PROCESSING') \
                       OR (end_time >= $2 AND (state <> 'VALIDATION_ERROR' OR last_sequence > 1))) \
                     ORDER BY workflow_id",
                )
                .bind(company.as_str())
                .bind(*ended_since),
                WatchScope::UpdatedSince(since) => Statement::new(
                    "SELECT workflow_id, last_sequence FROM runs WHERE update_time >= $1 ORDER BY workflow_id",
                )
                .bind(*since),
            };
            decode_all(self.fetch_all(sql).await?, rows::decode_head)
        }
    }

    // Steps and usage.

    /// One attempt of a step of a run.
    fn step_attempt(
        &mut self,
        id: &WorkflowId,
        step: &str,
        attempt: u32,
    ) -> impl Future<Output = Result<Option<StepAttempt>, StoreError>> + Send {
        async move {
            let sql = Statement::new(concat!(
                "SELECT ",
                step_columns!(),
                " FROM run_steps WHERE workflow_id = $1 AND step = $2 AND attempt = $3"
            ))
            .bind(id.as_str())
            .bind(step)
            .bind(i64::from(attempt));
            self.fetch_optional(sql).await?.as_ref().map(rows::decode_step).transpose()
        }
    }

    /// Every attempt of every step of a run, by step and attempt.
    fn steps(&mut self, id: &WorkflowId) -> impl Future<Output = Result<Vec<StepAttempt>, StoreError>> + Send {
        async move {
            let sql = Statement::new(concat!(
                "SELECT ",
                step_columns!(),
                " FROM run_steps WHERE workflow_id = $1 ORDER BY step, attempt"
            ))
            .bind(id.as_str());
            decode_all(self.fetch_all(sql).await?, rows::decode_step)
        }
    }

    /// Records a step attempt, replacing what was recorded of it.
    fn upsert_step(
        &mut self,
        id: &WorkflowId,
        attempt: &StepAttempt,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let sql = Statement::new(concat!(
                "INSERT INTO run_steps (workflow_id, ",
                step_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                 ON CONFLICT (workflow_id, step, attempt) DO UPDATE SET status = excluded.status, \
                 started_at = excluded.started_at, finished_at = excluded.finished_at, tokens_in = excluded.tokens_in, \
                 tokens_out = excluded.tokens_out, input_hash = excluded.input_hash, output_hash = excluded.output_hash, \
                 error = excluded.error, reused_from = excluded.reused_from, update_time = excluded.update_time, \
                 model = excluded.model, prompt_version = excluded.prompt_version, digest = excluded.digest"
            ))
            .bind(id.as_str())
            .bind(attempt.step.as_str())
            .bind(i64::from(attempt.attempt))
            .bind(attempt.status.as_str())
            .bind(attempt.started_at)
            .bind(attempt.finished_at)
            .bind(attempt.tokens.input)
            .bind(attempt.tokens.output)
            .bind(attempt.input_hash.as_deref())
            .bind(attempt.output_hash.as_deref())
            .bind_json(attempt.error.as_ref())
            .bind(attempt.reused_from.as_ref().map(WorkflowId::as_str))
            .bind(attempt.update_time)
            .bind(attempt.model.as_deref())
            .bind(attempt.prompt_version.as_deref())
            .bind_json(attempt.digest.as_ref());
            self.execute(sql).await.map(drop)
        }
    }

    /// Adds tokens to a company's use on a day by a step.
    fn add_usage(
        &mut self,
        company: &CompanyId,
        day: NaiveDate,
        step: &str,
        tokens: TokenCount,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "INSERT INTO token_usage (company_id, day, step, input_tokens, output_tokens) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (company_id, day, step) DO UPDATE SET \
                   input_tokens = token_usage.input_tokens + excluded.input_tokens, \
                   output_tokens = token_usage.output_tokens + excluded.output_tokens",
            )
            .bind(company.as_str())
            .bind(day)
            .bind(step)
            .bind(tokens.input)
            .bind(tokens.output);
            self.execute(sql).await.map(drop)
        }
    }

    /// A company's token use per day and step, `from` to `to` inclusive.
    fn usage(
        &mut self,
        company: &CompanyId,
        from: NaiveDate,
        to: NaiveDate,
    ) -> impl Future<Output = Result<Vec<UsageRow>, StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "SELECT day, step, input_tokens, output_tokens FROM token_usage \
                 WHERE company_id = $1 AND day >= $2 AND day <= $3 ORDER BY day, step",
            )
            .bind(company.as_str())
            .bind(from)
            .bind(to);
            decode_all(self.fetch_all(sql).await?, rows::decode_usage)
        }
    }

    // Batches.

    /// Inserts a batch; false when its id exists.
    fn insert_batch(&mut self, batch: &Batch) -> impl Future<Output = Result<bool, StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "INSERT INTO batches (batch_id, company_id, request_id, item_count, create_time) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (batch_id) DO NOTHING",
            )
            .bind(batch.id.as_str())
            .bind(batch.company.as_str())
            .bind(batch.request_id.as_ref().map(|r| r.as_str()))
            .bind(i64::from(batch.item_count))
            .bind(batch.create_time);
            Ok(self.execute(sql).await? == 1)
        }
    }

    /// A batch by id.
    fn batch(&mut self, id: &BatchId) -> impl Future<Output = Result<Option<Batch>, StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "SELECT batch_id, company_id, request_id, item_count, create_time FROM batches WHERE batch_id = $1",
            )
            .bind(id.as_str());
            self.fetch_optional(sql).await?.as_ref().map(rows::decode_batch).transpose()
        }
    }

    /// How many runs of a batch are in each state.
    fn batch_counts(&mut self, id: &BatchId) -> impl Future<Output = Result<Vec<(RunState, u64)>, StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "SELECT state, COUNT(*) AS n FROM runs WHERE batch_id = $1 GROUP BY state ORDER BY state",
            )
            .bind(id.as_str());
            let found = self.fetch_all(sql).await?;
            found.iter().map(|row| Ok((run_state(&row.text("state")?)?, number("count", row.int("n")?)?))).collect()
        }
    }

    // Requests (idempotency).

    /// The stored answer to a request id, expired or not.
    fn request(&mut self, key: &RequestKey) -> impl Future<Output = Result<Option<StoredRequest>, StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "SELECT payload_hash, response, create_time, expire_time FROM idempotency_keys \
                 WHERE company_id = $1 AND request_id = $2",
            )
            .bind(key.company.as_str())
            .bind(key.request_id.as_str());
            self.fetch_optional(sql).await?.as_ref().map(rows::decode_request).transpose()
        }
    }

    /// Inserts a request record, replacing an expired one; false when an unexpired one exists.
    fn insert_request(
        &mut self,
        key: &RequestKey,
        record: &StoredRequest,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "INSERT INTO idempotency_keys (company_id, request_id, payload_hash, response, create_time, expire_time) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (company_id, request_id) DO UPDATE SET payload_hash = excluded.payload_hash, \
                   response = excluded.response, create_time = excluded.create_time, expire_time = excluded.expire_time \
                 WHERE idempotency_keys.expire_time <= excluded.create_time",
            )
            .bind(key.company.as_str())
            .bind(key.request_id.as_str())
            .bind(record.payload_hash.as_str())
            .bind(Arg::Bytes(record.response.as_slice()))
            .bind(record.create_time)
            .bind(record.expire_time);
            Ok(self.execute(sql).await? == 1)
        }
    }

    /// Deletes the request records expired at `now`; answers how many.
    fn purge_requests(&mut self, now: Timestamp) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.execute(Statement::new("DELETE FROM idempotency_keys WHERE expire_time <= $1").bind(now))
    }

    // Documents.

    /// The stored content hash of a document.
    fn document_hash(&mut self, uri: &str) -> impl Future<Output = Result<Option<DocumentHash>, StoreError>> + Send {
        async move {
            let sql =
                Statement::new("SELECT uri, content_hash, seen_time FROM document_hashes WHERE uri = $1").bind(uri);
            self.fetch_optional(sql).await?.as_ref().map(rows::decode_document).transpose()
        }
    }

    /// Records a document's content hash.
    fn put_document_hash(&mut self, hash: &DocumentHash) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "INSERT INTO document_hashes (uri, content_hash, seen_time) VALUES ($1, $2, $3) \
                 ON CONFLICT (uri) DO UPDATE SET content_hash = excluded.content_hash, seen_time = excluded.seen_time",
            )
            .bind(hash.uri.as_str())
            .bind(hash.content_hash.0.as_str())
            .bind(hash.seen_time);
            self.execute(sql).await.map(drop)
        }
    }

    // Notifications.

    /// Queues the announcement of `run`'s end (once per run).
    fn insert_notification(
        &mut self,
        run: &Run,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let sql = Statement::new(
                "INSERT INTO notifications (workflow_id, company_id, state, create_time, next_attempt_time) \
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (workflow_id) DO NOTHING",
            )
            .bind(run.workflow_id.as_str())
            .bind(run.company_id.as_str())
            .bind(run.state.as_str())
            .bind(now);
            self.execute(sql).await.map(drop)
        }
    }

    /// Records a delivery attempt of a notification still claimed by `claimer`; false when the
    /// claim was lost (expired and taken over).
    fn settle_notification(
        &mut self,
        id: i64,
        claimer: &str,
        delivery: &Delivery,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        async move {
            let (delivered, gave_up, error, next) = match delivery {
                Delivery::Delivered => (Some(now), false, None, None),
                Delivery::Retry { error, next_attempt } => (None, false, Some(error.as_str()), Some(*next_attempt)),
                Delivery::GiveUp { error } => (None, true, Some(error.as_str()), None),
            };
            let sql = Statement::new(
                "UPDATE notifications SET attempts = attempts + 1, delivered_time = $3, gave_up = $4, \
                   last_error = COALESCE($5, last_error), next_attempt_time = COALESCE($6, next_attempt_time), \
                   claimed_by = NULL, claim_expires_at = NULL \
                 WHERE id = $1 AND claimed_by = $2 AND delivered_time IS NULL AND NOT gave_up",
            )
            .bind(id)
            .bind(claimer)
            .bind(delivered)
            .bind(gave_up)
            .bind(error)
            .bind(next);
            Ok(self.execute(sql).await? == 1)
        }
    }

    // The audit chain.

    /// The chain's head, locked until the transaction ends (an UPDATE locks the row on
    /// PostgreSQL; SQLite has one writer).
    fn lock_audit_head(&mut self) -> impl Future<Output = Result<AuditHead, StoreError>> + Send {
        async move {
            let sql = Statement::new("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash");
            rows::decode_audit_head(&self.fetch_one(sql).await?)
        }
    }

    /// The chain's head, not locked.
    fn audit_head(&mut self) -> impl Future<Output = Result<AuditHead, StoreError>> + Send {
        async move {
            let sql = Statement::new("SELECT seq, hash FROM audit_head WHERE id = 1");
            rows::decode_audit_head(&self.fetch_one(sql).await?)
        }
    }

    /// Moves the chain's head.
    fn set_audit_head(
        &mut self,
        head: &AuditHead,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let sql = Statement::new("UPDATE audit_head SET seq = $1, hash = $2, update_time = $3 WHERE id = 1")
                .bind(to_i64(head.seq))
                .bind(head.hash.as_str())
                .bind(now);
            self.execute(sql).await.map(drop)
        }
    }

    /// Appends an entry to the chain.
    fn insert_audit(&mut self, entry: &AuditEntry) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let event = &entry.event;
            let sql = Statement::new(concat!(
                "INSERT INTO audit_log (",
                audit_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            ))
            .bind(to_i64(entry.seq))
            .bind(event.time)
            .bind(event.actor.as_str())
            .bind(event.role.as_str())
            .bind(event.company.as_ref().map(CompanyId::as_str))
            .bind(event.action.as_str())
            .bind(event.target.as_str())
            .bind(event.outcome.as_str())
            .bind(event.reason.as_str())
            .bind(event.request_id.as_deref())
            .bind(event.trace_id.as_ref().map(TraceId::as_str))
            .bind(event.peer.as_deref())
            .bind(entry.prev_hash.as_str())
            .bind(entry.hash.as_str());
            self.execute(sql).await.map(drop)
        }
    }

    /// Up to `limit` entries of the chain after `after`, in order.
    fn audit_entries(
        &mut self,
        after: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, StoreError>> + Send {
        async move {
            let sql = Statement::new(concat!(
                "SELECT ",
                audit_columns!(),
                " FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
            ))
            .bind(to_i64(after))
            .bind(i64::from(limit));
            decode_all(self.fetch_all(sql).await?, rows::decode_audit)
        }
    }
}

impl<S: Statements> Portable for S {}

/// Decodes every row.
pub(super) fn decode_all<R: Row, T>(
    rows: Vec<R>,
    decode: fn(&R) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(decode).collect()
}
