//! Why a step failed, and whether trying again can help.
//!
//! Every error a step meets is classified once, here: transient errors (a store or provider that is
//! briefly unavailable) are retried by Temporal under the configured retry policy; permanent ones
//! (a missing or corrupt document, a refused request) fail the step at once, because retrying the
//! same inputs cannot succeed.

use etter_core::error::chain;
use etter_core::steps::StepName;
use etter_documents::DocumentError;
use etter_graph::GraphError;
use etter_llm::LlmError;
use etter_store::{PipelineError, StoreError};
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;

/// The Temporal failure type of permanent step errors: retry policies list it as non-retryable.
pub const PERMANENT_FAILURE_TYPE: &str = "EtterPermanentStepFailure";
/// The Temporal failure type of transient step errors.
pub const TRANSIENT_FAILURE_TYPE: &str = "EtterTransientStepFailure";

/// A step's error: a stable code, a message a customer-success manager can act on, and whether
/// the same inputs can succeed later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct StepFailure {
    /// Stable UPPER_SNAKE_CASE code.
    pub code: String,
    /// What went wrong, naming the document or the store involved.
    pub message: String,
    /// Whether another attempt can succeed.
    pub recoverable: bool,
}

impl StepFailure {
    /// A failure that retrying cannot fix.
    pub fn permanent(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_owned(), message: message.into(), recoverable: false }
    }

    /// A failure that another attempt may not meet.
    pub fn transient(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_owned(), message: message.into(), recoverable: true }
    }

    /// The failure as the run store keeps it on the step.
    pub fn to_pipeline_error(&self, step: StepName) -> PipelineError {
        PipelineError {
            code: self.code.clone(),
            message: self.message.clone(),
            recoverable: self.recoverable,
            step: Some(step.as_str().to_owned()),
            action: Some(
                if self.recoverable {
                    "Retry the role; the failed steps run again"
                } else {
                    "Fix the problem the message describes, then push or retry the role"
                }
                .to_owned(),
            ),
        }
    }

    /// The failure as Temporal sees it: permanent failures are marked non-retryable so the retry
    /// policy stops at once.
    pub fn into_activity_error(self) -> ActivityError {
        let type_name = if self.recoverable { TRANSIENT_FAILURE_TYPE } else { PERMANENT_FAILURE_TYPE };
        ActivityError::application(
            ApplicationFailure::builder(self.to_string())
                .type_name(type_name.to_owned())
                .non_retryable(!self.recoverable)
                .build(),
        )
    }
}

impl From<DocumentError> for StepFailure {
    fn from(err: DocumentError) -> Self {
        // The message already names the document's URI.
        Self { code: err.code().to_owned(), message: err.to_string(), recoverable: err.recoverable() }
    }
}

impl From<GraphError> for StepFailure {
    fn from(err: GraphError) -> Self {
        let recoverable = err.is_retryable();
        let code = if recoverable { "GRAPH_UNAVAILABLE" } else { "GRAPH_ERROR" };
        Self { code: code.to_owned(), message: chain(&err).to_string(), recoverable }
    }
}

impl From<LlmError> for StepFailure {
    fn from(err: LlmError) -> Self {
        let recoverable = err.is_retryable();
        let code = match err {
            _ if recoverable => "LLM_UNAVAILABLE",
            LlmError::UnknownModel { .. } => "MODEL_NOT_AVAILABLE",
            _ => "LLM_ERROR",
        };
        Self { code: code.to_owned(), message: chain(&err).to_string(), recoverable }
    }
}

impl From<StoreError> for StepFailure {
    fn from(err: StoreError) -> Self {
        // A database that does not answer comes back; anything else is a bug or bad data that
        // another attempt would meet again.
        let recoverable = matches!(err, StoreError::Database(_) | StoreError::Io { .. });
        let code = if recoverable { "STORE_UNAVAILABLE" } else { "STORE_ERROR" };
        // The message is all that travels: with the causes (sqlx's error is the source).
        Self { code: code.to_owned(), message: chain(&err).to_string(), recoverable }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_document_is_permanent_and_named() -> anyhow::Result<()> {
        let uri = etter_documents::DocumentUri::parse("file:///roles/missing.pdf")?;
        let failure = StepFailure::from(DocumentError::NotFound { uri: uri.to_string() });
        assert!(!failure.recoverable);
        assert_eq!(failure.code, "DOCUMENT_NOT_FOUND");
        assert!(failure.message.contains("file:///roles/missing.pdf"), "{}", failure.message);
        let stored = failure.to_pipeline_error(StepName::DocumentLinking);
        assert_eq!(stored.step.as_deref(), Some("document_linking"));
        Ok(())
    }

    #[test]
    fn graph_outages_are_retried() {
        let failure = StepFailure::from(GraphError::Unavailable("connection refused".into()));
        assert!(failure.recoverable);
        assert_eq!(failure.code, "GRAPH_UNAVAILABLE");
    }
}
