//! Micro-benchmark of authenticating one call (issue 11, item 6): `Authenticator::authenticate`
//! (bearer header → declared algorithm check → signature → `exp`/`nbf`/`iss`/`aud` → claims →
//! principal) beside the bare `jsonwebtoken::decode` of the same token, measured in the same run.
//!
//! `cargo bench -p etter-server --bench auth` measures; `cargo test` (all targets) runs each once.

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use etter_pipeline::{config::AuthConfig, ids::CompanyId};
use etter_server::auth::{Authenticator, Role, issue_token, signing_secret};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use tonic::metadata::MetadataMap;

struct Fixture {
    authenticator: Authenticator,
    metadata: MetadataMap,
    token: String,
    key: DecodingKey,
    validation: Validation,
}

fn fixture() -> anyhow::Result<Fixture> {
    let dir = std::env::temp_dir().join(format!("etter-bench-auth-{}", std::process::id()));
    let auth =
        AuthConfig { hs256_secret: "a benchmark secret of at least thirty-two bytes".into(), ..AuthConfig::default() };
    let secret = signing_secret(&auth, &dir)?;
    let companies = [CompanyId::parse("acme")?];
    let token = issue_token(&auth, &secret, "bench", Role::Operator, &companies, Duration::from_secs(3600))?;
    let mut metadata = MetadataMap::new();
    metadata.insert("authorization", format!("Bearer {token}").parse()?);
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[&auth.issuer]);
    validation.set_audience(&[&auth.audience]);
    Ok(Fixture {
        authenticator: Authenticator::new(&auth, &dir)?,
        metadata,
        token,
        key: DecodingKey::from_secret(&secret),
        validation,
    })
}

fn authenticate(c: &mut Criterion) {
    let f = match fixture() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot set up the benchmark: {e:#}");
            std::process::exit(1);
        }
    };
    // Both must accept the token, or the comparison measures a refusal.
    if f.authenticator.authenticate(&f.metadata).is_err()
        || decode::<serde_json::Value>(&f.token, &f.key, &f.validation).is_err()
    {
        eprintln!("the benchmark token is refused");
        std::process::exit(1);
    }
    let mut group = c.benchmark_group("JWT verify");
    group.bench_function("baseline: jsonwebtoken::decode (HS256)", |b| {
        b.iter(|| decode::<serde_json::Value>(black_box(&f.token), &f.key, &f.validation))
    });
    group.bench_function("Authenticator::authenticate (HS256 → principal)", |b| {
        b.iter(|| f.authenticator.authenticate(black_box(&f.metadata)))
    });
    group.finish();
}

criterion_group!(micro, authenticate);
criterion_main!(micro);
