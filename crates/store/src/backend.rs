//! What a database backend offers the store written once over it ([`super::sql::SqlStore`]):
//! connections ([`Backend`]) and, on each, the statements of the run store ([`Tx`]) — those whose
//! SQL both dialects accept written once ([`Portable`]), the rest by each backend.

use std::future::Future;

use super::{
    Claim, ClaimTerms, DocumentHash, EventScope, Notification, NotificationClaim, Run, RunEvent, RunFilter, StepStats,
    StoreError, Timestamp, rows::Cursor, shared::Portable,
};
use etter_core::audit::{AuditEntry, AuditFilter};
use etter_core::ids::{CompanyId, WorkflowId};
use etter_core::lifecycle::RunState;

/// How long a pooled connection may have been idle and still be handed out without a ping.
///
/// sqlx pings every idle connection before handing it out (`test_before_acquire`): one more round
/// trip before every read and every transaction, a third of a status read's time on PostgreSQL.
/// A connection back in the pool less than this long ago was working then; one idle for longer
/// (the database restarted, a proxy dropped it) is pinged, and replaced if it is dead. HikariCP
/// makes the same trade with its 500 ms `aliveBypassWindowMs`.
const ALIVE_BYPASS: std::time::Duration = std::time::Duration::from_millis(500);

/// Pool options both backends start from: `max_connections`, and the ping only past
/// [`ALIVE_BYPASS`].
pub(super) fn pool_options<DB: sqlx::Database>(max_connections: u32) -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new().max_connections(max_connections).test_before_acquire(false).before_acquire(
        |conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= ALIVE_BYPASS {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        },
    )
}

/// A database of one kind: hands out transactions.
pub(super) trait Backend: Send + Sync + 'static {
    /// Its transaction.
    type Tx: Tx;
    /// `postgres` or `sqlite`.
    const NAME: &'static str;
    /// A transaction for writes (SQLite: `BEGIN IMMEDIATE`, the write lock up front, so two writers
    /// never deadlock upgrading read locks).
    fn write(&self) -> impl Future<Output = Result<Self::Tx, StoreError>> + Send;
    /// A pooled connection in autocommit, for work of one statement (every read; a claim): a
    /// single statement is atomic and reads one consistent snapshot by itself, and `BEGIN` …
    /// `COMMIT` around it would cost two more round trips to the database (on PostgreSQL, two
    /// thirds of a status read).
    fn autocommit(&self) -> impl Future<Output = Result<Self::Tx, StoreError>> + Send;
    /// Closes the pool.
    fn close(&self) -> impl Future<Output = ()> + Send;
    /// Whether [`Backend::create_first_run`] can do anything: the caller then decides a single
    /// push as the first run of a new role before it knows whether the role exists.
    const CREATES_FIRST_RUN_IN_ONE_STATEMENT: bool = false;
    /// Creates `run`, the first run of a role that has none, with its first event, the role
    /// numbered 1 and, if `claim` (its terms and the claim's expiry) allows it, `run` claimed,
    /// in one autocommitted statement: one round trip instead of a transaction's seven. Answers
    /// whether the run was claimed, or `None` when the role exists (nothing is written: the
    /// caller locks the role and decides in a transaction). A backend that cannot answers `None`.
    fn create_first_run(
        &self,
        run: &Run,
        first_event: &RunEvent,
        claim: Option<(&ClaimTerms, Timestamp)>,
    ) -> impl Future<Output = Result<Option<bool>, StoreError>> + Send {
        let _ = (run, first_event, claim);
        async { Ok(None) }
    }
}

/// What a backend's `Tx` runs its statements on: a transaction ([`Backend::write`]) or a pooled
/// connection in autocommit ([`Backend::autocommit`]). Both are the backend's connection underneath.
pub(super) enum Conn<DB: sqlx::Database> {
    /// Statements of one transaction; dropped without [`Conn::commit`], it rolls back.
    Transaction(sqlx::Transaction<'static, DB>),
    /// Each statement its own transaction (work of one statement).
    Autocommit(sqlx::pool::PoolConnection<DB>),
}

impl<DB: sqlx::Database> Conn<DB> {
    /// Commits a transaction; a connection in autocommit has nothing to commit and goes back to
    /// its pool.
    pub(super) async fn commit(self) -> Result<(), StoreError> {
        match self {
            Conn::Transaction(tx) => Ok(tx.commit().await?),
            Conn::Autocommit(_) => Ok(()),
        }
    }
}

impl<DB: sqlx::Database> std::ops::Deref for Conn<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        match self {
            Conn::Transaction(tx) => tx,
            Conn::Autocommit(conn) => conn,
        }
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for Conn<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        match self {
            Conn::Transaction(tx) => tx,
            Conn::Autocommit(conn) => conn,
        }
    }
}

/// The statements of the run store on one connection of a backend: the [`Portable`] ones, and
/// those whose SQL differs between the dialects (arrays, row locks, `SKIP LOCKED`, date
/// arithmetic). Dropping a `Tx` of a transaction without `commit` rolls it back.
pub(super) trait Tx: Portable {
    /// A run; with `lock`, its row stays locked until the transaction ends.
    fn run(&mut self, id: &WorkflowId, lock: bool) -> impl Future<Output = Result<Option<Run>, StoreError>> + Send;
    /// Runs (in any order), their rows locked until the transaction ends.
    fn lock_runs(&mut self, ids: &[WorkflowId]) -> impl Future<Output = Result<Vec<Run>, StoreError>> + Send;
    /// A page of a company's runs, newest first, after `cursor`.
    fn list_runs(
        &mut self,
        filter: &RunFilter,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Run>, StoreError>> + Send;
    /// How many runs (of `company`, when given) are in one of `states` (any state when empty).
    fn count_runs(
        &mut self,
        company: Option<&CompanyId>,
        states: &[RunState],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Runs in one of `states` (any when empty), by id, after `after`.
    fn runs_in_states(
        &mut self,
        states: &[RunState],
        after: Option<&WorkflowId>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Run>, StoreError>> + Send;
    /// Per step: the mean duration and tokens of its latest `per_step` completed attempts.
    fn step_stats(&mut self, per_step: u32) -> impl Future<Output = Result<Vec<StepStats>, StoreError>> + Send;
    /// Marks up to `claim.limit` claimable runs in `state` (QUEUED or VALIDATING) as claimed, in
    /// one statement; answers them (in any order).
    fn claim(
        &mut self,
        claim: &Claim,
        state: RunState,
        until: Timestamp,
    ) -> impl Future<Output = Result<Vec<Run>, StoreError>> + Send;
    /// The events of the runs in `marks` after each one's mark, within `scope`, by run and sequence.
    fn events_after_marks(
        &mut self,
        scope: &EventScope,
        marks: &[(WorkflowId, u64)],
        limit: u32,
    ) -> impl Future<Output = Result<Vec<RunEvent>, StoreError>> + Send;
    /// Claims due notifications; answers them.
    fn claim_notifications(
        &mut self,
        claim: &NotificationClaim,
        until: Timestamp,
    ) -> impl Future<Output = Result<Vec<Notification>, StoreError>> + Send;
    /// The stored hashes of these documents, by URI.
    fn document_hashes(
        &mut self,
        uris: &[String],
    ) -> impl Future<Output = Result<Vec<DocumentHash>, StoreError>> + Send;
    /// A page of the audit log, newest first.
    fn list_audit(
        &mut self,
        filter: &AuditFilter,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, StoreError>> + Send;
}
