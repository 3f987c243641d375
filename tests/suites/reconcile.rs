//! A workflow an operator terminates from the Temporal CLI: its run never records an
//! outcome, so the server's reconciler closes it FAILED with an error that says what happened and
//! what to do.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{Document, DocumentType, GetStatusRequest, PushRequest, RoleStatus, get_status_request};
use etter_tests::{service_setting, stack::Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_terminated_from_the_temporal_cli_is_closed_by_the_reconciler() -> Result<()> {
    let temporal_cli = service_setting("ETTER_TOOLS__TEMPORAL", "temporal")?;
    let stack = Stack::new("reconcile").await?;
    let server = stack.start_server_with(&[("ETTER_DISPATCH__RECONCILE_INTERVAL", "500ms")]).await?;
    // The run stops after its first step, as if that step were slow.
    let mut worker = stack.start_worker(&[("ETTER_TEST_FAULTS", "pause_after:role_setup")]).await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;
    let request = PushRequest {
        company_id: stack.company.clone(),
        role_name: "Terminated Engineer".into(),
        documents: vec![Document { r#type: DocumentType::JobDescription as i32, uri: jd, ..Default::default() }],
        draup_role_id: "draup-role-5".into(),
        options: None,
        request_id: String::new(),
        validate_only: false,
    };
    let run = client.push(request).await?.into_inner().workflow_id;
    worker
        .wait_for_line(Duration::from_secs(120), |l| l.contains("\"fault\":\"paused\"") && l.contains("role_setup"))
        .await?;

    let env = |key: &str| stack.env().iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).context(key.to_owned());
    let address = env("ETTER_TEMPORAL__ADDRESS")?;
    let address = address.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let output = tokio::process::Command::new(&temporal_cli)
        .args(["workflow", "terminate", "--workflow-id", &run, "--reason", "stopped by an operator"])
        .args(["--address", &address, "--namespace", &env("ETTER_TEMPORAL__NAMESPACE")?])
        .output()
        .await?;
    ensure!(output.status.success(), "temporal workflow terminate: {}", String::from_utf8_lossy(&output.stderr));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let closed = loop {
        let request = GetStatusRequest { target: Some(get_status_request::Target::WorkflowId(run.clone())) };
        let status = client.get_status(request).await?.into_inner().run.context("GetStatus without a run")?;
        if status.status != RoleStatus::Processing as i32 {
            break status;
        }
        ensure!(tokio::time::Instant::now() < deadline, "the reconciler did not close the run: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(closed.status == RoleStatus::Failed as i32, "{closed:?}");
    let error = closed.error.context("a closed run says why")?;
    ensure!(error.code == "WORKFLOW_TERMINATED" && error.message.contains("terminated in Temporal"), "{error:?}");
    ensure!(error.recoverable && error.action.contains("Retry"), "{error:?}");

    worker.kill().await?;
    server.stop().await?;
    stack.cleanup().await
}

/// Workflow ids restart at `-1` in a new run store (a deleted `.etter/data`, a new database)
/// while Temporal keeps the closed workflows of the old one. A run whose id is taken by such a
/// stranger must run under its own new execution, not be settled from the stranger's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_workflow_of_another_store_with_the_same_id_does_not_take_the_run() -> Result<()> {
    use etter_core::ids::{CompanyId, RoleId, RoleName, WorkflowId};
    use etter_core::workflow::ROLE_ONBOARDING_WORKFLOW;
    let temporal_cli = service_setting("ETTER_TOOLS__TEMPORAL", "temporal")?;
    let stack = Stack::new("sameid").await?;
    let env = |key: &str| stack.env().iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).context(key.to_owned());
    let address = env("ETTER_TEMPORAL__ADDRESS")?.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let namespace = env("ETTER_TEMPORAL__NAMESPACE")?;
    let company = CompanyId::parse(&stack.company)?;
    let taken = WorkflowId::for_run(&RoleId::new(&company, &RoleName::parse("Reused Id Engineer")?), 1).to_string();
    let temporal = |args: &[&str]| {
        let mut command = tokio::process::Command::new(&temporal_cli);
        command.args(["workflow"]).args(args).args(["--address", &address, "--namespace", &namespace]);
        command.output()
    };
    // Another store's run 1 of the same role: started on a queue nobody polls, then closed.
    let started = temporal(&[
        "start",
        "--type",
        ROLE_ONBOARDING_WORKFLOW,
        "--task-queue",
        "etter-nobody-polls",
        "--workflow-id",
        &taken,
    ])
    .await?;
    ensure!(started.status.success(), "temporal workflow start: {}", String::from_utf8_lossy(&started.stderr));
    let ended = temporal(&["terminate", "--workflow-id", &taken, "--reason", "another store's run"]).await?;
    ensure!(ended.status.success(), "temporal workflow terminate: {}", String::from_utf8_lossy(&ended.stderr));

    let server = stack.start_server_with(&[("ETTER_DISPATCH__RECONCILE_INTERVAL", "500ms")]).await?;
    let worker = stack.start_worker(&[]).await?;
    let mut client = stack.client(&server).await?;
    let request = PushRequest {
        company_id: stack.company.clone(),
        role_name: "Reused Id Engineer".into(),
        documents: vec![Document {
            r#type: DocumentType::JobDescription as i32,
            uri: stack.document("software_engineer_jd.txt")?,
            ..Default::default()
        }],
        draup_role_id: "draup-role-6".into(),
        options: None,
        request_id: String::new(),
        validate_only: false,
    };
    let run = client.push(request).await?.into_inner().workflow_id;
    ensure!(run == taken, "the pushed run has the stranger's id: {run} vs {taken}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let done = loop {
        let request = GetStatusRequest { target: Some(get_status_request::Target::WorkflowId(run.clone())) };
        let status = client.get_status(request).await?.into_inner().run.context("GetStatus without a run")?;
        if ![RoleStatus::Queued as i32, RoleStatus::Processing as i32].contains(&status.status) {
            break status;
        }
        ensure!(tokio::time::Instant::now() < deadline, "the run did not end: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(done.status == RoleStatus::Ready as i32, "the run ran on its own execution: {done:?}");
    // Both executions stay in Temporal under the one id: the stranger's, terminated, and the run's.
    // Temporal's visibility (what `list` reads) follows a workflow's close a moment later.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let listed = temporal(&["list", "--query", &format!("WorkflowId = '{taken}'"), "--output", "json"]).await?;
        let executions: serde_json::Value = serde_json::from_slice(&listed.stdout)?;
        let statuses: Vec<String> = executions
            .as_array()
            .context("temporal workflow list --output json gives an array")?
            .iter()
            .map(|e| e["status"].to_string())
            .collect();
        let both = statuses.len() == 2
            && statuses.iter().any(|s| s.contains("TERMINATED"))
            && statuses.iter().any(|s| s.contains("COMPLETED"));
        if both {
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "executions under {taken}: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    worker.kill().await?;
    server.stop().await?;
    stack.cleanup().await
}
