//! The full status of a run (`RunStatus`), as `GetStatus` answers and `WatchStatus` streams it.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::ServerConfig;
use etter_core::digest::{self, StepDigest};
use etter_core::ids::{RoleId, WorkflowId};
use etter_core::lifecycle::RunState;
use etter_core::steps::{Action, Plan, StepName};
use etter_proto::v1 as pb;
use etter_store::fanout;
use etter_store::{Announce, Run, RunStore, StepAttempt, StepStatus, StoreError, TokenCount};

use crate::limits::Limits;
use crate::{
    convert::{self, StoredOptions},
    error::ApiError,
    estimate::Estimator,
    graph::{self, GraphReader},
    principal::Principal,
};

/// What a status is read from.
#[derive(Clone, Copy)]
pub struct StatusContext<'a> {
    /// The run store: the run, its steps, its queue position.
    pub store: &'a dyn RunStore,
    /// ETAs and token estimates from measured step costs.
    pub estimator: &'a Estimator,
    /// Where a finished role's outputs summary and dashboard URL come from; `None` leaves both
    /// unset (a Push answer carries neither).
    pub finished: Option<Finished<'a>>,
    /// Step attempts kept from earlier reads; `None` reads them from the store every time.
    pub kept: Option<&'a KeptSteps>,
}

/// Whether `run` cannot have step attempts yet: the store records a step together with an event
/// of the run, so a run still at its first event (its creation) has none, and needs no read.
fn no_attempts_yet(run: &Run) -> bool {
    run.sequence <= 1
}

/// Runs whose step attempts are kept.
const KEPT_RUNS: NonZeroUsize = NonZeroUsize::new(1024).expect("non-zero");

/// The step attempts last read per run, with the run's sequence then. A run's attempts change
/// only together with its sequence (the store appends an event in the transaction that records a
/// step), so attempts read for a sequence answer every later read of the run at that sequence:
/// reading a status costs one store read instead of two. The least recently used runs go first.
pub struct KeptSteps {
    runs: Mutex<KeptRuns>,
}

/// Per run: the sequence the attempts were read for, and the attempts.
type KeptRuns = lru::LruCache<WorkflowId, (u64, Arc<[StepAttempt]>)>;

impl Default for KeptSteps {
    fn default() -> Self {
        Self { runs: Mutex::new(lru::LruCache::new(KEPT_RUNS)) }
    }
}

impl KeptSteps {
    /// The attempts of `run` as of its sequence (or later).
    pub async fn steps(&self, store: &dyn RunStore, run: &Run) -> Result<Arc<[StepAttempt]>, StoreError> {
        if no_attempts_yet(run) {
            return Ok(Arc::from([]));
        }
        if let Some((_, kept)) = self.lock().get(&run.workflow_id).filter(|(sequence, _)| *sequence == run.sequence) {
            return Ok(Arc::clone(kept));
        }
        // Read after the run, so these attempts are of its sequence or a later one.
        let read: Arc<[StepAttempt]> = store.steps(&run.workflow_id).await?.into();
        let mut runs = self.lock();
        // A slower read of an older sequence must not replace a newer one.
        if runs.peek(&run.workflow_id).is_none_or(|(sequence, _)| *sequence <= run.sequence) {
            runs.put(run.workflow_id.clone(), (run.sequence, Arc::clone(&read)));
        }
        Ok(read)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeptRuns> {
        // A plain map: a panic elsewhere cannot leave it inconsistent.
        self.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Ended runs kept at most.
const ENDED_RUNS: NonZeroUsize = NonZeroUsize::new(4096).expect("non-zero");
/// Moves remembered at most, to refuse keeping a read that raced one (see [`EndedRuns`]).
const RECENT_MOVES: NonZeroUsize = NonZeroUsize::new(4096).expect("non-zero");
/// How long an ended run is served from memory without a move announced.
pub const ENDED_RUN_TTL: Duration = Duration::from_secs(1);

/// Runs that ended (READY, FAILED, CANCELLED, …), as last read, for `GetStatus` by workflow id.
///
/// An ended run still changes, rarely: a new run supersedes it, a staleness scan marks it STALE,
/// a reviewer flags it. Each such change is announced once committed ([`Announce`]): this
/// server's own writes at once, through [`Forget`], before the write is acknowledged; other
/// processes' writes through the hub (Redis). A kept run is dropped when its move is announced,
/// and is never kept longer than [`ENDED_RUN_TTL`] — the bound on what a lost Redis message (or
/// a deployment without Redis, where the worker's writes are not announced) can cost. A read
/// that raced a move (started before the move was learned) is not kept. Active runs are never
/// kept: their status changes with each step and with time.
pub struct EndedRuns {
    kept: Mutex<Ended>,
}

/// One kept read of an ended run.
struct KeptRead {
    /// When the read started.
    read_at: Instant,
    /// The run as read.
    run: Arc<Run>,
    /// Its status, once assembled from this very read (an ended run's status is a function of
    /// the run as read, its attempts and outputs at that sequence, and the server's settings).
    status: Option<Arc<pb::RunStatus>>,
}

struct Ended {
    /// Per run, its kept read.
    runs: lru::LruCache<WorkflowId, KeptRead>,
    /// When each recently moved run's move was learned.
    moves: lru::LruCache<WorkflowId, Instant>,
    /// Reads that started before this are not kept (moves were missed then).
    not_before: Instant,
}

impl Default for EndedRuns {
    fn default() -> Self {
        Self {
            kept: Mutex::new(Ended {
                runs: lru::LruCache::new(ENDED_RUNS),
                moves: lru::LruCache::new(RECENT_MOVES),
                not_before: Instant::now(),
            }),
        }
    }
}

impl EndedRuns {
    /// The run `id`: kept, or read from the store (and kept if it has ended).
    pub async fn run(&self, store: &dyn RunStore, id: &WorkflowId) -> Result<Arc<Run>, StoreError> {
        if let Some(kept) = self.lock().runs.get(id)
            && kept.read_at.elapsed() < ENDED_RUN_TTL
        {
            return Ok(Arc::clone(&kept.run));
        }
        let started = Instant::now();
        let run = Arc::new(store.get_run(id).await?);
        if run.state.is_final() {
            let mut kept = self.lock();
            let raced = started < kept.not_before || kept.moves.peek(id).is_some_and(|moved| *moved >= started);
            if !raced {
                kept.runs.put(id.clone(), KeptRead { read_at: started, run: Arc::clone(&run), status: None });
            }
        }
        Ok(run)
    }

    /// The status assembled for `run`, if it is the kept read of `id` and a status was kept with
    /// it (see [`EndedRuns::keep_status`]).
    pub fn status(&self, id: &WorkflowId, run: &Arc<Run>) -> Option<Arc<pb::RunStatus>> {
        let mut kept = self.lock();
        let read = kept.runs.get(id)?;
        (read.read_at.elapsed() < ENDED_RUN_TTL && Arc::ptr_eq(&read.run, run)).then(|| read.status.clone()).flatten()
    }

    /// Keeps `status`, assembled from `run`, with the kept read of `id` — only if `run` is that
    /// read: a run that moved since (or was never kept) keeps nothing.
    pub fn keep_status(&self, id: &WorkflowId, run: &Arc<Run>, status: Arc<pb::RunStatus>) {
        let mut kept = self.lock();
        if let Some(read) = kept.runs.get_mut(id)
            && Arc::ptr_eq(&read.run, run)
        {
            read.status = Some(status);
        }
    }

    /// `run` moved (learned at `at`): its kept status is dropped, and a read that started before
    /// `at` is not kept.
    pub fn moved(&self, run: &WorkflowId, at: Instant) {
        let mut kept = self.lock();
        kept.runs.pop(run);
        let latest = kept.moves.peek(run).map_or(at, |seen| (*seen).max(at));
        kept.moves.put(run.clone(), latest);
    }

    /// Whether no run is kept.
    pub fn is_empty(&self) -> bool {
        self.lock().runs.is_empty()
    }

    /// Moves may have been missed (the hub's receiver lagged): everything kept is dropped.
    pub fn forget_all(&self) {
        let mut kept = self.lock();
        kept.runs.clear();
        kept.not_before = Instant::now();
    }

    /// Drops kept runs as the hub learns of their moves, until the hub closes.
    pub async fn follow(self: Arc<Self>, mut moves: tokio::sync::broadcast::Receiver<fanout::Moved>) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match moves.recv().await {
                Ok(moved) => self.moved(&moved.run, moved.at),
                Err(RecvError::Lagged(_)) => self.forget_all(),
                Err(RecvError::Closed) => return,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ended> {
        // Plain maps: a panic elsewhere cannot leave them inconsistent.
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An [`Announce`] that first makes [`EndedRuns`] forget the run, then passes the move on: this
/// server's writes are seen by its own next read.
pub struct Forget {
    /// What is forgotten.
    pub ended: Arc<EndedRuns>,
    /// Where moves go next (Redis, or the hub).
    pub then: Arc<dyn Announce>,
}

impl Announce for Forget {
    fn moved(&self, run: &WorkflowId) {
        self.ended.moved(run, Instant::now());
        self.then.moved(run);
    }
}

/// The sources of what a status shows about a finished role.
#[derive(Clone, Copy)]
pub struct Finished<'a> {
    /// The role graph (outputs summaries).
    pub graph: &'a GraphReader,
    /// `[server]` (`server.dashboard_url`).
    pub server: &'a ServerConfig,
}

/// Whether a run in `state` has outputs in the role graph worth summarising: it finished its
/// critical path (READY, DEGRADED) or did and went stale since.
fn has_outputs(state: RunState) -> bool {
    matches!(state, RunState::Ready | RunState::Degraded | RunState::Stale)
}

/// The plan of a run: the one kept with it, or (for runs stored before plans were kept) the
/// first-run plan of its options.
pub fn plan_of(run: &Run) -> Plan {
    run.plan
        .clone()
        .unwrap_or_else(|| etter_core::steps::plan_new(StoredOptions::of(&run.options).skip_enhancement_workflows))
}

/// How many runs of `company` are queued: a run pushed now comes after them.
pub async fn queued_count(store: &dyn RunStore, company: &etter_core::ids::CompanyId) -> Result<u32, ApiError> {
    Ok(u32::try_from(store.count_runs(Some(company), &[RunState::Queued]).await?).unwrap_or(u32::MAX))
}

/// What `run` does with each step, as a push answers it. `created`: the push created the run (or
/// would), and its planned steps run; otherwise the run exists already, nothing new runs, and the
/// role gets its steps' outputs (REUSED).
pub fn planned(run: &Run, created: bool) -> Vec<pb::PlannedStep> {
    plan_of(run)
        .steps
        .iter()
        .map(|(step, action)| {
            let state = match (action, created) {
                (Action::Skip, _) => pb::StepState::Skipped,
                (Action::Reuse, _) | (Action::Run, false) => pb::StepState::Reused,
                (Action::Run, true) => pb::StepState::Pending,
            };
            pb::PlannedStep { name: step.as_str().to_owned(), state: state as i32 }
        })
        .collect()
}

/// The status of one step from its attempts (ordered by attempt), or `None` when none was recorded.
fn step_progress(
    step: &str,
    attempts: &[&StepAttempt],
    critical: bool,
    fallback: StepStatus,
    now: chrono::DateTime<chrono::Utc>,
) -> (pb::StepProgress, StepStatus) {
    let latest = attempts.last();
    let status = latest.map_or(fallback, |a| a.status);
    let started = attempts.iter().find_map(|a| a.started_at);
    let finished = latest.filter(|a| a.status.is_finished()).and_then(|a| a.finished_at);
    let duration_ms = started.map_or(0, |s| (finished.unwrap_or(now) - s).num_milliseconds().max(0));
    let tokens = attempts.iter().fold(TokenCount::default(), |sum, a| TokenCount {
        input: sum.input + a.tokens.input,
        output: sum.output + a.tokens.output,
    });
    let mut error = attempts.iter().rev().find_map(|a| a.error.as_ref()).map(convert::error);
    // An earlier attempt's error while the step is tried again: nothing for the user to do yet.
    if let Some(error) = error.as_mut()
        && matches!(status, StepStatus::Retrying | StepStatus::Running)
    {
        error.action = "Nothing to do yet: the step is being tried again".to_owned();
    }
    let progress = pb::StepProgress {
        name: step.to_owned(),
        status: convert::step_state(status) as i32,
        started_at: started.map(convert::timestamp),
        finished_at: finished.map(convert::timestamp),
        duration_ms,
        attempts: latest.map_or(0, |a| i32::try_from(a.attempt).unwrap_or(i32::MAX)),
        tokens: Some(convert::tokens(tokens)),
        error,
        critical,
        reused_from: latest.and_then(|a| a.reused_from.as_ref()).map(ToString::to_string).unwrap_or_default(),
        input_hash: latest.and_then(|a| a.input_hash.clone()).unwrap_or_default(),
        output_hash: latest.and_then(|a| a.output_hash.clone()).unwrap_or_default(),
        model: latest.and_then(|a| a.model.clone()).unwrap_or_default(),
        prompt_version: latest.and_then(|a| a.prompt_version.clone()).unwrap_or_default(),
        attempt_spans: attempts
            .iter()
            .map(|a| pb::AttemptSpan {
                attempt: i32::try_from(a.attempt).unwrap_or(i32::MAX),
                status: convert::step_state(a.status) as i32,
                started_at: a.started_at.map(convert::timestamp),
                finished_at: match a.status {
                    // Replaced by a later attempt: it ended when it was given up on.
                    StepStatus::Retrying => Some(convert::timestamp(a.update_time)),
                    _ => a.finished_at.filter(|_| a.status.is_finished()).map(convert::timestamp),
                },
                error_code: a.error.as_ref().map(|e| e.code.clone()).unwrap_or_default(),
            })
            .collect(),
    };
    (progress, status)
}

/// Leading tasks and skills in an outputs summary, at most.
const LEADING: usize = 10;

/// The digest of what `step` produced that the run stands on: that of its latest completed or
/// reused attempt.
pub fn kept_digest(attempts: &[StepAttempt], step: StepName) -> Option<&StepDigest> {
    attempts
        .iter()
        .filter(|a| a.step == step.as_str() && matches!(a.status, StepStatus::Completed | StepStatus::Reused))
        .max_by_key(|a| a.attempt)
        .and_then(|a| a.digest.as_ref())
}

/// Adds to an outputs summary what the run's step digests tell: the leading tasks and skills
/// with their scores, and why the run needs review.
fn add_digests(outputs: &mut pb::OutputsSummary, attempts: &[StepAttempt]) {
    let items = |step| kept_digest(attempts, step).map(|d| d.items.as_slice());
    let tasks = digest::leading_tasks(
        items(StepName::AiAssessment).unwrap_or_default(),
        items(StepName::StepExecutor),
        LEADING,
    );
    outputs.leading_tasks = tasks.iter().map(convert::output_item).collect();
    let skills = digest::leading_skills(items(StepName::SkillsMiner).unwrap_or_default(), LEADING);
    outputs.leading_skills = skills.iter().map(convert::output_item).collect();
    outputs.review_reasons = StepName::ALL
        .into_iter()
        .filter_map(|step| Some((step, kept_digest(attempts, step)?)))
        .flat_map(|(step, d)| {
            d.review
                .iter()
                .map(move |reason| pb::ReviewReason { step: step.as_str().to_owned(), reason: reason.clone() })
        })
        .collect();
}

/// Builds the full status of `run`: its steps, queue position and estimates from the store and,
/// once it finished (READY, DEGRADED, STALE), its dashboard URL and its outputs summary from the
/// role graph. A graph that cannot answer leaves `outputs` unset; the status is still served.
pub async fn run_status(cx: &StatusContext<'_>, run: &Run) -> Result<pb::RunStatus, ApiError> {
    let attempts = match cx.kept {
        Some(kept) => kept.steps(cx.store, run).await?,
        None if no_attempts_yet(run) => Arc::from([]),
        None => cx.store.steps(&run.workflow_id).await?.into(),
    };
    status_with(cx, run, &attempts).await
}

/// [`run_status`] from step attempts the caller has read already.
pub async fn status_with(
    cx: &StatusContext<'_>,
    run: &Run,
    attempts: &[StepAttempt],
) -> Result<pb::RunStatus, ApiError> {
    let position = match run.state {
        RunState::Queued => cx.store.queue_position(&run.workflow_id).await?,
        // Not in the queue yet: its ETA places it behind the runs queued now.
        RunState::Validating => Some(queued_count(cx.store, &run.company_id).await?.saturating_add(1)),
        _ => None,
    };
    let mut status = assemble(run, attempts, position, cx.estimator);
    if let Some(finished) = cx.finished
        && has_outputs(run.state)
    {
        status.dashboard_url = finished.server.dashboard_url_for(&run.role_id, &run.company_id).unwrap_or_default();
        status.outputs = finished
            .graph
            .summary(&run.role_id, &run.workflow_id, run.sequence)
            .await
            .as_ref()
            .map(graph::outputs_summary);
        if let Some(outputs) = status.outputs.as_mut() {
            add_digests(outputs, attempts);
        }
    }
    Ok(status)
}

/// The status of `run` from what was read (pure, so it is tested without a store). `position`:
/// a queued run's place in its company's queue; a VALIDATING run's place once queued (its ETA
/// counts it; it has no place in the queue yet).
pub fn assemble(run: &Run, attempts: &[StepAttempt], position: Option<u32>, estimator: &Estimator) -> pb::RunStatus {
    let plan = plan_of(run);
    let options = StoredOptions::of(&run.options);
    let now = etter_store::now();
    let mut by_step: BTreeMap<&str, Vec<&StepAttempt>> = BTreeMap::new();
    for attempt in attempts {
        by_step.entry(attempt.step.as_str()).or_default().push(attempt);
    }
    for list in by_step.values_mut() {
        list.sort_by_key(|a| a.attempt);
    }
    // A planned step with no record: waiting while the run is active; not reached once it ended.
    let unrecorded = match run.state {
        RunState::Validating | RunState::Queued | RunState::Processing => StepStatus::Pending,
        RunState::Cancelled => StepStatus::Cancelled,
        _ => StepStatus::Skipped,
    };
    let mut progress_steps = Vec::new();
    let mut current_steps = Vec::new();
    let mut finished = 0usize;
    for step in StepName::ALL {
        let planned = plan.action(step) != Action::Skip;
        let records = by_step.remove(step.as_str()).unwrap_or_default();
        let fallback = if planned { unrecorded } else { StepStatus::Skipped };
        let (progress, status) = step_progress(step.as_str(), &records, step.is_critical(), fallback, now);
        if planned && status.is_finished() {
            finished += 1;
        }
        if matches!(status, StepStatus::Running | StepStatus::Retrying) {
            current_steps.push(step.as_str().to_owned());
        }
        progress_steps.push(progress);
    }
    // Steps recorded under names this version's graph does not have (an older graph).
    for (name, records) in by_step {
        let (progress, _) = step_progress(name, &records, false, StepStatus::Skipped, now);
        progress_steps.push(progress);
    }
    let estimated_duration_seconds =
        if run.state.is_final() { 0 } else { estimator.remaining_seconds(&plan, position, finished) };
    let wait_reason = match run.state {
        RunState::Validating => estimator.conditions().validating(),
        RunState::Queued => estimator.conditions().queued(&run.company_id, position.unwrap_or(1)),
        RunState::Processing if current_steps.is_empty() => estimator.conditions().processing(),
        _ => pb::WaitReason::Unspecified,
    };
    pb::RunStatus {
        workflow_id: run.workflow_id.to_string(),
        role_id: run.role_id.to_string(),
        company_id: run.company_id.to_string(),
        role_name: run.role_name.to_string(),
        draup_role_id: run.draup_role_id.as_ref().map(ToString::to_string).unwrap_or_default(),
        run_number: i32::try_from(run.run_number).unwrap_or(i32::MAX),
        status: convert::role_status(run.state) as i32,
        current_step: current_steps.first().cloned().unwrap_or_default(),
        current_steps,
        progress: Some(pb::Progress {
            current: i32::try_from(finished).unwrap_or(i32::MAX),
            total: i32::try_from(plan.total()).unwrap_or(i32::MAX),
            steps: progress_steps,
        }),
        position_in_queue: match run.state {
            RunState::Queued => position.map_or(0, |p| i32::try_from(p).unwrap_or(i32::MAX)),
            _ => 0,
        },
        estimated_duration_seconds,
        token_estimate: Some(estimator.token_estimate(run.token_estimate)),
        tokens_used: Some(convert::tokens(run.tokens_used)),
        // The dashboard URL and the outputs summary are filled by `run_status` (graph and config).
        dashboard_url: String::new(),
        error: run.error.as_ref().map(convert::error),
        needs_review: run.needs_review,
        superseded_by: run.superseded_by.as_ref().map(ToString::to_string).unwrap_or_default(),
        supersedes: run.supersedes.as_ref().map(ToString::to_string).unwrap_or_default(),
        batch_id: run.batch_id.as_ref().map(ToString::to_string).unwrap_or_default(),
        field_violations: run.field_violations.iter().map(convert::field_violation).collect(),
        trace_id: run.trace_id.as_ref().map(|t| t.as_str().to_owned()).unwrap_or_default(),
        wait_reason: wait_reason as i32,
        documents: {
            let linked =
                kept_digest(attempts, StepName::DocumentLinking).map(|d| d.items.as_slice()).unwrap_or_default();
            let hash_of = |uri: &str| linked.iter().find(|i| i.key == uri).and_then(|i| i.content_hash.as_deref());
            run.documents.iter().map(|doc| convert::document(doc, hash_of(&doc.uri))).collect()
        },
        options: Some(options.to_pb(run.deadline)),
        outputs: None,
        sequence: run.sequence,
        create_time: Some(convert::timestamp(run.create_time)),
        start_time: run.start_time.map(convert::timestamp),
        end_time: run.end_time.map(convert::timestamp),
        update_time: Some(convert::timestamp(run.update_time)),
    }
}

/// A run the caller may see, by workflow id: a run of another company is NOT_FOUND.
pub async fn visible_run(store: &dyn RunStore, principal: &Principal, workflow_id: &str) -> Result<Run, ApiError> {
    let id = WorkflowId::parse(workflow_id)
        .map_err(|e| ApiError::invalid("INVALID_REQUEST", "workflow_id", e.to_string()))?;
    let run = store.get_run(&id).await?;
    principal.authorize_read(&run.company_id, "run", workflow_id)?;
    Ok(run)
}

/// `GetStatus`: a run by workflow id (an ended one kept in `ended`), or a role's latest run by
/// role id.
pub async fn get_status(
    cx: &StatusContext<'_>,
    ended: &EndedRuns,
    limits: &Limits,
    principal: &Principal,
    request: pb::GetStatusRequest,
) -> Result<pb::GetStatusResponse, ApiError> {
    use pb::get_status_request::Target;
    let store = cx.store;
    let (run, kept) = match request.target {
        Some(Target::WorkflowId(id)) => {
            let workflow_id = WorkflowId::parse(&id)
                .map_err(|e| ApiError::invalid("INVALID_REQUEST", "workflow_id", e.to_string()))?;
            let run = ended.run(store, &workflow_id).await?;
            principal.authorize_read(&run.company_id, "run", &id)?;
            (run, Some(workflow_id))
        }
        Some(Target::RoleId(id)) => {
            let role =
                RoleId::parse(&id).map_err(|e| ApiError::invalid("INVALID_REQUEST", "role_id", e.to_string()))?;
            let run = store.latest_run(&role).await?;
            principal.authorize_read(&run.company_id, "role", &id)?;
            (Arc::new(run), None)
        }
        None => return Err(ApiError::invalid("INVALID_REQUEST", "target", "set workflow_id or role_id")),
    };
    limits.admit_call(&run.company_id)?;
    let Some(workflow_id) = kept else {
        return Ok(pb::GetStatusResponse { run: Some(run_status(cx, &run).await?) });
    };
    // An ended run read from memory is assembled once per read, not once per call.
    if let Some(status) = ended.status(&workflow_id, &run) {
        return Ok(pb::GetStatusResponse { run: Some(status.as_ref().clone()) });
    }
    let status = run_status(cx, &run).await?;
    // A status without the outputs the run has (the graph did not answer) is not kept.
    if run.state.is_final() && (status.outputs.is_some() || !has_outputs(run.state)) {
        ended.keep_status(&workflow_id, &run, Arc::new(status.clone()));
    }
    Ok(pb::GetStatusResponse { run: Some(status) })
}

#[cfg(test)]
mod tests {
    use anyhow::Result;
    use etter_store::StoreLocation;
    use etter_store::{self, StepTransition};

    use super::{EndedRuns, KeptSteps, StepStatus};

    /// Kept attempts answer the run at the sequence they were read for; a recorded step moves the
    /// run, and its next status shows the step.
    #[tokio::test]
    async fn kept_steps_follow_the_runs_sequence() -> Result<()> {
        let scratch = tempfile::Builder::new().prefix("etter-kept-steps-").tempdir()?;
        let dir = scratch.path().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let store = etter_store::connect(&StoreLocation::Sqlite(dir.join("runs.db"))).await?;
        let created = store.create_run(crate::testing::queued_run("Claims Adjuster", "kept-steps")?).await?;
        let wf = created.run.workflow_id.clone();
        let kept = KeptSteps::default();
        assert!(kept.steps(store.as_ref(), &created.run).await?.is_empty(), "a new run has no attempts");

        store.record_step(&wf, StepTransition::new("role_setup", 1, StepStatus::Running)).await?;
        let moved = store.get_run(&wf).await?;
        let attempts = kept.steps(store.as_ref(), &moved).await?;
        assert_eq!(
            attempts.iter().map(|a| (a.step.as_str(), a.status)).collect::<Vec<_>>(),
            [("role_setup", StepStatus::Running)]
        );

        store.record_step(&wf, StepTransition::new("role_setup", 1, StepStatus::Completed)).await?;
        let finished = store.get_run(&wf).await?;
        assert!(finished.sequence > moved.sequence);
        let attempts = kept.steps(store.as_ref(), &finished).await?;
        assert_eq!(attempts.iter().map(|a| a.status).collect::<Vec<_>>(), [StepStatus::Completed]);
        // A read for the earlier sequence (a request that read the run before the step was
        // recorded) is answered from a fresh read, never replaces the newer attempts.
        kept.steps(store.as_ref(), &moved).await?;
        let again = kept.steps(store.as_ref(), &finished).await?;
        assert_eq!(again.iter().map(|a| a.status).collect::<Vec<_>>(), [StepStatus::Completed]);
        store.close().await;
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    /// A step tried again shows the earlier attempt's error, but not its advice to retry the role
    /// (a Retry of a running run is refused): there is nothing to do yet. Once the step failed for
    /// good, the advice is the error's own again.
    #[test]
    fn an_error_of_a_step_still_being_tried_asks_for_nothing_yet() {
        let error = etter_store::PipelineError {
            code: "LLM_UNAVAILABLE".to_owned(),
            message: "the model did not answer".to_owned(),
            recoverable: true,
            step: Some("ai_assessment".to_owned()),
            action: Some("Retry the role; the failed steps run again".to_owned()),
        };
        let attempt = |status| etter_store::StepAttempt {
            step: "ai_assessment".to_owned(),
            attempt: 2,
            status,
            started_at: None,
            finished_at: None,
            tokens: etter_store::TokenCount::default(),
            input_hash: None,
            output_hash: None,
            error: Some(error.clone()),
            reused_from: None,
            model: None,
            prompt_version: None,
            digest: None,
            update_time: etter_store::now(),
        };
        let action = |status| {
            let attempt = attempt(status);
            let (progress, _) =
                super::step_progress("ai_assessment", &[&attempt], true, StepStatus::Pending, etter_store::now());
            progress.error.map(|e| e.action).unwrap_or_default()
        };
        assert_eq!(action(StepStatus::Retrying), "Nothing to do yet: the step is being tried again");
        assert_eq!(action(StepStatus::Failed), "Retry the role; the failed steps run again");
    }

    /// An ended run is answered from memory until its move is announced (at once for writes
    /// through a store that announces to [`super::Forget`]), and for at most the TTL otherwise;
    /// active runs and reads that raced a move are never kept.
    #[tokio::test]
    async fn ended_runs_are_kept_until_they_move() -> Result<()> {
        use std::sync::Arc;
        use std::time::{Duration, Instant};

        use etter_core::lifecycle::RunState;
        use etter_store::fanout;
        use etter_store::{StoreOptions, Transition};

        let scratch = tempfile::Builder::new().prefix("etter-ended-runs-").tempdir()?;
        let dir = scratch.path().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let location = StoreLocation::Sqlite(dir.join("runs.db"));
        let ended = Arc::new(EndedRuns::default());
        let hub = fanout::Hub::new();
        // Two handles on one database: one announces its writes (this server), one does not (a
        // worker without Redis).
        let announce = Arc::new(super::Forget { ended: Arc::clone(&ended), then: Arc::new(hub.clone()) });
        let server =
            etter_store::connect_with(&location, &StoreOptions { announce: Some(announce), ..Default::default() })
                .await?;
        let silent = etter_store::connect(&location).await?;

        let queued = server.create_run(crate::testing::queued_run("Claims Adjuster", "ended-runs")?).await?.run;
        let wf = queued.workflow_id.clone();
        // Active: read afresh every time.
        assert_eq!(ended.run(server.as_ref(), &wf).await?.state, RunState::Queued);
        silent.transition(&wf, Transition::to(RunState::Processing, "started elsewhere")).await?;
        assert_eq!(ended.run(server.as_ref(), &wf).await?.state, RunState::Processing);
        silent.transition(&wf, Transition::to(RunState::Ready, "finished elsewhere")).await?;
        let ready = ended.run(server.as_ref(), &wf).await?;
        assert_eq!(ready.state, RunState::Ready);

        // Kept: a change nobody announced is not seen yet...
        silent.set_needs_review(&wf, true).await?;
        assert!(!ended.run(server.as_ref(), &wf).await?.needs_review, "kept until it moves or expires");
        // ...until the kept run expires.
        tokio::time::sleep(super::ENDED_RUN_TTL + Duration::from_millis(100)).await;
        assert!(ended.run(server.as_ref(), &wf).await?.needs_review, "re-read after the TTL");

        // This server's own write is seen by its next read, without waiting.
        server.set_needs_review(&wf, false).await?;
        assert!(!ended.run(server.as_ref(), &wf).await?.needs_review, "own writes forget the kept run");

        // A move learned from elsewhere (the hub) drops the kept run.
        let follower = tokio::spawn(Arc::clone(&ended).follow(hub.subscribe()));
        silent.set_needs_review(&wf, true).await?;
        etter_store::Announce::moved(&hub, &wf);
        let mut seen = false;
        for _ in 0..100 {
            if ended.run(server.as_ref(), &wf).await?.needs_review {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen, "a move from the hub drops the kept run");
        follower.abort();

        // A read that started before a move was learned is not kept: the move may be after it.
        ended.moved(&wf, Instant::now() + Duration::from_secs(60));
        assert!(ended.run(server.as_ref(), &wf).await?.needs_review);
        silent.set_needs_review(&wf, false).await?;
        assert!(!ended.run(server.as_ref(), &wf).await?.needs_review, "a raced read is not kept");

        server.close().await;
        silent.close().await;
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    /// An ended run's assembled status is kept with the very read it was assembled from: another
    /// read of the run (after the TTL, or a move) finds none, and a status assembled from a read
    /// that is not the kept one is not kept.
    #[tokio::test]
    async fn a_kept_status_goes_with_the_read_it_was_assembled_from() -> Result<()> {
        use std::sync::Arc;
        use std::time::Instant;

        use etter_core::lifecycle::RunState;
        use etter_proto::v1 as pb;
        use etter_store::Transition;

        let scratch = tempfile::Builder::new().prefix("etter-kept-status-").tempdir()?;
        let store = etter_store::connect(&StoreLocation::Sqlite(scratch.path().join("runs.db"))).await?;
        let wf = store.create_run(crate::testing::queued_run("Claims Adjuster", "kept-status")?).await?.run.workflow_id;
        let ended = EndedRuns::default();
        let status = |name: &str| Arc::new(pb::RunStatus { role_name: name.to_owned(), ..Default::default() });

        // An active run is not kept, so neither is its status.
        let queued = ended.run(store.as_ref(), &wf).await?;
        ended.keep_status(&wf, &queued, status("queued"));
        assert!(ended.status(&wf, &queued).is_none(), "an active run keeps no status");

        store.transition(&wf, Transition::to(RunState::Processing, "started")).await?;
        store.transition(&wf, Transition::to(RunState::Ready, "done")).await?;
        let ready = ended.run(store.as_ref(), &wf).await?;
        assert!(ended.status(&wf, &ready).is_none(), "nothing assembled yet");
        ended.keep_status(&wf, &ready, status("ready"));
        assert_eq!(ended.status(&wf, &ready).map(|s| s.role_name.clone()).as_deref(), Some("ready"));
        assert!(Arc::ptr_eq(&ended.run(store.as_ref(), &wf).await?, &ready), "the same kept read answers");

        // The same run read apart from the kept read neither finds nor replaces its status.
        let apart = Arc::new(store.get_run(&wf).await?);
        assert!(ended.status(&wf, &apart).is_none());
        ended.keep_status(&wf, &apart, status("apart"));
        assert_eq!(ended.status(&wf, &ready).map(|s| s.role_name.clone()).as_deref(), Some("ready"));

        // A move drops the kept read and its status; the next read starts without one.
        ended.moved(&wf, Instant::now());
        assert!(ended.status(&wf, &ready).is_none(), "a moved run's status is dropped");
        let again = ended.run(store.as_ref(), &wf).await?;
        assert!(!Arc::ptr_eq(&again, &ready) && ended.status(&wf, &again).is_none());
        store.close().await;
        Ok(())
    }
}
