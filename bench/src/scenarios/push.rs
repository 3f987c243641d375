//! Push cost: `Push` through every guard (JWT, rate limit, quota, validation,
//! audit, durable persist) against a bare `StartWorkflowExecution` to the same Temporal dev server
//! from the same process, at 1, 8 and 64 concurrent clients; then how long each pushed run took to
//! have its workflow started by the dispatcher.
//!
//! Pushes are acknowledged faster than the dev server starts workflows, so in the closed loops the
//! pushed runs queue for Temporal and push → started measures that queue. The targets for push →
//! started and for dispatch are checked one push at a time (the next once the previous run's
//! workflow started), against the bare start's latency at one client.

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, ensure};
use etter_proto::v1::{PushRequest, RoleStatus};
use etter_tests::stack::Profile;
use etter_tests::unique_name;

use crate::Mode;
use crate::baseline::{
    BareProcess, NoopInput, OwnStart, STARTED_AT, role_input_padding, start_noop, temporal_client, terminate_all,
};
use crate::deploy::{Deployment, poll};
use crate::measure::{Samples, between, closed_loop, ms, ratio, wall};
use crate::report::{Section, num, pair, times};

/// Concurrent clients per level.
const LEVELS: [usize; 3] = [1, 8, 64];

/// The quiet before each timed call of the one-at-a-time row.
const SETTLE: Duration = Duration::from_millis(100);

pub async fn run(profile: Profile, mode: Mode) -> Result<Section> {
    // Every pushed run is started at once (no worker runs them: Temporal times them out), so the
    // processing caps are raised; queue caps and quotas are still checked on every push.
    let deployment = Deployment::start(
        "push",
        profile,
        false,
        &[
            ("ETTER_DISPATCH__MAX_PROCESSING_PER_COMPANY", "1000000"),
            ("ETTER_DISPATCH__MAX_PROCESSING", "1000000"),
            ("ETTER_TEMPORAL__WORKFLOW_EXECUTION_TIMEOUT", "5m"),
        ],
    )
    .await?;
    let temporal = temporal_client().await?;
    let bare_queue = unique_name("etter-bench-bare");
    let floor = start_floor(&deployment, &bare_queue).await?;
    let padding = role_input_padding();

    let mut section = Section::new(
        "push",
        profile.name(),
        &[
            "clients",
            "calls",
            "bare start p50 / p99 ms",
            "bare starts/s",
            "Push ack p50 / p99 ms",
            "Pushes/s",
            "ack ÷ bare (p50)",
            "push → workflow started p50 / p99 ms",
            "started ÷ bare (p50)",
            "dispatch p50 / p99 ms",
        ],
    );
    let paced_calls = mode.pick(50, 3);
    section.notes.push(format!(
        "Closed loop: each client sends its next call when the previous one answered; {} calls per client \
         (at least {}). One HTTP/2 connection per side, as one client process has.",
        mode.pick(20, 2),
        mode.pick(100, 4)
    ));
    section.notes.push(
        "push → workflow started: from sending Push to the run's `start_time` (the dispatcher's \
         StartWorkflowExecution answered); dispatch: from the run's `create_time` (committed) to `start_time`."
            .to_owned(),
    );
    section.notes.push(format!(
        "The bare starts show the dev server's capacity (about the same starts/s at every level). Pushes are \
         acknowledged faster, so in the closed loops the runs queue for Temporal and push → started grows with \
         that queue. The row \"1 (one at a time)\", measured first (before the closed loops fill the store and the \
         dev server), pushes {paced_calls} roles, each once the previous run's workflow started, each right after a \
         bare start of its own: push → started and dispatch without a queue, against those bare starts. The \
         targets for those two are checked on that row."
    ));

    // Warm both paths (connections, prepared statements, Temporal's caches).
    for i in 0..5 {
        start_noop(&temporal, &bare_queue, format!("{bare_queue}-warm-{i}"), NoopInput::default()).await?;
        push(&deployment, format!("warm-up {i}")).await?;
    }

    // One push at a time: nothing queues for Temporal. Measured first, on a deployment at rest:
    // the closed loops leave over a thousand runs PROCESSING (no worker runs them), which the
    // dispatcher counts on every round and the reconciler describes in Temporal on every pass.
    // Each push follows a bare start of its own, so both see the dev server in the same state,
    // and each waits for the dev server to settle first (a start goes on working after it
    // answers: the first workflow task, transfer tasks), so neither measures the other's tail.
    // Between the two, the dispatcher's own start request made from here: what the start costs
    // apart from the push around it (the options, the input, our client).
    let prefix = unique_name("paced");
    let own = OwnStart::new(&deployment.stack.company)?;
    let (mut bare_paced, mut own_paced, mut floor_paced, mut acks, mut started, mut dispatch, mut pushed) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Vec::new(),
    );
    let (mut bare_time, mut own_time, mut floor_time) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let phase = std::time::Instant::now();
    for i in 0..paced_calls {
        let input = NoopInput { activities: 0, padding: padding.clone() };
        let bare_id = format!("{prefix}-bare-{i}");
        tokio::time::sleep(SETTLE).await;
        let clock = std::time::Instant::now();
        start_noop(&temporal, &bare_queue, bare_id.clone(), input).await?;
        bare_paced.push(clock.elapsed());
        bare_time += clock.elapsed();
        pushed.push(bare_id);
        tokio::time::sleep(SETTLE).await;
        let clock = std::time::Instant::now();
        pushed.push(own.start(&format!("Own {prefix} {i}")).await?);
        own_paced.push(clock.elapsed());
        own_time += clock.elapsed();
        tokio::time::sleep(SETTLE).await;
        let sent = SystemTime::now();
        let clock = std::time::Instant::now();
        let (floor_id, floor_started) = floor_push(&floor, &deployment, format!("Floor {prefix} {i}")).await?;
        floor_paced.push(between(sent, floor_started));
        floor_time += clock.elapsed();
        pushed.push(floor_id);
        tokio::time::sleep(SETTLE).await;
        let sent = SystemTime::now();
        let clock = std::time::Instant::now();
        let workflow_id = push(&deployment, format!("Bench {prefix} {i}")).await?;
        acks.push(clock.elapsed());
        let (to_start, to_dispatch) = start_of(&deployment, sent, &workflow_id).await?;
        started.push(to_start);
        dispatch.push(to_dispatch);
        pushed.push(workflow_id);
    }
    let settled = SETTLE * 4 * u32::try_from(paced_calls).unwrap_or(u32::MAX);
    let pushes_per_second = paced_calls as f64
        / phase
            .elapsed()
            .saturating_sub(bare_time + own_time + floor_time + settled)
            .as_secs_f64()
            .max(f64::MIN_POSITIVE);
    let bare_per_second = paced_calls as f64 / bare_time.as_secs_f64();
    let started_ratio = ratio(ms(started.p50()), ms(bare_paced.p50()));
    let paced_ack_ratio = ratio(ms(acks.p50()), ms(bare_paced.p50()));
    section.row(vec![
        "1 (one at a time)".to_owned(),
        paced_calls.to_string(),
        pair(&bare_paced),
        num(bare_per_second, 0),
        pair(&acks),
        num(pushes_per_second, 1),
        times(paced_ack_ratio),
        pair(&started),
        times(started_ratio),
        pair(&dispatch),
    ]);
    section.notes.push(format!(
        "One at a time, between each bare start and its push, the dispatcher's own start request made from the \
         harness (`TemporalOrchestrator::start_onboarding` with a role's input, id policies and memo), the start \
         without the push around it: p50 / p99 {} ms, {} the bare start.",
        pair(&own_paced),
        times(ratio(ms(own_paced.p50()), ms(bare_paced.p50())))
    ));
    section.notes.push(format!(
        "One at a time, after the own start, the floor of a push: a bare tonic server in a process of its own \
         (`etter-bench floor`) that answers the same request by one durable insert ({}) and then a bare start, \
         with no guard, admission read, idempotency record or status. From sending it to its start's \
         acknowledgement: p50 / p99 {} ms, {} the bare start. It is the least \"persist, then dispatch\" costs here: \
         push → started can come no nearer the bare start than this row.",
        match profile {
            Profile::Postgres => "a PostgreSQL `INSERT` with `synchronous_commit = on`",
            Profile::Embedded => "a SQLite `INSERT` into a WAL file with `synchronous = FULL`",
        },
        pair(&floor_paced),
        times(ratio(ms(floor_paced.p50()), ms(bare_paced.p50())))
    ));
    let floor_ratio = ratio(ms(started.p50()), ms(floor_paced.p50()));
    section.check(
        "push → workflow started ÷ the floor of a push (p50), one at a time",
        "≤ 1.1×",
        times(floor_ratio),
        floor_ratio <= 1.1,
    );
    section.check(
        "Push ack ÷ bare start (p50), one at a time",
        "≤ 0.5×",
        times(paced_ack_ratio),
        paced_ack_ratio <= 0.5,
    );
    section.check(
        "dispatch of an admitted run (p50), one at a time",
        "< 25 ms",
        format!("{} ms", num(ms(dispatch.p50()), 1)),
        dispatch.p50() < Duration::from_millis(25),
    );
    let mut started_ids = pushed;
    for clients in LEVELS {
        let calls = (clients * mode.pick(20, 2)).max(mode.pick(100, 4));
        let bare = {
            let (temporal, queue, padding) = (temporal.clone(), bare_queue.clone(), padding.clone());
            let prefix = unique_name("bare");
            closed_loop(clients, calls, move |i| {
                let (temporal, queue, input) =
                    (temporal.clone(), queue.clone(), NoopInput { activities: 0, padding: padding.clone() });
                let id = format!("{prefix}-{i}");
                async move {
                    start_noop(&temporal, &queue, id.clone(), input).await?;
                    Ok(id)
                }
            })
            .await?
        };
        let ours = {
            let client = deployment.client.clone();
            let (company, document) = (deployment.stack.company.clone(), deployment.document.clone());
            let prefix = unique_name("role");
            closed_loop(clients, calls, move |i| {
                let mut client = client.clone();
                let request = PushRequest {
                    company_id: company.clone(),
                    role_name: format!("Bench {prefix} {i}"),
                    documents: vec![document.clone()],
                    draup_role_id: format!("draup-role-{i}"),
                    request_id: format!("{prefix}-{i}"),
                    ..PushRequest::default()
                };
                async move {
                    let answer = client.push(request).await?.into_inner();
                    ensure!(answer.created && answer.status() == RoleStatus::Queued, "push not queued: {answer:?}");
                    Ok(answer.workflow_id)
                }
            })
            .await?
        };
        let (started, dispatch) = starts(&deployment, &ours.answers).await?;
        started_ids.extend(ours.answers.iter().map(|(_, _, id)| id.clone()));
        started_ids.extend(bare.answers.iter().map(|(_, _, id)| id.clone()));
        let ack_ratio = ratio(ms(ours.latencies.p50()), ms(bare.latencies.p50()));
        let started_ratio = ratio(ms(started.p50()), ms(bare.latencies.p50()));
        section.row(vec![
            clients.to_string(),
            calls.to_string(),
            pair(&bare.latencies),
            num(bare.throughput(), 0),
            pair(&ours.latencies),
            num(ours.throughput(), 0),
            times(ack_ratio),
            pair(&started),
            times(started_ratio),
            pair(&dispatch),
        ]);
        section.check(
            format!("Push ack ÷ bare start (p50), {clients} clients"),
            "≤ 0.5×",
            times(ack_ratio),
            ack_ratio <= 0.5,
        );
    }

    let failed = terminate_all(&temporal, started_ids).await;
    if failed > 0 {
        eprintln!(
            "etter-bench: {failed} workflows of the push scenario could not be terminated; they time out in 5 minutes"
        );
    }
    floor.stop().await?;
    deployment.stop().await?;
    Ok(section)
}

/// A push of a role named `name` of the deployment's company, with a request id of its own.
fn push_request(deployment: &Deployment, name: String) -> PushRequest {
    PushRequest {
        company_id: deployment.stack.company.clone(),
        role_name: name,
        documents: vec![deployment.document.clone()],
        draup_role_id: "draup-role-1".to_owned(),
        request_id: unique_name("push"),
        ..PushRequest::default()
    }
}

async fn push(deployment: &Deployment, name: String) -> Result<String> {
    Ok(deployment.client.clone().push(push_request(deployment, name)).await?.into_inner().workflow_id)
}

/// The floor server of `deployment`'s profile: its store beside the deployment's (the stack's
/// PostgreSQL database, or a SQLite file in the stack's directory), its starts on `task_queue`.
async fn start_floor(deployment: &Deployment, task_queue: &str) -> Result<BareProcess> {
    let store = match deployment.stack.env().iter().find(|(key, _)| key == "ETTER_STORE__URL") {
        Some((_, url)) => url.clone(),
        None => format!("sqlite://{}", deployment.stack.root().join("floor.db").display()),
    };
    BareProcess::start(&["floor".as_ref(), store.as_ref(), task_queue.as_ref()]).await
}

/// A push to the floor server: its workflow id, and when its start was acknowledged.
async fn floor_push(floor: &BareProcess, deployment: &Deployment, name: String) -> Result<(String, SystemTime)> {
    let answer = floor.client.clone().push(push_request(deployment, name)).await?;
    let nanos: u64 = answer
        .metadata()
        .get(STARTED_AT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("the floor's answer has no start time")?;
    Ok((answer.into_inner().workflow_id, SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)))
}

/// For each pushed run: from sending Push to its workflow's start, and from its commit to its start.
async fn starts(deployment: &Deployment, pushed: &[(usize, SystemTime, String)]) -> Result<(Samples, Samples)> {
    let (mut started, mut dispatch) = (Samples::default(), Samples::default());
    for (_, sent, workflow_id) in pushed {
        let (to_start, to_dispatch) = start_of(deployment, *sent, workflow_id).await?;
        started.push(to_start);
        dispatch.push(to_dispatch);
    }
    Ok((started, dispatch))
}

/// Once the run's workflow started: from sending its Push to the start, and from its commit to the start.
async fn start_of(deployment: &Deployment, sent: SystemTime, workflow_id: &str) -> Result<(Duration, Duration)> {
    let run = poll("the dispatcher starting the run", Duration::from_secs(120), || async {
        let run = deployment.status(workflow_id).await?;
        Ok(run.start_time.is_some().then_some(run))
    })
    .await?;
    let start = wall(run.start_time.as_ref().context("no start time")?);
    let create = wall(run.create_time.as_ref().context("no create time")?);
    Ok((between(sent, start), between(create, start)))
}
