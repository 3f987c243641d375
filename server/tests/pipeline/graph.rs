//! What statuses read from the role graph: the outputs summary and dashboard URL of a finished
//! role, and the `etter.graph` health entry — with the embedded graph the worker writes, and with
//! a Neo4j that is not there.
//!
//! The tests write the graph the way the worker does (through `etter_graph`, into the
//! server's `{data_dir}/graph.db`) and move runs through the store API the way the worker does.

use anyhow::Context as _;
use etter_core::ids::{CompanyId, DraupRoleId, RoleId, RoleName, WorkflowId};
use etter_core::lifecycle::RunState;
use etter_core::outputs::{Assessment, ContentHash, Key, SourceSpan, Task, TopTasks};
use etter_graph::GraphConfig;
use etter_graph::{self, LinkedDocument, RoleSetup, StepOutput};
use etter_proto::v1::{self as pb, WatchStatusRequest, get_status_request::Target, watch_status_request::Scope};
use etter_store::StoreLocation;
use etter_store::{self, Transition};

use super::{
    Kind, PipelineServiceClient, SERVICE, Server, ServingStatus, TEMPORAL_HEALTH, acme, closed_port_url, doc_uri,
    eventually, health_of, next, play_worker, push_request, status_of, unique_suffix, with_token,
};

const GRAPH_HEALTH: &str = "etter.graph";
const DASHBOARD: &str = "https://dashboard.example.com/{company_id}/roles/{role_id}";
/// The steps of a run pushed with `skip_enhancement_workflows` (see `push_request`).
const CRITICAL_PATH: [&str; 4] = ["role_setup", "document_linking", "ai_assessment", "finalize"];
const JOB_DESCRIPTION: &str = "Claims adjuster. Investigate property damage claims. Review insurance policies to \
determine coverage. Negotiate settlements with claimants.";

fn task(document: &ContentHash, cited: &str, confidence: f64) -> anyhow::Result<Task> {
    let start = JOB_DESCRIPTION.find(cited).with_context(|| format!("{cited:?} is not in the document"))?;
    Ok(Task {
        key: Key::of(cited),
        name: cited.to_owned(),
        automation: 0.4,
        augmentation: 0.7,
        confidence,
        source: SourceSpan {
            document: document.clone(),
            start: u32::try_from(start)?,
            end: u32::try_from(start + cited.len())?,
            text: cited.to_owned(),
        },
    })
}

/// Writes a role's setup, its document, an assessment of three tasks and two top tasks into the
/// server's embedded graph, as the worker's steps would; returns the assessment.
async fn write_role(server: &Server, role_name: &str) -> anyhow::Result<(RoleId, Assessment)> {
    let graph = etter_graph::open(&GraphConfig::default(), &server.data_dir).await?;
    let company = CompanyId::parse(&acme())?;
    let role_name = RoleName::parse(role_name)?;
    let role = RoleId::new(&company, &role_name);
    let setup = RoleSetup { company, role_name, draup_role: DraupRoleId::parse("draup-role-12345")? };
    let document = ContentHash(format!("jd-{}", unique_suffix()));
    let linked = [LinkedDocument {
        content_hash: document.clone(),
        doc_type: "job_description".to_owned(),
        uri: doc_uri(server, "jd.pdf"),
    }];
    let assessment = Assessment {
        tasks: vec![
            task(&document, "Investigate property damage claims", 0.9)?,
            task(&document, "Review insurance policies to determine coverage", 0.8)?,
            task(&document, "Negotiate settlements with claimants", 0.7)?,
        ],
    };
    let top = TopTasks { ranked: assessment.tasks.iter().take(2).map(|t| t.key.clone()).collect() };
    graph.write(&role, StepOutput::RoleSetup(&setup)).await?;
    graph.write(&role, StepOutput::DocumentLinking(&linked)).await?;
    graph.write(&role, StepOutput::Assessment(&assessment)).await?;
    graph.write(&role, StepOutput::TopTasks(&top)).await?;
    graph.set_visible(&role, true).await?;
    Ok((role, assessment))
}

/// Plays the worker's part of a whole run: PROCESSING (unless the dispatcher already moved it),
/// the critical path, READY.
async fn finish_run(server: &Server, wf: &WorkflowId, already_processing: bool) -> anyhow::Result<()> {
    let store = etter_store::connect(&StoreLocation::Sqlite(server.data_dir.join("etter.db"))).await?;
    if !already_processing {
        store.transition(wf, Transition::to(RunState::Processing, "dispatched by the test")).await?;
    }
    play_worker(store.as_ref(), wf, &CRITICAL_PATH).await?;
    store.transition(wf, Transition::to(RunState::Ready, "finalized by the test")).await?;
    store.close().await;
    Ok(())
}

/// A READY role that the worker wrote into the embedded graph: GetStatus (by run and by role)
/// and the WatchStatus snapshot carry its outputs summary and its dashboard URL; the graph's
/// health entry is SERVING.
#[tokio::test]
async fn a_ready_role_shows_its_outputs_summary_and_dashboard_url() -> anyhow::Result<()> {
    // Temporal unreachable: the test moves the run itself.
    let closed = closed_port_url()?;
    let server =
        Server::start(&[("ETTER_TEMPORAL__ADDRESS", closed.as_str()), ("ETTER_SERVER__DASHBOARD_URL", DASHBOARD)])
            .await?;
    let token = server.token(&["--company", &acme(), "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let role_name = "Senior Claims Adjuster";
    let pushed = api.push(with_token(push_request(role_name, &doc_uri(&server, "jd.pdf")), &token)?).await?;
    let pushed = pushed.into_inner();
    let wf = WorkflowId::parse(&pushed.workflow_id)?;

    let queued = status_of(&mut api, &token, Target::WorkflowId(wf.to_string())).await?;
    assert_eq!(queued.status(), pb::RoleStatus::Queued);
    assert_eq!((queued.outputs, queued.dashboard_url.as_str()), (None, ""), "a queued run has neither");

    let (role, assessment) = write_role(&server, role_name).await?;
    assert_eq!(role.as_str(), pushed.role_id, "the graph's role is the run's role");
    finish_run(&server, &wf, false).await?;

    let want_url = format!("https://dashboard.example.com/{}/roles/{}", acme(), pushed.role_id);
    let mean = assessment.tasks.iter().map(|t| t.confidence).sum::<f64>() / 3.0;
    for target in [Target::WorkflowId(wf.to_string()), Target::RoleId(pushed.role_id.clone())] {
        let ready = status_of(&mut api, &token, target.clone()).await?;
        assert_eq!(ready.status(), pb::RoleStatus::Ready, "{target:?}");
        let outputs = ready.outputs.with_context(|| format!("{target:?}: a READY role has an outputs summary"))?;
        assert_eq!(outputs.tasks, 3, "{target:?}: {outputs:?}");
        assert_eq!(outputs.top_tasks, 2, "{target:?}: {outputs:?}");
        assert_eq!(
            (outputs.skills, outputs.skill_clusters, outputs.catalog_entries, outputs.reskilling_paths),
            (0, 0, 0, 0)
        );
        assert!((outputs.mean_confidence - mean).abs() < 1e-9, "{target:?}: {outputs:?}");
        assert_eq!(ready.dashboard_url, want_url, "{target:?}");
    }

    // The summary read for the run at this sequence is kept; once the run moves, the graph is
    // read again (here: a newer run's top tasks, then this run marked STALE).
    let graph = etter_graph::open(&GraphConfig::default(), &server.data_dir).await?;
    graph.write(&role, StepOutput::TopTasks(&TopTasks { ranked: vec![assessment.tasks[2].key.clone()] })).await?;
    let kept = status_of(&mut api, &token, Target::WorkflowId(wf.to_string())).await?;
    assert_eq!(kept.outputs.map(|o| o.top_tasks), Some(2), "the run has not moved: its summary is kept");
    // Marked STALE by another process that announces nothing (a worker without Redis): by role
    // id the status shows it at once; by workflow id the server may answer from the ended run it
    // keeps, for at most a second (`status::ENDED_RUN_TTL`).
    let store = etter_store::connect(&StoreLocation::Sqlite(server.data_dir.join("etter.db"))).await?;
    store.transition(&wf, Transition::to(RunState::Stale, "a newer run rewrote the role")).await?;
    store.close().await;
    let by_role = status_of(&mut api, &token, Target::RoleId(pushed.role_id.clone())).await?;
    assert_eq!(by_role.status(), pb::RoleStatus::Stale);
    let marked = std::time::Instant::now();
    let stale = loop {
        let status = status_of(&mut api, &token, Target::WorkflowId(wf.to_string())).await?;
        if status.status() == pb::RoleStatus::Stale {
            break status;
        }
        assert_eq!(status.status(), pb::RoleStatus::Ready);
        assert!(marked.elapsed() < std::time::Duration::from_secs(3), "still READY {:?} after", marked.elapsed());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(stale.outputs.map(|o| o.top_tasks), Some(1), "the run moved: the graph is read again");

    let watch = WatchStatusRequest { scope: Some(Scope::WorkflowId(wf.to_string())), ..Default::default() };
    let mut stream = api.watch_status(with_token(watch, &token)?).await?.into_inner();
    match next(&mut stream).await?.context("no snapshot")? {
        Kind::Snapshot(s) => {
            let run = s.runs.first().context("an empty snapshot")?;
            assert_eq!(run.outputs.as_ref().map(|o| o.tasks), Some(3), "{run:?}");
            assert_eq!(run.dashboard_url, want_url);
        }
        other => anyhow::bail!("the first message must be the snapshot, got {other:?}"),
    }

    eventually("the graph's health entry to be SERVING", || async {
        Ok((health_of(&server, GRAPH_HEALTH).await? == ServingStatus::Serving).then_some(()))
    })
    .await?;
    Ok(())
}

/// With Neo4j configured but not there, the server starts and accepts pushes, the pipeline
/// service is SERVING and `etter.graph` NOT_SERVING, and the status of a READY run is served
/// without an outputs summary (its dashboard URL needs no graph).
#[tokio::test]
async fn with_neo4j_unreachable_statuses_are_served_without_outputs() -> anyhow::Result<()> {
    let neo4j = closed_port_url()?.replace("http://", "bolt://");
    let server =
        Server::start(&[("ETTER_GRAPH__URI", neo4j.as_str()), ("ETTER_SERVER__DASHBOARD_URL", DASHBOARD)]).await?;
    let token = server.token(&["--company", &acme(), "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    // Unique role per run of the suite: the Temporal dev server keeps workflow ids.
    let role_name = format!("Adjuster {}", unique_suffix().replace('-', " "));
    let pushed = api.push(with_token(push_request(&role_name, &doc_uri(&server, "jd.pdf")), &token)?).await?;
    let pushed = pushed.into_inner();
    assert_eq!(pushed.status(), pb::RoleStatus::Queued);

    // Temporal answering proves a health round ran; the graph is checked in the same round.
    eventually("Temporal's health entry to be SERVING", || async {
        Ok((health_of(&server, TEMPORAL_HEALTH).await? == ServingStatus::Serving).then_some(()))
    })
    .await?;
    assert_eq!(health_of(&server, GRAPH_HEALTH).await?, ServingStatus::NotServing);
    assert_eq!(health_of(&server, SERVICE).await?, ServingStatus::Serving);
    assert_eq!(health_of(&server, "").await?, ServingStatus::Serving);

    // The dispatcher starts the workflow (no worker polls this test's task queue); the test then
    // plays the worker's part to READY.
    let wf = pushed.workflow_id.clone();
    let probe = api.clone();
    let probe_token = token.clone();
    eventually("the run to become PROCESSING", || {
        let (mut api, token, wf) = (probe.clone(), probe_token.clone(), wf.clone());
        async move {
            let run = status_of(&mut api, &token, Target::WorkflowId(wf)).await?;
            Ok((run.status() == pb::RoleStatus::Processing).then_some(()))
        }
    })
    .await?;
    finish_run(&server, &WorkflowId::parse(&wf)?, true).await?;

    let ready = status_of(&mut api, &token, Target::WorkflowId(wf)).await?;
    assert_eq!(ready.status(), pb::RoleStatus::Ready);
    assert_eq!(ready.outputs, None, "no outputs summary while the graph is down");
    let want_url = format!("https://dashboard.example.com/{}/roles/{}", acme(), pushed.role_id);
    assert_eq!(ready.dashboard_url, want_url);
    let progress = ready.progress.context("no progress")?;
    assert_eq!((progress.current, progress.total), (4, 4));
    assert_eq!(health_of(&server, GRAPH_HEALTH).await?, ServingStatus::NotServing);
    Ok(())
}
