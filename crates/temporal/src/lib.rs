//! The `[temporal]` section both binaries read, and how they connect to the cluster it names:
//! plaintext on a developer's machine; TLS with the system's roots or a private CA, a client
//! certificate (mutual TLS) and a server-name override for a self-hosted cluster; an API key for
//! Temporal Cloud.
//!
//! [`Endpoint`] is the section read and checked once (the PEM files loaded), from which every
//! connection of a process is made; a failed connection is named with the address and, when TLS
//! is why, what to change. [`client_options`] are the options of every client made on one.

mod admin;

use std::time::Duration;

use etter_config::{
    ConfigError, Secret, invalid, require_positive,
    tls::{self, ClientTls, Fixes},
};
use serde::{Deserialize, Serialize};
use temporalio_client::{ClientTlsOptions, Connection, ConnectionOptions, TlsOptions, Url};

pub use admin::{AdminClient, AdminClientError};

/// The options of a client of `namespace`, with the SDK's OpenTelemetry plugin: a workflow start
/// carries the current span's W3C trace context in its Temporal header, and a worker made on the
/// client continues it in the workflow's and each activity's span (and their headers). While
/// spans are not exported there is no current span and no header: the plugin costs nothing.
pub fn client_options(namespace: &str) -> temporalio_client::ClientOptions {
    temporalio_client::ClientOptions::new(namespace.to_owned())
        .plugin(temporalio_sdk::opentelemetry::OpenTelemetryPlugin::builder().build())
        .build()
}

/// `[temporal]`: the Temporal cluster both binaries talk to.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TemporalConfig {
    /// Frontend address, e.g. `http://127.0.0.1:7233`.
    pub address: String,
    /// Namespace (`etter-{env}`).
    pub namespace: String,
    /// Task queue of the onboarding workflows and activities.
    pub task_queue: String,
    /// Temporal Web UI, printed for people; empty when there is none.
    pub ui_url: String,
    /// Longest a whole onboarding workflow may run (set when the server starts it).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub workflow_execution_timeout: Duration,
    /// TLS to the frontend, which `https://` in `address` turns on: a private CA, a client
    /// certificate for mutual TLS (self-hosted clusters, Temporal Cloud with mTLS), a server name
    /// when the certificate does not carry the address's host.
    pub tls: ClientTls,
    /// API key sent as a bearer token with every call (Temporal Cloud's API-key authentication).
    /// Needs an `https://` address. Empty = none.
    pub api_key: Secret,
}

impl Default for TemporalConfig {
    fn default() -> Self {
        Self {
            address: "http://127.0.0.1:7233".to_owned(),
            namespace: "etter-dev".to_owned(),
            task_queue: "etter-workflows".to_owned(),
            ui_url: String::new(),
            workflow_execution_timeout: Duration::from_secs(2 * 60 * 60),
            tls: ClientTls::default(),
            api_key: Secret::default(),
        }
    }
}

impl TemporalConfig {
    /// Checks values that deserialize but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Endpoint::from_config(self).map(drop)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.namespace.is_empty() {
            return invalid("temporal.namespace", "must not be empty");
        }
        if self.task_queue.is_empty() {
            return invalid("temporal.task_queue", "must not be empty");
        }
        require_positive(&[("temporal.workflow_execution_timeout", self.workflow_execution_timeout)])
    }
}

/// The cluster's frontend as this process reaches it: the address, and the TLS material and API
/// key read from the configuration.
#[derive(Clone)]
pub struct Endpoint {
    address: String,
    url: Url,
    tls: Option<TlsOptions>,
    /// Whether a client certificate is shown.
    identity: bool,
    api_key: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Why a connection to Temporal failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Temporal at {address}{advice}")]
pub struct ConnectError {
    address: String,
    /// `: <what to change>` when TLS or the API key is why, else empty.
    advice: String,
    /// Whether the cluster refused this configuration (a certificate, trust or API-key problem,
    /// which waiting does not fix).
    refused: bool,
    #[source]
    source: temporalio_client::errors::ClientConnectError,
}

impl ConnectError {
    /// Whether the connection was refused for its configuration: a certificate, trust or API-key
    /// problem that waiting does not fix, unlike a frontend that is not up yet.
    pub fn is_refusal(&self) -> bool {
        self.refused
    }
}

impl Endpoint {
    /// Reads `[temporal]`: checks its values and loads the TLS files. An `https://` address is
    /// TLS (with the system's roots unless `tls.ca_file` says otherwise); TLS settings or an API
    /// key with an `http://` address are refused, as they would not be used and the connection
    /// would be plaintext.
    pub fn from_config(config: &TemporalConfig) -> Result<Self, ConfigError> {
        config.check()?;
        let url = match Url::parse(&config.address) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
            _ => return invalid("temporal.address", "must be an http:// or https:// URL with a host"),
        };
        let files = config.tls.load("temporal.tls")?;
        let identity = files.identity_pem.is_some();
        let secure = url.scheme() == "https";
        if !secure && config.tls.is_set() {
            return invalid(
                "temporal.address",
                "must be https:// when temporal.tls is set: with http:// the connection is plaintext",
            );
        }
        if !secure && config.api_key.is_set() {
            return invalid(
                "temporal.address",
                "must be https:// when temporal.api_key is set: over http:// the key would travel in plaintext",
            );
        }
        let tls =
            secure.then(|| {
                TlsOptions::builder()
                    .maybe_server_root_ca_cert(files.ca_pem)
                    .maybe_domain(files.server_name)
                    .maybe_client_tls_options(files.identity_pem.map(|(cert, key)| {
                        ClientTlsOptions::builder().client_cert(cert).client_private_key(key).build()
                    }))
                    .build()
            });
        Ok(Self {
            address: config.address.clone(),
            url,
            tls,
            identity,
            api_key: config.api_key.expose().map(str::to_owned),
        })
    }

    /// The configured address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Connection options for this process, shown to Temporal as `identity`.
    pub fn options(&self, identity: String, connect_timeout: Option<Duration>) -> ConnectionOptions {
        ConnectionOptions::new(self.url.clone())
            .identity(identity)
            .maybe_tls_options(self.tls.clone())
            .maybe_api_key(self.api_key.clone())
            .maybe_connect_timeout(connect_timeout)
            .build()
    }

    /// Connects as `identity`.
    pub async fn connect(
        &self,
        identity: String,
        connect_timeout: Option<Duration>,
    ) -> Result<Connection, ConnectError> {
        Connection::connect(self.options(identity, connect_timeout)).await.map_err(|source| self.error(source))
    }

    /// What to change when the cluster refused a call for who made it (`PERMISSION_DENIED` or
    /// `UNAUTHENTICATED`: an authorizer that wants an API key, or does not accept this one).
    pub fn refusal_advice(&self, code: temporalio_client::tonic::Code) -> Option<&'static str> {
        use temporalio_client::tonic::Code;
        match (code, self.api_key.is_some()) {
            (Code::PermissionDenied | Code::Unauthenticated, false) => {
                Some("the cluster authorizes calls by API key: set temporal.api_key (ETTER_TEMPORAL__API_KEY)")
            }
            (Code::PermissionDenied | Code::Unauthenticated, true) => Some(
                "the cluster does not accept temporal.api_key for this namespace: check the key, its expiry and \
                 its permissions",
            ),
            _ => None,
        }
    }

    /// Names a failed connection, with what to change when TLS is why.
    pub fn error(&self, source: temporalio_client::errors::ClientConnectError) -> ConnectError {
        let text = format!("{source} {source:?}");
        // A server that refuses a client certificate after a TLS 1.3 handshake closes the
        // connection; its alert does not reach this error. What it probably means is said as such.
        let hung_up = ["BrokenPipe", "ConnectionReset", "connection reset", "connection closed", "invalid size"];
        let hung_up = hung_up.iter().any(|n| text.contains(n));
        let closed = || match (hung_up, self.tls.is_some(), self.identity) {
            (false, _, _) => None,
            (true, false, _) => {
                Some("the frontend hung up on plaintext; if it requires TLS, use an https:// address".to_owned())
            }
            (true, true, false) => Some(
                "the frontend closed the connection after the TLS handshake; if it requires client certificates, \
                 set `temporal.tls.cert_file` and `temporal.tls.key_file`"
                    .to_owned(),
            ),
            (true, true, true) => Some(
                "the frontend closed the connection after the TLS handshake; it may not accept this client's \
                 certificate: check that `temporal.tls.cert_file` is current and issued by a CA the frontend trusts"
                    .to_owned(),
            ),
        };
        let tls_advice = tls::advice(&text, &Fixes::section("temporal.tls"));
        // An API key the authorizer cannot verify is refused already at the first call.
        let key_advice = (text.contains("PermissionDenied") || text.contains("Unauthenticated"))
            .then(|| self.refusal_advice(temporalio_client::tonic::Code::PermissionDenied).map(str::to_owned))
            .flatten();
        let refused = tls_advice.is_some() || key_advice.is_some();
        let advice = tls_advice.or(key_advice).or_else(closed).map(|advice| format!(": {advice}")).unwrap_or_default();
        ConnectError { address: self.address.clone(), advice, refused, source }
    }
}
