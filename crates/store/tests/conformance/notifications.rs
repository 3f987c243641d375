//! Notifications: the webhook outbox — one notification per run that ends and asked for it,
//! claimed, retried, delivered or given up.

use std::time::Duration;

use anyhow::{Result, ensure};
use etter_core::lifecycle::RunState;
use etter_store::NewRun;

use crate::{Ctx, create, push, to};

pub(crate) async fn a_run_that_ends_queues_one_notification_until_delivered(ctx: Ctx) -> Result<()> {
    use etter_store::{Delivery, NotificationClaim};
    let store = ctx.store.as_ref();
    let claim = |claimer: &str, now| NotificationClaim {
        claimer: claimer.to_owned(),
        limit: 10,
        lease: Duration::from_secs(30),
        now,
    };
    let quiet = create(store, push("acme", "Quiet Role", "q")?).await?;
    let loud = create(store, NewRun { notify: true, ..push("acme", "Loud Role", "l")? }).await?;
    ensure!(loud.notify && !quiet.notify);
    for run in [&quiet, &loud] {
        to(store, &run.workflow_id, RunState::Processing).await?;
    }
    ensure!(store.claim_notifications(&claim("a", etter_store::now())).await?.is_empty(), "nothing has ended yet");
    to(store, &quiet.workflow_id, RunState::Ready).await?;
    let ended = to(store, &loud.workflow_id, RunState::Degraded).await?;
    // Going STALE later is no second end.
    to(store, &loud.workflow_id, RunState::Stale).await?;

    let now = etter_store::now();
    let claimed = store.claim_notifications(&claim("a", now)).await?;
    ensure!(claimed.len() == 1, "only the run that asked: {claimed:?}");
    let first = &claimed[0];
    ensure!(first.workflow_id == loud.workflow_id && first.state == RunState::Degraded && first.attempts == 0);
    ensure!(first.company.as_str() == "acme" && Some(first.create_time) == ended.end_time);
    // Claimed: nobody else gets it until the lease lapses.
    ensure!(store.claim_notifications(&claim("b", now)).await?.is_empty());
    let later = now + chrono::TimeDelta::seconds(31);
    let taken_over = store.claim_notifications(&claim("b", later)).await?;
    ensure!(taken_over.len() == 1 && taken_over[0].id == first.id, "a lapsed claim is taken over");
    // The first claimer lost it: its result is not recorded.
    ensure!(!store.settle_notification(first.id, "a", Delivery::Delivered, later).await?);

    // A failed attempt waits for its next time, then counts.
    let retry_at = later + chrono::TimeDelta::seconds(5);
    let failed = Delivery::Retry { error: "receiver answered 503".into(), next_attempt: retry_at };
    ensure!(store.settle_notification(first.id, "b", failed, later).await?);
    ensure!(store.claim_notifications(&claim("b", later)).await?.is_empty(), "not due yet");
    let again = store.claim_notifications(&claim("b", retry_at)).await?;
    ensure!(again.len() == 1 && again[0].attempts == 1, "{again:?}");
    ensure!(store.settle_notification(first.id, "b", Delivery::Delivered, retry_at).await?);
    let far = retry_at + chrono::TimeDelta::days(1);
    ensure!(store.claim_notifications(&claim("b", far)).await?.is_empty(), "delivered: never again");
    ensure!(!store.settle_notification(first.id, "b", Delivery::Delivered, far).await?, "settled once");

    // A notification given up on stays given up.
    let doomed = create(store, NewRun { notify: true, ..push("acme", "Doomed Role", "d")? }).await?;
    to(store, &doomed.workflow_id, RunState::Cancelled).await?;
    let claimed = store.claim_notifications(&claim("c", far)).await?;
    ensure!(claimed.len() == 1 && claimed[0].state == RunState::Cancelled, "{claimed:?}");
    ensure!(store.settle_notification(claimed[0].id, "c", Delivery::GiveUp { error: "gone".into() }, far).await?);
    ensure!(store.claim_notifications(&claim("c", far + chrono::TimeDelta::days(9))).await?.is_empty());
    Ok(())
}
