//! Pushed documents checked before their runs are queued: each exists, is readable, within the
//! size limit, and is what its extension says ([`Documents::check`]). A push with a document that
//! fails is refused; in a batch, that item is stored as VALIDATION_ERROR and the others go on. So
//! a run never waits in the queue only to fail on a document that was missing from the start.
//!
//! Each URI of a request is checked once, at most `documents.max_concurrent_checks` at a time.
//! When the document store cannot be reached, nothing is decided about the documents: the call
//! is refused as unavailable (nothing stored) and can be sent again with its `request_id`.
//!
//! A batch with more remote (`s3://`) documents than `documents.max_inline_checks` is answered
//! without waiting for them: the items with remote documents are stored VALIDATING, and the
//! [`Checker`] checks them in the background, then queues each or stores it as VALIDATION_ERROR.
//! While the document store does not answer, they stay VALIDATING and are checked again later.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::{Notify, watch};

use crate::error::{ApiError, Violation};
use crate::wait::Conditions;
use etter_core::backoff::Backoff;
use etter_core::error::chain;
use etter_core::lifecycle::RunState;
use etter_documents::{DocumentError, DocumentUri, Documents, Location};
use etter_proto::v1 as pb;
use etter_store::{Claim, FieldViolation, Run, RunStore, Transition};

/// The outcome of the checks of one request's documents, by URI as given.
#[derive(Debug, Default)]
pub struct DocumentChecks {
    refused: HashMap<String, String>,
    deferred: HashSet<String>,
}

impl DocumentChecks {
    /// Checks every document URI of `documents` (each once). URIs that do not parse, or that the
    /// configuration refuses outright, are skipped: the request's validation reports them. Fails
    /// as a whole when the document store is unavailable.
    pub fn run<'a>(
        documents: &'a Documents,
        uris: impl IntoIterator<Item = &'a pb::Document>,
    ) -> impl Future<Output = Result<Self, ApiError>> + Send + 'a {
        let at_once = documents.config().max_concurrent_checks;
        let checking =
            Self::checking(documents, uris.into_iter().map(|d| d.uri.as_str()).collect(), usize::MAX, at_once);
        async move { checking.await.map_err(|e| unavailable(&e)) }
    }

    /// As [`DocumentChecks::run`], except that when there are more remote documents than
    /// `documents.max_inline_checks`, none of them is checked now: they are left to the
    /// background [`Checker`] ([`DocumentChecks::deferred`]). Local files are always checked.
    pub fn run_or_defer<'a>(
        documents: &'a Documents,
        uris: impl IntoIterator<Item = &'a pb::Document>,
    ) -> impl Future<Output = Result<Self, ApiError>> + Send + 'a {
        let (max_inline, at_once) = (documents.config().max_inline_checks, documents.config().max_concurrent_checks);
        let unique = uris.into_iter().map(|d| d.uri.as_str()).collect();
        let checking = Self::checking(documents, unique, max_inline, at_once);
        async move { checking.await.map_err(|e| unavailable(&e)) }
    }

    /// Checks each of `unique` (the remote ones only if there are at most `max_inline_remote`),
    /// `at_once` at a time. Fails with the first error that says the store did not answer
    /// (nothing is decided then).
    async fn checking(
        documents: &Documents,
        unique: BTreeSet<&str>,
        max_inline_remote: usize,
        at_once: usize,
    ) -> Result<Self, DocumentError> {
        let checkable: Vec<DocumentUri> = unique
            .into_iter()
            .filter_map(|raw| DocumentUri::parse(raw).ok().filter(|uri| documents.config().admit(uri).is_ok()))
            .collect();
        let (remote, local): (Vec<DocumentUri>, Vec<DocumentUri>) =
            checkable.into_iter().partition(|uri| !matches!(uri.location(), Location::File(_)));
        let mut checks = DocumentChecks::default();
        let now = if remote.len() > max_inline_remote {
            checks.deferred = remote.iter().map(|uri| uri.as_str().to_owned()).collect();
            local
        } else {
            local.into_iter().chain(remote).collect()
        };
        let mut outcomes =
            futures::stream::iter(now).map(|uri| check_one(documents, uri)).buffer_unordered(at_once.max(1));
        while let Some((raw, outcome)) = outcomes.next().await {
            match outcome {
                Ok(()) => {}
                Err(error) if error.recoverable() => return Err(error),
                Err(error) => {
                    checks.refused.insert(raw, error.to_string());
                }
            }
        }
        Ok(checks)
    }

    /// Whether any of `documents` was left to the background checks.
    pub fn deferred(&self, documents: &[pb::Document]) -> bool {
        documents.iter().any(|d| self.deferred.contains(&d.uri))
    }

    /// The violations of one push's (or batch item's) documents: `documents[i].uri` with what is
    /// wrong with the document and what to do.
    pub fn violations(&self, documents: &[pb::Document]) -> Vec<Violation> {
        self.violations_of(documents.iter().map(|d| d.uri.as_str()))
    }

    /// [`DocumentChecks::violations`] of the URIs of a run's documents, in order.
    fn violations_of<'a>(&self, uris: impl IntoIterator<Item = &'a str>) -> Vec<Violation> {
        uris.into_iter()
            .enumerate()
            .filter_map(|(i, uri)| {
                let problem = self.refused.get(uri)?;
                Some(Violation::new(format!("documents[{i}].uri"), problem.clone()))
            })
            .collect()
    }
}

/// Checks one document; answers its URI as given (the checks key) with the outcome.
async fn check_one(documents: &Documents, uri: DocumentUri) -> (String, Result<(), DocumentError>) {
    let outcome = documents.check(&uri).await.map(drop);
    (uri.as_str().to_owned(), outcome)
}

/// A document that could not be checked now (the store did not answer): the call can be sent
/// again.
fn unavailable(error: &DocumentError) -> ApiError {
    let why = match error {
        DocumentError::Unavailable { detail, .. } | DocumentError::Io { detail, .. } => detail.clone(),
        DocumentError::CheckTimeout { timeout, .. } => format!("no answer within {timeout:?}"),
        other => other.code().to_owned(),
    };
    ApiError::DependencyUnavailable {
        reason: "DOCUMENT_STORE_UNAVAILABLE",
        description: format!(
            "{}: the document could not be checked now ({why}), so nothing was stored; send the same request \
             again in a moment",
            error.uri().unwrap_or_default()
        ),
    }
}

/// Runs claimed per round.
const PER_ROUND: u32 = 64;

/// Rounds in flight at once, each checking `documents.max_concurrent_checks / ROUNDS_AT_ONCE`
/// documents at a time: while one round waits for its slowest check or writes its decisions,
/// the others keep the document store busy.
const ROUNDS_AT_ONCE: usize = 4;

/// How long a claim on VALIDATING runs holds: longer than a round's checks can take
/// (`PER_ROUND` runs' documents, each within `documents.check_timeout`, several at once), so a
/// checker that dies loses nothing and one that lives is not overtaken.
const LEASE: Duration = Duration::from_secs(300);

/// Checks the documents of VALIDATING runs in the background, then queues each run or stores it
/// as VALIDATION_ERROR with the violations of its documents. One per server; replicas share the
/// work through claims.
pub struct Checker {
    store: Arc<dyn RunStore>,
    documents: Arc<Documents>,
    conditions: Arc<Conditions>,
    claimer: String,
    wake: Notify,
    /// Woken when runs were queued.
    queued: Arc<Notify>,
    poll_interval: Duration,
    backoff: (Duration, Duration),
}

/// What a round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// No VALIDATING run was free to check.
    Idle,
    /// Some runs were checked.
    Checked,
    /// The store or the document store did not answer.
    Unavailable,
}

impl Checker {
    /// A checker claiming as `claimer`; wakes `queued` (the dispatcher) when it queued runs.
    pub fn new(
        store: Arc<dyn RunStore>,
        documents: Arc<Documents>,
        conditions: Arc<Conditions>,
        claimer: String,
        queued: Arc<Notify>,
        config: &crate::config::DispatchConfig,
    ) -> Self {
        Self {
            store,
            documents,
            conditions,
            claimer,
            wake: Notify::new(),
            queued,
            poll_interval: config.poll_interval,
            backoff: (config.retry_initial_backoff, config.retry_max_backoff),
        }
    }

    /// Wakes an idle checker: a batch stored VALIDATING runs.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Checks until `drain` turns true, up to [`ROUNDS_AT_ONCE`] rounds at a time.
    pub async fn run(self: Arc<Self>, mut drain: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        let mut rounds = tokio::task::JoinSet::new();
        loop {
            if *drain.borrow() {
                // Rounds in flight record what they checked (each is bounded by the check
                // timeout); their claims would otherwise hold the runs for the whole lease.
                while rounds.join_next().await.is_some() {}
                return;
            }
            // Start rounds while there is work and room; a claim that finds nothing ends that.
            let mut outcome = Round::Checked;
            while rounds.len() < ROUNDS_AT_ONCE {
                match self.claim().await {
                    Ok(runs) if runs.is_empty() => {
                        outcome = Round::Idle;
                        break;
                    }
                    Ok(runs) => {
                        rounds.spawn(Arc::clone(&self).decide(runs));
                    }
                    Err(()) => {
                        outcome = Round::Unavailable;
                        break;
                    }
                }
            }
            // A round that met an unavailable store makes all wait: the rest finish first.
            if let Some(Ok(Round::Unavailable)) = rounds.join_next().await {
                while rounds.join_next().await.is_some() {}
                outcome = Round::Unavailable;
            }
            let wait = match outcome {
                Round::Checked => {
                    backoff.reset();
                    continue;
                }
                Round::Idle if !rounds.is_empty() => continue,
                Round::Idle => {
                    backoff.reset();
                    self.poll_interval
                }
                Round::Unavailable => backoff.next_wait(),
            };
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                _ = drain.changed() => {}
            }
        }
    }

    /// Claims the next VALIDATING runs (none when there are none); `Err` when the store did not
    /// answer.
    async fn claim(&self) -> Result<Vec<Run>, ()> {
        let claim = Claim {
            claimer: self.claimer.clone(),
            company: None,
            limit: PER_ROUND,
            lease: LEASE,
            now: etter_store::now(),
        };
        self.store.claim_validating(&claim).await.map_err(|e| {
            tracing::warn!(error = %chain(&e), "cannot claim runs to check; retrying");
        })
    }

    /// Checks the documents of `runs` and records the decisions.
    async fn decide(self: Arc<Self>, runs: Vec<Run>) -> Round {
        let uris = runs.iter().flat_map(|run| &run.documents).map(|d| d.uri.as_str()).collect();
        let at_once = (self.documents.config().max_concurrent_checks / ROUNDS_AT_ONCE).max(1);
        let checks = match DocumentChecks::checking(&self.documents, uris, usize::MAX, at_once).await {
            Ok(checks) => checks,
            Err(e) => {
                // Nothing decided: the runs stay VALIDATING and are checked again after a back-off.
                self.conditions.set_document_store(false);
                tracing::warn!(runs = runs.len(), error = %chain(&e), "the document store did not answer; checking again later");
                self.release(&runs).await;
                return Round::Unavailable;
            }
        };
        self.conditions.set_document_store(true);
        // Every decision of the round in one transaction: thousands of runs are queued in a few
        // writes, not one each.
        let changes = runs
            .iter()
            .map(|run| {
                let violations = checks.violations_of(run.documents.iter().map(|d| d.uri.as_str()));
                let change = if violations.is_empty() {
                    Transition::to(RunState::Queued, "its documents were checked")
                } else {
                    let violations = violations
                        .into_iter()
                        .map(|v| FieldViolation { field: v.field, description: v.description })
                        .collect();
                    Transition::rejected(violations, "a document failed its check")
                };
                (run.workflow_id.clone(), change)
            })
            .collect();
        let queued = match self.store.transition_each(changes).await {
            // A run cancelled (or past its deadline) meanwhile is refused: nothing left to decide.
            Ok(outcomes) => outcomes.iter().flatten().filter(|run| run.state == RunState::Queued).count(),
            Err(e) => {
                tracing::warn!(runs = runs.len(), error = %chain(&e),
                    "cannot record the document checks of VALIDATING runs; checking them again later");
                self.release(&runs).await;
                return Round::Unavailable;
            }
        };
        if queued > 0 {
            self.queued.notify_one();
        }
        tracing::debug!(runs = runs.len(), queued, "checked the documents of VALIDATING runs");
        Round::Checked
    }

    /// Gives up the claims on `runs`, so they are checked again (by any replica) at once.
    async fn release(&self, runs: &[Run]) {
        for run in runs {
            if let Err(e) = self.store.release_claim(&run.workflow_id, &self.claimer).await {
                tracing::debug!(workflow_id = %run.workflow_id, error = %chain(&e),
                    "cannot release a claim; it expires on its own");
            }
        }
    }
}
