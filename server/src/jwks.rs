//! The identity provider's keys from its URL: a JWKS URL (`auth.jwks_url`), or OpenID Connect
//! discovery from the issuer (`auth.oidc_discovery`: `{issuer}/.well-known/openid-configuration`
//! names the key set).
//!
//! The set is fetched over HTTPS at start, then again when its `Cache-Control: max-age` runs out
//! (or every `auth.jwks_refresh_interval` when it says nothing), in the background. A token that
//! names a key id the set lacks asks for a fetch at once, at most one per
//! `auth.jwks_min_refetch_interval`: a key the provider just rotated in is accepted within a
//! moment, without a restart, and a key it removed stops working after the next fetch. A failed
//! fetch keeps the last good keys; the `etter.identity_provider` health entry says so.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};

use crate::config::AuthConfig;
use jsonwebtoken::{Algorithm, DecodingKey};

/// The health entry of the identity provider's key set (registered when it comes from a URL).
pub const HEALTH_SERVICE: &str = "etter.identity_provider";

/// A key tokens may be signed with (from a PEM file, a JWKS file or the provider's URL).
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    /// The JWKS `kid`; PEM keys have none and serve any token of their algorithm.
    pub(crate) kid: Option<String>,
    /// The one algorithm it verifies.
    pub(crate) algorithm: Algorithm,
    /// The key.
    pub(crate) key: DecodingKey,
}

/// The signing keys of a JWKS document (RSA and EC P-256; other keys and encryption keys are
/// skipped), or what is wrong with one of them.
pub(crate) fn keys_of_set(set: &jsonwebtoken::jwk::JwkSet) -> Result<Vec<VerifyingKey>, String> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, PublicKeyUse};
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        let name = kid.clone().unwrap_or_else(|| "(no kid)".into());
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        // Only asymmetric signing keys: a shared secret in a key set is a confusion risk.
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
            _ => {
                tracing::warn!(kid = %name, "skipping a JWKS key that is neither RSA nor EC P-256");
                continue;
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {name} is not usable: {e}"))?;
        keys.push(VerifyingKey { kid, algorithm, key });
    }
    Ok(keys)
}

/// Fetches of the key set, discovery included, give up after this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A `max-age` longer than this is not waited out: a provider saying a week is still asked daily
/// (and one saying `no-cache` is asked no more often than `auth.jwks_min_refetch_interval`).
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// After a failed fetch, the next is tried this soon (or at the refresh interval, if sooner).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// Where the key set comes from.
#[derive(Debug, Clone)]
enum Source {
    /// This URL.
    Url(url::Url),
    /// The `jwks_uri` of the issuer's discovery document.
    Discovery { issuer: String },
}

/// Why the key set could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The HTTP exchange failed.
    #[error("cannot fetch {url}: {source}")]
    Http {
        /// What was asked for.
        url: String,
        /// What reqwest said.
        source: reqwest::Error,
    },
    /// The answer is not what it should be.
    #[error("{url} {problem}")]
    Invalid {
        /// What was asked for.
        url: String,
        /// What is wrong with its answer.
        problem: String,
    },
}

/// How the last fetch went.
#[derive(Debug, Clone, Default)]
struct State {
    /// When the last fetch started (for the refetch rate limit).
    last_attempt: Option<Instant>,
    /// The last failure, until a fetch succeeds.
    failure: Option<String>,
    /// Whether any fetch succeeded.
    loaded: bool,
}

/// The identity provider's keys, fetched from its URL and kept current.
pub struct RemoteKeys {
    source: Source,
    http: reqwest::Client,
    keys: ArcSwap<Vec<VerifyingKey>>,
    state: Mutex<State>,
    refetch: Notify,
    refresh_interval: Duration,
    min_refetch: Duration,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys").field("source", &self.source).field("keys", &self.keys.load().len()).finish()
    }
}

/// What the key set's health entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The last fetch succeeded.
    pub current: bool,
    /// Keys are loaded (from this fetch or an earlier one).
    pub loaded: bool,
    /// Why the last fetch failed, when it did.
    pub failure: Option<String>,
}

impl RemoteKeys {
    /// The key set `auth` names by URL or discovery, or `None` when its keys come from files.
    /// Nothing is fetched yet: see [`RemoteKeys::run`].
    pub fn from_config(auth: &AuthConfig) -> Result<Option<Arc<Self>>, FetchError> {
        let source = match (auth.jwks_url.is_empty(), auth.oidc_discovery) {
            (true, false) => return Ok(None),
            (false, _) => Source::Url(url::Url::parse(&auth.jwks_url).map_err(|e| FetchError::Invalid {
                url: auth.jwks_url.clone(),
                problem: format!("is not a URL: {e}"),
            })?),
            (true, true) => Source::Discovery { issuer: auth.issuer.trim_end_matches('/').to_owned() },
        };
        let mut http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("etter-server/", env!("CARGO_PKG_VERSION")))
            .https_only(true);
        if !auth.jwks_ca_file.as_os_str().is_empty() {
            let pem = std::fs::read(&auth.jwks_ca_file).map_err(|e| FetchError::Invalid {
                url: auth.jwks_ca_file.display().to_string(),
                problem: format!("(auth.jwks_ca_file) cannot be read: {e}"),
            })?;
            let cas = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|source| FetchError::Http { url: auth.jwks_ca_file.display().to_string(), source })?;
            for ca in cas {
                http = http.add_root_certificate(ca);
            }
        }
        let http = http.build().map_err(|source| FetchError::Http { url: "(client)".to_owned(), source })?;
        Ok(Some(Arc::new(Self {
            source,
            http,
            keys: ArcSwap::from_pointee(Vec::new()),
            state: Mutex::new(State::default()),
            refetch: Notify::new(),
            refresh_interval: auth.jwks_refresh_interval,
            min_refetch: auth.jwks_min_refetch_interval,
        })))
    }

    /// The keys now.
    pub(crate) fn keys(&self) -> Arc<Vec<VerifyingKey>> {
        self.keys.load_full()
    }

    /// Whether the keys are current, loaded at all, and why the last fetch failed.
    pub fn status(&self) -> Status {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner).clone();
        Status { current: state.loaded && state.failure.is_none(), loaded: state.loaded, failure: state.failure }
    }

    /// Asks for a fetch now (a token named a key id the set lacks), unless one started within
    /// `auth.jwks_min_refetch_interval`. Answers whether one was asked for.
    pub fn ask_refetch(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.last_attempt.is_some_and(|at| at.elapsed() < self.min_refetch) {
            return false;
        }
        drop(state);
        self.refetch.notify_one();
        true
    }

    /// Fetches the key set until `drain` turns true: at once, then when it goes stale or a
    /// token asks for it.
    pub async fn run(self: Arc<Self>, mut drain: watch::Receiver<bool>) {
        loop {
            let next = match self.fetch_once().await {
                Ok(max_age) => max_age.unwrap_or(self.refresh_interval).clamp(self.min_refetch, MAX_MAX_AGE),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot fetch the identity provider's keys; the last good ones stay");
                    self.refresh_interval.min(RETRY_AFTER_FAILURE)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(next) => {}
                () = self.refetch.notified() => {}
                _ = drain.changed() => return,
            }
        }
    }

    /// One fetch (discovery first, when configured): on success the keys are replaced and the
    /// key set's `max-age` answered.
    pub async fn fetch_once(&self) -> Result<Option<Duration>, FetchError> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).last_attempt = Some(Instant::now());
        let result = self.fetch().await;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &result {
            Ok((keys, _)) => {
                tracing::info!(keys = keys.len(), "the identity provider's keys are loaded");
                self.keys.store(Arc::new(keys.clone()));
                state.loaded = true;
                state.failure = None;
            }
            Err(e) => state.failure = Some(e.to_string()),
        }
        result.map(|(_, max_age)| max_age)
    }

    async fn fetch(&self) -> Result<(Vec<VerifyingKey>, Option<Duration>), FetchError> {
        let url = match &self.source {
            Source::Url(url) => url.clone(),
            Source::Discovery { issuer } => self.discover(issuer).await?,
        };
        let (body, max_age) = self.get(&url).await?;
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&body).map_err(|e| FetchError::Invalid {
            url: url.to_string(),
            problem: format!("is not a JWKS document: {e}"),
        })?;
        let keys = keys_of_set(&set).map_err(|problem| FetchError::Invalid { url: url.to_string(), problem })?;
        if keys.is_empty() {
            return Err(FetchError::Invalid {
                url: url.to_string(),
                problem: "holds no RSA or EC P-256 signing key".to_owned(),
            });
        }
        Ok((keys, max_age))
    }

    /// The `jwks_uri` of `issuer`'s discovery document, whose `issuer` must be the configured one.
    async fn discover(&self, issuer: &str) -> Result<url::Url, FetchError> {
        let at = format!("{issuer}/.well-known/openid-configuration");
        let invalid = |problem: String| FetchError::Invalid { url: at.clone(), problem };
        let url = url::Url::parse(&at).map_err(|e| invalid(format!("is not a URL (auth.issuer): {e}")))?;
        let (body, _) = self.get(&url).await?;
        let document: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| invalid(format!("is not JSON: {e}")))?;
        let named = document.get("issuer").and_then(serde_json::Value::as_str).unwrap_or_default();
        if named.trim_end_matches('/') != issuer {
            return Err(invalid(format!("names the issuer {named:?}, not auth.issuer {issuer:?}")));
        }
        let jwks = document
            .get("jwks_uri")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| invalid("has no jwks_uri".to_owned()))?;
        url::Url::parse(jwks).map_err(|e| invalid(format!("has a jwks_uri that is not a URL: {e}")))
    }

    /// GETs `url`: the body, and the answer's `Cache-Control: max-age`.
    async fn get(&self, url: &url::Url) -> Result<(bytes::Bytes, Option<Duration>), FetchError> {
        let http = |source| FetchError::Http { url: url.to_string(), source };
        let answer = self.http.get(url.clone()).send().await.map_err(http)?.error_for_status().map_err(http)?;
        let max_age = answer
            .headers()
            .get_all(reqwest::header::CACHE_CONTROL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .find_map(|directive| directive.trim().strip_prefix("max-age=")?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = answer.bytes().await.map_err(http)?;
        Ok((body, max_age))
    }
}
