//! The tenant boundary through what clients hold and send back: resume tokens and page tokens are
//! the server's own, sealed for one company and one scope, so a token forged, tampered with, or
//! replayed on another company's or another scope's request yields nothing but
//! `INVALID_ARGUMENT`; and role ids of two companies whose ids extend one another never collide,
//! nor does an answer ever name the other company.

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use etter_proto::v1::{
    self as pb, HistoryRequest, WatchStatusRequest, watch_status_request::Scope, watch_status_response::Kind,
};
use tonic::{Code, Streaming};

use super::{
    PipelineServiceClient, ScratchDatabase, Server, acme, doc_uri, push_request, server_without_temporal,
    server_without_temporal_with, with_token,
};

/// A resume token in the unsealed form servers issued before tokens were sealed, naming `runs`
/// from sequence 0 for a company scope: what an attacker who knows (or guesses) workflow ids
/// would build by hand.
fn unsealed_token(company: &str, runs: &[&str]) -> String {
    fn varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
    let mut body = vec![2_u8];
    varint(&mut body, company.len() as u64);
    body.extend_from_slice(company.as_bytes());
    varint(&mut body, runs.len() as u64);
    let mut sorted = runs.to_vec();
    sorted.sort_unstable();
    for run in sorted {
        varint(&mut body, 0);
        varint(&mut body, run.len() as u64);
        body.extend_from_slice(run.as_bytes());
        varint(&mut body, 0);
    }
    format!("w2.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body))
}

/// What a stream sends within `window` (or until it ends).
async fn drain(
    stream: &mut Streaming<pb::WatchStatusResponse>,
    window: std::time::Duration,
) -> anyhow::Result<Vec<pb::WatchStatusResponse>> {
    let until = tokio::time::Instant::now() + window;
    let mut got = Vec::new();
    while let Ok(message) = tokio::time::timeout_at(until, stream.message()).await {
        match message? {
            Some(message) => got.push(message),
            None => break,
        }
    }
    Ok(got)
}

#[tokio::test]
async fn the_tenant_boundary_holds_on_the_embedded_store() -> anyhow::Result<()> {
    let server = server_without_temporal().await?;
    tenant_boundary(&server).await
}

#[tokio::test]
async fn the_tenant_boundary_holds_on_postgresql() -> anyhow::Result<()> {
    let database = ScratchDatabase::create().await?;
    let server = server_without_temporal_with(&[("ETTER_STORE__URL", database.url.as_str())]).await?;
    let outcome = tenant_boundary(&server).await;
    drop(server);
    database.drop_database().await?;
    outcome
}

/// What a call answered, its message dropped.
type Answer = Result<(), tonic::Status>;

/// A status without the ids it names: what two answers must share to be told apart by nothing
/// but the id asked for.
fn shape(status: &tonic::Status, ids: &[&str]) -> (Code, String) {
    let mut message = status.message().to_owned();
    for id in ids {
        message = message.replace(id, "<id>");
    }
    (status.code(), message)
}

/// Every RPC that takes a run, role or batch id answers another company's id exactly as an id
/// that does not exist; and every kind of client-held token of another company, scope or
/// forger yields nothing.
async fn tenant_boundary(server: &Server) -> anyhow::Result<()> {
    // `{acme}` and `{acme}-secret`: "Secret Plan" of the first and "Plan" of the second had the
    // same role id when ids were `cr-{company}-{slug}`.
    let (victim, attacker) = (acme(), format!("{}-secret", acme()));
    let victim_token = server.token(&["--company", &victim, "--role", "operator"])?;
    let attacker_operator = server.token(&["--company", &attacker, "--role", "operator"])?;
    let attacker_viewer = server.token(&["--company", &attacker, "--role", "viewer", "--user", "prober"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);

    let mut secret_runs = Vec::new();
    for role in ["Secret Plan", "Secret Budget"] {
        let pushed =
            api.push(with_token(push_request(role, &doc_uri(server, "jd.pdf")), &victim_token)?).await?.into_inner();
        secret_runs.push(pushed.workflow_id);
    }
    // The attacker's own "Plan": a role of its own, and the answer names nothing of the victim.
    let plan = pb::PushRequest { company_id: attacker.clone(), ..push_request("Plan", &doc_uri(server, "jd.pdf")) };
    let theirs = api.push(with_token(plan, &attacker_operator)?).await?.into_inner();
    ensure!(!secret_runs.contains(&theirs.workflow_id), "{theirs:?}");
    ensure!(!format!("{theirs:?}").contains("Secret"), "the answer names the other company's role: {theirs:?}");

    let watch =
        |scope: Scope, resume_token: String| WatchStatusRequest { scope: Some(scope), after_sequence: 0, resume_token };
    let refused =
        |what: &str, result: Result<tonic::Response<Streaming<pb::WatchStatusResponse>>, tonic::Status>| match result {
            Err(status) if status.code() == Code::InvalidArgument => {
                ensure!(!status.message().contains(&victim) || what.contains("own"), "{what}: {status:?}");
                Ok(status)
            }
            Err(status) => bail!("{what}: want INVALID_ARGUMENT, got {status:?}"),
            Ok(_) => bail!("{what}: a stream was opened"),
        };

    // 1. A forged token naming the victim's runs, on the attacker's own company stream.
    let forged = unsealed_token(&attacker, &secret_runs.iter().map(String::as_str).collect::<Vec<_>>());
    let opened =
        api.watch_status(with_token(watch(Scope::CompanyId(attacker.clone()), forged), &attacker_viewer)?).await;
    match opened {
        Ok(response) => {
            let mut stream = response.into_inner();
            let leaked = drain(&mut stream, std::time::Duration::from_secs(2)).await?;
            let named: Vec<&str> = leaked
                .iter()
                .filter_map(|m| match &m.kind {
                    Some(Kind::Event(e)) => Some(e.workflow_id.as_str()),
                    _ => None,
                })
                .collect();
            bail!("a forged resume token opened a stream; it carried events of {named:?}");
        }
        Err(status) => {
            ensure!(status.code() == Code::InvalidArgument, "{status:?}");
            ensure!(status.message().contains("earlier version"), "the message tells what to do: {status:?}");
        }
    }

    // 2. The victim's genuine token, replayed on the attacker's stream, and on the victim's
    // batch-less company stream with a tampered byte.
    let mut own = api
        .watch_status(with_token(watch(Scope::CompanyId(victim.clone()), String::new()), &victim_token)?)
        .await?
        .into_inner();
    let genuine = drain(&mut own, std::time::Duration::from_millis(800))
        .await?
        .into_iter()
        .rev()
        .find(|m| !m.resume_token.is_empty())
        .map(|m| m.resume_token)
        .context("the victim's stream sent a resume token")?;
    drop(own);
    refused(
        "a replayed token",
        api.watch_status(with_token(watch(Scope::CompanyId(attacker.clone()), genuine.clone()), &attacker_viewer)?)
            .await,
    )?;
    let mut tampered = genuine.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    refused(
        "a tampered token on its own stream",
        api.watch_status(with_token(
            watch(Scope::CompanyId(victim.clone()), String::from_utf8(tampered)?),
            &victim_token,
        )?)
        .await,
    )?;
    // The genuine token still resumes its own stream.
    api.watch_status(with_token(watch(Scope::CompanyId(victim.clone()), genuine), &victim_token)?).await?;

    // 3. History page tokens: the victim's next page is not the attacker's, even with the same
    // filters otherwise.
    let first = api
        .history(with_token(
            HistoryRequest { company_id: victim.clone(), page_size: 1, ..Default::default() },
            &victim_token,
        )?)
        .await?
        .into_inner();
    ensure!(!first.next_page_token.is_empty(), "two runs make two pages of one");
    let replayed = HistoryRequest {
        company_id: attacker.clone(),
        page_size: 1,
        page_token: first.next_page_token.clone(),
        ..Default::default()
    };
    match api.history(with_token(replayed, &attacker_viewer)?).await {
        Err(status) => ensure!(status.code() == Code::InvalidArgument, "{status:?}"),
        Ok(page) => bail!("a replayed page token was served: {:?}", page.into_inner()),
    }
    let forged_page = HistoryRequest {
        company_id: victim.clone(),
        page_size: 1,
        page_token: "0123456789abcdef.garbage".into(),
        ..Default::default()
    };
    match api.history(with_token(forged_page, &victim_token)?).await {
        Err(status) => ensure!(status.code() == Code::InvalidArgument, "{status:?}"),
        Ok(page) => bail!("an unsealed page token was served: {:?}", page.into_inner()),
    }
    let next = HistoryRequest {
        company_id: victim.clone(),
        page_size: 1,
        page_token: first.next_page_token,
        ..Default::default()
    };
    let second = api.history(with_token(next, &victim_token)?).await?.into_inner();
    ensure!(second.runs.len() == 1 && second.runs[0].workflow_id != first.runs[0].workflow_id);

    // 4. Direct ids: the victim's run, role and batch answer the attacker exactly as ids that do
    // not exist. (The victim's batch is made here; its runs are not needed.)
    let batch = api
        .push_batch(with_token(super::batch_of(server, &victim, &["Secret Batch Role".to_owned()]), &victim_token)?)
        .await?
        .into_inner();
    let status = api
        .get_status(with_token(
            pb::GetStatusRequest { target: Some(pb::get_status_request::Target::WorkflowId(secret_runs[0].clone())) },
            &victim_token,
        )?)
        .await?
        .into_inner()
        .run
        .context("a status")?;
    let (run, role) = (status.workflow_id.clone(), status.role_id.clone());
    let missing_run = format!("role-onboard-cr-{victim}.no-such-role-1");
    let missing_role = format!("cr-{victim}.no-such-role");
    let missing_batch = "batch-0000000000000000000000000000dead".to_owned();
    for caller in [&attacker_viewer, &attacker_operator] {
        let mut answers = Vec::new();
        for (what, real, missing) in
            [("run", &run, &missing_run), ("role", &role, &missing_role), ("batch", &batch.batch_id, &missing_batch)]
        {
            let mut calls: Vec<(String, Answer, Answer)> = Vec::new();
            macro_rules! both {
                ($name:expr, $make:expr, $call:ident) => {{
                    let real_answer = api.$call(with_token($make(real.clone()), caller)?).await.map(drop);
                    let missing_answer = api.$call(with_token($make(missing.clone()), caller)?).await.map(drop);
                    calls.push(($name.to_owned(), real_answer, missing_answer));
                }};
            }
            match what {
                "run" => {
                    both!(
                        "GetStatus",
                        |id| pb::GetStatusRequest { target: Some(pb::get_status_request::Target::WorkflowId(id)) },
                        get_status
                    );
                    both!(
                        "WatchStatus",
                        |id| WatchStatusRequest {
                            scope: Some(Scope::WorkflowId(id)),
                            after_sequence: 0,
                            resume_token: String::new()
                        },
                        watch_status
                    );
                    both!(
                        "Retry",
                        |id| pb::RetryRequest {
                            target: Some(pb::retry_request::Target::WorkflowId(id)),
                            ..Default::default()
                        },
                        retry
                    );
                    both!("Cancel", |id| pb::CancelRequest { workflow_id: id, ..Default::default() }, cancel);
                }
                "role" => {
                    both!(
                        "GetStatus",
                        |id| pb::GetStatusRequest { target: Some(pb::get_status_request::Target::RoleId(id)) },
                        get_status
                    );
                    both!(
                        "Retry",
                        |id| pb::RetryRequest {
                            target: Some(pb::retry_request::Target::RoleId(id)),
                            ..Default::default()
                        },
                        retry
                    );
                }
                _ => {
                    both!(
                        "WatchStatus",
                        |id| WatchStatusRequest {
                            scope: Some(Scope::BatchId(id)),
                            after_sequence: 0,
                            resume_token: String::new()
                        },
                        watch_status
                    );
                }
            }
            for (rpc, real_answer, missing_answer) in calls {
                let real_answer =
                    real_answer.err().with_context(|| format!("{rpc} of the victim's {what} was served"))?;
                let missing_answer =
                    missing_answer.err().with_context(|| format!("{rpc} of a missing {what} was served"))?;
                ensure!(
                    shape(&real_answer, &[real.as_str()]) == shape(&missing_answer, &[missing.as_str()]),
                    "{rpc} of the victim's {what} tells it exists: {real_answer:?} vs {missing_answer:?}"
                );
                ensure!(!real_answer.message().contains("Secret"), "{rpc}: {real_answer:?}");
                answers.push(rpc);
            }
        }
        ensure!(answers.len() == 7, "{answers:?}");
    }

    // 5. The refused tokens are audited, reads though they were: the forged resume token, the
    // replayed one, the replayed page token.
    let admin = server.token(&["--company", &victim, "--role", "admin", "--user", "auditor"])?;
    let audited = super::eventually("the prober's refusals in the audit log", || {
        let (mut api, admin) = (api.clone(), admin.clone());
        async move {
            let list = pb::ListAuditEntriesRequest { actor: "prober".into(), page_size: 100, ..Default::default() };
            let entries = api.list_audit_entries(with_token(list, &admin)?).await?.into_inner().entries;
            let tokens: Vec<_> = entries
                .into_iter()
                .filter(|e| e.outcome == "INVALID_ARGUMENT" && (e.reason.contains("token")))
                .map(|e| e.action)
                .collect();
            Ok((tokens.len() >= 3).then_some(tokens))
        }
    })
    .await?;
    ensure!(audited.iter().filter(|a| *a == "WatchStatus").count() == 2, "{audited:?}");
    ensure!(audited.iter().filter(|a| *a == "History").count() == 1, "{audited:?}");
    Ok(())
}
