//! The audit log: its hash chain (keyed and unkeyed), listing, and what verification detects —
//! edits, deletions, truncation, a chain recomputed without the key — and concurrent appenders.

use std::sync::Arc;

use anyhow::{Context as _, Result, bail, ensure};
use etter_core::ids::{CompanyId, TraceId};
use etter_store::{RunStore, StoreLocation};

use crate::Ctx;

fn audit_event(n: u32, company: &str, outcome: &str) -> Result<etter_core::audit::AuditEvent> {
    // Whole microseconds: what both backends store.
    let time = etter_store::now();
    Ok(etter_core::audit::AuditEvent {
        time: chrono::DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time),
        actor: format!("user-{n}"),
        role: "operator".into(),
        company: Some(CompanyId::parse(company)?),
        action: if n.is_multiple_of(2) { "Push".into() } else { "Cancel".into() },
        target: format!("cr-{company}-role-{n}"),
        outcome: outcome.into(),
        reason: String::new(),
        request_id: n.is_multiple_of(3).then(|| format!("req-{n}")),
        trace_id: Some(TraceId::from_random(u128::from(n) + 1)),
        peer: Some("127.0.0.1".into()),
    })
}

/// Runs one statement on the store's database directly, as someone with database access would.
async fn tamper(location: &StoreLocation, sql: &str) -> Result<()> {
    use sqlx::Connection as _;
    match location {
        StoreLocation::Postgres(url) => {
            let mut c = sqlx::PgConnection::connect(url).await?;
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut c).await?;
        }
        StoreLocation::Sqlite(path) => {
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut c).await?;
        }
    }
    Ok(())
}

/// The key of the tests' audit chains.
fn chain_key() -> etter_core::audit::ChainKey {
    etter_core::audit::ChainKey::new(b"the conformance suite's audit key, 32+ bytes")
}

async fn broken_at(store: &dyn RunStore) -> Result<u64> {
    broken_at_expecting(store, None).await
}

async fn broken_at_expecting(store: &dyn RunStore, expect_head: Option<&str>) -> Result<u64> {
    match etter_store::verify_audit(store, &chain_key(), expect_head).await {
        Err(etter_store::VerifyError::Broken(b)) => Ok(b.seq),
        other => bail!("expected a broken chain, got {other:?}"),
    }
}

pub(crate) async fn the_audit_chain_detects_edits_deletions_and_truncation(ctx: Ctx) -> Result<()> {
    use etter_core::audit::{AuditFilter, ChainKey};
    let store = ctx.store.as_ref();
    let key = chain_key();
    let verify =
        |store| async move { Ok::<_, anyhow::Error>(etter_store::verify_audit(store, &chain_key(), None).await?.head) };
    ensure!(verify(store).await?.seq == 0, "an empty log verifies");
    // The first two entries were written before the chain was keyed: plain SHA-256.
    let events = (1..=4).map(|n| audit_event(n, "acme", "OK")).collect::<Result<Vec<_>>>()?;
    store.append_audit(&ChainKey::unkeyed(), events[..2].to_vec()).await?;
    store.append_audit(&key, events[2..].to_vec()).await?;
    let head = store
        .append_audit(&key, vec![audit_event(5, "globex", "PERMISSION_DENIED")?, audit_event(6, "acme", "OK")?])
        .await?;
    ensure!(head.seq == 6 && verify(store).await? == head, "{head:?}");
    let verified = etter_store::verify_audit(store, &key, Some(&head.hash)).await?;
    ensure!(verified.unkeyed == 2 && verified.expected_at == Some(6), "{verified:?}");
    ensure!(
        matches!(
            etter_store::verify_audit(store, &ChainKey::new(b"a wrong key, also thirty-two bytes"), None).await,
            Err(etter_store::VerifyError::Broken(_))
        ),
        "another key does not verify the chain"
    );
    let stored = store.audit_entries(0, 100).await?;
    ensure!(stored.iter().map(|e| e.event.clone()).take(4).collect::<Vec<_>>() == events, "events round-trip");

    // Listing: newest first, filtered, paged by sequence.
    let acme = AuditFilter { company: Some(CompanyId::parse("acme")?), ..AuditFilter::default() };
    let listed = store.list_audit(&acme, 100).await?;
    ensure!(listed.iter().map(|e| e.seq).collect::<Vec<_>>() == [6, 4, 3, 2, 1]);
    let denied = store.list_audit(&AuditFilter { denied_only: true, ..AuditFilter::default() }, 100).await?;
    ensure!(denied.iter().map(|e| e.seq).collect::<Vec<_>>() == [5]);
    let page = store.list_audit(&AuditFilter { before_seq: Some(4), action: Some("Push".into()), ..acme }, 100).await?;
    ensure!(page.iter().map(|e| e.seq).collect::<Vec<_>>() == [2]);

    // An edited entry is named.
    tamper(&ctx.location, "UPDATE audit_log SET outcome = 'OK' WHERE seq = 5").await?;
    ensure!(broken_at(store).await? == 5);
    tamper(&ctx.location, "UPDATE audit_log SET outcome = 'PERMISSION_DENIED' WHERE seq = 5").await?;
    ensure!(verify(store).await? == head, "restored");
    // A deleted entry is named.
    tamper(&ctx.location, "DELETE FROM audit_log WHERE seq = 3").await?;
    ensure!(broken_at(store).await? == 3);
    // A truncated tail is named, from the checkpointed head.
    tamper(&ctx.location, "DELETE FROM audit_log WHERE seq >= 3").await?;
    ensure!(broken_at(store).await? == 3);
    // A tail cut off together with the checkpoint escapes the checkpoint, not a head recorded
    // elsewhere.
    let second = store.audit_entries(0, 100).await?.get(1).map(|e| e.hash.clone()).context("entry 2")?;
    tamper(&ctx.location, &format!("UPDATE audit_head SET seq = 2, hash = '{second}'")).await?;
    ensure!(verify(store).await?.seq == 2, "the checkpoint was cut to match");
    ensure!(broken_at_expecting(store, Some(&head.hash)).await? == 2);
    Ok(())
}

/// Whoever can write the database but not read the key cannot rewrite a keyed log: recomputing
/// an edited entry's hash (and every later one) as plain SHA-256 is named as a rewrite.
pub(crate) async fn the_keyed_audit_chain_cannot_be_recomputed_without_its_key(ctx: Ctx) -> Result<()> {
    use etter_core::audit::{ChainKey, GENESIS, entry_hash};
    let store = ctx.store.as_ref();
    let events = (1..=3).map(|n| audit_event(n, "acme", "OK")).collect::<Result<Vec<_>>>()?;
    store.append_audit(&chain_key(), events).await?;
    // The attacker edits entry 2 and recomputes the chain from it, the only way they can.
    let mut entries = store.audit_entries(0, 100).await?;
    entries[1].event.outcome = "PERMISSION_DENIED".into();
    let mut prev = entries[0].hash.clone();
    for entry in entries.iter_mut().skip(1) {
        entry.prev_hash = prev.clone();
        entry.hash = entry_hash(entry.seq, &entry.event, &entry.prev_hash, &ChainKey::unkeyed());
        prev = entry.hash.clone();
    }
    for entry in entries.iter().skip(1) {
        tamper(
            &ctx.location,
            &format!(
                "UPDATE audit_log SET outcome = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {}",
                entry.event.outcome, entry.prev_hash, entry.hash, entry.seq
            ),
        )
        .await?;
    }
    tamper(&ctx.location, &format!("UPDATE audit_head SET hash = '{prev}'")).await?;
    ensure!(broken_at(store).await? == 2, "an unkeyed entry after a keyed one is a rewrite");
    ensure!(entries[0].prev_hash == GENESIS);
    Ok(())
}

pub(crate) async fn concurrent_audit_appenders_keep_one_chain(ctx: Ctx) -> Result<()> {
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let store = Arc::clone(&ctx.store);
        tasks.push(tokio::spawn(async move {
            for batch in 0..5 {
                let events = (0..10)
                    .map(|n| audit_event(writer * 1000 + batch * 10 + n, "acme", "OK"))
                    .collect::<Result<Vec<_>>>()?;
                store.append_audit(&chain_key(), events).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let head = etter_store::verify_audit(ctx.store.as_ref(), &chain_key(), None).await?.head;
    ensure!(head.seq == 200, "{head:?}");
    Ok(())
}
