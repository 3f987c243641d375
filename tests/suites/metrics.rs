//! The pipeline's metrics at `/metrics` of both binaries, with values that follow what
//! the pipeline did: three pushes (one with its skills miner failing on every attempt), a retry.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{Document, DocumentType, PushRequest, RetryRequest, RoleStatus, RunOptions, retry_request};
use etter_tests::stack::{Process, Stack, wait_final};

const WITHIN: Duration = Duration::from_secs(180);

/// Scrapes `process` until `ready` accepts its samples (gauges refresh on their own schedule).
async fn scrape_until(
    process: &Process,
    ready: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> Result<BTreeMap<String, f64>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let samples = process.metrics().await?;
        if ready(&samples) || tokio::time::Instant::now() > deadline {
            return Ok(samples);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The metrics `samples` belong to that the documented list does not name (a histogram's
/// `_bucket`, `_sum` and `_count` belong to the histogram).
fn unlisted(samples: &BTreeMap<String, f64>, exported_by: &str) -> Vec<String> {
    let listed = |name: &str| {
        etter_telemetry::metrics::METRICS
            .iter()
            .any(|m| m.name == name && (m.exported_by == exported_by || m.exported_by == "both"))
            // The worker also serves the Temporal SDK's own metrics, under the SDK's prefix.
            || (exported_by == "worker" && name.starts_with(etter_telemetry::metrics::TEMPORAL_SDK_PREFIX))
    };
    let mut names: Vec<String> = samples
        .keys()
        .map(|sample| sample.split('{').next().unwrap_or(sample))
        .filter(|name| {
            let base = ["_sum", "_count", "_bucket"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            !listed(name) && !listed(base)
        })
        .map(str::to_owned)
        .collect();
    names.dedup();
    names
}

fn value(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_export_the_documented_metrics_and_they_follow_the_runs() -> Result<()> {
    let stack = Stack::new("metrics").await?;
    let server = stack.start_server_with(&[("ETTER_SERVER__HEALTH_CHECK_INTERVAL", "200ms")]).await?;
    let worker = stack.start_worker(&[("ETTER_TEST_FAULTS", "fail:skills_miner")]).await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;

    let mut runs = Vec::new();
    for (i, skip) in [(0, false), (1, true), (2, true)] {
        let request = PushRequest {
            company_id: stack.company.clone(),
            role_name: format!("Metered Engineer {i}"),
            documents: vec![Document {
                r#type: DocumentType::JobDescription as i32,
                uri: jd.clone(),
                ..Default::default()
            }],
            draup_role_id: format!("draup-role-{i}"),
            options: Some(RunOptions { skip_enhancement_workflows: skip, ..Default::default() }),
            request_id: String::new(),
            validate_only: false,
        };
        runs.push(client.push(request).await?.into_inner());
    }
    let mut states = Vec::new();
    for run in &runs {
        states.push(wait_final(&mut client, &run.workflow_id, WITHIN).await?);
    }
    ensure!(states == [RoleStatus::Degraded, RoleStatus::Ready, RoleStatus::Ready], "{states:?}");
    let retry = RetryRequest {
        target: Some(retry_request::Target::WorkflowId(runs[0].workflow_id.clone())),
        steps: Vec::new(),
        request_id: String::new(),
        ..Default::default()
    };
    let retried = client.retry(retry).await?.into_inner().run.context("Retry without a run")?;
    ensure!(
        wait_final(&mut client, &retried.workflow_id, WITHIN).await? == RoleStatus::Degraded,
        "the fault is still there"
    );

    // The control plane: runs created by push and by retry, the queue wait of each started run,
    // the queue gauges back at zero.
    let served = scrape_until(&server, |s| {
        value(s, "etter_run_queue_wait_seconds_count") >= 4.0 && s.contains_key("etter_queue_depth")
    })
    .await?;
    ensure!(value(&served, r#"etter_runs_created_total{via="push"}"#) == 3.0, "{served:#?}");
    ensure!(value(&served, r#"etter_runs_created_total{via="retry"}"#) == 1.0, "{served:#?}");
    ensure!(value(&served, "etter_run_queue_wait_seconds_count") == 4.0, "{served:#?}");
    ensure!(value(&served, r#"etter_run_queue_wait_seconds_bucket{le="+Inf"}"#) == 4.0, "{served:#?}");
    ensure!(
        served.contains_key(r#"etter_run_queue_wait_seconds_bucket{le="900"}"#),
        "the 15-minute bound: {served:#?}"
    );
    ensure!(value(&served, "etter_queue_depth") == 0.0 && served.contains_key("etter_runs_processing"));

    // The worker: outcomes (success rate), processing time quantiles, tokens per role, errors by
    // step and type, utilisation.
    let executed = worker.metrics().await?;
    ensure!(value(&executed, r#"etter_runs_finished_total{state="READY"}"#) == 2.0, "{executed:#?}");
    ensure!(value(&executed, r#"etter_runs_finished_total{state="DEGRADED"}"#) == 2.0, "{executed:#?}");
    ensure!(value(&executed, "etter_run_processing_seconds_count") == 4.0, "{executed:#?}");
    // Histograms with fixed bounds (they add up across replicas): cumulative counts that end at
    // the total, with bounds at the plan's 15 and 45 minutes.
    let buckets: Vec<(f64, f64)> = executed
        .iter()
        .filter_map(|(key, count)| {
            let bound = key.strip_prefix(r#"etter_run_processing_seconds_bucket{le=""#)?.strip_suffix(r#""}"#)?;
            Some((if bound == "+Inf" { f64::INFINITY } else { bound.parse().ok()? }, *count))
        })
        .collect();
    let mut sorted = buckets.clone();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    ensure!(sorted.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative: {sorted:?}");
    ensure!(sorted.last() == Some(&(f64::INFINITY, 4.0)), "+Inf counts every run: {sorted:?}");
    ensure!([900.0, 2700.0].iter().all(|b| sorted.iter().any(|(le, _)| le == b)), "{sorted:?}");
    ensure!(value(&executed, "etter_run_tokens_count") == 4.0 && value(&executed, "etter_run_tokens_sum") > 0.0);
    // Time to dashboard: each READY or DEGRADED run, from its push, so at least its processing.
    ensure!(value(&executed, "etter_run_time_to_dashboard_seconds_count") == 4.0, "{executed:#?}");
    ensure!(
        value(&executed, "etter_run_time_to_dashboard_seconds_sum")
            >= value(&executed, "etter_run_processing_seconds_sum"),
        "{executed:#?}"
    );
    let miner_errors = value(&executed, r#"etter_step_errors_total{step="skills_miner",code="INJECTED_FAULT"}"#);
    ensure!(miner_errors >= 2.0, "every failed attempt of both runs counts: {executed:#?}");
    ensure!(value(&executed, "etter_worker_activity_slots") >= 1.0, "{executed:#?}");
    // The Temporal SDK's worker metrics, on the same endpoint: its slots, and the latency of the
    // activities it ran as a histogram.
    ensure!(executed.keys().any(|k| k.starts_with("temporal_worker_task_slots_available{")), "{executed:#?}");
    let sdk_latency = executed
        .iter()
        .filter(|(k, _)| {
            k.starts_with("temporal_activity_execution_latency_seconds_bucket{") && k.contains(r#"le="+Inf""#)
        })
        .map(|(_, count)| *count)
        .sum::<f64>();
    ensure!(sdk_latency >= 11.0, "every activity of the runs is timed by the SDK: {executed:#?}");
    ensure!(value(&executed, "etter_worker_activities_in_flight") == 0.0, "idle at the end: {executed:#?}");
    ensure!(value(&executed, r#"etter_worker_step_attempts_total{step="skills_miner",outcome="failed"}"#) >= 1.0);

    // Every metric either binary exports is in the documented list, under the right binary.
    ensure!(served.keys().any(|k| k.starts_with("etter_build_info")), "{served:#?}");
    let (server_extra, worker_extra) = (unlisted(&served, "server"), unlisted(&executed, "worker"));
    ensure!(server_extra.is_empty(), "the server exports metrics docs/operations.md does not list: {server_extra:?}");
    ensure!(worker_extra.is_empty(), "the worker exports metrics docs/operations.md does not list: {worker_extra:?}");

    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}
