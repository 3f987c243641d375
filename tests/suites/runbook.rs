//! `docs/operations.md` stays true: every `sh` block of the runbook is run, in order,
//! in one bash session against a live server and worker, with the variables the runbook names.
//! Each command must succeed, and what they print must show the run going through: the services
//! listed, health SERVING, the push answered with its trace id, the watch ending READY, the
//! cancel, the retry, the re-run with another model and its comparison, history, usage, the audit
//! entries and a verified audit chain.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_tests::{
    service_setting,
    stack::{Stack, binary},
};

/// The `sh` blocks of a markdown file, in order.
fn shell_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, fence) if fence.starts_with("```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_runbook_command_succeeds_against_a_live_deployment() -> Result<()> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md"))?;
    let blocks = shell_blocks(&doc);
    ensure!(blocks.len() >= 8, "the runbook's sh blocks: {}", blocks.len());
    let grpcurl = service_setting("ETTER_TOOLS__GRPCURL", "grpcurl")?;

    let stack = Stack::new("runbook").await?;
    let server = stack.start_server().await?;
    // A second replica serving TLS with client certificates required, for the TLS recipes.
    let tls = |key| service_setting(key, "postgres");
    let (ca, server_cert, server_key) =
        (tls("ETTER_TEST__TLS_CA")?, tls("ETTER_TEST__TLS_SERVER_CERT")?, tls("ETTER_TEST__TLS_SERVER_KEY")?);
    let tls_server = stack
        .start_server_with(&[
            ("ETTER_SERVER__TLS__CERT_FILE", &server_cert),
            ("ETTER_SERVER__TLS__KEY_FILE", &server_key),
            ("ETTER_SERVER__TLS__CLIENT_CA_FILE", &ca),
        ])
        .await?;
    let worker = stack.start_worker(&[]).await?;
    let jd = stack.document("software_engineer_jd.txt")?;
    let script = format!("set -euo pipefail\n{}", blocks.join("\n"));
    let output = tokio::time::timeout(
        Duration::from_secs(400),
        tokio::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .envs(stack.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("GRPCURL", &grpcurl)
            .env("ETTER_SERVER", binary("etter-server")?)
            .env("ADDR", server.field("grpc_addr")?)
            .env("COMPANY", &stack.company)
            .env("JD", &jd)
            .env("TLS_ADDR", tls_server.field("grpc_addr")?)
            .env("TLS_METRICS", tls_server.field("metrics_addr")?)
            .env("CA", &ca)
            .env("CLIENT_CERT", tls("ETTER_TEST__TLS_CLIENT_CERT")?)
            .env("CLIENT_KEY", tls("ETTER_TEST__TLS_CLIENT_KEY")?)
            .output(),
    )
    .await
    .context("the runbook took more than 400 s")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "a runbook command failed ({}):\n{stderr}\n--- stdout ---\n{stdout}",
        output.status
    );
    for shown in [
        "etter.pipeline.v1.PipelineService",
        "grpc.health.v1.Health",
        "\"status\": \"SERVING\"",
        "etter-trace-id:",
        "\"workflowId\": \"role-onboard-cr-",
        "ROLE_STATUS_READY",
        "ROLE_STATUS_CANCELLED",
        "\"supersededWorkflowId\"",
        "\"modelChanged\": true",
        "\"model\": \"offline-cautious\"",
        "\"usedTokens\"",
        "\"action\": \"Cancel\"",
        "audit log verified",
        "etter_build_info{binary=\"etter-server\"",
    ] {
        ensure!(stdout.contains(shown), "the runbook's output lacks {shown:?}:\n{stdout}\n--- stderr ---\n{stderr}");
    }
    // GetUsage answered twice: in plaintext, and over TLS with a client certificate.
    ensure!(stdout.matches("\"periodStart\"").count() >= 2, "GetUsage over TLS did not answer:\n{stdout}");
    worker.stop().await?;
    tls_server.stop().await?;
    server.stop().await?;
    stack.cleanup().await
}
