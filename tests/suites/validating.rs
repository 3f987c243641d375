//! The VALIDATING state end to end, on both profiles, against a real S3-compatible store (moto):
//! a batch with more S3 documents than `documents.max_inline_checks` is answered at once, its S3
//! items VALIDATING; the server checks them in the background and queues each (which then runs to
//! READY, its document fetched from S3) or stores it as VALIDATION_ERROR naming the document; a
//! watch sees every change. While the store does not answer, items stay VALIDATING and say why,
//! can be cancelled, and go on once it is back.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{
    BatchItemOutcome, CancelRequest, Document, DocumentType, PushBatchItem, PushBatchRequest, RoleStatus, RunOptions,
    RunStatus, WaitReason, WatchStatusRequest, run_event, watch_status_request, watch_status_response,
};
use etter_tests::moto::Moto;
use etter_tests::stack::{Profile, Stack, run_status as status, until, wait_final};

/// How long a run may take to reach what a test waits for.
const WITHIN: Duration = Duration::from_secs(60);

const BUCKET: &str = "etter-validating";

fn item(role: &str, uri: &str) -> PushBatchItem {
    PushBatchItem {
        role_name: role.to_owned(),
        documents: vec![Document {
            r#type: DocumentType::JobDescription as i32,
            uri: uri.to_owned(),
            ..Default::default()
        }],
        draup_role_id: "draup-role-31011".to_owned(),
        ..Default::default()
    }
}

fn batch(company: &str, items: Vec<PushBatchItem>) -> PushBatchRequest {
    PushBatchRequest {
        company_id: company.to_owned(),
        items,
        default_options: Some(RunOptions { skip_enhancement_workflows: true, ..Default::default() }),
        ..Default::default()
    }
}

fn s3(key: &str) -> String {
    format!("s3://{BUCKET}/roles/{key}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_s3_batch_is_answered_first_and_its_documents_checked_in_the_background() -> Result<()> {
    for profile in [Profile::Postgres, Profile::Embedded] {
        validating(profile).await.with_context(|| profile.name())?;
    }
    Ok(())
}

async fn validating(profile: Profile) -> Result<()> {
    let moto = Moto::start(BUCKET, 3).await?;
    let port = moto.port();
    let mut stack = Stack::with_profile("validating", profile).await?;
    for (key, value) in moto.settings() {
        stack.set(key, value);
    }
    // Every S3 document of a batch is left to the background checks; a store that does not
    // answer is tried again within a second or two.
    stack.set("ETTER_DOCUMENTS__MAX_INLINE_CHECKS", "0");
    stack.set("ETTER_DISPATCH__RETRY_MAX_BACKOFF", "2s");
    let server = stack.start_server().await?;
    let mut client = stack.client(&server).await?;
    let company = stack.company.clone();
    let watch = WatchStatusRequest {
        scope: Some(watch_status_request::Scope::CompanyId(company.clone())),
        ..Default::default()
    };
    let mut stream = client.clone().watch_status(watch).await?.into_inner();

    // Answered at once: the S3 items VALIDATING (why they wait, and an ETA), the file item queued.
    let file = stack.document("software_engineer_jd.txt")?;
    let items = vec![
        item("Checked Analyst", &s3("0.txt")),
        item("Missing Analyst", &s3("missing.txt")),
        item("File Analyst", &file),
    ];
    let answer = client.push_batch(batch(&company, items)).await?.into_inner();
    let [checked, missing, local] = answer.items.as_slice() else { anyhow::bail!("three items: {answer:?}") };
    for s3_item in [checked, missing] {
        ensure!(s3_item.outcome() == BatchItemOutcome::Accepted, "{s3_item:?}");
        ensure!(s3_item.status() == RoleStatus::Validating, "{s3_item:?}");
        ensure!(s3_item.wait_reason() == WaitReason::DocumentChecks && s3_item.position_in_queue == 0, "{s3_item:?}");
        ensure!(s3_item.estimated_duration_seconds > 0 && s3_item.token_estimate.is_some(), "{s3_item:?}");
    }
    ensure!(local.status() == RoleStatus::Queued && local.position_in_queue == 1, "{local:?}");
    let progress = answer.progress.as_ref().context("a batch answer has progress")?;
    let validating = progress.counts.iter().find(|c| c.status() == RoleStatus::Validating).map_or(0, |c| c.count);
    ensure!(validating == 2 && progress.done == 0 && progress.estimated_duration_seconds > 0, "{progress:?}");

    // Checked in the background: the present document's run is queued (the dispatcher may have
    // started it already), the missing one is rejected naming the document.
    let left = |run: &RunStatus| run.status() != RoleStatus::Validating;
    let queued = until(&mut client, &checked.workflow_id, "checked", WITHIN, left).await?;
    ensure!(matches!(queued.status(), RoleStatus::Queued | RoleStatus::Processing), "{queued:#?}");
    let rejected = until(&mut client, &missing.workflow_id, "checked", WITHIN, left).await?;
    ensure!(rejected.status() == RoleStatus::ValidationError, "{rejected:#?}");
    let violation = rejected.field_violations.first().context("a rejected run names its violations")?;
    ensure!(violation.field == "documents[0].uri" && violation.description.contains("missing.txt"), "{violation:?}");
    ensure!(rejected.error.as_ref().is_some_and(|e| e.code == "VALIDATION_ERROR"), "{rejected:#?}");

    // The watch saw both decisions as status changes out of VALIDATING.
    let mut decided: HashMap<String, RoleStatus> = HashMap::new();
    let seen_by = tokio::time::Instant::now() + Duration::from_secs(30);
    while decided.len() < 2 {
        ensure!(tokio::time::Instant::now() < seen_by, "the watch saw only {decided:?}");
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .context("the watch went quiet")??
            .context("the watch ended")?;
        if let Some(watch_status_response::Kind::Event(event)) = message.kind
            && let Some(run_event::Change::StatusChange(change)) = event.change
            && change.previous_status() == RoleStatus::Validating
        {
            decided.insert(event.workflow_id, change.status());
        }
    }
    ensure!(decided.get(&checked.workflow_id) == Some(&RoleStatus::Queued), "{decided:?}");
    ensure!(decided.get(&missing.workflow_id) == Some(&RoleStatus::ValidationError), "{decided:?}");

    // A worker runs the checked role to READY, reading its document from S3.
    let worker = stack.start_worker(&[]).await?;
    let ended = wait_final(&mut client, &checked.workflow_id, Duration::from_secs(120)).await?;
    ensure!(ended == RoleStatus::Ready, "{:#?}", status(&mut client, &checked.workflow_id).await?);

    // The store stops answering: new items stay VALIDATING and say so; one is cancelled meanwhile.
    drop(moto);
    let answer = client
        .push_batch(batch(
            &company,
            vec![item("Patient Analyst", &s3("1.txt")), item("Impatient Analyst", &s3("2.txt"))],
        ))
        .await?
        .into_inner();
    let [patient, impatient] = answer.items.as_slice() else { anyhow::bail!("two items: {answer:?}") };
    ensure!(patient.status() == RoleStatus::Validating && impatient.status() == RoleStatus::Validating, "{answer:?}");
    let waiting = until(&mut client, &patient.workflow_id, "waiting for the document store", WITHIN, |run| {
        run.wait_reason() == WaitReason::DocumentStoreUnavailable
    })
    .await?;
    ensure!(waiting.status() == RoleStatus::Validating, "{waiting:#?}");
    let cancel = CancelRequest {
        workflow_id: impatient.workflow_id.clone(),
        reason: "not needed".to_owned(),
        request_id: String::new(),
    };
    let cancelled = client.cancel(cancel).await?.into_inner().run.context("Cancel answers the run")?;
    ensure!(cancelled.status() == RoleStatus::Cancelled, "{cancelled:#?}");

    // Back: the waiting item is checked, queued and run; the cancelled one stays cancelled.
    let _moto = Moto::start_on(BUCKET, 3, port).await?;
    let ended = wait_final(&mut client, &patient.workflow_id, Duration::from_secs(120)).await?;
    ensure!(ended == RoleStatus::Ready, "{:#?}", status(&mut client, &patient.workflow_id).await?);
    ensure!(status(&mut client, &impatient.workflow_id).await?.status() == RoleStatus::Cancelled);

    worker.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}
