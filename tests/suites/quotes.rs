//! Quotes (`validate_only`) end to end, on both profiles: a push or a batch is checked and
//! answered as it would be — plan, tokens and cost, queue position, wait reason, ETA, outcomes and
//! violations — and nothing is created or reserved; the quote is audited as one.

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{
    BatchItemOutcome, Document, DocumentType, GetStatusRequest, GetUsageRequest, HistoryRequest,
    ListAuditEntriesRequest, PushBatchItem, PushBatchRequest, PushRequest, RoleStatus, RunOptions, StepState,
    get_status_request,
};
use etter_tests::stack::{Client, Profile, Stack};
use tonic::Code;

async fn runs_of(client: &mut Client, company: &str) -> Result<usize> {
    let request = HistoryRequest { company_id: company.to_owned(), page_size: 100, ..Default::default() };
    Ok(client.history(request).await?.into_inner().runs.len())
}

async fn reserved(client: &mut Client, company: &str) -> Result<i64> {
    let request = GetUsageRequest { company_id: company.to_owned(), period: String::new() };
    Ok(client.get_usage(request).await?.into_inner().reserved_tokens)
}

fn states(plan: &[etter_proto::v1::PlannedStep]) -> Vec<StepState> {
    plan.iter().filter_map(|s| StepState::try_from(s.state).ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_answers_what_a_push_would_and_creates_nothing() -> Result<()> {
    for profile in [Profile::Postgres, Profile::Embedded] {
        quotes(profile).await.with_context(|| profile.name())?;
    }
    Ok(())
}

async fn quotes(profile: Profile) -> Result<()> {
    let stack = Stack::with_profile("quotes", profile).await?;
    let server = stack.start_server().await?;
    let mut client = stack.client(&server).await?;
    let company = stack.company.clone();
    let jd = stack.document("software_engineer_jd.txt")?;
    let missing = jd.replace("software_engineer_jd.txt", "not_there.txt");
    let document = |uri: &str| {
        vec![Document { r#type: DocumentType::JobDescription as i32, uri: uri.to_owned(), ..Default::default() }]
    };
    let critical = Some(RunOptions { skip_enhancement_workflows: true, ..Default::default() });
    let push = |role: &str, uri: &str, validate_only: bool| PushRequest {
        company_id: company.clone(),
        role_name: role.to_owned(),
        documents: document(uri),
        draup_role_id: "draup-role-31011".to_owned(),
        options: critical,
        validate_only,
        ..Default::default()
    };

    // A new role: the answer a push would give, and nothing stored or reserved.
    let quote = client.push(push("Quoted Role", &jd, true)).await?.into_inner();
    ensure!(quote.created && quote.status == RoleStatus::Queued as i32, "{quote:?}");
    ensure!(quote.workflow_id.ends_with("quoted-role-1") && quote.position_in_queue == 1, "{quote:?}");
    let tokens = quote.token_estimate.as_ref().map_or(0, |t| t.total_tokens);
    ensure!(tokens > 0 && quote.estimated_duration_seconds > 0, "{quote:?}");
    let planned = states(&quote.plan);
    ensure!(planned.iter().filter(|s| **s == StepState::Pending).count() == 4, "the critical path runs: {quote:?}");
    ensure!(planned.iter().filter(|s| **s == StepState::Skipped).count() == 7, "enhancements skipped: {quote:?}");
    let target = get_status_request::Target::WorkflowId(quote.workflow_id.clone());
    let looked = client.get_status(GetStatusRequest { target: Some(target) }).await.err().context("no run")?;
    ensure!(looked.code() == Code::NotFound, "{looked:?}");
    ensure!(runs_of(&mut client, &company).await? == 0 && reserved(&mut client, &company).await? == 0);

    // A quote is refused as the push would be.
    let refused = client.push(push("Quoted Role", &missing, true)).await.err().context("a missing document")?;
    ensure!(refused.code() == Code::InvalidArgument && refused.message().contains("not_there"), "{refused:?}");

    // The push then gets what the quote said; a quote of the same inputs answers that run, whose
    // steps are all the role gets (nothing new runs).
    let pushed = client.push(push("Quoted Role", &jd, false)).await?.into_inner();
    ensure!(pushed.workflow_id == quote.workflow_id && pushed.created, "{pushed:?} after {quote:?}");
    ensure!(states(&pushed.plan) == planned, "the push plans what the quote did");
    let again = client.push(push("Quoted Role", &jd, true)).await?.into_inner();
    ensure!(!again.created && again.workflow_id == pushed.workflow_id, "{again:?}");
    ensure!(states(&again.plan).iter().all(|s| matches!(s, StepState::Reused | StepState::Skipped)), "{again:?}");
    let reserved_now = reserved(&mut client, &company).await?;
    ensure!(reserved_now == tokens, "only the pushed run reserves: {reserved_now} vs {tokens}");

    // A batch quote: per item the outcome, violations, plan, tokens and ETA, and the totals.
    let item = |role: &str, uri: &str| PushBatchItem {
        role_name: role.to_owned(),
        documents: document(uri),
        draup_role_id: "draup-role-31011".to_owned(),
        options: None,
        client_ref: role.to_owned(),
    };
    let batch = PushBatchRequest {
        company_id: company.clone(),
        items: vec![item("Batch New", &jd), item("Batch Broken", &missing), item("Quoted Role", &jd)],
        default_options: critical,
        validate_only: true,
        ..Default::default()
    };
    let answer = client.push_batch(batch).await?.into_inner();
    ensure!(answer.batch_id.is_empty() && !answer.created, "{answer:?}");
    let [new, broken, existing] = answer.items.as_slice() else { anyhow::bail!("three items: {answer:?}") };
    // Behind the pushed run while it waits for its start.
    ensure!(new.outcome == BatchItemOutcome::Accepted as i32 && new.position_in_queue >= 1, "{new:?}");
    ensure!(new.token_estimate.as_ref().map_or(0, |t| t.total_tokens) == tokens && new.estimated_duration_seconds > 0);
    ensure!(states(&new.plan) == planned, "{new:?}");
    ensure!(broken.outcome == BatchItemOutcome::Rejected as i32, "{broken:?}");
    ensure!(broken.field_violations.iter().any(|v| v.field == "documents[0].uri"), "{broken:?}");
    ensure!(existing.outcome == BatchItemOutcome::Existing as i32 && existing.workflow_id == pushed.workflow_id);
    ensure!(answer.token_estimate.as_ref().map_or(0, |t| t.total_tokens) == tokens, "the accepted item's tokens");
    let progress = answer.progress.context("the quote's progress")?;
    ensure!(progress.total == 2 && progress.done == 1 && progress.estimated_duration_seconds > 0, "{progress:?}");
    ensure!(runs_of(&mut client, &company).await? == 1, "the batch quote stored nothing");
    ensure!(reserved(&mut client, &company).await? == tokens, "nor reserved anything");

    // Quotes are audited as quotes.
    let mut admin = stack.client_as(&server, "admin").await?;
    let audit = ListAuditEntriesRequest {
        company_id: company.clone(),
        action: "Push:validate_only".to_owned(),
        page_size: 50,
        ..Default::default()
    };
    let entries = admin.list_audit_entries(audit).await?.into_inner().entries;
    ensure!(entries.len() == 3, "three push quotes audited: {entries:#?}");
    let audit = ListAuditEntriesRequest {
        company_id: company.clone(),
        action: "PushBatch:validate_only".to_owned(),
        page_size: 50,
        ..Default::default()
    };
    ensure!(admin.list_audit_entries(audit).await?.into_inner().entries.len() == 1);

    server.stop().await?;
    stack.cleanup().await
}
