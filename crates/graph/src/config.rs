//! The `[graph]` section.

use serde::{Deserialize, Serialize};

use etter_config::{ConfigError, Secret, invalid};

/// `[graph]`: the role graph.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GraphConfig {
    /// `bolt://host:port` of Neo4j; empty = the embedded SQLite graph `{data_dir}/graph.db`.
    pub uri: String,
    /// Neo4j user.
    pub user: String,
    /// Neo4j password (empty when the server has authentication off).
    pub password: Secret,
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self { uri: String::new(), user: "neo4j".to_owned(), password: Secret::default() }
    }
}

impl GraphConfig {
    /// Checks values that deserialize but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.uri.is_empty() && !self.uri.starts_with("bolt://") && !self.uri.starts_with("neo4j://") {
            return invalid("graph.uri", "must start with bolt:// or neo4j://, or be empty for the embedded graph");
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
