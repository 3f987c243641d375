//! The staleness scan: re-hashes the documents of every READY or DEGRADED role and
//! marks the role STALE when they changed since its run linked them. A Temporal schedule runs it
//! every `worker.staleness_scan_interval`; `etter-worker scan` runs it on demand.
//!
//! A role is stale when the input hash of its `document_linking` step, recomputed from the
//! documents as they are now, differs from the one its run recorded: exactly the test a re-run
//! applies, so a role marked STALE is one whose re-run would run something. The new content hashes
//! are recorded, so the Retry that re-runs the role plans with them.

use std::collections::BTreeMap;
use std::sync::Arc;

use etter_core::ids::WorkflowId;
use etter_core::lifecycle::RunState;
use etter_core::steps::StepName;
use etter_core::workflow::STALENESS_SCAN_WORKFLOW;
use etter_documents::{DocumentUri, Documents};
use etter_store::{Run, RunStore, StepStatus, StoreError, Transition, now};
use serde::{Deserialize, Serialize};
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowResult};

use crate::failure::StepFailure;
use crate::steps::StepRunner;

/// Runs read per page of the scan.
const PAGE: u32 = 100;

/// What one scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanReport {
    /// Runs whose documents were checked.
    pub scanned: u32,
    /// Runs marked STALE by this scan.
    pub marked_stale: Vec<WorkflowId>,
    /// Runs that could not be checked now (a document store briefly unavailable); the next scan
    /// checks them again.
    pub unchecked: Vec<WorkflowId>,
}

/// The scan's activity.
pub struct StalenessActivities {
    store: Arc<dyn RunStore>,
    documents: Arc<Documents>,
    runner: StepRunner,
}

impl StalenessActivities {
    /// Activities over the worker's store, document loader and step runner.
    pub fn new(store: Arc<dyn RunStore>, documents: Arc<Documents>, runner: StepRunner) -> Self {
        Self { store, documents, runner }
    }

    /// Checks one run; answers whether it was marked STALE.
    async fn check(&self, run: &Run) -> Result<bool, StepFailure> {
        let attempts = self.store.steps(&run.workflow_id).await?;
        let latest = |step: StepName| {
            attempts
                .iter()
                .filter(|a| a.step == step.as_str() && matches!(a.status, StepStatus::Completed | StepStatus::Reused))
                .max_by_key(|a| a.attempt)
        };
        let (Some(linking), Some(setup)) = (latest(StepName::DocumentLinking), latest(StepName::RoleSetup)) else {
            return Ok(false);
        };
        let (Some(recorded), Some(setup_output)) = (linking.input_hash.clone(), setup.output_hash.clone()) else {
            return Ok(false);
        };
        let upstream = BTreeMap::from([(StepName::RoleSetup, setup_output)]);
        let current = match self.runner.current_input_hash(run, StepName::DocumentLinking, &upstream).await {
            Ok(hash) => hash,
            // A document that is gone or unreadable is a changed input too.
            Err(failure) if !failure.recoverable => {
                self.mark(run, format!("a document can no longer be read: {}", failure.message)).await?;
                return Ok(true);
            }
            Err(failure) => return Err(failure),
        };
        if current == recorded {
            return Ok(false);
        }
        let changed = self.record_changed_documents(run).await?;
        self.mark(run, format!("documents changed since the run: {}", changed.join(", "))).await?;
        Ok(true)
    }

    /// Records the documents' current content hashes; answers the URIs whose hash changed.
    async fn record_changed_documents(&self, run: &Run) -> Result<Vec<String>, StepFailure> {
        let uris: Vec<String> = run.documents.iter().map(|d| d.uri.clone()).collect();
        let known = self.store.document_hashes(&uris).await?;
        let mut changed = Vec::new();
        let seen = now();
        for uri in uris {
            let fetched = self.documents.fetch(&DocumentUri::parse(&uri)?).await?;
            let before = known.iter().find(|k| k.uri == uri).map(|k| k.content_hash.clone());
            if before.as_ref() != Some(&fetched.content_hash) {
                self.store.record_document_hash(&uri, &fetched.content_hash, seen).await?;
                changed.push(uri);
            }
        }
        if changed.is_empty() {
            // Another role sharing the document recorded the new hash first.
            changed.push("(recorded by an earlier scan)".to_owned());
        }
        Ok(changed)
    }

    async fn mark(&self, run: &Run, reason: String) -> Result<(), StepFailure> {
        match self.store.transition(&run.workflow_id, Transition::to(RunState::Stale, reason)).await {
            // A concurrent change (a Retry superseding it) wins; nothing to mark.
            Ok(_) | Err(StoreError::IllegalTransition(_)) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

#[activities]
impl StalenessActivities {
    /// Scans every READY and DEGRADED latest run, page by page, heartbeating between pages.
    #[activity(name = "ScanStalenessActivity")]
    pub async fn scan(self: Arc<Self>, ctx: ActivityContext, _input: ()) -> Result<ScanReport, ActivityError> {
        let mut report = ScanReport::default();
        let mut after: Option<WorkflowId> = None;
        loop {
            let page = self
                .store
                .runs_in_states(&[RunState::Ready, RunState::Degraded], after.as_ref(), PAGE)
                .await
                .map_err(|e| StepFailure::from(e).into_activity_error())?;
            let Some(last) = page.last() else { break };
            after = Some(last.workflow_id.clone());
            for run in page.iter().filter(|r| r.superseded_by.is_none()) {
                if ctx.is_cancelled() {
                    return Err(ActivityError::cancelled());
                }
                report.scanned += 1;
                match self.check(run).await {
                    Ok(true) => report.marked_stale.push(run.workflow_id.clone()),
                    Ok(false) => {}
                    Err(failure) => {
                        tracing::warn!(run = %run.workflow_id, "cannot check for staleness now: {failure}");
                        report.unchecked.push(run.workflow_id.clone());
                    }
                }
            }
            if let Err(err) = ctx.record_heartbeat(report.scanned).await {
                tracing::warn!("cannot send a heartbeat: {err}");
            }
        }
        metrics::counter!(etter_telemetry::metrics::STALE_MARKED).increment(report.marked_stale.len() as u64);
        tracing::info!(scanned = report.scanned, stale = report.marked_stale.len(), "staleness scan done");
        Ok(report)
    }
}

/// `StalenessScanWorkflow`: one scan.
#[workflow]
#[derive(Default)]
pub struct StalenessScan;

#[workflow_methods]
impl StalenessScan {
    #[run(name = STALENESS_SCAN_WORKFLOW)]
    pub async fn run(ctx: &mut WorkflowContext<Self>, _input: ()) -> WorkflowResult<ScanReport> {
        let options = ActivityOptions::with_start_to_close_timeout(std::time::Duration::from_secs(60 * 60))
            .heartbeat_timeout(std::time::Duration::from_secs(5 * 60))
            .build();
        Ok(ctx.execute_activity(StalenessActivities::scan, (), options).await?)
    }
}
