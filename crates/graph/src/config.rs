//! The `[graph]` section.

use serde::{Deserialize, Serialize};

use etter_config::{ConfigError, Secret, invalid};

/// `[graph]`: the role graph.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GraphConfig {
    /// `bolt://host:port` of Neo4j (`bolt+s://` or `neo4j+s://` for TLS); empty = the embedded
    /// SQLite graph `{data_dir}/graph.db`.
    pub uri: String,
    /// PEM CA certificates Neo4j's certificate may chain to, besides the system's roots (a
    /// private CA); needs a `+s` URI. Empty = the system's roots only.
    pub ca_file: std::path::PathBuf,
    /// Neo4j user.
    pub user: String,
    /// Neo4j password (empty when the server has authentication off).
    pub password: Secret,
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            uri: String::new(),
            user: "neo4j".to_owned(),
            password: Secret::default(),
            ca_file: std::path::PathBuf::new(),
        }
    }
}

impl GraphConfig {
    /// Checks values that deserialize but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const SCHEMES: [&str; 4] = ["bolt://", "neo4j://", "bolt+s://", "neo4j+s://"];
        if !self.uri.is_empty() && !SCHEMES.iter().any(|s| self.uri.starts_with(s)) {
            return invalid(
                "graph.uri",
                "must start with bolt://, neo4j://, bolt+s:// or neo4j+s:// (TLS), or be empty for the embedded graph",
            );
        }
        if !self.ca_file.as_os_str().is_empty() {
            if !self.uri.contains("+s://") {
                return invalid(
                    "graph.uri",
                    "must be bolt+s:// or neo4j+s:// when graph.ca_file is set: without +s the connection is plaintext",
                );
            }
            etter_config::tls::certificates_pem("graph", "ca_file", &self.ca_file)?;
        }
        Ok(())
    }

    /// What the production profile requires: Neo4j's password, when Neo4j is configured.
    pub fn validate_production(&self) -> Result<(), ConfigError> {
        if !self.uri.is_empty() && !self.password.is_set() {
            return invalid(
                "graph.password",
                "is required by the production profile for Neo4j; set ETTER_GRAPH__PASSWORD",
            );
        }
        Ok(())
    }
}
