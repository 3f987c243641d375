//! Runs: creating and reading one, run numbers and superseding, deduplication by input identity,
//! concurrent pushes of one identity, and every lifecycle edge.

use std::collections::BTreeSet;

use anyhow::{Result, bail, ensure};
use etter_core::ids::{RoleId, TraceId, WorkflowId};
use etter_core::lifecycle::RunState;
use etter_store::{Admission, Change, FieldViolation, NewRun, StoreError, Transition};

use crate::{Ctx, all_events, company, create, ensure_gap_free, push, to};

pub(crate) async fn create_and_get_run(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let before = etter_store::now();
    let run = create(store, push("liberty", "Claims Adjuster", "aa01")?).await?;
    ensure!(run.workflow_id.as_str() == "role-onboard-cr-liberty.claims-adjuster-1", "{}", run.workflow_id);
    ensure!(run.role_id.as_str() == "cr-liberty.claims-adjuster");
    ensure!(run.state == RunState::Queued && run.run_number == 1 && run.sequence == 1);
    ensure!(run.create_time >= before && run.start_time.is_none() && run.end_time.is_none());

    let stored = store.get_run(&run.workflow_id).await?;
    ensure!(stored == run, "stored run differs:\n{stored:#?}\nvs\n{run:#?}");
    ensure!(stored.documents[0].uri == "file:///docs/aa01.md" && stored.options["skip_enhancement_workflows"] == false);
    ensure!(store.latest_run(&run.role_id).await? == run);
    ensure!(stored.plan == Some(etter_core::steps::plan_new(false)), "the plan is kept: {:?}", stored.plan);
    ensure!(
        stored.trace_id.as_ref().map(TraceId::as_str) == Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        "the request's trace id is kept: {:?}",
        stored.trace_id
    );
    ensure!(
        stored.trace_parent.as_ref().map(|p| p.as_str())
            == Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        "the request span's traceparent is kept: {:?}",
        stored.trace_parent
    );

    // A STALE re-run's plan (reuse and early cutoff) round-trips too.
    let kept = etter_core::steps::Plan {
        steps: etter_core::steps::plan_new(true)
            .steps
            .into_iter()
            .map(|(s, a)| {
                (s, if s == etter_core::steps::StepName::RoleSetup { etter_core::steps::Action::Reuse } else { a })
            })
            .collect(),
        early_cutoff: true,
    };
    let other = create(store, NewRun { plan: Some(kept.clone()), ..push("liberty", "Plan Keeper", "aa02")? }).await?;
    ensure!(store.get_run(&other.workflow_id).await?.plan == Some(kept));

    let events = all_events(store, &run.workflow_id).await?;
    ensure!(
        events.len() == 1
            && events[0].change
                == Change::Status { previous: None, status: RunState::Queued, reason: "pushed by test".to_owned() }
    );

    let missing = WorkflowId::parse("role-onboard-cr-liberty-nobody-1")?;
    ensure!(matches!(store.get_run(&missing).await, Err(StoreError::NotFound { what: "run", .. })));
    ensure!(matches!(
        store.latest_run(&RoleId::parse("cr-liberty-nobody")?).await,
        Err(StoreError::NotFound { what: "role", .. })
    ));
    ensure!(matches!(
        store.transition(&missing, Transition::to(RunState::Processing, "x")).await,
        Err(StoreError::NotFound { .. })
    ));
    store.ping().await?;
    ensure!(["postgres", "sqlite"].contains(&store.backend()));
    Ok(())
}

pub(crate) async fn run_numbers_increment_and_supersede(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let first = create(store, push("acme", "Underwriter", "i1")?).await?;
    to(store, &first.workflow_id, RunState::Cancelled).await?;
    let second = create(store, push("acme", "Underwriter", "i2")?).await?;
    ensure!(second.run_number == 2 && second.workflow_id.as_str() == "role-onboard-cr-acme.underwriter-2");
    ensure!(second.supersedes.as_ref() == Some(&first.workflow_id));
    let first = store.get_run(&first.workflow_id).await?;
    ensure!(first.superseded_by.as_ref() == Some(&second.workflow_id), "{first:#?}");
    ensure!(first.state == RunState::Cancelled, "superseding does not change the old run's state");

    to(store, &second.workflow_id, RunState::Processing).await?;
    to(store, &second.workflow_id, RunState::Failed).await?;
    let third = create(store, push("acme", "Underwriter", "i2")?).await?;
    ensure!(third.run_number == 3);
    ensure!(store.latest_run(&third.role_id).await?.workflow_id == third.workflow_id);
    // Another role numbers from 1.
    ensure!(create(store, push("acme", "Broker", "i1")?).await?.run_number == 1);
    Ok(())
}

pub(crate) async fn identity_dedupe_returns_the_existing_run(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let first = create(store, push("acme", "Analyst", "same")?).await?;

    // Same identity while QUEUED: the existing run, nothing new.
    let again = store.create_run(push("acme", "Analyst", "same")?).await?;
    ensure!(!again.created && again.run.workflow_id == first.workflow_id);
    // force while the latest run is active: refused by the lifecycle, nothing written.
    let forced = NewRun { force: true, ..push("acme", "Analyst", "same")? };
    ensure!(matches!(store.create_run(forced).await, Err(StoreError::RunStillActive(_))));
    // Different inputs while active: refused too.
    ensure!(matches!(store.create_run(push("acme", "Analyst", "other")?).await, Err(StoreError::RunStillActive(_))));
    ensure!(all_events(store, &first.workflow_id).await?.len() == 1);

    to(store, &first.workflow_id, RunState::Processing).await?;
    let again = store.create_run(push("acme", "Analyst", "same")?).await?;
    ensure!(!again.created && again.run.state == RunState::Processing);
    to(store, &first.workflow_id, RunState::Ready).await?;
    let again = store.create_run(push("acme", "Analyst", "same")?).await?;
    ensure!(!again.created && again.run.state == RunState::Ready, "READY runs are returned too");

    // force_rerun after the run ended: a new run superseding it.
    let forced = create(store, NewRun { force: true, ..push("acme", "Analyst", "same")? }).await?;
    ensure!(forced.run_number == 2 && forced.supersedes.as_ref() == Some(&first.workflow_id));

    // A FAILED run is not returned: the same push starts a new run.
    to(store, &forced.workflow_id, RunState::Processing).await?;
    to(store, &forced.workflow_id, RunState::Failed).await?;
    let retried = create(store, push("acme", "Analyst", "same")?).await?;
    ensure!(retried.run_number == 3);

    // Retry names the run it retries: only the latest may be retried.
    to(store, &retried.workflow_id, RunState::Cancelled).await?;
    let stale_retry = NewRun { expected_latest: Some(forced.workflow_id.clone()), ..push("acme", "Analyst", "same")? };
    ensure!(matches!(store.create_run(stale_retry).await, Err(StoreError::Conflict(_))));
    let retry = NewRun { expected_latest: Some(retried.workflow_id.clone()), ..push("acme", "Analyst", "same")? };
    ensure!(create(store, retry).await?.supersedes.as_ref() == Some(&retried.workflow_id));

    // The same invalid item rejected again: its VALIDATION_ERROR run answers; another invalid
    // item (or a valid one) of the role makes a new run.
    let reject = |identity: &str| -> Result<NewRun> {
        Ok(NewRun {
            admission: Admission::Reject(vec![FieldViolation {
                field: "documents".into(),
                description: "empty".into(),
            }]),
            ..push("acme", "Rejected Role", identity)?
        })
    };
    let rejected = create(store, reject("bad")?).await?;
    let again = store.create_run(reject("bad")?).await?;
    ensure!(!again.created && again.run.workflow_id == rejected.workflow_id, "{again:?}");
    ensure!(create(store, reject("worse")?).await?.run_number == 2);
    ensure!(create(store, push("acme", "Rejected Role", "bad")?).await?.run_number == 3, "fixed: queued");
    Ok(())
}

pub(crate) async fn concurrent_pushes_of_one_identity_create_one_run(ctx: Ctx) -> Result<()> {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = ctx.store.clone();
        let new = push("acme", "Concurrent Role", "same-inputs")?;
        tasks.push(tokio::spawn(async move { store.create_run(new).await }));
    }
    let mut created = 0;
    let mut workflows = BTreeSet::new();
    for task in tasks {
        let outcome = task.await??;
        created += usize::from(outcome.created);
        workflows.insert(outcome.run.workflow_id);
    }
    ensure!(created == 1 && workflows.len() == 1, "created {created}, workflows {workflows:?}");
    let count = ctx.store.count_runs(Some(&company("acme")?), &[]).await?;
    ensure!(count == 1, "{count} runs stored");
    Ok(())
}

/// The path from the state a run is created in (QUEUED; VALIDATING or VALIDATION_ERROR when
/// created so) to each state, through allowed edges.
fn path_to(state: RunState) -> &'static [RunState] {
    use RunState::*;
    match state {
        Validating | Queued | ValidationError => &[],
        Processing => &[Processing],
        Ready => &[Processing, Ready],
        Degraded => &[Processing, Degraded],
        Failed => &[Processing, Failed],
        Stale => &[Processing, Ready, Stale],
        Cancelled => &[Cancelled],
    }
}

pub(crate) async fn every_lifecycle_edge_through_the_store(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    for from in RunState::ALL {
        for target in RunState::ALL {
            let role = format!("Edge {from} {target}");
            let mut new = push("edges", &role, "x")?;
            let violation = FieldViolation { field: "documents[0].uri".into(), description: "missing".into() };
            if from == RunState::ValidationError {
                new.admission = Admission::Reject(vec![violation.clone()]);
            }
            if from == RunState::Validating {
                new.admission = Admission::Validate;
            }
            let run = create(store, new).await?;
            for step in path_to(from) {
                to(store, &run.workflow_id, *step).await?;
            }
            let before = store.get_run(&run.workflow_id).await?;
            ensure!(before.state == from);
            let events_before = all_events(store, &run.workflow_id).await?;

            let reason = format!("{from} to {target}");
            let change = match target {
                RunState::ValidationError => Transition::rejected(vec![violation.clone()], reason),
                _ => Transition::to(target, reason),
            };
            let result = store.transition(&run.workflow_id, change).await;
            let after = store.get_run(&run.workflow_id).await?;
            let events = all_events(store, &run.workflow_id).await?;
            ensure_gap_free(&events)?;
            match (etter_core::lifecycle::transition(from, target), result) {
                (Ok(()), Ok(returned)) => {
                    ensure!(returned == after && after.state == target, "{from}→{target}: {after:#?}");
                    // A PROCESSING run that ends closes its planned steps first (none ran here):
                    // one event each, before the status change, which stays the last.
                    let closed = if from == RunState::Processing && target.is_final() {
                        run.plan.as_ref().map_or(0, |plan| {
                            plan.steps.iter().filter(|(_, a)| *a == etter_core::steps::Action::Run).count()
                        })
                    } else {
                        0
                    };
                    ensure!(events.len() == events_before.len() + 1 + closed, "{from}→{target}: {events:#?}");
                    let expected =
                        Change::Status { previous: Some(from), status: target, reason: format!("{from} to {target}") };
                    ensure!(events.last().map(|e| &e.change) == Some(&expected));
                    ensure!(after.sequence == events.len() as u64);
                    if target == RunState::Processing {
                        ensure!(after.start_time.is_some());
                    }
                    ensure!(after.end_time.is_some() == target.is_final(), "{from}→{target} end time");
                    if target == RunState::ValidationError {
                        ensure!(after.field_violations == vec![violation.clone()], "{from}→{target} violations");
                        ensure!(after.error.as_ref().is_some_and(|e| e.code == "VALIDATION_ERROR"));
                    }
                }
                (Err(illegal), Err(StoreError::IllegalTransition(refused))) => {
                    ensure!(illegal == refused);
                    ensure!(after == before, "{from}→{target} was refused but changed the run");
                    ensure!(events == events_before, "{from}→{target} was refused but appended an event");
                }
                (expected, got) => bail!("{from}→{target}: lifecycle says {expected:?}, store did {got:?}"),
            }
        }
    }
    Ok(())
}

pub(crate) async fn a_preview_decides_as_a_create_and_stores_nothing(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let existing = create(store, push("acme", "Quoted Existing", "same")?).await?;
    let previews = store
        .preview_runs(vec![
            push("acme", "Quoted New", "new")?,
            push("acme", "Quoted Existing", "same")?,
            push("acme", "Quoted Existing", "changed")?,
        ])
        .await?;
    let [new, same, changed] = previews.as_slice() else { bail!("three answers: {previews:?}") };
    let new = new.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(new.created && new.run.run_number == 1 && new.run.state == RunState::Queued, "{new:?}");
    let same = same.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(!same.created && same.run.workflow_id == existing.workflow_id, "the same inputs answer the run: {same:?}");
    // Other inputs while the role's run is still queued: refused, as a real push would be.
    ensure!(matches!(changed, Err(StoreError::RunStillActive(_))), "{changed:?}");

    // Nothing was stored: the new role has no run, the existing one is unchanged.
    ensure!(matches!(store.get_run(&new.run.workflow_id).await, Err(StoreError::NotFound { .. })));
    ensure!(store.latest_run(&existing.role_id).await?.workflow_id == existing.workflow_id);
    ensure!(store.get_run(&existing.workflow_id).await?.sequence == existing.sequence, "no event");
    // A real push then gets what the preview said.
    let created = create(store, push("acme", "Quoted New", "new")?).await?;
    ensure!(created.workflow_id == new.run.workflow_id, "{} vs {}", created.workflow_id, new.run.workflow_id);
    Ok(())
}
