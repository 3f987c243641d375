//! Watch clients: a company's runs, a batch, or one run, each followed through every fault. A
//! watcher drops its stream now and then on purpose and resumes with its last `resume_token` (or
//! `after_sequence`); a stream that fails (its replica died) is resumed the same way on the other
//! replica. Everything a watcher receives is logged for the checks: the snapshot, each event's
//! sequence per run, and when each event arrived.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etter_proto::v1::{
    RoleStatus, WatchStatusRequest, run_event, watch_status_request::Scope, watch_status_response::Kind,
};
use rand::Rng as _;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use super::api::Api;

/// What a watcher follows.
#[derive(Debug, Clone)]
pub enum Followed {
    /// The company's active runs.
    Company(String),
    /// A batch.
    Batch(String),
    /// One run.
    Run(String),
}

/// One event as received.
#[derive(Debug, Clone, Copy)]
pub struct Receipt {
    /// When it arrived.
    pub at: Instant,
    /// A status change to PROCESSING: a dispatch.
    pub dispatch: bool,
}

/// Everything one watcher received.
#[derive(Debug, Clone)]
pub struct WatchLog {
    /// What it follows.
    pub followed: Followed,
    /// When its first call was made (runs created later must reach it whole).
    pub opened: SystemTime,
    /// The runs of its snapshot and their sequence then.
    pub snapshot: BTreeMap<String, u64>,
    /// Event sequences per run, in arrival order.
    pub events: BTreeMap<String, Vec<u64>>,
    /// Arrival of every event.
    pub receipts: Vec<Receipt>,
    /// Streams it resumed (dropped on purpose, or failed).
    pub resumes: u32,
    /// Streams that failed (their replica died, …).
    pub failures: u32,
    /// A batch or run stream that the server ended because its scope was over.
    pub over: bool,
    /// What went wrong that a client would notice (a resume refused, a snapshot after events).
    pub problems: Vec<String>,
}

/// Follows `followed` until `stop` turns true (and, for a batch or a run, its scope is over);
/// drops its stream on purpose every `drop_every` or so.
pub async fn follow(
    api: Arc<Api>,
    followed: Followed,
    drop_every: Duration,
    mut stop: watch::Receiver<bool>,
    log: Arc<Mutex<WatchLog>>,
) {
    let mut token = String::new();
    let mut after_sequence = 0_u64;
    let mut have_snapshot = false;
    loop {
        if *stop.borrow() {
            return;
        }
        // Batch and company streams resume with their token, a one-run stream after its sequence.
        let request = match &followed {
            Followed::Company(id) => WatchStatusRequest {
                scope: Some(Scope::CompanyId(id.clone())),
                resume_token: token.clone(),
                after_sequence: 0,
            },
            Followed::Batch(id) => WatchStatusRequest {
                scope: Some(Scope::BatchId(id.clone())),
                resume_token: token.clone(),
                after_sequence: 0,
            },
            Followed::Run(id) => WatchStatusRequest {
                scope: Some(Scope::WorkflowId(id.clone())),
                resume_token: String::new(),
                after_sequence,
            },
        };
        let resumed = have_snapshot;
        let mut stream = match api.client().watch_status(request).await {
            Ok(answer) => answer.into_inner(),
            Err(status) => {
                if !super::api::transient(&status) {
                    log.lock().await.problems.push(format!("opening the watch: {status:?}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                } else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                continue;
            }
        };
        if resumed {
            log.lock().await.resumes += 1;
        }
        let drop_at = Instant::now() + rand::rng().random_range(drop_every / 2..=drop_every * 3 / 2);
        let mut received_any = false;
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                () = tokio::time::sleep_until(drop_at) => break,
                _ = stop.changed() => if *stop.borrow() { return } else { continue },
            };
            match message {
                Ok(Some(message)) => {
                    received_any = true;
                    let mut log = log.lock().await;
                    if !message.resume_token.is_empty() {
                        token = message.resume_token;
                    }
                    match message.kind {
                        Some(Kind::Snapshot(snapshot)) => {
                            if have_snapshot {
                                log.problems.push("a snapshot on a resumed stream".to_owned());
                            }
                            for run in snapshot.runs {
                                after_sequence = after_sequence.max(run.sequence);
                                log.snapshot.insert(run.workflow_id, run.sequence);
                            }
                            if snapshot.last {
                                have_snapshot = true;
                            }
                        }
                        Some(Kind::Event(event)) => {
                            let dispatch = matches!(&event.change,
                                Some(run_event::Change::StatusChange(change)) if change.status() == RoleStatus::Processing);
                            log.receipts.push(Receipt { at: Instant::now(), dispatch });
                            after_sequence = event.sequence;
                            log.events.entry(event.workflow_id).or_default().push(event.sequence);
                        }
                        Some(Kind::Heartbeat(_)) | None => {}
                    }
                }
                Ok(None) => {
                    // The server ended the stream: its scope is over (a batch or a run that
                    // ended, whose resume sends nothing), or its lifetime is up, or it drains.
                    if have_snapshot && !received_any && !matches!(followed, Followed::Company(_)) {
                        log.lock().await.over = true;
                        return;
                    }
                    break;
                }
                Err(_) => {
                    log.lock().await.failures += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}

impl WatchLog {
    /// A log of a watcher about to open.
    pub fn new(followed: Followed) -> Self {
        Self {
            followed,
            opened: SystemTime::now(),
            snapshot: BTreeMap::new(),
            events: BTreeMap::new(),
            receipts: Vec::new(),
            resumes: 0,
            failures: 0,
            over: false,
            problems: Vec::new(),
        }
    }
}
