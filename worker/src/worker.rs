//! One worker process: opens the stores, registers the workflows and activities on the task
//! queue, serves `/metrics`, and drains on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use etter_config::ConfigError;
use etter_core::backoff::Backoff;
use etter_core::error::chain;
use etter_documents::{DocumentError, Documents};
use etter_graph::GraphError;
use etter_llm::LlmError;
use etter_store::{StoreError, StoreOptions};
use etter_telemetry::process;
use temporalio_client::grpc::WorkflowService as _;
use temporalio_client::schedules::{
    CreateScheduleOptions, DeleteScheduleOptions, ScheduleAction, ScheduleOverlapPolicy, ScheduleSpec,
};
use temporalio_client::{Client, Connection, WorkflowGetResultOptions, WorkflowStartOptions, tonic};
use temporalio_common::protos::temporal::api::workflowservice::v1::DescribeNamespaceRequest;
use temporalio_common::telemetry::TelemetryOptions;
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::runtime::worker_tuner::{FixedSizeSlotSupplier, TunerHolder, WorkerTuner};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

use crate::activities::PipelineActivities;
use crate::faults::{Faults, FaultsError};
use crate::staleness::{ScanReport, StalenessActivities, StalenessScan};
use crate::steps::StepRunner;
use crate::workflows::{ActivityPolicy, AiAssessment, RoleOnboarding, SkillsAnalysis, TopTasks, set_activity_policy};
use etter_temporal::Endpoint;

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The run store could not be opened.
    #[error("cannot open the run store")]
    Store(#[from] StoreError),
    /// The role graph could not be opened.
    #[error("cannot open the role graph")]
    Graph(#[from] GraphError),
    /// The document loader could not be set up.
    #[error("cannot set up document loading")]
    Documents(#[from] DocumentError),
    /// The model provider could not be set up.
    #[error("cannot set up the LLM provider")]
    Llm(#[from] LlmError),
    /// Fault injection was asked for and is not available.
    #[error(transparent)]
    Faults(#[from] FaultsError),
    /// `/metrics` could not start.
    #[error(transparent)]
    Metrics(#[from] process::MetricsError),
    /// `worker.metrics_tls` does not make a TLS configuration.
    #[error(transparent)]
    Tls(#[from] etter_tls::TlsError),
    /// Temporal could not be reached, or the worker failed.
    #[error("temporal: {what}")]
    Temporal {
        /// What failed (`cannot create the worker`).
        what: String,
        /// Why: the Temporal SDK's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `redis.url` is unusable.
    #[error(transparent)]
    Fanout(#[from] etter_store::fanout::FanoutError),
    /// Temporal refused the connection.
    #[error(transparent)]
    Connect(#[from] etter_temporal::ConnectError),
    /// Temporal refused this worker the namespace (no API key, or one it does not accept).
    #[error("temporal refused the namespace `{namespace}`: {message}: {advice}")]
    NamespaceRefused {
        /// `temporal.namespace`.
        namespace: String,
        /// What the cluster said.
        message: String,
        /// What to change.
        advice: &'static str,
    },
}

/// A [`RunError::Temporal`] saying `what` failed, with the SDK's error as its source.
fn temporal<E: Into<Box<dyn std::error::Error + Send + Sync>>>(what: impl Into<String>) -> impl FnOnce(E) -> RunError {
    let what = what.into();
    move |err| {
        let source: Box<dyn std::error::Error + Send + Sync> = err.into();
        // Some of the SDK's errors display as nothing (a poller's failure): show their detail.
        let source = if source.to_string().trim().is_empty() { format!("{source:?}").into() } else { source };
        RunError::Temporal { what, source }
    }
}

/// What installs logging and, with `tracing.otlp_endpoint`, span export for a worker process,
/// with the replay-safe span ids workflow spans need: for [`process::block_on_with_telemetry`],
/// which calls it inside the tokio runtime that runs the worker.
pub fn init_tracing(config: &Config) -> impl FnOnce() -> Result<process::Telemetry, process::TracingError> + use<> {
    let (log, tracing) = (config.log.clone(), config.tracing.clone());
    move || {
        process::init_tracing(
            &log,
            &tracing,
            "etter-worker",
            temporalio_sdk::opentelemetry::WorkflowIdGenerator::default(),
        )
    }
}

/// Runs the worker until `shutdown` resolves, then stops polling and lets running activities
/// finish within `worker.shutdown_grace`.
/// `ETTER_TEST_FAULTS` is refused: this is what `etter-worker` runs.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), RunError> {
    Faults::refuse_env()?;
    run_with_faults(config, Faults::default(), shutdown).await
}

/// [`run`] with the faults a test asks for (what `etter-worker-faults` runs; see [`Faults`]).
pub async fn run_with_faults(
    config: Config,
    faults: Faults,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let location = config.store_location()?;
    // Step transitions are announced through Redis when configured, so watchers see them at once.
    let announce = config
        .redis
        .client()?
        .map(|client| etter_store::fanout::Publisher::start(client) as Arc<dyn etter_store::Announce>);
    let options = StoreOptions { max_connections: config.store.max_connections, announce, ..StoreOptions::default() };
    let store = etter_store::connect_with(&location, &options).await?;
    let graph = etter_graph::open(&config.graph, &config.data_dir).await?;
    graph.ensure_schema().await?;
    let documents = Arc::new(Documents::new(config.documents.clone())?);
    let llm = etter_llm::provider_from_config(&config.llm)?;
    set_activity_policy(&config.temporal.task_queue, ActivityPolicy::from(&config.worker));

    let endpoint = Endpoint::from_config(&config.temporal)?;
    tokio::pin!(shutdown);
    // A worker may start before Temporal does (a host reboot, a deploy): wait for it rather than exit.
    let connection = tokio::select! {
        connection = connect_patiently(&endpoint) => connection?,
        () = &mut shutdown => {
            store.close().await;
            return Ok(());
        }
    };
    let client = Client::new(connection, etter_temporal::client_options(&config.temporal.namespace))
        .map_err(temporal("cannot create the Temporal client"))?;
    check_namespace(&client, &endpoint, &config.temporal.namespace).await?;
    ensure_scan_schedule(&client, &config).await;

    if !faults.is_empty() {
        tracing::warn!(?faults, "fault injection is on: this worker is for tests only");
    }
    let runner = StepRunner::new(Arc::clone(&store), graph, Arc::clone(&documents), llm);
    let staleness = StalenessActivities::new(Arc::clone(&store), documents, runner.clone());
    let activities = PipelineActivities::new(runner, faults, config.worker.outage_patience);
    // The SDK's own worker metrics go to the same /metrics as the pipeline's.
    let telemetry = TelemetryOptions::builder().metrics(crate::sdk_metrics::SdkMeter::shared()).build();
    let runtime_options = RuntimeOptions::builder()
        .telemetry_options(telemetry)
        .build()
        .map_err(temporal("cannot configure the Temporal runtime"))?;
    let runtime =
        Runtime::from_current_tokio(runtime_options).map_err(temporal("cannot start the Temporal runtime"))?;
    let options = WorkerOptions::new(config.temporal.task_queue.clone())
        .register_workflow::<RoleOnboarding>()
        .map_err(temporal("cannot register the RoleOnboarding workflow"))?
        .register_workflow::<AiAssessment>()
        .map_err(temporal("cannot register the AiAssessment workflow"))?
        .register_workflow::<TopTasks>()
        .map_err(temporal("cannot register the TopTasks workflow"))?
        .register_workflow::<SkillsAnalysis>()
        .map_err(temporal("cannot register the SkillsAnalysis workflow"))?
        .register_workflow::<StalenessScan>()
        .map_err(temporal("cannot register the StalenessScan workflow"))?
        .register_activities(activities)
        .register_activities(staleness)
        .tuner(tuner(config.worker.max_concurrent_activities))
        .build();
    let mut worker = Worker::new(&runtime, client, options).map_err(temporal("cannot create the worker"))?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_tls = etter_tls::Acceptor::new(&config.worker.metrics_tls, "worker.metrics_tls")?;
    let metrics =
        etter_tls::Incoming::new(process::bind_metrics(config.worker.metrics_listen).await?, metrics_tls, "metrics")
            .map_err(|source| process::MetricsError::Bind { addr: config.worker.metrics_listen, source })?;
    let metrics_addr = process::serve_metrics_on(metrics, "etter-worker", stopped(stop_rx))?;
    etter_telemetry::metrics::describe();
    metrics::gauge!(etter_telemetry::metrics::ACTIVITY_SLOTS).set(config.worker.max_concurrent_activities as f64);
    metrics::gauge!(etter_telemetry::metrics::ACTIVITIES_IN_FLIGHT).increment(0.0);
    process::print_ready_line(
        "etter-worker",
        &[
            ("metrics_addr", metrics_addr.to_string()),
            ("temporal", config.temporal.address.clone()),
            ("namespace", config.temporal.namespace.clone()),
            ("task_queue", config.temporal.task_queue.clone()),
            ("store", store.backend().to_owned()),
        ],
    );

    // The server counts this worker while it records its presence (and not once it stops).
    let presence = Presence::start(Arc::clone(&store), &config);

    let stop = worker.shutdown_handle();
    let running = worker.run();
    tokio::pin!(running);
    let result = tokio::select! {
        result = &mut running => result,
        () = &mut shutdown => {
            tracing::info!(grace = ?config.worker.shutdown_grace, "stopping: no new tasks, running activities finish");
            presence.stop().await;
            stop();
            match tokio::time::timeout(config.worker.shutdown_grace, &mut running).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("activities still running after the grace period; Temporal retries them elsewhere");
                    Ok(())
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    presence.stop().await;
    store.close().await;
    result.map_err(temporal("the worker failed"))
}

/// This worker's presence record in the run store, renewed every `worker.presence_interval`.
struct Presence {
    store: Arc<dyn etter_store::RunStore>,
    id: String,
    renewing: tokio::task::JoinHandle<()>,
}

impl Presence {
    fn start(store: Arc<dyn etter_store::RunStore>, config: &Config) -> Self {
        let started = etter_store::now();
        // Distinct across hosts whose workers share a process id (every container's is 1).
        let mut random = [0_u8; 8];
        let nonce = match getrandom::fill(&mut random) {
            Ok(()) => u64::from_le_bytes(random),
            Err(_) => started.timestamp_nanos_opt().unwrap_or_default().unsigned_abs(),
        };
        let id = format!("{}-{nonce:016x}", identity());
        let (queue, every) = (config.temporal.task_queue.clone(), config.worker.presence_interval);
        let renewing = tokio::spawn({
            let (store, id) = (Arc::clone(&store), id.clone());
            async move {
                let mut ticks = tokio::time::interval(every);
                loop {
                    ticks.tick().await;
                    if let Err(e) = store.worker_seen(&id, &queue, started).await {
                        tracing::warn!(error = %chain(&e), "cannot record this worker's presence; retrying");
                    }
                }
            }
        });
        Self { store, id, renewing }
    }

    /// Stops renewing and records that this worker is gone (idempotent).
    async fn stop(&self) {
        self.renewing.abort();
        if let Err(e) = self.store.worker_gone(&self.id).await {
            tracing::warn!(error = %chain(&e), "cannot record that this worker stopped; it is uncounted once its record ages");
        }
    }
}

/// Runs a staleness scan now, on the workers of the configured task queue, and answers its report.
pub async fn scan_now(config: &Config) -> Result<ScanReport, RunError> {
    let endpoint = Endpoint::from_config(&config.temporal)?;
    let connection = endpoint.connect(identity(), None).await?;
    let client = Client::new(connection, etter_temporal::client_options(&config.temporal.namespace))
        .map_err(temporal("cannot create the Temporal client"))?;
    let id = format!("staleness-scan-now-{}", etter_store::now().timestamp_millis());
    let options = WorkflowStartOptions::new(config.temporal.task_queue.clone(), id).build();
    let handle = client
        .start_workflow(StalenessScan::run, (), options)
        .await
        .map_err(temporal("cannot start the staleness scan"))?;
    handle.get_result(WorkflowGetResultOptions::default()).await.map_err(temporal("the staleness scan failed"))
}

/// The id of the staleness-scan schedule of a task queue.
pub fn scan_schedule_id(task_queue: &str) -> String {
    format!("etter-staleness-scan-{task_queue}")
}

/// Keeps the staleness-scan schedule as configured: (re)created with the configured interval, or
/// removed when the interval is `0s`. A failure is logged, not fatal: the pipeline runs without it.
async fn ensure_scan_schedule(client: &Client, config: &Config) {
    let id = scan_schedule_id(&config.temporal.task_queue);
    let interval = config.worker.staleness_scan_interval;
    // Replacing keeps the interval in step with the configuration when it changed.
    if let Err(err) = client.get_schedule_handle(id.clone()).delete(DeleteScheduleOptions::default()).await {
        tracing::debug!(schedule = %id, "no schedule to replace: {}", chain(&err));
    }
    if interval.is_zero() {
        tracing::info!("staleness scan schedule off (worker.staleness_scan_interval = 0s)");
        return;
    }
    let action = ScheduleAction::start_workflow(
        StalenessScan::run,
        (),
        config.temporal.task_queue.clone(),
        format!("staleness-scan-{}", config.temporal.task_queue),
    );
    let options = CreateScheduleOptions::builder()
        .action(action)
        .spec(ScheduleSpec::from_interval(interval))
        .overlap_policy(ScheduleOverlapPolicy::Skip)
        .build();
    match client.create_schedule(id.clone(), options).await {
        Ok(_) => tracing::info!(schedule = %id, ?interval, "staleness scan scheduled"),
        Err(err) => tracing::warn!(schedule = %id, "cannot create the staleness scan schedule: {}", chain(&err)),
    }
}

/// Connects to Temporal, retrying with a doubling back-off (at most 30 s) until it answers. A
/// connection refused for its configuration (an untrusted or expired certificate, a missing client
/// certificate, an API key the cluster does not accept) is an error at once: waiting does not fix it.
async fn connect_patiently(endpoint: &Endpoint) -> Result<Connection, RunError> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match endpoint.connect(identity(), None).await {
            Ok(connection) => return Ok(connection),
            Err(err) if err.is_refusal() => return Err(err.into()),
            Err(err) => {
                let wait = backoff.next_wait();
                tracing::warn!(retry_in = ?wait, "Temporal is not reachable yet: {}", chain(&err));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Describes the namespace before polling it: a cluster that authorizes calls refuses a worker
/// without an API key (or with one it does not accept) only at its first call that names the
/// namespace, and the SDK's pollers would then fail without saying which setting to change. Any
/// other failure is left to the pollers, which retry.
async fn check_namespace(client: &Client, endpoint: &Endpoint, namespace: &str) -> Result<(), RunError> {
    let request = DescribeNamespaceRequest { namespace: namespace.to_owned(), ..Default::default() };
    let mut client = client.clone();
    match client.describe_namespace(tonic::Request::new(request)).await {
        Ok(_) => Ok(()),
        Err(status) => match endpoint.refusal_advice(status.code()) {
            Some(advice) => Err(RunError::NamespaceRefused {
                namespace: namespace.to_owned(),
                message: status.message().to_owned(),
                advice,
            }),
            None => {
                tracing::warn!(code = ?status.code(), "cannot describe the namespace: {}", status.message());
                Ok(())
            }
        },
    }
}

async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// At most `max_activities` activities at once (10 by default; 50 on a production host); workflow tasks are short
/// and keep the SDK's default.
fn tuner(max_activities: usize) -> WorkerTuner {
    const WORKFLOW_SLOTS: usize = 100;
    TunerHolder::builder()
        .workflow_task_slot_supplier(FixedSizeSlotSupplier::new(WORKFLOW_SLOTS))
        .activity_task_slot_supplier(FixedSizeSlotSupplier::new(max_activities.max(1)))
        .local_activity_task_slot_supplier(FixedSizeSlotSupplier::new(max_activities.max(1)))
        .nexus_task_slot_supplier(FixedSizeSlotSupplier::new(1))
        .build()
        .into()
}

fn identity() -> String {
    format!("etter-worker@{}", std::process::id())
}
