//! Round trips through a real Temporal dev server with a real `temporalio-sdk` worker: the
//! facts the pipeline relies on, proven before it depends on them.
//!
//! Needs `ETTER_TEMPORAL__ADDRESS` and `ETTER_TEMPORAL__NAMESPACE`
//! (`scripts/services up temporal`, then source `.etter/services.env`); without them every
//! server test fails, it never skips.

mod harness;
mod pipeline;
mod probe;
mod replay;

use anyhow::{Context, Result, bail, ensure};
use temporalio_client::errors::{WorkflowGetResultError, WorkflowStartError};
use temporalio_client::{
    UntypedWorkflow, WorkflowCancelOptions, WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowGetResultOptions,
};
use temporalio_common::error::IncomingError;

use harness::{ADDRESS_VAR, DEADLINE, NAMESPACE_VAR, Probe, drive, settings_from, within};
use probe::{
    CHILD_WORKFLOW, ChildReport, PARENT_WORKFLOW, PERMANENT_FAILURE_TYPE, ProbeCounters, ProbeEvent, ProbeHeartbeat,
    ProbeParent, ProbeRejecting, ProbeReport,
};

const INPUT: &str = "Claims Adjuster ✓";

fn expected_report(parent_id: &str) -> ProbeReport {
    ProbeReport {
        shouted: "CLAIMS ADJUSTER ✓".to_owned(),
        child: ChildReport { workflow_id: format!("{parent_id}-child"), reversed: "✓ retsujdA smialC".to_owned() },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_runs_an_activity_and_a_child_workflow() -> Result<()> {
    let (probe, mut worker) = Probe::start("round-trip").await?;
    let workflow_id = probe.workflow_id("parent");

    let report = drive(&mut worker, async {
        let handle =
            probe.client.start_workflow(ProbeParent::run, INPUT.to_owned(), probe.start_options(&workflow_id)).await?;
        let result =
            within(DEADLINE, "the parent workflow's result", handle.get_result(WorkflowGetResultOptions::default()))
                .await??;
        Ok(result)
    })
    .await?;

    assert_eq!(report, expected_report(&workflow_id));

    // The child is a workflow of its own on the server, under its registered name.
    let child = probe.client.get_workflow_handle::<UntypedWorkflow>(report.child.workflow_id.clone());
    let child =
        within(DEADLINE, "the child's description", child.describe(WorkflowDescribeOptions::default())).await??;
    assert_eq!(child.workflow_type(), CHILD_WORKFLOW);
    assert_eq!(child.status(), WorkflowExecutionStatus::Completed);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_by_name_twice_joins_the_open_run() -> Result<()> {
    let (probe, mut worker) = Probe::start("by-name").await?;
    let workflow_id = probe.workflow_id("parent");
    let input = probe.encode(&INPUT.to_owned())?;
    let start_by_name = || {
        probe.client.start_workflow(
            UntypedWorkflow::new(PARENT_WORKFLOW),
            input.clone(),
            probe.start_options(&workflow_id),
        )
    };

    // Both starts happen before the worker polls, so the first run is certainly still open when
    // the second arrives: the retried-dispatch case UseExisting exists for.
    let first = within(DEADLINE, "the first start", start_by_name()).await??;
    let second = within(DEADLINE, "the second start", start_by_name()).await??;
    let first_run = first.run_id().context("first start returned no run id")?;
    ensure!(
        second.run_id() == Some(first_run),
        "second start opened run {:?}, the first was {first_run}",
        second.run_id()
    );

    let raw = drive(&mut worker, async {
        let result = within(
            DEADLINE,
            "the result of the workflow started by name",
            second.get_result(WorkflowGetResultOptions::default()),
        )
        .await??;
        Ok(result)
    })
    .await?;

    let report: ProbeReport = probe.decode(raw)?;
    assert_eq!(report, expected_report(&workflow_id));
    // One execution, not two: each activity ran exactly once.
    assert_eq!(ProbeCounters::get(&probe.counters.shout), 1);
    assert_eq!(ProbeCounters::get(&probe.counters.reverse), 1);

    // Once the run has closed, RejectDuplicate refuses a new run instead of silently redoing it.
    match within(DEADLINE, "the start after close", start_by_name()).await? {
        Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(()),
        Err(other) => bail!("restarting a closed workflow id failed unexpectedly: {other}"),
        Ok(handle) => bail!("restarting a closed workflow id opened run {:?}", handle.run_id()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_workflow_cancels_its_heartbeating_activity() -> Result<()> {
    let (mut probe, mut worker) = Probe::start("cancel").await?;
    let workflow_id = probe.workflow_id("heartbeat");

    let outcome = drive(&mut worker, async {
        let handle = probe.client.start_workflow(ProbeHeartbeat::run, (), probe.start_options(&workflow_id)).await?;
        probe.expect_event(ProbeEvent::HeartbeatLoopStarted).await?;
        handle.cancel(WorkflowCancelOptions::builder().reason("probe cancels".to_owned()).build()).await?;
        probe.expect_event(ProbeEvent::CancellationObserved).await?;
        let outcome =
            within(DEADLINE, "the cancelled workflow to close", handle.get_result(WorkflowGetResultOptions::default()))
                .await?;
        Ok(outcome)
    })
    .await?;

    match outcome {
        Err(WorkflowGetResultError::Cancelled { .. }) => Ok(()),
        other => bail!("expected the workflow to close as cancelled, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_activity_error_fails_the_workflow_after_one_attempt() -> Result<()> {
    let (probe, mut worker) = Probe::start("permanent").await?;
    let workflow_id = probe.workflow_id("rejecting");

    let outcome = drive(&mut worker, async {
        let handle = probe
            .client
            .start_workflow(ProbeRejecting::run, "unparseable.docx".to_owned(), probe.start_options(&workflow_id))
            .await?;
        let outcome =
            within(DEADLINE, "the rejecting workflow to close", handle.get_result(WorkflowGetResultOptions::default()))
                .await?;
        Ok(outcome)
    })
    .await?;

    let failure = match outcome {
        Err(WorkflowGetResultError::Failed(failure)) => failure,
        other => bail!("expected the workflow to fail, got {other:?}"),
    };
    // The workflow's failure wraps the activity failure, which wraps the application failure.
    let application = std::iter::successors(Some(&*failure), |err| err.cause())
        .find_map(|err| match err {
            IncomingError::Application(application) => Some(application),
            _ => None,
        })
        .with_context(|| format!("no application failure in the failure chain: {failure}"))?;
    assert_eq!(application.type_name(), Some(PERMANENT_FAILURE_TYPE));
    assert!(application.is_non_retryable());
    assert_eq!(ProbeCounters::get(&probe.counters.reject), 1);
    Ok(())
}

#[test]
fn missing_settings_fail_with_instructions() -> Result<()> {
    let message = match settings_from(|_| None) {
        Ok(settings) => bail!("settings without any variables were accepted: {settings:?}"),
        Err(error) => error.to_string(),
    };
    ensure!(message.contains(ADDRESS_VAR), "{message}");
    ensure!(message.contains("scripts/services up temporal"), "{message}");

    let only_address = |name: &str| (name == ADDRESS_VAR).then(|| "http://127.0.0.1:1".to_owned());
    let message = match settings_from(only_address) {
        Ok(settings) => bail!("settings without a namespace were accepted: {settings:?}"),
        Err(error) => error.to_string(),
    };
    ensure!(message.contains(NAMESPACE_VAR), "{message}");
    Ok(())
}

/// `etter-worker`, the binary `./etter dev`, a release build and an image run, never injects
/// faults, whatever features it was built with: asked to, it refuses to start and says why.
#[test]
fn etter_worker_refuses_to_inject_faults() -> Result<()> {
    let scratch = tempfile::Builder::new().prefix("etter-worker-no-faults-").tempdir()?;
    let dir = scratch.path().to_path_buf();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_etter-worker"))
        .arg("run")
        .env("ETTER_TEST_FAULTS", "fail:role_setup")
        .env("ETTER_DATA_DIR", &dir)
        // Nothing to reach: the refusal comes before any connection.
        .env("ETTER_TEMPORAL__ADDRESS", "http://127.0.0.1:9")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // A worker that took the faults would go on trying to reach Temporal: give it 20 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.with_context(|| format!("etter-worker kept running with ETTER_TEST_FAULTS set: {stderr}"))?;
    ensure!(!status.success(), "etter-worker ran with ETTER_TEST_FAULTS set: {stderr}");
    ensure!(stderr.contains("never injects faults"), "the refusal says why: {stderr}");
    Ok(())
}
