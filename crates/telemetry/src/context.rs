//! W3C trace context between processes: a request's span continues its caller's `traceparent`,
//! and a run keeps the `traceparent` of the span that created it, for the span that starts its
//! workflow. Both are no-ops while spans are not exported (no propagator is installed then).

use std::collections::HashMap;

use tracing_opentelemetry::OpenTelemetrySpanExt as _;

const TRACEPARENT: &str = "traceparent";

/// Makes `span`, which must not have been entered yet, a child of the remote span `traceparent`
/// names. Does nothing when spans are not exported or the header is malformed.
pub fn continue_remote(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    // Fails only when the span is disabled or spans are not exported: it then stays a root.
    let _ = span.set_parent(parent);
}

/// The W3C `traceparent` of `span`: its trace id, its span id and whether it is sampled. `None`
/// when spans are not exported.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let mut carrier = HashMap::new();
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut carrier));
    carrier.remove(TRACEPARENT)
}
