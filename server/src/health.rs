//! What `grpc.health.v1.Health` reports (DESIGN §7), refreshed every `server.health_check_interval`.
//!
//! | service name | SERVING when |
//! |---|---|
//! | `""` (the server) and `etter.pipeline.v1.PipelineService` | the run store answers |
//! | `etter.temporal` | the Temporal frontend answers for the configured namespace |
//!
//! Pushes are accepted and queued while Temporal is down, so the pipeline service stays SERVING
//! then. While draining every entry is NOT_SERVING.

use std::{sync::Arc, time::Duration};

use etter_pipeline::{orchestrator::Orchestrator, store::RunStore};
use tokio::sync::watch;
use tonic_health::{ServingStatus, server::HealthReporter};

/// The health entry of the Temporal cluster.
pub const TEMPORAL_SERVICE: &str = "etter.temporal";

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
pub async fn report_draining(reporter: &HealthReporter) {
    report_store(reporter, false).await;
    reporter.set_service_status(TEMPORAL_SERVICE, ServingStatus::NotServing).await;
}

/// Checks the store and Temporal every `interval` until `drain` turns true; then reports every
/// entry NOT_SERVING.
pub async fn run(
    reporter: HealthReporter,
    store: Arc<dyn RunStore>,
    orchestrator: Arc<dyn Orchestrator>,
    interval: Duration,
    mut drain: watch::Receiver<bool>,
) {
    let mut store_up = None;
    let mut temporal_up = None;
    while !*drain.borrow() {
        // Each check is bounded: a hung database must not freeze the report.
        let store_ok =
            matches!(tokio::time::timeout(interval.max(Duration::from_secs(1)), store.ping()).await, Ok(Ok(())));
        let temporal = orchestrator.ping().await;
        let temporal_ok = temporal.is_ok();
        if store_up != Some(store_ok) {
            tracing::info!(backend = store.backend(), up = store_ok, "run store health changed");
            report_store(&reporter, store_ok).await;
            store_up = Some(store_ok);
        }
        if temporal_up != Some(temporal_ok) {
            match &temporal {
                Ok(()) => tracing::info!("temporal is reachable"),
                Err(e) => tracing::warn!(error = %e, "temporal is not reachable; pushes stay queued"),
            }
            reporter.set_service_status(TEMPORAL_SERVICE, serving(temporal_ok)).await;
            temporal_up = Some(temporal_ok);
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = drain.changed() => {}
        }
    }
    report_draining(&reporter).await;
}
