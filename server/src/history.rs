//! `History`: a company's runs, newest first, filtered, in pages that neither skip nor repeat runs
//! while new runs are being added (the store pages by keyset).
//!
//! A page token is bound to the filters it was issued for: a token sent with other filters is
//! `INVALID_ARGUMENT` rather than a silently wrong page (AIP-158).

use std::collections::HashMap;

use etter_core::ids::{BatchId, CompanyId, RoleId, WorkflowId};
use etter_proto::v1 as pb;
use etter_store::{self, PageRequest, RunFilter, RunStore, Timestamp};

use crate::limits::Limits;
use crate::{
    convert,
    error::{ApiError, Violation},
    estimate::Estimator,
    principal::Principal,
    status,
    tokens::{Kind, TokenKeys},
};

/// The `ErrorInfo.reason` of an invalid History request.
const INVALID_HISTORY: &str = "INVALID_HISTORY_REQUEST";

/// What History reads.
pub struct HistoryContext<'a> {
    /// The keys page tokens are sealed with.
    pub tokens: &'a TokenKeys,
    /// The run store.
    pub store: &'a dyn RunStore,
    /// ETAs of the active runs listed.
    pub estimator: &'a Estimator,
    /// Calls per minute and queued-run caps.
    pub limits: &'a Limits,
}

/// `History`: authorize, validate the filters, list one page.
pub async fn history(
    cx: &HistoryContext<'_>,
    principal: &Principal,
    request: pb::HistoryRequest,
) -> Result<pb::HistoryResponse, ApiError> {
    let company = CompanyId::parse(&request.company_id)
        .map_err(|e| ApiError::invalid(INVALID_HISTORY, "company_id", e.problem))?;
    principal.authorize_company(&company)?;
    cx.limits.admit_call(&company)?;
    let (filter, page) = validate(cx.tokens, company, &request)?;
    let listed = cx.store.list_runs(&filter, &page).await.map_err(|e| match e {
        etter_store::StoreError::InvalidPageToken => ApiError::invalid(INVALID_HISTORY, "page_token", e.to_string()),
        other => other.into(),
    })?;
    let positions: HashMap<WorkflowId, u32> = if listed.runs.iter().any(|r| r.state.is_active()) {
        cx.store.queue_positions(&filter.company).await?.into_iter().map(|p| (p.workflow_id, p.position)).collect()
    } else {
        HashMap::new()
    };
    let mut runs = Vec::with_capacity(listed.runs.len());
    for run in &listed.runs {
        let attempts = cx.store.steps(&run.workflow_id).await?;
        runs.push(status::assemble(run, &attempts, positions.get(&run.workflow_id).copied(), cx.estimator));
    }
    let next_page_token = listed
        .next_page_token
        .map(|position| {
            cx.tokens.seal_page(Kind::HistoryPage, filter.company.as_str().as_bytes(), &filters_of(&request), &position)
        })
        .unwrap_or_default();
    Ok(pb::HistoryResponse { runs, next_page_token })
}

/// Checks every filter and reports every invalid one.
pub(crate) fn validate(
    tokens: &TokenKeys,
    company: CompanyId,
    request: &pb::HistoryRequest,
) -> Result<(RunFilter, PageRequest), ApiError> {
    let mut violations = Vec::new();
    let mut states = Vec::new();
    for (i, value) in request.statuses.iter().enumerate() {
        match convert::run_state(*value) {
            Some(state) => states.push(state),
            None => violations.push(Violation::new(
                format!("statuses[{i}]"),
                "must be a state runs can be in (QUEUED, PROCESSING, READY, DEGRADED, FAILED, STALE, CANCELLED, VALIDATION_ERROR)",
            )),
        }
    }
    let role = parse_optional(&request.role_id, RoleId::parse, "role_id", &mut violations);
    let batch = parse_optional(&request.batch_id, BatchId::parse, "batch_id", &mut violations);
    let created_after = time(request.create_time_after.as_ref(), "create_time_after", &mut violations);
    let created_before = time(request.create_time_before.as_ref(), "create_time_before", &mut violations);
    if let (Some(after), Some(before)) = (created_after, created_before)
        && after >= before
    {
        violations.push(Violation::new("create_time_before", "must be later than create_time_after"));
    }
    if request.page_size < 0 {
        violations.push(Violation::new("page_size", "must not be negative (0 = the default of 50)"));
    }
    let filters = filters_of(request);
    let token = match tokens.open_page(Kind::HistoryPage, company.as_str().as_bytes(), &filters, &request.page_token) {
        Ok(token) => token,
        Err(violation) => {
            violations.push(violation);
            None
        }
    };
    if !violations.is_empty() {
        return Err(ApiError::InvalidArgument { reason: INVALID_HISTORY, violations });
    }
    let filter =
        RunFilter { company, states, role, batch, created_after, created_before, needs_review: request.needs_review };
    // Larger than the maximum is served at the maximum (AIP-158).
    let size = u32::try_from(request.page_size).unwrap_or(0).min(etter_store::MAX_PAGE_SIZE);
    Ok((filter, PageRequest { size, token }))
}

fn parse_optional<T>(
    value: &str,
    parse: impl Fn(&str) -> Result<T, etter_core::ids::InvalidId>,
    field: &str,
    violations: &mut Vec<Violation>,
) -> Option<T> {
    if value.is_empty() {
        return None;
    }
    // The violation names its field: its description is the rule alone.
    parse(value).map_err(|e| violations.push(Violation::new(field, e.problem))).ok()
}

fn time(value: Option<&prost_types::Timestamp>, field: &str, violations: &mut Vec<Violation>) -> Option<Timestamp> {
    let value = value?;
    let parsed =
        u32::try_from(value.nanos).ok().and_then(|nanos| chrono::DateTime::from_timestamp(value.seconds, nanos));
    if parsed.is_none() {
        violations.push(Violation::new(field, "is not a valid timestamp"));
    }
    parsed
}

/// The request's filters: everything but `page_size` and `page_token`, which a page token is
/// bound to.
fn filters_of(request: &pb::HistoryRequest) -> pb::HistoryRequest {
    pb::HistoryRequest { page_size: 0, page_token: String::new(), ..request.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::HistoryRequest {
        pb::HistoryRequest { company_id: "acme".into(), ..Default::default() }
    }

    fn company() -> CompanyId {
        CompanyId::parse("acme").unwrap_or_else(|e| panic!("{e}"))
    }

    fn keys() -> TokenKeys {
        TokenKeys::new(b"a test key of at least thirty-two bytes", &[])
    }

    fn fields(err: ApiError) -> Vec<String> {
        match err {
            ApiError::InvalidArgument { violations, .. } => violations.into_iter().map(|v| v.field).collect(),
            other => vec![format!("{other:?}")],
        }
    }

    #[test]
    fn every_invalid_filter_is_reported() {
        let mut bad = request();
        bad.statuses = vec![pb::RoleStatus::Ready as i32, pb::RoleStatus::Draft as i32, 99];
        bad.role_id = "Claims".into();
        bad.batch_id = "nope".into();
        bad.create_time_after = Some(prost_types::Timestamp { seconds: 2_000, nanos: 0 });
        bad.create_time_before = Some(prost_types::Timestamp { seconds: 1_000, nanos: 0 });
        bad.page_size = -1;
        bad.page_token = "garbage".into();
        let got = validate(&keys(), company(), &bad).err().map(fields).unwrap_or_default();
        assert_eq!(
            got,
            ["statuses[1]", "statuses[2]", "role_id", "batch_id", "create_time_before", "page_size", "page_token"]
        );
    }

    #[test]
    fn a_page_token_only_serves_the_filters_it_was_issued_for() -> anyhow::Result<()> {
        let mut first = request();
        first.statuses = vec![pb::RoleStatus::Ready as i32];
        let mut next = first.clone();
        next.page_token = keys().seal_page(Kind::HistoryPage, b"acme", &filters_of(&first), "store-token");
        next.page_size = 200;
        let (_, page) = validate(&keys(), company(), &next)?;
        assert_eq!(page.token.as_deref(), Some("store-token"), "page size may change between pages");
        assert_eq!(page.size, 200);

        let mut other = next.clone();
        other.statuses = vec![pb::RoleStatus::Failed as i32];
        assert_eq!(validate(&keys(), company(), &other).err().map(fields).unwrap_or_default(), ["page_token"]);

        // Another company's token, even for the same filters, is not this request's.
        let mut theirs = first.clone();
        theirs.company_id = "acme-secret".into();
        let mut replayed = next.clone();
        replayed.page_token = keys().seal_page(Kind::HistoryPage, b"acme-secret", &filters_of(&theirs), "store-token");
        assert_eq!(validate(&keys(), company(), &replayed).err().map(fields).unwrap_or_default(), ["page_token"]);
        // An unsealed token of the form earlier servers issued is refused, not trusted.
        replayed.page_token = "0123456789abcdef.store-token".into();
        assert_eq!(validate(&keys(), company(), &replayed).err().map(fields).unwrap_or_default(), ["page_token"]);
        Ok(())
    }

    #[test]
    fn page_sizes_are_capped_not_refused() -> anyhow::Result<()> {
        let mut big = request();
        big.page_size = 10_000;
        assert_eq!(validate(&keys(), company(), &big)?.1.size, etter_store::MAX_PAGE_SIZE);
        Ok(())
    }
}
