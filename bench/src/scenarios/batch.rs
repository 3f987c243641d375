//! Batch admission: how long a `PushBatch` of 2,500 roles takes to be
//! acknowledged (every item validated, its document checked, persisted and queued, the batch
//! audited), and the server's CPU time per item. Documents on the file root (`batch`), or in an
//! S3-compatible store (`batch-s3`: moto on loopback, one HEAD per document).

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use etter_proto::v1::{BatchItemOutcome, HistoryRequest, RoleStatus};
use etter_tests::moto::Moto;
use etter_tests::stack::Profile;

use crate::Mode;
use crate::deploy::Deployment;
use crate::measure::{Samples, ms, proc_stats};
use crate::report::{Section, num};

/// Where the batch's documents are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Files on the server's documents root.
    FileRoot,
    /// Objects in a local S3-compatible store (moto).
    S3,
}

pub async fn run(profile: Profile, mode: Mode, source: Source) -> Result<Section> {
    let (items, rounds) = match source {
        Source::FileRoot => (mode.pick(2_500, 50), mode.pick(3, 1)),
        // Every round needs objects of its own, uploaded before the server starts.
        Source::S3 => (mode.pick(2_500, 50), mode.pick(2, 1)),
    };
    let moto = match source {
        Source::S3 => Some(Moto::start(BUCKET, items * rounds).await?),
        Source::FileRoot => None,
    };
    let s3_env = moto.as_ref().map(Moto::settings);
    // Every round's roles stay queued (no worker), so the queue caps leave room for all rounds;
    // they are still checked. The dispatcher may start one run at a time: admission is measured,
    // not thousands of workflows that nobody runs.
    let mut env = vec![
        ("ETTER_LIMITS__MAX_QUEUED_PER_COMPANY", "1000000"),
        ("ETTER_LIMITS__MAX_QUEUED", "1000000"),
        ("ETTER_DISPATCH__MAX_PROCESSING_PER_COMPANY", "1"),
        ("ETTER_TEMPORAL__WORKFLOW_EXECUTION_TIMEOUT", "5m"),
    ];
    if let Some(s3) = &s3_env {
        env.extend(s3.iter().map(|(k, v)| (*k, v.as_str())));
    }
    let name = match source {
        Source::FileRoot => "batch",
        Source::S3 => "batch-s3",
    };
    let deployment = Deployment::start(name, profile, false, &env).await?;
    let pid = deployment.server_pid()?;
    let mut section = Section::new(
        name,
        profile.name(),
        &[
            "round",
            "items",
            "acknowledged in ms",
            "items/s",
            "all checked in ms",
            "server CPU ms",
            "server CPU µs per item",
        ],
    );
    let where_documents = match source {
        Source::FileRoot => "on the file root".to_owned(),
        Source::S3 => format!(
            "in a local S3-compatible store (moto on loopback; `documents.max_concurrent_checks` = {CHECKS} at \
             once, one ranged GET each, whose Content-Range gives the size)"
        ),
    };
    section.notes.push(format!(
        "{rounds} batches of {items} roles one after the other into one company (earlier rounds' runs stay \
         queued: no worker runs them); the dispatcher's cap is one run, so it stays idle. Each item has a \
         document of its own {where_documents}, which the server checks (exists, readable, within the size \
         limit, what its extension says) before it queues the run. On the file root every check is made \
         before the answer; with more S3 documents than `documents.max_inline_checks` (256), the answer comes \
         first, the items VALIDATING, and the server checks them in the background: \"all checked\" is when \
         the last one was queued (the server's CPU is counted until then)."
    ));
    let file = deployment.document_path()?;
    let mut acks = Samples::default();
    for round in 1..=rounds {
        let mut batch = deployment.batch(items, |i| format!("Batch {round} Role {i}"));
        for (i, item) in batch.items.iter_mut().enumerate() {
            let uri = match source {
                Source::FileRoot => {
                    let own = deployment.stack.docs.join(format!("batch-{round}-{i}.txt"));
                    std::fs::copy(&file, &own)?;
                    format!("file://{}", own.display())
                }
                Source::S3 => format!("s3://{BUCKET}/roles/{}.txt", (round - 1) * items + i),
            };
            for document in &mut item.documents {
                document.uri.clone_from(&uri);
            }
        }
        let company = batch.company_id.clone();
        let before = proc_stats(pid)?;
        let t0 = Instant::now();
        let answer = deployment.client.clone().push_batch(batch).await?.into_inner();
        let elapsed = t0.elapsed();
        let accepted = answer.items.iter().filter(|r| r.outcome() == BatchItemOutcome::Accepted).count();
        ensure!(accepted == items, "{accepted} of {items} items were accepted: {:?}", answer.items.first());
        // Items left to the background checks (VALIDATING) are queued once their documents pass.
        let checked = loop {
            let left = runs_in(&deployment, &company, &answer.batch_id, RoleStatus::Validating).await?;
            if left == 0 {
                break t0.elapsed();
            }
            ensure!(t0.elapsed() < Duration::from_secs(600), "{left} items still VALIDATING after 10 minutes");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let cpu = proc_stats(pid)?.cpu.saturating_sub(before.cpu);
        let rejected = runs_in(&deployment, &company, &answer.batch_id, RoleStatus::ValidationError).await?;
        ensure!(rejected == 0, "{rejected} items failed their document checks");
        acks.push(elapsed);
        section.row(vec![
            round.to_string(),
            items.to_string(),
            num(ms(elapsed), 0),
            num(items as f64 / elapsed.as_secs_f64(), 0),
            num(ms(checked), 0),
            num(ms(cpu), 0),
            num(cpu.as_secs_f64() * 1e6 / items as f64, 0),
        ]);
    }
    let median = acks.p50();
    section.check(
        format!("PushBatch of {items} acknowledged (median round)"),
        "< 1 s",
        format!("{} ms", num(ms(median), 0)),
        median.as_secs_f64() < 1.0,
    );
    deployment.stop().await?;
    drop(moto);
    Ok(section)
}

/// The bucket of the S3 variant.
const BUCKET: &str = "etter-bench";

/// `documents.max_concurrent_checks`, the default.
const CHECKS: usize = 32;

/// How many runs of `batch` are in `status` (at most one page: enough to tell none from some).
async fn runs_in(deployment: &Deployment, company: &str, batch: &str, status: RoleStatus) -> Result<usize> {
    let request = HistoryRequest {
        company_id: company.to_owned(),
        batch_id: batch.to_owned(),
        statuses: vec![status as i32],
        page_size: 100,
        ..Default::default()
    };
    Ok(deployment.client.clone().history(request).await?.into_inner().runs.len())
}
