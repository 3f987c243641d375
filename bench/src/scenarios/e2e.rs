//! End to end: one batch of 2,500 roles (the size the customer's plan is built around) with the
//! offline model through the real worker and Temporal dev server — time until all are READY,
//! success rate, per-run processing time, worker utilisation, each process's CPU — against the
//! same dev server running the pipeline's own workflow with no-op activities (the same shape:
//! branches, bookkeeping, activity options, payloads; [`crate::shape`]), and, for scale, bare
//! no-op workflows with no activity.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, ensure};
use etter_proto::v1::{HistoryRequest, RoleStatus, RunStatus};
use etter_tests::stack::Profile;
use etter_tests::unique_name;
use temporalio_client::WorkflowGetResultOptions;

use crate::Mode;
use crate::baseline::{NoopInput, OwnStart, run_noop, temporal_client, with_noop_worker};
use crate::deploy::Deployment;
use crate::measure::{Samples, between, closed_loop, proc_stats, ratio, temporal_dev_server, wall};
use crate::report::{Section, num, times};
use crate::shape::ended_ready;

/// The pipeline worker's activity slots by default (`worker.max_concurrent_activities`); the no-op
/// worker gets as many.
const ACTIVITY_SLOTS: usize = 10;

pub async fn run(profile: Profile, mode: Mode) -> Result<Section> {
    let roles = mode.pick(2_500, 10);
    let mut section = Section::new(
        "e2e",
        profile.name(),
        &["what", "workflows", "time to all done s", "per second", "ratio to ours", "notes"],
    );
    // The runs the dispatcher lets one company have processing by default: the same-shape runs
    // are started that many at a time.
    let cap = etter_server::config::DispatchConfig::default().max_processing_per_company as usize;
    let shaped_work = TemporalWork::read().await?;
    let shaped = shaped_throughput(roles, cap).await?;
    let shaped_work = TemporalWork::since(shaped_work, TemporalWork::read().await?);
    let noop = noop_throughput(roles).await?;

    let deployment = Deployment::start("e2e", profile, true, &[]).await?;
    let (server, worker) = (deployment.server_pid()?, deployment.worker_pid()?);
    let (server_before, worker_before) = (proc_stats(server)?, proc_stats(worker)?);
    // Temporal's share of the machine, beside ours: on one machine it decides the throughput.
    let temporal = std::env::var("ETTER_TEMPORAL__ADDRESS").ok().and_then(|a| temporal_dev_server(&a));
    let temporal_before = temporal.map(proc_stats).transpose()?;
    let batch = deployment.batch(roles, |i| format!("End to End Role {i}"));
    let work = TemporalWork::read().await?;
    let sent = SystemTime::now();
    let t0 = Instant::now();
    let batch_id = deployment.client.clone().push_batch(batch).await?.into_inner().batch_id;
    let mut utilisation = Vec::new();
    // Polled once a second for the batch's one run still to end, if any: the whole batch's
    // statuses (2,500 built and sent each time) would load the server the scenario measures.
    loop {
        if !still_active(&deployment, &batch_id).await? {
            break;
        }
        ensure!(t0.elapsed() < Duration::from_secs(mode.pick(3_600, 600)), "the roles did not all end in time");
        if let Some(worker) = &deployment.worker {
            let samples = worker.metrics().await?;
            let in_flight = samples.get("etter_worker_activities_in_flight").copied().unwrap_or(0.0);
            let slots = samples.get("etter_worker_activity_slots").copied().unwrap_or(f64::NAN);
            utilisation.push(in_flight / slots);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let wall_time = t0.elapsed();
    let runs = history(&deployment, &batch_id).await?;
    ensure!(runs.len() == roles, "the batch has {} runs, not {roles}", runs.len());
    let work = TemporalWork::since(work, TemporalWork::read().await?);
    let (server_cpu, worker_cpu) = (
        proc_stats(server)?.cpu.saturating_sub(server_before.cpu),
        proc_stats(worker)?.cpu.saturating_sub(worker_before.cpu),
    );
    let temporal_cpu = match (temporal, temporal_before) {
        (Some(pid), Some(before)) => Some(proc_stats(pid)?.cpu.saturating_sub(before.cpu)),
        _ => None,
    };
    let ready = runs.iter().filter(|r| r.status() == RoleStatus::Ready).count();
    let mut processing = Samples::default();
    let mut last_end = sent;
    for run in &runs {
        if let (Some(start), Some(end)) = (&run.start_time, &run.end_time) {
            processing.push(between(wall(start), wall(end)));
            last_end = last_end.max(wall(end));
        }
    }
    let to_all = between(sent, last_end);
    let ours = roles as f64 / to_all.as_secs_f64();
    let mean_utilisation = utilisation.iter().sum::<f64>() / utilisation.len().max(1) as f64;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let share = |cpu: Duration| cpu.as_secs_f64() / wall_time.as_secs_f64() / cores * 100.0;
    let temporal_share = temporal_cpu.map_or_else(|| "not measured".to_owned(), |cpu| format!("{:.0} %", share(cpu)));
    section.row(vec![
        "etter: roles pushed in one batch, offline model".to_owned(),
        roles.to_string(),
        num(to_all.as_secs_f64(), 1),
        num(ours, 2),
        times(1.0),
        format!(
            "READY {ready}/{roles}; processing p50 {} s, p99 {} s; worker slots busy {:.0} % on average; \
             CPU: worker {:.0} %, server {:.0} %, Temporal dev server {temporal_share} of the {cores} cores",
            num(processing.p50().as_secs_f64(), 1),
            num(processing.p99().as_secs_f64(), 1),
            mean_utilisation * 100.0,
            share(worker_cpu),
            share(server_cpu),
        ),
    ]);
    let baselines = [
        (
            "same shape: our workflow, no-op activities",
            &shaped,
            format!("started {cap} at a time as the dispatcher starts runs, same dev server"),
        ),
        ("bare no-op workflow", &noop, "started 64 at a time, same dev server".to_owned()),
    ];
    for (label, baseline, how) in baselines {
        section.row(vec![
            label.to_owned(),
            roles.to_string(),
            num(baseline.as_secs_f64(), 1),
            num(roles as f64 / baseline.as_secs_f64(), 2),
            times(ratio(ours, roles as f64 / baseline.as_secs_f64())),
            how,
        ]);
    }
    section.notes.push(format!(
        "The pipeline runs 11 steps per role as activities of one workflow, its three branches after the \
         assessment concurrently, with its bookkeeping as local activities; the same-shape baseline is that \
         workflow's own code on a worker whose activities answer at once. Every worker has {ACTIVITY_SLOTS} \
         activity slots. Per-run processing time: `start_time` to `end_time`."
    ));
    section.notes.push(match (work, shaped_work) {
        (Some(ours), Some(shaped)) if ours.workflow_tasks > 0.0 && shaped.workflow_tasks > 0.0 => format!(
            "Temporal's work, from the dev server's own /metrics: per role {}; per same-shape run {}.",
            ours.per(roles),
            shaped.per(roles)
        ),
        (Some(_), Some(_)) => {
            anyhow::bail!("the dev server's /metrics counted no workflow task: are these its metric names?")
        }
        _ => format!(
            "Temporal's work per role: not measured ({TEMPORAL_METRICS_VAR} is not set; `scripts/services up` sets it)."
        ),
    });
    let success = ready as f64 / roles as f64;
    section.check(format!("roles READY of {roles}"), "100 %", format!("{:.1} %", success * 100.0), ready == roles);
    section.check(
        format!("{roles} roles of one PushBatch all ended"),
        "< 600 s",
        format!("{} s", num(to_all.as_secs_f64(), 1)),
        to_all < Duration::from_secs(600),
    );
    let shaped_ratio = ratio(ours, roles as f64 / shaped.as_secs_f64());
    section.check("roles/s ÷ the same shape with no-op activities", "≥ 0.8×", times(shaped_ratio), shaped_ratio >= 0.8);
    deployment.stop().await?;
    Ok(section)
}

/// Whether a run of `batch_id` has yet to end (validating, queued or processing).
async fn still_active(deployment: &Deployment, batch_id: &str) -> Result<bool> {
    let request = HistoryRequest {
        company_id: deployment.stack.company.clone(),
        batch_id: batch_id.to_owned(),
        statuses: vec![RoleStatus::Validating as i32, RoleStatus::Queued as i32, RoleStatus::Processing as i32],
        page_size: 1,
        ..HistoryRequest::default()
    };
    Ok(!deployment.client.clone().history(request).await?.into_inner().runs.is_empty())
}

/// Every run of `batch_id`, paging through History.
async fn history(deployment: &Deployment, batch_id: &str) -> Result<Vec<RunStatus>> {
    let mut runs = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = HistoryRequest {
            company_id: deployment.stack.company.clone(),
            batch_id: batch_id.to_owned(),
            page_size: 500,
            page_token,
            ..HistoryRequest::default()
        };
        let page = deployment.client.clone().history(request).await?.into_inner();
        runs.extend(page.runs);
        if page.next_page_token.is_empty() {
            return Ok(runs);
        }
        page_token = page.next_page_token;
    }
}

/// How long the dev server takes to run `count` bare no-op workflows (no activity), started 64 at
/// a time, on a worker in this process.
async fn noop_throughput(count: usize) -> Result<Duration> {
    let queue = unique_name("etter-bench-noop");
    let client = temporal_client().await?;
    let prefix = unique_name("noop");
    let work = {
        let queue = queue.clone();
        closed_loop(64, count, move |i| {
            let (client, queue, id) = (client.clone(), queue.clone(), format!("{prefix}-{i}"));
            async move {
                let done = run_noop(&client, &queue, id, NoopInput { activities: 0, padding: String::new() }).await?;
                ensure!(done == 0, "a bare no-op workflow ran {done} activities");
                Ok(())
            }
        })
    };
    Ok(with_noop_worker(&queue, ACTIVITY_SLOTS, work).await?.elapsed)
}

/// How long the dev server takes to run `count` runs of the pipeline's own workflow with no-op
/// activities, started the way the dispatcher starts them (its start request, options and input),
/// `concurrency` at a time, on a worker in this process.
async fn shaped_throughput(count: usize, concurrency: usize) -> Result<Duration> {
    let queue = unique_name("etter-bench-shaped");
    // A company of its own each time, so that the run ids never meet an earlier run's.
    let company = unique_name("shaped").replace('_', "-");
    let own = std::sync::Arc::new(OwnStart::on(&company, &queue, Duration::from_secs(3_600))?);
    let client = temporal_client().await?;
    let work = closed_loop(concurrency, count, move |i| {
        let (own, client) = (own.clone(), client.clone());
        async move {
            let id = own.start(&format!("Shaped Role {i}")).await?;
            let handle = client.get_workflow_handle::<etter_worker::workflows::RoleOnboarding>(id.clone());
            let output = handle.get_result(WorkflowGetResultOptions::default()).await?;
            ensure!(ended_ready(output.state, &output.completed), "same-shape run {id} ended {output:?}");
            Ok(())
        }
    });
    Ok(with_noop_worker(&queue, ACTIVITY_SLOTS, work).await?.elapsed)
}

/// Where the dev server serves its own Prometheus metrics (`host:port`; `scripts/services`).
const TEMPORAL_METRICS_VAR: &str = "ETTER_TOOLS__TEMPORAL_METRICS";

/// Counts of Temporal's work, from the dev server's `/metrics`: what a workflow costs it whatever
/// the worker does.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct TemporalWork {
    /// Writes of a workflow's mutable state (`UpdateWorkflowExecution`).
    state_writes: f64,
    /// Workflow tasks completed.
    workflow_tasks: f64,
    /// Activity tasks completed.
    activity_tasks: f64,
    /// Activity heartbeats recorded.
    heartbeats: f64,
    /// Workflow executions created (a run's children count).
    executions: f64,
}

impl TemporalWork {
    /// The dev server's counters now, or `None` when no metrics address is configured.
    async fn read() -> Result<Option<Self>> {
        let Ok(addr) = std::env::var(TEMPORAL_METRICS_VAR) else {
            return Ok(None);
        };
        let samples = etter_tests::stack::scrape(&addr).await?;
        // Summed over every other label (namespace, shard, …) of the samples of one operation.
        let sum = |metric: &str, operation: &str| {
            let (name, op) = (format!("{metric}{{"), format!("operation=\"{operation}\""));
            samples
                .iter()
                .filter(|(key, _)| key.starts_with(&name) && key.contains(&op))
                .filter(|(key, _)| metric != "service_requests" || key.contains("service_name=\"history\""))
                .map(|(_, value)| value)
                .sum::<f64>()
        };
        Ok(Some(Self {
            state_writes: sum("persistence_requests", "UpdateWorkflowExecution"),
            workflow_tasks: sum("service_requests", "RespondWorkflowTaskCompleted"),
            activity_tasks: sum("service_requests", "RespondActivityTaskCompleted"),
            heartbeats: sum("service_requests", "RecordActivityTaskHeartbeat"),
            executions: sum("persistence_requests", "CreateWorkflowExecution"),
        }))
    }

    /// The work done between two readings.
    fn since(before: Option<Self>, after: Option<Self>) -> Option<Self> {
        let (before, after) = (before?, after?);
        Some(Self {
            state_writes: after.state_writes - before.state_writes,
            workflow_tasks: after.workflow_tasks - before.workflow_tasks,
            activity_tasks: after.activity_tasks - before.activity_tasks,
            heartbeats: after.heartbeats - before.heartbeats,
            executions: after.executions - before.executions,
        })
    }

    /// The work per workflow of `count`, in words.
    fn per(self, count: usize) -> String {
        let n = count.max(1) as f64;
        format!(
            "{} state writes, {} workflow tasks, {} activity tasks, {} heartbeats, {} executions",
            num(self.state_writes / n, 1),
            num(self.workflow_tasks / n, 1),
            num(self.activity_tasks / n, 1),
            num(self.heartbeats / n, 1),
            num(self.executions / n, 1)
        )
    }
}
