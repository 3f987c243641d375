//! The SQLite primitives of the run store (the embedded default: one server process, one file).
//!
//! Every write transaction starts with `BEGIN IMMEDIATE`: it takes the database's single write lock
//! up front (waiting up to the busy timeout), so writers are serialised — the SQLite equivalent of
//! the row locks the PostgreSQL backend takes — and never fail upgrading a read lock. WAL mode lets
//! reads proceed while one writer works. Times are stored as integer microseconds since the epoch.

use std::path::Path;

use chrono::{DateTime, NaiveDate};
use sqlx::{
    Row as _, SqlitePool,
    query::Query,
    sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqliteRow},
    types::Json,
};

use super::{
    Claim, DocumentHash, EventScope, Notification, NotificationClaim, Run, RunEvent, RunFilter, StepStats, StoreError,
    StoreOptions, Timestamp,
    backend::{Backend, Conn, Tx},
    rows::{self, Cursor},
    shared::{SELECT_RUN, audit_columns, decode_all, notification_columns, run_columns},
    statement::{Arg, Row, Statement, Statements, same_in_both_dialects},
    values::{number, to_i64},
};
use etter_core::audit::{AuditEntry, AuditFilter};
use etter_core::ids::{BatchId, CompanyId, RoleId, WorkflowId};
use etter_core::lifecycle::RunState;

/// The SQLite backend: a connection pool over one file.
pub(super) struct Sqlite {
    pool: SqlitePool,
}

impl Sqlite {
    /// Creates the file (and its directory) if needed, connects and applies the migrations.
    pub(super) async fn connect(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(|source| StoreError::Io {
                action: "create the store directory",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(options.sqlite_busy_timeout)
            .foreign_keys(true);
        // sqlx takes no lock on SQLite: two processes opening an empty file at once would both
        // apply the first migration ("table roles already exists"), and one's switch of a new
        // file to WAL can meet the other's first write ("database is locked", which the busy
        // timeout does not cover for a journal-mode change). An exclusive lock on a file beside
        // the database serializes the first connection and the migrations; the second opener
        // finds the file in WAL mode and the migrations applied.
        let lock = migration_lock(path).await?;
        let opened = async {
            let pool = pool_options(options.max_connections).connect_with(connect).await?;
            migrator(&pool).await?.run(&pool).await?;
            Ok::<_, StoreError>(pool)
        }
        .await;
        drop(lock);
        Ok(Sqlite { pool: opened? })
    }
}

/// The pool's options: the backends' own, and a connection that still counts a transaction
/// when it comes back is closed rather than reused. SQLite rolls a transaction back by itself
/// when a write meets a full disk (SQLITE_FULL); the ROLLBACK sqlx then queues fails ("no
/// transaction is active"), and sqlx's connection keeps counting a transaction it does not have:
/// every later `BEGIN IMMEDIATE` on it is refused, so the store would never write again after the
/// disk was freed. (The ping first lets the queued rollback run.)
fn pool_options(max_connections: u32) -> sqlx::pool::PoolOptions<sqlx::Sqlite> {
    super::backend::pool_options(max_connections).after_release(|conn, _| {
        Box::pin(async move {
            sqlx::Connection::ping(conn).await?;
            Ok(!sqlx::Connection::is_in_transaction(conn))
        })
    })
}

/// The migrations, accepting the checksums a store recorded for texts since reworded
/// ([`super::migrations`]).
async fn migrator(pool: &sqlx::SqlitePool) -> Result<sqlx::migrate::Migrator, StoreError> {
    let recorded: bool =
        sqlx::query_scalar("SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'")
            .fetch_one(pool)
            .await?;
    let checksums: std::collections::HashMap<i64, Vec<u8>> = if recorded {
        sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations").fetch_all(pool).await?.into_iter().collect()
    } else {
        std::collections::HashMap::new()
    };
    Ok(super::migrations::accepting_superseded("sqlite", sqlx::migrate!("./migrations/sqlite"), &checksums))
}

/// An exclusive lock on `{database}.migrate.lock`, held until the file is dropped (the OS drops it
/// with the process, should that die first).
async fn migration_lock(database: &Path) -> Result<std::fs::File, StoreError> {
    let mut name = database.as_os_str().to_owned();
    name.push(".migrate.lock");
    let path = std::path::PathBuf::from(name);
    let io = |source| StoreError::Io { action: "take the migration lock", path: path.clone(), source };
    let locking = path.clone();
    let locked = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&locking)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| io(std::io::Error::other(e)))?;
    locked.map_err(io)
}

impl Backend for Sqlite {
    type Tx = SqliteTx;
    const NAME: &'static str = "sqlite";

    async fn write(&self) -> Result<SqliteTx, StoreError> {
        Ok(SqliteTx(Conn::Transaction(self.pool.begin_with("BEGIN IMMEDIATE").await?)))
    }

    async fn autocommit(&self) -> Result<SqliteTx, StoreError> {
        Ok(SqliteTx(Conn::Autocommit(self.pool.acquire().await?)))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// The stored form of a time: integer microseconds since the epoch.
fn micros(time: Timestamp) -> i64 {
    time.timestamp_micros()
}

fn from_micros(col: &str, value: i64) -> Result<Timestamp, StoreError> {
    DateTime::from_timestamp_micros(value).ok_or_else(|| StoreError::Corrupt {
        what: format!("column {col} holds an impossible time {value}"),
        source: None,
    })
}

/// The stored form of a day: `YYYY-MM-DD`, which sorts as dates do.
fn day_text(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// `statement` as an sqlx query: times as microseconds, days as text, lists as JSON arrays (for
/// `json_each`: SQLite has no array parameters).
fn query(statement: Statement<'_>) -> Result<Query<'static, sqlx::Sqlite, SqliteArguments>, StoreError> {
    let (sql, args) = statement.into_parts()?;
    let mut query = sqlx::query(sql);
    for arg in args {
        query = match arg {
            Arg::Text(v) => query.bind(v),
            Arg::Int(v) => query.bind(v),
            Arg::Bool(v) => query.bind(v),
            Arg::Bytes(v) => query.bind(v),
            Arg::Time(v) => query.bind(v.map(micros)),
            Arg::Day(v) => query.bind(day_text(v)),
            Arg::Json(v) => query.bind(v.map(Json)),
            Arg::Texts(v) => query.bind(Json(v)),
            Arg::Ints(v) => query.bind(Json(v)),
        };
    }
    Ok(query)
}

impl Row for SqliteRow {
    same_in_both_dialects!();

    fn time(&self, col: &str) -> Result<Timestamp, StoreError> {
        from_micros(col, self.try_get(col)?)
    }
    fn opt_time(&self, col: &str) -> Result<Option<Timestamp>, StoreError> {
        self.try_get::<Option<i64>, _>(col)?.map(|v| from_micros(col, v)).transpose()
    }
    fn day(&self, col: &str) -> Result<NaiveDate, StoreError> {
        let text: String = self.try_get(col)?;
        NaiveDate::parse_from_str(&text, "%Y-%m-%d").map_err(|e| StoreError::Corrupt {
            what: format!("column {col} holds an impossible day {text:?}"),
            source: Some(Box::new(e)),
        })
    }
}

/// The states filter: `None` for "any state", else a list for `json_each`.
fn states(values: &[RunState]) -> Option<Arg<'static>> {
    (!values.is_empty()).then(|| Arg::Texts(values.iter().map(|s| s.as_str()).collect()))
}

/// Statements on an SQLite connection: a transaction, or one autocommitted statement.
pub(super) struct SqliteTx(Conn<sqlx::Sqlite>);

impl Statements for SqliteTx {
    type Row = SqliteRow;

    fn placeholder(sql: &mut String, _n: usize) {
        sql.push('?');
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.0.commit().await
    }

    async fn execute(&mut self, statement: Statement<'_>) -> Result<u64, StoreError> {
        Ok(query(statement)?.execute(&mut *self.0).await?.rows_affected())
    }

    async fn fetch_all(&mut self, statement: Statement<'_>) -> Result<Vec<SqliteRow>, StoreError> {
        Ok(query(statement)?.fetch_all(&mut *self.0).await?)
    }

    async fn fetch_optional(&mut self, statement: Statement<'_>) -> Result<Option<SqliteRow>, StoreError> {
        Ok(query(statement)?.fetch_optional(&mut *self.0).await?)
    }

    async fn fetch_one(&mut self, statement: Statement<'_>) -> Result<SqliteRow, StoreError> {
        Ok(query(statement)?.fetch_one(&mut *self.0).await?)
    }
}

impl Tx for SqliteTx {
    async fn run(&mut self, id: &WorkflowId, _lock: bool) -> Result<Option<Run>, StoreError> {
        // No row locks in SQLite: the write transaction already excludes every other writer.
        let row = self.fetch_optional(Statement::new(SELECT_RUN).bind(id.as_str())).await?;
        row.as_ref().map(rows::decode_run).transpose()
    }

    async fn lock_runs(&mut self, ids: &[WorkflowId]) -> Result<Vec<Run>, StoreError> {
        // No row locks in SQLite: the write transaction already excludes every other writer.
        const SQL: &str =
            concat!("SELECT ", run_columns!(), " FROM runs WHERE workflow_id IN (SELECT value FROM json_each($1))");
        let ids = Arg::Texts(ids.iter().map(WorkflowId::as_str).collect());
        decode_all(self.fetch_all(Statement::new(SQL).bind(ids)).await?, rows::decode_run)
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
             AND ($2 IS NULL OR state IN (SELECT value FROM json_each($2))) \
             AND ($3 IS NULL OR role_id = $3) \
             AND ($4 IS NULL OR batch_id = $4) \
             AND ($5 IS NULL OR create_time >= $5) \
             AND ($6 IS NULL OR create_time < $6) \
             AND ($7 IS NULL OR needs_review = $7) \
             AND ($8 IS NULL OR (create_time, workflow_id) < ($8, $9)) \
             ORDER BY create_time DESC, workflow_id DESC LIMIT $10"
        );
        let sql = Statement::new(SQL)
            .bind(filter.company.as_str())
            .bind(states(&filter.states).unwrap_or(Arg::Text(None)))
            .bind(filter.role.as_ref().map(RoleId::as_str))
            .bind(filter.batch.as_ref().map(BatchId::as_str))
            .bind(filter.created_after)
            .bind(filter.created_before)
            .bind(filter.needs_review)
            .bind(cursor.map(|c| c.create_time))
            .bind(cursor.map(|c| c.workflow_id.as_str()))
            .bind(i64::from(limit));
        decode_all(self.fetch_all(sql).await?, rows::decode_run)
    }

    async fn count_runs(&mut self, company: Option<&CompanyId>, states_: &[RunState]) -> Result<u64, StoreError> {
        const SQL: &str = "SELECT COUNT(*) AS n FROM runs WHERE ($1 IS NULL OR company_id = $1) \
             AND ($2 IS NULL OR state IN (SELECT value FROM json_each($2)))";
        let sql =
            Statement::new(SQL).bind(company.map(CompanyId::as_str)).bind(states(states_).unwrap_or(Arg::Text(None)));
        number("count", self.fetch_one(sql).await?.int("n")?)
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
            " FROM runs WHERE ($1 IS NULL OR state IN (SELECT value FROM json_each($1))) \
             AND ($2 IS NULL OR workflow_id > $2) ORDER BY workflow_id LIMIT $3"
        );
        let sql = Statement::new(SQL)
            .bind(states(states_).unwrap_or(Arg::Text(None)))
            .bind(after.map(WorkflowId::as_str))
            .bind(i64::from(limit));
        decode_all(self.fetch_all(sql).await?, rows::decode_run)
    }

    async fn step_stats(&mut self, per_step: u32) -> Result<Vec<StepStats>, StoreError> {
        const SQL: &str = "SELECT step, COUNT(*) AS n, \
               CAST(AVG(finished_at - started_at) AS INTEGER) AS micros, \
               CAST(AVG(tokens_in + tokens_out) AS INTEGER) AS tokens \
             FROM (SELECT step, started_at, finished_at, tokens_in, tokens_out, \
                     ROW_NUMBER() OVER (PARTITION BY step ORDER BY finished_at DESC) AS recent \
                   FROM run_steps WHERE status = 'completed' AND started_at IS NOT NULL \
                     AND finished_at IS NOT NULL) \
             WHERE recent <= $1 GROUP BY step ORDER BY step";
        decode_all(self.fetch_all(Statement::new(SQL).bind(i64::from(per_step))).await?, rows::decode_step_stats)
    }

    async fn claim(&mut self, claim: &Claim, state: RunState, until: Timestamp) -> Result<Vec<Run>, StoreError> {
        // One statement, so one write transaction: the sub-select and the update see the same rows.
        // The state is written into the statement so each matches its partial index.
        macro_rules! claim_in {
            ($state:literal) => {
                concat!(
                    "UPDATE runs SET claimed_by = $4, claim_expires_at = $5 WHERE workflow_id IN ( \
                       SELECT workflow_id FROM runs \
                       WHERE state = '",
                    $state,
                    "' AND (claim_expires_at IS NULL OR claim_expires_at <= $1) \
                         AND ($2 IS NULL OR company_id = $2) \
                       ORDER BY priority DESC, create_time, workflow_id \
                       LIMIT $3) \
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
        let sql = Statement::new(sql)
            .bind(claim.now)
            .bind(claim.company.as_ref().map(CompanyId::as_str))
            .bind(i64::from(claim.limit))
            .bind(claim.claimer.as_str())
            .bind(until);
        decode_all(self.fetch_all(sql).await?, rows::decode_run)
    }

    async fn claim_notifications(
        &mut self,
        claim: &NotificationClaim,
        until: Timestamp,
    ) -> Result<Vec<Notification>, StoreError> {
        // One writer at a time: the sub-select and the update see the same rows.
        const SQL: &str = concat!(
            "UPDATE notifications SET claimed_by = $3, claim_expires_at = $4 WHERE id IN ( \
               SELECT id FROM notifications \
               WHERE delivered_time IS NULL AND gave_up = 0 AND next_attempt_time <= $1 \
                 AND (claim_expires_at IS NULL OR claim_expires_at <= $1) \
               ORDER BY next_attempt_time, id LIMIT $2) \
             RETURNING ",
            notification_columns!()
        );
        let sql =
            Statement::new(SQL).bind(claim.now).bind(i64::from(claim.limit)).bind(claim.claimer.as_str()).bind(until);
        let mut claimed = decode_all(self.fetch_all(sql).await?, rows::decode_notification)?;
        claimed.sort_by_key(|n| n.id);
        Ok(claimed)
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
            " FROM json_each($1) AS m \
             JOIN runs ON runs.workflow_id = json_extract(m.value, '$[0]') \
              AND runs.company_id = $3 AND ($4 IS NULL OR runs.batch_id = $4) \
             JOIN run_events \
               ON run_events.workflow_id = runs.workflow_id \
              AND run_events.sequence > json_extract(m.value, '$[1]') \
             ORDER BY run_events.workflow_id, run_events.sequence LIMIT $2"
        );
        let marks: Vec<(&str, i64)> = marks.iter().map(|(id, after)| (id.as_str(), to_i64(*after))).collect();
        let sql = Statement::new(SQL)
            .bind_json(Some(&marks))
            .bind(i64::from(limit))
            .bind(scope.company.as_str())
            .bind(scope.batch.as_ref().map(BatchId::as_str));
        decode_all(self.fetch_all(sql).await?, rows::decode_event)
    }

    async fn list_audit(&mut self, filter: &AuditFilter, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_log WHERE ($1 IS NULL OR company_id = $1) \
             AND ($2 IS NULL OR actor = $2) \
             AND ($3 IS NULL OR action = $3) \
             AND (NOT $4 OR outcome <> 'OK') \
             AND ($5 IS NULL OR seq < $5) \
             ORDER BY seq DESC LIMIT $6"
        );
        let sql = Statement::new(SQL)
            .bind(filter.company.as_ref().map(CompanyId::as_str))
            .bind(filter.actor.as_deref())
            .bind(filter.action.as_deref())
            .bind(filter.denied_only)
            .bind(filter.before_seq.map(to_i64))
            .bind(i64::from(limit));
        decode_all(self.fetch_all(sql).await?, rows::decode_audit)
    }

    async fn document_hashes(&mut self, uris: &[String]) -> Result<Vec<DocumentHash>, StoreError> {
        const SQL: &str = "SELECT uri, content_hash, seen_time FROM document_hashes \
             WHERE uri IN (SELECT value FROM json_each($1)) ORDER BY uri";
        let uris = Arg::Texts(uris.iter().map(String::as_str).collect());
        decode_all(self.fetch_all(Statement::new(SQL).bind(uris)).await?, rows::decode_document)
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection as _;

    use super::{Arg, SqliteTx};
    use crate::statement::Builder;

    /// `$N` and `?N` are named parameters to SQLite, searched for among the names before them
    /// when prepared and bound: a batch's `VALUES` of thousands took seconds. Built statements
    /// use bare `?`s, bound by position.
    #[test]
    fn built_statements_number_their_placeholders_as_sqlite_indexes_them() -> anyhow::Result<()> {
        let mut sql = Builder::new::<SqliteTx>("INSERT INTO t (a, b) ");
        sql.values([[Arg::from(1_i64), Arg::from(2_i64)], [Arg::from(3_i64), Arg::from(4_i64)]]);
        let (text, args) = sql.build().into_parts()?;
        assert_eq!(text.as_str(), "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)");
        assert_eq!(args.len(), 4);
        Ok(())
    }

    /// A write that meets a full disk (here: the page limit) is refused, and once there is room
    /// again the next transaction on the same (only) connection writes: the connection did not
    /// keep counting the transaction SQLite had already rolled back.
    #[tokio::test]
    async fn writes_resume_on_the_same_pool_once_a_full_disk_has_room() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let connect = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("full.db"))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let pool = super::pool_options(1).connect_with(connect).await?;
        sqlx::query("CREATE TABLE t (b BLOB)").execute(&pool).await?;
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&pool).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {pages}"))).execute(&pool).await?;
        let write = || async {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query("INSERT INTO t VALUES (zeroblob(1000000))").execute(&mut *tx).await?;
            tx.commit().await
        };
        let full = write().await.map_err(crate::StoreError::from);
        assert!(full.as_ref().is_err_and(crate::StoreError::is_disk_full), "{full:?}");
        sqlx::query("PRAGMA max_page_count = 1000000").execute(&pool).await?;
        write().await?;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t").fetch_one(&pool).await?;
        assert_eq!(rows, 1);
        Ok(())
    }

    /// Every statement with `LIMIT $n` (and, with STAT4, any parameter compared to an indexed
    /// column) is prepared again on each execution unless SQLite keeps one plan per statement:
    /// `.cargo/config.toml` builds the bundled SQLite with that guarantee.
    #[tokio::test]
    async fn the_bundled_sqlite_keeps_one_plan_per_statement() -> anyhow::Result<()> {
        let mut connection = sqlx::SqliteConnection::connect("sqlite::memory:").await?;
        let stable: i64 =
            sqlx::query_scalar("SELECT sqlite_compileoption_used('ENABLE_QPSG')").fetch_one(&mut connection).await?;
        assert_eq!(stable, 1, "SQLite was built without SQLITE_ENABLE_QPSG (see .cargo/config.toml)");
        Ok(())
    }
}
