//! `etter.pipeline.v1.PipelineService`: thin tonic handlers over the control plane's logic.

use std::pin::Pin;

use etter_proto::v1::{
    CancelRequest, CancelResponse, GetStatusRequest, GetStatusResponse, HistoryRequest, HistoryResponse,
    PushBatchRequest, PushBatchResponse, PushRequest, PushResponse, RetryRequest, RetryResponse, WatchStatusRequest,
    WatchStatusResponse, pipeline_service_server::PipelineService,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::error::ApiError;

/// The stream type of `WatchStatus`.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchStatusResponse, Status>> + Send + 'static>>;

/// The service. Every RPC of the contract is routed here; until the pipeline lands they answer
/// `UNIMPLEMENTED` with an `ErrorInfo`.
#[derive(Debug, Default)]
pub struct PipelineApi {}

impl PipelineApi {
    /// A service with no state yet.
    pub fn new() -> Self {
        Self {}
    }
}

fn not_yet(rpc: &'static str) -> Status {
    ApiError::Unimplemented { rpc, detail: "this server serves the contract, health and reflection only" }.into()
}

#[tonic::async_trait]
impl PipelineService for PipelineApi {
    async fn push(&self, _request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        Err(not_yet("Push"))
    }

    async fn push_batch(&self, _request: Request<PushBatchRequest>) -> Result<Response<PushBatchResponse>, Status> {
        Err(not_yet("PushBatch"))
    }

    async fn get_status(&self, _request: Request<GetStatusRequest>) -> Result<Response<GetStatusResponse>, Status> {
        Err(not_yet("GetStatus"))
    }

    type WatchStatusStream = WatchStream;

    async fn watch_status(
        &self,
        _request: Request<WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        Err(not_yet("WatchStatus"))
    }

    async fn retry(&self, _request: Request<RetryRequest>) -> Result<Response<RetryResponse>, Status> {
        Err(not_yet("Retry"))
    }

    async fn cancel(&self, _request: Request<CancelRequest>) -> Result<Response<CancelResponse>, Status> {
        Err(not_yet("Cancel"))
    }

    async fn history(&self, _request: Request<HistoryRequest>) -> Result<Response<HistoryResponse>, Status> {
        Err(not_yet("History"))
    }
}
