//! Who is calling: the [`Principal`] the authenticator verified, and what its [`Role`] allows.
//! A leaf of the server: authentication, authorization, auditing and every handler read it,
//! and it reads nothing of theirs.

use etter_core::ids::CompanyId;
use serde::{Deserialize, Serialize};
use tonic::Request;

use crate::error::ApiError;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read runs, history and status of their companies.
    Viewer,
    /// A customer-success manager: also push, retry and cancel within their companies.
    Operator,
    /// Everything, in every company.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role `{other}` (viewer, operator or admin)")),
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The caller's user id (`sub`).
    pub user: String,
    /// What the caller may do.
    pub role: Role,
    /// The companies the caller acts for (admins act for all, whatever this lists).
    pub companies: Vec<CompanyId>,
}

impl Principal {
    /// Whether the caller belongs to `company`.
    pub fn is_member_of(&self, company: &CompanyId) -> bool {
        self.role == Role::Admin || self.companies.contains(company)
    }

    /// Checks that the caller may change runs of `company` (push, retry, cancel): an operator of
    /// that company or an admin. A viewer, or a company the caller does not belong to, is
    /// `PERMISSION_DENIED` (the request named the company, so its existence is no secret).
    pub fn authorize_write(&self, company: &CompanyId) -> Result<(), ApiError> {
        self.require_operator()?;
        self.authorize_company(company)
    }

    /// Checks that the caller may change runs at all (an operator or admin), before anything
    /// about the request is looked at.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        if self.role < Role::Operator {
            return Err(ApiError::PermissionDenied(format!(
                "user {} is a viewer and may only read; pushing, retrying and cancelling need an operator or admin",
                self.user
            )));
        }
        Ok(())
    }

    /// Checks that the caller may read what a request names by company (History, a company
    /// watch): a member of that company or an admin. Another company is `PERMISSION_DENIED` (the
    /// request named it, so its existence is no secret).
    pub fn authorize_company(&self, company: &CompanyId) -> Result<(), ApiError> {
        if self.is_member_of(company) {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied(format!("user {} does not act for company {company}", self.user)))
        }
    }

    /// Checks that the caller may see a run of `company`. A run of another company is
    /// `NOT_FOUND`, exactly as a run that does not exist (its existence is not disclosed).
    pub fn authorize_read(&self, company: &CompanyId, what: &'static str, id: &str) -> Result<(), ApiError> {
        if self.is_member_of(company) { Ok(()) } else { Err(ApiError::NotFound { what, id: id.to_owned() }) }
    }
}

/// The authenticated caller of a request, as the [`Authenticator`] left it.
pub fn of<T>(request: &Request<T>) -> Result<Principal, ApiError> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ApiError::Unauthenticated("no verified caller is attached to the request".into()))
}
