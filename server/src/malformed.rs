//! A request that is not valid protobuf (a string field holding invalid UTF-8, a truncated
//! varint, a wrong wire type) is the client's fault: `INVALID_ARGUMENT`, never `INTERNAL`.
//!
//! tonic's protobuf codec answers a message it cannot decode `INTERNAL` ("failed to decode
//! Protobuf message: …"), before any handler runs. This layer, inside the trace layer, turns
//! that answer into `INVALID_ARGUMENT` with the decoder's words, and treats the call as any
//! refused input: counted (`etter_calls_refused_total`), recorded in the audit log with its
//! caller (authenticated again from its metadata, which only happens on this path), and
//! counted against the caller's and address's budget of refused calls.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderMap, HeaderValue, Request, Response};
use tonic::Code;

use crate::{audit, auth::Authenticator};

/// How tonic's decoder starts the message of an undecodable request.
const DECODE_FAILURE: &str = "failed to decode Protobuf message";

/// Turns decode failures into `INVALID_ARGUMENT` (see the module docs).
#[derive(Clone)]
pub struct MalformedLayer {
    /// Where refusals are recorded (and counted).
    pub audit: audit::AuditLog,
    /// Tells who sent a malformed request.
    pub authenticator: Authenticator,
}

impl<S> tower::Layer<S> for MalformedLayer {
    type Service = Malformed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Malformed { inner, layer: self.clone() }
    }
}

/// The service [`MalformedLayer`] wraps.
#[derive(Clone)]
pub struct Malformed<S> {
    inner: S,
    layer: MalformedLayer,
}

/// The grpc-message of a decode failure, if `headers` (a trailers-only answer) carry one.
fn decode_failure(headers: &HeaderMap) -> Option<String> {
    if headers.get("grpc-status").is_none_or(|s| s.as_bytes() != b"13") {
        return None;
    }
    let message = headers.get("grpc-message")?.to_str().ok()?;
    let message = percent_decode(message);
    message.starts_with(DECODE_FAILURE).then_some(message)
}

/// grpc-message is percent-encoded (gRPC over HTTP/2).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = value.get(i + 1..i + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `message` as grpc-message carries it.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl<S, B, R> tower::Service<Request<B>> for Malformed<S>
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

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // What the audit entry needs, should the call turn out malformed: cheap clones (the
        // bearer token's header only; the caller is authenticated again only on that path).
        let authorization = request.headers().get(http::header::AUTHORIZATION).cloned();
        let method = request.uri().path().rsplit('/').next().unwrap_or_default().to_owned();
        let call = audit::Call {
            principal: None,
            trace_id: request.extensions().get::<etter_core::ids::TraceId>().cloned(),
            peer: request
                .extensions()
                .get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|info| info.remote_addr())
                .map(|addr| addr.ip().to_string()),
        };
        let layer = self.layer.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            if let Some(detail) = decode_failure(response.headers()) {
                let message = format!(
                    "the request is not a valid {method} message ({}); send a well-formed protobuf message",
                    detail.trim_start_matches(DECODE_FAILURE).trim_start_matches(':').trim()
                );
                let headers = response.headers_mut();
                headers.insert("grpc-status", HeaderValue::from(Code::InvalidArgument as i32));
                if let Ok(value) = HeaderValue::from_str(&percent_encode(&message)) {
                    headers.insert("grpc-message", value);
                }
                let mut headers = HeaderMap::new();
                if let Some(value) = authorization {
                    headers.insert(http::header::AUTHORIZATION, value);
                }
                let metadata = tonic::metadata::MetadataMap::from_headers(headers);
                let call = audit::Call { principal: layer.authenticator.authenticate(&metadata).ok(), ..call };
                let status: Result<tonic::Response<()>, tonic::Status> = Err(tonic::Status::invalid_argument(message));
                let mutating = matches!(method.as_str(), "Push" | "PushBatch" | "Retry" | "Cancel");
                layer.audit.record(&call, &method, mutating, audit::Subject::default(), &status);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_round_trip_through_percent_encoding() {
        let message =
            "failed to decode Protobuf message: PushRequest.role_name: invalid string value: data is not UTF-8 encoded";
        assert_eq!(percent_decode(&percent_encode(message)), message);
        assert_eq!(percent_decode("100%25 caf%C3%A9"), "100% café");
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("13"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_str(&percent_encode(message)).unwrap_or(HeaderValue::from_static("")),
        );
        assert_eq!(decode_failure(&headers).as_deref(), Some(message));
        headers.insert("grpc-status", HeaderValue::from_static("14"));
        assert_eq!(decode_failure(&headers), None, "only INTERNAL decode failures are the client's");
    }
}
