//! `OrgPolicies::evaluate` (layer 2): build the input and evaluate it, single-threaded, with the
//! shipped example set and with 20, 200 and 1,000 generated forbid policies. Loading (parse +
//! strict validation) happens once, outside the timing, as in keygate.
//!
//! Criterion reports the mean/median; the percentile pass afterwards times 10k individual
//! evaluations with `Instant` and sorts them, because criterion does not report tails. The
//! timer's own cost is printed as `timer`. The request is one that no policy denies, so every
//! policy is evaluated to the end (the denying path only adds the findings).
//! `cargo bench --bench org_policy`.

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark on fixed inputs: any failure should abort it loudly"
)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::Criterion;

/// The allocator the `keygate` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use keygate::policy::action::Action;
use keygate::policy::org::{KeyResource, OrgInput, OrgPolicies, OrgPolicyConfig};
use keygate::policy::principal::PrincipalKind;

/// Individually timed evaluations per scenario in the percentile pass.
const TIMED_EVALUATIONS: usize = 10_000;
/// Sizes of the generated policy sets.
const GENERATED: [usize; 3] = [20, 200, 1_000];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_config() -> OrgPolicyConfig {
    let text =
        std::fs::read_to_string(manifest_dir().join("policies/policy.example.toml")).unwrap();
    OrgPolicyConfig::from_toml_str(&text, &manifest_dir()).unwrap()
}

/// `n` forbid policies in the style of real ones (scope on the action, a few context tests),
/// none of which matches the benchmark request.
fn generated(dir: &Path, n: usize) -> OrgPolicyConfig {
    std::fs::copy(
        manifest_dir().join("policies/keygate.cedarschema"),
        dir.join("keygate.cedarschema"),
    )
    .unwrap();
    let mut text = String::new();
    for i in 0..n {
        let body = match i % 4 {
            0 => format!(
                "context.owner.id == \"sa-gen-{i}\" && context.resource.type == \"Kafka\""
            ),
            1 => format!(
                "context.resource has environment && context.resource.environment == \"env-gen-{i}\" && !context.description_matches.ticket"
            ),
            2 => format!(
                "context.display_name like \"*-gen{i}-*\" || principal.groups.contains(\"banned-{i}\")"
            ),
            _ => format!(
                "context has owner_key_count && context.owner_key_count > {} && context.owner.kind == \"ServiceAccount\"",
                1_000 + i
            ),
        };
        let _ = write!(
            text,
            "@id(\"gen-{i}\")\n@reason(\"generated policy {i}\")\nforbid (principal, action == Action::\"CreateApiKey\", resource)\nwhen {{ {body} }};\n\n"
        );
    }
    std::fs::write(dir.join("generated.cedar"), text).unwrap();
    OrgPolicyConfig {
        dir: dir.to_path_buf(),
        schema: None,
        modes: Default::default(),
        groups: Default::default(),
        ..shipped_config()
    }
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let mut scenarios: Vec<(String, OrgPolicies)> = vec![(
        "evaluate/shipped".to_owned(),
        OrgPolicies::load(&shipped_config()).unwrap(),
    )];
    for n in GENERATED {
        let dir = tmp.path().join(n.to_string());
        std::fs::create_dir(&dir).unwrap();
        let started = Instant::now();
        let policies = OrgPolicies::load(&generated(&dir, n)).unwrap();
        println!(
            "load/{n}: {:?} (parse + strict validation)",
            started.elapsed()
        );
        scenarios.push((format!("evaluate/{n}"), policies));
    }

    let groups = ["team-orders".to_owned(), "developers".to_owned()];
    // Built per iteration, as the decide stage would: borrowing, no allocation.
    let input = || OrgInput {
        principal_id: black_box("u-bob"),
        principal_kind: PrincipalKind::User,
        groups: &groups,
        bindings: &[],
        action: Action::CreateApiKey,
        key_id: None,
        owner_id: Some(black_box("sa-orders")),
        resource: Some(KeyResource {
            id: "lkc-prod01",
            resource_type: "Kafka",
            environment: Some("env-prod01"),
            cluster: Some("lkc-prod01"),
        }),
        display_name: Some(black_box("orders-ingest-prod")),
        description: Some(black_box("OPS-1234 orders ingest consumer")),
        matrix_allowed: true,
        matrix_rule: "service-account/matrix-role",
        owner_key_count: Some(1),
        time: 1_735_689_600,
        source_ip: Some("10.20.30.40".parse().unwrap()),
        request_id: "0f8e2c4a-bench",
        target_key: None,
    };
    // The read path: a GET, for which the shipped set has no policy (only keygate's permit runs).
    let get = || OrgInput {
        action: Action::GetApiKey,
        key_id: Some(black_box("ORDERSPRODKEY001")),
        owner_id: None,
        resource: None,
        display_name: None,
        description: None,
        owner_key_count: None,
        ..input()
    };
    for (name, p) in &scenarios {
        let d = p.evaluate(&input());
        assert!(d.allowed && d.would_deny.is_empty(), "{name}: {d:?}");
    }

    let mut criterion = Criterion::default().configure_from_args();
    for (name, p) in &scenarios {
        criterion.bench_function(name, |b| b.iter(|| black_box(p.evaluate(&input()))));
    }
    let shipped = &scenarios[0].1;
    criterion.bench_function("evaluate/shipped_get", |b| {
        b.iter(|| black_box(shipped.evaluate(&get())))
    });
    criterion.final_summary();

    // `cargo test --benches` runs this binary without `--bench`: keep that quick.
    let timed = if std::env::args().any(|a| a == "--bench") {
        TIMED_EVALUATIONS
    } else {
        100
    };
    // Honour a criterion name filter such as `evaluate/shipped` in this pass too.
    let filter = std::env::args()
        .skip(1)
        .find(|a| a.starts_with("evaluate/"));
    let mut samples = vec![0u64; timed];
    println!("{:<18} {}", "timer", percentiles(&mut samples, || {}));
    for (name, p) in &scenarios {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let line = percentiles(&mut samples, || {
            black_box(p.evaluate(&input()));
        });
        println!("{name:<18} {line}");
    }
    if filter
        .as_ref()
        .is_none_or(|f| "evaluate/shipped_get".contains(f.as_str()))
    {
        let line = percentiles(&mut samples, || {
            black_box(shipped.evaluate(&get()));
        });
        println!("{:<18} {line}", "evaluate/shipped_get");
    }
}

/// Times `f` once per sample slot and summarises the distribution in microseconds.
fn percentiles(samples: &mut [u64], mut f: impl FnMut()) -> String {
    for _ in 0..samples.len() / 10 {
        f();
    }
    for slot in samples.iter_mut() {
        let start = Instant::now();
        f();
        *slot = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let us = |ns: u64| ns as f64 / 1_000.0;
    format!(
        "p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs  (n = {})",
        us(at(0.50)),
        us(at(0.99)),
        us(at(0.999)),
        us(samples[samples.len() - 1]),
        samples.len()
    )
}
