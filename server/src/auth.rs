//! Authentication of `PipelineService` calls: `authorization: Bearer <JWT>`.
//!
//! Tokens are JWTs signed with the identity provider's keys (RS256 or ES256: PEM public keys in
//! `auth.public_key_files`, or a JWKS file chosen by `kid`) or with an HS256 shared secret (the
//! development default, or `auth.hs256_secret`; off when the provider's keys are configured
//! without a secret). The algorithm a token declares must be one a configured key is for, so
//! `alg: none` and HS/RS key confusion never reach a verifier. `iss`, `aud`, `exp` (and `nbf`)
//! are checked with a small leeway. Claims, named as the provider names them (dotted for nested
//! ones), give the caller: a user id, a role (`viewer`, `operator`, `admin`, possibly prefixed,
//! the highest of a list counts) and the company ids the caller acts for (admins act for all).
//!
//! The verified [`Principal`] is put into the request's extensions for the handlers. Health and
//! reflection stay open; there is no switch that turns authentication off. A peer address whose
//! calls keep being refused is slowed down (`auth.unauthenticated_per_minute`).

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::config::AuthConfig;
use crate::jwks::{VerifyingKey, keys_of_set};
use etter_core::ids::CompanyId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use tonic::{Request, Status};

use crate::error::ApiError;
use crate::principal::{Principal, Role};

/// Why the keys tokens are verified with could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The generated development secret could not be kept.
    #[error("cannot prepare the development signing secret")]
    Kept(#[from] crate::tokens::KeptSecretError),
    /// A configured public key file or JWKS file cannot be used.
    #[error("{key} {path}: {problem}")]
    PublicKey {
        /// `auth.public_key_files` or `auth.jwks_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// The error of reading or parsing it, when that is what went wrong.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// This deployment verifies only its identity provider's tokens: it has no key to sign with.
    #[error(
        "this server accepts only tokens of the identity provider (auth.public_key_files / auth.jwks_file / auth.jwks_url / auth.oidc_discovery); set auth.hs256_secret to also issue tokens here"
    )]
    NoSigningKey,
    /// The key set's URL or its CA file cannot be used.
    #[error(transparent)]
    Remote(#[from] crate::jwks::FetchError),
}

/// Whether HS256 tokens are accepted: with `auth.hs256_secret`, or on a deployment without an
/// identity provider's keys (the embedded default).
fn hs256_enabled(auth: &AuthConfig) -> bool {
    auth.hs256_secret.expose().is_some()
        || (auth.public_key_files.is_empty() && auth.jwks_file.as_os_str().is_empty() && !remote_keys(auth))
}

/// The HS256 secret: `auth.hs256_secret`, or the embedded default's generated one, created on
/// first use under `{data_dir}/auth/` with owner-only permissions and kept across restarts.
/// [`KeyError::NoSigningKey`] when HS256 is off (an identity provider's keys and no secret).
pub fn signing_secret(auth: &AuthConfig, data_dir: &Path) -> Result<Vec<u8>, KeyError> {
    if let Some(secret) = auth.hs256_secret.expose() {
        return Ok(secret.as_bytes().to_vec());
    }
    if !hs256_enabled(auth) {
        return Err(KeyError::NoSigningKey);
    }
    Ok(crate::tokens::kept_secret(&data_dir.join("auth").join("hs256.secret"))?)
}

/// Sets `value` at the dotted claim `path` of `claims`, creating nested objects.
fn set_claim(claims: &mut serde_json::Map<String, serde_json::Value>, path: &str, value: serde_json::Value) {
    match path.split_once('.') {
        None => {
            claims.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let inner = claims.entry(head.to_owned()).or_insert_with(|| serde_json::json!({}));
            if !inner.is_object() {
                *inner = serde_json::json!({});
            }
            if let Some(map) = inner.as_object_mut() {
                set_claim(map, rest, value);
            }
        }
    }
}

/// The value of the dotted claim `path`.
fn claim<'a>(claims: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(claims, |value, part| value.get(part))
}

/// Signs an HS256 token for `etter-server token`, with the configured claim names.
pub fn issue_token(
    auth: &AuthConfig,
    secret: &[u8],
    user: &str,
    role: Role,
    companies: &[CompanyId],
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut claims = serde_json::Map::new();
    claims.insert("iss".into(), auth.issuer.clone().into());
    claims.insert("aud".into(), auth.audience.clone().into());
    claims.insert("exp".into(), now.saturating_add(ttl.as_secs()).into());
    claims.insert("iat".into(), now.into());
    set_claim(&mut claims, &auth.user_claim, user.into());
    let role_name = match role {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Admin => "admin",
    };
    set_claim(&mut claims, &auth.role_claim, format!("{}{role_name}", auth.role_prefix).into());
    let companies: Vec<serde_json::Value> = companies.iter().map(|c| c.to_string().into()).collect();
    set_claim(&mut claims, &auth.companies_claim, companies.into());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret))
}

/// Reads `auth.public_key_files` and `auth.jwks_file`.
fn public_keys(auth: &AuthConfig) -> Result<Vec<VerifyingKey>, KeyError> {
    let mut keys = Vec::new();
    for path in &auth.public_key_files {
        let problem = |problem: &str, source: Option<Box<dyn std::error::Error + Send + Sync>>| KeyError::PublicKey {
            key: "auth.public_key_files",
            path: path.clone(),
            problem: problem.to_owned(),
            source,
        };
        let pem = std::fs::read(path).map_err(|e| problem("cannot be read", Some(e.into())))?;
        let key = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
            VerifyingKey { kid: None, algorithm: Algorithm::RS256, key }
        } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
            VerifyingKey { kid: None, algorithm: Algorithm::ES256, key }
        } else {
            return Err(problem("is not a PEM RSA or EC P-256 public key", None));
        };
        keys.push(key);
    }
    if !auth.jwks_file.as_os_str().is_empty() {
        let path = &auth.jwks_file;
        let problem = |problem: String, source: Box<dyn std::error::Error + Send + Sync>| KeyError::PublicKey {
            key: "auth.jwks_file",
            path: path.clone(),
            problem,
            source: Some(source),
        };
        let text = std::fs::read_to_string(path).map_err(|e| problem("cannot be read".to_owned(), e.into()))?;
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(&text).map_err(|e| problem("is not a JWKS document".to_owned(), e.into()))?;
        keys.extend(keys_of_set(&set).map_err(|p| problem(p, "unusable key".into()))?);
    }
    if keys.is_empty() && !hs256_enabled(auth) && !remote_keys(auth) {
        return Err(KeyError::PublicKey {
            key: "auth.jwks_file",
            path: auth.jwks_file.clone(),
            problem: "holds no RSA or EC P-256 signing key".into(),
            source: None,
        });
    }
    Ok(keys)
}

/// Whether the identity provider's keys come from its URL.
fn remote_keys(auth: &AuthConfig) -> bool {
    !auth.jwks_url.is_empty() || auth.oidc_discovery
}

/// Verifies bearer tokens; a tonic interceptor on `PipelineService`.
#[derive(Clone)]
pub struct Authenticator {
    keys: Vec<VerifyingKey>,
    /// The identity provider's keys from its URL, when configured.
    remote: Option<std::sync::Arc<crate::jwks::RemoteKeys>>,
    issuer: String,
    audience: String,
    leeway: u64,
    user_claim: String,
    role_claim: String,
    role_prefix: String,
    companies_claim: String,
    unauthenticated: std::sync::Arc<PeerLimiter>,
    audit: Option<crate::audit::AuditLog>,
    refusals: Option<std::sync::Arc<crate::refusals::Refusals>>,
}

type PeerLimiter = governor::DefaultKeyedRateLimiter<std::net::IpAddr>;

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("keys", &self.keys.len()).finish_non_exhaustive()
    }
}

fn unauthenticated(why: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    ApiError::Unauthenticated(why.into())
}

impl Authenticator {
    /// An authenticator for tokens signed with the HS256 secret (when HS256 is on, see
    /// [`signing_secret`]) or the identity provider's keys of `auth`.
    pub fn new(auth: &AuthConfig, data_dir: &Path) -> Result<Self, KeyError> {
        let mut keys = public_keys(auth)?;
        if hs256_enabled(auth) {
            let secret = signing_secret(auth, data_dir)?;
            keys.push(VerifyingKey { kid: None, algorithm: Algorithm::HS256, key: DecodingKey::from_secret(&secret) });
        }
        let per_minute =
            std::num::NonZeroU32::new(auth.unauthenticated_per_minute).unwrap_or(std::num::NonZeroU32::MIN);
        Ok(Self {
            keys,
            remote: crate::jwks::RemoteKeys::from_config(auth)?,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            leeway: auth.leeway.as_secs(),
            user_claim: auth.user_claim.clone(),
            role_claim: auth.role_claim.clone(),
            role_prefix: auth.role_prefix.clone(),
            companies_claim: auth.companies_claim.clone(),
            unauthenticated: std::sync::Arc::new(governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute))),
            audit: None,
            refusals: None,
        })
    }

    /// Refuses the calls of callers and addresses past their budget of refused calls, before
    /// their requests are decoded.
    pub fn with_refusals(mut self, refusals: std::sync::Arc<crate::refusals::Refusals>) -> Self {
        self.refusals = Some(refusals);
        self
    }

    /// Records refused calls in `audit` (those refused for their rate excepted).
    pub fn with_audit(mut self, audit: crate::audit::AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The identity provider's keys from its URL, when configured (fetched by
    /// [`crate::jwks::RemoteKeys::run`]).
    pub fn remote_keys(&self) -> Option<std::sync::Arc<crate::jwks::RemoteKeys>> {
        self.remote.clone()
    }

    /// The refusal while the identity provider's keys were never fetched.
    fn keys_not_loaded(&self, remote: &crate::jwks::RemoteKeys) -> ApiError {
        let why = remote.status().failure.unwrap_or_else(|| "the first fetch has not finished".to_owned());
        remote.ask_refetch();
        ApiError::DependencyUnavailable {
            reason: "IDENTITY_PROVIDER_KEYS_UNAVAILABLE",
            description: format!("the identity provider's keys are not loaded yet ({why}); retry later"),
        }
    }

    /// The algorithms accepted, for messages.
    fn accepted(&self, keys: &[&VerifyingKey]) -> String {
        let mut names: Vec<String> = keys.iter().map(|k| format!("{:?}", k.algorithm)).collect();
        names.sort();
        names.dedup();
        names.join(", ")
    }

    /// The principal of a request's `authorization` metadata.
    pub fn authenticate(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Principal, ApiError> {
        let header = metadata
            .get("authorization")
            .ok_or_else(|| unauthenticated("missing `authorization: Bearer <token>` metadata"))?;
        let value = header.to_str().map_err(|_| unauthenticated("the authorization metadata is not text"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| unauthenticated("the authorization metadata must be `Bearer <token>`"))?
            .trim();
        // The algorithm is read before anything else, so `none` or an algorithm this deployment
        // has no key for is named as such (and never reaches a verifier).
        let alg = declared_algorithm(token)?;
        let remote = self.remote.as_ref().map(|remote| remote.keys());
        // The configured keys, then the provider's current set (borrowed: nothing is copied per call).
        let keys: Vec<&VerifyingKey> = self.keys.iter().chain(remote.iter().flat_map(|keys| keys.iter())).collect();
        let candidates: Vec<&VerifyingKey> =
            keys.iter().copied().filter(|k| format!("{:?}", k.algorithm) == alg).collect();
        if candidates.is_empty() {
            if let Some(remote) = &self.remote
                && !remote.status().loaded
            {
                return Err(self.keys_not_loaded(remote));
            }
            return Err(unauthenticated(format!(
                "the token's algorithm `{alg}` is not accepted here (accepted: {})",
                self.accepted(&keys)
            )));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthenticated("the token is malformed"))?;
        let candidates: Vec<&VerifyingKey> = match &header.kid {
            Some(kid) if candidates.iter().any(|k| k.kid.as_deref() == Some(kid)) => {
                candidates.into_iter().filter(|k| k.kid.as_deref() == Some(kid)).collect()
            }
            Some(kid) => {
                let anonymous: Vec<&VerifyingKey> = candidates.into_iter().filter(|k| k.kid.is_none()).collect();
                if anonymous.is_empty() {
                    // A key the provider may have just rotated in: its set is fetched again (at
                    // most once per `auth.jwks_min_refetch_interval`) and the call can be retried.
                    if let Some(remote) = &self.remote
                        && remote.ask_refetch()
                    {
                        return Err(ApiError::DependencyUnavailable {
                            reason: "IDENTITY_PROVIDER_KEYS_REFRESHING",
                            description: format!(
                                "the token's key id `{kid}` is not among the identity provider's keys known here; \
                                 they are being fetched again: retry in a second"
                            ),
                        });
                    }
                    return Err(unauthenticated(format!("the token's key id `{kid}` is not among the accepted keys")));
                }
                anonymous
            }
            None => candidates,
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        let mut refused = None;
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation) {
                Ok(data) => return self.principal(&data.claims),
                Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => refused = Some(e),
                Err(e) => return Err(verification_error(&e)),
            }
        }
        Err(refused
            .map_or_else(|| unauthenticated("the token's signature does not verify"), |e| verification_error(&e)))
    }

    /// The caller the verified `claims` name.
    fn principal(&self, claims: &serde_json::Value) -> Result<Principal, ApiError> {
        let user = claim(claims, &self.user_claim)
            .and_then(serde_json::Value::as_str)
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| unauthenticated(format!("the token lacks the user claim `{}`", self.user_claim)))?;
        let names: Vec<&str> = match claim(claims, &self.role_claim) {
            Some(serde_json::Value::String(one)) => vec![one.as_str()],
            Some(serde_json::Value::Array(many)) => many.iter().filter_map(serde_json::Value::as_str).collect(),
            _ => Vec::new(),
        };
        let role = names
            .iter()
            .filter_map(|name| name.strip_prefix(self.role_prefix.as_str()))
            .filter_map(|name| name.to_ascii_lowercase().parse::<Role>().ok())
            .max()
            .ok_or_else(|| {
                unauthenticated(format!(
                    "the token's claim `{}` names no role of {}viewer, {}operator or {}admin",
                    self.role_claim, self.role_prefix, self.role_prefix, self.role_prefix
                ))
            })?;
        let listed: Vec<&str> = match claim(claims, &self.companies_claim) {
            Some(serde_json::Value::String(text)) => {
                text.split(|c: char| c == ',' || c.is_whitespace()).filter(|c| !c.is_empty()).collect()
            }
            Some(serde_json::Value::Array(many)) => many.iter().filter_map(serde_json::Value::as_str).collect(),
            _ => Vec::new(),
        };
        let companies = listed
            .iter()
            .map(|c| CompanyId::parse(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unauthenticated(format!("the token's claim `{}`: {e}", self.companies_claim)))?;
        if role != Role::Admin && companies.is_empty() {
            return Err(unauthenticated(format!("the token names no company (claim `{}`)", self.companies_claim)));
        }
        Ok(Principal { user: user.to_owned(), role, companies })
    }

    /// Counts a refused call of `peer`; past `auth.unauthenticated_per_minute` the refusal
    /// becomes `RESOURCE_EXHAUSTED` with when to try again.
    fn refuse(&self, peer: Option<std::net::IpAddr>, error: ApiError) -> ApiError {
        let Some(peer) = peer else { return error };
        match self.unauthenticated.check_key(&peer) {
            Ok(()) => error,
            Err(not_until) => {
                let wait =
                    not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
                ApiError::ResourceExhausted {
                    reason: "UNAUTHENTICATED_RATE_LIMITED",
                    description: format!(
                        "too many calls without a valid token from {peer}; retry in {} ms with a valid bearer token",
                        wait.as_millis()
                    ),
                    retry_after: Some(wait),
                    quota: Vec::new(),
                }
            }
        }
    }

    /// Forgets peers that have not been refused lately (call now and then).
    pub fn prune(&self) {
        self.unauthenticated.retain_recent();
        self.unauthenticated.shrink_to_fit();
        if let Some(refusals) = &self.refusals {
            refusals.prune();
        }
    }
}

/// The `alg` a token's header declares, read without trusting anything else in it.
fn declared_algorithm(token: &str) -> Result<String, ApiError> {
    use base64::Engine as _;
    let malformed = || unauthenticated("the token is malformed (not a JWT: header.payload.signature)");
    let header = token.split('.').next().ok_or_else(malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| malformed())?;
    let header: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    header.get("alg").and_then(serde_json::Value::as_str).map(str::to_owned).ok_or_else(malformed)
}

fn verification_error(e: &jsonwebtoken::errors::Error) -> ApiError {
    use jsonwebtoken::errors::ErrorKind as K;
    unauthenticated(match e.kind() {
        K::ExpiredSignature => "the token has expired",
        K::ImmatureSignature => "the token is not valid yet (nbf)",
        K::InvalidSignature => "the token's signature does not verify",
        K::InvalidIssuer => "the token's issuer is not accepted",
        K::InvalidAudience => "the token's audience is not accepted",
        K::InvalidAlgorithm | K::InvalidAlgorithmName => "the token's algorithm is not accepted",
        K::MissingRequiredClaim(_) => "the token lacks a required claim (exp, iss, aud)",
        _ => "the token is malformed",
    })
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.authenticate(request.metadata()) {
            Ok(principal) => {
                if let Some(refusals) = &self.refusals {
                    let peer = request.remote_addr().map(|a| a.ip());
                    refusals.admit(peer, Some(&principal.user))?;
                }
                request.extensions_mut().insert(principal);
                Ok(request)
            }
            Err(error) => {
                let peer = request.remote_addr().map(|a| a.ip());
                if let Some(refusals) = &self.refusals {
                    refusals.admit(peer, None)?;
                }
                let refusal = self.refuse(peer, error);
                if let (Some(audit), ApiError::Unauthenticated(reason)) = (&self.audit, &refusal) {
                    let call = crate::audit::Call::of(&request);
                    let method = request.extensions().get::<crate::trace::Method>().map_or("", |m| m.0.as_str());
                    audit.refused_unauthenticated(&call, method, reason);
                }
                Err(refusal.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etter_config::Secret;
    use tonic::metadata::MetadataMap;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/auth").join(name)
    }

    fn bearer(token: &str) -> anyhow::Result<MetadataMap> {
        let mut md = MetadataMap::new();
        md.insert("authorization", format!("Bearer {token}").parse()?);
        Ok(md)
    }

    fn reason(result: Result<Principal, ApiError>) -> String {
        match result {
            Err(ApiError::Unauthenticated(why)) => why.into_owned(),
            other => format!("{other:?}"),
        }
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }

    /// Claims of a valid operator of acme, for the default claim names.
    fn claims() -> serde_json::Value {
        serde_json::json!({
            "sub": "jane", "role": "operator", "companies": ["acme"],
            "iss": "etter", "aud": "etter-pipeline", "exp": now() + 300, "iat": now(),
        })
    }

    fn sign(
        alg: Algorithm,
        kid: Option<&str>,
        key: &EncodingKey,
        claims: &serde_json::Value,
    ) -> anyhow::Result<String> {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        Ok(jsonwebtoken::encode(&header, claims, key)?)
    }

    fn rsa(name: &str) -> anyhow::Result<EncodingKey> {
        Ok(EncodingKey::from_rsa_pem(&std::fs::read(fixture(name))?)?)
    }

    fn hs_only() -> AuthConfig {
        AuthConfig { hs256_secret: Secret::from(SECRET), ..AuthConfig::default() }
    }

    /// An identity provider's keys only: a PEM RSA key and the JWKS file.
    fn idp() -> AuthConfig {
        AuthConfig {
            public_key_files: vec![fixture("rsa-public.pem")],
            jwks_file: fixture("jwks.json"),
            ..AuthConfig::default()
        }
    }

    fn scratch() -> PathBuf {
        std::env::temp_dir().join(format!("etter-auth-test-{}-{}", std::process::id(), crate::random_u128()))
    }

    #[test]
    fn a_signed_token_gives_its_principal() -> anyhow::Result<()> {
        let auth = hs_only();
        let acme = CompanyId::parse("acme")?;
        let token = issue_token(
            &auth,
            SECRET.as_bytes(),
            "jane",
            Role::Operator,
            std::slice::from_ref(&acme),
            Duration::from_secs(60),
        )?;
        let principal = Authenticator::new(&auth, &scratch())?.authenticate(&bearer(&token)?)?;
        assert_eq!(principal, Principal { user: "jane".into(), role: Role::Operator, companies: vec![acme.clone()] });
        assert!(principal.is_member_of(&acme));
        assert!(!principal.is_member_of(&CompanyId::parse("globex")?));
        Ok(())
    }

    #[test]
    fn bad_tokens_are_refused_with_the_reason() -> anyhow::Result<()> {
        let auth = hs_only();
        let authn = Authenticator::new(&auth, &scratch())?;
        let hs = EncodingKey::from_secret(SECRET.as_bytes());
        assert!(reason(authn.authenticate(&MetadataMap::new())).contains("missing"));
        assert!(reason(authn.authenticate(&bearer("not.a.jwt")?)).contains("malformed"));
        let other = EncodingKey::from_secret(b"another-secret-another-secret-xx");
        assert!(
            reason(authn.authenticate(&bearer(&sign(Algorithm::HS256, None, &other, &claims())?)?))
                .contains("signature")
        );
        // `alg: none` with the same claims: named, never accepted.
        let b64 = |v: &serde_json::Value| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let none = format!("{}.{}.", b64(&serde_json::json!({"alg":"none","typ":"JWT"})), b64(&claims()));
        let why = reason(authn.authenticate(&bearer(&none)?));
        assert!(why.contains("algorithm `none` is not accepted"), "{why}");
        let mut wrong_aud = claims();
        wrong_aud["aud"] = "someone-else".into();
        assert!(
            reason(authn.authenticate(&bearer(&sign(Algorithm::HS256, None, &hs, &wrong_aud)?)?)).contains("audience")
        );
        let mut wrong_iss = claims();
        wrong_iss["iss"] = "evil".into();
        assert!(
            reason(authn.authenticate(&bearer(&sign(Algorithm::HS256, None, &hs, &wrong_iss)?)?)).contains("issuer")
        );
        let mut no_company = claims();
        no_company["companies"] = serde_json::json!([]);
        assert!(
            reason(authn.authenticate(&bearer(&sign(Algorithm::HS256, None, &hs, &no_company)?)?))
                .contains("no company")
        );
        let mut no_role = claims();
        no_role["role"] = "superuser".into();
        assert!(
            reason(authn.authenticate(&bearer(&sign(Algorithm::HS256, None, &hs, &no_role)?)?)).contains("no role")
        );
        let mut later = claims();
        later["nbf"] = (now() + 600).into();
        assert!(
            reason(authn.authenticate(&bearer(&sign(Algorithm::HS256, None, &hs, &later)?)?)).contains("not valid yet")
        );
        // An RS256 token where only HS256 is configured: its algorithm is refused by name.
        let rs = sign(Algorithm::RS256, None, &rsa("rsa-private.pem")?, &claims())?;
        assert!(reason(authn.authenticate(&bearer(&rs)?)).contains("`RS256` is not accepted"));
        Ok(())
    }

    #[test]
    fn expiry_allows_the_leeway_and_no_more() -> anyhow::Result<()> {
        let auth = AuthConfig { leeway: Duration::from_secs(30), ..hs_only() };
        let authn = Authenticator::new(&auth, &scratch())?;
        let hs = EncodingKey::from_secret(SECRET.as_bytes());
        let at = |exp: u64| {
            let mut c = claims();
            c["exp"] = exp.into();
            sign(Algorithm::HS256, None, &hs, &c)
        };
        assert!(authn.authenticate(&bearer(&at(now() - 10)?)?).is_ok(), "10 s past exp is within the leeway");
        assert!(reason(authn.authenticate(&bearer(&at(now() - 120)?)?)).contains("expired"));
        let mut no_exp = claims();
        no_exp.as_object_mut().map(|c| c.remove("exp"));
        assert!(
            reason(authn.authenticate(&bearer(&sign(Algorithm::HS256, None, &hs, &no_exp)?)?))
                .contains("required claim")
        );
        Ok(())
    }

    #[test]
    fn identity_provider_keys_verify_rs256_and_es256_and_turn_hs256_off() -> anyhow::Result<()> {
        let authn = Authenticator::new(&idp(), &scratch())?;
        // The PEM key (no kid), and the JWKS keys by kid.
        let pem = sign(Algorithm::RS256, None, &rsa("rsa-private.pem")?, &claims())?;
        assert_eq!(authn.authenticate(&bearer(&pem)?)?.user, "jane");
        let jwks_rsa = sign(Algorithm::RS256, Some("idp-rsa-2026"), &rsa("rsa2-private.pem")?, &claims())?;
        assert_eq!(authn.authenticate(&bearer(&jwks_rsa)?)?.role, Role::Operator);
        let ec = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec-private.pem"))?)?;
        let jwks_ec = sign(Algorithm::ES256, Some("idp-ec-2026"), &ec, &claims())?;
        assert_eq!(authn.authenticate(&bearer(&jwks_ec)?)?.companies, [CompanyId::parse("acme")?]);
        // A kid naming another key than the one that signed: the signature fails.
        let swapped = sign(Algorithm::RS256, Some("idp-rsa-2026"), &rsa("rsa-private.pem")?, &claims())?;
        assert!(reason(authn.authenticate(&bearer(&swapped)?)).contains("signature"));
        // Without the HS256 secret, HS256 is off: the classic key confusion (the public key's PEM
        // bytes used as an HMAC secret) and any shared-secret token are refused by algorithm.
        let confused = EncodingKey::from_secret(&std::fs::read(fixture("rsa-public.pem"))?);
        let why = reason(authn.authenticate(&bearer(&sign(Algorithm::HS256, None, &confused, &claims())?)?));
        assert!(why.contains("`HS256` is not accepted") && why.contains("ES256, RS256"), "{why}");
        // An ES256 token carrying an RSA key's kid finds no EC key of that id.
        let odd = sign(Algorithm::ES256, Some("idp-rsa-2026"), &ec, &claims())?;
        assert!(
            reason(authn.authenticate(&bearer(&odd)?)).contains("signature")
                || reason(authn.authenticate(&bearer(&odd)?)).contains("key id")
        );
        // And this server cannot issue tokens.
        assert!(matches!(signing_secret(&idp(), &scratch()), Err(KeyError::NoSigningKey)));
        Ok(())
    }

    #[test]
    fn claim_names_and_role_values_follow_the_identity_provider() -> anyhow::Result<()> {
        let auth = AuthConfig {
            user_claim: "email".into(),
            role_claim: "realm_access.roles".into(),
            role_prefix: "etter-".into(),
            companies_claim: "ext.companies".into(),
            ..idp()
        };
        let authn = Authenticator::new(&auth, &scratch())?;
        let key = rsa("rsa-private.pem")?;
        let claims = serde_json::json!({
            "email": "jane@acme.example", "realm_access": {"roles": ["offline_access", "etter-viewer", "etter-admin"]},
            "ext": {"companies": "acme, globex"},
            "iss": "etter", "aud": "etter-pipeline", "exp": now() + 300,
        });
        let principal = authn.authenticate(&bearer(&sign(Algorithm::RS256, None, &key, &claims)?)?)?;
        assert_eq!(principal.user, "jane@acme.example");
        assert_eq!(principal.role, Role::Admin, "the highest role listed counts");
        assert_eq!(principal.companies, [CompanyId::parse("acme")?, CompanyId::parse("globex")?]);
        // Without the prefix a role name does not count.
        let mut plain = claims.clone();
        plain["realm_access"]["roles"] = serde_json::json!(["admin"]);
        let why = reason(authn.authenticate(&bearer(&sign(Algorithm::RS256, None, &key, &plain)?)?));
        assert!(why.contains("realm_access.roles") && why.contains("etter-operator"), "{why}");
        let mut nameless = claims;
        nameless.as_object_mut().map(|c| c.remove("email"));
        assert!(
            reason(authn.authenticate(&bearer(&sign(Algorithm::RS256, None, &key, &nameless)?)?)).contains("`email`")
        );
        // The server's own tokens use the configured names too.
        let issuing = AuthConfig { hs256_secret: Secret::from(SECRET), ..auth };
        let token = issue_token(
            &issuing,
            SECRET.as_bytes(),
            "ops@etter",
            Role::Viewer,
            &[CompanyId::parse("acme")?],
            Duration::from_secs(60),
        )?;
        let principal = Authenticator::new(&issuing, &scratch())?.authenticate(&bearer(&token)?)?;
        assert_eq!((principal.user.as_str(), principal.role), ("ops@etter", Role::Viewer));
        Ok(())
    }

    #[test]
    fn unusable_key_files_are_named() -> anyhow::Result<()> {
        let not_a_key = AuthConfig { public_key_files: vec![fixture("jwks.json")], ..AuthConfig::default() };
        let err = Authenticator::new(&not_a_key, &scratch()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("auth.public_key_files") && err.contains("jwks.json"), "{err}");
        let not_jwks = AuthConfig { jwks_file: fixture("rsa-public.pem"), ..AuthConfig::default() };
        let err = Authenticator::new(&not_jwks, &scratch()).err();
        // The parser's complaint is the source, not repeated in the message.
        let source = err.as_ref().and_then(std::error::Error::source);
        let source = source.and_then(|s| s.downcast_ref::<serde_json::Error>()).map(ToString::to_string);
        let err = err.map(|e| etter_core::error::chain(&e).to_string()).unwrap_or_default();
        let source = source.ok_or_else(|| anyhow::anyhow!("want serde_json's error as the source: {err}"))?;
        assert!(err.contains("auth.jwks_file") && err.contains("not a JWKS"), "{err}");
        assert_eq!(err.matches(&source).count(), 1, "{err}");
        Ok(())
    }

    #[test]
    fn refused_peers_are_slowed_down_past_their_quota() -> anyhow::Result<()> {
        let auth = AuthConfig { unauthenticated_per_minute: 3, ..hs_only() };
        let authn = Authenticator::new(&auth, &scratch())?;
        let peer: std::net::IpAddr = "127.0.0.9".parse()?;
        let other: std::net::IpAddr = "127.0.0.10".parse()?;
        let refusal = || authn.authenticate(&MetadataMap::new()).err().unwrap_or(ApiError::Internal(String::new()));
        for _ in 0..3 {
            assert!(matches!(authn.refuse(Some(peer), refusal()), ApiError::Unauthenticated(_)));
        }
        match authn.refuse(Some(peer), refusal()) {
            ApiError::ResourceExhausted { retry_after: Some(wait), .. } => assert!(wait > Duration::ZERO),
            other => panic!("the fourth refusal within a minute must be RESOURCE_EXHAUSTED: {other:?}"),
        }
        assert!(
            matches!(authn.refuse(Some(other), refusal()), ApiError::Unauthenticated(_)),
            "another peer is not slowed"
        );
        Ok(())
    }

    #[test]
    fn the_generated_secret_is_kept() -> anyhow::Result<()> {
        let dir = scratch();
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

#[cfg(test)]
mod remote_key_tests {
    use super::*;
    use crate::error::ApiError;
    use anyhow::Context as _;
    use etter_test_certs::{Ca, LOOPBACK_NAMES, SigningKey, Validity};
    use std::{
        sync::{Arc, Mutex},
        time::{Duration, Instant},
    };
    use tokio::sync::watch;

    /// An identity provider over HTTPS: its discovery document, and a key set the test changes
    /// (served with `Cache-Control: max-age=1`), or errors while it is `down`.
    struct Provider {
        base: String,
        keys: Arc<Mutex<Vec<serde_json::Value>>>,
        down: Arc<std::sync::atomic::AtomicBool>,
        ca_file: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Provider {
        async fn start() -> anyhow::Result<Self> {
            use axum::{response::IntoResponse, routing::get};
            let json = http::HeaderValue::from_static("application/json");
            let dir = tempfile::tempdir()?;
            let ca = Ca::new("identity provider CA")?;
            let issued = ca.server(dir.path(), "idp", LOOPBACK_NAMES, Validity::Current)?;
            let tls = etter_config::tls::ServerTls {
                cert_file: issued.cert_file,
                key_file: issued.key_file,
                ..etter_config::tls::ServerTls::default()
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let base = format!("https://localhost:{}", listener.local_addr()?.port());
            let keys: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
            let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (served, failing, issuer) = (Arc::clone(&keys), Arc::clone(&down), base.clone());
            let discovery = serde_json::json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/keys") }).to_string();
            let json_too = json.clone();
            let app = axum::Router::new()
                .route(
                    "/.well-known/openid-configuration",
                    get(move || async move { ([(http::header::CONTENT_TYPE, json)], discovery) }),
                )
                .route(
                    "/keys",
                    get(move || async move {
                        if failing.load(std::sync::atomic::Ordering::SeqCst) {
                            return http::StatusCode::SERVICE_UNAVAILABLE.into_response();
                        }
                        let set = serde_json::json!({ "keys": served.lock().map(|k| k.clone()).unwrap_or_default() });
                        let max_age = http::HeaderValue::from_static("public, max-age=1");
                        (
                            [(http::header::CACHE_CONTROL, max_age), (http::header::CONTENT_TYPE, json_too)],
                            set.to_string(),
                        )
                            .into_response()
                    }),
                );
            let incoming = etter_tls::Incoming::new(listener, etter_tls::Acceptor::new(&tls, "test.tls")?, "idp")?;
            tokio::spawn(async move { axum::serve(incoming, app).await });
            let ca_file = ca.write(dir.path(), "ca.pem")?;
            Ok(Self { base, keys, down, ca_file, _dir: dir })
        }

        fn serve(&self, keys: &[&SigningKey]) -> anyhow::Result<()> {
            let jwks = keys.iter().map(|k| k.jwk()).collect::<anyhow::Result<Vec<_>>>()?;
            *self.keys.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = jwks;
            Ok(())
        }

        fn auth(&self) -> AuthConfig {
            AuthConfig {
                issuer: self.base.clone(),
                oidc_discovery: true,
                jwks_ca_file: self.ca_file.clone(),
                jwks_min_refetch_interval: Duration::from_millis(200),
                ..AuthConfig::default()
            }
        }
    }

    fn token(auth: &AuthConfig, key: &SigningKey) -> anyhow::Result<tonic::metadata::MetadataMap> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let claims = serde_json::json!({
            "iss": auth.issuer, "aud": auth.audience, "exp": now + 300, "sub": "csm@example.com",
            "role": "operator", "companies": ["acme"],
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        let signed = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_pem(key.private_pem().as_bytes())?,
        )?;
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("authorization", format!("Bearer {signed}").parse()?);
        Ok(metadata)
    }

    /// Waits until `check` holds for the answer to `metadata` (within 10 s).
    async fn until(
        authenticator: &crate::auth::Authenticator,
        metadata: &tonic::metadata::MetadataMap,
        what: &str,
        check: impl Fn(&Result<crate::principal::Principal, ApiError>) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = authenticator.authenticate(metadata);
            if check(&answer) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "{what}: still {:?} after 10 s", answer.map(|p| p.user));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn rotated_keys_are_accepted_without_a_restart_and_removed_ones_refused() -> anyhow::Result<()> {
        let provider = Provider::start().await?;
        let (old, new) = (SigningKey::new("2026-11")?, SigningKey::new("2026-12")?);
        provider.serve(&[&old])?;
        let auth = provider.auth();
        let dir = tempfile::tempdir()?;
        let authenticator = crate::auth::Authenticator::new(&auth, dir.path())?;
        let remote = authenticator.remote_keys().context("keys from the provider's URL")?;
        let (_stop, drain) = watch::channel(false);
        tokio::spawn(Arc::clone(&remote).run(drain));

        // Discovered, fetched, verifying.
        let with_old = token(&auth, &old)?;
        until(&authenticator, &with_old, "the first key", |a| a.is_ok()).await?;
        assert!(remote.status().current);

        // The provider rotates a key in: a token signed with it asks for a fetch and is accepted.
        provider.serve(&[&old, &new])?;
        let with_new = token(&auth, &new)?;
        // Right after a fetch (within the refetch interval) it is refused as unknown; otherwise
        // the caller is told to retry while the set is fetched again.
        match authenticator.authenticate(&with_new) {
            Ok(_) | Err(ApiError::DependencyUnavailable { reason: "IDENTITY_PROVIDER_KEYS_REFRESHING", .. }) => {}
            Err(ApiError::Unauthenticated(why)) => assert!(why.contains("key id `2026-12`"), "{why}"),
            Err(other) => panic!("unexpected refusal of a rotated-in key: {other:?}"),
        }
        until(&authenticator, &with_new, "the rotated-in key", |a| a.is_ok()).await?;

        // The provider drops the old key: after the next fetch its tokens are refused.
        provider.serve(&[&new])?;
        until(&authenticator, &with_old, "the removed key", |a| matches!(a, Err(ApiError::Unauthenticated(_)))).await?;

        // The provider fails: the last good keys stay, and the status says the set may be stale.
        provider.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while remote.status().current {
            anyhow::ensure!(Instant::now() < deadline, "a failing provider still counts as current");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = remote.status();
        assert!(status.loaded && status.failure.as_deref().is_some_and(|f| f.contains("503")), "{status:?}");
        assert!(authenticator.authenticate(&with_new).is_ok(), "the last good keys verify while it is down");
        Ok(())
    }

    #[tokio::test]
    async fn a_provider_whose_certificate_is_not_trusted_is_named_and_nothing_is_accepted() -> anyhow::Result<()> {
        let provider = Provider::start().await?;
        let key = SigningKey::new("k1")?;
        provider.serve(&[&key])?;
        let auth = AuthConfig { jwks_ca_file: std::path::PathBuf::new(), ..provider.auth() };
        let dir = tempfile::tempdir()?;
        let authenticator = crate::auth::Authenticator::new(&auth, dir.path())?;
        let remote = authenticator.remote_keys().context("keys from the provider's URL")?;
        let error = remote.fetch_once().await.err().context("a private CA was trusted without auth.jwks_ca_file")?;
        let message = etter_core::error::chain(&error).to_string();
        assert!(message.contains("/.well-known/openid-configuration") && message.contains("certificate"), "{message}");
        let refused = authenticator.authenticate(&token(&auth, &key)?);
        assert!(
            matches!(&refused, Err(ApiError::DependencyUnavailable { reason: "IDENTITY_PROVIDER_KEYS_UNAVAILABLE", description }) if description.contains("/.well-known/openid-configuration")),
            "{refused:?}"
        );
        Ok(())
    }
}
