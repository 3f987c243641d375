//! The operator console: a web page, served on the gRPC port so that it calls the API over
//! grpc-web from the same origin (no CORS, one address to give a customer-success manager).
//!
//! The page is built from `clients/web/console/` by `npm run build:console` into
//! `clients/web/dist/console/`, which is checked in and compiled into this binary: the server
//! builds and runs without Node, and `scripts/codegen --check` fails when the checked-in build is
//! not what the sources produce.
//!
//! - `GET /` redirects to `/console/`; `GET /console/` is the page, `/console/app.js` and
//!   `/console/app.css` its assets.
//! - `GET /console/config.json` tells the page what this server offers (dev login, links).
//! - `POST /console/dev-login` (only with `server.console_dev_login`, which the configuration
//!   allows on a loopback listener only) signs an operator token for the company in the body.
//!   Only the console itself may ask: the request must name a loopback host (a page of another
//!   site that rebinds its DNS name to 127.0.0.1 names its own host), come from the console's
//!   own origin when a browser says where it comes from, and carry JSON (which a page of another
//!   origin cannot send without a preflight, and nothing here answers one).
//!
//! No route here answers cross-origin requests: CORS (`server.cors_allowed_origins`) applies to
//! the gRPC-web API only.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use etter_core::ids::CompanyId;

use crate::auth::{self, KeyError};
use crate::principal::Role;
use http::HeaderName;

const INDEX_HTML: &[u8] = include_bytes!("../../clients/web/dist/console/index.html");
const APP_JS: &[u8] = include_bytes!("../../clients/web/dist/console/app.js");
const APP_CSS: &[u8] = include_bytes!("../../clients/web/dist/console/app.css");

/// How long a dev-login token is valid.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// What the console's handlers need.
struct Console {
    config: Arc<Config>,
    /// The HS256 key, when dev login is on.
    dev_signing_key: Option<Vec<u8>>,
}

/// The console's routes, or `None` when `server.console` is off. Fails when dev login is on but
/// there is no key to sign its tokens with.
pub fn router(config: Arc<Config>) -> Result<Option<Router>, KeyError> {
    if !config.server.console {
        return Ok(None);
    }
    let dev_signing_key = if config.server.console_dev_login {
        Some(auth::signing_secret(&config.auth, &config.data_dir)?)
    } else {
        None
    };
    let state = Arc::new(Console { config, dev_signing_key });
    Ok(Some(
        Router::new()
            .route("/", get(|| async { Redirect::to("/console/") }))
            .route("/console", get(|| async { Redirect::to("/console/") }))
            .route("/console/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
            .route("/console/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
            .route("/console/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
            .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
            .route("/console/config.json", get(page_config))
            .route("/console/dev-login", post(dev_login))
            .with_state(state),
    ))
}

/// A static asset: revalidated on every load (the build changes with the binary), never sniffed,
/// framed or allowed to reach other origins.
fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut response = (status, value.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn page_config(State(console): State<Arc<Console>>) -> Response {
    json(
        StatusCode::OK,
        &serde_json::json!({
            "dev_login": console.dev_signing_key.is_some(),
            "temporal_ui_url": console.config.temporal.ui_url,
            "temporal_namespace": console.config.temporal.namespace,
            "models": console.config.models.allowed,
        }),
    )
}

/// Why a dev-login request is not the console's own, or `None` when it is. Over HTTP/2 the host
/// is the request's `:authority` (`uri`), over HTTP/1.1 its Host header; `scheme` is the
/// listener's (`https` when it serves TLS).
fn foreign_request(headers: &HeaderMap, uri: &http::Uri, scheme: &str) -> Option<String> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(host) = text(header::HOST).or_else(|| uri.authority().map(http::uri::Authority::as_str)) else {
        return Some("the request names no Host".to_owned());
    };
    let hostname = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(name, _)| name),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    if !matches!(hostname.to_ascii_lowercase().as_str(), "localhost" | "::1") && !hostname.starts_with("127.") {
        return Some(format!(
            "Host {host} is not a loopback address; open the console at {scheme}://127.0.0.1:<port>/console/"
        ));
    }
    if let Some(origin) = text(header::ORIGIN)
        && !origin.eq_ignore_ascii_case(&format!("{scheme}://{host}"))
    {
        return Some(format!("Origin {origin} is not the console's own ({scheme}://{host})"));
    }
    if let Some(site) = text(HeaderName::from_static("sec-fetch-site"))
        && !matches!(site, "same-origin" | "none")
    {
        return Some(format!("the browser says the request comes from another site (Sec-Fetch-Site: {site})"));
    }
    let json_body = text(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
    if !json_body {
        return Some("the body must be JSON (Content-Type: application/json)".to_owned());
    }
    None
}

/// `{"company": "acme"}` → `{"token": …, "company": "acme", "role": "operator"}`.
async fn dev_login(State(console): State<Arc<Console>>, uri: http::Uri, headers: HeaderMap, body: Bytes) -> Response {
    let Some(key) = &console.dev_signing_key else {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "dev login is off on this server (server.console_dev_login); sign in with a token"}),
        );
    };
    let scheme = if console.config.server.tls.enabled() { "https" } else { "http" };
    if let Some(why) = foreign_request(&headers, &uri, scheme) {
        tracing::warn!(reason = %why, "console dev login refused");
        return json(StatusCode::FORBIDDEN, &serde_json::json!({"error": format!("dev login refused: {why}")}));
    }
    let company = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("company").and_then(|c| c.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let company = match CompanyId::parse(company.trim()) {
        Ok(company) => company,
        Err(e) => return json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": format!("company: {e}")})),
    };
    match auth::issue_token(
        &console.config.auth,
        key,
        "console-dev",
        Role::Operator,
        std::slice::from_ref(&company),
        DEV_TOKEN_TTL,
    ) {
        Ok(token) => {
            tracing::info!(company = %company, "console dev login");
            json(
                StatusCode::OK,
                &serde_json::json!({"token": token, "company": company.to_string(), "role": "operator"}),
            )
        }
        Err(e) => {
            json(StatusCode::INTERNAL_SERVER_ERROR, &serde_json::json!({"error": format!("cannot sign a token: {e}")}))
        }
    }
}
