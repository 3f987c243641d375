//! Caps and fairness: with a cap of 5 PROCESSING runs per company, company A pushes
//! 200 roles and B then pushes 3. B is not starved behind A's queue: its first run is one of the
//! next two starts. Sampled all along from the store (GetStatus/History) and from Temporal
//! (running workflows per company), no company ever has more than 5 open. Queue positions and
//! ETAs follow the dispatch order.
//!
//! No worker runs: started workflows stay open, so the cap is what holds A back; the test frees
//! two of A's slots by terminating their workflows (the reconciler closes the runs) and sees A
//! refilled to exactly 5.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, ensure};
use etter_proto::v1::{self as pb, HistoryRequest};
use temporalio_client::{UntypedWorkflow, WorkflowCountOptions, WorkflowTerminateOptions};

use super::{
    Api, PipelineServiceClient, Server, acme, batch_of, eventually, temporal_client, unique_suffix, with_token,
};

const CAP: usize = 5;

/// The company's runs in `states` (one page of up to 500).
async fn runs_in(
    api: &mut Api,
    token: &str,
    company: &str,
    states: &[pb::RoleStatus],
) -> anyhow::Result<Vec<pb::RunStatus>> {
    let request = HistoryRequest {
        company_id: company.to_owned(),
        statuses: states.iter().map(|s| *s as i32).collect(),
        page_size: 500,
        ..Default::default()
    };
    Ok(api.history(with_token(request, token)?).await?.into_inner().runs)
}

#[tokio::test]
async fn a_company_at_its_cap_never_exceeds_it_and_never_starves_another() -> anyhow::Result<()> {
    let task_queue = format!("etter-server-fairness-{}", unique_suffix());
    let server = Server::start(&[
        ("ETTER_TEMPORAL__TASK_QUEUE", task_queue.as_str()),
        ("ETTER_DISPATCH__MAX_PROCESSING_PER_COMPANY", "5"),
        ("ETTER_DISPATCH__MAX_PROCESSING", "50"),
    ])
    .await?;
    let (a, b) = (format!("{}fa", acme()), format!("{}fb", acme()));
    let admin = server.token(&["--role", "admin"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let temporal = temporal_client().await?;

    // The sampler: open runs per company, in the store and in Temporal, every 100 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (mut api, admin, temporal, stop) = (api.clone(), admin.clone(), temporal.clone(), Arc::clone(&stop));
        let (companies, task_queue) = ([a.clone(), b.clone()], task_queue.clone());
        async move {
            let mut most: BTreeMap<String, (usize, usize)> = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                for company in &companies {
                    let stored = runs_in(&mut api, &admin, company, &[pb::RoleStatus::Processing]).await?.len();
                    let query = format!(
                        "TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running' AND WorkflowId STARTS_WITH 'role-onboard-cr-{company}.'"
                    );
                    let open = temporal.count_workflows(query, WorkflowCountOptions::default()).await?.count();
                    let entry = most.entry(company.clone()).or_default();
                    *entry = (entry.0.max(stored), entry.1.max(open));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(most)
        }
    });

    let names = |prefix: &str, count: usize| (0..count).map(|n| format!("{prefix} {n:03}")).collect::<Vec<_>>();
    api.push_batch(with_token(batch_of(&server, &a, &names("Fair A", 200)), &admin)?).await?;
    let probe = (api.clone(), admin.clone(), a.clone());
    eventually("A to reach its cap", || {
        let (mut api, admin, a) = probe.clone();
        async move { Ok((runs_in(&mut api, &admin, &a, &[pb::RoleStatus::Processing]).await?.len() == CAP).then_some(())) }
    })
    .await?;
    // Many dispatch rounds later (the poll is 100 ms), A is still at exactly its cap.
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(runs_in(&mut api, &admin, &a, &[pb::RoleStatus::Processing]).await?.len() == CAP);

    // B pushes 3 and is not starved behind A's 195 queued runs.
    let pushed_at = std::time::SystemTime::now();
    api.push_batch(with_token(batch_of(&server, &b, &names("Fair B", 3)), &admin)?).await?;
    let probe = (api.clone(), admin.clone(), b.clone());
    let b_runs = eventually("B's runs to start", || {
        let (mut api, admin, b) = probe.clone();
        async move {
            let runs = runs_in(&mut api, &admin, &b, &[pb::RoleStatus::Processing]).await?;
            Ok((runs.len() == 3).then_some(runs))
        }
    })
    .await?;
    let start = |r: &pb::RunStatus| r.start_time.map(|t| (t.seconds, t.nanos));
    let b_first = b_runs.iter().filter_map(start).min().context("B's runs have start times")?;
    let since = pushed_at.duration_since(std::time::UNIX_EPOCH)?;
    let pushed = (i64::try_from(since.as_secs())?, i32::try_from(since.subsec_nanos())?);
    let a_before_b = runs_in(&mut api, &admin, &a, &[pb::RoleStatus::Processing])
        .await?
        .iter()
        .filter_map(start)
        .filter(|t| *t >= pushed && *t < b_first)
        .count();
    ensure!(a_before_b <= 1, "{a_before_b} of A's runs started between B's push and B's first start");

    // Free two of A's slots (terminated in Temporal, closed by the reconciler): A refills to 5.
    for run in runs_in(&mut api, &admin, &a, &[pb::RoleStatus::Processing]).await?.iter().take(2) {
        let handle = temporal.get_workflow_handle::<UntypedWorkflow>(run.workflow_id.clone());
        handle
            .terminate(WorkflowTerminateOptions::builder().reason("slot freed by the test".to_owned()).build())
            .await?;
    }
    let probe = (api.clone(), admin.clone(), a.clone());
    eventually("A to refill its two freed slots", || {
        let (mut api, admin, a) = probe.clone();
        async move {
            let failed = runs_in(&mut api, &admin, &a, &[pb::RoleStatus::Failed]).await?.len();
            let processing = runs_in(&mut api, &admin, &a, &[pb::RoleStatus::Processing]).await?.len();
            Ok((failed == 2 && processing == CAP).then_some(()))
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let most = sampler.await??;
    ensure!(most.get(&a) == Some(&(CAP, CAP)), "A at most (store, temporal): {most:?}");
    ensure!(most.get(&b) == Some(&(3, 3)), "B at most (store, temporal): {most:?}");

    // A's queue: positions 1.. in dispatch order, the ETA growing with the position.
    let mut queued = runs_in(&mut api, &admin, &a, &[pb::RoleStatus::Queued]).await?;
    ensure!(queued.len() == 200 - CAP - 2, "{} queued", queued.len());
    queued.sort_by_key(|r| r.position_in_queue);
    let positions: Vec<i32> = queued.iter().map(|r| r.position_in_queue).collect();
    ensure!(positions == (1..=i32::try_from(queued.len())?).collect::<Vec<_>>(), "{positions:?}");
    ensure!(queued.windows(2).all(|w| w[0].role_name < w[1].role_name), "first pushed, first served");
    ensure!(
        queued.windows(2).all(|w| w[0].estimated_duration_seconds <= w[1].estimated_duration_seconds)
            && queued[0].estimated_duration_seconds < queued[queued.len() - 1].estimated_duration_seconds,
        "ETAs grow with the position"
    );
    Ok(())
}
