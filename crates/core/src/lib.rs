//! The domain of the Etter pipeline, free of any I/O: what a role, a run and a step are, and the
//! rules between them.
//!
//! - [`ids`]: the identifiers clients and stores exchange, each validated once at the edge;
//! - [`lifecycle`]: a run's states and the transitions between them;
//! - [`steps`]: the step graph, step input hashes and how a run is planned (run, reuse, skip);
//! - [`outputs`]: what each step produces;
//! - [`digest`]: a step's outputs as items a person compares between runs, and why they deserve a review;
//! - [`workflow`]: the interface between the server, which starts workflows, and the worker,
//!   which runs them;
//! - [`audit`]: the audit log's entries and their keyed hash chain;
//! - [`backoff`]: the waits between attempts at a call to another system that failed;
//! - [`error`]: printing an error with its causes, where only its text would otherwise be kept.
//!
//! Every other crate of the workspace builds on this one; it depends on none of them.

pub mod audit;
pub mod backoff;
pub mod digest;
pub mod error;
pub mod ids;
pub mod lifecycle;
pub mod outputs;
pub mod steps;
pub mod workflow;

/// A point in time as stored: UTC, microsecond precision in the stores.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
