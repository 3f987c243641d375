//! The worker's configuration: the sections it reads of the file both binaries share, and its own
//! `[worker]` section.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use etter_config::tls::ServerTls;
use etter_config::{ConfigError, Profile, invalid};
use etter_documents::DocumentsConfig;
use etter_graph::GraphConfig;
use etter_llm::LlmConfig;
use etter_store::{RedisConfig, StoreConfig, StoreLocation};
use etter_telemetry::{LogConfig, TracingConfig};
use etter_temporal::TemporalConfig;

/// What `etter-worker` reads.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Config {
    /// `embedded` (the default: anything unset falls back to an embedded part) or `production`
    /// (every part must be a real one, with its secrets).
    pub profile: Profile,
    /// Where the embedded default keeps its files (SQLite databases).
    pub data_dir: PathBuf,
    /// The Temporal worker.
    pub worker: WorkerConfig,
    /// The run store.
    pub store: StoreConfig,
    /// Live-progress fan-out.
    pub redis: RedisConfig,
    /// The role graph the steps write.
    pub graph: GraphConfig,
    /// Where documents are fetched from and how much of them is read.
    pub documents: DocumentsConfig,
    /// The model the AI steps ask.
    pub llm: LlmConfig,
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
            worker: WorkerConfig::default(),
            store: StoreConfig::default(),
            redis: RedisConfig::default(),
            graph: GraphConfig::default(),
            documents: DocumentsConfig::default(),
            llm: LlmConfig::default(),
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

    /// The documentation of every key the worker reads, section by section.
    pub fn documented_keys() -> Vec<etter_config::KeyDoc> {
        etter_config::documented_keys::<Self>()
    }

    /// The effective configuration as TOML with secrets masked (`--dump-config`).
    pub fn to_masked_toml(&self) -> String {
        etter_config::to_masked_toml(self)
    }

    /// Checks every section the worker reads.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.profile == Profile::Production {
            self.store.validate_production()?;
            self.graph.validate_production()?;
            self.llm.validate_production()?;
            self.worker.metrics_tls.validate_production(
                "worker.metrics_tls",
                "worker.metrics_listen",
                self.worker.metrics_listen,
            )?;
        }
        self.store.validate(&self.data_dir)?;
        self.redis.validate()?;
        self.graph.validate()?;
        self.documents.validate()?;
        self.llm.validate()?;
        self.temporal.validate()?;
        self.tracing.validate()?;
        self.worker.validate()
    }
}

/// `[worker]`: the Temporal worker: its task queue, concurrency, and each step activity's timeouts and retries.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Activities run at once by one worker process (10 by default; 50 on a production host).
    pub max_concurrent_activities: usize,
    /// Address of the Prometheus `/metrics` listener of `etter-worker`; port 0 picks a free port.
    pub metrics_listen: SocketAddr,
    /// TLS of the `/metrics` listener (optionally requiring client certificates from the
    /// scraper). Off by default: plaintext, which the production profile accepts only on a
    /// loopback address or with `terminated_in_front`.
    pub metrics_tls: ServerTls,
    /// An activity that has not heartbeated for this long is considered lost, and retried.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub heartbeat_timeout: Duration,
    /// Longest one activity attempt may run.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub start_to_close_timeout: Duration,
    /// Longest a step's activity task may wait for a worker to pick it up. Past it the workflow
    /// schedules the step again: this is what recovers a task Temporal lost (it can, when its
    /// history service is killed while it hands a retry to matching), which would otherwise leave
    /// the run PROCESSING for ever. A task that was only waiting for a free slot goes to the back
    /// of the queue, so keep this above the longest wait for a slot under load.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub schedule_to_start_timeout: Duration,
    /// Activity retry policy: first back-off.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub retry_initial_interval: Duration,
    /// Activity retry policy: back-off multiplier.
    pub retry_backoff_coefficient: f64,
    /// Activity retry policy: longest back-off.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub retry_maximum_interval: Duration,
    /// Activity retry policy: attempts including the first.
    pub retry_maximum_attempts: u32,
    /// How long a step attempt waits out an outage of the run store or the role graph (a
    /// restart, a failover) before it fails: it tries its work again with growing pauses,
    /// heartbeating meanwhile, instead of spending the retry policy's attempts in seconds. Other
    /// failures are not waited out. `0s` = fail at once, as any other failure.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub outage_patience: Duration,
    /// How long a graceful shutdown waits for running activities.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub shutdown_grace: Duration,
    /// How often the staleness scan re-hashes the documents of READY and DEGRADED roles and marks
    /// changed ones STALE (a Temporal schedule the worker keeps); `0s` = no schedule (run it on
    /// demand with `etter-worker scan`).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub staleness_scan_interval: Duration,
    /// How often the worker records in the run store that it is running. The server counts a
    /// worker while its record is more recent than `dispatch.worker_presence_within` (25 s), so
    /// keep this well below that; a worker that stops cleanly is uncounted at once.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub presence_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            max_concurrent_activities: 10,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9465)),
            metrics_tls: ServerTls::default(),
            heartbeat_timeout: Duration::from_secs(60),
            start_to_close_timeout: Duration::from_secs(30 * 60),
            schedule_to_start_timeout: Duration::from_secs(10 * 60),
            retry_initial_interval: Duration::from_secs(1),
            retry_backoff_coefficient: 2.0,
            retry_maximum_interval: Duration::from_secs(5 * 60),
            retry_maximum_attempts: 3,
            outage_patience: Duration::from_secs(120),
            shutdown_grace: Duration::from_secs(30),
            staleness_scan_interval: Duration::from_secs(24 * 60 * 60),
            presence_interval: Duration::from_secs(10),
        }
    }
}

impl WorkerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrent_activities == 0 {
            return invalid("worker.max_concurrent_activities", "must be at least 1");
        }
        if self.retry_maximum_attempts == 0 {
            return invalid("worker.retry_maximum_attempts", "must be at least 1");
        }
        if self.retry_backoff_coefficient < 1.0 {
            return invalid("worker.retry_backoff_coefficient", "must be at least 1.0");
        }
        if self.presence_interval.is_zero() {
            return invalid(
                "worker.presence_interval",
                "must be positive (10s keeps a stopped worker noticed within 30s)",
            );
        }
        if self.heartbeat_timeout.is_zero() || self.start_to_close_timeout.is_zero() {
            return invalid("worker.heartbeat_timeout", "and worker.start_to_close_timeout must be positive");
        }
        if self.schedule_to_start_timeout.is_zero() {
            return invalid(
                "worker.schedule_to_start_timeout",
                "must be positive (10m recovers a lost task without moving busy queues around)",
            );
        }
        self.metrics_tls.validate("worker.metrics_tls")
    }
}

#[cfg(test)]
// `figment::Jail` closures must return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use etter_core::error::chain;

    #[test]
    fn the_model_is_checked_and_the_servers_sections_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("etter.toml", "[server]\nlisten = \"127.0.0.1:1000\"\n[dispatch]\nclaim_batch = 7\n")?;
            jail.set_env("ETTER_LLM__PROVIDER", "openai");
            let err = Config::load(Some(Path::new("etter.toml")), &[])
                .err()
                .map(|e| chain(&e).to_string())
                .unwrap_or_default();
            assert!(err.contains("llm.base_url"), "{err}");
            jail.set_env("ETTER_LLM__BASE_URL", "https://llm.example.com/v1");
            jail.set_env("ETTER_LLM__MODEL", "gpt-x");
            let config = Config::load(Some(Path::new("etter.toml")), &[]).map_err(|e| chain(&e).to_string())?;
            assert_eq!(config.llm.provider, etter_llm::ProviderKind::OpenAi);
            jail.set_env("ETTER_WORKER__RETRY_BACKOFF_COEFFICIENT", "0.5");
            let err = Config::load(None, &[]).err().map(|e| chain(&e).to_string()).unwrap_or_default();
            assert!(err.contains("worker.retry_backoff_coefficient"), "{err}");
            Ok(())
        });
    }

    /// `examples/etter.production.toml`, the file the README points at for production.
    const PRODUCTION_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/etter.production.toml");

    #[test]
    fn the_production_example_names_each_missing_secret_of_the_worker() {
        figment::Jail::expect_with(|jail| {
            let example = Path::new(PRODUCTION_EXAMPLE);
            // A sourced .etter/services.env must not fill in what this test leaves out.
            jail.clear_env();
            for key in ["ETTER_STORE__URL", "ETTER_GRAPH__PASSWORD", "ETTER_LLM__API_KEY"] {
                jail.set_env(key, "");
            }
            let refused = |missing_key: &str| -> Result<(), figment::Error> {
                let err = Config::load(Some(example), &[]).err().map(|e| chain(&e).to_string()).unwrap_or_default();
                assert!(err.contains(missing_key), "want {missing_key} named: {err}");
                Ok(())
            };
            refused("store.url")?;
            jail.set_env("ETTER_STORE__URL", "postgres://etter:pw@db.internal:5432/etter");
            refused("graph.password")?;
            jail.set_env("ETTER_GRAPH__PASSWORD", "neo4j-secret");
            refused("llm.api_key")?;
            jail.set_env("ETTER_LLM__API_KEY", "sk-test");
            refused("`temporal.tls.ca_file` = /etc/etter/tls/temporal-ca.crt: cannot be read")?;
            let dir = jail.directory().to_path_buf();
            let ca = etter_test_certs::Ca::new("example CA").map_err(|e| e.to_string())?;
            let ca_file = ca.write(&dir, "ca.pem").map_err(|e| e.to_string())?;
            let client = ca
                .client(&dir, "temporal-client", "etter-worker", etter_test_certs::Validity::Current)
                .map_err(|e| e.to_string())?;
            jail.set_env("ETTER_TEMPORAL__TLS__CA_FILE", ca_file.display());
            jail.set_env("ETTER_TEMPORAL__TLS__CERT_FILE", client.cert_file.display());
            jail.set_env("ETTER_TEMPORAL__TLS__KEY_FILE", client.key_file.display());
            refused("`worker.metrics_tls.cert_file` = /etc/etter/tls/worker-metrics.crt: cannot be read")?;
            let metrics = ca
                .server(&dir, "worker-metrics", &["worker.internal"], etter_test_certs::Validity::Current)
                .map_err(|e| e.to_string())?;
            jail.set_env("ETTER_WORKER__METRICS_TLS__CERT_FILE", metrics.cert_file.display());
            jail.set_env("ETTER_WORKER__METRICS_TLS__KEY_FILE", metrics.key_file.display());
            let config = Config::load(Some(example), &[]).map_err(|e| chain(&e).to_string())?;
            assert_eq!(config.profile, Profile::Production);
            assert_eq!(config.llm.provider, etter_llm::ProviderKind::OpenAi);
            Ok(())
        });
    }

    #[test]
    fn production_refuses_plaintext_metrics_off_loopback_unless_tls_ends_in_front() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("ETTER_PROFILE", "production");
            jail.set_env("ETTER_STORE__URL", "postgres://etter:pw@db.internal:5432/etter");
            jail.set_env("ETTER_GRAPH__URI", "bolt://neo4j.internal:7687");
            jail.set_env("ETTER_GRAPH__PASSWORD", "neo4j-secret");
            jail.set_env("ETTER_LLM__PROVIDER", "offline");
            jail.set_env("ETTER_WORKER__METRICS_LISTEN", "0.0.0.0:9465");
            let err = Config::load(None, &[]).err().map(|e| chain(&e).to_string()).unwrap_or_default();
            assert!(
                err.contains("`worker.metrics_tls.cert_file` is required by the production profile")
                    && err.contains("`worker.metrics_listen` = 0.0.0.0:9465"),
                "{err}"
            );
            jail.set_env("ETTER_WORKER__METRICS_TLS__TERMINATED_IN_FRONT", "true");
            Config::load(None, &[]).map_err(|e| chain(&e).to_string())?;
            jail.set_env("ETTER_WORKER__METRICS_TLS__TERMINATED_IN_FRONT", "false");
            jail.set_env("ETTER_WORKER__METRICS_LISTEN", "127.0.0.1:9465");
            Config::load(None, &[]).map_err(|e| chain(&e).to_string())?;
            Ok(())
        });
    }
}
