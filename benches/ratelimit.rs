//! `RateLimiter::check` on an existing key, single-threaded, with 1 and 3 applicable limits.
//!
//! Criterion reports the mean/median; the percentile pass afterwards times 1M individual checks
//! with `Instant` and sorts them, because criterion does not report tails. The timer's own cost is
//! printed as `timer` so it can be subtracted. The maps are pre-filled with other callers so the
//! lookups hit a realistically sized table. `cargo bench --bench ratelimit`.

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark on a fixed config: any failure should abort it loudly"
)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use criterion::Criterion;
use keygate::model::Action;
use keygate::ratelimit::{RateLimitConfig, RateLimiter, Subject};

/// Callers already in every map.
const OTHER_CALLERS: u32 = 100_000;
/// Individually timed checks per scenario in the percentile pass.
const TIMED_CHECKS: usize = 1_000_000;

/// Quotas large enough that the benchmark never exhausts them: the allow path is the full path
/// (every applicable limit is peeked, then charged).
const ONE_LIMIT: &str = r#"
[[limits]]
id = "per-principal"
key = "principal"
quota = { per = "1s", requests = 1000000000 }
"#;

const THREE_LIMITS: &str = r#"
[[limits]]
id = "creates"
key = "principal_action"
actions = ["CreateApiKey"]
quota = { per = "1s", requests = 1000000000 }

[[limits]]
id = "per-principal"
key = "principal"
quota = { per = "1s", requests = 1000000000 }

[[limits]]
id = "platform"
key = "principal"
match = { groups = ["data"] }
quota = { per = "1s", requests = 1000000000 }

[[limits]]
id = "org"
key = "global"
quota = { per = "1s", requests = 1000000000 }
"#;

struct Scenario {
    name: &'static str,
    limiter: RateLimiter,
    action: Option<Action>,
}

fn scenarios() -> Vec<Scenario> {
    let build = |toml: &str| {
        let limiter = RateLimiter::new(&RateLimitConfig::from_toml(toml).unwrap());
        for i in 0..OTHER_CALLERS {
            let other = Subject::Address(IpAddr::V4(Ipv4Addr::from_bits(i)));
            limiter.check(&other, Some(Action::CreateApiKey)).unwrap();
        }
        limiter
    };
    vec![
        Scenario {
            name: "check/1_limit",
            limiter: build(ONE_LIMIT),
            action: Some(Action::ListApiKeys),
        },
        Scenario {
            name: "check/3_limits",
            limiter: build(THREE_LIMITS),
            action: Some(Action::CreateApiKey),
        },
    ]
}

fn main() {
    let groups = ["platform".to_owned(), "team-payments".to_owned()];
    let who = Subject::Principal {
        id: "sa-1a2b3c",
        groups: &groups,
    };
    let scenarios = scenarios();

    let mut criterion = Criterion::default().configure_from_args();
    for s in &scenarios {
        s.limiter.check(&who, s.action).unwrap();
        criterion.bench_function(s.name, |b| {
            b.iter(|| s.limiter.check(black_box(&who), black_box(s.action)))
        });
    }
    criterion.final_summary();

    // `cargo test --benches` runs this binary without `--bench`: keep that quick.
    let timed = if std::env::args().any(|a| a == "--bench") {
        TIMED_CHECKS
    } else {
        1_000
    };
    let mut samples = vec![0u64; timed];
    let timer = percentiles(&mut samples, || {});
    println!("{:<16} {}", "timer", timer);
    for s in &scenarios {
        let line = percentiles(&mut samples, || {
            black_box(s.limiter.check(black_box(&who), black_box(s.action))).unwrap();
        });
        println!("{:<16} {}", s.name, line);
    }
}

/// Times `f` once per sample slot and summarises the distribution in nanoseconds.
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
    format!(
        "p50 {} ns  p99 {} ns  p99.9 {} ns  max {} ns  (n = {})",
        at(0.50),
        at(0.99),
        at(0.999),
        samples[samples.len() - 1],
        samples.len()
    )
}
