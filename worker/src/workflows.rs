//! The onboarding workflow: `RoleOnboardingWorkflow` runs role setup and document linking, the AI
//! assessment, then the enhancement branches in parallel — top tasks (step executor,
//! standardization), skills analysis (miner, architecture) followed by the catalog and reskilling,
//! and task feasibility — and finally finalize. Its last act, on every path, is the
//! `RecordOutcome` activity. The branches are concurrent chains of activities inside the one
//! workflow (see [`INLINE_BRANCHES_PATCH`]); the child workflows `AIAssessmentWorkflow`,
//! `TopTasksWorkflow` and `SkillsAnalysisWorkflow` stay registered for the runs started before.
//!
//! Which steps run comes from the plan in the input (the step graph, decided by the server); the
//! workflow only orders them. A failed critical step stops the run (FAILED); a failed enhancement
//! step stops its own branch (DEGRADED). Workflow code is deterministic: no I/O, clocks or tokio
//! here, only Temporal's own combinators.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::config::WorkerConfig;
use etter_core::ids::{TraceId, WorkflowId};
use etter_core::steps::{Action, StepName};
use etter_core::workflow::{
    AI_ASSESSMENT_WORKFLOW, ROLE_ONBOARDING_WORKFLOW, RoleOnboardingInput, RoleOnboardingOutput,
    SKILLS_ANALYSIS_WORKFLOW, TOP_TASKS_WORKFLOW,
};
use serde::{Deserialize, Serialize};
use temporalio_common::RetryPolicy;
use temporalio_common::error::IncomingError;
use temporalio_sdk::workflows::{join, workflow, workflow_methods};
use temporalio_sdk::{
    ActivityCancellationType, ActivityExecutionError, ActivityOptions, ChildWorkflowOptions, LocalActivityOptions,
    TimeoutType, WorkflowCancellationToken, WorkflowContext, WorkflowResult, WorkflowTermination,
};

use crate::activities::{AttemptsInput, BeginInput, FailedStep, OutcomeInput, PipelineActivities, StepInput};
use crate::failure::PERMANENT_FAILURE_TYPE;

/// Timeouts and retries of step activities, from `[worker]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityPolicy {
    /// Start-to-close timeout of one attempt.
    pub start_to_close: Duration,
    /// Longest an activity task waits to be picked up before the step is scheduled again.
    pub schedule_to_start: Duration,
    /// Heartbeat timeout.
    pub heartbeat: Duration,
    /// First retry interval.
    pub initial_interval: Duration,
    /// Backoff coefficient.
    pub backoff: f64,
    /// Longest retry interval.
    pub maximum_interval: Duration,
    /// Attempts in all.
    pub maximum_attempts: u32,
}

impl From<&WorkerConfig> for ActivityPolicy {
    fn from(config: &WorkerConfig) -> Self {
        Self {
            start_to_close: config.start_to_close_timeout,
            schedule_to_start: config.schedule_to_start_timeout,
            heartbeat: config.heartbeat_timeout,
            initial_interval: config.retry_initial_interval,
            backoff: config.retry_backoff_coefficient,
            maximum_interval: config.retry_maximum_interval,
            maximum_attempts: config.retry_maximum_attempts,
        }
    }
}

/// The activity policy of each task queue this process serves. Set once per queue when its
/// worker starts, from the configuration, and constant after, so workflow code stays deterministic
/// across replays within one deployment. Keyed by queue so that workers of different
/// configurations can share a process (the tests run several).
static POLICIES: Mutex<BTreeMap<String, ActivityPolicy>> = Mutex::new(BTreeMap::new());

/// Sets the activity policy of the workflows on `task_queue`; the first call for a queue wins.
pub fn set_activity_policy(task_queue: &str, policy: ActivityPolicy) {
    let mut policies = POLICIES.lock().unwrap_or_else(PoisonError::into_inner);
    if policies.contains_key(task_queue) {
        tracing::debug!(task_queue, "activity policy already set; keeping the first");
    } else {
        policies.insert(task_queue.to_owned(), policy);
    }
}

/// The activity policy of the workflows on `task_queue` (the defaults if none was set).
fn policy(task_queue: &str) -> ActivityPolicy {
    let policies = POLICIES.lock().unwrap_or_else(PoisonError::into_inner);
    policies.get(task_queue).cloned().unwrap_or_else(|| ActivityPolicy::from(&WorkerConfig::default()))
}

/// The options of a step's activity. With `reschedule`, a task not picked up within
/// `worker.schedule_to_start_timeout` times out (Temporal does not retry that timeout itself)
/// and [`execute_step`] schedules the step again.
fn step_options(policy: ActivityPolicy, reschedule: bool) -> ActivityOptions {
    let retry = RetryPolicy::builder()
        .initial_interval(policy.initial_interval)
        .backoff_coefficient(policy.backoff)
        .maximum_interval(policy.maximum_interval)
        .maximum_attempts(policy.maximum_attempts)
        .non_retryable_error_types([PERMANENT_FAILURE_TYPE])
        .build();
    let mut options = ActivityOptions::with_start_to_close_timeout(policy.start_to_close)
        .heartbeat_timeout(policy.heartbeat)
        .retry_policy(retry)
        // A cancelled run waits for its running step to acknowledge (and record) the cancel.
        .cancellation_type(ActivityCancellationType::WaitCancellationCompleted)
        .build();
    if reschedule {
        options.schedule_to_start_timeout = Some(policy.schedule_to_start);
    }
    options
}

/// Runs started by this version bound how long a step's task may wait to be picked up, and
/// schedule the step again past it: Temporal can lose an activity task (its history service
/// killed while it hands a retry to matching), and nothing else would ever fail or dispatch that
/// attempt. Runs started before keep the activities their history has.
const RESCHEDULE_PATCH: &str = "reschedule-unstarted-steps";

/// Whether a step's activity ended because no worker picked its task up in time: it never
/// started, so the step is scheduled again.
fn never_started(err: &ActivityExecutionError) -> bool {
    matches!(err.cause(), Some(IncomingError::Timeout(timeout)) if timeout.timeout_type() == TimeoutType::ScheduleToStart)
}

/// Whether a step's activity ended on a timeout (its last attempt's report never came): the
/// run store says whether the step completed all the same.
fn timed_out(err: &ActivityExecutionError) -> bool {
    matches!(err.cause(), Some(IncomingError::Timeout(_)))
}

/// Bookkeeping must not be lost to a short store outage: retried without an attempt limit (the
/// workflow's execution timeout bounds it), quickly at first.
fn bookkeeping_retry() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_secs(1))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(30))
        .non_retryable_error_types([PERMANENT_FAILURE_TYPE])
        .build()
}

/// The options of the bookkeeping activities of runs started before [`LOCAL_BOOKKEEPING_PATCH`].
fn bookkeeping_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
        .retry_policy(bookkeeping_retry())
        // Detached from the workflow's cancellation: a cancelled run still records its outcome.
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}

/// Runs started by this version keep their books with local activities: run on the worker that
/// runs the workflow task, recorded as a marker in that task's completion, they spare Temporal an
/// activity task and a workflow task each. Runs started before keep the activities their history
/// has, so a deploy never breaks the replay of a run in flight.
const LOCAL_BOOKKEEPING_PATCH: &str = "local-bookkeeping";

/// Runs started by this version run the AI assessment and the enhancement branches as concurrent
/// chains of their own workflow, not as child workflows: the same activities, the same
/// parallelism and retries, but no child executions for Temporal to start, record and close —
/// a third of its state writes and half its workflow tasks per role, which is what bounded the
/// throughput (docs/BENCHMARKS.md). It also leaves no child start for a crash of Temporal to lose.
/// Runs started before keep their children, so their histories replay.
const INLINE_BRANCHES_PATCH: &str = "inline-branches";

/// [`bookkeeping_options`] for a local activity: the same unlimited retries and detachment from
/// the workflow's cancellation.
fn local_bookkeeping_options() -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .retry_policy(bookkeeping_retry())
        .start_to_close_timeout(Duration::from_secs(60))
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}

/// What a group of steps (a child workflow or a branch) ended with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOutcome {
    /// Steps that completed.
    pub completed: Vec<StepName>,
    /// Steps that failed (the group stops at the first).
    pub failed: Vec<FailedStep>,
}

impl GroupOutcome {
    fn merge(&mut self, other: GroupOutcome) {
        self.completed.extend(other.completed);
        self.failed.extend(other.failed);
    }

    fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}

/// The run a workflow executes steps for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRef {
    /// The run.
    pub workflow_id: WorkflowId,
    /// With the early cutoff of a STALE re-run: the earlier run whose output a step reuses when
    /// its input hash came out unchanged.
    #[serde(default)]
    pub cutoff_from: Option<WorkflowId>,
    /// The trace id of the request that created the run: the activity logs under it.
    #[serde(default)]
    pub trace_id: Option<TraceId>,
}

/// The input of a child workflow: the run, and the steps it runs, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInput {
    /// The run.
    pub run: RunRef,
    /// The steps to run, in order (only those the plan runs).
    pub steps: Vec<StepName>,
}

/// Runs one step's activity; with `reschedule` (see [`RESCHEDULE_PATCH`]), schedules it again for
/// as long as its task is never picked up, and takes a step Temporal gave up on by timeout as done
/// when the run store recorded it completed. What the store recorded comes from a local activity
/// (its answer is kept in the history, so a replay decides the same): a step scheduled again
/// numbers its attempts on from the last one recorded.
async fn execute_step<W>(
    ctx: &WorkflowContext<W>,
    run: &RunRef,
    step: StepName,
    reschedule: bool,
) -> Result<(), FailedStep> {
    let mut attempt_base = 0;
    loop {
        let input = StepInput {
            workflow_id: run.workflow_id.clone(),
            step,
            cutoff_from: run.cutoff_from.clone(),
            trace_id: run.trace_id.clone(),
            attempt_base,
        };
        let opts = step_options(policy(ctx.task_queue()), reschedule);
        let result = match step {
            StepName::RoleSetup => ctx.execute_activity(PipelineActivities::role_setup, input, opts).await,
            StepName::DocumentLinking => ctx.execute_activity(PipelineActivities::document_linking, input, opts).await,
            StepName::AiAssessment => ctx.execute_activity(PipelineActivities::ai_assessment, input, opts).await,
            StepName::StepExecutor => ctx.execute_activity(PipelineActivities::step_executor, input, opts).await,
            StepName::Standardization => ctx.execute_activity(PipelineActivities::standardization, input, opts).await,
            StepName::SkillsMiner => ctx.execute_activity(PipelineActivities::skills_miner, input, opts).await,
            StepName::SkillsArchitecture => {
                ctx.execute_activity(PipelineActivities::skills_architecture, input, opts).await
            }
            StepName::SkillsCatalog => ctx.execute_activity(PipelineActivities::skills_catalog, input, opts).await,
            StepName::Reskilling => ctx.execute_activity(PipelineActivities::reskilling, input, opts).await,
            StepName::TaskFeasibility => ctx.execute_activity(PipelineActivities::task_feasibility, input, opts).await,
            StepName::Finalize => ctx.execute_activity(PipelineActivities::finalize, input, opts).await,
        };
        let err = match result {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        let failed = || FailedStep { step, message: err.to_string() };
        if !reschedule || ctx.cancellation_token().is_cancelled() || !timed_out(&err) {
            return Err(failed());
        }
        let asked = AttemptsInput { workflow_id: run.workflow_id.clone(), step };
        let recorded = ctx
            .execute_local_activity(PipelineActivities::recorded_step, asked, local_bookkeeping_options())
            .await
            .map_err(|err| FailedStep { step, message: err.to_string() })?;
        if never_started(&err) {
            attempt_base = recorded.last_attempt;
        } else if recorded.completed {
            // Temporal gave up on the step, but an attempt recorded it completed: only the report
            // was lost (its worker died or stalled right after). Its output stands.
            return Ok(());
        } else {
            return Err(failed());
        }
    }
}

/// Runs `steps` one after the other, stopping at the first failure.
async fn run_chain<W>(ctx: &WorkflowContext<W>, run: &RunRef, steps: &[StepName]) -> GroupOutcome {
    let reschedule = ctx.patched(RESCHEDULE_PATCH);
    let mut outcome = GroupOutcome::default();
    for step in steps {
        match execute_step(ctx, run, *step, reschedule).await {
            Ok(()) => outcome.completed.push(*step),
            Err(failed) => {
                outcome.failed.push(failed);
                break;
            }
        }
    }
    outcome
}

/// The steps of `candidates` the plan runs, in order.
fn planned(plan: &[(StepName, Action)], candidates: &[StepName]) -> Vec<StepName> {
    candidates.iter().copied().filter(|s| plan.iter().any(|(p, a)| p == s && *a == Action::Run)).collect()
}

/// Starts a child workflow over `steps` and waits for it; a child that cannot start or ends
/// abnormally fails its first step.
async fn run_child<W, C>(
    ctx: &WorkflowContext<W>,
    child: C,
    suffix: &str,
    run: &RunRef,
    steps: Vec<StepName>,
) -> GroupOutcome
where
    C: temporalio_common::WorkflowDefinition<Input = GroupInput, Output = GroupOutcome> + 'static,
{
    let Some(first) = steps.first().copied() else {
        return GroupOutcome::default();
    };
    let child_id = format!("{}-{suffix}", run.workflow_id);
    let input = GroupInput { run: run.clone(), steps };
    let failed = |err: String| GroupOutcome {
        completed: Vec::new(),
        failed: vec![FailedStep { step: first, message: format!("the {suffix} child workflow failed: {err}") }],
    };
    let started = match ctx.start_child_workflow(child, input, ChildWorkflowOptions::workflow_id(child_id)).await {
        Ok(started) => started,
        Err(err) => return failed(err.to_string()),
    };
    match started.result().await {
        Ok(outcome) => outcome,
        Err(err) => failed(err.to_string()),
    }
}

/// The parent workflow of one run.
#[workflow]
#[derive(Default)]
pub struct RoleOnboarding;

#[workflow_methods]
impl RoleOnboarding {
    #[run(name = ROLE_ONBOARDING_WORKFLOW)]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: RoleOnboardingInput,
    ) -> WorkflowResult<RoleOnboardingOutput> {
        let ctx = &*ctx;
        let plan = input.plan.clone();
        let run = RunRef {
            workflow_id: input.workflow_id.clone(),
            cutoff_from: if input.early_cutoff { input.reuse_from.clone() } else { None },
            trace_id: input.trace_id.clone(),
        };
        let local_bookkeeping = ctx.patched(LOCAL_BOOKKEEPING_PATCH);
        let begin = BeginInput {
            workflow_id: run.workflow_id.clone(),
            plan: plan.clone(),
            reuse_from: input.reuse_from.clone(),
            trace_id: run.trace_id.clone(),
        };
        if local_bookkeeping {
            ctx.execute_local_activity(PipelineActivities::begin_run, begin, local_bookkeeping_options()).await?;
        } else {
            ctx.execute_activity(PipelineActivities::begin_run, begin, bookkeeping_options()).await?;
        }

        let cancelled = || ctx.cancellation_token().is_cancelled();
        let inline = ctx.patched(INLINE_BRANCHES_PATCH);
        let mut done = run_chain(ctx, &run, &planned(&plan, &[StepName::RoleSetup, StepName::DocumentLinking])).await;
        if done.ok() && !cancelled() {
            let steps = planned(&plan, &[StepName::AiAssessment]);
            if inline {
                done.merge(run_chain(ctx, &run, &steps).await);
            } else {
                done.merge(run_child(ctx, AiAssessment, "ai-assessment", &run, steps).await);
            }
        }
        if done.ok() && !cancelled() {
            let top = planned(&plan, &[StepName::StepExecutor, StepName::Standardization]);
            let skills = planned(&plan, &[StepName::SkillsMiner, StepName::SkillsArchitecture]);
            let after_skills = planned(&plan, &[StepName::SkillsCatalog, StepName::Reskilling]);
            let feasibility = planned(&plan, &[StepName::TaskFeasibility]);
            let skills_branch = async {
                let mut outcome = if inline {
                    run_chain(ctx, &run, &skills).await
                } else {
                    run_child(ctx, SkillsAnalysis, "skills-analysis", &run, skills).await
                };
                if outcome.ok() {
                    outcome.merge(run_chain(ctx, &run, &after_skills).await);
                }
                outcome
            };
            let top_branch = async {
                if inline {
                    run_chain(ctx, &run, &top).await
                } else {
                    run_child(ctx, TopTasks, "top-tasks", &run, top).await
                }
            };
            let (top, skills, feasibility) = join!(top_branch, skills_branch, run_chain(ctx, &run, &feasibility));
            done.merge(top);
            done.merge(skills);
            done.merge(feasibility);
        }
        let critical_failed = done.failed.iter().any(|f| f.step.is_critical());
        // Finalize runs after everything else unless the critical path failed: a DEGRADED role is
        // still shown with what exists.
        if !critical_failed && !cancelled() {
            done.merge(run_chain(ctx, &run, &planned(&plan, &[StepName::Finalize])).await);
        }

        let outcome = OutcomeInput {
            workflow_id: run.workflow_id.clone(),
            plan,
            failed: done.failed.clone(),
            cancelled: cancelled(),
            trace_id: run.trace_id.clone(),
        };
        let report = if local_bookkeeping {
            ctx.execute_local_activity(PipelineActivities::record_outcome, outcome, local_bookkeeping_options()).await?
        } else {
            ctx.execute_activity(PipelineActivities::record_outcome, outcome, bookkeeping_options()).await?
        };
        if cancelled() {
            // Recorded CANCELLED (outputs kept); Temporal shows the workflow cancelled too.
            return Err(WorkflowTermination::cancelled());
        }
        Ok(RoleOnboardingOutput {
            state: report.state,
            completed: done.completed,
            failed: done.failed.into_iter().map(|f| f.step).collect(),
        })
    }
}

/// `AIAssessmentWorkflow`: the critical AI step, long-running, in its own history.
#[workflow]
#[derive(Default)]
pub struct AiAssessment;

#[workflow_methods]
impl AiAssessment {
    #[run(name = AI_ASSESSMENT_WORKFLOW)]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: GroupInput) -> WorkflowResult<GroupOutcome> {
        Ok(run_chain(&*ctx, &input.run, &input.steps).await)
    }
}

/// `TopTasksWorkflow`: step executor, then standardization.
#[workflow]
#[derive(Default)]
pub struct TopTasks;

#[workflow_methods]
impl TopTasks {
    #[run(name = TOP_TASKS_WORKFLOW)]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: GroupInput) -> WorkflowResult<GroupOutcome> {
        Ok(run_chain(&*ctx, &input.run, &input.steps).await)
    }
}

/// `SkillsAnalysisWorkflow`: skills miner, then skills architecture.
#[workflow]
#[derive(Default)]
pub struct SkillsAnalysis;

#[workflow_methods]
impl SkillsAnalysis {
    #[run(name = SKILLS_ANALYSIS_WORKFLOW)]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: GroupInput) -> WorkflowResult<GroupOutcome> {
        Ok(run_chain(&*ctx, &input.run, &input.steps).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etter_core::steps::plan_new;

    #[test]
    fn planned_keeps_order_and_drops_skipped_steps() {
        let plan = plan_new(true).steps;
        assert_eq!(planned(&plan, &[StepName::RoleSetup, StepName::DocumentLinking]).len(), 2);
        assert!(planned(&plan, &[StepName::StepExecutor, StepName::Standardization]).is_empty());
        assert_eq!(planned(&plan, &[StepName::Finalize]), vec![StepName::Finalize]);
    }

    #[test]
    fn the_policy_follows_the_configuration() {
        let config = WorkerConfig::default();
        let policy = ActivityPolicy::from(&config);
        assert_eq!(policy.maximum_attempts, config.retry_maximum_attempts);
        assert_eq!(policy.heartbeat, config.heartbeat_timeout);
    }
}
