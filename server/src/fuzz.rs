//! Fuzz targets (bolero): every decoder of what clients send — request messages through their
//! validation, every client-held token, the ids parsed at the edge — must answer any input with
//! a value or an error, never a panic, and what it accepts must mean what it meant when issued.
//!
//! Under `cargo test` (so `./etter test`) each target runs bolero's random engine for a bounded
//! number of inputs; `cargo bolero test fuzz::<target>` runs one coverage-guided with libFuzzer
//! (see `docs/security.md`, Fuzzing).

use std::collections::BTreeMap;

use bolero::check;
use etter_core::ids::{BatchId, CompanyId, RoleId, RoleName, WorkflowId};
use etter_documents::DocumentsConfig;
use etter_proto::v1 as pb;
use prost::Message as _;

use crate::{
    tokens::{Kind, TokenKeys},
    watch::token::{self as watch_token, TokenScope},
};

const SECRET: &[u8] = b"the fuzz targets' key, thirty-two bytes";

fn keys() -> TokenKeys {
    TokenKeys::new(SECRET, &[b"the fuzz targets' old key, thirty-two bytes"])
}

/// Any text as a token of any kind: refused or opened, never a panic; a payload sealed is the
/// payload opened, for its binding only.
#[test]
fn fuzz_sealed_tokens() {
    check!().with_type::<(String, Vec<u8>, Vec<u8>)>().for_each(|(token, binding, payload)| {
        let keys = keys();
        for kind in [Kind::Watch, Kind::HistoryPage, Kind::AuditPage] {
            let _ = keys.open(kind, binding, token);
            let sealed = keys.seal(kind, binding, payload);
            assert_eq!(keys.open(kind, binding, &sealed).as_deref(), Ok(payload.as_slice()));
            let mut other = binding.clone();
            other.push(0);
            assert!(keys.open(kind, &other, &sealed).is_err());
        }
    });
}

/// Any body the server could ever have sealed (a bug, or a key that leaked) decodes to a scope
/// and marks or an error, and what decodes encodes back to itself.
#[test]
fn fuzz_watch_token_bodies() {
    check!().with_type::<Vec<u8>>().for_each(|body| {
        let keys = keys();
        let binding = b"acme\ncompany\nacme";
        let token = keys.seal(Kind::Watch, binding, body);
        if let Ok((scope, marks)) = watch_token::decode(&keys, binding, &token) {
            let again = watch_token::encode(&keys, binding, &scope, &marks);
            assert_eq!(watch_token::decode(&keys, binding, &again), Ok((scope, marks)));
        }
    });
}

/// Marks of any runs survive the round trip.
#[test]
fn fuzz_watch_token_marks() {
    check!().with_type::<(Vec<(String, u32, u64)>, bool)>().for_each(|(runs, batch)| {
        let keys = keys();
        let marks: BTreeMap<WorkflowId, u64> = runs
            .iter()
            .filter_map(|(role, n, mark)| {
                let role = RoleName::parse(role).ok()?;
                let company = CompanyId::parse("acme").ok()?;
                Some((WorkflowId::for_run(&RoleId::new(&company, &role), (*n).max(1)), *mark))
            })
            .collect();
        let scope = if *batch { TokenScope::Batch("batch-1".into()) } else { TokenScope::Company("acme".into()) };
        let binding = watch_token::binding("acme", &scope);
        let token = watch_token::encode(&keys, &binding, &scope, &marks);
        assert_eq!(watch_token::decode(&keys, &binding, &token), Ok((scope, marks)));
    });
}

/// Page tokens: any text is a position or a violation; a position sealed for filters is that
/// position for those filters only.
#[test]
fn fuzz_page_tokens() {
    check!().with_type::<(String, String, String)>().for_each(|(token, company, position)| {
        let keys = keys();
        let filters = pb::HistoryRequest { company_id: company.clone(), ..Default::default() };
        let _ = keys.open_page(Kind::HistoryPage, company.as_bytes(), &filters, token);
        let sealed = keys.seal_page(Kind::HistoryPage, company.as_bytes(), &filters, position);
        assert_eq!(
            keys.open_page(Kind::HistoryPage, company.as_bytes(), &filters, &sealed),
            Ok(Some(position.clone()))
        );
        let other = pb::HistoryRequest { company_id: format!("{company}x"), ..Default::default() };
        assert!(keys.open_page(Kind::HistoryPage, company.as_bytes(), &other, &sealed).is_err());
    });
}

/// Any bytes as each request the server validates: decoded or refused by prost, then validated
/// or refused with violations, never a panic.
#[test]
fn fuzz_request_validation() {
    let documents = DocumentsConfig::default();
    check!().with_type::<Vec<u8>>().for_each(|bytes| {
        if let Ok(push) = pb::PushRequest::decode(bytes.as_slice()) {
            let _ = crate::push::validate(&push, &documents);
        }
        if let Ok(batch) = pb::PushBatchRequest::decode(bytes.as_slice()) {
            let _ = crate::batch::check_whole(&batch, 2_500);
        }
        if let Ok(history) = pb::HistoryRequest::decode(bytes.as_slice())
            && let Ok(company) = CompanyId::parse(&history.company_id)
        {
            let _ = crate::history::validate(&keys(), company, &history);
        }
        if let Ok(retry) = pb::RetryRequest::decode(bytes.as_slice()) {
            let _ = crate::retry::validate(&retry, &crate::config::ModelsConfig::default());
        }
    });
}

/// Ids parsed at the edge: any text parses or is refused; what parses prints as it was given,
/// and a role id's company part is the company it was made for.
#[test]
fn fuzz_ids() {
    check!().with_type::<(String, String)>().for_each(|(a, b)| {
        for text in [a, b] {
            if let Ok(id) = CompanyId::parse(text) {
                assert_eq!(id.as_str(), text);
            }
            if let Ok(id) = RoleId::parse(text) {
                assert_eq!(id.as_str(), text);
            }
            if let Ok(id) = WorkflowId::parse(text) {
                assert_eq!(id.as_str(), text);
                let _ = id.split();
            }
            if let Ok(id) = BatchId::parse(text) {
                assert_eq!(id.as_str(), text);
            }
        }
        if let (Ok(company), Ok(name)) = (CompanyId::parse(a), RoleName::parse(b)) {
            let role = RoleId::new(&company, &name);
            assert_eq!(role.company_part(), Some(company.as_str()));
            assert_eq!(RoleId::parse(role.as_str()).ok(), Some(role));
        }
    });
}
