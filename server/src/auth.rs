//! Authentication of `PipelineService` calls: `authorization: Bearer <JWT>`.
//!
//! Tokens are HS256 JWTs with `iss`, `aud`, `exp` (and optionally `nbf`) checked with a small
//! leeway, and claims naming the caller: `sub` (user id), `role` (`viewer`, `operator`, `admin`)
//! and `companies` (the company ids the caller acts for; admins act for all). The verified
//! [`Principal`] is put into the request's extensions for the handlers. Health and reflection stay
//! open; there is no switch that turns authentication off.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use etter_pipeline::{config::AuthConfig, ids::CompanyId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::{Request, Status};

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
pub fn principal<T>(request: &Request<T>) -> Result<Principal, ApiError> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or(ApiError::Unauthenticated("the request was not authenticated"))
}

/// The claims of an Etter bearer token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    #[serde(default)]
    companies: Vec<String>,
    iss: String,
    aud: String,
    exp: u64,
    iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
}

/// Why the signing key could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The generated development secret could not be read or written.
    #[error("cannot keep the development signing secret at {path}: {source}")]
    Io {
        /// The secret file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The secret file exists but is not a usable secret.
    #[error(
        "the development signing secret at {0} is corrupt: delete it to generate a new one (tokens signed with it stop working)"
    )]
    Corrupt(PathBuf),
    /// No randomness for a new secret.
    #[error("cannot generate a signing secret: {0}")]
    Random(String),
}

/// The HS256 secret: `auth.hs256_secret`, or the embedded default's generated one, created on
/// first use under `{data_dir}/auth/` with owner-only permissions and kept across restarts.
pub fn signing_secret(auth: &AuthConfig, data_dir: &Path) -> Result<Vec<u8>, KeyError> {
    if let Some(secret) = auth.hs256_secret.expose() {
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join("auth").join("hs256.secret");
    let io = |source| KeyError::Io { path: path.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = text.trim();
            if text.len() < 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(KeyError::Corrupt(path));
            }
            return Ok(text.as_bytes().to_vec());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(hex.as_bytes()).and_then(|()| file.sync_all()).map_err(io)?;
            tracing::info!(path = %path.display(), "generated a development signing secret");
            Ok(hex.into_bytes())
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => signing_secret(auth, data_dir),
        Err(e) => Err(io(e)),
    }
}

/// Signs a token for `etter-server token`.
pub fn issue_token(
    auth: &AuthConfig,
    secret: &[u8],
    user: &str,
    role: Role,
    companies: &[CompanyId],
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims = Claims {
        sub: user.to_owned(),
        role,
        companies: companies.iter().map(ToString::to_string).collect(),
        iss: auth.issuer.clone(),
        aud: auth.audience.clone(),
        exp: now.saturating_add(ttl.as_secs()),
        iat: now,
        nbf: None,
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret))
}

/// Verifies bearer tokens; a tonic interceptor on `PipelineService`.
#[derive(Clone)]
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator for HS256 tokens signed with `secret`.
    pub fn new(auth: &AuthConfig, secret: &[u8]) -> Self {
        // Only HS256 is accepted: a token claiming any other algorithm (including `none`) fails.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&auth.issuer]);
        validation.set_audience(&[&auth.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = auth.leeway.as_secs();
        validation.validate_nbf = true;
        Self { key: DecodingKey::from_secret(secret), validation }
    }

    /// The principal of a request's `authorization` metadata.
    pub fn authenticate(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Principal, ApiError> {
        let header = metadata
            .get("authorization")
            .ok_or(ApiError::Unauthenticated("missing `authorization: Bearer <token>` metadata"))?;
        let value = header.to_str().map_err(|_| ApiError::Unauthenticated("the authorization metadata is not text"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(ApiError::Unauthenticated("the authorization metadata must be `Bearer <token>`"))?;
        let data = jsonwebtoken::decode::<Claims>(token.trim(), &self.key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            ApiError::Unauthenticated(match e.kind() {
                K::ExpiredSignature => "the token has expired",
                K::ImmatureSignature => "the token is not valid yet (nbf)",
                K::InvalidSignature => "the token's signature does not verify",
                K::InvalidIssuer => "the token's issuer is not accepted",
                K::InvalidAudience => "the token's audience is not accepted",
                K::InvalidAlgorithm | K::InvalidAlgorithmName => "the token's algorithm is not accepted",
                K::MissingRequiredClaim(_) => "the token lacks a required claim (sub, exp, iss, aud)",
                _ => "the token is malformed",
            })
        })?;
        let claims = data.claims;
        let companies = claims
            .companies
            .iter()
            .map(|c| CompanyId::parse(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ApiError::Unauthenticated("the token names an invalid company id"))?;
        if claims.role != Role::Admin && companies.is_empty() {
            return Err(ApiError::Unauthenticated("the token names no company"));
        }
        Ok(Principal { user: claims.sub, role: claims.role, companies })
    }
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let principal = self.authenticate(request.metadata())?;
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn bearer(token: &str) -> anyhow::Result<MetadataMap> {
        let mut md = MetadataMap::new();
        md.insert("authorization", format!("Bearer {token}").parse()?);
        Ok(md)
    }

    fn reason(result: Result<Principal, ApiError>) -> String {
        match result {
            Err(ApiError::Unauthenticated(why)) => why.to_owned(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn a_signed_token_gives_its_principal() -> anyhow::Result<()> {
        let auth = AuthConfig::default();
        let acme = CompanyId::parse("acme")?;
        let token =
            issue_token(&auth, SECRET, "jane", Role::Operator, std::slice::from_ref(&acme), Duration::from_secs(60))?;
        let principal = Authenticator::new(&auth, SECRET).authenticate(&bearer(&token)?)?;
        assert_eq!(principal, Principal { user: "jane".into(), role: Role::Operator, companies: vec![acme.clone()] });
        assert!(principal.is_member_of(&acme));
        assert!(!principal.is_member_of(&CompanyId::parse("globex")?));
        Ok(())
    }

    #[test]
    fn bad_tokens_are_refused_with_the_reason() -> anyhow::Result<()> {
        let auth = AuthConfig::default();
        let authn = Authenticator::new(&auth, SECRET);
        let acme = [CompanyId::parse("acme")?];
        assert!(reason(authn.authenticate(&MetadataMap::new())).contains("missing"));
        assert!(reason(authn.authenticate(&bearer("not.a.jwt")?)).contains("malformed"));
        let other =
            issue_token(&auth, b"another-secret-another-secret-xx", "jane", Role::Admin, &[], Duration::from_secs(60))?;
        assert!(reason(authn.authenticate(&bearer(&other)?)).contains("signature"));
        // `alg: none` with the same claims: never accepted.
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let body = serde_json::json!({"sub":"jane","role":"admin","iss":"etter","aud":"etter-pipeline","exp":now+60,"iat":now});
        let b64 = |v: &serde_json::Value| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let none = format!("{}.{}.", b64(&serde_json::json!({"alg":"none","typ":"JWT"})), b64(&body));
        let why = reason(authn.authenticate(&bearer(&none)?));
        assert!(why.contains("algorithm") || why.contains("malformed"), "{why}");
        let wrong_aud = AuthConfig { audience: "someone-else".into(), ..AuthConfig::default() };
        let token = issue_token(&wrong_aud, SECRET, "jane", Role::Operator, &acme, Duration::from_secs(60))?;
        assert!(reason(authn.authenticate(&bearer(&token)?)).contains("audience"));
        let no_company = issue_token(&auth, SECRET, "jane", Role::Viewer, &[], Duration::from_secs(60))?;
        assert!(reason(authn.authenticate(&bearer(&no_company)?)).contains("no company"));
        Ok(())
    }

    #[test]
    fn expiry_allows_the_leeway_and_no_more() -> anyhow::Result<()> {
        let auth = AuthConfig { leeway: Duration::from_secs(30), ..AuthConfig::default() };
        let authn = Authenticator::new(&auth, SECRET);
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let sign = |exp: u64| {
            let claims = Claims {
                sub: "jane".into(),
                role: Role::Admin,
                companies: vec![],
                iss: "etter".into(),
                aud: "etter-pipeline".into(),
                exp,
                iat: now - 3600,
                nbf: None,
            };
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET))
        };
        assert!(authn.authenticate(&bearer(&sign(now - 10)?)?).is_ok(), "10 s past exp is within the leeway");
        assert!(reason(authn.authenticate(&bearer(&sign(now - 120)?)?)).contains("expired"));
        Ok(())
    }

    #[test]
    fn the_generated_secret_is_kept() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("etter-auth-test-{}", std::process::id()));
        let auth = AuthConfig::default();
        let first = signing_secret(&auth, &dir)?;
        let second = signing_secret(&auth, &dir)?;
        assert_eq!(first, second);
        assert_eq!(first.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join("auth/hs256.secret"))?.permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
