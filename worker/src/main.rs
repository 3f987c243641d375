//! `etter-worker`: the Temporal worker of the Etter onboarding pipeline.
//!
//! `etter-worker` (or `etter-worker run`) runs the onboarding workflows and activities on the
//! configured task queue until SIGINT/SIGTERM; `etter-worker check` only checks that Temporal answers.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use etter_telemetry::process;
use etter_worker::config::Config;
use temporalio_client::{Client, WorkflowCountOptions};

/// The Temporal worker of the Etter onboarding pipeline.
#[derive(Debug, Parser)]
#[command(name = "etter-worker", version, about)]
struct Cli {
    /// TOML configuration file (the same table as etter-server's).
    #[arg(long, global = true, env = "ETTER_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets masked) and exit.
    #[arg(long, global = true)]
    dump_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the worker (the default).
    Run,
    /// Run a staleness scan now (on the running workers of the task queue) and print its report.
    Scan,
    /// Connect to the configured Temporal namespace, report it, and exit.
    Check,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref(), &[])?;
    if cli.dump_config {
        print!("{}", config.to_masked_toml());
        return Ok(());
    }
    match cli.command {
        Some(Command::Check) => {
            process::init_telemetry(&config.log);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the tokio runtime")?;
            runtime.block_on(check(&config))
        }
        Some(Command::Scan) => {
            process::init_telemetry(&config.log);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the tokio runtime")?;
            let report = runtime.block_on(etter_worker::scan_now(&config))?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        None | Some(Command::Run) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the tokio runtime")?;
            let start = etter_worker::init_tracing(&config);
            process::block_on_with_telemetry(&runtime, start, async {
                let shutdown = process::shutdown_signal().context("cannot listen for SIGINT/SIGTERM")?;
                etter_worker::run(config, shutdown).await.map_err(anyhow::Error::from)
            })?
        }
    }
}

/// Connects to Temporal as the worker will and prints the readiness line.
async fn check(config: &Config) -> anyhow::Result<()> {
    let endpoint = etter_temporal::Endpoint::from_config(&config.temporal)?;
    let connection = endpoint.connect("etter-worker".to_owned(), None).await?;
    let client = Client::new(connection, etter_temporal::client_options(&config.temporal.namespace))?;
    // Connecting does not touch the namespace; a visibility query does, and tells what is running.
    let query = format!("TaskQueue = '{}' AND ExecutionStatus = 'Running'", config.temporal.task_queue);
    let running = client
        .count_workflows(query, WorkflowCountOptions::default())
        .await
        .with_context(|| format!("namespace {} does not answer", config.temporal.namespace))?;
    process::print_ready_line(
        "etter-worker",
        &[
            ("temporal", config.temporal.address.clone()),
            ("namespace", config.temporal.namespace.clone()),
            ("task_queue", config.temporal.task_queue.clone()),
            ("running_workflows", running.count().to_string()),
        ],
    );
    Ok(())
}
