//! Token budgets: estimates carry their cost; admission reserves each run's estimate
//! and refuses, whole and with what remains, a batch that would exceed the company's monthly
//! budget; the tokens steps record are the usage, per step; a run that ends releases what it
//! did not use. `GetUsage` shows all of it.

use std::time::Duration;

use anyhow::Context as _;
use etter_core::ids::WorkflowId;
use etter_core::lifecycle::RunState;
use etter_proto::v1::{self as pb, GetUsageRequest};
use etter_store::StoreLocation;
use etter_store::{self, RunStore, StepStatus, StepTransition, TokenCount, Transition};
use tonic::Code;
use tonic_types::StatusExt as _;

use super::{
    PipelineServiceClient, acme, batch_of, doc_uri, eventually, push_request, server_without_temporal_with, with_token,
};

/// Records a step of `run` that used `input` + `output` tokens, as the worker does.
async fn used(store: &dyn RunStore, run: &WorkflowId, step: &str, input: i64, output: i64) -> anyhow::Result<()> {
    store.record_step(run, StepTransition::new(step, 1, StepStatus::Running)).await?;
    let mut done = StepTransition::new(step, 1, StepStatus::Completed);
    done.tokens = Some(TokenCount { input, output });
    store.record_step(run, done).await?;
    Ok(())
}

#[tokio::test]
async fn admission_reserves_estimates_refuses_past_the_budget_and_usage_reconciles() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("etter-budget-{}", super::unique_suffix()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("companies.toml");
    std::fs::write(&file, "")?;
    let file_setting = file.display().to_string();
    let server = server_without_temporal_with(&[
        ("ETTER_SERVER__COMPANIES_FILE", file_setting.as_str()),
        ("ETTER_LIMITS__CURRENCY", "USD"),
        ("ETTER_LIMITS__PRICE_PER_MILLION_TOKENS", "3"),
    ])
    .await?;
    let company = format!("{}budget", acme());
    let operator = server.token(&["--company", &company, "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let usage = |api: &mut PipelineServiceClient<tonic::transport::Channel>| {
        let mut api = api.clone();
        let (company, operator) = (company.clone(), operator.clone());
        async move {
            let request = GetUsageRequest { company_id: company, period: String::new() };
            anyhow::Ok(api.get_usage(with_token(request, &operator)?).await?.into_inner())
        }
    };

    // The first run tells what one run is estimated to use, and what that costs.
    let push =
        pb::PushRequest { company_id: company.clone(), ..push_request("Budget Role 0", &doc_uri(&server, "b.pdf")) };
    let first = api.push(with_token(push, &operator)?).await?.into_inner();
    let estimate = first.token_estimate.context("an estimate")?;
    let per_run = estimate.total_tokens;
    anyhow::ensure!(per_run > 0);
    assert_eq!((estimate.cost_micros, estimate.currency.as_str()), (per_run * 3, "USD"), "3 USD a million tokens");
    let before = usage(&mut api).await?;
    assert_eq!((before.budget_tokens, before.used_tokens, before.reserved_tokens), (0, 0, per_run), "no budget yet");
    assert_eq!(before.remaining_tokens, None, "without a budget nothing is said to remain, not 0");

    // A budget of three and a half runs, set live in the companies file.
    let budget = per_run * 7 / 2;
    std::fs::write(&file, format!("[companies.{company}]\ntoken_budget = {budget}\n"))?;
    std::fs::File::options()
        .write(true)
        .open(&file)?
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(5))?;
    let probe = api.clone();
    eventually("the budget to apply", || {
        let mut api = probe.clone();
        let (company, operator) = (company.clone(), operator.clone());
        async move {
            let request = GetUsageRequest { company_id: company, period: String::new() };
            let seen = api.get_usage(with_token(request, &operator)?).await?.into_inner();
            Ok((seen.budget_tokens == budget).then_some(()))
        }
    })
    .await?;

    // Three more runs would need 3 estimates, with 1 reserved: refused whole, with what remains.
    // The batch's runs plan what the first push planned (the critical path only).
    let batch = |from: usize, n: usize| {
        let names = (from..from + n).map(|i| format!("Budget Role {i}")).collect::<Vec<_>>();
        let mut batch = batch_of(&server, &company, &names);
        batch.default_options = Some(pb::RunOptions { skip_enhancement_workflows: true, ..Default::default() });
        batch
    };
    let refused = api.push_batch(with_token(batch(1, 3), &operator)?).await.err().context("over")?;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(refused.get_details_error_info().map(|i| i.reason).as_deref(), Some("BUDGET_EXCEEDED"));
    // A run still reserves tokens and the batch could be smaller: both are offered.
    assert!(
        refused.message().contains("wait for its queued and running runs to end")
            && refused.message().contains("push fewer roles"),
        "{refused:?}"
    );
    let quota = refused.get_details_quota_failure().context("QuotaFailure")?;
    let remaining = budget - per_run;
    let said = &quota.violations[0].description;
    assert!(
        said.contains(&format!("remaining {remaining}")) && said.contains(&format!("needs {}", 3 * per_run)),
        "{said}"
    );
    assert_eq!(usage(&mut api).await?.reserved_tokens, per_run, "nothing of the refused batch was reserved");

    // Two fit.
    let batch = api.push_batch(with_token(batch(1, 2), &operator)?).await?.into_inner();
    let now = usage(&mut api).await?;
    assert_eq!((now.reserved_tokens, now.remaining_tokens), (3 * per_run, Some(budget - 3 * per_run)));

    // The worker's usage: the first run's steps record tokens and it ends; its reservation is
    // released, the used tokens are the sum of its steps'; a running run's reservation shrinks by
    // what it used so far.
    let store = etter_store::connect(&StoreLocation::Sqlite(server.data_dir.join("etter.db"))).await?;
    let run = WorkflowId::parse(&first.workflow_id)?;
    store.transition(&run, Transition::to(RunState::Processing, "played by the test")).await?;
    let steps = [("role_setup", 0, 0), ("document_linking", 0, 0), ("ai_assessment", 1200, 300), ("finalize", 0, 0)];
    for (step, input, output) in steps {
        used(store.as_ref(), &run, step, input, output).await?;
    }
    store.transition(&run, Transition::to(RunState::Ready, "played by the test")).await?;
    let second = WorkflowId::parse(&batch.items[0].workflow_id)?;
    store.transition(&second, Transition::to(RunState::Processing, "played by the test")).await?;
    used(store.as_ref(), &second, "ai_assessment", 100, 50).await?;

    let after = usage(&mut api).await?;
    assert_eq!(after.used_tokens, 1500 + 150, "the sum of the steps' tokens");
    assert_eq!(after.reserved_tokens, 2 * per_run - 150, "the ended run released; the running one used 150");
    assert_eq!(after.remaining_tokens, Some(budget - after.used_tokens - after.reserved_tokens));
    let assessment = after.steps.iter().find(|s| s.step == "ai_assessment").context("per step")?;
    assert_eq!((assessment.input_tokens, assessment.output_tokens, assessment.total_tokens), (1300, 350, 1650));
    assert_eq!((after.used_cost_micros, after.currency.as_str()), (1650 * 3, "USD"));
    assert!(after.period_start.is_some() && after.period_end.is_some() && after.period.len() == 7, "{after:?}");

    // Another month has no usage; a bad month and another company are refused.
    let past = GetUsageRequest { company_id: company.clone(), period: "2001-01".into() };
    let past = api.get_usage(with_token(past, &operator)?).await?.into_inner();
    assert_eq!((past.used_tokens, past.reserved_tokens), (0, 0));
    let bad = GetUsageRequest { company_id: company.clone(), period: "January".into() };
    assert_eq!(api.get_usage(with_token(bad, &operator)?).await.err().map(|s| s.code()), Some(Code::InvalidArgument));
    let other = GetUsageRequest { company_id: acme(), period: String::new() };
    assert_eq!(
        api.get_usage(with_token(other, &operator)?).await.err().map(|s| s.code()),
        Some(Code::PermissionDenied)
    );
    store.close().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
