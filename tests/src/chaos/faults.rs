//! Faults at random times, one loop per kind, so that faults of different kinds overlap: a
//! replica or a worker killed and started again, a worker paused past its heartbeat timeout,
//! Temporal killed, PostgreSQL, Redis and Neo4j crashed and started again.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use super::deployment::Deployment;
use super::services::Service;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL of a server replica, started again after a moment.
    KillServer,
    /// SIGKILL of a worker, started again after a moment.
    KillWorker,
    /// SIGSTOP of a worker past its heartbeat timeout, then SIGCONT.
    PauseWorker,
    /// SIGKILL of Temporal, started again.
    KillTemporal,
    /// PostgreSQL stopped without a checkpoint, started again (crash recovery).
    CrashPostgres,
    /// SIGKILL of Redis, started again.
    KillRedis,
    /// SIGKILL of Neo4j, started again.
    KillNeo4j,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::KillServer,
        FaultKind::KillWorker,
        FaultKind::PauseWorker,
        FaultKind::KillTemporal,
        FaultKind::CrashPostgres,
        FaultKind::KillRedis,
        FaultKind::KillNeo4j,
    ];

    /// How the report names it.
    pub fn describe(self) -> &'static str {
        match self {
            FaultKind::KillServer => "server replica SIGKILL + restart",
            FaultKind::KillWorker => "worker SIGKILL + restart",
            FaultKind::PauseWorker => "worker SIGSTOP past its heartbeat timeout + SIGCONT",
            FaultKind::KillTemporal => "Temporal SIGKILL + restart",
            FaultKind::CrashPostgres => "PostgreSQL immediate stop (no checkpoint) + restart",
            FaultKind::KillRedis => "Redis SIGKILL + restart",
            FaultKind::KillNeo4j => "Neo4j SIGKILL + restart",
        }
    }
}

/// One fault as injected.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Its kind.
    pub kind: FaultKind,
    /// What it hit (`server-1`, `postgres`, …).
    pub target: String,
    /// When it began.
    pub at: Instant,
    /// How long the part was down (or paused).
    pub down: Duration,
    /// What went wrong bringing the part back (a defect of the harness or the part).
    pub error: Option<String>,
}

/// Injects faults of `kind` at random until `stop`, about `count` of them spread over `span`.
/// Every part is back when it returns.
pub async fn inject(
    kind: FaultKind,
    deployment: Arc<Deployment>,
    count: u32,
    span: Duration,
    mut stop: watch::Receiver<bool>,
    faults: Arc<Mutex<Vec<Fault>>>,
) {
    let gap = span / (count + 1);
    loop {
        let nap = rand::rng().random_range(gap / 2..=gap * 3 / 2);
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let down = Duration::from_millis(rand::rng().random_range(500..=4000));
        let at = Instant::now();
        let (target, result) = hit(kind, &deployment, down).await;
        let fault = Fault { kind, target, at, down, error: result.err().map(|e| format!("{e:#}")) };
        println!(
            "chaos: {} fault {:?} on {} (down {:.1} s) {}",
            chrono::Utc::now().format("%H:%M:%S%.3f"),
            fault.kind,
            fault.target,
            fault.down.as_secs_f64(),
            fault.error.as_deref().map_or_else(|| "recovered".to_owned(), |e| format!("NOT RECOVERED: {e}"))
        );
        faults.lock().await.push(fault);
    }
}

async fn hit(kind: FaultKind, deployment: &Deployment, down: Duration) -> (String, anyhow::Result<()>) {
    let pick = |n: usize| rand::rng().random_range(0..n);
    match kind {
        FaultKind::KillServer | FaultKind::KillWorker => {
            let slots = if kind == FaultKind::KillServer { &deployment.servers } else { &deployment.workers };
            let slot = &slots[pick(slots.len())];
            let result = async {
                deployment.kill_slot(slot).await?;
                tokio::time::sleep(down).await;
                deployment.restart_slot(slot, Duration::from_secs(180)).await
            }
            .await;
            (slot.name.clone(), result)
        }
        FaultKind::PauseWorker => {
            let slot = &deployment.workers[pick(deployment.workers.len())];
            // Past the workers' 2 s heartbeat timeout: Temporal gives the activity to the other.
            let pause = Duration::from_secs(4) + down;
            (slot.name.clone(), deployment.pause_slot(slot, pause).await)
        }
        FaultKind::KillTemporal | FaultKind::CrashPostgres | FaultKind::KillRedis | FaultKind::KillNeo4j => {
            let service = match kind {
                FaultKind::KillTemporal => Service::Temporal,
                FaultKind::CrashPostgres => Service::Postgres,
                FaultKind::KillRedis => Service::Redis,
                _ => Service::Neo4j,
            };
            let result = async {
                service.crash().await?;
                tokio::time::sleep(down).await;
                service.start().await?;
                // A part that stayed up through its service's absence must still work: a
                // replica or worker that exited is a finding, and it is started again.
                for slot in deployment.servers.iter().chain(&deployment.workers) {
                    if deployment.exited(slot).await {
                        deployment.restart_slot(slot, Duration::from_secs(180)).await?;
                        anyhow::bail!("{} exited while {} was down", slot.name, service.script_name()?);
                    }
                }
                Ok(())
            }
            .await;
            (service.script_name().unwrap_or("?").to_owned(), result)
        }
    }
}
