//! What the two SQL backends share: the SQL text both dialects accept (`$n` placeholders,
//! `ON CONFLICT`, `RETURNING`, `FILTER`, row values), the primitives generated from it for both
//! (only the encoding of times and days differs), and the decoding of rows into store types.

use chrono::NaiveDate;
use serde::de::DeserializeOwned;

use super::{
    Batch, Change, CompanyLoad, DocumentHash, Notification, Priority, QueuePosition, Run, RunEvent, StepAttempt,
    StepStats, StepStatus, StoreError, Timestamp, TokenCount, UsageRow, sql::StoredRequest,
};
use etter_core::audit::{AuditEntry, AuditEvent, AuditHead};
use etter_core::ids::{BatchId, CompanyId, DraupRoleId, RequestId, RoleId, RoleName, TraceId, WorkflowId};
use etter_core::outputs::ContentHash;

pub(super) use super::values::{corrupt, id, number, opt_id, run_state, to_i64};

/// Columns of `runs` that [`decode_run`] reads, in a fixed order.
macro_rules! run_columns {
    () => {
        "workflow_id, role_id, company_id, role_name, draup_role_id, run_number, input_identity, state, \
         superseded_by, supersedes, batch_id, priority, options, documents, error, needs_review, field_violations, \
         token_estimate, tokens_in, tokens_out, last_sequence, create_time, start_time, end_time, update_time, plan, \
         notify, trace_id"
    };
}
pub(super) use run_columns;

/// Columns of `run_steps` that [`decode_step`] reads.
macro_rules! step_columns {
    () => {
        "step, attempt, status, started_at, finished_at, tokens_in, tokens_out, input_hash, output_hash, error, \
         reused_from, update_time"
    };
}

/// Columns of `run_events` that [`decode_event`] reads.
macro_rules! event_columns {
    () => {
        "workflow_id, sequence, event_time, payload"
    };
}

/// Binds `$run`'s columns, in [`run_columns`] order, to `$row` (a `push_values` row), each time
/// through the backend's `$time` / `$opt_time` encoding.
macro_rules! push_run {
    ($row:ident, $run:expr, $time:ident, $opt_time:ident) => {{
        let run: &Run = $run;
        $row.push_bind(run.workflow_id.as_str())
            .push_bind(run.role_id.as_str())
            .push_bind(run.company_id.as_str())
            .push_bind(run.role_name.as_str())
            .push_bind(run.draup_role_id.as_ref().map(DraupRoleId::as_str))
            .push_bind(i64::from(run.run_number))
            .push_bind(run.input_identity.as_str())
            .push_bind(run.state.as_str())
            .push_bind(run.superseded_by.as_ref().map(WorkflowId::as_str))
            .push_bind(run.supersedes.as_ref().map(WorkflowId::as_str))
            .push_bind(run.batch_id.as_ref().map(BatchId::as_str))
            .push_bind(run.priority.rank())
            .push_bind(Json(&run.options))
            .push_bind(Json(&run.documents))
            .push_bind(run.error.as_ref().map(Json))
            .push_bind(run.needs_review)
            .push_bind(Json(&run.field_violations))
            .push_bind(run.token_estimate)
            .push_bind(run.tokens_used.input)
            .push_bind(run.tokens_used.output)
            .push_bind(to_i64(run.sequence))
            .push_bind($time(run.create_time))
            .push_bind($opt_time(run.start_time))
            .push_bind($opt_time(run.end_time))
            .push_bind($time(run.update_time))
            .push_bind(run.plan.as_ref().map(Json))
            .push_bind(run.notify)
            .push_bind(run.trace_id.as_ref().map(etter_core::ids::TraceId::as_str));
    }};
}
pub(super) use push_run;

/// Binds `$event`'s columns, in [`insert_events_head`] order, to `$row`.
macro_rules! push_event {
    ($row:ident, $event:expr, $time:ident) => {{
        let event: &RunEvent = $event;
        let (kind, step, attempt, status) = shared::event_key(&event.change);
        $row.push_bind(event.workflow_id.as_str())
            .push_bind(to_i64(event.sequence))
            .push_bind($time(event.time))
            .push_bind(kind)
            .push_bind(step)
            .push_bind(attempt)
            .push_bind(status)
            .push_bind(Json(&event.change));
    }};
}
pub(super) use push_event;

/// After `INSERT INTO roles (…) VALUES …`: inserts the roles that are absent and returns every
/// one, its row locked until the transaction ends (an `ON CONFLICT DO UPDATE` locks the existing
/// row on PostgreSQL; SQLite has one writer anyway). Rows are inserted and locked in VALUES order.
pub(super) const LOCK_ROLES_TAIL: &str = " ON CONFLICT (role_id) DO UPDATE SET update_time = roles.update_time \
     RETURNING role_id, company_id, role_name, last_run_number";
/// After `WITH v (role_id, n, draup, t) AS (VALUES …`: sets each role's latest run number.
pub(super) const SET_ROLES_LATEST_TAIL: &str = ") UPDATE roles SET last_run_number = v.n, \
     draup_role_id = COALESCE(v.draup, roles.draup_role_id), update_time = v.t FROM v WHERE roles.role_id = v.role_id";
/// After `WITH v (workflow_id, by_run, t) AS (VALUES …`: marks each run superseded by `by_run`.
pub(super) const SUPERSEDE_TAIL: &str = ") UPDATE runs SET superseded_by = v.by_run, update_time = v.t \
     FROM v WHERE runs.workflow_id = v.workflow_id";
/// A `roles` row of `role_id, company_id, role_name, last_run_number`.
pub(super) fn decode_role(row: &impl Row) -> Result<super::sql::RoleRow, StoreError> {
    Ok(super::sql::RoleRow {
        role_id: row.text("role_id")?,
        company: row.text("company_id")?,
        name: row.text("role_name")?,
        last_run_number: row.int("last_run_number")?,
    })
}

/// Whether any role has an id of the form before ids had a dot (`n` is 0 or 1).
pub(super) const ANY_LEGACY_ROLE: &str =
    "SELECT COUNT(*) AS n FROM (SELECT 1 FROM roles WHERE role_id NOT LIKE '%.%' LIMIT 1) AS legacy";
pub(super) const SELECT_RUN: &str = concat!("SELECT ", run_columns!(), " FROM runs WHERE workflow_id = $1");
pub(super) const SELECT_LATEST_RUN: &str = concat!(
    "SELECT ",
    run_columns!(),
    " FROM runs WHERE role_id = $1 AND run_number = (SELECT last_run_number FROM roles WHERE role_id = $1)"
);
/// Writes a run's mutable fields back; a run that leaves QUEUED drops its dispatch claim.
pub(super) const UPDATE_RUN: &str = "UPDATE runs SET state = $2, superseded_by = $3, error = $4, \
     needs_review = $5, tokens_in = $6, tokens_out = $7, last_sequence = $8, start_time = $9, end_time = $10, \
     update_time = $11, \
     claimed_by = CASE WHEN $2 = 'QUEUED' THEN claimed_by ELSE NULL END, \
     claim_expires_at = CASE WHEN $2 = 'QUEUED' THEN claim_expires_at ELSE NULL END \
     WHERE workflow_id = $1";
pub(super) const SET_NEEDS_REVIEW: &str = "UPDATE runs SET needs_review = $2, update_time = $3 WHERE workflow_id = $1";
/// `INSERT INTO run_events (…) `, before its `VALUES`.
macro_rules! insert_events_head {
    () => {
        "INSERT INTO run_events (workflow_id, sequence, event_time, kind, step, attempt, step_status, payload) "
    };
}
pub(super) const INSERT_EVENT: &str = concat!(insert_events_head!(), "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
pub(super) const INSERT_EVENTS_HEAD: &str = insert_events_head!();
pub(super) const STEP_EVENT: &str = "SELECT sequence FROM run_events \
     WHERE workflow_id = $1 AND kind = 'step' AND step = $2 AND attempt = $3 AND step_status = $4";
pub(super) const SELECT_STEP: &str =
    concat!("SELECT ", step_columns!(), " FROM run_steps WHERE workflow_id = $1 AND step = $2 AND attempt = $3");
pub(super) const SELECT_STEPS: &str =
    concat!("SELECT ", step_columns!(), " FROM run_steps WHERE workflow_id = $1 ORDER BY step, attempt");
pub(super) const UPSERT_STEP: &str = concat!(
    "INSERT INTO run_steps (workflow_id, ",
    step_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (workflow_id, step, attempt) DO UPDATE SET status = excluded.status, \
     started_at = excluded.started_at, finished_at = excluded.finished_at, tokens_in = excluded.tokens_in, \
     tokens_out = excluded.tokens_out, input_hash = excluded.input_hash, output_hash = excluded.output_hash, \
     error = excluded.error, reused_from = excluded.reused_from, update_time = excluded.update_time"
);
pub(super) const ADD_USAGE: &str = "INSERT INTO token_usage (company_id, day, step, input_tokens, output_tokens) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (company_id, day, step) DO UPDATE SET \
     input_tokens = token_usage.input_tokens + excluded.input_tokens, \
     output_tokens = token_usage.output_tokens + excluded.output_tokens";
pub(super) const SELECT_USAGE: &str = "SELECT day, step, input_tokens, output_tokens FROM token_usage \
     WHERE company_id = $1 AND day >= $2 AND day <= $3 ORDER BY day, step";
/// The tokens a company's active runs are still estimated to use (estimate minus what they used).
/// (PostgreSQL sums BIGINTs as NUMERIC: the cast keeps the answer an integer on both dialects.)
pub(super) const TOKEN_RESERVATIONS: &str = "SELECT CAST(COALESCE(SUM(CASE WHEN token_estimate > tokens_in + tokens_out \
     THEN token_estimate - tokens_in - tokens_out ELSE 0 END), 0) AS BIGINT) AS reserved FROM runs \
     WHERE company_id = $1 AND state IN ('QUEUED', 'PROCESSING')";
pub(super) const INSERT_BATCH: &str = "INSERT INTO batches (batch_id, company_id, request_id, item_count, \
     create_time) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (batch_id) DO NOTHING";
pub(super) const SELECT_BATCH: &str =
    "SELECT batch_id, company_id, request_id, item_count, create_time FROM batches WHERE batch_id = $1";
pub(super) const BATCH_COUNTS: &str =
    "SELECT state, COUNT(*) AS n FROM runs WHERE batch_id = $1 GROUP BY state ORDER BY state";
pub(super) const RELEASE_CLAIM: &str =
    "UPDATE runs SET claimed_by = NULL, claim_expires_at = NULL WHERE workflow_id = $1 AND claimed_by = $2";
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
macro_rules! claim_terms_cte {
    () => {
        "c (run, at, claimer, claim_until, company, company_room, total_room) AS (SELECT "
    };
}
pub(super) use claim_terms_cte;
/// Claims run `$1` of company `$5` for `$3` until `$4` if, at `$2`, it is QUEUED and claimable
/// and [`claim_room`] allows it (`$6`, `$7`: the rooms). On PostgreSQL two such claims at once may
/// both see room; SQLite has one writer at a time.
pub(super) const CLAIM_RUN: &str = concat!(
    "WITH ",
    claim_terms_cte!(),
    "$1, $2, $3, $4, $5, $6, $7) UPDATE runs SET claimed_by = c.claimer, claim_expires_at = c.claim_until FROM c \
     WHERE runs.workflow_id = c.run AND runs.state = 'QUEUED' \
       AND (runs.claim_expires_at IS NULL OR runs.claim_expires_at <= c.at) AND ",
    claim_room!(),
    " RETURNING workflow_id"
);
pub(super) const COMPANY_LOADS: &str = "SELECT company_id, \
     COUNT(*) FILTER (WHERE state = 'QUEUED') AS queued, \
     COUNT(*) FILTER (WHERE state = 'PROCESSING') AS processing \
     FROM runs WHERE state IN ('QUEUED', 'PROCESSING') GROUP BY company_id ORDER BY company_id";
/// Dispatch order within a company: priority first, then oldest (ties by id, so it is total).
pub(super) const QUEUE_POSITION: &str = "SELECT COUNT(*) AS n FROM runs q JOIN runs r ON q.company_id = r.company_id \
     WHERE r.workflow_id = $1 AND r.state = 'QUEUED' AND q.state = 'QUEUED' \
     AND (q.priority > r.priority OR (q.priority = r.priority \
          AND (q.create_time < r.create_time OR (q.create_time = r.create_time AND q.workflow_id <= r.workflow_id))))";
pub(super) const QUEUE_POSITIONS: &str = "SELECT workflow_id, \
     ROW_NUMBER() OVER (ORDER BY priority DESC, create_time, workflow_id) AS position \
     FROM runs WHERE company_id = $1 AND state = 'QUEUED' ORDER BY position";
pub(super) const EVENTS_AFTER: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM run_events WHERE workflow_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
);
pub(super) const HEADS_OF_BATCH: &str =
    "SELECT workflow_id, last_sequence FROM runs WHERE batch_id = $1 ORDER BY workflow_id";
pub(super) const HEADS_UPDATED_SINCE: &str =
    "SELECT workflow_id, last_sequence FROM runs WHERE update_time >= $1 ORDER BY workflow_id";
pub(super) const HEADS_OF_ACTIVE: &str = "SELECT workflow_id, last_sequence FROM runs \
     WHERE company_id = $1 AND (state IN ('QUEUED', 'PROCESSING') \
       OR (end_time >= $2 AND state <> 'VALIDATION_ERROR')) ORDER BY workflow_id";
pub(super) const SELECT_REQUEST: &str = "SELECT payload_hash, response, create_time, expire_time \
     FROM idempotency_keys WHERE company_id = $1 AND request_id = $2";
/// Inserts a request key, replacing an expired one; affects no row when an unexpired one exists.
pub(super) const INSERT_REQUEST: &str = "INSERT INTO idempotency_keys \
     (company_id, request_id, payload_hash, response, create_time, expire_time) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (company_id, request_id) DO UPDATE SET payload_hash = excluded.payload_hash, \
     response = excluded.response, create_time = excluded.create_time, expire_time = excluded.expire_time \
     WHERE idempotency_keys.expire_time <= excluded.create_time";
pub(super) const PURGE_REQUESTS: &str = "DELETE FROM idempotency_keys WHERE expire_time <= $1";
pub(super) const INSERT_NOTIFICATION: &str = "INSERT INTO notifications \
     (workflow_id, company_id, state, create_time, next_attempt_time) VALUES ($1, $2, $3, $4, $4) \
     ON CONFLICT (workflow_id) DO NOTHING";
/// Records a delivery attempt of a notification still claimed by `$2`.
pub(super) const SETTLE_NOTIFICATION: &str = "UPDATE notifications SET attempts = attempts + 1, \
     delivered_time = $3, gave_up = $4, last_error = COALESCE($5, last_error), next_attempt_time = COALESCE($6, next_attempt_time), \
     claimed_by = NULL, claim_expires_at = NULL \
     WHERE id = $1 AND claimed_by = $2 AND delivered_time IS NULL AND NOT gave_up";
/// Columns of `notifications` that [`decode_notification`] reads.
macro_rules! notification_columns {
    () => {
        "id, workflow_id, company_id, state, create_time, attempts"
    };
}
pub(super) use notification_columns;
pub(super) const SELECT_DOCUMENT: &str = "SELECT uri, content_hash, seen_time FROM document_hashes WHERE uri = $1";
pub(super) const UPSERT_DOCUMENT: &str = "INSERT INTO document_hashes (uri, content_hash, seen_time) \
     VALUES ($1, $2, $3) ON CONFLICT (uri) DO UPDATE SET content_hash = excluded.content_hash, \
     seen_time = excluded.seen_time";

/// Columns of `audit_log` that [`decode_audit`] reads.
macro_rules! audit_columns {
    () => {
        "seq, time, actor, role, company_id, action, target, outcome, reason, request_id, trace_id, peer, \
         prev_hash, hash"
    };
}
pub(super) use audit_columns;
/// Locks the chain head until the transaction ends (an UPDATE locks the row on PostgreSQL; SQLite
/// has one writer) and answers it.
pub(super) const LOCK_AUDIT_HEAD: &str = "UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash";
pub(super) const SELECT_AUDIT_HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";
pub(super) const SET_AUDIT_HEAD: &str = "UPDATE audit_head SET seq = $1, hash = $2, update_time = $3 WHERE id = 1";
pub(super) const INSERT_AUDIT: &str = concat!(
    "INSERT INTO audit_log (",
    audit_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
);
pub(super) const AUDIT_AFTER: &str =
    concat!("SELECT ", audit_columns!(), " FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2");

/// The `Tx` primitives whose SQL both dialects share, expanded inside a backend's `impl Tx` (a
/// tuple struct over a [`super::sql::Conn`], in a module that imports the names used here). The
/// backend passes how it encodes a time (`time`, `opt_time`) and a day (`day`): PostgreSQL binds
/// them as they are, SQLite as integer microseconds and `YYYY-MM-DD` text.
macro_rules! shared_primitives {
    (time: $time:ident, opt_time: $opt_time:ident, day: $day:ident) => {
        async fn commit(self) -> Result<(), StoreError> {
            self.0.commit().await
        }

        async fn ping(&mut self) -> Result<(), StoreError> {
            sqlx::query("SELECT 1").execute(&mut *self.0).await?;
            Ok(())
        }

        async fn lock_roles(&mut self, roles: &[RoleKey<'_>], now: Timestamp) -> Result<Vec<RoleRow>, StoreError> {
            let mut sql = sqlx::QueryBuilder::new(
                "INSERT INTO roles (role_id, company_id, role_name, create_time, update_time) ",
            );
            sql.push_values(roles, |mut row, role| {
                row.push_bind(role.id.as_str())
                    .push_bind(role.company.as_str())
                    .push_bind(role.name.as_str())
                    .push_bind($time(now))
                    .push_bind($time(now));
            });
            sql.push(LOCK_ROLES_TAIL);
            let rows = sql.build().fetch_all(&mut *self.0).await?;
            rows.iter().map(shared::decode_role).collect()
        }

        async fn roles(&mut self, ids: &[RoleId]) -> Result<Vec<RoleRow>, StoreError> {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut sql = sqlx::QueryBuilder::new(
                "SELECT role_id, company_id, role_name, last_run_number FROM roles WHERE role_id IN (",
            );
            let mut list = sql.separated(", ");
            for id in ids {
                list.push_bind(id.as_str());
            }
            sql.push(")");
            let rows = sql.build().fetch_all(&mut *self.0).await?;
            rows.iter().map(shared::decode_role).collect()
        }

        async fn any_legacy_role(&mut self) -> Result<bool, StoreError> {
            let row = sqlx::query(shared::ANY_LEGACY_ROLE).fetch_one(&mut *self.0).await?;
            Ok(row.int("n")? > 0)
        }

        async fn set_roles_latest(&mut self, roles: &[RoleLatest<'_>], now: Timestamp) -> Result<(), StoreError> {
            let mut sql = sqlx::QueryBuilder::new("WITH v (role_id, n, draup, t) AS (");
            sql.push_values(roles, |mut row, role| {
                row.push_bind(role.id.as_str())
                    .push_bind(i64::from(role.number))
                    .push_bind(role.draup.map(DraupRoleId::as_str))
                    .push_bind($time(now));
            });
            sql.push(SET_ROLES_LATEST_TAIL);
            sql.build().execute(&mut *self.0).await?;
            Ok(())
        }

        async fn latest_run(&mut self, role: &RoleId) -> Result<Option<Run>, StoreError> {
            let row = sqlx::query(SELECT_LATEST_RUN).bind(role.as_str()).fetch_optional(&mut *self.0).await?;
            row.as_ref().map(shared::decode_run).transpose()
        }

        async fn claim_run(
            &mut self,
            run: &WorkflowId,
            company: &CompanyId,
            at: Timestamp,
            terms: &ClaimTerms,
            until: Timestamp,
        ) -> Result<bool, StoreError> {
            let claimed = sqlx::query(shared::CLAIM_RUN)
                .bind(run.as_str())
                .bind($time(at))
                .bind(terms.claimer.as_str())
                .bind($time(until))
                .bind(company.as_str())
                .bind(to_i64(terms.company_room))
                .bind(to_i64(terms.total_room))
                .fetch_optional(&mut *self.0)
                .await?;
            Ok(claimed.is_some())
        }

        async fn insert_runs(&mut self, runs: &[Run]) -> Result<(), StoreError> {
            let mut sql = sqlx::QueryBuilder::new(concat!("INSERT INTO runs (", run_columns!(), ") "));
            sql.push_values(runs, |mut row, run| {
                shared::push_run!(row, run, $time, $opt_time);
            });
            sql.build().execute(&mut *self.0).await?;
            Ok(())
        }

        async fn supersede(&mut self, runs: &[(WorkflowId, WorkflowId)], now: Timestamp) -> Result<(), StoreError> {
            let mut sql = sqlx::QueryBuilder::new("WITH v (workflow_id, by_run, t) AS (");
            sql.push_values(runs, |mut row, (run, by)| {
                row.push_bind(run.as_str()).push_bind(by.as_str()).push_bind($time(now));
            });
            sql.push(SUPERSEDE_TAIL);
            sql.build().execute(&mut *self.0).await?;
            Ok(())
        }

        async fn update_run(&mut self, run: &Run) -> Result<(), StoreError> {
            sqlx::query(UPDATE_RUN)
                .bind(run.workflow_id.as_str())
                .bind(run.state.as_str())
                .bind(run.superseded_by.as_ref().map(WorkflowId::as_str))
                .bind(run.error.as_ref().map(Json))
                .bind(run.needs_review)
                .bind(run.tokens_used.input)
                .bind(run.tokens_used.output)
                .bind(to_i64(run.sequence))
                .bind($opt_time(run.start_time))
                .bind($opt_time(run.end_time))
                .bind($time(run.update_time))
                .execute(&mut *self.0)
                .await?;
            Ok(())
        }

        async fn set_needs_review(
            &mut self,
            id: &WorkflowId,
            needs_review: bool,
            now: Timestamp,
        ) -> Result<bool, StoreError> {
            let done = sqlx::query(SET_NEEDS_REVIEW)
                .bind(id.as_str())
                .bind(needs_review)
                .bind($time(now))
                .execute(&mut *self.0)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn company_loads(&mut self) -> Result<Vec<CompanyLoad>, StoreError> {
            let rows = sqlx::query(COMPANY_LOADS).fetch_all(&mut *self.0).await?;
            decode_all(rows, shared::decode_load)
        }

        async fn queue_position(&mut self, id: &WorkflowId) -> Result<u64, StoreError> {
            let row = sqlx::query(QUEUE_POSITION).bind(id.as_str()).fetch_one(&mut *self.0).await?;
            shared::number("position", row.int("n")?)
        }

        async fn queue_positions(&mut self, company: &CompanyId) -> Result<Vec<QueuePosition>, StoreError> {
            let rows = sqlx::query(QUEUE_POSITIONS).bind(company.as_str()).fetch_all(&mut *self.0).await?;
            decode_all(rows, shared::decode_position)
        }

        async fn release_claim(&mut self, id: &WorkflowId, claimer: &str) -> Result<(), StoreError> {
            sqlx::query(RELEASE_CLAIM).bind(id.as_str()).bind(claimer).execute(&mut *self.0).await?;
            Ok(())
        }

        async fn insert_event(&mut self, event: &RunEvent) -> Result<(), StoreError> {
            let (kind, step, attempt, status) = shared::event_key(&event.change);
            sqlx::query(INSERT_EVENT)
                .bind(event.workflow_id.as_str())
                .bind(to_i64(event.sequence))
                .bind($time(event.time))
                .bind(kind)
                .bind(step)
                .bind(attempt)
                .bind(status)
                .bind(Json(&event.change))
                .execute(&mut *self.0)
                .await?;
            Ok(())
        }

        async fn insert_events(&mut self, events: &[RunEvent]) -> Result<(), StoreError> {
            let mut sql = sqlx::QueryBuilder::new(INSERT_EVENTS_HEAD);
            sql.push_values(events, |mut row, event| {
                shared::push_event!(row, event, $time);
            });
            sql.build().execute(&mut *self.0).await?;
            Ok(())
        }

        async fn step_event(
            &mut self,
            id: &WorkflowId,
            step: &str,
            attempt: u32,
            status: StepStatus,
        ) -> Result<Option<u64>, StoreError> {
            let row = sqlx::query(STEP_EVENT)
                .bind(id.as_str())
                .bind(step)
                .bind(i64::from(attempt))
                .bind(status.as_str())
                .fetch_optional(&mut *self.0)
                .await?;
            row.map(|r| shared::number("sequence", r.int("sequence")?)).transpose()
        }

        async fn events_after(&mut self, id: &WorkflowId, after: u64, limit: u32) -> Result<Vec<RunEvent>, StoreError> {
            let rows = sqlx::query(EVENTS_AFTER)
                .bind(id.as_str())
                .bind(to_i64(after))
                .bind(i64::from(limit))
                .fetch_all(&mut *self.0)
                .await?;
            decode_all(rows, shared::decode_event)
        }

        async fn sequence_heads(&mut self, scope: &WatchScope) -> Result<Vec<(WorkflowId, u64)>, StoreError> {
            let query = match scope {
                WatchScope::Batch(batch) => sqlx::query(HEADS_OF_BATCH).bind(batch.as_str()),
                WatchScope::ActiveInCompany { company, ended_since } => {
                    sqlx::query(HEADS_OF_ACTIVE).bind(company.as_str()).bind($time(*ended_since))
                }
                WatchScope::UpdatedSince(since) => sqlx::query(HEADS_UPDATED_SINCE).bind($time(*since)),
            };
            let rows = query.fetch_all(&mut *self.0).await?;
            decode_all(rows, shared::decode_head)
        }

        async fn step_attempt(
            &mut self,
            id: &WorkflowId,
            step: &str,
            attempt: u32,
        ) -> Result<Option<StepAttempt>, StoreError> {
            let row = sqlx::query(SELECT_STEP)
                .bind(id.as_str())
                .bind(step)
                .bind(i64::from(attempt))
                .fetch_optional(&mut *self.0)
                .await?;
            row.as_ref().map(shared::decode_step).transpose()
        }

        async fn steps(&mut self, id: &WorkflowId) -> Result<Vec<StepAttempt>, StoreError> {
            let rows = sqlx::query(SELECT_STEPS).bind(id.as_str()).fetch_all(&mut *self.0).await?;
            decode_all(rows, shared::decode_step)
        }

        async fn upsert_step(&mut self, id: &WorkflowId, attempt: &StepAttempt) -> Result<(), StoreError> {
            sqlx::query(UPSERT_STEP)
                .bind(id.as_str())
                .bind(attempt.step.as_str())
                .bind(i64::from(attempt.attempt))
                .bind(attempt.status.as_str())
                .bind($opt_time(attempt.started_at))
                .bind($opt_time(attempt.finished_at))
                .bind(attempt.tokens.input)
                .bind(attempt.tokens.output)
                .bind(attempt.input_hash.as_deref())
                .bind(attempt.output_hash.as_deref())
                .bind(attempt.error.as_ref().map(Json))
                .bind(attempt.reused_from.as_ref().map(WorkflowId::as_str))
                .bind($time(attempt.update_time))
                .execute(&mut *self.0)
                .await?;
            Ok(())
        }

        async fn add_usage(
            &mut self,
            company: &CompanyId,
            day: NaiveDate,
            step: &str,
            tokens: TokenCount,
        ) -> Result<(), StoreError> {
            sqlx::query(ADD_USAGE)
                .bind(company.as_str())
                .bind($day(day))
                .bind(step)
                .bind(tokens.input)
                .bind(tokens.output)
                .execute(&mut *self.0)
                .await?;
            Ok(())
        }

        async fn usage(
            &mut self,
            company: &CompanyId,
            from: NaiveDate,
            to: NaiveDate,
        ) -> Result<Vec<UsageRow>, StoreError> {
            let rows = sqlx::query(SELECT_USAGE)
                .bind(company.as_str())
                .bind($day(from))
                .bind($day(to))
                .fetch_all(&mut *self.0)
                .await?;
            decode_all(rows, shared::decode_usage)
        }

        async fn insert_batch(&mut self, batch: &Batch) -> Result<bool, StoreError> {
            let done = sqlx::query(INSERT_BATCH)
                .bind(batch.id.as_str())
                .bind(batch.company.as_str())
                .bind(batch.request_id.as_ref().map(|r| r.as_str()))
                .bind(i64::from(batch.item_count))
                .bind($time(batch.create_time))
                .execute(&mut *self.0)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn batch(&mut self, id: &BatchId) -> Result<Option<Batch>, StoreError> {
            let row = sqlx::query(SELECT_BATCH).bind(id.as_str()).fetch_optional(&mut *self.0).await?;
            row.as_ref().map(shared::decode_batch).transpose()
        }

        async fn batch_counts(&mut self, id: &BatchId) -> Result<Vec<(RunState, u64)>, StoreError> {
            let rows = sqlx::query(BATCH_COUNTS).bind(id.as_str()).fetch_all(&mut *self.0).await?;
            rows.iter()
                .map(|row| Ok((shared::run_state(&row.text("state")?)?, shared::number("count", row.int("n")?)?)))
                .collect()
        }

        async fn request(&mut self, key: &RequestKey) -> Result<Option<StoredRequest>, StoreError> {
            let row = sqlx::query(SELECT_REQUEST)
                .bind(key.company.as_str())
                .bind(key.request_id.as_str())
                .fetch_optional(&mut *self.0)
                .await?;
            row.as_ref().map(shared::decode_request).transpose()
        }

        async fn insert_request(&mut self, key: &RequestKey, record: &StoredRequest) -> Result<bool, StoreError> {
            let done = sqlx::query(INSERT_REQUEST)
                .bind(key.company.as_str())
                .bind(key.request_id.as_str())
                .bind(record.payload_hash.as_str())
                .bind(record.response.as_slice())
                .bind($time(record.create_time))
                .bind($time(record.expire_time))
                .execute(&mut *self.0)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn purge_requests(&mut self, now: Timestamp) -> Result<u64, StoreError> {
            Ok(sqlx::query(PURGE_REQUESTS).bind($time(now)).execute(&mut *self.0).await?.rows_affected())
        }

        async fn document_hash(&mut self, uri: &str) -> Result<Option<DocumentHash>, StoreError> {
            let row = sqlx::query(SELECT_DOCUMENT).bind(uri).fetch_optional(&mut *self.0).await?;
            row.as_ref().map(shared::decode_document).transpose()
        }

        async fn put_document_hash(&mut self, hash: &DocumentHash) -> Result<(), StoreError> {
            sqlx::query(UPSERT_DOCUMENT)
                .bind(hash.uri.as_str())
                .bind(hash.content_hash.0.as_str())
                .bind($time(hash.seen_time))
                .execute(&mut *self.0)
                .await?;
            Ok(())
        }

        async fn token_reservations(&mut self, company: &CompanyId) -> Result<i64, StoreError> {
            let row = sqlx::query(TOKEN_RESERVATIONS).bind(company.as_str()).fetch_one(&mut *self.0).await?;
            row.int("reserved")
        }

        async fn lock_audit_head(&mut self) -> Result<AuditHead, StoreError> {
            let row = sqlx::query(LOCK_AUDIT_HEAD).fetch_one(&mut *self.0).await?;
            shared::decode_audit_head(&row)
        }

        async fn audit_head(&mut self) -> Result<AuditHead, StoreError> {
            let row = sqlx::query(SELECT_AUDIT_HEAD).fetch_one(&mut *self.0).await?;
            shared::decode_audit_head(&row)
        }

        async fn set_audit_head(&mut self, head: &AuditHead, now: Timestamp) -> Result<(), StoreError> {
            sqlx::query(SET_AUDIT_HEAD)
                .bind(to_i64(head.seq))
                .bind(head.hash.as_str())
                .bind($time(now))
                .execute(&mut *self.0)
                .await?;
            Ok(())
        }

        async fn insert_audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError> {
            let event = &entry.event;
            sqlx::query(INSERT_AUDIT)
                .bind(to_i64(entry.seq))
                .bind($time(event.time))
                .bind(event.actor.as_str())
                .bind(event.role.as_str())
                .bind(event.company.as_ref().map(CompanyId::as_str))
                .bind(event.action.as_str())
                .bind(event.target.as_str())
                .bind(event.outcome.as_str())
                .bind(event.reason.as_str())
                .bind(event.request_id.as_deref())
                .bind(event.trace_id.as_ref().map(etter_core::ids::TraceId::as_str))
                .bind(event.peer.as_deref())
                .bind(entry.prev_hash.as_str())
                .bind(entry.hash.as_str())
                .execute(&mut *self.0)
                .await?;
            Ok(())
        }

        async fn audit_entries(&mut self, after: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
            let rows =
                sqlx::query(AUDIT_AFTER).bind(to_i64(after)).bind(i64::from(limit)).fetch_all(&mut *self.0).await?;
            decode_all(rows, shared::decode_audit)
        }

        async fn insert_notification(&mut self, run: &Run, now: Timestamp) -> Result<(), StoreError> {
            sqlx::query(INSERT_NOTIFICATION)
                .bind(run.workflow_id.as_str())
                .bind(run.company_id.as_str())
                .bind(run.state.as_str())
                .bind($time(now))
                .execute(&mut *self.0)
                .await?;
            Ok(())
        }

        async fn settle_notification(
            &mut self,
            id: i64,
            claimer: &str,
            delivery: &Delivery,
            now: Timestamp,
        ) -> Result<bool, StoreError> {
            let (delivered, gave_up, error, next) = match delivery {
                Delivery::Delivered => (Some(now), false, None, None),
                Delivery::Retry { error, next_attempt } => (None, false, Some(error.as_str()), Some(*next_attempt)),
                Delivery::GiveUp { error } => (None, true, Some(error.as_str()), None),
            };
            let done = sqlx::query(SETTLE_NOTIFICATION)
                .bind(id)
                .bind(claimer)
                .bind($opt_time(delivered))
                .bind(gave_up)
                .bind(error)
                .bind($opt_time(next))
                .execute(&mut *self.0)
                .await?;
            Ok(done.rows_affected() == 1)
        }
    };
}
pub(super) use shared_primitives;

/// The [`Row`] accessors both backends decode the same way, expanded inside `impl Row for …`.
macro_rules! shared_row_accessors {
    () => {
        fn text(&self, col: &str) -> Result<String, StoreError> {
            Ok(self.try_get(col)?)
        }
        fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
            Ok(self.try_get(col)?)
        }
        fn int(&self, col: &str) -> Result<i64, StoreError> {
            Ok(self.try_get(col)?)
        }
        fn boolean(&self, col: &str) -> Result<bool, StoreError> {
            Ok(self.try_get(col)?)
        }
        fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError> {
            Ok(self.try_get(col)?)
        }
        fn json<T: DeserializeOwned>(&self, col: &str) -> Result<T, StoreError> {
            Ok(self.try_get::<Json<T>, _>(col)?.0)
        }
        fn opt_json<T: DeserializeOwned>(&self, col: &str) -> Result<Option<T>, StoreError> {
            Ok(self.try_get::<Option<Json<T>>, _>(col)?.map(|j| j.0))
        }
    };
}
pub(super) use shared_row_accessors;
/// Typed column access, implemented by each backend's row type (times and days are encoded
/// differently; everything else decodes the same way).
pub(super) trait Row {
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn boolean(&self, col: &str) -> Result<bool, StoreError>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError>;
    fn time(&self, col: &str) -> Result<Timestamp, StoreError>;
    fn opt_time(&self, col: &str) -> Result<Option<Timestamp>, StoreError>;
    fn day(&self, col: &str) -> Result<NaiveDate, StoreError>;
    fn json<T: DeserializeOwned>(&self, col: &str) -> Result<T, StoreError>;
    fn opt_json<T: DeserializeOwned>(&self, col: &str) -> Result<Option<T>, StoreError>;
}

pub(super) fn decode_run(row: &impl Row) -> Result<Run, StoreError> {
    let priority = row.int("priority")?;
    Ok(Run {
        workflow_id: id(row.text("workflow_id")?, WorkflowId::parse)?,
        role_id: id(row.text("role_id")?, RoleId::parse)?,
        company_id: id(row.text("company_id")?, CompanyId::parse)?,
        role_name: id(row.text("role_name")?, RoleName::parse)?,
        draup_role_id: opt_id(row.opt_text("draup_role_id")?, DraupRoleId::parse)?,
        run_number: number("run number", row.int("run_number")?)?,
        input_identity: row.text("input_identity")?,
        state: run_state(&row.text("state")?)?,
        superseded_by: opt_id(row.opt_text("superseded_by")?, WorkflowId::parse)?,
        supersedes: opt_id(row.opt_text("supersedes")?, WorkflowId::parse)?,
        batch_id: opt_id(row.opt_text("batch_id")?, BatchId::parse)?,
        priority: Priority::from_rank(priority).ok_or_else(|| corrupt("priority", &priority.to_string(), "unknown"))?,
        options: row.json("options")?,
        documents: row.json("documents")?,
        error: row.opt_json("error")?,
        needs_review: row.boolean("needs_review")?,
        field_violations: row.json("field_violations")?,
        token_estimate: row.int("token_estimate")?,
        tokens_used: TokenCount { input: row.int("tokens_in")?, output: row.int("tokens_out")? },
        sequence: number("sequence", row.int("last_sequence")?)?,
        create_time: row.time("create_time")?,
        start_time: row.opt_time("start_time")?,
        end_time: row.opt_time("end_time")?,
        update_time: row.time("update_time")?,
        plan: row.opt_json("plan")?,
        notify: row.boolean("notify")?,
        trace_id: opt_id(row.opt_text("trace_id")?, TraceId::parse)?,
    })
}

pub(super) fn decode_audit_head(row: &impl Row) -> Result<AuditHead, StoreError> {
    Ok(AuditHead { seq: number("audit seq", row.int("seq")?)?, hash: row.text("hash")? })
}

pub(super) fn decode_audit(row: &impl Row) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        seq: number("audit seq", row.int("seq")?)?,
        event: AuditEvent {
            time: row.time("time")?,
            actor: row.text("actor")?,
            role: row.text("role")?,
            company: opt_id(row.opt_text("company_id")?, CompanyId::parse)?,
            action: row.text("action")?,
            target: row.text("target")?,
            outcome: row.text("outcome")?,
            reason: row.text("reason")?,
            request_id: row.opt_text("request_id")?,
            trace_id: opt_id(row.opt_text("trace_id")?, TraceId::parse)?,
            peer: row.opt_text("peer")?,
        },
        prev_hash: row.text("prev_hash")?,
        hash: row.text("hash")?,
    })
}

pub(super) fn decode_step_stats(row: &impl Row) -> Result<StepStats, StoreError> {
    let micros = row.int("micros")?.max(0);
    Ok(StepStats {
        step: row.text("step")?,
        samples: number("samples", row.int("n")?)?,
        mean_duration: std::time::Duration::from_micros(u64::try_from(micros).unwrap_or(0)),
        mean_tokens: row.int("tokens")?,
    })
}

pub(super) fn decode_step(row: &impl Row) -> Result<StepAttempt, StoreError> {
    let status = row.text("status")?;
    Ok(StepAttempt {
        step: row.text("step")?,
        attempt: number("attempt", row.int("attempt")?)?,
        status: StepStatus::parse(&status).ok_or_else(|| corrupt("step status", &status, "unknown"))?,
        started_at: row.opt_time("started_at")?,
        finished_at: row.opt_time("finished_at")?,
        tokens: TokenCount { input: row.int("tokens_in")?, output: row.int("tokens_out")? },
        input_hash: row.opt_text("input_hash")?,
        output_hash: row.opt_text("output_hash")?,
        error: row.opt_json("error")?,
        reused_from: opt_id(row.opt_text("reused_from")?, WorkflowId::parse)?,
        update_time: row.time("update_time")?,
    })
}

pub(super) fn decode_event(row: &impl Row) -> Result<RunEvent, StoreError> {
    Ok(RunEvent {
        workflow_id: id(row.text("workflow_id")?, WorkflowId::parse)?,
        sequence: number("sequence", row.int("sequence")?)?,
        time: row.time("event_time")?,
        change: row.json("payload")?,
    })
}

pub(super) fn decode_batch(row: &impl Row) -> Result<Batch, StoreError> {
    Ok(Batch {
        id: id(row.text("batch_id")?, BatchId::parse)?,
        company: id(row.text("company_id")?, CompanyId::parse)?,
        request_id: opt_id(row.opt_text("request_id")?, RequestId::parse)?,
        item_count: number("item count", row.int("item_count")?)?,
        create_time: row.time("create_time")?,
    })
}

pub(super) fn decode_notification(row: &impl Row) -> Result<Notification, StoreError> {
    Ok(Notification {
        id: row.int("id")?,
        workflow_id: id(row.text("workflow_id")?, WorkflowId::parse)?,
        company: id(row.text("company_id")?, CompanyId::parse)?,
        state: run_state(&row.text("state")?)?,
        create_time: row.time("create_time")?,
        attempts: number("attempts", row.int("attempts")?)?,
    })
}

pub(super) fn decode_head(row: &impl Row) -> Result<(WorkflowId, u64), StoreError> {
    Ok((id(row.text("workflow_id")?, WorkflowId::parse)?, number("sequence", row.int("last_sequence")?)?))
}

pub(super) fn decode_request(row: &impl Row) -> Result<StoredRequest, StoreError> {
    Ok(StoredRequest {
        payload_hash: row.text("payload_hash")?,
        response: row.bytes("response")?,
        create_time: row.time("create_time")?,
        expire_time: row.time("expire_time")?,
    })
}

pub(super) fn decode_document(row: &impl Row) -> Result<DocumentHash, StoreError> {
    Ok(DocumentHash {
        uri: row.text("uri")?,
        content_hash: ContentHash(row.text("content_hash")?),
        seen_time: row.time("seen_time")?,
    })
}

pub(super) fn decode_usage(row: &impl Row) -> Result<UsageRow, StoreError> {
    Ok(UsageRow {
        day: row.day("day")?,
        step: row.text("step")?,
        tokens: TokenCount { input: row.int("input_tokens")?, output: row.int("output_tokens")? },
    })
}

pub(super) fn decode_load(row: &impl Row) -> Result<CompanyLoad, StoreError> {
    Ok(CompanyLoad {
        company: id(row.text("company_id")?, CompanyId::parse)?,
        queued: number("count", row.int("queued")?)?,
        processing: number("count", row.int("processing")?)?,
    })
}

pub(super) fn decode_position(row: &impl Row) -> Result<QueuePosition, StoreError> {
    Ok(QueuePosition {
        workflow_id: id(row.text("workflow_id")?, WorkflowId::parse)?,
        position: number("position", row.int("position")?)?,
    })
}

/// The columns an event row stores besides its payload: kind and, for step events, the
/// idempotency key (step, attempt, status).
pub(super) fn event_key(change: &Change) -> (&'static str, Option<&str>, Option<i64>, Option<&'static str>) {
    match change {
        Change::Status { .. } => ("status", None, None, None),
        Change::Step { step, status, attempt, .. } => {
            ("step", Some(step.as_str()), Some(i64::from(*attempt)), Some(status.as_str()))
        }
    }
}
