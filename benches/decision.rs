//! Layer-1 decision latency: `decide_create` with 100, 10 000 and 100 000 role bindings in the
//! index (almost all for other principals, 10 for the caller), for an allow and a deny.
//!
//! `full_decision` is what the request path does for a create by a caller whose identity is
//! cached: the `Authorization` header decoded, the identity cache hit (HMAC of the credential,
//! lookup), the body parsed strictly (duplicate and case-folded keys, schema spelling) and the
//! matrix decided — the three steps issue #3 asks to be measured together.
//!
//! `cargo bench --bench decision` prints criterion's estimates and, before them, percentiles of
//! 100 000 individually timed calls per case (each timing includes one `Instant::now()` pair).

#![allow(
    clippy::unwrap_used,
    reason = "benchmark setup: invalid fixture data should abort the run"
)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};

use criterion::{criterion_group, BenchmarkId, Criterion};
use keygate::guard::parse_create;
use keygate::identity::cache::IdentityCache;
use keygate::identity::{parse_basic, Lookup};
use keygate::model::{AuthMethod, Principal};
use keygate::model::{CreateSpec, ResourceSpec};
use keygate::policy::bindings::BindingIndexBuilder;
use keygate::policy::crn::OrgId;
use keygate::policy::inventory::InventoryBuilder;
use keygate::policy::matrix::Matrix;
use keygate::policy::{decide_create, AuthzSnapshot};

const ORG: &str = "0b7e1c2d-3f4a-4b5c-8d6e-7f8091a2b3c4";
const SIZES: [usize; 3] = [100, 10_000, 100_000];
const ENVIRONMENTS: usize = 100;
const CALLER: &str = "u-caller";

/// Calls timed one by one for the percentile histograms.
const CALLS: usize = 100_000;

/// Times `CALLS` single calls of `f` and prints p50/p99/p99.9/max (criterion reports means).
fn print_percentiles(label: &str, mut f: impl FnMut()) {
    let mut ns: Vec<u64> = (0..CALLS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_nanos() as u64
        })
        .collect();
    ns.sort_unstable();
    let at = |q: f64| ns[((CALLS as f64 * q) as usize).min(CALLS - 1)];
    println!(
        "percentiles {label}: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns ({CALLS} calls)",
        at(0.50),
        at(0.99),
        at(0.999),
        ns[CALLS - 1]
    );
}

fn crn(rest: &str) -> String {
    format!("crn://confluent.cloud/organization={ORG}{rest}")
}

/// `total` bindings: 10 for the caller (the granting one last), the rest spread over other
/// principals, 10 each, mostly topic-level data-plane roles as in a real organisation.
fn snapshot(total: usize) -> AuthzSnapshot {
    let org = OrgId::parse(ORG).unwrap();
    let mut b = BindingIndexBuilder::new(org);
    for i in 0..9 {
        let topic = format!(
            "/environment=env-{i}/cloud-cluster=lkc-{i}-0/kafka=lkc-{i}-0/topic=orders-{i}"
        );
        b.push("User:u-caller", "DeveloperWrite", &crn(&topic))
            .unwrap();
    }
    b.push(
        "User:u-caller",
        "EnvironmentAdmin",
        &crn("/environment=env-7"),
    )
    .unwrap();
    for n in 0..total.saturating_sub(10) {
        let principal = format!("User:u-p{}", n / 10);
        let e = n % ENVIRONMENTS;
        let (role, rest) = match n % 10 {
            0 => ("EnvironmentAdmin", format!("/environment=env-{e}")),
            1 => ("ResourceOwner", format!("/service-account=sa-{}", n / 10)),
            _ => (
                "DeveloperRead",
                format!("/environment=env-{e}/cloud-cluster=lkc-{e}-0/kafka=lkc-{e}-0/topic=t-{n}"),
            ),
        };
        b.push(&principal, role, &crn(&rest)).unwrap();
    }
    let mut inv = InventoryBuilder::new();
    for e in 0..ENVIRONMENTS {
        let env = format!("env-{e}");
        inv.environment(&env).unwrap();
        for c in 0..10 {
            inv.kafka_cluster(&format!("lkc-{e}-{c}"), &env).unwrap();
            inv.schema_registry(&format!("lsrc-{e}-{c}"), &env).unwrap();
        }
    }
    let matrix = Matrix::from_toml_str(include_str!("../policies/matrix.toml")).unwrap();
    AuthzSnapshot::new(
        Arc::new(matrix),
        Arc::new(b.build()),
        Arc::new(inv.build()),
        Instant::now(),
    )
}

fn spec(owner: &str, resource: &str) -> CreateSpec {
    CreateSpec {
        owner_id: owner.into(),
        resource: Some(ResourceSpec {
            id: resource.into(),
            environment: None,
        }),
        display_name: "orders-producer".into(),
        description: String::new(),
    }
}

/// (name, request, expected allow)
fn cases() -> [(&'static str, CreateSpec, bool); 2] {
    [
        // EnvironmentAdmin on env-7 covers the cluster: the 10th binding decides.
        ("allow_kafka_for_sa", spec("sa-orders", "lkc-7-3"), true),
        // Global for a service account: every binding checked, explanation lists holdings.
        ("deny_global_for_sa", spec("sa-orders", "global"), false),
    ]
}

fn caller() -> Principal {
    Principal::new(
        CALLER,
        AuthMethod::ApiKey {
            key_id: "ABCD1234567890AB".into(),
        },
    )
    .unwrap()
}

/// A real client's create body (Confluent CLI shape) for `sa-orders` on the env-7 cluster.
const CREATE_BODY: &[u8] = br#"{"spec":{"display_name":"orders-producer","description":"Kafka access for the orders service","owner":{"id":"sa-orders","related":"","resource_name":""},"resource":{"id":"lkc-7-3","environment":"env-7","related":"","resource_name":""}}}"#;

/// The global allocator the `keygate` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Basic credential of the cached caller and the cache holding it.
fn warmed_cache() -> (IdentityCache, HeaderMap) {
    let cache = IdentityCache::new(Duration::from_secs(600), 10_000).unwrap();
    let mut headers = HeaderMap::new();
    let pair =
        "ABCD1234567890AB:cfltSecretSecretSecretSecretSecretSecretSecretSecretSecretSecret01";
    let value = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    );
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
    let principal = Arc::new(caller());
    let resolved =
        poll_ready(cache.get_or_resolve(pair.as_bytes(), || async move { Ok(principal) }));
    assert_eq!(resolved.unwrap().1, Lookup::Miss);
    (cache, headers)
}

/// Header → cached principal → parsed body → matrix, as the request path does it.
fn full_decision(cache: &IdentityCache, headers: &HeaderMap, snap: &AuthzSnapshot) -> bool {
    let mut scratch = String::new();
    let credential = parse_basic(headers, &mut scratch).unwrap();
    let (principal, lookup) = poll_ready(
        cache.get_or_resolve(credential.pair().as_bytes(), || async {
            unreachable!("cached")
        }),
    )
    .unwrap();
    debug_assert_eq!(lookup, Lookup::Hit);
    let spec = parse_create(black_box(CREATE_BODY)).unwrap();
    decide_create(snap, &principal, &spec).allow
}

/// Polls a future that completes without waiting (a cache hit) once.
fn poll_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a cache hit must not wait"),
    }
}

fn bench_decide(c: &mut Criterion) {
    let principal = caller();
    let mut group = c.benchmark_group("decide_create");
    for size in SIZES {
        let snap = snapshot(size);
        for (name, request, allow) in cases() {
            assert_eq!(decide_create(&snap, &principal, &request).allow, allow);
            group.bench_with_input(BenchmarkId::new(name, size), &request, |b, request| {
                b.iter(|| {
                    decide_create(black_box(&snap), black_box(&principal), black_box(request))
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("full_decision");
    let (cache, headers) = warmed_cache();
    for size in SIZES {
        let snap = snapshot(size);
        assert!(full_decision(&cache, &headers, &snap));
        group.bench_with_input(
            BenchmarkId::new("allow_kafka_for_sa", size),
            &snap,
            |b, snap| b.iter(|| full_decision(&cache, &headers, black_box(snap))),
        );
    }
    group.finish();
}

/// Times `CALLS` decisions one by one and prints p50/p99/p99.9/max in nanoseconds.
fn report_percentiles() {
    let principal = caller();
    for size in SIZES {
        let snap = snapshot(size);
        for (name, request, _) in cases() {
            for _ in 0..1_000 {
                black_box(decide_create(&snap, &principal, &request));
            }
            print_percentiles(&format!("decide_create/{name}/{size}"), || {
                black_box(decide_create(
                    black_box(&snap),
                    &principal,
                    black_box(&request),
                ));
            });
        }
        let (cache, headers) = warmed_cache();
        print_percentiles(&format!("full_decision/allow_kafka_for_sa/{size}"), || {
            black_box(full_decision(&cache, &headers, black_box(&snap)));
        });
    }
}

criterion_group!(benches, bench_decide);

fn main() {
    // Only under `cargo bench` (which passes --bench), not when test targets run the binary.
    if std::env::args().any(|a| a == "--bench") {
        report_percentiles();
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
