//! Deadlines (`RunOptions.deadline`) end to end, on both profiles: a push whose run would end
//! after its deadline, or that nothing could start, is refused with the estimate and what it would
//! wait for; a batch rejects such an item and takes the others; a run still queued when its
//! deadline passes is cancelled with `DEADLINE_EXCEEDED` and its tokens are released.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{
    BatchItemOutcome, Document, DocumentType, GetUsageRequest, PushBatchItem, PushBatchRequest, PushRequest,
    RoleStatus, RunOptions,
};
use etter_tests::stack::{Client, Profile, ServingStatus, Stack, run_status as status, until};

/// How long a run may take to reach what a test waits for.
const WITHIN: Duration = Duration::from_secs(30);
use tonic::Code;
use tonic_types::StatusExt as _;

/// `seconds` from now, as the contract gives times.
fn in_seconds(seconds: i64) -> prost_types::Timestamp {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp { seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX) + seconds, nanos: 0 }
}

fn with_deadline(seconds: i64) -> Option<RunOptions> {
    Some(RunOptions { skip_enhancement_workflows: true, deadline: Some(in_seconds(seconds)), ..Default::default() })
}

/// The `ErrorInfo` reason and metadata of a refused call.
fn refusal(status: &tonic::Status) -> Result<(String, std::collections::HashMap<String, String>)> {
    let info = status.get_details_error_info().with_context(|| format!("no ErrorInfo: {status:?}"))?;
    Ok((info.reason, info.metadata))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_refuses_what_cannot_end_in_time_and_cancels_what_did_not_start() -> Result<()> {
    for profile in [Profile::Postgres, Profile::Embedded] {
        deadlines(profile).await.with_context(|| profile.name())?;
    }
    Ok(())
}

async fn deadlines(profile: Profile) -> Result<()> {
    let stack = Stack::with_profile("deadlines", profile).await?;
    let common = [("ETTER_DISPATCH__MAX_PROCESSING_PER_COMPANY", "1"), ("ETTER_SERVER__HEALTH_CHECK_INTERVAL", "1s")];
    // Nothing measured yet: a step is assumed to take an hour.
    let mut slow = common.to_vec();
    slow.push(("ETTER_DISPATCH__ESTIMATE_STEP_DURATION", "1h"));
    let server = stack.start_server_with(&slow).await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;
    let push = |role: &str, options: Option<RunOptions>| PushRequest {
        company_id: stack.company.clone(),
        role_name: role.to_owned(),
        documents: vec![Document {
            r#type: DocumentType::JobDescription as i32,
            uri: jd.clone(),
            ..Default::default()
        }],
        draup_role_id: "draup-role-31011".to_owned(),
        options,
        ..Default::default()
    };

    // A deadline in the past is invalid.
    let past = client.push(push("Late Role", with_deadline(-60))).await.err().context("a past deadline")?;
    ensure!(past.code() == Code::InvalidArgument, "{past:?}");
    let field = past.get_details_bad_request().context("BadRequest")?.field_violations;
    ensure!(field.iter().any(|v| v.field == "options.deadline"), "{field:?}");

    // No worker: a run without a deadline waits; one with a deadline cannot be promised.
    let first = client.push(push("Holding Role", None)).await?.into_inner();
    until(&mut client, &first.workflow_id, "waiting for a worker", WITHIN, |r| {
        r.wait_reason == etter_proto::v1::WaitReason::NoWorker as i32
    })
    .await?;
    let refused = client.push(push("Urgent Role", with_deadline(3600))).await.err().context("no worker")?;
    ensure!(refused.code() == Code::FailedPrecondition, "{refused:?}");
    let (reason, metadata) = refusal(&refused)?;
    ensure!(reason == "DEADLINE_UNREACHABLE", "{reason}");
    ensure!(metadata.get("wait_reason").map(String::as_str) == Some("WAIT_REASON_NO_WORKER"), "{metadata:?}");
    ensure!(refused.message().contains("no worker"), "{}", refused.message());

    // A worker whose first step never ends holds the company's only slot: a new run would wait for
    // it and then take hours, past a deadline ten minutes away.
    let worker = stack.start_worker(&[("ETTER_TEST_FAULTS", "pause_after:role_setup")]).await?;
    stack.wait_health(&server, "etter.worker", ServingStatus::Serving, Duration::from_secs(30)).await?;
    until(&mut client, &first.workflow_id, "running a step", WITHIN, |r| !r.current_steps.is_empty()).await?;
    let refused = client.push(push("Urgent Role", with_deadline(600))).await.err().context("too slow")?;
    ensure!(refused.code() == Code::FailedPrecondition, "{refused:?}");
    let (reason, metadata) = refusal(&refused)?;
    ensure!(reason == "DEADLINE_UNREACHABLE", "{reason}");
    ensure!(metadata.get("wait_reason").map(String::as_str) == Some("WAIT_REASON_COMPANY_CAP"), "{metadata:?}");
    let eta: i64 = metadata.get("estimated_duration_seconds").context("the estimate")?.parse()?;
    ensure!(eta >= 4 * 3600, "four one-hour steps, at least: {eta}");
    let failure = refused.get_details_precondition_failure().context("PreconditionFailure")?;
    ensure!(failure.violations.iter().any(|v| v.subject == "options.deadline"), "{failure:?}");

    // In a batch the item is rejected and the others go on.
    let item = |role: &str, options| PushBatchItem {
        role_name: role.to_owned(),
        documents: vec![Document {
            r#type: DocumentType::JobDescription as i32,
            uri: jd.clone(),
            ..Default::default()
        }],
        draup_role_id: "draup-role-31011".to_owned(),
        options,
        client_ref: role.to_owned(),
    };
    let batch = PushBatchRequest {
        company_id: stack.company.clone(),
        items: vec![item("Batch Urgent", with_deadline(600)), item("Batch Patient", None)],
        ..Default::default()
    };
    let answered = client.push_batch(batch).await?.into_inner().items;
    ensure!(answered[0].outcome == BatchItemOutcome::Rejected as i32, "{:?}", answered[0]);
    ensure!(answered[0].field_violations.iter().any(|v| v.field == "options.deadline"), "{:?}", answered[0]);
    ensure!(answered[1].outcome == BatchItemOutcome::Accepted as i32, "{:?}", answered[1]);
    server.stop().await?;

    // Steps assumed to take 10 ms: a deadline 4 s away is within reach when pushed, but the run
    // waits behind the held slot until the deadline passes, and is cancelled.
    let mut fast = common.to_vec();
    fast.push(("ETTER_DISPATCH__ESTIMATE_STEP_DURATION", "10ms"));
    let server = stack.start_server_with(&fast).await?;
    let mut client = stack.client(&server).await?;
    let usage = |mut client: Client| {
        let company = stack.company.clone();
        async move {
            let request = GetUsageRequest { company_id: company, period: String::new() };
            anyhow::Ok(client.get_usage(request).await?.into_inner().reserved_tokens)
        }
    };
    let reserved_before = usage(client.clone()).await?;
    let pushed = client.push(push("Soon Role", with_deadline(4))).await?.into_inner();
    ensure!(pushed.status == RoleStatus::Queued as i32, "{pushed:?}");
    let estimate = pushed.token_estimate.map_or(0, |t| t.total_tokens);
    ensure!(usage(client.clone()).await? == reserved_before + estimate, "the queued run reserves its estimate");
    let queued = status(&mut client, &pushed.workflow_id).await?;
    ensure!(queued.options.as_ref().and_then(|o| o.deadline).is_some(), "the deadline is shown: {queued:#?}");
    let cancelled = until(&mut client, &pushed.workflow_id, "cancelled at its deadline", WITHIN, |r| {
        r.status == RoleStatus::Cancelled as i32
    })
    .await?;
    let error = cancelled.error.clone().context("a cancelled run says why")?;
    ensure!(error.code == "DEADLINE_EXCEEDED" && error.recoverable && !error.action.is_empty(), "{error:?}");
    ensure!(cancelled.start_time.is_none(), "it never started: {cancelled:#?}");
    ensure!(usage(client.clone()).await? == reserved_before, "its reservation is released");

    worker.kill().await?;
    server.stop().await?;
    stack.cleanup().await
}
