//! Temporal goes away while pushes arrive: every push is still accepted and QUEUED (the
//! store is the source of truth, not Temporal), health says Temporal is down, and once the same
//! Temporal is back every queued run is dispatched once and ends READY — none lost, none run
//! twice. Temporal that loses workflow tasks in a crash does not leave their runs waiting for
//! ever: the reconciler has them handed out again. The tests run their own Temporal dev server (persisting to a file, as a restarted cluster
//! keeps its history), since it stops it. On the Temporal cluster (`ETTER_TEST__TEMPORAL=cluster`)
//! it stops and restarts the shared cluster through `scripts/services`: run it alone there
//! (`./etter test` does).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{
    Document, DocumentType, GetStatusRequest, HistoryRequest, PushRequest, RoleStatus, RunOptions, get_status_request,
};
use etter_tests::service_setting;
use etter_tests::stack::{ServingStatus, Stack, Temporal, tail, wait_final};
use tokio::process::{Child, Command};

const NAMESPACE: &str = "etter-outage";
/// Pushes while Temporal is down.
const WHILE_DOWN: usize = 6;

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A Temporal dev server of the test's own, on fixed ports and a database file, so a restart
/// comes back at the same address with the same history.
struct PrivateTemporal {
    cli: String,
    db: std::path::PathBuf,
    /// Its output, for a start that fails.
    log: std::path::PathBuf,
    ports: [u16; 3],
    child: Option<Child>,
    /// Answered once: a restart must come back on the same ports.
    answered: bool,
}

impl PrivateTemporal {
    fn new(dir: &Path) -> Result<Self> {
        Ok(Self {
            cli: service_setting("ETTER_TOOLS__TEMPORAL", "temporal")?,
            db: dir.join("temporal-outage.db"),
            log: dir.join("temporal-outage.log"),
            ports: [free_port()?, free_port()?, free_port()?],
            child: None,
            answered: false,
        })
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.ports[0])
    }

    /// Starts it and waits until the namespace answers. The free ports were only free when they
    /// were picked (other tests start servers too): a first start whose server exits at once is
    /// tried again on new ports.
    async fn start(&mut self) -> Result<()> {
        for attempt in 1..=5 {
            if self.start_once().await? {
                self.answered = true;
                return Ok(());
            }
            ensure!(
                !self.answered && attempt < 5,
                "the private temporal exited on ports {:?}; its log:\n{}",
                self.ports,
                tail(&self.log)
            );
            self.ports = [free_port()?, free_port()?, free_port()?];
        }
        Ok(())
    }

    /// Starts it and waits until the namespace answers (true), or until the server exits (false).
    async fn start_once(&mut self) -> Result<bool> {
        let [grpc, http, metrics] = self.ports.map(|p| p.to_string());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.cli)
            .args(["server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", &grpc])
            .args(["--http-port", &http, "--metrics-port", &metrics, "--namespace", NAMESPACE])
            .args(["--log-level", "error", "--db-filename"])
            .arg(&self.db)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting a private temporal dev server")?;
        let child = self.child.insert(child);
        let address = format!("127.0.0.1:{grpc}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let described = Command::new(&self.cli)
                .args(["operator", "namespace", "describe", "--address", &address, "--namespace", NAMESPACE])
                .output()
                .await?;
            if described.status.success() {
                return Ok(true);
            }
            if child.try_wait()?.is_some() {
                self.child = None;
                return Ok(false);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("the private temporal did not answer within 90 s; its log:\n{}", tail(&self.log));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Stops it (SIGKILL: an outage, not a maintenance window).
    async fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}

/// The Temporal the test takes down and brings back.
enum Outage {
    /// A dev server of the test's own.
    Private(Box<PrivateTemporal>),
    /// The shared Temporal cluster, stopped and started by `scripts/services`.
    Cluster,
}

impl Outage {
    fn new(dir: &Path) -> Result<Self> {
        Ok(match Temporal::selected()? {
            Temporal::DevServer => Self::Private(Box::new(PrivateTemporal::new(dir)?)),
            Temporal::Cluster => Self::Cluster,
        })
    }

    /// The settings that point the binaries at it (none on the cluster: the stack's own).
    fn settings(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Private(temporal) => vec![
                ("ETTER_TEMPORAL__ADDRESS", format!("http://{}", temporal.address())),
                ("ETTER_TEMPORAL__NAMESPACE", NAMESPACE.to_owned()),
            ],
            Self::Cluster => Vec::new(),
        }
    }

    async fn start(&mut self) -> Result<()> {
        match self {
            Self::Private(temporal) => temporal.start().await,
            Self::Cluster => services(&["up", "temporal-cluster"]).await,
        }
    }

    async fn stop(&mut self) -> Result<()> {
        match self {
            Self::Private(temporal) => temporal.stop().await,
            Self::Cluster => services(&["down", "temporal-cluster"]).await,
        }
    }

    /// Done with it: a private dev server is stopped, the shared cluster stays up.
    async fn finish(&mut self) -> Result<()> {
        match self {
            Self::Private(temporal) => temporal.stop().await,
            Self::Cluster => Ok(()),
        }
    }
}

impl Outage {
    /// While it is stopped, deletes from its database every task that concerns the workflows
    /// whose ids contain `marker` (a stack's company id): the workflow tasks the task queue holds
    /// and the history's transfer and timer tasks, as a cluster whose processes die while its
    /// database restarts can lose them. The workflows' histories and states stay. Returns how many
    /// workflow tasks the task queue held for them.
    async fn lose_tasks(&self, marker: &str) -> Result<u64> {
        use sqlx::Connection as _;
        const HISTORY_TASKS: [&str; 4] =
            ["transfer_tasks", "timer_tasks", "history_immediate_tasks", "history_scheduled_tasks"];
        const QUEUE_TASKS: [&str; 2] = ["tasks", "tasks_v2"];
        // The same deletion on either database, in its dialect: the tables this Temporal version
        // has, and the rows whose blob contains `marker`. Returns the task queue's rows deleted.
        macro_rules! delete_tasks {
            ($db:expr, $exists:literal, $contains:literal) => {{
                let mut queued = 0;
                for table in QUEUE_TASKS.iter().chain(&HISTORY_TASKS) {
                    let exists: i64 = sqlx::query_scalar($exists).bind(table).fetch_one(&mut $db).await?;
                    if exists == 0 {
                        continue;
                    }
                    let delete = format!("DELETE FROM {table} WHERE {}", $contains);
                    let deleted =
                        sqlx::query(sqlx::AssertSqlSafe(delete)).bind(marker).execute(&mut $db).await?.rows_affected();
                    if QUEUE_TASKS.contains(table) {
                        queued += deleted;
                    }
                }
                $db.close().await?;
                queued
            }};
        }
        Ok(match self {
            Self::Private(temporal) => {
                let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", temporal.db.display())).await?;
                delete_tasks!(
                    db,
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
                    "instr(data, CAST(? AS BLOB)) > 0"
                )
            }
            Self::Cluster => {
                let admin = service_setting("ETTER_TEST__POSTGRES_ADMIN_URL", "postgres")?;
                let (base, _) = admin.rsplit_once('/').context("admin URL without a database")?;
                let mut db = sqlx::PgConnection::connect(&format!("{base}/temporal")).await?;
                delete_tasks!(
                    db,
                    "SELECT count(*) FROM information_schema.tables WHERE table_name = $1",
                    "position(convert_to($1, 'UTF8') IN data) > 0"
                )
            }
        })
    }
}

/// Takes one workflow task of `task_queue` as a worker would, and never answers it: the task
/// stays STARTED until its timeout fires. `settings` are the binaries' own over the stack's.
async fn take_a_workflow_task(stack: &Stack, settings: &[(&str, &str)], task_queue: &str) -> Result<String> {
    use temporalio_common::protos::temporal::api::{
        enums::v1::TaskQueueKind, taskqueue::v1::TaskQueue, workflowservice::v1::PollWorkflowTaskQueueRequest,
    };
    let setting = |key: &str| {
        let own = settings.iter().find(|(k, _)| *k == key).map(|(_, v)| (*v).to_owned());
        own.or_else(|| stack.env().iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    };
    let config = etter_temporal::TemporalConfig {
        address: setting("ETTER_TEMPORAL__ADDRESS").context("the stack names no Temporal")?,
        namespace: setting("ETTER_TEMPORAL__NAMESPACE").context("the stack names no namespace")?,
        tls: etter_config::tls::ClientTls {
            ca_file: setting("ETTER_TEMPORAL__TLS__CA_FILE").map(Into::into).unwrap_or_default(),
            cert_file: setting("ETTER_TEMPORAL__TLS__CERT_FILE").map(Into::into).unwrap_or_default(),
            key_file: setting("ETTER_TEMPORAL__TLS__KEY_FILE").map(Into::into).unwrap_or_default(),
            ..Default::default()
        },
        api_key: setting("ETTER_TEMPORAL__API_KEY").as_deref().map(Into::into).unwrap_or_default(),
        ..Default::default()
    };
    let endpoint = etter_temporal::Endpoint::from_config(&config)?;
    let connection = endpoint.connect("a test that never answers".to_owned(), None).await?;
    let mut service = connection.workflow_service();
    let request = PollWorkflowTaskQueueRequest {
        namespace: config.namespace.clone(),
        task_queue: Some(TaskQueue {
            name: task_queue.to_owned(),
            kind: TaskQueueKind::Normal as i32,
            normal_name: String::new(),
        }),
        identity: "a test that never answers".to_owned(),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let task = service.poll_workflow_task_queue(tonic::Request::new(request.clone())).await?.into_inner();
        if let Some(execution) = task.workflow_execution {
            return Ok(execution.workflow_id);
        }
        ensure!(tokio::time::Instant::now() < deadline, "no workflow task reached the test's poll");
    }
}

/// Runs `scripts/services` with `args`.
async fn services(args: &[&str]) -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services");
    let out =
        Command::new(&script).args(args).output().await.with_context(|| format!("running {}", script.display()))?;
    ensure!(
        out.status.success(),
        "scripts/services {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn push_request(stack: &Stack, role: &str, jd: &str) -> PushRequest {
    PushRequest {
        company_id: stack.company.clone(),
        role_name: role.to_owned(),
        documents: vec![Document {
            r#type: DocumentType::JobDescription as i32,
            uri: jd.to_owned(),
            ..Default::default()
        }],
        draup_role_id: "draup-role-31".to_owned(),
        options: Some(RunOptions { skip_enhancement_workflows: true, ..Default::default() }),
        request_id: String::new(),
        validate_only: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_during_a_temporal_outage_are_queued_and_run_once_after_it() -> Result<()> {
    let stack = Stack::new("outage").await?;
    let mut temporal = Outage::new(stack.root())?;
    temporal.start().await?;
    let mut owned = temporal.settings();
    owned.extend([
        ("ETTER_DISPATCH__TEMPORAL_TIMEOUT", "2s".to_owned()),
        ("ETTER_DISPATCH__RETRY_MAX_BACKOFF", "1s".to_owned()),
        ("ETTER_SERVER__HEALTH_CHECK_INTERVAL", "500ms".to_owned()),
    ]);
    let settings: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = stack.start_server_with(&settings).await?;
    let worker = stack.start_worker(&settings).await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;

    // Up: a run goes through.
    let before = client.push(push_request(&stack, "Outage Engineer 0", &jd)).await?.into_inner().workflow_id;
    ensure!(wait_final(&mut client, &before, Duration::from_secs(120)).await? == RoleStatus::Ready);

    // Down: pushes are accepted and stay QUEUED; health says why.
    temporal.stop().await?;
    stack.wait_health(&server, "etter.temporal", ServingStatus::NotServing, Duration::from_secs(30)).await?;
    let mut queued = Vec::new();
    for n in 1..=WHILE_DOWN {
        let pushed = client.push(push_request(&stack, &format!("Outage Engineer {n}"), &jd)).await?.into_inner();
        ensure!(pushed.created, "{pushed:?}");
        queued.push(pushed.workflow_id);
    }
    // Several dispatch attempts later, nothing moved and nothing is lost.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for run in &queued {
        let request = GetStatusRequest { target: Some(get_status_request::Target::WorkflowId(run.clone())) };
        let status = client.get_status(request).await?.into_inner().run.context("GetStatus without a run")?;
        ensure!(status.status == RoleStatus::Queued as i32, "while Temporal is down: {status:?}");
    }
    ensure!(
        stack.health(&server, "etter.pipeline.v1.PipelineService").await? == Some(ServingStatus::Serving),
        "the pipeline keeps accepting pushes"
    );

    // Back: every queued run is dispatched and ends READY.
    temporal.start().await?;
    for run in &queued {
        let end = wait_final(&mut client, run, Duration::from_secs(240)).await?;
        ensure!(end == RoleStatus::Ready, "{run} ended {end:?}");
    }

    // Exactly one run per role: none lost, none started twice.
    let history = client
        .history(HistoryRequest { company_id: stack.company.clone(), page_size: 100, ..Default::default() })
        .await?
        .into_inner();
    let runs: BTreeSet<String> = history.runs.iter().map(|r| r.workflow_id.clone()).collect();
    let expected: BTreeSet<String> = queued.iter().cloned().chain([before]).collect();
    ensure!(runs == expected, "history {runs:#?}\nvs pushed {expected:#?}");
    ensure!(history.runs.iter().all(|r| r.workflow_id.ends_with("-1")), "a role ran twice: {runs:#?}");

    worker.stop().await?;
    server.stop().await?;
    temporal.finish().await?;
    stack.cleanup().await
}

/// Temporal loses workflow tasks across a crash: one that a worker had taken (its timeout timer
/// is gone, so it stays STARTED) and one that was only scheduled (the task queue no longer holds
/// it, so it stays SCHEDULED). Neither workflow would move again; the reconciler finds both
/// standing past `dispatch.stuck_workflow_task_after` while a worker polls, has them handed out
/// again, and both runs end READY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_tasks_temporal_lost_in_a_crash_are_handed_out_again_and_the_runs_end_ready() -> Result<()> {
    let stack = Stack::new("lost_tasks").await?;
    let mut temporal = Outage::new(stack.root())?;
    temporal.start().await?;
    let mut owned = temporal.settings();
    owned.extend([
        ("ETTER_DISPATCH__RECONCILE_INTERVAL", "500ms".to_owned()),
        ("ETTER_DISPATCH__STUCK_WORKFLOW_TASK_AFTER", "3s".to_owned()),
        ("ETTER_DISPATCH__TEMPORAL_TIMEOUT", "2s".to_owned()),
        ("ETTER_DISPATCH__RETRY_MAX_BACKOFF", "1s".to_owned()),
    ]);
    let settings: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = stack.start_server_with(&settings).await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;

    // No worker yet: both workflows start and wait for their first workflow task; the test takes
    // one of them as a worker would and never answers.
    let mut runs = Vec::new();
    for role in ["Lost Started Engineer", "Lost Scheduled Engineer"] {
        runs.push(client.push(push_request(&stack, role, &jd)).await?.into_inner().workflow_id);
    }
    for run in &runs {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let request = GetStatusRequest { target: Some(get_status_request::Target::WorkflowId(run.clone())) };
            let status = client.get_status(request).await?.into_inner().run.context("GetStatus without a run")?;
            if status.status == RoleStatus::Processing as i32 {
                break;
            }
            ensure!(tokio::time::Instant::now() < deadline, "{run} was not started: {status:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let taken = take_a_workflow_task(&stack, &settings, &stack.task_queue).await?;
    ensure!(runs.contains(&taken), "the test took a workflow task of {taken}, not of its runs {runs:?}");

    // The crash: Temporal is killed and comes back without those tasks.
    temporal.stop().await?;
    let lost = temporal.lose_tasks(&stack.company).await?;
    ensure!(lost >= 1, "the scheduled workflow task was not in the task queue's table: the test lost nothing");
    temporal.start().await?;

    let worker = stack.start_worker(&settings).await?;
    for run in &runs {
        let end = wait_final(&mut client, run, Duration::from_secs(180)).await?;
        ensure!(end == RoleStatus::Ready, "{run} ended {end:?}");
    }
    let log = server.log_text()?;
    for state in ["STARTED", "SCHEDULED"] {
        ensure!(
            log.lines().any(|l| l.contains("was handed out again") && l.contains(state)),
            "the server did not say it handed out a {state} workflow task again"
        );
    }

    worker.stop().await?;
    server.stop().await?;
    temporal.finish().await?;
    stack.cleanup().await
}
