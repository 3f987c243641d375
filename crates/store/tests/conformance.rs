//! The run store's conformance suite: every case is written once and runs against both
//! implementations — PostgreSQL (a fresh database per test, created through
//! `ETTER_TEST__POSTGRES_ADMIN_URL` and dropped afterwards) and SQLite (a fresh file per test).
//!
//! PostgreSQL is a real service here (`scripts/services up postgres`); without it the PostgreSQL
//! cases fail, they never skip.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use etter_core::ids::{BatchId, CompanyId, DraupRoleId, RequestId, RoleId, RoleName, TraceId, WorkflowId};
use etter_core::lifecycle::RunState;
use etter_core::outputs::ContentHash;
use etter_store::StoreLocation;
use etter_store::{
    self, Admission, Change, Claim, ClaimTerms, DocumentRef, EventScope, FieldViolation, NewBatch, NewRun, PageRequest,
    PipelineError, Priority, PutRequest, RequestKey, Run, RunEvent, RunFilter, RunStore, StepStatus, StepTransition,
    StoreError, TokenCount, Transition, WatchScope,
};

/// Generates one `#[tokio::test]` per case and backend: `store_conformance::postgres::<case>` and
/// `store_conformance::sqlite::<case>`.
macro_rules! store_suite {
    ($($case:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() -> anyhow::Result<()> {
                    super::run_case(super::Kind::Postgres, super::$case).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() -> anyhow::Result<()> {
                    super::run_case(super::Kind::Sqlite, super::$case).await
                }
            )*
        }
    };
}

store_suite!(
    the_keyed_audit_chain_cannot_be_recomputed_without_its_key,
    roles_stored_before_ids_had_a_dot_go_on_under_their_ids,
    create_and_get_run,
    run_numbers_increment_and_supersede,
    identity_dedupe_returns_the_existing_run,
    concurrent_pushes_of_one_identity_create_one_run,
    request_ids_are_idempotent_and_expire,
    every_lifecycle_edge_through_the_store,
    step_transitions_are_idempotent,
    concurrent_writers_to_one_run_get_gap_free_sequences,
    events_after_marks_and_sequence_heads,
    batch_of_2500_runs,
    a_batch_decides_its_items_in_request_order,
    history_filters_and_keyset_pagination,
    claims_respect_priority_and_leases,
    concurrent_claimers_get_disjoint_runs,
    a_pushed_run_is_claimed_as_created_only_with_nothing_waiting_and_room,
    migrations_run_twice_are_harmless,
    role_id_collisions_are_refused,
    document_hashes_and_usage,
    runs_in_states_pages_across_companies,
    step_stats_measure_recent_completed_attempts,
    a_run_that_ends_queues_one_notification_until_delivered,
    the_audit_chain_detects_edits_deletions_and_truncation,
    concurrent_audit_appenders_keep_one_chain,
);

// ---------------------------------------------------------------------------------------------
// Harness

#[derive(Debug, Clone, Copy)]
enum Kind {
    Postgres,
    Sqlite,
}

/// What a case gets: a connected store and where it lives (to connect again).
struct Ctx {
    store: Arc<dyn RunStore>,
    location: StoreLocation,
}

/// A database or file that exists for one test.
enum Scratch {
    Postgres { admin_url: String, name: String, url: String },
    Sqlite { dir: std::path::PathBuf },
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Scratch {
    async fn create(kind: Kind) -> Result<Scratch> {
        match kind {
            Kind::Postgres => {
                let admin_url = std::env::var("ETTER_TEST__POSTGRES_ADMIN_URL").map_err(|_| {
                    anyhow::anyhow!(
                        "ETTER_TEST__POSTGRES_ADMIN_URL is not set: run `scripts/services up postgres` and source \
                         .etter/services.env"
                    )
                })?;
                let name = format!("etter_store_test_{}", unique_suffix());
                let mut admin = admin_connection(&admin_url).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .with_context(|| format!("creating database {name}"))?;
                let mut url = url::Url::parse(&admin_url).context("ETTER_TEST__POSTGRES_ADMIN_URL is not a URL")?;
                url.set_path(&format!("/{name}"));
                Ok(Scratch::Postgres { admin_url, name, url: url.to_string() })
            }
            Kind::Sqlite => {
                let dir = tempfile::Builder::new().prefix("etter-store-test-").tempdir()?.keep();
                Ok(Scratch::Sqlite { dir })
            }
        }
    }

    fn location(&self) -> StoreLocation {
        match self {
            Scratch::Postgres { url, .. } => StoreLocation::Postgres(url.clone()),
            // A directory that does not exist yet: connecting must create it.
            Scratch::Sqlite { dir } => StoreLocation::Sqlite(dir.join("data").join("etter.db")),
        }
    }

    async fn remove(self) -> Result<()> {
        match self {
            Scratch::Postgres { admin_url, name, .. } => {
                let mut admin = admin_connection(&admin_url).await?;
                // FORCE ends the test's own connections, but a pool connection opening at that
                // moment can still make the drop fail ("being accessed by other users"); a busy
                // server needs a moment more.
                let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match sqlx::query(sqlx::AssertSqlSafe(drop.clone())).execute(&mut admin).await {
                        Ok(_) => break,
                        Err(err) if attempt < 5 => {
                            eprintln!("dropping database {name} (attempt {attempt}): {err}; trying again");
                            tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                        }
                        Err(err) => return Err(err).with_context(|| format!("dropping database {name}")),
                    }
                }
            }
            Scratch::Sqlite { dir } => tokio::fs::remove_dir_all(&dir).await?,
        }
        Ok(())
    }
}

async fn admin_connection(admin_url: &str) -> Result<sqlx::PgConnection> {
    use sqlx::Connection as _;
    sqlx::PgConnection::connect(admin_url).await.with_context(|| {
        "cannot reach PostgreSQL at ETTER_TEST__POSTGRES_ADMIN_URL: run `scripts/services up postgres` and source \
         .etter/services.env"
    })
}

/// Runs one case on a fresh store of `kind`, then removes the store even when the case fails or
/// panics (the case runs in its own task, so a panic is caught as a `JoinError`).
async fn run_case<F, Fut>(kind: Kind, case: F) -> Result<()>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let scratch = Scratch::create(kind).await?;
    let location = scratch.location();
    let outcome = match etter_store::connect(&location).await {
        Ok(store) => {
            let joined = tokio::spawn(case(Ctx { store: store.clone(), location })).await;
            store.close().await;
            joined
        }
        Err(e) => Ok(Err(anyhow::Error::new(e).context("connecting to the fresh store"))),
    };
    let removed = scratch.remove().await;
    match outcome {
        Ok(result) => result.and(removed),
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => Err(join.into()),
    }
}

/// Processes starting together on an empty store (a server and a worker on a fresh data
/// directory, replicas on a fresh database) each open and migrate it at once: every one of them
/// must come up, and the schema must be applied once. Several rounds, several openers each.
async fn stores_opened_at_once_on_an_empty_database_all_come_up(kind: Kind) -> Result<()> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_stores_opened_at_once_on_an_empty_file_all_come_up() -> Result<()> {
    stores_opened_at_once_on_an_empty_database_all_come_up(Kind::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stores_opened_at_once_on_an_empty_database_all_come_up() -> Result<()> {
    stores_opened_at_once_on_an_empty_database_all_come_up(Kind::Postgres).await
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn company(id: &str) -> Result<CompanyId> {
    Ok(CompanyId::parse(id)?)
}

fn role_name(name: &str) -> Result<RoleName> {
    Ok(RoleName::parse(name)?)
}

/// A push of `role` in `company` whose input identity is `identity`.
fn push(company_id: &str, role: &str, identity: &str) -> Result<NewRun> {
    Ok(NewRun {
        company: company(company_id)?,
        role_name: role_name(role)?,
        draup_role_id: Some(DraupRoleId::parse("draup-role-12345")?),
        input_identity: identity.to_owned(),
        documents: vec![DocumentRef { kind: "job_description".to_owned(), uri: format!("file:///docs/{identity}.md") }],
        options: serde_json::json!({ "skip_enhancement_workflows": false }),
        priority: Priority::Normal,
        token_estimate: 12_000,
        force: false,
        expected_latest: None,
        admission: Admission::Queue,
        plan: Some(etter_core::steps::plan_new(false)),
        reason: "pushed by test".to_owned(),
        notify: false,
        trace_id: Some(TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736")?),
    })
}

async fn create(store: &dyn RunStore, new: NewRun) -> Result<Run> {
    let created = store.create_run(new).await?;
    ensure!(created.created, "expected a new run, got the existing {}", created.run.workflow_id);
    Ok(created.run)
}

async fn to(store: &dyn RunStore, run: &WorkflowId, state: RunState) -> Result<Run> {
    store.transition(run, Transition::to(state, "test")).await.with_context(|| format!("{run} → {state}"))
}

async fn all_events(store: &dyn RunStore, run: &WorkflowId) -> Result<Vec<RunEvent>> {
    Ok(store.events_after(run, 0, 100_000).await?)
}

/// Checks that events are numbered 1..=n without gaps or repeats.
fn ensure_gap_free(events: &[RunEvent]) -> Result<()> {
    for (i, event) in events.iter().enumerate() {
        ensure!(event.sequence == i as u64 + 1, "event {i} has sequence {} (events: {events:#?})", event.sequence);
    }
    Ok(())
}

fn ids(runs: &[Run]) -> Vec<WorkflowId> {
    runs.iter().map(|r| r.workflow_id.clone()).collect()
}

// ---------------------------------------------------------------------------------------------
// Cases

async fn create_and_get_run(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let before = etter_store::now();
    let run = create(store, push("liberty", "Claims Adjuster", "aa01")?).await?;
    ensure!(run.workflow_id.as_str() == "role-onboard-cr-liberty.claims-adjuster-1", "{}", run.workflow_id);
    ensure!(run.role_id.as_str() == "cr-liberty.claims-adjuster");
    ensure!(run.state == RunState::Queued && run.run_number == 1 && run.sequence == 1);
    ensure!(run.create_time >= before && run.start_time.is_none() && run.end_time.is_none());

    let stored = store.get_run(&run.workflow_id).await?;
    ensure!(stored == run, "stored run differs:\n{stored:#?}\nvs\n{run:#?}");
    ensure!(stored.documents[0].uri == "file:///docs/aa01.md" && stored.options["skip_enhancement_workflows"] == false);
    ensure!(store.latest_run(&run.role_id).await? == run);
    ensure!(stored.plan == Some(etter_core::steps::plan_new(false)), "the plan is kept: {:?}", stored.plan);
    ensure!(
        stored.trace_id.as_ref().map(TraceId::as_str) == Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        "the request's trace id is kept: {:?}",
        stored.trace_id
    );

    // A STALE re-run's plan (reuse and early cutoff) round-trips too.
    let kept = etter_core::steps::Plan {
        steps: etter_core::steps::plan_new(true)
            .steps
            .into_iter()
            .map(|(s, a)| {
                (s, if s == etter_core::steps::StepName::RoleSetup { etter_core::steps::Action::Reuse } else { a })
            })
            .collect(),
        early_cutoff: true,
    };
    let other = create(store, NewRun { plan: Some(kept.clone()), ..push("liberty", "Plan Keeper", "aa02")? }).await?;
    ensure!(store.get_run(&other.workflow_id).await?.plan == Some(kept));

    let events = all_events(store, &run.workflow_id).await?;
    ensure!(
        events.len() == 1
            && events[0].change
                == Change::Status { previous: None, status: RunState::Queued, reason: "pushed by test".to_owned() }
    );

    let missing = WorkflowId::parse("role-onboard-cr-liberty-nobody-1")?;
    ensure!(matches!(store.get_run(&missing).await, Err(StoreError::NotFound { what: "run", .. })));
    ensure!(matches!(
        store.latest_run(&RoleId::parse("cr-liberty-nobody")?).await,
        Err(StoreError::NotFound { what: "role", .. })
    ));
    ensure!(matches!(
        store.transition(&missing, Transition::to(RunState::Processing, "x")).await,
        Err(StoreError::NotFound { .. })
    ));
    store.ping().await?;
    ensure!(["postgres", "sqlite"].contains(&store.backend()));
    Ok(())
}

async fn run_numbers_increment_and_supersede(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let first = create(store, push("acme", "Underwriter", "i1")?).await?;
    to(store, &first.workflow_id, RunState::Cancelled).await?;
    let second = create(store, push("acme", "Underwriter", "i2")?).await?;
    ensure!(second.run_number == 2 && second.workflow_id.as_str() == "role-onboard-cr-acme.underwriter-2");
    ensure!(second.supersedes.as_ref() == Some(&first.workflow_id));
    let first = store.get_run(&first.workflow_id).await?;
    ensure!(first.superseded_by.as_ref() == Some(&second.workflow_id), "{first:#?}");
    ensure!(first.state == RunState::Cancelled, "superseding does not change the old run's state");

    to(store, &second.workflow_id, RunState::Processing).await?;
    to(store, &second.workflow_id, RunState::Failed).await?;
    let third = create(store, push("acme", "Underwriter", "i2")?).await?;
    ensure!(third.run_number == 3);
    ensure!(store.latest_run(&third.role_id).await?.workflow_id == third.workflow_id);
    // Another role numbers from 1.
    ensure!(create(store, push("acme", "Broker", "i1")?).await?.run_number == 1);
    Ok(())
}

async fn identity_dedupe_returns_the_existing_run(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let first = create(store, push("acme", "Analyst", "same")?).await?;

    // Same identity while QUEUED: the existing run, nothing new.
    let again = store.create_run(push("acme", "Analyst", "same")?).await?;
    ensure!(!again.created && again.run.workflow_id == first.workflow_id);
    // force while the latest run is active: refused by the lifecycle, nothing written.
    let forced = NewRun { force: true, ..push("acme", "Analyst", "same")? };
    ensure!(matches!(store.create_run(forced).await, Err(StoreError::RunStillActive(_))));
    // Different inputs while active: refused too.
    ensure!(matches!(store.create_run(push("acme", "Analyst", "other")?).await, Err(StoreError::RunStillActive(_))));
    ensure!(all_events(store, &first.workflow_id).await?.len() == 1);

    to(store, &first.workflow_id, RunState::Processing).await?;
    let again = store.create_run(push("acme", "Analyst", "same")?).await?;
    ensure!(!again.created && again.run.state == RunState::Processing);
    to(store, &first.workflow_id, RunState::Ready).await?;
    let again = store.create_run(push("acme", "Analyst", "same")?).await?;
    ensure!(!again.created && again.run.state == RunState::Ready, "READY runs are returned too");

    // force_rerun after the run ended: a new run superseding it.
    let forced = create(store, NewRun { force: true, ..push("acme", "Analyst", "same")? }).await?;
    ensure!(forced.run_number == 2 && forced.supersedes.as_ref() == Some(&first.workflow_id));

    // A FAILED run is not returned: the same push starts a new run.
    to(store, &forced.workflow_id, RunState::Processing).await?;
    to(store, &forced.workflow_id, RunState::Failed).await?;
    let retried = create(store, push("acme", "Analyst", "same")?).await?;
    ensure!(retried.run_number == 3);

    // Retry names the run it retries: only the latest may be retried.
    to(store, &retried.workflow_id, RunState::Cancelled).await?;
    let stale_retry = NewRun { expected_latest: Some(forced.workflow_id.clone()), ..push("acme", "Analyst", "same")? };
    ensure!(matches!(store.create_run(stale_retry).await, Err(StoreError::Conflict(_))));
    let retry = NewRun { expected_latest: Some(retried.workflow_id.clone()), ..push("acme", "Analyst", "same")? };
    ensure!(create(store, retry).await?.supersedes.as_ref() == Some(&retried.workflow_id));

    // The same invalid item rejected again: its VALIDATION_ERROR run answers; another invalid
    // item (or a valid one) of the role makes a new run.
    let reject = |identity: &str| -> Result<NewRun> {
        Ok(NewRun {
            admission: Admission::Reject(vec![FieldViolation {
                field: "documents".into(),
                description: "empty".into(),
            }]),
            ..push("acme", "Rejected Role", identity)?
        })
    };
    let rejected = create(store, reject("bad")?).await?;
    let again = store.create_run(reject("bad")?).await?;
    ensure!(!again.created && again.run.workflow_id == rejected.workflow_id, "{again:?}");
    ensure!(create(store, reject("worse")?).await?.run_number == 2);
    ensure!(create(store, push("acme", "Rejected Role", "bad")?).await?.run_number == 3, "fixed: queued");
    Ok(())
}

async fn concurrent_pushes_of_one_identity_create_one_run(ctx: Ctx) -> Result<()> {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = ctx.store.clone();
        let new = push("acme", "Concurrent Role", "same-inputs")?;
        tasks.push(tokio::spawn(async move { store.create_run(new).await }));
    }
    let mut created = 0;
    let mut workflows = BTreeSet::new();
    for task in tasks {
        let outcome = task.await??;
        created += usize::from(outcome.created);
        workflows.insert(outcome.run.workflow_id);
    }
    ensure!(created == 1 && workflows.len() == 1, "created {created}, workflows {workflows:?}");
    let count = ctx.store.count_runs(Some(&company("acme")?), &[]).await?;
    ensure!(count == 1, "{count} runs stored");
    Ok(())
}

async fn request_ids_are_idempotent_and_expire(ctx: Ctx) -> Result<()> {
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

/// The path from QUEUED to each state, through allowed edges.
fn path_to(state: RunState) -> &'static [RunState] {
    use RunState::*;
    match state {
        Queued | ValidationError => &[],
        Processing => &[Processing],
        Ready => &[Processing, Ready],
        Degraded => &[Processing, Degraded],
        Failed => &[Processing, Failed],
        Stale => &[Processing, Ready, Stale],
        Cancelled => &[Cancelled],
    }
}

async fn every_lifecycle_edge_through_the_store(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    for from in RunState::ALL {
        for target in RunState::ALL {
            let role = format!("Edge {from} {target}");
            let mut new = push("edges", &role, "x")?;
            if from == RunState::ValidationError {
                new.admission =
                    Admission::Reject(vec![FieldViolation { field: "documents".into(), description: "empty".into() }]);
            }
            let run = create(store, new).await?;
            for step in path_to(from) {
                to(store, &run.workflow_id, *step).await?;
            }
            let before = store.get_run(&run.workflow_id).await?;
            ensure!(before.state == from);
            let events_before = all_events(store, &run.workflow_id).await?;

            let result =
                store.transition(&run.workflow_id, Transition::to(target, format!("{from} to {target}"))).await;
            let after = store.get_run(&run.workflow_id).await?;
            let events = all_events(store, &run.workflow_id).await?;
            ensure_gap_free(&events)?;
            match (etter_core::lifecycle::transition(from, target), result) {
                (Ok(()), Ok(returned)) => {
                    ensure!(returned == after && after.state == target, "{from}→{target}: {after:#?}");
                    ensure!(events.len() == events_before.len() + 1);
                    let expected =
                        Change::Status { previous: Some(from), status: target, reason: format!("{from} to {target}") };
                    ensure!(events.last().map(|e| &e.change) == Some(&expected));
                    ensure!(after.sequence == events.len() as u64);
                    if target == RunState::Processing {
                        ensure!(after.start_time.is_some());
                    }
                    ensure!(after.end_time.is_some() == target.is_final(), "{from}→{target} end time");
                }
                (Err(illegal), Err(StoreError::IllegalTransition(refused))) => {
                    ensure!(illegal == refused);
                    ensure!(after == before, "{from}→{target} was refused but changed the run");
                    ensure!(events == events_before, "{from}→{target} was refused but appended an event");
                }
                (expected, got) => bail!("{from}→{target}: lifecycle says {expected:?}, store did {got:?}"),
            }
        }
    }
    Ok(())
}

async fn step_transitions_are_idempotent(ctx: Ctx) -> Result<()> {
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

    store.set_needs_review(id, true).await?;
    ensure!(store.get_run(id).await?.needs_review);
    Ok(())
}

async fn concurrent_writers_to_one_run_get_gap_free_sequences(ctx: Ctx) -> Result<()> {
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

async fn events_after_marks_and_sequence_heads(ctx: Ctx) -> Result<()> {
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

async fn batch_of_2500_runs(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let acme = company("bulk")?;
    let rejected = [10usize, 20, 30];
    let mut items = Vec::new();
    for i in 0..2500usize {
        let mut item = push("bulk", &format!("Role {i:04}"), &format!("identity-{i}"))?;
        if rejected.contains(&i) {
            item.draup_role_id = None;
            item.admission = Admission::Reject(vec![FieldViolation {
                field: "draup_role_id".into(),
                description: "is required".into(),
            }]);
        }
        items.push(item);
    }
    // The same role and inputs again, in another chunk: answered with the first item's run.
    items[2400] = push("bulk", "Role 0000", "identity-0")?;
    // A name whose role id is taken by another name of the batch: refused alone.
    items[2401] = push("bulk", "Role-0001", "identity-x")?;

    let batch = BatchId::from_random(0xb47c);
    let started = Instant::now();
    let created = store
        .create_batch(
            NewBatch { id: batch.clone(), company: acme.clone(), request_id: Some(RequestId::parse("r")?) },
            items,
        )
        .await?;
    let elapsed = started.elapsed();
    eprintln!("{}: 2,500-run batch stored in {elapsed:?}", store.backend());

    ensure!(created.items.len() == 2500 && created.batch.item_count == 2500);
    let mut accepted = 0;
    for (i, item) in created.items.iter().enumerate() {
        match (i, item) {
            (2400, Ok(existing)) => ensure!(!existing.created && existing.run.run_number == 1),
            (2401, Err(StoreError::RoleIdCollision { .. })) => {}
            (i, Ok(run)) if rejected.contains(&i) => ensure!(run.created && run.run.state == RunState::ValidationError),
            (_, Ok(run)) => {
                ensure!(run.created && run.run.state == RunState::Queued && run.run.batch_id.as_ref() == Some(&batch));
                accepted += 1;
            }
            (i, Err(e)) => bail!("item {i} failed: {e}"),
        }
    }
    ensure!(accepted == 2495);

    // Everything is stored and listable by batch, page by page.
    let mut listed = BTreeSet::new();
    let filter = RunFilter { batch: Some(batch.clone()), ..RunFilter::company(acme.clone()) };
    let mut page = PageRequest { size: 500, token: None };
    loop {
        let got = store.list_runs(&filter, &page).await?;
        for run in got.runs {
            ensure!(listed.insert(run.workflow_id.clone()), "{} listed twice", run.workflow_id);
        }
        match got.next_page_token {
            Some(token) => page.token = Some(token),
            None => break,
        }
    }
    ensure!(listed.len() == 2498, "{} runs listed", listed.len());
    let counts: BTreeMap<_, _> = store.batch_counts(&batch).await?.into_iter().collect();
    ensure!(counts.get(&RunState::Queued) == Some(&2495) && counts.get(&RunState::ValidationError) == Some(&3));
    ensure!(store.sequence_heads(&WatchScope::Batch(batch.clone())).await?.len() == 2498);
    let stored = store.get_batch(&batch).await?;
    ensure!(stored == created.batch, "{stored:?}");
    let rejected_run = store.get_run(&WorkflowId::for_run(&RoleId::new(&acme, &role_name("Role 0010")?), 1)).await?;
    ensure!(
        rejected_run.field_violations.len() == 1 && rejected_run.error.is_some() && rejected_run.end_time.is_some()
    );

    let again = store.create_batch(NewBatch { id: batch, company: acme, request_id: None }, Vec::new()).await;
    ensure!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    Ok(())
}

/// A batch's items are decided as if pushed one after the other, though the store writes them
/// together: a role twice in one batch sees the run its first item created, and superseding works
/// across the batch and within it.
async fn a_batch_decides_its_items_in_request_order(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let adjuster = create(store, push("order", "Adjuster", "a1")?).await?;
    to(store, &adjuster.workflow_id, RunState::Processing).await?;
    to(store, &adjuster.workflow_id, RunState::Ready).await?;
    let mut rejected = push("order", "Clerk", "c1")?;
    rejected.draup_role_id = None;
    rejected.admission =
        Admission::Reject(vec![FieldViolation { field: "draup_role_id".into(), description: "is required".into() }]);
    let mut clerk = push("order", "Clerk", "c2")?;
    clerk.reason = "fixed and pushed again".to_owned();
    let items = vec![
        push("order", "Adjuster", "a2")?, // new inputs: run 2, superseding the stored run 1
        push("order", "Adjuster", "a2")?, // the same again: run 2 answers
        push("order", "Broker", "b1")?,   // a new role: run 1
        push("order", "Broker", "b2")?,   // other inputs while run 1 is queued: refused
        rejected,                         // kept as VALIDATION_ERROR: run 1
        clerk,                            // valid now: run 2, superseding run 1 of this batch
    ];
    let batch = BatchId::from_random(0x0bde);
    let created =
        store.create_batch(NewBatch { id: batch.clone(), company: company("order")?, request_id: None }, items).await?;
    let answers: Vec<Result<(String, u32, bool), String>> = created
        .items
        .iter()
        .map(|item| match item {
            Ok(c) => Ok((c.run.role_name.to_string(), c.run.run_number, c.created)),
            Err(e) => Err(format!("{e:?}")),
        })
        .collect();
    ensure!(answers[0] == Ok(("Adjuster".to_owned(), 2, true)), "{answers:?}");
    ensure!(answers[1] == Ok(("Adjuster".to_owned(), 2, false)), "{answers:?}");
    ensure!(answers[2] == Ok(("Broker".to_owned(), 1, true)), "{answers:?}");
    ensure!(matches!(created.items[3], Err(StoreError::RunStillActive(_))), "{answers:?}");
    ensure!(answers[4] == Ok(("Clerk".to_owned(), 1, true)), "{answers:?}");
    ensure!(answers[5] == Ok(("Clerk".to_owned(), 2, true)), "{answers:?}");

    // What is stored is what was answered.
    let old = store.get_run(&adjuster.workflow_id).await?;
    let new = store.latest_run(&adjuster.role_id).await?;
    ensure!(new.run_number == 2 && new.supersedes.as_ref() == Some(&old.workflow_id), "{new:#?}");
    ensure!(old.superseded_by.as_ref() == Some(&new.workflow_id) && old.state == RunState::Ready, "{old:#?}");
    let clerk_role = RoleId::new(&company("order")?, &role_name("Clerk")?);
    let clerk_1 = store.get_run(&WorkflowId::for_run(&clerk_role, 1)).await?;
    let clerk_2 = store.latest_run(&clerk_role).await?;
    ensure!(clerk_1.state == RunState::ValidationError && clerk_1.superseded_by.as_ref() == Some(&clerk_2.workflow_id));
    ensure!(clerk_2.run_number == 2 && clerk_2.state == RunState::Queued && clerk_2.batch_id.as_ref() == Some(&batch));
    let first_event = all_events(store, &clerk_2.workflow_id).await?;
    ensure!(
        matches!(&first_event[..], [RunEvent { sequence: 1, change: Change::Status { previous: None, status: RunState::Queued, reason }, .. }] if reason == "fixed and pushed again"),
        "{first_event:#?}"
    );
    let broker = store.latest_run(&RoleId::new(&company("order")?, &role_name("Broker")?)).await?;
    ensure!(broker.run_number == 1 && broker.input_identity == "b1", "{broker:#?}");
    // Four runs of this batch: Adjuster 2, Broker 1, Clerk 1 and 2.
    ensure!(store.sequence_heads(&WatchScope::Batch(batch)).await?.len() == 4);
    Ok(())
}

async fn history_filters_and_keyset_pagination(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let acme = company("acme")?;
    let mut runs = Vec::new();
    for i in 0..23 {
        runs.push(create(store, push("acme", &format!("History {i:02}"), "h")?).await?);
    }
    create(store, push("globex", "History 00", "h")?).await?;

    // Page through while new runs keep arriving: exactly the runs that existed, newest first.
    let mut expected = runs.clone();
    expected.sort_by(|a, b| (b.create_time, &b.workflow_id).cmp(&(a.create_time, &a.workflow_id)));
    let mut listed = Vec::new();
    let mut page = PageRequest { size: 5, token: None };
    let mut added = 0;
    loop {
        let got = store.list_runs(&RunFilter::company(acme.clone()), &page).await?;
        ensure!(got.runs.len() <= 5);
        listed.extend(got.runs);
        create(store, push("acme", &format!("Newcomer {added}"), "h")?).await?;
        added += 1;
        match got.next_page_token {
            Some(token) => page.token = Some(token),
            None => break,
        }
    }
    ensure!(ids(&listed) == ids(&expected), "paging while inserting lost or repeated runs");
    ensure!(added == 5);

    // Filters.
    let cancelled = &runs[3].workflow_id;
    to(store, cancelled, RunState::Cancelled).await?;
    to(store, &runs[4].workflow_id, RunState::Processing).await?;
    store.set_needs_review(&runs[5].workflow_id, true).await?;
    let all = move |filter: RunFilter| async move {
        let page = store.list_runs(&filter, &PageRequest { size: 500, token: None }).await?;
        anyhow::Ok(ids(&page.runs))
    };
    ensure!(
        all(RunFilter { states: vec![RunState::Cancelled], ..RunFilter::company(acme.clone()) }).await?
            == vec![cancelled.clone()]
    );
    let active =
        all(RunFilter { states: vec![RunState::Cancelled, RunState::Processing], ..RunFilter::company(acme.clone()) })
            .await?;
    ensure!(active.len() == 2);
    ensure!(
        all(RunFilter { needs_review: Some(true), ..RunFilter::company(acme.clone()) }).await?
            == vec![runs[5].workflow_id.clone()]
    );
    ensure!(
        all(RunFilter { needs_review: Some(false), ..RunFilter::company(acme.clone()) }).await?.len() == 23 + 5 - 1
    );
    ensure!(
        all(RunFilter { role: Some(runs[7].role_id.clone()), ..RunFilter::company(acme.clone()) }).await?
            == vec![runs[7].workflow_id.clone()]
    );
    let middle = runs[10].create_time;
    let after = all(RunFilter { created_after: Some(middle), ..RunFilter::company(acme.clone()) }).await?;
    ensure!(after.len() == 13 + 5, "{} runs at or after the 11th", after.len());
    let before = all(RunFilter { created_before: Some(middle), ..RunFilter::company(acme.clone()) }).await?;
    ensure!(before.len() == 10);
    let window = all(RunFilter {
        created_after: Some(runs[2].create_time),
        created_before: Some(runs[6].create_time),
        ..RunFilter::company(acme.clone())
    })
    .await?;
    ensure!(window == ids(&runs[2..6]).into_iter().rev().collect::<Vec<_>>());
    ensure!(
        all(RunFilter { batch: Some(BatchId::from_random(1)), ..RunFilter::company(acme.clone()) }).await?.is_empty()
    );
    ensure!(all(RunFilter::company(company("globex")?)).await?.len() == 1);

    // Page size defaults and bounds; a forged token is refused.
    let default = store.list_runs(&RunFilter::company(acme.clone()), &PageRequest::default()).await?;
    ensure!(default.runs.len() == 28 && default.next_page_token.is_none());
    let forged = PageRequest { size: 5, token: Some("not-a-token".to_owned()) };
    ensure!(matches!(store.list_runs(&RunFilter::company(acme), &forged).await, Err(StoreError::InvalidPageToken)));
    Ok(())
}

async fn claims_respect_priority_and_leases(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let acme = company("acme")?;
    let with = |role: &str, priority| -> Result<NewRun> { Ok(NewRun { priority, ..push("acme", role, "p")? }) };
    let low = create(store, with("Low One", Priority::Low)?).await?;
    let normal1 = create(store, with("Normal One", Priority::Normal)?).await?;
    let high = create(store, with("High One", Priority::High)?).await?;
    let normal2 = create(store, with("Normal Two", Priority::Normal)?).await?;
    let other = create(store, NewRun { priority: Priority::High, ..push("globex", "Other", "p")? }).await?;

    let positions = store.queue_positions(&acme).await?;
    let order: Vec<_> = positions.iter().map(|p| (p.workflow_id.clone(), p.position)).collect();
    let dispatch_order =
        [high.workflow_id.clone(), normal1.workflow_id.clone(), normal2.workflow_id.clone(), low.workflow_id.clone()];
    ensure!(order == dispatch_order.iter().cloned().zip(1..).collect::<Vec<_>>(), "{order:?}");
    ensure!(store.queue_position(&normal2.workflow_id).await? == Some(3));
    ensure!(store.queue_position(&other.workflow_id).await? == Some(1), "positions are per company");
    ensure!(store.count_runs(Some(&acme), &[RunState::Queued]).await? == 4);
    ensure!(store.count_runs(None, &[RunState::Queued]).await? == 5);

    let now = etter_store::now();
    let claim = |limit, now| Claim {
        claimer: "dispatcher-1".into(),
        company: Some(acme.clone()),
        limit,
        lease: Duration::from_secs(30),
        now,
    };
    ensure!(ids(&store.claim_queued(&claim(2, now)).await?) == dispatch_order[..2]);
    ensure!(
        ids(&store.claim_queued(&claim(10, now)).await?) == dispatch_order[2..],
        "claimed runs are not handed out again"
    );
    ensure!(store.claim_queued(&claim(10, now)).await?.is_empty());
    // Claims do not move runs: no event, still QUEUED, still counted.
    ensure!(store.get_run(&high.workflow_id).await?.sequence == 1);

    // A released claim is free at once; an expired lease is free again.
    store.release_claim(&low.workflow_id, "dispatcher-1").await?;
    ensure!(ids(&store.claim_queued(&claim(10, now)).await?) == vec![low.workflow_id.clone()]);
    to(store, &high.workflow_id, RunState::Processing).await?;
    let expired = now + chrono::TimeDelta::seconds(31);
    ensure!(ids(&store.claim_queued(&claim(10, expired)).await?) == dispatch_order[1..], "after the lease");

    // Without a company: every company, still in priority order.
    let any = Claim { company: None, ..claim(10, expired + chrono::TimeDelta::seconds(31)) };
    let claimed = ids(&store.claim_queued(&any).await?);
    ensure!(claimed.first() == Some(&other.workflow_id) && claimed.len() == 4, "{claimed:?}");

    let loads = store.company_loads().await?;
    let acme_load = loads.iter().find(|l| l.company == acme).context("acme has load")?;
    ensure!(acme_load.queued == 3 && acme_load.processing == 1, "{loads:?}");
    Ok(())
}

async fn concurrent_claimers_get_disjoint_runs(ctx: Ctx) -> Result<()> {
    let mut all = BTreeSet::new();
    for i in 0..40 {
        let company_id = if i % 2 == 0 { "acme" } else { "globex" };
        all.insert(create(ctx.store.as_ref(), push(company_id, &format!("Claimable {i}"), "c")?).await?.workflow_id);
    }
    let now = etter_store::now();
    let mut tasks = Vec::new();
    for claimer in 0..4 {
        let store = ctx.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claim = Claim {
                    claimer: format!("dispatcher-{claimer}"),
                    company: None,
                    limit: 3,
                    lease: Duration::from_secs(60),
                    now,
                };
                let got = store.claim_queued(&claim).await?;
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|r| r.workflow_id));
            }
            anyhow::Ok(mine)
        }));
    }
    let mut claimed = BTreeSet::new();
    for task in tasks {
        for id in task.await?? {
            ensure!(claimed.insert(id.clone()), "{id} was handed to two claimers");
        }
    }
    ensure!(claimed == all, "claimed {} of {}", claimed.len(), all.len());
    Ok(())
}

async fn a_pushed_run_is_claimed_as_created_only_with_nothing_waiting_and_room(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let now = etter_store::now();
    let lease = Duration::from_secs(30);
    let terms =
        |company_room, total_room| ClaimTerms { claimer: "dispatcher-1".into(), lease, company_room, total_room };
    let claimed = |created: &etter_store::Created| created.created && created.claimed;
    let left = |created: &etter_store::Created| created.created && !created.claimed;
    let round = Claim { claimer: "dispatcher-2".into(), company: None, limit: 10, lease, now };

    // Nothing else waits: claimed as it is created, still QUEUED (one event), not handed to a round.
    let first = store.create_run_and_claim(push("acme", "Fast One", "f")?, &terms(10, 10)).await?;
    ensure!(claimed(&first) && first.run.state == RunState::Queued && first.run.sequence == 1, "{first:?}");
    ensure!(store.claim_queued(&round).await?.is_empty(), "a claimed run is not handed to a round");
    to(store, &first.run.workflow_id, RunState::Processing).await?;

    // Another run waits (of another company, with a lower priority): the new run waits too.
    let waiting = create(store, NewRun { priority: Priority::Low, ..push("globex", "Waiting", "f")? }).await?;
    let second = NewRun { priority: Priority::High, ..push("acme", "Fast Two", "f")? };
    let second = store.create_run_and_claim(second, &terms(10, 10)).await?;
    ensure!(left(&second), "a run waits ahead of it: {second:?}");
    // Runs whose claim expired still wait.
    let expired = Claim { now: now - chrono::TimeDelta::seconds(60), ..round.clone() };
    ensure!(
        ids(&store.claim_queued(&expired).await?) == vec![second.run.workflow_id.clone(), waiting.workflow_id.clone()]
    );
    let third = store.create_run_and_claim(push("acme", "Fast Three", "f")?, &terms(10, 10)).await?;
    ensure!(left(&third), "runs whose claim expired wait ahead of it: {third:?}");
    // Runs being started (claimed, not expired) do not.
    ensure!(store.claim_queued(&round).await?.len() == 3);
    let fourth = store.create_run_and_claim(push("globex", "Fast Four", "f")?, &terms(10, 10)).await?;
    ensure!(claimed(&fourth), "the runs ahead are being started: {fourth:?}");
    to(store, &waiting.workflow_id, RunState::Cancelled).await?;
    to(store, &third.run.workflow_id, RunState::Cancelled).await?;

    // The caps: acme has two PROCESSING runs, the service two.
    to(store, &second.run.workflow_id, RunState::Processing).await?;
    for (name, company_room, total_room, why) in [
        ("Capped", 2, 10, "the company's cap is reached"),
        ("Capped Total", 10, 2, "the service's cap is reached"),
        ("No Room", 0, 10, "no room at all"),
    ] {
        let capped = store.create_run_and_claim(push("acme", name, "f")?, &terms(company_room, total_room)).await?;
        ensure!(left(&capped), "{why}: {capped:?}");
        to(store, &capped.run.workflow_id, RunState::Cancelled).await?;
    }
    let other = store.create_run_and_claim(push("globex", "Elsewhere", "f")?, &terms(1, 10)).await?;
    ensure!(claimed(&other), "another company's runs do not count: {other:?}");
    let roomy = store.create_run_and_claim(push("acme", "Roomy", "f")?, &terms(3, 3)).await?;
    ensure!(claimed(&roomy), "room on both caps: {roomy:?}");

    // A role with runs already (created under its lock, then claimed): a new run superseding the
    // ended one is claimed; the same push again gets that run back, neither created nor claimed.
    to(store, &first.run.workflow_id, RunState::Ready).await?;
    let again = store.create_run_and_claim(push("acme", "Fast One", "g")?, &terms(10, 10)).await?;
    ensure!(claimed(&again), "{again:?}");
    ensure!(again.run.run_number == 2 && again.run.supersedes.as_ref() == Some(&first.run.workflow_id));
    let same = store.create_run_and_claim(push("acme", "Fast One", "g")?, &terms(10, 10)).await?;
    ensure!(!same.created && !same.claimed && same.run.workflow_id == again.run.workflow_id, "{same:?}");
    ensure!(
        store.claim_queued(&Claim { now: etter_store::now(), ..round }).await?.is_empty(),
        "every queued run is claimed"
    );
    Ok(())
}

async fn migrations_run_twice_are_harmless(ctx: Ctx) -> Result<()> {
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

async fn role_id_collisions_are_refused(ctx: Ctx) -> Result<()> {
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

async fn roles_stored_before_ids_had_a_dot_go_on_under_their_ids(ctx: Ctx) -> Result<()> {
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

async fn document_hashes_and_usage(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let (a, b) = ("s3://bucket/a.pdf".to_owned(), "file:///docs/b.md".to_owned());
    let t0 = etter_store::now();
    ensure!(store.record_document_hash(&a, &ContentHash("h1".into()), t0).await?.is_none());
    ensure!(store.record_document_hash(&b, &ContentHash("h2".into()), t0).await?.is_none());
    let t1 = t0 + chrono::TimeDelta::minutes(5);
    let previous = store.record_document_hash(&a, &ContentHash("h3".into()), t1).await?.context("a was seen")?;
    ensure!(previous.content_hash.0 == "h1" && previous.seen_time == t0);
    let hashes = store.document_hashes(&[a.clone(), b, "s3://bucket/unknown".into()]).await?;
    ensure!(hashes.len() == 2 && hashes.iter().any(|h| h.uri == a && h.content_hash.0 == "h3" && h.seen_time == t1));

    // Usage adds up per company, step and day.
    let run = create(store, push("acme", "Usage Role", "u")?).await?;
    for (step, tokens) in [("ai_assessment", 10), ("skills_miner", 5)] {
        let t = StepTransition {
            tokens: Some(TokenCount { input: tokens, output: 1 }),
            ..StepTransition::new(step, 1, StepStatus::Running)
        };
        store.record_step(&run.workflow_id, t).await?;
        let t = StepTransition {
            tokens: Some(TokenCount { input: tokens * 2, output: 2 }),
            ..StepTransition::new(step, 1, StepStatus::Completed)
        };
        store.record_step(&run.workflow_id, t).await?;
    }
    let today = etter_store::now().date_naive();
    let usage = store.usage(&company("acme")?, today - chrono::TimeDelta::days(1), today).await?;
    let by_step: BTreeMap<_, _> = usage.iter().map(|u| (u.step.as_str(), u.tokens)).collect();
    ensure!(by_step["ai_assessment"] == TokenCount { input: 20, output: 2 }, "{usage:?}");
    ensure!(by_step["skills_miner"] == TokenCount { input: 10, output: 2 }, "{usage:?}");
    ensure!(store.get_run(&run.workflow_id).await?.tokens_used == TokenCount { input: 30, output: 4 });
    ensure!(store.usage(&company("globex")?, today, today).await?.is_empty());

    // The active run still reserves its estimate less what it used; an ended run reserves nothing.
    let estimate = store.get_run(&run.workflow_id).await?.token_estimate;
    ensure!(store.token_reservations(&company("acme")?).await? == estimate - 34);
    ensure!(store.token_reservations(&company("globex")?).await? == 0);
    store.transition(&run.workflow_id, Transition::to(RunState::Cancelled, "test")).await?;
    ensure!(store.token_reservations(&company("acme")?).await? == 0);
    Ok(())
}

/// The staleness scan reads READY and DEGRADED runs of every company, page by page.
async fn runs_in_states_pages_across_companies(ctx: Ctx) -> Result<()> {
    let store = ctx.store.as_ref();
    let mut expected = Vec::new();
    for (n, company) in ["acme", "globex", "initech"].into_iter().enumerate() {
        for role in ["Analyst", "Adjuster"] {
            let run = create(store, push(company, role, &format!("{company}-{role}"))?).await?;
            to(store, &run.workflow_id, RunState::Processing).await?;
            let end = if n == 1 { RunState::Degraded } else { RunState::Ready };
            to(store, &run.workflow_id, end).await?;
            expected.push(run.workflow_id.to_string());
        }
    }
    // Neither queued nor failed runs are listed.
    create(store, push("acme", "Queued", "q")?).await?;
    let failed = create(store, push("acme", "Failed", "f")?).await?;
    to(store, &failed.workflow_id, RunState::Processing).await?;
    to(store, &failed.workflow_id, RunState::Failed).await?;
    expected.sort();

    let mut seen = Vec::new();
    let mut after: Option<WorkflowId> = None;
    loop {
        let page = store.runs_in_states(&[RunState::Ready, RunState::Degraded], after.as_ref(), 4).await?;
        ensure!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        after = Some(last.workflow_id.clone());
        seen.extend(page.iter().map(|r| r.workflow_id.to_string()));
    }
    ensure!(seen == expected, "{seen:#?} vs {expected:#?}");
    Ok(())
}

/// Estimates come from what recent completed attempts cost; failures and other steps do not count.
async fn step_stats_measure_recent_completed_attempts(ctx: Ctx) -> Result<()> {
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

async fn a_run_that_ends_queues_one_notification_until_delivered(ctx: Ctx) -> Result<()> {
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

// ---------------------------------------------------------------------------------------------
// Audit log

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

async fn the_audit_chain_detects_edits_deletions_and_truncation(ctx: Ctx) -> Result<()> {
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
async fn the_keyed_audit_chain_cannot_be_recomputed_without_its_key(ctx: Ctx) -> Result<()> {
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

async fn concurrent_audit_appenders_keep_one_chain(ctx: Ctx) -> Result<()> {
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
