//! Fan-out (issue 11, item 4): 1,000 concurrent company-scope `WatchStatus` streams while roles
//! run through the real worker; the latency from the worker recording an event (its
//! `event_time`) to each client receiving it, and the server's memory. The same roles watched by
//! one stream are the baseline.

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{RoleStatus, WatchStatusRequest, run_event, watch_status_request, watch_status_response};
use etter_tests::stack::{Profile, connect};
use etter_tests::unique_name;

use crate::Mode;
use crate::deploy::Deployment;
use crate::measure::{Samples, between, ms, proc_stats, wall};
use crate::report::{Section, num};

/// Streams per HTTP/2 connection (a browser tab has one connection per stream; the harness shares
/// connections so that its own file descriptors stay within a default limit).
const STREAMS_PER_CONNECTION: usize = 50;
/// Bounds the wait for one stream message (heartbeats come every few seconds).
const MESSAGE_WITHIN: Duration = Duration::from_secs(60);

struct Phase {
    latencies: Samples,
    events_per_stream: u64,
    peak_rss: u64,
    rss_before: u64,
    /// The server's CPU time from the push to the last receipt.
    server_cpu: Duration,
}

pub async fn run(profile: Profile, mode: Mode) -> Result<Section> {
    let deployment = Deployment::start("fanout", profile, true, &[]).await?;
    let (streams, roles) = (mode.pick(1_000, 20), mode.pick(5, 2));
    let mut section = Section::new(
        "fanout",
        profile.name(),
        &[
            "streams",
            "events per stream",
            "event → client p50 ms",
            "p99 ms",
            "max ms",
            "server CPU µs per message",
            "server RSS before streams MB",
            "server RSS peak MB",
        ],
    );
    section.notes.push(format!(
        "Each stream watches the company; {roles} roles then run through the real worker (offline model), and \
         every stream must receive every event of them. {STREAMS_PER_CONNECTION} streams share one connection. \
         Latency: client receipt minus the event's `event_time` (recorded in the worker's transaction), same clock. \
         Server CPU per message: its user + system time from the push to the last receipt (the roles' dispatch and \
         statuses included), over events × streams."
    ));
    let mut last = None;
    for count in [1, streams] {
        let phase = phase(&deployment, count, roles).await?;
        section.row(vec![
            count.to_string(),
            phase.events_per_stream.to_string(),
            num(ms(phase.latencies.p50()), 1),
            num(ms(phase.latencies.p99()), 1),
            num(ms(phase.latencies.max()), 1),
            num(phase.server_cpu.as_secs_f64() * 1e6 / (phase.events_per_stream as f64 * count as f64).max(1.0), 1),
            num(phase.rss_before as f64 / 1e6, 0),
            num(phase.peak_rss as f64 / 1e6, 0),
        ]);
        last = Some(phase);
    }
    let phase = last.context("no phase ran")?;
    let p99 = phase.latencies.p99();
    section.check(
        format!("event → client p99, {streams} streams"),
        "< 50 ms",
        format!("{} ms", num(ms(p99), 1)),
        p99 < Duration::from_millis(50),
    );
    section.check(
        format!("server RSS, {streams} streams"),
        "< 200 MB",
        format!("{} MB", num(phase.peak_rss as f64 / 1e6, 0)),
        phase.peak_rss < 200_000_000,
    );
    deployment.stop().await?;
    Ok(section)
}

/// Opens `streams` streams, runs `roles` roles, and collects what every stream received.
async fn phase(deployment: &Deployment, streams: usize, roles: usize) -> Result<Phase> {
    let pid = deployment.server_pid()?;
    let rss_before = proc_stats(pid)?.rss;
    let addr = deployment.server.field("grpc_addr")?;
    let token = deployment.stack.token("viewer").await?;
    let company = deployment.stack.company.clone();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(streams);
    let mut tasks = tokio::task::JoinSet::new();
    for connection in 0..streams.div_ceil(STREAMS_PER_CONNECTION) {
        let client = connect(&addr, &token).await?;
        for _ in 0..STREAMS_PER_CONNECTION.min(streams - connection * STREAMS_PER_CONNECTION) {
            let (mut client, company, ready) = (client.clone(), company.clone(), ready_tx.clone());
            tasks.spawn(async move {
                let request = WatchStatusRequest {
                    scope: Some(watch_status_request::Scope::CompanyId(company)),
                    ..WatchStatusRequest::default()
                };
                let mut stream = client.watch_status(request).await?.into_inner();
                let mut latencies = Vec::new();
                let mut ended = 0;
                let mut announced = false;
                while ended < roles {
                    let message = tokio::time::timeout(MESSAGE_WITHIN, stream.message())
                        .await
                        .context("a stream went quiet")??
                        .context("a stream ended by itself")?;
                    let received = SystemTime::now();
                    match message.kind {
                        Some(watch_status_response::Kind::Snapshot(snapshot)) if snapshot.last && !announced => {
                            announced = true;
                            ready.send(()).await?;
                        }
                        Some(watch_status_response::Kind::Event(event)) => {
                            let recorded = wall(event.event_time.as_ref().context("an event without a time")?);
                            latencies.push(between(recorded, received));
                            if let Some(run_event::Change::StatusChange(change)) = &event.change
                                && !matches!(change.status(), RoleStatus::Queued | RoleStatus::Processing)
                            {
                                ensure!(change.status() == RoleStatus::Ready, "a run ended {:?}", change.status());
                                ended += 1;
                            }
                        }
                        _ => {}
                    }
                }
                Ok::<_, anyhow::Error>(latencies)
            });
        }
    }
    drop(ready_tx);
    for _ in 0..streams {
        tokio::time::timeout(Duration::from_secs(120), ready_rx.recv())
            .await
            .context("streams did not all receive their snapshot")?
            .context("a stream failed before its snapshot")?;
    }
    let prefix = unique_name("r");
    let cpu_before = proc_stats(pid)?.cpu;
    let batch = deployment.batch(roles, |i| format!("Fan-out {prefix} {i}"));
    deployment.client.clone().push_batch(batch).await?;
    let mut latencies = Vec::new();
    let mut counts = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let received = joined.context("a stream task panicked")??;
        counts.push(received.len() as u64);
        latencies.extend(received);
    }
    let events_per_stream = counts.first().copied().unwrap_or(0);
    ensure!(
        counts.iter().all(|c| *c == events_per_stream),
        "streams received different numbers of events: {} to {}",
        counts.iter().min().unwrap_or(&0),
        counts.iter().max().unwrap_or(&0)
    );
    // VmHWM: the most the server ever held, this phase included.
    let after = proc_stats(pid)?;
    Ok(Phase {
        latencies: Samples::from_vec(latencies),
        events_per_stream,
        peak_rss: after.peak_rss,
        rss_before,
        server_cpu: after.cpu.saturating_sub(cpu_before),
    })
}
