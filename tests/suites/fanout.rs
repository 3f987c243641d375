//! Live fan-out through Redis: with the store polled only every 20 s, a watcher on one
//! server replica still sees a run pushed through another replica finish within moments — Redis
//! woke it. Then Redis dies mid-run: the watcher falls back to polling the store and still sees
//! the next run reach READY, and the `etter.redis` health entry turns NOT_SERVING. The test runs
//! its own Redis, since it kills it.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{
    Document, DocumentType, GetStatusRequest, PushRequest, RoleStatus, RunOptions, WatchStatusRequest,
    get_status_request, run_event, watch_status_request, watch_status_response,
};
use etter_tests::stack::{Client, ServingStatus, Stack};

/// The store poll of the watch streams: slower than any wake-up the test accepts.
const POLL: &str = "20s";

fn push_request(stack: &Stack, role: &str, jd: &str) -> PushRequest {
    PushRequest {
        company_id: stack.company.clone(),
        role_name: role.to_owned(),
        documents: vec![Document {
            r#type: DocumentType::JobDescription as i32,
            uri: jd.to_owned(),
            ..Default::default()
        }],
        draup_role_id: "draup-role-77".to_owned(),
        options: Some(RunOptions { skip_enhancement_workflows: true, ..Default::default() }),
        request_id: String::new(),
        validate_only: false,
    }
}

/// Reads the stream until `run` reports READY; answers when that event arrived.
async fn until_ready(
    stream: &mut tonic::Streaming<etter_proto::v1::WatchStatusResponse>,
    run: &str,
    within: Duration,
) -> Result<tokio::time::Instant> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .with_context(|| format!("{run} was not seen READY within {within:?}"))??
            .context("the stream ended")?;
        if let Some(watch_status_response::Kind::Event(event)) = message.kind
            && event.workflow_id == run
            && let Some(run_event::Change::StatusChange(change)) = &event.change
            && change.status() == RoleStatus::Ready
        {
            return Ok(tokio::time::Instant::now());
        }
    }
}

/// Polls GetStatus (on the pushing replica) until the run is READY; answers when it saw it.
async fn ready_in_store(client: &mut Client, run: &str) -> Result<tokio::time::Instant> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let request = GetStatusRequest { target: Some(get_status_request::Target::WorkflowId(run.to_owned())) };
        let status = client.get_status(request).await?.into_inner().run.context("GetStatus without a run")?;
        if status.status == RoleStatus::Ready as i32 {
            return Ok(tokio::time::Instant::now());
        }
        ensure!(tokio::time::Instant::now() < deadline, "{run} never became READY: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_is_woken_through_redis_and_falls_back_to_the_store_when_redis_dies() -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut redis = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting a private redis-server (scripts/services up redis installs it)")?;
    let url = format!("redis://127.0.0.1:{port}/");
    // Wait until it answers.
    let client = redis::Client::open(url.as_str())?;
    let mut answered = false;
    for _ in 0..100 {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await
            && redis::cmd("PING").query_async::<String>(&mut c).await.is_ok()
        {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(answered, "the private redis-server did not answer");

    let stack = Stack::new("fanout").await?;
    let settings = [("ETTER_REDIS__URL", url.as_str()), ("ETTER_SERVER__WATCH_POLL_INTERVAL", POLL)];
    let pushing = stack.start_server_with(&settings).await?;
    let watching = stack.start_server_with(&settings).await?;
    let worker = stack.start_worker(&[("ETTER_REDIS__URL", url.as_str())]).await?;
    let mut via_a = stack.client(&pushing).await?;
    let mut via_b = stack.client_as(&watching, "viewer").await?;
    let jd = stack.document("software_engineer_jd.txt")?;
    let watch = WatchStatusRequest {
        scope: Some(watch_status_request::Scope::CompanyId(stack.company.clone())),
        after_sequence: 0,
        resume_token: String::new(),
    };
    let mut stream = via_b.watch_status(watch).await?.into_inner();
    stack.wait_health(&watching, "etter.redis", ServingStatus::Serving, Duration::from_secs(30)).await?;

    // Redis up: the READY of a run pushed through A reaches B's watcher right after it is stored,
    // not at B's next store poll.
    let first = via_a.push(push_request(&stack, "Fanned Engineer 1", &jd)).await?.into_inner().workflow_id;
    let (seen, stored) = tokio::try_join!(
        until_ready(&mut stream, &first, Duration::from_secs(120)),
        ready_in_store(&mut via_a, &first)
    )?;
    let lag = seen.saturating_duration_since(stored);
    ensure!(lag < Duration::from_secs(3), "READY reached the watcher {lag:?} after it was stored");

    // Redis dies; the next run still reaches the watcher, from the store.
    redis.kill().await?;
    let second = via_a.push(push_request(&stack, "Fanned Engineer 2", &jd)).await?.into_inner().workflow_id;
    until_ready(&mut stream, &second, Duration::from_secs(150)).await?;
    // Health says why streams are slower now; the pipeline itself stays SERVING.
    stack.wait_health(&watching, "etter.redis", ServingStatus::NotServing, Duration::from_secs(30)).await?;
    ensure!(stack.health(&watching, "etter.pipeline.v1.PipelineService").await? == Some(ServingStatus::Serving));

    worker.stop().await?;
    watching.stop().await?;
    pushing.stop().await?;
    stack.cleanup().await
}
