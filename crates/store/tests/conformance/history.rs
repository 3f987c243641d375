//! History: listing runs with filters and keyset pagination (page tokens), and the paged scan of
//! runs in given states across companies.

use anyhow::{Result, ensure};
use etter_core::ids::{BatchId, WorkflowId};
use etter_core::lifecycle::RunState;
use etter_store::{PageRequest, RunFilter, StoreError};

use crate::{Ctx, company, create, ids, push, to};

pub(crate) async fn history_filters_and_keyset_pagination(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let acme = company("acme")?;
    let mut runs = Vec::new();
    for i in 0..23 {
        runs.push(create(store, push("acme", &format!("History {i:02}"), "h")?).await?);
    }
    create(store, push("globex", "History 00", "h")?).await?;

    // Page through while new runs keep arriving: exactly the runs that existed, newest first.
    let mut expected = runs.clone();
    expected.sort_by(|a, b| (b.create_time, &b.workflow_id).cmp(&(a.create_time, &a.workflow_id)));
    let mut listed = Vec::new();
    let mut page = PageRequest { size: 5, token: None };
    let mut added = 0;
    loop {
        let got = store.list_runs(&RunFilter::company(acme.clone()), &page).await?;
        ensure!(got.runs.len() <= 5);
        listed.extend(got.runs);
        create(store, push("acme", &format!("Newcomer {added}"), "h")?).await?;
        added += 1;
        match got.next_page_token {
            Some(token) => page.token = Some(token),
            None => break,
        }
    }
    ensure!(ids(&listed) == ids(&expected), "paging while inserting lost or repeated runs");
    ensure!(added == 5);

    // Filters.
    let cancelled = &runs[3].workflow_id;
    to(store, cancelled, RunState::Cancelled).await?;
    to(store, &runs[4].workflow_id, RunState::Processing).await?;
    store.set_needs_review(&runs[5].workflow_id, true).await?;
    let all = move |filter: RunFilter| async move {
        let page = store.list_runs(&filter, &PageRequest { size: 500, token: None }).await?;
        anyhow::Ok(ids(&page.runs))
    };
    ensure!(
        all(RunFilter { states: vec![RunState::Cancelled], ..RunFilter::company(acme.clone()) }).await?
            == vec![cancelled.clone()]
    );
    let active =
        all(RunFilter { states: vec![RunState::Cancelled, RunState::Processing], ..RunFilter::company(acme.clone()) })
            .await?;
    ensure!(active.len() == 2);
    ensure!(
        all(RunFilter { needs_review: Some(true), ..RunFilter::company(acme.clone()) }).await?
            == vec![runs[5].workflow_id.clone()]
    );
    ensure!(
        all(RunFilter { needs_review: Some(false), ..RunFilter::company(acme.clone()) }).await?.len() == 23 + 5 - 1
    );
    ensure!(
        all(RunFilter { role: Some(runs[7].role_id.clone()), ..RunFilter::company(acme.clone()) }).await?
            == vec![runs[7].workflow_id.clone()]
    );
    let middle = runs[10].create_time;
    let after = all(RunFilter { created_after: Some(middle), ..RunFilter::company(acme.clone()) }).await?;
    ensure!(after.len() == 13 + 5, "{} runs at or after the 11th", after.len());
    let before = all(RunFilter { created_before: Some(middle), ..RunFilter::company(acme.clone()) }).await?;
    ensure!(before.len() == 10);
    let window = all(RunFilter {
        created_after: Some(runs[2].create_time),
        created_before: Some(runs[6].create_time),
        ..RunFilter::company(acme.clone())
    })
    .await?;
    ensure!(window == ids(&runs[2..6]).into_iter().rev().collect::<Vec<_>>());
    ensure!(
        all(RunFilter { batch: Some(BatchId::from_random(1)), ..RunFilter::company(acme.clone()) }).await?.is_empty()
    );
    ensure!(all(RunFilter::company(company("globex")?)).await?.len() == 1);

    // Page size defaults and bounds; a forged token is refused.
    let default = store.list_runs(&RunFilter::company(acme.clone()), &PageRequest::default()).await?;
    ensure!(default.runs.len() == 28 && default.next_page_token.is_none());
    let forged = PageRequest { size: 5, token: Some("not-a-token".to_owned()) };
    ensure!(matches!(store.list_runs(&RunFilter::company(acme), &forged).await, Err(StoreError::InvalidPageToken)));
    Ok(())
}

/// The staleness scan reads READY and DEGRADED runs of every company, page by page.
pub(crate) async fn runs_in_states_pages_across_companies(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let mut expected = Vec::new();
    for (n, company) in ["acme", "globex", "initech"].into_iter().enumerate() {
        for role in ["Analyst", "Adjuster"] {
            let run = create(store, push(company, role, &format!("{company}-{role}"))?).await?;
            to(store, &run.workflow_id, RunState::Processing).await?;
            let end = if n == 1 { RunState::Degraded } else { RunState::Ready };
            to(store, &run.workflow_id, end).await?;
            expected.push(run.workflow_id.to_string());
        }
    }
    // Neither queued nor failed runs are listed.
    create(store, push("acme", "Queued", "q")?).await?;
    let failed = create(store, push("acme", "Failed", "f")?).await?;
    to(store, &failed.workflow_id, RunState::Processing).await?;
    to(store, &failed.workflow_id, RunState::Failed).await?;
    expected.sort();

    let mut seen = Vec::new();
    let mut after: Option<WorkflowId> = None;
    loop {
        let page = store.runs_in_states(&[RunState::Ready, RunState::Degraded], after.as_ref(), 4).await?;
        ensure!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        after = Some(last.workflow_id.clone());
        seen.extend(page.iter().map(|r| r.workflow_id.to_string()));
    }
    ensure!(seen == expected, "{seen:#?} vs {expected:#?}");
    Ok(())
}
