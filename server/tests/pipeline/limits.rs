//! Per-company limits over the wire: a burst past a company's call rate is
//! RESOURCE_EXHAUSTED with RetryInfo while another company is untouched; the companies file
//! changes a company's rate without a restart; a batch past the company's queued-run cap is
//! refused whole with the numbers, and nothing of it is stored.

use std::time::Duration;

use anyhow::Context as _;
use etter_proto::v1::{self as pb, HistoryRequest};
use tonic::Code;
use tonic_types::StatusExt as _;

use super::{PipelineServiceClient, acme, batch_of, doc_uri, push_request, server_without_temporal_with, with_token};

fn history(company: &str) -> HistoryRequest {
    HistoryRequest { company_id: company.to_owned(), ..Default::default() }
}

#[tokio::test]
async fn a_burst_is_limited_per_company_and_the_companies_file_changes_the_rate_live() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("etter-limits-{}", super::unique_suffix()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("companies.toml");
    let (slow, other) = (acme(), format!("{}b", acme()));
    std::fs::write(&file, format!("[companies.{slow}]\ncalls_per_minute = 60\nburst = 3\n"))?;
    let file_setting = file.display().to_string();
    let server = server_without_temporal_with(&[
        ("ETTER_SERVER__COMPANIES_FILE", file_setting.as_str()),
        // The other company gets the default tier, kept small too.
        ("ETTER_LIMITS__CALLS_PER_MINUTE", "60"),
        ("ETTER_LIMITS__BURST", "5"),
    ])
    .await?;
    let admin = server.token(&["--role", "admin"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);

    for n in 0..3 {
        api.history(with_token(history(&slow), &admin)?).await.with_context(|| format!("call {n} of the burst"))?;
    }
    let limited = api.history(with_token(history(&slow), &admin)?).await.err().context("the 4th call")?;
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    assert_eq!(limited.get_details_error_info().map(|i| i.reason).as_deref(), Some("RATE_LIMITED"));
    let wait = limited.get_details_retry_info().and_then(|r| r.retry_delay).context("RetryInfo")?;
    assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "one call a second: {wait:?}");
    let quota = limited.get_details_quota_failure().context("QuotaFailure")?;
    assert_eq!(quota.violations[0].subject, format!("company:{slow}"));
    assert!(limited.message().contains("60 calls per minute, burst 3"), "{limited:?}");

    // Another company is not slowed by it: its own burst of five.
    for n in 0..5 {
        api.history(with_token(history(&other), &admin)?).await.with_context(|| format!("other company, call {n}"))?;
    }

    // After the wait, the slow company may call again.
    tokio::time::sleep(wait).await;
    api.history(with_token(history(&slow), &admin)?).await.context("after RetryInfo's delay")?;

    // A larger burst in the companies file takes effect without a restart.
    std::fs::write(&file, format!("[companies.{slow}]\ncalls_per_minute = 60\nburst = 50\n"))?;
    std::fs::File::options()
        .write(true)
        .open(&file)?
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(5))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut passed = 0;
        for _ in 0..10 {
            passed += u32::from(api.history(with_token(history(&slow), &admin)?).await.is_ok());
        }
        if passed == 10 {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the new burst never applied");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn a_batch_past_the_queue_cap_is_refused_whole_with_the_numbers() -> anyhow::Result<()> {
    let server = server_without_temporal_with(&[
        ("ETTER_LIMITS__MAX_QUEUED_PER_COMPANY", "5"),
        ("ETTER_LIMITS__MAX_QUEUED", "1000"),
    ])
    .await?;
    let company = format!("{}cap", acme());
    let operator = server.token(&["--company", &company, "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let names =
        |from: usize, count: usize| (from..from + count).map(|n| format!("Capped Role {n}")).collect::<Vec<_>>();

    api.push_batch(with_token(batch_of(&server, &company, &names(0, 3)), &operator)?).await?;
    let refused = api
        .push_batch(with_token(batch_of(&server, &company, &names(3, 3)), &operator)?)
        .await
        .err()
        .context("3 + 3 > 5")?;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(refused.get_details_error_info().map(|i| i.reason).as_deref(), Some("QUEUE_FULL"));
    assert!(
        refused.message().contains("has 3 queued runs of at most 5")
            && refused.message().contains("so there is room for 2 more")
            && refused.message().contains("push fewer roles"),
        "{refused:?}"
    );
    let quota = refused.get_details_quota_failure().context("QuotaFailure")?;
    assert_eq!(quota.violations[0].subject, format!("company {company}"));
    // Nothing of the refused batch was stored.
    let listed = api.history(with_token(history(&company), &operator)?).await?.into_inner();
    assert_eq!(listed.runs.len(), 3, "{:?}", listed.runs.iter().map(|r| &r.role_id).collect::<Vec<_>>());

    // What fits is admitted (a push with a request id, then a batch); one more push past the cap
    // is refused too.
    let kept = pb::PushRequest {
        company_id: company.clone(),
        request_id: "capped-role-8".into(),
        ..push_request("Capped Role 8", &doc_uri(&server, "k.pdf"))
    };
    let first = api.push(with_token(kept.clone(), &operator)?).await?.into_inner();
    api.push_batch(with_token(batch_of(&server, &company, &names(3, 1)), &operator)?).await?;
    let push =
        pb::PushRequest { company_id: company.clone(), ..push_request("Capped Role 9", &doc_uri(&server, "l.pdf")) };
    let full = api.push(with_token(push, &operator)?).await.err().context("the 6th queued run")?;
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    // One role cannot be pushed "fewer": it waits for room.
    assert!(
        full.message().contains("wait for queued runs to start, then send it again")
            && !full.message().contains("fewer"),
        "{full:?}"
    );
    // A retry of an admitted push gets its first answer, full as the queue is now.
    let again = api.push(with_token(kept, &operator)?).await?.into_inner();
    assert_eq!(again, first);
    Ok(())
}
