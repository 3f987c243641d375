//! Batches: a 2,500-run batch stored at once, and a batch's items decided in request order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{Result, bail, ensure};
use etter_core::ids::{BatchId, RequestId, RoleId, WorkflowId};
use etter_core::lifecycle::RunState;
use etter_store::{
    Admission, Change, FieldViolation, NewBatch, PageRequest, RunEvent, RunFilter, StoreError, WatchScope,
};

use crate::{Ctx, all_events, company, create, push, role_name, to};

pub(crate) async fn batch_of_2500_runs(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let acme = company("bulk")?;
    let rejected = [10usize, 20, 30];
    let mut items = Vec::new();
    for i in 0..2500usize {
        let mut item = push("bulk", &format!("Role {i:04}"), &format!("identity-{i}"))?;
        if rejected.contains(&i) {
            item.draup_role_id = None;
            item.admission = Admission::Reject(vec![FieldViolation {
                field: "draup_role_id".into(),
                description: "is required".into(),
            }]);
        }
        items.push(item);
    }
    // The same role and inputs again, in another chunk: answered with the first item's run.
    items[2400] = push("bulk", "Role 0000", "identity-0")?;
    // A name whose role id is taken by another name of the batch: refused alone.
    items[2401] = push("bulk", "Role-0001", "identity-x")?;

    let batch = BatchId::from_random(0xb47c);
    let started = Instant::now();
    let created = store
        .create_batch(
            NewBatch { id: batch.clone(), company: acme.clone(), request_id: Some(RequestId::parse("r")?) },
            items,
        )
        .await?;
    let elapsed = started.elapsed();
    eprintln!("{}: 2,500-run batch stored in {elapsed:?}", store.backend());

    ensure!(created.items.len() == 2500 && created.batch.item_count == 2500);
    let mut accepted = 0;
    for (i, item) in created.items.iter().enumerate() {
        match (i, item) {
            (2400, Ok(existing)) => ensure!(!existing.created && existing.run.run_number == 1),
            (2401, Err(StoreError::RoleIdCollision { .. })) => {}
            (i, Ok(run)) if rejected.contains(&i) => ensure!(run.created && run.run.state == RunState::ValidationError),
            (_, Ok(run)) => {
                ensure!(run.created && run.run.state == RunState::Queued && run.run.batch_id.as_ref() == Some(&batch));
                accepted += 1;
            }
            (i, Err(e)) => bail!("item {i} failed: {e}"),
        }
    }
    ensure!(accepted == 2495);

    // Everything is stored and listable by batch, page by page.
    let mut listed = BTreeSet::new();
    let filter = RunFilter { batch: Some(batch.clone()), ..RunFilter::company(acme.clone()) };
    let mut page = PageRequest { size: 500, token: None };
    loop {
        let got = store.list_runs(&filter, &page).await?;
        for run in got.runs {
            ensure!(listed.insert(run.workflow_id.clone()), "{} listed twice", run.workflow_id);
        }
        match got.next_page_token {
            Some(token) => page.token = Some(token),
            None => break,
        }
    }
    ensure!(listed.len() == 2498, "{} runs listed", listed.len());
    let counts: BTreeMap<_, _> = store.batch_counts(&batch).await?.into_iter().collect();
    ensure!(counts.get(&RunState::Queued) == Some(&2495) && counts.get(&RunState::ValidationError) == Some(&3));
    ensure!(store.sequence_heads(&WatchScope::Batch(batch.clone())).await?.len() == 2498);
    let stored = store.get_batch(&batch).await?;
    ensure!(stored == created.batch, "{stored:?}");
    let rejected_run = store.get_run(&WorkflowId::for_run(&RoleId::new(&acme, &role_name("Role 0010")?), 1)).await?;
    ensure!(
        rejected_run.field_violations.len() == 1 && rejected_run.error.is_some() && rejected_run.end_time.is_some()
    );

    let again = store.create_batch(NewBatch { id: batch, company: acme, request_id: None }, Vec::new()).await;
    ensure!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    Ok(())
}

/// A batch's items are decided as if pushed one after the other, though the store writes them
/// together: a role twice in one batch sees the run its first item created, and superseding works
/// across the batch and within it.
pub(crate) async fn a_batch_decides_its_items_in_request_order(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let adjuster = create(store, push("order", "Adjuster", "a1")?).await?;
    to(store, &adjuster.workflow_id, RunState::Processing).await?;
    to(store, &adjuster.workflow_id, RunState::Ready).await?;
    let mut rejected = push("order", "Clerk", "c1")?;
    rejected.draup_role_id = None;
    rejected.admission =
        Admission::Reject(vec![FieldViolation { field: "draup_role_id".into(), description: "is required".into() }]);
    let mut clerk = push("order", "Clerk", "c2")?;
    clerk.reason = "fixed and pushed again".to_owned();
    let items = vec![
        push("order", "Adjuster", "a2")?, // new inputs: run 2, superseding the stored run 1
        push("order", "Adjuster", "a2")?, // the same again: run 2 answers
        push("order", "Broker", "b1")?,   // a new role: run 1
        push("order", "Broker", "b2")?,   // other inputs while run 1 is queued: refused
        rejected,                         // kept as VALIDATION_ERROR: run 1
        clerk,                            // valid now: run 2, superseding run 1 of this batch
    ];
    let batch = BatchId::from_random(0x0bde);
    let created =
        store.create_batch(NewBatch { id: batch.clone(), company: company("order")?, request_id: None }, items).await?;
    let answers: Vec<Result<(String, u32, bool), String>> = created
        .items
        .iter()
        .map(|item| match item {
            Ok(c) => Ok((c.run.role_name.to_string(), c.run.run_number, c.created)),
            Err(e) => Err(format!("{e:?}")),
        })
        .collect();
    ensure!(answers[0] == Ok(("Adjuster".to_owned(), 2, true)), "{answers:?}");
    ensure!(answers[1] == Ok(("Adjuster".to_owned(), 2, false)), "{answers:?}");
    ensure!(answers[2] == Ok(("Broker".to_owned(), 1, true)), "{answers:?}");
    ensure!(matches!(created.items[3], Err(StoreError::RunStillActive(_))), "{answers:?}");
    ensure!(answers[4] == Ok(("Clerk".to_owned(), 1, true)), "{answers:?}");
    ensure!(answers[5] == Ok(("Clerk".to_owned(), 2, true)), "{answers:?}");

    // What is stored is what was answered.
    let old = store.get_run(&adjuster.workflow_id).await?;
    let new = store.latest_run(&adjuster.role_id).await?;
    ensure!(new.run_number == 2 && new.supersedes.as_ref() == Some(&old.workflow_id), "{new:#?}");
    ensure!(old.superseded_by.as_ref() == Some(&new.workflow_id) && old.state == RunState::Ready, "{old:#?}");
    let clerk_role = RoleId::new(&company("order")?, &role_name("Clerk")?);
    let clerk_1 = store.get_run(&WorkflowId::for_run(&clerk_role, 1)).await?;
    let clerk_2 = store.latest_run(&clerk_role).await?;
    ensure!(clerk_1.state == RunState::ValidationError && clerk_1.superseded_by.as_ref() == Some(&clerk_2.workflow_id));
    ensure!(clerk_2.run_number == 2 && clerk_2.state == RunState::Queued && clerk_2.batch_id.as_ref() == Some(&batch));
    let first_event = all_events(store, &clerk_2.workflow_id).await?;
    ensure!(
        matches!(&first_event[..], [RunEvent { sequence: 1, change: Change::Status { previous: None, status: RunState::Queued, reason }, .. }] if reason == "fixed and pushed again"),
        "{first_event:#?}"
    );
    let broker = store.latest_run(&RoleId::new(&company("order")?, &role_name("Broker")?)).await?;
    ensure!(broker.run_number == 1 && broker.input_identity == "b1", "{broker:#?}");
    // Four runs of this batch: Adjuster 2, Broker 1, Clerk 1 and 2.
    ensure!(store.sequence_heads(&WatchScope::Batch(batch)).await?.len() == 4);
    Ok(())
}

pub(crate) async fn a_batch_ends_with_its_last_queued_run(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let acme = company("acme")?;
    let before = create(store, push("acme", "Pushed Before", "b")?).await?;
    let batch = BatchId::from_random(0x1a57);
    let items = vec![push("acme", "Batch One", "1")?, push("acme", "Batch Two", "2")?];
    let created =
        store.create_batch(NewBatch { id: batch.clone(), company: acme.clone(), request_id: None }, items).await?;
    let mut runs: Vec<WorkflowId> = Vec::new();
    for item in &created.items {
        runs.push(item.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?.run.workflow_id.clone());
    }
    let after = create(store, push("acme", "Pushed After", "a")?).await?;

    // Its second run is third in the company's order (after the run pushed before it), whatever
    // comes after it; the position is the one the run itself is given.
    let last = store.last_queued_of_batch(&acme, &batch).await?;
    ensure!(last.as_ref().map(|(p, _)| *p) == Some(3), "{last:?}");
    ensure!(store.queue_position(&runs[1]).await? == Some(3));
    ensure!(last.and_then(|(_, plan)| plan) == Some(etter_core::steps::plan_new(false)), "with its plan");
    // Runs ahead start: the batch's last run moves up.
    to(store, &before.workflow_id, RunState::Processing).await?;
    ensure!(store.last_queued_of_batch(&acme, &batch).await?.map(|(p, _)| p) == Some(2));
    // Its last run starts: the one before it is now the last queued.
    to(store, &runs[1], RunState::Processing).await?;
    ensure!(store.last_queued_of_batch(&acme, &batch).await?.map(|(p, _)| p) == Some(1));
    to(store, &runs[0], RunState::Processing).await?;
    ensure!(store.last_queued_of_batch(&acme, &batch).await?.is_none(), "nothing of it is queued");
    ensure!(store.queue_position(&after.workflow_id).await? == Some(1));
    Ok(())
}
