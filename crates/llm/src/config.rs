//! The `[llm]` section.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use etter_config::{ConfigError, Secret, invalid};

/// Which model answers the AI steps: the `llm.provider` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Deterministic rules over the documents' text, no network: the embedded default.
    #[default]
    Offline,
    /// An OpenAI-compatible chat-completions endpoint (`llm.base_url`, `llm.model`, `llm.api_key`).
    OpenAi,
}

/// `[llm]`: the model the worker's AI steps ask, and how hard it may be asked.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// `offline` (deterministic rules, no network: the embedded default) or `openai` (an
    /// OpenAI-compatible endpoint).
    pub provider: ProviderKind,
    /// Base URL of the OpenAI-compatible API, without `/chat/completions`; required for `openai`.
    pub base_url: String,
    /// Model name; required for `openai`.
    pub model: String,
    /// API key, sent as a bearer token; empty for endpoints without authentication.
    pub api_key: Secret,
    /// PEM CA certificates an `https://` endpoint's certificate may chain to, besides the
    /// system's roots (a gateway behind a private CA). Empty = the system's roots only.
    pub ca_file: std::path::PathBuf,
    /// Longest one HTTP request may take.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Requests one call may send, the first included: rate limits (429), server errors (5xx),
    /// timeouts and invalid answers spend from it.
    pub max_attempts: u32,
    /// Back-off before the second attempt (doubling, with jitter).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub initial_backoff: Duration,
    /// Longest back-off waited in-process; a longer `Retry-After` fails the call as retryable.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_backoff: Duration,
    /// Requests started per minute by one worker process, at most.
    pub requests_per_minute: u32,
    /// Tokens per minute by one worker process, at most.
    pub tokens_per_minute: u32,
    /// Requests in flight at once by one worker process, at most.
    pub max_concurrent: usize,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            provider: ProviderKind::Offline,
            base_url: String::new(),
            model: String::new(),
            api_key: Secret::default(),
            ca_file: std::path::PathBuf::new(),
            timeout: Duration::from_secs(120),
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            requests_per_minute: 500,
            tokens_per_minute: 200_000,
            max_concurrent: 10,
        }
    }
}

impl LlmConfig {
    /// Checks values that deserialize but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.provider == ProviderKind::OpenAi {
            match url::Url::parse(&self.base_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => {
                    return invalid(
                        "llm.base_url",
                        "must be an http:// or https:// URL when llm.provider = \"openai\"",
                    );
                }
            }
            if self.model.trim().is_empty() {
                return invalid("llm.model", "must be set when llm.provider = \"openai\"");
            }
        }
        if self.requests_per_minute == 0 || self.tokens_per_minute == 0 || self.max_concurrent == 0 {
            return invalid(
                "llm.requests_per_minute",
                "as well as llm.tokens_per_minute and llm.max_concurrent must be at least 1",
            );
        }
        if self.max_attempts == 0 {
            return invalid("llm.max_attempts", "must be at least 1");
        }
        if !self.ca_file.as_os_str().is_empty() {
            etter_config::tls::certificates_pem("llm", "ca_file", &self.ca_file)?;
        }
        Ok(())
    }

    /// What the production profile requires: the API key of a real model.
    pub fn validate_production(&self) -> Result<(), ConfigError> {
        if self.provider == ProviderKind::OpenAi && !self.api_key.is_set() {
            return invalid("llm.api_key", "is required by the production profile; set ETTER_LLM__API_KEY");
        }
        Ok(())
    }
}
