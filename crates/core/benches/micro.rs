//! Micro-benchmarks of the pipeline's per-run bookkeeping: a lifecycle
//! transition, planning a new run and a retry, and hashing a step's inputs, each beside a
//! baseline measured in the same run (criterion prints both in one group).
//!
//! `cargo bench -p etter-core --bench micro` measures; `cargo test` (all targets) runs each
//! once, so the benchmarks cannot rot.

use std::{collections::BTreeMap, hint::black_box};

use criterion::{Criterion, criterion_group, criterion_main};
use etter_core::lifecycle::{RunState, transition};
use etter_core::outputs::ContentHash;
use etter_core::steps::{DocumentKind, PriorOutcome, PriorStep, StepName, input_hash, plan_new, plan_retry};
use sha2::{Digest as _, Sha256};

fn lifecycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("lifecycle transition");
    group.bench_function("baseline: compare two states", |b| {
        b.iter(|| black_box(RunState::Processing) == black_box(RunState::Ready))
    });
    group.bench_function("transition (allowed)", |b| {
        b.iter(|| transition(black_box(RunState::Processing), black_box(RunState::Ready)))
    });
    group.bench_function("transition (refused)", |b| {
        b.iter(|| transition(black_box(RunState::Ready), black_box(RunState::Queued)))
    });
    group.finish();
}

fn planning(c: &mut Criterion) {
    let prior: BTreeMap<StepName, PriorStep> = StepName::ALL
        .iter()
        .enumerate()
        .map(|(n, step)| {
            let outcome = if n < 4 {
                PriorOutcome::Completed
            } else if n == 4 {
                PriorOutcome::Failed
            } else {
                PriorOutcome::NotRun
            };
            let hash = (n < 4).then(|| format!("{n:064x}"));
            (*step, PriorStep { outcome, input_hash: hash.clone(), output_hash: hash })
        })
        .collect();
    let mut group = c.benchmark_group("run planning");
    group.bench_function("baseline: clone the step list", |b| b.iter(|| black_box(StepName::ALL).to_vec()));
    group.bench_function("plan a new run", |b| b.iter(|| plan_new(black_box(false))));
    group.bench_function("plan a retry after a failed step", |b| b.iter(|| plan_retry(black_box(&prior), &[], false)));
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let documents = vec![
        (DocumentKind::JobDescription, ContentHash("a".repeat(64))),
        (DocumentKind::ProcessMap, ContentHash("b".repeat(64))),
    ];
    let upstream: BTreeMap<StepName, String> = StepName::ALL.iter().map(|s| (*s, "c".repeat(64))).collect();
    let identity = "cr-acme-claims-adjuster|Claims Adjuster|draup-role-12345";
    // The same bytes input_hash feeds SHA-256, hashed directly.
    let raw = format!("{identity}{}{}", "a".repeat(64), "c".repeat(64 * 3));
    let mut group = c.benchmark_group("input hashing");
    group.bench_function("baseline: SHA-256 of the same bytes", |b| {
        b.iter(|| Sha256::digest(black_box(raw.as_bytes())))
    });
    group.bench_function("input hash of ai_assessment", |b| {
        b.iter(|| input_hash(StepName::AiAssessment, black_box(identity), &documents, &upstream))
    });
    group.finish();
}

criterion_group!(micro, lifecycle, planning, hashing);
criterion_main!(micro);
