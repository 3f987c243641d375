//! A private deployment for one test (or benchmark): the built `etter-server` and `etter-worker`
//! binaries as separate processes, over a fresh PostgreSQL database, the shared Temporal dev
//! server (on the test's own task queue), Neo4j (the test's own company ids) and a documents root
//! of its own — or, in the [`Profile::Embedded`] profile, over SQLite files in its own data dir.
//!
//! Processes are started the way an operator starts them (environment configuration, port 0,
//! one readiness line on stdout) and can be killed with SIGKILL and started again on the same
//! state, which is what the crash tests need.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use etter_proto::v1::pipeline_service_client::PipelineServiceClient;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
pub use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{service_setting, unique_name};

/// How long a process may take to print its readiness line.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A client of the stack's server, sending a bearer token on every call.
pub type Client = PipelineServiceClient<InterceptedService<Channel, BearerToken>>;

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct BearerToken(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl BearerToken {
    /// The header value for `token`.
    pub fn new(token: &str) -> Result<Self> {
        Ok(Self(format!("Bearer {token}").parse()?))
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// One of the stack's processes.
pub struct Process {
    name: &'static str,
    child: Child,
    /// The readiness line's fields.
    pub ready: serde_json::Value,
    /// stdout lines printed after the readiness line.
    lines: mpsc::UnboundedReceiver<String>,
    log: PathBuf,
}

impl Process {
    /// A field of the readiness line.
    pub fn field(&self, name: &str) -> Result<String> {
        self.ready
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .with_context(|| format!("{} readiness line has no {name}: {}", self.name, self.ready))
    }

    /// The process id (none once it was reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process has exited (by itself: it was not killed through this handle).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for a stdout line that `wanted` accepts.
    pub async fn wait_for_line(&mut self, within: Duration, wanted: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .map_err(|_| anyhow!("{} did not print the awaited line within {within:?}", self.name))?
                .with_context(|| format!("{} closed its stdout; log:\n{}", self.name, tail(&self.log)))?;
            if wanted(&line) {
                return Ok(line);
            }
        }
    }

    /// The samples of the process's `/metrics` (at `metrics_addr`), keyed by name with labels as
    /// printed (`etter_runs_finished_total{state="READY"}`).
    pub async fn metrics(&self) -> Result<std::collections::BTreeMap<String, f64>> {
        scrape(&self.field("metrics_addr")?).await
    }

    /// What the process logged so far (its stderr).
    pub fn log_text(&self) -> Result<String> {
        std::fs::read_to_string(&self.log).with_context(|| format!("reading the log of {}", self.name))
    }

    /// SIGKILL: no drain, no cleanup — a crash.
    pub async fn kill(mut self) -> Result<()> {
        self.child.kill().await.with_context(|| format!("killing {}", self.name))
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(pid) = self.child.id() {
            let status = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status()?;
            ensure!(status.success(), "kill -TERM {pid} failed");
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .map_err(|_| anyhow!("{} did not stop within 30 s of SIGTERM", self.name))??;
        ensure!(status.success(), "{} exited with {status}; log:\n{}", self.name, tail(&self.log));
        Ok(())
    }
}

/// The samples of the Prometheus `/metrics` at `addr` (`host:port`), keyed by name with labels as
/// printed. Asks in HTTP/1.0, so the answer is never chunked.
pub async fn scrape(addr: &str) -> Result<std::collections::BTreeMap<String, f64>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response))
        .await
        .with_context(|| format!("{addr}/metrics did not answer in time"))??;
    let (head, body) = response.split_once("\r\n\r\n").context("an HTTP response without a body")?;
    ensure!(head.split_whitespace().nth(1) == Some("200"), "{addr}/metrics answered {head}");
    let mut samples = std::collections::BTreeMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (name, value) = line.rsplit_once(' ').with_context(|| format!("a sample without a value: {line}"))?;
        samples.insert(name.to_owned(), value.parse::<f64>().with_context(|| format!("sample {line}"))?);
    }
    Ok(samples)
}

/// The last lines of a log file, for failure messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A client of the `PipelineService` at `addr` (`host:port`) sending `token` on every call.
pub async fn connect(addr: &str, token: &str) -> Result<Client> {
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    let bearer = BearerToken(format!("Bearer {token}").parse()?);
    Ok(PipelineServiceClient::with_interceptor(channel, bearer))
}

/// A built binary of the workspace (`target/<profile>/<name>`), found beside the running binary
/// (`etter-bench`) or one directory up from it (a test binary in `target/<profile>/deps/`).
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let here = exe.parent().context("a binary without a directory")?;
    let candidates = [Some(here), here.parent()];
    if let Some(path) = candidates.into_iter().flatten().map(|dir| dir.join(name)).find(|p| p.exists()) {
        return Ok(path);
    }
    bail!(
        "{name} is not built beside {}: run `cargo build --workspace --all-targets` first (./etter test does)",
        exe.display()
    )
}

/// Where a stack keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// PostgreSQL run store, Redis fan-out and the Neo4j role graph: the production shape.
    Postgres,
    /// The embedded default: SQLite run store and role graph in the data dir, no Redis, no Neo4j.
    Embedded,
}

impl Profile {
    /// The profile's name in reports (`postgres`, `sqlite`).
    pub fn name(self) -> &'static str {
        match self {
            Profile::Postgres => "postgres",
            Profile::Embedded => "sqlite",
        }
    }
}

/// Which Temporal the stacks use: the dev server (`scripts/services up temporal`), or with
/// `ETTER_TEST__TEMPORAL=cluster` the Temporal cluster built from its Go module, reached over
/// mutual TLS (`scripts/services up temporal-cluster`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporal {
    /// `temporal server start-dev`, plaintext.
    DevServer,
    /// The real cluster, PostgreSQL underneath, client certificates and an API key required.
    Cluster,
}

impl Temporal {
    /// The one the environment selects.
    pub fn selected() -> Result<Self> {
        match std::env::var("ETTER_TEST__TEMPORAL").unwrap_or_default().as_str() {
            "" | "dev" => Ok(Self::DevServer),
            "cluster" => Ok(Self::Cluster),
            other => anyhow::bail!("ETTER_TEST__TEMPORAL={other}: want `dev` (the default) or `cluster`"),
        }
    }

    /// The settings both binaries need to reach it.
    pub fn settings(self) -> Result<Vec<(&'static str, String)>> {
        Ok(match self {
            Self::DevServer => vec![
                ("ETTER_TEMPORAL__ADDRESS", service_setting("ETTER_TEMPORAL__ADDRESS", "temporal")?),
                ("ETTER_TEMPORAL__NAMESPACE", service_setting("ETTER_TEMPORAL__NAMESPACE", "temporal")?),
            ],
            Self::Cluster => {
                let setting = |key| service_setting(key, "temporal-cluster");
                vec![
                    ("ETTER_TEMPORAL__ADDRESS", setting("ETTER_TEST__TEMPORAL_CLUSTER_ADDRESS")?),
                    ("ETTER_TEMPORAL__NAMESPACE", setting("ETTER_TEST__TEMPORAL_CLUSTER_NAMESPACE")?),
                    ("ETTER_TEMPORAL__TLS__CA_FILE", setting("ETTER_TEST__TLS_CA")?),
                    ("ETTER_TEMPORAL__TLS__CERT_FILE", setting("ETTER_TEST__TLS_CLIENT_CERT")?),
                    ("ETTER_TEMPORAL__TLS__KEY_FILE", setting("ETTER_TEST__TLS_CLIENT_KEY")?),
                    ("ETTER_TEMPORAL__API_KEY", setting("ETTER_TEST__TEMPORAL_CLUSTER_API_KEY")?),
                ]
            }
        })
    }
}

/// Settings that `scripts/services up` exports and that select the PostgreSQL profile's parts.
const SERVICE_PARTS: [&str; 5] =
    ["ETTER_STORE__URL", "ETTER_REDIS__URL", "ETTER_GRAPH__URI", "ETTER_GRAPH__USER", "ETTER_GRAPH__PASSWORD"];

/// A test's private deployment.
pub struct Stack {
    /// The test's company id (unique, so graph data never collides).
    pub company: String,
    /// The documents root the server admits and the worker reads.
    pub docs: PathBuf,
    /// The Temporal task queue.
    pub task_queue: String,
    root: PathBuf,
    env: Vec<(String, String)>,
    /// Inherited settings the binaries must not see (the embedded profile's absent services).
    unset: Vec<String>,
    /// The PostgreSQL database of the stack (none in the embedded profile).
    database: Option<String>,
    /// How clients reach a server that serves TLS: the CA to trust and the client certificate
    /// to show (`None`: plaintext).
    client_tls: Option<ClientTls>,
}

/// What the stack's clients use to reach a server over TLS.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// PEM CA the server's certificate chains to.
    pub ca: PathBuf,
    /// PEM client certificate and key, when the server asks for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Stack {
    /// A fresh deployment on PostgreSQL (nothing started yet).
    pub async fn new(test: &str) -> Result<Self> {
        Self::with_profile(test, Profile::Postgres).await
    }

    /// A fresh deployment in `profile` (nothing started yet).
    pub async fn with_profile(test: &str, profile: Profile) -> Result<Self> {
        use sqlx::{Connection as _, Executor as _};
        let temporal = Temporal::selected()?.settings()?;
        let name = unique_name(&format!("e2e_{test}"));
        let mut parts = Vec::new();
        let mut database = None;
        match profile {
            Profile::Postgres => {
                let admin_url = service_setting("ETTER_TEST__POSTGRES_ADMIN_URL", "postgres")?;
                parts.push(("ETTER_GRAPH__URI", service_setting("ETTER_GRAPH__URI", "neo4j")?));
                // A database name is an SQL identifier: letters, digits and underscores only.
                let db: String =
                    name.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
                let mut admin =
                    sqlx::PgConnection::connect(&admin_url).await.context("connecting to PostgreSQL as admin")?;
                admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}"))).await?;
                // The test service runs with `synchronous_commit = off` (unit tests commit by
                // the thousand); a deployment's database commits durably, as PostgreSQL does by
                // default and as the embedded store does (SQLite's `synchronous = FULL`).
                admin.execute(sqlx::AssertSqlSafe(format!("ALTER DATABASE {db} SET synchronous_commit = on"))).await?;
                admin.close().await?;
                let (base, _) = admin_url.rsplit_once('/').context("admin URL without a database")?;
                parts.push(("ETTER_STORE__URL", format!("{base}/{db}")));
                database = Some(db);
            }
            Profile::Embedded => {}
        }
        let unset = match profile {
            Profile::Postgres => Vec::new(),
            Profile::Embedded => SERVICE_PARTS.iter().map(|k| (*k).to_owned()).collect(),
        };
        let root = tempfile::Builder::new().prefix(&format!("etter-{name}-")).tempdir()?.keep();
        let docs = root.join("docs");
        std::fs::create_dir_all(&docs)?;
        std::fs::create_dir_all(root.join("logs"))?;
        let docs = docs.canonicalize()?;
        let task_queue = format!("etter-{name}");
        let env = [
            ("ETTER_DATA_DIR", root.join("data").display().to_string()),
            ("ETTER_TEMPORAL__TASK_QUEUE", task_queue.clone()),
            ("ETTER_DOCUMENTS__FILE_ROOT", docs.display().to_string()),
            ("ETTER_SERVER__LISTEN", "127.0.0.1:0".to_owned()),
            ("ETTER_SERVER__METRICS_LISTEN", "127.0.0.1:0".to_owned()),
            ("ETTER_SERVER__WATCH_POLL_INTERVAL", "100ms".to_owned()),
            ("ETTER_SERVER__WATCH_HEARTBEAT_INTERVAL", "1s".to_owned()),
            ("ETTER_DISPATCH__POLL_INTERVAL", "200ms".to_owned()),
            ("ETTER_WORKER__METRICS_LISTEN", "127.0.0.1:0".to_owned()),
            // A killed worker's activity is noticed within seconds, not the production minute.
            ("ETTER_WORKER__HEARTBEAT_TIMEOUT", "2s".to_owned()),
            ("ETTER_WORKER__RETRY_INITIAL_INTERVAL", "200ms".to_owned()),
            ("ETTER_WORKER__SHUTDOWN_GRACE", "5s".to_owned()),
            // No staleness schedule per test: the dev server outlives the tests.
            ("ETTER_WORKER__STALENESS_SCAN_INTERVAL", "0s".to_owned()),
            ("ETTER_LOG__FILTER", "info".to_owned()),
            // The suites poll statuses fast; call limits have tests of their own.
            ("ETTER_LIMITS__CALLS_PER_MINUTE", "1000000".to_owned()),
            ("ETTER_LIMITS__BURST", "100000".to_owned()),
            // Suites provoke refusals on purpose; the refused-call budget is tested on its own.
            ("ETTER_LIMITS__REFUSED_PER_MINUTE", "1000000".to_owned()),
        ]
        .into_iter()
        .chain(temporal)
        .chain(parts)
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let company = format!("e2e{}", name.replace('_', "").to_lowercase()).chars().take(40).collect();
        Ok(Self { company, docs, task_queue, root, env, unset, database, client_tls: None })
    }

    /// From now on clients reach the server over TLS (as `localhost`), trusting `tls.ca` and
    /// showing its identity.
    pub fn use_client_tls(&mut self, tls: ClientTls) {
        self.client_tls = Some(tls);
    }

    /// The PostgreSQL database of the stack (none in the embedded profile).
    pub fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// A gRPC channel to the server at `addr`, over TLS when the stack's clients use it.
    pub async fn channel(&self, addr: &str) -> Result<Channel> {
        let Some(tls) = &self.client_tls else {
            return Ok(Channel::from_shared(format!("http://{addr}"))?.connect().await?);
        };
        let port = addr.rsplit(':').next().context("an address without a port")?;
        let mut config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(&tls.ca)?))
            .domain_name("localhost");
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(tonic::transport::Identity::from_pem(std::fs::read(cert)?, std::fs::read(key)?));
        }
        Ok(Channel::from_shared(format!("https://localhost:{port}"))?.tls_config(config)?.connect().await?)
    }

    /// The environment the binaries get (the test's own settings over the inherited ones).
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Sets `key` for every process started from now on (replacing the stack's own value).
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        self.unset.retain(|k| k != key);
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.env.push((key.to_owned(), value)),
        }
    }

    /// Removes `key` (the stack's own or an inherited one) for every process started from now on:
    /// the binaries fall back to their built-in default.
    pub fn unset(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
        if !self.unset.iter().any(|k| k == key) {
            self.unset.push(key.to_owned());
        }
    }

    /// A command running the workspace binary `name` with the stack's environment.
    fn command(&self, name: &str) -> Result<Command> {
        let mut command = Command::new(binary(name)?);
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for key in &self.unset {
            command.env_remove(key);
        }
        Ok(command)
    }

    /// Copies a document fixture into the documents root; answers its `file://` URI.
    pub fn document(&self, fixture: &str) -> Result<String> {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/documents").join(fixture);
        let target = self.docs.join(fixture);
        std::fs::copy(&source, &target).with_context(|| format!("copying {}", source.display()))?;
        Ok(format!("file://{}", target.display()))
    }

    async fn spawn(&self, name: &'static str, args: &[&str], extra: &[(&str, &str)]) -> Result<Process> {
        let log = self.root.join("logs").join(format!("{name}-{}.log", crate::unique_name("p")));
        let stderr = std::fs::File::create(&log)?;
        let mut child = self
            .command(name)?
            .args(args)
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, mut lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = loop {
            let line = tokio::time::timeout(READY_WITHIN, lines.recv())
                .await
                .map_err(|_| anyhow!("{name} printed no readiness line within {READY_WITHIN:?}; log:\n{}", tail(&log)))?
                .ok_or_else(|| anyhow!("{name} exited before it was ready; log:\n{}", tail(&log)))?;
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                && value.get("ready").is_some()
            {
                break value;
            }
        };
        Ok(Process { name, child, ready, lines, log })
    }

    /// Starts `etter-server serve`.
    pub async fn start_server(&self) -> Result<Process> {
        self.start_server_with(&[]).await
    }

    /// Starts `etter-server serve` with extra environment (another replica, other dispatch
    /// settings).
    pub async fn start_server_with(&self, extra: &[(&str, &str)]) -> Result<Process> {
        self.spawn("etter-server", &["serve"], extra).await
    }

    /// Starts `etter-worker` with extra environment; with `ETTER_TEST_FAULTS` among it, the
    /// tests' `etter-worker-faults`, the one binary that injects faults.
    pub async fn start_worker(&self, extra: &[(&str, &str)]) -> Result<Process> {
        let faulty = extra.iter().any(|(name, _)| *name == "ETTER_TEST_FAULTS");
        self.spawn(if faulty { "etter-worker-faults" } else { "etter-worker" }, &["run"], extra).await
    }

    /// Runs a staleness scan now (`etter-worker scan`, executed by the stack's running workers);
    /// answers its JSON report.
    pub async fn scan(&self) -> Result<serde_json::Value> {
        let output = self.command("etter-worker")?.arg("scan").output().await?;
        ensure!(output.status.success(), "etter-worker scan failed: {}", String::from_utf8_lossy(&output.stderr));
        let stdout = String::from_utf8(output.stdout)?;
        let report =
            stdout.lines().rev().find(|l| l.starts_with('{')).context("etter-worker scan printed no report")?;
        Ok(serde_json::from_str(report)?)
    }

    /// Runs `etter-server ARGS…` (a command, not the service) with the stack's environment;
    /// answers its stdout, failing with its stderr when it fails.
    pub async fn server_command(&self, args: &[&str]) -> Result<String> {
        let output = self.command("etter-server")?.args(args).output().await?;
        ensure!(
            output.status.success(),
            "etter-server {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?)
    }

    /// A token for `role` (viewer, operator, admin) in the test's company, from `etter-server token`.
    pub async fn token(&self, role: &str) -> Result<String> {
        let token = self
            .server_command(&["token", "--company", &self.company, "--role", role, "--user", "e2e@example.com"])
            .await?;
        Ok(token.trim().to_owned())
    }

    /// A client of `server` acting as an operator of the test's company.
    pub async fn client(&self, server: &Process) -> Result<Client> {
        self.client_as(server, "operator").await
    }

    /// A client of `server` acting as `role` (viewer, operator, admin) of the test's company.
    pub async fn client_as(&self, server: &Process, role: &str) -> Result<Client> {
        let token = self.token(role).await?;
        let channel = self.channel(&server.field("grpc_addr")?).await?;
        let bearer = BearerToken(format!("Bearer {token}").parse()?);
        Ok(PipelineServiceClient::with_interceptor(channel, bearer))
    }

    /// What `server`'s health service says of `service`; `None`: it has no such entry.
    pub async fn health(&self, server: &Process, service: &str) -> Result<Option<ServingStatus>> {
        let channel = self.channel(&server.field("grpc_addr")?).await?;
        match HealthClient::new(channel).check(HealthCheckRequest { service: service.to_owned() }).await {
            Ok(answer) => Ok(Some(answer.into_inner().status())),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    /// Polls `server`'s health of `service` until it is `wanted`.
    pub async fn wait_health(
        &self,
        server: &Process,
        service: &str,
        wanted: ServingStatus,
        within: Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let now = self.health(server, service).await?;
            if now == Some(wanted) {
                return Ok(());
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "health of {service:?} stayed {now:?} for {within:?}, not {wanted:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The test's own directory (data dir, documents, logs): removed by [`Self::cleanup`].
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Drops the test's database and directory (call at the end of a passing test; a failing one
    /// keeps them for a look).
    pub async fn cleanup(self) -> Result<()> {
        use sqlx::{Connection as _, Executor as _};
        if let Some(database) = &self.database {
            let admin_url = service_setting("ETTER_TEST__POSTGRES_ADMIN_URL", "postgres")?;
            let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
            admin.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))).await?;
        }
        if let Err(err) = std::fs::remove_dir_all(&self.root) {
            bail!("cannot remove {}: {err}", self.root.display());
        }
        Ok(())
    }
}

/// The status of run `workflow_id`, as GetStatus answers it.
pub async fn run_status(client: &mut Client, workflow_id: &str) -> Result<etter_proto::v1::RunStatus> {
    use etter_proto::v1::{GetStatusRequest, get_status_request::Target};
    let request = GetStatusRequest { target: Some(Target::WorkflowId(workflow_id.to_owned())) };
    client.get_status(request).await?.into_inner().run.context("GetStatus answered without a run")
}

/// Polls GetStatus until `ok` holds of run `workflow_id` (`what` it is then, for the error), for at
/// most `within`; answers its status.
pub async fn until(
    client: &mut Client,
    workflow_id: &str,
    what: &str,
    within: Duration,
    ok: impl Fn(&etter_proto::v1::RunStatus) -> bool,
) -> Result<etter_proto::v1::RunStatus> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let run = run_status(client, workflow_id).await?;
        if ok(&run) {
            return Ok(run);
        }
        ensure!(tokio::time::Instant::now() < deadline, "{workflow_id} was not {what} within {within:?}: {run:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls GetStatus until `workflow_id` leaves VALIDATING, QUEUED and PROCESSING; answers the state
/// it ended in.
pub async fn wait_final(
    client: &mut Client,
    workflow_id: &str,
    within: Duration,
) -> Result<etter_proto::v1::RoleStatus> {
    use etter_proto::v1::RoleStatus;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let run = run_status(client, workflow_id).await?;
        let state = RoleStatus::try_from(run.status)?;
        if !matches!(state, RoleStatus::Validating | RoleStatus::Queued | RoleStatus::Processing) {
            return Ok(state);
        }
        ensure!(tokio::time::Instant::now() < deadline, "{workflow_id} still {state:?} after {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
