//! A benchmark's deployment: the e2e suites' [`Stack`] with production timings (not the tests'
//! fast polls), guards and audit on, limits raised only where a scenario would otherwise measure a
//! refusal.

use std::time::Duration;

use anyhow::{Context as _, Result};
use etter_proto::v1::{
    Document, DocumentType, GetStatusRequest, PushBatchItem, PushBatchRequest, RunStatus, get_status_request::Target,
};
use etter_tests::stack::{Client, Process, Profile, Stack};

/// The test harness's fast timings, reset to the production defaults for benchmarks.
const TEST_TIMINGS: [&str; 5] = [
    "ETTER_SERVER__WATCH_POLL_INTERVAL",
    "ETTER_SERVER__WATCH_HEARTBEAT_INTERVAL",
    "ETTER_DISPATCH__POLL_INTERVAL",
    "ETTER_WORKER__HEARTBEAT_TIMEOUT",
    "ETTER_WORKER__RETRY_INITIAL_INTERVAL",
];

/// A running server (and worker, when the scenario processes runs) of one profile.
pub struct Deployment {
    /// The stack (company, documents root, environment).
    pub stack: Stack,
    /// `etter-server serve`.
    pub server: Process,
    /// `etter-worker run`, when started.
    pub worker: Option<Process>,
    /// An operator of the stack's company, through the server's full guard chain.
    pub client: Client,
    /// A document every pushed role refers to.
    pub document: Document,
}

impl Deployment {
    /// Starts a server (and a worker when `worker`) in `profile` with `env` over the defaults.
    pub async fn start(scenario: &str, profile: Profile, worker: bool, env: &[(&str, &str)]) -> Result<Self> {
        let mut stack = Stack::with_profile(&format!("bench_{scenario}"), profile).await?;
        for key in TEST_TIMINGS {
            stack.unset(key);
        }
        // Rate limits stay on (every call is checked) at a rate the load never reaches, so the
        // benchmark measures the check, not a refusal.
        stack.set("ETTER_LIMITS__CALLS_PER_MINUTE", "100000000");
        stack.set("ETTER_LIMITS__BURST", "10000000");
        stack.set("ETTER_LIMITS__REFUSED_PER_MINUTE", "100000000");
        for (key, value) in env {
            stack.set(key, *value);
        }
        let uri = stack.document("software_engineer_jd.txt")?;
        let document = Document { uri, r#type: DocumentType::JobDescription as i32, ..Default::default() };
        let worker = if worker { Some(stack.start_worker(&[]).await?) } else { None };
        let server = stack.start_server().await?;
        let client = stack.client(&server).await?;
        Ok(Self { stack, server, worker, client, document })
    }

    /// The server's process id.
    pub fn server_pid(&self) -> Result<u32> {
        self.server.pid().context("etter-server has exited")
    }

    /// The worker's process id.
    pub fn worker_pid(&self) -> Result<u32> {
        self.worker.as_ref().and_then(Process::pid).context("no etter-worker is running")
    }

    /// The status of `workflow_id`.
    pub async fn status(&self, workflow_id: &str) -> Result<RunStatus> {
        let request = GetStatusRequest { target: Some(Target::WorkflowId(workflow_id.to_owned())) };
        self.client.clone().get_status(request).await?.into_inner().run.context("GetStatus without a run")
    }

    /// A batch of `count` roles of the company, each named by `name` and referring to the
    /// deployment's document, with a request id of its own.
    pub fn batch(&self, count: usize, name: impl Fn(usize) -> String) -> PushBatchRequest {
        PushBatchRequest {
            company_id: self.stack.company.clone(),
            items: (0..count)
                .map(|i| PushBatchItem {
                    role_name: name(i),
                    documents: vec![self.document.clone()],
                    draup_role_id: format!("draup-role-{i}"),
                    client_ref: (i + 2).to_string(),
                    ..PushBatchItem::default()
                })
                .collect(),
            request_id: etter_tests::unique_name("batch"),
            ..PushBatchRequest::default()
        }
    }

    /// The file of [`Deployment::document`], on the documents root.
    pub fn document_path(&self) -> Result<std::path::PathBuf> {
        let path = self.document.uri.strip_prefix("file://").context("the document is not a file:// URI")?;
        Ok(std::path::PathBuf::from(path))
    }

    /// Stops the processes and removes the stack's database and files.
    pub async fn stop(self) -> Result<()> {
        self.server.stop().await?;
        if let Some(worker) = self.worker {
            worker.stop().await?;
        }
        self.stack.cleanup().await
    }
}

/// Polls `check` every 100 ms until it answers `Some`, for at most `within`.
pub async fn poll<T, F, Fut>(what: &str, within: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
