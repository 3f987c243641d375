//! Batch admission: how long a `PushBatch` of 2,500 roles takes to be
//! acknowledged (every item validated, its document checked on the file root, persisted and
//! queued, the batch audited), and the server's CPU time per item.

use std::time::Instant;

use anyhow::{Result, ensure};
use etter_proto::v1::BatchItemOutcome;
use etter_tests::stack::Profile;

use crate::Mode;
use crate::deploy::Deployment;
use crate::measure::{Samples, ms, proc_stats};
use crate::report::{Section, num};

pub async fn run(profile: Profile, mode: Mode) -> Result<Section> {
    let (items, rounds) = (mode.pick(2_500, 50), mode.pick(3, 1));
    // Every round's roles stay queued (no worker), so the queue caps leave room for all rounds;
    // they are still checked. The dispatcher may start one run at a time: admission is measured,
    // not thousands of workflows that nobody runs.
    let deployment = Deployment::start(
        "batch",
        profile,
        false,
        &[
            ("ETTER_LIMITS__MAX_QUEUED_PER_COMPANY", "1000000"),
            ("ETTER_LIMITS__MAX_QUEUED", "1000000"),
            ("ETTER_DISPATCH__MAX_PROCESSING_PER_COMPANY", "1"),
            ("ETTER_TEMPORAL__WORKFLOW_EXECUTION_TIMEOUT", "5m"),
        ],
    )
    .await?;
    let pid = deployment.server_pid()?;
    let mut section = Section::new(
        "batch",
        profile.name(),
        &["round", "items", "acknowledged in ms", "items/s", "server CPU ms", "server CPU µs per item"],
    );
    section.notes.push(format!(
        "{rounds} batches of {items} roles one after the other into one company (earlier rounds' runs stay \
         queued: no worker runs them); the dispatcher's cap is one run, so it stays idle. Each item has a \
         document of its own on the file root, which the server checks (exists, readable, within the size \
         limit, what its extension says) before it queues the run."
    ));
    let source = deployment.document_path()?;
    let mut acks = Samples::default();
    for round in 1..=rounds {
        let mut batch = deployment.batch(items, |i| format!("Batch {round} Role {i}"));
        for (i, item) in batch.items.iter_mut().enumerate() {
            let own = deployment.stack.docs.join(format!("batch-{round}-{i}.txt"));
            std::fs::copy(&source, &own)?;
            for document in &mut item.documents {
                document.uri = format!("file://{}", own.display());
            }
        }
        let before = proc_stats(pid)?;
        let t0 = Instant::now();
        let answer = deployment.client.clone().push_batch(batch).await?.into_inner();
        let elapsed = t0.elapsed();
        let cpu = proc_stats(pid)?.cpu.saturating_sub(before.cpu);
        let queued = answer.items.iter().filter(|r| r.outcome() == BatchItemOutcome::Accepted).count();
        ensure!(queued == items, "{queued} of {items} items were queued: {:?}", answer.items.first());
        acks.push(elapsed);
        section.row(vec![
            round.to_string(),
            items.to_string(),
            num(ms(elapsed), 0),
            num(items as f64 / elapsed.as_secs_f64(), 0),
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
    Ok(section)
}
