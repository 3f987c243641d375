//! The `[store]` and `[redis]` sections.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use etter_config::{ConfigError, Secret, invalid, tls::ClientTls};

/// `[store]`: where runs, steps, events, audit and usage live.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Run store: `postgres://…` for production, `sqlite://PATH` for an SQLite file elsewhere;
    /// empty = the embedded SQLite file `{data_dir}/etter.db`.
    pub url: Secret,
    /// Maximum pooled connections.
    pub max_connections: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { url: Secret::default(), max_connections: 16 }
    }
}

/// `[redis]`: optional fan-out of live progress between server replicas.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Redis (`redis://host:port/`, or `rediss://` for TLS) for live-progress fan-out between
    /// server replicas and the worker; empty = fan-out from the store alone (one server process).
    pub url: Secret,
    /// TLS of a `rediss://` URL: a private CA (`ca_file`) and a client certificate (`cert_file`,
    /// `key_file`) when Redis requires one (`tls-auth-clients yes`). The certificate must carry
    /// the URL's host; `server_name` is not supported here.
    pub tls: ClientTls,
}

/// Where the run store lives, decided from `store.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// PostgreSQL at this URL.
    Postgres(String),
    /// The embedded SQLite file.
    Sqlite(PathBuf),
}

impl StoreConfig {
    /// Where the run store lives: PostgreSQL when `store.url` says so, else the embedded SQLite
    /// file under `data_dir`.
    pub fn location(&self, data_dir: &Path) -> Result<StoreLocation, ConfigError> {
        match self.url.expose() {
            None => Ok(StoreLocation::Sqlite(data_dir.join("etter.db"))),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StoreLocation::Postgres(url.to_owned()))
            }
            Some(url) if url.starts_with("sqlite://") => {
                Ok(StoreLocation::Sqlite(PathBuf::from(url.trim_start_matches("sqlite://"))))
            }
            Some(_) => {
                invalid("store.url", "must be postgres://…, sqlite://PATH, or empty for the embedded SQLite file")
            }
        }
    }

    /// Checks values that deserialize but cannot work.
    pub fn validate(&self, data_dir: &Path) -> Result<(), ConfigError> {
        self.location(data_dir)?;
        if self.max_connections == 0 {
            return invalid("store.max_connections", "must be at least 1");
        }
        Ok(())
    }

    /// What the production profile requires: PostgreSQL.
    pub fn validate_production(&self) -> Result<(), ConfigError> {
        if !self.url.is_set() {
            return invalid(
                "store.url",
                "is required by the production profile (a postgres:// URL with its credentials); set ETTER_STORE__URL",
            );
        }
        Ok(())
    }
}

impl RedisConfig {
    /// Checks values that deserialize but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = self.url.expose()
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return invalid("redis.url", "must start with redis:// or rediss://");
        }
        if self.tls.is_set() && !self.url.expose().is_some_and(|url| url.starts_with("rediss://")) {
            return invalid(
                "redis.url",
                "must be rediss:// when redis.tls is set: with redis:// the connection is plaintext",
            );
        }
        if !self.tls.server_name.is_empty() {
            return invalid(
                "redis.tls.server_name",
                "is not supported for Redis: connect by a host name its certificate carries",
            );
        }
        self.tls.validate("redis.tls")
    }

    /// A Redis client for `url` (the configured one, which is `Some` when Redis is used), with
    /// the configured TLS.
    pub fn client(&self) -> Result<Option<redis::Client>, crate::fanout::FanoutError> {
        use crate::fanout::FanoutError;
        let Some(url) = self.url.expose() else { return Ok(None) };
        if !self.tls.is_set() {
            return redis::Client::open(url).map(Some).map_err(FanoutError::Url);
        }
        let files = self.tls.load("redis.tls")?;
        let certificates = redis::TlsCertificates {
            client_tls: files
                .identity_pem
                .map(|(client_cert, client_key)| redis::ClientTlsConfig { client_cert, client_key }),
            root_cert: files.ca_pem,
        };
        redis::Client::build_with_tls(url, certificates).map(Some).map_err(FanoutError::Url)
    }
}
