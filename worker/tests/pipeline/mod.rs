//! The onboarding workflow with the real worker (`etter_worker::run`, as the binary runs it), a
//! real Temporal dev server, the embedded SQLite run store and role graph, the offline model and
//! the document fixtures: what a run writes, step by step, and how it ends.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use etter_core::ids::{CompanyId, DraupRoleId, RoleName};
use etter_core::lifecycle::RunState;
use etter_core::steps::{StepName, plan_new};
use etter_core::workflow::{RoleOnboardingInput, RoleOnboardingOutput};
use etter_graph::RoleGraph;
use etter_store::{
    Admission, Change, DocumentRef, NewRun, Priority, Run, RunStore, StepStatus, StepTransition, Transition,
};
use etter_worker::config::Config;
use etter_worker::faults::Faults;
use etter_worker::workflows::RoleOnboarding;
use temporalio_client::{
    WorkflowCancelOptions, WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowStartOptions,
};

use crate::harness::{DEADLINE, connect, settings_from, within};

/// A private world for one test: its data directory (store, graph, documents) and task queue.
pub struct World {
    pub config: Config,
    pub store: Arc<dyn RunStore>,
    pub docs: PathBuf,
    company: CompanyId,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("/")).join("testdata/documents").join(name)
}

impl World {
    pub async fn new(test: &str) -> Result<Self> {
        let settings = settings_from(|name| std::env::var(name).ok())?;
        let unique = format!("{test}-{}-{}", std::process::id(), etter_store::now().timestamp_micros());
        let root = tempfile::Builder::new().prefix(&format!("etter-worker-{test}-")).tempdir()?.keep();
        let docs = root.join("docs");
        std::fs::create_dir_all(&docs)?;
        let mut config = Config { data_dir: root.join("data"), ..Config::default() };
        config.documents.file_root = docs.canonicalize()?;
        config.temporal.address = settings.address;
        config.temporal.namespace = settings.namespace;
        config.temporal.task_queue = format!("etter-worker-{unique}");
        config.worker.metrics_listen = "127.0.0.1:0".parse()?;
        config.worker.heartbeat_timeout = Duration::from_secs(2);
        config.worker.retry_initial_interval = Duration::from_millis(100);
        config.worker.shutdown_grace = Duration::from_secs(2);
        // No schedule per test: the dev server outlives the tests (the scan test makes its own).
        config.worker.staleness_scan_interval = Duration::ZERO;
        let store = etter_store::connect(&config.store_location()?).await?;
        let company = CompanyId::parse(&format!("w{}", unique.replace(['-', '_'], "").to_lowercase()))?;
        Ok(Self { config, store, docs, company })
    }

    /// Copies a fixture into the documents root and answers its `file://` URI.
    pub fn document(&self, fixture_name: &str) -> Result<String> {
        let target = self.config.documents.file_root.join(fixture_name);
        std::fs::copy(fixture(fixture_name), &target).with_context(|| format!("copying fixture {fixture_name}"))?;
        Ok(format!("file://{}", target.display()))
    }

    /// A run as the server's Push stores it: QUEUED, then PROCESSING as the dispatcher marks it.
    pub async fn queued_run(&self, role: &str, documents: Vec<(&str, String)>) -> Result<Run> {
        let created = self
            .store
            .create_run(NewRun {
                draup_role_id: Some(DraupRoleId::parse("draup-role-4711")?),
                documents: documents
                    .into_iter()
                    .map(|(kind, uri)| DocumentRef { kind: kind.to_owned(), uri })
                    .collect(),
                plan: Some(plan_new(false)),
                ..NewRun::queued(
                    self.company.clone(),
                    RoleName::parse(role)?,
                    &format!("{role}-identity"),
                    "pushed by the worker tests",
                )
            })
            .await?;
        let run =
            self.store.transition(&created.run.workflow_id, Transition::to(RunState::Processing, "dispatched")).await?;
        Ok(run)
    }

    fn input(run: &Run) -> RoleOnboardingInput {
        // As the dispatcher builds it from the run's kept plan.
        run.onboarding_input(run.plan.clone().unwrap_or_else(|| plan_new(false)))
    }

    /// A re-run of `earlier` (STALE or retried) with `plan`, dispatched.
    pub async fn rerun(
        &self,
        earlier: &Run,
        plan: etter_core::steps::Plan,
        documents: Vec<(&str, String)>,
    ) -> Result<Run> {
        let created = self
            .store
            .create_run(NewRun {
                company: earlier.company_id.clone(),
                role_name: earlier.role_name.clone(),
                draup_role_id: earlier.draup_role_id.clone(),
                input_identity: format!("{}-rerun", earlier.input_identity),
                documents: documents
                    .into_iter()
                    .map(|(kind, uri)| DocumentRef { kind: kind.to_owned(), uri })
                    .collect(),
                options: serde_json::json!({}),
                priority: Priority::Normal,
                token_estimate: 0,
                force: true,
                expected_latest: Some(earlier.workflow_id.clone()),
                admission: Admission::Queue,
                plan: Some(plan),
                reason: "re-run by the worker tests".to_owned(),
                notify: false,
                trace_id: None,
                trace_parent: None,
                deadline: None,
                model: None,
            })
            .await?;
        Ok(self.store.transition(&created.run.workflow_id, Transition::to(RunState::Processing, "dispatched")).await?)
    }

    fn start_options(&self, run: &Run) -> WorkflowStartOptions {
        WorkflowStartOptions::new(self.config.temporal.task_queue.clone(), run.workflow_id.to_string())
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .execution_timeout(DEADLINE * 4)
            .build()
    }

    /// Runs the workflow of `run` on a worker whose `step` pauses after its work, cancels the
    /// workflow while it does, and answers how the workflow ended.
    pub async fn cancel_during(&self, run: &Run, step: StepName) -> Result<anyhow::Error> {
        let client = connect(&settings_from(|name| std::env::var(name).ok())?).await?;
        let faults = Faults::parse(&format!("pause_after:{step}"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = etter_worker::run_with_faults(self.config.clone(), faults, async {
            let _ = stopped.await;
        });
        let scenario = async {
            let handle = client.start_workflow(RoleOnboarding::run, Self::input(run), self.start_options(run)).await?;
            // Wait until the step is running (it pauses there, heartbeating).
            within(DEADLINE, "the step to start", async {
                loop {
                    let attempts = self.store.steps(&run.workflow_id).await?;
                    if attempts.iter().any(|a| a.step == step.as_str() && a.status == StepStatus::Running) {
                        return anyhow::Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await??;
            handle.cancel(WorkflowCancelOptions::default()).await?;
            let ended =
                within(DEADLINE, "the cancelled workflow", handle.get_result(WorkflowGetResultOptions::default()))
                    .await?;
            let _ = stop.send(());
            match ended {
                Ok(output) => anyhow::bail!("the cancelled workflow completed: {output:?}"),
                Err(err) => Ok(anyhow::Error::from(err)),
            }
        };
        let (worker, ended) = tokio::join!(worker, scenario);
        worker.context("the worker failed")?;
        ended
    }

    /// Runs the workflow of `run` on a worker of this world and answers its output.
    pub async fn execute(&self, run: &Run) -> Result<RoleOnboardingOutput> {
        self.execute_on(self.config.clone(), Faults::default(), run).await
    }

    /// Runs the workflow of `run` on a worker with `config` and `faults`, and answers its output.
    pub async fn execute_on(&self, config: Config, faults: Faults, run: &Run) -> Result<RoleOnboardingOutput> {
        let client = connect(&settings_from(|name| std::env::var(name).ok())?).await?;
        let input = Self::input(run);
        let options = self.start_options(run);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = etter_worker::run_with_faults(config, faults, async {
            let _ = stopped.await;
        });
        let scenario = async {
            let handle = client.start_workflow(RoleOnboarding::run, input, options).await?;
            let output =
                within(DEADLINE * 2, "the onboarding workflow", handle.get_result(WorkflowGetResultOptions::default()))
                    .await??;
            let _ = stop.send(());
            Ok::<_, anyhow::Error>(output)
        };
        let (worker, output) = tokio::join!(worker, scenario);
        worker.context("the worker failed")?;
        output
    }

    /// Runs `scenario` while a worker with `config` serves this world's task queue.
    pub async fn with_worker<T>(&self, config: Config, scenario: impl Future<Output = Result<T>>) -> Result<T> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = etter_worker::run_with_faults(config, Faults::default(), async {
            let _ = stopped.await;
        });
        let scenario = async {
            let outcome = scenario.await;
            let _ = stop.send(());
            outcome
        };
        let (worker, outcome) = tokio::join!(worker, scenario);
        let outcome = outcome?;
        worker.context("the worker failed")?;
        Ok(outcome)
    }

    pub async fn graph(&self) -> Result<Arc<dyn RoleGraph>> {
        Ok(etter_graph::open(&self.config.graph, &self.config.data_dir).await?)
    }
}

/// The attempts of one step, as (attempt, status), in the order the store lists them.
async fn attempts_of(store: &dyn RunStore, run: &Run, step: StepName) -> Result<Vec<(u32, StepStatus)>> {
    let attempts = store.steps(&run.workflow_id).await?;
    Ok(attempts.iter().filter(|a| a.step == step.as_str()).map(|a| (a.attempt, a.status)).collect())
}

/// The latest attempt's status of every step, in step order.
async fn step_states(store: &dyn RunStore, run: &Run) -> Result<Vec<(String, StepStatus)>> {
    let attempts = store.steps(&run.workflow_id).await?;
    Ok(StepName::ALL
        .into_iter()
        .filter_map(|step| {
            attempts
                .iter()
                .filter(|a| a.step == step.as_str())
                .max_by_key(|a| a.attempt)
                .map(|a| (a.step.clone(), a.status))
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdf_job_description_reaches_ready_with_its_tasks_in_the_graph() -> Result<()> {
    let world = World::new("ready").await?;
    let run = world
        .queued_run(
            "Claims Adjuster",
            vec![
                ("job_description", world.document("claims_adjuster_jd.pdf")?),
                ("process_map", world.document("claims_handling_process_map.pdf")?),
            ],
        )
        .await?;

    let output = world.execute(&run).await?;
    ensure!(output.state == RunState::Ready, "the run ended {:?}: {output:?}", output.state);
    ensure!(output.failed.is_empty() && output.completed.len() == StepName::ALL.len(), "{output:?}");

    let stored = world.store.get_run(&run.workflow_id).await?;
    ensure!(stored.state == RunState::Ready && stored.end_time.is_some(), "{stored:?}");
    ensure!(stored.tokens_used.total() > 0, "the offline model's tokens are metered: {:?}", stored.tokens_used);
    let states = step_states(world.store.as_ref(), &run).await?;
    ensure!(states.len() == StepName::ALL.len(), "{states:?}");
    ensure!(states.iter().all(|(_, s)| *s == StepStatus::Completed), "{states:?}");

    // Every step announced itself running and then completed, in dependency order, and the run's
    // last event is the outcome.
    let events = world.store.events_after(&run.workflow_id, 0, 1000).await?;
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    ensure!(sequences == (1..=events.len() as u64).collect::<Vec<_>>(), "gap-free: {sequences:?}");
    let position = |step: StepName, status: StepStatus| {
        events.iter().position(
            |e| matches!(&e.change, Change::Step { step: s, status: st, .. } if s == step.as_str() && *st == status),
        )
    };
    for step in StepName::ALL {
        let running = position(step, StepStatus::Running).with_context(|| format!("{step} never ran"))?;
        let completed = position(step, StepStatus::Completed).with_context(|| format!("{step} never completed"))?;
        ensure!(running < completed);
        for need in step.spec().needs {
            let need_done = position(*need, StepStatus::Completed).with_context(|| format!("{need}"))?;
            ensure!(need_done < running, "{step} started before {need} completed");
        }
    }
    ensure!(
        matches!(events.last().map(|e| &e.change), Some(Change::Status { status: RunState::Ready, .. })),
        "last event: {:?}",
        events.last()
    );

    // The graph holds the role, visible, with the tasks the job description lists.
    let graph = world.graph().await?;
    let outputs = graph.role_outputs(&run.role_id).await?.context("the role is not in the graph")?;
    ensure!(outputs.visible, "finalize makes the role visible");
    ensure!(outputs.documents.len() == 2, "{:?}", outputs.documents);
    let names: Vec<&str> = outputs.assessment.tasks.iter().map(|t| t.name.as_str()).collect();
    for expected in [
        "Verify policy coverage, limits, deductibles and exclusions for each claim",
        "Inspect damaged vehicles and properties and photograph the damage",
    ] {
        ensure!(names.iter().any(|n| n.contains(expected)), "task {expected:?} missing from {names:#?}");
    }
    ensure!(!outputs.top_tasks.ranked.is_empty() && !outputs.skills.skills.is_empty());
    ensure!(!outputs.feasibility.tasks.is_empty(), "task feasibility ran");

    // The three branches after the assessment were in flight together: the workflow scheduled all
    // of them before any finished (Temporal's history of the run says so).
    let client = connect(&settings_from(|name| std::env::var(name).ok())?).await?;
    let handle = client.get_workflow_handle::<temporalio_client::UntypedWorkflow>(run.workflow_id.to_string());
    let history = handle.fetch_history(Default::default()).into_events().await?;
    // A workflow change replays the histories of runs in flight; `ETTER_RECORD_HISTORY=<file>`
    // keeps this run's history as a replay fixture (see `tests/replay`).
    if let Some(path) = std::env::var_os("ETTER_RECORD_HISTORY") {
        let json = handle.fetch_history(Default::default()).to_json().await?;
        std::fs::write(&path, json).with_context(|| format!("writing {}", Path::new(&path).display()))?;
    }
    ensure!(branches_overlap(&history)?, "the enhancement branches ran one after another");
    // The branches are chains of this workflow: Temporal starts no child workflow for them.
    let started = children(&history);
    ensure!(started.is_empty(), "child workflows started: {started:?}");
    // The run's bookkeeping (BeginRun, RecordOutcome) ran as local activities: markers in the
    // parent's history, not activity tasks Temporal had to dispatch.
    let (local, dispatched) = bookkeeping(&history);
    ensure!(local == 2 && dispatched.is_empty(), "local activities: {local}; dispatched bookkeeping: {dispatched:?}");
    Ok(())
}

/// A step whose activity task no worker picks up in time is scheduled again, numbers its attempts
/// on from the ones recorded, and the run ends as it would have. This is the path that recovers a
/// task Temporal lost (its history service killed while it handed a retry to matching); here the
/// retry is not picked up because no worker runs: role setup fails its first attempt, the only
/// worker stops, the retry's one-second `worker.schedule_to_start_timeout` passes, and a new
/// worker finds the step to schedule again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_task_nobody_picks_up_in_time_is_scheduled_again_and_the_run_ends_ready() -> Result<()> {
    use temporalio_common::protos::temporal::api::enums::v1::TimeoutType;
    use temporalio_common::protos::temporal::api::failure::v1::failure::FailureInfo;
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;

    let world = World::new("reschedule").await?;
    let run = world
        .queued_run("Claims Adjuster", vec![("job_description", world.document("claims_adjuster_jd.pdf")?)])
        .await?;
    let mut config = world.config.clone();
    config.worker.schedule_to_start_timeout = Duration::from_secs(1);
    // The retry is due three seconds after the failure: time to stop the worker first.
    config.worker.retry_initial_interval = Duration::from_secs(3);
    let client = connect(&settings_from(|name| std::env::var(name).ok())?).await?;
    let handle = client.start_workflow(RoleOnboarding::run, World::input(&run), world.start_options(&run)).await?;

    // The first worker: role setup's first attempt fails; the worker stops once it is recorded.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let first = etter_worker::run_with_faults(config.clone(), Faults::parse("fail_once:role_setup")?, async {
        let _ = stopped.await;
    });
    let failed_once = async {
        within(DEADLINE, "role setup's first attempt to fail", async {
            loop {
                let attempts = world.store.steps(&run.workflow_id).await?;
                if attempts.iter().any(|a| a.step == "role_setup" && a.status == StepStatus::Retrying) {
                    return anyhow::Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await??;
        let _ = stop.send(());
        anyhow::Ok(())
    };
    let (first, failed_once) = tokio::join!(first, failed_once);
    failed_once?;
    first.context("the first worker failed")?;

    // No worker: Temporal times the retry out before it starts.
    let unstarted = |history: &[temporalio_common::protos::temporal::api::history::v1::HistoryEvent]| {
        history
            .iter()
            .filter(|e| {
                matches!(&e.attributes, Some(Attributes::ActivityTaskTimedOutEventAttributes(a))
                    if a.failure.as_ref().is_some_and(|f| matches!(&f.failure_info,
                        Some(FailureInfo::TimeoutFailureInfo(t)) if t.timeout_type == TimeoutType::ScheduleToStart as i32)))
            })
            .count()
    };
    within(DEADLINE, "the retry to time out unstarted", async {
        loop {
            let history = handle.fetch_history(Default::default()).into_events().await?;
            if unstarted(&history) > 0 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await??;

    // A new worker: the workflow schedules role setup again, and the run goes on to READY.
    let output = world
        .with_worker(config, async {
            Ok(within(DEADLINE * 2, "the onboarding workflow", handle.get_result(WorkflowGetResultOptions::default()))
                .await??)
        })
        .await?;
    ensure!(output.state == RunState::Ready, "the run ended {:?}: {output:?}", output.state);
    ensure!(output.failed.is_empty() && output.completed.len() == StepName::ALL.len(), "{output:?}");
    let history = handle.fetch_history(Default::default()).into_events().await?;
    ensure!(unstarted(&history) == 1, "one task timed out unstarted, then ran: {}", unstarted(&history));

    // The attempt that never started left no record; the one scheduled again is attempt 2, not a
    // second attempt 1; every other step ran once.
    for step in StepName::ALL {
        let of_step = attempts_of(world.store.as_ref(), &run, step).await?;
        let expected: &[(u32, StepStatus)] = if step == StepName::RoleSetup {
            &[(1, StepStatus::Retrying), (2, StepStatus::Completed)]
        } else {
            &[(1, StepStatus::Completed)]
        };
        ensure!(of_step == expected, "{step}: {of_step:?}");
    }
    Ok(())
}

/// A step whose only attempt recorded itself completed and then never reported (its worker froze
/// right after): Temporal gives up on it by heartbeat timeout, the workflow finds it completed in
/// the run store, and the run goes on to READY instead of failing a step that did its work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_completed_but_never_reported_stands_and_the_run_ends_ready() -> Result<()> {
    let world = World::new("unreported").await?;
    let run = world
        .queued_run("Claims Adjuster", vec![("job_description", world.document("claims_adjuster_jd.pdf")?)])
        .await?;
    let mut config = world.config.clone();
    config.worker.retry_maximum_attempts = 1;
    let faults = Faults::parse("stall_after_record:document_linking")?;
    let output = world.execute_on(config, faults, &run).await?;
    ensure!(output.state == RunState::Ready, "the run ended {:?}: {output:?}", output.state);
    ensure!(output.failed.is_empty() && output.completed.len() == StepName::ALL.len(), "{output:?}");
    let linking = attempts_of(world.store.as_ref(), &run, StepName::DocumentLinking).await?;
    ensure!(linking == [(1, StepStatus::Completed)], "ran once, recorded once: {linking:?}");
    let stored = world.store.get_run(&run.workflow_id).await?;
    ensure!(stored.state == RunState::Ready && stored.error.is_none(), "{stored:?}");
    Ok(())
}

/// Temporal runs an attempt number a second time (a workflow task it rolled back after a crash had
/// scheduled the activity once already, and that execution closed attempt 1 as retrying): the
/// second execution's records of attempt 1 change nothing, so it must not report the step done —
/// it fails, the next attempt (2) runs and records the step, and the run ends READY instead of
/// failing a later step on a missing output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_number_already_closed_is_not_reported_done_and_the_next_attempt_runs() -> Result<()> {
    let world = World::new("renumbered").await?;
    let run = world
        .queued_run("Claims Adjuster", vec![("job_description", world.document("claims_adjuster_jd.pdf")?)])
        .await?;
    // The first execution of document linking's attempt 1, before the rollback.
    world.store.record_step(&run.workflow_id, StepTransition::new("document_linking", 1, StepStatus::Running)).await?;
    world.store.record_step(&run.workflow_id, StepTransition::new("document_linking", 1, StepStatus::Retrying)).await?;

    let output = world.execute(&run).await?;
    ensure!(output.state == RunState::Ready, "the run ended {:?}: {output:?}", output.state);
    let linking = attempts_of(world.store.as_ref(), &run, StepName::DocumentLinking).await?;
    ensure!(linking == [(1, StepStatus::Retrying), (2, StepStatus::Completed)], "{linking:?}");
    Ok(())
}

/// The local activities recorded in a history, and the bookkeeping activities it dispatched.
pub fn bookkeeping(
    history: &[temporalio_common::protos::temporal::api::history::v1::HistoryEvent],
) -> (usize, Vec<String>) {
    use temporalio_common::protos::constants::LOCAL_ACTIVITY_MARKER_NAME;
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    let mut local = 0;
    let mut dispatched = Vec::new();
    for event in history {
        match &event.attributes {
            Some(Attributes::MarkerRecordedEventAttributes(a)) if a.marker_name == LOCAL_ACTIVITY_MARKER_NAME => {
                local += 1
            }
            Some(Attributes::ActivityTaskScheduledEventAttributes(a)) => {
                if let Some(t) = a.activity_type.as_ref().filter(|t| t.name == "BeginRun" || t.name == "RecordOutcome")
                {
                    dispatched.push(t.name.clone());
                }
            }
            _ => {}
        }
    }
    (local, dispatched)
}

/// Whether the first activities of the three branches after the assessment — step executor (top
/// tasks), skills miner (skills analysis) and task feasibility — were all scheduled before the
/// first of them finished.
fn branches_overlap(history: &[temporalio_common::protos::temporal::api::history::v1::HistoryEvent]) -> Result<bool> {
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    const FIRSTS: [&str; 3] = ["StepExecutorActivity", "SkillsMinerActivity", "TaskFeasibilityActivity"];
    let mut scheduled = Vec::new();
    let mut first_finished = None;
    for (index, event) in history.iter().enumerate() {
        match &event.attributes {
            Some(Attributes::ActivityTaskScheduledEventAttributes(a))
                if a.activity_type.as_ref().is_some_and(|t| FIRSTS.contains(&t.name.as_str())) =>
            {
                scheduled.push((index, event.event_id));
            }
            Some(Attributes::ActivityTaskCompletedEventAttributes(a))
                if scheduled.iter().any(|(_, id)| *id == a.scheduled_event_id) =>
            {
                first_finished.get_or_insert(index);
            }
            _ => {}
        }
    }
    ensure!(
        scheduled.len() == 3,
        "expected the three branches' first activities in the history, found {}",
        scheduled.len()
    );
    let finished = first_finished.context("no branch finished")?;
    Ok(scheduled.iter().all(|(index, _)| *index < finished))
}

/// The child workflows a history started, by type.
pub fn children(history: &[temporalio_common::protos::temporal::api::history::v1::HistoryEvent]) -> Vec<String> {
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    history
        .iter()
        .filter_map(|event| match &event.attributes {
            Some(Attributes::StartChildWorkflowExecutionInitiatedEventAttributes(a)) => {
                a.workflow_type.as_ref().map(|t| t.name.clone())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_pdf_fails_the_run_naming_the_document_without_retries() -> Result<()> {
    let world = World::new("corrupt").await?;
    let uri = world.document("corrupt.pdf")?;
    let run = world.queued_run("Claims Adjuster", vec![("job_description", uri.clone())]).await?;

    let output = world.execute(&run).await?;
    ensure!(output.state == RunState::Failed, "{output:?}");
    ensure!(output.failed == vec![StepName::DocumentLinking], "{output:?}");

    let stored = world.store.get_run(&run.workflow_id).await?;
    let error = stored.error.context("a FAILED run carries its error")?;
    ensure!(error.message.contains(&uri), "the error names the document: {error:?}");
    ensure!(error.step.as_deref() == Some("document_linking") && !error.recoverable, "{error:?}");
    let attempts = world.store.steps(&run.workflow_id).await?;
    let linking: Vec<_> = attempts.iter().filter(|a| a.step == "document_linking").collect();
    ensure!(linking.len() == 1 && linking[0].status == StepStatus::Failed, "one attempt, failed: {linking:?}");
    // Nothing after the failed critical step ran; those steps are closed as skipped.
    let states = step_states(world.store.as_ref(), &run).await?;
    ensure!(
        states
            .iter()
            .filter(|(s, _)| s != "role_setup" && s != "document_linking")
            .all(|(_, st)| *st == StepStatus::Skipped),
        "{states:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_document_fails_the_run_naming_it() -> Result<()> {
    let world = World::new("missing").await?;
    let uri = format!("file://{}", world.config.documents.file_root.join("never-uploaded.pdf").display());
    let run = world.queued_run("Claims Adjuster", vec![("job_description", uri.clone())]).await?;
    let output = world.execute(&run).await?;
    ensure!(output.state == RunState::Failed, "{output:?}");
    let error = world.store.get_run(&run.workflow_id).await?.error.context("error")?;
    ensure!(error.code == "DOCUMENT_NOT_FOUND" && error.message.contains(&uri), "{error:?}");
    let _ = &world.docs;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_stops_its_running_step_and_keeps_what_finished() -> Result<()> {
    let world = World::new("cancel").await?;
    let run = world
        .queued_run("Claims Adjuster", vec![("job_description", world.document("claims_adjuster_jd.pdf")?)])
        .await?;
    let ended = world.cancel_during(&run, StepName::AiAssessment).await?;
    ensure!(format!("{ended:#}").to_lowercase().contains("cancel"), "the workflow ended: {ended:#}");

    let stored = world.store.get_run(&run.workflow_id).await?;
    ensure!(stored.state == RunState::Cancelled && stored.end_time.is_some(), "{stored:?}");
    let states = step_states(world.store.as_ref(), &run).await?;
    let state_of = |step: StepName| states.iter().find(|(s, _)| s == step.as_str()).map(|(_, st)| *st);
    // What finished is kept; the step that was running stopped and the run's outcome closed it
    // as cancelled; the rest never ran.
    ensure!(state_of(StepName::RoleSetup) == Some(StepStatus::Completed), "{states:?}");
    ensure!(state_of(StepName::DocumentLinking) == Some(StepStatus::Completed), "{states:?}");
    ensure!(state_of(StepName::AiAssessment) == Some(StepStatus::Cancelled), "{states:?}");
    for step in [StepName::StepExecutor, StepName::SkillsMiner, StepName::TaskFeasibility, StepName::Finalize] {
        ensure!(state_of(step) == Some(StepStatus::Cancelled), "{step}: {states:?}");
    }
    let outputs = world.graph().await?.role_outputs(&run.role_id).await?.context("role kept in the graph")?;
    ensure!(!outputs.visible && outputs.documents.len() == 1, "kept but not shown: {outputs:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_rerun_runs_only_what_a_changed_process_map_reaches() -> Result<()> {
    let world = World::new("stale").await?;
    let jd = world.document("claims_adjuster_jd.pdf")?;
    let map_path = world.config.documents.file_root.join("process_map.md");
    std::fs::write(&map_path, "# Claims handling\n\n1. Receive the first notice of loss.\n2. Assign an adjuster.\n")?;
    let map = format!("file://{}", map_path.display());
    let documents = vec![("job_description", jd.clone()), ("process_map", map.clone())];
    let first = world.queued_run("Claims Adjuster", documents.clone()).await?;
    ensure!(world.execute(&first).await?.state == RunState::Ready);
    let first_attempts = world.store.steps(&first.workflow_id).await?;

    // Only the process map changes.
    std::fs::write(
        &map_path,
        "# Claims handling\n\n1. Receive the first notice of loss.\n2. Assign an adjuster.\n3. Close the file.\n",
    )?;
    world.store.transition(&first.workflow_id, Transition::to(RunState::Stale, "process map changed")).await?;
    let prior = etter_store::prior_steps(&world.store.steps(&first.workflow_id).await?);
    let changed: Vec<(etter_core::steps::DocumentKind, etter_core::outputs::ContentHash)> = vec![
        (
            etter_core::steps::DocumentKind::JobDescription,
            etter_documents::content_hash(&std::fs::read(
                world.config.documents.file_root.join("claims_adjuster_jd.pdf"),
            )?),
        ),
        (etter_core::steps::DocumentKind::ProcessMap, etter_documents::content_hash(&std::fs::read(&map_path)?)),
    ];
    let identity = first.role_identity();
    let plan = etter_core::steps::plan_rerun(&prior, &identity, &changed, false);
    ensure!(plan.action(StepName::RoleSetup) == etter_core::steps::Action::Reuse, "{plan:?}");

    let second = world.rerun(&first, plan, documents).await?;
    let output = world.execute(&second).await?;
    ensure!(output.state == RunState::Ready, "{output:?}");

    let attempts = world.store.steps(&second.workflow_id).await?;
    let status = |step: StepName| {
        attempts.iter().filter(|a| a.step == step.as_str()).max_by_key(|a| a.attempt).map(|a| a.status)
    };
    let input_of = |list: &[etter_store::StepAttempt], step: StepName| {
        list.iter().filter(|a| a.step == step.as_str()).max_by_key(|a| a.attempt).and_then(|a| a.input_hash.clone())
    };
    let output_of = |list: &[etter_store::StepAttempt], step: StepName| {
        list.iter().filter(|a| a.step == step.as_str()).max_by_key(|a| a.attempt).and_then(|a| a.output_hash.clone())
    };
    let mut report = Vec::new();
    for step in StepName::ALL {
        report.push(format!(
            "{step}: {:?} input {} output {}",
            status(step),
            if input_of(&attempts, step) == input_of(&first_attempts, step) { "same" } else { "changed" },
            if output_of(&attempts, step) == output_of(&first_attempts, step) { "same" } else { "changed" },
        ));
    }
    // Every step ran exactly when its inputs changed, and was reused otherwise.
    for step in StepName::ALL {
        let same_input = input_of(&attempts, step) == input_of(&first_attempts, step);
        let expected = if same_input { StepStatus::Reused } else { StepStatus::Completed };
        ensure!(status(step) == Some(expected), "{step}:\n{}", report.join("\n"));
    }
    // The steps that read the process map ran; the role setup never did.
    for step in [StepName::DocumentLinking, StepName::TaskFeasibility] {
        ensure!(status(step) == Some(StepStatus::Completed), "{step}:\n{}", report.join("\n"));
    }
    ensure!(status(StepName::RoleSetup) == Some(StepStatus::Reused), "{}", report.join("\n"));
    // The early cutoff: the assessment re-ran on the changed documents, came out the same, and so
    // nothing that reads only the assessment ran again.
    ensure!(
        status(StepName::AiAssessment) == Some(StepStatus::Completed)
            && output_of(&attempts, StepName::AiAssessment) == output_of(&first_attempts, StepName::AiAssessment),
        "{}",
        report.join("\n")
    );
    for step in [StepName::StepExecutor, StepName::SkillsMiner, StepName::Reskilling] {
        ensure!(status(step) == Some(StepStatus::Reused), "{step}:\n{}", report.join("\n"));
    }
    // The linked documents changed, so the summary of the role was made again rather than kept.
    ensure!(
        output_of(&attempts, StepName::DocumentLinking) != output_of(&first_attempts, StepName::DocumentLinking)
            && status(StepName::Finalize) == Some(StepStatus::Completed),
        "{}",
        report.join("\n")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_staleness_scan_marks_exactly_the_roles_whose_documents_changed() -> Result<()> {
    let world = World::new("scan").await?;
    let map_path = world.config.documents.file_root.join("process_map.md");
    std::fs::write(&map_path, "# Claims handling\n\n1. Receive the first notice of loss.\n")?;
    let map = format!("file://{}", map_path.display());
    let jd = world.document("software_engineer_jd.txt")?;
    let changing = world.queued_run("Claims Adjuster", vec![("process_map", map.clone())]).await?;
    let steady = world.queued_run("Software Engineer", vec![("job_description", jd)]).await?;
    ensure!(world.execute(&changing).await?.state == RunState::Ready);
    ensure!(world.execute(&steady).await?.state == RunState::Ready);

    std::fs::write(&map_path, "# Claims handling\n\n1. Receive the first notice of loss.\n2. Close the file.\n")?;
    let mut config = world.config.clone();
    config.worker.staleness_scan_interval = Duration::from_secs(3600);
    let schedule = etter_worker::scan_schedule_id(&config.temporal.task_queue);
    let client = connect(&settings_from(|name| std::env::var(name).ok())?).await?;
    let report = world
        .with_worker(config.clone(), async {
            // The worker keeps the schedule...
            within(DEADLINE, "the schedule", async {
                loop {
                    if client.get_schedule_handle(schedule.clone()).describe(Default::default()).await.is_ok() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await?;
            // ...and a scan on demand runs on it.
            Ok(etter_worker::scan_now(&config).await?)
        })
        .await;
    let _ = client.get_schedule_handle(schedule).delete(Default::default()).await;
    let report = report?;

    ensure!(report.marked_stale == vec![changing.workflow_id.clone()], "{report:?}");
    ensure!(report.scanned >= 2 && report.unchecked.is_empty(), "{report:?}");
    let stale = world.store.get_run(&changing.workflow_id).await?;
    ensure!(stale.state == RunState::Stale, "{stale:?}");
    ensure!(world.store.get_run(&steady.workflow_id).await?.state == RunState::Ready);
    let events = world.store.events_after(&changing.workflow_id, 0, 1000).await?;
    ensure!(
        matches!(events.last().map(|e| &e.change), Some(Change::Status { status: RunState::Stale, reason, .. }) if reason.contains(&map)),
        "the STALE event names the changed document: {:?}",
        events.last()
    );
    // The new content hash is recorded for the re-run to plan with.
    let recorded = world.store.document_hashes(std::slice::from_ref(&map)).await?;
    ensure!(
        recorded.first().map(|r| &r.content_hash) == Some(&etter_documents::content_hash(&std::fs::read(&map_path)?)),
        "{recorded:?}"
    );
    Ok(())
}
