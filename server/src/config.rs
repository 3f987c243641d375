//! The server's configuration: the sections it reads of the file both binaries share, and its own
//! sections (`[server]`, `[dispatch]`, `[limits]`, `[auth]`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use etter_config::{ConfigError, Profile, Secret, invalid, require_positive, tls::ServerTls};
use etter_core::ids::{CompanyId, RoleId};
use etter_documents::DocumentsConfig;
use etter_graph::GraphConfig;
use etter_store::{RedisConfig, StoreConfig, StoreLocation};
use etter_telemetry::{LogConfig, TracingConfig};
use etter_temporal::TemporalConfig;

/// What `etter-server` reads.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Config {
    /// `embedded` (the default: anything unset falls back to an embedded part) or `production`
    /// (every part must be a real one, with its secrets).
    pub profile: Profile,
    /// Where the embedded default keeps its files (SQLite databases, generated dev secrets).
    pub data_dir: PathBuf,
    /// The gRPC control plane.
    pub server: ServerConfig,
    /// The server's dispatcher: how queued runs are started in Temporal.
    pub dispatch: DispatchConfig,
    /// What one company may use unless the companies file says otherwise.
    pub limits: LimitsConfig,
    /// The models a Retry may choose for the steps it re-runs.
    pub models: ModelsConfig,
    /// Who may call the control plane.
    pub auth: AuthConfig,
    /// The run store.
    pub store: StoreConfig,
    /// Live-progress fan-out.
    pub redis: RedisConfig,
    /// The role graph (outputs summaries, its health entry).
    pub graph: GraphConfig,
    /// Where documents may be fetched from (pushed URIs are checked against it).
    pub documents: DocumentsConfig,
    /// The Temporal cluster.
    pub temporal: TemporalConfig,
    /// Logging.
    pub log: LogConfig,
    /// Spans exported over OTLP.
    pub tracing: TracingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            profile: Profile::Embedded,
            data_dir: PathBuf::from(".etter/data"),
            server: ServerConfig::default(),
            dispatch: DispatchConfig::default(),
            limits: LimitsConfig::default(),
            models: ModelsConfig::default(),
            auth: AuthConfig::default(),
            store: StoreConfig::default(),
            redis: RedisConfig::default(),
            graph: GraphConfig::default(),
            documents: DocumentsConfig::default(),
            temporal: TemporalConfig::default(),
            log: LogConfig::default(),
            tracing: TracingConfig::default(),
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (when given), then the `ETTER_*` variables of the process
    /// environment, then `overrides` (command-line flags as dotted keys), and validates the result.
    pub fn load(file: Option<&Path>, overrides: &[(&str, String)]) -> Result<Self, ConfigError> {
        let config: Self = etter_config::load(file, overrides)?;
        config.validate()?;
        Ok(config)
    }

    /// Where the run store lives.
    pub fn store_location(&self) -> Result<StoreLocation, ConfigError> {
        self.store.location(&self.data_dir)
    }

    /// The documentation of every key the server reads, section by section.
    pub fn documented_keys() -> Vec<etter_config::KeyDoc> {
        etter_config::documented_keys::<Self>()
    }

    /// The effective configuration as TOML with secrets masked (`--dump-config`).
    pub fn to_masked_toml(&self) -> String {
        etter_config::to_masked_toml(self)
    }

    /// The production profile's requirements. Secrets are expected from the environment
    /// (`ETTER_STORE__URL`, …), so each message says which variable to set.
    fn validate_production(&self) -> Result<(), ConfigError> {
        self.store.validate_production()?;
        self.server.tls.validate_production("server.tls", "server.listen", self.server.listen)?;
        self.server.tls.validate_production("server.tls", "server.metrics_listen", self.server.metrics_listen)?;
        if self.auth.hs256_secret.expose().is_none()
            && self.auth.public_key_files.is_empty()
            && self.auth.jwks_file.as_os_str().is_empty()
            && self.auth.jwks_url.is_empty()
            && !self.auth.oidc_discovery
        {
            return invalid(
                "auth.jwks_url",
                "or auth.oidc_discovery, auth.jwks_file or auth.public_key_files (the identity provider's keys), or \
                 ETTER_AUTH__HS256_SECRET, is required by the production profile, which refuses the generated \
                 development key",
            );
        }
        self.graph.validate_production()?;
        if self.server.console_dev_login {
            return invalid(
                "server.console_dev_login",
                "signs anyone in without a password, so the production profile refuses it; set it to false",
            );
        }
        if !self.server.audit_key.is_set() {
            return invalid(
                "server.audit_key",
                "is required by the production profile (the audit chain's key, held outside the database); \
                 set ETTER_SERVER__AUDIT_KEY to at least 32 random bytes, e.g. `openssl rand -hex 32`",
            );
        }
        if !self.server.token_secret.is_set() {
            return invalid(
                "server.token_secret",
                "is required by the production profile (replicas must share the key that seals client-held tokens); \
                 set ETTER_SERVER__TOKEN_SECRET to at least 32 random bytes, e.g. `openssl rand -hex 32`",
            );
        }
        Ok(())
    }

    /// Checks every section the server reads.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.profile == Profile::Production {
            self.validate_production()?;
        }
        self.store.validate(&self.data_dir)?;
        self.redis.validate()?;
        self.graph.validate()?;
        self.documents.validate()?;
        self.temporal.validate()?;
        self.tracing.validate()?;
        self.server.validate()?;
        self.auth.validate()?;
        self.limits.validate()?;
        self.models.validate()?;
        self.dispatch.validate()
    }
}

/// `[server]`: the gRPC control plane.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the gRPC (and grpc-web) listener; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Address of the Prometheus `/metrics` listener of `etter-server`; port 0 picks a free port.
    pub metrics_listen: SocketAddr,
    /// Address of a plaintext listener that serves `grpc.health.v1` and nothing else (no data, no
    /// authentication), for probes that cannot speak TLS: Kubernetes' gRPC probe. Unset = none.
    /// Allowed off loopback by the production profile: it tells only whether the server serves.
    pub health_listen: Option<SocketAddr>,
    /// TLS of both listeners (gRPC, grpc-web and the console on `listen`; `/metrics` on
    /// `metrics_listen`). Off by default: plaintext, which the production profile accepts only on
    /// loopback addresses or with `terminated_in_front`.
    pub tls: ServerTls,
    /// Origins allowed to call over grpc-web (`*` = any).
    pub cors_allowed_origins: Vec<String>,
    /// How long a graceful shutdown waits for in-flight calls and streams.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub shutdown_grace: Duration,
    /// How often health checks ask the store, Temporal, the role graph and Redis whether they answer.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub health_check_interval: Duration,
    /// How often a `WatchStatus` stream polls the store for new events.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub watch_poll_interval: Duration,
    /// Without Redis: how often the server looks for runs other processes changed, to wake the
    /// watch streams they concern at once.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub change_poll_interval: Duration,
    /// A `WatchStatus` stream that sent nothing for this long sends a heartbeat.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub watch_heartbeat_interval: Duration,
    /// A `WatchStatus` stream ends cleanly after this long; clients resume with `after_sequence`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub watch_max_lifetime: Duration,
    /// Dashboard URL template of a finished role (`RunStatus.dashboard_url` when READY, DEGRADED or
    /// STALE), with `{role_id}` and `{company_id}` placeholders, e.g.
    /// `https://app.example.com/{company_id}/roles/{role_id}`; it must be an http(s) URL after
    /// substitution. Empty = no URL.
    pub dashboard_url: String,
    /// Most items one `PushBatch` may carry; a larger batch is refused whole with
    /// `INVALID_ARGUMENT`. 2,500 by default: a large client's whole role catalogue in one call.
    pub max_batch_size: u32,
    /// TOML file of per-company settings: `[companies.<id>]` with `webhook_url` and
    /// `webhook_secret` (the HMAC key of `notify_on_complete` events), a `tier` and limits;
    /// `[tiers.<name>]` with limits. Re-read when it changes; an invalid file keeps the previous
    /// settings. Empty = none.
    pub companies_file: std::path::PathBuf,
    /// How long one webhook delivery may take.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub webhook_timeout: Duration,
    /// PEM CA certificates a webhook receiver's `https://` certificate may chain to, besides the
    /// system's roots (receivers behind a private CA). Empty = the system's roots only.
    pub webhook_ca_file: PathBuf,
    /// Delivery attempts of one webhook event before it is given up.
    pub webhook_max_attempts: u32,
    /// Wait after the first failed delivery; it doubles per attempt up to `webhook_retry_max`, each
    /// wait drawn between half and all of it.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub webhook_retry_initial: Duration,
    /// Longest wait between two delivery attempts.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub webhook_retry_max: Duration,
    /// Serve the operator console (a web page over grpc-web) at `/console/` on the gRPC port.
    pub console: bool,
    /// Let the console sign in anyone as an operator of any company they type, with no password:
    /// for a developer's own machine only, so the server refuses it unless `listen` is a loopback
    /// address, and it needs the HS256 key that signs dev tokens.
    pub console_dev_login: bool,
    /// The key (at least 32 bytes) that seals the tokens clients hold and send back (watch resume
    /// tokens, page tokens), so a token is accepted only as it was issued, for the company and
    /// scope it was issued for. Replicas must share it; the production profile requires it. Empty =
    /// the embedded default: a random secret generated once and kept in
    /// `{data_dir}/auth/token.secret`.
    pub token_secret: Secret,
    /// Keys used before `token_secret`, still accepted when opening tokens (not for sealing):
    /// rotate by moving the old secret here, and drop it once its tokens have expired (a watch's
    /// lifetime, or however long clients keep a page token).
    pub previous_token_secrets: Vec<Secret>,
    /// The key (at least 32 bytes) of the audit log's hash chain (HMAC-SHA256), kept out of the
    /// database so that whoever can write the database alone cannot rewrite the log unnoticed.
    /// Every replica and `etter-server audit verify` need it; the production profile requires it.
    /// Empty = the embedded default: generated once and kept in `{data_dir}/auth/audit.key`.
    pub audit_key: Secret,
    /// Largest request message the server decodes, in bytes (at least 65536). A `PushBatch` of
    /// 2,500 items with typical fields is under 1 MB; a larger request is refused (`OUT_OF_RANGE`)
    /// before it is decoded.
    pub max_request_bytes: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            health_listen: None,
            tls: ServerTls::default(),
            cors_allowed_origins: vec!["*".to_owned()],
            shutdown_grace: Duration::from_secs(10),
            health_check_interval: Duration::from_secs(5),
            watch_poll_interval: Duration::from_millis(250),
            change_poll_interval: Duration::from_millis(20),
            watch_heartbeat_interval: Duration::from_secs(15),
            watch_max_lifetime: Duration::from_secs(30 * 60),
            dashboard_url: String::new(),
            max_batch_size: 2_500,
            companies_file: std::path::PathBuf::new(),
            webhook_timeout: Duration::from_secs(10),
            webhook_ca_file: PathBuf::new(),
            webhook_max_attempts: 15,
            webhook_retry_initial: Duration::from_secs(5),
            webhook_retry_max: Duration::from_secs(3600),
            console: true,
            console_dev_login: false,
            token_secret: Secret::default(),
            previous_token_secrets: Vec::new(),
            max_request_bytes: 4 * 1024 * 1024,
            audit_key: Secret::default(),
        }
    }
}

/// The placeholders of `server.dashboard_url`.
const DASHBOARD_PLACEHOLDERS: [&str; 2] = ["{role_id}", "{company_id}"];

impl ServerConfig {
    /// The dashboard URL of a role: `server.dashboard_url` with its placeholders substituted, or
    /// `None` when no template is configured. Ids are URL-safe (lowercase ASCII, digits, hyphens),
    /// so they are inserted as they are.
    pub fn dashboard_url_for(&self, role_id: &RoleId, company_id: &CompanyId) -> Option<String> {
        (!self.dashboard_url.is_empty()).then(|| substitute_dashboard_url(&self.dashboard_url, role_id, company_id))
    }
}

fn substitute_dashboard_url(template: &str, role_id: &RoleId, company_id: &CompanyId) -> String {
    template
        .replace(DASHBOARD_PLACEHOLDERS[0], role_id.as_str())
        .replace(DASHBOARD_PLACEHOLDERS[1], company_id.as_str())
}

/// Checks a non-empty `server.dashboard_url`: substituted with sample ids it must be an http(s) URL
/// with a host, and no other `{…}` placeholder may remain.
fn validate_dashboard_url(template: &str) -> Result<(), String> {
    let sample = || -> Result<(RoleId, CompanyId), etter_core::ids::InvalidId> {
        let company = CompanyId::parse("acme")?;
        Ok((RoleId::new(&company, &etter_core::ids::RoleName::parse("Claims Adjuster")?), company))
    };
    let (role, company) = sample().map_err(|e| format!("cannot be checked: {e}"))?;
    let url = substitute_dashboard_url(template, &role, &company);
    if let Some(start) = url.find('{') {
        let rest = &url[start..];
        let placeholder = rest.find('}').map_or(rest, |end| &rest[..=end]);
        return Err(format!("has an unknown placeholder {placeholder}; use {{role_id}} and {{company_id}}"));
    }
    match url::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(format!("must be an http:// or https:// URL with a host, got {url}")),
        Err(e) => Err(format!("is not a URL after substitution ({url}): {e}")),
    }
}

impl ServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.audit_key.expose().is_some_and(|key| key.len() < 32) {
            return invalid("server.audit_key", "must be at least 32 bytes (e.g. `openssl rand -hex 32`)");
        }
        if self.max_request_bytes < 65_536 {
            return invalid("server.max_request_bytes", "must be at least 65536");
        }
        for secret in std::iter::once(&self.token_secret).chain(&self.previous_token_secrets) {
            if secret.expose().is_some_and(|secret| secret.len() < 32) {
                return invalid(
                    "server.token_secret",
                    "and each of server.previous_token_secrets must be at least 32 bytes (e.g. `openssl rand -hex 32`)",
                );
            }
        }
        if !self.dashboard_url.is_empty()
            && let Err(problem) = validate_dashboard_url(&self.dashboard_url)
        {
            return Err(ConfigError::Invalid { key: "server.dashboard_url".into(), problem });
        }
        if self.max_batch_size == 0 {
            return invalid("server.max_batch_size", "must be at least 1");
        }
        if self.webhook_max_attempts == 0 {
            return invalid("server.webhook_max_attempts", "must be at least 1");
        }
        if self.console_dev_login && !self.listen.ip().is_loopback() {
            return invalid(
                "server.console_dev_login",
                "signs in anyone without a password, so it is refused unless server.listen is a loopback address",
            );
        }
        if self.webhook_retry_max < self.webhook_retry_initial {
            return invalid("server.webhook_retry_max", "must be at least server.webhook_retry_initial");
        }
        if !self.webhook_ca_file.as_os_str().is_empty() {
            etter_config::tls::certificates_pem("server", "webhook_ca_file", &self.webhook_ca_file)?;
        }
        require_positive(&[
            ("server.health_check_interval", self.health_check_interval),
            ("server.watch_poll_interval", self.watch_poll_interval),
            ("server.change_poll_interval", self.change_poll_interval),
            ("server.watch_heartbeat_interval", self.watch_heartbeat_interval),
            ("server.watch_max_lifetime", self.watch_max_lifetime),
            ("server.webhook_timeout", self.webhook_timeout),
            ("server.webhook_retry_initial", self.webhook_retry_initial),
        ])?;
        self.tls.validate("server.tls")
    }
}

/// `[limits]`: admission limits (docs/admission.md). The per-company ones are the default tier: the
/// companies file (`server.companies_file`) may give a company, or a tier of companies, others.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Calls one company's callers may make per minute, on average (the default tier; the companies
    /// file may set others); past it, `RESOURCE_EXHAUSTED` with `RetryInfo`.
    pub calls_per_minute: u32,
    /// Calls one company's callers may make at once above the average.
    pub burst: u32,
    /// Runs one company may have QUEUED (the default tier); a push or batch past it is refused
    /// whole, with the numbers.
    pub max_queued_per_company: u64,
    /// Runs all companies together may have QUEUED.
    pub max_queued: u64,
    /// LLM tokens one company may use per calendar month (UTC), counting what its queued and
    /// running runs are estimated to still use (the default tier); 0 = no budget. Past it, pushes
    /// are refused with `QuotaFailure`.
    pub token_budget_per_month: u64,
    /// The currency of `price_per_million_tokens` (ISO 4217, e.g. `USD`); empty = no prices.
    pub currency: String,
    /// What a million LLM tokens cost, in `currency` units, for the cost of estimates.
    pub price_per_million_tokens: f64,
    /// Refused calls (invalid, not permitted, not found, malformed) one caller, and one peer
    /// address, may make per minute; past it their calls are answered `RESOURCE_EXHAUSTED` (with
    /// `RetryInfo`) before anything about them is read or recorded. At least 1.
    pub refused_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            calls_per_minute: 1200,
            burst: 120,
            max_queued_per_company: 5000,
            max_queued: 50_000,
            token_budget_per_month: 0,
            currency: String::new(),
            price_per_million_tokens: 0.0,
            refused_per_minute: 120,
        }
    }
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.refused_per_minute == 0 {
            return invalid("limits.refused_per_minute", "must be at least 1");
        }
        if self.calls_per_minute == 0 || self.burst == 0 {
            return invalid("limits.calls_per_minute", "and limits.burst must be at least 1");
        }
        if self.max_queued_per_company == 0 || self.max_queued < self.max_queued_per_company {
            return invalid(
                "limits.max_queued",
                "must be at least limits.max_queued_per_company, which must be at least 1",
            );
        }
        if !self.price_per_million_tokens.is_finite() || self.price_per_million_tokens < 0.0 {
            return invalid("limits.price_per_million_tokens", "must be a price of zero or more");
        }
        if !self.currency.is_empty()
            && (self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return invalid("limits.currency", "must be an ISO 4217 code such as USD, or empty");
        }
        Ok(())
    }
}

/// `[models]`: the models a Retry may ask the steps it re-runs to use (`RetryRequest.model`)
/// instead of the worker's own (`llm.model`).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Model names a Retry may choose, as the workers' LLM provider knows them: `offline` and
    /// `offline-cautious` for the offline provider (the default), the endpoint's model names for
    /// `openai` (set this with the production profile). Empty = a Retry may not choose a model.
    pub allowed: Vec<String>,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self { allowed: vec!["offline".to_owned(), "offline-cautious".to_owned()] }
    }
}

impl ModelsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for model in &self.allowed {
            if model.is_empty() || model.len() > 200 || model.chars().any(char::is_whitespace) {
                return invalid("models.allowed", "holds model names: non-empty, at most 200 bytes, without spaces");
            }
            if !seen.insert(model) {
                return invalid("models.allowed", format!("names `{model}` twice"));
            }
        }
        Ok(())
    }

    /// Whether a Retry may choose `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.allowed.iter().any(|m| m == model)
    }
}

/// `[dispatch]`: the server's dispatcher, which starts queued runs' workflows in Temporal, and
/// its reconciler, which closes runs whose workflow ended without recording an outcome.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// How often the dispatcher looks for queued runs when no push woke it.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub poll_interval: Duration,
    /// How long a claim on a queued run holds; a run not started by then can be claimed again.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub lease: Duration,
    /// Queued runs claimed per company per round.
    pub claim_batch: u32,
    /// Workflow starts in flight at once.
    pub max_concurrent_starts: usize,
    /// PROCESSING runs of one company at most.
    pub max_processing_per_company: u64,
    /// PROCESSING runs of all companies at most.
    pub max_processing: u64,
    /// Longest one Temporal call (connecting included) may take before it counts as unavailable.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub temporal_timeout: Duration,
    /// First back-off after Temporal was unavailable; it doubles up to
    /// `dispatch.retry_max_backoff`, each wait drawn between half and all of it.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub retry_initial_backoff: Duration,
    /// Longest back-off after Temporal was unavailable.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub retry_max_backoff: Duration,
    /// How often the reconciler checks PROCESSING runs against their workflows (a workflow that
    /// ended without an outcome makes its run FAILED).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub reconcile_interval: Duration,
    /// A workflow task of a run's workflow (or of one of its child workflows) that Temporal has
    /// held SCHEDULED or STARTED for longer than this, while workers poll, is taken as lost by the
    /// cluster and handed out again by the reconciler (Temporal's admin call RefreshWorkflowTasks,
    /// which needs the API key or certificate to carry the cluster's admin role; where it is
    /// refused the stuck task is logged). A workflow task normally lives seconds (its timeout is
    /// 10 s). Checked for runs without an event for this long.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub stuck_workflow_task_after: Duration,
    /// Estimated wall time of one step, while there are no measurements.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub estimate_step_duration: Duration,
    /// Estimated LLM tokens of one LLM-using step, while there are no measurements.
    pub estimate_llm_step_tokens: i64,
    /// How often estimates re-read what recent steps and runs took.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub estimate_refresh_interval: Duration,
    /// A worker counts as polling the task queue when Temporal saw one of its polls start within
    /// this long. An idle worker's poll is held by Temporal up to its long-poll expiry (a minute by
    /// default) before it polls again, so keep this above that expiry; lower both to learn sooner
    /// of a worker that stopped.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub worker_seen_within: Duration,
    /// A worker counts while its presence record in the run store (renewed every
    /// `worker.presence_interval`, 10 s) is more recent than this, so a worker that stopped is
    /// noticed within it; keep it above twice the presence interval.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub worker_presence_within: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(60),
            claim_batch: 50,
            max_concurrent_starts: 16,
            max_processing_per_company: 200,
            max_processing: 1000,
            temporal_timeout: Duration::from_secs(10),
            retry_initial_backoff: Duration::from_millis(500),
            retry_max_backoff: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(30),
            stuck_workflow_task_after: Duration::from_secs(120),
            estimate_step_duration: Duration::from_secs(30),
            estimate_llm_step_tokens: 4000,
            estimate_refresh_interval: Duration::from_secs(60),
            worker_seen_within: Duration::from_secs(75),
            worker_presence_within: Duration::from_secs(25),
        }
    }
}

impl DispatchConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        require_positive(&[
            ("dispatch.poll_interval", self.poll_interval),
            ("dispatch.lease", self.lease),
            ("dispatch.temporal_timeout", self.temporal_timeout),
            ("dispatch.retry_initial_backoff", self.retry_initial_backoff),
            ("dispatch.reconcile_interval", self.reconcile_interval),
            ("dispatch.stuck_workflow_task_after", self.stuck_workflow_task_after),
            ("dispatch.estimate_refresh_interval", self.estimate_refresh_interval),
            ("dispatch.worker_seen_within", self.worker_seen_within),
            ("dispatch.worker_presence_within", self.worker_presence_within),
        ])?;
        if self.retry_max_backoff < self.retry_initial_backoff {
            return invalid("dispatch.retry_max_backoff", "must be at least dispatch.retry_initial_backoff");
        }
        if self.lease <= self.temporal_timeout {
            return invalid("dispatch.lease", "must be longer than dispatch.temporal_timeout");
        }
        if self.claim_batch == 0
            || self.max_concurrent_starts == 0
            || self.max_processing_per_company == 0
            || self.max_processing == 0
        {
            return invalid(
                "dispatch.max_processing",
                "as well as dispatch.max_processing_per_company, dispatch.claim_batch and dispatch.max_concurrent_starts must be at least 1",
            );
        }
        if self.estimate_llm_step_tokens < 0 {
            return invalid("dispatch.estimate_llm_step_tokens", "must not be negative");
        }
        Ok(())
    }
}

/// `[auth]`: bearer-token (JWT) authentication of every `PipelineService` call. There is no
/// switch that turns it off.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 signing secret (at least 32 bytes). Empty = the embedded default: a random secret
    /// generated once and kept in `{data_dir}/auth/hs256.secret`.
    pub hs256_secret: Secret,
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub leeway: Duration,
    /// PEM files of the identity provider's public keys: an RSA key verifies RS256 tokens, an EC
    /// P-256 key ES256 tokens. With keys (here or in `auth.jwks_file`) and no `auth.hs256_secret`,
    /// HS256 tokens are refused.
    pub public_key_files: Vec<PathBuf>,
    /// A JWKS file (JSON Web Key Set) of the identity provider's RSA and EC P-256 keys, chosen by
    /// the token's `kid`. Empty = none.
    pub jwks_file: PathBuf,
    /// The identity provider's JWKS URL (`https://…`): fetched at start, again when its
    /// `Cache-Control: max-age` runs out (or every `jwks_refresh_interval`), and when a token names
    /// a key id it lacks (at most every `jwks_min_refetch_interval`). A failed fetch keeps the
    /// last good keys (health entry `etter.identity_provider`). Empty = none.
    pub jwks_url: String,
    /// Find the JWKS URL by OpenID Connect discovery: the `jwks_uri` of
    /// `{auth.issuer}/.well-known/openid-configuration` (whose `issuer` must be `auth.issuer`).
    /// Ignored when `jwks_url` is set.
    pub oidc_discovery: bool,
    /// PEM CA certificates the identity provider's HTTPS certificate may chain to, besides the
    /// system's roots. Empty = the system's roots only.
    pub jwks_ca_file: PathBuf,
    /// How often the key set is fetched when its answer carries no `Cache-Control: max-age`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub jwks_refresh_interval: Duration,
    /// Fetches of the key set asked for by tokens with an unknown key id are at most this frequent
    /// (and a `max-age` shorter than this is not followed).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub jwks_min_refetch_interval: Duration,
    /// The claim naming the caller (dotted for a nested claim, e.g. `ext.user`).
    pub user_claim: String,
    /// The claim giving the caller's role: a string or a list of strings; the highest of
    /// `viewer`, `operator`, `admin` (after `role_prefix`) found counts.
    pub role_claim: String,
    /// A prefix the identity provider puts before role names (`etter-` for `etter-operator`).
    pub role_prefix: String,
    /// The claim listing the caller's companies: a list of ids, or one string of ids separated
    /// by spaces or commas.
    pub companies_claim: String,
    /// Calls refused as unauthenticated a peer address may make per minute; past it the address
    /// is answered `RESOURCE_EXHAUSTED` until it slows down.
    pub unauthenticated_per_minute: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            hs256_secret: Secret::default(),
            issuer: "etter".to_owned(),
            audience: "etter-pipeline".to_owned(),
            leeway: Duration::from_secs(30),
            public_key_files: Vec::new(),
            jwks_file: PathBuf::new(),
            jwks_url: String::new(),
            oidc_discovery: false,
            jwks_ca_file: PathBuf::new(),
            jwks_refresh_interval: Duration::from_secs(10 * 60),
            jwks_min_refetch_interval: Duration::from_secs(30),
            user_claim: "sub".to_owned(),
            role_claim: "role".to_owned(),
            role_prefix: String::new(),
            companies_claim: "companies".to_owned(),
            unauthenticated_per_minute: 60,
        }
    }
}

impl AuthConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(secret) = self.hs256_secret.expose()
            && secret.len() < 32
        {
            return invalid("auth.hs256_secret", "must be at least 32 bytes");
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            return invalid("auth.issuer", "and auth.audience must not be empty");
        }
        for (key, claim) in [
            ("auth.user_claim", &self.user_claim),
            ("auth.role_claim", &self.role_claim),
            ("auth.companies_claim", &self.companies_claim),
        ] {
            if claim.is_empty() || claim.split('.').any(str::is_empty) {
                return invalid(key, "must name a claim (dotted for a nested one)");
            }
        }
        if self.unauthenticated_per_minute == 0 {
            return invalid("auth.unauthenticated_per_minute", "must be at least 1");
        }
        if !self.jwks_url.is_empty() && !self.jwks_url.starts_with("https://") {
            return invalid("auth.jwks_url", "must be an https:// URL: keys fetched in plaintext could be anyone's");
        }
        if self.oidc_discovery && self.jwks_url.is_empty() && !self.issuer.starts_with("https://") {
            return invalid(
                "auth.issuer",
                "must be an https:// URL for auth.oidc_discovery (its /.well-known/openid-configuration is fetched)",
            );
        }
        if !self.jwks_ca_file.as_os_str().is_empty() {
            etter_config::tls::certificates_pem("auth", "jwks_ca_file", &self.jwks_ca_file)?;
        }
        require_positive(&[
            ("auth.jwks_refresh_interval", self.jwks_refresh_interval),
            ("auth.jwks_min_refetch_interval", self.jwks_min_refetch_interval),
        ])
    }
}

#[cfg(test)]
// `figment::Jail` closures must return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use etter_core::error::chain;

    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "etter.toml",
                "[server]\nlisten = \"127.0.0.1:1000\"\n[temporal]\nnamespace = \"from-file\"\n[llm]\nmodel = \"the worker's\"\n",
            )?;
            jail.set_env("ETTER_TEMPORAL__NAMESPACE", "from-env");
            let config = Config::load(Some(Path::new("etter.toml")), &[("server.listen", "127.0.0.1:2000".to_owned())])
                .map_err(|e| chain(&e).to_string())?;
            assert_eq!(config.server.listen, SocketAddr::from(([127, 0, 0, 1], 2000)));
            assert_eq!(config.temporal.namespace, "from-env");
            assert_eq!(config.temporal.task_queue, "etter-workflows");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_key_named() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ETTER_SERVER__LISTNE", "127.0.0.1:1");
            let err = Config::load(None, &[]).err().map(|e| chain(&e).to_string()).unwrap_or_default();
            assert!(err.contains("listne"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("ETTER_STORE__URL", "mysql://x");
            let err = Config::load(None, &[]).err().map(|e| chain(&e).to_string()).unwrap_or_default();
            assert!(err.contains("store.url"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("ETTER_DISPATCH__LEASE", "1s");
            let err = Config::load(None, &[]).err().map(|e| chain(&e).to_string()).unwrap_or_default();
            assert!(err.contains("dispatch.lease"), "{err}");
            Ok(())
        });
    }

    /// `examples/etter.production.toml`, the file the README points at for production.
    const PRODUCTION_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/etter.production.toml");

    #[test]
    fn the_production_example_loads_with_its_secrets_and_names_each_missing_one() {
        figment::Jail::expect_with(|jail| {
            let example = Path::new(PRODUCTION_EXAMPLE);
            // A sourced .etter/services.env must not fill in what this test leaves out.
            jail.clear_env();
            for key in [
                "ETTER_STORE__URL",
                "ETTER_GRAPH__PASSWORD",
                "ETTER_AUTH__HS256_SECRET",
                "ETTER_SERVER__TOKEN_SECRET",
                "ETTER_SERVER__AUDIT_KEY",
            ] {
                jail.set_env(key, "");
            }
            let refused = |missing_key: &str| -> Result<(), figment::Error> {
                let err = Config::load(Some(example), &[]).err().map(|e| chain(&e).to_string()).unwrap_or_default();
                assert!(err.contains(missing_key), "want {missing_key} named: {err}");
                Ok(())
            };
            refused("store.url")?;
            refused("ETTER_STORE__URL")?;
            let dir = jail.directory().to_path_buf();
            let ca = etter_test_certs::Ca::new("example CA").map_err(|e| e.to_string())?;
            let ca_file = ca.write(&dir, "ca.pem").map_err(|e| e.to_string())?;
            let client = ca
                .client(&dir, "temporal-client", "etter-server", etter_test_certs::Validity::Current)
                .map_err(|e| e.to_string())?;
            jail.set_env("ETTER_TEMPORAL__TLS__CA_FILE", ca_file.display());
            jail.set_env("ETTER_TEMPORAL__TLS__CERT_FILE", client.cert_file.display());
            jail.set_env("ETTER_TEMPORAL__TLS__KEY_FILE", client.key_file.display());
            jail.set_env("ETTER_STORE__URL", "postgres://etter:pw@db.internal:5432/etter");
            refused("graph.password")?;
            jail.set_env("ETTER_GRAPH__PASSWORD", "neo4j-secret");
            refused("server.audit_key")?;
            jail.set_env("ETTER_SERVER__AUDIT_KEY", "1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d");
            refused("server.token_secret")?;
            jail.set_env("ETTER_SERVER__TOKEN_SECRET", "short");
            refused("at least 32 bytes")?;
            jail.set_env(
                "ETTER_SERVER__TOKEN_SECRET",
                "7d0c3b9e2f4a61587a9c0e1d2b3f4a5c6d7e8f90a1b2c3d4e5f60718293a4b5c",
            );
            // The certificate files are read at start: a missing one is named.
            refused("`server.tls.cert_file` = /etc/etter/tls/server.crt: cannot be read")?;
            let issued = ca
                .server(&dir, "server", etter_test_certs::LOOPBACK_NAMES, etter_test_certs::Validity::Current)
                .map_err(|e| e.to_string())?;
            jail.set_env("ETTER_SERVER__TLS__CERT_FILE", issued.cert_file.display());
            jail.set_env("ETTER_SERVER__TLS__KEY_FILE", issued.key_file.display());
            jail.set_env("ETTER_SERVER__TLS__CLIENT_CA_FILE", ca_file.display());
            let config = Config::load(Some(example), &[]).map_err(|e| chain(&e).to_string())?;
            assert_eq!(config.profile, Profile::Production);
            assert!(config.temporal.address.starts_with("https://") && config.temporal.tls.is_set());
            assert!(!config.auth.jwks_file.as_os_str().is_empty() && config.redis.url.is_set());
            // The dev login is refused in production even on loopback.
            jail.set_env("ETTER_SERVER__CONSOLE_DEV_LOGIN", "true");
            jail.set_env("ETTER_SERVER__LISTEN", "127.0.0.1:50051");
            refused("server.console_dev_login")?;
            Ok(())
        });
    }

    #[test]
    fn production_refuses_plaintext_listeners_off_loopback_unless_tls_is_terminated_in_front() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for key in
                ["ETTER_SERVER__TLS__CERT_FILE", "ETTER_SERVER__TLS__KEY_FILE", "ETTER_SERVER__TLS__CLIENT_CA_FILE"]
            {
                jail.set_env(key, "");
            }
            // Temporal through a local sidecar, to keep this test to the listeners.
            jail.set_env("ETTER_TEMPORAL__ADDRESS", "http://127.0.0.1:7233");
            for key in
                ["ETTER_TEMPORAL__TLS__CA_FILE", "ETTER_TEMPORAL__TLS__CERT_FILE", "ETTER_TEMPORAL__TLS__KEY_FILE"]
            {
                jail.set_env(key, "");
            }
            jail.set_env("ETTER_STORE__URL", "postgres://etter:pw@db.internal:5432/etter");
            jail.set_env("ETTER_GRAPH__PASSWORD", "neo4j-secret");
            jail.set_env("ETTER_SERVER__AUDIT_KEY", "1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d");
            jail.set_env(
                "ETTER_SERVER__TOKEN_SECRET",
                "7d0c3b9e2f4a61587a9c0e1d2b3f4a5c6d7e8f90a1b2c3d4e5f60718293a4b5c",
            );
            let example = Path::new(PRODUCTION_EXAMPLE);
            let err = Config::load(Some(example), &[]).err().map(|e| chain(&e).to_string()).unwrap_or_default();
            assert!(
                err.contains(
                    "`server.tls.cert_file` is required by the production profile for `server.listen` = 0.0.0.0:50051"
                ) && err.contains("terminated_in_front = true"),
                "{err}"
            );
            jail.set_env("ETTER_SERVER__LISTEN", "127.0.0.1:50051");
            let err = Config::load(Some(example), &[]).err().map(|e| chain(&e).to_string()).unwrap_or_default();
            assert!(err.contains("for `server.metrics_listen` = 0.0.0.0:9464"), "{err}");
            jail.set_env("ETTER_SERVER__LISTEN", "0.0.0.0:50051");
            jail.set_env("ETTER_SERVER__TLS__TERMINATED_IN_FRONT", "true");
            Config::load(Some(example), &[]).map_err(|e| chain(&e).to_string())?;
            Ok(())
        });
    }

    #[test]
    fn the_console_dev_login_is_refused_off_a_loopback_listener() -> anyhow::Result<()> {
        let mut config = Config::default();
        config.server.console_dev_login = true;
        config.validate()?;
        config.server.listen = SocketAddr::from(([0, 0, 0, 0], 50051));
        let err = config.validate().err().map(|e| chain(&e).to_string()).unwrap_or_default();
        assert!(err.contains("server.console_dev_login") && err.contains("loopback"), "{err}");
        config.server.console_dev_login = false;
        config.validate()?;
        Ok(())
    }

    #[test]
    fn dashboard_url_is_validated_and_substituted() -> anyhow::Result<()> {
        let mut config = Config::default();
        let company = CompanyId::parse("acme")?;
        let role = RoleId::new(&company, &etter_core::ids::RoleName::parse("Claims Adjuster")?);
        assert_eq!(config.server.dashboard_url_for(&role, &company), None, "empty = no URL");
        config.server.dashboard_url = "https://app.example.com/{company_id}/roles/{role_id}".to_owned();
        config.validate()?;
        assert_eq!(
            config.server.dashboard_url_for(&role, &company).as_deref(),
            Some("https://app.example.com/acme/roles/cr-acme.claims-adjuster")
        );
        for bad in ["app.example.com/{role_id}", "ftp://files.example.com/{role_id}", "https://x.example/{role}"] {
            config.server.dashboard_url = bad.to_owned();
            let err = config.validate().err().map(|e| chain(&e).to_string()).unwrap_or_default();
            assert!(err.contains("server.dashboard_url"), "{bad}: {err}");
        }
        Ok(())
    }

    #[test]
    fn secrets_are_masked_in_the_dump() {
        let mut config = Config::default();
        config.store.url = Secret::from("postgres://etter:hunter2@db/etter");
        config.server.audit_key = Secret::from("an audit key that is long enough, 32+");
        let dump = config.to_masked_toml();
        assert!(!dump.contains("hunter2") && !dump.contains("audit key"), "{dump}");
        assert!(dump.contains("url = \"***\""), "{dump}");
    }
}
