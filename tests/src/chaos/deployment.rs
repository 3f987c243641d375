//! The deployment under test: two `etter-server` replicas on fixed ports (a client reaches a
//! restarted replica where it was) and two `etter-worker`s, each of which a fault may kill
//! (SIGKILL), start again, or pause (SIGSTOP past its heartbeat timeout, then SIGCONT).

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use tokio::sync::Mutex;

use crate::stack::{Process, Stack};

/// Short dispatch claims, so a replica takes a dead one's claims over within seconds; a workflow
/// task Temporal lost is looked for after a minute instead of two (the drain is bounded).
const SERVER_SETTINGS: [(&str, &str); 4] = [
    ("ETTER_DISPATCH__LEASE", "3s"),
    ("ETTER_DISPATCH__TEMPORAL_TIMEOUT", "2s"),
    ("ETTER_DISPATCH__RECONCILE_INTERVAL", "10s"),
    ("ETTER_DISPATCH__STUCK_WORKFLOW_TASK_AFTER", "60s"),
];

/// One process slot: what runs there now (none while it is down).
pub struct Slot {
    /// `server-0`, `worker-1`, …
    pub name: String,
    extra: Vec<(String, String)>,
    server: bool,
    process: Mutex<Option<Process>>,
}

/// Two servers and two workers over one stack.
pub struct Deployment {
    /// The stack (its services, company, documents).
    pub stack: Stack,
    /// The server replicas.
    pub servers: Vec<Slot>,
    /// The workers.
    pub workers: Vec<Slot>,
    /// The servers' gRPC addresses, fixed for the run.
    pub addrs: Vec<String>,
}

impl Deployment {
    /// Starts `servers` replicas and `workers` workers.
    pub async fn start(stack: Stack, servers: usize, workers: usize) -> Result<Self> {
        let mut addrs = Vec::new();
        let mut server_slots = Vec::new();
        for i in 0..servers {
            let addr = format!("127.0.0.1:{}", free_port()?);
            let mut extra: Vec<(String, String)> =
                SERVER_SETTINGS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            extra.push(("ETTER_SERVER__LISTEN".to_owned(), addr.clone()));
            addrs.push(addr);
            server_slots.push(Slot { name: format!("server-{i}"), extra, server: true, process: Mutex::new(None) });
        }
        // The production retry policy (the suites shorten it): a fault must be ridden out by
        // what a deployment has, not by test settings. One exception: a step task Temporal lost
        // is scheduled again after a minute instead of ten, so that it happens within the drain.
        let worker_extra = vec![
            ("ETTER_WORKER__RETRY_INITIAL_INTERVAL".to_owned(), "1s".to_owned()),
            ("ETTER_WORKER__SCHEDULE_TO_START_TIMEOUT".to_owned(), "60s".to_owned()),
        ];
        let worker_slots = (0..workers)
            .map(|i| Slot {
                name: format!("worker-{i}"),
                extra: worker_extra.clone(),
                server: false,
                process: Mutex::new(None),
            })
            .collect();
        let deployment = Self { stack, servers: server_slots, workers: worker_slots, addrs };
        for slot in deployment.servers.iter().chain(&deployment.workers) {
            deployment.start_slot(slot).await?;
        }
        Ok(deployment)
    }

    /// Starts what runs in `slot` (it must be down).
    pub async fn start_slot(&self, slot: &Slot) -> Result<()> {
        let mut process = slot.process.lock().await;
        ensure!(process.is_none(), "{} is running already", slot.name);
        let extra: Vec<(&str, &str)> = slot.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let started = if slot.server {
            self.stack.start_server_with(&extra).await
        } else {
            self.stack.start_worker(&extra).await
        };
        *process = Some(started.with_context(|| format!("starting {}", slot.name))?);
        Ok(())
    }

    /// SIGKILL of what runs in `slot`.
    pub async fn kill_slot(&self, slot: &Slot) -> Result<()> {
        let process = slot.process.lock().await.take();
        match process {
            Some(process) => process.kill().await,
            None => Ok(()),
        }
    }

    /// Whether what ran in `slot` exited by itself (the slot is then empty, ready to start).
    pub async fn exited(&self, slot: &Slot) -> bool {
        let mut process = slot.process.lock().await;
        let exited = process.as_mut().is_some_and(Process::exited);
        if exited {
            *process = None;
        }
        exited
    }

    /// Starts what runs in `slot` again, trying for up to `within` (a replica whose store is
    /// down at that moment exits at start, as it should).
    pub async fn restart_slot(&self, slot: &Slot, within: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.start_slot(slot).await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    /// SIGSTOP of what runs in `slot` for `pause`, then SIGCONT (the slot is held meanwhile: no
    /// other fault kills it while it is stopped).
    pub async fn pause_slot(&self, slot: &Slot, pause: Duration) -> Result<()> {
        let process = slot.process.lock().await;
        let Some(pid) = process.as_ref().and_then(Process::pid) else { return Ok(()) };
        signal("-STOP", pid)?;
        tokio::time::sleep(pause).await;
        signal("-CONT", pid)
    }

    /// Stops every process (SIGTERM, a clean drain); answers the first failure.
    pub async fn stop(&self) -> Result<()> {
        let mut first = Ok(());
        for slot in self.servers.iter().chain(&self.workers) {
            if let Some(process) = slot.process.lock().await.take()
                && let Err(e) = process.stop().await
                && first.is_ok()
            {
                first = Err(e.context(format!("stopping {}", slot.name)));
            }
        }
        first
    }
}

fn signal(which: &str, pid: u32) -> Result<()> {
    let status = std::process::Command::new("kill").arg(which).arg(pid.to_string()).status()?;
    ensure!(status.success(), "kill {which} {pid} failed");
    Ok(())
}

/// A port free now on loopback (the replica binds it a moment later).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
