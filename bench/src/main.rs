//! `etter-bench`: the control plane's cost, measured side by side with baselines on the same
//! machine in the same run. Scenario results go into the generated part of
//! `docs/BENCHMARKS.md`; `./etter bench` builds in release mode and runs everything.
//!
//! Each scenario deploys the built `etter-server` (and `etter-worker`) the way the e2e suites do,
//! on the PostgreSQL profile (PostgreSQL, Redis, Neo4j) and on the embedded SQLite profile, with
//! authentication, rate limits, quotas, validation and audit on. Targets are reported, never
//! asserted: these machines are shared and noisy. What is asserted is that each scenario did what
//! it measures (every push queued, every stream saw every event, every role ended READY).

mod baseline;
mod deploy;
mod measure;
mod micro;
mod relay;
mod report;
mod scenarios;
mod shape;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use etter_tests::stack::Profile;

/// Full sizes (the issue's) or small ones (CI: the harness cannot rot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The sizes: 2,500-role batches, 1,000 streams, 2,500 roles end to end.
    Full,
    /// Small sizes, for a debug build in CI.
    Short,
}

impl Mode {
    /// `full` in full mode, `short` in short mode.
    pub fn pick<T>(self, full: T, short: T) -> T {
        match self {
            Mode::Full => full,
            Mode::Short => short,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Push through every guard vs a bare StartWorkflowExecution, at 1, 8 and 64 clients.
    Push,
    /// GetStatus with auth vs a bare tonic server answering the same bytes.
    Read,
    /// PushBatch of 2,500 roles: time to acknowledge, server CPU per item.
    Batch,
    /// The same with every document in a local S3-compatible store (moto).
    BatchS3,
    /// 1,000 WatchStatus streams: event latency and server memory.
    Fanout,
    /// 2,500 roles end to end vs the same workflow with no-op activities on the same dev server.
    E2e,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProfileArg {
    /// PostgreSQL run store, Redis fan-out, Neo4j role graph.
    Postgres,
    /// The embedded default: SQLite run store and role graph.
    Sqlite,
}

#[derive(Parser)]
#[command(name = "etter-bench", about = "Benchmarks of the Etter control plane against same-run baselines")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs scenarios (all when none is named) and reports them.
    Run {
        /// Small sizes (CI); the report says so.
        #[arg(long)]
        short: bool,
        /// The deployment profiles to run each scenario in.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "postgres,sqlite")]
        profiles: Vec<ProfileArg>,
        /// Writes the results into this Markdown file, between its generated-part markers.
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// Writes the results as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Adds the criterion micro-benchmarks' results from this directory (`target/criterion`
        /// after `cargo bench`).
        #[arg(long)]
        criterion: Option<PathBuf>,
        /// The scenarios to run.
        #[arg(value_enum)]
        scenarios: Vec<Scenario>,
    },
    /// The read path's baseline server (started by `run read`): answers GetStatus with the
    /// encoded GetStatusResponse in FILE.
    Echo {
        /// An encoded `GetStatusResponse`.
        file: PathBuf,
    },
    /// The push scenario's floor server (started by `run push`): each Push is one durable insert
    /// into STORE, then a bare start of a no-op workflow on TASK_QUEUE.
    Floor {
        /// `sqlite://PATH` or a PostgreSQL URL.
        store: String,
        /// The task queue of the no-op workflows (nobody polls it).
        task_queue: String,
    },
    /// The fan-out scenario's floor server (started by `run fanout`): relays the events of one
    /// company stream of etter-server, as bytes, to every WatchStatus stream of its own.
    Relay {
        /// etter-server's gRPC address (`host:port`).
        grpc_addr: String,
        /// A viewer's bearer token.
        token: String,
        /// The company to watch.
        company: String,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Echo { file } => baseline::serve_echo(&file).await,
        Command::Floor { store, task_queue } => baseline::serve_floor(&store, task_queue).await,
        Command::Relay { grpc_addr, token, company } => relay::serve(&grpc_addr, &token, &company).await,
        Command::Run { short, profiles, markdown, json, criterion, scenarios } => {
            let mode = if short { Mode::Short } else { Mode::Full };
            let scenarios = if scenarios.is_empty() {
                vec![Scenario::Push, Scenario::Read, Scenario::Batch, Scenario::Fanout, Scenario::E2e]
            } else {
                scenarios
            };
            let mut report = report::Report {
                mode: mode.pick("full", "short"),
                build: if cfg!(debug_assertions) { "debug" } else { "release" },
                machine: report::machine(),
                sections: Vec::new(),
            };
            // The micro-benchmarks were measured before the run: their section comes first.
            if let Some(dir) = &criterion {
                report.sections.push(micro::section(dir)?);
            }
            for scenario in scenarios {
                for profile in &profiles {
                    let profile = match profile {
                        ProfileArg::Postgres => Profile::Postgres,
                        ProfileArg::Sqlite => Profile::Embedded,
                    };
                    eprintln!("etter-bench: {scenario:?} on {} …", profile.name());
                    let started = std::time::Instant::now();
                    let section = match scenario {
                        Scenario::Push => scenarios::push::run(profile, mode).await,
                        Scenario::Read => scenarios::read::run(profile, mode).await,
                        Scenario::Batch => {
                            scenarios::batch::run(profile, mode, scenarios::batch::Source::FileRoot).await
                        }
                        Scenario::BatchS3 => scenarios::batch::run(profile, mode, scenarios::batch::Source::S3).await,
                        Scenario::Fanout => scenarios::fanout::run(profile, mode).await,
                        Scenario::E2e => scenarios::e2e::run(profile, mode).await,
                    }
                    .with_context(|| format!("{scenario:?} on {}", profile.name()))?;
                    eprintln!("etter-bench: {scenario:?} on {} done in {:.0?}", profile.name(), started.elapsed());
                    report.sections.push(section);
                    // Written after every section: a long run stopped part-way keeps what it measured.
                    if let Some(path) = &markdown {
                        report.write_into(path)?;
                    }
                }
            }
            print!("{}", report.markdown());
            if let Some(path) = &markdown {
                report.write_into(path)?;
            }
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
    }
}
