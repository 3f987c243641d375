//! Why an LLM call failed, and whether trying again later can help.

use std::time::Duration;

use super::TokenUsage;
use etter_core::steps::StepName;

/// Why an AI step's call failed. The provider has already spent its own retries when it returns
/// one of these; [`LlmError::is_retryable`] tells the activity whether a later attempt (Temporal's
/// retry policy) can still succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The provider kept answering 429, or asked to wait longer than the provider waits in-process
    /// (a worker slot is not held for minutes: the activity retries later instead).
    #[error("the LLM provider is rate limiting (after {attempts} attempts{})", after(*retry_after))]
    RateLimited {
        /// Requests sent.
        attempts: u32,
        /// How long the provider asked to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// The provider kept failing with a server error (5xx).
    #[error("the LLM provider is unavailable: HTTP {status} after {attempts} attempts: {message}")]
    Unavailable {
        /// Last HTTP status.
        status: u16,
        /// Requests sent.
        attempts: u32,
        /// The provider's message, shortened.
        message: String,
    },
    /// The provider could not be reached, or did not answer in time, or its answer was not a chat
    /// completion at all.
    #[error("could not get an answer from the LLM provider after {attempts} attempts: {message}")]
    Transport {
        /// Requests sent.
        attempts: u32,
        /// What went wrong.
        message: String,
    },
    /// The provider refused the request (400, 401, 403, 404, …): retrying the same request cannot
    /// help; the configuration (key, model, URL) or the request is wrong.
    #[error("the LLM provider refused the request: HTTP {status}: {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The provider's message, shortened.
        message: String,
    },
    /// The model's answer was not what the step's schema allows (malformed JSON, a score outside
    /// `[0, 1]`, nothing grounded in the documents), every time the provider asked. Not retryable:
    /// the provider already asked again, and asking the same model the same question more often is
    /// waste.
    #[error("the model's `{step}` answer is invalid after {attempts} attempts: {problem}")]
    InvalidOutput {
        /// The step whose answer it was.
        step: StepName,
        /// Requests sent.
        attempts: u32,
        /// What was wrong with the last answer.
        problem: String,
        /// Tokens the rejected answers used (paid for all the same).
        usage: TokenUsage,
    },
    /// The run asked for a model this provider does not have (the offline provider's models are
    /// fixed; an OpenAI-compatible endpoint's are whatever it serves, so it never says this).
    #[error("the LLM provider has no model `{model}`; it has: {}", available.join(", "))]
    UnknownModel {
        /// The model asked for.
        model: String,
        /// The models it has.
        available: Vec<String>,
    },
    /// The provider's settings are unusable.
    #[error("invalid LLM provider settings: {0}")]
    Settings(String),
}

fn after(retry_after: Option<Duration>) -> String {
    retry_after.map(|d| format!("; it asked to wait {d:?}")).unwrap_or_default()
}

impl LlmError {
    /// Whether a later attempt of the whole call may succeed (the provider was busy or
    /// unreachable), as opposed to a request or an answer that will stay wrong.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Unavailable { .. } | Self::Transport { .. })
    }

    /// How long the provider asked to wait before a later attempt, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Tokens the failed call still used.
    pub fn usage(&self) -> TokenUsage {
        match self {
            Self::InvalidOutput { usage, .. } => *usage,
            _ => TokenUsage::default(),
        }
    }
}
