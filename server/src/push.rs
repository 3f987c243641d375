//! `Push`: validate, check the documents, deduplicate, store the run QUEUED, answer — the
//! dispatcher starts it later.

use std::collections::BTreeSet;

use etter_core::ids::{CompanyId, DraupRoleId, RequestId, RoleName};
use etter_documents::{DocumentUri, Documents, DocumentsConfig};
use etter_proto::v1 as pb;
use etter_store::{Admission, DocumentRef, NewRun, RunStore};
use sha2::{Digest as _, Sha256};

use crate::deadline::Outlook;
use crate::limits::Limits;
use crate::trace::RequestTrace;
use crate::{
    convert::{self, StoredOptions},
    document_checks::DocumentChecks,
    error::{ApiError, Violation},
    estimate::Estimator,
    idempotency::{self, Idempotency},
    principal::Principal,
    status,
};

/// Most documents one role may have.
pub const MAX_DOCUMENTS: usize = 20;

/// The `ErrorInfo.reason` of an invalid push.
const INVALID_ROLE: &str = "INVALID_ROLE";
/// The reason of a push refused because a document cannot be used (missing, unreadable, too
/// large, not what its extension says).
pub(crate) const INVALID_DOCUMENT: &str = "INVALID_DOCUMENT";

/// A push that passed validation.
#[derive(Debug, Clone)]
pub struct ValidPush {
    /// The role's company.
    pub company: CompanyId,
    /// The role's name.
    pub role_name: RoleName,
    /// The Draup role.
    pub draup_role_id: DraupRoleId,
    /// The documents, as given.
    pub documents: Vec<DocumentRef>,
    /// The options.
    pub options: StoredOptions,
    /// When the run must have ended, if ever (`options.deadline`).
    pub deadline: Option<etter_store::Timestamp>,
    /// The client's idempotency key.
    pub request_id: Option<RequestId>,
}

impl ValidPush {
    /// The run's input identity: a hex SHA-256 of the company, the role name, the
    /// Draup role, the documents as sorted (type, uri) pairs, and the options that change outputs
    /// (`skip_enhancement_workflows`). Priority, notification and `force_rerun` do not change what
    /// a run produces, so they are not part of it.
    pub fn input_identity(&self) -> String {
        let mut documents: Vec<(&str, &str)> =
            self.documents.iter().map(|d| (d.kind.as_str(), d.uri.as_str())).collect();
        documents.sort_unstable();
        let mut hasher = Sha256::new();
        for part in [self.company.as_str(), self.role_name.as_str(), self.draup_role_id.as_str()] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        for (kind, uri) in documents {
            hasher.update(kind.as_bytes());
            hasher.update([b'\t']);
            hasher.update(uri.as_bytes());
            hasher.update([b'\n']);
        }
        hasher.update([0, u8::from(self.options.skip_enhancement_workflows)]);
        hex::encode(hasher.finalize())
    }
}

impl ValidPush {
    /// The run to queue for this push, planned as a first run.
    pub fn to_new_run(&self, estimator: &Estimator, principal: &Principal, trace: RequestTrace) -> NewRun {
        let plan = etter_core::steps::plan_new(self.options.skip_enhancement_workflows);
        NewRun {
            company: self.company.clone(),
            role_name: self.role_name.clone(),
            draup_role_id: Some(self.draup_role_id.clone()),
            input_identity: self.input_identity(),
            documents: self.documents.clone(),
            options: self.options.to_json(),
            priority: self.options.priority,
            token_estimate: estimator.tokens(&plan),
            force: self.options.force_rerun,
            expected_latest: None,
            admission: Admission::Queue,
            plan: Some(plan),
            reason: format!("pushed by {}", principal.user),
            notify: self.options.notify_on_complete,
            trace_id: trace.id,
            trace_parent: trace.parent,
            deadline: self.deadline,
            model: None,
        }
    }
}

/// The company of a push, parsed first so authorization can run before the rest is validated.
pub fn company_of(request: &pb::PushRequest) -> Result<CompanyId, ApiError> {
    CompanyId::parse(&request.company_id).map_err(|e| ApiError::invalid(INVALID_ROLE, "company_id", e.problem))
}

/// Validates every field of a push and reports every invalid one.
pub fn validate(request: &pb::PushRequest, documents_config: &DocumentsConfig) -> Result<ValidPush, ApiError> {
    let mut violations = Vec::new();
    let mut check = |field: &str, result: Result<(), String>| {
        if let Err(description) = result {
            violations.push(Violation::new(field, description));
        }
    };
    let company = CompanyId::parse(&request.company_id);
    // A violation names its field: its description is the rule alone.
    let rule = |e: &etter_core::ids::InvalidId| e.problem.clone();
    check("company_id", company.as_ref().map(|_| ()).map_err(rule));
    let role_name = RoleName::parse(&request.role_name);
    check("role_name", role_name.as_ref().map(|_| ()).map_err(rule));
    let draup = DraupRoleId::parse(&request.draup_role_id);
    check("draup_role_id", draup.as_ref().map(|_| ()).map_err(rule));
    let request_id = (!request.request_id.is_empty()).then(|| RequestId::parse(&request.request_id));
    if let Some(Err(e)) = &request_id {
        check("request_id", Err(rule(e)));
    }
    if request.documents.is_empty() {
        check("documents", Err("at least one document is required".to_owned()));
    }
    if request.documents.len() > MAX_DOCUMENTS {
        check("documents", Err(format!("at most {MAX_DOCUMENTS} documents per role")));
    }
    let mut documents = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, doc) in request.documents.iter().enumerate().take(MAX_DOCUMENTS) {
        let kind = convert::document_kind(doc.r#type);
        if kind.is_none() {
            check(
                &format!("documents[{i}].type"),
                Err("must be DOCUMENT_TYPE_JOB_DESCRIPTION, DOCUMENT_TYPE_PROCESS_MAP or DOCUMENT_TYPE_SUPPORTING"
                    .into()),
            );
        }
        let uri = DocumentUri::parse(&doc.uri).and_then(|uri| documents_config.admit(&uri).map(|()| uri));
        match (&uri, kind) {
            (Err(e), _) => check(&format!("documents[{i}].uri"), Err(e.to_string())),
            (Ok(uri), _) if !seen.insert(uri.as_str().to_owned()) => {
                check(&format!("documents[{i}].uri"), Err(format!("{uri} is listed twice")));
            }
            (Ok(uri), Some(kind)) => {
                documents.push(DocumentRef { kind: convert::document_kind_str(kind).to_owned(), uri: uri.to_string() });
            }
            (Ok(_), None) => {}
        }
    }
    let options = request.options.unwrap_or_default();
    let priority = convert::priority(options.priority);
    if priority.is_none() {
        check("options.priority", Err("must be PRIORITY_LOW, PRIORITY_NORMAL or PRIORITY_HIGH".to_owned()));
    }
    let deadline = crate::deadline::parse(options.deadline.as_ref(), etter_store::now());
    check("options.deadline", deadline.as_ref().map(|_| ()).map_err(Clone::clone));
    match (company, role_name, draup, request_id.transpose(), priority, deadline) {
        (Ok(company), Ok(role_name), Ok(draup_role_id), Ok(request_id), Some(priority), Ok(deadline))
            if violations.is_empty() =>
        {
            Ok(ValidPush {
                company,
                role_name,
                draup_role_id,
                documents,
                options: StoredOptions {
                    skip_enhancement_workflows: options.skip_enhancement_workflows,
                    notify_on_complete: options.notify_on_complete,
                    force_rerun: options.force_rerun,
                    priority,
                },
                deadline,
                request_id,
            })
        }
        _ => Err(ApiError::InvalidArgument { reason: INVALID_ROLE, violations }),
    }
}

/// The hash of a request's payload for its idempotency key: the request without its
/// `request_id`, so the same payload under the same key matches and any other does not.
fn payload_hash(request: &pb::PushRequest) -> String {
    let mut payload = request.clone();
    payload.request_id.clear();
    idempotency::payload_hash(&payload)
}

/// What a push needs from the server.
pub struct PushContext<'a> {
    /// The run store.
    pub store: &'a dyn RunStore,
    /// The documents: their URIs are checked against its rules, and each is checked to exist
    /// and be readable before the run is queued.
    pub documents: &'a Documents,
    /// ETAs and token estimates from measured step costs.
    pub estimator: &'a Estimator,
    /// The request's trace, kept with the run.
    pub trace: RequestTrace,
    /// Calls per minute and queued-run caps.
    pub limits: &'a Limits,
    /// Creates the run, and starts it at once when nothing waits ahead of it and there is room.
    pub dispatcher: &'a std::sync::Arc<crate::dispatch::Dispatcher>,
}

/// `Push`: authorize, validate, answer a retried `request_id` with its first answer, create (or
/// find) the run, and remember the answer under the `request_id`.
pub async fn push(
    cx: &PushContext<'_>,
    principal: &Principal,
    request: pb::PushRequest,
) -> Result<pb::PushResponse, ApiError> {
    principal.require_operator()?;
    let company = company_of(&request)?;
    principal.authorize_write(&company)?;
    cx.limits.admit_call(&company)?;
    let valid = validate(&request, cx.documents.config())?;
    let idempotency = Idempotency::new(cx.store, "Push", &company, valid.request_id.clone(), payload_hash(&request));
    let new_run = valid.to_new_run(cx.estimator, principal, cx.trace.clone());
    // The request-id lookup and the admission reads do not depend on each other: they wait for
    // one round trip together, not three in a row (a push's dispatch waits for all of them).
    // The documents are checked meanwhile (they are read from their store, not the run store).
    // A quote never answers from, nor is remembered under, a request id.
    let replay = async { if request.validate_only { Ok(None) } else { idempotency.replay().await } };
    let (replayed, queued, tokens, checked) = futures::join!(
        replay,
        cx.limits.admit_queued(cx.store, &company, 1),
        cx.limits.admit_tokens(cx.store, &company, 1, new_run.token_estimate),
        DocumentChecks::run(cx.documents, &request.documents),
    );
    // A retried request gets its first answer, whatever the queue, the budget and the documents
    // hold now.
    if let Some(answer) = replayed? {
        return Ok(answer);
    }
    let violations = checked?.violations(&request.documents);
    if !violations.is_empty() {
        return Err(ApiError::InvalidArgument { reason: INVALID_DOCUMENT, violations });
    }
    queued?;
    tokens?;
    if let Some(deadline) = valid.deadline
        && let Some(plan) = &new_run.plan
    {
        let position = status::queued_count(cx.store, &company).await?.saturating_add(1);
        Outlook::at(cx.estimator, &company, plan, position).admit(deadline, etter_store::now())?;
    }

    // A push answers from the store alone: its response has no outputs summary.
    let sources = status::StatusContext { store: cx.store, estimator: cx.estimator, finished: None, kept: None };
    let (created, snapshot) = if request.validate_only {
        quote(&sources, &company, new_run).await?
    } else {
        // Started at once when the store could claim it; the start overlaps the rest of the answer.
        let created = cx.dispatcher.create(cx.store, new_run).await?;
        let snapshot = status::run_status(&sources, &created.run).await?;
        (created, snapshot)
    };
    let run = &created.run;
    let response = pb::PushResponse {
        workflow_id: run.workflow_id.to_string(),
        role_id: run.role_id.to_string(),
        status: snapshot.status,
        estimated_duration_seconds: snapshot.estimated_duration_seconds,
        position_in_queue: snapshot.position_in_queue,
        token_estimate: snapshot.token_estimate,
        created: created.created,
        wait_reason: snapshot.wait_reason,
        plan: status::planned(run, created.created),
    };
    if request.validate_only {
        return Ok(response);
    }
    idempotency.remember(response).await
}

/// What a push of `new_run` would answer: the store decides it as it would create it, in a
/// transaction it rolls back; a run it would create is placed behind the company's queued runs.
async fn quote(
    sources: &status::StatusContext<'_>,
    company: &CompanyId,
    new_run: NewRun,
) -> Result<(etter_store::Created, pb::RunStatus), ApiError> {
    let previewed = sources
        .store
        .preview_runs(vec![new_run])
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal("the store previewed no run".to_owned()))??;
    let snapshot = if previewed.created {
        let position = status::queued_count(sources.store, company).await?.saturating_add(1);
        status::assemble(&previewed.run, &[], Some(position), sources.estimator)
    } else {
        status::run_status(sources, &previewed.run).await?
    };
    Ok((previewed, snapshot))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn request() -> pb::PushRequest {
        pb::PushRequest {
            company_id: "acme".into(),
            role_name: "Claims Adjuster".into(),
            documents: vec![
                pb::Document {
                    r#type: pb::DocumentType::JobDescription as i32,
                    uri: "file:///srv/docs/jd.pdf".into(),
                    ..Default::default()
                },
                pb::Document {
                    r#type: pb::DocumentType::ProcessMap as i32,
                    uri: "s3://etter-docs/pm.docx".into(),
                    ..Default::default()
                },
            ],
            draup_role_id: "draup-role-1".into(),
            options: None,
            request_id: String::new(),
            validate_only: false,
        }
    }

    fn documents() -> DocumentsConfig {
        DocumentsConfig { file_root: PathBuf::from("/srv/docs"), ..DocumentsConfig::default() }
    }

    fn fields(err: ApiError) -> Vec<String> {
        match err {
            ApiError::InvalidArgument { violations, .. } => violations.into_iter().map(|v| v.field).collect(),
            other => vec![format!("{other:?}")],
        }
    }

    #[test]
    fn identity_ignores_document_order_and_non_output_options() -> anyhow::Result<()> {
        let a = validate(&request(), &documents())?;
        let mut reordered = request();
        reordered.documents.reverse();
        reordered.options =
            Some(pb::RunOptions { priority: pb::Priority::High as i32, force_rerun: true, ..Default::default() });
        let b = validate(&reordered, &documents())?;
        assert_eq!(a.input_identity(), b.input_identity());
        let mut skipping = request();
        skipping.options = Some(pb::RunOptions { skip_enhancement_workflows: true, ..Default::default() });
        assert_ne!(a.input_identity(), validate(&skipping, &documents())?.input_identity());
        let mut renamed = request();
        renamed.role_name = "Claims  Adjuster ".into();
        assert_eq!(a.input_identity(), validate(&renamed, &documents())?.input_identity(), "names are normalised");
        Ok(())
    }

    #[test]
    fn every_invalid_field_is_reported() {
        let mut bad = request();
        bad.role_name = "  ".into();
        bad.draup_role_id.clear();
        bad.documents[0].uri = "ftp://host/jd.pdf".into();
        bad.documents[1].r#type = 0;
        let got = validate(&bad, &documents()).err().map(fields).unwrap_or_default();
        assert_eq!(got, ["role_name", "draup_role_id", "documents[0].uri", "documents[1].type"]);

        let mut outside = request();
        outside.documents.truncate(1);
        outside.documents[0].uri = "file:///etc/passwd".into();
        assert_eq!(validate(&outside, &documents()).err().map(fields).unwrap_or_default(), ["documents[0].uri"]);
        let mut none = request();
        none.documents.clear();
        assert_eq!(validate(&none, &documents()).err().map(fields).unwrap_or_default(), ["documents"]);
        let mut twice = request();
        twice.documents.push(twice.documents[0].clone());
        assert_eq!(validate(&twice, &documents()).err().map(fields).unwrap_or_default(), ["documents[2].uri"]);
    }

    #[test]
    fn the_payload_hash_ignores_only_the_request_id() {
        let mut a = request();
        a.request_id = "r-1".into();
        let mut b = request();
        b.request_id = "r-2".into();
        assert_eq!(payload_hash(&a), payload_hash(&b));
        b.role_name = "Other".into();
        assert_ne!(payload_hash(&a), payload_hash(&b));
    }
}
