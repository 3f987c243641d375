//! Every hop on TLS at once: clients to etter-server with client certificates required,
//! etter-server and etter-worker to the Temporal cluster over mutual TLS, to PostgreSQL with
//! `sslmode=verify-full`, to Redis over `rediss://`, to Neo4j over `bolt+s://`, and to an S3 store
//! over HTTPS; all with the project CA that `scripts/services up` makes. A push reaches READY,
//! and the worker's `/metrics` answers a scraper with a client certificate over TLS.
//! And the cluster's API key: without it, both binaries say which setting is missing.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{Document, DocumentType, PushRequest, RoleStatus, RunOptions};
use etter_test_certs::Issued;
use etter_tests::moto::Moto;
use etter_tests::service_setting;
use etter_tests::stack::{ClientTls, ServingStatus, Stack, Temporal, run_status, wait_final};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const BUCKET: &str = "etter-tls-docs";

/// The project CA's files.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

impl Pki {
    fn from_env() -> Result<Self> {
        let setting = |key| service_setting(key, "postgres");
        Ok(Self {
            ca: setting("ETTER_TEST__TLS_CA")?,
            server: (setting("ETTER_TEST__TLS_SERVER_CERT")?, setting("ETTER_TEST__TLS_SERVER_KEY")?),
            client: (setting("ETTER_TEST__TLS_CLIENT_CERT")?, setting("ETTER_TEST__TLS_CLIENT_KEY")?),
        })
    }
}

/// `store.url` for the stack's own database over TLS (`sslmode=verify-full` with the CA).
fn postgres_tls_url(stack: &Stack) -> Result<String> {
    let tls = service_setting("ETTER_TEST__POSTGRES_TLS_URL", "postgres")?;
    let database = stack.database().context("the PostgreSQL profile has a database")?;
    let (before, query) = tls.split_once('?').context("the TLS URL carries its sslmode")?;
    let (server, _) = before.rsplit_once('/').context("the TLS URL names a database")?;
    Ok(format!("{server}/{database}?{query}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_hop_on_tls_a_push_reaches_ready() -> Result<()> {
    let pki = Pki::from_env()?;
    let moto = Moto::start_tls(BUCKET, 1, pki.server.0.as_ref(), pki.server.1.as_ref()).await?;
    let mut stack = Stack::new("tls").await?;
    let store = postgres_tls_url(&stack)?;
    let hops = [
        ("ETTER_STORE__URL", store),
        ("ETTER_REDIS__URL", service_setting("ETTER_TEST__REDIS_TLS_URL", "redis")?),
        ("ETTER_REDIS__TLS__CA_FILE", pki.ca.clone()),
        ("ETTER_GRAPH__URI", service_setting("ETTER_TEST__GRAPH_TLS_URI", "neo4j")?),
        ("ETTER_GRAPH__CA_FILE", pki.ca.clone()),
        ("ETTER_DOCUMENTS__S3__CA_FILE", pki.ca.clone()),
        ("ETTER_SERVER__TLS__CERT_FILE", pki.server.0.clone()),
        ("ETTER_SERVER__TLS__KEY_FILE", pki.server.1.clone()),
        ("ETTER_SERVER__TLS__CLIENT_CA_FILE", pki.ca.clone()),
        ("ETTER_WORKER__METRICS_TLS__CERT_FILE", pki.server.0.clone()),
        ("ETTER_WORKER__METRICS_TLS__KEY_FILE", pki.server.1.clone()),
        ("ETTER_WORKER__METRICS_TLS__CLIENT_CA_FILE", pki.ca.clone()),
    ];
    for (key, value) in moto.settings().into_iter().chain(hops).chain(Temporal::Cluster.settings()?) {
        stack.set(key, value);
    }
    ensure!(
        stack.env().iter().any(|(k, v)| k == "ETTER_DOCUMENTS__S3__ENDPOINT" && v.starts_with("https://")),
        "the S3 store is reached over HTTPS"
    );
    stack.use_client_tls(ClientTls {
        ca: pki.ca.clone().into(),
        identity: Some((pki.client.0.clone().into(), pki.client.1.clone().into())),
    });

    let server = stack.start_server().await?;
    let worker = stack.start_worker(&[]).await?;
    for service in ["etter.pipeline.v1.PipelineService", "etter.temporal", "etter.graph", "etter.redis", "etter.worker"]
    {
        stack.wait_health(&server, service, ServingStatus::Serving, Duration::from_secs(60)).await?;
    }
    let mut client = stack.client(&server).await?;
    let pushed = client
        .push(PushRequest {
            company_id: stack.company.clone(),
            role_name: "Secure Analyst".to_owned(),
            documents: vec![Document {
                r#type: DocumentType::JobDescription as i32,
                uri: format!("s3://{BUCKET}/roles/0.txt"),
                ..Default::default()
            }],
            draup_role_id: "draup-role-tls".to_owned(),
            options: Some(RunOptions { skip_enhancement_workflows: true, ..Default::default() }),
            request_id: String::new(),
            validate_only: false,
        })
        .await?
        .into_inner();
    let end = wait_final(&mut client, &pushed.workflow_id, Duration::from_secs(180)).await?;
    ensure!(end == RoleStatus::Ready, "{} ended {end:?}", pushed.workflow_id);

    // The worker's /metrics, over TLS to a scraper with a client certificate, counts the run's steps.
    let scraper = Issued { cert_file: pki.client.0.clone().into(), key_file: pki.client.1.clone().into() };
    let config = etter_test_certs::client_config(&std::fs::read_to_string(&pki.ca)?, Some(&scraper), &["http/1.1"])?;
    let mut tls = etter_test_certs::connect(&worker.field("metrics_addr")?, "localhost", config).await?;
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_string(&mut answer)).await??;
    ensure!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("etter_worker_step_attempts_total"),
        "/metrics over TLS: {answer}"
    );

    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}

/// A cluster that authorizes calls by API key, and binaries configured without one: the worker
/// refuses to start and the server reports Temporal unhealthy, each naming `temporal.api_key`;
/// a push accepted meanwhile waits, and runs once the key is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_clusters_api_key_both_binaries_name_the_setting_and_nothing_accepted_is_lost() -> Result<()> {
    let mut stack = Stack::new("api-key").await?;
    let settings = Temporal::Cluster.settings()?;
    for (key, value) in &settings {
        stack.set(key, value.clone());
    }
    stack.unset("ETTER_TEMPORAL__API_KEY");

    // Without a backtrace, the error is the end of the log the failed start shows.
    let refused =
        stack.start_worker(&[("RUST_BACKTRACE", "0")]).await.err().context("a worker without the API key started")?;
    ensure!(format!("{refused:#}").contains("set temporal.api_key"), "{refused:#}");

    let server = stack.start_server().await?;
    // Health says NOT_SERVING until the first look at Temporal: wait for that look's verdict.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !server.log_text()?.contains("set temporal.api_key") {
        ensure!(tokio::time::Instant::now() < deadline, "the server's log never named temporal.api_key");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.wait_health(&server, "etter.temporal", ServingStatus::NotServing, Duration::from_secs(5)).await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;
    let pushed = client
        .push(PushRequest {
            company_id: stack.company.clone(),
            role_name: "Patient Analyst".to_owned(),
            documents: vec![Document { r#type: DocumentType::JobDescription as i32, uri: jd, ..Default::default() }],
            draup_role_id: "draup-role-api-key".to_owned(),
            options: Some(RunOptions { skip_enhancement_workflows: true, ..Default::default() }),
            request_id: String::new(),
            validate_only: false,
        })
        .await?
        .into_inner();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = run_status(&mut client, &pushed.workflow_id).await?;
    ensure!(RoleStatus::try_from(waiting.status)? == RoleStatus::Queued, "{waiting:#?}");
    server.stop().await?;

    let (key, value) = settings.iter().find(|(key, _)| *key == "ETTER_TEMPORAL__API_KEY").context("the key")?;
    stack.set(key, value.clone());
    let server = stack.start_server().await?;
    let worker = stack.start_worker(&[]).await?;
    let mut client = stack.client(&server).await?;
    let end = wait_final(&mut client, &pushed.workflow_id, Duration::from_secs(180)).await?;
    ensure!(end == RoleStatus::Ready, "{} ended {end:?}", pushed.workflow_id);
    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}
