//! Neo4j over Bolt TLS (`bolt+s://`) with the project CA, the real server `scripts/services up
//! neo4j` starts with TLS optional on its Bolt port.

use anyhow::Context as _;
use etter_graph::{GraphConfig, GraphError, Neo4jGraph, RoleGraph as _};
use etter_test_certs::Ca;

fn setting(key: &str) -> anyhow::Result<String> {
    std::env::var(key)
        .with_context(|| format!("{key} is not set: run `scripts/services up neo4j` and `source .etter/services.env`"))
}

fn tls_config(ca_file: std::path::PathBuf) -> anyhow::Result<GraphConfig> {
    Ok(GraphConfig {
        uri: setting("ETTER_TEST__GRAPH_TLS_URI")?,
        user: std::env::var("ETTER_GRAPH__USER").unwrap_or_else(|_| "neo4j".to_owned()),
        password: std::env::var("ETTER_GRAPH__PASSWORD").unwrap_or_default().as_str().into(),
        ca_file,
    })
}

#[tokio::test]
async fn bolt_over_tls_with_the_project_ca_answers_and_a_stranger_ca_is_named() -> anyhow::Result<()> {
    let config = tls_config(setting("ETTER_TEST__TLS_CA")?.into())?;
    config.validate()?;
    let graph = Neo4jGraph::connect(&config).await?;
    graph.ensure_schema().await?;
    graph.ping().await?;

    let dir = tempfile::tempdir()?;
    let stranger = tls_config(Ca::new("a CA Neo4j does not use")?.write(dir.path(), "stranger.pem")?)?;
    let error = Neo4jGraph::connect(&stranger).await.err().context("a stranger CA was trusted")?;
    let message = error.to_string();
    assert!(matches!(error, GraphError::Config(_)), "{error:?}");
    assert!(
        message.contains("not issued by a CA this client trusts") && message.contains("`graph.ca_file`"),
        "{message}"
    );

    let plaintext = GraphConfig { uri: config.uri.replacen("bolt+s://", "bolt://", 1), ..config };
    let message = plaintext.validate().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("`graph.uri` must be bolt+s:// or neo4j+s:// when graph.ca_file is set"), "{message}");
    Ok(())
}
