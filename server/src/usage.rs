//! `GetUsage`: a company's token budget and usage in one month (docs/admission.md, "Limits per company").

use std::collections::BTreeMap;

use chrono::NaiveTime;
use etter_core::ids::CompanyId;
use etter_proto::v1 as pb;
use etter_store::RunStore;

use crate::{
    convert,
    error::ApiError,
    estimate::Estimator,
    limits::{Limits, Month},
    principal::Principal,
};

const INVALID: &str = "INVALID_USAGE_QUERY";

/// What `GetUsage` needs from the server.
pub struct UsageContext<'a> {
    /// The run store.
    pub store: &'a dyn RunStore,
    /// Budgets and call limits.
    pub limits: &'a Limits,
    /// Prices.
    pub estimator: &'a Estimator,
}

/// `GetUsage`: members of the company and admins.
pub async fn get_usage(
    cx: &UsageContext<'_>,
    principal: &Principal,
    request: pb::GetUsageRequest,
) -> Result<pb::GetUsageResponse, ApiError> {
    let company =
        CompanyId::parse(&request.company_id).map_err(|e| ApiError::invalid(INVALID, "company_id", e.to_string()))?;
    principal.authorize_company(&company)?;
    cx.limits.admit_call(&company)?;
    let month = if request.period.is_empty() {
        Month::containing(etter_store::now().date_naive())
    } else {
        Month::parse(&request.period)
            .ok_or_else(|| ApiError::invalid(INVALID, "period", "must be a month as YYYY-MM, e.g. 2026-11"))?
    };
    let budget = cx.limits.budget(cx.store, &company, month.clone()).await?;
    let mut steps: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut days: BTreeMap<chrono::NaiveDate, (i64, i64)> = BTreeMap::new();
    for row in cx.store.usage(&company, month.first, month.last).await? {
        for entry in [steps.entry(row.step).or_default(), days.entry(row.day).or_default()] {
            *entry = (entry.0.saturating_add(row.tokens.input), entry.1.saturating_add(row.tokens.output));
        }
    }
    let (used_cost_micros, currency) = cx.estimator.price(budget.used);
    let start = month.first.and_time(NaiveTime::MIN).and_utc();
    let end = month.last.succ_opt().unwrap_or(month.last).and_time(NaiveTime::MIN).and_utc();
    Ok(pb::GetUsageResponse {
        company_id: company.to_string(),
        period: month.label.clone(),
        period_start: Some(convert::timestamp(start)),
        period_end: Some(convert::timestamp(end)),
        budget_tokens: i64::try_from(budget.limit).unwrap_or(i64::MAX),
        used_tokens: budget.used,
        reserved_tokens: budget.reserved,
        remaining_tokens: (budget.limit > 0).then(|| budget.remaining()),
        steps: steps
            .into_iter()
            .map(|(step, (input, output))| pb::StepUsage {
                step,
                input_tokens: input,
                output_tokens: output,
                total_tokens: input.saturating_add(output),
            })
            .collect(),
        used_cost_micros,
        currency,
        days: days
            .into_iter()
            .map(|(day, (input, output))| pb::DailyUsage {
                date: day.format("%Y-%m-%d").to_string(),
                input_tokens: input,
                output_tokens: output,
                total_tokens: input.saturating_add(output),
            })
            .collect(),
    })
}
