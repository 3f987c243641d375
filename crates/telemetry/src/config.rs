//! The `[log]` and `[tracing]` sections.

use etter_config::tls::ClientTls;
use serde::{Deserialize, Serialize};

/// `[log]`: what both binaries log.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `etter_server=debug,info`.
    pub filter: String,
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
}

/// The output format of logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { filter: "info".to_owned(), format: LogFormat::Text }
    }
}

/// `[tracing]`: spans exported over OTLP, with W3C trace context carried across processes (the
/// callers' `traceparent`, the Temporal workflow and activity headers).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// OTLP/gRPC endpoint of a collector (`http://otel-collector:4317`); empty = spans are not
    /// exported (trace ids still are: logs, the `etter-trace-id` header, each run's trace id).
    pub otlp_endpoint: String,
    /// Fraction of the traces that start here to sample, 0.0 to 1.0. A trace that arrives with a
    /// sampling decision (`traceparent`) keeps it.
    pub sample_ratio: f64,
    /// Which spans are exported, as an `EnvFilter` directive (`info`, `etter_server=debug,info`);
    /// apart from `log.filter`, so quiet logs still give whole traces.
    pub filter: String,
    /// TLS to an `https://` endpoint: a private CA, a client certificate (mutual TLS), a
    /// server-name override. Without a CA, the system's trusted roots.
    pub tls: ClientTls,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self { otlp_endpoint: String::new(), sample_ratio: 1.0, filter: "info".to_owned(), tls: ClientTls::default() }
    }
}

impl TracingConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), etter_config::ConfigError> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return etter_config::invalid("tracing.sample_ratio", "must be between 0.0 and 1.0");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.filter) {
            return etter_config::invalid("tracing.filter", format!("is not a filter directive ({e}), e.g. info"));
        }
        let endpoint = self.otlp_endpoint.trim();
        if !(endpoint.is_empty() || endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return etter_config::invalid(
                "tracing.otlp_endpoint",
                "must be an http:// or https:// URL of an OTLP/gRPC endpoint, e.g. http://otel-collector:4317",
            );
        }
        if self.tls.is_set() && !endpoint.starts_with("https://") {
            return etter_config::invalid(
                "tracing.tls",
                "is set, but tracing.otlp_endpoint is not an https:// URL: use https:// or remove [tracing.tls]",
            );
        }
        self.tls.validate("tracing.tls")
    }

    /// Whether spans are exported.
    pub fn exports(&self) -> bool {
        !self.otlp_endpoint.trim().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(config: &TracingConfig) -> String {
        config.validate().err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn tracing_settings_are_refused_naming_the_key_and_the_fix() {
        let valid = TracingConfig { otlp_endpoint: "http://collector:4317".to_owned(), ..Default::default() };
        assert!(valid.validate().is_ok() && valid.exports());
        assert!(!TracingConfig::default().exports(), "off by default");

        let ratio = refusal(&TracingConfig { sample_ratio: 1.5, ..valid.clone() });
        assert!(ratio.contains("tracing.sample_ratio") && ratio.contains("between 0.0 and 1.0"), "{ratio}");
        let filter = refusal(&TracingConfig { filter: "info,=[".to_owned(), ..valid.clone() });
        assert!(filter.contains("tracing.filter"), "{filter}");
        let scheme = refusal(&TracingConfig { otlp_endpoint: "collector:4317".to_owned(), ..valid.clone() });
        assert!(scheme.contains("tracing.otlp_endpoint") && scheme.contains("http://"), "{scheme}");
        let tls = ClientTls { server_name: "collector.internal".to_owned(), ..ClientTls::default() };
        let plaintext_tls = refusal(&TracingConfig { tls: tls.clone(), ..valid.clone() });
        assert!(plaintext_tls.contains("tracing.tls") && plaintext_tls.contains("https://"), "{plaintext_tls}");
        let over_tls = TracingConfig { otlp_endpoint: "https://collector:4317".to_owned(), tls, ..valid };
        assert!(over_tls.validate().is_ok(), "{:?}", over_tls.validate());
        let missing = TracingConfig {
            tls: ClientTls { ca_file: "/nonexistent/ca.pem".into(), ..ClientTls::default() },
            ..over_tls
        };
        assert!(refusal(&missing).contains("tracing.tls.ca_file"), "{}", refusal(&missing));
    }
}
