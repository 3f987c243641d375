//! The run store's conformance suite: every case is written once and runs against both
//! implementations of `RunStore` — PostgreSQL (a fresh database per test, created through
//! `ETTER_TEST__POSTGRES_ADMIN_URL` and dropped afterwards) and SQLite (a fresh file per test).
//!
//! PostgreSQL is a real service here (`scripts/services up postgres`); without it the PostgreSQL
//! cases fail, they never skip.
//!
//! # How it is organised
//!
//! This file is the harness: the scratch stores (`Kind`, `Scratch`), `run_case`, which hands a
//! case a connected store on a fresh scratch and removes the scratch afterwards (even when the case
//! fails or panics), the helpers the cases share (`push`, `create`, `to`, `all_events`, ...), and
//! the one list of cases, `store_suite!`, which makes each case a test per backend. The cases live
//! in one module per area of the store:
//!
//! | module          | covers                                                                                  |
//! |-----------------|-----------------------------------------------------------------------------------------|
//! | `runs`          | creating and reading a run, run numbers and superseding, identity dedupe, the lifecycle |
//! | `roles`         | role id collisions, roles stored under an earlier version's ids                         |
//! | `steps`         | step transitions (idempotence, tokens, errors), step statistics                         |
//! | `events`        | gap-free event sequences, reads after marks, sequence heads for watchers                |
//! | `batches`       | batch creation at scale, items decided in request order                                 |
//! | `history`       | run listing: filters, keyset pagination, page tokens; the runs-in-states scan           |
//! | `dispatch`      | claims, leases, priorities, queue positions, company loads, claim on create             |
//! | `requests`      | request ids (idempotency keys): payload check, expiry, purging                          |
//! | `notifications` | the webhook outbox: claim, retry, deliver, give up                                      |
//! | `audit`         | the audit chain: appending, listing, verification against tampering                     |
//! | `usage`         | document hashes, token usage, token reservations                                        |
//! | `opening`       | connecting and migrating: again, by replicas, by openers racing on an empty store       |
//!
//! Every case runs as `postgres::<case>` and `sqlite::<case>`, whatever its area:
//! `cargo test -p etter-store --test conformance -- sqlite::` runs one backend, `-- <case>` one
//! case on both.
//!
//! # Adding a case
//!
//! 1. Write it once, in its area's module, as `pub(crate) async fn <case>(ctx: Ctx) -> Result<()>`.
//!    `ctx.store` is a freshly migrated, empty store; `ctx.location` says where it lives (to
//!    connect again, or to reach its database directly). Fail with `ensure!`/`bail!`; say what
//!    both backends must do rather than branching on one.
//! 2. Name it under its area in the `store_suite!` list below. Case names are test names, unique
//!    across areas (two of one name do not compile). A case written but not listed is dead code,
//!    which `cargo clippy --all-targets -- -D warnings` refuses.
//!
//! A new area is a new `<area>.rs` next to this file, a `mod <area>;` and a group in the list. A
//! case that needs the scratch itself rather than a connected store (as the opening race does)
//! takes a `Kind` and gets its two `#[tokio::test]`s written out below the list.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use anyhow::{Context as _, Result, ensure};
use etter_core::ids::{CompanyId, DraupRoleId, RoleName, TraceId, TraceParent, WorkflowId};
use etter_core::lifecycle::RunState;
use etter_store::{Admission, DocumentRef, NewRun, Priority, Run, RunEvent, RunStore, StoreLocation, Transition};

mod audit;
mod batches;
mod dispatch;
mod events;
mod history;
mod notifications;
mod opening;
mod requests;
mod roles;
mod runs;
mod steps;
mod usage;

/// Generates one `#[tokio::test]` per case and backend: `postgres::<case>` and `sqlite::<case>`,
/// each running `<area>::<case>` through `run_case`.
macro_rules! store_suite {
    ($($area:ident: [$($case:ident),* $(,)?]),* $(,)?) => {
        mod postgres {
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() -> anyhow::Result<()> {
                    super::run_case(super::Kind::Postgres, super::$area::$case).await
                }
            )*)*
        }
        mod sqlite {
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() -> anyhow::Result<()> {
                    super::run_case(super::Kind::Sqlite, super::$area::$case).await
                }
            )*)*
        }
    };
}

store_suite!(
    runs: [
        create_and_get_run,
        run_numbers_increment_and_supersede,
        identity_dedupe_returns_the_existing_run,
        concurrent_pushes_of_one_identity_create_one_run,
        every_lifecycle_edge_through_the_store,
        a_preview_decides_as_a_create_and_stores_nothing,
    ],
    roles: [
        role_id_collisions_are_refused,
        roles_stored_before_ids_had_a_dot_go_on_under_their_ids,
    ],
    steps: [
        step_transitions_are_idempotent,
        a_run_ends_with_its_last_event_and_its_open_steps_closed,
        step_stats_measure_recent_completed_attempts,
        recently_ended_runs_come_newest_first_in_their_state,
        a_step_keeps_its_model_prompt_version_and_digest,
    ],
    events: [
        concurrent_writers_to_one_run_get_gap_free_sequences,
        events_after_marks_and_sequence_heads,
    ],
    batches: [
        batch_of_2500_runs,
        a_batch_decides_its_items_in_request_order,
        a_batch_ends_with_its_last_queued_run,
    ],
    history: [
        history_filters_and_keyset_pagination,
        runs_in_states_pages_across_companies,
    ],
    dispatch: [
        claims_respect_priority_and_leases,
        concurrent_claimers_get_disjoint_runs,
        a_pushed_run_is_claimed_as_created_only_with_nothing_waiting_and_room,
        waiting_runs_past_their_deadline_are_found_earliest_first,
        validating_runs_wait_apart_from_the_queue_and_are_claimed_for_checks,
        workers_count_while_their_presence_is_recent,
    ],
    requests: [
        request_ids_are_idempotent_and_expire,
    ],
    notifications: [
        a_run_that_ends_queues_one_notification_until_delivered,
    ],
    audit: [
        the_audit_chain_detects_edits_deletions_and_truncation,
        the_keyed_audit_chain_cannot_be_recomputed_without_its_key,
        concurrent_audit_appenders_keep_one_chain,
    ],
    usage: [
        document_hashes_and_usage,
    ],
    opening: [
        migrations_run_twice_are_harmless,
        a_store_that_applied_reworded_migrations_opens_as_it_is_and_a_changed_one_is_refused,
    ],
);

// Cases that open scratch stores of their own, one test per backend.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_stores_opened_at_once_on_an_empty_file_all_come_up() -> Result<()> {
    opening::stores_opened_at_once_on_an_empty_database_all_come_up(Kind::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stores_opened_at_once_on_an_empty_database_all_come_up() -> Result<()> {
    opening::stores_opened_at_once_on_an_empty_database_all_come_up(Kind::Postgres).await
}

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
        trace_parent: Some(TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")?),
        deadline: None,
        model: None,
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
