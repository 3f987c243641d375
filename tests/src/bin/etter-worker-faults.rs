//! `etter-worker-faults`: `etter-worker run` for the end-to-end tests, injecting the faults
//! `ETTER_TEST_FAULTS` asks for (`pause_after:<step>`, `fail:<step>`, `;`-separated). Part of the
//! test crate: never shipped, never run by `./etter dev`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use etter_telemetry::process;
use etter_worker::config::Config;
use etter_worker::faults::Faults;

/// etter-worker with fault injection, for tests.
#[derive(Debug, Parser)]
#[command(name = "etter-worker-faults", version, about)]
struct Cli {
    /// TOML configuration file (the same table as etter-server's).
    #[arg(long, global = true, env = "ETTER_CONFIG")]
    config: Option<PathBuf>,
    /// Accepted for the tests' command lines (`etter-worker-faults run`); running is all it does.
    #[arg(value_parser = ["run"])]
    command: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref(), &[])?;
    let faults = Faults::from_env()?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the tokio runtime")?;
    let start = etter_worker::init_tracing(&config);
    process::block_on_with_telemetry(&runtime, start, async {
        let shutdown = process::shutdown_signal().context("cannot listen for SIGINT/SIGTERM")?;
        etter_worker::run_with_faults(config, faults, shutdown).await.map_err(anyhow::Error::from)
    })?
}
