//! Fan-out: 1,000 concurrent company-scope `WatchStatus` streams while roles
//! run through the real worker; the latency from the worker recording an event (its
//! `event_time`) to each client receiving it, and the server's memory. The same roles watched by
//! one stream are the baseline.
//!
//! The clients decode only what they measure ([`lean`]): every byte of every message is still sent
//! and received, but the run status each event carries is skipped, not materialised. Decoding it
//! was half of the harness's CPU, on the same two cores as the server it measures; a browser
//! decodes it on a machine of its own.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{RoleStatus, WatchStatusRequest, watch_status_request};
use etter_tests::stack::Profile;
use etter_tests::unique_name;
use tonic::transport::Channel;

use crate::Mode;
use crate::baseline::BareProcess;
use crate::deploy::Deployment;
use crate::measure::{Samples, between, ms, proc_stats, ratio, wall};
use crate::report::{Section, num, times};

/// Streams per HTTP/2 connection (a browser tab has one connection per stream; the harness shares
/// connections so that its own file descriptors stay within a default limit).
const STREAMS_PER_CONNECTION: usize = 50;
/// Bounds the wait for one stream message (heartbeats come every few seconds).
const MESSAGE_WITHIN: Duration = Duration::from_secs(60);

struct Phase {
    latencies: Samples,
    /// Per event: from its recording to the first stream's receipt.
    first: Samples,
    /// Per event: from the first stream's receipt to the last one's.
    spread: Samples,
    /// The harness's own CPU time over the same span as `server_cpu`.
    harness_cpu: Duration,
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
            "event → first stream p50 ms",
            "first → last stream p50 / p99 ms",
            "server CPU µs per message",
            "harness CPU µs per message",
            "server RSS before streams MB",
            "server RSS peak MB",
        ],
    );
    section.notes.push(format!(
        "Each stream watches the company; {roles} roles then run through the real worker (offline model), and \
         every stream must receive every event of them. {STREAMS_PER_CONNECTION} streams share one connection. \
         Latency: client receipt minus the event's `event_time` (recorded in the worker's transaction), same clock. \
         Server CPU per message: its user + system time from the push to the last receipt (the roles' dispatch and \
         statuses included), over events × streams; harness CPU the same for this process (its clients). Per event, \
         \"first stream\" is the earliest receipt of it and \"first → last\" how long its fan-out took to reach every \
         stream. The clients decode each message's event and skip the run status it carries: the bytes are sent \
         and received all the same, but materialising the status was half of the harness's CPU, on the cores the \
         server needs."
    ));
    section.notes.push(format!(
        "The last row is the floor of the fan-out: `etter-bench relay`, a bare tonic server in a process of its \
         own, follows the company on one stream of etter-server and copies each event message, as the bytes it \
         got, into each of its {streams} streams (no store, no authentication, no status to build, no resume \
         token). Its latency includes the one upstream stream's, as in the first row; its CPU and RSS columns are \
         the relay's."
    ));
    let server = Target { addr: deployment.server.field("grpc_addr")?, pid: deployment.server_pid()? };
    let one = phase(&deployment, &server, 1, roles).await?;
    section.row(one.row("1".to_owned(), 1));
    let many = phase(&deployment, &server, streams, roles).await?;
    section.row(many.row(streams.to_string(), streams));
    let relayed = relay_phase(&deployment, &server, streams, roles).await?;
    section.row(relayed.row(format!("{streams} (bare relay)"), streams));
    let p99_ratio = ratio(ms(many.latencies.p99()), ms(relayed.latencies.p99()));
    section.check(
        format!("event → client p99 ÷ the bare relay's, {streams} streams"),
        "≤ 1.0×",
        times(p99_ratio),
        p99_ratio <= 1.0,
    );
    let per_message = many.server_cpu.as_secs_f64() * 1e6 / many.messages(streams);
    section.check(
        format!("server CPU per delivered message, {streams} streams"),
        "≤ 8 µs",
        format!("{} µs", num(per_message, 1)),
        per_message <= 8.0,
    );
    section.check(
        format!("server RSS, {streams} streams"),
        "< 200 MB",
        format!("{} MB", num(many.peak_rss as f64 / 1e6, 0)),
        many.peak_rss < 200_000_000,
    );
    deployment.stop().await?;
    Ok(section)
}

/// The same phase with the streams on the relay (`etter-bench relay`), which follows the company
/// through `server` on one stream.
async fn relay_phase(deployment: &Deployment, server: &Target, streams: usize, roles: usize) -> Result<Phase> {
    let token = deployment.stack.token("viewer").await?;
    let relay = BareProcess::start(&[
        "relay".as_ref(),
        server.addr.as_ref(),
        token.as_ref(),
        deployment.stack.company.as_ref(),
    ])
    .await?;
    let target = Target { addr: relay.addr.clone(), pid: relay.pid().context("the relay has exited")? };
    let measured = phase(deployment, &target, streams, roles).await;
    relay.stop().await?;
    measured
}

impl Phase {
    /// The messages delivered to `streams` streams (at least one).
    fn messages(&self, streams: usize) -> f64 {
        (self.events_per_stream as f64 * streams as f64).max(1.0)
    }

    /// Its row of the table, for `streams` streams.
    fn row(&self, label: String, streams: usize) -> Vec<String> {
        let messages = self.messages(streams);
        let per_message = |cpu: Duration| num(cpu.as_secs_f64() * 1e6 / messages, 1);
        vec![
            label,
            self.events_per_stream.to_string(),
            num(ms(self.latencies.p50()), 1),
            num(ms(self.latencies.p99()), 1),
            num(ms(self.latencies.max()), 1),
            num(ms(self.first.p50()), 1),
            format!("{} / {}", num(ms(self.spread.p50()), 1), num(ms(self.spread.p99()), 1)),
            per_message(self.server_cpu),
            per_message(self.harness_cpu),
            num(self.rss_before as f64 / 1e6, 0),
            num(self.peak_rss as f64 / 1e6, 0),
        ]
    }
}

/// The server the streams watch through: its address, and the process whose CPU and memory count.
struct Target {
    addr: String,
    pid: u32,
}

/// Opens `streams` streams to `target`, runs `roles` roles, and collects what every stream received.
async fn phase(deployment: &Deployment, target: &Target, streams: usize, roles: usize) -> Result<Phase> {
    let (pid, addr) = (target.pid, &target.addr);
    let rss_before = proc_stats(pid)?.rss;
    let token = deployment.stack.token("viewer").await?;
    let company = deployment.stack.company.clone();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(streams);
    let mut tasks = tokio::task::JoinSet::new();
    for connection in 0..streams.div_ceil(STREAMS_PER_CONNECTION) {
        let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
        for _ in 0..STREAMS_PER_CONNECTION.min(streams - connection * STREAMS_PER_CONNECTION) {
            let request = WatchStatusRequest {
                scope: Some(watch_status_request::Scope::CompanyId(company.clone())),
                ..WatchStatusRequest::default()
            };
            let (channel, token, ready) = (channel.clone(), token.clone(), ready_tx.clone());
            tasks.spawn(async move {
                let mut stream = lean::watch(channel, &token, request).await?;
                let mut received = Vec::new();
                let mut ended = 0;
                let mut announced = false;
                while ended < roles {
                    let message = tokio::time::timeout(MESSAGE_WITHIN, stream.message())
                        .await
                        .context("a stream went quiet")??
                        .context("a stream ended by itself")?;
                    let at = SystemTime::now();
                    match message.kind {
                        Some(lean::Kind::Snapshot(snapshot)) if snapshot.last && !announced => {
                            announced = true;
                            ready.send(()).await?;
                        }
                        Some(lean::Kind::Event(event)) => {
                            let recorded = wall(event.event_time.as_ref().context("an event without a time")?);
                            if let Some(lean::Change::StatusChange(change)) = &event.change
                                && !matches!(change.status(), RoleStatus::Queued | RoleStatus::Processing)
                            {
                                ensure!(change.status() == RoleStatus::Ready, "a run ended {:?}", change.status());
                                ended += 1;
                            }
                            received.push(((event.workflow_id, event.sequence), recorded, at));
                        }
                        _ => {}
                    }
                }
                Ok::<_, anyhow::Error>(received)
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
    let harness_before = proc_stats(std::process::id())?.cpu;
    let batch = deployment.batch(roles, |i| format!("Fan-out {prefix} {i}"));
    deployment.client.clone().push_batch(batch).await?;
    let mut streams_received = Vec::with_capacity(streams);
    while let Some(joined) = tasks.join_next().await {
        streams_received.push(joined.context("a stream task panicked")??);
    }
    // Read before the receipts are folded below: that is the harness's bookkeeping, not its clients.
    let harness_cpu = proc_stats(std::process::id())?.cpu.saturating_sub(harness_before);
    let mut latencies = Vec::new();
    let mut counts = Vec::new();
    // Per event: when it was recorded, and its first and last receipt.
    let mut events: HashMap<(String, u64), (SystemTime, SystemTime, SystemTime)> = HashMap::new();
    for received in streams_received {
        counts.push(received.len() as u64);
        for (event, recorded, at) in received {
            latencies.push(between(recorded, at));
            let seen = events.entry(event).or_insert((recorded, at, at));
            seen.1 = seen.1.min(at);
            seen.2 = seen.2.max(at);
        }
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
        first: Samples::from_vec(events.values().map(|(recorded, first, _)| between(*recorded, *first)).collect()),
        spread: Samples::from_vec(events.values().map(|(_, first, last)| between(*first, *last)).collect()),
        harness_cpu,
        events_per_stream,
        peak_rss: after.peak_rss,
        rss_before,
        server_cpu: after.cpu.saturating_sub(cpu_before),
    })
}

/// The clients' view of `WatchStatus`: the fields the scenario measures, with the same tags as
/// `etter.pipeline.v1`. What a message has beyond them (above all `RunEvent.run`, the run's whole
/// status) is skipped by the decoder, not materialised.
mod lean {
    use anyhow::{Context as _, Result};
    use etter_proto::v1::{RoleStatus, WatchStatusRequest};
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::transport::Channel;

    /// `WatchStatusResponse`, without the resume token.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Response {
        #[prost(oneof = "Kind", tags = "1, 2")]
        pub kind: Option<Kind>,
    }

    /// `WatchStatusResponse.kind`, without heartbeats.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        Snapshot(Snapshot),
        #[prost(message, tag = "2")]
        Event(Event),
    }

    /// `Snapshot`, without its runs.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Snapshot {
        #[prost(bool, tag = "2")]
        pub last: bool,
    }

    /// `RunEvent`, without the run's status.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(string, tag = "1")]
        pub workflow_id: String,
        #[prost(uint64, tag = "2")]
        pub sequence: u64,
        #[prost(message, optional, tag = "3")]
        pub event_time: Option<prost_types::Timestamp>,
        #[prost(oneof = "Change", tags = "4")]
        pub change: Option<Change>,
    }

    /// `RunEvent.change`, status changes only.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Change {
        #[prost(message, tag = "4")]
        StatusChange(StatusChange),
    }

    /// `StatusChange`, without the reason.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusChange {
        #[prost(enumeration = "RoleStatus", tag = "2")]
        pub status: i32,
    }

    /// Opens a `WatchStatus` stream on `channel` as the bearer of `token`.
    pub async fn watch(
        channel: Channel,
        token: &str,
        request: WatchStatusRequest,
    ) -> Result<tonic::Streaming<Response>> {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.context("the connection is not ready")?;
        let mut request = tonic::Request::new(request);
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
        let path = PathAndQuery::from_static("/etter.pipeline.v1.PipelineService/WatchStatus");
        let codec = tonic_prost::ProstCodec::<WatchStatusRequest, Response>::default();
        Ok(grpc.server_streaming(request, path, codec).await?.into_inner())
    }
}
