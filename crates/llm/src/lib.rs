//! The LLM layer: what the pipeline's AI steps ask a model, and the providers that answer.
//!
//! Every AI step is one method of [`LlmProvider`]. A call takes the role, the extracted texts of
//! its documents ([`DocumentTexts`], keyed by content hash) and the upstream outputs it builds on, and
//! returns a [`Completion`]: the step's output (the types of [`etter_core::outputs`]) and the tokens it
//! used, so the worker can meter every call.
//!
//! Two providers implement it:
//!
//! - [`OpenAiProvider`]: any OpenAI-compatible `POST {base}/chat/completions` endpoint, with
//!   JSON-schema structured output, bounded retries on 429/5xx and a process-wide [`Limiter`] so
//!   provider limits become queueing, not failures.
//! - [`OfflineProvider`]: derives the same structures from the text by deterministic rules, with
//!   no network: the embedded default and the tests' provider.
//!
//! Both cite their sources the same way: a model (or a rule) names a quote, and this layer finds
//! the quote in the document to compute byte offsets — offsets are never taken on trust.

mod calls;
mod config;
mod error;
mod limiter;
mod offline;
mod openai;
mod texts;

use std::{fmt, ops::Add};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use config::{LlmConfig, ProviderKind};
pub use error::LlmError;
pub use limiter::{Limiter, LimiterPermit, LimiterSettings};
pub use offline::OfflineProvider;
pub use openai::{OpenAiProvider, OpenAiSettings};
pub use texts::DocumentTexts;

use etter_core::ids::RoleName;
use etter_core::outputs::{
    Assessment, MinedSkills, Reskilling, Score, SkillsArchitecture, SkillsCatalog, Standardization, TaskFeasibility,
    TopTasks,
};

/// The version of this layer's prompts and answer schemas (`calls.rs`), recorded with every step
/// a model answers so two runs can tell they asked the same question. Raise it with any change to
/// a prompt's wording or an answer schema.
pub const PROMPT_VERSION: &str = "1";

/// Outputs with a confidence below this deserve a person's look: the worker sets `needs_review`
/// on the run when any task or skill falls under it (the human review flags).
pub const REVIEW_BELOW: Score = 0.5;

/// Tokens one call used. Counted by the provider when it reports them, estimated (4 characters a
/// token) when it does not — the offline provider always estimates, so metering works offline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Tokens of the prompt.
    pub input_tokens: u64,
    /// Tokens of the answer.
    pub output_tokens: u64,
}

impl TokenUsage {
    /// Input and output together.
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

impl Add for TokenUsage {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            input_tokens: self.input_tokens + other.input_tokens,
            output_tokens: self.output_tokens + other.output_tokens,
        }
    }
}

/// The answer of one AI step.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion<T> {
    /// What the step produced, validated: scores in `[0, 1]`, every span found in its document,
    /// every key naming something of the step's inputs.
    pub output: T,
    /// Tokens used, including those of attempts whose answer was rejected (they were paid for).
    pub usage: TokenUsage,
    /// Items of the model's answer that were dropped while validating, and why (a quote not found
    /// in the documents, a key naming nothing). Worth logging; a non-empty list is a reason to
    /// review the run.
    pub discarded: Vec<String>,
}

/// What the pipeline's AI steps ask of a model: one method per step (docs/ARCHITECTURE.md, "The step graph"). Implementations
/// are shared by every activity of a worker process (`Arc<dyn LlmProvider>`), so they bound their
/// own use of the provider. Object-safe, hence `async_trait`, as the run store and the role graph:
/// every step method returns a boxed `Send` future.
///
/// Inputs are borrowed: `documents` are the extracted texts of the role's documents by content
/// hash, and outputs cite spans of them; upstream outputs are those the step graph feeds the step.
#[async_trait]
pub trait LlmProvider: Send + Sync + fmt::Debug {
    /// The provider's short name for logs and metrics (`offline`, `openai`).
    fn name(&self) -> &'static str;

    /// The model this provider asks, recorded with each step it answers.
    fn model(&self) -> &str;

    /// This provider asking `model` instead of its own: the same endpoint, limiter and settings.
    /// [`LlmError::UnknownModel`] when the provider knows it has no such model.
    fn with_model(&self, model: &str) -> Result<std::sync::Arc<dyn LlmProvider>, LlmError>;

    /// `ai_assessment`: the role's tasks with automation/augmentation scores, each citing its source.
    async fn assess(&self, role: &RoleName, documents: &DocumentTexts) -> Result<Completion<Assessment>, LlmError>;

    /// `step_executor`: the tasks that matter most, best first.
    async fn top_tasks(&self, role: &RoleName, assessment: &Assessment) -> Result<Completion<TopTasks>, LlmError>;

    /// `standardization`: a standard name for each top task.
    async fn standardize(
        &self,
        role: &RoleName,
        assessment: &Assessment,
        top_tasks: &TopTasks,
    ) -> Result<Completion<Standardization>, LlmError>;

    /// `skills_miner`: the skills the role needs, each citing its source.
    async fn mine_skills(
        &self,
        role: &RoleName,
        documents: &DocumentTexts,
        assessment: &Assessment,
    ) -> Result<Completion<MinedSkills>, LlmError>;

    /// `skills_architecture`: the mined skills grouped into clusters, each skill in exactly one.
    async fn architect_skills(
        &self,
        role: &RoleName,
        skills: &MinedSkills,
    ) -> Result<Completion<SkillsArchitecture>, LlmError>;

    /// `skills_catalog`: proficiency and meaning of each mined skill in this role.
    async fn catalog(
        &self,
        role: &RoleName,
        documents: &DocumentTexts,
        skills: &MinedSkills,
        architecture: &SkillsArchitecture,
    ) -> Result<Completion<SkillsCatalog>, LlmError>;

    /// `reskilling`: paths from skills whose work AI takes over toward skills that grow in value.
    async fn reskilling(
        &self,
        role: &RoleName,
        assessment: &Assessment,
        skills: &MinedSkills,
        catalog: &SkillsCatalog,
    ) -> Result<Completion<Reskilling>, LlmError>;

    /// `task_feasibility`: how feasible automating each task is now.
    async fn feasibility(
        &self,
        role: &RoleName,
        assessment: &Assessment,
    ) -> Result<Completion<TaskFeasibility>, LlmError>;
}

/// The provider `[llm]` describes, with one limiter for the whole process.
pub fn provider_from_config(config: &LlmConfig) -> Result<std::sync::Arc<dyn LlmProvider>, LlmError> {
    use std::num::NonZeroU32;
    match config.provider {
        ProviderKind::Offline => Ok(std::sync::Arc::new(OfflineProvider::new())),
        ProviderKind::OpenAi => {
            let positive = |value: u32, key: &str| {
                NonZeroU32::new(value).ok_or_else(|| LlmError::Settings(format!("llm.{key} must be at least 1")))
            };
            let limiter = std::sync::Arc::new(Limiter::new(LimiterSettings {
                requests_per_minute: positive(config.requests_per_minute, "requests_per_minute")?,
                tokens_per_minute: positive(config.tokens_per_minute, "tokens_per_minute")?,
                max_concurrent: config.max_concurrent,
            }));
            let base_url =
                url::Url::parse(&config.base_url).map_err(|e| LlmError::Settings(format!("llm.base_url: {e}")))?;
            let settings = OpenAiSettings {
                base_url,
                model: config.model.clone(),
                api_key: config.api_key.expose().map(|k| secrecy::SecretString::from(k.to_owned())),
                ca_pem: if config.ca_file.as_os_str().is_empty() {
                    None
                } else {
                    Some(
                        etter_config::tls::certificates_pem("llm", "ca_file", &config.ca_file)
                            .map_err(|e| LlmError::Settings(e.to_string()))?,
                    )
                },
                timeout: config.timeout,
                max_attempts: config.max_attempts,
                initial_backoff: config.initial_backoff,
                max_backoff: config.max_backoff,
            };
            Ok(std::sync::Arc::new(OpenAiProvider::new(settings, limiter)?))
        }
    }
}

/// The token estimate both providers use when no provider count exists: 4 characters a token.
pub(crate) fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}
