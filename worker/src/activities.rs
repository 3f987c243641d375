//! The pipeline's activities: one per step (named after the activities of the scripts they replace, so the Temporal UI
//! reads like the pipeline), plus the bookkeeping a run needs at its start and its end.
//!
//! Each step activity records its own transitions in the run store (docs/ARCHITECTURE.md, "Who writes what"),
//! keyed by (run, step, attempt) so a repeated record changes nothing: `running` when it starts,
//! then `completed`, `retrying` (another attempt follows) or `failed`. An attempt that never
//! finished — its worker was killed — is closed as `retrying` by the attempt after it. Activities
//! heartbeat while they work, so a cancellation reaches them and a dead worker is noticed within
//! the heartbeat timeout. Inputs and results are ids and hashes; everything else lives in the stores.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etter_core::backoff::Backoff;
use etter_core::error::chain;
use etter_core::ids::{TraceId, WorkflowId};
use etter_core::lifecycle::RunState;
use etter_core::steps::{Action, PriorOutcome, PriorStep, StepName, decide, hashed_upstream};
use etter_store::{PipelineError, Run, StepAttempt, StepStatus, StepTransition, StoreError, TokenCount, Transition};
use etter_telemetry::metrics as observe;
use serde::{Deserialize, Serialize};
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use tracing::Instrument as _;

use crate::failure::StepFailure;
use crate::faults::Faults;
use crate::steps::{StepOutcome, StepRunner};

/// The input of every step activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepInput {
    /// The run.
    pub workflow_id: WorkflowId,
    /// The step to run (must match the activity).
    pub step: StepName,
    /// With the early cutoff of a STALE re-run: the earlier run whose output this step reuses
    /// when its input hash is unchanged ([`etter_core::steps::decide`]).
    #[serde(default)]
    pub cutoff_from: Option<WorkflowId>,
    /// The trace id of the request that created the run: the activity logs under it.
    #[serde(default)]
    pub trace_id: Option<TraceId>,
    /// Attempts of the step recorded before this activity was scheduled (0 unless the step was
    /// scheduled again after a task nobody picked up): Temporal counts this activity's attempts
    /// from 1, the run's step records go on from here.
    #[serde(default)]
    pub attempt_base: u32,
}

/// The input of [`PipelineActivities::recorded_step`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptsInput {
    /// The run.
    pub workflow_id: WorkflowId,
    /// The step.
    pub step: StepName,
}

/// What [`PipelineActivities::recorded_step`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedStep {
    /// The highest attempt recorded (0 when none).
    pub last_attempt: u32,
    /// An attempt completed, with its output.
    pub completed: bool,
}

/// What a step activity returns to its workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    /// The step.
    pub step: StepName,
    /// The hash of the output it wrote.
    pub output_hash: String,
}

/// The input of [`PipelineActivities::begin_run`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeginInput {
    /// The run.
    pub workflow_id: WorkflowId,
    /// What the run does with each step.
    pub plan: Vec<(StepName, Action)>,
    /// The earlier run whose outputs `Reuse` steps keep.
    pub reuse_from: Option<WorkflowId>,
    /// The trace id of the request that created the run: the activity logs under it.
    #[serde(default)]
    pub trace_id: Option<TraceId>,
}

/// A step the workflow saw fail, with what Temporal said (used when the activity could not record
/// the failure itself: it timed out or its worker died on the last attempt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedStep {
    /// The step.
    pub step: StepName,
    /// Temporal's description of the failure.
    pub message: String,
}

/// The input of [`PipelineActivities::record_outcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeInput {
    /// The run.
    pub workflow_id: WorkflowId,
    /// What the run did with each step.
    pub plan: Vec<(StepName, Action)>,
    /// Steps that failed.
    pub failed: Vec<FailedStep>,
    /// The run was cancelled.
    pub cancelled: bool,
    /// The trace id of the request that created the run: the activity logs under it.
    #[serde(default)]
    pub trace_id: Option<TraceId>,
}

/// The outcome recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeReport {
    /// READY, DEGRADED, FAILED or CANCELLED.
    pub state: RunState,
}

/// The activities of one worker process, sharing its stores, document loader and model.
pub struct PipelineActivities {
    runner: StepRunner,
    faults: Faults,
    /// How long a step waits out an outage of the store or the graph (`worker.outage_patience`).
    outage_patience: Duration,
}

impl PipelineActivities {
    /// Activities over `runner`, with the faults a test asked for (none in production), waiting
    /// out outages of the store and the graph for up to `outage_patience`.
    pub fn new(runner: StepRunner, faults: Faults, outage_patience: Duration) -> Self {
        Self { runner, faults, outage_patience }
    }

    /// The step's work, tried again with growing pauses while the run store or the role graph
    /// is unavailable (a restart, a failover), for up to `outage_patience`; the caller
    /// heartbeats meanwhile. Writes are idempotent, so work cut off by the outage is redone.
    async fn execute_through_outages(
        &self,
        run: &Run,
        step: StepName,
        upstream: &BTreeMap<StepName, String>,
    ) -> Result<StepOutcome, StepFailure> {
        let until = tokio::time::Instant::now() + self.outage_patience;
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        loop {
            match self.runner.execute(run, step, upstream).await {
                Err(failure) if is_outage(&failure) && tokio::time::Instant::now() < until => {
                    let wait = backoff.next_wait();
                    tracing::warn!(run = %run.workflow_id, %step, code = %failure.code, ?wait,
                        "waiting out an outage: {failure}");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// Runs a step activity in a span of the run, the step and the request's trace id.
    async fn step(
        &self,
        ctx: ActivityContext,
        input: StepInput,
        expected: StepName,
    ) -> Result<StepReport, ActivityError> {
        let span = activity_span("step", &input.workflow_id, Some(input.step), input.trace_id.as_ref());
        self.traced_step(ctx, input, expected).instrument(span).await
    }

    async fn traced_step(
        &self,
        ctx: ActivityContext,
        input: StepInput,
        expected: StepName,
    ) -> Result<StepReport, ActivityError> {
        if input.step != expected {
            return Err(StepFailure::permanent(
                "WRONG_ACTIVITY",
                format!("activity for step {expected} was asked to run step {}", input.step),
            )
            .into_activity_error());
        }
        // Temporal's count of this activity's attempts decides whether another follows; the step's
        // records number on from the attempts recorded before the activity was scheduled.
        let temporal_attempt = ctx.info().attempt.max(1);
        let attempt = input.attempt_base.saturating_add(temporal_attempt);
        let max_attempts = ctx.info().retry_policy.as_ref().map_or(0, |policy| policy.maximum_attempts());
        let heartbeat_every = heartbeat_interval(ctx.info().heartbeat_timeout);
        let step = input.step;
        let started = Instant::now();
        let result = {
            let _busy = InFlight::enter();
            self.run_step(&ctx, &input, attempt, heartbeat_every).await
        };
        let outcome = match &result {
            Ok(_) => "completed",
            Err(StepEnd::Cancelled) => "cancelled",
            Err(StepEnd::Failed(f)) if f.recoverable && (max_attempts == 0 || temporal_attempt < max_attempts) => {
                "retrying"
            }
            Err(StepEnd::Failed(_)) => "failed",
        };
        metrics::counter!(observe::STEP_ATTEMPTS, "step" => step.as_str(), "outcome" => outcome).increment(1);
        metrics::histogram!(observe::STEP_SECONDS, "step" => step.as_str()).record(started.elapsed());
        if let Err(StepEnd::Failed(failure)) = &result {
            metrics::counter!(observe::STEP_ERRORS, "step" => step.as_str(), "code" => failure.code.clone())
                .increment(1);
        }
        match result {
            Ok(report) => {
                tracing::info!(attempt, seconds = started.elapsed().as_secs_f64(), "step completed");
                Ok(report)
            }
            Err(StepEnd::Cancelled) => {
                // Temporal stopped this attempt: the run was cancelled, or the attempt timed out
                // (its heartbeats came late on a busy worker) and another attempt replaces it. The
                // SDK does not say which, so the attempt stays open here and whoever knows closes
                // it: the run's outcome (CANCELLED) or the next attempt (lost, retried).
                tracing::info!(attempt, "attempt stopped by Temporal before it finished");
                Err(ActivityError::cancelled())
            }
            Err(StepEnd::Failed(failure)) => {
                let status = if outcome == "retrying" { StepStatus::Retrying } else { StepStatus::Failed };
                let mut record = StepTransition::new(step.as_str(), attempt, status);
                record.error = Some(failure.to_pipeline_error(step));
                if let Err(err) = self.runner.store().record_step(&input.workflow_id, record).await {
                    // The store is down: let Temporal retry the attempt rather than lose the record.
                    tracing::warn!(run = %input.workflow_id, %step, "cannot record the step's failure: {}", chain(&err));
                    return Err(StepFailure::from(err).into_activity_error());
                }
                tracing::info!(run = %input.workflow_id, %step, attempt, %status, "step failed: {failure}");
                Err(failure.into_activity_error())
            }
        }
    }

    /// [`Self::begin_run`]'s work.
    async fn begin(&self, input: BeginInput) -> Result<(), ActivityError> {
        let store = self.runner.store();
        // The dispatcher marks the run PROCESSING once Temporal accepted the start; if it died in
        // between, the run is still QUEUED while its workflow runs. Whoever comes first wins.
        match store.transition(&input.workflow_id, Transition::to(RunState::Processing, "started by the worker")).await
        {
            Ok(_) | Err(StoreError::IllegalTransition(_)) => {}
            Err(err) => return Err(StepFailure::from(err).into_activity_error()),
        }
        let prior = match &input.reuse_from {
            Some(old) => store.steps(old).await.map_err(|e| StepFailure::from(e).into_activity_error())?,
            None => Vec::new(),
        };
        for (step, action) in &input.plan {
            let record = match action {
                Action::Run => continue,
                Action::Skip => StepTransition::new(step.as_str(), 1, StepStatus::Skipped),
                Action::Reuse => {
                    let kept = prior
                        .iter()
                        .filter(|a| {
                            a.step == step.as_str() && matches!(a.status, StepStatus::Completed | StepStatus::Reused)
                        })
                        .max_by_key(|a| a.attempt)
                        .ok_or_else(|| {
                            StepFailure::permanent(
                                "REUSED_OUTPUT_MISSING",
                                format!("step {step} was to reuse an earlier output, but the earlier run has none"),
                            )
                            .into_activity_error()
                        })?;
                    let mut record = StepTransition::new(step.as_str(), 1, StepStatus::Reused);
                    record.input_hash = kept.input_hash.clone();
                    record.output_hash = kept.output_hash.clone();
                    record.reused_from = input.reuse_from.clone();
                    keep_what_it_made(&mut record, kept);
                    record
                }
            };
            store
                .record_step(&input.workflow_id, record)
                .await
                .map_err(|e| StepFailure::from(e).into_activity_error())?;
        }
        Ok(())
    }

    async fn run_step(
        &self,
        ctx: &ActivityContext,
        input: &StepInput,
        attempt: u32,
        heartbeat_every: Duration,
    ) -> Result<StepReport, StepEnd> {
        let store = self.runner.store();
        let step = input.step;
        let run = store.get_run(&input.workflow_id).await.map_err(StepFailure::from)?;
        let mut attempts = store.steps(&input.workflow_id).await.map_err(StepFailure::from)?;
        if self.close_lost_attempts(&run, step, attempt, &attempts).await? {
            // An earlier attempt finished while this one closed it: see how.
            attempts = store.steps(&input.workflow_id).await.map_err(StepFailure::from)?;
        }
        // An earlier attempt did the work but its completion never reached Temporal (it timed out
        // on a busy worker): its recorded result stands; running the step again would only spend
        // tokens for the same output.
        if let Some(done) = attempts
            .iter()
            .filter(|a| a.step == step.as_str() && a.attempt < attempt && a.status == StepStatus::Completed)
            .max_by_key(|a| a.attempt)
            && let Some(output_hash) = done.output_hash.clone()
        {
            tracing::info!(run = %run.workflow_id, %step, attempt, completed = done.attempt,
                "an earlier attempt completed the step; its result stands");
            return Ok(StepReport { step, output_hash });
        }
        let upstream = upstream_outputs(step, &attempts)?;
        if let Some(earlier) = &input.cutoff_from
            && let Some(report) = self.reuse_if_unchanged(&run, step, attempt, earlier, &upstream).await?
        {
            return Ok(report);
        }
        let started = store
            .record_step(&run.workflow_id, StepTransition::new(step.as_str(), attempt, StepStatus::Running))
            .await
            .map_err(StepFailure::from)?;
        if !started.recorded {
            self.ensure_attempt_is(&run, step, attempt, StepStatus::Running).await?;
        }

        let work = async {
            self.faults.before_work(step, attempt).await?;
            let outcome = self.execute_through_outages(&run, step, &upstream).await?;
            self.faults.after_work(step, attempt).await;
            Ok::<_, StepFailure>(outcome)
        };
        tokio::pin!(work);
        // The first heartbeat is due one interval in, not at once: each heartbeat is a write to
        // the workflow's state in Temporal, and most steps end well before the first is due.
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat_every, heartbeat_every);
        let mut beats: u64 = 0;
        let outcome: StepOutcome = loop {
            tokio::select! {
                result = &mut work => break result?,
                () = ctx.cancelled() => return Err(StepEnd::Cancelled),
                _ = beat.tick() => {
                    beats += 1;
                    if let Err(err) = ctx.record_heartbeat(beats).await {
                        tracing::warn!(run = %run.workflow_id, %step, "cannot send a heartbeat: {err}");
                    }
                }
            }
        };
        if outcome.needs_review() {
            store.set_needs_review(&run.workflow_id, true).await.map_err(StepFailure::from)?;
        }
        let mut record = StepTransition::new(step.as_str(), attempt, StepStatus::Completed);
        record.tokens = Some(TokenCount {
            input: i64::try_from(outcome.usage.input_tokens).unwrap_or(i64::MAX),
            output: i64::try_from(outcome.usage.output_tokens).unwrap_or(i64::MAX),
        });
        record.input_hash = Some(outcome.input_hash);
        record.output_hash = Some(outcome.output_hash.clone());
        record.prompt_version = outcome.model.as_ref().map(|_| etter_llm::PROMPT_VERSION.to_owned());
        record.model = outcome.model;
        record.digest = outcome.digest;
        let completed = store.record_step(&run.workflow_id, record).await.map_err(StepFailure::from)?;
        if !completed.recorded {
            self.ensure_attempt_is(&run, step, attempt, StepStatus::Completed).await?;
        }
        self.faults.after_record(step, attempt).await;
        metrics::counter!(observe::STEP_TOKENS, "step" => step.as_str()).increment(outcome.usage.total());
        Ok(StepReport { step, output_hash: outcome.output_hash })
    }

    /// The early cutoff of a STALE re-run: when the step's inputs hash as they did in the earlier
    /// run that kept its output, records the step `reused` instead of running it.
    async fn reuse_if_unchanged(
        &self,
        run: &Run,
        step: StepName,
        attempt: u32,
        earlier: &WorkflowId,
        upstream: &BTreeMap<StepName, String>,
    ) -> Result<Option<StepReport>, StepFailure> {
        let store = self.runner.store();
        let prior = store.steps(earlier).await?;
        let Some(kept) = latest_kept(step, &prior) else {
            return Ok(None);
        };
        let prior_step = PriorStep {
            outcome: PriorOutcome::Completed,
            input_hash: kept.input_hash.clone(),
            output_hash: kept.output_hash.clone(),
        };
        let current = self.runner.current_input_hash(run, step, upstream).await?;
        if decide(Some(&prior_step), &current) != Action::Reuse {
            return Ok(None);
        }
        let Some(output_hash) = kept.output_hash.clone() else {
            return Ok(None);
        };
        let mut record = StepTransition::new(step.as_str(), attempt, StepStatus::Reused);
        record.input_hash = Some(current);
        record.output_hash = Some(output_hash.clone());
        record.reused_from = kept.reused_from.clone().or_else(|| Some(earlier.clone()));
        keep_what_it_made(&mut record, kept);
        store.record_step(&run.workflow_id, record).await?;
        metrics::counter!(observe::STEP_ATTEMPTS, "step" => step.as_str(), "outcome" => "reused").increment(1);
        Ok(Some(StepReport { step, output_hash }))
    }

    /// After the store changed nothing for a record of this attempt: fine when the attempt is
    /// already recorded so (a retried call), but when its number was closed by another execution
    /// (Temporal ran the same attempt number twice: a workflow task it rolled back after a crash
    /// had scheduled it once already) or the run ended meanwhile, this execution's work would be
    /// recorded nowhere, and reporting success would let the next steps find no output. It fails
    /// instead, transiently: Temporal's next attempt has a number of its own.
    async fn ensure_attempt_is(
        &self,
        run: &Run,
        step: StepName,
        attempt: u32,
        expected: StepStatus,
    ) -> Result<(), StepFailure> {
        let attempts = self.runner.store().steps(&run.workflow_id).await?;
        let current = attempts.iter().find(|a| a.step == step.as_str() && a.attempt == attempt).map(|a| a.status);
        if current == Some(expected) {
            return Ok(());
        }
        let now = current.map_or_else(|| "not recorded".to_owned(), |s| s.to_string());
        Err(StepFailure::transient(
            "ATTEMPT_REPLACED",
            format!(
                "attempt {attempt} of {step} is {now} in the run store (another execution of the same attempt, or the run ended); this one's result is not kept, and the step is tried again"
            ),
        ))
    }

    /// Earlier attempts of `step` still marked running lost their worker (or timed out), and
    /// earlier attempts with no record never began: close them as retrying, so the step's history
    /// says what happened. True when one of them finished meanwhile (its worker came back and
    /// reported first): the caller reads the attempts again.
    async fn close_lost_attempts(
        &self,
        run: &Run,
        step: StepName,
        attempt: u32,
        attempts: &[StepAttempt],
    ) -> Result<bool, StepFailure> {
        // Attempts still marked running, and attempts that left no record at all (timed out
        // before they began, on a worker too busy to start them).
        let recorded = |n: u32| attempts.iter().find(|a| a.step == step.as_str() && a.attempt == n);
        let mut raced = false;
        for earlier in 1..attempt {
            if recorded(earlier).is_none_or(|a| a.status == StepStatus::Running) {
                let mut record = StepTransition::new(step.as_str(), earlier, StepStatus::Retrying);
                record.error = Some(lost_attempt_error(step));
                match self.runner.store().record_step(&run.workflow_id, record).await {
                    Ok(_) => {}
                    Err(StoreError::Conflict(_)) => raced = true,
                    Err(err) => return Err(err.into()),
                }
            }
        }
        Ok(raced)
    }
}

/// A failure of the run store or the role graph being unreachable: it passes.
fn is_outage(failure: &StepFailure) -> bool {
    matches!(failure.code.as_str(), "STORE_UNAVAILABLE" | "GRAPH_UNAVAILABLE")
}

/// Counts an activity in `etter_worker_activities_in_flight` while it lives.
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        metrics::gauge!(observe::ACTIVITIES_IN_FLIGHT).increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(observe::ACTIVITIES_IN_FLIGHT).decrement(1.0);
    }
}

/// How a step attempt ended, when it did not complete.
enum StepEnd {
    Failed(StepFailure),
    Cancelled,
}

impl From<StepFailure> for StepEnd {
    fn from(failure: StepFailure) -> Self {
        StepEnd::Failed(failure)
    }
}

fn lost_attempt_error(step: StepName) -> PipelineError {
    StepFailure::transient(
        "ATTEMPT_LOST",
        "the attempt did not finish (its worker stopped or it timed out); it was tried again",
    )
    .to_pipeline_error(step)
}

/// Heartbeat well within the timeout: the SDK batches heartbeats, so a third leaves room.
fn heartbeat_interval(timeout: Option<Duration>) -> Duration {
    timeout.map_or(Duration::from_secs(10), |t| t / 3).max(Duration::from_millis(100))
}

/// The latest attempt of `step` that left an output (completed, or reused from further back).
fn latest_kept(step: StepName, attempts: &[StepAttempt]) -> Option<&StepAttempt> {
    attempts
        .iter()
        .filter(|a| a.step == step.as_str() && matches!(a.status, StepStatus::Completed | StepStatus::Reused))
        .max_by_key(|a| a.attempt)
}

/// The output hashes `step`'s input hash covers ([`hashed_upstream`]), from their latest completed
/// or reused attempt. A step it needs must have one; the others (what `finalize` summarises) may
/// have failed or been skipped.
fn upstream_outputs(step: StepName, attempts: &[StepAttempt]) -> Result<BTreeMap<StepName, String>, StepFailure> {
    let mut outputs = BTreeMap::new();
    for upstream in hashed_upstream(step) {
        if let Some(output) = latest_kept(upstream, attempts).and_then(|a| a.output_hash.clone()) {
            outputs.insert(upstream, output);
        } else if step.spec().needs.contains(&upstream) {
            return Err(StepFailure::permanent(
                "UPSTREAM_OUTPUT_MISSING",
                format!("{step} needs the output of {upstream}, which this run has not produced"),
            ));
        }
    }
    Ok(outputs)
}

/// The span an activity of `run` logs in: its step (if a step's), and the trace id of the request
/// that created the run.
fn activity_span(
    activity: &'static str,
    run: &WorkflowId,
    step: Option<StepName>,
    trace: Option<&TraceId>,
) -> tracing::Span {
    tracing::info_span!(
        "activity",
        otel.name = step.map_or(activity, StepName::as_str),
        name = activity,
        run = %run,
        step = step.map(StepName::as_str),
        trace_id = trace.map(TraceId::as_str),
    )
}

/// The outcome of a run from what its steps did: FAILED when a critical step failed,
/// DEGRADED when only enhancement steps did, READY otherwise; CANCELLED wins over both.
pub fn outcome_of(failed: &[StepName], cancelled: bool) -> RunState {
    if cancelled {
        RunState::Cancelled
    } else if failed.iter().any(|s| s.is_critical()) {
        RunState::Failed
    } else if failed.is_empty() {
        RunState::Ready
    } else {
        RunState::Degraded
    }
}

#[activities]
impl PipelineActivities {
    /// Records what the run does not execute: skipped steps, and steps whose earlier output is
    /// reused (with that output's hash, so the steps after them see the same inputs).
    #[activity(name = "BeginRun")]
    pub async fn begin_run(self: Arc<Self>, _ctx: ActivityContext, input: BeginInput) -> Result<(), ActivityError> {
        let span = activity_span("begin_run", &input.workflow_id, None, input.trace_id.as_ref());
        self.begin(input).instrument(span).await
    }

    /// The workflow's last act on every path: closes the steps that never finished and moves the
    /// run to its outcome.
    #[activity(name = "RecordOutcome")]
    pub async fn record_outcome(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OutcomeInput,
    ) -> Result<OutcomeReport, ActivityError> {
        let span = activity_span("record_outcome", &input.workflow_id, None, input.trace_id.as_ref());
        self.close_run(&input).instrument(span).await.map_err(StepFailure::into_activity_error)
    }

    /// What the run store recorded of a step: its highest attempt (a step scheduled again after
    /// its task was never picked up numbers its attempts on from it), and whether one completed
    /// (a step whose last attempt completed but whose report Temporal never got stands).
    #[activity(name = "RecordedStep")]
    pub async fn recorded_step(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: AttemptsInput,
    ) -> Result<RecordedStep, ActivityError> {
        let attempts = self
            .runner
            .store()
            .steps(&input.workflow_id)
            .await
            .map_err(|e| StepFailure::from(e).into_activity_error())?;
        let of_step = || attempts.iter().filter(|a| a.step == input.step.as_str());
        Ok(RecordedStep {
            last_attempt: of_step().map(|a| a.attempt).max().unwrap_or(0),
            completed: of_step().any(|a| a.status == StepStatus::Completed && a.output_hash.is_some()),
        })
    }

    #[activity(name = "RoleSetupActivity")]
    pub async fn role_setup(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: StepInput,
    ) -> Result<StepReport, ActivityError> {
        self.step(ctx, input, StepName::RoleSetup).await
    }

    #[activity(name = "DocumentLinkingActivity")]
    pub async fn document_linking(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: StepInput,
    ) -> Result<StepReport, ActivityError> {
        self.step(ctx, input, StepName::DocumentLinking).await
    }

    #[activity(name = "AIAssessmentActivity")]
    pub async fn ai_assessment(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: StepInput,
    ) -> Result<StepReport, ActivityError> {
        self.step(ctx, input, StepName::AiAssessment).await
    }

    #[activity(name = "StepExecutorActivity")]
    pub async fn step_executor(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: StepInput,
    ) -> Result<StepReport, ActivityError> {
        self.step(ctx, input, StepName::StepExecutor).await
    }

    #[activity(name = "StandardizationActivity")]
    pub async fn standardization(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: StepInput,
    ) -> Result<StepReport, ActivityError> {
        self.step(ctx, input, StepName::Standardization).await
    }

    #[activity(name = "SkillsMinerActivity")]
    pub async fn skills_miner(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: StepInput,
    ) -> Result<StepReport, ActivityError> {
        self.step(ctx, input, StepName::SkillsMiner).await
    }

    #[activity(name = "SkillsArchitectureActivity")]
    pub async fn skills_architecture(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: StepInput,
    ) -> Result<StepReport, ActivityError> {
        self.step(ctx, input, StepName::SkillsArchitecture).await
    }

    #[activity(name = "SkillsCatalogActivity")]
    pub async fn skills_catalog(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: StepInput,
    ) -> Result<StepReport, ActivityError> {
        self.step(ctx, input, StepName::SkillsCatalog).await
    }

    #[activity(name = "ReskillingActivity")]
    pub async fn reskilling(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: StepInput,
    ) -> Result<StepReport, ActivityError> {
        self.step(ctx, input, StepName::Reskilling).await
    }

    #[activity(name = "TaskFeasibilityActivity")]
    pub async fn task_feasibility(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: StepInput,
    ) -> Result<StepReport, ActivityError> {
        self.step(ctx, input, StepName::TaskFeasibility).await
    }

    #[activity(name = "FinalizeActivity")]
    pub async fn finalize(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: StepInput,
    ) -> Result<StepReport, ActivityError> {
        self.step(ctx, input, StepName::Finalize).await
    }
}

impl PipelineActivities {
    async fn close_run(&self, input: &OutcomeInput) -> Result<OutcomeReport, StepFailure> {
        let store = self.runner.store();
        let attempts = store.steps(&input.workflow_id).await?;
        let latest =
            |step: StepName| attempts.iter().filter(|a| a.step == step.as_str()).max_by_key(|a| a.attempt).cloned();
        for failed in &input.failed {
            // The activity records its own failure; this covers attempts that could not (timeouts,
            // a worker that died on the last attempt).
            match latest(failed.step) {
                Some(a) if a.status == StepStatus::Failed => {}
                Some(a) if a.status.is_finished() => {}
                // An attempt stopped by the run's cancel ends the workflow's activity with a
                // cancellation; it leaves its attempt open, and it is closed as cancelled here.
                other if input.cancelled => {
                    let attempt = other.map_or(1, |a| a.attempt);
                    let record = StepTransition::new(failed.step.as_str(), attempt, StepStatus::Cancelled);
                    store.record_step(&input.workflow_id, record).await?;
                }
                other => {
                    let attempt = other.map_or(1, |a| a.attempt);
                    let mut record = StepTransition::new(failed.step.as_str(), attempt, StepStatus::Failed);
                    // It timed out or its worker died: another attempt may well succeed.
                    record.error = Some(
                        StepFailure::transient("STEP_FAILED", unreported_failure(&failed.message))
                            .to_pipeline_error(failed.step),
                    );
                    store.record_step(&input.workflow_id, record).await?;
                }
            }
        }
        // Steps the run planned but never reached (a step they need failed, or the run was
        // cancelled) are closed by the store with the run's outcome, in the same transaction
        // (SKIPPED, or CANCELLED in a cancelled run).
        let run = store.get_run(&input.workflow_id).await?;
        if run.state.is_final() {
            // Recorded already (this activity is being retried, or Cancel closed the run first).
            return Ok(OutcomeReport { state: run.state });
        }
        let failed: Vec<StepName> = input.failed.iter().map(|f| f.step).collect();
        let state = outcome_of(&failed, input.cancelled);
        let mut change = Transition::to(state, outcome_reason(state, &failed));
        if state == RunState::Failed {
            change.error = self.first_error(&input.workflow_id, &input.failed).await?;
        }
        match store.transition(&input.workflow_id, change).await {
            Ok(finished) => observe::run_finished(
                finished.state.as_str(),
                finished.processing_time(),
                finished.time_to_dashboard(),
                finished.tokens_used.total(),
            ),
            // A concurrent close (a cancel, the reconciler) got there first: that outcome stands.
            Err(StoreError::IllegalTransition(refused)) => {
                tracing::info!(run = %input.workflow_id, "outcome not recorded: {refused}");
                let run = store.get_run(&input.workflow_id).await?;
                return Ok(OutcomeReport { state: run.state });
            }
            Err(err) => return Err(err.into()),
        }
        tracing::info!(%state, "run ended");
        Ok(OutcomeReport { state })
    }

    /// The error of the first critical step that failed, as the run's error: its last failed
    /// attempt's, or, when none of its attempts recorded a failure (its last attempt completed in
    /// the store but its report never reached Temporal, which gave up on it), what the workflow
    /// engine said. A FAILED run always says why.
    async fn first_error(&self, run: &WorkflowId, failed: &[FailedStep]) -> Result<Option<PipelineError>, StepFailure> {
        let attempts = self.runner.store().steps(run).await?;
        let critical =
            StepName::ALL.into_iter().filter_map(|step| failed.iter().find(|f| f.step == step && step.is_critical()));
        let mut first = None;
        for failure in critical {
            let recorded = attempts
                .iter()
                .filter(|a| a.step == failure.step.as_str() && a.status == StepStatus::Failed)
                .max_by_key(|a| a.attempt)
                .and_then(|a| a.error.clone());
            if recorded.is_some() {
                return Ok(recorded);
            }
            first.get_or_insert(failure);
        }
        // None only when no critical step failed, and then the run is not FAILED.
        Ok(first.map(|failure| {
            StepFailure::transient("STEP_FAILED", unreported_failure(&failure.message)).to_pipeline_error(failure.step)
        }))
    }
}

/// What the run says of a step whose last attempt ended without reporting a result.
fn unreported_failure(engine_says: &str) -> String {
    format!("its last attempt ended without reporting a result (the workflow engine says: {engine_says})")
}

fn outcome_reason(state: RunState, failed: &[StepName]) -> String {
    let names = || failed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    match state {
        RunState::Ready => "every step completed".to_owned(),
        RunState::Degraded => format!("enhancement steps failed: {}", names()),
        RunState::Failed => format!("critical steps failed: {}", names()),
        RunState::Cancelled => "cancelled".to_owned(),
        other => other.as_str().to_owned(),
    }
}

/// A REUSED step's record carries what the reused attempt made: its model, prompt version and
/// digest, so a run tells what it stands on without following `reused_from`.
fn keep_what_it_made(record: &mut StepTransition, kept: &etter_store::StepAttempt) {
    record.model = kept.model.clone();
    record.prompt_version = kept.prompt_version.clone();
    record.digest = kept.digest.clone();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Activities over a fresh embedded store and graph, the offline model, no faults.
    async fn activities(data_dir: &std::path::Path) -> anyhow::Result<PipelineActivities> {
        let config = crate::config::Config { data_dir: data_dir.to_owned(), ..Default::default() };
        let store = etter_store::connect(&config.store_location()?).await?;
        let graph = etter_graph::open(&config.graph, &config.data_dir).await?;
        let documents = Arc::new(etter_documents::Documents::new(config.documents.clone())?);
        let llm = etter_llm::provider_from_config(&config.llm)?;
        let runner = StepRunner::new(store, graph, documents, llm);
        Ok(PipelineActivities::new(runner, Faults::default(), Duration::ZERO))
    }

    /// A critical step whose last attempt completed in the store while Temporal gave up on it
    /// (the report was lost with its worker): the run is FAILED and says why, naming the step.
    #[tokio::test]
    async fn a_failed_run_says_why_even_when_its_failed_step_recorded_no_failure() -> anyhow::Result<()> {
        use etter_core::ids::{CompanyId, RoleName};
        use etter_store::NewRun;

        let dir = tempfile::tempdir()?;
        let activities = activities(dir.path()).await?;
        let store = activities.runner.store();
        let created = store
            .create_run(NewRun {
                plan: Some(etter_core::steps::plan_new(false)),
                ..NewRun::queued(CompanyId::parse("acme")?, RoleName::parse("Analyst")?, "analyst-1", "pushed")
            })
            .await?;
        let run = created.run.workflow_id;
        store.transition(&run, Transition::to(RunState::Processing, "dispatched")).await?;
        for (step, attempt, status) in [
            (StepName::RoleSetup, 1, StepStatus::Completed),
            (StepName::DocumentLinking, 1, StepStatus::Completed),
            (StepName::AiAssessment, 3, StepStatus::Running),
            (StepName::AiAssessment, 3, StepStatus::Completed),
        ] {
            let mut record = StepTransition::new(step.as_str(), attempt, status);
            if status == StepStatus::Completed {
                record.output_hash = Some(format!("{step}-output"));
            }
            store.record_step(&run, record).await?;
        }
        let input = OutcomeInput {
            workflow_id: run.clone(),
            plan: etter_core::steps::plan_new(false).steps,
            failed: vec![FailedStep { step: StepName::AiAssessment, message: "activity Heartbeat timeout".to_owned() }],
            cancelled: false,
            trace_id: None,
        };
        let report = activities.close_run(&input).await.map_err(|f| anyhow::anyhow!("{f}"))?;
        assert_eq!(report.state, RunState::Failed);
        let stored = store.get_run(&run).await?;
        let error = stored.error.ok_or_else(|| anyhow::anyhow!("a FAILED run without an error: {:?}", stored.state))?;
        assert_eq!(error.code, "STEP_FAILED");
        assert_eq!(error.step.as_deref(), Some("ai_assessment"));
        assert!(error.message.contains("Heartbeat timeout"), "{error:?}");
        Ok(())
    }

    #[test]
    fn outcomes_follow_the_design() {
        assert_eq!(outcome_of(&[], false), RunState::Ready);
        assert_eq!(outcome_of(&[StepName::Reskilling], false), RunState::Degraded);
        assert_eq!(outcome_of(&[StepName::Reskilling, StepName::AiAssessment], false), RunState::Failed);
        assert_eq!(outcome_of(&[StepName::AiAssessment], true), RunState::Cancelled);
    }

    #[test]
    fn heartbeats_stay_well_inside_the_timeout() {
        assert_eq!(heartbeat_interval(Some(Duration::from_secs(60))), Duration::from_secs(20));
        assert_eq!(heartbeat_interval(Some(Duration::from_millis(90))), Duration::from_millis(100));
        assert_eq!(heartbeat_interval(None), Duration::from_secs(10));
    }
}
