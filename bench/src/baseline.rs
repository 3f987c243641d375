//! The baselines the control plane is measured against, on the same machine in the same run:
//! a bare `StartWorkflowExecution` to the same Temporal dev server, a worker of no-op workflows on
//! it, and a bare tonic server answering `GetStatus` with a canned response, or `Push` with one
//! durable insert and a bare start ([`Floor`]); and the dispatcher's own start request made from
//! the harness ([`OwnStart`]). The fan-out's bare server is in [`crate::relay`].

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use etter_core::ids::{CompanyId, RoleId, RoleName, TraceId, WorkflowId};
use etter_core::steps::{Action, StepName};
use etter_core::workflow::RoleOnboardingInput;
use etter_proto::v1::pipeline_service_server::{PipelineService, PipelineServiceServer};
use etter_proto::v1::{
    CancelRequest, CancelResponse, CompareRunsRequest, CompareRunsResponse, GetStatusRequest, GetStatusResponse,
    GetUsageRequest, GetUsageResponse, HistoryRequest, HistoryResponse, ListAuditEntriesRequest,
    ListAuditEntriesResponse, PushBatchRequest, PushBatchResponse, PushRequest, PushResponse, RetryRequest,
    RetryResponse, WatchStatusRequest, WatchStatusResponse,
};
use etter_server::orchestrator::{Orchestrator as _, StartOutcome, TemporalOrchestrator, TemporalSettings};
use etter_tests::service_setting;
use etter_worker::workflows::RoleOnboarding;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, Url, WorkflowGetResultOptions, WorkflowStartOptions,
};
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, Runtime, Worker, WorkerOptions, WorkflowContext, WorkflowResult};

use crate::shape::ShapedActivities;
use tonic::{Request, Response, Status};

/// A Temporal client of the dev server the stacks use (`ETTER_TEMPORAL__*`).
pub async fn temporal_client() -> Result<Client> {
    let address = service_setting("ETTER_TEMPORAL__ADDRESS", "temporal")?;
    let namespace = service_setting("ETTER_TEMPORAL__NAMESPACE", "temporal")?;
    let url = Url::parse(&address).context("ETTER_TEMPORAL__ADDRESS is not a URL")?;
    let connection = Connection::connect(ConnectionOptions::new(url).identity("etter-bench".to_owned()).build())
        .await
        .with_context(|| format!("connecting to Temporal at {address}"))?;
    Ok(Client::new(connection, ClientOptions::new(namespace).build())?)
}

/// The no-op workflow's input: how many no-op activities to run, and padding that makes the start
/// request as large as a role's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NoopInput {
    /// No-op activities to run one after the other.
    pub activities: u32,
    /// Ignored bytes.
    pub padding: String,
}

/// Padding that makes a no-op workflow's start request as large as a role's (ids, names,
/// documents, options, plan).
pub fn role_input_padding() -> String {
    "x".repeat(1200)
}

/// A workflow that runs `activities` no-op activities and ends.
#[workflow]
#[derive(Default)]
pub struct BenchNoop;

#[workflow_methods]
impl BenchNoop {
    /// Runs the activities one by one.
    #[run(name = "EtterBenchNoopWorkflow")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: NoopInput) -> WorkflowResult<u32> {
        let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60)).build();
        for _ in 0..input.activities {
            ctx.execute_activity(NoopActivities::noop, (), options.clone()).await?;
        }
        Ok(input.activities)
    }
}

/// The no-op activity.
pub struct NoopActivities;

#[activities]
impl NoopActivities {
    /// Does nothing.
    #[activity(name = "EtterBenchNoopActivity")]
    pub async fn noop(self: Arc<Self>, _ctx: ActivityContext, _input: ()) -> Result<(), ActivityError> {
        Ok(())
    }
}

/// Runs `work` while a worker polls `task_queue` in this process, with `activity_slots` activity
/// and local-activity slots (as the pipeline's worker has); stops the worker when `work` is done.
/// It runs [`BenchNoop`], and the pipeline's own workflow with no-op activities (the same-shape
/// baseline, [`crate::shape`]).
pub async fn with_noop_worker<T>(
    task_queue: &str,
    activity_slots: usize,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    use temporalio_sdk::runtime::worker_tuner::{FixedSizeSlotSupplier, TunerHolder, WorkerTuner};
    let client = temporal_client().await?;
    let runtime = Runtime::from_current_tokio(Default::default())?;
    let tuner: WorkerTuner = TunerHolder::builder()
        .workflow_task_slot_supplier(FixedSizeSlotSupplier::new(100))
        .activity_task_slot_supplier(FixedSizeSlotSupplier::new(activity_slots.max(1)))
        .local_activity_task_slot_supplier(FixedSizeSlotSupplier::new(activity_slots.max(1)))
        .nexus_task_slot_supplier(FixedSizeSlotSupplier::new(1))
        .build()
        .into();
    let options = WorkerOptions::new(task_queue.to_owned())
        .register_workflow::<BenchNoop>()?
        .register_activities(NoopActivities)
        .register_workflow::<RoleOnboarding>()?
        .register_activities(ShapedActivities)
        .tuner(tuner)
        .build();
    let mut worker = Worker::new(&runtime, client, options)?;
    let stop = worker.shutdown_handle();
    let running = worker.run();
    tokio::pin!(running);
    let out = tokio::select! {
        ran = &mut running => bail!("the no-op worker stopped by itself: {ran:?}"),
        out = work => out,
    };
    stop();
    (&mut running).await?;
    out
}

/// Starts a [`BenchNoop`] with `input` under `id` on `task_queue` (no conflict: ids are unique);
/// answers when Temporal acknowledged the start.
pub async fn start_noop(client: &Client, task_queue: &str, id: String, input: NoopInput) -> Result<()> {
    let options = WorkflowStartOptions::new(task_queue.to_owned(), id)
        // Nobody may run the starts of the push baseline: Temporal ends them by itself.
        .execution_timeout(Duration::from_secs(300))
        .build();
    client.start_workflow(BenchNoop::run, input, options).await?;
    Ok(())
}

/// The dispatcher's own start request, made from the harness: [`TemporalOrchestrator`] with a
/// role's input and the dispatcher's options (id policies, memo), on a task queue nobody polls.
/// Set beside the bare start, it tells what the start request costs from what the rest of a push
/// costs.
pub struct OwnStart {
    orchestrator: TemporalOrchestrator,
    company: CompanyId,
}

impl OwnStart {
    /// Starts for `company`'s roles on a task queue of their own, which nobody polls: Temporal ends
    /// them by itself, if the scenario does not first.
    pub fn new(company: &str) -> Result<Self> {
        Self::on(company, &etter_tests::unique_name("etter-bench-own"), Duration::from_secs(300))
    }

    /// Starts for `company`'s roles on `task_queue`, each allowed `execution_timeout`.
    pub fn on(company: &str, task_queue: &str, execution_timeout: Duration) -> Result<Self> {
        let temporal = etter_temporal::TemporalConfig {
            address: service_setting("ETTER_TEMPORAL__ADDRESS", "temporal")?,
            ..Default::default()
        };
        let settings = TemporalSettings {
            endpoint: etter_temporal::Endpoint::from_config(&temporal)?,
            namespace: service_setting("ETTER_TEMPORAL__NAMESPACE", "temporal")?,
            task_queue: task_queue.to_owned(),
            execution_timeout,
            call_timeout: Duration::from_secs(30),
            identity: "etter-bench".to_owned(),
        };
        let company = CompanyId::parse(company).map_err(|e| anyhow!("company id: {e}"))?;
        Ok(Self { orchestrator: TemporalOrchestrator::new(settings), company })
    }

    /// Starts the first run of a role named `name`; answers its workflow id once Temporal
    /// acknowledged the start.
    pub async fn start(&self, name: &str) -> Result<String> {
        let role_name = RoleName::parse(name).map_err(|e| anyhow!("role name: {e}"))?;
        let role_id = RoleId::new(&self.company, &role_name);
        let workflow_id = WorkflowId::for_run(&role_id, 1);
        let now = chrono::Utc::now();
        let input = RoleOnboardingInput {
            workflow_id: workflow_id.clone(),
            role_id,
            company_id: self.company.clone(),
            plan: StepName::ALL.iter().map(|step| (*step, Action::Run)).collect(),
            reuse_from: None,
            early_cutoff: false,
            // A trace id and run key of its own, as the dispatcher gives every run (same sizes).
            trace_id: Some(TraceId::from_random(u128::from(
                now.timestamp_nanos_opt().unwrap_or_default().unsigned_abs(),
            ))),
            run_key: format!("{} {name}", now.to_rfc3339()),
        };
        match self.orchestrator.start_onboarding(&input).await? {
            StartOutcome::Running { .. } => Ok(workflow_id.to_string()),
            StartOutcome::AlreadyClosed => bail!("{workflow_id} was started and closed before"),
        }
    }
}

/// Terminates the workflows `ids` that a scenario started and nobody runs, so that they do not
/// load the dev server under the next scenarios (their timeouts firing by the thousand). One that
/// already ended is fine; answers how many could not be terminated for another reason.
pub async fn terminate_all(client: &Client, ids: Vec<String>) -> usize {
    use futures::StreamExt as _;
    use temporalio_client::errors::WorkflowInteractionError;
    use temporalio_client::{UntypedWorkflow, WorkflowTerminateOptions};
    futures::stream::iter(ids)
        .map(|id| {
            let client = client.clone();
            async move {
                let options = WorkflowTerminateOptions::builder().reason("etter-bench: measured").build();
                match client.get_workflow_handle::<UntypedWorkflow>(id).terminate(options).await {
                    Ok(()) | Err(WorkflowInteractionError::NotFound(_)) => 0,
                    Err(WorkflowInteractionError::Rpc(status))
                        if matches!(status.code(), tonic::Code::NotFound | tonic::Code::FailedPrecondition) =>
                    {
                        0
                    }
                    Err(_) => 1,
                }
            }
        })
        .buffer_unordered(16)
        .fold(0, |failed, one| async move { failed + one })
        .await
}

/// Starts a [`BenchNoop`] and waits for its result.
pub async fn run_noop(client: &Client, task_queue: &str, id: String, input: NoopInput) -> Result<u32> {
    let options =
        WorkflowStartOptions::new(task_queue.to_owned(), id).execution_timeout(Duration::from_secs(600)).build();
    let handle = client.start_workflow(BenchNoop::run, input, options).await?;
    Ok(handle.get_result(WorkflowGetResultOptions::default()).await?)
}

/// A bare tonic server of `PipelineService` without authentication, limits, store or audit.
/// `GetStatus` answers a canned response: what serving the same bytes costs by itself. `Push` is
/// the floor of a push ([`Floor`]).
struct Bare {
    status: Option<GetStatusResponse>,
    floor: Option<Floor>,
}

/// The least a push costs under "persist, then dispatch" (a push is stored before its workflow starts): the gRPC hop to a server
/// of its own, one durable insert of the request, then the start. No guard, no admission read,
/// no idempotency record, no status in the answer. Its answer carries the instant the start was
/// acknowledged ([`STARTED_AT`]), the moment a pushed run's `start_time` records.
struct Floor {
    store: FloorStore,
    temporal: Client,
    task_queue: String,
    /// As large as a role's workflow input, as the bare starts' is.
    padding: String,
}

/// Where the floor persists: a SQLite file as the embedded store opens it (WAL, `synchronous =
/// FULL`), or the stack's PostgreSQL database (`synchronous_commit = on`).
enum FloorStore {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// The response header of the floor's `Push`: Unix nanoseconds at which Temporal acknowledged
/// the start.
pub const STARTED_AT: &str = "etter-bench-started-at";

const FLOOR_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS etter_bench_floor (workflow_id TEXT PRIMARY KEY, request TEXT NOT NULL)";
const FLOOR_INSERT: &str = "INSERT INTO etter_bench_floor (workflow_id, request) VALUES ($1, $2)";

impl FloorStore {
    /// Opens `url` (`sqlite://PATH` or a PostgreSQL URL) and creates the floor's table. Its one
    /// connection is handed out without sqlx's ping (`test_before_acquire`), which would add a
    /// round trip to every insert: the run store skips it too for a connection used recently.
    async fn open(url: &str) -> Result<Self> {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
        let store = match url.strip_prefix("sqlite://") {
            Some(path) => {
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full);
                FloorStore::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .test_before_acquire(false)
                        .connect_with(options)
                        .await?,
                )
            }
            None => FloorStore::Postgres(
                sqlx::postgres::PgPoolOptions::new().max_connections(1).test_before_acquire(false).connect(url).await?,
            ),
        };
        match &store {
            FloorStore::Sqlite(pool) => sqlx::query(FLOOR_TABLE).execute(pool).await.map(drop)?,
            FloorStore::Postgres(pool) => sqlx::query(FLOOR_TABLE).execute(pool).await.map(drop)?,
        }
        Ok(store)
    }

    /// Inserts one row in a statement of its own, committed durably before this answers.
    async fn insert(&self, workflow_id: &str, request: &str) -> Result<(), sqlx::Error> {
        match self {
            FloorStore::Sqlite(pool) => {
                sqlx::query(FLOOR_INSERT).bind(workflow_id).bind(request).execute(pool).await.map(drop)
            }
            FloorStore::Postgres(pool) => {
                sqlx::query(FLOOR_INSERT).bind(workflow_id).bind(request).execute(pool).await.map(drop)
            }
        }
    }
}

impl Floor {
    async fn push(&self, request: &PushRequest) -> Result<PushResponse> {
        let workflow_id = etter_tests::unique_name("floor");
        let request = serde_json::json!({
            "company_id": request.company_id,
            "role_name": request.role_name,
            "draup_role_id": request.draup_role_id,
            "documents": request.documents.iter().map(|d| (d.r#type, &d.uri)).collect::<Vec<_>>(),
            "request_id": request.request_id,
        });
        self.store.insert(&workflow_id, &request.to_string()).await?;
        let input = NoopInput { activities: 0, padding: self.padding.clone() };
        start_noop(&self.temporal, &self.task_queue, workflow_id.clone(), input).await?;
        Ok(PushResponse { workflow_id, created: true, ..PushResponse::default() })
    }
}

type BareStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<WatchStatusResponse, Status>> + Send>>;

fn baseline_only() -> Status {
    Status::unimplemented("the benchmark baseline does not serve this call")
}

#[tonic::async_trait]
impl PipelineService for Bare {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        let floor = self.floor.as_ref().ok_or_else(baseline_only)?;
        let answer = floor.push(request.get_ref()).await.map_err(|e| Status::internal(format!("{e:#}")))?;
        let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        let mut response = Response::new(answer);
        let started = started.to_string().parse().map_err(|_| Status::internal("a time that is not a header"))?;
        response.metadata_mut().insert(STARTED_AT, started);
        Ok(response)
    }
    async fn push_batch(&self, _: Request<PushBatchRequest>) -> Result<Response<PushBatchResponse>, Status> {
        Err(baseline_only())
    }
    async fn get_status(&self, _: Request<GetStatusRequest>) -> Result<Response<GetStatusResponse>, Status> {
        self.status.clone().map(Response::new).ok_or_else(baseline_only)
    }
    type WatchStatusStream = BareStream;
    async fn watch_status(&self, _: Request<WatchStatusRequest>) -> Result<Response<BareStream>, Status> {
        Err(baseline_only())
    }
    async fn retry(&self, _: Request<RetryRequest>) -> Result<Response<RetryResponse>, Status> {
        Err(baseline_only())
    }
    async fn cancel(&self, _: Request<CancelRequest>) -> Result<Response<CancelResponse>, Status> {
        Err(baseline_only())
    }
    async fn compare_runs(&self, _: Request<CompareRunsRequest>) -> Result<Response<CompareRunsResponse>, Status> {
        Err(baseline_only())
    }
    async fn history(&self, _: Request<HistoryRequest>) -> Result<Response<HistoryResponse>, Status> {
        Err(baseline_only())
    }
    async fn list_audit_entries(
        &self,
        _: Request<ListAuditEntriesRequest>,
    ) -> Result<Response<ListAuditEntriesResponse>, Status> {
        Err(baseline_only())
    }
    async fn get_usage(&self, _: Request<GetUsageRequest>) -> Result<Response<GetUsageResponse>, Status> {
        Err(baseline_only())
    }
}

/// `etter-bench echo <file>`: serves the canned `GetStatus` baseline on a loopback port of its
/// own (a process of its own, like etter-server) and prints one readiness line with the address.
pub async fn serve_echo(response: &Path) -> Result<()> {
    let bytes = std::fs::read(response).with_context(|| format!("reading {}", response.display()))?;
    let response = GetStatusResponse::decode(bytes.as_slice()).context("not an encoded GetStatusResponse")?;
    serve(Bare { status: Some(response), floor: None }).await
}

/// `etter-bench floor <store> <task queue>`: serves the [`Floor`] of a push, persisting into
/// `store` and starting no-op workflows on `task_queue` of the dev server the stacks use.
pub async fn serve_floor(store: &str, task_queue: String) -> Result<()> {
    let floor = Floor {
        store: FloorStore::open(store).await.with_context(|| format!("opening the floor's store {store}"))?,
        temporal: temporal_client().await?,
        task_queue,
        padding: role_input_padding(),
    };
    serve(Bare { status: None, floor: Some(floor) }).await
}

async fn serve(bare: Bare) -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("{}", serde_json::json!({ "ready": "etter-bench baseline", "grpc_addr": addr.to_string() }));
    tonic::transport::Server::builder()
        .add_service(PipelineServiceServer::new(bare))
        // Nagle off, as etter-server has it: the baseline must not wait on delayed ACKs either.
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await?;
    Ok(())
}

/// A baseline server (`etter-bench <args>`) in a process of its own, and a client of it.
pub struct BareProcess {
    child: tokio::process::Child,
    /// Its gRPC address (`host:port`).
    pub addr: String,
    /// A client of it (no token is checked).
    pub client: etter_tests::stack::Client,
}

impl BareProcess {
    /// Starts `etter-bench <args>` and connects once it printed its address.
    pub async fn start(args: &[&std::ffi::OsStr]) -> Result<Self> {
        use tokio::io::{AsyncBufReadExt as _, BufReader};
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting a baseline server")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let line = tokio::time::timeout(Duration::from_secs(30), BufReader::new(stdout).lines().next_line())
            .await
            .context("the baseline server printed no readiness line")??
            .context("the baseline server exited")?;
        let ready: serde_json::Value = serde_json::from_str(&line)?;
        let addr = ready["grpc_addr"].as_str().context("no grpc_addr in the baseline's readiness line")?;
        let client = etter_tests::stack::connect(addr, "not-checked").await?;
        Ok(Self { child, addr: addr.to_owned(), client })
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops it.
    pub async fn stop(mut self) -> Result<()> {
        Ok(self.child.kill().await?)
    }
}
