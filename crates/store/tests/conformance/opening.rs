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

/// A store that applied migrations before their comments were reworded recorded their old
/// checksums: it opens with its runs all there, and its record is left as it was (binaries from
/// before the rewording still open it). A record that matches neither text (a migration really
/// changed) is still refused.
pub(crate) async fn a_store_that_applied_reworded_migrations_opens_as_it_is_and_a_changed_one_is_refused(
    ctx: Ctx,
) -> Result<()> {
    let run = create(ctx.store.as_ref(), push("acme", "Before The Rewording", "m")?).await?;
    let backend = match &ctx.location {
        etter_store::StoreLocation::Postgres(_) => "postgres",
        etter_store::StoreLocation::Sqlite(_) => "sqlite",
    };
    let superseded: Vec<(i64, Vec<u8>)> = include_str!("../../migrations/superseded.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            match fields.as_slice() {
                [b, version, checksum] if *b == backend => Some((version.parse().ok()?, hex::decode(checksum).ok()?)),
                _ => None,
            }
        })
        .collect();
    ensure!(!superseded.is_empty(), "{backend} has superseded migration texts to test with");

    let recorded = |version: i64| {
        let location = ctx.location.clone();
        async move { raw_query(&location, "SELECT checksum FROM _sqlx_migrations WHERE version = $1", version, None).await }
    };
    for (version, old) in &superseded {
        ensure!(recorded(*version).await? != *old, "a new store records the current text of {version}");
        raw_query(&ctx.location, "UPDATE _sqlx_migrations SET checksum = $2 WHERE version = $1", *version, Some(old))
            .await?;
    }
    let reopened = etter_store::connect(&ctx.location).await?;
    ensure!(reopened.get_run(&run.workflow_id).await? == run);
    reopened.close().await;
    for (version, old) in &superseded {
        ensure!(recorded(*version).await? == *old, "migration {version}'s record was left as it was");
    }

    let (version, _) = superseded[0];
    raw_query(
        &ctx.location,
        "UPDATE _sqlx_migrations SET checksum = $2 WHERE version = $1",
        version,
        Some(&vec![7; 48]),
    )
    .await?;
    let refused = etter_store::connect(&ctx.location).await;
    ensure!(refused.is_err(), "a migration changed in substance is still refused");
    Ok(())
}

/// Runs one statement on the store's database directly, binding `version` (and `checksum`);
/// answers the first column of its first row, if any, as bytes.
async fn raw_query(
    location: &etter_store::StoreLocation,
    sql: &'static str,
    version: i64,
    checksum: Option<&Vec<u8>>,
) -> Result<Vec<u8>> {
    use sqlx::Row as _;
    match location {
        etter_store::StoreLocation::Postgres(url) => {
            let pool = sqlx::PgPool::connect(url).await?;
            let mut query = sqlx::query(sql).bind(version);
            if let Some(checksum) = checksum {
                query = query.bind(checksum);
            }
            let row = query.fetch_optional(&pool).await?;
            pool.close().await;
            Ok(row.map(|r| r.try_get::<Vec<u8>, _>(0)).transpose()?.unwrap_or_default())
        }
        etter_store::StoreLocation::Sqlite(path) => {
            let pool = sqlx::SqlitePool::connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(path)).await?;
            let mut query = sqlx::query(sql).bind(version);
            if let Some(checksum) = checksum {
                query = query.bind(checksum);
            }
            let row = query.fetch_optional(&pool).await?;
            pool.close().await;
            Ok(row.map(|r| r.try_get::<Vec<u8>, _>(0)).transpose()?.unwrap_or_default())
        }
    }
}
