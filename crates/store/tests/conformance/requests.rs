//! Request ids: idempotency keys, their payload check, expiry and purging, and concurrent first
//! calls.

use std::collections::BTreeSet;

use anyhow::{Result, ensure};
use etter_core::ids::RequestId;
use etter_store::{PutRequest, RequestKey, StoreError};

use crate::{Ctx, company};

pub(crate) async fn request_ids_are_idempotent_and_expire(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let key = RequestKey { company: company("acme")?, request_id: RequestId::parse("req-1")? };
    let now = etter_store::now();

    ensure!(store.lookup_request(&key, "hash-a", now).await?.is_none());
    ensure!(store.put_request_if_absent(&key, "hash-a", b"first answer", now).await? == PutRequest::Inserted);
    ensure!(store.lookup_request(&key, "hash-a", now).await? == Some(b"first answer".to_vec()));
    let second = store.put_request_if_absent(&key, "hash-a", b"second answer", now).await?;
    ensure!(second == PutRequest::Existing(b"first answer".to_vec()), "{second:?}");

    // The same id with another payload is the client's mistake, whichever way it is asked.
    let reused = store.lookup_request(&key, "hash-b", now).await;
    ensure!(matches!(reused, Err(StoreError::RequestIdReused { .. })), "{reused:?}");
    let reused = store.put_request_if_absent(&key, "hash-b", b"x", now).await;
    let message = reused.as_ref().err().map(ToString::to_string).unwrap_or_default();
    ensure!(matches!(reused, Err(StoreError::RequestIdReused { .. })) && message.contains("req-1"), "{message}");

    // Scoped by company.
    let other = RequestKey { company: company("globex")?, ..key.clone() };
    ensure!(store.put_request_if_absent(&other, "hash-b", b"globex", now).await? == PutRequest::Inserted);

    // Expired after 24 hours: forgotten, and the id may carry a new payload.
    let later = now + chrono::TimeDelta::hours(24) + chrono::TimeDelta::seconds(1);
    ensure!(store.lookup_request(&key, "hash-a", later).await?.is_none());
    ensure!(store.lookup_request(&key, "hash-b", later).await?.is_none());
    ensure!(store.put_request_if_absent(&key, "hash-b", b"new", later).await? == PutRequest::Inserted);
    ensure!(store.lookup_request(&key, "hash-b", later).await? == Some(b"new".to_vec()));

    // Purging drops only what expired (globex's key expires 24 h after `now`).
    let much_later = later + chrono::TimeDelta::hours(1);
    ensure!(store.purge_expired_requests(much_later).await? == 1);
    ensure!(store.lookup_request(&key, "hash-b", much_later).await?.is_some());

    // Concurrent first calls: exactly one stores its answer, the others get it.
    let key = RequestKey { company: company("acme")?, request_id: RequestId::parse("req-concurrent")? };
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let (store, key) = (ctx.store.clone(), key.clone());
        tasks.push(tokio::spawn(async move { store.put_request_if_absent(&key, "h", &[i], now).await }));
    }
    let mut inserted = 0;
    let mut answers = BTreeSet::new();
    for task in tasks {
        match task.await?? {
            PutRequest::Inserted => inserted += 1,
            PutRequest::Existing(answer) => {
                answers.insert(answer);
            }
        }
    }
    ensure!(inserted == 1 && answers.len() <= 1, "inserted {inserted}, answers {answers:?}");
    Ok(())
}
