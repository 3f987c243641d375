//! Usage: document hashes, token usage per company, step and day, and the tokens active runs
//! reserve.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, ensure};
use etter_core::lifecycle::RunState;
use etter_core::outputs::ContentHash;
use etter_store::{StepStatus, StepTransition, TokenCount, Transition};

use crate::{Ctx, company, create, push};

pub(crate) async fn document_hashes_and_usage(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let (a, b) = ("s3://bucket/a.pdf".to_owned(), "file:///docs/b.md".to_owned());
    let t0 = etter_store::now();
    ensure!(store.record_document_hash(&a, &ContentHash("h1".into()), t0).await?.is_none());
    ensure!(store.record_document_hash(&b, &ContentHash("h2".into()), t0).await?.is_none());
    let t1 = t0 + chrono::TimeDelta::minutes(5);
    let previous = store.record_document_hash(&a, &ContentHash("h3".into()), t1).await?.context("a was seen")?;
    ensure!(previous.content_hash.0 == "h1" && previous.seen_time == t0);
    let hashes = store.document_hashes(&[a.clone(), b, "s3://bucket/unknown".into()]).await?;
    ensure!(hashes.len() == 2 && hashes.iter().any(|h| h.uri == a && h.content_hash.0 == "h3" && h.seen_time == t1));

    // Usage adds up per company, step and day.
    let run = create(store, push("acme", "Usage Role", "u")?).await?;
    for (step, tokens) in [("ai_assessment", 10), ("skills_miner", 5)] {
        let t = StepTransition {
            tokens: Some(TokenCount { input: tokens, output: 1 }),
            ..StepTransition::new(step, 1, StepStatus::Running)
        };
        store.record_step(&run.workflow_id, t).await?;
        let t = StepTransition {
            tokens: Some(TokenCount { input: tokens * 2, output: 2 }),
            ..StepTransition::new(step, 1, StepStatus::Completed)
        };
        store.record_step(&run.workflow_id, t).await?;
    }
    let today = etter_store::now().date_naive();
    let usage = store.usage(&company("acme")?, today - chrono::TimeDelta::days(1), today).await?;
    let by_step: BTreeMap<_, _> = usage.iter().map(|u| (u.step.as_str(), u.tokens)).collect();
    ensure!(by_step["ai_assessment"] == TokenCount { input: 20, output: 2 }, "{usage:?}");
    ensure!(by_step["skills_miner"] == TokenCount { input: 10, output: 2 }, "{usage:?}");
    ensure!(store.get_run(&run.workflow_id).await?.tokens_used == TokenCount { input: 30, output: 4 });
    ensure!(store.usage(&company("globex")?, today, today).await?.is_empty());

    // The active run still reserves its estimate less what it used; an ended run reserves nothing.
    let estimate = store.get_run(&run.workflow_id).await?.token_estimate;
    ensure!(store.token_reservations(&company("acme")?).await? == estimate - 34);
    ensure!(store.token_reservations(&company("globex")?).await? == 0);
    store.transition(&run.workflow_id, Transition::to(RunState::Cancelled, "test")).await?;
    ensure!(store.token_reservations(&company("acme")?).await? == 0);
    Ok(())
}
