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

use super::{PipelineServiceClient, acme, doc_uri, push_request, server_without_temporal, with_token};

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
async fn tokens_of_one_company_or_scope_yield_nothing_elsewhere_and_forged_ones_nothing_at_all() -> anyhow::Result<()> {
    let server = server_without_temporal().await?;
    // `{acme}` and `{acme}-secret`: "Secret Plan" of the first and "Plan" of the second had the
    // same role id when ids were `cr-{company}-{slug}`.
    let (victim, attacker) = (acme(), format!("{}-secret", acme()));
    let victim_token = server.token(&["--company", &victim, "--role", "operator"])?;
    let attacker_operator = server.token(&["--company", &attacker, "--role", "operator"])?;
    let attacker_viewer = server.token(&["--company", &attacker, "--role", "viewer"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);

    let mut secret_runs = Vec::new();
    for role in ["Secret Plan", "Secret Budget"] {
        let pushed =
            api.push(with_token(push_request(role, &doc_uri(&server, "jd.pdf")), &victim_token)?).await?.into_inner();
        secret_runs.push(pushed.workflow_id);
    }
    // The attacker's own "Plan": a role of its own, and the answer names nothing of the victim.
    let plan = pb::PushRequest { company_id: attacker.clone(), ..push_request("Plan", &doc_uri(&server, "jd.pdf")) };
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
    Ok(())
}
