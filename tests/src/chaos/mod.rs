//! The chaos run: the production-like deployment (PostgreSQL, Redis, Neo4j, Temporal; two server
//! replicas, two workers) under a continuous mix of clients while faults of every kind arrive at
//! random and overlap; then, once the load stopped and the system drained, the invariants that
//! say nothing was lost or duplicated ([`check`]), and the recovery time of each kind of fault.
//! `./etter chaos` runs it (`--short` in `./etter test`); `docs/RELIABILITY.md` holds a full run.

pub mod api;
pub mod check;
pub mod deployment;
pub mod disk;
pub mod faults;
pub mod load;
pub mod services;
pub mod watchers;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_core::ids::CompanyId;
use etter_core::lifecycle::RunState;
use etter_proto::v1::{GetStatusRequest, RoleStatus, get_status_request};
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use crate::stack::{Profile, Stack};
use api::{Api, Outcome};
use check::{Evidence, Findings, GraphCounts};
use faults::{Fault, FaultKind};
use load::{Ledger, Load};
use watchers::{Followed, WatchLog};

/// The fixtures pushed: every push carries one of them as its job description.
const TEMPLATES: [&str; 4] = [
    "software_engineer_jd.txt",
    "customer_success_manager_jd.md",
    "claims_adjuster_jd.pdf",
    "registered_nurse_jd.docx",
];

/// How a chaos run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long load and faults last.
    pub duration: Duration,
    /// Faults of each kind over that time.
    pub faults_per_kind: u32,
    /// Single-push clients (each pushes every `push_every` or so).
    pub pushers: usize,
    /// Mean time between one client's pushes.
    pub push_every: Duration,
    /// Roles per batch.
    pub batch_size: usize,
    /// Mean time between batches.
    pub batch_every: Duration,
    /// Company watchers (plus one per batch and some one-run watchers).
    pub company_watchers: usize,
    /// Mean time a watcher keeps a stream before it drops it and resumes.
    pub drop_every: Duration,
    /// How long the system may take to finish every run once the load stopped.
    pub drain_within: Duration,
}

impl Options {
    /// A few minutes: the run in `./etter test`.
    pub fn short() -> Self {
        Self {
            duration: Duration::from_secs(180),
            faults_per_kind: 2,
            pushers: 2,
            push_every: Duration::from_secs(4),
            batch_size: 8,
            batch_every: Duration::from_secs(45),
            company_watchers: 2,
            drop_every: Duration::from_secs(20),
            drain_within: Duration::from_secs(600),
        }
    }

    /// `minutes` of load with `faults_per_kind` faults of each kind.
    pub fn full(minutes: u64, faults_per_kind: u32) -> Self {
        Self {
            duration: Duration::from_secs(minutes * 60),
            faults_per_kind,
            batch_every: Duration::from_secs(60),
            batch_size: 10,
            drain_within: Duration::from_secs(1200),
            ..Self::short()
        }
    }
}

/// What a chaos run measured and found.
pub struct Report {
    /// Its settings.
    pub options: Options,
    /// The faults injected.
    pub faults: Vec<Fault>,
    /// What the clients were told.
    pub ledger: Ledger,
    /// What the checks found.
    pub findings: Findings,
    /// Watchers, their resumes and failed streams.
    pub watchers: (usize, u32, u32),
    /// How long the drain took.
    pub drained_in: Duration,
    /// Recovery times per fault kind: until every company stream had its next event, and until
    /// the next dispatch.
    pub recovery: BTreeMap<FaultKind, (Vec<Duration>, Vec<Duration>)>,
    /// The embedded profile's disk filling up.
    pub disk: disk::DiskReport,
    /// Workflow tasks Temporal lost that the servers' reconcilers had handed out again, as their
    /// logs say.
    pub redispatched: usize,
}

impl Report {
    /// Violations plus faults that could not be injected or recovered from.
    pub fn failures(&self) -> usize {
        self.findings.violations.len()
            + self.faults.iter().filter(|f| f.error.is_some()).count()
            + self.disk.violations.len()
            + usize::from(self.disk.skipped.is_some())
    }
}

/// Runs the chaos run on the production-like profile.
pub async fn run(options: Options) -> Result<Report> {
    let stack = Stack::with_profile("chaos", Profile::Postgres).await?;
    let templates: Vec<String> = TEMPLATES.iter().map(|fixture| stack.document(fixture)).collect::<Result<_>>()?;
    let company = stack.company.clone();
    let token = stack.token("operator").await?;
    let deployment = Arc::new(deployment::Deployment::start(stack, 2, 2).await?);
    let api = Arc::new(Api::new(&deployment.addrs, &token, Duration::from_secs(300))?);
    println!("chaos: deployment up (servers {}), company {company}", deployment.addrs.join(", "));

    // Clean runs of each template first: the graph every READY role of the same inputs must have.
    let (reference, reference_runs) = clean_runs(&deployment.stack, &api, &company, &templates).await?;
    println!("chaos: clean runs done: {reference:?}");

    let (stop_load, stopped_load) = watch::channel(false);
    let (stop_watchers, stopped_watchers) = watch::channel(false);
    let load = Arc::new(Load {
        api: Arc::clone(&api),
        company: company.clone(),
        templates: templates.clone(),
        ledger: Mutex::new(Ledger::default()),
        watch_logs: Mutex::new(Vec::new()),
        drop_every: options.drop_every,
        stop: stopped_load.clone(),
        stop_watchers: stopped_watchers.clone(),
    });
    let mut watcher_tasks = Vec::new();
    for _ in 0..options.company_watchers {
        let log = Arc::new(Mutex::new(WatchLog::new(Followed::Company(company.clone()))));
        load.watch_logs.lock().await.push(Arc::clone(&log));
        watcher_tasks.push(tokio::spawn(watchers::follow(
            Arc::clone(&api),
            Followed::Company(company.clone()),
            options.drop_every,
            stopped_watchers.clone(),
            log,
        )));
    }
    let mut load_tasks = Vec::new();
    for client in 0..options.pushers {
        load_tasks.push(tokio::spawn(load::pusher(Arc::clone(&load), client, options.push_every)));
    }
    load_tasks.push(tokio::spawn(load::batcher(Arc::clone(&load), options.batch_size, options.batch_every)));
    load_tasks.push(tokio::spawn(load::canceller(Arc::clone(&load), Duration::from_secs(15))));
    load_tasks.push(tokio::spawn(load::retrier(Arc::clone(&load), Duration::from_secs(20))));
    load_tasks.push(tokio::spawn(load::historian(Arc::clone(&load), Duration::from_secs(15))));

    let started = Instant::now();
    let faults = Arc::new(Mutex::new(Vec::new()));
    let fault_tasks: Vec<_> = FaultKind::ALL
        .iter()
        .map(|kind| {
            tokio::spawn(faults::inject(
                *kind,
                Arc::clone(&deployment),
                options.faults_per_kind,
                options.duration,
                stopped_load.clone(),
                Arc::clone(&faults),
            ))
        })
        .collect();
    let mut progress = tokio::time::interval(Duration::from_secs(30));
    while started.elapsed() < options.duration {
        progress.tick().await;
        let ledger = load.ledger.lock().await;
        println!(
            "chaos: {:>4} s: {} pushes acknowledged, {} faults injected",
            started.elapsed().as_secs(),
            ledger.pushes.len(),
            faults.lock().await.len()
        );
    }
    stop_load.send_replace(true);
    for task in fault_tasks.into_iter().chain(load_tasks) {
        task.await.context("a load or fault task panicked")?;
    }
    println!("chaos: load stopped, every part back; draining");

    // The drain: every run ends (nothing is left queued or processing), then the watchers get
    // their last events and every batch stream ends.
    let store = connect_store(&deployment.stack).await?;
    let company_id = CompanyId::parse(&company)?;
    let drain_started = Instant::now();
    loop {
        let active = store
            .count_runs(Some(&company_id), &[RunState::Validating, RunState::Queued, RunState::Processing])
            .await?;
        if active == 0 || drain_started.elapsed() > options.drain_within {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let drained_in = drain_started.elapsed();
    let logs: Vec<Arc<Mutex<WatchLog>>> = load.watch_logs.lock().await.clone();
    let settle = Instant::now() + Duration::from_secs(60);
    loop {
        let mut open = 0;
        for log in &logs {
            let log = log.lock().await;
            if !matches!(log.followed, Followed::Company(_)) && !log.over {
                open += 1;
            }
        }
        if open == 0 || Instant::now() >= settle {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Company streams: one more poll interval and heartbeat for the last events.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_watchers.send_replace(true);
    for task in watcher_tasks {
        task.await.context("a watcher panicked")?;
    }

    let graph = connect_graph(&deployment.stack).await?;
    let mut watch_logs = Vec::new();
    for log in &logs {
        watch_logs.push(log.lock().await.clone());
    }
    let ledger = std::mem::take(&mut *load.ledger.lock().await);
    let evidence = Evidence {
        store: store.as_ref(),
        graph: graph.as_ref(),
        company: &company_id,
        ledger: &ledger,
        watchers: &watch_logs,
        reference: &reference,
        reference_runs: &reference_runs,
    };
    let mut findings = check::check(&evidence).await?;
    check::audit(&deployment.stack, &mut findings).await;
    let faults = faults.lock().await.clone();
    let recovery = recovery(&faults, &watch_logs);
    let watchers =
        (watch_logs.len(), watch_logs.iter().map(|l| l.resumes).sum(), watch_logs.iter().map(|l| l.failures).sum());
    store.close().await;
    deployment.stop().await?;
    let redispatched = redispatched(&deployment.stack.root().join("logs"))?;
    println!("chaos: the embedded profile's disk filling up");
    let disk = disk::run().await?;
    Ok(Report { options, faults, ledger, findings, watchers, drained_in, recovery, disk, redispatched })
}

/// How many times the servers' logs under `dir` say a lost workflow task was handed out again.
fn redispatched(dir: &std::path::Path) -> Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("etter-server")) {
            let text = String::from_utf8_lossy(&std::fs::read(&path)?).into_owned();
            count += text.lines().filter(|l| l.contains("a workflow task Temporal lost was handed out again")).count();
        }
    }
    Ok(count)
}

/// One clean run of each template before any fault: its graph counts by document URI.
async fn clean_runs(
    stack: &Stack,
    api: &Api,
    company: &str,
    templates: &[String],
) -> Result<(BTreeMap<String, GraphCounts>, BTreeSet<String>)> {
    let mut pushed = Vec::new();
    for (i, uri) in templates.iter().enumerate() {
        let request = etter_proto::v1::PushRequest {
            company_id: company.to_owned(),
            role_name: format!("Chaos Clean {i}"),
            documents: vec![etter_proto::v1::Document {
                r#type: etter_proto::v1::DocumentType::JobDescription as i32,
                uri: uri.clone(),
                ..Default::default()
            }],
            draup_role_id: format!("draup-role-{i}"),
            options: None,
            request_id: format!("clean-{i}"),
            validate_only: false,
        };
        let (outcome, _) = api.call(&request, |mut c, r| async move { c.push(r).await }).await;
        let Outcome::Answered(answer) = outcome else { anyhow::bail!("the clean push of {uri}: {outcome:?}") };
        pushed.push((uri.clone(), answer.workflow_id));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    for (uri, workflow_id) in &pushed {
        loop {
            let request =
                GetStatusRequest { target: Some(get_status_request::Target::WorkflowId(workflow_id.clone())) };
            let (outcome, _) = api.call(&request, |mut c, r| async move { c.get_status(r).await }).await;
            let status = match outcome {
                Outcome::Answered(answer) => answer.run.map(|run| run.status()),
                _ => None,
            };
            match status {
                Some(RoleStatus::Ready) => break,
                Some(RoleStatus::Failed | RoleStatus::Cancelled | RoleStatus::ValidationError) => {
                    anyhow::bail!("the clean run of {uri} ended {status:?}")
                }
                _ => {}
            }
            ensure!(Instant::now() < deadline, "the clean run of {uri} was not READY within 5 minutes");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let store = connect_store(stack).await?;
    let graph = connect_graph(stack).await?;
    let mut reference = BTreeMap::new();
    for (uri, workflow_id) in &pushed {
        let run = store.get_run(&etter_core::ids::WorkflowId::parse(workflow_id)?).await?;
        reference.insert(uri.clone(), check::graph_counts(graph.as_ref(), &run).await?);
    }
    store.close().await;
    Ok((reference, pushed.into_iter().map(|(_, id)| id).collect()))
}

async fn connect_store(stack: &Stack) -> Result<Arc<dyn etter_store::RunStore>> {
    let url = setting(stack, "ETTER_STORE__URL")?;
    Ok(etter_store::connect(&etter_store::StoreLocation::Postgres(url)).await?)
}

async fn connect_graph(stack: &Stack) -> Result<Arc<dyn etter_graph::RoleGraph>> {
    let config = etter_graph::GraphConfig { uri: setting(stack, "ETTER_GRAPH__URI")?, ..Default::default() };
    Ok(etter_graph::open(&config, stack.root()).await?)
}

fn setting(stack: &Stack, key: &str) -> Result<String> {
    stack
        .env()
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .with_context(|| format!("the stack has no {key}"))
}

/// Per fault: the time until every company stream had an event after it, and until the next
/// dispatch any watcher saw.
fn recovery(faults: &[Fault], logs: &[WatchLog]) -> BTreeMap<FaultKind, (Vec<Duration>, Vec<Duration>)> {
    let mut recovery: BTreeMap<FaultKind, (Vec<Duration>, Vec<Duration>)> = BTreeMap::new();
    for fault in faults {
        let entry = recovery.entry(fault.kind).or_default();
        let mut streams = Vec::new();
        for log in logs.iter().filter(|l| matches!(l.followed, Followed::Company(_))) {
            if let Some(next) = log.receipts.iter().find(|r| r.at > fault.at) {
                streams.push(next.at - fault.at);
            }
        }
        if let Some(slowest) = streams.into_iter().max() {
            entry.0.push(slowest);
        }
        let dispatch = logs
            .iter()
            .filter_map(|l| l.receipts.iter().find(|r| r.dispatch && r.at > fault.at))
            .map(|r| r.at - fault.at)
            .min();
        if let Some(dispatch) = dispatch {
            entry.1.push(dispatch);
        }
    }
    recovery
}

/// The `q` quantile of `values` (nearest rank), in seconds.
fn quantile(values: &[Duration], q: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).map(Duration::as_secs_f64)
}

impl Report {
    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let o = &self.options;
        let _ = writeln!(
            out,
            "- Load and faults for {} s; drain {:.0} s. Two server replicas, two workers; PostgreSQL, Redis, Neo4j, Temporal ({}).",
            o.duration.as_secs(),
            self.drained_in.as_secs_f64(),
            std::env::var("ETTER_TEST__TEMPORAL").unwrap_or_else(|_| "dev".to_owned()),
        );
        let l = &self.ledger;
        let singles = l.pushes.iter().filter(|p| !p.workflow_id.is_empty()).count();
        let _ = writeln!(
            out,
            "- Acknowledged: {} pushes and batch items ({} with a request id; {} needed more than one try), {} batches, {} cancels, {} retries; {} History passes.",
            singles,
            l.pushes.iter().filter(|p| p.with_request_id).count(),
            l.pushes.iter().filter(|p| p.tries > 1).count(),
            l.batches.len(),
            l.cancelled.len(),
            l.retries.len(),
            l.history_passes,
        );
        let _ = writeln!(out, "- Calls answered {:?}; given up {:?}; refused {:?}.", l.answered, l.gave_up, l.refused);
        let f = &self.findings;
        let _ = writeln!(
            out,
            "- Runs: {} ({} READY; by state {:?}; FAILED by code {:?}); {} events checked; {} watchers, {} resumes, {} failed streams.",
            f.runs, f.ready, f.states, f.failed, f.events, self.watchers.0, self.watchers.1, self.watchers.2
        );
        let _ = writeln!(
            out,
            "- Workflow tasks Temporal lost, handed out again by the reconcilers: {}.",
            self.redispatched
        );
        let _ = writeln!(
            out,
            "\n| fault | injected | not recovered | next stream event p50 / p99 | next dispatch p50 / p99 |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        for kind in FaultKind::ALL {
            let of_kind: Vec<&Fault> = self.faults.iter().filter(|f| f.kind == kind).collect();
            let (streams, dispatches) = self.recovery.get(&kind).cloned().unwrap_or_default();
            let pair = |values: &[Duration]| match (quantile(values, 0.5), quantile(values, 0.99)) {
                (Some(p50), Some(p99)) => format!("{p50:.1} s / {p99:.1} s"),
                _ => "–".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                kind.describe(),
                of_kind.len(),
                of_kind.iter().filter(|f| f.error.is_some()).count(),
                pair(&streams),
                pair(&dispatches)
            );
        }
        let d = &self.disk;
        match &d.skipped {
            Some(why) => {
                let _ = writeln!(out, "\nDisk full (embedded profile): not run — {why}.");
            }
            None => {
                let _ = writeln!(
                    out,
                    "\nDisk full (embedded profile, 64 MB tmpfs): {} pushes acknowledged before, {} while full, {} after it was freed; refusals while full: {:?}; runs in progress that ended FAILED (retryable): {}; violations: {}.",
                    d.acknowledged[0],
                    d.acknowledged[1],
                    d.acknowledged[2],
                    d.refusals,
                    d.failed_while_full,
                    d.violations.len()
                );
                for violation in &d.violations {
                    let _ = writeln!(out, "- {violation}");
                }
            }
        }
        let _ = writeln!(out, "\nViolations: {}.", f.violations.len());
        for violation in f.violations.iter().take(50) {
            let _ = writeln!(out, "- {violation}");
        }
        for fault in self.faults.iter().filter(|f| f.error.is_some()) {
            let _ =
                writeln!(out, "- fault {:?} on {}: {}", fault.kind, fault.target, fault.error.as_deref().unwrap_or(""));
        }
        out
    }
}
