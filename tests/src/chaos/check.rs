//! The invariants, checked once the load stopped and the system drained, against the run store,
//! the role graph, the audit log and what the clients were told.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use etter_core::ids::CompanyId;
use etter_core::lifecycle::RunState;
use etter_graph::{RoleGraph, SnapshotScope};
use etter_store::{Change, PageRequest, Run, RunFilter, RunStore, StepStatus};

use super::load::Ledger;
use super::watchers::{Followed, WatchLog};

/// Nodes and edges of a role's graph.
pub type GraphCounts = (usize, usize);

/// Every run of `company`, oldest first.
pub async fn all_runs(store: &dyn RunStore, company: &CompanyId) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    let mut page = PageRequest { size: etter_store::MAX_PAGE_SIZE, token: None };
    loop {
        let listed = store.list_runs(&RunFilter::company(company.clone()), &page).await?;
        runs.extend(listed.runs);
        match listed.next_page_token {
            Some(token) => page.token = Some(token),
            None => break,
        }
    }
    runs.reverse();
    Ok(runs)
}

/// A role's graph, counted.
pub async fn graph_counts(graph: &dyn RoleGraph, run: &Run) -> Result<GraphCounts> {
    let snapshot = graph.snapshot(&SnapshotScope::Role(run.role_id.clone())).await?;
    Ok((snapshot.nodes.len(), snapshot.edges.len()))
}

/// What the checks found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Runs in the store.
    pub runs: usize,
    /// Runs READY.
    pub ready: usize,
    /// Runs per final state.
    pub states: BTreeMap<String, usize>,
    /// Events checked.
    pub events: u64,
    /// FAILED runs per error code.
    pub failed: BTreeMap<String, usize>,
    /// Each broken invariant, with what broke it.
    pub violations: Vec<String>,
}

impl Findings {
    fn violation(&mut self, what: impl Into<String>) {
        self.violations.push(what.into());
    }
}

/// Everything the checks need.
pub struct Evidence<'a> {
    /// The run store.
    pub store: &'a dyn RunStore,
    /// The role graph.
    pub graph: &'a dyn RoleGraph,
    /// The company of the load.
    pub company: &'a CompanyId,
    /// What the clients were told.
    pub ledger: &'a Ledger,
    /// What each watcher received.
    pub watchers: &'a [WatchLog],
    /// The graph counts of a clean run of each template (by its document URI).
    pub reference: &'a BTreeMap<String, GraphCounts>,
    /// Workflow ids of the clean reference runs (not part of the load).
    pub reference_runs: &'a BTreeSet<String>,
}

/// The codes a run of a clean document may fail with under faults: every attempt of a step lost
/// (killed, frozen past its heartbeat, or run twice by Temporal). Any other code is a finding.
const FAILED_BY_FAULTS: [&str; 3] = ["STEP_FAILED", "ATTEMPT_LOST", "ATTEMPT_REPLACED"];

/// Checks every invariant.
pub async fn check(evidence: &Evidence<'_>) -> Result<Findings> {
    let mut findings = Findings::default();
    let runs = all_runs(evidence.store, evidence.company).await?;
    findings.runs = runs.len();
    let by_id: BTreeMap<&str, &Run> = runs.iter().map(|run| (run.workflow_id.as_str(), run)).collect();
    acknowledged(evidence, &runs, &by_id, &mut findings);
    for run in &runs {
        *findings.states.entry(run.state.as_str().to_owned()).or_default() += 1;
        if !run.state.is_final() {
            findings.violation(format!("{} is still {} after the drain", run.workflow_id, run.state.as_str()));
        }
        if run.state == RunState::Failed {
            let code = run.error.as_ref().map_or("", |e| e.code.as_str());
            *findings.failed.entry(code.to_owned()).or_default() += 1;
            if code.is_empty() {
                findings.violation(format!("{} is FAILED without saying why (no error)", run.workflow_id));
            }
            let message = run.error.as_ref().map_or("", |e| e.message.as_str());
            // Every outage in the run is shorter than the workers' patience: none may fail a run.
            if code.ends_with("_UNAVAILABLE") {
                findings.violation(format!(
                    "{} failed on an outage it should have waited out: {code}: {message}",
                    run.workflow_id
                ));
            } else if !code.is_empty() && !FAILED_BY_FAULTS.contains(&code) {
                // The documents are clean: only attempts lost to the faults may fail a run.
                findings.violation(format!("{} failed on a clean document: {code}: {message}", run.workflow_id));
            }
        }
        each_run(evidence, run, &mut findings).await?;
    }
    findings.ready = runs.iter().filter(|run| run.state == RunState::Ready).count();
    for log in evidence.watchers {
        watched(log, &by_id, &mut findings);
    }
    Ok(findings)
}

/// Every acknowledged push and batch item has exactly one run of its role (plus one per
/// acknowledged retry); every acknowledged cancel left its run cancelled; every acknowledged
/// retry's run exists.
fn acknowledged(evidence: &Evidence<'_>, runs: &[Run], by_id: &BTreeMap<&str, &Run>, findings: &mut Findings) {
    let ledger = evidence.ledger;
    let mut per_role: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for run in runs {
        per_role.entry(run.role_name.as_str()).or_default().push(run);
    }
    let mut retried: BTreeMap<&str, usize> = BTreeMap::new();
    for (old, new) in &ledger.retries {
        match (by_id.get(old.as_str()), by_id.get(new.as_str())) {
            (Some(old_run), Some(_)) => *retried.entry(old_run.role_name.as_str()).or_default() += 1,
            _ => findings.violation(format!("the acknowledged retry of {old} as {new} has no run")),
        }
    }
    let mut pushed_roles = BTreeSet::new();
    for push in &ledger.pushes {
        pushed_roles.insert(push.role_name.as_str());
        let Some(run) = by_id.get(push.workflow_id.as_str()) else {
            findings.violation(format!("acknowledged push {} ({}) has no run", push.workflow_id, push.role_name));
            continue;
        };
        if run.role_name.as_str() != push.role_name {
            findings.violation(format!(
                "{} answered for {} is a run of {}",
                push.workflow_id, push.role_name, run.role_name
            ));
        }
        let expected = 1 + retried.get(push.role_name.as_str()).copied().unwrap_or(0);
        let found = per_role.get(push.role_name.as_str()).map_or(0, Vec::len);
        if found != expected {
            findings.violation(format!(
                "{} has {found} runs, {expected} expected (one push, {} retries){}",
                push.role_name,
                expected - 1,
                if push.with_request_id { "" } else { " — pushed without a request id" }
            ));
        }
    }
    // A push given up on may have left one run; none may have left two.
    for (role, role_runs) in &per_role {
        if !pushed_roles.contains(role) && role_runs.len() > 1 + retried.get(role).copied().unwrap_or(0) {
            findings.violation(format!("{role}, never acknowledged, has {} runs", role_runs.len()));
        }
    }
    for cancelled in &ledger.cancelled {
        match by_id.get(cancelled.as_str()) {
            Some(run) if run.state == RunState::Cancelled => {}
            Some(run) => {
                findings.violation(format!("{cancelled} was answered CANCELLED but is {}", run.state.as_str()))
            }
            None => findings.violation(format!("cancelled {cancelled} has no run")),
        }
    }
    for (batch, items) in &ledger.batches {
        for item in items {
            match by_id.get(item.as_str()) {
                Some(run) if run.batch_id.as_ref().is_some_and(|b| b.as_str() == batch) => {}
                Some(_) => findings.violation(format!("{item} is not in its batch {batch}")),
                None => findings.violation(format!("item {item} of batch {batch} has no run")),
            }
        }
    }
    for defect in &ledger.defects {
        findings.violation(format!("a client was answered {defect}"));
    }
    for problem in &ledger.history_problems {
        findings.violation(problem.clone());
    }
}

/// One run: its events are 1..=sequence, its steps' attempts numbered from 1 without a gap and
/// at most one completed per step, its token total the sum of its steps', and, READY and the
/// role's latest, its graph the size of a clean run's of the same inputs.
async fn each_run(evidence: &Evidence<'_>, run: &Run, findings: &mut Findings) -> Result<()> {
    let id = &run.workflow_id;
    let mut sequences = Vec::new();
    let mut last_change = None;
    loop {
        let after = sequences.last().copied().unwrap_or(0);
        let page = evidence.store.events_after(id, after, 1000).await?;
        let Some(last) = page.last() else {
            break;
        };
        last_change = Some(last.change.clone());
        sequences.extend(page.iter().map(|event| event.sequence));
    }
    // An ended run's last event is its final status change: a stream that stops there missed
    // nothing of it.
    if run.state.is_final() && !matches!(&last_change, Some(Change::Status { status, .. }) if *status == run.state) {
        findings.violation(format!("{id}: ended {}, but its last event is {last_change:?}", run.state.as_str()));
    }
    findings.events += sequences.len() as u64;
    if sequences != (1..=run.sequence).collect::<Vec<_>>() {
        findings.violation(format!("{id}: events {sequences:?}, the run's sequence is {}", run.sequence));
    }
    let steps = evidence.store.steps(id).await?;
    let mut per_step: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    let mut completed: BTreeMap<&str, usize> = BTreeMap::new();
    let mut tokens = 0_i64;
    for attempt in &steps {
        per_step.entry(attempt.step.as_str()).or_default().push(attempt.attempt);
        if attempt.status == StepStatus::Completed {
            *completed.entry(attempt.step.as_str()).or_default() += 1;
        }
        tokens += attempt.tokens.total();
    }
    for (step, attempts) in &per_step {
        if *attempts != (1..=u32::try_from(attempts.len()).unwrap_or(u32::MAX)).collect::<Vec<_>>() {
            findings.violation(format!("{id}: step {step} has attempts {attempts:?}"));
        }
    }
    for (step, n) in &completed {
        if *n > 1 {
            findings.violation(format!("{id}: step {step} completed {n} times"));
        }
    }
    if tokens != run.tokens_used.total() {
        findings.violation(format!("{id}: {} tokens recorded, its steps' sum is {tokens}", run.tokens_used.total()));
    }
    if run.state == RunState::Ready && run.superseded_by.is_none() && !evidence.reference_runs.contains(id.as_str()) {
        let uri = run.documents.first().map(|d| d.uri.as_str()).unwrap_or_default();
        match evidence.reference.get(uri) {
            Some(reference) => {
                let counts = graph_counts(evidence.graph, run).await?;
                if counts != *reference {
                    findings.violation(format!(
                        "{id}: graph has {} nodes and {} edges, a clean run of the same inputs {} and {}",
                        counts.0, counts.1, reference.0, reference.1
                    ));
                }
            }
            None => findings.violation(format!("{id}: no clean run of its document {uri}")),
        }
    }
    Ok(())
}

/// One watcher saw each event of its scope once, in order, across its resumes: a run's events
/// from just after the snapshot (or from 1, for a run new to it) without a gap or a repeat, up
/// to the run's last event for every run its scope held while it watched.
fn watched(log: &WatchLog, by_id: &BTreeMap<&str, &Run>, findings: &mut Findings) {
    let name = match &log.followed {
        Followed::Company(id) => format!("the company watcher of {id}"),
        Followed::Batch(id) => format!("the watcher of batch {id}"),
        Followed::Run(id) => format!("the watcher of run {id}"),
    };
    for problem in &log.problems {
        findings.violation(format!("{name}: {problem}"));
    }
    for (run, seen) in &log.events {
        let from = log.snapshot.get(run).map_or(1, |s| s + 1);
        let Some(stored) = by_id.get(run.as_str()) else {
            findings.violation(format!("{name} got events of {run}, which is not the company's"));
            continue;
        };
        let last = seen.last().copied().unwrap_or(0);
        if *seen != (from..=last).collect::<Vec<_>>() {
            findings.violation(format!("{name}, {run}: saw {seen:?} (snapshot at {})", from - 1));
        }
        if last > stored.sequence {
            findings.violation(format!("{name}, {run}: saw {last}, beyond the run's {}", stored.sequence));
        }
    }
    // Runs the watcher must have followed to their end.
    let whole: Vec<&Run> = match &log.followed {
        Followed::Company(_) => by_id
            .values()
            .filter(|run| log.snapshot.contains_key(run.workflow_id.as_str()) || created_after(run, log))
            .copied()
            .collect(),
        Followed::Batch(batch) => {
            by_id.values().filter(|run| run.batch_id.as_ref().is_some_and(|b| b.as_str() == batch)).copied().collect()
        }
        Followed::Run(id) => by_id.get(id.as_str()).copied().into_iter().collect(),
    };
    for run in whole {
        let id = run.workflow_id.as_str();
        let seen_last =
            log.events.get(id).and_then(|seen| seen.last().copied()).or_else(|| log.snapshot.get(id).copied());
        if seen_last != Some(run.sequence) {
            findings
                .violation(format!("{name}: {id} ended at event {}, the watcher got to {seen_last:?}", run.sequence));
        }
    }
    if matches!(log.followed, Followed::Batch(_) | Followed::Run(_)) && !log.over {
        findings.violation(format!("{name}: the stream never ended though its scope is over"));
    }
}

fn created_after(run: &Run, log: &WatchLog) -> bool {
    let opened: chrono::DateTime<chrono::Utc> = log.opened.into();
    run.create_time > opened
}

/// The audit log's chain verifies end to end (`etter-server audit verify`).
pub async fn audit(stack: &crate::stack::Stack, findings: &mut Findings) {
    if let Err(e) = stack.server_command(&["audit", "verify"]).await {
        findings.violation(format!("the audit log does not verify: {e:#}"));
    }
}
