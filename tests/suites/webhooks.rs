//! `notify_on_complete` end to end: the company's webhook receiver — a local HTTP server
//! — gets one signed event per finished run that asked for it, also when it was down at first.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{Document, DocumentType, PushRequest, RoleStatus, RunOptions};
use etter_tests::stack::{Stack, wait_final};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

const SECRET: &str = "webhook-secret-for-the-e2e-test";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Serves `listener`: records each request and answers 204.
async fn receive(listener: tokio::net::TcpListener, received: Arc<Mutex<Vec<Received>>>) {
    while let Ok((stream, _)) = listener.accept().await {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            let mut stream = BufReader::new(stream);
            let mut headers = Vec::new();
            let mut line = String::new();
            // Request line, then headers up to the blank line.
            if stream.read_line(&mut line).await.is_err() {
                return;
            }
            loop {
                line.clear();
                if stream.read_line(&mut line).await.unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    headers.push((k.trim().to_owned(), v.trim().to_owned()));
                }
            }
            let length = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            if stream.read_exact(&mut body).await.is_err() {
                return;
            }
            if let Ok(mut all) = received.lock() {
                all.push(Received { headers, body });
            }
            let _ = stream.get_mut().write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_finished_run_that_asked_is_announced_once_signed_even_after_the_receiver_was_down() -> Result<()> {
    let stack = Stack::new("webhooks").await?;
    // The receiver's address, not listening yet: it is down while the runs finish.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let companies = stack.docs.with_file_name("companies.toml");
    std::fs::write(
        &companies,
        format!(
            "[companies.{}]\nwebhook_url = \"http://127.0.0.1:{port}/etter/events\"\nwebhook_secret = \"{SECRET}\"\n",
            stack.company
        ),
    )?;
    let companies = companies.display().to_string();
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
        let request = PushRequest {
            company_id: stack.company.clone(),
            role_name: format!("Announced Engineer {i}"),
            documents: vec![Document { r#type: DocumentType::JobDescription as i32, uri: jd.clone() }],
            draup_role_id: format!("draup-role-{i}"),
            options: Some(RunOptions {
                skip_enhancement_workflows: true,
                notify_on_complete: notify,
                ..Default::default()
            }),
            request_id: String::new(),
            validate_only: false,
        };
        let pushed = client.push(request).await?.into_inner();
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
        let failed: BTreeSet<String> = server
            .log_text()?
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["fields"]["message"].as_str().is_some_and(|m| m.starts_with("webhook delivery failed")))
            .filter_map(|line| line["fields"]["run"].as_str().map(str::to_owned))
            .collect();
        if failed.is_superset(&announced) {
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "deliveries failed so far: {failed:?} of {announced:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    tokio::spawn(receive(listener, Arc::clone(&received)));

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
        ensure!(body["type"] == "run.finished" && body["run"]["status"] == "READY", "{body}");
        ensure!(body["run"]["company_id"] == stack.company.as_str(), "{body}");
        ensure!(Some(body["id"].as_str().unwrap_or_default()) == event.header("Etter-Event-Id"), "{body}");
        ids.insert(body["id"].as_str().unwrap_or_default().to_owned());
        runs_announced.insert(body["run"]["workflow_id"].as_str().unwrap_or_default().to_owned());
    }
    ensure!(ids.len() == received.len(), "event ids are distinct");
    ensure!(runs_announced == announced, "exactly the runs that asked: {runs_announced:?}");

    // The outbox says each event failed while the receiver was down, then was delivered.
    let url = stack.env().iter().find(|(k, _)| k == "ETTER_STORE__URL").map(|(_, v)| v.clone()).context("store")?;
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await?;
    let rows: Vec<(i64, bool, Option<String>)> =
        sqlx::query_as("SELECT attempts, delivered_time IS NOT NULL, last_error FROM notifications ORDER BY id")
            .fetch_all(&mut db)
            .await?;
    ensure!(rows.len() == announced.len(), "{rows:?}");
    for (attempts, delivered, last_error) in &rows {
        ensure!(*delivered && *attempts >= 2, "delivered after failing first: {rows:?}");
        ensure!(last_error.as_deref().is_some_and(|e| e.contains("cannot reach")), "{rows:?}");
    }

    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}
