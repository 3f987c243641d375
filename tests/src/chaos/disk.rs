//! The embedded profile's disk filling up: the data directory (SQLite run store and role graph)
//! on a small tmpfs of its own, filled while pushes arrive, then freed. Writes must be refused
//! with a clear error while it is full, nothing acknowledged may be lost, and writes must be
//! accepted again once there is room. Mounting needs root (`./etter chaos` runs as root in CI).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{Document, DocumentType, PushRequest, RoleStatus};
use tokio::process::Command;

use super::api::{Api, Outcome};
use crate::stack::{Profile, Stack, wait_final};

/// What the disk-full run saw.
#[derive(Debug, Default)]
pub struct DiskReport {
    /// Pushes acknowledged before, during and after the disk was full.
    pub acknowledged: [usize; 3],
    /// How pushes were refused while it was full (code and message), with counts.
    pub refusals: std::collections::BTreeMap<String, usize>,
    /// Broken promises: a lost acknowledged push, an unclear refusal, writes still refused after.
    pub violations: Vec<String>,
    /// Why it did not run, if it did not.
    pub skipped: Option<String>,
    /// Runs pushed before the disk was freed that ended FAILED (retryable).
    pub failed_while_full: usize,
}

/// Runs the disk-full fault on the embedded profile.
pub async fn run() -> Result<DiskReport> {
    if !is_root() {
        return Ok(DiskReport { skipped: Some("mounting a tmpfs needs root".to_owned()), ..Default::default() });
    }
    let stack = Stack::with_profile("chaos_disk", Profile::Embedded).await?;
    let data = stack.root().join("data");
    std::fs::create_dir_all(&data)?;
    mount(&data).await?;
    let outcome = exercise(&stack, &data).await;
    let unmounted = umount(&data).await;
    let report = outcome?;
    unmounted?;
    if report.violations.is_empty() {
        stack.cleanup().await?;
    } else {
        println!("chaos: the disk-full run's logs are kept in {}", stack.root().display());
    }
    Ok(report)
}

async fn exercise(stack: &Stack, data: &Path) -> Result<DiskReport> {
    let server = stack.start_server().await?;
    let worker = stack.start_worker(&[]).await?;
    let addr = server.field("grpc_addr")?;
    let api = Api::new(std::slice::from_ref(&addr), &stack.token("operator").await?, Duration::from_secs(20))?;
    let jd = stack.document("software_engineer_jd.txt")?;
    let mut report = DiskReport::default();
    // Acknowledged runs, with the phase they were pushed in (0 before, 1 full, 2 freed).
    let mut acknowledged = std::collections::BTreeMap::new();
    let mut n = 0_u32;
    let mut push = |phase: usize| {
        n += 1;
        let request = PushRequest {
            company_id: stack.company.clone(),
            role_name: format!("Disk Role {n:04}"),
            documents: vec![Document {
                r#type: DocumentType::JobDescription as i32,
                uri: jd.clone(),
                ..Default::default()
            }],
            draup_role_id: "draup-role-1".to_owned(),
            options: None,
            request_id: format!("disk-{n}"),
            validate_only: false,
        };
        (phase, request)
    };

    for _ in 0..10 {
        let (phase, request) = push(0);
        if let (Outcome::Answered(answer), _) = api.call(&request, |mut c, r| async move { c.push(r).await }).await {
            acknowledged.insert(answer.workflow_id, phase);
            report.acknowledged[phase] += 1;
        }
    }
    // Full: a file takes every byte left.
    let filler = data.join("filler");
    fill(&filler).await?;
    for _ in 0..10 {
        let (phase, request) = push(1);
        let (outcome, _) = api.call(&request, |mut c, r| async move { c.push(r).await }).await;
        match outcome {
            Outcome::Answered(answer) => {
                acknowledged.insert(answer.workflow_id, phase);
                report.acknowledged[phase] += 1;
            }
            Outcome::Refused(status) | Outcome::GaveUp(status) => {
                let key = format!("{:?}: {}", status.code(), status.message());
                let clear = status.message().to_lowercase().contains("full")
                    || status.message().to_lowercase().contains("space");
                if !clear {
                    report.violations.push(format!("a push on a full disk was refused unclearly: {key}"));
                }
                *report.refusals.entry(key).or_default() += 1;
            }
        }
    }
    // Freed: writes are accepted again.
    std::fs::remove_file(&filler).context("removing the filler")?;
    for _ in 0..10 {
        let (phase, request) = push(2);
        match api.call(&request, |mut c, r| async move { c.push(r).await }).await {
            (Outcome::Answered(answer), _) => {
                acknowledged.insert(answer.workflow_id, phase);
                report.acknowledged[phase] += 1;
            }
            (other, _) => report.violations.push(format!("a push after the disk was freed: {other:?}")),
        }
    }
    // Nothing acknowledged is lost: every acknowledged run is there and ends. A run in progress
    // while the disk was full may end FAILED (its steps could not record anything for longer than
    // their retries last; a Retry finishes it); a run pushed once there was room again ends READY.
    let mut client = stack.client(&server).await?;
    for (run, phase) in &acknowledged {
        match wait_final(&mut client, run, Duration::from_secs(300)).await {
            Ok(RoleStatus::Ready) => {}
            Ok(RoleStatus::Failed) if *phase < 2 => report.failed_while_full += 1,
            Ok(other) => report.violations.push(format!("{run} (pushed in phase {phase}) ended {other:?}")),
            Err(e) => report.violations.push(format!("{run}: {e:#}")),
        }
    }
    worker.stop().await?;
    server.stop().await?;
    Ok(report)
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"))
}

async fn mount(dir: &Path) -> Result<()> {
    let status = Command::new("mount").args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"]).arg(dir).status().await?;
    ensure!(status.success(), "mount -t tmpfs on {} failed", dir.display());
    Ok(())
}

async fn umount(dir: &Path) -> Result<()> {
    let status = Command::new("umount").arg(dir).status().await?;
    ensure!(status.success(), "umount {} failed", dir.display());
    Ok(())
}

/// Writes zeros to `path` until the file system says it is full.
async fn fill(path: &Path) -> Result<()> {
    let output =
        Command::new("dd").arg("if=/dev/zero").arg(format!("of={}", path.display())).arg("bs=1M").output().await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(stderr.contains("No space left"), "dd did not fill the disk: {stderr}");
    Ok(())
}
