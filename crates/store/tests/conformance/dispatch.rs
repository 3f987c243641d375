//! Dispatch: claims in priority order with leases, queue positions, company loads, concurrent
//! claimers, and a pushed run claimed as it is created.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_core::lifecycle::RunState;
use etter_store::{Admission, Claim, ClaimTerms, FieldViolation, NewRun, Priority, Transition};

use crate::{Ctx, company, create, ids, push, to};

pub(crate) async fn claims_respect_priority_and_leases(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let acme = company("acme")?;
    let with = |role: &str, priority| -> Result<NewRun> { Ok(NewRun { priority, ..push("acme", role, "p")? }) };
    let low = create(store, with("Low One", Priority::Low)?).await?;
    let normal1 = create(store, with("Normal One", Priority::Normal)?).await?;
    let high = create(store, with("High One", Priority::High)?).await?;
    let normal2 = create(store, with("Normal Two", Priority::Normal)?).await?;
    let other = create(store, NewRun { priority: Priority::High, ..push("globex", "Other", "p")? }).await?;

    let positions = store.queue_positions(&acme).await?;
    let order: Vec<_> = positions.iter().map(|p| (p.workflow_id.clone(), p.position)).collect();
    let dispatch_order =
        [high.workflow_id.clone(), normal1.workflow_id.clone(), normal2.workflow_id.clone(), low.workflow_id.clone()];
    ensure!(order == dispatch_order.iter().cloned().zip(1..).collect::<Vec<_>>(), "{order:?}");
    ensure!(store.queue_position(&normal2.workflow_id).await? == Some(3));
    ensure!(store.queue_position(&other.workflow_id).await? == Some(1), "positions are per company");
    ensure!(store.count_runs(Some(&acme), &[RunState::Queued]).await? == 4);
    ensure!(store.count_runs(None, &[RunState::Queued]).await? == 5);

    let now = etter_store::now();
    let claim = |limit, now| Claim {
        claimer: "dispatcher-1".into(),
        company: Some(acme.clone()),
        limit,
        lease: Duration::from_secs(30),
        now,
    };
    ensure!(ids(&store.claim_queued(&claim(2, now)).await?) == dispatch_order[..2]);
    ensure!(
        ids(&store.claim_queued(&claim(10, now)).await?) == dispatch_order[2..],
        "claimed runs are not handed out again"
    );
    ensure!(store.claim_queued(&claim(10, now)).await?.is_empty());
    // Claims do not move runs: no event, still QUEUED, still counted.
    ensure!(store.get_run(&high.workflow_id).await?.sequence == 1);

    // A released claim is free at once; an expired lease is free again.
    store.release_claim(&low.workflow_id, "dispatcher-1").await?;
    ensure!(ids(&store.claim_queued(&claim(10, now)).await?) == vec![low.workflow_id.clone()]);
    to(store, &high.workflow_id, RunState::Processing).await?;
    let expired = now + chrono::TimeDelta::seconds(31);
    ensure!(ids(&store.claim_queued(&claim(10, expired)).await?) == dispatch_order[1..], "after the lease");

    // Without a company: every company, still in priority order.
    let any = Claim { company: None, ..claim(10, expired + chrono::TimeDelta::seconds(31)) };
    let claimed = ids(&store.claim_queued(&any).await?);
    ensure!(claimed.first() == Some(&other.workflow_id) && claimed.len() == 4, "{claimed:?}");

    let loads = store.company_loads().await?;
    let acme_load = loads.iter().find(|l| l.company == acme).context("acme has load")?;
    ensure!(acme_load.queued == 3 && acme_load.processing == 1, "{loads:?}");
    Ok(())
}

pub(crate) async fn concurrent_claimers_get_disjoint_runs(ctx: Ctx) -> Result<()> {
    let mut all = BTreeSet::new();
    for i in 0..40 {
        let company_id = if i % 2 == 0 { "acme" } else { "globex" };
        all.insert(create(ctx.store.as_ref(), push(company_id, &format!("Claimable {i}"), "c")?).await?.workflow_id);
    }
    let now = etter_store::now();
    let mut tasks = Vec::new();
    for claimer in 0..4 {
        let store = ctx.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claim = Claim {
                    claimer: format!("dispatcher-{claimer}"),
                    company: None,
                    limit: 3,
                    lease: Duration::from_secs(60),
                    now,
                };
                let got = store.claim_queued(&claim).await?;
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|r| r.workflow_id));
            }
            anyhow::Ok(mine)
        }));
    }
    let mut claimed = BTreeSet::new();
    for task in tasks {
        for id in task.await?? {
            ensure!(claimed.insert(id.clone()), "{id} was handed to two claimers");
        }
    }
    ensure!(claimed == all, "claimed {} of {}", claimed.len(), all.len());
    Ok(())
}

pub(crate) async fn a_pushed_run_is_claimed_as_created_only_with_nothing_waiting_and_room(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let now = etter_store::now();
    let lease = Duration::from_secs(30);
    let terms =
        |company_room, total_room| ClaimTerms { claimer: "dispatcher-1".into(), lease, company_room, total_room };
    let claimed = |created: &etter_store::Created| created.created && created.claimed;
    let left = |created: &etter_store::Created| created.created && !created.claimed;
    let round = Claim { claimer: "dispatcher-2".into(), company: None, limit: 10, lease, now };

    // Nothing else waits: claimed as it is created, still QUEUED (one event), not handed to a round.
    let first = store.create_run_and_claim(push("acme", "Fast One", "f")?, &terms(10, 10)).await?;
    ensure!(claimed(&first) && first.run.state == RunState::Queued && first.run.sequence == 1, "{first:?}");
    ensure!(store.claim_queued(&round).await?.is_empty(), "a claimed run is not handed to a round");
    to(store, &first.run.workflow_id, RunState::Processing).await?;

    // Another run waits (of another company, with a lower priority): the new run waits too.
    let waiting = create(store, NewRun { priority: Priority::Low, ..push("globex", "Waiting", "f")? }).await?;
    let second = NewRun { priority: Priority::High, ..push("acme", "Fast Two", "f")? };
    let second = store.create_run_and_claim(second, &terms(10, 10)).await?;
    ensure!(left(&second), "a run waits ahead of it: {second:?}");
    // Runs whose claim expired still wait.
    let expired = Claim { now: now - chrono::TimeDelta::seconds(60), ..round.clone() };
    ensure!(
        ids(&store.claim_queued(&expired).await?) == vec![second.run.workflow_id.clone(), waiting.workflow_id.clone()]
    );
    let third = store.create_run_and_claim(push("acme", "Fast Three", "f")?, &terms(10, 10)).await?;
    ensure!(left(&third), "runs whose claim expired wait ahead of it: {third:?}");
    // Runs being started (claimed, not expired) do not.
    ensure!(store.claim_queued(&round).await?.len() == 3);
    let fourth = store.create_run_and_claim(push("globex", "Fast Four", "f")?, &terms(10, 10)).await?;
    ensure!(claimed(&fourth), "the runs ahead are being started: {fourth:?}");
    to(store, &waiting.workflow_id, RunState::Cancelled).await?;
    to(store, &third.run.workflow_id, RunState::Cancelled).await?;

    // The caps: acme has two PROCESSING runs, the service two.
    to(store, &second.run.workflow_id, RunState::Processing).await?;
    for (name, company_room, total_room, why) in [
        ("Capped", 2, 10, "the company's cap is reached"),
        ("Capped Total", 10, 2, "the service's cap is reached"),
        ("No Room", 0, 10, "no room at all"),
    ] {
        let capped = store.create_run_and_claim(push("acme", name, "f")?, &terms(company_room, total_room)).await?;
        ensure!(left(&capped), "{why}: {capped:?}");
        to(store, &capped.run.workflow_id, RunState::Cancelled).await?;
    }
    let other = store.create_run_and_claim(push("globex", "Elsewhere", "f")?, &terms(1, 10)).await?;
    ensure!(claimed(&other), "another company's runs do not count: {other:?}");
    let roomy = store.create_run_and_claim(push("acme", "Roomy", "f")?, &terms(3, 3)).await?;
    ensure!(claimed(&roomy), "room on both caps: {roomy:?}");

    // A role with runs already (created under its lock, then claimed): a new run superseding the
    // ended one is claimed; the same push again gets that run back, neither created nor claimed.
    to(store, &first.run.workflow_id, RunState::Ready).await?;
    let again = store.create_run_and_claim(push("acme", "Fast One", "g")?, &terms(10, 10)).await?;
    ensure!(claimed(&again), "{again:?}");
    ensure!(again.run.run_number == 2 && again.run.supersedes.as_ref() == Some(&first.run.workflow_id));
    let same = store.create_run_and_claim(push("acme", "Fast One", "g")?, &terms(10, 10)).await?;
    ensure!(!same.created && !same.claimed && same.run.workflow_id == again.run.workflow_id, "{same:?}");
    ensure!(
        store.claim_queued(&Claim { now: etter_store::now(), ..round }).await?.is_empty(),
        "every queued run is claimed"
    );
    Ok(())
}

pub(crate) async fn waiting_runs_past_their_deadline_are_found_earliest_first(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let now = etter_store::now();
    let at = |seconds: i64| Some(now + chrono::TimeDelta::seconds(seconds));
    let with = |role: &str, deadline| -> Result<NewRun> { Ok(NewRun { deadline, ..push("acme", role, "d")? }) };
    let later = create(store, with("Due Later", at(-5))?).await?;
    let first = create(store, with("Due First", at(-10))?).await?;
    let future = create(store, with("Due Tomorrow", at(86_400))?).await?;
    let never = create(store, with("No Deadline", None)?).await?;
    let checking = create(store, NewRun { admission: Admission::Validate, ..with("Still Checked", at(-7))? }).await?;
    let started = create(store, with("Started In Time", at(-20))?).await?;
    to(store, &started.workflow_id, RunState::Processing).await?;

    ensure!(store.get_run(&future.workflow_id).await?.deadline == future.deadline, "the deadline is kept");
    ensure!(store.get_run(&never.workflow_id).await?.deadline.is_none());
    let overdue = store.waiting_past_deadline(now, 10).await?;
    let expected = [&first, &checking, &later].map(|r| r.workflow_id.clone());
    ensure!(overdue == expected, "VALIDATING runs wait too: {overdue:?}");
    ensure!(store.waiting_past_deadline(now, 1).await? == vec![first.workflow_id.clone()], "the limit");
    ensure!(store.waiting_past_deadline(now - chrono::TimeDelta::seconds(60), 10).await?.is_empty());
    // Once cancelled or queued past its checks, a run is no longer waiting past its deadline as
    // it was; a queued one still is.
    to(store, &first.workflow_id, RunState::Cancelled).await?;
    to(store, &checking.workflow_id, RunState::Cancelled).await?;
    ensure!(store.waiting_past_deadline(now, 10).await? == vec![later.workflow_id.clone()]);
    Ok(())
}

pub(crate) async fn validating_runs_wait_apart_from_the_queue_and_are_claimed_for_checks(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let acme = company("acme")?;
    let checked = |role: &str| -> Result<NewRun> {
        Ok(NewRun { admission: Admission::Validate, token_estimate: 100, ..push("acme", role, "v")? })
    };
    let first = create(store, checked("Checked First")?).await?;
    let second = create(store, checked("Checked Second")?).await?;
    let third = create(store, checked("Checked Third")?).await?;
    let queued = create(store, NewRun { token_estimate: 10, ..push("acme", "Queued Already", "v")? }).await?;
    ensure!(first.state == RunState::Validating && first.end_time.is_none());

    // Accepted and counted, but not in the queue: no place in it, nothing for the dispatcher.
    ensure!(store.count_runs(Some(&acme), &[RunState::Validating]).await? == 3);
    ensure!(store.queue_position(&first.workflow_id).await?.is_none());
    let positions: Vec<_> = store.queue_positions(&acme).await?.into_iter().map(|p| p.workflow_id).collect();
    ensure!(positions == vec![queued.workflow_id.clone()], "{positions:?}");
    ensure!(store.token_reservations(&acme).await? == 310, "VALIDATING runs reserve their tokens");
    // The same inputs pushed again are answered by the run being checked.
    let again = store.create_run(checked("Checked First")?).await?;
    ensure!(!again.created && again.run.workflow_id == first.workflow_id);

    let now = etter_store::now();
    let claim =
        |limit, now| Claim { claimer: "checker-1".into(), company: None, limit, lease: Duration::from_secs(30), now };
    let dispatch = |now| Claim { claimer: "dispatcher-1".into(), ..claim(10, now) };
    ensure!(ids(&store.claim_queued(&dispatch(now)).await?) == vec![queued.workflow_id.clone()]);
    ensure!(
        ids(&store.claim_validating(&claim(2, now)).await?)
            == vec![first.workflow_id.clone(), second.workflow_id.clone()]
    );
    ensure!(ids(&store.claim_validating(&claim(10, now)).await?) == vec![third.workflow_id.clone()]);
    ensure!(store.claim_validating(&claim(10, now)).await?.is_empty(), "claimed runs are not handed out again");

    // Checked and queued: the checker's claim goes with the state, so the dispatcher takes it now.
    to(store, &first.workflow_id, RunState::Queued).await?;
    ensure!(ids(&store.claim_queued(&dispatch(now)).await?) == vec![first.workflow_id.clone()]);
    // Rejected: VALIDATION_ERROR with its violations, ended, its reservation released.
    let missing = FieldViolation { field: "documents[0].uri".into(), description: "no such object".into() };
    let rejected = store
        .transition(&second.workflow_id, Transition::rejected(vec![missing.clone()], "a document is missing"))
        .await?;
    ensure!(rejected.state == RunState::ValidationError && rejected.end_time.is_some());
    ensure!(rejected.field_violations == vec![missing]);
    ensure!(store.token_reservations(&acme).await? == 210);
    // A claim given up (the store did not answer) is free at once; an expired one after its lease.
    store.release_claim(&third.workflow_id, "checker-1").await?;
    ensure!(ids(&store.claim_validating(&claim(10, now)).await?) == vec![third.workflow_id.clone()]);
    let expired = now + chrono::TimeDelta::seconds(31);
    ensure!(ids(&store.claim_validating(&claim(10, expired)).await?) == vec![third.workflow_id.clone()]);

    // Decisions recorded together: each answered on its own; a refused one writes nothing.
    let gone = etter_core::ids::WorkflowId::parse("role-onboard-cr-acme.nobody-1")?;
    let outcomes = store
        .transition_each(vec![
            (third.workflow_id.clone(), Transition::to(RunState::Queued, "checked")),
            (second.workflow_id.clone(), Transition::to(RunState::Queued, "checked again")),
            (gone, Transition::to(RunState::Queued, "checked")),
        ])
        .await?;
    let [queued_now, refused, missing] = outcomes.as_slice() else { anyhow::bail!("three answers: {outcomes:?}") };
    ensure!(queued_now.as_ref().is_ok_and(|r| r.state == RunState::Queued && r.sequence == 2), "{queued_now:?}");
    ensure!(matches!(refused, Err(etter_store::StoreError::IllegalTransition(_))), "{refused:?}");
    ensure!(matches!(missing, Err(etter_store::StoreError::NotFound { .. })), "{missing:?}");
    let untouched = store.get_run(&second.workflow_id).await?;
    ensure!(untouched.state == RunState::ValidationError && untouched.sequence == 2, "{untouched:?}");
    ensure!(store.get_run(&third.workflow_id).await?.state == RunState::Queued);
    Ok(())
}

pub(crate) async fn workers_count_while_their_presence_is_recent(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let queue = "presence-queue";
    let started = etter_store::now();
    let seen = |since| store.workers_seen(queue, since);
    ensure!(seen(started).await? == etter_store::WorkersSeen { recent: 0, known: 0 }, "none yet");

    store.worker_seen("worker-a", queue, started).await?;
    store.worker_seen("worker-b", queue, started).await?;
    store.worker_seen("worker-c", "another-queue", started).await?;
    ensure!(seen(started).await? == etter_store::WorkersSeen { recent: 2, known: 2 }, "per queue");
    // Presence is as recent as the last record: not yet seen after now.
    let later = etter_store::now() + chrono::TimeDelta::seconds(30);
    ensure!(seen(later).await? == etter_store::WorkersSeen { recent: 0, known: 2 });
    store.worker_seen("worker-a", queue, started).await?;
    ensure!(seen(started).await?.recent == 2, "a second record is an update, not another worker");

    // A worker that stops is gone at once, though still known.
    store.worker_gone("worker-b").await?;
    ensure!(seen(started).await? == etter_store::WorkersSeen { recent: 1, known: 2 });
    Ok(())
}
