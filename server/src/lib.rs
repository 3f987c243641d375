//! The gRPC control plane: `etter.pipeline.v1.PipelineService`, health, reflection and grpc-web on
//! one port.
//!
//! [`serve`] takes its shutdown as a future, so `main` owns the signals and tests own the lifetime.

mod api;
pub mod auth;
mod error;

use std::{future::Future, net::SocketAddr, time::Duration};

use etter_pipeline::{Config, process};
use etter_proto::v1::pipeline_service_server::PipelineServiceServer;
use http::{HeaderName, Method};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use error::ApiError;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The reflection service could not be built from the descriptor sets.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The token signing key could not be prepared.
    #[error(transparent)]
    Key(#[from] auth::KeyError),
    /// The `/metrics` endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] process::MetricsError),
    /// The transport failed while serving.
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Largest request the server decodes; batches of 2,500 roles fit well within it.
const MAX_DECODING_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Serves until `shutdown` resolves, then drains: health turns NOT_SERVING, new calls are refused,
/// and in-flight calls and streams get `server.shutdown_grace` to finish.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| ServeError::Bind { addr: config.server.listen, source })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind { addr: config.server.listen, source })?;

    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let metrics_addr =
        process::serve_metrics(config.server.metrics_listen, "etter-server", draining(drain_rx.clone())).await?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // Older grpcurl speaks only v1alpha; both dialects serve the contract and health.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(etter_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let secret = auth::signing_secret(&config.auth, &config.data_dir)?;
    let authenticator = auth::Authenticator::new(&config.auth, &secret);
    // Health and reflection stay open; every PipelineService call is authenticated.
    let pipeline = tonic::service::interceptor::InterceptedService::new(
        PipelineServiceServer::new(api::PipelineApi::new()).max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        authenticator,
    );
    health_reporter.set_serving::<PipelineServiceServer<api::PipelineApi>>().await;
    // The empty service name reports the server as a whole.
    health_reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;

    let grace = config.server.shutdown_grace;
    let reporter = health_reporter.clone();
    let stop = async move {
        shutdown.await;
        reporter.set_not_serving::<PipelineServiceServer<api::PipelineApi>>().await;
        reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        let _ = drain_tx.send(true);
        tracing::info!("draining");
    };

    let server = Server::builder()
        .accept_http1(true)
        .layer(cors_layer(&config.server.cors_allowed_origins))
        .layer(tonic_web::GrpcWebLayer::new())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(pipeline)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop);

    tracing::info!(addr = %local_addr, "etter-server listening");
    process::print_ready_line(
        "etter-server",
        &[("grpc_addr", local_addr.to_string()), ("metrics_addr", metrics_addr.to_string())],
    );

    tokio::select! {
        result = server => result?,
        () = grace_elapsed(drain_rx, grace) => {
            tracing::warn!(grace = ?grace, "shutdown grace elapsed with calls still open; closing them");
        }
    }
    tracing::info!("etter-server stopped");
    Ok(())
}

/// Resolves when draining starts.
async fn draining(mut drain: tokio::sync::watch::Receiver<bool>) {
    if drain.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves `grace` after draining started; never resolves before.
async fn grace_elapsed(drain: tokio::sync::watch::Receiver<bool>, grace: Duration) {
    draining(drain).await;
    tokio::time::sleep(grace).await;
}

/// CORS for grpc-web callers. `authorization` is never covered by a wildcard, so every header a
/// browser client sends is listed, and the gRPC trailers it must read are exposed.
fn cors_layer(allowed_origins: &[String]) -> CorsLayer {
    let origin = if allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(allowed_origins.iter().filter_map(|o| o.parse().ok()))
    };
    let header = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header("content-type"),
            header("authorization"),
            header("x-grpc-web"),
            header("x-user-agent"),
            header("grpc-timeout"),
            header("x-request-id"),
            header("traceparent"),
        ])
        .expose_headers([header("grpc-status"), header("grpc-message"), header("grpc-status-details-bin")])
        .max_age(Duration::from_secs(24 * 60 * 60))
}
