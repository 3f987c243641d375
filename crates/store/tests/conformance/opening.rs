//! Opening a store: migrations run again and by several replicas at once, and openers racing on an
//! empty database.

use anyhow::{Result, ensure};

use crate::{Ctx, Kind, Scratch, create, push};

/// Processes starting together on an empty store (a server and a worker on a fresh data
/// directory, replicas on a fresh database) each open and migrate it at once: every one of them
/// must come up, and the schema must be applied once. Several rounds, several openers each.
pub(crate) async fn stores_opened_at_once_on_an_empty_database_all_come_up(kind: Kind) -> Result<()> {
    for round in 0..5 {
        let scratch = Scratch::create(kind).await?;
        let location = scratch.location();
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let location = location.clone();
                tokio::spawn(async move { etter_store::connect(&location).await })
            })
            .collect();
        let mut outcome = Ok(());
        let mut stores = Vec::new();
        for opener in openers {
            match opener.await? {
                Ok(store) => stores.push(store),
                Err(e) => outcome = Err(anyhow::Error::new(e).context(format!("round {round}: an opener failed"))),
            }
        }
        if let Some(store) = stores.first() {
            // Usable by each: one writes, another reads it.
            let run = store.create_run(push("acme", "Opened At Once", "1")?).await?;
            if let Some(other) = stores.last() {
                ensure!(other.get_run(&run.run.workflow_id).await?.run_number == 1);
            }
        }
        for store in stores {
            store.close().await;
        }
        scratch.remove().await?;
        outcome?;
    }
    Ok(())
}

pub(crate) async fn migrations_run_twice_are_harmless(ctx: Ctx) -> Result<()> {
    let run = create(ctx.store.as_ref(), push("acme", "Survivor", "m")?).await?;
    // Again, and several replicas at once.
    let again = etter_store::connect(&ctx.location).await?;
    ensure!(again.get_run(&run.workflow_id).await? == run);
    again.close().await;
    let replicas: Vec<_> = (0..3)
        .map(|_| {
            let location = ctx.location.clone();
            tokio::spawn(async move { etter_store::connect(&location).await })
        })
        .collect();
    for replica in replicas {
        let store = replica.await??;
        ensure!(store.get_run(&run.workflow_id).await?.workflow_id == run.workflow_id);
        store.close().await;
    }
    Ok(())
}
