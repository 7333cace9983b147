//! Route classification cost: it runs on every request, governed or not.
//!
//! `ungoverned/*` is the common case and must not allocate; `governed/*` allocates only the key
//! id; `suspicious/*` takes the slow path (percent-decoding, dot-segment resolution).

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Method, Uri};
use keygate::guard::classify;
use std::hint::black_box;

fn bench_classify(c: &mut Criterion) {
    let cases = [
        (
            "ungoverned/environments",
            Method::GET,
            "/org/v2/environments?page_size=10",
        ),
        (
            "ungoverned/cluster",
            Method::GET,
            "/cmk/v2/clusters/lkc-9x8y7z?environment=env-5q6w7e",
        ),
        (
            "ungoverned/lookalike",
            Method::GET,
            "/iam/v2/api-keys-archive",
        ),
        (
            "governed/list",
            Method::GET,
            "/iam/v2/api-keys?spec.owner=sa-1a2b3c&page_size=50",
        ),
        (
            "governed/get",
            Method::GET,
            "/iam/v2/api-keys/ABCD1234567890AB",
        ),
        (
            "suspicious/ungoverned",
            Method::GET,
            "/org/v2/environments/env%2D5q6w7e",
        ),
        ("suspicious/rejected", Method::GET, "/x/../iam/v2/api-keys"),
    ];
    let mut group = c.benchmark_group("classify");
    for (name, method, target) in cases {
        let uri = Uri::from_static(target);
        group.bench_function(name, |b| {
            b.iter(|| classify(black_box(&method), black_box(&uri)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_classify);
criterion_main!(benches);
