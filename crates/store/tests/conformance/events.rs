//! Events: gap-free sequences under concurrent writers, reads after per-run marks within a scope,
//! and the sequence heads watchers (the live-progress fan-out) look at.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_core::ids::BatchId;
use etter_core::lifecycle::RunState;
use etter_store::{Change, EventScope, NewBatch, Run, StepStatus, StepTransition, WatchScope};

use crate::{Ctx, all_events, company, create, ensure_gap_free, push, to};

pub(crate) async fn concurrent_writers_to_one_run_get_gap_free_sequences(ctx: Ctx) -> Result<()> {
    const WRITERS: u32 = 8;
    const EACH: u32 = 25;
    let run = create(ctx.store.as_ref(), push("acme", "Busy Role", "b")?).await?;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = ctx.store.clone();
        let id = run.workflow_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for attempt in 1..=EACH {
                let step = StepTransition::new(format!("step-{writer}"), attempt, StepStatus::Running);
                let recorded = store.record_step(&id, step).await?;
                anyhow::ensure!(recorded.recorded);
                got.push((attempt, recorded.sequence));
            }
            anyhow::Ok((writer, got))
        }));
    }
    let mut by_sequence = BTreeMap::new();
    for task in tasks {
        let (writer, got) = task.await??;
        // One writer's calls are sequential, so their commit order is known: increasing sequences.
        ensure!(got.windows(2).all(|w| w[0].1 < w[1].1), "writer {writer} saw {got:?}");
        for (attempt, sequence) in got {
            ensure!(by_sequence.insert(sequence, (writer, attempt)).is_none(), "sequence {sequence} handed out twice");
        }
    }
    let events = all_events(ctx.store.as_ref(), &run.workflow_id).await?;
    ensure_gap_free(&events)?;
    let total = 1 + u64::from(WRITERS * EACH);
    ensure!(events.len() as u64 == total, "{} events", events.len());
    // Each event is the one whose sequence its writer was told.
    for event in &events[1..] {
        let (writer, attempt) = by_sequence.get(&event.sequence).context("event nobody wrote")?;
        let expected = format!("step-{writer}");
        ensure!(
            matches!(&event.change, Change::Step { step, attempt: a, .. } if *step == expected && a == attempt),
            "event {} is {:?}, expected {expected} attempt {attempt}",
            event.sequence,
            event.change
        );
    }
    ensure!(ctx.store.get_run(&run.workflow_id).await?.sequence == total);
    Ok(())
}

pub(crate) async fn events_after_marks_and_sequence_heads(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let batch = BatchId::from_random(7);
    let items = vec![push("acme", "Role A", "a")?, push("acme", "Role B", "b")?, push("acme", "Role C", "c")?];
    let created =
        store.create_batch(NewBatch { id: batch.clone(), company: company("acme")?, request_id: None }, items).await?;
    let runs: Vec<Run> = created.items.into_iter().map(|r| r.map(|c| c.run)).collect::<Result<_, _>>()?;
    let (a, b, c) = (&runs[0].workflow_id, &runs[1].workflow_id, &runs[2].workflow_id);
    to(store, a, RunState::Processing).await?;
    for attempt in 1..=3 {
        store.record_step(a, StepTransition::new("role_setup", attempt, StepStatus::Running)).await?;
    }
    to(store, b, RunState::Processing).await?;
    to(store, c, RunState::Cancelled).await?;

    let heads: BTreeMap<_, _> = store.sequence_heads(&WatchScope::Batch(batch.clone())).await?.into_iter().collect();
    ensure!(heads.len() == 3 && heads[a] == 5 && heads[b] == 2 && heads[c] == 2, "{heads:?}");
    let scope = |ended_since| WatchScope::ActiveInCompany {
        company: company("acme").unwrap_or_else(|e| panic!("{e}")),
        ended_since,
    };
    let later = etter_store::now() + chrono::TimeDelta::seconds(60);
    let active: BTreeMap<_, _> = store.sequence_heads(&scope(later)).await?.into_iter().collect();
    ensure!(active.len() == 2 && active.contains_key(a) && active.contains_key(b), "{active:?}");
    // The cancelled run ended just now: a look that counts recent ends sees it too.
    let earlier = etter_store::now() - chrono::TimeDelta::seconds(60);
    let recent: BTreeMap<_, _> = store.sequence_heads(&scope(earlier)).await?.into_iter().collect();
    ensure!(recent.len() == 3 && recent[c] == 2, "{recent:?}");

    // A watcher that saw A up to 2, B up to 1 and C not at all pages through with a small limit.
    let mut marks = vec![(a.clone(), 2), (b.clone(), 1), (c.clone(), 0)];
    let within = EventScope { company: company("acme")?, batch: Some(batch.clone()) };
    let mut seen = Vec::new();
    loop {
        let page = store.events_after_marks(&within, &marks, 2).await?;
        if page.is_empty() {
            break;
        }
        for event in page {
            let mark =
                marks.iter_mut().find(|(id, _)| *id == event.workflow_id).context("event of an unwatched run")?;
            ensure!(event.sequence == mark.1 + 1, "gap or repeat: {} after {}", event.sequence, mark.1);
            mark.1 = event.sequence;
            seen.push((event.workflow_id, event.sequence));
        }
    }
    ensure!(seen.len() == 3 + 1 + 2, "{seen:?}");
    ensure!(marks.iter().all(|(id, mark)| heads[id] == *mark), "{marks:?} vs {heads:?}");
    ensure!(store.events_after(a, 3, 1).await?.iter().map(|e| e.sequence).collect::<Vec<_>>() == vec![4]);
    // Marks name runs, but the scope bounds what is read: a run of another company, or of the
    // company outside the batch, yields nothing, whatever its mark.
    let outsider = store.create_run(push("acme-other", "Role X", "x")?).await?.run.workflow_id;
    let loose = store.create_run(push("acme", "Role Loose", "l")?).await?.run.workflow_id;
    let from_zero = vec![(a.clone(), 0), (outsider.clone(), 0), (loose.clone(), 0)];
    let read = store.events_after_marks(&within, &from_zero, 100).await?;
    ensure!(!read.is_empty() && read.iter().all(|e| e.workflow_id == *a), "{read:?}");
    let other_company = EventScope { company: company("acme-other")?, batch: None };
    let read = store.events_after_marks(&other_company, &from_zero, 100).await?;
    ensure!(!read.is_empty() && read.iter().all(|e| e.workflow_id == outsider), "{read:?}");
    let whole_company = EventScope { company: company("acme")?, batch: None };
    let read: BTreeSet<_> =
        store.events_after_marks(&whole_company, &from_zero, 100).await?.into_iter().map(|e| e.workflow_id).collect();
    ensure!(read == BTreeSet::from([a.clone(), loose.clone()]), "{read:?}");

    // A server without Redis looks for the runs changed since its last look, in any company.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let since = etter_store::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    store.record_step(b, StepTransition::new("role_setup", 1, StepStatus::Running)).await?;
    let other = store.create_run(push("globex", "Role G", "g")?).await?.run.workflow_id;
    let changed = store.sequence_heads(&WatchScope::UpdatedSince(since)).await?;
    let mut expected = vec![(b.clone(), 3), (other, 1)];
    expected.sort();
    ensure!(changed == expected, "{changed:?}");
    Ok(())
}
