//! Steps: idempotent step transitions (with their tokens, errors and usage), and the step
//! statistics estimates are made from.

use anyhow::{Result, ensure};
use etter_core::ids::WorkflowId;
use etter_core::lifecycle::RunState;
use etter_store::{Change, NewRun, PipelineError, StepStatus, StepTransition, StoreError, TokenCount};

use crate::{Ctx, all_events, company, create, ensure_gap_free, ids, push, to};

/// A PROCESSING run that ends with steps open (a Cancel; the server closing a run whose
/// workflow is gone) closes them in the same write, before its final event, which stays its
/// last: late reports of its steps change nothing but the tokens they spent.
pub(crate) async fn a_run_ends_with_its_last_event_and_its_open_steps_closed(ctx: Ctx) -> Result<()> {
    use etter_core::steps::StepName;
    use etter_store::Transition;

    let store = ctx.store.as_ref();
    let statuses = |steps: &[etter_store::StepAttempt]| -> Vec<(String, u32, StepStatus)> {
        steps.iter().map(|a| (a.step.clone(), a.attempt, a.status)).collect()
    };

    // Cancelled while document linking runs: it and every step not reached become CANCELLED.
    let run = create(store, push("acme", "Cancelled Role", "c")?).await?;
    let id = &run.workflow_id;
    to(store, id, RunState::Processing).await?;
    store.record_step(id, StepTransition::new("role_setup", 1, StepStatus::Running)).await?;
    store.record_step(id, StepTransition::new("role_setup", 1, StepStatus::Completed)).await?;
    let running = StepTransition {
        tokens: Some(TokenCount { input: 5, output: 1 }),
        ..StepTransition::new("document_linking", 1, StepStatus::Running)
    };
    store.record_step(id, running).await?;
    let cancel = PipelineError {
        code: "CANCELLED".into(),
        message: "cancelled by a user".into(),
        recoverable: true,
        step: None,
        action: None,
    };
    let ended = store.transition(id, Transition::failing(RunState::Cancelled, "cancelled", cancel)).await?;
    let events = all_events(store, id).await?;
    ensure_gap_free(&events)?;
    ensure!(events.len() as u64 == ended.sequence, "{events:#?}");
    ensure!(
        matches!(events.last().map(|e| &e.change), Some(Change::Status { status: RunState::Cancelled, .. })),
        "the final event is the last: {events:#?}"
    );
    let steps = store.steps(id).await?;
    for step in StepName::ALL {
        let expected = if step == StepName::RoleSetup { StepStatus::Completed } else { StepStatus::Cancelled };
        let of_step: Vec<_> = statuses(&steps).into_iter().filter(|(s, _, _)| s == step.as_str()).collect();
        ensure!(of_step == [(step.as_str().to_owned(), 1, expected)], "{step}: {of_step:?}");
    }

    // The worker reports late: the running step completed, and closes the others as it would.
    let late = StepTransition {
        tokens: Some(TokenCount { input: 40, output: 9 }),
        output_hash: Some("late".into()),
        ..StepTransition::new("document_linking", 1, StepStatus::Completed)
    };
    ensure!(!store.record_step(id, late).await?.recorded);
    ensure!(!store.record_step(id, StepTransition::new("finalize", 1, StepStatus::Cancelled)).await?.recorded);
    ensure!(!store.record_step(id, StepTransition::new("ai_assessment", 2, StepStatus::Running)).await?.recorded);
    let after = store.get_run(id).await?;
    ensure!(after.sequence == ended.sequence && after.state == RunState::Cancelled, "{after:#?}");
    ensure!(statuses(&store.steps(id).await?) == statuses(&steps), "the steps stand as the run ended");
    // What the late attempt spent still counts, on its step and the run alike.
    ensure!(after.tokens_used == TokenCount { input: 40, output: 9 }, "{:?}", after.tokens_used);
    let linking = store.steps(id).await?.into_iter().find(|a| a.step == "document_linking");
    ensure!(linking.is_some_and(|a| a.tokens == TokenCount { input: 40, output: 9 }));

    // Closed by the server as FAILED (its workflow is gone): the open attempt fails with the run's
    // error, the steps not reached are skipped.
    let run = create(store, push("acme", "Orphaned Role", "o")?).await?;
    let id = &run.workflow_id;
    to(store, id, RunState::Processing).await?;
    store.record_step(id, StepTransition::new("role_setup", 1, StepStatus::Running)).await?;
    let gone = PipelineError {
        code: "WORKFLOW_NOT_FOUND".into(),
        message: "the run's workflow no longer exists".into(),
        recoverable: true,
        step: None,
        action: None,
    };
    let ended = store.transition(id, Transition::failing(RunState::Failed, "gone", gone.clone())).await?;
    let events = all_events(store, id).await?;
    ensure_gap_free(&events)?;
    ensure!(matches!(events.last().map(|e| &e.change), Some(Change::Status { status: RunState::Failed, .. })));
    ensure!(events.len() as u64 == ended.sequence);
    let steps = store.steps(id).await?;
    let setup = steps.iter().find(|a| a.step == "role_setup");
    ensure!(setup.is_some_and(|a| a.status == StepStatus::Failed && a.error.as_ref() == Some(&gone)), "{setup:?}");
    ensure!(steps.iter().filter(|a| a.status == StepStatus::Skipped).count() == StepName::ALL.len() - 1, "{steps:#?}");

    // A run cancelled before it started has no steps to close.
    let run = create(store, push("acme", "Queued Role", "q")?).await?;
    to(store, &run.workflow_id, RunState::Cancelled).await?;
    ensure!(store.steps(&run.workflow_id).await?.is_empty());
    Ok(())
}

pub(crate) async fn step_transitions_are_idempotent(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let run = create(store, push("acme", "Steps Role", "s")?).await?;
    let id = &run.workflow_id;
    to(store, id, RunState::Processing).await?; // sequence 2

    let running = StepTransition::new("ai_assessment", 1, StepStatus::Running);
    let first = store.record_step(id, running.clone()).await?;
    ensure!(first.recorded && first.sequence == 3);
    let again = store.record_step(id, running.clone()).await?;
    ensure!(!again.recorded && again.sequence == 3, "a retried bookkeeping call must not add an event");

    let error = PipelineError {
        code: "LLM_UNAVAILABLE".into(),
        message: "the model did not answer".into(),
        recoverable: true,
        step: Some("ai_assessment".into()),
        action: None,
    };
    let retrying =
        StepTransition { error: Some(error.clone()), ..StepTransition::new("ai_assessment", 1, StepStatus::Retrying) };
    ensure!(store.record_step(id, retrying).await?.sequence == 4);
    ensure!(store.record_step(id, StepTransition::new("ai_assessment", 2, StepStatus::Running)).await?.sequence == 5);
    let completed = StepTransition {
        tokens: Some(TokenCount { input: 100, output: 20 }),
        input_hash: Some("in-hash".into()),
        output_hash: Some("out-hash".into()),
        ..StepTransition::new("ai_assessment", 2, StepStatus::Completed)
    };
    ensure!(store.record_step(id, completed.clone()).await?.sequence == 6);
    // The same transition again — even with other tokens — changes nothing.
    let replay = StepTransition { tokens: Some(TokenCount { input: 999, output: 999 }), ..completed };
    ensure!(store.record_step(id, replay).await? == etter_store::StepRecorded { sequence: 6, recorded: false });
    // A finished attempt does not change again.
    let late = store.record_step(id, StepTransition::new("ai_assessment", 2, StepStatus::Failed)).await;
    ensure!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
    ensure!(matches!(
        store.record_step(id, StepTransition::new("ai_assessment", 0, StepStatus::Running)).await,
        Err(StoreError::InvalidArgument(_))
    ));
    let missing = WorkflowId::parse("role-onboard-cr-acme-nobody-1")?;
    ensure!(matches!(store.record_step(&missing, running).await, Err(StoreError::NotFound { .. })));

    let stored = store.get_run(id).await?;
    ensure!(stored.tokens_used == TokenCount { input: 100, output: 20 } && stored.sequence == 6, "{stored:#?}");
    let steps = store.steps(id).await?;
    ensure!(steps.len() == 2, "{steps:#?}");
    ensure!(
        steps[0].attempt == 1 && steps[0].status == StepStatus::Retrying && steps[0].error.as_ref() == Some(&error)
    );
    let done = &steps[1];
    ensure!(done.status == StepStatus::Completed && done.tokens.total() == 120);
    ensure!(done.input_hash.as_deref() == Some("in-hash") && done.output_hash.as_deref() == Some("out-hash"));
    ensure!(matches!((done.started_at, done.finished_at), (Some(s), Some(f)) if s <= f), "{done:#?}");

    let events = all_events(store, id).await?;
    ensure_gap_free(&events)?;
    ensure!(events.len() == 6);
    ensure!(matches!(
        &events[3].change,
        Change::Step { step, status: StepStatus::Retrying, attempt: 1, error: Some(_) } if step == "ai_assessment"
    ));

    // Tokens reach the company's daily usage once.
    let today = etter_store::now().date_naive();
    let usage = store.usage(&company("acme")?, today, today).await?;
    ensure!(usage.len() == 1 && usage[0].step == "ai_assessment" && usage[0].tokens.total() == 120, "{usage:?}");

    // Attempt 1 was replaced by attempt 2 (its worker stopped answering); its worker comes back
    // and reports the step done after all. Its status stands and no event is added: the step is
    // not completed twice, and a watcher of the run sees nothing after the run's story. The
    // tokens it spent count.
    let stale = StepTransition {
        tokens: Some(TokenCount { input: 30, output: 5 }),
        output_hash: Some("stale-hash".into()),
        ..StepTransition::new("ai_assessment", 1, StepStatus::Completed)
    };
    let answered = store.record_step(id, stale.clone()).await?;
    ensure!(answered == etter_store::StepRecorded { sequence: 6, recorded: false }, "{answered:?}");
    ensure!(store.record_step(id, stale).await?.sequence == 6, "the same late report again changes nothing");
    let steps = store.steps(id).await?;
    ensure!(steps[0].status == StepStatus::Retrying && steps[0].tokens.total() == 35, "{steps:#?}");
    ensure!(steps[0].output_hash.is_none(), "a replaced attempt's output is not kept: {steps:#?}");
    let stored = store.get_run(id).await?;
    ensure!(stored.tokens_used == TokenCount { input: 130, output: 25 } && stored.sequence == 6, "{stored:#?}");
    ensure!(all_events(store, id).await?.len() == 6);
    let usage = store.usage(&company("acme")?, today, today).await?;
    ensure!(usage[0].tokens.total() == 155, "{usage:?}");
    // The attempt that replaces a lost one closes it as retrying before it records itself: a
    // report of the step done that lands in between is stale too.
    store.record_step(id, StepTransition::new("skills_miner", 1, StepStatus::Running)).await?;
    store.record_step(id, StepTransition::new("skills_miner", 1, StepStatus::Retrying)).await?;
    let between = store.record_step(id, StepTransition::new("skills_miner", 1, StepStatus::Completed)).await?;
    ensure!(!between.recorded && between.sequence == 8, "{between:?}");
    let miner = store.steps(id).await?.into_iter().find(|a| a.step == "skills_miner");
    ensure!(miner.is_some_and(|a| a.status == StepStatus::Retrying));
    // Retrying to failed is how a run's close records a last attempt that could not report.
    let closed = store.record_step(id, StepTransition::new("skills_miner", 1, StepStatus::Failed)).await?;
    ensure!(closed.recorded && closed.sequence == 9, "{closed:?}");
    // An attempt closed as lost before its RUNNING record landed (held up behind the run's
    // lock) does not start again when it lands.
    store.record_step(id, StepTransition::new("skills_miner", 2, StepStatus::Retrying)).await?;
    let revived = store.record_step(id, StepTransition::new("skills_miner", 2, StepStatus::Running)).await?;
    ensure!(!revived.recorded && revived.sequence == 10, "{revived:?}");

    store.set_needs_review(id, true).await?;
    ensure!(store.get_run(id).await?.needs_review);
    Ok(())
}

/// Estimates come from what recent completed attempts cost; failures and other steps do not count.
pub(crate) async fn step_stats_measure_recent_completed_attempts(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    ensure!(store.step_stats(10).await?.is_empty(), "nothing measured yet");
    for (n, tokens) in [100_i64, 200, 300].into_iter().enumerate() {
        let run = create(store, push("acme", &format!("Measured {n}"), &format!("m{n}"))?).await?;
        let id = &run.workflow_id;
        to(store, id, RunState::Processing).await?;
        store.record_step(id, StepTransition::new("ai_assessment", 1, StepStatus::Running)).await?;
        let done = StepTransition {
            tokens: Some(TokenCount { input: tokens - 10, output: 10 }),
            ..StepTransition::new("ai_assessment", 1, StepStatus::Completed)
        };
        store.record_step(id, done).await?;
        // A failed attempt of another step is not a measurement.
        store.record_step(id, StepTransition::new("role_setup", 1, StepStatus::Running)).await?;
        store.record_step(id, StepTransition::new("role_setup", 1, StepStatus::Failed)).await?;
    }
    let all = store.step_stats(10).await?;
    ensure!(all.len() == 1 && all[0].step == "ai_assessment", "{all:?}");
    ensure!(all[0].samples == 3 && all[0].mean_tokens == 200, "{all:?}");
    ensure!(all[0].mean_duration < std::time::Duration::from_secs(60), "{all:?}");
    // Only the most recent ones: the last two finished.
    let recent = store.step_stats(2).await?;
    ensure!(recent[0].samples == 2 && recent[0].mean_tokens == 250, "{recent:?}");
    Ok(())
}

pub(crate) async fn recently_ended_runs_come_newest_first_in_their_state(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    ensure!(store.recently_ended(RunState::Ready, 10).await?.is_empty(), "nothing ended yet");
    let mut ended = Vec::new();
    for n in 0..3 {
        let run = create(store, push("acme", &format!("Ended {n}"), &format!("e{n}"))?).await?;
        to(store, &run.workflow_id, RunState::Processing).await?;
        to(store, &run.workflow_id, RunState::Ready).await?;
        ended.push(run.workflow_id);
    }
    let failed = create(store, push("acme", "Failed One", "f")?).await?;
    to(store, &failed.workflow_id, RunState::Processing).await?;
    to(store, &failed.workflow_id, RunState::Failed).await?;
    let _running = create(store, push("acme", "Still Queued", "q")?).await?;

    let ready = store.recently_ended(RunState::Ready, 10).await?;
    let newest_first: Vec<_> = ended.iter().rev().cloned().collect();
    ensure!(ids(&ready) == newest_first, "{:?}", ids(&ready));
    ensure!(ready.iter().all(|r| r.start_time.is_some() && r.end_time.is_some()), "{ready:?}");
    ensure!(ids(&store.recently_ended(RunState::Ready, 2).await?) == newest_first[..2], "the limit keeps the newest");
    ensure!(ids(&store.recently_ended(RunState::Failed, 10).await?) == [failed.workflow_id], "by state");
    Ok(())
}

pub(crate) async fn a_step_keeps_its_model_prompt_version_and_digest(ctx: Ctx) -> Result<()> {
    use etter_core::digest::StepDigest;
    use etter_core::outputs::{Key, MinedSkills, Skill, SourceSpan};

    let store = ctx.store.as_ref();
    // The run a Retry creates carries the model it chose.
    let new = NewRun { model: Some("offline-cautious".into()), ..push("acme", "Model Role", "m")? };
    let run = create(store, new).await?;
    let id = &run.workflow_id;
    ensure!(store.get_run(id).await?.model.as_deref() == Some("offline-cautious"));
    let plain = create(store, push("acme", "Plain Role", "p")?).await?;
    ensure!(store.get_run(&plain.workflow_id).await?.model.is_none());

    to(store, id, RunState::Processing).await?;
    let skill = |name: &str, confidence| Skill {
        key: Key::of(name),
        name: name.into(),
        confidence,
        source: SourceSpan {
            document: etter_core::outputs::ContentHash("h".into()),
            start: 0,
            end: 3,
            text: "SQL".into(),
        },
    };
    let skills = MinedSkills { skills: vec![skill("SQL", 0.9), skill("Negotiation", 0.3)] };
    let digest = StepDigest::of(&skills, &etter_core::digest::Names::default()).with_review(0.5, []);
    store.record_step(id, StepTransition::new("skills_miner", 1, StepStatus::Running)).await?;
    let completed = StepTransition {
        output_hash: Some("out".into()),
        model: Some("offline-cautious".into()),
        prompt_version: Some("7".into()),
        digest: Some(digest.clone()),
        ..StepTransition::new("skills_miner", 1, StepStatus::Completed)
    };
    store.record_step(id, completed).await?;
    let steps = store.steps(id).await?;
    let done = steps.iter().find(|s| s.step == "skills_miner").ok_or_else(|| anyhow::anyhow!("no step"))?;
    ensure!(done.model.as_deref() == Some("offline-cautious") && done.prompt_version.as_deref() == Some("7"));
    ensure!(done.digest.as_ref() == Some(&digest), "{:#?}", done.digest);
    ensure!(done.digest.as_ref().is_some_and(|d| d.review.len() == 1 && d.items[1].name == "Negotiation"));
    // A step that asks no model records none.
    store.record_step(id, StepTransition::new("role_setup", 1, StepStatus::Completed)).await?;
    let setup = store.steps(id).await?.into_iter().find(|s| s.step == "role_setup");
    ensure!(setup.is_some_and(|s| s.model.is_none() && s.digest.is_none()));
    Ok(())
}
