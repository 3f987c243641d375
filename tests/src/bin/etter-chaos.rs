//! `etter-chaos`: the chaos run (see `etter_tests::chaos`). `./etter chaos` starts its services
//! and runs it; `--short` is the few-minute run of `./etter test`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Parser;
use etter_tests::chaos::{self, Options};

/// Kills every part of a deployment under load and checks that nothing was lost.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The few-minute run (2 faults of each kind in 3 minutes).
    #[arg(long)]
    short: bool,
    /// Minutes of load and faults (the full run).
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Faults of each kind (the full run).
    #[arg(long, default_value_t = 12)]
    faults_per_kind: u32,
    /// Where to write the report (Markdown).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Only the embedded profile's disk filling up (no load, no other faults).
    #[arg(long)]
    disk_only: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let options = if cli.short { Options::short() } else { Options::full(cli.minutes, cli.faults_per_kind) };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    if cli.disk_only {
        let disk = runtime.block_on(chaos::disk::run())?;
        println!("{disk:#?}");
        anyhow::ensure!(disk.skipped.is_none() && disk.violations.is_empty(), "the disk-full run failed");
        return Ok(());
    }
    let report = runtime.block_on(chaos::run(options))?;
    let markdown = report.markdown();
    println!("\n{markdown}");
    if let Some(path) = &cli.report {
        std::fs::write(path, &markdown).with_context(|| format!("writing {}", path.display()))?;
    }
    let failures = report.failures();
    anyhow::ensure!(failures == 0, "the chaos run found {failures} violations or unrecovered faults");
    Ok(())
}
