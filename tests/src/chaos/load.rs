//! The load: several clients at once, each a loop until the run stops — single pushes with and
//! without request ids, batches (each followed by a batch watcher), cancels, retries, and History
//! paging. Whatever the service acknowledged goes into the [`Ledger`] the checks hold the run
//! store to.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use etter_proto::v1::{
    BatchItemOutcome, CancelRequest, Document, DocumentType, HistoryRequest, PushBatchItem, PushBatchRequest,
    PushRequest, RetryRequest, RoleStatus, RunOptions, retry_request,
};
use rand::Rng as _;
use tokio::sync::{Mutex, watch};
use tonic::Code;

use super::api::{Api, Outcome};
use super::watchers::{self, Followed, WatchLog};

/// A push (or batch item) the service acknowledged.
#[derive(Debug, Clone)]
pub struct AckedPush {
    /// Unique per push.
    pub role_name: String,
    /// The run it answered.
    pub workflow_id: String,
    /// Which of the input templates it pushed.
    pub template: usize,
    /// Whether it carried a request id.
    pub with_request_id: bool,
    /// Tries it took (more than one: a fault was in the way).
    pub tries: u32,
}

/// What the service acknowledged, and what it refused or never answered.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Single pushes and accepted batch items.
    pub pushes: Vec<AckedPush>,
    /// Batches and their runs.
    pub batches: Vec<(String, Vec<String>)>,
    /// Runs whose Cancel was answered CANCELLED.
    pub cancelled: BTreeSet<String>,
    /// Retries answered: (the run retried, the new run).
    pub retries: Vec<(String, String)>,
    /// Calls answered, per verb.
    pub answered: BTreeMap<&'static str, u64>,
    /// Calls given up after the patience ran out, per verb (their effect is unknown: at most once).
    pub gave_up: BTreeMap<&'static str, u64>,
    /// Calls refused, per verb and code (`Cancel FailedPrecondition`: the run had ended).
    pub refused: BTreeMap<String, u64>,
    /// Answers that are defects whatever the fault: INTERNAL, or a refusal of a well-formed call
    /// for a reason other than the run's state.
    pub defects: Vec<String>,
    /// History pages that repeated a run or missed one acknowledged before paging began.
    pub history_problems: Vec<String>,
    /// History passes made.
    pub history_passes: u64,
}

/// What the load's clients share.
pub struct Load {
    /// The clients.
    pub api: Arc<Api>,
    /// The company pushed to.
    pub company: String,
    /// The input templates: a document URI each.
    pub templates: Vec<String>,
    /// What was acknowledged.
    pub ledger: Mutex<Ledger>,
    /// Batch watchers started by the batch pusher.
    pub watch_logs: Mutex<Vec<Arc<Mutex<WatchLog>>>>,
    /// How often a watcher drops its stream on purpose.
    pub drop_every: Duration,
    /// Turns true when the load stops.
    pub stop: watch::Receiver<bool>,
    /// Turns true when the watchers stop (after the drain).
    pub stop_watchers: watch::Receiver<bool>,
}

impl Load {
    fn push_request(&self, role_name: &str, template: usize, request_id: String) -> PushRequest {
        PushRequest {
            company_id: self.company.clone(),
            role_name: role_name.to_owned(),
            documents: vec![self.document(template)],
            draup_role_id: format!("draup-role-{template}"),
            options: Some(RunOptions::default()),
            request_id,
            validate_only: false,
        }
    }

    fn document(&self, template: usize) -> Document {
        Document {
            r#type: DocumentType::JobDescription as i32,
            uri: self.templates[template].clone(),
            ..Default::default()
        }
    }

    async fn note<T>(&self, verb: &'static str, outcome: &Outcome<T>) {
        let mut ledger = self.ledger.lock().await;
        match outcome {
            Outcome::Answered(_) => *ledger.answered.entry(verb).or_default() += 1,
            Outcome::GaveUp(_) => *ledger.gave_up.entry(verb).or_default() += 1,
            Outcome::Refused(status) => {
                *ledger.refused.entry(format!("{verb} {:?}", status.code())).or_default() += 1;
                let expected = matches!(
                    (verb, status.code()),
                    ("Cancel" | "Retry", Code::FailedPrecondition) | ("Retry", Code::NotFound)
                );
                if !expected {
                    ledger.defects.push(format!("{verb}: {:?} {}", status.code(), status.message()));
                }
            }
        }
    }

    /// Whether the load should stop.
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    async fn pause(&self, mean: Duration) {
        let nap = rand::rng().random_range(mean / 2..=mean * 3 / 2);
        let mut stop = self.stop.clone();
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            _ = stop.wait_for(|stopped| *stopped) => {}
        }
    }
}

/// Single pushes every `every` or so, every other one with a request id (tried again with the
/// same id); those without one are tried again as they are (the service deduplicates a role's
/// active run by its inputs).
pub async fn pusher(load: Arc<Load>, client: usize, every: Duration) {
    let mut n = 0_u32;
    while !load.stopped() {
        n += 1;
        let template = rand::rng().random_range(0..load.templates.len());
        let role_name = format!("Chaos Role {client}-{n:05}");
        let with_request_id = n.is_multiple_of(2);
        let request_id = if with_request_id { format!("push-{client}-{n}") } else { String::new() };
        let request = load.push_request(&role_name, template, request_id);
        let (outcome, tries) = load.api.call(&request, |mut c, r| async move { c.push(r).await }).await;
        load.note("Push", &outcome).await;
        if let Outcome::Answered(answer) = outcome {
            load.ledger.lock().await.pushes.push(AckedPush {
                role_name,
                workflow_id: answer.workflow_id,
                template,
                with_request_id,
                tries,
            });
        }
        load.pause(every).await;
    }
}

/// A batch of `size` roles every `every` or so, with a request id; each answered batch gets a
/// watcher of its own.
pub async fn batcher(load: Arc<Load>, size: usize, every: Duration) {
    let mut n = 0_u32;
    while !load.stopped() {
        n += 1;
        let templates: Vec<usize> = (0..size).map(|_| rand::rng().random_range(0..load.templates.len())).collect();
        let items: Vec<PushBatchItem> = templates
            .iter()
            .enumerate()
            .map(|(i, template)| PushBatchItem {
                role_name: format!("Chaos Batch {n:04} Role {i:02}"),
                documents: vec![load.document(*template)],
                draup_role_id: format!("draup-role-{template}"),
                options: None,
                client_ref: i.to_string(),
            })
            .collect();
        let request = PushBatchRequest {
            company_id: load.company.clone(),
            items,
            default_options: Some(RunOptions::default()),
            request_id: format!("batch-{n}"),
            validate_only: false,
        };
        let (outcome, tries) = load.api.call(&request, |mut c, r| async move { c.push_batch(r).await }).await;
        load.note("PushBatch", &outcome).await;
        if let Outcome::Answered(answer) = outcome {
            let mut runs = Vec::new();
            let mut ledger = load.ledger.lock().await;
            for item in &answer.items {
                if item.outcome() != BatchItemOutcome::Accepted {
                    ledger.defects.push(format!("batch {n} item {}: {:?}", item.index, item.outcome()));
                    continue;
                }
                let index = usize::try_from(item.index).unwrap_or(usize::MAX);
                ledger.pushes.push(AckedPush {
                    role_name: format!("Chaos Batch {n:04} Role {index:02}"),
                    workflow_id: item.workflow_id.clone(),
                    template: templates.get(index).copied().unwrap_or_default(),
                    with_request_id: true,
                    tries,
                });
                runs.push(item.workflow_id.clone());
            }
            ledger.batches.push((answer.batch_id.clone(), runs));
            drop(ledger);
            let log = Arc::new(Mutex::new(WatchLog::new(Followed::Batch(answer.batch_id.clone()))));
            load.watch_logs.lock().await.push(Arc::clone(&log));
            tokio::spawn(watchers::follow(
                Arc::clone(&load.api),
                Followed::Batch(answer.batch_id),
                load.drop_every,
                load.stop_watchers.clone(),
                log,
            ));
        }
        load.pause(every).await;
    }
}

/// Cancels one of the latest acknowledged runs every `every` or so (with a request id); also
/// follows one run of each pair with a one-run watcher.
pub async fn canceller(load: Arc<Load>, every: Duration) {
    let mut n = 0_u32;
    while !load.stopped() {
        load.pause(every).await;
        n += 1;
        let target = {
            let ledger = load.ledger.lock().await;
            let recent = &ledger.pushes[ledger.pushes.len().saturating_sub(10)..];
            if recent.is_empty() {
                continue;
            }
            recent[rand::rng().random_range(0..recent.len())].workflow_id.clone()
        };
        if n.is_multiple_of(2) {
            let log = Arc::new(Mutex::new(WatchLog::new(Followed::Run(target.clone()))));
            load.watch_logs.lock().await.push(Arc::clone(&log));
            tokio::spawn(watchers::follow(
                Arc::clone(&load.api),
                Followed::Run(target.clone()),
                load.drop_every,
                load.stop_watchers.clone(),
                log,
            ));
            continue;
        }
        let request = CancelRequest {
            workflow_id: target.clone(),
            reason: "chaos".to_owned(),
            request_id: format!("cancel-{n}"),
        };
        let (outcome, _) = load.api.call(&request, |mut c, r| async move { c.cancel(r).await }).await;
        load.note("Cancel", &outcome).await;
        if let Outcome::Answered(answer) = outcome
            && answer.run.as_ref().is_some_and(|run| run.status() == RoleStatus::Cancelled)
        {
            load.ledger.lock().await.cancelled.insert(target);
        }
    }
}

/// Retries a failed or cancelled run every `every` or so (with a request id).
pub async fn retrier(load: Arc<Load>, every: Duration) {
    let mut n = 0_u32;
    while !load.stopped() {
        load.pause(every).await;
        n += 1;
        let request = HistoryRequest {
            company_id: load.company.clone(),
            statuses: vec![RoleStatus::Failed as i32, RoleStatus::Cancelled as i32],
            page_size: 20,
            ..Default::default()
        };
        let (outcome, _) = load.api.call(&request, |mut c, r| async move { c.history(r).await }).await;
        load.note("History", &outcome).await;
        let Outcome::Answered(page) = outcome else { continue };
        let Some(run) = page.runs.iter().find(|run| run.superseded_by.is_empty()) else { continue };
        let request = RetryRequest {
            target: Some(retry_request::Target::WorkflowId(run.workflow_id.clone())),
            steps: Vec::new(),
            request_id: format!("retry-{n}"),
            ..Default::default()
        };
        let (outcome, _) = load.api.call(&request, |mut c, r| async move { c.retry(r).await }).await;
        load.note("Retry", &outcome).await;
        if let Outcome::Answered(answer) = outcome
            && let Some(new) = answer.run
        {
            load.ledger.lock().await.retries.push((run.workflow_id.clone(), new.workflow_id));
        }
    }
}

/// Pages through the company's History every `every` or so: no run twice, and every run
/// acknowledged before the pass began is there.
pub async fn historian(load: Arc<Load>, every: Duration) {
    while !load.stopped() {
        load.pause(every).await;
        let acknowledged: BTreeSet<String> =
            load.ledger.lock().await.pushes.iter().map(|p| p.workflow_id.clone()).collect();
        let mut seen = BTreeSet::new();
        let mut page_token = String::new();
        let mut problem = None;
        loop {
            let request = HistoryRequest {
                company_id: load.company.clone(),
                page_size: 100,
                page_token: page_token.clone(),
                ..Default::default()
            };
            let (outcome, _) = load.api.call(&request, |mut c, r| async move { c.history(r).await }).await;
            load.note("History", &outcome).await;
            let Outcome::Answered(page) = outcome else { break };
            for run in page.runs {
                if !seen.insert(run.workflow_id.clone()) {
                    problem = Some(format!("History repeated {}", run.workflow_id));
                }
            }
            if page.next_page_token.is_empty() {
                let missing: Vec<&String> = acknowledged.difference(&seen).collect();
                if !missing.is_empty() {
                    problem =
                        Some(format!("History missed {} acknowledged runs, e.g. {:?}", missing.len(), missing[0]));
                }
                break;
            }
            page_token = page.next_page_token;
        }
        let mut ledger = load.ledger.lock().await;
        ledger.history_passes += 1;
        ledger.history_problems.extend(problem);
    }
}
