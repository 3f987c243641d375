//! Why a run waits, said where a user looks: `GetStatus`, the push answer, a watch stream's
//! heartbeats and the health entry `etter.worker`; on both profiles, on a stack that starts with no
//! worker, then gets one whose only slot is held, then loses it.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{
    Document, DocumentType, PushBatchItem, PushBatchRequest, PushRequest, RoleStatus, RunStatus, WaitReason,
    WatchStatusRequest, watch_status_request, watch_status_response,
};
use etter_tests::stack::{Client, Profile, ServingStatus, Stack, run_status as status};
use tokio_stream::StreamExt as _;

/// How soon a run held up by a missing worker must say so.
const SAYS_SO_WITHIN: Duration = Duration::from_secs(30);

/// Polls GetStatus until the run is in `state` waiting for `reason`; answers its status.
async fn wait_for(
    client: &mut Client,
    workflow_id: &str,
    state: RoleStatus,
    reason: WaitReason,
    within: Duration,
) -> Result<RunStatus> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let run = status(client, workflow_id).await?;
        if run.status == state as i32 && run.wait_reason == reason as i32 {
            return Ok(run);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{workflow_id} did not reach {state:?} waiting for {reason:?} within {within:?}: it is {:?} waiting for {:?}",
            RoleStatus::try_from(run.status),
            WaitReason::try_from(run.wait_reason)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The wait reason the first heartbeat of a one-run watch stream reports for the run.
async fn heartbeat_reason(client: &mut Client, workflow_id: &str) -> Result<WaitReason> {
    let scope = watch_status_request::Scope::WorkflowId(workflow_id.to_owned());
    let heartbeat = first_heartbeat(client, scope).await?;
    let position = heartbeat
        .queue
        .iter()
        .find(|q| q.workflow_id == workflow_id)
        .with_context(|| format!("the heartbeat does not place the waiting run {workflow_id}: {heartbeat:?}"))?;
    Ok(WaitReason::try_from(position.wait_reason)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_says_what_it_waits_for_a_worker_a_slot_or_its_company_cap() -> Result<()> {
    for profile in [Profile::Postgres, Profile::Embedded] {
        waits(profile).await.with_context(|| profile.name())?;
    }
    Ok(())
}

async fn waits(profile: Profile) -> Result<()> {
    let stack = Stack::with_profile("waits", profile).await?;
    let server = stack
        .start_server_with(&[
            ("ETTER_DISPATCH__MAX_PROCESSING_PER_COMPANY", "2"),
            ("ETTER_SERVER__HEALTH_CHECK_INTERVAL", "1s"),
            ("ETTER_SERVER__WATCH_HEARTBEAT_INTERVAL", "1s"),
        ])
        .await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;
    let push = |role: &str| PushRequest {
        company_id: stack.company.clone(),
        role_name: role.to_owned(),
        documents: vec![Document {
            r#type: DocumentType::JobDescription as i32,
            uri: jd.clone(),
            ..Default::default()
        }],
        draup_role_id: "draup-role-31011".to_owned(),
        ..Default::default()
    };

    // No worker polls the stack's task queue: every run says so, and the health entry too.
    let first = client.push(push("Waiting Role 1")).await?.into_inner();
    let second = client.push(push("Waiting Role 2")).await?.into_inner();
    let third = client.push(push("Waiting Role 3")).await?.into_inner();
    for pushed in [&first, &second] {
        let run =
            wait_for(&mut client, &pushed.workflow_id, RoleStatus::Processing, WaitReason::NoWorker, SAYS_SO_WITHIN)
                .await?;
        ensure!(run.current_steps.is_empty() && run.estimated_duration_seconds > 0, "{run:#?}");
    }
    // Over the company's cap of 2, the third stays queued, first in line: for a worker too.
    let queued =
        wait_for(&mut client, &third.workflow_id, RoleStatus::Queued, WaitReason::NoWorker, SAYS_SO_WITHIN).await?;
    ensure!(queued.position_in_queue == 1, "{queued:#?}");
    ensure!(stack.health(&server, "etter.worker").await? == Some(ServingStatus::NotServing));
    ensure!(heartbeat_reason(&mut client, &first.workflow_id).await? == WaitReason::NoWorker);
    // A company watch places its processing runs that wait for a worker too, at position 0.
    let company = first_heartbeat(&mut client, watch_status_request::Scope::CompanyId(stack.company.clone())).await?;
    let placed = company
        .queue
        .iter()
        .find(|q| q.workflow_id == first.workflow_id)
        .with_context(|| format!("the company heartbeat does not place {}: {company:?}", first.workflow_id))?;
    ensure!(placed.wait_reason == WaitReason::NoWorker as i32 && placed.position_in_queue == 0, "{placed:?}");

    // A worker with one slot, whose first step never finishes: the first run to get the slot holds
    // it, the other processing run waits for a slot, and the queued one for its company's cap.
    let worker = stack
        .start_worker(&[
            ("ETTER_TEST_FAULTS", "pause_after:role_setup"),
            ("ETTER_WORKER__MAX_CONCURRENT_ACTIVITIES", "1"),
        ])
        .await?;
    stack.wait_health(&server, "etter.worker", ServingStatus::Serving, SAYS_SO_WITHIN).await?;
    let deadline = tokio::time::Instant::now() + SAYS_SO_WITHIN;
    let (running, waiting) = loop {
        let a = status(&mut client, &first.workflow_id).await?;
        let b = status(&mut client, &second.workflow_id).await?;
        let slot = WaitReason::WorkerSlot as i32;
        if !a.current_steps.is_empty() && b.wait_reason == slot {
            break (a, b);
        }
        if !b.current_steps.is_empty() && a.wait_reason == slot {
            break (b, a);
        }
        ensure!(tokio::time::Instant::now() < deadline, "no run took the slot while the other waited: {a:#?} {b:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(running.wait_reason == WaitReason::Unspecified as i32, "a run with a running step waits: {running:#?}");
    ensure!(waiting.status == RoleStatus::Processing as i32 && waiting.current_steps.is_empty(), "{waiting:#?}");
    ensure!(heartbeat_reason(&mut client, &waiting.workflow_id).await? == WaitReason::WorkerSlot);
    let queued =
        wait_for(&mut client, &third.workflow_id, RoleStatus::Queued, WaitReason::CompanyCap, SAYS_SO_WITHIN).await?;
    ensure!(queued.position_in_queue == 1, "{queued:#?}");
    let fourth = client.push(push("Waiting Role 4")).await?.into_inner();
    ensure!(
        fourth.wait_reason == WaitReason::CompanyCap as i32 && fourth.position_in_queue == 2,
        "a push behind a full company answered {fourth:?}"
    );

    // The worker dies (SIGKILL: it cannot say so). Temporal still lists its last poll for a
    // minute; its presence record ages, and within the same 30 s the runs say no worker takes them.
    worker.kill().await?;
    let died = tokio::time::Instant::now();
    let queued =
        wait_for(&mut client, &third.workflow_id, RoleStatus::Queued, WaitReason::NoWorker, SAYS_SO_WITHIN).await?;
    ensure!(queued.position_in_queue == 1, "{queued:#?}");
    wait_for(&mut client, &waiting.workflow_id, RoleStatus::Processing, WaitReason::NoWorker, SAYS_SO_WITHIN).await?;
    stack.wait_health(&server, "etter.worker", ServingStatus::NotServing, SAYS_SO_WITHIN).await?;
    ensure!(died.elapsed() <= SAYS_SO_WITHIN, "noticed only after {:?}", died.elapsed());

    server.stop().await?;
    stack.cleanup().await
}

/// Polls GetStatus until the run has ended; answers its status.
async fn wait_ended(client: &mut Client, workflow_id: &str, within: Duration) -> Result<RunStatus> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let run = status(client, workflow_id).await?;
        if !matches!(RoleStatus::try_from(run.status)?, RoleStatus::Queued | RoleStatus::Processing) {
            return Ok(run);
        }
        ensure!(tokio::time::Instant::now() < deadline, "{workflow_id} did not end within {within:?}: {run:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes the companies file with `budget` for the stack's company, dated ahead so the server's
/// change check cannot miss it.
fn set_budget(stack: &Stack, file: &std::path::Path, budget: u64) -> Result<()> {
    std::fs::write(file, format!("[companies.{}]\ntoken_budget = {budget}\n", stack.company))?;
    let ahead = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options().write(true).open(file)?.set_modified(ahead)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_runs_are_held_once_their_company_used_its_budget_and_go_on_when_it_is_raised() -> Result<()> {
    for profile in [Profile::Postgres, Profile::Embedded] {
        held_by_the_budget(profile).await.with_context(|| profile.name())?;
    }
    Ok(())
}

async fn held_by_the_budget(profile: Profile) -> Result<()> {
    let mut stack = Stack::with_profile("budgethold", profile).await?;
    let companies = stack.root().join("companies.toml");
    // Estimates of one token a step admit both runs under a budget of 10; the first then uses far
    // more than that.
    set_budget(&stack, &companies, 10)?;
    stack.set("ETTER_SERVER__COMPANIES_FILE", companies.display().to_string());
    let server = stack
        .start_server_with(&[
            ("ETTER_DISPATCH__MAX_PROCESSING_PER_COMPANY", "1"),
            ("ETTER_DISPATCH__ESTIMATE_LLM_STEP_TOKENS", "1"),
        ])
        .await?;
    let worker = stack.start_worker(&[]).await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;
    let push = |role: &str| PushRequest {
        company_id: stack.company.clone(),
        role_name: role.to_owned(),
        documents: vec![Document {
            r#type: DocumentType::JobDescription as i32,
            uri: jd.clone(),
            ..Default::default()
        }],
        draup_role_id: "draup-role-31011".to_owned(),
        options: Some(etter_proto::v1::RunOptions { skip_enhancement_workflows: true, ..Default::default() }),
        ..Default::default()
    };
    let first = client.push(push("Budget Role 1")).await?.into_inner();
    let second = client.push(push("Budget Role 2")).await?.into_inner();
    let ended = wait_ended(&mut client, &first.workflow_id, Duration::from_secs(120)).await?;
    ensure!(ended.status == RoleStatus::Ready as i32, "{ended:#?}");
    let used = ended.tokens_used.as_ref().map_or(0, |t| t.total_tokens);
    ensure!(used > 10, "the first run used {used} tokens, not past the budget of 10");

    // The budget is used up: the second run stays queued and says why.
    let held =
        wait_for(&mut client, &second.workflow_id, RoleStatus::Queued, WaitReason::TokenBudget, SAYS_SO_WITHIN).await?;
    ensure!(held.position_in_queue == 1, "{held:#?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = status(&mut client, &second.workflow_id).await?;
    ensure!(still.status == RoleStatus::Queued as i32, "a held run started: {still:#?}");

    // Raised: it starts and ends.
    set_budget(&stack, &companies, 10_000_000)?;
    let done = wait_ended(&mut client, &second.workflow_id, Duration::from_secs(120)).await?;
    ensure!(done.status == RoleStatus::Ready as i32, "{done:#?}");

    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}

/// The first heartbeat of a watch of `scope`.
async fn first_heartbeat(
    client: &mut Client,
    scope: watch_status_request::Scope,
) -> Result<etter_proto::v1::Heartbeat> {
    let request = WatchStatusRequest { scope: Some(scope), ..Default::default() };
    let mut stream = client.watch_status(request).await?.into_inner();
    let within = Duration::from_secs(20);
    tokio::time::timeout(within, async {
        while let Some(message) = stream.next().await {
            if let Some(watch_status_response::Kind::Heartbeat(heartbeat)) = message?.kind {
                return anyhow::Ok(heartbeat);
            }
        }
        anyhow::bail!("the stream ended without a heartbeat")
    })
    .await
    .with_context(|| format!("no heartbeat within {within:?}"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_is_told_the_same_position_and_eta_everywhere() -> Result<()> {
    for profile in [Profile::Postgres, Profile::Embedded] {
        agreement(profile).await.with_context(|| profile.name())?;
    }
    Ok(())
}

async fn agreement(profile: Profile) -> Result<()> {
    let stack = Stack::with_profile("agree", profile).await?;
    let server = stack
        .start_server_with(&[
            ("ETTER_DISPATCH__MAX_PROCESSING_PER_COMPANY", "1"),
            ("ETTER_SERVER__WATCH_HEARTBEAT_INTERVAL", "1s"),
        ])
        .await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;
    let document =
        || vec![Document { r#type: DocumentType::JobDescription as i32, uri: jd.clone(), ..Default::default() }];
    let push = |role: &str| PushRequest {
        company_id: stack.company.clone(),
        role_name: role.to_owned(),
        documents: document(),
        draup_role_id: "draup-role-31011".to_owned(),
        ..Default::default()
    };
    // No worker: the first run takes the company's one slot and keeps it; the rest wait.
    let first = client.push(push("Agreed Role 1")).await?.into_inner();
    wait_for(&mut client, &first.workflow_id, RoleStatus::Processing, WaitReason::NoWorker, SAYS_SO_WITHIN).await?;
    let item = |role: &str| PushBatchItem {
        role_name: role.to_owned(),
        documents: document(),
        draup_role_id: "draup-role-31011".to_owned(),
        options: None,
        client_ref: String::new(),
    };
    let batch = client
        .push_batch(PushBatchRequest {
            company_id: stack.company.clone(),
            items: vec![item("Agreed Batch 1"), item("Agreed Batch 2")],
            ..Default::default()
        })
        .await?
        .into_inner();
    let acked = batch.progress.clone().context("a batch answer has its progress")?;
    let last_of_batch = batch.items[1].workflow_id.clone();
    let pushed = client.push(push("Agreed Role 4")).await?.into_inner();

    // The push answer, GetStatus, a one-run watch and a company watch say the same.
    let status_of_pushed = status(&mut client, &pushed.workflow_id).await?;
    let told = (pushed.position_in_queue, pushed.estimated_duration_seconds, pushed.wait_reason);
    ensure!(told.0 == 3, "behind the batch's two runs: {pushed:?}");
    let asked =
        (status_of_pushed.position_in_queue, status_of_pushed.estimated_duration_seconds, status_of_pushed.wait_reason);
    ensure!(told == asked, "the push answered {told:?}, GetStatus {asked:?}");
    let one = first_heartbeat(&mut client, watch_status_request::Scope::WorkflowId(pushed.workflow_id.clone())).await?;
    let company = first_heartbeat(&mut client, watch_status_request::Scope::CompanyId(stack.company.clone())).await?;
    for heartbeat in [&one, &company] {
        let entry = heartbeat
            .queue
            .iter()
            .find(|q| q.workflow_id == pushed.workflow_id)
            .with_context(|| format!("the heartbeat does not place {}: {heartbeat:?}", pushed.workflow_id))?;
        let beat = (entry.position_in_queue, entry.estimated_duration_seconds, entry.wait_reason);
        ensure!(beat == asked, "a heartbeat said {beat:?}, GetStatus {asked:?}");
    }

    // A batch ends when its last run does: its progress gives that run's ETA, at the push and in
    // a batch watch's heartbeat.
    let last = status(&mut client, &last_of_batch).await?;
    ensure!(last.position_in_queue == 2, "{last:#?}");
    ensure!(acked.estimated_duration_seconds == last.estimated_duration_seconds, "{acked:?} vs {last:#?}");
    let watched = first_heartbeat(&mut client, watch_status_request::Scope::BatchId(batch.batch_id.clone())).await?;
    let progress = watched.batch.context("a batch heartbeat has its progress")?;
    ensure!(progress.estimated_duration_seconds == last.estimated_duration_seconds, "{progress:?} vs {last:#?}");
    // And later runs ahead of its own, not behind, count: more than the first of the batch.
    let first_of_batch = status(&mut client, &batch.items[0].workflow_id).await?;
    ensure!(first_of_batch.estimated_duration_seconds < last.estimated_duration_seconds, "{first_of_batch:#?}");

    server.stop().await?;
    stack.cleanup().await
}
