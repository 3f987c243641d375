//! The gRPC control plane: `etter.pipeline.v1.PipelineService`, health, reflection and grpc-web on
//! one port.
//!
//! [`serve`] takes its shutdown as a future, so `main` owns the signals and tests own the lifetime.

mod api;
mod audit;
pub mod auth;
mod batch;
mod cancel;
mod coalesce;
pub mod companies;
mod compare;
pub mod config;
mod console;
mod convert;
mod deadline;
mod dispatch;
mod document_checks;
mod error;
mod estimate;
#[cfg(test)]
mod fuzz;
mod graph;
pub mod health;
mod history;
mod idempotency;
pub mod jwks;
pub mod limits;
mod malformed;
pub mod orchestrator;
pub mod principal;
mod push;
mod refusals;
mod retry;
mod status;
#[cfg(test)]
mod testing;
pub mod tokens;
mod trace;
mod usage;
mod wait;
mod watch;
mod webhook;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use crate::config::Config;
use crate::orchestrator::{Orchestrator, TemporalOrchestrator, TemporalSettings};
use etter_config::ConfigError;
use etter_core::error::chain;
use etter_proto::v1::pipeline_service_server::PipelineServiceServer;
use etter_store::fanout;
use etter_store::{self, StoreError, StoreOptions};
use etter_telemetry::process;
use http::{HeaderName, Method};
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tonic::transport::Server;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use audit::chain_key as audit_chain_key;
pub use error::ApiError;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The reflection service could not be built from the descriptor sets.
    #[error("cannot build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The token signing key could not be prepared.
    #[error(transparent)]
    Key(#[from] auth::KeyError),
    /// The audit chain's generated key could not be kept.
    #[error("cannot prepare the audit key")]
    AuditKey(#[from] tokens::KeptSecretError),
    /// The keys sealing client-held tokens could not be prepared.
    #[error(transparent)]
    TokenKeys(#[from] tokens::TokenKeyError),
    /// The listeners' TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] etter_tls::TlsError),
    /// The `/metrics` endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] process::MetricsError),
    /// The configuration names no usable store.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The run store could not be opened or migrated.
    #[error("cannot open the run store")]
    Store(#[from] StoreError),
    /// The companies file is unreadable or invalid.
    #[error(transparent)]
    Companies(#[from] companies::CompaniesError),
    /// `[documents]` is unusable (for example `documents.file_root` does not exist here: the
    /// server checks pushed documents, so the root must be mounted on it as on the workers).
    #[error(transparent)]
    Documents(#[from] etter_documents::DocumentError),
    /// The webhook client could not be built.
    #[error(transparent)]
    Webhooks(#[from] webhook::ClientError),
    /// `redis.url` is unusable.
    #[error(transparent)]
    Fanout(#[from] fanout::FanoutError),
    /// The transport failed while serving.
    #[error("the gRPC transport failed")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves until `shutdown` resolves, then drains: health turns NOT_SERVING, new calls are refused,
/// and in-flight calls and streams get `server.shutdown_grace` to finish.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| ServeError::Bind { addr: config.server.listen, source })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind { addr: config.server.listen, source })?;
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);

    // The run store first: nothing is acknowledged that is not stored. Migrations run here.
    let mut stores = Stores::open(&config, &drain_rx).await?;
    // One TLS configuration for both listeners, rebuilt when its files change.
    let tls = etter_tls::Acceptor::new(&config.server.tls, "server.tls")?;
    let metrics =
        etter_tls::Incoming::new(process::bind_metrics(config.server.metrics_listen).await?, tls.clone(), "metrics")
            .map_err(|source| ServeError::Bind { addr: config.server.metrics_listen, source })?;
    let metrics_addr = process::serve_metrics_on(metrics, "etter-server", draining(drain_rx.clone()))?;
    etter_telemetry::metrics::describe();
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let health_addr = match config.server.health_listen {
        Some(addr) => Some(serve_health(addr, health_service.clone()).await?),
        None => None,
    };
    // Every handle on the audit log is moved into what serves (the API, the authenticator, the
    // malformed-request layer): when the server ends they go, and the writer finishes.
    let Admission { audit, audit_writer, authenticator, malformed } = Admission::new(&config, &stores)?;
    // The identity provider's keys, before the first call: a provider that does not answer in
    // time is left to the background fetches (calls are told the keys are not loaded yet).
    if let Some(remote) = authenticator.remote_keys() {
        match tokio::time::timeout(std::time::Duration::from_secs(10), remote.fetch_once()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %chain(&e), "cannot fetch the identity provider's keys; trying again")
            }
            Err(_) => tracing::warn!("the identity provider's keys did not arrive in time; trying again"),
        }
    }
    let config = Arc::new(config);
    let control = ControlPlane::new(&config, &stores, &drain_rx).await?;
    health::first_look(
        control.orchestrator.as_ref(),
        &control.conditions,
        &watched_workers(&config, &stores.store),
        FIRST_LOOK_WITHIN,
    )
    .await;
    let api = Arc::new(api::PipelineApi {
        store: Arc::clone(&stores.store),
        orchestrator: Arc::clone(&control.orchestrator),
        graph: Arc::clone(&control.graph),
        config: Arc::clone(&config),
        estimator: Arc::clone(&control.estimator),
        dispatcher: Arc::clone(&control.dispatcher),
        checker: Arc::clone(&control.checker),
        drain: drain_rx.clone(),
        moved: stores.hub.clone(),
        limits: Arc::clone(&control.limits),
        audit,
        watch_reads: Arc::default(),
        kept_steps: Arc::default(),
        ended_runs: Arc::clone(&stores.ended_runs),
        tokens: Arc::new(tokens::TokenKeys::from_config(&config.server, &config.data_dir)?),
        documents: Arc::clone(&control.documents),
    });
    let routes = routes(&config, api, &authenticator, health_service)?;

    // The store answered (it was just migrated); Temporal and the graph are unknown until their
    // first check.
    health::report_store(&health_reporter, true).await;
    let redis = stores.redis.take();
    let with_redis = redis.is_some();
    health::report_dependencies_down(&health_reporter, with_redis).await;
    let background = control.spawn(&config, &stores.store, redis, authenticator, health_reporter.clone(), &drain_rx);
    let stop = async move {
        shutdown.await;
        health::report_draining(&health_reporter, with_redis).await;
        let _ = drain_tx.send(true);
        tracing::info!("draining");
    };
    let incoming = etter_tls::Incoming::new(listener, tls, "grpc")
        .map_err(|source| ServeError::Bind { addr: config.server.listen, source })?;
    let server = Server::builder()
        .accept_http1(true)
        .layer(trace::TraceLayer)
        .layer(malformed)
        .add_routes(tonic::service::Routes::from(routes))
        // Nagle is off on every connection (`etter_tls::Incoming`): a unary answer is one small
        // write, and waiting for the peer's delayed ACK before sending it costs ~40 ms a call.
        // Each connection's writes are batched per turn of the runtime (see `coalesce`).
        .serve_with_incoming_shutdown(incoming.map(|accepted| accepted.map(coalesce::Coalesced::accepted)), stop);
    tracing::info!(addr = %local_addr, "etter-server listening");
    let mut ready = vec![("grpc_addr", local_addr.to_string()), ("metrics_addr", metrics_addr.to_string())];
    ready.extend(health_addr.map(|addr| ("health_addr", addr.to_string())));
    process::print_ready_line("etter-server", &ready);

    let grace = config.server.shutdown_grace;
    tokio::select! {
        result = server => result?,
        () = grace_elapsed(drain_rx, grace) => {
            tracing::warn!(grace = ?grace, "shutdown grace elapsed with calls still open; closing them");
        }
    }
    for task in background {
        if tokio::time::timeout(grace, task).await.is_err() {
            tracing::warn!("a background task did not stop within the shutdown grace");
        }
    }
    // Every handle on the audit log went with the server: the writer writes what is queued, then
    // ends.
    if tokio::time::timeout(grace, audit_writer).await.is_err() {
        tracing::error!("the audit writer did not finish within the shutdown grace; queued entries are lost");
    }
    // Closing the pool waits for every connection to come back; one still checked out (seen once
    // in a chaos run, after a PostgreSQL crash, by a task the drain did not end) would hold the
    // stop for ever. The process is ending: a few seconds, then its connections go with it (the
    // database rolls back whatever they had open).
    if tokio::time::timeout(STORE_CLOSE_WITHIN, stores.store.close()).await.is_err() {
        tracing::warn!(within = ?STORE_CLOSE_WITHIN, "run store connections still in use at shutdown; stopping without them");
    }
    tracing::info!("etter-server stopped");
    Ok(())
}

/// Serves `grpc.health.v1` alone, in plaintext, on `addr` (`server.health_listen`) until the
/// process ends: through a drain it answers NOT_SERVING rather than refusing connections.
async fn serve_health(
    addr: std::net::SocketAddr,
    health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) -> Result<std::net::SocketAddr, ServeError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        if let Err(e) = Server::builder().add_service(health).serve_with_incoming(incoming).await {
            tracing::warn!(error = %e, "the health listener stopped");
        }
    });
    tracing::info!(addr = %local, "health listener (grpc.health.v1 only, plaintext)");
    Ok(local)
}

/// The run store and how this server learns that runs moved.
struct Stores {
    store: Arc<dyn etter_store::RunStore>,
    /// Wakes watch streams when runs move.
    hub: fanout::Hub,
    /// Ended runs GetStatus keeps; writes make it forget them.
    ended_runs: Arc<status::EndedRuns>,
    /// Redis's health check, when Redis carries the fan-out (taken by the health loop).
    redis: Option<fanout::Probe>,
}

impl Stores {
    /// Opens (and migrates) the run store. Watch streams wake when runs move: through Redis
    /// (every replica, the worker's steps too) when configured, else from this server's own
    /// writes and a frequent look at the store for others'; they poll the store either way.
    async fn open(config: &Config, drain: &tokio::sync::watch::Receiver<bool>) -> Result<Self, ServeError> {
        let location = config.store_location()?;
        let hub = fanout::Hub::new();
        let redis = config.redis.client()?;
        let announce: Arc<dyn etter_store::Announce> = match &redis {
            Some(client) => {
                hub.follow_redis(client.clone(), drain.clone());
                fanout::Publisher::start(client.clone())
            }
            None => Arc::new(hub.clone()),
        };
        // GetStatus keeps ended runs; this server's writes make it forget them before they are
        // acknowledged, others' writes as the hub learns of them.
        let ended_runs = Arc::new(status::EndedRuns::default());
        tokio::spawn(Arc::clone(&ended_runs).follow(hub.subscribe()));
        let announce: Arc<dyn etter_store::Announce> =
            Arc::new(status::Forget { ended: Arc::clone(&ended_runs), then: announce });
        let options = StoreOptions {
            max_connections: config.store.max_connections,
            announce: Some(announce),
            ..StoreOptions::default()
        };
        let redis = redis.map(fanout::Probe::new);
        let store = etter_store::connect_with(&location, &options).await?;
        if redis.is_none() {
            // Other processes' writes (the worker's steps) wake streams through the store instead.
            // Wanted by watch streams (the ended runs' follower is the hub's one other receiver),
            // and by the ended runs kept, which others' writes make stale.
            let (watched, ended) = (hub.clone(), Arc::clone(&ended_runs));
            let wanted = move || watched.receivers() > 1 || !ended.is_empty();
            hub.follow_store(Arc::clone(&store), config.server.change_poll_interval, drain.clone(), wanted);
        }
        tracing::info!(backend = store.backend(), "run store ready");
        Ok(Self { store, hub, ended_runs, redis })
    }
}

/// Who may call, and what is written down about it: the audit log (and its writer), the
/// authenticator, and the layer that audits requests too malformed to reach a handler.
struct Admission {
    audit: audit::AuditLog,
    audit_writer: tokio::task::JoinHandle<()>,
    authenticator: auth::Authenticator,
    malformed: malformed::MalformedLayer,
}

impl Admission {
    fn new(config: &Config, stores: &Stores) -> Result<Self, ServeError> {
        let refusals = Arc::new(refusals::Refusals::new(config.limits.refused_per_minute));
        let (audit, writer) = audit::AuditLog::new(Arc::clone(&stores.store), audit::chain_key(config)?);
        let audit = audit.with_refusals(Arc::clone(&refusals));
        let audit_writer = tokio::spawn(writer.run());
        let authenticator =
            auth::Authenticator::new(&config.auth, &config.data_dir)?.with_audit(audit.clone()).with_refusals(refusals);
        let malformed = malformed::MalformedLayer { audit: audit.clone(), authenticator: authenticator.clone() };
        Ok(Self { audit, audit_writer, authenticator, malformed })
    }
}

/// What moves runs along besides the calls: the dispatcher and reconciler over Temporal, webhook
/// deliveries, per-company settings and limits, the role graph and the estimates.
struct ControlPlane {
    orchestrator: Arc<dyn Orchestrator>,
    companies: Arc<companies::Companies>,
    limits: Arc<limits::Limits>,
    deliverer: webhook::Deliverer,
    dispatcher: Arc<dispatch::Dispatcher>,
    checker: Arc<document_checks::Checker>,
    documents: Arc<etter_documents::Documents>,
    reconciler: dispatch::Reconciler,
    graph: Arc<graph::GraphReader>,
    estimator: Arc<estimate::Estimator>,
    conditions: Arc<wait::Conditions>,
}

impl ControlPlane {
    async fn new(
        config: &Arc<Config>,
        stores: &Stores,
        drain: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<Self, ServeError> {
        let store = &stores.store;
        let instance = format!("etter-server-{}-{:08x}", std::process::id(), random_u128() & 0xffff_ffff);
        let orchestrator: Arc<dyn Orchestrator> = Arc::new(TemporalOrchestrator::new(TemporalSettings::from_config(
            config,
            config.dispatch.temporal_timeout,
            instance.clone(),
        )?));
        let companies = Arc::new(companies::Companies::load(
            &config.server.companies_file,
            companies::CompanyLimits::defaults(&config.limits),
        )?);
        let limits = Arc::new(limits::Limits::new(Arc::clone(&companies), &config.limits));
        let deliverer = webhook::Deliverer::new(
            Arc::clone(store),
            Arc::clone(&companies),
            config.server.clone(),
            instance.clone(),
        )?;
        // What holds runs back: published by the dispatcher and the health loop, read by every
        // status answer.
        let conditions = Arc::new(wait::Conditions::new(&config.dispatch));
        let wake_dispatcher = Arc::new(tokio::sync::Notify::new());
        let documents = Arc::new(etter_documents::Documents::new(config.documents.clone())?);
        let checker = Arc::new(document_checks::Checker::new(
            Arc::clone(store),
            Arc::clone(&documents),
            Arc::clone(&conditions),
            instance.clone(),
            Arc::clone(&wake_dispatcher),
            &config.dispatch,
        ));
        let dispatcher = Arc::new(
            dispatch::Dispatcher::new(
                Arc::clone(store),
                Arc::clone(&orchestrator),
                config.dispatch.clone(),
                instance,
                wake_dispatcher,
            )
            .reporting_to(Arc::clone(&conditions))
            .holding_budgets(Arc::clone(&limits)),
        );
        let reconciler = dispatch::Reconciler::new(Arc::clone(store), Arc::clone(&orchestrator), &config.dispatch);
        // The role graph opens on first use: a graph that is down never keeps the server from
        // starting.
        let graph = Arc::new(graph::GraphReader::new(config.graph.clone(), config.data_dir.clone()));
        // Estimates follow measured step costs, re-read in the background, and what holds runs back.
        let estimator = Arc::new(
            estimate::Estimator::new(config.dispatch.clone())
                .with_prices(&config.limits)
                .with_conditions(Arc::clone(&conditions)),
        );
        if let Err(e) = estimator.refresh(store.as_ref()).await {
            tracing::warn!(error = %chain(&e), "cannot read step measurements; estimates use the configured defaults");
        }
        tokio::spawn(estimate::refresh_periodically(
            Arc::clone(&estimator),
            Arc::clone(store),
            draining(drain.clone()),
        ));
        Ok(Self {
            orchestrator,
            companies,
            limits,
            deliverer,
            dispatcher,
            checker,
            documents,
            reconciler,
            graph,
            estimator,
            conditions,
        })
    }

    /// Starts the background loops; each ends when the server drains.
    fn spawn(
        self,
        config: &Config,
        store: &Arc<dyn etter_store::RunStore>,
        redis: Option<fanout::Probe>,
        authenticator: auth::Authenticator,
        health: tonic_health::server::HealthReporter,
        drain: &tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let every = config.server.health_check_interval;
        let checked = health::Checked {
            store: Arc::clone(store),
            orchestrator: self.orchestrator,
            graph: self.graph,
            redis,
            conditions: self.conditions,
            workers: watched_workers(config, store),
            identity: authenticator.remote_keys(),
        };
        let identity = authenticator.remote_keys().map(|keys| tokio::spawn(keys.run(drain.clone())));
        let mut tasks = vec![
            tokio::spawn(self.dispatcher.run(drain.clone())),
            tokio::spawn(self.checker.run(drain.clone())),
            tokio::spawn(self.reconciler.run(drain.clone())),
            tokio::spawn(self.deliverer.run(drain.clone())),
            tokio::spawn(Arc::clone(&self.companies).watch(drain.clone())),
            tokio::spawn(prune_periodically(authenticator, self.limits, drain.clone())),
            tokio::spawn(observe_queue(Arc::clone(store), every, drain.clone())),
            tokio::spawn(health::run(health, checked, every, drain.clone())),
        ];
        tasks.extend(identity);
        tasks
    }
}

/// Every route of the port: health and reflection (open), the pipeline service and its watch
/// route (authenticated), grpc-web and CORS for them, and the console's page when it is on.
fn routes(
    config: &Arc<Config>,
    api: Arc<api::PipelineApi>,
    authenticator: &auth::Authenticator,
    health_service: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) -> Result<axum::Router, ServeError> {
    // Older grpcurl speaks only v1alpha; both dialects serve the contract and health.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(etter_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let max_request = usize::try_from(config.server.max_request_bytes).unwrap_or(usize::MAX);
    // Health and reflection stay open; every PipelineService call is authenticated.
    let pipeline = tonic::service::interceptor::InterceptedService::new(
        PipelineServiceServer::from_arc(Arc::clone(&api)).max_decoding_message_size(max_request),
        authenticator.clone(),
    );
    // WatchStatus sends events encoded once for all its streams (watch::wire); the static path
    // takes precedence over the service's wildcard route.
    let watch_route = tonic::service::interceptor::InterceptedService::new(
        api::WatchRoute::new(api, max_request),
        authenticator.clone(),
    );
    // grpc-web is translated for the gRPC services only: tonic-web answers any other HTTP/1
    // request 400, and the console's page is plain HTTP/1 on the same port.
    let grpc = tonic::service::Routes::new(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(pipeline)
        .into_axum_router()
        .route_service(api::WATCH_PATH, watch_route)
        .layer(tonic_web::GrpcWebLayer::new())
        // CORS for the API only: the console's routes, merged below, answer no other origin.
        .layer(cors_layer(&config.server.cors_allowed_origins));
    Ok(match console::router(Arc::clone(config))? {
        Some(page) => grpc.merge(page),
        None => grpc,
    })
}

/// How long a starting server waits to learn whether Temporal answers and workers poll.
const FIRST_LOOK_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// How the health loop tells whether workers take the task queue's work.
fn watched_workers(config: &Config, store: &Arc<dyn etter_store::RunStore>) -> health::Workers {
    health::Workers {
        store: Arc::clone(store),
        task_queue: config.temporal.task_queue.clone(),
        seen_within: config.dispatch.worker_seen_within,
        presence_within: config.dispatch.worker_presence_within,
    }
}

/// 128 random bits (batch ids, trace ids, instance names). Without the OS's randomness they still
/// differ by time and process; batch ids are checked for uniqueness on insert.
pub(crate) fn random_u128() -> u128 {
    let mut bytes = [0_u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = etter_store::now().timestamp_nanos_opt().unwrap_or_default();
        bytes = (u128::from(nanos.unsigned_abs()) ^ u128::from(std::process::id()) << 64).to_le_bytes();
    }
    u128::from_le_bytes(bytes)
}

/// Forgets the unauthenticated peers and the companies that stopped calling, once a minute.
async fn prune_periodically(
    authenticator: auth::Authenticator,
    limits: Arc<limits::Limits>,
    mut drain: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {
                authenticator.prune();
                limits.prune();
            }
            _ = drain.changed() => return,
        }
    }
}

/// How long a stopping server waits for the run store's pool to close.
const STORE_CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Resolves when draining starts.
async fn draining(mut drain: tokio::sync::watch::Receiver<bool>) {
    if drain.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves `grace` after draining started; never resolves before.
async fn grace_elapsed(drain: tokio::sync::watch::Receiver<bool>, grace: Duration) {
    draining(drain).await;
    tokio::time::sleep(grace).await;
}

/// CORS for grpc-web callers. `authorization` is never covered by a wildcard, so every header a
/// browser client sends is listed, and the gRPC trailers it must read are exposed.
/// Keeps the queue gauges (`etter_queue_depth`, `etter_runs_processing`) current from the store,
/// every `every`, until the server drains. Every replica reports the same numbers.
async fn observe_queue(
    store: Arc<dyn etter_store::RunStore>,
    every: Duration,
    mut drain: tokio::sync::watch::Receiver<bool>,
) {
    use etter_core::lifecycle::RunState;
    use etter_telemetry::metrics as observe;
    loop {
        let queued = store.count_runs(None, &[RunState::Queued]).await;
        let processing = store.count_runs(None, &[RunState::Processing]).await;
        match (queued, processing) {
            (Ok(queued), Ok(processing)) => observe::queue(queued, processing),
            (Err(e), _) | (_, Err(e)) => tracing::debug!(error = %chain(&e), "cannot count queued runs for /metrics"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = drain.changed() => return,
        }
    }
}

fn cors_layer(allowed_origins: &[String]) -> CorsLayer {
    let origin = if allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(allowed_origins.iter().filter_map(|o| o.parse().ok()))
    };
    let header = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header("content-type"),
            header("authorization"),
            header("x-grpc-web"),
            header("x-user-agent"),
            header("grpc-timeout"),
            header("x-request-id"),
            header("traceparent"),
        ])
        .expose_headers([
            header("grpc-status"),
            header("grpc-message"),
            header("grpc-status-details-bin"),
            trace::TRACE_ID_HEADER,
        ])
        .max_age(Duration::from_secs(24 * 60 * 60))
}
