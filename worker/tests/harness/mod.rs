//! Connecting to the dev server and driving a real worker inside one test.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, NamespacedClient, Url, WorkflowIdConflictPolicy,
    WorkflowIdReusePolicy, WorkflowStartOptions,
};
use temporalio_common::data_converters::{
    GenericPayloadConverter, RawValue, SerializationContext, SerializationContextData, TemporalDeserializable,
    TemporalSerializable,
};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tokio::sync::mpsc;

use crate::probe::{
    ProbeActivities, ProbeChild, ProbeCounters, ProbeEvent, ProbeHeartbeat, ProbeParent, ProbeRejecting,
};

pub const ADDRESS_VAR: &str = "ETTER_TEMPORAL__ADDRESS";
pub const NAMESPACE_VAR: &str = "ETTER_TEMPORAL__NAMESPACE";
const HINT: &str = "start it with `scripts/services up temporal` and source .etter/services.env";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds every wait on the server or the worker, so a broken server fails instead of hanging.
pub const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporalSettings {
    pub address: String,
    pub namespace: String,
}

/// Reads the settings through `lookup` so the failure message can be tested without touching
/// the process environment.
pub fn settings_from(lookup: impl Fn(&str) -> Option<String>) -> Result<TemporalSettings> {
    let read = |name: &str| {
        lookup(name)
            .filter(|value| !value.trim().is_empty())
            .ok_or_else(|| anyhow!("{name} is not set: these tests need a real Temporal dev server; {HINT}"))
    };
    Ok(TemporalSettings { address: read(ADDRESS_VAR)?, namespace: read(NAMESPACE_VAR)? })
}

pub async fn connect(settings: &TemporalSettings) -> Result<Client> {
    let url =
        Url::parse(&settings.address).with_context(|| format!("{ADDRESS_VAR}={:?} is not a URL", settings.address))?;
    let options =
        ConnectionOptions::new(url).identity("etter-worker-tests".to_owned()).connect_timeout(CONNECT_TIMEOUT).build();
    let connection = within(CONNECT_TIMEOUT * 2, "the Temporal connection", Connection::connect(options))
        .await?
        .with_context(|| format!("cannot reach Temporal at {}; {HINT}", settings.address))?;
    Ok(Client::new(connection, ClientOptions::new(settings.namespace.clone()).build())?)
}

pub async fn within<T>(limit: Duration, what: &str, work: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(limit, work).await.map_err(|_| anyhow!("timed out after {limit:?} waiting for {what}"))
}

/// Task queues and workflow ids must not collide across tests of one run, nor across runs
/// against a long-lived dev server (ids of closed runs stay reserved under RejectDuplicate).
fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{nanos:x}-{n}", std::process::id())
}

/// One test's private slice of the server: its own task queue, worker and activity instance.
pub struct Probe {
    pub client: Client,
    pub task_queue: String,
    pub counters: Arc<ProbeCounters>,
    events: mpsc::UnboundedReceiver<ProbeEvent>,
    // The core runtime must outlive the worker it created.
    _runtime: Runtime,
}

impl Probe {
    pub async fn start(test: &str) -> Result<(Self, Worker)> {
        init_tracing();
        let settings = settings_from(|name| std::env::var(name).ok())?;
        let client = connect(&settings).await?;
        let runtime = Runtime::from_current_tokio(Default::default())?;
        let task_queue = format!("etter-probe-{test}-{}", unique_suffix());
        let (activities, counters, events) = ProbeActivities::new();
        let options = WorkerOptions::new(task_queue.clone())
            .register_workflow::<ProbeParent>()?
            .register_workflow::<ProbeChild>()?
            .register_workflow::<ProbeHeartbeat>()?
            .register_workflow::<ProbeRejecting>()?
            .register_activities(activities)
            .build();
        let worker = Worker::new(&runtime, client.clone(), options)?;
        let probe = Self { client, task_queue, counters, events, _runtime: runtime };
        Ok((probe, worker))
    }

    pub fn workflow_id(&self, name: &str) -> String {
        format!("{}-{name}", self.task_queue)
    }

    /// The start options the dispatcher will use: a retried start joins the open run, a start
    /// after the run closed is refused.
    pub fn start_options(&self, workflow_id: &str) -> WorkflowStartOptions {
        WorkflowStartOptions::new(self.task_queue.clone(), workflow_id.to_owned())
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            // Leftovers of a failed test then close by themselves on a long-lived dev server.
            .execution_timeout(DEADLINE * 2)
            .build()
    }

    pub async fn expect_event(&mut self, expected: ProbeEvent) -> Result<()> {
        let what = format!("activity event {expected:?}");
        let got =
            within(DEADLINE, &what, self.events.recv()).await?.context("the activities dropped their event channel")?;
        ensure!(got == expected, "expected {expected:?}, the activity reported {got:?}");
        Ok(())
    }

    /// Payloads as the untyped client API wants them: converted but not codec-encoded, because
    /// the client applies the codec itself.
    pub fn encode<T: TemporalSerializable + 'static>(&self, value: &T) -> Result<RawValue> {
        let converter = self.client.data_converter().payload_converter();
        let context = SerializationContext::new(&SerializationContextData::None, converter);
        let payload =
            converter.to_payload(&context, value).map_err(|err| anyhow!("cannot convert the workflow input: {err}"))?;
        Ok(RawValue::new(vec![payload]))
    }

    pub fn decode<T: TemporalDeserializable + 'static>(&self, raw: RawValue) -> Result<T> {
        let converter = self.client.data_converter().payload_converter();
        let context = SerializationContext::new(&SerializationContextData::None, converter);
        converter
            .from_payloads(&context, raw.payloads)
            .map_err(|err| anyhow!("cannot convert the workflow result: {err}"))
    }
}

/// Runs `scenario` while polling the `!Send` worker on this same task (a `tokio::spawn` would
/// not compile), then shuts the worker down gracefully whatever the scenario's outcome.
pub async fn drive<T>(worker: &mut Worker, scenario: impl Future<Output = Result<T>>) -> Result<T> {
    let shutdown = worker.shutdown_handle();
    let scenario = async move {
        let outcome = within(DEADLINE * 2, "the test scenario", scenario).await.and_then(|outcome| outcome);
        shutdown();
        outcome
    };
    let run = worker.run();
    tokio::pin!(scenario, run);
    tokio::select! {
        outcome = &mut scenario => {
            let stopped = within(DEADLINE, "the worker to shut down", run)
                .await
                .and_then(|stopped| stopped.context("worker failed while shutting down"));
            // Neither failure may hide the other: the scenario's is usually the one that explains.
            match (outcome, stopped) {
                (outcome, Ok(())) => outcome,
                (Ok(_), Err(worker)) => Err(worker),
                (Err(scenario), Err(worker)) => Err(scenario.context(format!("the worker failed too: {worker:#}"))),
            }
        }
        stopped = &mut run => {
            stopped.context("worker stopped with an error")?;
            bail!("worker stopped before the scenario finished")
        }
    }
}

fn init_tracing() {
    // Test-writer output is captured per test and shown only when it fails.
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
