//! The pipeline's metrics, named once for both binaries: [`METRICS`] lists every metric either
//! binary exports, with its kind, labels and help text; `docs/operations.md` shows the same table
//! (checked current by the layout tests) and the end-to-end metrics suite checks that nothing is
//! exported beyond it. `etter-server` exports the control plane's view (queue depth, queue wait,
//! runs created, refused calls), `etter-worker` the execution's (processing time, outcomes,
//! tokens per role, errors by step and type, utilisation); Prometheus scrapes both. Observations
//! are histograms with fixed buckets (not summaries), so the replicas' series add up.
//!
//! What an operator usually asks, and where it is:
//!
//! | question | metric |
//! |---|---|
//! | queue depth | `etter_queue_depth` |
//! | processing time p50/p99 | `histogram_quantile(0.5, sum by (le) (rate(etter_run_processing_seconds_bucket[5m])))`, and 0.99 |
//! | success rate | `etter_runs_finished_total{state="READY"}` over all `etter_runs_finished_total` |
//! | queue wait | `etter_run_queue_wait_seconds` |
//! | time to dashboard | `etter_run_time_to_dashboard_seconds` |
//! | retry rate | `etter_runs_created_total{via="retry"}` over all `etter_runs_created_total` |
//! | tokens per role | `etter_run_tokens` |
//! | errors by step and type | `etter_step_errors_total{step, code}` |
//! | worker utilisation | `etter_worker_activities_in_flight` over `etter_worker_activity_slots` |

use std::time::Duration;

use metrics::Unit;

/// Runs created, by how (`push`, `batch`, `retry`).
pub const RUNS_CREATED: &str = "etter_runs_created_total";
/// Runs that reached a final state, by state.
pub const RUNS_FINISHED: &str = "etter_runs_finished_total";
/// Seconds from a run's start (PROCESSING) to its end.
pub const RUN_PROCESSING_SECONDS: &str = "etter_run_processing_seconds";
/// From a run's push to its end, for runs the dashboard shows (READY, DEGRADED).
pub const RUN_TIME_TO_DASHBOARD_SECONDS: &str = "etter_run_time_to_dashboard_seconds";
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
/// Step attempts, by step and outcome.
pub const STEP_ATTEMPTS: &str = "etter_worker_step_attempts_total";
/// Seconds one step attempt took, by step.
pub const STEP_SECONDS: &str = "etter_worker_step_seconds";
/// LLM tokens used, by step.
pub const STEP_TOKENS: &str = "etter_worker_tokens_total";
/// Roles the staleness scan marked STALE.
pub const STALE_MARKED: &str = "etter_worker_stale_marked_total";
/// Activities a worker is executing now.
pub const ACTIVITIES_IN_FLIGHT: &str = "etter_worker_activities_in_flight";
/// Activities a worker may execute at once.
pub const ACTIVITY_SLOTS: &str = "etter_worker_activity_slots";
/// Gauge: audit entries waiting to be written.
pub const AUDIT_PENDING: &str = "etter_audit_pending_entries";
/// Workflow tasks the cluster lost and the reconciler had handed out again, by how they stood.
pub const WORKFLOW_TASKS_REDISPATCHED: &str = "etter_workflow_tasks_redispatched_total";
/// Calls refused for what they asked, by RPC and status code.
pub const CALLS_REFUSED: &str = "etter_calls_refused_total";
/// TLS handshakes a listener refused or that did not finish, by listener.
pub const TLS_HANDSHAKE_FAILURES: &str = "etter_tls_handshake_failures_total";
/// Changes of a listener's certificate files, by whether they loaded.
pub const TLS_RELOADS: &str = "etter_tls_certificate_reloads_total";
/// Always 1; its labels name the binary and its version.
pub const BUILD_INFO: &str = "etter_build_info";

/// Bucket bounds of a run's durations, in seconds: fine below a minute, then at the plan's
/// thresholds (15 and 45 minutes) and beyond.
pub const RUN_SECONDS_BUCKETS: &[f64] =
    &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 2700.0, 3600.0, 7200.0, 14400.0];
/// Bucket bounds of one step attempt's duration, in seconds.
pub const STEP_SECONDS_BUCKETS: &[f64] =
    &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];
/// The prefix of the Temporal SDK's own worker metrics, which `etter-worker` serves beside the
/// ones [`METRICS`] lists (see Temporal's SDK metrics reference for each).
pub const TEMPORAL_SDK_PREFIX: &str = "temporal_";
/// Bucket bounds of other histograms: the Temporal SDK's latencies, in seconds.
pub const DEFAULT_SECONDS_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
/// Bucket bounds of the tokens one run used.
pub const TOKEN_BUCKETS: &[f64] =
    &[0.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0, 25_000.0, 50_000.0, 100_000.0, 250_000.0, 500_000.0, 1_000_000.0];

/// How a metric is exported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations, exported as a Prometheus histogram with these upper bounds: `_bucket{le="…"}`,
    /// `_sum` and `_count`, which add up across replicas (a summary's quantiles do not).
    Histogram(&'static [f64]),
}

/// One metric either binary exports.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The Prometheus name.
    pub name: &'static str,
    /// How it is exported.
    pub kind: Kind,
    /// Its unit, when it has one.
    pub unit: Option<Unit>,
    /// Its labels, comma-separated (empty when none).
    pub labels: &'static str,
    /// Which binaries export it: `server`, `worker` or `both`.
    pub exported_by: &'static str,
    /// The help text `/metrics` shows.
    pub help: &'static str,
}

/// Every metric either binary exports.
pub const METRICS: &[Metric] = &[
    Metric {
        name: RUNS_CREATED,
        kind: Kind::Counter,
        unit: None,
        labels: "via",
        exported_by: "server",
        help: "Runs created, by how: push, batch or retry.",
    },
    Metric {
        name: WORKFLOW_TASKS_REDISPATCHED,
        kind: Kind::Counter,
        unit: None,
        labels: "state",
        exported_by: "server",
        help: "Workflow tasks Temporal held SCHEDULED or STARTED for longer than `dispatch.stuck_workflow_task_after`, handed out again by the reconciler.",
    },
    Metric {
        name: QUEUE_DEPTH,
        kind: Kind::Gauge,
        unit: Some(Unit::Count),
        labels: "",
        exported_by: "server",
        help: "QUEUED runs of every company.",
    },
    Metric {
        name: RUNS_PROCESSING,
        kind: Kind::Gauge,
        unit: Some(Unit::Count),
        labels: "",
        exported_by: "server",
        help: "PROCESSING runs of every company.",
    },
    Metric {
        name: RUN_QUEUE_WAIT_SECONDS,
        kind: Kind::Histogram(RUN_SECONDS_BUCKETS),
        unit: Some(Unit::Seconds),
        labels: "",
        exported_by: "server",
        help: "From a run's push to its start.",
    },
    Metric {
        name: CALLS_REFUSED,
        kind: Kind::Counter,
        unit: None,
        labels: "method, code",
        exported_by: "server",
        help: "Calls refused for what they asked, by RPC and status code.",
    },
    Metric {
        name: AUDIT_PENDING,
        kind: Kind::Gauge,
        unit: Some(Unit::Count),
        labels: "",
        exported_by: "server",
        help: "Audit entries queued and not yet written.",
    },
    Metric {
        name: RUNS_FINISHED,
        kind: Kind::Counter,
        unit: None,
        labels: "state",
        exported_by: "both",
        help: "Runs that reached a final state, by state (the server counts the runs its reconciler closes).",
    },
    Metric {
        name: RUN_PROCESSING_SECONDS,
        kind: Kind::Histogram(RUN_SECONDS_BUCKETS),
        unit: Some(Unit::Seconds),
        labels: "",
        exported_by: "both",
        help: "From a run's start to its end.",
    },
    Metric {
        name: RUN_TIME_TO_DASHBOARD_SECONDS,
        kind: Kind::Histogram(RUN_SECONDS_BUCKETS),
        unit: Some(Unit::Seconds),
        labels: "",
        exported_by: "both",
        help: "From a run's push to its end, for runs the dashboard shows (READY, DEGRADED).",
    },
    Metric {
        name: RUN_TOKENS,
        kind: Kind::Histogram(TOKEN_BUCKETS),
        unit: Some(Unit::Count),
        labels: "",
        exported_by: "both",
        help: "LLM tokens one finished run used.",
    },
    Metric {
        name: STEP_ERRORS,
        kind: Kind::Counter,
        unit: None,
        labels: "step, code",
        exported_by: "worker",
        help: "Failed step attempts, by step and error code.",
    },
    Metric {
        name: STEP_ATTEMPTS,
        kind: Kind::Counter,
        unit: None,
        labels: "step, outcome",
        exported_by: "worker",
        help: "Step attempts, by step and outcome: completed, retrying, failed, cancelled or reused.",
    },
    Metric {
        name: STEP_SECONDS,
        kind: Kind::Histogram(STEP_SECONDS_BUCKETS),
        unit: Some(Unit::Seconds),
        labels: "step",
        exported_by: "worker",
        help: "How long one step attempt took, by step.",
    },
    Metric {
        name: STEP_TOKENS,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        labels: "step",
        exported_by: "worker",
        help: "LLM tokens used, by step.",
    },
    Metric {
        name: STALE_MARKED,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        labels: "",
        exported_by: "worker",
        help: "Roles the staleness scan marked STALE because a document changed.",
    },
    Metric {
        name: ACTIVITIES_IN_FLIGHT,
        kind: Kind::Gauge,
        unit: Some(Unit::Count),
        labels: "",
        exported_by: "worker",
        help: "Activities this worker is executing.",
    },
    Metric {
        name: ACTIVITY_SLOTS,
        kind: Kind::Gauge,
        unit: Some(Unit::Count),
        labels: "",
        exported_by: "worker",
        help: "Activities this worker may execute at once.",
    },
    Metric {
        name: TLS_HANDSHAKE_FAILURES,
        kind: Kind::Counter,
        unit: None,
        labels: "listener",
        exported_by: "server",
        help: "TLS handshakes refused (no or an untrusted client certificate, a client that does not trust ours) or not finished within 10 s, by listener: grpc or metrics.",
    },
    Metric {
        name: TLS_RELOADS,
        kind: Kind::Counter,
        unit: None,
        labels: "outcome",
        exported_by: "server",
        help: "Changes of the listeners' certificate files: loaded (served from the next connection) or failed (the previous certificate is kept).",
    },
    Metric {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        unit: None,
        labels: "binary, version",
        exported_by: "both",
        help: "Always 1; labels name the binary and its version.",
    },
];

/// Registers the help texts (shown on `/metrics`).
pub fn describe() {
    for metric in METRICS {
        match (metric.kind, metric.unit) {
            (Kind::Counter, Some(unit)) => metrics::describe_counter!(metric.name, unit, metric.help),
            (Kind::Counter, None) => metrics::describe_counter!(metric.name, metric.help),
            (Kind::Gauge, Some(unit)) => metrics::describe_gauge!(metric.name, unit, metric.help),
            (Kind::Gauge, None) => metrics::describe_gauge!(metric.name, metric.help),
            (Kind::Histogram(_), Some(unit)) => metrics::describe_histogram!(metric.name, unit, metric.help),
            (Kind::Histogram(_), None) => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

/// The metrics table of `docs/operations.md`.
pub fn render_table() -> String {
    let mut out = String::from("| metric | kind | labels | exported by | what it counts |\n|---|---|---|---|---|\n");
    for m in METRICS {
        let kind = match m.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram(_) => "histogram",
        };
        let labels = if m.labels.is_empty() { "—".to_owned() } else { format!("`{}`", m.labels) };
        out.push_str(&format!("| `{}` | {kind} | {labels} | {} | {} |\n", m.name, m.exported_by, m.help));
    }
    out
}

/// Counts a call refused for what it asked.
pub fn call_refused(method: &str, code: &'static str) {
    metrics::counter!(CALLS_REFUSED, "method" => method.to_owned(), "code" => code).increment(1);
}

/// Audit entries were queued (a positive `change`) or written (a negative one).
pub fn audit_pending(change: f64) {
    metrics::gauge!(AUDIT_PENDING).increment(change);
}

/// Counts a workflow task handed out again, by how it stood (`SCHEDULED`, `STARTED`).
pub fn workflow_task_redispatched(state: &'static str) {
    metrics::counter!(WORKFLOW_TASKS_REDISPATCHED, "state" => state).increment(1);
}

/// Counts runs created `via` push, batch or retry.
pub fn runs_created(via: &'static str, count: u64) {
    if count > 0 {
        metrics::counter!(RUNS_CREATED, "via" => via).increment(count);
    }
}

/// Records a run that just reached its final state (`state`): the outcome, its processing time
/// (when it started), its time from push to dashboard (when it reached one) and its tokens.
pub fn run_finished(state: &'static str, processing: Option<Duration>, to_dashboard: Option<Duration>, tokens: i64) {
    metrics::counter!(RUNS_FINISHED, "state" => state).increment(1);
    if let Some(processing) = processing {
        metrics::histogram!(RUN_PROCESSING_SECONDS).record(processing.as_secs_f64());
    }
    if let Some(to_dashboard) = to_dashboard {
        metrics::histogram!(RUN_TIME_TO_DASHBOARD_SECONDS).record(to_dashboard.as_secs_f64());
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
