//! What both binaries share about running as a process: logs ([`LogConfig`]), metrics and their
//! Prometheus exporter ([`metrics`]), the readiness line and shutdown signals ([`process`]).

mod config;
pub mod metrics;
pub mod process;

pub use config::{LogConfig, LogFormat};
