//! Push, GetStatus, WatchStatus and the dispatcher, against the real run store (the embedded SQLite
//! file, or a fresh PostgreSQL database) and the real Temporal dev server (`scripts/services up
//! postgres temporal`, then source `.etter/services.env`).
//!
//! No worker runs here: the tests that need a run to move play the worker's part by writing step
//! transitions into the same store, through the same `RunStore` API the worker uses.

mod authz;
mod batch;
mod budget;
mod fairness;
mod graph;
mod limits;
mod rerun;
mod tenancy;
mod trace;
mod watch_scope;

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use etter_core::ids::WorkflowId;
use etter_core::lifecycle::RunState;
use etter_proto::v1::{
    self as pb, GetStatusRequest, PushRequest, WatchStatusRequest, get_status_request::Target,
    pipeline_service_client::PipelineServiceClient, watch_status_request::Scope, watch_status_response::Kind,
};
use etter_store::StoreLocation;
use etter_store::{self, RunStore, StepStatus, StepTransition, Transition};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, UntypedWorkflow, Url, WorkflowCountOptions,
    WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowTerminateOptions,
};
use tonic::{Code, Streaming, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_types::StatusExt as _;

use super::{SERVICE, Server, unique_suffix, with_token};

/// Bounds every wait on the server, Temporal or a stream.
const DEADLINE: Duration = Duration::from_secs(30);
/// Between two looks at a condition that is polled.
const POLL: Duration = Duration::from_millis(50);
const TEMPORAL_HEALTH: &str = "etter.temporal";

type Api = PipelineServiceClient<Channel>;

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty()).with_context(|| {
        format!("{name} is not set: run `scripts/services up postgres temporal` and source .etter/services.env")
    })
}

/// A loopback address where nothing listens (bound, then released).
fn closed_port_url() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(format!("http://{addr}"))
}

/// A server whose Temporal is a closed port, answering fast.
async fn server_without_temporal() -> anyhow::Result<Server> {
    server_without_temporal_with(&[]).await
}

/// [`server_without_temporal`] with more settings.
async fn server_without_temporal_with(extra: &[(&str, &str)]) -> anyhow::Result<Server> {
    let closed = closed_port_url()?;
    let mut env = vec![("ETTER_TEMPORAL__ADDRESS", closed.as_str()), ("ETTER_DISPATCH__TEMPORAL_TIMEOUT", "500ms")];
    env.extend_from_slice(extra);
    Server::start(&env).await
}

/// Polls `probe` until it yields a value, failing after [`DEADLINE`] with `what`.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if start.elapsed() > DEADLINE {
            bail!("timed out after {DEADLINE:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The company of this test process: unique, because the Temporal dev server outlives test runs
/// (and serves `./etter dev` too) and keeps workflow ids, which are derived from company and role.
fn acme() -> String {
    static COMPANY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COMPANY.get_or_init(|| format!("acme{}", unique_suffix().replace(['-', '_'], "").to_lowercase())).clone()
}

fn push_request(role: &str, uri: &str) -> PushRequest {
    PushRequest {
        company_id: acme(),
        role_name: role.into(),
        documents: vec![pb::Document {
            r#type: pb::DocumentType::JobDescription as i32,
            uri: uri.into(),
            ..Default::default()
        }],
        draup_role_id: "draup-role-12345".into(),
        options: Some(pb::RunOptions { skip_enhancement_workflows: true, ..Default::default() }),
        request_id: String::new(),
        validate_only: false,
    }
}

/// A batch of `company` with one valid item per role name.
fn batch_of(server: &Server, company: &str, names: &[String]) -> pb::PushBatchRequest {
    pb::PushBatchRequest {
        company_id: company.to_owned(),
        items: names
            .iter()
            .map(|name| pb::PushBatchItem {
                role_name: name.clone(),
                documents: vec![pb::Document {
                    r#type: pb::DocumentType::JobDescription as i32,
                    uri: doc_uri(server, "batch.pdf"),
                    ..Default::default()
                }],
                draup_role_id: "draup-role-12345".into(),
                options: None,
                client_ref: String::new(),
            })
            .collect(),
        default_options: None,
        request_id: String::new(),
        validate_only: false,
    }
}

/// A document URI under the server's documents root, the document written there if it is not
/// yet: the server checks that a pushed document exists and is what its extension says before it
/// queues the run. No worker reads it in these tests, so a PDF header is all a `.pdf` holds. (A
/// write that fails shows as the push refused with INVALID_DOCUMENT, naming the file.)
fn doc_uri(server: &Server, name: &str) -> String {
    let path = server.data_dir.join("docs").join(name);
    if !path.exists() {
        let content: &[u8] = if name.ends_with(".pdf") { b"%PDF-1.7\n" } else { b"A job description.\n" };
        let _ = std::fs::write(&path, content);
    }
    format!("file://{}", path.display())
}

async fn status_of(api: &mut Api, token: &str, target: Target) -> Result<pb::RunStatus, tonic::Status> {
    let request = with_token(GetStatusRequest { target: Some(target) }, token)
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    api.get_status(request).await?.into_inner().run.ok_or_else(|| tonic::Status::internal("GetStatus without a run"))
}

async fn health_of(server: &Server, service: &str) -> anyhow::Result<ServingStatus> {
    let mut health = HealthClient::new(server.channel().await?);
    Ok(health.check(HealthCheckRequest { service: service.to_owned() }).await?.into_inner().status())
}

fn violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn invalid_pushes_name_the_field_and_store_nothing() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let token = server.token(&["--company", &acme(), "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let good = push_request("Claims Adjuster", &doc_uri(&server, "jd.pdf"));
    let mut no_documents = good.clone();
    no_documents.documents.clear();
    let mut empty_name = good.clone();
    empty_name.role_name = "   ".into();
    let mut unknown_scheme = good.clone();
    unknown_scheme.documents[0].uri = "ftp://files.example.com/jd.pdf".into();
    let mut outside_root = good.clone();
    outside_root.documents[0].uri = "file:///etc/passwd".into();
    let mut no_draup = good.clone();
    no_draup.draup_role_id.clear();
    let cases = [
        (no_documents, "documents"),
        (empty_name, "role_name"),
        (unknown_scheme, "documents[0].uri"),
        (outside_root, "documents[0].uri"),
        (no_draup, "draup_role_id"),
    ];
    for (request, field) in cases {
        let status = api.push(with_token(request, &token)?).await.err().context("an invalid push must fail")?;
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(violations(&status), [field], "{}", status.message());
        let info = status.get_details_error_info().context("ErrorInfo missing")?;
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("INVALID_ROLE", "etter.pipeline"));
    }
    // Nothing was stored: the role has no run.
    let missing = status_of(&mut api, &token, Target::RoleId(format!("cr-{}.claims-adjuster", acme()))).await;
    assert_eq!(missing.err().map(|s| s.code()), Some(Code::NotFound));
    Ok(())
}

#[tokio::test]
async fn a_push_whose_document_cannot_be_used_is_refused_before_it_is_queued() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let token = server.token(&["--company", &acme(), "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let docs = server.data_dir.join("docs");
    std::fs::write(docs.join("text.pdf"), "a job description in plain text, named .pdf")?;
    std::fs::write(docs.join("empty.txt"), "")?;
    std::fs::create_dir_all(docs.join("folder.pdf"))?;
    let missing = doc_uri(&server, "jd.pdf").replace("jd.pdf", "missing.pdf");
    let cases = [
        (missing, "not found"),
        (format!("file://{}", docs.join("text.pdf").display()), "plain text"),
        (format!("file://{}", docs.join("empty.txt").display()), "empty"),
        (format!("file://{}", docs.join("folder.pdf").display()), "not a regular file"),
    ];
    for (uri, says) in cases {
        let mut request = push_request("Claims Adjuster", &doc_uri(&server, "jd.pdf"));
        request.documents.push(pb::Document {
            r#type: pb::DocumentType::ProcessMap as i32,
            uri: uri.clone(),
            ..Default::default()
        });
        let status = api.push(with_token(request, &token)?).await.err().context("a push of an unusable document")?;
        assert_eq!(status.code(), Code::InvalidArgument, "{uri}: {status:?}");
        let info = status.get_details_error_info().context("ErrorInfo missing")?;
        assert_eq!(info.reason, "INVALID_DOCUMENT", "{uri}");
        let bad = status.get_details_bad_request().context("BadRequest missing")?;
        let [violation] = bad.field_violations.as_slice() else { bail!("{uri}: {bad:?}") };
        assert_eq!(violation.field, "documents[1].uri", "{uri}");
        assert!(violation.description.contains(&uri), "{uri}: {}", violation.description);
        assert!(violation.description.contains(says), "{uri}: {}", violation.description);
    }
    // Nothing was stored: the role has no run.
    let missing = status_of(&mut api, &token, Target::RoleId(format!("cr-{}.claims-adjuster", acme()))).await;
    assert_eq!(missing.err().map(|s| s.code()), Some(Code::NotFound));
    // The same push with its documents in place is queued.
    let good = api.push(with_token(push_request("Claims Adjuster", &doc_uri(&server, "jd.pdf")), &token)?).await?;
    assert_eq!(good.into_inner().status(), pb::RoleStatus::Queued);
    Ok(())
}

#[tokio::test]
async fn with_the_document_store_unreachable_a_push_is_refused_as_unavailable_and_nothing_is_stored()
-> anyhow::Result<()> {
    let endpoint = closed_port_url()?;
    let server = Server::start(&[
        ("ETTER_DOCUMENTS__S3__ENDPOINT", &endpoint),
        ("ETTER_DOCUMENTS__S3__ALLOW_HTTP", "true"),
        ("ETTER_DOCUMENTS__S3__ACCESS_KEY_ID", "etter"),
        ("ETTER_DOCUMENTS__S3__SECRET_ACCESS_KEY", "etter-secret"),
        ("ETTER_DOCUMENTS__S3__MAX_RETRIES", "0"),
    ])
    .await?;
    let token = server.token(&["--company", &acme(), "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let request = push_request("Claims Adjuster", "s3://etter-docs/acme/jd.pdf");
    let status = api.push(with_token(request, &token)?).await.err().context("a push while S3 is down")?;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let info = status.get_details_error_info().context("ErrorInfo missing")?;
    assert_eq!(info.reason, "DOCUMENT_STORE_UNAVAILABLE");
    assert!(status.message().contains("s3://etter-docs/acme/jd.pdf"), "{}", status.message());
    assert!(status.message().contains("nothing was stored"), "{}", status.message());
    assert!(!status.message().contains(&endpoint[7..]), "the message names the endpoint: {}", status.message());
    let missing = status_of(&mut api, &token, Target::RoleId(format!("cr-{}.claims-adjuster", acme()))).await;
    assert_eq!(missing.err().map(|s| s.code()), Some(Code::NotFound));
    Ok(())
}

#[tokio::test]
async fn pushes_are_idempotent_by_inputs_and_by_request_id() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let token = server.token(&["--company", &acme(), "--role", "operator", "--user", "jane"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let request = push_request("Claims Adjuster", &doc_uri(&server, "jd.pdf"));

    let first = api.push(with_token(request.clone(), &token)?).await?.into_inner();
    assert!(first.created);
    assert_eq!(first.workflow_id, format!("role-onboard-cr-{}.claims-adjuster-1", acme()));
    assert_eq!(first.role_id, format!("cr-{}.claims-adjuster", acme()));
    assert_eq!(first.status(), pb::RoleStatus::Queued);
    assert_eq!(first.position_in_queue, 1);
    assert!(first.estimated_duration_seconds > 0 && first.token_estimate.is_some_and(|t| t.total_tokens > 0));

    // Right after Push, GetStatus already knows the run (QUEUED, or later if dispatched).
    for target in [Target::WorkflowId(first.workflow_id.clone()), Target::RoleId(first.role_id.clone())] {
        let run = status_of(&mut api, &token, target).await?;
        assert!(matches!(run.status(), pb::RoleStatus::Queued | pb::RoleStatus::Processing), "{run:?}");
        assert_eq!(run.workflow_id, first.workflow_id);
        let progress = run.progress.context("progress missing")?;
        assert_eq!((progress.current, progress.total), (0, 4), "skip_enhancement plans the critical path");
        assert_eq!(progress.steps.len(), 11, "every step of the graph is listed");
        assert_eq!(run.documents.len(), 1);
    }

    // Same inputs (documents reordered do not matter; here: the same request) → the same run.
    let again = api.push(with_token(request.clone(), &token)?).await?.into_inner();
    assert_eq!(again.workflow_id, first.workflow_id);
    assert!(!again.created);

    // A request id makes a retried call return the first answer, byte for byte.
    let mut keyed = push_request("Underwriter", &doc_uri(&server, "uw.pdf"));
    keyed.request_id = format!("req-{}", unique_suffix());
    let answer = api.push(with_token(keyed.clone(), &token)?).await?.into_inner();
    let retried = api.push(with_token(keyed.clone(), &token)?).await?.into_inner();
    assert_eq!(retried, answer);
    assert!(answer.created);

    // The same request id with another payload is refused.
    let mut reused = keyed.clone();
    reused.role_name = "Senior Underwriter".into();
    let status = api.push(with_token(reused, &token)?).await.err().context("a reused request id must fail")?;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.get_details_error_info().map(|i| i.reason), Some("REQUEST_ID_REUSED".to_owned()));
    assert_eq!(violations(&status), ["request_id"]);
    Ok(())
}

#[tokio::test]
async fn callers_see_and_change_only_what_their_role_and_companies_allow() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let operator = server.token(&["--company", &acme(), "--role", "operator"])?;
    let viewer = server.token(&["--company", &acme(), "--role", "viewer"])?;
    let other = server.token(&["--company", "globex", "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let request = push_request("Claims Adjuster", &doc_uri(&server, "jd.pdf"));

    let denied = api.push(with_token(request.clone(), &viewer)?).await.err().context("a viewer may not push")?;
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let foreign = api.push(with_token(request.clone(), &other)?).await.err().context("not globex's company")?;
    assert_eq!(foreign.code(), Code::PermissionDenied, "{foreign:?}");

    let run = api.push(with_token(request, &operator)?).await?.into_inner();
    // The viewer of the company reads it; another company's caller cannot tell it exists.
    status_of(&mut api, &viewer, Target::WorkflowId(run.workflow_id.clone())).await?;
    for target in [Target::WorkflowId(run.workflow_id.clone()), Target::RoleId(run.role_id.clone())] {
        let hidden = status_of(&mut api, &other, target).await.err().context("another company's run")?;
        assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");
    }
    let watch = WatchStatusRequest { scope: Some(Scope::WorkflowId(run.workflow_id.clone())), ..Default::default() };
    let hidden = api.watch_status(with_token(watch, &other)?).await.err().context("another company's watch")?;
    assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");
    // A batch of another company is as invisible as one that does not exist; another company's
    // active runs are refused by name; the company's viewer may watch them.
    let items = vec![pb::PushBatchItem {
        role_name: "Batch Adjuster".into(),
        documents: vec![pb::Document {
            r#type: pb::DocumentType::JobDescription as i32,
            uri: doc_uri(&server, "b.pdf"),
            ..Default::default()
        }],
        draup_role_id: "draup-role-12345".into(),
        options: None,
        client_ref: String::new(),
    }];
    let batch_request = pb::PushBatchRequest { company_id: acme(), items, default_options: None, ..Default::default() };
    let denied = api.push_batch(with_token(batch_request.clone(), &viewer)?).await.err().context("viewer batch")?;
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let batch = api.push_batch(with_token(batch_request, &operator)?).await?.into_inner();
    let watch_batch = WatchStatusRequest { scope: Some(Scope::BatchId(batch.batch_id.clone())), ..Default::default() };
    let hidden = api.watch_status(with_token(watch_batch.clone(), &other)?).await.err().context("foreign batch")?;
    assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");
    let missing = WatchStatusRequest { scope: Some(Scope::BatchId("batch-00ff".into())), ..Default::default() };
    let absent = api.watch_status(with_token(missing, &operator)?).await.err().context("no such batch")?;
    assert_eq!(absent.code(), Code::NotFound, "{absent:?}");
    api.watch_status(with_token(watch_batch, &viewer)?).await?;
    let company = WatchStatusRequest { scope: Some(Scope::CompanyId(acme())), ..Default::default() };
    let refused = api.watch_status(with_token(company.clone(), &other)?).await.err().context("foreign company")?;
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    api.watch_status(with_token(company, &viewer)?).await?;
    let history = pb::HistoryRequest { company_id: acme(), ..Default::default() };
    let refused = api.history(with_token(history.clone(), &other)?).await.err().context("foreign history")?;
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(!api.history(with_token(history, &viewer)?).await?.into_inner().runs.is_empty());
    Ok(())
}

#[tokio::test]
async fn expired_tokens_are_unauthenticated() -> anyhow::Result<()> {
    use jsonwebtoken::{EncodingKey, Header};
    const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
    let server = Server::start(&[("ETTER_AUTH__HS256_SECRET", SECRET), ("ETTER_AUTH__LEEWAY", "0s")]).await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({
        "sub": "jane", "role": "operator", "companies": [acme()], "iss": "etter", "aud": "etter-pipeline",
        "exp": now - 3600, "iat": now - 7200,
    });
    let expired = jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes()))?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let status = api
        .push(with_token(push_request("Claims Adjuster", &doc_uri(&server, "jd.pdf")), &expired)?)
        .await
        .err()
        .context("an expired token must be refused")?;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{}", status.message());
    Ok(())
}

/// Without Temporal, pushes are accepted and stay queued (heartbeats keep showing the queue
/// position), the pipeline service stays SERVING and the Temporal entry is NOT_SERVING.
#[tokio::test]
async fn with_temporal_unreachable_pushes_queue_and_health_says_so() -> anyhow::Result<()> {
    let server = server_without_temporal().await?;
    let token = server.token(&["--company", &acme(), "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let run = api.push(with_token(push_request("Claims Adjuster", &doc_uri(&server, "jd.pdf")), &token)?).await?;
    let run = run.into_inner();
    assert_eq!(run.status(), pb::RoleStatus::Queued);

    assert_eq!(health_of(&server, SERVICE).await?, ServingStatus::Serving);
    assert_eq!(health_of(&server, "").await?, ServingStatus::Serving);
    assert_eq!(health_of(&server, TEMPORAL_HEALTH).await?, ServingStatus::NotServing);

    // Heartbeats pace the check: across several of them (each after the dispatcher's retries had
    // time to run) the run is still first in the queue, and no event moved it.
    let watch = WatchStatusRequest { scope: Some(Scope::WorkflowId(run.workflow_id.clone())), ..Default::default() };
    let mut stream = api.watch_status(with_token(watch, &token)?).await?.into_inner();
    let mut heartbeats = 0;
    while heartbeats < 5 {
        match next(&mut stream).await?.context("the stream ended while the run is queued")? {
            Kind::Snapshot(s) => assert_eq!(s.runs.first().map(|r| r.status()), Some(pb::RoleStatus::Queued)),
            Kind::Heartbeat(h) => {
                heartbeats += 1;
                let queue: Vec<(String, i32)> =
                    h.queue.into_iter().map(|q| (q.workflow_id, q.position_in_queue)).collect();
                assert_eq!(queue, [(run.workflow_id.clone(), 1)]);
            }
            Kind::Event(e) => bail!("no event may happen while Temporal is down: {e:?}"),
        }
    }
    let status = status_of(&mut api, &token, Target::WorkflowId(run.workflow_id.clone())).await?;
    assert_eq!(status.status(), pb::RoleStatus::Queued);
    Ok(())
}

async fn next(stream: &mut Streaming<pb::WatchStatusResponse>) -> anyhow::Result<Option<Kind>> {
    let message = tokio::time::timeout(DEADLINE, stream.message()).await.context("no watch message in time")??;
    Ok(match message {
        Some(m) => Some(m.kind.context("a watch message without a kind")?),
        None => None,
    })
}

/// Reads a stream to its end (or until `stop` says so), returning the event sequences.
async fn events_until(
    stream: &mut Streaming<pb::WatchStatusResponse>,
    mut stop: impl FnMut(&pb::RunEvent) -> bool,
) -> anyhow::Result<Vec<pb::RunEvent>> {
    let mut events = Vec::new();
    while let Some(kind) = next(stream).await? {
        match kind {
            Kind::Event(event) => {
                let done = stop(&event);
                events.push(event);
                if done {
                    break;
                }
            }
            Kind::Heartbeat(_) => {}
            Kind::Snapshot(s) => bail!("a snapshot in the middle of a stream: {s:?}"),
        }
    }
    Ok(events)
}

/// The worker's part of a run of the critical path, written the way the worker writes it.
async fn play_worker(store: &dyn RunStore, run: &WorkflowId, steps: &[&str]) -> anyhow::Result<()> {
    for step in steps {
        store.record_step(run, StepTransition::new(*step, 1, StepStatus::Running)).await?;
        store.record_step(run, StepTransition::new(*step, 1, StepStatus::Completed)).await?;
    }
    Ok(())
}

#[tokio::test]
async fn watch_sends_the_snapshot_then_every_event_and_resumes_after_a_sequence() -> anyhow::Result<()> {
    // Temporal unreachable: the test moves the run itself, so the events are exactly its own.
    let closed = closed_port_url()?;
    let server = Server::start(&[("ETTER_TEMPORAL__ADDRESS", closed.as_str())]).await?;
    let token = server.token(&["--company", &acme(), "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let pushed = api.push(with_token(push_request("Claims Adjuster", &doc_uri(&server, "jd.pdf")), &token)?).await?;
    let wf = WorkflowId::parse(&pushed.into_inner().workflow_id)?;
    let store = etter_store::connect(&StoreLocation::Sqlite(server.data_dir.join("etter.db"))).await?;

    let watch = |after: u64| WatchStatusRequest {
        scope: Some(Scope::WorkflowId(wf.to_string())),
        after_sequence: after,
        resume_token: String::new(),
    };
    let mut continuous = api.watch_status(with_token(watch(0), &token)?).await?.into_inner();
    let mut interrupted = api.watch_status(with_token(watch(0), &token)?).await?.into_inner();
    for stream in [&mut continuous, &mut interrupted] {
        match next(stream).await?.context("no first message")? {
            Kind::Snapshot(s) => {
                ensure!(s.last, "a one-run snapshot is one message");
                let run = s.runs.first().context("an empty snapshot")?;
                assert_eq!((run.status(), run.sequence), (pb::RoleStatus::Queued, 1));
            }
            other => bail!("the first message must be the snapshot, got {other:?}"),
        }
    }

    store.transition(&wf, Transition::to(RunState::Processing, "dispatched by the test")).await?;
    play_worker(store.as_ref(), &wf, &["role_setup"]).await?;
    // The interrupted watcher leaves after sequence 3 (role_setup running).
    let seen_before = events_until(&mut interrupted, |e| e.sequence == 3).await?;
    drop(interrupted);
    play_worker(store.as_ref(), &wf, &["document_linking", "ai_assessment", "finalize"]).await?;
    store.transition(&wf, Transition::to(RunState::Ready, "finalized by the test")).await?;

    let mut resumed = api.watch_status(with_token(watch(3), &token)?).await?.into_inner();
    let seen_after = events_until(&mut resumed, |_| false).await?;
    let all = events_until(&mut continuous, |_| false).await?;

    let sequences = |events: &[pb::RunEvent]| events.iter().map(|e| e.sequence).collect::<Vec<_>>();
    // 1 = queued (in the snapshot), 2 = processing, 3..=10 = four steps × (running, completed), 11 = ready.
    assert_eq!(sequences(&all), (2..=11).collect::<Vec<u64>>());
    assert_eq!(sequences(&seen_before), [2, 3]);
    assert_eq!(sequences(&seen_after), (4..=11).collect::<Vec<u64>>(), "resume gives exactly the missing events");
    let last = all.last().context("no events")?;
    match &last.change {
        Some(pb::run_event::Change::StatusChange(c)) => {
            assert_eq!((c.previous_status(), c.status()), (pb::RoleStatus::Processing, pb::RoleStatus::Ready));
        }
        other => bail!("the last event must be the READY transition, got {other:?}"),
    }
    let step = all.get(1).and_then(|e| e.change.clone());
    assert!(
        matches!(&step, Some(pb::run_event::Change::StepChange(s)) if s.step == "role_setup" && s.status() == pb::StepState::Running),
        "{step:?}"
    );
    let final_status = last.run.as_ref().context("an event without the run's status")?;
    let progress = final_status.progress.as_ref().context("no progress")?;
    assert_eq!((progress.current, progress.total), (4, 4));

    // A watch of an ended run: the snapshot, then the stream ends.
    let mut ended = api.watch_status(with_token(watch(0), &token)?).await?.into_inner();
    assert!(matches!(next(&mut ended).await?, Some(Kind::Snapshot(_))));
    assert!(next(&mut ended).await?.is_none(), "the stream of an ended run ends after its snapshot");
    store.close().await;
    Ok(())
}

/// A fresh PostgreSQL database for one test, dropped afterwards (best effort).
struct ScratchDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    async fn create() -> anyhow::Result<Self> {
        use sqlx::Connection as _;
        let admin_url = env("ETTER_TEST__POSTGRES_ADMIN_URL")?;
        let name = format!("etter_server_test_{}", unique_suffix().replace('-', "_"));
        let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await?;
        admin.close().await?;
        let mut url = url::Url::parse(&admin_url)?;
        url.set_path(&format!("/{name}"));
        Ok(Self { admin_url, name, url: url.to_string() })
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        use sqlx::Connection as _;
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
            .execute(&mut admin)
            .await?;
        Ok(())
    }
}

async fn temporal_client() -> anyhow::Result<Client> {
    let url = Url::parse(&env("ETTER_TEMPORAL__ADDRESS")?)?;
    let options = ConnectionOptions::new(url).identity("etter-server-tests".to_owned()).build();
    let connection = tokio::time::timeout(DEADLINE, Connection::connect(options)).await??;
    Ok(Client::new(connection, ClientOptions::new(env("ETTER_TEMPORAL__NAMESPACE")?).build())?)
}

/// The dispatcher starts the run's workflow in Temporal once, by name, on the configured task
/// queue, and marks the run PROCESSING; when the workflow is terminated without recording an
/// outcome, the reconciler fails the run with an error that says so.
#[tokio::test]
async fn the_dispatcher_starts_each_run_once_and_the_reconciler_closes_terminated_ones() -> anyhow::Result<()> {
    let database = ScratchDatabase::create().await?;
    let task_queue = format!("etter-server-dispatch-{}", unique_suffix());
    let server = Server::start(&[
        ("ETTER_STORE__URL", database.url.as_str()),
        ("ETTER_TEMPORAL__TASK_QUEUE", task_queue.as_str()),
    ])
    .await?;
    let outcome = dispatch_scenario(&server, &database, &task_queue).await;
    drop(server);
    database.drop_database().await?;
    outcome
}

async fn dispatch_scenario(server: &Server, database: &ScratchDatabase, task_queue: &str) -> anyhow::Result<()> {
    let token = server.token(&["--company", &acme(), "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    // Unique role per run of the suite: the dev server keeps closed workflow ids reserved.
    let role = format!("Adjuster {}", unique_suffix().replace('-', " "));
    let pushed = api.push(with_token(push_request(&role, &doc_uri(server, "jd.pdf")), &token)?).await?.into_inner();

    let probe_api = api.clone();
    let probe_token = token.clone();
    let wf = pushed.workflow_id.clone();
    let run = eventually("the run to become PROCESSING", || {
        let (mut api, token, wf) = (probe_api.clone(), probe_token.clone(), wf.clone());
        async move {
            let run = status_of(&mut api, &token, Target::WorkflowId(wf)).await?;
            Ok((run.status() == pb::RoleStatus::Processing).then_some(run))
        }
    })
    .await?;
    assert!(run.start_time.is_some());
    // Health follows its own periodic check, which may have last looked before Temporal answered
    // (a dev server that has just started): it must say SERVING by its next look.
    eventually("the Temporal health entry to say SERVING", || async {
        Ok((health_of(server, TEMPORAL_HEALTH).await? == ServingStatus::Serving).then_some(()))
    })
    .await?;

    let temporal = temporal_client().await?;
    let handle = temporal.get_workflow_handle::<UntypedWorkflow>(pushed.workflow_id.clone());
    let described = handle.describe(WorkflowDescribeOptions::default()).await?;
    assert_eq!(described.workflow_type(), etter_core::workflow::ROLE_ONBOARDING_WORKFLOW);
    assert_eq!(described.status(), WorkflowExecutionStatus::Running);
    assert_eq!(described.task_queue(), task_queue);
    let query = format!("WorkflowId = '{}'", pushed.workflow_id);
    let executions = eventually("the workflow to be visible", || {
        let (temporal, query) = (temporal.clone(), query.clone());
        async move {
            let count = temporal.count_workflows(query, WorkflowCountOptions::default()).await?.count();
            Ok((count > 0).then_some(count))
        }
    })
    .await?;
    assert_eq!(executions, 1, "one execution of the run's workflow");

    // Exactly one dispatch: one QUEUED → PROCESSING event.
    let store = etter_store::connect(&StoreLocation::Postgres(database.url.clone())).await?;
    let id = WorkflowId::parse(&pushed.workflow_id)?;
    let events = store.events_after(&id, 0, 100).await?;
    let dispatched = events
        .iter()
        .filter(|e| matches!(&e.change, etter_store::Change::Status { status: RunState::Processing, .. }))
        .count();
    assert_eq!(dispatched, 1, "{events:?}");

    handle.terminate(WorkflowTerminateOptions::builder().reason("terminated by the test".to_owned()).build()).await?;
    let failed = eventually("the reconciler to fail the run", || {
        let (mut api, token, wf) = (probe_api.clone(), probe_token.clone(), pushed.workflow_id.clone());
        async move {
            let run = status_of(&mut api, &token, Target::WorkflowId(wf)).await?;
            Ok((run.status() == pb::RoleStatus::Failed).then_some(run))
        }
    })
    .await?;
    let error = failed.error.context("a failed run carries its error")?;
    assert_eq!(error.code, "WORKFLOW_TERMINATED");
    assert!(error.message.contains(&pushed.workflow_id), "{}", error.message);
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn estimates_follow_what_steps_measurably_cost() -> anyhow::Result<()> {
    // A first server takes a push; the test plays the worker, with the assessment using 1,234 tokens.
    let closed = closed_port_url()?;
    let env = [("ETTER_TEMPORAL__ADDRESS", closed.as_str())];
    let server = Server::start(&env).await?;
    let data_dir = server.data_dir.clone();
    let token = server.token(&["--company", &acme(), "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let first = api.push(with_token(push_request("Measured Role", &doc_uri(&server, "jd.pdf")), &token)?).await?;
    let default_tokens = first.get_ref().token_estimate.as_ref().map_or(0, |t| t.total_tokens);
    ensure!(default_tokens == etter_server::config::DispatchConfig::default().estimate_llm_step_tokens, "{first:?}");
    let wf = WorkflowId::parse(&first.into_inner().workflow_id)?;
    let store = etter_store::connect(&StoreLocation::Sqlite(data_dir.join("etter.db"))).await?;
    store.transition(&wf, Transition::to(RunState::Processing, "dispatched by the test")).await?;
    play_worker(store.as_ref(), &wf, &["role_setup", "document_linking"]).await?;
    store.record_step(&wf, StepTransition::new("ai_assessment", 1, StepStatus::Running)).await?;
    let measured = StepTransition {
        tokens: Some(etter_store::TokenCount { input: 1_000, output: 234 }),
        ..StepTransition::new("ai_assessment", 1, StepStatus::Completed)
    };
    store.record_step(&wf, measured).await?;
    store.close().await;
    drop(api);
    drop(server);

    // A server started on the same store estimates with the measurement.
    let server = Server::start_in(data_dir, &env).await?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let second = api.push(with_token(push_request("Measured Role Two", &doc_uri(&server, "jd.pdf")), &token)?).await?;
    let tokens = second.get_ref().token_estimate.as_ref().map_or(0, |t| t.total_tokens);
    ensure!(tokens == 1_234, "the only LLM step of a critical-path plan was measured at 1,234 tokens: {second:?}");
    Ok(())
}
