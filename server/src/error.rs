//! The one mapping from the control plane's errors to `google.rpc.Status`.
//!
//! Every error carries an `ErrorInfo { reason, domain: "etter.pipeline" }` so clients can branch on a
//! stable reason, plus the standard detail that fits: `BadRequest` field violations for invalid
//! input, `PreconditionFailure` for requests the current state refuses.

use etter_core::error::chain;
use etter_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The reason of a push refused for its deadline (`RunOptions.deadline`).
pub const DEADLINE_UNREACHABLE: &str = "DEADLINE_UNREACHABLE";

/// The `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "etter.pipeline";

/// One invalid field of a request: its path (`documents[0].uri`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field in the request.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

/// An error of the control plane's API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The call carries no valid bearer token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(std::borrow::Cow<'static, str>),
    /// The caller may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The request is invalid; nothing was stored.
    #[error("invalid request: {}", describe(.violations))]
    InvalidArgument {
        /// The stable reason (`INVALID_ROLE`, `INVALID_REQUEST`).
        reason: &'static str,
        /// Every invalid field.
        violations: Vec<Violation>,
    },
    /// The client reused a `request_id` for a different request.
    #[error("{0}")]
    RequestIdReused(String),
    /// The run, role or batch does not exist or belongs to a company the caller cannot see.
    #[error("{what} {id} not found")]
    NotFound {
        /// `run`, `role`, `batch`.
        what: &'static str,
        /// The id the caller gave.
        id: String,
    },
    /// The current state refuses the request.
    #[error("{description}")]
    FailedPrecondition {
        /// The stable reason and `PreconditionFailure.type` (`RUN_STILL_ACTIVE`, …).
        reason: &'static str,
        /// What the precondition is about (a role id, a run id).
        subject: String,
        /// What is wrong and what to do.
        description: String,
    },
    /// The run would not end by its deadline (`RunOptions.deadline`), or nothing could start it;
    /// nothing was stored. Sent as `FAILED_PRECONDITION` with reason `DEADLINE_UNREACHABLE`, the
    /// estimate in `ErrorInfo.metadata` and a `PreconditionFailure` on `options.deadline`.
    #[error("{description}")]
    DeadlineUnreachable {
        /// When the run would end, what it would wait for, and what to do.
        description: String,
        /// `estimated_duration_seconds`, `estimated_end`, `deadline`, `wait_reason`,
        /// `position_in_queue`.
        metadata: Vec<(String, String)>,
    },
    /// A concurrent request changed what this one was about (for example another Retry of the
    /// same run won); nothing was written. Look at the current state and decide again.
    #[error("{description}")]
    Aborted {
        /// The stable reason and `PreconditionFailure.type` (`CONCURRENT_RETRY`, …).
        reason: &'static str,
        /// What the conflict is about (a run id).
        subject: String,
        /// What happened and what to do.
        description: String,
    },
    /// A limit refuses the call for now: a rate limit (`retry_after` says when to try again, sent
    /// as `RetryInfo`), a cap or a budget (`quota` names what is exhausted, sent as
    /// `QuotaFailure`). Nothing was stored.
    #[error("{description}")]
    ResourceExhausted {
        /// The stable reason (`RATE_LIMITED`, `QUEUE_FULL`, `BUDGET_EXCEEDED`, …).
        reason: &'static str,
        /// What was exceeded, with the numbers, and what to do.
        description: String,
        /// When trying again can succeed.
        retry_after: Option<std::time::Duration>,
        /// (subject, description) of each exhausted quota.
        quota: Vec<(String, String)>,
    },
    /// The RPC (or this form of it) is part of the contract but not served by this version yet.
    #[error("{rpc} is not available yet: {detail}")]
    Unimplemented {
        /// The RPC's name.
        rpc: &'static str,
        /// What is missing.
        detail: &'static str,
    },
    /// A dependency (the run store) is unavailable; retrying later can succeed.
    #[error("the service is temporarily unavailable; retry later")]
    Unavailable(String),
    /// A system outside the control plane that the call needs could not answer (the document
    /// store); the description says which and what to do. Nothing was stored: the same call can
    /// be sent again.
    #[error("{description}")]
    DependencyUnavailable {
        /// The stable reason (`DOCUMENT_STORE_UNAVAILABLE`, …).
        reason: &'static str,
        /// What could not be reached and what to do.
        description: String,
    },
    /// A bug or corrupt data; the detail is logged, not sent.
    #[error("internal error; the server log has the details")]
    Internal(String),
}

fn describe(violations: &[Violation]) -> String {
    violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ")
}

impl ApiError {
    /// A `FAILED_PRECONDITION` with one `PreconditionFailure` violation: `reason` is its type,
    /// `subject` what it is about, `description` what is wrong and what to do.
    pub fn precondition(reason: &'static str, subject: impl Into<String>, description: impl Into<String>) -> Self {
        Self::FailedPrecondition { reason, subject: subject.into(), description: description.into() }
    }

    /// An `INVALID_ARGUMENT` about one field.
    pub fn invalid(reason: &'static str, field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument { reason, violations: vec![Violation::new(field, description)] }
    }

    /// The stable `ErrorInfo.reason` of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::PermissionDenied(_) => "PERMISSION_DENIED",
            Self::InvalidArgument { reason, .. } => reason,
            Self::RequestIdReused(_) => "REQUEST_ID_REUSED",
            Self::NotFound { what: "role", .. } => "ROLE_NOT_FOUND",
            Self::NotFound { what: "batch", .. } => "BATCH_NOT_FOUND",
            Self::NotFound { .. } => "RUN_NOT_FOUND",
            Self::FailedPrecondition { reason, .. }
            | Self::Aborted { reason, .. }
            | Self::ResourceExhausted { reason, .. }
            | Self::DependencyUnavailable { reason, .. } => reason,
            Self::DeadlineUnreachable { .. } => DEADLINE_UNREACHABLE,
            Self::Unimplemented { .. } => "NOT_IMPLEMENTED",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }

    fn code(&self) -> Code {
        match self {
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::InvalidArgument { .. } | Self::RequestIdReused(_) => Code::InvalidArgument,
            Self::NotFound { .. } => Code::NotFound,
            Self::FailedPrecondition { .. } | Self::DeadlineUnreachable { .. } => Code::FailedPrecondition,
            Self::Aborted { .. } => Code::Aborted,
            Self::ResourceExhausted { .. } => Code::ResourceExhausted,
            Self::Unimplemented { .. } => Code::Unimplemented,
            Self::Unavailable(_) | Self::DependencyUnavailable { .. } => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { what, id } => ApiError::NotFound { what, id },
            StoreError::RequestIdReused { .. } => ApiError::RequestIdReused(err.to_string()),
            StoreError::RunStillActive(ref active) => ApiError::FailedPrecondition {
                reason: "RUN_STILL_ACTIVE",
                subject: active.latest.to_string(),
                description: format!("{err}; wait for that run to end or cancel it before pushing other inputs"),
            },
            StoreError::IllegalTransition(ref t) => ApiError::FailedPrecondition {
                reason: "ILLEGAL_TRANSITION",
                subject: t.from.to_string(),
                description: format!("{err}; it moved on meanwhile, so read its status and decide again"),
            },
            StoreError::RoleIdCollision { .. } => ApiError::invalid("INVALID_ROLE", "role_name", err.to_string()),
            StoreError::Conflict(message) => {
                ApiError::FailedPrecondition { reason: "CONFLICT", subject: String::new(), description: message }
            }
            // The disk under the run store is full: nothing was stored, and the caller (and the
            // operator reading its message) should know why.
            StoreError::Database(_) if err.is_disk_full() => ApiError::ResourceExhausted {
                reason: "STORE_DISK_FULL",
                description: "the run store's disk is full, so nothing was stored; retry once an operator has \
                              made room (runs already accepted are kept)"
                    .to_owned(),
                retry_after: Some(std::time::Duration::from_secs(30)),
                quota: vec![("run store disk".to_owned(), "full".to_owned())],
            },
            // Logged, not sent (see below): with its cause, which is sqlx's error, not in its text.
            StoreError::Database(_) => ApiError::Unavailable(chain(&err).to_string()),
            other => ApiError::Internal(chain(&other).to_string()),
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let metadata = match &err {
            ApiError::DeadlineUnreachable { metadata, .. } => metadata.clone(),
            _ => Vec::new(),
        };
        let metadata: std::collections::HashMap<String, String> = metadata.into_iter().collect();
        let mut details = ErrorDetails::with_error_info(err.reason(), ERROR_DOMAIN, metadata);
        match &err {
            ApiError::InvalidArgument { violations, .. } => {
                for v in violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
            }
            ApiError::RequestIdReused(message) => {
                details.add_bad_request_violation("request_id", message.clone());
            }
            ApiError::FailedPrecondition { reason, subject, description }
            | ApiError::Aborted { reason, subject, description } => {
                details.add_precondition_failure_violation(*reason, subject.clone(), description.clone());
            }
            ApiError::DeadlineUnreachable { description, .. } => {
                details.add_precondition_failure_violation(err.reason(), "options.deadline", description.clone());
            }
            ApiError::ResourceExhausted { retry_after, quota, .. } => {
                if retry_after.is_some() {
                    details.set_retry_info(*retry_after);
                }
                for (subject, description) in quota {
                    details.add_quota_failure_violation(subject.clone(), description.clone());
                }
            }
            ApiError::Internal(detail) | ApiError::Unavailable(detail) => {
                tracing::error!(error = %detail, code = ?err.code(), "request failed");
            }
            _ => {}
        }
        Status::with_error_details(err.code(), err.to_string(), details)
    }
}
