//! The pipeline's metrics (seed §10), named once for both binaries. `etter-server` exports the
//! control plane's view (queue depth, queue wait, runs created, runs its reconciler closed),
//! `etter-worker` the execution's (processing time, outcomes, tokens per role, errors by step and
//! type, utilisation); Prometheus scrapes both.
//!
//! | seed §10 | metric |
//! |---|---|
//! | queue depth | `etter_queue_depth` (gauge) |
//! | processing time p50/p99 | `etter_run_processing_seconds` (summary: quantiles 0.5, 0.99, …) |
//! | success rate | `etter_runs_finished_total{state="READY"}` over all `etter_runs_finished_total` |
//! | queue wait | `etter_run_queue_wait_seconds` (summary) |
//! | retry rate | `etter_runs_created_total{via="retry"}` over all `etter_runs_created_total` |
//! | tokens per role | `etter_run_tokens` (summary) |
//! | errors by step/type | `etter_step_errors_total{step, code}` |
//! | worker utilisation | `etter_worker_activities_in_flight` over `etter_worker_activity_slots` |

use std::time::Duration;

/// Runs created, by how (`push`, `batch`, `retry`).
pub const RUNS_CREATED: &str = "etter_runs_created_total";
/// Runs that reached a final state, by state.
pub const RUNS_FINISHED: &str = "etter_runs_finished_total";
/// Seconds from a run's start (PROCESSING) to its end.
pub const RUN_PROCESSING_SECONDS: &str = "etter_run_processing_seconds";
/// Seconds from a run's push to its start.
pub const RUN_QUEUE_WAIT_SECONDS: &str = "etter_run_queue_wait_seconds";
/// LLM tokens one run used (input and output).
pub const RUN_TOKENS: &str = "etter_run_tokens";
/// QUEUED runs of every company.
pub const QUEUE_DEPTH: &str = "etter_queue_depth";
/// PROCESSING runs of every company.
pub const RUNS_PROCESSING: &str = "etter_runs_processing";
/// Failed step attempts, by step and error code.
pub const STEP_ERRORS: &str = "etter_step_errors_total";
/// Activities a worker is executing now.
pub const ACTIVITIES_IN_FLIGHT: &str = "etter_worker_activities_in_flight";
/// Activities a worker may execute at once.
pub const ACTIVITY_SLOTS: &str = "etter_worker_activity_slots";
/// Gauge: audit entries waiting to be written.
pub const AUDIT_PENDING: &str = "etter_audit_pending_entries";
/// Calls refused for what they asked, by RPC and status code.
pub const CALLS_REFUSED: &str = "etter_calls_refused_total";

/// Registers the help texts (shown on `/metrics`).
pub fn describe() {
    use metrics::Unit;
    metrics::describe_counter!(RUNS_CREATED, "Runs created, by how: push, batch or retry.");
    metrics::describe_counter!(RUNS_FINISHED, "Runs that reached a final state, by state.");
    metrics::describe_histogram!(RUN_PROCESSING_SECONDS, Unit::Seconds, "From a run's start to its end.");
    metrics::describe_histogram!(RUN_QUEUE_WAIT_SECONDS, Unit::Seconds, "From a run's push to its start.");
    metrics::describe_histogram!(RUN_TOKENS, Unit::Count, "LLM tokens one finished run used.");
    metrics::describe_gauge!(QUEUE_DEPTH, Unit::Count, "QUEUED runs of every company.");
    metrics::describe_gauge!(RUNS_PROCESSING, Unit::Count, "PROCESSING runs of every company.");
    metrics::describe_counter!(STEP_ERRORS, "Failed step attempts, by step and error code.");
    metrics::describe_gauge!(ACTIVITIES_IN_FLIGHT, Unit::Count, "Activities this worker is executing.");
    metrics::describe_gauge!(ACTIVITY_SLOTS, Unit::Count, "Activities this worker may execute at once.");
    metrics::describe_gauge!(AUDIT_PENDING, Unit::Count, "Audit entries queued and not yet written.");
    metrics::describe_counter!(CALLS_REFUSED, "Calls refused for what they asked, by RPC and status code.");
}

/// Counts a call refused for what it asked.
pub fn call_refused(method: &str, code: &'static str) {
    metrics::counter!(CALLS_REFUSED, "method" => method.to_owned(), "code" => code).increment(1);
}

/// Audit entries were queued (a positive `change`) or written (a negative one).
pub fn audit_pending(change: f64) {
    metrics::gauge!(AUDIT_PENDING).increment(change);
}

/// Counts runs created `via` push, batch or retry.
pub fn runs_created(via: &'static str, count: u64) {
    if count > 0 {
        metrics::counter!(RUNS_CREATED, "via" => via).increment(count);
    }
}

/// Records a run that just reached its final state (`state`): the outcome, its processing time
/// (when it started) and its tokens.
pub fn run_finished(state: &'static str, processing: Option<Duration>, tokens: i64) {
    metrics::counter!(RUNS_FINISHED, "state" => state).increment(1);
    if let Some(processing) = processing {
        metrics::histogram!(RUN_PROCESSING_SECONDS).record(processing.as_secs_f64());
    }
    metrics::histogram!(RUN_TOKENS).record(tokens.max(0) as f64);
}

/// Sets the queue gauges: QUEUED and PROCESSING runs of every company.
pub fn queue(queued: u64, processing: u64) {
    metrics::gauge!(QUEUE_DEPTH).set(queued as f64);
    metrics::gauge!(RUNS_PROCESSING).set(processing as f64);
}

/// Records how long a run that just started waited in the queue.
pub fn run_started(queue_wait: Duration) {
    metrics::histogram!(RUN_QUEUE_WAIT_SECONDS).record(queue_wait.as_secs_f64());
}
