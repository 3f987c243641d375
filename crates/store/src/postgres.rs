//! The PostgreSQL primitives of the run store (production; several server replicas share it).
//!
//! Writes run in READ COMMITTED transactions that lock what they change: the run row
//! (`SELECT … FOR UPDATE`) before appending an event, the role row (an upsert) before numbering a
//! new run. Dispatch claims skip rows another claimer holds (`FOR UPDATE SKIP LOCKED`). Reads are
//! single statements, autocommitted: each sees one snapshot without a transaction around it.

use std::str::FromStr;

use chrono::NaiveDate;
use sqlx::{
    PgPool, Row as _,
    postgres::{PgArguments, PgConnectOptions, PgRow},
    query::Query,
};

use super::{
    Claim, ClaimTerms, DocumentHash, EventScope, Notification, NotificationClaim, Run, RunEvent, RunFilter, StepStats,
    StoreError, StoreOptions, Timestamp,
    backend::{Backend, Conn, Tx},
    rows::{self, Cursor},
    shared::{
        INSERT_EVENTS_HEAD, SELECT_RUN, audit_columns, claim_room, claim_terms, decode_all, event_args, run_args,
        run_columns,
    },
    statement::{Arg, Builder, Row, Statement, Statements, same_in_both_dialects},
    values::{number, to_i64},
};
use etter_core::audit::{AuditEntry, AuditFilter};
use etter_core::ids::{BatchId, CompanyId, DraupRoleId, RoleId, WorkflowId};
use etter_core::lifecycle::RunState;

/// The PostgreSQL backend: a connection pool.
pub(super) struct Postgres {
    pool: PgPool,
}

impl Postgres {
    /// Connects and applies the migrations. sqlx's migrator holds a PostgreSQL advisory lock while it
    /// migrates, so replicas starting at once apply each migration once and the others wait.
    pub(super) async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(url)?;
        let pool = super::backend::pool_options(options.max_connections)
            .connect_with(connect)
            .await
            .map_err(|source| StoreError::Connect { advice: tls_advice(&source), source })?;
        migrator(&pool).await?.run(&pool).await?;
        Ok(Postgres { pool })
    }
}

/// `: <what to change in store.url>` when TLS refused the connection, else empty.
fn tls_advice(error: &sqlx::Error) -> String {
    let text = format!("{error} {error:?}");
    let fixes = etter_config::tls::Fixes {
        ca: "`sslrootcert=<the CA file>` in `store.url`".to_owned(),
        identity: "`sslcert=` and `sslkey=` in `store.url`".to_owned(),
        server_name: "a host in `store.url` that the certificate carries (or `sslmode=verify-ca`)".to_owned(),
    };
    let advice = etter_config::tls::advice(&text, &fixes).or_else(|| {
        // PostgreSQL's own refusal of a connection without TLS (`hostssl` only in pg_hba.conf).
        (text.contains("no pg_hba.conf entry") && text.contains("no encryption"))
            .then(|| "the server accepts only TLS: add `sslmode=verify-full` to `store.url`".to_owned())
    });
    advice.map(|advice| format!(": {advice}")).unwrap_or_default()
}

/// The migrations, accepting the checksums a store recorded for texts since reworded
/// ([`super::migrations`]).
async fn migrator(pool: &sqlx::PgPool) -> Result<sqlx::migrate::Migrator, StoreError> {
    let recorded: bool =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(pool).await?;
    let checksums: std::collections::HashMap<i64, Vec<u8>> = if recorded {
        sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations").fetch_all(pool).await?.into_iter().collect()
    } else {
        std::collections::HashMap::new()
    };
    Ok(super::migrations::accepting_superseded("postgres", sqlx::migrate!("./migrations/postgres"), &checksums))
}

impl Backend for Postgres {
    type Tx = PgTx;
    const NAME: &'static str = "postgres";

    async fn write(&self) -> Result<PgTx, StoreError> {
        Ok(PgTx(Conn::Transaction(self.pool.begin().await?)))
    }

    async fn autocommit(&self) -> Result<PgTx, StoreError> {
        Ok(PgTx(Conn::Autocommit(self.pool.acquire().await?)))
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    const CREATES_FIRST_RUN_IN_ONE_STATEMENT: bool = true;

    async fn create_first_run(
        &self,
        run: &Run,
        first_event: &RunEvent,
        claim: Option<(&ClaimTerms, Timestamp)>,
    ) -> Result<Option<bool>, StoreError> {
        // Each data-modifying CTE runs once; each reads the one before through a join, so nothing
        // is written when the role exists (its insert returns no row). The claim's room is read
        // from the statement's snapshot, as `claim_run` reads it.
        let mut sql = Builder::new::<PgTx>(concat!("WITH ", claim_terms!()));
        sql.list([
            run.workflow_id.as_str().into(),
            first_event.time.into(),
            claim.map(|(terms, _)| terms.claimer.as_str()).into(),
            claim.map(|(_, until)| until).into(),
            run.company_id.as_str().into(),
            claim.map_or(0, |(terms, _)| to_i64(terms.company_room)).into(),
            claim.map_or(0, |(terms, _)| to_i64(terms.total_room)).into(),
        ])
        .push(
            "), role AS (INSERT INTO roles (role_id, company_id, role_name, draup_role_id, last_run_number, \
             create_time, update_time) VALUES ",
        )
        .tuple([
            run.role_id.as_str().into(),
            run.company_id.as_str().into(),
            run.role_name.as_str().into(),
            run.draup_role_id.as_ref().map(DraupRoleId::as_str).into(),
            i64::from(run.run_number).into(),
            run.create_time.into(),
            run.create_time.into(),
        ])
        .push(concat!(
            " ON CONFLICT (role_id) DO NOTHING RETURNING role_id), \
             claim AS (SELECT c.claimer, c.claim_until FROM c WHERE ",
            claim_room!(),
            "), new_run AS (INSERT INTO runs (",
            run_columns!(),
            ", claimed_by, claim_expires_at) SELECT v.*, claim.claimer, claim.claim_until FROM role CROSS JOIN ("
        ))
        .values([run_args(run)?])
        .push(") AS v LEFT JOIN claim ON TRUE RETURNING claimed_by), first_event AS (")
        .push(INSERT_EVENTS_HEAD)
        .push("SELECT e.* FROM new_run CROSS JOIN (")
        .values([event_args(first_event)?])
        .push(") AS e) SELECT claimed_by FROM new_run");
        let Some(row) = self.autocommit().await?.fetch_optional(sql.build()).await? else {
            return Ok(None);
        };
        Ok(Some(row.opt_text("claimed_by")?.is_some()))
    }
}

/// `statement` as an sqlx query: times and days as they are (`TIMESTAMPTZ`, `DATE`), lists as
/// arrays.
fn query(statement: Statement<'_>) -> Result<Query<'static, sqlx::Postgres, PgArguments>, StoreError> {
    let (sql, args) = statement.into_parts()?;
    let mut query = sqlx::query(sql);
    for arg in args {
        query = match arg {
            Arg::Text(v) => query.bind(v),
            Arg::Int(v) => query.bind(v),
            Arg::Bool(v) => query.bind(v),
            Arg::Bytes(v) => query.bind(v),
            Arg::Time(v) => query.bind(v),
            Arg::Day(v) => query.bind(v),
            Arg::Json(v) => query.bind(v),
            Arg::Texts(v) => query.bind(v),
            Arg::Ints(v) => query.bind(v),
        };
    }
    Ok(query)
}

impl Row for PgRow {
    same_in_both_dialects!();

    fn time(&self, col: &str) -> Result<Timestamp, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_time(&self, col: &str) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn day(&self, col: &str) -> Result<NaiveDate, StoreError> {
        Ok(self.try_get(col)?)
    }
}

fn states(values: &[RunState]) -> Arg<'static> {
    Arg::Texts(values.iter().map(|s| s.as_str()).collect())
}

/// Statements on a PostgreSQL connection: a transaction, or one autocommitted statement.
pub(super) struct PgTx(Conn<sqlx::Postgres>);

impl Statements for PgTx {
    type Row = PgRow;

    fn placeholder(sql: &mut String, n: usize) {
        use std::fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = write!(sql, "${n}");
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.0.commit().await
    }

    async fn execute(&mut self, statement: Statement<'_>) -> Result<u64, StoreError> {
        Ok(query(statement)?.execute(&mut *self.0).await?.rows_affected())
    }

    async fn fetch_all(&mut self, statement: Statement<'_>) -> Result<Vec<PgRow>, StoreError> {
        Ok(query(statement)?.fetch_all(&mut *self.0).await?)
    }

    async fn fetch_optional(&mut self, statement: Statement<'_>) -> Result<Option<PgRow>, StoreError> {
        Ok(query(statement)?.fetch_optional(&mut *self.0).await?)
    }

    async fn fetch_one(&mut self, statement: Statement<'_>) -> Result<PgRow, StoreError> {
        Ok(query(statement)?.fetch_one(&mut *self.0).await?)
    }
}

impl Tx for PgTx {
    async fn run(&mut self, id: &WorkflowId, lock: bool) -> Result<Option<Run>, StoreError> {
        const LOCKED: &str = concat!("SELECT ", run_columns!(), " FROM runs WHERE workflow_id = $1 FOR UPDATE");
        let row = self.fetch_optional(Statement::new(if lock { LOCKED } else { SELECT_RUN }).bind(id.as_str())).await?;
        row.as_ref().map(rows::decode_run).transpose()
    }

    async fn lock_runs(&mut self, ids: &[WorkflowId]) -> Result<Vec<Run>, StoreError> {
        // Locked in one order (by id), as every writer locking several runs does.
        const SQL: &str = concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE workflow_id = ANY($1) ORDER BY workflow_id FOR UPDATE"
        );
        let rows =
            self.fetch_all(Statement::new(SQL).bind(Arg::Texts(ids.iter().map(WorkflowId::as_str).collect()))).await?;
        decode_all(rows, rows::decode_run)
    }

    async fn list_runs(
        &mut self,
        filter: &RunFilter,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<Run>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE company_id = $1 \
             AND (cardinality($2::text[]) = 0 OR state = ANY($2)) \
             AND ($3::text IS NULL OR role_id = $3) \
             AND ($4::text IS NULL OR batch_id = $4) \
             AND ($5::timestamptz IS NULL OR create_time >= $5) \
             AND ($6::timestamptz IS NULL OR create_time < $6) \
             AND ($7::boolean IS NULL OR needs_review = $7) \
             AND ($8::timestamptz IS NULL OR (create_time, workflow_id) < ($8, $9::text)) \
             ORDER BY create_time DESC, workflow_id DESC LIMIT $10"
        );
        let rows = self
            .fetch_all(
                Statement::new(SQL)
                    .bind(filter.company.as_str())
                    .bind(states(&filter.states))
                    .bind(filter.role.as_ref().map(RoleId::as_str))
                    .bind(filter.batch.as_ref().map(BatchId::as_str))
                    .bind(filter.created_after)
                    .bind(filter.created_before)
                    .bind(filter.needs_review)
                    .bind(cursor.map(|c| c.create_time))
                    .bind(cursor.map(|c| c.workflow_id.as_str()))
                    .bind(i64::from(limit)),
            )
            .await?;
        decode_all(rows, rows::decode_run)
    }

    async fn count_runs(&mut self, company: Option<&CompanyId>, states_: &[RunState]) -> Result<u64, StoreError> {
        const SQL: &str = "SELECT COUNT(*) AS n FROM runs WHERE ($1::text IS NULL OR company_id = $1) \
             AND (cardinality($2::text[]) = 0 OR state = ANY($2))";
        let row =
            self.fetch_one(Statement::new(SQL).bind(company.map(CompanyId::as_str)).bind(states(states_))).await?;
        number("count", row.int("n")?)
    }

    async fn runs_in_states(
        &mut self,
        states_: &[RunState],
        after: Option<&WorkflowId>,
        limit: u32,
    ) -> Result<Vec<Run>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE (cardinality($1::text[]) = 0 OR state = ANY($1)) \
             AND ($2::text IS NULL OR workflow_id > $2) ORDER BY workflow_id LIMIT $3"
        );
        let rows = self
            .fetch_all(
                Statement::new(SQL).bind(states(states_)).bind(after.map(WorkflowId::as_str)).bind(i64::from(limit)),
            )
            .await?;
        decode_all(rows, rows::decode_run)
    }

    async fn step_stats(&mut self, per_step: u32) -> Result<Vec<StepStats>, StoreError> {
        const SQL: &str = "SELECT step, COUNT(*) AS n, \
               CAST(AVG(EXTRACT(EPOCH FROM (finished_at - started_at)) * 1000000) AS BIGINT) AS micros, \
               CAST(AVG(tokens_in + tokens_out) AS BIGINT) AS tokens \
             FROM (SELECT step, started_at, finished_at, tokens_in, tokens_out, \
                     ROW_NUMBER() OVER (PARTITION BY step ORDER BY finished_at DESC) AS recent \
                   FROM run_steps WHERE status = 'completed' AND started_at IS NOT NULL \
                     AND finished_at IS NOT NULL) measured \
             WHERE recent <= $1 GROUP BY step ORDER BY step";
        let rows = self.fetch_all(Statement::new(SQL).bind(i64::from(per_step))).await?;
        decode_all(rows, rows::decode_step_stats)
    }

    async fn claim(&mut self, claim: &Claim, state: RunState, until: Timestamp) -> Result<Vec<Run>, StoreError> {
        // SKIP LOCKED: a row another claimer is taking right now is passed over, not waited for; the
        // re-check of the WHERE clause on the locked row keeps an already-claimed run out. The state
        // is written into the statement so each matches its partial index.
        macro_rules! claim_in {
            ($state:literal) => {
                concat!(
                    "WITH picked AS ( \
                       SELECT workflow_id AS picked_id FROM runs \
                       WHERE state = '",
                    $state,
                    "' AND (claim_expires_at IS NULL OR claim_expires_at <= $1) \
                         AND ($2::text IS NULL OR company_id = $2) \
                       ORDER BY priority DESC, create_time, workflow_id \
                       LIMIT $3 \
                       FOR UPDATE SKIP LOCKED) \
                     UPDATE runs SET claimed_by = $4, claim_expires_at = $5 \
                     FROM picked WHERE runs.workflow_id = picked.picked_id \
                     RETURNING ",
                    run_columns!()
                )
            };
        }
        let sql = match state {
            RunState::Queued => claim_in!("QUEUED"),
            RunState::Validating => claim_in!("VALIDATING"),
            other => return Err(StoreError::InvalidArgument(format!("runs in {other} are not claimed"))),
        };
        let rows = self
            .fetch_all(
                Statement::new(sql)
                    .bind(claim.now)
                    .bind(claim.company.as_ref().map(CompanyId::as_str))
                    .bind(i64::from(claim.limit))
                    .bind(claim.claimer.as_str())
                    .bind(until),
            )
            .await?;
        decode_all(rows, rows::decode_run)
    }

    async fn claim_notifications(
        &mut self,
        claim: &NotificationClaim,
        until: Timestamp,
    ) -> Result<Vec<Notification>, StoreError> {
        const SQL: &str = concat!(
            "WITH picked AS ( \
               SELECT id FROM notifications \
               WHERE delivered_time IS NULL AND NOT gave_up AND next_attempt_time <= $1 \
                 AND (claim_expires_at IS NULL OR claim_expires_at <= $1) \
               ORDER BY next_attempt_time, id LIMIT $2 \
               FOR UPDATE SKIP LOCKED) \
             UPDATE notifications SET claimed_by = $3, claim_expires_at = $4 \
             FROM picked WHERE notifications.id = picked.id RETURNING ",
            "notifications.id, workflow_id, company_id, state, create_time, attempts"
        );
        let rows = self
            .fetch_all(
                Statement::new(SQL)
                    .bind(claim.now)
                    .bind(i64::from(claim.limit))
                    .bind(claim.claimer.as_str())
                    .bind(until),
            )
            .await?;
        decode_all(rows, rows::decode_notification)
    }

    async fn events_after_marks(
        &mut self,
        scope: &EventScope,
        marks: &[(WorkflowId, u64)],
        limit: u32,
    ) -> Result<Vec<RunEvent>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            "run_events.workflow_id, run_events.sequence, run_events.event_time, run_events.payload",
            " FROM UNNEST($1::text[], $2::bigint[]) AS m(run, after) \
             JOIN runs ON runs.workflow_id = m.run \
              AND runs.company_id = $4 AND ($5::text IS NULL OR runs.batch_id = $5) \
             JOIN run_events ON run_events.workflow_id = m.run AND run_events.sequence > m.after \
             ORDER BY run_events.workflow_id, run_events.sequence LIMIT $3"
        );
        let runs: Vec<&str> = marks.iter().map(|(id, _)| id.as_str()).collect();
        let afters: Vec<i64> = marks.iter().map(|(_, after)| to_i64(*after)).collect();
        let rows = self
            .fetch_all(
                Statement::new(SQL)
                    .bind(Arg::Texts(runs))
                    .bind(Arg::Ints(afters))
                    .bind(i64::from(limit))
                    .bind(scope.company.as_str())
                    .bind(scope.batch.as_ref().map(BatchId::as_str)),
            )
            .await?;
        decode_all(rows, rows::decode_event)
    }

    async fn list_audit(&mut self, filter: &AuditFilter, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_log WHERE ($1::text IS NULL OR company_id = $1) \
             AND ($2::text IS NULL OR actor = $2) \
             AND ($3::text IS NULL OR action = $3) \
             AND (NOT $4 OR outcome <> 'OK') \
             AND ($5::bigint IS NULL OR seq < $5) \
             ORDER BY seq DESC LIMIT $6"
        );
        let rows = self
            .fetch_all(
                Statement::new(SQL)
                    .bind(filter.company.as_ref().map(CompanyId::as_str))
                    .bind(filter.actor.as_deref())
                    .bind(filter.action.as_deref())
                    .bind(filter.denied_only)
                    .bind(filter.before_seq.map(to_i64))
                    .bind(i64::from(limit)),
            )
            .await?;
        decode_all(rows, rows::decode_audit)
    }

    async fn document_hashes(&mut self, uris: &[String]) -> Result<Vec<DocumentHash>, StoreError> {
        const SQL: &str = "SELECT uri, content_hash, seen_time FROM document_hashes WHERE uri = ANY($1) ORDER BY uri";
        let rows =
            self.fetch_all(Statement::new(SQL).bind(Arg::Texts(uris.iter().map(String::as_str).collect()))).await?;
        decode_all(rows, rows::decode_document)
    }
}
