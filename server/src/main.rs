//! `etter-server`: the gRPC control plane of the Etter onboarding pipeline.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use etter_pipeline::{Config, process};

/// The gRPC control plane of the Etter onboarding pipeline.
#[derive(Debug, Parser)]
#[command(name = "etter-server", version, about)]
struct Cli {
    /// TOML configuration file (layered over the defaults, under `ETTER_*` variables and flags).
    #[arg(long, global = true, env = "ETTER_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the gRPC listener (`server.listen`); port 0 picks a free port.
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Address of the `/metrics` listener (`server.metrics_listen`).
    #[arg(long, global = true)]
    metrics_listen: Option<String>,
    /// Print the effective configuration (secrets masked) and exit.
    #[arg(long, global = true)]
    dump_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the control plane (the default).
    Serve,
    /// Print the configuration key table of `docs/configuration.md`.
    ConfigTable,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::ConfigTable)) {
        print!("{}", etter_pipeline::config::render_key_table());
        return Ok(());
    }
    let mut overrides = Vec::new();
    if let Some(listen) = cli.listen {
        overrides.push(("server.listen", listen));
    }
    if let Some(listen) = cli.metrics_listen {
        overrides.push(("server.metrics_listen", listen));
    }
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    if cli.dump_config {
        print!("{}", config.to_masked_toml());
        return Ok(());
    }
    process::init_telemetry(&config.log);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the tokio runtime")?;
    runtime.block_on(etter_server::serve(config, process::shutdown_signal()))?;
    Ok(())
}
