//! Who did what (docs/admission.md, "Audit log"): every mutating call, allowed or refused, and every refused read
//! becomes an entry of the store's hash-chained audit log ([`etter_core::audit`]).
//!
//! Handlers and the authenticator only hand entries to [`AuditLog`] (an unbounded queue: the
//! request path never waits on the log); one writer task appends them in batches, each batch one
//! transaction that moves the chain head, and retries a batch the store refused until it is
//! written, so nothing accepted into the queue is lost while the store is away. At shutdown it
//! writes what is queued before the server exits. Calls refused for their rate
//! (`RESOURCE_EXHAUSTED`) are not logged: an unauthenticated flood is slowed per peer address
//! before it reaches the log. The head is logged as it advances (at most once a minute) so a copy
//! of it lives outside the database.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use etter_core::audit::{AuditEntry, AuditEvent, AuditFilter, ChainKey};
use etter_core::backoff::Backoff;
use etter_core::error::chain;
use etter_core::ids::{CompanyId, TraceId};
use etter_proto::v1 as pb;
use etter_store::{self, RunStore};
use etter_telemetry::metrics as observe;
use tokio::sync::mpsc;
use tonic::{Code, Status};

use sha2::{Digest as _, Sha256};

use crate::refusals::{Refusals, is_callers_fault};
use crate::{
    convert,
    error::{ApiError, Violation},
    principal::{Principal, Role},
    tokens::{Kind, TokenKeys},
};

/// Entries written per transaction at most.
const BATCH: usize = 500;
/// How often the head is logged at info while it advances.
const LOG_HEAD_EVERY: Duration = Duration::from_secs(60);

/// Hands audit entries to the writer. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    queue: mpsc::UnboundedSender<AuditEvent>,
    /// Counts the refusals recorded against their callers and addresses.
    refusals: Option<Arc<Refusals>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

/// What a call was, for its entry.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// The caller, when authenticated.
    pub principal: Option<Principal>,
    /// The call's trace id.
    pub trace_id: Option<TraceId>,
    /// The caller's address.
    pub peer: Option<String>,
}

impl Call {
    /// The call a request is.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        Self {
            principal: request.extensions().get::<Principal>().cloned(),
            trace_id: crate::trace::of(request),
            peer: request.remote_addr().map(|a| a.ip().to_string()),
        }
    }
}

/// What a call concerned and asked for.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    /// The company the request named (or whose run it created).
    pub company: Option<String>,
    /// The run, role, batch or company it acted on.
    pub target: String,
    /// The client's idempotency key.
    pub request_id: String,
}

/// The name of a status code as the audit log writes it (`PERMISSION_DENIED`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}

/// Whether a read refused with `code` is logged: refused for who is asking, not for what.
fn refused_read(code: Code) -> bool {
    matches!(code, Code::Unauthenticated | Code::PermissionDenied | Code::NotFound)
}

/// Whether a call was refused for a client-held token (`resume_token`, `page_token`) that is not
/// the server's for it: forged, tampered with or replayed elsewhere, so logged even for a read.
fn refused_token(status: &Status) -> bool {
    use tonic_types::StatusExt as _;
    status.code() == Code::InvalidArgument
        && status.get_details_bad_request().is_some_and(|bad| {
            bad.field_violations.iter().any(|v| matches!(v.field.as_str(), "resume_token" | "page_token"))
        })
}

impl AuditLog {
    /// A log and the writer task that appends its entries to `store`, chained under `key`
    /// (spawn [`Writer::run`]).
    pub fn new(store: Arc<dyn RunStore>, key: ChainKey) -> (Self, Writer) {
        let (queue, entries) = mpsc::unbounded_channel();
        (Self { queue, refusals: None }, Writer { store, key, entries })
    }

    /// Counts every refusal it records against the caller's and address's budgets.
    pub fn with_refusals(mut self, refusals: Arc<Refusals>) -> Self {
        self.refusals = Some(refusals);
        self
    }

    fn push(&self, mut event: AuditEvent) {
        // What a caller sends is bounded before it is stored: a refused call with a megabyte
        // field costs a few hundred bytes of log, and the hash still names the whole value.
        event.actor = bounded(std::mem::take(&mut event.actor), MAX_SHORT);
        event.target = bounded(std::mem::take(&mut event.target), MAX_SHORT);
        event.reason = bounded(std::mem::take(&mut event.reason), MAX_REASON);
        event.action = bounded(std::mem::take(&mut event.action), MAX_SHORT);
        event.request_id = event.request_id.map(|r| bounded(r, MAX_SHORT));
        event.peer = event.peer.map(|p| bounded(p, MAX_SHORT));
        observe::audit_pending(1.0);
        if self.queue.send(event).is_err() {
            // Only after the writer stopped, at the very end of a shutdown.
            observe::audit_pending(-1.0);
            tracing::error!("the audit writer has stopped; an audit entry was not written");
        }
    }

    /// Records a call's outcome: always for a mutating call, only when refused for a read, never
    /// when refused for its rate.
    pub fn record<T>(
        &self,
        call: &Call,
        action: &str,
        mutating: bool,
        subject: Subject,
        result: &Result<tonic::Response<T>, Status>,
    ) {
        let (code, reason) = match result {
            Ok(_) => (Code::Ok, String::new()),
            Err(status) => (status.code(), status.message().to_owned()),
        };
        let principal = call.principal.as_ref();
        if is_callers_fault(code) {
            observe::call_refused(action, code_name(code));
            if let Some(refusals) = &self.refusals {
                let peer = call.peer.as_deref().and_then(|p| p.parse().ok());
                refusals.count(peer, principal.map(|p| p.user.as_str()));
            }
        }
        let token = matches!(result, Err(status) if refused_token(status));
        if !mutating && !refused_read(code) && !token {
            return;
        }
        self.push(AuditEvent {
            time: whole_micros(etter_store::now()),
            actor: principal.map_or_else(|| "anonymous".to_owned(), |p| p.user.clone()),
            role: principal.map_or("", |p| role_name(p.role)).to_owned(),
            company: subject.company.as_deref().and_then(|c| CompanyId::parse(c).ok()),
            action: action.to_owned(),
            target: subject.target,
            outcome: code_name(code).to_owned(),
            reason,
            request_id: Some(subject.request_id).filter(|r| !r.is_empty()),
            trace_id: call.trace_id.clone(),
            peer: call.peer.clone(),
        });
    }

    /// Records a call the authenticator refused (its RPC from the request path).
    pub fn refused_unauthenticated(&self, call: &Call, action: &str, reason: &str) {
        self.push(AuditEvent {
            time: whole_micros(etter_store::now()),
            actor: "anonymous".to_owned(),
            role: String::new(),
            company: None,
            action: action.to_owned(),
            target: String::new(),
            outcome: code_name(Code::Unauthenticated).to_owned(),
            reason: reason.to_owned(),
            request_id: None,
            trace_id: call.trace_id.clone(),
            peer: call.peer.clone(),
        });
    }
}

/// Longest actor, action, target, request id or peer kept, in characters.
const MAX_SHORT: usize = 256;
/// Longest reason kept, in characters.
const MAX_REASON: usize = 1024;

/// `value`, or when longer than `max` characters its first `max` and a note with the whole
/// value's length and SHA-256 (enough to tell two long values apart, or match one seen elsewhere).
fn bounded(value: String, max: usize) -> String {
    if value.len() <= max || value.chars().count() <= max {
        return value;
    }
    let digest = Sha256::digest(value.as_bytes());
    let hex = hex::encode(&digest[..16]);
    let kept: String = value.chars().take(max).collect();
    format!("{kept}… [truncated: {} bytes, sha256 {hex}…]", value.len())
}

/// The store keeps microseconds; the hash is computed over what is stored.
fn whole_micros(time: etter_store::Timestamp) -> etter_store::Timestamp {
    chrono::DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

/// The audit chain's key: `server.audit_key`, or the embedded default's generated one, kept in
/// `{data_dir}/auth/audit.key` (owner-only) and shared by every process on the data directory.
pub fn chain_key(config: &crate::config::Config) -> Result<ChainKey, crate::tokens::KeptSecretError> {
    match config.server.audit_key.expose() {
        Some(key) => Ok(ChainKey::new(key.as_bytes())),
        None => Ok(ChainKey::new(&crate::tokens::kept_secret(&config.data_dir.join("auth").join("audit.key"))?)),
    }
}

/// Appends queued entries to the store.
pub struct Writer {
    store: Arc<dyn RunStore>,
    key: ChainKey,
    entries: mpsc::UnboundedReceiver<AuditEvent>,
}

impl Writer {
    /// Writes entries as they come, in batches, until every [`AuditLog`] is dropped and the queue
    /// is empty.
    pub async fn run(mut self) {
        let mut last_logged = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut batch = Vec::with_capacity(BATCH);
        while self.entries.recv_many(&mut batch, BATCH).await > 0 {
            loop {
                match self.store.append_audit(&self.key, batch.clone()).await {
                    Ok(head) => {
                        observe::audit_pending(-(batch.len() as f64));
                        if last_logged.elapsed() >= LOG_HEAD_EVERY || self.entries.is_closed() {
                            tracing::info!(seq = head.seq, hash = %head.hash, "audit log head");
                            last_logged = Instant::now();
                        }
                        backoff.reset();
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %chain(&e), entries = batch.len(), "cannot write audit entries yet; retrying");
                        tokio::time::sleep(backoff.next_wait()).await;
                    }
                }
            }
            batch.clear();
        }
        if let Ok(head) = self.store.audit_head().await {
            tracing::info!(seq = head.seq, hash = %head.hash, "audit log head at shutdown");
        }
    }
}

/// What audit page tokens are bound to besides their filters: admins read across companies, so
/// there is no company to bind.
const AUDIT_BINDING: &[u8] = b"audit";

/// `ListAuditEntries`: admins only; filters, newest first, pages bound to their filters.
pub async fn list(
    store: &dyn RunStore,
    tokens: &TokenKeys,
    principal: &Principal,
    request: pb::ListAuditEntriesRequest,
) -> Result<pb::ListAuditEntriesResponse, ApiError> {
    const INVALID: &str = "INVALID_AUDIT_QUERY";
    if principal.role != Role::Admin {
        return Err(ApiError::PermissionDenied(format!(
            "user {} is not an admin; the audit log is for admins",
            principal.user
        )));
    }
    let mut violations = Vec::new();
    let company = if request.company_id.is_empty() {
        None
    } else {
        CompanyId::parse(&request.company_id)
            .map_err(|e| violations.push(Violation::new("company_id", e.to_string())))
            .ok()
    };
    let filters = pb::ListAuditEntriesRequest { page_size: 0, page_token: String::new(), ..request.clone() };
    let before_seq = match tokens.open_page(Kind::AuditPage, AUDIT_BINDING, &filters, &request.page_token) {
        Ok(None) => None,
        Ok(Some(token)) => match token.parse::<u64>() {
            Ok(seq) => Some(seq),
            Err(_) => {
                violations.push(Violation::new("page_token", "is not a token this server issued"));
                None
            }
        },
        Err(violation) => {
            violations.push(violation);
            None
        }
    };
    if !violations.is_empty() {
        return Err(ApiError::InvalidArgument { reason: INVALID, violations });
    }
    let size = match u32::try_from(request.page_size).unwrap_or(0) {
        0 => etter_store::DEFAULT_PAGE_SIZE,
        n => n.min(etter_store::MAX_PAGE_SIZE),
    };
    let filter = AuditFilter {
        company,
        actor: Some(request.actor).filter(|a| !a.is_empty()),
        action: Some(request.action).filter(|a| !a.is_empty()),
        denied_only: request.denied_only,
        before_seq,
    };
    let entries = store.list_audit(&filter, size + 1).await?;
    let more = entries.len() > size as usize;
    let entries: Vec<AuditEntry> = entries.into_iter().take(size as usize).collect();
    let next_page_token = match (more, entries.last()) {
        (true, Some(last)) => tokens.seal_page(Kind::AuditPage, AUDIT_BINDING, &filters, &last.seq.to_string()),
        _ => String::new(),
    };
    Ok(pb::ListAuditEntriesResponse { entries: entries.into_iter().map(to_proto).collect(), next_page_token })
}

fn to_proto(entry: AuditEntry) -> pb::AuditEntry {
    let event = entry.event;
    pb::AuditEntry {
        sequence: entry.seq,
        time: Some(convert::timestamp(event.time)),
        actor: event.actor,
        role: event.role,
        company_id: event.company.map(String::from).unwrap_or_default(),
        action: event.action,
        target: event.target,
        outcome: event.outcome,
        reason: event.reason,
        request_id: event.request_id.unwrap_or_default(),
        trace_id: event.trace_id.map(String::from).unwrap_or_default(),
        peer: event.peer.unwrap_or_default(),
        hash: entry.hash,
        previous_hash: entry.prev_hash,
    }
}
