//! The rows the SQL primitives pass in and out, and how a stored row becomes a store value
//! (each decoder reads columns by name through [`Row`], the same way on both backends).

use super::{
    Batch, CompanyLoad, DocumentHash, Notification, Priority, QueuePosition, Run, RunEvent, StepAttempt, StepStats,
    StepStatus, StoreError, Timestamp, TokenCount, UsageRow,
    statement::Row,
    values::{corrupt, id, number, opt_id, run_state},
};
use etter_core::audit::{AuditEntry, AuditEvent, AuditHead};
use etter_core::ids::{BatchId, CompanyId, DraupRoleId, RequestId, RoleId, RoleName, TraceId, TraceParent, WorkflowId};
use etter_core::outputs::ContentHash;

/// A role as `lock_roles` locks it (and inserts it, if absent).
pub(super) struct RoleKey<'a> {
    pub id: &'a RoleId,
    pub company: &'a CompanyId,
    pub name: &'a RoleName,
}

/// A role row as `lock_roles` returns it.
pub(super) struct RoleRow {
    pub role_id: String,
    pub company: String,
    pub name: String,
    pub last_run_number: i64,
}

/// A role's latest run, as `set_roles_latest` records it.
pub(super) struct RoleLatest<'a> {
    pub id: &'a RoleId,
    pub number: u32,
    /// The Draup role of its latest run that had one; `None` keeps the stored one.
    pub draup: Option<&'a DraupRoleId>,
}

/// A stored idempotency record.
pub(super) struct StoredRequest {
    pub payload_hash: String,
    pub response: Vec<u8>,
    pub create_time: Timestamp,
    pub expire_time: Timestamp,
}

/// Where a history page starts: strictly after this (create_time, workflow_id) in newest-first order.
pub(super) struct Cursor {
    pub create_time: Timestamp,
    pub workflow_id: WorkflowId,
}

/// A `roles` row of `role_id, company_id, role_name, last_run_number`.
pub(super) fn decode_role(row: &impl Row) -> Result<RoleRow, StoreError> {
    Ok(RoleRow {
        role_id: row.text("role_id")?,
        company: row.text("company_id")?,
        name: row.text("role_name")?,
        last_run_number: row.int("last_run_number")?,
    })
}

pub(super) fn decode_run(row: &impl Row) -> Result<Run, StoreError> {
    let priority = row.int("priority")?;
    Ok(Run {
        workflow_id: id(row.text("workflow_id")?, WorkflowId::parse)?,
        role_id: id(row.text("role_id")?, RoleId::parse)?,
        company_id: id(row.text("company_id")?, CompanyId::parse)?,
        role_name: id(row.text("role_name")?, RoleName::parse)?,
        draup_role_id: opt_id(row.opt_text("draup_role_id")?, DraupRoleId::parse)?,
        run_number: number("run number", row.int("run_number")?)?,
        input_identity: row.text("input_identity")?,
        state: run_state(&row.text("state")?)?,
        superseded_by: opt_id(row.opt_text("superseded_by")?, WorkflowId::parse)?,
        supersedes: opt_id(row.opt_text("supersedes")?, WorkflowId::parse)?,
        batch_id: opt_id(row.opt_text("batch_id")?, BatchId::parse)?,
        priority: Priority::from_rank(priority).ok_or_else(|| corrupt("priority", &priority.to_string(), "unknown"))?,
        options: row.json("options")?,
        documents: row.json("documents")?,
        error: row.opt_json("error")?,
        needs_review: row.boolean("needs_review")?,
        field_violations: row.json("field_violations")?,
        token_estimate: row.int("token_estimate")?,
        tokens_used: TokenCount { input: row.int("tokens_in")?, output: row.int("tokens_out")? },
        sequence: number("sequence", row.int("last_sequence")?)?,
        create_time: row.time("create_time")?,
        start_time: row.opt_time("start_time")?,
        end_time: row.opt_time("end_time")?,
        update_time: row.time("update_time")?,
        plan: row.opt_json("plan")?,
        notify: row.boolean("notify")?,
        trace_id: opt_id(row.opt_text("trace_id")?, TraceId::parse)?,
        trace_parent: opt_id(row.opt_text("trace_parent")?, TraceParent::parse)?,
        deadline: row.opt_time("deadline")?,
        model: row.opt_text("model")?,
    })
}

pub(super) fn decode_audit_head(row: &impl Row) -> Result<AuditHead, StoreError> {
    Ok(AuditHead { seq: number("audit seq", row.int("seq")?)?, hash: row.text("hash")? })
}

pub(super) fn decode_audit(row: &impl Row) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        seq: number("audit seq", row.int("seq")?)?,
        event: AuditEvent {
            time: row.time("time")?,
            actor: row.text("actor")?,
            role: row.text("role")?,
            company: opt_id(row.opt_text("company_id")?, CompanyId::parse)?,
            action: row.text("action")?,
            target: row.text("target")?,
            outcome: row.text("outcome")?,
            reason: row.text("reason")?,
            request_id: row.opt_text("request_id")?,
            trace_id: opt_id(row.opt_text("trace_id")?, TraceId::parse)?,
            peer: row.opt_text("peer")?,
        },
        prev_hash: row.text("prev_hash")?,
        hash: row.text("hash")?,
    })
}

pub(super) fn decode_step_stats(row: &impl Row) -> Result<StepStats, StoreError> {
    let micros = row.int("micros")?.max(0);
    Ok(StepStats {
        step: row.text("step")?,
        samples: number("samples", row.int("n")?)?,
        mean_duration: std::time::Duration::from_micros(u64::try_from(micros).unwrap_or(0)),
        mean_tokens: row.int("tokens")?,
    })
}

pub(super) fn decode_step(row: &impl Row) -> Result<StepAttempt, StoreError> {
    let status = row.text("status")?;
    Ok(StepAttempt {
        step: row.text("step")?,
        attempt: number("attempt", row.int("attempt")?)?,
        status: StepStatus::parse(&status).ok_or_else(|| corrupt("step status", &status, "unknown"))?,
        started_at: row.opt_time("started_at")?,
        finished_at: row.opt_time("finished_at")?,
        tokens: TokenCount { input: row.int("tokens_in")?, output: row.int("tokens_out")? },
        input_hash: row.opt_text("input_hash")?,
        output_hash: row.opt_text("output_hash")?,
        error: row.opt_json("error")?,
        reused_from: opt_id(row.opt_text("reused_from")?, WorkflowId::parse)?,
        model: row.opt_text("model")?,
        prompt_version: row.opt_text("prompt_version")?,
        digest: row.opt_json("digest")?,
        update_time: row.time("update_time")?,
    })
}

pub(super) fn decode_event(row: &impl Row) -> Result<RunEvent, StoreError> {
    Ok(RunEvent {
        workflow_id: id(row.text("workflow_id")?, WorkflowId::parse)?,
        sequence: number("sequence", row.int("sequence")?)?,
        time: row.time("event_time")?,
        change: row.json("payload")?,
    })
}

pub(super) fn decode_batch(row: &impl Row) -> Result<Batch, StoreError> {
    Ok(Batch {
        id: id(row.text("batch_id")?, BatchId::parse)?,
        company: id(row.text("company_id")?, CompanyId::parse)?,
        request_id: opt_id(row.opt_text("request_id")?, RequestId::parse)?,
        item_count: number("item count", row.int("item_count")?)?,
        create_time: row.time("create_time")?,
    })
}

pub(super) fn decode_notification(row: &impl Row) -> Result<Notification, StoreError> {
    Ok(Notification {
        id: row.int("id")?,
        workflow_id: id(row.text("workflow_id")?, WorkflowId::parse)?,
        company: id(row.text("company_id")?, CompanyId::parse)?,
        state: run_state(&row.text("state")?)?,
        create_time: row.time("create_time")?,
        attempts: number("attempts", row.int("attempts")?)?,
    })
}

pub(super) fn decode_head(row: &impl Row) -> Result<(WorkflowId, u64), StoreError> {
    Ok((id(row.text("workflow_id")?, WorkflowId::parse)?, number("sequence", row.int("last_sequence")?)?))
}

pub(super) fn decode_request(row: &impl Row) -> Result<StoredRequest, StoreError> {
    Ok(StoredRequest {
        payload_hash: row.text("payload_hash")?,
        response: row.bytes("response")?,
        create_time: row.time("create_time")?,
        expire_time: row.time("expire_time")?,
    })
}

pub(super) fn decode_document(row: &impl Row) -> Result<DocumentHash, StoreError> {
    Ok(DocumentHash {
        uri: row.text("uri")?,
        content_hash: ContentHash(row.text("content_hash")?),
        seen_time: row.time("seen_time")?,
    })
}

pub(super) fn decode_usage(row: &impl Row) -> Result<UsageRow, StoreError> {
    Ok(UsageRow {
        day: row.day("day")?,
        step: row.text("step")?,
        tokens: TokenCount { input: row.int("input_tokens")?, output: row.int("output_tokens")? },
    })
}

pub(super) fn decode_load(row: &impl Row) -> Result<CompanyLoad, StoreError> {
    Ok(CompanyLoad {
        company: id(row.text("company_id")?, CompanyId::parse)?,
        queued: number("count", row.int("queued")?)?,
        processing: number("count", row.int("processing")?)?,
    })
}

pub(super) fn decode_position(row: &impl Row) -> Result<QueuePosition, StoreError> {
    Ok(QueuePosition {
        workflow_id: id(row.text("workflow_id")?, WorkflowId::parse)?,
        position: number("position", row.int("position")?)?,
    })
}
