//! Read path: `GetStatus` of a READY run with authentication on, against a bare
//! tonic server (its own process) answering the very same response bytes, through the same client.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{GetStatusRequest, PushRequest, RoleStatus, get_status_request::Target};
use etter_tests::stack::{Client, Profile, wait_final};
use prost::Message as _;

use crate::Mode;
use crate::baseline::BareProcess;
use crate::deploy::Deployment;
use crate::measure::{Load, closed_loop, ratio};
use crate::report::{Section, num, pair, times};

pub async fn run(profile: Profile, mode: Mode) -> Result<Section> {
    let mut deployment = Deployment::start("read", profile, true, &[]).await?;
    let mut client = deployment.client.clone();
    let pushed = client
        .push(PushRequest {
            company_id: deployment.stack.company.clone(),
            role_name: "Software Engineer".to_owned(),
            documents: vec![deployment.document.clone()],
            draup_role_id: "draup-role-1".to_owned(),
            ..PushRequest::default()
        })
        .await?
        .into_inner();
    let state = wait_final(&mut client, &pushed.workflow_id, Duration::from_secs(300)).await?;
    ensure!(state == RoleStatus::Ready, "the run to read ended {state:?}");
    // The worker is idle from here on; stopping it leaves the machine to the read path.
    if let Some(worker) = deployment.worker.take() {
        worker.stop().await?;
    }
    let request = GetStatusRequest { target: Some(Target::WorkflowId(pushed.workflow_id.clone())) };
    let response = client.get_status(request.clone()).await?.into_inner();
    let canned = deployment.stack.root().join("get-status-response.bin");
    std::fs::write(&canned, response.encode_to_vec())?;

    let echo = BareProcess::start(&["echo".as_ref(), canned.as_os_str()]).await?;
    let bare = echo.client.clone();

    let (clients, calls, rounds) = (mode.pick(32, 4), mode.pick(20_000, 200), mode.pick(3, 1));
    let mut section = Section::new(
        "read",
        profile.name(),
        &["round", "bare tonic GetStatus/s", "p50 / p99 ms", "etter-server GetStatus/s", "p50 / p99 ms", "ratio"],
    );
    section.notes.push(format!(
        "{clients} concurrent callers on one HTTP/2 connection, {calls} calls per round, rounds alternate. \
         The response is the same {} bytes from both: a READY run with its 11 steps.",
        response.encoded_len()
    ));
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let baseline = load(&bare, &request, clients, calls).await?;
        let ours = load(&deployment.client, &request, clients, calls).await?;
        let r = ratio(ours.throughput(), baseline.throughput());
        ratios.push(r);
        section.row(vec![
            round.to_string(),
            num(baseline.throughput(), 0),
            pair(&baseline.latencies),
            num(ours.throughput(), 0),
            pair(&ours.latencies),
            times(r),
        ]);
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    section.check("GetStatus/s with auth ÷ bare tonic (median round)", "≥ 0.8×", times(median), median >= 0.8);
    echo.stop().await?;
    deployment.stop().await?;
    Ok(section)
}

async fn load(client: &Client, request: &GetStatusRequest, clients: usize, calls: usize) -> Result<Load<()>> {
    let (client, request) = (client.clone(), request.clone());
    closed_loop(clients, calls, move |_| {
        let (mut client, request) = (client.clone(), request.clone());
        async move {
            let run = client.get_status(request).await?.into_inner().run.context("no run")?;
            ensure!(run.status() == RoleStatus::Ready, "read a {:?} run", run.status());
            Ok(())
        }
    })
    .await
}
