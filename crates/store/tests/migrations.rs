//! Applied migrations are frozen. sqlx records each migration's checksum in the database and
//! refuses to start when a migration it applied earlier has changed since — so an edit to an old
//! migration (even to a comment) would stop every deployed store at its next start. This test
//! keeps the checksum of every migration in `migrations/applied.txt`: a changed migration fails
//! here, not in production; a new one is recorded with `ETTER_BLESS=1`.
//!
//! Only a migration whose comments were reworded may change: its recorded checksum goes to
//! `migrations/superseded.txt`, whose checksums the store accepts from a store that applied the
//! old text, and `ETTER_BLESS=1` then records the new checksum.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

const RECORD: &str = "migrations/applied.txt";
const SUPERSEDED: &str = "migrations/superseded.txt";

/// `backend version checksum` of each superseded migration text.
fn superseded() -> Result<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(SUPERSEDED);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(str::to_owned).collect())
}

fn checksum(line: &str) -> &str {
    line.split(' ').nth(2).unwrap_or_default()
}

fn current() -> Vec<String> {
    let mut lines = Vec::new();
    for (backend, migrator) in
        [("postgres", sqlx::migrate!("./migrations/postgres")), ("sqlite", sqlx::migrate!("./migrations/sqlite"))]
    {
        for m in migrator.iter() {
            lines.push(format!("{backend} {:04} {} {}", m.version, hex::encode(&m.checksum), m.description));
        }
    }
    lines
}

fn key(line: &str) -> String {
    line.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

#[test]
fn no_applied_migration_has_changed_and_every_migration_is_recorded() -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(RECORD);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let recorded: BTreeMap<String, String> =
        text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(|l| (key(l), l.to_owned())).collect();
    let superseded = superseded()?;
    let is_superseded = |kept: &str| superseded.iter().any(|s| key(s) == key(kept) && checksum(s) == checksum(kept));
    let mut changed = Vec::new();
    let mut reworded = Vec::new();
    let mut new = Vec::new();
    for line in current() {
        match recorded.get(&key(&line)) {
            Some(kept) if *kept == line => {}
            Some(kept) if is_superseded(kept) => reworded.push((kept.clone(), line)),
            Some(kept) => changed.push(format!("  recorded: {kept}\n  now:      {line}")),
            None => new.push(line),
        }
    }
    if !changed.is_empty() {
        bail!(
            "an applied migration changed; deployed stores would refuse to start. Put the change in a new \
             migration and restore the old file (if only its comments changed, add the recorded checksum \
             to {SUPERSEDED} and record the new one with ETTER_BLESS=1):\n{}",
            changed.join("\n")
        );
    }
    // Every superseded checksum is of a recorded migration, and not its current one.
    for line in &superseded {
        let now = current().into_iter().find(|l| key(l) == key(line));
        match now {
            Some(now) if checksum(&now) != checksum(line) => {}
            Some(_) => bail!("{SUPERSEDED}: {line} is the migration's current checksum, not a superseded one"),
            None => bail!("{SUPERSEDED}: {line} names no migration"),
        }
        hex::decode(checksum(line)).with_context(|| format!("{SUPERSEDED}: {line} is not a hex checksum"))?;
    }
    if new.is_empty() && reworded.is_empty() {
        return Ok(());
    }
    if std::env::var_os("ETTER_BLESS").is_none() {
        let lines: Vec<String> = new.iter().chain(reworded.iter().map(|(_, now)| now)).cloned().collect();
        bail!("migrations not recorded in {RECORD} (ETTER_BLESS=1 records them):\n{}", lines.join("\n"));
    }
    let mut text = text;
    for (kept, now) in &reworded {
        text = text.replace(kept.as_str(), now);
    }
    for line in &new {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(&path, text)?;
    Ok(())
}

/// SQLite cannot widen a CHECK constraint, so the migration that adds VALIDATING rebuilds the runs
/// table. A store with runs, steps, events and notifications from before keeps every row, its
/// steps and events still belong to their runs (nothing cascaded), and foreign keys are enforced
/// again afterwards.
#[tokio::test]
async fn the_sqlite_runs_rebuild_keeps_every_row_and_reference() -> Result<()> {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let dir = tempfile::tempdir()?;
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("etter.sqlite"))
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
    let migrator = sqlx::migrate!("./migrations/sqlite");
    migrator.run_to(8, &pool).await?;
    for statement in [
        "INSERT INTO roles (role_id, company_id, role_name, create_time, update_time) VALUES ('r1', 'acme', 'Analyst', 1, 1)",
        "INSERT INTO runs (workflow_id, role_id, company_id, role_name, run_number, input_identity, state, priority, \
         options, documents, create_time, update_time, deadline) \
         VALUES ('w1', 'r1', 'acme', 'Analyst', 1, 'i', 'READY', 2, '{}', '[]', 1, 2, 99)",
        "INSERT INTO runs (workflow_id, role_id, company_id, role_name, run_number, input_identity, state, priority, \
         options, documents, create_time, update_time, supersedes) \
         VALUES ('w2', 'r1', 'acme', 'Analyst', 2, 'j', 'QUEUED', 2, '{}', '[]', 3, 3, 'w1')",
        "INSERT INTO run_steps (workflow_id, step, attempt, status, update_time) VALUES ('w1', 'role_taxonomy', 1, 'completed', 2)",
        "INSERT INTO run_events (workflow_id, sequence, event_time, kind, payload) VALUES ('w1', 1, 1, 'status', '{}')",
        "INSERT INTO notifications (workflow_id, company_id, state, create_time, next_attempt_time) \
         VALUES ('w1', 'acme', 'READY', 2, 2)",
    ] {
        sqlx::query(statement).execute(&pool).await.with_context(|| statement.to_owned())?;
    }

    migrator.run(&pool).await?;
    let count = |table: &'static str| {
        let pool = pool.clone();
        async move {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(&pool).await
        }
    };
    for (table, expected) in [("runs", 2), ("run_steps", 1), ("run_events", 1), ("notifications", 1)] {
        let n = count(table).await?;
        anyhow::ensure!(n == expected, "{table}: {n} rows after the rebuild, {expected} before");
    }
    let (deadline, supersedes): (Option<i64>, Option<String>) = sqlx::query_as(
        "SELECT r1.deadline, r2.supersedes FROM runs r1, runs r2 WHERE r1.workflow_id = 'w1' AND r2.workflow_id = 'w2'",
    )
    .fetch_one(&pool)
    .await?;
    anyhow::ensure!(deadline == Some(99) && supersedes.as_deref() == Some("w1"), "columns kept");

    let insert = |id: &str, state: &str| {
        format!(
            "INSERT INTO runs (workflow_id, role_id, company_id, role_name, run_number, input_identity, state, \
             priority, options, documents, create_time, update_time) \
             VALUES ('{id}', 'r1', 'acme', 'Analyst', {n}, 'k', '{state}', 2, '{{}}', '[]', 4, 4)",
            n = id.len() + 10
        )
    };
    sqlx::query(sqlx::AssertSqlSafe(insert("w3", "VALIDATING")))
        .execute(&pool)
        .await
        .context("VALIDATING is a state")?;
    anyhow::ensure!(
        sqlx::query(sqlx::AssertSqlSafe(insert("w44", "DRAFT"))).execute(&pool).await.is_err(),
        "the state is still checked"
    );
    let orphan = sqlx::query(
        "INSERT INTO run_steps (workflow_id, step, attempt, status, update_time) VALUES ('nope', 'role_taxonomy', 1, 'pending', 1)",
    )
    .execute(&pool)
    .await;
    anyhow::ensure!(orphan.is_err(), "foreign keys are enforced again after the rebuild");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'runs' AND sql IS NOT NULL",
    )
    .fetch_all(&pool)
    .await?;
    for name in ["runs_history", "runs_queue", "runs_active", "runs_batch", "runs_validating", "runs_waiting_deadline"]
    {
        anyhow::ensure!(indexes.iter().any(|i| i == name), "index {name} after the rebuild: {indexes:?}");
    }
    Ok(())
}
