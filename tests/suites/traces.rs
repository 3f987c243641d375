//! Spans exported over OTLP to a real OpenTelemetry Collector (`scripts/services up
//! otel-collector`, which writes what it receives to a file): one push gives one trace, rooted at
//! the push's span on the server, through the dispatcher's workflow start and Temporal's headers
//! into the worker's workflows, activities and their store, graph and document calls. Its id is
//! the trace id the server answered and the run keeps.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{Document, DocumentType, PushRequest, RoleStatus};
use etter_tests::service_setting;
use etter_tests::stack::{Stack, run_status, wait_final};

const WITHIN: Duration = Duration::from_secs(120);

/// A caller's span the second push continues. The collector's file outlives a test run, so the
/// caller's trace id is new each run: a second run must not find the first one's spans in it.
fn caller_trace() -> String {
    format!("{:032x}", rand::random::<u128>() | 1)
}
const CALLER_SPAN: &str = "1f2e3d4c5b6a7988";

/// One span as the collector wrote it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
}

/// Every span in the collector's file (one OTLP JSON export request per line).
fn spans_in(file: &str) -> Result<Vec<Span>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
    let mut spans = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let export: serde_json::Value = serde_json::from_str(line).context("a line of the collector's file")?;
        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
            let service = resource["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let text = |key: &str| span[key].as_str().unwrap_or_default().to_owned();
                    spans.push(Span {
                        service: service.clone(),
                        trace_id: text("traceId"),
                        span_id: text("spanId"),
                        parent_span_id: text("parentSpanId"),
                        name: text("name"),
                    });
                }
            }
        }
    }
    Ok(spans)
}

/// The spans of `trace`, once its last activity's span (the run's end, recorded by the worker)
/// has arrived.
async fn trace_of(file: &str, trace: &str) -> Result<Vec<Span>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let spans: Vec<Span> = spans_in(file)?.into_iter().filter(|s| s.trace_id == trace).collect();
        if spans.iter().any(|s| s.name == "RunActivity:RecordOutcome") || tokio::time::Instant::now() > deadline {
            return Ok(spans);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn named<'a>(spans: &'a [Span], name: &str) -> Result<&'a Span> {
    spans.iter().find(|s| s.name == name).with_context(|| {
        let names: BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        format!("no span {name} in the trace; it has {names:?}")
    })
}

/// Checks the trace of one run: both binaries, one tree rooted at the push's span (whose own
/// parent is `caller`, a span of another process, or none), the dispatcher's start under the push,
/// the worker's workflow under the start, and each step's activity with its calls.
fn check_trace(spans: &[Span], caller: Option<&str>) -> Result<()> {
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    ensure!(services == BTreeSet::from(["etter-server", "etter-worker"]), "services in the trace: {services:?}");
    let ids: BTreeMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let roots: Vec<&Span> = spans.iter().filter(|s| !ids.contains_key(s.parent_span_id.as_str())).collect();
    ensure!(roots.len() == 1, "one tree, rooted at the push; roots: {roots:#?}");
    let push = roots[0];
    ensure!(push.name == "Push" && push.service == "etter-server", "the root: {push:?}");
    ensure!(push.parent_span_id == caller.unwrap_or_default(), "the push's parent: {push:?}, caller {caller:?}");

    let dispatch = named(spans, "Dispatch")?;
    ensure!(dispatch.parent_span_id == push.span_id, "the dispatcher's span is the push's child: {dispatch:?}");
    let start = named(spans, "StartWorkflow:RoleOnboardingWorkflow")?;
    ensure!(start.parent_span_id == dispatch.span_id, "the start is the dispatcher's: {start:?}");
    let workflow = named(spans, "RunWorkflow:RoleOnboardingWorkflow")?;
    ensure!(
        workflow.parent_span_id == start.span_id && workflow.service == "etter-worker",
        "the worker's workflow continues the start through Temporal: {workflow:?}"
    );
    // A step's span (named after the step) sits in its activity's span, and its calls in it.
    let role_setup = named(spans, "role_setup")?;
    let activity = ids.get(role_setup.parent_span_id.as_str()).context("the step's parent")?;
    ensure!(activity.name == "RunActivity:RoleSetupActivity", "the step's span is in its activity's: {activity:?}");
    let in_step = |name: &str| spans.iter().any(|s| s.name == name && s.parent_span_id == role_setup.span_id);
    ensure!(in_step("graph.write"), "role_setup's graph write is in its span");
    let linking = named(spans, "document_linking")?;
    ensure!(
        spans.iter().any(|s| s.name == "document.fetch" && s.parent_span_id == linking.span_id),
        "document_linking's fetch is in its span"
    );
    ensure!(
        spans.iter().filter(|s| s.name == "record_step" && s.service == "etter-worker").count() >= 11,
        "every step's store write is in the trace"
    );
    for step in ["ai_assessment", "skills_catalog", "task_feasibility"] {
        named(spans, step)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_push_is_one_trace_across_the_server_temporal_and_the_worker() -> Result<()> {
    let setting = |key| service_setting(key, "otel-collector");
    let file = setting("ETTER_TEST__OTLP_TRACES_FILE")?;
    let stack = Stack::new("traces").await?;
    // The server exports in plaintext, the worker over mutual TLS (the collector's second
    // receiver requires a client certificate of the test CA).
    let server =
        stack.start_server_with(&[("ETTER_TRACING__OTLP_ENDPOINT", &setting("ETTER_TEST__OTLP_ENDPOINT")?)]).await?;
    let worker = stack
        .start_worker(&[
            ("ETTER_TRACING__OTLP_ENDPOINT", &setting("ETTER_TEST__OTLP_TLS_ENDPOINT")?),
            ("ETTER_TRACING__TLS__CA_FILE", &service_setting("ETTER_TEST__TLS_CA", "otel-collector")?),
            ("ETTER_TRACING__TLS__CERT_FILE", &service_setting("ETTER_TEST__TLS_CLIENT_CERT", "otel-collector")?),
            ("ETTER_TRACING__TLS__KEY_FILE", &service_setting("ETTER_TEST__TLS_CLIENT_KEY", "otel-collector")?),
        ])
        .await?;
    let mut client = stack.client(&server).await?;
    let jd = stack.document("software_engineer_jd.txt")?;
    let request = |role: &str| PushRequest {
        company_id: stack.company.clone(),
        role_name: role.to_owned(),
        documents: vec![Document {
            r#type: DocumentType::JobDescription as i32,
            uri: jd.clone(),
            ..Default::default()
        }],
        draup_role_id: "draup-role-4411".to_owned(),
        options: None,
        request_id: String::new(),
        validate_only: false,
    };

    // A push with no trace of its own starts one; a push from a traced caller continues it.
    let fresh = client.push(request("Traced Engineer")).await?;
    let mut traced = tonic::Request::new(request("Continued Engineer"));
    let caller_trace = caller_trace();
    traced.metadata_mut().insert("traceparent", format!("00-{caller_trace}-{CALLER_SPAN}-01").parse()?);
    let continued = client.push(traced).await?;
    let mut runs = Vec::new();
    for (response, caller) in [(fresh, None), (continued, Some(CALLER_SPAN))] {
        let answered =
            response.metadata().get("etter-trace-id").context("the etter-trace-id header")?.to_str()?.to_owned();
        let pushed = response.into_inner();
        ensure!(wait_final(&mut client, &pushed.workflow_id, WITHIN).await? == RoleStatus::Ready, "{pushed:?}");
        let run = run_status(&mut client, &pushed.workflow_id).await?;
        ensure!(run.trace_id == answered, "the run keeps the answered trace id: {} vs {answered}", run.trace_id);
        runs.push((answered, caller));
    }
    ensure!(runs[1].0 == caller_trace, "the continued push answers its caller's trace id: {:?}", runs[1].0);
    // Both stop cleanly, flushing what they buffered.
    worker.stop().await?;
    server.stop().await?;

    for (trace, caller) in &runs {
        let spans = trace_of(&file, trace).await?;
        check_trace(&spans, *caller).with_context(|| format!("trace {trace}"))?;
    }
    stack.cleanup().await
}
