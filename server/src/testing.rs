//! What the crate's unit tests share.

use etter_pipeline::{
    ids::{CompanyId, DraupRoleId, RoleName},
    store::{Admission, DocumentRef, NewRun, Priority},
};

/// A first push of `role` in company `acme` (one job description, a new-run plan), queued;
/// `identity` is its input identity.
pub fn queued_run(role: &str, identity: &str) -> anyhow::Result<NewRun> {
    Ok(NewRun {
        company: CompanyId::parse("acme")?,
        role_name: RoleName::parse(role)?,
        draup_role_id: Some(DraupRoleId::parse("draup-role-12345")?),
        input_identity: identity.to_owned(),
        documents: vec![DocumentRef { kind: "job_description".to_owned(), uri: "file:///docs/jd.md".to_owned() }],
        options: serde_json::json!({}),
        priority: Priority::Normal,
        token_estimate: 0,
        force: false,
        expected_latest: None,
        admission: Admission::Queue,
        plan: Some(etter_pipeline::steps::plan_new(false)),
        reason: "pushed by test".to_owned(),
        notify: false,
        trace_id: None,
    })
}
