//! Who may do what, over the wire: every RPC × every kind of caller × the caller's own company
//! and another one, each cell with the exact status code expected (docs/admission.md, "Authorization"). Bad
//! tokens are UNAUTHENTICATED everywhere; a request naming another company is
//! PERMISSION_DENIED; a run or batch of another company is NOT_FOUND, as if it did not exist;
//! a viewer only reads; an admin may do everything everywhere.
//!
//! Every call of the matrix is audited exactly as docs/admission.md says: each mutating or refused call
//! leaves exactly one entry (found by the call's trace id), each allowed read none; and
//! `etter-server audit verify` accepts the log, then names the entry an edit or a truncation
//! broke.
//!
//! Temporal is unreachable, so runs stay where the setup put them (QUEUED, or CANCELLED for
//! Retry to have something to retry).

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use etter_proto::v1::{
    self as pb, CancelRequest, GetStatusRequest, HistoryRequest, RetryRequest, WatchStatusRequest,
    get_status_request::Target, retry_request, watch_status_request::Scope,
};
use etter_store::StoreLocation;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tonic::Code;

use super::{
    Api, PipelineServiceClient, Server, acme, batch_of, doc_uri, eventually, push_request,
    server_without_temporal_with, with_token,
};

/// Every kind of caller of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    NoToken,
    Expired,
    WrongSignature,
    AlgNone,
    WrongAudience,
    Viewer,
    Operator,
    Admin,
}

const CALLERS: [Caller; 8] = [
    Caller::NoToken,
    Caller::Expired,
    Caller::WrongSignature,
    Caller::AlgNone,
    Caller::WrongAudience,
    Caller::Viewer,
    Caller::Operator,
    Caller::Admin,
];

/// Every RPC, and every scope of WatchStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Push,
    PushBatch,
    GetStatus,
    WatchRun,
    WatchBatch,
    WatchCompany,
    Retry,
    Cancel,
    History,
    GetUsage,
    ListAudit,
    CompareRuns,
}

const RPCS: [Rpc; 12] = [
    Rpc::Push,
    Rpc::PushBatch,
    Rpc::GetStatus,
    Rpc::WatchRun,
    Rpc::WatchBatch,
    Rpc::WatchCompany,
    Rpc::Retry,
    Rpc::Cancel,
    Rpc::History,
    Rpc::GetUsage,
    Rpc::ListAudit,
    Rpc::CompareRuns,
];

impl Rpc {
    fn writes(self) -> bool {
        matches!(self, Rpc::Push | Rpc::PushBatch | Rpc::Retry | Rpc::Cancel)
    }

    /// Whether the request names a company (else a run or a batch).
    fn names_company(self) -> bool {
        matches!(self, Rpc::Push | Rpc::PushBatch | Rpc::WatchCompany | Rpc::History | Rpc::GetUsage | Rpc::ListAudit)
    }
}

/// The code a cell must answer.
fn expected(rpc: Rpc, caller: Caller, own: bool) -> Code {
    let elsewhere = if rpc.names_company() { Code::PermissionDenied } else { Code::NotFound };
    match caller {
        Caller::NoToken | Caller::Expired | Caller::WrongSignature | Caller::AlgNone | Caller::WrongAudience => {
            Code::Unauthenticated
        }
        Caller::Admin => Code::Ok,
        // The audit log is for admins only.
        Caller::Viewer | Caller::Operator if rpc == Rpc::ListAudit => Code::PermissionDenied,
        // A viewer may change nothing, anywhere: that is said before anything is looked up.
        Caller::Viewer if rpc.writes() => Code::PermissionDenied,
        Caller::Viewer | Caller::Operator if own => Code::Ok,
        Caller::Viewer | Caller::Operator => elsewhere,
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The tokens of every caller; the bad ones are otherwise valid operator tokens of `company`.
struct Tokens {
    viewer: String,
    operator: String,
    admin: String,
    expired: String,
    wrong_signature: String,
    alg_none: String,
    wrong_audience: String,
}

impl Tokens {
    fn new(server: &Server, company: &str) -> anyhow::Result<Self> {
        // The development secret the server generated (its hex text is the key).
        let secret = std::fs::read_to_string(server.data_dir.join("auth/hs256.secret"))?;
        let key = EncodingKey::from_secret(secret.trim().as_bytes());
        let claims = |exp: u64, aud: &str| {
            serde_json::json!({
                "sub": "mallory", "role": "operator", "companies": [company],
                "iss": "etter", "aud": aud, "exp": exp, "iat": now() - 7200,
            })
        };
        let sign = |claims: serde_json::Value, key: &EncodingKey| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key).context("signing")
        };
        let b64 = |v: &serde_json::Value| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        Ok(Self {
            viewer: server.token(&["--company", company, "--role", "viewer", "--user", "vera"])?,
            operator: server.token(&["--company", company, "--role", "operator", "--user", "olga"])?,
            admin: server.token(&["--role", "admin", "--user", "ada"])?,
            expired: sign(claims(now() - 3600, "etter-pipeline"), &key)?,
            wrong_signature: sign(
                claims(now() + 600, "etter-pipeline"),
                &EncodingKey::from_secret(b"not-the-servers-secret-not-the-servers-secret"),
            )?,
            alg_none: format!(
                "{}.{}.",
                b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
                b64(&claims(now() + 600, "etter-pipeline"))
            ),
            wrong_audience: sign(claims(now() + 600, "another-service"), &key)?,
        })
    }

    fn of(&self, caller: Caller) -> Option<&str> {
        match caller {
            Caller::NoToken => None,
            Caller::Expired => Some(&self.expired),
            Caller::WrongSignature => Some(&self.wrong_signature),
            Caller::AlgNone => Some(&self.alg_none),
            Caller::WrongAudience => Some(&self.wrong_audience),
            Caller::Viewer => Some(&self.viewer),
            Caller::Operator => Some(&self.operator),
            Caller::Admin => Some(&self.admin),
        }
    }
}

fn request<T>(message: T, token: Option<&str>) -> anyhow::Result<tonic::Request<T>> {
    match token {
        Some(token) => with_token(message, token),
        None => Ok(tonic::Request::new(message)),
    }
}

/// The trace id of a cell's call, so its audit entries can be found.
fn cell_trace(cell: usize) -> String {
    format!("{:032x}", 0xa0d1_7000_0000_u128 + cell as u128)
}

/// [`request`] carrying the cell's trace id.
fn traced<T>(message: T, token: Option<&str>, cell: usize) -> anyhow::Result<tonic::Request<T>> {
    let mut request = request(message, token)?;
    request.metadata_mut().insert("traceparent", format!("00-{}-00f067aa0ba902b7-01", cell_trace(cell)).parse()?);
    Ok(request)
}

/// What the cells of one company act on: made by an admin before the cell runs.
struct Company {
    id: String,
    /// A QUEUED run (GetStatus, WatchRun).
    run: String,
    /// A batch (WatchBatch).
    batch: String,
}

async fn push_as(api: &mut Api, admin: &str, server: &Server, company: &str, role: &str) -> anyhow::Result<String> {
    let push = pb::PushRequest { company_id: company.to_owned(), ..push_request(role, &doc_uri(server, "m.pdf")) };
    Ok(api.push(with_token(push, admin)?).await?.into_inner().workflow_id)
}

/// Calls `rpc` as `token` against `company`; answers the status code (OK when it succeeded).
async fn call(
    api: &mut Api,
    server: &Server,
    admin: &str,
    company: &Company,
    rpc: Rpc,
    token: Option<&str>,
    cell: usize,
) -> anyhow::Result<Code> {
    let role = format!("Matrix Role {cell:03}");
    let code = |result: Result<(), tonic::Status>| result.map_or_else(|s| s.code(), |()| Code::Ok);
    Ok(match rpc {
        Rpc::Push => {
            let push =
                pb::PushRequest { company_id: company.id.clone(), ..push_request(&role, &doc_uri(server, "m.pdf")) };
            code(api.push(traced(push, token, cell)?).await.map(drop))
        }
        Rpc::PushBatch => code(
            api.push_batch(traced(batch_of(server, &company.id, std::slice::from_ref(&role)), token, cell)?)
                .await
                .map(drop),
        ),
        Rpc::GetStatus => {
            let get = GetStatusRequest { target: Some(Target::WorkflowId(company.run.clone())) };
            code(api.get_status(traced(get, token, cell)?).await.map(drop))
        }
        Rpc::WatchRun | Rpc::WatchBatch | Rpc::WatchCompany => {
            let scope = match rpc {
                Rpc::WatchRun => Scope::WorkflowId(company.run.clone()),
                Rpc::WatchBatch => Scope::BatchId(company.batch.clone()),
                _ => Scope::CompanyId(company.id.clone()),
            };
            let watch = WatchStatusRequest { scope: Some(scope), ..Default::default() };
            match api.watch_status(traced(watch, token, cell)?).await {
                // Allowed: the stream opens with its snapshot.
                Ok(stream) => code(stream.into_inner().message().await.map(drop)),
                Err(status) => status.code(),
            }
        }
        Rpc::Retry => {
            // A run of its own, cancelled, so a Retry that is allowed succeeds.
            let run = push_as(api, admin, server, &company.id, &role).await?;
            let cancel = CancelRequest { workflow_id: run.clone(), reason: "setup".into(), request_id: String::new() };
            api.cancel(with_token(cancel, admin)?).await?;
            let retry = RetryRequest { target: Some(retry_request::Target::WorkflowId(run)), ..Default::default() };
            code(api.retry(traced(retry, token, cell)?).await.map(drop))
        }
        Rpc::Cancel => {
            let run = push_as(api, admin, server, &company.id, &role).await?;
            let cancel = CancelRequest { workflow_id: run, reason: "matrix".into(), request_id: String::new() };
            code(api.cancel(traced(cancel, token, cell)?).await.map(drop))
        }
        Rpc::History => {
            let history = HistoryRequest { company_id: company.id.clone(), ..Default::default() };
            code(api.history(traced(history, token, cell)?).await.map(drop))
        }
        Rpc::GetUsage => {
            let usage = pb::GetUsageRequest { company_id: company.id.clone(), period: String::new() };
            code(api.get_usage(traced(usage, token, cell)?).await.map(drop))
        }
        Rpc::ListAudit => {
            let list = pb::ListAuditEntriesRequest { company_id: company.id.clone(), ..Default::default() };
            code(api.list_audit_entries(traced(list, token, cell)?).await.map(drop))
        }
        Rpc::CompareRuns => {
            let compare =
                pb::CompareRunsRequest { base_workflow_id: company.run.clone(), workflow_id: company.run.clone() };
            code(api.compare_runs(traced(compare, token, cell)?).await.map(drop))
        }
    })
}

#[tokio::test]
async fn every_rpc_answers_every_caller_with_the_exact_code() -> anyhow::Result<()> {
    // The matrix refuses many calls from one address on purpose: lift the peer limit for it.
    let server = server_without_temporal_with(&[("ETTER_AUTH__UNAUTHENTICATED_PER_MINUTE", "100000")]).await?;
    let own_id = acme();
    let other_id = format!("{}other", acme());
    let tokens = Tokens::new(&server, &own_id)?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let mut companies = Vec::new();
    for id in [&own_id, &other_id] {
        let run = push_as(&mut api, &tokens.admin, &server, id, "Matrix Target").await?;
        let batch = api
            .push_batch(with_token(batch_of(&server, id, &["Matrix Batch Target".to_owned()]), &tokens.admin)?)
            .await?
            .into_inner()
            .batch_id;
        companies.push(Company { id: id.clone(), run, batch });
    }

    let mut wrong = Vec::new();
    let mut audited = BTreeMap::new();
    let mut cell = 0;
    for rpc in RPCS {
        for caller in CALLERS {
            for (company, own) in companies.iter().zip([true, false]) {
                cell += 1;
                let want = expected(rpc, caller, own);
                let got = call(&mut api, &server, &tokens.admin, company, rpc, tokens.of(caller), cell).await?;
                if got != want {
                    let whose = if own { "own" } else { "other" };
                    wrong.push(format!("{rpc:?} as {caller:?} on {whose} company: {got:?}, expected {want:?}"));
                }
                // The audit rule: every mutating call, and every read refused for who asks.
                let refused = matches!(got, Code::Unauthenticated | Code::PermissionDenied | Code::NotFound);
                audited.insert(
                    cell_trace(cell),
                    (usize::from(rpc.writes() || refused), format!("{rpc:?} as {caller:?}, own={own}")),
                );
            }
        }
    }
    assert_eq!(cell, RPCS.len() * CALLERS.len() * 2);
    assert!(wrong.is_empty(), "{} of {cell} cells answered wrongly:\n{}", wrong.len(), wrong.join("\n"));

    // The audit log: exactly one entry per mutating or refused call, none per allowed read.
    let store = etter_store::connect(&StoreLocation::Sqlite(server.data_dir.join("etter.db"))).await?;
    let expected_total: usize = audited.values().map(|(n, _)| n).sum();
    let per_cell = eventually("the audit writer to write the matrix's entries", || {
        let (store, audited) = (Arc::clone(&store), audited.clone());
        async move {
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            for entry in store.audit_entries(0, 10_000).await? {
                if let Some(trace) = entry.event.trace_id.map(String::from)
                    && audited.contains_key(&trace)
                {
                    *seen.entry(trace).or_default() += 1;
                }
            }
            Ok((seen.values().sum::<usize>() >= expected_total).then_some(seen))
        }
    })
    .await?;
    let mismatched: Vec<String> = audited
        .iter()
        .filter(|(trace, (want, _))| per_cell.get(*trace).copied().unwrap_or(0) != *want)
        .map(|(trace, (want, what))| {
            format!("{what}: {} entries, expected {want}", per_cell.get(trace).copied().unwrap_or(0))
        })
        .collect();
    assert!(mismatched.is_empty(), "audit entries per call:\n{}", mismatched.join("\n"));

    // The refusals read back through the RPC, as an admin sees them.
    let refusals = api
        .list_audit_entries(with_token(
            pb::ListAuditEntriesRequest {
                denied_only: true,
                action: "Cancel".into(),
                page_size: 500,
                ..Default::default()
            },
            &tokens.admin,
        )?)
        .await?
        .into_inner();
    let mallory = refusals.entries.iter().filter(|e| e.actor == "anonymous" && e.outcome == "UNAUTHENTICATED").count();
    assert_eq!(mallory, 2 * 5, "five bad tokens, two companies: {:?}", refusals.entries.len());
    assert!(refusals.entries.iter().all(|e| e.action == "Cancel" && e.outcome != "OK"));
    assert!(refusals.entries.windows(2).all(|w| w[0].sequence > w[1].sequence), "newest first");

    // `etter-server audit verify` accepts the log, then names what an edit or a truncation broke.
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_etter-server"))
            .args(["audit", "verify"])
            .env("ETTER_DATA_DIR", &server.data_dir)
            .env("ETTER_STORE__URL", "")
            .output()
    };
    let fine = verify()?;
    let said = String::from_utf8_lossy(&fine.stdout);
    assert!(
        fine.status.success() && said.contains("audit log verified"),
        "{said} {}",
        String::from_utf8_lossy(&fine.stderr)
    );
    // The chain is keyed by the key the server kept outside the database.
    assert!(said.contains("head hmac-sha256:"), "{said}");
    let raw = || async {
        use sqlx::Connection as _;
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", server.data_dir.join("etter.db").display())).await
    };
    sqlx::query("UPDATE audit_log SET outcome = 'OK' WHERE seq = 42").execute(&mut raw().await?).await?;
    let edited = verify()?;
    let said = String::from_utf8_lossy(&edited.stderr);
    assert!(!edited.status.success() && said.contains("audit entry #42") && said.contains("changed"), "{said}");
    sqlx::query("DELETE FROM audit_log WHERE seq >= 40").execute(&mut raw().await?).await?;
    let truncated = verify()?;
    let said = String::from_utf8_lossy(&truncated.stderr);
    assert!(!truncated.status.success() && said.contains("audit entry #40") && said.contains("truncated"), "{said}");
    Ok(())
}

#[tokio::test]
async fn a_peer_that_keeps_failing_authentication_is_slowed_down() -> anyhow::Result<()> {
    use tonic_types::StatusExt as _;
    let server = server_without_temporal_with(&[("ETTER_AUTH__UNAUTHENTICATED_PER_MINUTE", "5")]).await?;
    let operator = server.token(&["--company", &acme(), "--role", "operator"])?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let history = || HistoryRequest { company_id: acme(), ..Default::default() };
    for n in 0..5 {
        let refused = api.history(request(history(), Some("garbage"))?).await.err().context("a garbage token")?;
        assert_eq!(refused.code(), Code::Unauthenticated, "refusal {n}: {refused:?}");
        assert!(refused.message().contains("malformed"), "{refused:?}");
    }
    let slowed = api.history(request(history(), None)?).await.err().context("past the limit")?;
    assert_eq!(slowed.code(), Code::ResourceExhausted, "{slowed:?}");
    let wait = slowed.get_details_retry_info().and_then(|r| r.retry_delay).context("RetryInfo with a delay")?;
    assert!(wait > std::time::Duration::ZERO && wait <= std::time::Duration::from_secs(60), "{wait:?}");
    // A valid token still passes: only refusals are counted.
    api.history(with_token(history(), &operator)?).await?;
    Ok(())
}

#[tokio::test]
async fn a_server_with_the_identity_providers_keys_accepts_their_tokens_only() -> anyhow::Result<()> {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/auth");
    let jwks = fixtures.join("jwks.json").display().to_string();
    let server = server_without_temporal_with(&[
        ("ETTER_AUTH__JWKS_FILE", jwks.as_str()),
        ("ETTER_AUTH__ROLE_CLAIM", "groups"),
        ("ETTER_AUTH__ROLE_PREFIX", "etter-"),
    ])
    .await?;
    let claims = serde_json::json!({
        "sub": "jane@acme.example", "groups": ["everyone", "etter-operator"], "companies": [acme()],
        "iss": "etter", "aud": "etter-pipeline", "exp": now() + 600,
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("idp-rsa-2026".into());
    let key = EncodingKey::from_rsa_pem(&std::fs::read(fixtures.join("rsa2-private.pem"))?)?;
    let token = jsonwebtoken::encode(&header, &claims, &key)?;
    let mut api = PipelineServiceClient::new(server.channel().await?);
    let push = push_request("Provider Role", &doc_uri(&server, "p.pdf"));
    api.push(with_token(push, &token)?).await?;

    // No shared secret is configured: this server issues no tokens and refuses HS256 ones.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_etter-server"))
        .args(["token", "--company", &acme(), "--role", "operator"])
        .env("ETTER_DATA_DIR", &server.data_dir)
        .env("ETTER_AUTH__JWKS_FILE", &jwks)
        .output()?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("accepts only tokens of the identity provider"), "{stderr}");
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"guessed-secret-guessed-secret-guessed"),
    )?;
    let history = HistoryRequest { company_id: acme(), ..Default::default() };
    let status = api.history(with_token(history, &hs)?).await.err().context("an HS256 token")?;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("`HS256` is not accepted"), "{status:?}");
    Ok(())
}
