//! What `grpc.health.v1.Health` reports (docs/operations.md), refreshed every `server.health_check_interval`.
//!
//! | service name | SERVING when |
//! |---|---|
//! | `""` (the server) and `etter.pipeline.v1.PipelineService` | the run store answers |
//! | `etter.temporal` | the Temporal frontend answers for the configured namespace |
//! | `etter.worker` | a worker polls the task queue (Temporal saw a poll start within `dispatch.worker_seen_within`) and, once workers recorded their presence in the run store, one did within `dispatch.worker_presence_within` |
//! | `etter.graph` | the role graph (Neo4j, or the embedded `{data_dir}/graph.db`) opens and answers a ping |
//! | `etter.redis` | only with `redis.url`: Redis answers `PING` (live fan-out; without it streams poll) |
//! | `etter.identity_provider` | only with `auth.jwks_url` or `auth.oidc_discovery`: the last fetch of the provider's key set succeeded (after a failed one the last good keys still verify) |
//!
//! Pushes are accepted and queued while Temporal or the graph is down (statuses then omit the
//! outputs summary), and watch streams fall back to polling the store while Redis is down, so the
//! pipeline service stays SERVING then; without a worker runs are accepted and started, and wait
//! (`WAIT_REASON_NO_WORKER`) until one polls. While draining every entry is
//! NOT_SERVING.

use std::{sync::Arc, time::Duration};

use crate::orchestrator::{Orchestrator, OrchestratorError};
use etter_core::error::chain;
use etter_store::RunStore;
use tokio::sync::watch;
use tonic_health::{ServingStatus, server::HealthReporter};

use etter_store::fanout::Probe;

use crate::graph::GraphReader;
use crate::wait::Conditions;

/// The health entry of the Temporal cluster.
pub const TEMPORAL_SERVICE: &str = "etter.temporal";

/// The health entry of the workers: whether one polls the task queue.
pub const WORKER_SERVICE: &str = "etter.worker";

/// The health entry of the role graph.
pub const GRAPH_SERVICE: &str = "etter.graph";

/// The health entry of Redis (registered only when `redis.url` is set).
pub const REDIS_SERVICE: &str = "etter.redis";

/// The entries that follow the run store.
const STORE_SERVICES: [&str; 2] = ["", etter_proto::PIPELINE_SERVICE_NAME];

fn serving(up: bool) -> ServingStatus {
    if up { ServingStatus::Serving } else { ServingStatus::NotServing }
}

/// Sets the store's entries.
pub async fn report_store(reporter: &HealthReporter, up: bool) {
    for service in STORE_SERVICES {
        reporter.set_service_status(service, serving(up)).await;
    }
}

/// Sets every entry NOT_SERVING (draining).
pub async fn report_draining(reporter: &HealthReporter, redis: bool) {
    report_store(reporter, false).await;
    report_dependencies_down(reporter, redis).await;
}

/// Sets the dependencies' entries NOT_SERVING, as at start until their first check.
pub async fn report_dependencies_down(reporter: &HealthReporter, redis: bool) {
    for service in [TEMPORAL_SERVICE, WORKER_SERVICE, GRAPH_SERVICE] {
        reporter.set_service_status(service, ServingStatus::NotServing).await;
    }
    if redis {
        reporter.set_service_status(REDIS_SERVICE, ServingStatus::NotServing).await;
    }
}

/// Learns once, before the server answers calls, whether Temporal answers and a worker polls, so
/// the first answers already say why runs wait. Bounded by `bound`: a Temporal that does not answer
/// in time is left to the health loop (the conditions stay unknown until its first check).
pub(crate) async fn first_look(
    orchestrator: &dyn Orchestrator,
    conditions: &Conditions,
    workers: &Workers,
    bound: Duration,
) {
    match tokio::time::timeout(bound, look_at_temporal(orchestrator, workers)).await {
        Ok((temporal, workers)) => {
            conditions.set_temporal(temporal.is_ok());
            if let Ok(polling) = workers {
                conditions.set_workers(polling);
            }
        }
        Err(_) => tracing::debug!(?bound, "temporal did not answer the first look; the health loop keeps trying"),
    }
}

/// How the server tells whether workers take the task queue's work.
pub(crate) struct Workers {
    /// Where workers record their presence.
    pub store: Arc<dyn RunStore>,
    /// The pipeline's task queue (`temporal.task_queue`).
    pub task_queue: String,
    /// How recent a worker's poll must be for it to count (`dispatch.worker_seen_within`).
    pub seen_within: Duration,
    /// How recent a worker's presence record must be (`dispatch.worker_presence_within`).
    pub presence_within: Duration,
}

/// Whether Temporal answers and, if it does, whether workers take the task queue's work: one
/// polled within `seen_within` and, once workers recorded their presence in the store, one did so
/// within `presence_within`. Temporal keeps listing a worker that stopped until its last poll ages
/// out (an idle worker's poll is held up to a minute); its presence record stops at once, so a
/// stopped worker is noticed in `presence_within`. No worker can be known to poll a Temporal that
/// does not answer.
async fn look_at_temporal(
    orchestrator: &dyn Orchestrator,
    workers: &Workers,
) -> (Result<(), OrchestratorError>, Result<bool, OrchestratorError>) {
    let temporal = orchestrator.ping().await;
    let polling = match temporal {
        Ok(()) => orchestrator.workers_polling(workers.seen_within).await,
        Err(_) => Ok(false),
    };
    let present = match polling {
        Ok(true) => {
            let since = etter_store::now() - chrono::TimeDelta::from_std(workers.presence_within).unwrap_or_default();
            match workers.store.workers_seen(&workers.task_queue, since).await {
                // No record at all: workers that do not record their presence, Temporal decides.
                Ok(seen) => Ok(seen.known == 0 || seen.recent > 0),
                // The store's own entry reports it; the pollers decide meanwhile.
                Err(e) => {
                    tracing::debug!(error = %chain(&e), "cannot read the workers' presence");
                    Ok(true)
                }
            }
        }
        other => other,
    };
    (temporal, present)
}

/// What the health loop checks.
pub(crate) struct Checked {
    /// The run store.
    pub store: Arc<dyn RunStore>,
    /// Temporal.
    pub orchestrator: Arc<dyn Orchestrator>,
    /// The role graph.
    pub graph: Arc<GraphReader>,
    /// Redis, when configured.
    pub redis: Option<Probe>,
    /// Where Temporal's and the workers' availability is published (why runs wait).
    pub conditions: Arc<Conditions>,
    /// How the workers are looked at.
    pub workers: Workers,
    /// The identity provider's keys, when they come from its URL.
    pub identity: Option<Arc<crate::jwks::RemoteKeys>>,
}

/// Checks the store, Temporal, the graph and Redis every `interval` until `drain` turns true; then
/// reports every entry NOT_SERVING.
pub(crate) async fn run(
    reporter: HealthReporter,
    checked: Checked,
    interval: Duration,
    mut drain: watch::Receiver<bool>,
) {
    let Checked { store, orchestrator, graph, redis, conditions, workers: watched, identity } = checked;
    let mut identity_up = None;
    let mut store_up = None;
    let mut temporal_up = None;
    let mut workers_up = None;
    let mut graph_up = None;
    let mut redis_up = None;
    // Each check is bounded (Temporal by `dispatch.temporal_timeout`): a hung database must not
    // freeze the report. They run at once, so one slow service does not delay the others.
    let bound = interval.max(Duration::from_secs(1));
    while !*drain.borrow() {
        let (store_ok, (temporal, workers), graph_result, redis_result) = tokio::join!(
            async { matches!(tokio::time::timeout(bound, store.ping()).await, Ok(Ok(()))) },
            look_at_temporal(orchestrator.as_ref(), &watched),
            graph.ping(bound),
            async {
                match &redis {
                    Some(probe) => Some(probe.ping(bound).await),
                    None => None,
                }
            },
        );
        let temporal_ok = temporal.is_ok();
        conditions.set_temporal(temporal_ok);
        let graph_ok = graph_result.is_ok();
        // A Temporal that answers the ping but not the task queue's description says nothing of
        // the workers: the last verdict stands.
        match &workers {
            Ok(polling) => {
                conditions.set_workers(*polling);
                if workers_up != Some(*polling) {
                    if *polling {
                        tracing::info!("a worker polls the task queue");
                    } else if temporal_ok {
                        tracing::warn!(
                            polled_within = ?watched.seen_within,
                            present_within = ?watched.presence_within,
                            "no worker takes the task queue's work; runs wait until one is started"
                        );
                    }
                    reporter.set_service_status(WORKER_SERVICE, serving(*polling)).await;
                    workers_up = Some(*polling);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot describe the task queue; the workers' last verdict stands"),
        }
        if store_up != Some(store_ok) {
            tracing::info!(backend = store.backend(), up = store_ok, "run store health changed");
            report_store(&reporter, store_ok).await;
            store_up = Some(store_ok);
        }
        if temporal_up != Some(temporal_ok) {
            match &temporal {
                Ok(()) => tracing::info!("temporal is reachable"),
                Err(e @ OrchestratorError::Rejected(_)) => {
                    tracing::error!(error = %e, "temporal refuses this server; pushes stay queued")
                }
                Err(e) => tracing::warn!(error = %e, "temporal is not reachable; pushes stay queued"),
            }
            reporter.set_service_status(TEMPORAL_SERVICE, serving(temporal_ok)).await;
            temporal_up = Some(temporal_ok);
        }
        if graph_up != Some(graph_ok) {
            // The graph reader logs outages itself (once per outage).
            reporter.set_service_status(GRAPH_SERVICE, serving(graph_ok)).await;
            graph_up = Some(graph_ok);
        }
        if let Some(result) = redis_result {
            let redis_ok = result.is_ok();
            if redis_up != Some(redis_ok) {
                match &result {
                    Ok(()) => tracing::info!("redis is reachable"),
                    Err(e) => tracing::warn!(error = %chain(e), "redis is not reachable; watch streams poll the store"),
                }
                reporter.set_service_status(REDIS_SERVICE, serving(redis_ok)).await;
                redis_up = Some(redis_ok);
            }
        }
        if let Some(identity) = &identity {
            // The keys stay usable after a failed fetch; the entry says the set may be stale.
            let current = identity.status().current;
            if identity_up != Some(current) {
                reporter.set_service_status(crate::jwks::HEALTH_SERVICE, serving(current)).await;
                identity_up = Some(current);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = drain.changed() => {}
        }
    }
    report_draining(&reporter, redis.is_some()).await;
    if identity.is_some() {
        reporter.set_service_status(crate::jwks::HEALTH_SERVICE, ServingStatus::NotServing).await;
    }
}
