//! The run store (docs/ARCHITECTURE.md, "Who writes what"): roles, runs, steps, events, batches, idempotency keys, document
//! content hashes and token usage — the durable source of truth the server and the worker share.
//!
//! One trait, [`RunStore`], two implementations behind it: PostgreSQL for production (several server
//! replicas may share it) and an SQLite file for the embedded default (one server process). Both are
//! built from the same generic code (`sql`) over a small set of per-backend SQL primitives, and the
//! conformance suite in `tests/conformance/` runs every case against both.
//!
//! **Concurrency.** Every write to a run happens under that run's lock — PostgreSQL
//! `SELECT … FOR UPDATE` on the run row, SQLite a `BEGIN IMMEDIATE` transaction (one writer at a
//! time) — so the per-run event `sequence` is gap-free and commits in order, and a check-then-write
//! (deduplication, idempotent step bookkeeping) cannot race. New runs of a role are numbered under
//! the role row's lock. Dispatch claims use `FOR UPDATE SKIP LOCKED` on PostgreSQL.
//!
//! **Lifecycle.** The store never decides which state changes are allowed: [`RunStore::transition`]
//! asks [`etter_core::lifecycle::transition`], and new runs ask [`etter_core::lifecycle::may_start_new_run`].

mod audit;
mod backend;
mod config;
pub mod fanout;
mod migrations;
mod postgres;
mod rows;
mod shared;
mod sql;
mod sqlite;
mod statement;
mod values;

pub use audit::{VerifyError, verify_audit};
pub use config::{RedisConfig, StoreConfig, StoreLocation};
use std::{collections::BTreeMap, fmt, path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use etter_core::audit::{AuditEntry, AuditEvent, AuditFilter, AuditHead, ChainKey};
use etter_core::digest::StepDigest;
use etter_core::ids::{BatchId, CompanyId, DraupRoleId, RequestId, RoleId, RoleName, TraceId, TraceParent, WorkflowId};
use etter_core::lifecycle::{IllegalTransition, RunState, RunStillActive};
use etter_core::outputs::ContentHash;
use etter_core::steps::{Action, DocumentKind, Plan, PriorOutcome, PriorStep, StepName};
use etter_core::workflow::RoleOnboardingInput;

/// A point in time as the store keeps it: UTC with microsecond precision (what PostgreSQL stores;
/// values are truncated to microseconds before they are written, so what is read back is equal).
pub type Timestamp = DateTime<Utc>;

/// How long a client's `request_id` is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Runs written per transaction by [`RunStore::create_batch`]: large enough that a 2,500-role batch
/// takes five transactions, small enough that one transaction does not hold the role locks of a
/// whole batch while other pushes wait.
pub const BATCH_CHUNK_SIZE: usize = 500;

/// History page size when the caller asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// Largest history page.
pub const MAX_PAGE_SIZE: u32 = 500;

/// The current time, truncated to what the store keeps.
pub fn now() -> Timestamp {
    truncate(Utc::now())
}

/// `time` truncated to microseconds (the store's precision).
pub fn truncate(time: Timestamp) -> Timestamp {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

/// Why a store operation failed. Messages say what to do where the caller can do something.
///
/// Where an underlying error (sqlx's, an I/O error, a parser's) is the cause, it is the error's
/// [`source`](std::error::Error::source) and not part of its message: print the chain
/// ([`etter_core::error::chain`], `anyhow`'s `{:#}`) to see it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The named thing does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// What was looked for (`run`, `role`, `batch`).
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The lifecycle does not allow this state change; nothing was written.
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    /// The role's latest run is still queued or processing, so it cannot get a new run; nothing was
    /// written. Wait for it to end or cancel it.
    #[error(transparent)]
    RunStillActive(#[from] RunStillActive),
    /// The client reused a `request_id` for a different request.
    #[error(
        "request_id {request_id:?} was already used in company {company} for a different request within the last \
         24 hours; send a new request_id for a new request"
    )]
    RequestIdReused {
        /// The company the request id belongs to.
        company: CompanyId,
        /// The reused request id.
        request_id: RequestId,
    },
    /// Two different roles map to the same role id (their names slug to the same string). The
    /// message names the existing role only when it is of the same company: nothing of another
    /// company's is ever told.
    #[error("{}", collision_message(role_id, existing_company, existing_name, new_company, new_name))]
    RoleIdCollision {
        /// The shared role id.
        role_id: RoleId,
        /// Company of the role already stored.
        existing_company: CompanyId,
        /// Name of the role already stored.
        existing_name: RoleName,
        /// Company of the role being pushed.
        new_company: CompanyId,
        /// Name of the role being pushed.
        new_name: RoleName,
    },
    /// The request conflicts with the stored state (for example a Retry of a run that is no longer
    /// the role's latest, or a batch id that exists). The message says which.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is malformed (a caller bug, not a user error). The message says how.
    #[error("invalid store request: {0}")]
    InvalidArgument(String),
    /// A `page_token` that this store did not issue.
    #[error("page_token is not valid; start again from the first page with an empty page_token")]
    InvalidPageToken,
    /// Stored data could not be read back (a row that does not parse). Not retryable.
    #[error("stored data is not readable: {what}")]
    Corrupt {
        /// Which value, and what is wrong with it when no parser said it.
        what: String,
        /// The parser's complaint, when one did.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The SQLite file's directory or its migration lock could not be created.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done (`create the store directory`).
        action: &'static str,
        /// The directory or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Applying the schema migrations failed.
    #[error("cannot migrate the store schema")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database failed or could not be reached.
    #[error("store database error")]
    Database(#[from] sqlx::Error),
    /// PostgreSQL could not be connected to at start; when TLS is why, `advice` says what to
    /// change in `store.url`.
    #[error("cannot connect to PostgreSQL{advice}")]
    Connect {
        /// `: <what to change>`, or empty.
        advice: String,
        /// What sqlx said.
        source: sqlx::Error,
    },
}

fn collision_message(
    role_id: &RoleId,
    existing_company: &CompanyId,
    existing_name: &RoleName,
    new_company: &CompanyId,
    new_name: &RoleName,
) -> String {
    if existing_company == new_company {
        format!(
            "role {new_company}/{new_name:?} has the same role id {role_id} as the existing role \
             {existing_company}/{existing_name:?}; rename one of them so their letters and digits differ"
        )
    } else {
        format!(
            "role {new_company}/{new_name:?} cannot be given the role id {role_id}, which is taken; \
             rename it so its letters and digits differ"
        )
    }
}

impl StoreError {
    fn not_found(what: &'static str, id: impl fmt::Display) -> Self {
        StoreError::NotFound { what, id: id.to_string() }
    }

    /// Whether the database refused a write because its disk is full: SQLite's SQLITE_FULL (13),
    /// PostgreSQL's disk_full (53100). Nothing was stored; writes succeed again once there is room.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Database(e) => {
                e.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == "13" || code == "53100")
            }
            _ => false,
        }
    }

    /// Whether the error is about one item of a request (so a batch records it for that item and
    /// goes on) rather than about the store.
    pub fn is_item_error(&self) -> bool {
        matches!(
            self,
            StoreError::RunStillActive(_)
                | StoreError::RoleIdCollision { .. }
                | StoreError::Conflict(_)
                | StoreError::IllegalTransition(_)
        )
    }
}

/// Dispatch priority of a run within its company (the contract's `Priority`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Background work.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Dispatched before the company's normal and low runs.
    High,
}

impl Priority {
    /// The stored rank: higher is dispatched first.
    pub fn rank(self) -> i64 {
        match self {
            Priority::Low => 1,
            Priority::Normal => 2,
            Priority::High => 3,
        }
    }

    /// Parses [`Priority::rank`].
    pub fn from_rank(rank: i64) -> Option<Self> {
        match rank {
            1 => Some(Priority::Low),
            2 => Some(Priority::Normal),
            3 => Some(Priority::High),
            _ => None,
        }
    }
}

/// The state of one attempt of one step (the contract's `StepState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Planned, not started.
    Pending,
    /// In progress.
    Running,
    /// Failed with a retryable error; another attempt follows.
    Retrying,
    /// Succeeded.
    Completed,
    /// Failed for good.
    Failed,
    /// Not executed in this run.
    Skipped,
    /// Not executed: an earlier run's output was reused.
    Reused,
    /// Stopped by a cancellation.
    Cancelled,
}

impl StepStatus {
    /// Every status, in declaration order.
    pub const ALL: [StepStatus; 8] = [
        StepStatus::Pending,
        StepStatus::Running,
        StepStatus::Retrying,
        StepStatus::Completed,
        StepStatus::Failed,
        StepStatus::Skipped,
        StepStatus::Reused,
        StepStatus::Cancelled,
    ];

    /// The stored name (`pending`, `running`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Retrying => "retrying",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Reused => "reused",
            StepStatus::Cancelled => "cancelled",
        }
    }

    /// Parses [`StepStatus::as_str`].
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Whether the attempt is over (it counts toward `progress.current`).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            StepStatus::Completed
                | StepStatus::Failed
                | StepStatus::Skipped
                | StepStatus::Reused
                | StepStatus::Cancelled
        )
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A source document of a run. The type is kept as its stable string (`job_description`,
/// `process_map`, `supporting`) so the store reads old runs even if the set of types grows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DocumentRef {
    /// The document type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it lives (`s3://…`, `file://…`).
    pub uri: String,
}

impl DocumentRef {
    /// The step graph's kind of this document: `job_description` and `process_map` are theirs;
    /// any other type supports the role.
    pub fn step_kind(&self) -> DocumentKind {
        match self.kind.as_str() {
            "job_description" => DocumentKind::JobDescription,
            "process_map" => DocumentKind::ProcessMap,
            _ => DocumentKind::Supporting,
        }
    }
}

/// An error of a run or a step, in words a customer-success manager can act on (the contract's
/// `PipelineError`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineError {
    /// Stable UPPER_SNAKE_CASE code.
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// Whether retrying the same inputs can succeed.
    pub recoverable: bool,
    /// The step the error belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// What to do next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

impl PipelineError {
    /// The error of a batch item stored as VALIDATION_ERROR.
    pub fn validation(violations: &[FieldViolation]) -> Self {
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        PipelineError {
            code: "VALIDATION_ERROR".to_owned(),
            message: format!("invalid fields: {}", fields.join(", ")),
            recoverable: false,
            step: None,
            action: Some("Fix the listed fields and push the role again".to_owned()),
        }
    }
}

/// One invalid field of a rejected batch item (the contract's `BadRequest.FieldViolation`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldViolation {
    /// Path of the field relative to the item (`documents[0].uri`).
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// LLM tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCount {
    /// Prompt tokens.
    pub input: i64,
    /// Completion tokens.
    pub output: i64,
}

impl TokenCount {
    /// `input + output`.
    pub fn total(self) -> i64 {
        self.input + self.output
    }
}

/// Whether a new run is queued for work or kept as a rejected batch item. A rejected item is a run
/// like any other (numbered, superseding the role's previous run), so it too needs the role's latest
/// run to have ended; otherwise it is refused with [`StoreError::RunStillActive`] and not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Store the run as QUEUED.
    Queue,
    /// Store the run as VALIDATING: its documents are checked before it is queued
    /// ([`RunStore::claim_validating`]); it answers and counts as an accepted run meanwhile.
    Validate,
    /// Store the run as VALIDATION_ERROR with these field violations (never empty).
    Reject(Vec<FieldViolation>),
}

/// Workers of a task queue as their presence records tell ([`RunStore::workers_seen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkersSeen {
    /// Seen recently.
    pub recent: u64,
    /// Known at all (seen within the last day, or stopped within it).
    pub known: u64,
}

/// A run to create ([`RunStore::create_run`], [`RunStore::create_batch`]).
#[derive(Debug, Clone)]
pub struct NewRun {
    /// The role's company.
    pub company: CompanyId,
    /// The role's name.
    pub role_name: RoleName,
    /// The Draup role; absent only on a rejected item that lacked a valid one.
    pub draup_role_id: Option<DraupRoleId>,
    /// Hex hash of the run's input identity, computed by the caller.
    pub input_identity: String,
    /// The run's documents.
    pub documents: Vec<DocumentRef>,
    /// The options the run was pushed with, as the caller wants them shown back.
    pub options: serde_json::Value,
    /// Dispatch priority.
    pub priority: Priority,
    /// Estimated LLM tokens of the planned steps.
    pub token_estimate: i64,
    /// Create a new run even if the role's latest run has the same identity and is active or READY
    /// (`force_rerun`). A new run still needs the latest run to have ended.
    pub force: bool,
    /// For Retry: create the run only if this is still the role's latest run (else
    /// [`StoreError::Conflict`]), so two concurrent retries cannot both succeed.
    pub expected_latest: Option<WorkflowId>,
    /// Queue it, or keep it as a rejected batch item.
    pub admission: Admission,
    /// What the run will do with each step (kept with the run; the dispatcher hands it to the
    /// workflow). `None` for a rejected item.
    pub plan: Option<Plan>,
    /// Why the run exists, for its first event (`pushed by jane@example.com`, `retry of …`).
    pub reason: String,
    /// Announce the run's end to the company's webhook (`notify_on_complete`).
    pub notify: bool,
    /// The trace id of the request that created it.
    pub trace_id: Option<TraceId>,
    /// The `traceparent` of that request's span, when spans are exported.
    pub trace_parent: Option<TraceParent>,
    /// Cancel it if it is still queued at this time.
    pub deadline: Option<Timestamp>,
    /// The model its AI steps ask instead of the worker's own (a Retry's choice).
    pub model: Option<String>,
}

impl NewRun {
    /// A run of `role_name` to queue, with input identity `identity` and the `reason` of its
    /// first event; no Draup role, documents, options, plan or token estimate, normal priority.
    /// The least a run needs (tests and tools), the rest set with struct update syntax.
    pub fn queued(company: CompanyId, role_name: RoleName, identity: &str, reason: &str) -> Self {
        NewRun {
            company,
            role_name,
            draup_role_id: None,
            input_identity: identity.to_owned(),
            documents: Vec::new(),
            options: serde_json::json!({}),
            priority: Priority::Normal,
            token_estimate: 0,
            force: false,
            expected_latest: None,
            admission: Admission::Queue,
            plan: None,
            reason: reason.to_owned(),
            notify: false,
            trace_id: None,
            trace_parent: None,
            deadline: None,
            model: None,
        }
    }
}

/// The answer to creating a run: the run, and whether this call created it (`false`: the role's
/// latest run has the same inputs and is active or READY, so it is returned instead).
#[derive(Debug, Clone)]
pub struct Created {
    /// The new or existing run.
    pub run: Run,
    /// Whether the run was created by this call.
    pub created: bool,
    /// Whether it was also claimed for its start ([`RunStore::create_run_and_claim`]).
    pub claimed: bool,
}

/// A batch to create ([`RunStore::create_batch`]).
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// Its id (the caller draws it: [`BatchId::from_random`]).
    pub id: BatchId,
    /// The company of every item.
    pub company: CompanyId,
    /// The client's request id, if any (for audit; idempotency goes through the request keys).
    pub request_id: Option<RequestId>,
}

/// A stored batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Its id.
    pub id: BatchId,
    /// Its company.
    pub company: CompanyId,
    /// The client's request id, if any.
    pub request_id: Option<RequestId>,
    /// Items in the request (accepted, existing and rejected).
    pub item_count: u32,
    /// When it was accepted.
    pub create_time: Timestamp,
}

/// The answer to [`RunStore::create_batch`]: one result per item, in request order. An item fails
/// alone with an item error ([`StoreError::is_item_error`]: role id collision, role still active,
/// conflict); any other error fails the call.
#[derive(Debug)]
pub struct BatchCreated {
    /// The stored batch.
    pub batch: Batch,
    /// One result per item.
    pub items: Vec<Result<Created, StoreError>>,
}

/// A lifecycle state change ([`RunStore::transition`]).
#[derive(Debug, Clone)]
pub struct Transition {
    /// The state to go to.
    pub to: RunState,
    /// Why, in plain language (recorded in the event).
    pub reason: String,
    /// The run's error, when it failed or was cancelled; `None` keeps the stored one.
    pub error: Option<PipelineError>,
    /// For VALIDATION_ERROR: the field violations (never empty), stored with the run.
    pub violations: Vec<FieldViolation>,
}

impl Transition {
    /// A change to `to` for `reason`, without an error.
    pub fn to(to: RunState, reason: impl Into<String>) -> Self {
        Transition { to, reason: reason.into(), error: None, violations: Vec::new() }
    }

    /// A change to `to` for `reason` that sets the run's error.
    pub fn failing(to: RunState, reason: impl Into<String>, error: PipelineError) -> Self {
        Transition { to, reason: reason.into(), error: Some(error), violations: Vec::new() }
    }

    /// A VALIDATING run rejected with these field violations: VALIDATION_ERROR, with the error of
    /// a rejected batch item.
    pub fn rejected(violations: Vec<FieldViolation>, reason: impl Into<String>) -> Self {
        Transition {
            to: RunState::ValidationError,
            reason: reason.into(),
            error: Some(PipelineError::validation(&violations)),
            violations,
        }
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Its id, also its Temporal workflow id.
    pub workflow_id: WorkflowId,
    /// Its role.
    pub role_id: RoleId,
    /// The role's company.
    pub company_id: CompanyId,
    /// The role's name.
    pub role_name: RoleName,
    /// The Draup role.
    pub draup_role_id: Option<DraupRoleId>,
    /// 1 for the role's first run.
    pub run_number: u32,
    /// Hex hash of the run's input identity.
    pub input_identity: String,
    /// Lifecycle state.
    pub state: RunState,
    /// The newer run of the role that replaced this one.
    pub superseded_by: Option<WorkflowId>,
    /// The earlier run of the role this one replaced (whose kept outputs it may reuse).
    pub supersedes: Option<WorkflowId>,
    /// The batch it was pushed in.
    pub batch_id: Option<BatchId>,
    /// Dispatch priority.
    pub priority: Priority,
    /// The options it was pushed with.
    pub options: serde_json::Value,
    /// Its documents.
    pub documents: Vec<DocumentRef>,
    /// Why it failed, was cancelled or was rejected.
    pub error: Option<PipelineError>,
    /// Some AI output has low confidence; a human should review it.
    pub needs_review: bool,
    /// Why a VALIDATION_ERROR run was rejected.
    pub field_violations: Vec<FieldViolation>,
    /// Estimated LLM tokens.
    pub token_estimate: i64,
    /// LLM tokens used so far (sum over its step attempts).
    pub tokens_used: TokenCount,
    /// Sequence of its latest event.
    pub sequence: u64,
    /// When it was accepted.
    pub create_time: Timestamp,
    /// When it left QUEUED for PROCESSING.
    pub start_time: Option<Timestamp>,
    /// When it reached a final state.
    pub end_time: Option<Timestamp>,
    /// When anything in it last changed.
    pub update_time: Timestamp,
    /// What the run does with each step; `None` for runs stored before plans were kept and for
    /// rejected batch items.
    pub plan: Option<Plan>,
    /// Whether its end is announced to the company's webhook (`notify_on_complete`).
    pub notify: bool,
    /// The trace id of the request that created it (Push, PushBatch or Retry); its workflow and
    /// activities log under it.
    pub trace_id: Option<TraceId>,
    /// The `traceparent` of that request's span, when spans are exported: the dispatcher's span
    /// that starts the workflow is its child.
    pub trace_parent: Option<TraceParent>,
    /// When it is cancelled if it has not started by then (`RunOptions.deadline`).
    pub deadline: Option<Timestamp>,
    /// The model its AI steps ask instead of the worker's own (a Retry's choice).
    pub model: Option<String>,
}

impl Run {
    /// What the steps that read the role's identity hash ([`etter_core::steps::input_hash`]): its
    /// company, name and Draup mapping — not its documents, so a changed document does not re-run
    /// `role_setup`. The worker, the staleness scan and Retry's planning all use this one string.
    pub fn role_identity(&self) -> String {
        let draup = self.draup_role_id.as_ref().map(DraupRoleId::as_str).unwrap_or_default();
        format!("{}\n{}\n{draup}", self.company_id, self.role_name)
    }

    /// The workflow input that executes this run with `plan` (its kept plan): reused steps and the
    /// early cutoff take their outputs from the run it supersedes. The dispatcher starts every
    /// workflow with this.
    pub fn onboarding_input(&self, plan: Plan) -> RoleOnboardingInput {
        let reuses = plan.early_cutoff || plan.steps.iter().any(|(_, action)| *action == Action::Reuse);
        RoleOnboardingInput {
            workflow_id: self.workflow_id.clone(),
            role_id: self.role_id.clone(),
            company_id: self.company_id.clone(),
            reuse_from: if reuses { self.supersedes.clone() } else { None },
            early_cutoff: plan.early_cutoff,
            plan: plan.steps,
            trace_id: self.trace_id.clone(),
            run_key: format!(
                "{}/{}",
                self.create_time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                self.trace_id.as_ref().map_or("", |t| t.as_str())
            ),
        }
    }

    /// How long the run waited in the queue, once it started.
    pub fn queue_wait(&self) -> Option<Duration> {
        self.start_time.map(|start| (start - self.create_time).to_std().unwrap_or_default())
    }

    /// How long the run was processed, once it ended (runs that never started have no time).
    pub fn processing_time(&self) -> Option<Duration> {
        match (self.start_time, self.end_time) {
            (Some(start), Some(end)) => Some((end - start).to_std().unwrap_or_default()),
            _ => None,
        }
    }

    /// From the push to the end, for a run whose outputs the dashboard shows (READY or DEGRADED):
    /// the plan's "time to dashboard".
    pub fn time_to_dashboard(&self) -> Option<Duration> {
        match (self.state, self.end_time) {
            (RunState::Ready | RunState::Degraded, Some(end)) => {
                Some((end - self.create_time).to_std().unwrap_or_default())
            }
            _ => None,
        }
    }
}

/// A step transition to record ([`RunStore::record_step`]).
#[derive(Debug, Clone)]
pub struct StepTransition {
    /// The step's stable name (`role_setup`, …). Kept as a string so runs recorded by an older step
    /// graph stay readable.
    pub step: String,
    /// 1-based attempt.
    pub attempt: u32,
    /// The attempt's new status.
    pub status: StepStatus,
    /// Tokens used by this attempt so far (a running total, not an increment); `None` keeps them.
    pub tokens: Option<TokenCount>,
    /// Hash of the step's inputs; `None` keeps the stored one.
    pub input_hash: Option<String>,
    /// Hash of the step's outputs; `None` keeps the stored one.
    pub output_hash: Option<String>,
    /// The attempt's error; `None` keeps the stored one.
    pub error: Option<PipelineError>,
    /// The earlier run whose output was reused.
    pub reused_from: Option<WorkflowId>,
    /// The model that answered the step; `None` keeps the stored one.
    pub model: Option<String>,
    /// The LLM layer's prompt version for the step; `None` keeps the stored one.
    pub prompt_version: Option<String>,
    /// What the step produced; `None` keeps the stored one.
    pub digest: Option<StepDigest>,
}

impl StepTransition {
    /// A transition of `step`'s `attempt` to `status` with nothing else to record.
    pub fn new(step: impl Into<String>, attempt: u32, status: StepStatus) -> Self {
        StepTransition {
            step: step.into(),
            attempt,
            status,
            tokens: None,
            input_hash: None,
            output_hash: None,
            error: None,
            reused_from: None,
            model: None,
            prompt_version: None,
            digest: None,
        }
    }
}

/// The answer to [`RunStore::record_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRecorded {
    /// The sequence of the transition's event.
    pub sequence: u64,
    /// False when the same (run, step, attempt, status) was recorded before: nothing changed.
    pub recorded: bool,
}

/// One attempt of one step of a run, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StepAttempt {
    /// The step's name.
    pub step: String,
    /// 1-based attempt.
    pub attempt: u32,
    /// Its status.
    pub status: StepStatus,
    /// When it started running.
    pub started_at: Option<Timestamp>,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
    /// Tokens it used.
    pub tokens: TokenCount,
    /// Hash of its inputs.
    pub input_hash: Option<String>,
    /// Hash of its outputs.
    pub output_hash: Option<String>,
    /// Its last error.
    pub error: Option<PipelineError>,
    /// The earlier run whose output it reused.
    pub reused_from: Option<WorkflowId>,
    /// The model that answered it.
    pub model: Option<String>,
    /// The LLM layer's prompt version it used.
    pub prompt_version: Option<String>,
    /// What it produced, once completed.
    pub digest: Option<StepDigest>,
    /// When it last changed.
    pub update_time: Timestamp,
}

/// What an event records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// The run's lifecycle state changed (`previous` is `None` for the run's first event).
    Status {
        /// The state before.
        previous: Option<RunState>,
        /// The state after.
        status: RunState,
        /// Why.
        reason: String,
    },
    /// One of the run's steps changed.
    Step {
        /// The step.
        step: String,
        /// Its new status.
        status: StepStatus,
        /// The attempt.
        attempt: u32,
        /// The error, when retrying or failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<PipelineError>,
    },
}

/// One change of one run; a run's events have sequences 1, 2, 3, … in commit order.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEvent {
    /// The run.
    pub workflow_id: WorkflowId,
    /// Its per-run sequence.
    pub sequence: u64,
    /// When it was recorded.
    pub time: Timestamp,
    /// What changed.
    pub change: Change,
}

/// Which runs' latest sequences [`RunStore::sequence_heads`] reports (for batch and company
/// watches, which resume from per-run high-water marks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchScope {
    /// Every run of a batch.
    Batch(BatchId),
    /// Every QUEUED or PROCESSING run of a company, and those that ended at or after
    /// `ended_since` (a run that started and ended between two looks is not missed); rejected
    /// batch items (VALIDATION_ERROR), never active, are not among them.
    ActiveInCompany {
        /// The company.
        company: CompanyId,
        /// Ended runs count from this time on.
        ended_since: Timestamp,
    },
    /// Every run of any company changed at or after this time (its `update_time`, as the
    /// writer's clock read it): how a server without Redis learns of other processes' changes.
    UpdatedSince(Timestamp),
}

/// The runs whose events [`RunStore::events_after_marks`] may return: a company's, or one batch
/// of it. Marks come from clients (resume tokens), so the store itself never reads past this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventScope {
    /// Only runs of this company.
    pub company: CompanyId,
    /// Only runs of this batch (of `company`).
    pub batch: Option<BatchId>,
}

/// History filters ([`RunStore::list_runs`]). Every set field must match.
#[derive(Debug, Clone)]
pub struct RunFilter {
    /// The company (required: history is always per company).
    pub company: CompanyId,
    /// Only these states (empty = any).
    pub states: Vec<RunState>,
    /// Only this role.
    pub role: Option<RoleId>,
    /// Only this batch.
    pub batch: Option<BatchId>,
    /// Created at or after.
    pub created_after: Option<Timestamp>,
    /// Created before.
    pub created_before: Option<Timestamp>,
    /// Only runs whose `needs_review` equals this.
    pub needs_review: Option<bool>,
}

impl RunFilter {
    /// Every run of `company`.
    pub fn company(company: CompanyId) -> Self {
        RunFilter {
            company,
            states: Vec::new(),
            role: None,
            batch: None,
            created_after: None,
            created_before: None,
            needs_review: None,
        }
    }
}

/// Which page of a listing to return.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// Runs per page: 0 = [`DEFAULT_PAGE_SIZE`]; at most [`MAX_PAGE_SIZE`].
    pub size: u32,
    /// The previous page's `next_page_token`; `None` (or empty) for the first page.
    pub token: Option<String>,
}

/// One page of runs, newest first.
#[derive(Debug, Clone)]
pub struct RunPage {
    /// The runs.
    pub runs: Vec<Run>,
    /// Token of the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// A dispatcher's request for queued runs ([`RunStore::claim_queued`]).
#[derive(Debug, Clone)]
pub struct Claim {
    /// Who claims (a dispatcher instance id); recorded on the claimed runs.
    pub claimer: String,
    /// Only runs of this company (the dispatcher goes round-robin over companies).
    pub company: Option<CompanyId>,
    /// At most this many runs.
    pub limit: u32,
    /// How long the claim holds; a run not started by then can be claimed again (so a dispatcher
    /// that dies mid-dispatch loses nothing).
    pub lease: Duration,
    /// The current time (explicit so leases can be tested without waiting).
    pub now: Timestamp,
}

/// When a dispatcher may claim a run as it is created, to start it at once
/// ([`RunStore::create_run_and_claim`]): the run a push or a retry creates is claimed when nothing
/// else waits for a start and both caps have room.
#[derive(Debug, Clone)]
pub struct ClaimTerms {
    /// Who claims (a dispatcher instance id).
    pub claimer: String,
    /// How long the claim holds (as [`Claim::lease`]).
    pub lease: Duration,
    /// The run's company may have at most this many PROCESSING runs before it (its cap, less the
    /// claimer's starts in flight).
    pub company_room: u64,
    /// Every company together may have at most this many PROCESSING runs before it.
    pub total_room: u64,
}

/// What recent completed attempts of one step cost ([`RunStore::step_stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepStats {
    /// The step.
    pub step: String,
    /// Attempts measured.
    pub samples: u32,
    /// Their mean duration.
    pub mean_duration: Duration,
    /// Their mean tokens (input and output).
    pub mean_tokens: i64,
}

/// Queued and processing runs of one company (for concurrency caps and fair dispatch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyLoad {
    /// The company.
    pub company: CompanyId,
    /// Its QUEUED runs.
    pub queued: u64,
    /// Its PROCESSING runs.
    pub processing: u64,
}

/// Where a queued run stands in its company's dispatch order (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePosition {
    /// The run.
    pub workflow_id: WorkflowId,
    /// Its 1-based position.
    pub position: u32,
}

/// A client's idempotency key: its `request_id` within its company.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestKey {
    /// The company.
    pub company: CompanyId,
    /// The request id.
    pub request_id: RequestId,
}

/// The answer to [`RunStore::put_request_if_absent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutRequest {
    /// The response was stored: this call is the first with this key.
    Inserted,
    /// An earlier call with this key and the same payload stored this response; return it.
    Existing(Vec<u8>),
}

/// The last content hash seen for a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentHash {
    /// The document's URI.
    pub uri: String,
    /// Hex SHA-256 of its bytes.
    pub content_hash: ContentHash,
    /// When it was seen.
    pub seen_time: Timestamp,
}

/// Tokens of one company on one day (UTC) in one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The day.
    pub day: NaiveDate,
    /// The step.
    pub step: String,
    /// The tokens.
    pub tokens: TokenCount,
}

/// A run's end waiting to be announced to its company's webhook ([`RunStore::claim_notifications`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The outbox entry's id (stable across attempts: the receiver's idempotency key).
    pub id: i64,
    /// The run that ended.
    pub workflow_id: WorkflowId,
    /// Its company.
    pub company: CompanyId,
    /// The final state it reached.
    pub state: RunState,
    /// When it ended.
    pub create_time: Timestamp,
    /// Delivery attempts made so far.
    pub attempts: u32,
}

/// Who claims due notifications, how many, and for how long.
#[derive(Debug, Clone)]
pub struct NotificationClaim {
    /// The claiming deliverer (one per server replica).
    pub claimer: String,
    /// At most this many.
    pub limit: u32,
    /// The claim lapses after this long (a deliverer that died mid-delivery).
    pub lease: std::time::Duration,
    /// The current time: entries whose next attempt is due by then are claimable.
    pub now: Timestamp,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver accepted it.
    Delivered,
    /// Failed; try again at `next_attempt`.
    Retry {
        /// What went wrong.
        error: String,
        /// When to try again.
        next_attempt: Timestamp,
    },
    /// Failed for the last time.
    GiveUp {
        /// What went wrong.
        error: String,
    },
}

/// The run store. Object-safe (`Arc<dyn RunStore>`), hence `async_trait`: native `async fn` in traits
/// cannot be called through `dyn` yet, and `async_trait`'s boxed `Send` futures are exactly what a
/// hand-written `Pin<Box<dyn Future + Send>>` signature would be, with readable signatures.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// `postgres` or `sqlite` (for logs and health).
    fn backend(&self) -> &'static str;

    /// Answers when the database does (health checks).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Closes the connection pool; later calls fail. For shutdown and tests.
    async fn close(&self);

    /// Creates a run of a role — QUEUED, or VALIDATION_ERROR for a rejected batch item — numbered
    /// after the role's latest run and superseding it. Atomic with the checks it makes: unless
    /// `force`, a role whose latest run has the same input identity and is QUEUED, PROCESSING or
    /// READY gets that run back (`created: false`), and so does a rejected item whose latest run
    /// is the same item rejected before (VALIDATION_ERROR); a role whose latest run is still active gets
    /// [`StoreError::RunStillActive`]. Appends the run's first event (sequence 1).
    async fn create_run(&self, new: NewRun) -> Result<Created, StoreError>;

    /// Creates a run as [`RunStore::create_run`] does, then claims it for `terms.claimer` if it
    /// is new and QUEUED, no other QUEUED run anywhere is claimable (nothing waits ahead of it,
    /// whatever the dispatch order), and fewer than `terms.company_room` runs of its company and
    /// `terms.total_room` runs in all are PROCESSING (`claimed`; otherwise the run is left to
    /// [`RunStore::claim_queued`]), in the transaction that creates it: the run is never seen
    /// unclaimed. On PostgreSQL the first run of a new role is created and claimed in one
    /// statement. Two such claims at once may both see room: the caps hold as the
    /// dispatcher's rounds hold them (read, then claimed), not under a lock.
    async fn create_run_and_claim(&self, new: NewRun, terms: &ClaimTerms) -> Result<Created, StoreError>;

    /// Decides `items` exactly as [`RunStore::create_batch`] decides a batch's items (the same
    /// statements, in order, a role twice seeing its first item's run), in transactions that are
    /// rolled back: nothing is stored, nothing is locked afterwards. A new run is answered with
    /// the id and number it would get now. For quotes (`validate_only`).
    async fn preview_runs(&self, items: Vec<NewRun>) -> Result<Vec<Result<Created, StoreError>>, StoreError>;

    /// Stores a batch and creates its runs (as [`RunStore::create_run`] does, each with the batch
    /// id) in transactions of [`BATCH_CHUNK_SIZE`] runs. Every item must be of the batch's company.
    /// A batch id that exists is a [`StoreError::Conflict`]. If the database fails part-way, the
    /// chunks already committed stay: pushing the same items again finds their runs by identity.
    async fn create_batch(&self, batch: NewBatch, items: Vec<NewRun>) -> Result<BatchCreated, StoreError>;

    /// Changes a run's state if [`etter_core::lifecycle::transition`] allows it, and appends the event. Sets the
    /// start time on PROCESSING and the end time on the first final state. A refused change
    /// (including to the state it is already in) writes nothing.
    async fn transition(&self, run: &WorkflowId, change: Transition) -> Result<Run, StoreError>;

    /// Records that `worker` (of `task_queue`, running since `started`) runs now; forgets workers
    /// of the queue not seen for a day.
    async fn worker_seen(&self, worker: &str, task_queue: &str, started: Timestamp) -> Result<(), StoreError>;

    /// Records that `worker` stopped: it no longer counts as seen.
    async fn worker_gone(&self, worker: &str) -> Result<(), StoreError>;

    /// The workers of `task_queue` seen at or after `since`, and all the store knows of.
    async fn workers_seen(&self, task_queue: &str, since: Timestamp) -> Result<WorkersSeen, StoreError>;

    /// Several [`RunStore::transition`]s in one transaction, each answered on its own: a change the
    /// lifecycle refuses, or of a run that does not exist, is answered with its error and writes
    /// nothing; any other error writes none of them.
    async fn transition_each(
        &self,
        changes: Vec<(WorkflowId, Transition)>,
    ) -> Result<Vec<Result<Run, StoreError>>, StoreError>;

    /// Sets a run's `needs_review` flag (low-confidence AI output). Not an event by itself: the
    /// step transition that follows carries it to watchers.
    async fn set_needs_review(&self, run: &WorkflowId, needs_review: bool) -> Result<(), StoreError>;

    /// Records a step transition and appends its event, idempotently: the same
    /// (run, step, attempt, status) recorded again changes nothing and answers the first event's
    /// sequence. Tokens reported here are added to the run's total and to the company's daily
    /// usage (once, thanks to the same key). A finished attempt does not change again
    /// ([`StoreError::Conflict`]). An attempt that a later attempt of the step replaced (its
    /// worker stopped answering, Temporal started another) is stale: its report changes neither
    /// its status nor the run's events, only the tokens it spent are counted, and it is answered
    /// `recorded: false` — so a step the late worker finished anyway is not completed twice.
    async fn record_step(&self, run: &WorkflowId, step: StepTransition) -> Result<StepRecorded, StoreError>;

    /// Claims up to `limit` QUEUED runs not claimed by anyone else (or whose claim expired), in
    /// dispatch order: priority, then oldest first. Concurrent claimers get disjoint runs. The runs
    /// stay QUEUED (no event); the dispatcher moves them to PROCESSING once Temporal accepted the
    /// start, or calls [`RunStore::release_claim`].
    async fn claim_queued(&self, claim: &Claim) -> Result<Vec<Run>, StoreError>;

    /// Claims up to `limit` VALIDATING runs as [`RunStore::claim_queued`] claims queued ones (the
    /// document checker's lease; `claim.company` narrows as there). The runs stay VALIDATING until
    /// the checker moves them to QUEUED or VALIDATION_ERROR (which drops the claim), or calls
    /// [`RunStore::release_claim`].
    async fn claim_validating(&self, claim: &Claim) -> Result<Vec<Run>, StoreError>;

    /// Gives up `claimer`'s claim on a run so the next claim can take it at once.
    async fn release_claim(&self, run: &WorkflowId, claimer: &str) -> Result<(), StoreError>;

    /// A run by its workflow id.
    async fn get_run(&self, run: &WorkflowId) -> Result<Run, StoreError>;

    /// The latest run of a role.
    async fn latest_run(&self, role: &RoleId) -> Result<Run, StoreError>;

    /// Every attempt of every step of a run, ordered by step name and attempt.
    async fn steps(&self, run: &WorkflowId) -> Result<Vec<StepAttempt>, StoreError>;

    /// A company's runs, newest first (by create time, then workflow id), filtered and paginated by
    /// keyset: runs added while paging cause neither gaps nor repeats.
    async fn list_runs(&self, filter: &RunFilter, page: &PageRequest) -> Result<RunPage, StoreError>;

    /// A batch.
    async fn get_batch(&self, batch: &BatchId) -> Result<Batch, StoreError>;

    /// How many of a batch's runs are in each state (states with none are left out).
    async fn batch_counts(&self, batch: &BatchId) -> Result<Vec<(RunState, u64)>, StoreError>;

    /// How many runs (of one company, or of all) are in one of `states`.
    async fn count_runs(&self, company: Option<&CompanyId>, states: &[RunState]) -> Result<u64, StoreError>;

    /// Claims up to `claim.limit` due, undelivered notifications (oldest due first) not claimed by
    /// anyone else (or whose claim lapsed). Concurrent claimers get disjoint entries.
    async fn claim_notifications(&self, claim: &NotificationClaim) -> Result<Vec<Notification>, StoreError>;

    /// Records how a claimed notification's delivery attempt ended and releases the claim. False
    /// (and nothing written) when `claimer` no longer holds the claim or it was settled already.
    async fn settle_notification(
        &self,
        id: i64,
        claimer: &str,
        delivery: Delivery,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Runs of every company in one of `states`, by workflow id, after `after` (keyset paging for
    /// scans such as the staleness scan), at most `limit` (capped at [`MAX_PAGE_SIZE`]).
    async fn runs_in_states(
        &self,
        states: &[RunState],
        after: Option<&WorkflowId>,
        limit: u32,
    ) -> Result<Vec<Run>, StoreError>;

    /// Measured cost of each step: mean duration and tokens of its last `per_step` completed
    /// attempts (all companies), for the ETA and token estimates. Steps never completed are left out.
    async fn step_stats(&self, per_step: u32) -> Result<Vec<StepStats>, StoreError>;

    /// The `limit` runs that ended in `state` most recently, newest first (all companies): what
    /// whole runs took, for the ETA's measure of what a run costs beyond its steps.
    async fn recently_ended(&self, state: RunState, limit: u32) -> Result<Vec<Run>, StoreError>;

    /// The queued run of `batch` (of `company`) that its company starts last: its place in the
    /// company's dispatch order, as [`RunStore::queue_position`] answers it, and its plan; `None`
    /// when none of the batch's runs is queued. A batch's ETA is that run's.
    async fn last_queued_of_batch(
        &self,
        company: &CompanyId,
        batch: &BatchId,
    ) -> Result<Option<(u32, Option<Plan>)>, StoreError>;

    /// Up to `limit` runs not started yet (VALIDATING or QUEUED) whose deadline is at or before
    /// `now`, earliest deadline first (the dispatcher cancels them).
    async fn waiting_past_deadline(&self, now: Timestamp, limit: u32) -> Result<Vec<WorkflowId>, StoreError>;

    /// Queued and processing runs per company, for companies that have any.
    async fn company_loads(&self) -> Result<Vec<CompanyLoad>, StoreError>;

    /// A queued run's 1-based position in its company's dispatch order; `None` when not queued.
    async fn queue_position(&self, run: &WorkflowId) -> Result<Option<u32>, StoreError>;

    /// The positions of every queued run of a company, in dispatch order.
    async fn queue_positions(&self, company: &CompanyId) -> Result<Vec<QueuePosition>, StoreError>;

    /// A run's events with a sequence greater than `after`, in order, at most `limit`.
    async fn events_after(&self, run: &WorkflowId, after: u64, limit: u32) -> Result<Vec<RunEvent>, StoreError>;

    /// The events of several runs after per-run high-water marks, ordered by run then sequence, at
    /// most `limit`. Each run's events come as a gap-free prefix, so a caller that advances its
    /// marks to what it received and asks again misses and repeats nothing. Marks of runs outside
    /// `scope` yield nothing, whatever they name.
    async fn events_after_marks(
        &self,
        scope: &EventScope,
        marks: &[(WorkflowId, u64)],
        limit: u32,
    ) -> Result<Vec<RunEvent>, StoreError>;

    /// The latest sequence of every run in a scope, to compare with a watcher's marks (a run not in
    /// the marks is new to the watcher).
    async fn sequence_heads(&self, scope: &WatchScope) -> Result<Vec<(WorkflowId, u64)>, StoreError>;

    /// The stored response of a request key, unless expired. The same key with another payload hash
    /// is [`StoreError::RequestIdReused`].
    async fn lookup_request(
        &self,
        key: &RequestKey,
        payload_hash: &str,
        now: Timestamp,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores the response of a request key unless an unexpired one exists (atomically: of two
    /// concurrent calls one inserts and the other gets its response). An existing key with another
    /// payload hash is [`StoreError::RequestIdReused`]. Keys expire [`IDEMPOTENCY_TTL`] after `now`.
    async fn put_request_if_absent(
        &self,
        key: &RequestKey,
        payload_hash: &str,
        response: &[u8],
        now: Timestamp,
    ) -> Result<PutRequest, StoreError>;

    /// Deletes expired request keys; answers how many.
    async fn purge_expired_requests(&self, now: Timestamp) -> Result<u64, StoreError>;

    /// Records the content hash of a document seen at `now`; answers the previous record, if any
    /// (a staleness scan compares the two).
    async fn record_document_hash(
        &self,
        uri: &str,
        hash: &ContentHash,
        now: Timestamp,
    ) -> Result<Option<DocumentHash>, StoreError>;

    /// The last recorded hashes of these documents (unknown ones are left out).
    async fn document_hashes(&self, uris: &[String]) -> Result<Vec<DocumentHash>, StoreError>;

    /// A company's token usage per day and step, for days `from..=to`.
    async fn usage(&self, company: &CompanyId, from: NaiveDate, to: NaiveDate) -> Result<Vec<UsageRow>, StoreError>;

    /// The LLM tokens `company`'s QUEUED and PROCESSING runs are still estimated to use: each
    /// run's estimate less what its steps used so far (never below zero). A run's reservation
    /// shrinks as its steps record their usage and is released when it ends.
    async fn token_reservations(&self, company: &CompanyId) -> Result<i64, StoreError>;

    /// Appends `events` to the audit log's hash chain, in order, in one transaction that also
    /// moves the checkpointed head; answers the new head. Concurrent appenders (replicas) are
    /// serialised on the head row.
    async fn append_audit(&self, key: &ChainKey, events: Vec<AuditEvent>) -> Result<AuditHead, StoreError>;

    /// Up to `limit` audit entries after sequence number `after`, in chain order (verification).
    async fn audit_entries(&self, after: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;

    /// The checkpointed head of the audit chain.
    async fn audit_head(&self) -> Result<AuditHead, StoreError>;

    /// Up to `limit` audit entries matching `filter`, newest first.
    async fn list_audit(&self, filter: &AuditFilter, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
}

/// What an earlier run left for each step, as the planners read it ([`etter_core::steps::plan_retry`],
/// [`etter_core::steps::plan_rerun`]): each step's latest attempt — completed or reused keeps its
/// output, failed failed, anything else never ran. Steps this version does not know are left out.
pub fn prior_steps(attempts: &[StepAttempt]) -> BTreeMap<StepName, PriorStep> {
    let mut latest: BTreeMap<StepName, &StepAttempt> = BTreeMap::new();
    for attempt in attempts {
        let Some(step) = StepName::parse(&attempt.step) else { continue };
        if latest.get(&step).is_none_or(|l| l.attempt < attempt.attempt) {
            latest.insert(step, attempt);
        }
    }
    latest
        .into_iter()
        .map(|(step, a)| {
            let outcome = match a.status {
                StepStatus::Completed | StepStatus::Reused => PriorOutcome::Completed,
                StepStatus::Failed => PriorOutcome::Failed,
                _ => PriorOutcome::NotRun,
            };
            (step, PriorStep { outcome, input_hash: a.input_hash.clone(), output_hash: a.output_hash.clone() })
        })
        .collect()
}

/// Told after a write committed a change of a run: new events, or a field that changes without
/// one (`superseded_by`, `needs_review`). For live fan-out ([`crate::fanout`]) and whatever a
/// reader keeps of a run. Must not block: the writer calls it on its path.
pub trait Announce: Send + Sync {
    /// `run` changed.
    fn moved(&self, run: &WorkflowId);
}

/// How to connect.
#[derive(Clone)]
pub struct StoreOptions {
    /// Pooled connections at most (`store.max_connections`).
    pub max_connections: u32,
    /// How long an SQLite writer waits for the write lock before failing.
    pub sqlite_busy_timeout: Duration,
    /// Told of every run that changed, once the change is committed.
    pub announce: Option<Arc<dyn Announce>>,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("max_connections", &self.max_connections)
            .field("sqlite_busy_timeout", &self.sqlite_busy_timeout)
            .field("announce", &self.announce.is_some())
            .finish()
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { max_connections: 16, sqlite_busy_timeout: Duration::from_secs(30), announce: None }
    }
}

/// Connects to the store at `location` with default options and applies its migrations.
pub async fn connect(location: &StoreLocation) -> Result<Arc<dyn RunStore>, StoreError> {
    connect_with(location, &StoreOptions::default()).await
}

/// Connects to the store at `location` and applies its migrations: on PostgreSQL under sqlx's
/// advisory lock, so replicas starting together apply them once; on SQLite after creating the file
/// and its directory, in WAL mode with foreign keys on.
pub async fn connect_with(location: &StoreLocation, options: &StoreOptions) -> Result<Arc<dyn RunStore>, StoreError> {
    Ok(match location {
        StoreLocation::Postgres(url) => Arc::new(
            sql::SqlStore::new(postgres::Postgres::connect(url, options).await?, options.announce.clone()).await?,
        ),
        StoreLocation::Sqlite(path) => {
            Arc::new(sql::SqlStore::new(sqlite::Sqlite::connect(path, options).await?, options.announce.clone()).await?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of a connection attempt (`Arc<dyn RunStore>` has no `Debug`, so no `unwrap_err`).
    async fn connect_error(location: StoreLocation) -> Option<StoreError> {
        connect(&location).await.err()
    }

    #[tokio::test]
    async fn a_bad_store_url_keeps_sqlx_error_as_the_source() -> anyhow::Result<()> {
        let err = connect_error(StoreLocation::Postgres("postgres://etter@localhost:notaport/etter".to_owned())).await;
        let Some(err @ StoreError::Database(_)) = err else { anyhow::bail!("want a database error, got {err:?}") };
        assert_eq!(err.to_string(), "store database error");
        let source = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<sqlx::Error>());
        assert!(matches!(source, Some(sqlx::Error::Configuration(_))), "{source:?}");
        let chain = etter_core::error::chain(&err).to_string();
        assert!(chain.starts_with("store database error: ") && chain.len() > "store database error: ".len(), "{chain}");
        Ok(())
    }

    #[tokio::test]
    async fn an_unusable_sqlite_directory_is_named_with_the_os_error_as_the_source() -> anyhow::Result<()> {
        // A directory cannot be created under a regular file (the test binary).
        let file = std::env::current_exe()?;
        let err = connect_error(StoreLocation::Sqlite(file.join("sub").join("etter.db"))).await;
        let Some(err @ StoreError::Io { .. }) = err else { anyhow::bail!("want an I/O error, got {err:?}") };
        assert_eq!(err.to_string(), format!("cannot create the store directory {}", file.join("sub").display()));
        let source = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<std::io::Error>());
        assert!(source.is_some(), "{err:?}");
        Ok(())
    }

    #[test]
    fn an_unparsable_stored_value_keeps_the_parsers_error_as_the_source() {
        let err = values::id("Not An Id".to_owned(), etter_core::ids::CompanyId::parse).err();
        let Some(err @ StoreError::Corrupt { .. }) = err else { panic!("want a corrupt value, got {err:?}") };
        assert_eq!(err.to_string(), "stored data is not readable: stored id \"Not An Id\"");
        let source = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<etter_core::ids::InvalidId>());
        assert_eq!(source.map(|s| s.what), Some("company_id"));
    }

    #[test]
    fn stored_names_round_trip() {
        for status in StepStatus::ALL {
            assert_eq!(StepStatus::parse(status.as_str()), Some(status));
        }
        for priority in [Priority::Low, Priority::Normal, Priority::High] {
            assert_eq!(Priority::from_rank(priority.rank()), Some(priority));
        }
        assert_eq!(Priority::from_rank(0), None);
    }

    #[test]
    fn stored_document_types_map_to_step_kinds() {
        let doc = |kind: &str| DocumentRef { kind: kind.to_owned(), uri: "file:///d".to_owned() };
        assert_eq!(doc("job_description").step_kind(), DocumentKind::JobDescription);
        assert_eq!(doc("process_map").step_kind(), DocumentKind::ProcessMap);
        assert_eq!(doc("sop").step_kind(), DocumentKind::Supporting);
    }

    #[test]
    fn times_are_kept_to_the_microsecond() {
        let t = now();
        assert_eq!(truncate(t), t);
        assert_eq!(t.timestamp_subsec_nanos() % 1_000, 0);
    }
}
