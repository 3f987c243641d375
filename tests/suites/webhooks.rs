//! `notify_on_complete` end to end: the company's webhook receiver — a local HTTP server
//! — gets one signed event per finished run that asked for it, also when it was down at first,
//! and over HTTPS with a certificate of a private CA once `server.webhook_ca_file` names it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{Document, DocumentType, PushRequest, RoleStatus, RunOptions};
use etter_test_certs::{Ca, LOOPBACK_NAMES, Validity};
use etter_tests::stack::{Stack, wait_final};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

const SECRET: &str = "webhook-secret-for-the-e2e-test";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A company's webhook receiver on `listener` (over TLS with `tls`): records each request to
/// `/etter/events` and answers 204.
fn receive(
    listener: tokio::net::TcpListener,
    tls: Option<etter_tls::Acceptor>,
    received: Arc<Mutex<Vec<Received>>>,
) -> Result<()> {
    let app = axum::Router::new().route(
        "/etter/events",
        axum::routing::post(move |headers: http::HeaderMap, body: axum::body::Bytes| async move {
            if let Ok(mut all) = received.lock() {
                all.push(Received { headers, body: body.to_vec() });
            }
            http::StatusCode::NO_CONTENT
        }),
    );
    let incoming = etter_tls::Incoming::new(listener, tls, "webhook-receiver")?;
    tokio::spawn(async move { axum::serve(incoming, app).await });
    Ok(())
}

/// Checks `event`'s signature, age and headers; answers its body.
fn verified(event: &Received) -> Result<serde_json::Value> {
    let timestamp = event.header("Etter-Timestamp").context("no timestamp")?;
    let signature = event.header("Etter-Signature").context("no signature")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes())?;
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&event.body);
    let expected = hex::encode(mac.finalize().into_bytes());
    ensure!(signature == format!("v1={expected}"), "a bad signature: {signature}");
    let age = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64
        - timestamp.parse::<i64>()?;
    ensure!((0..60).contains(&age), "signed {age} s ago");
    ensure!(event.header("Content-Type") == Some("application/json"), "{:?}", event.headers);
    let body: serde_json::Value = serde_json::from_slice(&event.body)?;
    ensure!(Some(body["id"].as_str().unwrap_or_default()) == event.header("Etter-Event-Id"), "{body}");
    Ok(body)
}

/// Writes the companies file giving the stack's company the webhook `url`; answers its path.
fn companies_file(stack: &Stack, url: &str) -> Result<String> {
    let companies = stack.docs.with_file_name("companies.toml");
    std::fs::write(
        &companies,
        format!("[companies.{}]\nwebhook_url = \"{url}\"\nwebhook_secret = \"{SECRET}\"\n", stack.company),
    )?;
    Ok(companies.display().to_string())
}

/// The messages of the server's failed deliveries (its log is JSON), by run.
fn failed_deliveries(server: &etter_tests::stack::Process) -> Result<Vec<(String, String)>> {
    Ok(server
        .log_text()?
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["fields"]["message"].as_str().is_some_and(|m| m.starts_with("webhook delivery failed")))
        .filter_map(|line| {
            let run = line["fields"]["run"].as_str()?.to_owned();
            Some((run, line["fields"]["error"].as_str().unwrap_or_default().to_owned()))
        })
        .collect())
}

/// The outbox's rows: attempts, whether delivered, the last error.
async fn outbox(stack: &Stack) -> Result<Vec<(i64, bool, Option<String>)>> {
    let url = stack.env().iter().find(|(k, _)| k == "ETTER_STORE__URL").map(|(_, v)| v.clone()).context("store")?;
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await?;
    Ok(sqlx::query_as("SELECT attempts, delivered_time IS NOT NULL, last_error FROM notifications ORDER BY id")
        .fetch_all(&mut db)
        .await?)
}

fn push(stack: &Stack, i: usize, jd: &str, notify: bool) -> PushRequest {
    PushRequest {
        company_id: stack.company.clone(),
        role_name: format!("Announced Engineer {i}"),
        documents: vec![Document {
            r#type: DocumentType::JobDescription as i32,
            uri: jd.to_owned(),
            ..Default::default()
        }],
        draup_role_id: format!("draup-role-{i}"),
        options: Some(RunOptions {
            skip_enhancement_workflows: true,
            notify_on_complete: notify,
            ..Default::default()
        }),
        request_id: String::new(),
        validate_only: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_finished_run_that_asked_is_announced_once_signed_even_after_the_receiver_was_down() -> Result<()> {
    let stack = Stack::new("webhooks").await?;
    // The receiver's address, not listening yet: it is down while the runs finish.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let companies = companies_file(&stack, &format!("http://127.0.0.1:{port}/etter/events"))?;
    let server = stack
        .start_server_with(&[
            ("ETTER_SERVER__COMPANIES_FILE", companies.as_str()),
            ("ETTER_SERVER__WEBHOOK_RETRY_INITIAL", "300ms"),
            ("ETTER_SERVER__WEBHOOK_RETRY_MAX", "1s"),
            // Read below: which deliveries failed.
            ("ETTER_LOG__FORMAT", "json"),
        ])
        .await?;
    let worker = stack.start_worker(&[]).await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;

    let mut announced = BTreeSet::new();
    let mut runs = Vec::new();
    for (i, notify) in [(0, true), (1, true), (2, false), (3, true)] {
        let pushed = client.push(push(&stack, i, &jd, notify)).await?.into_inner();
        if notify {
            announced.insert(pushed.workflow_id.clone());
        }
        runs.push(pushed.workflow_id);
    }
    for run in &runs {
        ensure!(wait_final(&mut client, run, Duration::from_secs(180)).await? == RoleStatus::Ready, "{run}");
    }
    // Wait until every announced run's delivery has failed against the closed port at least
    // once (the server logs each failed attempt), then bring the receiver up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let failed: BTreeSet<String> = failed_deliveries(&server)?.into_iter().map(|(run, _)| run).collect();
        if failed.is_superset(&announced) {
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "deliveries failed so far: {failed:?} of {announced:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    receive(listener, None, Arc::clone(&received))?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received.lock().map(|r| r.len()).unwrap_or(0) < announced.len() {
        ensure!(tokio::time::Instant::now() < deadline, "the receiver got {:?}", received.lock().map(|r| r.len()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing more arrives: one event per run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = received.lock().map(|r| r.clone()).unwrap_or_default();
    ensure!(received.len() == announced.len(), "{} events for {} runs", received.len(), announced.len());

    let mut ids = BTreeSet::new();
    let mut runs_announced = BTreeSet::new();
    for event in &received {
        let body = verified(event)?;
        ensure!(body["type"] == "run.finished" && body["run"]["status"] == "READY", "{body}");
        ensure!(body["run"]["company_id"] == stack.company.as_str(), "{body}");
        ids.insert(body["id"].as_str().unwrap_or_default().to_owned());
        runs_announced.insert(body["run"]["workflow_id"].as_str().unwrap_or_default().to_owned());
    }
    ensure!(ids.len() == received.len(), "event ids are distinct");
    ensure!(runs_announced == announced, "exactly the runs that asked: {runs_announced:?}");

    // The outbox says each event failed while the receiver was down, then was delivered.
    let rows = outbox(&stack).await?;
    ensure!(rows.len() == announced.len(), "{rows:?}");
    for (attempts, delivered, last_error) in &rows {
        ensure!(*delivered && *attempts >= 2, "delivered after failing first: {rows:?}");
        ensure!(last_error.as_deref().is_some_and(|e| e.contains("cannot reach")), "{rows:?}");
    }

    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}

/// A receiver over HTTPS with a certificate of the company's own CA: until
/// `server.webhook_ca_file` names that CA, each delivery fails saying so, and the event waits in
/// the outbox; once it does, the event is delivered, signed, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_behind_a_private_ca_gets_its_event_once_the_ca_is_configured() -> Result<()> {
    let stack = Stack::new("webhooks-tls").await?;
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("webhook receiver CA")?;
    let issued = ca.server(dir.path(), "receiver", LOOPBACK_NAMES, Validity::Current)?;
    let ca_file = ca.write(dir.path(), "ca.pem")?;
    let tls = etter_config::tls::ServerTls {
        cert_file: issued.cert_file,
        key_file: issued.key_file,
        ..etter_config::tls::ServerTls::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://localhost:{}/etter/events", listener.local_addr()?.port());
    let received = Arc::new(Mutex::new(Vec::new()));
    receive(listener, etter_tls::Acceptor::new(&tls, "test.tls")?, Arc::clone(&received))?;
    let companies = companies_file(&stack, &url)?;
    let settings = [
        ("ETTER_SERVER__COMPANIES_FILE", companies.as_str()),
        ("ETTER_SERVER__WEBHOOK_RETRY_INITIAL", "300ms"),
        ("ETTER_SERVER__WEBHOOK_RETRY_MAX", "1s"),
        ("ETTER_LOG__FORMAT", "json"),
    ];

    // Without the CA: the receiver's certificate is not trusted, and the log says what to set.
    let server = stack.start_server_with(&settings).await?;
    let worker = stack.start_worker(&[]).await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;
    let run = client.push(push(&stack, 0, &jd, true)).await?.into_inner().workflow_id;
    ensure!(wait_final(&mut client, &run, Duration::from_secs(180)).await? == RoleStatus::Ready, "{run}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let error = loop {
        if let Some((_, error)) = failed_deliveries(&server)?.into_iter().find(|(r, _)| *r == run) {
            break error;
        }
        ensure!(tokio::time::Instant::now() < deadline, "no failed delivery logged for {run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(error.contains("server.webhook_ca_file"), "the failure names the setting: {error}");
    ensure!(received.lock().map(|r| r.is_empty()).unwrap_or(false), "nothing reached the receiver");
    server.stop().await?;

    // With it: the event waiting in the outbox is delivered, once.
    let ca_file = ca_file.display().to_string();
    let with_ca = [settings.as_slice(), &[("ETTER_SERVER__WEBHOOK_CA_FILE", ca_file.as_str())]].concat();
    let server = stack.start_server_with(&with_ca).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received.lock().map(|r| r.is_empty()).unwrap_or(true) {
        ensure!(tokio::time::Instant::now() < deadline, "the event never reached the receiver");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = received.lock().map(|r| r.clone()).unwrap_or_default();
    ensure!(received.len() == 1, "{} events for one run", received.len());
    let body = verified(&received[0])?;
    ensure!(body["run"]["workflow_id"] == run.as_str() && body["run"]["status"] == "READY", "{body}");
    let rows = outbox(&stack).await?;
    ensure!(matches!(rows.as_slice(), [(attempts, true, _)] if *attempts >= 2), "{rows:?}");

    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}
