//! The server over TLS with client certificates required: gRPC, grpc-web, the console and
//! `/metrics` on HTTPS, and the clients it refuses.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use etter_test_certs::{self as certs, Ca, Issued, LOOPBACK_NAMES, Validity};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::Server;

/// Certificates of one test: the server's CA, the server certificate, the CA of clients and a
/// client certificate.
struct Pki {
    _dir: tempfile::TempDir,
    ca: Ca,
    server: Issued,
    client_ca_file: std::path::PathBuf,
    client: Issued,
    clients: Ca,
    dir: std::path::PathBuf,
}

impl Pki {
    fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_path_buf();
        let ca = Ca::new("etter server CA")?;
        let server = ca.server(&path, "server", LOOPBACK_NAMES, Validity::Current)?;
        let clients = Ca::new("etter clients CA")?;
        let client_ca_file = clients.write(&path, "clients.pem")?;
        let client = clients.client(&path, "client", "csm-console", Validity::Current)?;
        Ok(Self { _dir: dir, ca, server, client_ca_file, client, clients, dir: path })
    }

    async fn start(&self) -> anyhow::Result<Server> {
        self.start_with(&[]).await
    }

    async fn start_with(&self, extra: &[(&str, &str)]) -> anyhow::Result<Server> {
        let cert = self.server.cert_file.to_string_lossy();
        let key = self.server.key_file.to_string_lossy();
        let cas = self.client_ca_file.to_string_lossy();
        let mut env = vec![
            ("ETTER_SERVER__TLS__CERT_FILE", cert.as_ref()),
            ("ETTER_SERVER__TLS__KEY_FILE", key.as_ref()),
            ("ETTER_SERVER__TLS__CLIENT_CA_FILE", cas.as_ref()),
            ("ETTER_SERVER__TLS__RELOAD_INTERVAL", "100ms"),
        ];
        env.extend_from_slice(extra);
        Server::start(&env).await
    }

    /// A gRPC channel to `addr` over TLS trusting the server's CA, showing `identity` when given.
    async fn channel(&self, addr: &str, identity: Option<&Issued>) -> anyhow::Result<tonic::transport::Channel> {
        channel(addr, &self.ca, identity).await
    }

    /// One HTTP/1.1 request over TLS with the client certificate; the raw answer.
    async fn https(&self, addr: &str, request: &[u8]) -> anyhow::Result<String> {
        let config = certs::client_config(&self.ca.pem(), Some(&self.client), &["http/1.1"])?;
        let mut tls = certs::connect(addr, "localhost", config).await?;
        ensure!(tls.get_ref().1.alpn_protocol() == Some(b"http/1.1"), "ALPN did not agree on http/1.1");
        tls.write_all(request).await?;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
        Ok(String::from_utf8_lossy(&answer).to_lowercase())
    }
}

/// A gRPC channel to `addr` over TLS trusting `ca`, showing `identity` when given.
async fn channel(addr: &str, ca: &Ca, identity: Option<&Issued>) -> anyhow::Result<tonic::transport::Channel> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())).domain_name("localhost");
    if let Some(issued) = identity {
        tls = tls.identity(Identity::from_pem(std::fs::read(&issued.cert_file)?, std::fs::read(&issued.key_file)?));
    }
    Ok(tonic::transport::Channel::from_shared(format!("https://{addr}"))?.tls_config(tls)?.connect().await?)
}

async fn health(channel: tonic::transport::Channel) -> anyhow::Result<i32> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = client.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await?;
    Ok(answer.into_inner().status)
}

#[tokio::test]
async fn grpc_grpc_web_the_console_and_metrics_are_served_over_tls_to_clients_with_certificates() -> anyhow::Result<()>
{
    let pki = Pki::new()?;
    let server = pki.start().await?;

    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(health(pki.channel(&server.addr, Some(&pki.client)).await?).await?, serving);

    let body: &[u8] = &[0, 0, 0, 0, 0];
    let mut request = format!(
        "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: localhost\r\nOrigin: https://localhost:5173\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let answer = pki.https(&server.addr, &request).await?;
    assert!(answer.starts_with("http/1.1 200") && answer.contains("grpc-status:0"), "grpc-web over TLS: {answer}");

    let answer =
        pki.https(&server.addr, b"GET /console/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
    assert!(answer.starts_with("http/1.1 200") && answer.contains("<html"), "console over TLS: {answer}");

    let answer = pki
        .https(&server.metrics_addr, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    assert!(answer.starts_with("http/1.1 200") && answer.contains("etter_build_info"), "/metrics over TLS: {answer}");
    Ok(())
}

/// Kubernetes' gRPC probe speaks plaintext: `server.health_listen` answers it, with the same
/// statuses as the TLS listener, and serves nothing else.
#[tokio::test]
async fn the_health_listener_answers_probes_in_plaintext_and_serves_nothing_else() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let server = pki.start_with(&[("ETTER_SERVER__HEALTH_LISTEN", "127.0.0.1:0")]).await?;
    let addr = server.health_addr.clone().context("the readiness line names health_addr")?;
    let plaintext = tonic::transport::Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    let mut probe = tonic_health::pb::health_client::HealthClient::new(plaintext.clone());
    for service in ["", "etter.pipeline.v1.PipelineService"] {
        let request = tonic_health::pb::HealthCheckRequest { service: service.to_owned() };
        let plain = probe.check(request.clone()).await?.into_inner().status;
        let mut over_tls =
            tonic_health::pb::health_client::HealthClient::new(pki.channel(&server.addr, Some(&pki.client)).await?);
        let tls = over_tls.check(request).await?.into_inner().status;
        let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
        ensure!(plain == serving && plain == tls, "{service:?}: plaintext {plain}, over TLS {tls}");
    }
    // The pipeline's API is not there.
    let mut api = etter_proto::v1::pipeline_service_client::PipelineServiceClient::new(plaintext);
    let refused = api.get_usage(etter_proto::v1::GetUsageRequest::default()).await.err().context("an answer")?;
    ensure!(refused.code() == tonic::Code::Unimplemented, "{refused:?}");
    // Without the setting there is no such listener.
    ensure!(pki.start().await?.health_addr.is_none());
    Ok(())
}

#[tokio::test]
async fn clients_without_a_trusted_certificate_or_trust_are_refused_and_counted() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let server = pki.start().await?;

    // No client certificate: the handshake is refused, on gRPC and on /metrics alike.
    let refused = match pki.channel(&server.addr, None).await {
        Ok(channel) => health(channel).await.err().map(|e| format!("{e:#}")),
        Err(e) => Some(format!("{e:#}")),
    };
    // Refused in the handshake: the client sees the alert, or (TLS 1.3 finishes the client's side
    // first) a connection closed under its first call; the server counts it either way (below).
    refused.context("a client without a certificate was served")?;

    // A certificate from another CA, and an expired one from the right CA.
    let outsider = pki.ca.client(&pki.dir, "outsider", "csm-console", Validity::Current)?;
    let expired = pki.clients.client(&pki.dir, "expired", "csm-console", Validity::Expired)?;
    for (what, identity) in [("an untrusted issuer", &outsider), ("an expired certificate", &expired)] {
        let served = match pki.channel(&server.addr, Some(identity)).await {
            Ok(channel) => health(channel).await.is_ok(),
            Err(_) => false,
        };
        ensure!(!served, "a client with {what} was served");
    }

    // A plaintext client gets no answer.
    let plain = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))?.connect().await;
    let served = match plain {
        Ok(channel) => health(channel).await.is_ok(),
        Err(_) => false,
    };
    ensure!(!served, "a plaintext client was served");

    let request = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let answer = pki.https(&server.metrics_addr, request).await?;
    let failures = answer
        .lines()
        .find(|line| line.starts_with("etter_tls_handshake_failures_total{listener=\"grpc\"}"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .context("no handshake failures counted for the gRPC listener")?;
    assert!(failures >= 3.0, "handshake failures counted: {failures}");
    Ok(())
}

#[tokio::test]
async fn a_renewed_server_certificate_is_served_without_a_restart() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let server = pki.start().await?;
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(health(pki.channel(&server.addr, Some(&pki.client)).await?).await?, serving);

    // The same files, now issued by a new CA: a client that trusts only the new CA gets in.
    let renewed = Ca::new("renewed server CA")?;
    renewed.server(&pki.dir, "server", LOOPBACK_NAMES, Validity::Current)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let attempt = match channel(&server.addr, &renewed, Some(&pki.client)).await {
            Ok(channel) => health(channel).await.ok(),
            Err(_) => None,
        };
        if attempt == Some(serving) {
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "the renewed certificate was not served within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
