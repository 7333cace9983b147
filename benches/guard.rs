//! Route classification cost: it runs on every request, governed or not.
//!
//! `ungoverned/*` is the common case (a plain path) and must not allocate; `governed/*`
//! allocates only the key id; `suspicious/*` takes the lenient model (percent-decoding until
//! stable, overlong UTF-8, look-alikes, dot segments). Before the timings, each case's
//! allocations per call are counted and printed.

use std::alloc::System;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Method, Uri};
use keygate::guard::classify;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

/// Counts allocations, to show that the ungoverned fast path makes none.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CASES: [(&str, &str); 12] = [
    (
        "ungoverned/environments",
        "/org/v2/environments?page_size=10",
    ),
    (
        "ungoverned/cluster",
        "/cmk/v2/clusters/lkc-9x8y7z?environment=env-5q6w7e",
    ),
    ("ungoverned/lookalike", "/iam/v2/api-keys-archive"),
    (
        "governed/list",
        "/iam/v2/api-keys?spec.owner=sa-1a2b3c&page_size=50",
    ),
    ("governed/get", "/iam/v2/api-keys/ABCD1234567890AB"),
    ("suspicious/ungoverned", "/org/v2/environments/env%2D5q6w7e"),
    ("suspicious/dot", "/x/../iam/v2/api-keys"),
    ("suspicious/overlong", "/iam/v2%C0%AFapi-keys"),
    (
        "suspicious/overlong3",
        "/iam/v2/x/%E0%80%AE%E0%80%AE/api-keys",
    ),
    ("suspicious/whitespace", "/iam/v2/api-keys%20"),
    ("suspicious/fullwidth", "/%EF%BD%89am/v2/api%EF%BC%8Dkeys"),
    (
        "suspicious/double",
        "/iam%25252Fv2%25252Fapi-keys/%2525u0041BC%3B.json",
    ),
];

fn bench_classify(c: &mut Criterion) {
    for (name, target) in CASES {
        let uri = Uri::from_static(target);
        let region = Region::new(GLOBAL);
        for _ in 0..1000 {
            let _ = black_box(classify(black_box(&Method::GET), black_box(&uri)));
        }
        let per_call = region.change().allocations as f64 / 1000.0;
        println!("allocations per call: {name:<26} {per_call}");
    }
    let mut group = c.benchmark_group("classify");
    for (name, target) in CASES {
        let uri = Uri::from_static(target);
        group.bench_function(name, |b| {
            b.iter(|| classify(black_box(&Method::GET), black_box(&uri)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_classify);
criterion_main!(benches);
