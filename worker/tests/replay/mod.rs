//! Workflow code changes must replay the histories of runs already in flight: a deploy happens
//! while runs are processing. These tests replay recorded histories against this version's
//! workflows, offline (no Temporal server needed).

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use etter_worker::workflows::RoleOnboarding;
use temporalio_client::WorkflowHistory;
use temporalio_common::protos::temporal::api::history::v1::History;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

use crate::pipeline::{bookkeeping, children};

/// The recorded history in the fixture `name`.
fn recorded(name: &str) -> Result<History> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Replays `history` against this version's onboarding workflow; fails on nondeterminism.
async fn replay(history: History) -> Result<()> {
    let options = WorkflowReplayerOptions::new().register_workflow::<RoleOnboarding>()?.build();
    WorkflowReplayer::new(options)?.replay_workflow(WorkflowHistory::from(history)).await?;
    Ok(())
}

/// A run started before the bookkeeping became local activities — its history dispatched
/// `BeginRun` and `RecordOutcome` as activity tasks — replays on this version to the same end.
/// The fixture is the parent history of a READY run of commit 275678b, written with
/// `WorkflowHistory::to_json`.
#[tokio::test]
async fn a_run_started_with_bookkeeping_activities_replays_on_this_version() -> Result<()> {
    let recorded = recorded("role_onboarding_bookkeeping_activities.json")?;
    let (local, dispatched) = bookkeeping(&recorded.events);
    ensure!(
        local == 0 && dispatched == ["BeginRun", "RecordOutcome"],
        "the fixture is not a history of the earlier version: {local} local, dispatched {dispatched:?}"
    );

    replay(recorded).await
}

/// A run started before the branches became chains of the run's own workflow — its history
/// started the AI assessment, top tasks and skills analysis as child workflows, and kept its books
/// with local activities — replays on this version to the same end. The fixture is the history of
/// a READY run of commit 9d2653c, recorded with `ETTER_RECORD_HISTORY` (see `tests/pipeline`).
#[tokio::test]
async fn a_run_started_with_child_workflows_replays_on_this_version() -> Result<()> {
    let recorded = recorded("role_onboarding_child_workflows.json")?;
    let (local, dispatched) = bookkeeping(&recorded.events);
    let started = children(&recorded.events);
    ensure!(
        local == 2
            && dispatched.is_empty()
            && started == ["AIAssessmentWorkflow", "TopTasksWorkflow", "SkillsAnalysisWorkflow"],
        "the fixture is not a history of the earlier version: {local} local, dispatched {dispatched:?}, children {started:?}"
    );

    replay(recorded).await
}
