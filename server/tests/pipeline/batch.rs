//! PushBatch and History over the wire, against the embedded store. Temporal is unreachable here on
//! purpose: nothing is dispatched, so every accepted run stays QUEUED and the states the filters
//! see are the ones this test made.

use std::collections::BTreeSet;

use anyhow::{Context as _, ensure};
use etter_proto::v1::{
    self as pb, HistoryRequest, PushBatchItem, PushBatchRequest, PushBatchResponse,
    pipeline_service_client::PipelineServiceClient,
};
use tonic::Code;

use super::{Api, acme, closed_port_url, doc_uri, status_of, violations};
use crate::{Server, with_token};

/// How the invalid items of the batch are wrong, by `(i / 10) % 5` for every `i % 10 == 3`, and
/// the field each one's violation names (`None`: the role name itself is invalid, so nothing can
/// be stored for it).
const FLAWS: [Option<&str>; 5] =
    [Some("documents"), Some("documents[0].uri"), Some("draup_role_id"), None, Some("documents[0].type")];

fn item(server: &Server, i: usize) -> PushBatchItem {
    let mut item = PushBatchItem {
        role_name: format!("Batch Role {i:03}"),
        documents: vec![pb::Document {
            r#type: pb::DocumentType::JobDescription as i32,
            uri: doc_uri(server, &format!("jd-{i}.pdf")),
            ..Default::default()
        }],
        draup_role_id: format!("draup-role-{i}"),
        options: None,
        client_ref: format!("row {}", i + 2),
    };
    if i % 10 == 3 {
        match (i / 10) % 5 {
            0 => item.documents.clear(),
            1 => item.documents[0].uri = "ftp://files.example.com/jd.pdf".into(),
            2 => item.draup_role_id.clear(),
            3 => item.role_name = "   ".into(),
            _ => item.documents[0].r#type = pb::DocumentType::Unspecified as i32,
        }
    }
    item
}

async fn push_batch(api: &mut Api, token: &str, request: PushBatchRequest) -> Result<PushBatchResponse, tonic::Status> {
    let request = with_token(request, token).map_err(|e| tonic::Status::internal(e.to_string()))?;
    Ok(api.push_batch(request).await?.into_inner())
}

async fn history(api: &mut Api, token: &str, request: HistoryRequest) -> Result<pb::HistoryResponse, tonic::Status> {
    let request = with_token(request, token).map_err(|e| tonic::Status::internal(e.to_string()))?;
    Ok(api.history(request).await?.into_inner())
}

/// Every page of a History query, with `page_size`; `between_pages` runs after each page.
async fn all_pages(
    api: &mut Api,
    token: &str,
    mut request: HistoryRequest,
    mut between_pages: impl AsyncFnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<pb::RunStatus>> {
    let mut runs = Vec::new();
    loop {
        let page = history(api, token, request.clone()).await?;
        ensure!(page.runs.len() <= request.page_size as usize, "a page larger than asked");
        runs.extend(page.runs);
        if page.next_page_token.is_empty() {
            return Ok(runs);
        }
        request.page_token = page.next_page_token;
        between_pages().await?;
    }
}

#[tokio::test]
async fn a_batch_answers_every_item_stores_the_invalid_ones_and_history_pages_through_it() -> anyhow::Result<()> {
    let server = Server::start(&[
        ("ETTER_TEMPORAL__ADDRESS", closed_port_url()?.as_str()),
        ("ETTER_SERVER__MAX_BATCH_SIZE", "400"),
    ])
    .await?;
    let company = format!("{}batch", acme());
    let token = server.token(&["--company", &company, "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);

    let mut items: Vec<PushBatchItem> = (0..300).map(|i| item(&server, i)).collect();
    // The first role again, spelled differently: the same role, so a duplicate.
    items.push(PushBatchItem { role_name: "batch  role 000".into(), ..item(&server, 0) });
    let request = PushBatchRequest {
        company_id: company.clone(),
        items: items.clone(),
        default_options: Some(pb::RunOptions { skip_enhancement_workflows: true, ..Default::default() }),
        request_id: "import-2026-11-26".into(),
        validate_only: false,
    };
    let first = push_batch(&mut api, &token, request.clone()).await?;
    ensure!(first.created && first.batch_id.starts_with("batch-"), "{}", first.batch_id);
    ensure!(first.items.len() == 301, "one result per item");
    let mut rejected_runs = Vec::new();
    for (i, result) in first.items.iter().enumerate() {
        ensure!(result.index as usize == i && result.client_ref == items[i].client_ref, "{result:?}");
        let outcome = pb::BatchItemOutcome::try_from(result.outcome)?;
        let fields: Vec<&str> = result.field_violations.iter().map(|v| v.field.as_str()).collect();
        if i == 300 {
            ensure!(outcome == pb::BatchItemOutcome::Duplicate && fields == ["role_name"], "{result:?}");
            ensure!(result.field_violations[0].description.contains("item 0"), "{result:?}");
            ensure!(result.workflow_id.is_empty() && result.role_id == first.items[0].role_id, "{result:?}");
        } else if i % 10 == 3 {
            ensure!(outcome == pb::BatchItemOutcome::Rejected, "item {i}: {result:?}");
            match FLAWS[(i / 10) % 5] {
                Some(field) => {
                    ensure!(fields == [field], "item {i}: {result:?}");
                    ensure!(result.status == pb::RoleStatus::ValidationError as i32, "item {i}: {result:?}");
                    ensure!(!result.workflow_id.is_empty(), "stored as VALIDATION_ERROR: {result:?}");
                    rejected_runs.push(result.workflow_id.clone());
                }
                None => ensure!(fields == ["role_name"] && result.workflow_id.is_empty(), "item {i}: {result:?}"),
            }
        } else {
            ensure!(outcome == pb::BatchItemOutcome::Accepted, "item {i}: {result:?}");
            ensure!(result.status == pb::RoleStatus::Queued as i32 && result.position_in_queue > 0, "{result:?}");
        }
    }
    ensure!(rejected_runs.len() == 24);
    let progress = first.progress.as_ref().context("batch progress")?;
    ensure!(progress.total == 294 && progress.done == 24, "270 queued and 24 rejected runs: {progress:?}");
    ensure!(progress.estimated_duration_seconds > 0, "{progress:?}");
    ensure!(first.token_estimate.as_ref().is_some_and(|t| t.total_tokens > 0), "{:?}", first.token_estimate);

    // A rejected run says why, field by field, so the row can be fixed.
    let rejected =
        status_of(&mut api, &token, pb::get_status_request::Target::WorkflowId(rejected_runs[1].clone())).await?;
    ensure!(rejected.status == pb::RoleStatus::ValidationError as i32 && rejected.batch_id == first.batch_id);
    ensure!(rejected.field_violations.iter().map(|v| v.field.as_str()).collect::<Vec<_>>() == ["documents[0].uri"]);
    ensure!(rejected.error.as_ref().is_some_and(|e| e.code == "VALIDATION_ERROR"), "{rejected:?}");

    // The same request again: the same answer, and nothing new.
    let again = push_batch(&mut api, &token, request.clone()).await?;
    ensure!(!again.created && again.batch_id == first.batch_id && again.items == first.items);
    // The same items without the request id: every item finds what the first batch stored.
    let resent =
        push_batch(&mut api, &token, PushBatchRequest { request_id: String::new(), ..request.clone() }).await?;
    ensure!(resent.created && resent.batch_id != first.batch_id);
    for (before, after) in first.items.iter().zip(&resent.items) {
        let expected = match pb::BatchItemOutcome::try_from(before.outcome)? {
            pb::BatchItemOutcome::Accepted => pb::BatchItemOutcome::Existing,
            other => other,
        };
        ensure!(after.outcome == expected as i32 && after.workflow_id == before.workflow_id, "{after:?}");
    }
    ensure!(resent.progress.as_ref().is_some_and(|p| p.total == 0), "the resent batch created no run");
    // The same request id with another payload is refused.
    let mut changed = request.clone();
    changed.items.truncate(10);
    let refused = push_batch(&mut api, &token, changed).await.err().context("request id reuse")?;
    ensure!(refused.code() == Code::InvalidArgument, "{refused:?}");
    // More than the configured maximum is refused whole.
    let too_many = PushBatchRequest {
        company_id: company.clone(),
        items: (0..401).map(|i| item(&server, 1000 + i)).collect(),
        ..Default::default()
    };
    let refused = push_batch(&mut api, &token, too_many).await.err().context("too many items")?;
    ensure!(refused.code() == Code::InvalidArgument && violations(&refused) == ["items"], "{refused:?}");
    ensure!(refused.message().contains("400"), "{refused:?}");

    // History of the batch, 37 runs a page, while single pushes keep arriving between pages: every
    // run of the batch exactly once, newest first.
    let by_batch = HistoryRequest {
        company_id: company.clone(),
        batch_id: first.batch_id.clone(),
        page_size: 37,
        ..Default::default()
    };
    let push_uri = |n: usize| doc_uri(&server, &format!("late-{n}.pdf"));
    let mut pushed = 0;
    let mut pusher = api.clone();
    let runs = all_pages(&mut api, &token, by_batch.clone(), async || {
        pushed += 1;
        let late = pb::PushRequest {
            company_id: company.clone(),
            role_name: format!("Late Role {pushed}"),
            documents: vec![pb::Document {
                r#type: pb::DocumentType::JobDescription as i32,
                uri: push_uri(pushed),
                ..Default::default()
            }],
            draup_role_id: "draup-role-9".into(),
            options: None,
            request_id: String::new(),
            validate_only: false,
        };
        pusher.push(with_token(late, &token)?).await?;
        Ok(())
    })
    .await?;
    let ids: Vec<&str> = runs.iter().map(|r| r.workflow_id.as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    ensure!(ids.len() == 294 && unique.len() == 294, "{} runs, {} distinct", ids.len(), unique.len());
    ensure!(pushed == 7, "pushes arrived between the 8 pages: {pushed}");
    ensure!(
        runs.windows(2).all(|w| (w[0].create_time.as_ref().map(|t| (t.seconds, t.nanos)))
            >= (w[1].create_time.as_ref().map(|t| (t.seconds, t.nanos)))),
        "newest first"
    );

    // The whole company while the late pushes keep coming: everything that existed before, once.
    let before_company = 294 + pushed;
    let company_runs = all_pages(
        &mut api,
        &token,
        HistoryRequest { company_id: company.clone(), page_size: 50, ..Default::default() },
        async || {
            pushed += 1;
            let late = pb::PushRequest {
                company_id: company.clone(),
                role_name: format!("Late Role {pushed}"),
                documents: vec![pb::Document {
                    r#type: pb::DocumentType::JobDescription as i32,
                    uri: push_uri(pushed),
                    ..Default::default()
                }],
                draup_role_id: "draup-role-9".into(),
                options: None,
                request_id: String::new(),
                validate_only: false,
            };
            pusher.push(with_token(late, &token)?).await?;
            Ok(())
        },
    )
    .await?;
    let unique: BTreeSet<&str> = company_runs.iter().map(|r| r.workflow_id.as_str()).collect();
    ensure!(unique.len() == company_runs.len(), "no run twice");
    ensure!(company_runs.len() >= before_company, "{} < {before_company}", company_runs.len());

    // Filters: state, role, time range, needs_review.
    let rejected_only = all_pages(
        &mut api,
        &token,
        HistoryRequest { statuses: vec![pb::RoleStatus::ValidationError as i32], page_size: 10, ..by_batch.clone() },
        async || Ok(()),
    )
    .await?;
    let got: BTreeSet<String> = rejected_only.iter().map(|r| r.workflow_id.clone()).collect();
    ensure!(got == rejected_runs.iter().cloned().collect::<BTreeSet<_>>(), "the 24 rejected runs");
    let one_role = history(
        &mut api,
        &token,
        HistoryRequest { company_id: company.clone(), role_id: first.items[0].role_id.clone(), ..Default::default() },
    )
    .await?;
    ensure!(one_role.runs.len() == 1 && one_role.runs[0].workflow_id == first.items[0].workflow_id);
    let future = prost_types::Timestamp { seconds: chrono_now() + 3600, nanos: 0 };
    let none =
        history(&mut api, &token, HistoryRequest { create_time_after: Some(future), ..by_batch.clone() }).await?;
    ensure!(none.runs.is_empty() && none.next_page_token.is_empty());
    let reviewed = history(&mut api, &token, HistoryRequest { needs_review: Some(true), ..by_batch.clone() }).await?;
    ensure!(reviewed.runs.is_empty(), "nothing was flagged for review");

    // A token serves only the filters it was issued for; another company is not the caller's.
    let page = history(&mut api, &token, by_batch.clone()).await?;
    let mixed = HistoryRequest {
        page_token: page.next_page_token,
        statuses: vec![pb::RoleStatus::Queued as i32],
        ..by_batch.clone()
    };
    let refused = history(&mut api, &token, mixed).await.err().context("a token with other filters")?;
    ensure!(refused.code() == Code::InvalidArgument && violations(&refused) == ["page_token"], "{refused:?}");
    let other = history(&mut api, &token, HistoryRequest { company_id: "globex".into(), ..Default::default() })
        .await
        .err()
        .context("another company's history")?;
    ensure!(other.code() == Code::PermissionDenied, "{other:?}");
    Ok(())
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[tokio::test]
async fn a_batch_item_whose_document_cannot_be_used_is_stored_invalid_and_the_others_go_on() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let company = acme();
    let token = server.token(&["--company", &company, "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let docs = server.data_dir.join("docs");
    std::fs::write(docs.join("text.pdf"), "plain text named .pdf")?;
    let shared = doc_uri(&server, "shared.pdf");
    let missing = format!("file://{}", docs.join("missing.pdf").display());
    let mistyped = format!("file://{}", docs.join("text.pdf").display());
    let item = |n: usize, uri: &str| PushBatchItem {
        role_name: format!("Checked Role {n}"),
        documents: vec![pb::Document {
            r#type: pb::DocumentType::JobDescription as i32,
            uri: uri.to_owned(),
            ..Default::default()
        }],
        draup_role_id: format!("draup-role-{n}"),
        options: None,
        client_ref: format!("row {n}"),
    };
    let request = PushBatchRequest {
        company_id: company.clone(),
        items: vec![item(0, &shared), item(1, &missing), item(2, &mistyped), item(3, &shared)],
        ..Default::default()
    };
    let answer = push_batch(&mut api, &token, request).await?;
    let outcomes: Vec<i32> = answer.items.iter().map(|i| i.outcome).collect();
    let (accepted, rejected) = (pb::BatchItemOutcome::Accepted as i32, pb::BatchItemOutcome::Rejected as i32);
    ensure!(outcomes == [accepted, rejected, rejected, accepted], "{outcomes:?}");
    for (index, uri, says) in [(1, &missing, "not found"), (2, &mistyped, "plain text")] {
        let result = &answer.items[index];
        let [violation] = result.field_violations.as_slice() else { anyhow::bail!("{result:?}") };
        ensure!(violation.field == "documents[0].uri", "{violation:?}");
        ensure!(violation.description.contains(uri.as_str()) && violation.description.contains(says), "{violation:?}");
        // Stored as VALIDATION_ERROR under its role, so it can be found and fixed later.
        let run = status_of(&mut api, &token, pb::get_status_request::Target::RoleId(result.role_id.clone())).await?;
        ensure!(run.status() == pb::RoleStatus::ValidationError, "{run:?}");
    }
    for index in [0, 3] {
        ensure!(answer.items[index].status() == pb::RoleStatus::Queued, "{:?}", answer.items[index]);
    }
    Ok(())
}
