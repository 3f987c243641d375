//! One real round trip per service started by `scripts/services`, each with the crate the pipeline
//! uses for it.

use anyhow::{Context as _, ensure};
use etter_tests::{service_setting, unique_name};

/// PostgreSQL through sqlx: create a fresh database (as every store test will), migrate a table into
/// it, write and read back in a transaction, and drop it.
#[tokio::test]
async fn postgres_round_trip_with_sqlx() -> anyhow::Result<()> {
    use sqlx::{Connection as _, Executor as _, Row as _};
    let admin_url = service_setting("ETTER_TEST__POSTGRES_ADMIN_URL", "postgres")?;
    let db = unique_name("etter_rt");
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.context("connect as admin")?;
    admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}"))).await?;

    let result = async {
        let url = replace_database(&admin_url, &db)?;
        let pool = sqlx::PgPool::connect(&url).await?;
        sqlx::query("CREATE TABLE runs (id BIGSERIAL PRIMARY KEY, workflow_id TEXT NOT NULL UNIQUE)")
            .execute(&pool)
            .await?;
        let mut tx = pool.begin().await?;
        let id: i64 = sqlx::query_scalar("INSERT INTO runs (workflow_id) VALUES ($1) RETURNING id")
            .bind("role-onboard-cr-acme-analyst-1")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        let row = sqlx::query("SELECT workflow_id FROM runs WHERE id = $1").bind(id).fetch_one(&pool).await?;
        ensure!(row.get::<String, _>(0) == "role-onboard-cr-acme-analyst-1");
        let dup = sqlx::query("INSERT INTO runs (workflow_id) VALUES ($1)")
            .bind("role-onboard-cr-acme-analyst-1")
            .execute(&pool)
            .await;
        let code = dup.err().and_then(|e| e.as_database_error().and_then(|d| d.code().map(|c| c.into_owned())));
        ensure!(code.as_deref() == Some("23505"), "a duplicate workflow id must violate the unique key, got {code:?}");
        pool.close().await;
        anyhow::Ok(())
    }
    .await;
    admin.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))).await?;
    result
}

fn replace_database(url: &str, db: &str) -> anyhow::Result<String> {
    let (base, _) = url.rsplit_once('/').context("database URL without a path")?;
    Ok(format!("{base}/{db}"))
}

/// Redis through redis-rs: a key with a TTL and a pub/sub message delivered to a subscriber, the two
/// mechanisms live-progress fan-out uses.
#[tokio::test]
async fn redis_round_trip_with_pubsub() -> anyhow::Result<()> {
    use futures::StreamExt as _;
    use redis::AsyncCommands as _;
    let url = service_setting("ETTER_REDIS__URL", "redis")?;
    let client = redis::Client::open(url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let key = unique_name("etter:rt");
    let () = conn.set_ex(&key, "processing", 60).await?;
    let value: String = conn.get(&key).await?;
    ensure!(value == "processing");
    let ttl: i64 = conn.ttl(&key).await?;
    ensure!((1..=60).contains(&ttl), "ttl {ttl}");

    let channel = unique_name("etter:events");
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(&channel).await?;
    let receivers: i64 = conn.publish(&channel, "run-event-1").await?;
    ensure!(receivers == 1, "one subscriber expected, redis counted {receivers}");
    let message = tokio::time::timeout(std::time::Duration::from_secs(5), pubsub.on_message().next())
        .await
        .context("no pub/sub message within 5 s")?
        .context("pub/sub stream ended")?;
    ensure!(message.get_payload::<String>()? == "run-event-1");
    let () = conn.del(&key).await?;
    Ok(())
}

/// Neo4j through neo4rs over Bolt: MERGE on a stable key twice leaves one node (the pipeline's
/// idempotency rule), read it back, and clean up this test's prefix.
#[tokio::test]
async fn neo4j_round_trip_with_neo4rs() -> anyhow::Result<()> {
    let uri = service_setting("ETTER_GRAPH__URI", "neo4j")?;
    let user = std::env::var("ETTER_GRAPH__USER").unwrap_or_else(|_| "neo4j".to_owned());
    let password = std::env::var("ETTER_GRAPH__PASSWORD").unwrap_or_default();
    let graph = neo4rs::Graph::new(uri.trim_start_matches("bolt://"), user, password).await?;
    let prefix = unique_name("rt");
    let role_id = format!("{prefix}-cr-acme-claims-adjuster");
    for _ in 0..2 {
        graph
            .run(
                neo4rs::query("MERGE (c:CompanyRole {role_id: $id}) SET c.name = $name, c.test_prefix = $prefix")
                    .param("id", role_id.as_str())
                    .param("name", "Claims Adjuster")
                    .param("prefix", prefix.as_str()),
            )
            .await?;
    }
    let mut rows = graph
        .execute(
            neo4rs::query("MATCH (c:CompanyRole {role_id: $id}) RETURN c.name AS name, count(*) AS n")
                .param("id", role_id.as_str()),
        )
        .await?;
    let row = rows.next().await?.context("the merged node is missing")?;
    ensure!(row.get::<String>("name")? == "Claims Adjuster");
    ensure!(row.get::<i64>("n")? == 1, "MERGE twice must leave one node");
    graph
        .run(neo4rs::query("MATCH (c {test_prefix: $prefix}) DETACH DELETE c").param("prefix", prefix.as_str()))
        .await?;
    Ok(())
}
