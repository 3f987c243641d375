//! What both binaries share about running as a process: logs ([`LogConfig`]), spans exported over
//! OTLP ([`TracingConfig`], [`process::init_tracing`]) and trace context between processes
//! ([`context`]), metrics and their Prometheus exporter ([`metrics`]), the readiness line and
//! shutdown signals ([`process`]).

mod config;
pub mod context;
pub mod metrics;
pub mod process;

pub use config::{LogConfig, LogFormat, TracingConfig};
