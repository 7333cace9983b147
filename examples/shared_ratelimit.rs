//! What shared rate limits cost per check, against a real Redis: three limits (per principal,
//! per principal and action, global) kept locally and then in Redis, checked by 32 (or TASKS)
//! concurrent tasks; reports checks per second, p50/p99 latency per check, and Redis round trips
//! (`INFO commandstats`: `evalsha` calls) per check.
//!
//! ```sh
//! redis-server --port 6379 --save "" --appendonly no --daemonize yes
//! cargo run --release --example shared_ratelimit -- redis://127.0.0.1:6379 200000 [TASKS]
//! ```
//!
//! It measures the limiter alone (no HTTP); `bench/` with
//! `benches/keygate-bench-shared-limits.toml` measures the whole request path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate::model::Action;
use keygate::ratelimit::{RateLimitConfig, RateLimiter, Subject};

/// Concurrent callers by default: enough to fill the multiplexed connection's pipeline.
const TASKS: usize = 32;

const LIMITS: &str = r#"
[[limits]]
id = "per-caller"
key = "principal"
quota = { per = "1s", requests = 1000000 }
[[limits]]
id = "creates"
key = "principal_action"
actions = ["CreateApiKey"]
quota = { per = "1s", requests = 1000000 }
[[limits]]
id = "org-budget"
key = "global"
quota = { per = "1s", requests = 1000000 }
"#;

fn evalsha_calls(url: &str) -> u64 {
    let Ok(mut connection) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return 0;
    };
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut connection)
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn run(
    name: &str,
    limiter: Arc<RateLimiter>,
    total: usize,
    tasks_n: usize,
) -> (f64, Duration, Duration) {
    let per_task = total / tasks_n;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..tasks_n {
        let limiter = limiter.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("sa-bench-{t}");
            let who = Subject::Principal {
                id: &id,
                groups: &[],
            };
            let mut latencies = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let one = Instant::now();
                if let Err(err) = limiter.admit(&who, Some(Action::CreateApiKey)).await {
                    eprintln!("refused: {err}");
                }
                latencies.push(one.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(total);
    for task in tasks {
        all.extend(task.await.unwrap_or_default());
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    let rate = all.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{name:>6}: {rate:>9.0} checks/s  p50 {:>8.1?}  p99 {:>8.1?}",
        pct(0.50),
        pct(0.99)
    );
    (rate, pct(0.50), pct(0.99))
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let total: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let tasks: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(TASKS)
        .max(1);

    let local = RateLimitConfig::from_toml(LIMITS).unwrap_or_else(|e| panic!("{e}"));
    let shared = RateLimitConfig::from_toml(&format!(
        "[shared]\nurl = \"{url}\"\nall = true\ncommand_timeout = \"1s\"\n{LIMITS}"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let shared = Arc::new(RateLimiter::new(&shared));
    if let Some(store) = shared.shared_store() {
        if let Err(err) = store.probe().await {
            eprintln!("{url}: {err}");
            std::process::exit(1);
        }
    }

    let (local_rate, _, local_p99) =
        run("local", Arc::new(RateLimiter::new(&local)), total, tasks).await;
    let before = evalsha_calls(&url);
    let (shared_rate, _, shared_p99) = run("shared", shared, total, tasks).await;
    let calls = evalsha_calls(&url) - before;
    let checks = (total / tasks * tasks) as f64;
    println!(
        "shared/local throughput {:.2}x, p99 added {:?}, Redis round trips (EVALSHA) per check {:.3}",
        shared_rate / local_rate,
        shared_p99.saturating_sub(local_p99),
        calls as f64 / checks
    );
}
