//! The domain shared by `etter-server` and `etter-worker`.
//!
//! This crate knows nothing of either binary: both depend on it, never the other way round. It holds
//! the configuration both read, process plumbing both need (telemetry, shutdown), and — as the
//! pipeline grows — ids, the role lifecycle, the step graph, input hashing, validation, and the
//! store, graph, document and LLM traits with their implementations.

pub mod audit;
pub mod config;
pub mod documents;
#[cfg(feature = "fanout")]
pub mod fanout;
#[cfg(feature = "graph")]
pub mod graph;
pub mod ids;
pub mod lifecycle;
#[cfg(feature = "llm")]
pub mod llm;
pub mod observe;
pub mod orchestrator;
pub mod outputs;
pub mod process;
pub mod steps;
pub mod store;
pub mod workflow;

pub use config::{Config, ConfigError};
