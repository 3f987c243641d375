//! The one mapping from the control plane's errors to `google.rpc.Status`.
//!
//! Every error carries an `ErrorInfo { reason, domain: "etter.pipeline" }` so clients can branch on a
//! stable reason, plus the standard detail that fits (field violations, retry info, …) as the
//! pipeline grows.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "etter.pipeline";

/// An error of the control plane's API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The call carries no valid bearer token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    /// The RPC is part of the contract but not served by this version yet.
    #[error("{rpc} is not available yet: {detail}")]
    Unimplemented {
        /// The RPC's name.
        rpc: &'static str,
        /// What is missing.
        detail: &'static str,
    },
}

impl ApiError {
    /// The stable `ErrorInfo.reason` of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Unimplemented { .. } => "NOT_IMPLEMENTED",
        }
    }

    fn code(&self) -> Code {
        match self {
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::Unimplemented { .. } => Code::Unimplemented,
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let details = ErrorDetails::with_error_info(err.reason(), ERROR_DOMAIN, []);
        Status::with_error_details(err.code(), err.to_string(), details)
    }
}
