//! `etter-server`: the gRPC control plane of the Etter onboarding pipeline.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use etter_server::config::Config;
use etter_telemetry::process;

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
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print a bearer token signed with this server's key.
    Token {
        /// A company the caller acts for (repeat for several; admins need none).
        #[arg(long = "company")]
        companies: Vec<String>,
        /// What the caller may do: viewer, operator or admin.
        #[arg(long)]
        role: etter_server::principal::Role,
        /// The caller's user id.
        #[arg(long, default_value = "dev")]
        user: String,
        /// How long the token is valid, e.g. `12h`, `30m`.
        #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the audit log's hash chain (under `server.audit_key`) and its checkpointed head;
    /// name the first bad entry (exit status 1) or print the verified head.
    Verify {
        /// A head hash recorded outside the database (the server logs the head as it advances):
        /// the log must still hold it, which catches a tail removed together with the checkpoint.
        #[arg(long, value_name = "HASH")]
        expect_head: Option<String>,
    },
}

/// `etter-server audit verify`.
fn verify_audit(config: &Config, expect_head: Option<&str>) -> anyhow::Result<()> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let store = etter_store::connect(&config.store_location()?).await?;
        let key = etter_server::audit_chain_key(config)?;
        let verified = etter_store::verify_audit(store.as_ref(), &key, expect_head).await;
        store.close().await;
        match verified {
            Ok(verified) => {
                let head = &verified.head;
                println!("audit log verified: {} entries, head {}", head.seq, head.hash);
                if verified.unkeyed > 0 {
                    println!(
                        "  the first {} entries were written before the chain was keyed; the keyed entries after them cover them",
                        verified.unkeyed
                    );
                }
                if let Some(at) = verified.expected_at {
                    println!("  the expected head is entry #{at}");
                }
                Ok(())
            }
            Err(etter_store::VerifyError::Broken(broken)) => {
                eprintln!("audit log broken: {broken}");
                std::process::exit(1);
            }
            Err(other) => Err(other.into()),
        }
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
    if let Some(Command::Audit { command: AuditCommand::Verify { expect_head } }) = &cli.command {
        return verify_audit(&config, expect_head.as_deref());
    }
    if let Some(Command::Token { companies, role, user, ttl }) = &cli.command {
        let companies =
            companies.iter().map(|c| etter_core::ids::CompanyId::parse(c)).collect::<Result<Vec<_>, _>>()?;
        if *role != etter_server::principal::Role::Admin && companies.is_empty() {
            anyhow::bail!("a {role:?} token needs at least one --company");
        }
        let secret = etter_server::auth::signing_secret(&config.auth, &config.data_dir)?;
        println!("{}", etter_server::auth::issue_token(&config.auth, &secret, user, *role, &companies, *ttl)?);
        return Ok(());
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the tokio runtime")?;
    let (log, tracing) = (config.log.clone(), config.tracing.clone());
    let ids = opentelemetry_sdk::trace::RandomIdGenerator::default();
    process::block_on_with_telemetry(&runtime, || process::init_tracing(&log, &tracing, "etter-server", ids), async {
        let shutdown = process::shutdown_signal().context("cannot listen for SIGINT/SIGTERM")?;
        etter_server::serve(config, shutdown).await.map_err(anyhow::Error::from)
    })?
}
