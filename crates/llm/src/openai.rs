//! An OpenAI-compatible chat-completions provider: `POST {base}/chat/completions` with a JSON
//! Schema `response_format`, bounded retries, and a shared [`Limiter`].

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use reqwest::{StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::{
    Completion, DocumentTexts, Limiter, LlmError, LlmProvider, TokenUsage,
    calls::{self, StepCall},
    estimate_tokens,
};
use etter_core::backoff::Backoff;
use etter_core::ids::RoleName;
use etter_core::outputs::{
    Assessment, MinedSkills, Reskilling, SkillsArchitecture, SkillsCatalog, Standardization, TaskFeasibility, TopTasks,
};

/// How an [`OpenAiProvider`] reaches its endpoint (the proposed `llm.*` configuration keys).
#[derive(Clone)]
pub struct OpenAiSettings {
    /// The API's base URL, up to and without `/chat/completions` (`https://api.openai.com/v1`).
    pub base_url: Url,
    /// The model to ask.
    pub model: String,
    /// Sent as `Authorization: Bearer …`; `None` for endpoints without authentication.
    pub api_key: Option<SecretString>,
    /// PEM CA certificates trusted besides the system's roots (`llm.ca_file`).
    pub ca_pem: Option<Vec<u8>>,
    /// Longest one HTTP request may take, answer included.
    pub timeout: Duration,
    /// Requests one call may send, the first included: rate limits, server errors, timeouts and
    /// invalid answers all spend from this budget.
    pub max_attempts: u32,
    /// Back-off before the second attempt; it doubles for each further one (with jitter).
    pub initial_backoff: Duration,
    /// Longest back-off. A `Retry-After` longer than this is not waited out in-process: the call
    /// fails with a retryable [`LlmError::RateLimited`] so the activity retries later.
    pub max_backoff: Duration,
}

impl fmt::Debug for OpenAiSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiSettings")
            .field("base_url", &self.base_url.as_str())
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

/// The production provider: any endpoint speaking OpenAI's chat-completions API with structured
/// output (OpenAI, Azure OpenAI behind a gateway, vLLM, llama.cpp server, …).
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    http: reqwest::Client,
    endpoint: Url,
    settings: OpenAiSettings,
    limiter: Arc<Limiter>,
}

/// Longest provider message kept in an error: enough to diagnose, too short to flood logs.
const MAX_MESSAGE: usize = 300;

impl OpenAiProvider {
    /// A provider with these settings, sharing `limiter` with every other user of the process.
    pub fn new(settings: OpenAiSettings, limiter: Arc<Limiter>) -> Result<Self, LlmError> {
        if !matches!(settings.base_url.scheme(), "http" | "https") {
            return Err(LlmError::Settings("base_url must be an http:// or https:// URL".to_owned()));
        }
        if settings.model.trim().is_empty() {
            return Err(LlmError::Settings("model must not be empty".to_owned()));
        }
        if settings.max_attempts == 0 || settings.timeout.is_zero() {
            return Err(LlmError::Settings("max_attempts and timeout must be positive".to_owned()));
        }
        // `Url::join` would drop the base's last segment (`/v1`) unless it ends with a slash.
        let endpoint = Url::parse(&format!("{}/chat/completions", settings.base_url.as_str().trim_end_matches('/')))
            .map_err(|e| LlmError::Settings(format!("base_url: {e}")))?;
        let mut http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)));
        if let Some(pem) = &settings.ca_pem {
            let cas = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| LlmError::Settings(format!("llm.ca_file: {e}")))?;
            for ca in cas {
                http = http.add_root_certificate(ca);
            }
        }
        let http = http.build().map_err(|e| LlmError::Settings(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { http, endpoint, settings, limiter })
    }

    /// Asks for one step's answer until it is valid or the attempts are spent.
    #[tracing::instrument(name = "llm.complete", skip_all, fields(step = %C::STEP, model = %self.settings.model))]
    async fn complete<C: StepCall>(&self, call: C) -> Result<Completion<C::Output>, LlmError> {
        let prompt = call.prompt();
        let body = json!({
            "model": self.settings.model,
            "messages": [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.user},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": C::STEP.as_str(), "strict": true, "schema": call.schema()},
            },
        })
        .to_string();
        let estimate = estimate_tokens(&prompt.system) + estimate_tokens(&prompt.user);
        let mut usage = TokenUsage::default();
        let mut backoff = Backoff::new(self.settings.initial_backoff, self.settings.max_backoff);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.settings.max_attempts;
            let outcome = {
                let _permit = self.limiter.acquire(estimate).await;
                self.send(&body).await
            };
            let failure = match outcome {
                Ok(answer) => {
                    let used = answer.usage.unwrap_or(TokenUsage {
                        input_tokens: estimate,
                        output_tokens: answer.content.as_deref().map(estimate_tokens).unwrap_or_default(),
                    });
                    // The reservation was the prompt's estimate; what was used beyond it is paid now.
                    self.limiter.charge(used.total().saturating_sub(estimate)).await;
                    usage = usage + used;
                    match answer.content.and_then(|content| parse(&call, &content)) {
                        Ok(valid) => {
                            for item in &valid.discarded {
                                tracing::warn!(step = %C::STEP, item = %item, "dropped an item of the model's answer");
                            }
                            return Ok(Completion { output: valid.output, usage, discarded: valid.discarded });
                        }
                        Err(problem) if last => {
                            return Err(LlmError::InvalidOutput { step: C::STEP, attempts: attempt, problem, usage });
                        }
                        Err(problem) => {
                            // Another sample may well be valid: ask again at once, no back-off needed.
                            tracing::warn!(step = %C::STEP, attempt, problem = %problem, "invalid answer, asking again");
                            continue;
                        }
                    }
                }
                Err(Failure::Fatal(error)) => return Err(error),
                Err(failure) => failure,
            };
            let retry_after = failure.retry_after();
            let error = failure.into_error(attempt);
            if last {
                return Err(error);
            }
            let wait = match retry_after {
                // Holding a worker slot for minutes helps nobody: the activity retries later.
                Some(asked) if asked > self.settings.max_backoff => return Err(error),
                Some(asked) => asked,
                None => backoff.next_wait(),
            };
            tracing::warn!(step = %C::STEP, attempt, wait = ?wait, error = %error, "llm request failed, retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends one request and reads the answer's content and usage.
    async fn send(&self, body: &str) -> Result<Answer, Failure> {
        let mut request = self
            .http
            .post(self.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_owned());
        if let Some(key) = &self.settings.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        let response = request.send().await.map_err(|e| Failure::Transport(describe(&e)))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let text = response.text().await.map_err(|e| Failure::Transport(describe(&e)))?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Failure::RateLimited { retry_after });
        }
        if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            return Err(Failure::Unavailable { status: status.as_u16(), message: shorten(&text), retry_after });
        }
        if !status.is_success() {
            return Err(Failure::Fatal(LlmError::Rejected { status: status.as_u16(), message: shorten(&text) }));
        }
        let chat: ChatResponse = serde_json::from_str(&text)
            .map_err(|e| Failure::Transport(format!("the answer is not a chat completion: {e}")))?;
        let usage =
            chat.usage.map(|u| TokenUsage { input_tokens: u.prompt_tokens, output_tokens: u.completion_tokens });
        let content = match chat.choices.into_iter().next() {
            None => Err("the answer has no choices".to_owned()),
            Some(Choice { finish_reason: Some(reason), .. }) if reason == "length" => {
                Err("the answer was cut off at the token limit".to_owned())
            }
            Some(Choice { message: Message { refusal: Some(refusal), .. }, .. }) => {
                Err(format!("the model refused: {}", shorten(&refusal)))
            }
            Some(Choice { message: Message { content: Some(content), .. }, .. }) => Ok(content),
            Some(_) => Err("the answer has no content".to_owned()),
        };
        Ok(Answer { content, usage })
    }
}

/// Parses and validates an answer's content.
fn parse<C: StepCall>(call: &C, content: &str) -> Result<calls::Validated<C::Output>, String> {
    let wire: C::Wire = serde_json::from_str(content)
        .map_err(|e| format!("the answer is not JSON of the `{}` schema: {e}", C::STEP))?;
    call.validate(wire)
}

/// A request that failed.
enum Failure {
    /// HTTP 429: sending again later may help.
    RateLimited { retry_after: Option<Duration> },
    /// HTTP 5xx or 408: sending again later may help.
    Unavailable { status: u16, message: String, retry_after: Option<Duration> },
    /// No answer, or not a chat completion: sending again may help.
    Transport(String),
    /// Sending again cannot help.
    Fatal(LlmError),
}

impl Failure {
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } | Self::Unavailable { retry_after, .. } => *retry_after,
            Self::Transport(_) | Self::Fatal(_) => None,
        }
    }

    fn into_error(self, attempts: u32) -> LlmError {
        match self {
            Self::RateLimited { retry_after } => LlmError::RateLimited { attempts, retry_after },
            Self::Unavailable { status, message, .. } => LlmError::Unavailable { status, attempts, message },
            Self::Transport(message) => LlmError::Transport { attempts, message },
            Self::Fatal(error) => error,
        }
    }
}

/// The parts of an answer the provider uses: the content, or why there is none to parse.
struct Answer {
    content: Result<String, String>,
    usage: Option<TokenUsage>,
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// How long the provider asks to wait: OpenAI's `retry-after-ms`, else `Retry-After` in seconds.
/// (The HTTP-date form is not used by LLM providers and is ignored: back-off applies.)
fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let duration = |secs: f64| (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    number("retry-after-ms").and_then(|ms| duration(ms / 1_000.0)).or_else(|| number("retry-after").and_then(duration))
}

/// A reqwest error without the request URL's query (which may carry a key on some gateways).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(error);
    let mut detail = String::new();
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    if detail.is_empty() { kind.to_owned() } else { format!("{kind}: {detail}") }
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[async_trait]
impl LlmProvider for OpenAiProvider {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.settings.model
    }

    fn with_model(&self, model: &str) -> Result<Arc<dyn LlmProvider>, LlmError> {
        if model.trim().is_empty() {
            return Err(LlmError::Settings("model must not be empty".to_owned()));
        }
        let mut other = self.clone();
        other.settings.model = model.to_owned();
        Ok(Arc::new(other))
    }

    async fn assess(&self, role: &RoleName, documents: &DocumentTexts) -> Result<Completion<Assessment>, LlmError> {
        self.complete(calls::Assess { role, documents }).await
    }

    async fn top_tasks(&self, role: &RoleName, assessment: &Assessment) -> Result<Completion<TopTasks>, LlmError> {
        self.complete(calls::RankTasks { role, assessment }).await
    }

    async fn standardize(
        &self,
        role: &RoleName,
        assessment: &Assessment,
        top_tasks: &TopTasks,
    ) -> Result<Completion<Standardization>, LlmError> {
        self.complete(calls::Standardize { role, assessment, top_tasks }).await
    }

    async fn mine_skills(
        &self,
        role: &RoleName,
        documents: &DocumentTexts,
        assessment: &Assessment,
    ) -> Result<Completion<MinedSkills>, LlmError> {
        self.complete(calls::MineSkills { role, documents, assessment }).await
    }

    async fn architect_skills(
        &self,
        role: &RoleName,
        skills: &MinedSkills,
    ) -> Result<Completion<SkillsArchitecture>, LlmError> {
        self.complete(calls::ArchitectSkills { role, skills }).await
    }

    async fn catalog(
        &self,
        role: &RoleName,
        documents: &DocumentTexts,
        skills: &MinedSkills,
        architecture: &SkillsArchitecture,
    ) -> Result<Completion<SkillsCatalog>, LlmError> {
        self.complete(calls::Catalog { role, documents, skills, architecture }).await
    }

    async fn reskilling(
        &self,
        role: &RoleName,
        assessment: &Assessment,
        skills: &MinedSkills,
        catalog: &SkillsCatalog,
    ) -> Result<Completion<Reskilling>, LlmError> {
        self.complete(calls::Reskill { role, assessment, skills, catalog }).await
    }

    async fn feasibility(
        &self,
        role: &RoleName,
        assessment: &Assessment,
    ) -> Result<Completion<TaskFeasibility>, LlmError> {
        self.complete(calls::AssessFeasibility { role, assessment }).await
    }
}
