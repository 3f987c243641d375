//! Process plumbing shared by both binaries: logging set-up and the shutdown signal.
//!
//! Only `main` functions call these; libraries take their shutdown as an injected future.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::LogConfig;
use crate::LogFormat;

/// Installs the global `tracing` subscriber described by `[log]`. Logs go to stderr so stdout stays
/// free for machine-readable output (the readiness line). Calling it twice is harmless.
pub fn init_telemetry(log: &LogConfig) {
    let filter = EnvFilter::try_new(&log.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match log.format {
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init(),
    };
    if let Err(e) = result {
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
