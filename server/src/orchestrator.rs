//! How the server starts and inspects onboarding workflows, without knowing the worker.
//!
//! [`Orchestrator`] is the interface the server's dispatcher and reconciler use: start the
//! [`ROLE_ONBOARDING_WORKFLOW`](crate::workflow::ROLE_ONBOARDING_WORKFLOW) of a run by name, ask
//! whether a run's workflow is still running, and ask it to cancel (`Cancel`). [`TemporalOrchestrator`] (cargo feature
//! `temporal`) implements it with `temporalio-client`.
//!
//! **Starting twice is harmless.** A start uses the run's workflow id with conflict policy
//! *use-existing* (a retried start while the workflow runs joins it) and reuse policy
//! *reject-duplicate* (a start after it closed is refused, reported as
//! [`StartOutcome::AlreadyClosed`]): a dispatcher that crashed between the start and its
//! bookkeeping can start again, and never runs a workflow twice.

use async_trait::async_trait;

use etter_core::{ids::WorkflowId, workflow::RoleOnboardingInput};

/// What a start did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// The workflow is running: started by this call, or already running from an earlier start.
    Running {
        /// Temporal's run id of the execution.
        run_id: Option<String>,
    },
    /// A workflow with this id ran and has closed: it is never started again.
    AlreadyClosed,
}

/// How a closed workflow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedStatus {
    /// It returned.
    Completed,
    /// It failed (its code raised a failure).
    Failed,
    /// It was cancelled.
    Cancelled,
    /// An operator or tool terminated it.
    Terminated,
    /// It ran past its execution timeout.
    TimedOut,
    /// It continued as new (the onboarding workflow never does).
    ContinuedAsNew,
    /// A status this version does not know.
    Other,
}

impl ClosedStatus {
    /// A stable UPPER_SNAKE_CASE name (`TERMINATED`, …) for errors and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ClosedStatus::Completed => "COMPLETED",
            ClosedStatus::Failed => "FAILED",
            ClosedStatus::Cancelled => "CANCELLED",
            ClosedStatus::Terminated => "TERMINATED",
            ClosedStatus::TimedOut => "TIMED_OUT",
            ClosedStatus::ContinuedAsNew => "CONTINUED_AS_NEW",
            ClosedStatus::Other => "UNKNOWN",
        }
    }
}

/// Where a run's workflow stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowState {
    /// Still running (or paused).
    Running,
    /// Closed, with how.
    Closed(ClosedStatus),
    /// No workflow with this id exists (never started, or deleted after retention).
    NotFound,
}

/// Where a workflow task stands that the cluster holds without progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Scheduled, and never handed to a worker.
    Scheduled,
    /// Handed to a worker, and neither answered nor timed out.
    Started,
}

impl TaskState {
    /// `SCHEDULED` or `STARTED`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Scheduled => "SCHEDULED",
            TaskState::Started => "STARTED",
        }
    }
}

/// A workflow task that stood still for longer than it may, and was handed out again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StuckTask {
    /// The execution it belongs to: the run's workflow or one of its child workflows.
    pub workflow_id: String,
    /// That execution's run id.
    pub run_id: String,
    /// How it stood.
    pub state: TaskState,
    /// For how long it stood so.
    pub stood: std::time::Duration,
}

/// Whether a workflow task in `state` since `since` has stood for longer than `stuck_after` at
/// `now`, and for how long. A workflow task lives seconds: one a worker took is answered or timed
/// out within its timeout (10 s by default), one scheduled while workers poll is taken at once.
/// One standing for minutes was lost by the cluster, not slowed by it.
pub fn stood_too_long(
    since: std::time::SystemTime,
    now: std::time::SystemTime,
    stuck_after: std::time::Duration,
) -> Option<std::time::Duration> {
    now.duration_since(since).ok().filter(|stood| *stood > stuck_after)
}

/// Why the orchestrator could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrchestratorError {
    /// The orchestrator could not be reached or did not answer in time; try again later.
    #[error("the orchestrator is unavailable: {0}")]
    Unavailable(String),
    /// The orchestrator refused the request for a reason retrying does not fix (a bad
    /// namespace, an input it cannot accept).
    #[error("the orchestrator refused the request: {0}")]
    Rejected(String),
}

/// Starts and inspects onboarding workflows. Object-safe (`Arc<dyn Orchestrator>`).
#[async_trait]
pub trait Orchestrator: Send + Sync {
    /// Starts the onboarding workflow of `input.workflow_id`, or joins it if it is running.
    async fn start_onboarding(&self, input: &RoleOnboardingInput) -> Result<StartOutcome, OrchestratorError>;

    /// Where the workflow of a run stands.
    async fn describe(&self, workflow_id: &WorkflowId) -> Result<WorkflowState, OrchestratorError>;

    /// Asks the workflow of a run to cancel, with `reason` shown in its history. Cancellation
    /// reaches running activities through their heartbeats, and the workflow ends. A workflow that already closed, or never existed, is not an error (there is
    /// nothing left to cancel); asking twice is harmless.
    async fn cancel(&self, workflow_id: &WorkflowId, reason: &str) -> Result<(), OrchestratorError>;

    /// Answers when the orchestrator does (health checks).
    async fn ping(&self) -> Result<(), OrchestratorError>;

    /// Whether a worker polls the onboarding task queue: a poll of workflow or activity tasks
    /// started within `window` (a worker whose activity slots are all busy still polls for
    /// workflow tasks).
    async fn workers_polling(&self, window: std::time::Duration) -> Result<bool, OrchestratorError>;

    /// Finds the workflow tasks of a run's workflow and of its running child workflows that have
    /// stood SCHEDULED or STARTED for longer than `stuck_after`, and asks the cluster to hand each
    /// out again (a cluster whose processes were killed while its database restarted can lose
    /// one, and the workflow would wait for ever). Returns what it handed out again; nothing
    /// stuck is an empty list. Call it only while workers poll: without them a scheduled task
    /// waits legitimately.
    async fn redispatch_stuck(
        &self,
        workflow_id: &WorkflowId,
        stuck_after: std::time::Duration,
    ) -> Result<Vec<StuckTask>, OrchestratorError>;
}

pub use temporal::{TemporalOrchestrator, TemporalSettings};

mod temporal {
    use std::{future::Future, time::Duration};

    use async_trait::async_trait;
    use temporalio_client::{
        Client, NamespacedClient as _, UntypedWorkflow, WorkflowCancelOptions, WorkflowDescribeOptions,
        WorkflowExecutionStatus, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions,
        errors::{WorkflowInteractionError, WorkflowStartError},
        grpc::WorkflowService as _,
        tonic::{self, Code, Status},
    };
    use temporalio_common::{
        MemoValues,
        data_converters::{GenericPayloadConverter as _, RawValue, SerializationContext, SerializationContextData},
        protos::temporal::api::{
            common::v1::WorkflowExecution,
            enums::v1::{PendingWorkflowTaskState, WorkflowExecutionStatus as ProtoStatus},
            enums::v1::{TaskQueueKind, TaskQueueType},
            taskqueue::v1::TaskQueue,
            workflowservice::v1::{
                DescribeNamespaceRequest, DescribeTaskQueueRequest, DescribeWorkflowExecutionRequest,
                DescribeWorkflowExecutionResponse,
            },
        },
    };
    use tokio::sync::{Mutex, OnceCell};

    use super::{
        ClosedStatus, Orchestrator, OrchestratorError, StartOutcome, StuckTask, TaskState, WorkflowState,
        stood_too_long,
    };
    use crate::config::Config;
    use etter_config::ConfigError;
    use etter_core::{
        ids::WorkflowId,
        workflow::{ROLE_ONBOARDING_WORKFLOW, RUN_KEY_MEMO, RoleOnboardingInput},
    };
    use etter_temporal::{AdminClient, Endpoint};

    /// Where and how workflows are started.
    #[derive(Debug, Clone)]
    pub struct TemporalSettings {
        /// The frontend (`temporal.address`, its TLS and API key).
        pub endpoint: Endpoint,
        /// Namespace (`temporal.namespace`).
        pub namespace: String,
        /// Task queue of the onboarding workflows (`temporal.task_queue`).
        pub task_queue: String,
        /// Execution timeout of an onboarding workflow (`temporal.workflow_execution_timeout`).
        pub execution_timeout: Duration,
        /// Longest one call (connecting included) may take before it counts as unavailable.
        pub call_timeout: Duration,
        /// This process, as Temporal shows it.
        pub identity: String,
    }

    impl TemporalSettings {
        /// The settings of `config`, with `call_timeout` and `identity` given by the caller.
        pub fn from_config(
            config: &Config,
            call_timeout: Duration,
            identity: impl Into<String>,
        ) -> Result<Self, ConfigError> {
            Ok(Self {
                endpoint: Endpoint::from_config(&config.temporal)?,
                namespace: config.temporal.namespace.clone(),
                task_queue: config.temporal.task_queue.clone(),
                execution_timeout: config.temporal.workflow_execution_timeout,
                call_timeout,
                identity: identity.into(),
            })
        }
    }

    /// [`Orchestrator`] over a Temporal cluster. Connects on first use and again after a failed
    /// connection, so a server started while Temporal is down starts workflows once it is up.
    pub struct TemporalOrchestrator {
        settings: TemporalSettings,
        client: Mutex<Option<Client>>,
        /// The namespace's id, which the admin service names it by (read once).
        namespace_id: OnceCell<String>,
        /// The admin service's client (made on first use).
        admin: OnceCell<AdminClient>,
    }

    impl std::fmt::Debug for TemporalOrchestrator {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TemporalOrchestrator").field("settings", &self.settings).finish_non_exhaustive()
        }
    }

    impl TemporalOrchestrator {
        /// An orchestrator for `settings`; nothing is connected yet.
        pub fn new(settings: TemporalSettings) -> Self {
            Self { settings, client: Mutex::new(None), namespace_id: OnceCell::new(), admin: OnceCell::new() }
        }

        async fn client(&self) -> Result<Client, OrchestratorError> {
            let mut slot = self.client.lock().await;
            if let Some(client) = slot.as_ref() {
                return Ok(client.clone());
            }
            let endpoint = &self.settings.endpoint;
            let connect = endpoint.connect(self.settings.identity.clone(), Some(self.settings.call_timeout));
            let connection = self
                .bounded("connecting", connect)
                .await?
                .map_err(|e| OrchestratorError::Unavailable(etter_core::error::chain(&e).to_string()))?;
            let client = Client::new(connection, etter_temporal::client_options(&self.settings.namespace))
                .map_err(|e| OrchestratorError::Rejected(format!("cannot create the Temporal client: {e}")))?;
            *slot = Some(client.clone());
            Ok(client)
        }

        /// The namespace's id, read once.
        async fn namespace_id(&self) -> Result<String, OrchestratorError> {
            let read = async {
                let mut client = self.client().await?;
                let request =
                    DescribeNamespaceRequest { namespace: self.settings.namespace.clone(), ..Default::default() };
                let answer = self
                    .bounded("describing the namespace", client.describe_namespace(tonic::Request::new(request)))
                    .await?
                    .map_err(|status| self.refused("describing the namespace", &status))?;
                answer
                    .into_inner()
                    .namespace_info
                    .map(|info| info.id)
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| OrchestratorError::Rejected("the namespace has no id".to_owned()))
            };
            self.namespace_id.get_or_try_init(|| read).await.cloned()
        }

        /// One execution's description, or `None` when it no longer exists.
        async fn describe_execution(
            &self,
            workflow_id: &str,
            run_id: &str,
        ) -> Result<Option<DescribeWorkflowExecutionResponse>, OrchestratorError> {
            let mut client = self.client().await?;
            let request = DescribeWorkflowExecutionRequest {
                namespace: self.settings.namespace.clone(),
                execution: Some(WorkflowExecution { workflow_id: workflow_id.to_owned(), run_id: run_id.to_owned() }),
            };
            let answer = self
                .bounded("describing the workflow", client.describe_workflow_execution(tonic::Request::new(request)))
                .await?;
            match answer {
                Ok(answer) => Ok(Some(answer.into_inner())),
                Err(status) if status.code() == Code::NotFound => Ok(None),
                Err(status) => Err(self.refused("describing the workflow", &status)),
            }
        }

        /// [`rpc_error`], saying which setting to change when the cluster refused the caller.
        fn refused(&self, what: &str, status: &Status) -> OrchestratorError {
            match self.settings.endpoint.refusal_advice(status.code()) {
                Some(advice) => {
                    OrchestratorError::Rejected(format!("{what}: {} ({:?}): {advice}", status.message(), status.code()))
                }
                None => rpc_error(what, status),
            }
        }

        async fn bounded<T>(&self, what: &str, call: impl Future<Output = T>) -> Result<T, OrchestratorError> {
            tokio::time::timeout(self.settings.call_timeout, call).await.map_err(|_| {
                OrchestratorError::Unavailable(format!("{what} did not finish within {:?}", self.settings.call_timeout))
            })
        }

        fn encode(client: &Client, input: &RoleOnboardingInput) -> Result<RawValue, OrchestratorError> {
            let converter = client.data_converter().payload_converter();
            let context = SerializationContext::new(&SerializationContextData::None, converter);
            let payload = converter
                .to_payload(&context, input)
                .map_err(|e| OrchestratorError::Rejected(format!("cannot encode the workflow input: {e}")))?;
            Ok(RawValue::new(vec![payload]))
        }

        async fn closed_one_is_ours(
            &self,
            client: &Client,
            input: &RoleOnboardingInput,
        ) -> Result<bool, OrchestratorError> {
            let key = self.bounded("describing the workflow", memo_run_key(client, &input.workflow_id)).await??;
            Ok(key.is_some_and(|key| !key.is_empty() && key == input.run_key))
        }
    }

    /// gRPC codes that mean "try again later" rather than "this request is wrong".
    fn is_transient(status: &Status) -> bool {
        matches!(
            status.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::Internal
                | Code::Unknown
                | Code::Cancelled
        )
    }

    /// The run key in the memo of the (latest) workflow under `workflow_id`, if it has one.
    /// A closed workflow is this run's own only when the keys match. One without a key (another
    /// store's, or started before keys were kept) is not: at worst a run whose start bookkeeping
    /// was lost runs once more, never a run settled from a stranger's end.
    async fn memo_run_key(client: &Client, workflow_id: &WorkflowId) -> Result<Option<String>, OrchestratorError> {
        let handle = client.get_workflow_handle::<UntypedWorkflow>(workflow_id.to_string());
        match handle.describe(WorkflowDescribeOptions::default()).await {
            Ok(description) => description
                .memo()
                .get::<String>(RUN_KEY_MEMO)
                .map_err(|e| OrchestratorError::Rejected(format!("reading the workflow's memo: {e}"))),
            Err(WorkflowInteractionError::Rpc(status)) => Err(rpc_error("describing the workflow", &status)),
            Err(other) => Err(OrchestratorError::Unavailable(format!("describing the workflow: {other}"))),
        }
    }

    fn rpc_error(what: &str, status: &Status) -> OrchestratorError {
        let message = format!("{what}: {} ({:?})", status.message(), status.code());
        if is_transient(status) {
            OrchestratorError::Unavailable(message)
        } else {
            OrchestratorError::Rejected(message)
        }
    }

    #[async_trait]
    impl Orchestrator for TemporalOrchestrator {
        async fn start_onboarding(&self, input: &RoleOnboardingInput) -> Result<StartOutcome, OrchestratorError> {
            let client = self.client().await?;
            let payload = Self::encode(&client, input)?;
            let options = |reuse| {
                let mut memo = MemoValues::new();
                memo.insert(RUN_KEY_MEMO, input.run_key.clone());
                WorkflowStartOptions::new(self.settings.task_queue.clone(), input.workflow_id.to_string())
                    .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
                    .id_reuse_policy(reuse)
                    .execution_timeout(self.settings.execution_timeout)
                    .memo(memo)
                    .build()
            };
            let start = |reuse| {
                let workflow = UntypedWorkflow::new(ROLE_ONBOARDING_WORKFLOW);
                self.bounded("starting the workflow", client.start_workflow(workflow, payload.clone(), options(reuse)))
            };
            let started = match start(WorkflowIdReusePolicy::RejectDuplicate).await? {
                // A closed workflow has this id: this run's own (its dispatch bookkeeping was
                // lost), or another run store's, whose ids also start at -1. Only ours is settled
                // from its end; another's id is reused for a new execution of this run.
                Err(WorkflowStartError::AlreadyStarted { .. }) => {
                    if self.closed_one_is_ours(&client, input).await? {
                        return Ok(StartOutcome::AlreadyClosed);
                    }
                    tracing::warn!(
                        workflow_id = %input.workflow_id,
                        "a closed workflow of another run store has this id; starting this run's own execution under it"
                    );
                    start(WorkflowIdReusePolicy::AllowDuplicate).await?
                }
                other => other,
            };
            match started {
                Ok(handle) => Ok(StartOutcome::Running { run_id: handle.run_id().map(str::to_owned) }),
                Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(StartOutcome::AlreadyClosed),
                Err(WorkflowStartError::Rpc(status)) => Err(self.refused("starting the workflow", &status)),
                Err(other) => Err(OrchestratorError::Rejected(format!("starting the workflow: {other}"))),
            }
        }

        async fn describe(&self, workflow_id: &WorkflowId) -> Result<WorkflowState, OrchestratorError> {
            let client = self.client().await?;
            let handle = client.get_workflow_handle::<UntypedWorkflow>(workflow_id.to_string());
            let described =
                self.bounded("describing the workflow", handle.describe(WorkflowDescribeOptions::default())).await?;
            let description = match described {
                Ok(description) => description,
                Err(WorkflowInteractionError::NotFound(_)) => return Ok(WorkflowState::NotFound),
                Err(WorkflowInteractionError::Rpc(status)) => {
                    return Err(rpc_error("describing the workflow", &status));
                }
                Err(other) => return Err(OrchestratorError::Unavailable(format!("describing the workflow: {other}"))),
            };
            Ok(match description.status() {
                WorkflowExecutionStatus::Running | WorkflowExecutionStatus::Paused => WorkflowState::Running,
                WorkflowExecutionStatus::Completed => WorkflowState::Closed(ClosedStatus::Completed),
                WorkflowExecutionStatus::Failed => WorkflowState::Closed(ClosedStatus::Failed),
                WorkflowExecutionStatus::Canceled => WorkflowState::Closed(ClosedStatus::Cancelled),
                WorkflowExecutionStatus::Terminated => WorkflowState::Closed(ClosedStatus::Terminated),
                WorkflowExecutionStatus::TimedOut => WorkflowState::Closed(ClosedStatus::TimedOut),
                WorkflowExecutionStatus::ContinuedAsNew => WorkflowState::Closed(ClosedStatus::ContinuedAsNew),
                _ => WorkflowState::Closed(ClosedStatus::Other),
            })
        }

        async fn cancel(&self, workflow_id: &WorkflowId, reason: &str) -> Result<(), OrchestratorError> {
            let client = self.client().await?;
            let handle = client.get_workflow_handle::<UntypedWorkflow>(workflow_id.to_string());
            let options = WorkflowCancelOptions::builder().reason(reason.to_owned()).build();
            match self.bounded("cancelling the workflow", handle.cancel(options)).await? {
                Ok(()) => Ok(()),
                // Closed already (Temporal answers NOT_FOUND for a completed execution) or never
                // started: nothing runs that could be cancelled.
                Err(WorkflowInteractionError::NotFound(_)) => Ok(()),
                Err(WorkflowInteractionError::Rpc(status)) => Err(self.refused("cancelling the workflow", &status)),
                Err(other) => Err(OrchestratorError::Unavailable(format!("cancelling the workflow: {other}"))),
            }
        }

        async fn ping(&self) -> Result<(), OrchestratorError> {
            let mut client = self.client().await?;
            let request = DescribeNamespaceRequest { namespace: self.settings.namespace.clone(), ..Default::default() };
            let answer = self
                .bounded("describing the namespace", client.describe_namespace(tonic::Request::new(request)))
                .await?;
            answer.map(|_| ()).map_err(|status| self.refused("describing the namespace", &status))
        }

        async fn redispatch_stuck(
            &self,
            workflow_id: &WorkflowId,
            stuck_after: Duration,
        ) -> Result<Vec<StuckTask>, OrchestratorError> {
            // The run's workflow, then its pending children and theirs: runs started before the
            // branches moved into the run's workflow have them as children, one level deep; the
            // bound keeps a malformed tree from being walked for ever.
            const MAX_EXECUTIONS: usize = 64;
            let mut pending = vec![(workflow_id.to_string(), String::new())];
            let mut seen = 0;
            let mut stuck = Vec::new();
            while let Some((id, run_id)) = pending.pop() {
                seen += 1;
                if seen > MAX_EXECUTIONS {
                    break;
                }
                let Some(described) = self.describe_execution(&id, &run_id).await? else { continue };
                let running = described
                    .workflow_execution_info
                    .as_ref()
                    .is_some_and(|info| info.status() == ProtoStatus::Running);
                if !running {
                    continue;
                }
                let run_id = described
                    .workflow_execution_info
                    .as_ref()
                    .and_then(|info| info.execution.as_ref())
                    .map(|execution| execution.run_id.clone())
                    .unwrap_or(run_id);
                pending.extend(described.pending_children.iter().map(|c| (c.workflow_id.clone(), c.run_id.clone())));
                let Some(task) = described.pending_workflow_task else { continue };
                let (state, since) = match task.state() {
                    PendingWorkflowTaskState::Scheduled => (TaskState::Scheduled, task.scheduled_time),
                    PendingWorkflowTaskState::Started => (TaskState::Started, task.started_time),
                    PendingWorkflowTaskState::Unspecified => continue,
                };
                let Some(since) = since.and_then(|t| std::time::SystemTime::try_from(t).ok()) else { continue };
                // A started task is the worker's until its timeout: never taken as lost before.
                let timeout = described
                    .execution_config
                    .as_ref()
                    .and_then(|config| config.default_workflow_task_timeout)
                    .and_then(|timeout| Duration::try_from(timeout).ok())
                    .filter(|_| state == TaskState::Started)
                    .unwrap_or_default();
                let now = std::time::SystemTime::now();
                let Some(stood) = stood_too_long(since, now, stuck_after.max(timeout)) else { continue };
                let namespace_id = self.namespace_id().await?;
                let admin = self
                    .admin
                    .get_or_try_init(|| async {
                        self.settings
                            .endpoint
                            .admin(self.settings.call_timeout)
                            .map_err(|e| OrchestratorError::Rejected(e.to_string()))
                    })
                    .await?;
                self.bounded(
                    "refreshing the workflow's tasks",
                    admin.refresh_workflow_tasks(&namespace_id, &id, &run_id),
                )
                .await?
                .map_err(|status| match status.code() {
                    // The admin service answers to the cluster's admin role only, and Temporal
                    // Cloud does not offer it: say so rather than blame the namespace's key.
                    Code::PermissionDenied | Code::Unauthenticated | Code::Unimplemented => {
                        OrchestratorError::Rejected(format!(
                            "refreshing the tasks of workflow {id}: {} ({:?}): the cluster's admin service refuses \
                             these credentials or is not offered; refresh it by hand (`tdbg workflow refresh-tasks`) \
                             or give the server's credentials the admin role",
                            status.message(),
                            status.code()
                        ))
                    }
                    _ => rpc_error("refreshing the workflow's tasks", &status),
                })?;
                stuck.push(StuckTask { workflow_id: id, run_id, state, stood });
            }
            Ok(stuck)
        }

        async fn workers_polling(&self, window: Duration) -> Result<bool, OrchestratorError> {
            let client = self.client().await?;
            let since = std::time::SystemTime::now().checked_sub(window).unwrap_or(std::time::UNIX_EPOCH);
            let describe = |kind: TaskQueueType| {
                let mut client = client.clone();
                let request = DescribeTaskQueueRequest {
                    namespace: self.settings.namespace.clone(),
                    task_queue: Some(TaskQueue {
                        name: self.settings.task_queue.clone(),
                        kind: TaskQueueKind::Normal as i32,
                        normal_name: String::new(),
                    }),
                    task_queue_type: kind as i32,
                    ..Default::default()
                };
                async move { client.describe_task_queue(tonic::Request::new(request)).await }
            };
            let (workflow, activity) = self
                .bounded(
                    "describing the task queue",
                    futures::future::join(describe(TaskQueueType::Workflow), describe(TaskQueueType::Activity)),
                )
                .await?;
            let mut polling = false;
            for answer in [workflow, activity] {
                let answer = answer.map_err(|status| self.refused("describing the task queue", &status))?;
                polling |= answer.into_inner().pollers.iter().any(|poller| {
                    poller
                        .last_access_time
                        .and_then(|t| std::time::SystemTime::try_from(t).ok())
                        .is_some_and(|seen| seen >= since)
                });
            }
            Ok(polling)
        }
    }
}
