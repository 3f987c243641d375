//! The services under the deployment — PostgreSQL, Redis, Neo4j, Temporal — crashed and started
//! again through `scripts/services` (`crash`: PostgreSQL stops without a checkpoint, the others
//! get SIGKILL; `up`: started again on the same data). The harness runs them as an instance of
//! their own (`ETTER_DIR`, other ports: `./etter chaos` sets them), so nothing else on the machine
//! loses its services.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use tokio::process::Command;

use crate::stack::Temporal;

/// A service the harness crashes and starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// The run store.
    Postgres,
    /// Fan-out and limits.
    Redis,
    /// The role graph.
    Neo4j,
    /// The dev server or the cluster, whichever the deployment uses.
    Temporal,
}

impl Service {
    /// Its name for `scripts/services`.
    pub fn script_name(self) -> Result<&'static str> {
        Ok(match self {
            Service::Postgres => "postgres",
            Service::Redis => "redis",
            Service::Neo4j => "neo4j",
            Service::Temporal => match Temporal::selected()? {
                Temporal::DevServer => "temporal",
                Temporal::Cluster => "temporal-cluster",
            },
        })
    }

    /// Crashes it; answers once its process is gone.
    pub async fn crash(self) -> Result<()> {
        services(&["crash", self.script_name()?]).await
    }

    /// Starts it again (on the same data) and waits until it is ready.
    pub async fn start(self) -> Result<()> {
        services(&["up", self.script_name()?]).await
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/services")
}

async fn services(args: &[&str]) -> Result<()> {
    let output = tokio::time::timeout(Duration::from_secs(300), Command::new(script()).args(args).output())
        .await
        .with_context(|| format!("scripts/services {} took over 5 minutes", args.join(" ")))?
        .with_context(|| format!("running scripts/services {}", args.join(" ")))?;
    ensure!(
        output.status.success(),
        "scripts/services {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
