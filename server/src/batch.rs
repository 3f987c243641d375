//! `PushBatch`: up to `server.max_batch_size` roles in one call, each item validated as a `Push`
//! would be, with its own outcome — one bad item never sinks the batch.
//!
//! - A valid item is queued, or answered with the role's existing run when its inputs are the
//!   same (as `Push` does).
//! - An invalid item is stored as VALIDATION_ERROR with its field violations, so it can be listed
//!   and fixed later. An item whose role name itself is invalid has no role to be stored under:
//!   it is answered REJECTED with its violations and nothing is stored.
//! - A batch with more remote documents than `documents.max_inline_checks` does not wait for
//!   them: its items with remote documents are stored VALIDATING (otherwise valid) and checked in
//!   the background ([`crate::document_checks::Checker`]). A quote checks every document.
//! - A role that appears again later in the same batch is a DUPLICATE item: ignored, with a
//!   violation naming the item it repeats.
//! - The runs are written in a few transactions ([`etter_store::BATCH_CHUNK_SIZE`] runs
//!   each), not one per item.
//! - Re-sending the batch with the same `request_id` returns the first answer (with
//!   `created: false`); re-sending it without one creates nothing new for the items already
//!   queued or READY (they are answered EXISTING).
//!
//! A batch's progress counts the runs it created (accepted and rejected items). Items answered
//! with an existing run belong to the push that created that run.

use std::collections::{BTreeMap, HashMap};

use etter_core::ids::{BatchId, CompanyId, DraupRoleId, RoleId, RoleName, WorkflowId};
use etter_core::lifecycle::RunState;
use etter_documents::Documents;
use etter_proto::v1 as pb;
use etter_store::{Admission, Batch, Created, DocumentRef, FieldViolation, NewBatch, NewRun, RunStore, StoreError};
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tonic_types::pb::bad_request::FieldViolation as FieldViolationPb;

use crate::limits::Limits;
use crate::trace::RequestTrace;
use crate::{
    convert::{self, StoredOptions},
    deadline::Outlook,
    document_checks::DocumentChecks,
    error::{ApiError, Violation},
    estimate::Estimator,
    idempotency::{self, Idempotency},
    principal::Principal,
    push,
};

/// The `ErrorInfo.reason` of a batch refused whole.
const INVALID_BATCH: &str = "INVALID_BATCH";

/// What a batch push needs from the server.
pub struct BatchContext<'a> {
    /// The run store.
    pub store: &'a dyn RunStore,
    /// The documents: their URIs are checked against its rules, and each is checked to exist
    /// and be readable before its run is queued.
    pub documents: &'a Documents,
    /// ETAs and token estimates from measured step costs.
    pub estimator: &'a Estimator,
    /// `server.max_batch_size`.
    pub max_batch_size: u32,
    /// The request's trace, kept with every run the batch creates.
    pub trace: RequestTrace,
    /// Calls per minute and queued-run caps.
    pub limits: &'a Limits,
}

/// What was decided about one item before anything is stored.
enum Item {
    /// Valid, or invalid with a role to store it under: goes to the store (index into the
    /// store's items).
    Stored(usize),
    /// Invalid without a role name: answered, not stored.
    Unstorable(Vec<Violation>),
    /// The same role as the item at this index.
    Duplicate { of: usize, role: RoleId },
}

/// `PushBatch`: authorize, check the batch as a whole, answer a retried `request_id` with its
/// first answer, decide every item, store the batch, answer one result per item.
pub async fn push_batch(
    cx: &BatchContext<'_>,
    principal: &Principal,
    request: pb::PushBatchRequest,
) -> Result<pb::PushBatchResponse, ApiError> {
    principal.require_operator()?;
    let company =
        CompanyId::parse(&request.company_id).map_err(|e| ApiError::invalid(INVALID_BATCH, "company_id", e.problem))?;
    principal.authorize_write(&company)?;
    cx.limits.admit_call(&company)?;
    let request_id = idempotency::request_id(&request.request_id, INVALID_BATCH)?;
    check_whole(&request, cx.max_batch_size)?;
    let mut payload = request.clone();
    payload.request_id.clear();
    let idempotency =
        Idempotency::new(cx.store, "PushBatch", &company, request_id.clone(), idempotency::payload_hash(&payload));
    // A quote never answers from, nor is remembered under, a request id.
    if !request.validate_only
        && let Some(mut answer) = idempotency.replay::<pb::PushBatchResponse>().await?
    {
        answer.created = false;
        return Ok(answer);
    }

    let documents = request.items.iter().flat_map(|item| &item.documents);
    let checked = if request.validate_only {
        DocumentChecks::run(cx.documents, documents).await?
    } else {
        DocumentChecks::run_or_defer(cx.documents, documents).await?
    };
    // Items with a deadline are placed behind the company's queued runs.
    let with_deadline =
        request.items.iter().any(|item| item.options.or(request.default_options).is_some_and(|o| o.deadline.is_some()));
    let queued = if with_deadline { crate::status::queued_count(cx.store, &company).await? } else { 0 };
    let (decided, new_runs) = decide(cx, principal, &company, &request, &checked, queued)?;
    admit_whole(cx, &company, &new_runs).await?;
    // A quote has the store decide the items as it would store them, and stores nothing; its new
    // runs are placed behind the company's queued runs, in request order.
    let (batch, stored) = if request.validate_only {
        (None, cx.store.preview_runs(new_runs).await?)
    } else {
        let batch = NewBatch { id: BatchId::from_random(crate::random_u128()), company: company.clone(), request_id };
        let created = cx.store.create_batch(batch, new_runs).await?;
        (Some(created.batch), created.items)
    };
    let mut positions: HashMap<WorkflowId, u32> =
        cx.store.queue_positions(&company).await?.into_iter().map(|p| (p.workflow_id, p.position)).collect();
    // A quote's new runs, and the runs being checked, come after the company's queued runs: the
    // place a VALIDATING run is given counts in its ETA only.
    let mut next = u32::try_from(positions.len()).unwrap_or(u32::MAX);
    let placed = |run: &&Created| {
        run.created && (run.run.state == RunState::Validating || (batch.is_none() && run.run.state == RunState::Queued))
    };
    for run in stored.iter().flatten().filter(placed).map(|c| &c.run) {
        next = next.saturating_add(1);
        positions.insert(run.workflow_id.clone(), next);
    }
    let mut tokens = 0_i64;
    let items: Vec<pb::PushBatchItemResult> = request
        .items
        .iter()
        .zip(&decided)
        .enumerate()
        .map(|(index, (item, decision))| {
            let mut result = pb::PushBatchItemResult {
                index: i32::try_from(index).unwrap_or(i32::MAX),
                client_ref: item.client_ref.clone(),
                ..Default::default()
            };
            match decision {
                Item::Stored(at) => match &stored[*at] {
                    Ok(done) => {
                        if done.created && done.run.state != RunState::ValidationError {
                            tokens = tokens.saturating_add(done.run.token_estimate);
                        }
                        stored_result(&mut result, done, &positions, cx.estimator);
                    }
                    Err(err) => {
                        // The role's latest run is still active with other inputs (or a role id
                        // collides): the item is refused and says why; nothing was stored for it.
                        result.outcome = pb::BatchItemOutcome::Rejected as i32;
                        result.role_id = role_of(&company, item).map(|r| r.to_string()).unwrap_or_default();
                        result.field_violations = vec![item_error(err)];
                    }
                },
                Item::Unstorable(violations) => {
                    result.outcome = pb::BatchItemOutcome::Rejected as i32;
                    result.field_violations = violations
                        .iter()
                        .map(|v| FieldViolationPb {
                            field: v.field.clone(),
                            description: v.description.clone(),
                            ..Default::default()
                        })
                        .collect();
                }
                Item::Duplicate { of, role } => {
                    result.outcome = pb::BatchItemOutcome::Duplicate as i32;
                    result.role_id = role.to_string();
                    result.field_violations = vec![FieldViolationPb {
                        field: "role_name".to_owned(),
                        description: format!("the same role as item {of} of this batch; this item was ignored"),
                        ..Default::default()
                    }];
                }
            }
            result
        })
        .collect();
    let progress = initial_progress(&company, batch.as_ref(), &stored, &items);
    let Some(batch) = batch else {
        return Ok(pb::PushBatchResponse {
            batch_id: String::new(),
            items,
            progress: Some(progress),
            token_estimate: Some(cx.estimator.token_estimate(tokens)),
            created: false,
        });
    };
    let response = pb::PushBatchResponse {
        batch_id: batch.id.to_string(),
        items,
        progress: Some(progress),
        token_estimate: Some(cx.estimator.token_estimate(tokens)),
        created: true,
    };
    idempotency.remember(response).await
}

/// The progress a batch starts with, as its answer gives it: the runs it created (or, for a
/// quote, would create) per state as they were stored — the same moment as the answer's items,
/// even when the background checks or the dispatcher have moved some of them on since — rejected
/// items counted as done, and when the last of them would end (the latest ETA of its accepted
/// items).
fn initial_progress(
    company: &CompanyId,
    batch: Option<&Batch>,
    stored: &[Result<Created, StoreError>],
    items: &[pb::PushBatchItemResult],
) -> pb::BatchProgress {
    let mut counts: BTreeMap<RunState, u64> = BTreeMap::new();
    for run in stored.iter().flatten().filter(|c| c.created).map(|c| &c.run) {
        *counts.entry(run.state).or_default() += 1;
    }
    let count = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
    pb::BatchProgress {
        batch_id: batch.map(|b| b.id.to_string()).unwrap_or_default(),
        company_id: company.to_string(),
        total: count(counts.values().sum()),
        done: count(counts.get(&RunState::ValidationError).copied().unwrap_or(0)),
        counts: counts
            .iter()
            .map(|(state, n)| pb::StatusCount { status: convert::role_status(*state) as i32, count: count(*n) })
            .collect(),
        estimated_duration_seconds: items
            .iter()
            .filter(|i| i.outcome == pb::BatchItemOutcome::Accepted as i32)
            .map(|i| i.estimated_duration_seconds)
            .max()
            .unwrap_or(0),
        create_time: batch.map(|b| convert::timestamp(b.create_time)),
    }
}

/// Decides every item before anything is stored: a repeat of a role earlier in the batch is a
/// duplicate; a valid item whose documents passed their checks becomes a run to queue; an invalid
/// one with a role name becomes a VALIDATION_ERROR run (so its role's history shows it); one
/// without is answered only.
fn decide(
    cx: &BatchContext<'_>,
    principal: &Principal,
    company: &CompanyId,
    request: &pb::PushBatchRequest,
    checked: &DocumentChecks,
    queued: u32,
) -> Result<(Vec<Item>, Vec<NewRun>), ApiError> {
    let now = etter_store::now();
    // Items of this batch to be queued so far: an item with a deadline comes after them.
    let mut queuing = 0_u32;
    let mut decided = Vec::with_capacity(request.items.len());
    let mut new_runs = Vec::new();
    let mut first_of_role: HashMap<RoleId, usize> = HashMap::new();
    for (index, item) in request.items.iter().enumerate() {
        let role = RoleName::parse(&item.role_name).ok().map(|name| RoleId::new(company, &name));
        if let Some(role) = &role {
            if let Some(&of) = first_of_role.get(role) {
                decided.push(Item::Duplicate { of, role: role.clone() });
                continue;
            }
            first_of_role.insert(role.clone(), index);
        }
        let as_push = pb::PushRequest {
            company_id: request.company_id.clone(),
            role_name: item.role_name.clone(),
            documents: item.documents.clone(),
            draup_role_id: item.draup_role_id.clone(),
            options: item.options.or(request.default_options),
            request_id: String::new(),
            validate_only: false,
        };
        let document_violations = checked.violations(&as_push.documents);
        let validated = match push::validate(&as_push, cx.documents.config()) {
            Ok(_) if !document_violations.is_empty() => {
                Err(ApiError::InvalidArgument { reason: push::INVALID_DOCUMENT, violations: document_violations })
            }
            Err(ApiError::InvalidArgument { reason, mut violations }) => {
                violations.extend(document_violations);
                Err(ApiError::InvalidArgument { reason, violations })
            }
            // An item whose run would not end by its deadline is rejected like an invalid one.
            Ok(valid) => match valid.deadline {
                Some(deadline) => {
                    let plan = etter_core::steps::plan_new(valid.options.skip_enhancement_workflows);
                    let position = queued.saturating_add(queuing).saturating_add(1);
                    match Outlook::at(cx.estimator, company, &plan, position).admit(deadline, now) {
                        Ok(()) => Ok(valid),
                        Err(refused) => Err(ApiError::InvalidArgument {
                            reason: crate::deadline::UNREACHABLE,
                            violations: vec![Violation::new("options.deadline", refused.to_string())],
                        }),
                    }
                }
                None => Ok(valid),
            },
            other => other,
        };
        match validated {
            Ok(valid) => {
                queuing = queuing.saturating_add(1);
                decided.push(Item::Stored(new_runs.len()));
                let mut run = valid.to_new_run(cx.estimator, principal, cx.trace.clone());
                run.reason = format!("pushed by {} in a batch", principal.user);
                if checked.deferred(&as_push.documents) {
                    run.admission = Admission::Validate;
                    run.reason.push_str("; its documents are checked before it is queued");
                }
                new_runs.push(run);
            }
            Err(ApiError::InvalidArgument { violations, .. }) => match RoleName::parse(&item.role_name) {
                Ok(role_name) => {
                    decided.push(Item::Stored(new_runs.len()));
                    new_runs.push(rejected_run(company, role_name, &as_push, &violations, principal, cx.trace.clone()));
                }
                Err(_) => decided.push(Item::Unstorable(violations)),
            },
            Err(other) => return Err(other),
        }
    }
    Ok((decided, new_runs))
}

/// The whole batch fits under the company's queue caps and token budget, or none of it is
/// stored.
async fn admit_whole(cx: &BatchContext<'_>, company: &CompanyId, new_runs: &[NewRun]) -> Result<(), ApiError> {
    let queuing: Vec<&NewRun> =
        new_runs.iter().filter(|r| matches!(r.admission, Admission::Queue | Admission::Validate)).collect();
    cx.limits.admit_queued(cx.store, company, u64::try_from(queuing.len()).unwrap_or(u64::MAX)).await?;
    let estimated = queuing.iter().map(|r| r.token_estimate).fold(0, i64::saturating_add);
    cx.limits.admit_tokens(cx.store, company, queuing.len(), estimated).await
}

/// The answer for an item that reached the store: accepted (a new run), existing (the role's
/// run with the same inputs), or rejected (stored as VALIDATION_ERROR, with its violations).
fn stored_result(
    result: &mut pb::PushBatchItemResult,
    done: &Created,
    positions: &HashMap<WorkflowId, u32>,
    estimator: &Estimator,
) {
    let run = &done.run;
    let outcome = if run.state == RunState::ValidationError {
        pb::BatchItemOutcome::Rejected
    } else if done.created {
        pb::BatchItemOutcome::Accepted
    } else {
        pb::BatchItemOutcome::Existing
    };
    result.outcome = outcome as i32;
    result.workflow_id = run.workflow_id.to_string();
    result.role_id = run.role_id.to_string();
    result.status = convert::role_status(run.state) as i32;
    let position = positions.get(&run.workflow_id).copied();
    if run.state == RunState::Validating {
        result.wait_reason = estimator.conditions().validating() as i32;
    } else if let Some(position) = position {
        result.position_in_queue = i32::try_from(position).unwrap_or(i32::MAX);
        result.wait_reason = estimator.conditions().queued(&run.company_id, position) as i32;
    }
    if run.state != RunState::ValidationError {
        result.plan = crate::status::planned(run, done.created);
        if done.created {
            result.token_estimate = Some(estimator.token_estimate(run.token_estimate));
        }
        if !run.state.is_final() {
            result.estimated_duration_seconds = estimator.remaining_seconds(&crate::status::plan_of(run), position, 0);
        }
    }
    result.field_violations = run.field_violations.iter().map(convert::field_violation).collect();
}

/// Refuses a batch that is wrong as a whole: no items, too many, bad default options.
pub(crate) fn check_whole(request: &pb::PushBatchRequest, max_batch_size: u32) -> Result<(), ApiError> {
    let mut violations = Vec::new();
    if request.items.is_empty() {
        violations.push(Violation::new("items", "at least one item is required"));
    }
    if request.items.len() > max_batch_size as usize {
        violations.push(Violation::new(
            "items",
            format!(
                "{} items is more than the {max_batch_size} one batch may carry; split it into several batches",
                request.items.len()
            ),
        ));
    }
    for (i, item) in request.items.iter().enumerate() {
        if let Err(problem) = check_client_ref(&item.client_ref) {
            violations.push(Violation::new(format!("items[{i}].client_ref"), problem));
        }
    }
    if let Some(options) = &request.default_options
        && convert::priority(options.priority).is_none()
    {
        violations
            .push(Violation::new("default_options.priority", "must be PRIORITY_LOW, PRIORITY_NORMAL or PRIORITY_HIGH"));
    }
    if violations.is_empty() { Ok(()) } else { Err(ApiError::InvalidArgument { reason: INVALID_BATCH, violations }) }
}

/// Longest `client_ref`, in characters.
const MAX_CLIENT_REF_CHARS: usize = 256;

/// A client's reference is echoed back and shown in the console: short, and nothing in it that
/// hides or reorders what is shown.
fn check_client_ref(value: &str) -> Result<(), String> {
    if value.chars().count() > MAX_CLIENT_REF_CHARS {
        return Err(format!("must be at most {MAX_CLIENT_REF_CHARS} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    match value.chars().find(|c| etter_core::ids::is_invisible_format(*c)) {
        Some(c) => Err(format!(
            "must not contain invisible formatting characters (found U+{:04X}): bidirectional overrides and \
             zero-width characters make a reference show as something it is not",
            u32::from(c)
        )),
        None => Ok(()),
    }
}

/// The VALIDATION_ERROR run of an invalid item: what was given (documents of a known type, the
/// Draup role if valid) and why it was refused.
fn rejected_run(
    company: &CompanyId,
    role_name: RoleName,
    item: &pb::PushRequest,
    violations: &[Violation],
    principal: &Principal,
    trace: RequestTrace,
) -> NewRun {
    let options = item.options.unwrap_or_default();
    let stored_options = StoredOptions {
        skip_enhancement_workflows: options.skip_enhancement_workflows,
        notify_on_complete: options.notify_on_complete,
        force_rerun: options.force_rerun,
        priority: convert::priority(options.priority).unwrap_or_default(),
    };
    let documents = item
        .documents
        .iter()
        .filter_map(|d| {
            let kind = convert::document_kind(d.r#type)?;
            Some(DocumentRef { kind: convert::document_kind_str(kind).to_owned(), uri: d.uri.clone() })
        })
        .collect();
    NewRun {
        company: company.clone(),
        role_name,
        draup_role_id: DraupRoleId::parse(&item.draup_role_id).ok(),
        input_identity: hex::encode(Sha256::digest(item.encode_to_vec())),
        documents,
        options: stored_options.to_json(),
        priority: stored_options.priority,
        token_estimate: 0,
        force: false,
        expected_latest: None,
        admission: Admission::Reject(
            violations
                .iter()
                .map(|v| FieldViolation { field: v.field.clone(), description: v.description.clone() })
                .collect(),
        ),
        plan: None,
        reason: format!("rejected from a batch pushed by {}", principal.user),
        // A rejected item never runs, so it never ends: nothing to announce.
        notify: false,
        trace_id: trace.id,
        trace_parent: trace.parent,
        deadline: None,
        model: None,
    }
}

fn role_of(company: &CompanyId, item: &pb::PushBatchItem) -> Option<RoleId> {
    RoleName::parse(&item.role_name).ok().map(|name| RoleId::new(company, &name))
}

/// Why the store refused one item, as a violation of the item's role.
fn item_error(err: &StoreError) -> FieldViolationPb {
    let description = match err {
        StoreError::RunStillActive(active) => {
            format!("{active}; wait for that run to end or cancel it, then push the role again")
        }
        other => other.to_string(),
    };
    FieldViolationPb { field: "role_name".to_owned(), description, ..Default::default() }
}

/// A batch's aggregate progress: its runs per state, how many ended, and an estimate of when the
/// last one ends: the ETA of its last queued run (its place in the company's queue, its plan).
pub async fn progress(
    store: &dyn RunStore,
    estimator: &Estimator,
    batch: &Batch,
) -> Result<pb::BatchProgress, ApiError> {
    let counts: BTreeMap<RunState, u64> = store.batch_counts(&batch.id).await?.into_iter().collect();
    let count = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
    let total: u64 = counts.values().sum();
    let done: u64 = counts.iter().filter(|(s, _)| s.is_final() || **s == RunState::Stale).map(|(_, n)| n).sum();
    let queued = counts.get(&RunState::Queued).copied().unwrap_or(0);
    let processing = counts.get(&RunState::Processing).copied().unwrap_or(0);
    // Runs still being checked join the queue after the runs queued now.
    let validating = u32::try_from(counts.get(&RunState::Validating).copied().unwrap_or(0)).unwrap_or(u32::MAX);
    // The batch ends when its last queued run does: that run's own ETA, as GetStatus answers it.
    let last = if queued > 0 { store.last_queued_of_batch(&batch.company, &batch.id).await? } else { None };
    let last = match last {
        Some((position, plan)) => Some((position.saturating_add(validating), plan)),
        None if validating > 0 => {
            Some((crate::status::queued_count(store, &batch.company).await?.saturating_add(validating), None))
        }
        None => None,
    };
    let estimated = match last {
        Some((position, plan)) => {
            let plan = plan.unwrap_or_else(|| etter_core::steps::plan_new(false));
            estimator.remaining_seconds(&plan, Some(position), 0)
        }
        // Only started runs left: at most one whole run.
        None if processing > 0 => estimator.run_seconds(&etter_core::steps::plan_new(false)),
        None => 0,
    };
    Ok(pb::BatchProgress {
        batch_id: batch.id.to_string(),
        company_id: batch.company.to_string(),
        total: count(total),
        done: count(done),
        counts: counts
            .iter()
            .map(|(state, n)| pb::StatusCount { status: convert::role_status(*state) as i32, count: count(*n) })
            .collect(),
        estimated_duration_seconds: estimated,
        create_time: Some(convert::timestamp(batch.create_time)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(client_refs: &[&str]) -> pb::PushBatchRequest {
        let items = client_refs
            .iter()
            .map(|r| pb::PushBatchItem { role_name: "Analyst".into(), client_ref: (*r).into(), ..Default::default() })
            .collect();
        pb::PushBatchRequest { company_id: "acme".into(), items, ..Default::default() }
    }

    #[test]
    fn client_refs_that_hide_or_reorder_text_are_refused_by_field() {
        let long = "r".repeat(MAX_CLIENT_REF_CHARS + 1);
        let request = batch(&["row 1", "row\u{202E}2", "row\u{200B}3", &long, "row\n5", "Zeile 6 — ß"]);
        let fields: Vec<String> = match check_whole(&request, 10) {
            Err(ApiError::InvalidArgument { violations, .. }) => violations.into_iter().map(|v| v.field).collect(),
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        };
        assert_eq!(
            fields,
            ["items[1].client_ref", "items[2].client_ref", "items[3].client_ref", "items[4].client_ref"]
        );
        assert!(check_whole(&batch(&["row 1", "Zeile 6 — ß"]), 10).is_ok());
    }

    /// What `server.max_request_bytes` is set from: a batch of the largest size, each item with
    /// typical fields (a 40-character name, a job description and a process map of 100-character
    /// URIs, a Draup role, a client reference) is about 0.9 MB; the default leaves 4× that.
    #[test]
    fn the_default_request_limit_fits_a_full_batch_with_room() {
        use prost::Message as _;
        let document = |kind: pb::DocumentType, i: usize| pb::Document {
            r#type: kind as i32,
            uri: format!("s3://acme-onboarding-documents/job-descriptions/2026/q4/{i:05}-{:0>40}.pdf", i),
            ..Default::default()
        };
        let items = (0..2_500)
            .map(|i| pb::PushBatchItem {
                role_name: format!("Senior Claims Adjuster, Property {i:05}"),
                documents: vec![
                    document(pb::DocumentType::JobDescription, i),
                    document(pb::DocumentType::ProcessMap, i),
                ],
                draup_role_id: format!("draup-role-{i:06}"),
                options: None,
                client_ref: format!("row {i}"),
            })
            .collect();
        let request = pb::PushBatchRequest {
            company_id: "acme-insurance".into(),
            items,
            default_options: Some(pb::RunOptions { skip_enhancement_workflows: true, ..Default::default() }),
            request_id: "batch-2026-12-06-morning".into(),
            validate_only: false,
        };
        let size = request.encoded_len();
        assert!((700_000..1_000_000).contains(&size), "a full typical batch is {size} bytes");
        let limit = crate::config::Config::default().server.max_request_bytes as usize;
        assert!(limit >= 4 * size, "{limit} leaves less than 4x room over {size}");
    }
}
