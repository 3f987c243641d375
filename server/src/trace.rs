//! The trace id of every request (W3C Trace Context): taken from the caller's `traceparent`
//! header when it is well formed, else a fresh one. Every call runs in a `tracing` span carrying
//! it, answers it in the `etter-trace-id` response header (so a user can quote it), and a run a
//! request creates keeps it: the dispatcher hands it to the workflow, whose activities log their
//! steps under it.
//!
//! When spans are exported (`tracing.otlp_endpoint`), the request's span is that trace's span: a
//! child of the caller's, or the root of a new trace whose id is the one answered. A run keeps the
//! span's `traceparent` too ([`TraceParent`]), and the dispatcher's span that starts its workflow
//! is that span's child, so the workflow and its activities sit in the request's trace.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use etter_core::ids::{TraceId, TraceParent};
use http::{HeaderName, HeaderValue, Request, Response};
use tracing::Instrument as _;

/// The request header a trace id arrives in.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The response header that answers the request's trace id.
pub const TRACE_ID_HEADER: HeaderName = HeaderName::from_static("etter-trace-id");

/// The RPC a request calls (the last segment of its path: `Push`, `Cancel`, …), for the layers
/// and interceptors inside [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct Method(pub String);

/// The trace id of a request that went through [`TraceLayer`].
pub fn of<T>(request: &tonic::Request<T>) -> Option<TraceId> {
    request.extensions().get::<TraceId>().cloned()
}

/// What a run keeps of the request that created it: the trace id and, when spans are exported,
/// the `traceparent` of the request's span.
#[derive(Debug, Clone, Default)]
pub struct RequestTrace {
    /// The request's trace id.
    pub id: Option<TraceId>,
    /// The request span's `traceparent`.
    pub parent: Option<TraceParent>,
}

/// The [`RequestTrace`] of a request that went through [`TraceLayer`].
pub fn request_trace<T>(request: &tonic::Request<T>) -> RequestTrace {
    RequestTrace { id: of(request), parent: request.extensions().get::<TraceParent>().cloned() }
}

/// Gives every request a trace id and a span (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Traced { inner }
    }
}

/// The service [`TraceLayer`] wraps.
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
}

impl<S, B, R> tower::Service<Request<B>> for Traced<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let method = request.uri().path().rsplit('/').next().unwrap_or_default().to_owned();
        let span = tracing::info_span!(
            "rpc",
            otel.name = %method,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %request.uri().path(),
            trace_id = tracing::field::Empty,
        );
        let given = request.headers().get(&TRACEPARENT).and_then(|v| v.to_str().ok());
        if let Some(header) = given {
            etter_telemetry::context::continue_remote(&span, header);
        }
        // With spans exported, the span's own trace (the caller's, or the one it starts);
        // otherwise the caller's, or a fresh one.
        let parent = etter_telemetry::context::traceparent_of(&span).and_then(|p| TraceParent::parse(&p).ok());
        let trace = match &parent {
            Some(parent) => parent.trace_id(),
            None => {
                given.and_then(TraceId::from_traceparent).unwrap_or_else(|| TraceId::from_random(crate::random_u128()))
            }
        };
        span.record("trace_id", trace.as_str());
        let answer = HeaderValue::from_str(trace.as_str()).ok();
        request.extensions_mut().insert(trace);
        if let Some(parent) = parent {
            request.extensions_mut().insert(parent);
        }
        request.extensions_mut().insert(Method(method));
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let mut response = future.await?;
                if let Some(value) = answer {
                    response.headers_mut().insert(TRACE_ID_HEADER, value);
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}
