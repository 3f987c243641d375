//! What the crate's unit tests share.

use etter_core::ids::{CompanyId, DraupRoleId, RoleName};
use etter_store::{DocumentRef, NewRun};

/// A first push of `role` in company `acme` (one job description, a new-run plan), queued;
/// `identity` is its input identity.
pub fn queued_run(role: &str, identity: &str) -> anyhow::Result<NewRun> {
    Ok(NewRun {
        draup_role_id: Some(DraupRoleId::parse("draup-role-12345")?),
        documents: vec![DocumentRef { kind: "job_description".to_owned(), uri: "file:///docs/jd.md".to_owned() }],
        plan: Some(etter_core::steps::plan_new(false)),
        ..NewRun::queued(CompanyId::parse("acme")?, RoleName::parse(role)?, identity, "pushed by test")
    })
}
