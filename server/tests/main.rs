//! Runs the built `etter-server` binary and talks to it the way its users do: gRPC reflection (v1 and
//! v1alpha, separately), health, the contract's error model, grpc-web with CORS from a browser origin,
//! grpcurl, graceful shutdown on SIGTERM, and the pipeline's first slice (`pipeline.rs`): Push,
//! GetStatus, WatchStatus and the dispatcher against a real run store and a real Temporal dev server.

mod pipeline;
mod tls;

use std::{process::Stdio, time::Duration};

use anyhow::{Context as _, bail, ensure};
use prost::Message as _;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    process::{Child, Command},
};
use tonic::transport::Channel;

/// A running `etter-server` on a free port, killed when dropped.
struct Server {
    child: Child,
    addr: String,
    metrics_addr: String,
    /// The plaintext health listener's address, with `server.health_listen`.
    health_addr: Option<String>,
    data_dir: std::path::PathBuf,
}

impl Server {
    async fn start(extra_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_in(fresh_data_dir(), extra_env).await
    }

    async fn start_in(data_dir: std::path::PathBuf, extra_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let docs = data_dir.join("docs");
        std::fs::create_dir_all(&docs)?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_etter-server"));
        cmd.args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "serve"])
            .env("ETTER_DATA_DIR", &data_dir)
            .env("ETTER_LOG__FILTER", "warn")
            // Isolation: the embedded SQLite store and role graph in this test's data dir (a sourced
            // services.env would otherwise share one PostgreSQL database and one Neo4j), and a task
            // queue of its own.
            .env("ETTER_STORE__URL", "")
            .env("ETTER_GRAPH__URI", "")
            .env("ETTER_TEMPORAL__TASK_QUEUE", format!("etter-server-test-{}", unique_suffix()))
            .env("ETTER_DOCUMENTS__FILE_ROOT", &docs)
            // Fast loops, so tests wait for conditions briefly.
            .env("ETTER_DISPATCH__POLL_INTERVAL", "100ms")
            .env("ETTER_DISPATCH__RECONCILE_INTERVAL", "200ms")
            .env("ETTER_DISPATCH__TEMPORAL_TIMEOUT", "3s")
            .env("ETTER_DISPATCH__RETRY_MAX_BACKOFF", "1s")
            .env("ETTER_SERVER__HEALTH_CHECK_INTERVAL", "200ms")
            .env("ETTER_SERVER__WATCH_POLL_INTERVAL", "50ms")
            .env("ETTER_SERVER__WATCH_HEARTBEAT_INTERVAL", "200ms")
            // Tests poll fast; the call limits are tested on their own (tests/pipeline/limits.rs).
            .env("ETTER_LIMITS__CALLS_PER_MINUTE", "1000000")
            .env("ETTER_LIMITS__BURST", "100000")
            // The matrices refuse many calls on purpose; the refused-call budget is tested on its own.
            .env("ETTER_LIMITS__REFUSED_PER_MINUTE", "1000000")
            // No worker polls the tests' task queues: workflows they start close by themselves soon.
            .env("ETTER_TEMPORAL__WORKFLOW_EXECUTION_TIMEOUT", "2m")
            .envs(extra_env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("spawn etter-server")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("no readiness line within 30 s")??
            .context("etter-server exited before it was ready")?;
        let ready: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("readiness line: {line}"))?;
        ensure!(ready["ready"] == "etter-server", "unexpected readiness line {line}");
        let addr = ready["grpc_addr"].as_str().context("grpc_addr missing")?.to_owned();
        ensure!(!addr.ends_with(":0"), "the readiness line must carry the bound port, got {addr}");
        let metrics_addr = ready["metrics_addr"].as_str().context("metrics_addr missing")?.to_owned();
        let health_addr = ready["health_addr"].as_str().map(str::to_owned);
        Ok(Self { child, addr, metrics_addr, health_addr, data_dir })
    }

    /// A token from `etter-server token`, signed with this server's (generated) key.
    fn token(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_etter-server"))
            .arg("token")
            .args(args)
            .env("ETTER_DATA_DIR", &self.data_dir)
            .output()?;
        ensure!(out.status.success(), "etter-server token: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(Channel::from_shared(format!("http://{}", self.addr))?.connect().await?)
    }
}

/// A data directory of its own, with a random name; kept after the test (a restarted server
/// reads it again, and a failed test's files are worth reading).
fn fresh_data_dir() -> std::path::PathBuf {
    tempfile::Builder::new()
        .prefix("etter-server-test-")
        .tempdir()
        .map_or_else(|_| std::env::temp_dir().join(format!("etter-server-test-{}", unique_suffix())), |d| d.keep())
}

/// Unique across the tests of one run and across runs against long-lived services (Temporal keeps
/// closed workflow ids reserved).
fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

const SERVICE: &str = "etter.pipeline.v1.PipelineService";
const RPCS: &[&str] = &[
    "Push",
    "PushBatch",
    "GetStatus",
    "WatchStatus",
    "Retry",
    "Cancel",
    "CompareRuns",
    "History",
    "ListAuditEntries",
    "GetUsage",
];

/// What one reflection dialect reports: the listed services and the methods of the pipeline service.
struct Reflected {
    services: Vec<String>,
    pipeline_methods: Vec<String>,
    health_described: bool,
}

fn methods_of(files: &[Vec<u8>], package: &str, service: &str) -> anyhow::Result<Vec<String>> {
    for bytes in files {
        let file = prost_types::FileDescriptorProto::decode(bytes.as_slice())?;
        if file.package() != package {
            continue;
        }
        if let Some(svc) = file.service.iter().find(|s| s.name() == service) {
            return Ok(svc.method.iter().map(|m| m.name().to_owned()).collect());
        }
    }
    bail!("{package}.{service} not found in the returned descriptors")
}

macro_rules! reflect_with {
    ($name:ident, $pb:path) => {
        async fn $name(channel: Channel) -> anyhow::Result<Reflected> {
            use $pb as pb;
            let mut client = pb::server_reflection_client::ServerReflectionClient::new(channel);
            let ask = |req| pb::ServerReflectionRequest { host: String::new(), message_request: Some(req) };
            let requests = vec![
                ask(pb::server_reflection_request::MessageRequest::ListServices(String::new())),
                ask(pb::server_reflection_request::MessageRequest::FileContainingSymbol(SERVICE.to_owned())),
                ask(pb::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "grpc.health.v1.Health".to_owned(),
                )),
            ];
            let mut stream = client.server_reflection_info(tokio_stream::iter(requests)).await?.into_inner();
            let mut answers = Vec::new();
            while let Some(resp) = stream.message().await? {
                answers.push(resp.message_response.context("empty reflection response")?);
            }
            ensure!(answers.len() == 3, "expected 3 reflection answers, got {}", answers.len());
            use pb::server_reflection_response::MessageResponse as R;
            let services = match &answers[0] {
                R::ListServicesResponse(list) => list.service.iter().map(|s| s.name.clone()).collect(),
                other => bail!("list services answered {other:?}"),
            };
            let pipeline_methods = match &answers[1] {
                R::FileDescriptorResponse(fd) => {
                    methods_of(&fd.file_descriptor_proto, "etter.pipeline.v1", "PipelineService")?
                }
                other => bail!("describe {SERVICE} answered {other:?}"),
            };
            let health_described = match &answers[2] {
                R::FileDescriptorResponse(fd) => {
                    methods_of(&fd.file_descriptor_proto, "grpc.health.v1", "Health")?.iter().any(|m| m == "Check")
                }
                other => bail!("describe grpc.health.v1.Health answered {other:?}"),
            };
            Ok(Reflected { services, pipeline_methods, health_described })
        }
    };
}

reflect_with!(reflect_v1, tonic_reflection::pb::v1);
reflect_with!(reflect_v1alpha, tonic_reflection::pb::v1alpha);

fn check_reflected(dialect: &str, r: &Reflected) {
    for expected in [SERVICE, "grpc.health.v1.Health"] {
        assert!(r.services.iter().any(|s| s == expected), "{dialect}: {expected} not listed in {:?}", r.services);
    }
    let mut methods = r.pipeline_methods.clone();
    methods.sort();
    let mut want: Vec<String> = RPCS.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(methods, want, "{dialect}: methods of {SERVICE}");
    assert!(r.health_described, "{dialect}: grpc.health.v1.Health cannot be described");
}

#[tokio::test]
async fn reflection_v1_lists_and_describes() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let reflected = reflect_v1(server.channel().await?).await?;
    check_reflected("v1", &reflected);
    Ok(())
}

#[tokio::test]
async fn reflection_v1alpha_lists_and_describes() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let reflected = reflect_v1alpha(server.channel().await?).await?;
    check_reflected("v1alpha", &reflected);
    Ok(())
}

#[tokio::test]
async fn health_reports_the_pipeline_service_serving() -> anyhow::Result<()> {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let server = Server::start(&[("ETTER_REDIS__URL", "")]).await?;
    let mut health = HealthClient::new(server.channel().await?);
    for service in ["", SERVICE] {
        let status = health.check(HealthCheckRequest { service: service.to_owned() }).await?.into_inner().status();
        assert_eq!(status, ServingStatus::Serving, "health of {service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "no.such.Service".to_owned() }).await;
    assert_eq!(unknown.err().map(|s| s.code()), Some(tonic::Code::NotFound));
    // Without `redis.url` there is no Redis entry: nothing to be down.
    let redis = health.check(HealthCheckRequest { service: "etter.redis".to_owned() }).await;
    assert_eq!(redis.err().map(|s| s.code()), Some(tonic::Code::NotFound));
    Ok(())
}

fn with_token<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated() -> anyhow::Result<()> {
    use etter_proto::v1::{GetStatusRequest, pipeline_service_client::PipelineServiceClient};
    use tonic_types::StatusExt as _;
    let server = Server::start(&[]).await?;
    let mut client = PipelineServiceClient::new(server.channel().await?);
    let foreign = {
        // Same claims, signed by another server's key.
        let other = Server::start(&[]).await?;
        other.token(&["--company", "acme", "--role", "operator"])?
    };
    let cases = [(None, "missing"), (Some("garbage".to_owned()), "malformed"), (Some(foreign), "signature")];
    for (token, why) in cases {
        let mut request = tonic::Request::new(GetStatusRequest::default());
        if let Some(token) = token {
            request.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
        }
        let status = client.get_status(request).await.err().context("must be refused")?;
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{why}: {status:?}");
        assert!(status.message().contains(why), "{why}: {}", status.message());
        let info = status.get_details_error_info().context("ErrorInfo missing")?;
        assert_eq!(info.reason, "UNAUTHENTICATED");
    }
    Ok(())
}

#[tokio::test]
async fn the_generated_key_survives_a_restart() -> anyhow::Result<()> {
    use etter_proto::v1::{GetStatusRequest, pipeline_service_client::PipelineServiceClient};
    let dir = fresh_data_dir();
    let first = Server::start_in(dir.clone(), &[]).await?;
    let token = first.token(&["--role", "admin"])?;
    drop(first);
    let second = Server::start_in(dir, &[]).await?;
    let mut client = PipelineServiceClient::new(second.channel().await?);
    let status =
        client.get_status(with_token(GetStatusRequest::default(), &token)?).await.err().context("no target given")?;
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "a token of the first start must authenticate (and the empty request is then invalid): {status:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_refused_batch_names_its_fields_with_error_info() -> anyhow::Result<()> {
    use etter_proto::v1::{PushBatchRequest, pipeline_service_client::PipelineServiceClient};
    use tonic_types::StatusExt as _;
    let server = Server::start(&[]).await?;
    let token = server.token(&["--company", "acme", "--role", "operator", "--user", "jane"])?;
    let mut client = PipelineServiceClient::new(server.channel().await?);
    let empty = PushBatchRequest { company_id: "acme".into(), ..Default::default() };
    let status = client.push_batch(with_token(empty, &token)?).await.err().context("an empty batch must be refused")?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let info = status.get_details_error_info().context("ErrorInfo detail missing")?;
    assert_eq!(info.domain, "etter.pipeline");
    assert_eq!(info.reason, "INVALID_BATCH");
    let fields: Vec<String> = status
        .get_details_bad_request()
        .context("BadRequest detail missing")?
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["items"]);
    Ok(())
}

/// Sends one HTTP/1.1 request and returns the raw response (the server closes after it).
async fn http1(addr: &str, request: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut response = Vec::new();
    // The response is complete when the server closes; bound the wait.
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    Ok(response)
}

#[tokio::test]
async fn grpc_web_with_cors_from_a_browser_origin() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let preflight = format!(
        "OPTIONS /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: {a}\r\nOrigin: http://localhost:5173\r\n\
         Access-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: authorization,content-type,x-grpc-web\r\nConnection: close\r\n\r\n",
        a = server.addr
    );
    let answer = String::from_utf8_lossy(&http1(&server.addr, preflight.as_bytes()).await?).to_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "preflight: {answer}");
    assert!(answer.contains("access-control-allow-headers:"), "preflight: {answer}");
    assert!(answer.contains("authorization"), "authorization must be allowed explicitly: {answer}");

    // A grpc-web unary call: 5-byte frame header + HealthCheckRequest{service:""} (empty message).
    let body: &[u8] = &[0, 0, 0, 0, 0];
    let mut request = format!(
        "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: {a}\r\nOrigin: http://localhost:5173\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
        a = server.addr,
        len = body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let raw = http1(&server.addr, &request).await?;
    let text = String::from_utf8_lossy(&raw).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "grpc-web call: {text}");
    assert!(text.contains("content-type: application/grpc-web"), "grpc-web call: {text}");
    assert!(text.contains("access-control-expose-headers:"), "grpc-web call: {text}");
    assert!(text.contains("grpc-status-details-bin"), "grpc-web call must expose the details trailer: {text}");
    // The trailer frame (flag 0x80) carries grpc-status:0; the message frame carries SERVING (1).
    assert!(text.contains("grpc-status:0"), "grpc-web trailers: {text}");
    assert!(raw.windows(7).any(|w| w == [0, 0, 0, 0, 2, 0x08, 0x01]), "SERVING message frame missing: {text}");
    Ok(())
}

/// `GET path` over HTTP/1.1: the status line and the body.
async fn http_get(addr: &str, path: &str) -> anyhow::Result<(String, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let raw = String::from_utf8(http1(addr, request.as_bytes()).await?)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no header end")?;
    Ok((head.to_lowercase(), body.to_owned()))
}

async fn dev_login(addr: &str, body: &str) -> anyhow::Result<(String, serde_json::Value)> {
    let headers = format!("Host: {addr}\r\nContent-Type: application/json\r\n");
    let (head, body) = dev_login_with(addr, &headers, body).await?;
    Ok((head.lines().next().unwrap_or_default().to_owned(), serde_json::from_str(&body)?))
}

/// `POST /console/dev-login` with these header lines: the whole head (lowercased) and the body.
async fn dev_login_with(addr: &str, headers: &str, body: &str) -> anyhow::Result<(String, String)> {
    let request = format!(
        "POST /console/dev-login HTTP/1.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let raw = String::from_utf8(http1(addr, request.as_bytes()).await?)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no header end")?;
    Ok((head.to_lowercase(), body.to_owned()))
}

#[tokio::test]
async fn the_console_is_served_on_the_grpc_port_and_dev_login_is_off_by_default() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let (head, _) = http_get(&server.addr, "/").await?;
    assert!(head.starts_with("http/1.1 303") && head.contains("location: /console/"), "{head}");
    let (head, page) = http_get(&server.addr, "/console/").await?;
    assert!(head.starts_with("http/1.1 200") && head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'self'"), "{head}");
    assert!(page.contains(r#"<script type="module" src="app.js">"#), "{page}");
    let (head, script) = http_get(&server.addr, "/console/app.js").await?;
    assert!(head.starts_with("http/1.1 200") && head.contains("text/javascript"), "{head}");
    assert!(script.contains("Development sign-in"), "the bundle is the console");
    let (_, config) = http_get(&server.addr, "/console/config.json").await?;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&config)?["dev_login"], false);
    let (status, answer) = dev_login(&server.addr, r#"{"company":"acme"}"#).await?;
    assert!(status.contains(" 404 "), "{status}");
    assert!(answer["error"].as_str().unwrap_or_default().contains("server.console_dev_login"), "{answer}");
    // gRPC on the same port is untouched.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await?);
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await?;
    Ok(())
}

#[tokio::test]
async fn the_console_dev_login_signs_an_operator_of_the_named_company_only() -> anyhow::Result<()> {
    use etter_proto::v1::{self as pb, pipeline_service_client::PipelineServiceClient};
    let server = Server::start(&[("ETTER_SERVER__CONSOLE_DEV_LOGIN", "true")]).await?;
    let (status, answer) = dev_login(&server.addr, r#"{"company":"Not A Company"}"#).await?;
    assert!(status.contains(" 400 "), "{status}");
    assert!(answer["error"].as_str().unwrap_or_default().starts_with("company: "), "{answer}");

    let (status, answer) = dev_login(&server.addr, r#"{"company":"acme"}"#).await?;
    assert!(status.contains(" 200 "), "{status} {answer}");
    assert_eq!((answer["company"].as_str(), answer["role"].as_str()), (Some("acme"), Some("operator")));
    let token = answer["token"].as_str().context("no token")?;
    let mut client = PipelineServiceClient::new(server.channel().await?);
    client
        .get_usage(with_token(pb::GetUsageRequest { company_id: "acme".into(), period: String::new() }, token)?)
        .await?;
    let other = client
        .get_usage(with_token(pb::GetUsageRequest { company_id: "other".into(), period: String::new() }, token)?)
        .await
        .err()
        .context("another company's usage was answered")?;
    assert_eq!(other.code(), tonic::Code::PermissionDenied);

    // Only the console itself may ask. Each of these is what another web page (or a page whose
    // DNS name was rebound to 127.0.0.1) can make a developer's browser send.
    let addr = &server.addr;
    let port = addr.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
    let json_body = r#"{"company":"acme"}"#;
    let cases = [
        (
            "a cross-origin POST",
            format!("Host: {addr}\r\nOrigin: https://evil.example\r\nContent-Type: application/json\r\n"),
        ),
        (
            "a simple cross-origin form POST",
            format!("Host: {addr}\r\nOrigin: https://evil.example\r\nContent-Type: text/plain\r\n"),
        ),
        (
            "a rebound DNS name",
            format!(
                "Host: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\nContent-Type: application/json\r\n"
            ),
        ),
        (
            "a rebound DNS name without Origin",
            format!("Host: evil.example:{port}\r\nContent-Type: application/json\r\n"),
        ),
        (
            "another site, by the browser's word",
            format!("Host: {addr}\r\nSec-Fetch-Site: cross-site\r\nContent-Type: application/json\r\n"),
        ),
        ("a body that is not JSON", format!("Host: {addr}\r\nContent-Type: text/plain\r\n")),
    ];
    for (what, headers) in cases {
        let (head, body) = dev_login_with(addr, &headers, json_body).await?;
        assert!(head.starts_with("http/1.1 403"), "{what}: {head}\n{body}");
        assert!(!body.contains("token\""), "{what}: a token was signed: {body}");
        assert!(!head.contains("access-control-allow-origin"), "{what}: {head}");
    }
    // The console's own request, as a browser sends it.
    let own = format!(
        "Host: {addr}\r\nOrigin: http://{addr}\r\nSec-Fetch-Site: same-origin\r\nContent-Type: application/json\r\n"
    );
    let (head, body) = dev_login_with(addr, &own, json_body).await?;
    assert!(head.starts_with("http/1.1 200") && body.contains("token"), "{head}\n{body}");
    // A preflight for the sign-in gets no CORS answer; the API's still does.
    let preflight = |path: &str| {
        format!(
            "OPTIONS {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://evil.example\r\n\
             Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\nConnection: close\r\n\r\n"
        )
    };
    let console = String::from_utf8(http1(addr, preflight("/console/dev-login").as_bytes()).await?)?.to_lowercase();
    assert!(!console.contains("access-control-allow-origin"), "{console}");
    let api = String::from_utf8(http1(addr, preflight("/etter.pipeline.v1.PipelineService/Push").as_bytes()).await?)?
        .to_lowercase();
    assert!(api.contains("access-control-allow-origin"), "{api}");
    Ok(())
}

/// SIGTERM with a call in flight: a company watch stream that would otherwise run for half an
/// hour. Draining ends the stream cleanly (its end, not an error, so the client reconnects to
/// another replica), then the process exits with success well within the shutdown grace.
#[tokio::test]
async fn sigterm_ends_a_stream_in_flight_cleanly_and_exits() -> anyhow::Result<()> {
    use etter_proto::v1::{
        WatchStatusRequest, pipeline_service_client::PipelineServiceClient, watch_status_request::Scope,
    };
    let mut server = Server::start(&[("ETTER_SERVER__SHUTDOWN_GRACE", "20s")]).await?;
    let token = server.token(&["--company", "acme", "--role", "viewer", "--user", "watcher"])?;
    let mut client = PipelineServiceClient::new(server.channel().await?);
    let watch = WatchStatusRequest { scope: Some(Scope::CompanyId("acme".into())), ..Default::default() };
    let mut stream = client.watch_status(with_token(watch, &token)?).await?.into_inner();
    ensure!(stream.message().await?.is_some(), "the watch sent nothing before the signal");

    let pid = server.child.id().context("no pid")?;
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    ensure!(status.success(), "kill failed");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        // Heartbeats may still arrive until the drain reaches the stream; then it ends.
        while stream.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    })
    .await
    .context("the stream did not end within 10 s of SIGTERM")?;
    ensure!(ended.is_ok(), "the stream in flight ended with an error, not cleanly: {ended:?}");
    let exit =
        tokio::time::timeout(Duration::from_secs(10), server.child.wait()).await.context("no exit in 10 s")??;
    ensure!(exit.success(), "etter-server exited with {exit}");
    Ok(())
}

#[tokio::test]
async fn grpcurl_lists_describes_and_checks_health() -> anyhow::Result<()> {
    let grpcurl = std::env::var("ETTER_TOOLS__GRPCURL")
        .context("ETTER_TOOLS__GRPCURL is not set: run `scripts/services up grpcurl` and source .etter/services.env")?;
    let server = Server::start(&[]).await?;
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let out = std::process::Command::new(&grpcurl).arg("-plaintext").args(args).output()?;
        ensure!(out.status.success(), "grpcurl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let list = run(&[&server.addr, "list"])?;
    assert!(list.contains(SERVICE) && list.contains("grpc.health.v1.Health"), "grpcurl list: {list}");
    let describe = run(&[&server.addr, "describe", SERVICE])?;
    for rpc in RPCS {
        assert!(describe.contains(&format!("rpc {rpc} (")), "grpcurl describe lacks {rpc}: {describe}");
    }
    let health = run(&["-d", &format!("{{\"service\":\"{SERVICE}\"}}"), &server.addr, "grpc.health.v1.Health/Check"])?;
    assert!(health.contains("SERVING"), "grpcurl health: {health}");
    Ok(())
}

#[tokio::test]
async fn metrics_endpoint_serves_prometheus_text() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.metrics_addr);
    let text = String::from_utf8_lossy(&http1(&server.metrics_addr, request.as_bytes()).await?).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "/metrics: {text}");
    assert!(text.contains("etter_build_info{binary=\"etter-server\""), "/metrics: {text}");
    Ok(())
}

/// A grpc-web call with a raw request body over HTTP/1.1: the response head, lowercased.
async fn grpc_web_raw(addr: &str, path: &str, token: &str, message: &[u8]) -> anyhow::Result<String> {
    let mut body = vec![0_u8];
    body.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
    body.extend_from_slice(message);
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n\
         Authorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let raw = http1(addr, &request).await?;
    Ok(String::from_utf8_lossy(&raw).to_lowercase())
}

/// The audit entries of `actor`, newest first, as an admin lists them.
async fn audit_of(server: &Server, actor: &str) -> anyhow::Result<Vec<etter_proto::v1::AuditEntry>> {
    use etter_proto::v1::{ListAuditEntriesRequest, pipeline_service_client::PipelineServiceClient};
    let admin = server.token(&["--company", "acme", "--role", "admin", "--user", "auditor"])?;
    let mut client = PipelineServiceClient::new(server.channel().await?);
    // The writer appends in the background.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let request = ListAuditEntriesRequest { actor: actor.into(), page_size: 1000, ..Default::default() };
    Ok(client.list_audit_entries(with_token(request, &admin)?).await?.into_inner().entries)
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument_counted_and_audited() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let token = server.token(&["--company", "acme", "--role", "operator", "--user", "mangler"])?;
    let push = "/etter.pipeline.v1.PipelineService/Push";
    // company_id (field 1, a string) holding invalid UTF-8; a length varint cut short; a string
    // field sent as a varint.
    for (what, message) in [
        ("invalid UTF-8", vec![0x0a_u8, 0x02, 0xff, 0xfe]),
        ("a truncated varint", vec![0x0a, 0x80]),
        ("a wrong wire type", vec![0x08, 0x01]),
    ] {
        let head = grpc_web_raw(&server.addr, push, &token, &message).await?;
        assert!(head.contains("grpc-status: 3\r\n"), "{what}: {head}");
        assert!(!head.contains("grpc-status: 13"), "{what}: {head}");
        assert!(head.contains("grpc-message: the request is not a valid push message ("), "{what}: {head}");
    }
    // A read (WatchStatus, served by its own route) too.
    let head = grpc_web_raw(
        &server.addr,
        "/etter.pipeline.v1.PipelineService/WatchStatus",
        &token,
        &[0x1a, 0x03, 0xc3, 0x28, 0x41],
    )
    .await?;
    assert!(head.contains("grpc-status: 3\r\n"), "WatchStatus: {head}");

    let entries = audit_of(&server, "mangler").await?;
    let malformed: Vec<_> = entries.iter().filter(|e| e.action == "Push" && e.outcome == "INVALID_ARGUMENT").collect();
    assert_eq!(malformed.len(), 3, "{entries:?}");
    assert!(malformed.iter().all(|e| e.reason.contains("not a valid Push message") && e.role == "operator"));
    let (_, metrics) = http_get(&server.metrics_addr, "/metrics").await?;
    let refused = metrics
        .lines()
        .find(|l| {
            l.starts_with("etter_calls_refused_total")
                && l.contains("method=\"Push\"")
                && l.contains("INVALID_ARGUMENT")
        })
        .context("no refused-call counter for Push")?;
    assert!(refused.ends_with(" 3"), "{refused}");
    Ok(())
}

#[tokio::test]
async fn refused_calls_cost_the_caller_and_fill_no_audit_log() -> anyhow::Result<()> {
    use etter_proto::v1::{self as pb, pipeline_service_client::PipelineServiceClient};
    use tonic_types::StatusExt as _;
    let server = Server::start(&[("ETTER_LIMITS__REFUSED_PER_MINUTE", "5")]).await?;
    let viewer = server.token(&["--company", "acme", "--role", "viewer", "--user", "flooder"])?;
    let mut client = PipelineServiceClient::new(server.channel().await?);
    // A viewer may not push: each push is refused, and each carries a 200 KB role name.
    let huge = "R".repeat(200_000);
    let mut codes = Vec::new();
    for _ in 0..12 {
        let push = pb::PushRequest { company_id: "acme".into(), role_name: huge.clone(), ..Default::default() };
        match client.push(with_token(push, &viewer)?).await {
            Err(status) => {
                if status.code() == tonic::Code::ResourceExhausted {
                    let retry = status.get_details_retry_info().context("RESOURCE_EXHAUSTED without RetryInfo")?;
                    assert!(retry.retry_delay.is_some_and(|d| d > Duration::ZERO), "{retry:?}");
                }
                codes.push(status.code());
            }
            Ok(_) => bail!("a viewer's push was accepted"),
        }
    }
    let denied = codes.iter().filter(|c| **c == tonic::Code::PermissionDenied).count();
    assert!((5..=6).contains(&denied), "the budget of 5 refusals (and the one that crossed it): {codes:?}");
    assert_eq!(codes.last(), Some(&tonic::Code::ResourceExhausted), "{codes:?}");
    // Blocked means blocked: the same caller's harmless read waits too.
    let usage = pb::GetUsageRequest { company_id: "acme".into(), period: String::new() };
    let read = client.get_usage(with_token(usage, &viewer)?).await.err().context("a blocked caller was served")?;
    assert_eq!(read.code(), tonic::Code::ResourceExhausted, "{read:?}");
    // So are calls from the address that come without a valid token; another user at the same
    // address (the auditor below) is served.
    let anonymous = pb::GetUsageRequest { company_id: "acme".into(), period: String::new() };
    let anonymous = client.get_usage(with_token(anonymous, "not-a-token")?).await.err().context("served")?;
    assert_eq!(anonymous.code(), tonic::Code::ResourceExhausted, "{anonymous:?}");

    // The log holds the refusals before the block, each small, with a hash of what was cut.
    let entries = audit_of(&server, "flooder").await?;
    assert_eq!(entries.len(), denied, "{}", entries.len());
    for entry in &entries {
        assert!(entry.target.len() < 600, "an audit target of {} bytes", entry.target.len());
        assert!(
            entry.target.contains("truncated: 200000 bytes, sha256"),
            "{}",
            &entry.target[entry.target.len() - 80..]
        );
    }
    Ok(())
}

/// Processes starting at once on an empty data directory (as `./etter dev` starts the server
/// and the worker, or replicas of a deployment on a fresh database) each migrate the store:
/// every one must come up, every round. Three servers at once, three rounds, on each store.
#[tokio::test]
async fn servers_starting_at_once_on_an_empty_store_all_come_up() -> anyhow::Result<()> {
    for round in 0..3 {
        let data_dir = fresh_data_dir();
        let (a, b, c) = tokio::join!(
            Server::start_in(data_dir.clone(), &[]),
            Server::start_in(data_dir.clone(), &[]),
            Server::start_in(data_dir.clone(), &[]),
        );
        for (n, started) in [a, b, c].into_iter().enumerate() {
            started.with_context(|| format!("SQLite round {round}: server {n} did not come up"))?;
        }
    }
    let admin_url = std::env::var("ETTER_TEST__POSTGRES_ADMIN_URL")
        .context("ETTER_TEST__POSTGRES_ADMIN_URL is not set: source .etter/services.env")?;
    for round in 0..3 {
        use sqlx::Connection as _;
        let name = format!("etter_server_start_{}", unique_suffix().replace('-', "_"));
        let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await?;
        let mut url = url::Url::parse(&admin_url)?;
        url.set_path(&format!("/{name}"));
        let env = [("ETTER_STORE__URL", url.as_str())];
        let (a, b, c) = tokio::join!(
            Server::start_in(fresh_data_dir(), &env),
            Server::start_in(fresh_data_dir(), &env),
            Server::start_in(fresh_data_dir(), &env),
        );
        // Every server is stopped before its database is dropped; then the first failure, if any.
        let outcome: anyhow::Result<Vec<Server>> = [a, b, c].into_iter().collect();
        let failed = outcome.map(drop).err();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .execute(&mut admin)
            .await?;
        if let Some(e) = failed {
            return Err(e.context(format!("PostgreSQL round {round}: a server did not come up")));
        }
    }
    Ok(())
}
