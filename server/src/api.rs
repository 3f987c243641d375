//! `etter.pipeline.v1.PipelineService`: thin tonic handlers over the control plane's logic.

use std::sync::Arc;

use crate::config::Config;
use crate::orchestrator::Orchestrator;
use etter_proto::v1::{
    BatchItemOutcome, CancelRequest, CancelResponse, CompareRunsRequest, CompareRunsResponse, GetStatusRequest,
    GetStatusResponse, GetUsageRequest, GetUsageResponse, HistoryRequest, HistoryResponse, ListAuditEntriesRequest,
    ListAuditEntriesResponse, PushBatchRequest, PushBatchResponse, PushRequest, PushResponse, RetryRequest,
    RetryResponse, RoleStatus, WatchStatusRequest, pipeline_service_server::PipelineService,
};
use etter_store::RunStore;
use etter_store::fanout;
use etter_telemetry::metrics as observe;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::dispatch::Dispatcher;
use crate::estimate::Estimator;
use crate::limits::Limits;
use crate::tokens::TokenKeys;
use crate::{
    audit, batch, cancel, compare,
    graph::GraphReader,
    history, principal, push, retry, status, trace, usage,
    watch::{
        self as watching,
        wire::{Frame, FrameCodec, FrameStream, WatchStream},
    },
};

/// The service and what its handlers share.
pub struct PipelineApi {
    /// The run store.
    pub store: Arc<dyn RunStore>,
    /// Cancel stops running workflows through it.
    pub orchestrator: Arc<dyn Orchestrator>,
    /// Finished roles' outputs summaries.
    pub graph: Arc<GraphReader>,
    /// The configuration.
    pub config: Arc<Config>,
    /// ETAs and token estimates.
    pub estimator: Arc<Estimator>,
    /// Starts queued runs: offered each run a push or a retry creates, woken when a batch queued some.
    pub dispatcher: Arc<Dispatcher>,
    /// Checks the documents of VALIDATING runs; woken when a batch stored some.
    pub checker: Arc<crate::document_checks::Checker>,
    /// Turns true when the server drains (watch streams end).
    pub drain: watch::Receiver<bool>,
    /// Wakes watch streams when runs move.
    pub moved: fanout::Hub,
    /// Calls per minute and queued-run caps per company.
    pub limits: Arc<Limits>,
    /// Where calls are recorded.
    pub audit: audit::AuditLog,
    /// Store reads the watch streams share.
    pub watch_reads: Arc<watching::SharedReads>,
    /// Step attempts kept from earlier status reads.
    pub kept_steps: Arc<status::KeptSteps>,
    /// Ended runs kept for `GetStatus` (forgotten as they move).
    pub ended_runs: Arc<status::EndedRuns>,
    /// The keys that seal the tokens clients hold (resume and page tokens).
    pub tokens: Arc<TokenKeys>,
    /// Pushed documents are checked through it before their runs are queued.
    pub documents: Arc<etter_documents::Documents>,
}

impl PipelineApi {
    /// `WatchStatus`: validates, authorizes and audits the request, then streams frames.
    pub async fn watch_frames(&self, request: Request<WatchStatusRequest>) -> Result<Response<FrameStream>, Status> {
        use etter_proto::v1::watch_status_request::Scope;
        let call = audit::Call::of(&request);
        let subject = match &request.get_ref().scope {
            Some(Scope::CompanyId(id)) => {
                audit::Subject { company: Some(id.clone()), target: id.clone(), ..Default::default() }
            }
            Some(Scope::WorkflowId(id) | Scope::BatchId(id)) => {
                audit::Subject { target: id.clone(), ..Default::default() }
            }
            None => audit::Subject::default(),
        };
        let result = async {
            let principal = principal::of(&request)?;
            let stream = watching::watch_status(self.watch_context(), &principal, request.into_inner()).await?;
            Ok(Response::new(stream))
        }
        .await;
        self.audit.record(&call, "WatchStatus", false, subject, &result);
        result
    }

    fn watch_context(&self) -> watching::WatchContext {
        watching::WatchContext {
            store: Arc::clone(&self.store),
            graph: Arc::clone(&self.graph),
            config: Arc::clone(&self.config),
            estimator: Arc::clone(&self.estimator),
            settings: watching::WatchSettings {
                poll_interval: self.config.server.watch_poll_interval,
                heartbeat_interval: self.config.server.watch_heartbeat_interval,
                max_lifetime: self.config.server.watch_max_lifetime,
            },
            drain: self.drain.clone(),
            moved: self.moved.clone(),
            limits: Arc::clone(&self.limits),
            shared: Arc::clone(&self.watch_reads),
            kept_steps: Arc::clone(&self.kept_steps),
            tokens: Arc::clone(&self.tokens),
        }
    }
}

#[tonic::async_trait]
impl PipelineService for PipelineApi {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        let call = audit::Call::of(&request);
        let asked = request.get_ref();
        let action = if asked.validate_only { "Push:validate_only" } else { "Push" };
        let mut subject = audit::Subject {
            company: Some(asked.company_id.clone()),
            target: asked.role_name.clone(),
            request_id: asked.request_id.clone(),
        };
        let result = async {
            let principal = principal::of(&request)?;
            let cx = push::PushContext {
                store: self.store.as_ref(),
                documents: &self.documents,
                estimator: &self.estimator,
                trace: trace::request_trace(&request),
                limits: &self.limits,
                dispatcher: &self.dispatcher,
            };
            let quote = request.get_ref().validate_only;
            let response = push::push(&cx, &principal, request.into_inner()).await?;
            if response.created && !quote {
                observe::runs_created("push", 1);
            }
            Ok(Response::new(response))
        }
        .await;
        if let Ok(answer) = &result {
            subject.target.clone_from(&answer.get_ref().workflow_id);
        }
        self.audit.record(&call, action, true, subject, &result);
        result
    }

    async fn push_batch(&self, request: Request<PushBatchRequest>) -> Result<Response<PushBatchResponse>, Status> {
        let call = audit::Call::of(&request);
        let asked = request.get_ref();
        let action = if asked.validate_only { "PushBatch:validate_only" } else { "PushBatch" };
        let mut subject = audit::Subject {
            company: Some(asked.company_id.clone()),
            target: format!("{} items", asked.items.len()),
            request_id: asked.request_id.clone(),
        };
        let result = async {
            let principal = principal::of(&request)?;
            let cx = batch::BatchContext {
                store: self.store.as_ref(),
                documents: &self.documents,
                estimator: &self.estimator,
                max_batch_size: self.config.server.max_batch_size,
                trace: trace::request_trace(&request),
                limits: &self.limits,
            };
            let quote = request.get_ref().validate_only;
            let response = batch::push_batch(&cx, &principal, request.into_inner()).await?;
            if response.created && !quote {
                let accepted = response.items.iter().filter(|i| i.outcome == BatchItemOutcome::Accepted as i32).count();
                observe::runs_created("batch", accepted as u64);
                self.dispatcher.wake();
                if response.items.iter().any(|i| i.status == RoleStatus::Validating as i32) {
                    self.checker.wake();
                }
            }
            Ok(Response::new(response))
        }
        .await;
        if let Ok(answer) = &result {
            subject.target.clone_from(&answer.get_ref().batch_id);
        }
        self.audit.record(&call, action, true, subject, &result);
        result
    }

    async fn get_status(&self, request: Request<GetStatusRequest>) -> Result<Response<GetStatusResponse>, Status> {
        use etter_proto::v1::get_status_request::Target;
        let call = audit::Call::of(&request);
        let target = match &request.get_ref().target {
            Some(Target::WorkflowId(id) | Target::RoleId(id)) => id.clone(),
            None => String::new(),
        };
        let result = async {
            let principal = principal::of(&request)?;
            let cx = status::StatusContext {
                store: self.store.as_ref(),
                estimator: &self.estimator,
                finished: Some(status::Finished { graph: &self.graph, server: &self.config.server }),
                kept: Some(&self.kept_steps),
            };
            let response =
                status::get_status(&cx, &self.ended_runs, &self.limits, &principal, request.into_inner()).await?;
            Ok(Response::new(response))
        }
        .await;
        self.audit.record(&call, "GetStatus", false, audit::Subject { target, ..Default::default() }, &result);
        result
    }

    type WatchStatusStream = WatchStream;

    /// Served by [`WatchRoute`] in the server; this answers other callers the same.
    async fn watch_status(
        &self,
        request: Request<WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        Ok(self.watch_frames(request).await?.map(watching::wire::messages))
    }

    async fn retry(&self, request: Request<RetryRequest>) -> Result<Response<RetryResponse>, Status> {
        use etter_proto::v1::retry_request::Target;
        let call = audit::Call::of(&request);
        let asked = request.get_ref();
        let mut subject = audit::Subject {
            company: None,
            target: match &asked.target {
                Some(Target::WorkflowId(id) | Target::RoleId(id)) => id.clone(),
                None => String::new(),
            },
            request_id: asked.request_id.clone(),
        };
        let result = async {
            let principal = principal::of(&request)?;
            let cx = retry::RetryContext {
                store: self.store.as_ref(),
                estimator: &self.estimator,
                trace: trace::request_trace(&request),
                limits: &self.limits,
                dispatcher: &self.dispatcher,
                models: &self.config.models,
            };
            let response = retry::retry(&cx, &principal, request.into_inner()).await?;
            // A replayed answer's run may be queued still; waking an idle dispatcher is harmless.
            self.dispatcher.wake();
            Ok(Response::new(response))
        }
        .await;
        if let Ok(answer) = &result
            && let Some(run) = &answer.get_ref().run
        {
            subject.company = Some(run.company_id.clone());
        }
        self.audit.record(&call, "Retry", true, subject, &result);
        result
    }

    async fn compare_runs(
        &self,
        request: Request<CompareRunsRequest>,
    ) -> Result<Response<CompareRunsResponse>, Status> {
        let call = audit::Call::of(&request);
        let target = format!("{}..{}", request.get_ref().base_workflow_id, request.get_ref().workflow_id);
        let result = async {
            let principal = principal::of(&request)?;
            let cx = compare::CompareContext {
                store: self.store.as_ref(),
                estimator: &self.estimator,
                limits: &self.limits,
            };
            let response = compare::compare_runs(&cx, &principal, request.into_inner()).await?;
            Ok(Response::new(response))
        }
        .await;
        self.audit.record(&call, "CompareRuns", false, audit::Subject { target, ..Default::default() }, &result);
        result
    }

    async fn cancel(&self, request: Request<CancelRequest>) -> Result<Response<CancelResponse>, Status> {
        let call = audit::Call::of(&request);
        let asked = request.get_ref();
        let mut subject =
            audit::Subject { company: None, target: asked.workflow_id.clone(), request_id: asked.request_id.clone() };
        let result = async {
            let principal = principal::of(&request)?;
            let cx = cancel::CancelContext {
                store: self.store.as_ref(),
                orchestrator: self.orchestrator.as_ref(),
                estimator: &self.estimator,
                limits: &self.limits,
            };
            let response = cancel::cancel(&cx, &principal, request.into_inner()).await?;
            Ok(Response::new(response))
        }
        .await;
        if let Ok(answer) = &result
            && let Some(run) = &answer.get_ref().run
        {
            subject.company = Some(run.company_id.clone());
        }
        self.audit.record(&call, "Cancel", true, subject, &result);
        result
    }

    async fn history(&self, request: Request<HistoryRequest>) -> Result<Response<HistoryResponse>, Status> {
        let call = audit::Call::of(&request);
        let company = request.get_ref().company_id.clone();
        let result = async {
            let principal = principal::of(&request)?;
            let cx = history::HistoryContext {
                tokens: &self.tokens,
                store: self.store.as_ref(),
                estimator: &self.estimator,
                limits: &self.limits,
            };
            let response = history::history(&cx, &principal, request.into_inner()).await?;
            Ok(Response::new(response))
        }
        .await;
        let subject = audit::Subject { company: Some(company.clone()), target: company, ..Default::default() };
        self.audit.record(&call, "History", false, subject, &result);
        result
    }

    async fn get_usage(&self, request: Request<GetUsageRequest>) -> Result<Response<GetUsageResponse>, Status> {
        let call = audit::Call::of(&request);
        let company = request.get_ref().company_id.clone();
        let result = async {
            let principal = principal::of(&request)?;
            let cx =
                usage::UsageContext { store: self.store.as_ref(), limits: &self.limits, estimator: &self.estimator };
            let response = usage::get_usage(&cx, &principal, request.into_inner()).await?;
            Ok(Response::new(response))
        }
        .await;
        let subject = audit::Subject { company: Some(company.clone()), target: company, ..Default::default() };
        self.audit.record(&call, "GetUsage", false, subject, &result);
        result
    }

    async fn list_audit_entries(
        &self,
        request: Request<ListAuditEntriesRequest>,
    ) -> Result<Response<ListAuditEntriesResponse>, Status> {
        let call = audit::Call::of(&request);
        let company = request.get_ref().company_id.clone();
        let result = async {
            let principal = principal::of(&request)?;
            let response = audit::list(self.store.as_ref(), &self.tokens, &principal, request.into_inner()).await?;
            Ok(Response::new(response))
        }
        .await;
        let subject = audit::Subject {
            company: Some(company.clone()).filter(|c| !c.is_empty()),
            target: company,
            ..Default::default()
        };
        self.audit.record(&call, "ListAuditEntries", false, subject, &result);
        result
    }
}

/// Serves `WatchStatus` with the watch's [`FrameCodec`], so shared events go out as encoded
/// once; every other method goes to the generated server.
#[derive(Clone)]
pub struct WatchRoute {
    api: Arc<PipelineApi>,
    max_decoding_message_size: usize,
}

/// The path [`WatchRoute`] serves.
pub const WATCH_PATH: &str = "/etter.pipeline.v1.PipelineService/WatchStatus";

impl WatchRoute {
    /// Serves `api`'s watches, with requests up to `max_decoding_message_size` bytes.
    pub fn new(api: Arc<PipelineApi>, max_decoding_message_size: usize) -> Self {
        Self { api, max_decoding_message_size }
    }
}

struct WatchHandler(Arc<PipelineApi>);

impl tonic::server::ServerStreamingService<WatchStatusRequest> for WatchHandler {
    type Response = Frame;
    type ResponseStream = FrameStream;
    type Future = futures::future::BoxFuture<'static, Result<tonic::Response<FrameStream>, Status>>;

    fn call(&mut self, request: tonic::Request<WatchStatusRequest>) -> Self::Future {
        let api = Arc::clone(&self.0);
        Box::pin(async move { api.watch_frames(request).await })
    }
}

impl<B> tower::Service<http::Request<B>> for WatchRoute
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (api, max) = (Arc::clone(&self.api), self.max_decoding_message_size);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(FrameCodec).apply_max_message_size_config(Some(max), None);
            Ok(grpc.server_streaming(WatchHandler(api), request).await)
        })
    }
}
