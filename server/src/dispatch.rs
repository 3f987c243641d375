//! The dispatcher: starts queued runs' workflows in Temporal, and the reconciler: closes runs whose
//! workflow ended without recording an outcome.
//!
//! **Never twice, never lost.** A run is claimed with a lease ([`RunStore::claim_queued`]), its
//! workflow is started with the run's workflow id (use-existing, reject-duplicate; see
//! [`crate::orchestrator`]), and only then is it moved QUEUED → PROCESSING. A dispatcher
//! that dies between the start and the bookkeeping leaves the run QUEUED with a claim that
//! expires; the next claim starts it again, which joins the running workflow (or, if it already
//! closed, is refused and the run goes to PROCESSING for the reconciler to settle).
//!
//! **Fair and capped.** Each round serves the companies with queued runs round-robin, each up to
//! its share of the global room (`dispatch.max_processing` minus PROCESSING runs) and its own cap
//! (`dispatch.max_processing_per_company`); within a company the store's dispatch order
//! (priority, then age) applies.
//!
//! **Cancelled while starting.** A run cancelled while QUEUED has no workflow yet; if the
//! dispatcher started one in the meantime, it finds the run CANCELLED when it books the start and
//! cancels the workflow it just started.
//!
//! **Token budgets.** A company whose steps used its whole token budget this month has its queued
//! runs held (admitted on estimates, the runs before them used more); they start when the budget
//! is raised or the month turns. A budget is read whenever its company would be served; a used-up
//! one is believed for [`BUDGET_CHECK_EVERY`]. The budgets of companies that have queued runs but
//! no room (their cap, or the service's, is full) are read every [`BUDGET_CHECK_EVERY`] too, so
//! their runs say they wait for the budget rather than for room.
//!
//! **Deadlines.** Each round first cancels the queued runs whose deadline passed
//! ([`crate::deadline`]); a claimed run is checked again before it is started.
//!
//! **Temporal down.** A start that finds Temporal unavailable releases its claim; the dispatcher
//! backs off (doubling from `dispatch.retry_initial_backoff` to `dispatch.retry_max_backoff`) and
//! tries again. Pushes keep being accepted and queued meanwhile.
//!
//! **The fast lane.** A push or a retry creates its run through the dispatcher
//! ([`Dispatcher::create`]), which reserves a start against the caps first and has the store
//! claim the run as it creates it ([`RunStore::create_run_and_claim`]) when no other run waits for
//! a start and both caps have room; a claimed run is started at once, without waiting for a round.
//! Otherwise the run waits for the next round like any other, and the loop is woken. Starts in
//! flight (reserved or claimed, not yet PROCESSING) count against the caps in both paths.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::DispatchConfig;
use crate::limits::{Limits, Month};
use crate::orchestrator::{ClosedStatus, Orchestrator, OrchestratorError, StartOutcome, WorkflowState};
use crate::wait::{Conditions, Loads};
use etter_core::backoff::Backoff;
use etter_core::error::chain;
use etter_core::ids::{CompanyId, TraceId, WorkflowId};
use etter_core::lifecycle::RunState;
use etter_store::{
    self, Claim, ClaimTerms, Created, NewRun, PageRequest, PipelineError, Run, RunFilter, RunStore, StoreError,
    Transition,
};
use etter_telemetry::metrics as observe;
use futures::StreamExt as _;
use tokio::sync::{Notify, watch};
use tracing::Instrument as _;

use crate::status::plan_of;

/// How long a company found to have used up its budget is held without reading it again.
pub const BUDGET_CHECK_EVERY: Duration = Duration::from_secs(5);

/// What one dispatch round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// Started at least one run: look again at once, more may be waiting.
    Started,
    /// Nothing to start (or nothing could be): wait for a push or the poll interval.
    Idle,
    /// Temporal is unavailable: back off.
    Unavailable,
}

/// What dispatching one claimed run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Started,
    Unavailable,
    Failed,
}

/// Starts queued runs. Shared behind an `Arc`; [`Dispatcher::run`] is its loop.
pub struct Dispatcher {
    store: Arc<dyn RunStore>,
    orchestrator: Arc<dyn Orchestrator>,
    config: DispatchConfig,
    claimer: String,
    wake: Arc<Notify>,
    /// Runs claimed and not yet booked PROCESSING (or released), per company: reserved before a
    /// claim, so concurrent claims of this dispatcher count each other against the caps.
    in_flight: Mutex<HashMap<CompanyId, u64>>,
    /// Temporal was unavailable at the last attempt: the loop backs off and the fast lane is shut.
    unavailable: AtomicBool,
    /// Where each round's counts and Temporal's availability are published.
    conditions: Arc<Conditions>,
    /// The companies' token budgets, when queued runs are held by them.
    budgets: Option<Arc<Limits>>,
    /// Companies whose budget was found used up, and when.
    budget_held: Mutex<HashMap<CompanyId, (Instant, bool)>>,
}

/// Starts reserved against the caps; released when dropped.
struct Reserved {
    dispatcher: Arc<Dispatcher>,
    company: CompanyId,
    count: u64,
}

impl Reserved {
    /// Keeps `count` of the reserved starts (the rest are released now).
    fn keep(&mut self, count: u64) {
        let extra = self.count.saturating_sub(count);
        self.dispatcher.release(&self.company, extra);
        self.count = self.count.min(count);
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.dispatcher.release(&self.company, self.count);
    }
}

impl Dispatcher {
    /// A dispatcher claiming as `claimer`; `wake` makes it look for queued runs at once.
    pub fn new(
        store: Arc<dyn RunStore>,
        orchestrator: Arc<dyn Orchestrator>,
        config: DispatchConfig,
        claimer: String,
        wake: Arc<Notify>,
    ) -> Self {
        let config_caps = config.clone();
        Self {
            store,
            orchestrator,
            config,
            claimer,
            wake,
            in_flight: Mutex::new(HashMap::new()),
            unavailable: AtomicBool::new(false),
            conditions: Arc::new(Conditions::new(&config_caps)),
            budgets: None,
            budget_held: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes each round's counts of processing runs, and Temporal's availability, to
    /// `conditions` (why runs wait).
    #[must_use]
    pub fn reporting_to(mut self, conditions: Arc<Conditions>) -> Self {
        self.conditions = conditions;
        self
    }

    /// Holds the queued runs of companies whose steps used their whole token budget this month.
    #[must_use]
    pub fn holding_budgets(mut self, limits: Arc<Limits>) -> Self {
        self.budgets = Some(limits);
        self
    }

    /// The companies among `candidates` (with queued runs; `true` for those about to be served)
    /// whose steps used their whole token budget this month. A budget is read each time its
    /// company would be served, so a run that just used the last of it holds the next; a used-up
    /// verdict is kept [`BUDGET_CHECK_EVERY`] (a raised budget releases the runs that late at
    /// most), and so is any verdict on a company not served now (only its runs' wait reason
    /// depends on it). A budget that cannot be read holds nothing (the store fails the round
    /// anyway, or answers next time).
    async fn over_budget(&self, candidates: &[(CompanyId, bool)]) -> Vec<CompanyId> {
        let Some(limits) = &self.budgets else { return Vec::new() };
        let now = Instant::now();
        let mut held = Vec::new();
        for (company, serving) in candidates.iter().filter(|(c, _)| limits.has_budget(c)) {
            let known = {
                let mut verdicts = self.budget_held.lock().unwrap_or_else(PoisonError::into_inner);
                verdicts.retain(|_, (since, _)| now.duration_since(*since) < BUDGET_CHECK_EVERY);
                verdicts.get(company).map(|(_, over)| *over).filter(|over| *over || !serving)
            };
            let over = match known {
                Some(over) => over,
                None => {
                    let month = Month::containing(etter_store::now().date_naive());
                    let over = match limits.budget(self.store.as_ref(), company, month).await {
                        Ok(budget) => budget.used_up(),
                        Err(e) => {
                            tracing::warn!(company = %company, error = %e, "cannot read a token budget; its runs are not held");
                            false
                        }
                    };
                    self.budget_held
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(company.clone(), (now, over));
                    over
                }
            };
            if over {
                held.push(company.clone());
            }
        }
        held
    }

    /// Makes an idle loop look for queued runs now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Creates a run through `store` and starts it at once when the store claimed it as it created
    /// it: nothing else waited for a start and its company and the service had room. A new run
    /// that was not claimed waits for the loop, which is woken. The start runs in a task of its
    /// own: this returns once the run is stored.
    pub async fn create(self: &Arc<Self>, store: &dyn RunStore, new: NewRun) -> Result<Created, StoreError> {
        // Backing off: the loop tries again when its back-off is over.
        if self.unavailable.load(Ordering::Relaxed) {
            return store.create_run(new).await;
        }
        // Other starts in flight, read as this one is reserved: concurrent creates see each other.
        let (reserved, company_flight, total_flight) = self.reserve_counted(&new.company, 1);
        let terms = ClaimTerms {
            claimer: self.claimer.clone(),
            lease: self.config.lease,
            company_room: self.config.max_processing_per_company.saturating_sub(company_flight),
            total_room: self.config.max_processing.saturating_sub(total_flight),
        };
        let created = store.create_run_and_claim(new, &terms).await?;
        if created.claimed {
            let (this, run) = (Arc::clone(self), created.run.clone());
            tokio::spawn(async move {
                let outcome = this.dispatch_one(run).await;
                drop(reserved);
                if outcome == Outcome::Unavailable {
                    this.unavailable.store(true, Ordering::Relaxed);
                    this.wake.notify_one();
                }
            });
        } else if created.created {
            self.wake.notify_one();
        }
        Ok(created)
    }

    /// Reserves `count` starts of `company` against the caps.
    fn reserve(self: &Arc<Self>, company: &CompanyId, count: u64) -> Reserved {
        self.reserve_counted(company, count).0
    }

    /// Reserves `count` starts of `company`, and answers the starts in flight before them: of
    /// `company`, and of every company.
    fn reserve_counted(self: &Arc<Self>, company: &CompanyId, count: u64) -> (Reserved, u64, u64) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        let total = in_flight.values().sum();
        let mine = in_flight.entry(company.clone()).or_insert(0);
        let before = *mine;
        *mine += count;
        (Reserved { dispatcher: Arc::clone(self), company: company.clone(), count }, before, total)
    }

    fn release(&self, company: &CompanyId, count: u64) {
        if count == 0 {
            return;
        }
        let mut in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = in_flight.get_mut(company) {
            *n = n.saturating_sub(count);
            if *n == 0 {
                in_flight.remove(company);
            }
        }
    }

    /// Dispatches until `drain` turns true.
    pub async fn run(self: Arc<Self>, mut drain: watch::Receiver<bool>) {
        let mut cursor = 0usize;
        let mut backoff = Backoff::new(self.config.retry_initial_backoff, self.config.retry_max_backoff);
        let mut backing_off = false;
        loop {
            if *drain.borrow() {
                return;
            }
            let round = match self.round(&mut cursor).await {
                Ok(round) => round,
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "dispatch round failed on the store; retrying");
                    Round::Unavailable
                }
            };
            self.unavailable.store(round == Round::Unavailable, Ordering::Relaxed);
            match round {
                Round::Unavailable => self.conditions.set_temporal(false),
                Round::Started => self.conditions.set_temporal(true),
                Round::Idle => {}
            }
            let wait = match round {
                Round::Unavailable => {
                    backing_off = true;
                    backoff.next_wait()
                }
                Round::Started | Round::Idle => {
                    if backing_off {
                        backing_off = false;
                        backoff.reset();
                    }
                    if round == Round::Started {
                        continue;
                    }
                    self.config.poll_interval
                }
            };
            tokio::select! {
                // A push wakes an idle dispatcher; one backing off waits its back-off out.
                () = self.wake.notified(), if !backing_off => {}
                () = tokio::time::sleep(wait) => {}
                _ = drain.changed() => {}
            }
        }
    }

    async fn round(self: &Arc<Self>, cursor: &mut usize) -> Result<Round, StoreError> {
        let expired = crate::deadline::expire(self.store.as_ref(), etter_store::now()).await?;
        if expired > 0 {
            tracing::info!(runs = expired, "cancelled queued runs whose deadline passed");
        }
        let loads = self.store.company_loads().await?;
        // Starts of the fast lane in flight are not PROCESSING yet, but count against the caps.
        let in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let flying = |company: &CompanyId| in_flight.get(company).copied().unwrap_or(0);
        let processing: u64 = loads.iter().map(|l| l.processing).sum::<u64>() + in_flight.values().sum::<u64>();
        let mut room = self.config.max_processing.saturating_sub(processing);
        let by_company: HashMap<CompanyId, u64> =
            loads.iter().map(|l| (l.company.clone(), l.processing + flying(&l.company))).collect();
        let waiting: Vec<(CompanyId, u64)> = loads
            .into_iter()
            .filter(|l| l.queued > 0)
            .map(|l| {
                let busy = l.processing + flying(&l.company);
                (l.company, busy)
            })
            .collect();
        let mut companies: Vec<(CompanyId, u64)> = waiting
            .iter()
            .filter(|(_, busy)| *busy < self.config.max_processing_per_company)
            .map(|(company, busy)| (company.clone(), self.config.max_processing_per_company - busy))
            .collect();
        // Companies with room whose budget is used up are not served; the others with queued runs
        // are looked at too, less often, so their runs say what holds them.
        let candidates: Vec<(CompanyId, bool)> = waiting
            .iter()
            .map(|(company, busy)| (company.clone(), room > 0 && *busy < self.config.max_processing_per_company))
            .collect();
        let over_budget = self.over_budget(&candidates).await;
        companies.retain(|(company, _)| !over_budget.contains(company));
        self.conditions.set_loads(Loads { total: processing, by_company, over_budget });
        if room == 0 || companies.is_empty() {
            return Ok(Round::Idle);
        }
        companies.sort();
        let start = *cursor % companies.len();
        companies.rotate_left(start);
        *cursor = cursor.wrapping_add(1);
        let share = (room / companies.len() as u64).max(1);
        let mut claimed = Vec::new();
        // Held to the end of the round, when its starts are booked (or released): meanwhile the
        // fast lane counts them, and a run booked already counts twice, which only delays it.
        let mut reservations = Vec::new();
        for (company, company_room) in companies {
            if room == 0 {
                break;
            }
            let limit = u64::from(self.config.claim_batch).min(company_room).min(share).min(room);
            let mut reserved = self.reserve(&company, limit);
            let claim = Claim {
                claimer: self.claimer.clone(),
                company: Some(company),
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
                lease: self.config.lease,
                now: etter_store::now(),
            };
            let runs = self.store.claim_queued(&claim).await?;
            reserved.keep(runs.len() as u64);
            reservations.push(reserved);
            room = room.saturating_sub(runs.len() as u64);
            claimed.extend(runs);
        }
        if claimed.is_empty() {
            return Ok(Round::Idle);
        }
        let outcomes: Vec<Outcome> = futures::stream::iter(claimed)
            .map(|run| self.dispatch_one(run))
            .buffer_unordered(self.config.max_concurrent_starts)
            .collect()
            .await;
        drop(reservations);
        let unavailable = outcomes.iter().filter(|o| **o == Outcome::Unavailable).count();
        Ok(if unavailable > 0 {
            tracing::warn!(
                runs = unavailable,
                "temporal unavailable; the runs stay queued and are retried with backoff"
            );
            Round::Unavailable
        } else if outcomes.contains(&Outcome::Started) {
            Round::Started
        } else {
            Round::Idle
        })
    }

    /// Starts `run`'s workflow in a span that continues the trace of the request that created the
    /// run (when spans are exported): the workflow start carries it on to the worker.
    async fn dispatch_one(&self, run: Run) -> Outcome {
        let span = tracing::info_span!(
            "dispatch",
            otel.name = "Dispatch",
            workflow_id = %run.workflow_id,
            trace_id = run.trace_id.as_ref().map(TraceId::as_str),
        );
        if let Some(parent) = &run.trace_parent {
            etter_telemetry::context::continue_remote(&span, parent.as_str());
        }
        self.start_one(run).instrument(span).await
    }

    async fn start_one(&self, run: Run) -> Outcome {
        if let Some(deadline) = run.deadline
            && deadline <= etter_store::now()
        {
            // Claimed as its deadline passed: it is cancelled, never started.
            if let Err(e) = self.store.transition(&run.workflow_id, crate::deadline::cancel(deadline)).await {
                tracing::warn!(error = %chain(&e), "cannot cancel a run past its deadline; its claim expires");
            }
            return Outcome::Failed;
        }
        let input = run.onboarding_input(plan_of(&run));
        let reason = match self.orchestrator.start_onboarding(&input).await {
            Ok(StartOutcome::Running { .. }) => "dispatched",
            // Started by an earlier dispatch whose bookkeeping was lost, and already closed:
            // the reconciler settles the run from the workflow's end.
            Ok(StartOutcome::AlreadyClosed) => "dispatched earlier; the workflow has already ended",
            Err(e) => {
                if let Err(release) = self.store.release_claim(&run.workflow_id, &self.claimer).await {
                    tracing::warn!(error = %chain(&release), "cannot release a dispatch claim; it expires with its lease");
                }
                return match e {
                    OrchestratorError::Unavailable(detail) => {
                        // Logged once per round (below), not once per run.
                        tracing::debug!(error = %detail, "temporal unavailable; the run stays queued");
                        Outcome::Unavailable
                    }
                    other => {
                        tracing::error!(error = %other, "temporal refused the workflow start; the run stays queued");
                        Outcome::Failed
                    }
                };
            }
        };
        match self.store.transition(&run.workflow_id, Transition::to(RunState::Processing, reason)).await {
            Ok(started) => {
                record_queue_wait(&started);
                Outcome::Started
            }
            Err(StoreError::IllegalTransition(t)) if t.from == RunState::Cancelled => {
                // Cancelled while its start was in flight: the workflow just started must not run.
                tracing::info!("run cancelled while its workflow started; cancelling the workflow");
                self.cancel_started(&run).await;
                Outcome::Started
            }
            Err(StoreError::IllegalTransition(t)) => {
                // Moved on while its start was in flight (the worker booked it first): nothing to
                // book, but its queue wait is still this dispatch's to count.
                tracing::info!(from = %t.from, "run left QUEUED while its workflow started");
                match self.store.get_run(&run.workflow_id).await {
                    Ok(started) => record_queue_wait(&started),
                    Err(e) => tracing::debug!(error = %chain(&e), "cannot read the started run for its queue wait"),
                }
                Outcome::Started
            }
            Err(e) => {
                // The workflow runs; the claim expires and the next dispatch joins it and books it.
                tracing::warn!(error = %chain(&e), "cannot mark the started run PROCESSING; it is retried after its lease");
                Outcome::Failed
            }
        }
    }
}

impl Dispatcher {
    /// Cancels the workflow just started for a run that was cancelled meanwhile, retrying a
    /// Temporal that is briefly unavailable a few times. If it never answers, the workflow runs
    /// its steps (the run stays CANCELLED: the worker leaves a final run alone).
    async fn cancel_started(&self, run: &Run) {
        const ATTEMPTS: u32 = 5;
        let reason = "the run was cancelled while its workflow started";
        let mut backoff = Backoff::new(self.config.retry_initial_backoff, self.config.retry_max_backoff);
        for attempt in 1..=ATTEMPTS {
            match self.orchestrator.cancel(&run.workflow_id, reason).await {
                Ok(()) => return,
                Err(OrchestratorError::Unavailable(e)) if attempt < ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "cannot cancel the workflow of a cancelled run yet");
                    tokio::time::sleep(backoff.next_wait()).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot cancel the workflow of a cancelled run; it runs to its end");
                    return;
                }
            }
        }
    }
}

/// Closes PROCESSING runs whose workflow ended without the workflow recording an outcome
/// (terminated, timed out, or gone), and has workflow tasks Temporal lost handed out again, every
/// `dispatch.reconcile_interval`.
pub struct Reconciler {
    store: Arc<dyn RunStore>,
    orchestrator: Arc<dyn Orchestrator>,
    interval: Duration,
    stuck_after: Duration,
    worker_seen_within: Duration,
    /// When each quiet run's workflow tasks were last looked at: at most once per `stuck_after`
    /// (a big batch keeps many runs quiet while they wait for worker slots, and each look
    /// describes the workflow's children too). Only runs of the last pass are kept.
    looked: Mutex<HashMap<WorkflowId, Instant>>,
}

impl Reconciler {
    /// A reconciler with the intervals of `config`.
    pub fn new(store: Arc<dyn RunStore>, orchestrator: Arc<dyn Orchestrator>, config: &DispatchConfig) -> Self {
        Self {
            store,
            orchestrator,
            interval: config.reconcile_interval,
            stuck_after: config.stuck_workflow_task_after,
            worker_seen_within: config.worker_seen_within,
            looked: Mutex::new(HashMap::new()),
        }
    }

    /// Reconciles until `drain` turns true.
    pub async fn run(self, mut drain: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                _ = drain.changed() => {}
            }
            if *drain.borrow() {
                return;
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "reconcile pass stopped early");
            }
        }
    }

    /// One pass over every PROCESSING run.
    pub async fn pass(&self) -> Result<(), String> {
        let loads = self.store.company_loads().await.map_err(|e| chain(&e).to_string())?;
        // Whether workers poll, asked once per pass and only when a run looks stuck.
        let mut polling = None;
        let mut seen = std::collections::HashSet::new();
        for load in loads.into_iter().filter(|l| l.processing > 0) {
            let mut filter = RunFilter::company(load.company);
            filter.states = vec![RunState::Processing];
            let mut page = PageRequest { size: etter_store::MAX_PAGE_SIZE, token: None };
            loop {
                let runs = self.store.list_runs(&filter, &page).await.map_err(|e| chain(&e).to_string())?;
                for run in &runs.runs {
                    seen.insert(run.workflow_id.clone());
                    self.settle(run, &mut polling).await?;
                }
                match runs.next_page_token {
                    Some(token) => page.token = Some(token),
                    None => break,
                }
            }
        }
        self.looked.lock().unwrap_or_else(PoisonError::into_inner).retain(|id, _| seen.contains(id));
        Ok(())
    }

    /// A running run's workflow without an event for `stuck_after`: hands out again any of its
    /// workflow tasks (or its children's) that Temporal has held for that long while workers
    /// poll. Without workers, a scheduled task waits legitimately.
    async fn unstick(&self, run: &Run, polling: &mut Option<bool>) -> Result<(), String> {
        let quiet = (etter_store::now() - run.update_time).to_std().is_ok_and(|quiet| quiet > self.stuck_after);
        if !quiet {
            return Ok(());
        }
        {
            let mut looked = self.looked.lock().unwrap_or_else(PoisonError::into_inner);
            if looked.get(&run.workflow_id).is_some_and(|at| at.elapsed() < self.stuck_after) {
                return Ok(());
            }
            looked.insert(run.workflow_id.clone(), Instant::now());
        }
        let polling = match *polling {
            Some(polling) => polling,
            None => {
                let answer = match self.orchestrator.workers_polling(self.worker_seen_within).await {
                    Ok(answer) => answer,
                    Err(OrchestratorError::Unavailable(e)) => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot tell whether workers poll; stuck workflow tasks are not looked for");
                        false
                    }
                };
                *polling = Some(answer);
                answer
            }
        };
        if !polling {
            return Ok(());
        }
        match self.orchestrator.redispatch_stuck(&run.workflow_id, self.stuck_after).await {
            Ok(stuck) => {
                for task in stuck {
                    observe::workflow_task_redispatched(task.state.as_str());
                    tracing::warn!(
                        workflow_id = %run.workflow_id,
                        execution = %task.workflow_id,
                        run_id = %task.run_id,
                        state = task.state.as_str(),
                        stood_s = task.stood.as_secs(),
                        "a workflow task Temporal lost was handed out again"
                    );
                }
                Ok(())
            }
            Err(OrchestratorError::Unavailable(e)) => Err(e),
            Err(e) => {
                tracing::warn!(
                    workflow_id = %run.workflow_id,
                    error = %e,
                    "cannot look for or hand out again the run's stuck workflow tasks"
                );
                Ok(())
            }
        }
    }

    async fn settle(&self, run: &Run, polling: &mut Option<bool>) -> Result<(), String> {
        let state = match self.orchestrator.describe(&run.workflow_id).await {
            Ok(WorkflowState::Running) => return self.unstick(run, polling).await,
            Ok(state) => state,
            Err(OrchestratorError::Unavailable(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(workflow_id = %run.workflow_id, error = %e, "cannot describe the workflow");
                return Ok(());
            }
        };
        // The workflow's last activity records the outcome before the workflow closes: a run still
        // PROCESSING now (read after the workflow was seen closed) will never get one.
        let current = self.store.get_run(&run.workflow_id).await.map_err(|e| chain(&e).to_string())?;
        if current.state != RunState::Processing {
            return Ok(());
        }
        let (to, code, what) = match state {
            WorkflowState::Closed(ClosedStatus::Cancelled) => {
                (RunState::Cancelled, "WORKFLOW_CANCELLED", "was cancelled in Temporal".to_owned())
            }
            WorkflowState::Closed(ClosedStatus::Terminated) => {
                (RunState::Failed, "WORKFLOW_TERMINATED", "was terminated in Temporal".to_owned())
            }
            WorkflowState::Closed(ClosedStatus::TimedOut) => {
                (RunState::Failed, "WORKFLOW_TIMED_OUT", "ran past its execution timeout".to_owned())
            }
            WorkflowState::Closed(status) => (
                RunState::Failed,
                "WORKFLOW_ENDED_WITHOUT_OUTCOME",
                format!("ended ({}) without recording an outcome", status.as_str()),
            ),
            WorkflowState::NotFound | WorkflowState::Running => {
                (RunState::Failed, "WORKFLOW_NOT_FOUND", "no longer exists in Temporal".to_owned())
            }
        };
        let message = format!("the run's workflow {} {what}", run.workflow_id);
        let error = PipelineError {
            code: code.to_owned(),
            message: message.clone(),
            recoverable: true,
            step: None,
            action: Some("Retry the role".to_owned()),
        };
        let change = Transition::failing(to, message, error);
        match self.store.transition(&run.workflow_id, change).await {
            Ok(closed) => {
                record_finished(&closed);
                tracing::warn!(workflow_id = %run.workflow_id, code, "closed a run whose workflow ended without an outcome");
            }
            // The worker recorded the outcome in the meantime.
            Err(StoreError::IllegalTransition(_)) => {}
            Err(e) => return Err(chain(&e).to_string()),
        }
        Ok(())
    }
}

/// Records how long a run that just started waited in the queue.
fn record_queue_wait(run: &Run) {
    if let Some(wait) = run.queue_wait() {
        observe::run_started(wait);
    }
}

/// Records a run that just reached its final state.
fn record_finished(run: &Run) {
    observe::run_finished(run.state.as_str(), run.processing_time(), run.time_to_dashboard(), run.tokens_used.total());
}

#[cfg(test)]
mod tests {
    //! The dispatcher against a real run store (embedded SQLite) and the Temporal dev server
    //! (`scripts/services up temporal`; `.etter/services.env` names it).

    use std::sync::Mutex;

    use crate::orchestrator::{TemporalOrchestrator, TemporalSettings};
    use anyhow::{Context as _, Result, ensure};
    use async_trait::async_trait;
    use etter_core::{ids::WorkflowId, workflow::RoleOnboardingInput};
    use etter_store::StoreLocation;
    use temporalio_client::{Client, ClientOptions, UntypedWorkflow};
    use temporalio_common::protos::temporal::api::enums::v1::EventType;

    use super::*;

    fn env(name: &str) -> Result<String> {
        std::env::var(name).with_context(|| {
            format!(
                "{name} is not set: start Temporal with `scripts/services up temporal` and source .etter/services.env"
            )
        })
    }

    /// The real orchestrator, with a Cancel RPC arriving while a start is in flight: the run is
    /// cancelled in the store after the dispatcher claimed it and before Temporal answers.
    struct CancelledDuringStart {
        inner: TemporalOrchestrator,
        store: Arc<dyn RunStore>,
        cancelled: Mutex<Vec<WorkflowId>>,
    }

    #[async_trait]
    impl Orchestrator for CancelledDuringStart {
        async fn start_onboarding(&self, input: &RoleOnboardingInput) -> Result<StartOutcome, OrchestratorError> {
            self.store
                .transition(&input.workflow_id, Transition::to(RunState::Cancelled, "cancelled by test"))
                .await
                .map_err(|e| OrchestratorError::Unavailable(e.to_string()))?;
            self.inner.start_onboarding(input).await
        }

        async fn describe(&self, workflow_id: &WorkflowId) -> Result<WorkflowState, OrchestratorError> {
            self.inner.describe(workflow_id).await
        }

        async fn cancel(&self, workflow_id: &WorkflowId, reason: &str) -> Result<(), OrchestratorError> {
            if let Ok(mut cancelled) = self.cancelled.lock() {
                cancelled.push(workflow_id.clone());
            }
            self.inner.cancel(workflow_id, reason).await
        }

        async fn ping(&self) -> Result<(), OrchestratorError> {
            self.inner.ping().await
        }

        async fn workers_polling(&self, window: Duration) -> Result<bool, OrchestratorError> {
            self.inner.workers_polling(window).await
        }

        async fn redispatch_stuck(
            &self,
            workflow_id: &WorkflowId,
            stuck_after: Duration,
        ) -> Result<Vec<crate::orchestrator::StuckTask>, OrchestratorError> {
            self.inner.redispatch_stuck(workflow_id, stuck_after).await
        }
    }

    /// A fresh SQLite store in a directory of its own, and settings for the Temporal dev server
    /// with a task queue no worker polls (a workflow only ever has what the test asks of it).
    async fn setup() -> Result<(String, std::path::PathBuf, Arc<dyn RunStore>, TemporalSettings)> {
        // Random, not the clock: tests start side by side on their threads, and two of them once
        // read the same microsecond, shared one directory, and the first to finish removed it.
        let suffix = format!("{}-{:016x}", std::process::id(), crate::random_u128() >> 64);
        let dir = tempfile::Builder::new().prefix("etter-dispatch-").tempdir()?.keep();
        let store = etter_store::connect(&StoreLocation::Sqlite(dir.join("runs.db"))).await?;
        let temporal =
            etter_temporal::TemporalConfig { address: env("ETTER_TEMPORAL__ADDRESS")?, ..Default::default() };
        let settings = TemporalSettings {
            endpoint: etter_temporal::Endpoint::from_config(&temporal)?,
            namespace: env("ETTER_TEMPORAL__NAMESPACE")?,
            task_queue: format!("etter-dispatch-test-{suffix}"),
            execution_timeout: Duration::from_secs(120),
            call_timeout: Duration::from_secs(10),
            identity: "etter-dispatch-test".to_owned(),
        };
        Ok((suffix, dir, store, settings))
    }

    #[tokio::test]
    async fn a_pushed_run_starts_without_a_round_when_nothing_waits_and_its_company_has_room() -> Result<()> {
        let (suffix, dir, store, settings) = setup().await?;
        let orchestrator = Arc::new(TemporalOrchestrator::new(settings));
        let config = DispatchConfig { max_processing_per_company: 1, ..DispatchConfig::default() };
        let wake = Arc::new(Notify::new());
        // No loop runs: only the fast lane can start a run.
        let dispatcher = Arc::new(Dispatcher::new(
            store.clone(),
            orchestrator.clone(),
            config,
            "fast-lane".to_owned(),
            wake.clone(),
        ));
        let role = |name: &str| format!("{name} {}", suffix.replace('-', " "));

        let woken = wake.notified();
        let first = dispatcher.create(store.as_ref(), crate::testing::queued_run(&role("Adjuster"), &suffix)?).await?;
        ensure!(first.claimed, "the only queued run is claimed as it is created: {first:?}");
        let first = first.run;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let started = loop {
            let run = store.get_run(&first.workflow_id).await?;
            if run.state == RunState::Processing {
                break run;
            }
            ensure!(tokio::time::Instant::now() < deadline, "the claimed run was not started: {run:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        ensure!(started.start_time.is_some(), "{started:?}");
        ensure!(
            tokio::time::timeout(Duration::from_millis(200), woken).await.is_err(),
            "a started run does not wake the loop"
        );

        // The company's cap (one PROCESSING run) is reached: the next run is left to the loop,
        // QUEUED and claimable, and the loop is woken to take it in its turn.
        let woken = wake.notified();
        let second = crate::testing::queued_run(&role("Underwriter"), &format!("{suffix}-2"))?;
        let second = dispatcher.create(store.as_ref(), second).await?;
        ensure!(second.created && !second.claimed, "{second:?}");
        let second = second.run;
        tokio::time::timeout(Duration::from_secs(10), woken).await.context("the loop was not woken")?;
        let waiting = store.get_run(&second.workflow_id).await?;
        ensure!(waiting.state == RunState::Queued, "{waiting:?}");
        let round = Claim {
            claimer: "test".to_owned(),
            company: None,
            limit: 10,
            lease: Duration::from_secs(30),
            now: etter_store::now(),
        };
        let claimable = store.claim_queued(&round).await?;
        ensure!(ids(&claimable) == [second.workflow_id.clone()], "the run was left claimable");
        ensure!(dispatcher.in_flight.lock().map(|f| f.is_empty()).unwrap_or(false), "no start is left reserved");

        orchestrator.cancel(&first.workflow_id, "test over").await?;
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    /// A company whose budget is used up while the service's cap is full: its queued run says it
    /// waits for the budget (the root cause), not for room that would not start it anyway.
    #[tokio::test]
    async fn a_run_held_by_its_budget_says_so_while_the_service_is_full() -> Result<()> {
        use crate::companies::{Companies, CompanyLimits};
        use crate::config::LimitsConfig;
        use etter_store::{StepStatus, StepTransition};
        let (suffix, dir, store, settings) = setup().await?;
        let role = |name: &str| format!("{name} {}", suffix.replace('-', " "));
        // The one run the service may process, and it used far more than the budget of 10.
        let busy = store.create_run(crate::testing::queued_run(&role("Adjuster"), &suffix)?).await?.run;
        store.transition(&busy.workflow_id, Transition::to(RunState::Processing, "started by test")).await?;
        store.record_step(&busy.workflow_id, StepTransition::new("role_setup", 1, StepStatus::Running)).await?;
        let used = StepTransition {
            tokens: Some(etter_store::TokenCount { input: 500, output: 0 }),
            ..StepTransition::new("role_setup", 1, StepStatus::Completed)
        };
        store.record_step(&busy.workflow_id, used).await?;
        let held = store.create_run(crate::testing::queued_run(&role("Underwriter"), &format!("{suffix}-2"))?).await?;

        let limits_config = LimitsConfig { token_budget_per_month: 10, ..LimitsConfig::default() };
        let companies = Arc::new(Companies::load(std::path::Path::new(""), CompanyLimits::defaults(&limits_config))?);
        let config = DispatchConfig { max_processing: 1, ..DispatchConfig::default() };
        let conditions = Arc::new(Conditions::new(&config));
        let dispatcher = Arc::new(
            Dispatcher::new(
                store.clone(),
                Arc::new(TemporalOrchestrator::new(settings)),
                config,
                "budget-test".to_owned(),
                Arc::new(Notify::new()),
            )
            .reporting_to(Arc::clone(&conditions))
            .holding_budgets(Arc::new(Limits::new(companies, &limits_config))),
        );
        ensure!(dispatcher.round(&mut 0).await? == Round::Idle, "nothing can start");
        let reason = conditions.queued(&held.run.company_id, 1);
        ensure!(reason == etter_proto::v1::WaitReason::TokenBudget, "the held run waits for {reason:?}");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    fn ids(runs: &[Run]) -> Vec<WorkflowId> {
        runs.iter().map(|r| r.workflow_id.clone()).collect()
    }

    #[tokio::test]
    async fn a_run_cancelled_while_its_workflow_starts_stays_cancelled_and_its_workflow_is_cancelled() -> Result<()> {
        let (suffix, dir, store, settings) = setup().await?;
        let orchestrator = Arc::new(CancelledDuringStart {
            inner: TemporalOrchestrator::new(settings.clone()),
            store: store.clone(),
            cancelled: Mutex::new(Vec::new()),
        });
        // Unique per run of the suite: the dev server keeps closed workflow ids reserved.
        let role = format!("Adjuster {}", suffix.replace('-', " "));
        let created = store.create_run(crate::testing::queued_run(&role, &suffix)?).await?;
        let run = created.run;

        let dispatcher = Arc::new(Dispatcher::new(
            store.clone(),
            orchestrator.clone(),
            DispatchConfig::default(),
            "dispatch-test".to_owned(),
            Arc::new(Notify::new()),
        ));
        ensure!(dispatcher.round(&mut 0).await? == Round::Started, "the run was claimed and its workflow started");

        // The run stays as the user left it, and the workflow that had just started was cancelled
        // in Temporal (the request is in its history: no worker polls its queue to act on it).
        let after = store.get_run(&run.workflow_id).await?;
        ensure!(after.state == RunState::Cancelled, "{after:?}");
        let asked = orchestrator.cancelled.lock().map(|c| c.clone()).unwrap_or_default();
        ensure!(asked == [run.workflow_id.clone()], "{asked:?}");
        let connection = settings.endpoint.connect("etter-dispatch-test".to_owned(), None).await?;
        let client = Client::new(connection, ClientOptions::new(settings.namespace.clone()).build())?;
        let history = client
            .get_workflow_handle::<UntypedWorkflow>(run.workflow_id.to_string())
            .fetch_history(Default::default())
            .into_events()
            .await?;
        let kinds: Vec<EventType> = history.iter().map(|e| e.event_type()).collect();
        ensure!(kinds.contains(&EventType::WorkflowExecutionStarted), "{kinds:?}");
        ensure!(kinds.contains(&EventType::WorkflowExecutionCancelRequested), "{kinds:?}");
        // Nothing is left to dispatch.
        ensure!(dispatcher.round(&mut 0).await? == Round::Idle, "the cancelled run is not dispatched again");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
