//! Role ids: collisions between names of one company, and roles stored under the ids of an earlier
//! version.

use anyhow::{Result, ensure};
use etter_core::ids::{BatchId, RoleId};
use etter_core::lifecycle::RunState;
use etter_store::{NewBatch, Run, StoreError, StoreLocation};

use crate::{Ctx, company, create, push, role_name, to};

pub(crate) async fn role_id_collisions_are_refused(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    create(store, push("acme", "Claims Adjuster", "1")?).await?;
    let collision = store.create_run(push("acme", "Claims-Adjuster", "2")?).await;
    let message = collision.as_ref().err().map(ToString::to_string).unwrap_or_default();
    ensure!(matches!(collision, Err(StoreError::RoleIdCollision { .. })), "{collision:?}");
    ensure!(message.contains("Claims-Adjuster") && message.contains("Claims Adjuster"), "{message}");
    ensure!(store.count_runs(None, &[]).await? == 1, "a refused push stores nothing");
    // Companies whose ids end in another company's role: `acme` + "x y" vs `acme-x` + "y" are
    // two roles, neither refused, neither told of the other.
    let acme = create(store, push("acme", "X Y", "1")?).await?;
    let acme_x = create(store, push("acme-x", "Y", "1")?).await?;
    ensure!(acme.role_id != acme_x.role_id && acme.workflow_id != acme_x.workflow_id, "{acme:?} / {acme_x:?}");
    ensure!(acme_x.company_id.as_str() == "acme-x" && acme_x.run_number == 1);
    Ok(())
}

/// Raw SQL on a case's store, as an operator (or an earlier version) could have left it.
async fn execute(location: &StoreLocation, statements: &[String]) -> Result<()> {
    use sqlx::Connection as _;
    match location {
        StoreLocation::Postgres(url) => {
            let mut connection = sqlx::PgConnection::connect(url).await?;
            for statement in statements {
                sqlx::query(sqlx::AssertSqlSafe(statement.as_str())).execute(&mut connection).await?;
            }
        }
        StoreLocation::Sqlite(path) => {
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).foreign_keys(true);
            let mut connection = sqlx::SqliteConnection::connect_with(&options).await?;
            for statement in statements {
                sqlx::query(sqlx::AssertSqlSafe(statement.as_str())).execute(&mut connection).await?;
            }
        }
    }
    Ok(())
}

pub(crate) async fn roles_stored_before_ids_had_a_dot_go_on_under_their_ids(ctx: Ctx) -> Result<()> {
    // A role of `acme-x` stored by an earlier version: `cr-acme-x-y`, the id `acme` + "X Y"
    // would also have had then. (Its times are copied from a role stored now.)
    let seed = create(ctx.store.as_ref(), push("acme-x", "Seed", "1")?).await?;
    let legacy = RoleId::legacy(&company("acme-x")?, &role_name("Y")?);
    ctx.store.close().await;
    execute(
        &ctx.location,
        &[format!(
            "INSERT INTO roles (role_id, company_id, role_name, last_run_number, create_time, update_time) \
             SELECT '{}', company_id, 'Y', 0, create_time, update_time FROM roles WHERE role_id = '{}'",
            legacy.as_str(),
            seed.role_id.as_str()
        )],
    )
    .await?;
    let store = etter_store::connect(&ctx.location).await?;
    // The role goes on under its stored id.
    let first = create(store.as_ref(), push("acme-x", "Y", "1")?).await?;
    ensure!(first.role_id == legacy && first.run_number == 1, "{first:?}");
    to(store.as_ref(), &first.workflow_id, RunState::Cancelled).await?;
    let second = create(store.as_ref(), push("acme-x", "Y", "2")?).await?;
    ensure!(second.role_id == legacy && second.run_number == 2, "{second:?}");
    ensure!(second.supersedes.as_ref() == Some(&first.workflow_id), "{second:?}");
    ensure!(store.latest_run(&legacy).await?.workflow_id == second.workflow_id);
    // The same inputs again are answered by the stored run, not a new one (in a batch too).
    let again = store.create_run(push("acme-x", "Y", "2")?).await?;
    ensure!(!again.created && again.run.workflow_id == second.workflow_id, "{again:?}");
    // Another company whose role once had the same id is a role of its own, and a batch finds
    // the legacy role too.
    let acme = create(store.as_ref(), push("acme", "X Y", "1")?).await?;
    ensure!(acme.role_id != legacy && !acme.role_id.is_legacy(), "{acme:?}");
    let batch = BatchId::from_random(9);
    let created = store
        .create_batch(
            NewBatch { id: batch, company: company("acme-x")?, request_id: None },
            vec![push("acme-x", "Y", "2")?, push("acme-x", "Z", "1")?],
        )
        .await?;
    let runs: Vec<Run> = created.items.into_iter().map(|r| r.map(|c| c.run)).collect::<Result<_, _>>()?;
    ensure!(runs[0].role_id == legacy && runs[0].workflow_id == second.workflow_id, "{:?}", runs[0]);
    ensure!(!runs[1].role_id.is_legacy(), "{:?}", runs[1]);
    store.close().await;
    Ok(())
}
