//! Process plumbing shared by both binaries: logging set-up and the shutdown signal.
//!
//! Only `main` functions call these; libraries take their shutdown as an injected future.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::{IdGenerator, Sampler, SdkTracerProvider};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::{LogConfig, LogFormat, TracingConfig};

/// Installs the global `tracing` subscriber described by `[log]`, without span export. Logs go to
/// stderr so stdout stays free for machine-readable output (the readiness line). Calling it twice
/// is harmless.
pub fn init_telemetry(log: &LogConfig) {
    install(log, None);
}

/// What [`init_tracing`] started: the span exporter, which [`Telemetry::shutdown`] flushes.
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "the last spans could not be exported");
        }
    }
}

/// Why span export could not start.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    /// The exporter could not be made.
    #[error("cannot export spans to tracing.otlp_endpoint = {endpoint}: {source}")]
    Exporter {
        /// The endpoint.
        endpoint: String,
        /// Why.
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// `[tracing.tls]` names files that do not load.
    #[error(transparent)]
    Tls(#[from] etter_config::ConfigError),
}

/// Installs the global `tracing` subscriber of `[log]` and, when `[tracing]` names an OTLP
/// endpoint, exports the spans there as `service` (batched on the current tokio runtime, which
/// must exist), with W3C trace context as the global propagator. `ids` makes span and trace ids:
/// the worker's must be replay-safe for workflow spans.
pub fn init_tracing(
    log: &LogConfig,
    tracing_config: &TracingConfig,
    service: &'static str,
    ids: impl IdGenerator + 'static,
) -> Result<Telemetry, TracingError> {
    if !tracing_config.exports() {
        init_telemetry(log);
        return Ok(Telemetry { provider: None });
    }
    let endpoint = tracing_config.otlp_endpoint.trim().to_owned();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint.clone());
    if endpoint.starts_with("https://") {
        exporter = exporter.with_tls_config(collector_tls(&tracing_config.tls)?);
    }
    let exporter = exporter.build().map_err(|source| TracingError::Exporter { endpoint: endpoint.clone(), source })?;
    let batches = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
        exporter,
        opentelemetry_sdk::runtime::Tokio,
    )
    .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(tracing_config.sample_ratio))))
        .with_id_generator(ids)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    let filter = EnvFilter::try_new(&tracing_config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(service)).with_filter(filter).boxed();
    install(log, Some(layer));
    tracing::info!(endpoint = %endpoint, ratio = tracing_config.sample_ratio, "exporting spans over OTLP");
    Ok(Telemetry { provider: Some(provider) })
}

/// Runs `main` on `runtime` with the telemetry `start` installs inside it (the span exporter
/// batches on that runtime), then flushes the spans still buffered, whatever `main` answered.
pub fn block_on_with_telemetry<T>(
    runtime: &tokio::runtime::Runtime,
    start: impl FnOnce() -> Result<Telemetry, TracingError>,
    main: impl std::future::Future<Output = T>,
) -> Result<T, TracingError> {
    let telemetry = {
        let _inside = runtime.enter();
        start()?
    };
    let answer = runtime.block_on(main);
    runtime.block_on(async { telemetry.shutdown() });
    Ok(answer)
}

/// TLS to an https:// collector: `[tracing.tls]`'s CA (else the system's roots), client
/// certificate and server name.
fn collector_tls(
    tls: &etter_config::tls::ClientTls,
) -> Result<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig, TracingError> {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
    let files = tls.load("tracing.tls")?;
    let mut config = ClientTlsConfig::new();
    config = match files.ca_pem {
        Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
        None => config.with_native_roots(),
    };
    if let Some((cert, key)) = files.identity_pem {
        config = config.identity(Identity::from_pem(cert, key));
    }
    if let Some(name) = files.server_name {
        config = config.domain_name(name);
    }
    Ok(config)
}

type BoxedLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// Installs the log layer (filtered by `log.filter`) and, when given, the span layer beside it
/// (filtered by its own `tracing.filter`).
fn install(log: &LogConfig, spans: Option<BoxedLayer>) {
    let filter = EnvFilter::try_new(&log.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs: BoxedLayer = match log.format {
        LogFormat::Text => fmt::layer().with_writer(std::io::stderr).with_filter(filter).boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).with_filter(filter).boxed(),
    };
    let layers: Vec<BoxedLayer> = std::iter::once(logs).chain(spans).collect();
    if let Err(e) = tracing_subscriber::registry().with(layers).try_init() {
        tracing::debug!(error = %e, "telemetry already initialised");
    }
}

/// Listens for SIGINT and SIGTERM from the moment it is called (so a signal that arrives before
/// the returned future is first polled is not lost to the default action) and resolves on the
/// first one. A second signal forces the process to exit with status 130, so a stuck drain can
/// always be interrupted. Must be called inside a tokio runtime.
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut signals = Signals::register()?;
    Ok(async move {
        signals.recv().await;
        tracing::info!("shutdown requested; send the signal again to force exit");
        tokio::spawn(async move {
            signals.recv().await;
            tracing::warn!("second signal: forcing exit");
            std::process::exit(130);
        });
    })
}

/// SIGINT and SIGTERM, registered eagerly.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Prints the one machine-readable readiness line that tests and scripts wait for:
/// `{"ready":"<binary>", …fields}` on stdout, flushed.
pub fn print_ready_line(binary: &str, fields: &[(&str, String)]) {
    use std::io::Write as _;
    let mut map = serde_json::Map::new();
    map.insert("ready".to_owned(), serde_json::Value::String(binary.to_owned()));
    for (k, v) in fields {
        map.insert((*k).to_owned(), serde_json::Value::String(v.clone()));
    }
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{}", serde_json::Value::Object(map));
    let _ = stdout.flush();
}

/// Why the `/metrics` endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listener could not be bound.
    #[error("cannot listen for /metrics on {addr}")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The listener's address cannot be read.
    #[error("cannot read the /metrics listener's address")]
    LocalAddr(#[source] std::io::Error),
    /// Another recorder is installed already. Shared: the process keeps the first attempt's
    /// outcome, and every later caller gets the same error.
    #[error("cannot install the Prometheus recorder")]
    Recorder(#[source] std::sync::Arc<metrics_exporter_prometheus::BuildError>),
}

/// The process-wide Prometheus recorder, installed on first use (a process has one recorder; tests
/// may serve several times in one process).
fn prometheus_handle() -> Result<metrics_exporter_prometheus::PrometheusHandle, MetricsError> {
    type Installed =
        Result<metrics_exporter_prometheus::PrometheusHandle, std::sync::Arc<metrics_exporter_prometheus::BuildError>>;
    static HANDLE: std::sync::OnceLock<Installed> = std::sync::OnceLock::new();
    // `get_or_init` runs one initializer at a time, so concurrent first calls install once.
    HANDLE
        .get_or_init(|| {
            // Every histogram has fixed buckets, so no series is a summary: ours have their own,
            // anything else (the Temporal SDK's latencies, in seconds) these.
            let mut builder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(crate::metrics::DEFAULT_SECONDS_BUCKETS)
                .map_err(std::sync::Arc::new)?;
            for metric in crate::metrics::METRICS {
                if let crate::metrics::Kind::Histogram(buckets) = metric.kind {
                    let name = metrics_exporter_prometheus::Matcher::Full(metric.name.to_owned());
                    builder = builder.set_buckets_for_metric(name, buckets).map_err(std::sync::Arc::new)?;
                }
            }
            builder.install_recorder().map_err(std::sync::Arc::new)
        })
        .clone()
        .map_err(MetricsError::Recorder)
}

/// Binds the `/metrics` listener, naming the address when it cannot.
pub async fn bind_metrics(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, MetricsError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })
}

/// Installs the process-wide Prometheus recorder and serves it as `GET /metrics` on `listener`
/// (a bound TCP listener, or one that serves TLS) until `shutdown` resolves. Returns its local
/// address.
pub fn serve_metrics_on<L>(
    listener: L,
    binary: &'static str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<L::Addr, MetricsError>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let local = listener.local_addr().map_err(MetricsError::LocalAddr)?;
    let handle = prometheus_handle()?;
    metrics::gauge!(crate::metrics::BUILD_INFO, "binary" => binary, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::warn!(error = %e, "the /metrics endpoint stopped");
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_metrics_address_is_named_with_the_os_error_as_its_source() -> std::io::Result<()> {
        let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = taken.local_addr()?;
        let err = bind_metrics(addr).await.err();
        let Some(err @ MetricsError::Bind { .. }) = err else { panic!("want a bind error, got {err:?}") };
        assert_eq!(err.to_string(), format!("cannot listen for /metrics on {addr}"));
        let source = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(source.map(std::io::Error::kind), Some(std::io::ErrorKind::AddrInUse));
        Ok(())
    }
}
