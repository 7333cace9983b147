//! Identity for bearer JWTs of keygate's own issuers (issue #17's targets).
//!
//! - `jwt/cached`: `Authenticator::authenticate_with` for a token verified before: the bearer
//!   parsed, the identity cache hit (HMAC-SHA256 of the token, lookup) — what every request after
//!   the first costs. Target: p99 ≤ 2 µs.
//! - `jwt/verify_es256`: a full verification of an ES256 token (split, base64url, header and
//!   claims JSON, the ECDSA P-256 signature with ring, `iss`/`aud`/`exp` checks, the principal
//!   template) — what a token's first request costs. Target: p99 ≤ 60 µs.
//! - `jwt/verify_eddsa`, `jwt/verify_rs256`: the same for the other usual algorithms, for scale.
//! - `basic/cached`: a cached Basic identity, the comparison point.
//!
//! `cargo bench --bench identity` prints percentiles of 100 000 individually timed calls per case
//! (each timing includes one `Instant::now()` pair), then criterion's estimates.

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
use criterion::{criterion_group, Criterion};
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use keygate::config::Config;
use keygate::identity::cache::IdentityCache;
use keygate::identity::directory::Directory;
use keygate::identity::jwt::mint::{self, Minter};
use keygate::identity::jwt::{Issuer, Issuers, Jwks, KeySet};
use keygate::identity::{Authenticator, ExternalSources, Lookup, Source};

const ISS: &str = "https://idp.bench.example";
const CALLS: usize = 100_000;

fn print_percentiles(label: &str, mut f: impl FnMut()) {
    for _ in 0..1_000 {
        f();
    }
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

/// Polls a future that completes without waiting once.
fn poll_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("must not wait"),
    }
}

struct Setup {
    authenticator: Authenticator,
    issuer: Issuer,
    minters: Vec<Minter>,
    bearer: HeaderMap,
    basic: HeaderMap,
}

fn setup() -> Setup {
    let minters = vec![
        Minter::es256("ec").unwrap(),
        Minter::ed25519("ed").unwrap(),
        Minter::rsa(
            "rsa",
            include_bytes!("../tests/fixtures/jwt/rsa-2048.pem"),
            false,
        )
        .unwrap(),
    ];
    let refs: Vec<&Minter> = minters.iter().collect();
    let keys = KeySet::parse(mint::jwks(&refs).as_bytes()).unwrap();
    let config = Config::from_toml(&format!(
        r#"
[upstream]
url = "http://127.0.0.1:1"
[authz]
org_id = "4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c"
bindings = "b.toml"
inventory = "i.toml"
[[identity.jwt]]
issuer = "{ISS}"
audiences = ["keygate"]
jwks_file = "unused.json"
algorithms = ["ES256", "EdDSA", "RS256"]
principal = "{{claims.repository}}@github"
[[identity.map]]
external = "acme/payments@github"
acting_as = "sa-payments-ci"
"#
    ))
    .unwrap();
    let issuer_config = config.identity.jwt[0].clone();
    let issuers = Issuers::new(vec![Issuer::new(
        issuer_config.clone(),
        Jwks::fixed(keys.clone()),
    )]);
    let external =
        ExternalSources::with_issuers(config.identity.external(), issuers, None).unwrap();
    let cache = IdentityCache::new(Duration::from_secs(300), 10_000).unwrap();
    let directory = Directory::parse(
        &format!(
            "[[keys]]\nid = \"BENCHKEY00000001\"\nprincipal = \"u-bench\"\nsecret_hash = \"{}\"\n",
            keygate::identity::directory::hash_secret("bench-secret").unwrap()
        ),
        "bench",
    )
    .unwrap();
    let authenticator =
        Authenticator::new(Source::Directory(directory), cache).with_external(external);
    let token = minters[0].sign(&claims());
    let mut bearer = HeaderMap::new();
    bearer.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let (_, first) = poll_ready(authenticator.authenticate_with(&bearer, None)).unwrap();
    assert_eq!(first, Lookup::Miss);
    let (principal, second) = poll_ready(authenticator.authenticate_with(&bearer, None)).unwrap();
    assert_eq!(second, Lookup::Hit);
    assert_eq!(principal.id(), "sa-payments-ci");
    let mut basic = HeaderMap::new();
    basic.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("BENCHKEY00000001:bench-secret")
        ))
        .unwrap(),
    );
    Setup {
        authenticator,
        issuer: Issuer::new(issuer_config, Jwks::fixed(keys)),
        minters,
        bearer,
        basic,
    }
}

/// GitHub Actions-like claims (a realistic token size, ~900 bytes signed).
fn claims() -> serde_json::Value {
    serde_json::json!({
        "iss": ISS, "aud": "keygate", "sub": "repo:acme/payments:ref:refs/heads/main",
        "repository": "acme/payments", "repository_owner": "acme", "ref": "refs/heads/main",
        "sha": "2f1c6bd2a7f1e0c88e4e1d8c7a0f9d1b2c3d4e5f", "workflow": "deploy",
        "actor": "octocat", "run_id": "1234567890", "environment": "production",
        "job_workflow_ref": "acme/payments/.github/workflows/deploy.yml@refs/heads/main",
        "iat": mint::now(), "nbf": mint::now() - 5, "exp": mint::now() + 3600,
    })
}

fn report_percentiles(s: &Setup) {
    print_percentiles("jwt/cached", || {
        black_box(
            poll_ready(
                s.authenticator
                    .authenticate_with(black_box(&s.bearer), None),
            )
            .unwrap(),
        );
    });
    for (name, minter) in ["verify_es256", "verify_eddsa", "verify_rs256"]
        .iter()
        .zip(&s.minters)
    {
        let token = minter.sign(&claims());
        println!("{name}: token of {} bytes", token.len());
        print_percentiles(&format!("jwt/{name}"), || {
            black_box(poll_ready(s.issuer.verify(black_box(&token))).unwrap());
        });
    }
    // The signature check alone (ring), to tell the verifier's own overhead from the cryptography.
    let token = s.minters[0].sign(&claims());
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .unwrap();
    let jwk = s.minters[0].jwk();
    let coordinate = |name: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwk[name].as_str().unwrap())
            .unwrap()
    };
    let mut point = vec![4u8];
    point.extend(coordinate("x"));
    point.extend(coordinate("y"));
    let key =
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point);
    key.verify(signed.as_bytes(), &signature).unwrap();
    print_percentiles("ring/es256_signature_only", || {
        key.verify(black_box(signed.as_bytes()), black_box(&signature))
            .unwrap();
    });
    // A cached Basic identity as the upstream source serves it: the header decoded, the same
    // identity cache hit (HMAC of `key:secret`, lookup).
    let cache = IdentityCache::new(Duration::from_secs(300), 10_000).unwrap();
    let principal = Arc::new(
        keygate::model::Principal::new(
            "u-bench",
            keygate::model::AuthMethod::ApiKey {
                key_id: "BENCHKEY00000001".into(),
            },
        )
        .unwrap(),
    );
    let mut scratch = String::new();
    let credential = keygate::identity::parse_basic(&s.basic, &mut scratch).unwrap();
    let p = principal.clone();
    poll_ready(cache.get_or_resolve(credential.pair().as_bytes(), || async move { Ok(p) }))
        .unwrap();
    print_percentiles("basic/cached", || {
        let mut scratch = String::new();
        let credential = keygate::identity::parse_basic(black_box(&s.basic), &mut scratch).unwrap();
        black_box(
            poll_ready(
                cache.get_or_resolve(credential.pair().as_bytes(), || async {
                    unreachable!("cached")
                }),
            )
            .unwrap(),
        );
    });
}

fn bench_identity(c: &mut Criterion) {
    let s = setup();
    let mut group = c.benchmark_group("jwt");
    group.bench_function("cached", |b| {
        b.iter(|| {
            poll_ready(
                s.authenticator
                    .authenticate_with(black_box(&s.bearer), None),
            )
            .unwrap()
        })
    });
    let token = s.minters[0].sign(&claims());
    group.bench_function("verify_es256", |b| {
        b.iter(|| poll_ready(s.issuer.verify(black_box(&token))).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench_identity);

fn main() {
    if std::env::args().any(|a| a == "--bench") {
        report_percentiles(&setup());
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
