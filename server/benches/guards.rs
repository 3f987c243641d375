//! Micro-benchmarks of the guards every call passes, each beside a baseline
//! measured in the same run:
//! - JWT verify: `Authenticator::authenticate` (bearer header → declared algorithm check →
//!   signature → `exp`/`nbf`/`iss`/`aud` → claims → principal) vs the bare
//!   `jsonwebtoken::decode` of the same token;
//! - rate-limit check: `Limits::admit_call` (the company's limits from the companies file →
//!   its quota's keyed limiter → GCRA check) vs a bare governor keyed check of the same quota.
//!
//! `cargo bench -p etter-server --bench guards` measures; `cargo test` (all targets) runs each once.

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use etter_core::ids::CompanyId;
use etter_server::auth::{Authenticator, issue_token, signing_secret};
use etter_server::companies::{Companies, CompanyLimits};
use etter_server::config::{AuthConfig, LimitsConfig};
use etter_server::limits::Limits;
use etter_server::principal::Role;
use governor::{Quota, RateLimiter};
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
    let scratch = tempfile::Builder::new().prefix("etter-bench-auth-").tempdir()?;
    let dir = scratch.path().to_path_buf();
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

fn rate_limit(c: &mut Criterion) {
    // A rate no benchmark reaches: every check admits, as almost every real call is.
    let config = LimitsConfig { calls_per_minute: u32::MAX, burst: u32::MAX, ..LimitsConfig::default() };
    let companies = match Companies::load(std::path::Path::new(""), CompanyLimits::defaults(&config)) {
        Ok(companies) => std::sync::Arc::new(companies),
        Err(e) => {
            eprintln!("cannot set up the benchmark: {e}");
            std::process::exit(1);
        }
    };
    let limits = Limits::new(companies, &config);
    let Ok(company) = CompanyId::parse("acme") else {
        eprintln!("the benchmark company id is refused");
        std::process::exit(1);
    };
    let quota = Quota::per_minute(std::num::NonZeroU32::MAX).allow_burst(std::num::NonZeroU32::MAX);
    let bare = RateLimiter::dashmap(quota);
    if limits.admit_call(&company).is_err() || bare.check_key(&company).is_err() {
        eprintln!("the benchmark call is refused");
        std::process::exit(1);
    }
    let mut group = c.benchmark_group("rate-limit check");
    group.bench_function("baseline: governor keyed check_key", |b| b.iter(|| bare.check_key(black_box(&company))));
    group.bench_function("Limits::admit_call (companies file → quota's limiter → check)", |b| {
        b.iter(|| limits.admit_call(black_box(&company)))
    });
    group.finish();
}

criterion_group!(micro, authenticate, rate_limit);
criterion_main!(micro);
