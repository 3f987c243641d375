//! The server's read access to the role graph: the outputs summary of finished roles
//! (`RunStatus.outputs`) and the `etter.graph` health entry.
//!
//! The graph is opened lazily, on first use, and kept: a Neo4j that is down when the server starts
//! never stops it from starting, accepting pushes or answering statuses. While the graph is down,
//! statuses carry no outputs summary; a failed open or read makes the next
//! [`RETRY_AFTER`] of reads skip the graph (answering at once instead of waiting on it again),
//! and the health loop's next successful ping ends that pause early.
//!
//! The embedded graph (`{data_dir}/graph.db`) is the worker's SQLite file in WAL mode, so reading
//! it here while the worker writes is safe.
//!
//! A summary is counted from the role's whole subgraph, so summaries are kept: one read answers
//! every status of the same run at the same sequence for [`SUMMARY_TTL`]. The worker writes a
//! step's output before it records the step, so the run's own writes always show at once; a
//! newer run of the same role rewriting the graph shows on the older run within the TTL.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use etter_core::ids::{RoleId, WorkflowId};
use etter_graph::GraphConfig;
use etter_graph::{self, GraphError, RoleGraph, RoleSummary};
use tokio::{sync::OnceCell, time::Instant};

/// Longest opening the graph (connecting and ensuring its schema) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one read for a status may take; a status never waits longer on the graph.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failure, reads skip the graph for this long (unless a health ping succeeds first).
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Longest a kept summary answers for a run that has not moved.
pub const SUMMARY_TTL: Duration = Duration::from_secs(5);
/// Kept summaries past which the expired ones are swept.
const KEPT_SUMMARIES: usize = 1024;

/// The role graph as the server uses it: opened on first use, shared by every call.
pub struct GraphReader {
    config: GraphConfig,
    data_dir: PathBuf,
    graph: OnceCell<Arc<dyn RoleGraph>>,
    health: Mutex<Health>,
    /// Summaries read, by role, with the run and sequence they were read for.
    kept: Mutex<HashMap<RoleId, Kept>>,
}

/// A summary read for a run at a sequence.
struct Kept {
    run: WorkflowId,
    sequence: u64,
    read_at: Instant,
    summary: Option<RoleSummary>,
}

/// What the last graph operations said, for pausing reads and for logging once per outage.
#[derive(Debug, Default)]
struct Health {
    /// Reads skip the graph until then.
    paused_until: Option<Instant>,
    /// Whether the current outage was already logged at WARN.
    outage_logged: bool,
}

impl GraphReader {
    /// A reader of the graph `config` names (the embedded graph under `data_dir` when
    /// `graph.uri` is empty). Nothing is opened yet.
    pub fn new(config: GraphConfig, data_dir: PathBuf) -> Self {
        Self {
            config,
            data_dir,
            graph: OnceCell::new(),
            health: Mutex::new(Health::default()),
            kept: Mutex::new(HashMap::new()),
        }
    }

    /// Which backend this reader opens, for logs.
    fn backend(&self) -> &'static str {
        if self.config.uri.is_empty() { "embedded" } else { "neo4j" }
    }

    /// The open graph, opening it (bounded by [`OPEN_TIMEOUT`]) if this is the first use or the
    /// last attempt failed.
    async fn graph(&self) -> Result<&Arc<dyn RoleGraph>, GraphError> {
        self.graph
            .get_or_try_init(|| async {
                let opened = tokio::time::timeout(OPEN_TIMEOUT, etter_graph::open(&self.config, &self.data_dir)).await;
                let graph = opened.map_err(|_| {
                    GraphError::Unavailable(format!("the graph did not open within {OPEN_TIMEOUT:?}"))
                })??;
                tracing::info!(backend = self.backend(), "role graph opened");
                Ok(graph)
            })
            .await
    }

    /// Whether the graph answers: opens it if needed (within [`OPEN_TIMEOUT`]: the health loop
    /// may wait for a slow first open, which a status read gives up on sooner), then pings it
    /// within `timeout`. A success ends any pause of reads.
    pub async fn ping(&self, timeout: Duration) -> Result<(), GraphError> {
        let check = async {
            let graph = self.graph().await?;
            tokio::time::timeout(timeout, graph.ping())
                .await
                .unwrap_or_else(|_| Err(GraphError::Unavailable(format!("no answer within {timeout:?}"))))
        };
        let result = check.await;
        match &result {
            Ok(()) => self.succeeded(),
            Err(e) => self.failed("ping", e),
        }
        result
    }

    /// The outputs summary of `role` for the status of `run` at `sequence`, or `None` when the
    /// role is not in the graph or the graph cannot answer now (logged, at WARN once per outage).
    /// A summary read for the same run at the same sequence less than [`SUMMARY_TTL`] ago is
    /// reused; otherwise opening and reading together take at most [`READ_TIMEOUT`].
    pub async fn summary(&self, role: &RoleId, run: &WorkflowId, sequence: u64) -> Option<RoleSummary> {
        if let Some(kept) = self.kept_summary(role, run, sequence) {
            return kept;
        }
        if self.paused() {
            return None;
        }
        let read_at = Instant::now();
        let read = async { self.graph().await?.role_summary(role).await };
        let result = tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| Err(GraphError::Unavailable(format!("no answer within {READ_TIMEOUT:?}"))));
        match result {
            Ok(summary) => {
                self.succeeded();
                self.keep(role, Kept { run: run.clone(), sequence, read_at, summary });
                summary
            }
            Err(e) => {
                self.failed("reading an outputs summary", &e);
                None
            }
        }
    }

    fn kept_summary(&self, role: &RoleId, run: &WorkflowId, sequence: u64) -> Option<Option<RoleSummary>> {
        let kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.get(role)
            .filter(|k| k.run == *run && k.sequence == sequence && k.read_at.elapsed() < SUMMARY_TTL)
            .map(|k| k.summary)
    }

    fn keep(&self, role: &RoleId, read: Kept) {
        let mut kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() >= KEPT_SUMMARIES {
            kept.retain(|_, k| k.read_at.elapsed() < SUMMARY_TTL);
        }
        // A read that started before the kept one must not replace it.
        if kept.get(role).is_none_or(|k| k.read_at <= read.read_at) {
            kept.insert(role.clone(), read);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Health> {
        // The state is two plain fields; a panic elsewhere cannot leave it inconsistent.
        self.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn paused(&self) -> bool {
        self.lock().paused_until.is_some_and(|until| Instant::now() < until)
    }

    fn succeeded(&self) {
        let mut health = self.lock();
        if health.outage_logged {
            tracing::info!(backend = self.backend(), "role graph answers again; statuses carry outputs summaries");
        }
        *health = Health::default();
    }

    fn failed(&self, what: &str, error: &GraphError) {
        let mut health = self.lock();
        health.paused_until = Some(Instant::now() + RETRY_AFTER);
        if health.outage_logged {
            tracing::debug!(backend = self.backend(), error = %error, "role graph still unavailable ({what})");
        } else {
            health.outage_logged = true;
            tracing::warn!(
                backend = self.backend(),
                error = %error,
                "role graph unavailable ({what}); statuses omit outputs summaries until it answers"
            );
        }
    }
}

/// The proto's `OutputsSummary` of a graph summary.
pub fn outputs_summary(summary: &RoleSummary) -> etter_proto::v1::OutputsSummary {
    let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    etter_proto::v1::OutputsSummary {
        tasks: count(summary.tasks),
        top_tasks: count(summary.top_tasks),
        skills: count(summary.skills),
        skill_clusters: count(summary.skill_clusters),
        catalog_entries: count(summary.catalog_entries),
        reskilling_paths: count(summary.reskilling_paths),
        mean_confidence: summary.mean_confidence,
        // From the run's own step records, not the graph (`status::run_status` adds them).
        leading_tasks: Vec::new(),
        leading_skills: Vec::new(),
        review_reasons: Vec::new(),
    }
}
