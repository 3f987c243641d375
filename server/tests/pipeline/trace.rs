//! Trace ids over the wire: every answer names its trace id in `etter-trace-id` (the caller's
//! `traceparent`, or a fresh one when it sent none or a malformed one), and the runs a request
//! creates keep it (`RunStatus.trace_id`), whether pushed, pushed in a batch or retried. That the
//! worker's activities log under it is shown end to end in `tests/suites/onboarding.rs`.

use anyhow::Context as _;
use etter_proto::v1::{self as pb, CancelRequest, RetryRequest, get_status_request::Target, retry_request};

use super::{PipelineServiceClient, acme, doc_uri, push_request, server_without_temporal, status_of, with_token};

const GIVEN: &str = "0af7651916cd43dd8448eb211c80319c";

fn traced<T>(message: T, token: &str, traceparent: Option<&str>) -> anyhow::Result<tonic::Request<T>> {
    let mut request = with_token(message, token)?;
    if let Some(header) = traceparent {
        request.metadata_mut().insert("traceparent", header.parse()?);
    }
    Ok(request)
}

fn answered_trace(metadata: &tonic::metadata::MetadataMap) -> anyhow::Result<String> {
    let value = metadata.get("etter-trace-id").context("the answer has no etter-trace-id header")?;
    Ok(value.to_str()?.to_owned())
}

fn is_trace_id(value: &str) -> bool {
    value.len() == 32 && value.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) && value != "0".repeat(32)
}

#[tokio::test]
async fn runs_keep_the_trace_id_of_the_request_that_created_them() -> anyhow::Result<()> {
    let server = server_without_temporal().await?;
    let token = server.token(&["--company", &acme(), "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);

    // The caller's traceparent: answered back and kept with the run.
    let header = format!("00-{GIVEN}-b7ad6b7169203331-01");
    let request = traced(push_request("Traced Adjuster", &doc_uri(&server, "a.pdf")), &token, Some(&header))?;
    let pushed = api.push(request).await?;
    assert_eq!(answered_trace(pushed.metadata())?, GIVEN);
    let run = pushed.into_inner().workflow_id;
    let status = status_of(&mut api, &token, Target::WorkflowId(run.clone())).await?;
    assert_eq!(status.trace_id, GIVEN);

    // No header, or a malformed one: a fresh trace id, answered and kept.
    for header in [None, Some("00-not-a-trace-01"), Some(format!("ff-{GIVEN}-b7ad6b7169203331-01").as_str())] {
        let role = format!("Fresh Adjuster {}", header.map_or(0, str::len));
        let pushed = api.push(traced(push_request(&role, &doc_uri(&server, "b.pdf")), &token, header)?).await?;
        let fresh = answered_trace(pushed.metadata())?;
        assert!(is_trace_id(&fresh) && fresh != GIVEN, "{header:?} gave {fresh:?}");
        let status = status_of(&mut api, &token, Target::WorkflowId(pushed.into_inner().workflow_id)).await?;
        assert_eq!(status.trace_id, fresh, "{header:?}");
    }

    // Every run of a batch keeps the batch request's trace id.
    let batch_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let items = ["Batch Traced 1", "Batch Traced 2"]
        .iter()
        .map(|name| pb::PushBatchItem {
            role_name: (*name).into(),
            documents: vec![pb::Document {
                r#type: pb::DocumentType::JobDescription as i32,
                uri: doc_uri(&server, "c.pdf"),
                ..Default::default()
            }],
            draup_role_id: "draup-role-12345".into(),
            options: None,
            client_ref: String::new(),
        })
        .collect();
    let batch = pb::PushBatchRequest { company_id: acme(), items, default_options: None, ..Default::default() };
    let header = format!("00-{batch_trace}-00f067aa0ba902b7-01");
    let answer = api.push_batch(traced(batch, &token, Some(&header))?).await?;
    assert_eq!(answered_trace(answer.metadata())?, batch_trace);
    for item in answer.into_inner().items {
        let status = status_of(&mut api, &token, Target::WorkflowId(item.workflow_id)).await?;
        assert_eq!(status.trace_id, batch_trace);
    }

    // A retry's new run keeps the retry's trace id, not the first push's.
    let cancel = CancelRequest { workflow_id: run.clone(), reason: "wrong file".into(), request_id: String::new() };
    api.cancel(with_token(cancel, &token)?).await?;
    let retry_trace = "5cf92f3577b34da6a3ce929d0e0e4737";
    let retry = RetryRequest {
        target: Some(retry_request::Target::WorkflowId(run)),
        steps: Vec::new(),
        request_id: String::new(),
        ..Default::default()
    };
    let header = format!("00-{retry_trace}-00f067aa0ba902b7-01");
    let retried = api.retry(traced(retry, &token, Some(&header))?).await?.into_inner();
    let new_run = retried.run.context("Retry answered no run")?;
    assert_eq!(new_run.trace_id, retry_trace);
    let status = status_of(&mut api, &token, Target::WorkflowId(new_run.workflow_id)).await?;
    assert_eq!(status.trace_id, retry_trace);

    // Reads are traced too; they create nothing, so only the answer names it.
    let read = api
        .get_status(traced(
            pb::GetStatusRequest { target: Some(Target::WorkflowId(status.workflow_id.clone())) },
            &token,
            None,
        )?)
        .await?;
    let read_trace = answered_trace(read.metadata())?;
    assert!(is_trace_id(&read_trace) && read_trace != retry_trace);
    Ok(())
}
