//! Shared rate limits against real `redis-server`s (one per test, see `support/redis.rs`): one
//! budget across keygate instances, one script call per governed request, each `on_unavailable`
//! mode while Redis is gone or slow, recovery, `SCRIPT FLUSH`, key expiry, reloads, credentials,
//! TLS, the log lines and `keygate check`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use keygate::Gateway;

use crate::support::binary;
use crate::support::governed::{metric, poll_until};
use crate::support::redis::{DelayRelay, RedisServer};
use crate::support::sim::Sim;
use crate::support::{self, within, Collected};

const UP: &str = "keygate_ratelimit_shared_up";

/// `[ratelimit.shared]` for `url`, with generous timeouts (a loaded test machine must not trip
/// the breaker where a test counts exactly) and a short probe interval, then `limits`.
fn shared(url: &str, limits: &str) -> String {
    format!(
        r#"
[ratelimit.shared]
url = "{url}"
connect_timeout = "2s"
command_timeout = "2s"
probe_interval = "100ms"
{limits}
"#
    )
}

async fn start(sim: &Sim, extra: &str) -> Gateway {
    support::start(support::config(&sim.url(), extra)).await
}

async fn create(gw: &Gateway, auth: &str) -> Collected {
    let body = r#"{"spec":{"owner":{"id":"sa-orders"},"resource":{"id":"lkc-prod01"}}}"#;
    let request = Request::post(format!("http://{}/iam/v2/api-keys", gw.local_addr()))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    within(10, support::send(&support::client(), request)).await
}

async fn list(gw: &Gateway, auth: &str) -> Collected {
    let request = Request::get(format!("http://{}/iam/v2/api-keys", gw.local_addr()))
        .header("authorization", auth)
        .body(Full::default())
        .unwrap();
    within(10, support::send(&support::client(), request)).await
}

/// Waits until the gauge says `up` (the start-up probe runs in the background).
async fn wait_up(gw: &Gateway, up: bool) {
    let want = if up { 1.0 } else { 0.0 };
    poll_until(
        Duration::from_secs(10),
        "keygate_ratelimit_shared_up",
        || async { (metric(gw.admin_addr(), UP).await == want).then_some(()) },
    )
    .await;
}

fn header(response: &Collected, name: &str) -> u64 {
    response.headers[name]
        .to_str()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{name}: {:?}", response.headers[name]))
}

fn assert_limited(response: &Collected, limit_id: &str, limit: u64) {
    assert_eq!(response.status, 429, "{:?}", response.body);
    let error = response.error();
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(error["meta"]["limit_id"], limit_id, "{error}");
    let retry = header(response, "retry-after");
    assert!((1..=3600).contains(&retry), "retry-after {retry}");
    assert_eq!(header(response, "x-ratelimit-limit"), limit);
    assert_eq!(header(response, "x-ratelimit-remaining"), 0);
    assert!(header(response, "x-ratelimit-reset") >= retry);
}

#[tokio::test]
async fn two_instances_enforce_one_combined_limit_with_one_script_call_per_request() {
    let redis = RedisServer::start();
    let sim = Sim::start().await;
    let limits = shared(
        &redis.url(),
        r#"
all = true
[[ratelimit.limits]]
id = "creates"
key = "principal_action"
actions = ["CreateApiKey"]
quota = { per = "1h", requests = 10 }
[[ratelimit.limits]]
id = "org"
key = "global"
quota = { per = "1h", requests = 15 }
"#,
    );
    let a = start(&sim, &limits).await;
    let b = start(&sim, &limits).await;
    wait_up(&a, true).await;
    wait_up(&b, true).await;
    let evalsha_before = redis.calls("evalsha");

    let alice = sim.basic("u-alice");
    let mut passed = 0;
    for i in 0..14 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let response = create(gw, &alice).await;
        if response.status == 202 {
            passed += 1;
        } else {
            assert_limited(&response, "creates", 10);
        }
    }
    assert_eq!(
        passed, 10,
        "10 creates per hour for alice across both instances"
    );

    // The global budget (15) holds across both too: bob gets the 5 that are left.
    let bob = sim.basic("u-bob");
    let mut bob_passed = 0;
    for i in 0..8 {
        let gw = if i % 2 == 0 { &b } else { &a };
        let response = create(gw, &bob).await;
        if response.status == 202 {
            bob_passed += 1;
        } else {
            assert_limited(&response, "org", 15);
        }
    }
    assert_eq!(bob_passed, 5);
    let forwarded = sim
        .received("/iam/v2/api-keys")
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(forwarded, 15, "refused creates were forwarded");

    // One round trip per governed request: one EVALSHA each, allowed or refused.
    assert_eq!(redis.calls("evalsha") - evalsha_before, 22);
    assert_eq!(
        redis.calls("eval"),
        0,
        "the script is never sent whole per request"
    );
    let text = support::metrics_text(&a).await;
    assert!(text.contains("keygate_ratelimit_shared_up 1"), "{text}");
}

#[tokio::test]
async fn redis_killed_then_restarted_each_mode_as_configured_and_shared_again() {
    let mut redis = RedisServer::start();
    let sim = Sim::start().await;
    let limits = shared(
        &redis.url(),
        r#"
[[ratelimit.limits]]
id = "creates-deny"
key = "principal_action"
actions = ["CreateApiKey"]
quota = { per = "1h", requests = 100 }
shared = true
on_unavailable = "deny"
[[ratelimit.limits]]
id = "lists-local"
key = "principal_action"
actions = ["ListApiKeys"]
match = { principals = ["u-alice"] }
quota = { per = "1h", requests = 2 }
shared = true
[[ratelimit.limits]]
id = "reads-allow"
key = "principal"
match = { principals = ["u-bob"] }
quota = { per = "1h", requests = 1 }
shared = true
on_unavailable = "allow"
"#,
    );
    let gw = start(&sim, &limits).await;
    wait_up(&gw, true).await;
    let alice = sim.basic("u-alice");
    let bob = sim.basic("u-bob");
    assert_eq!(create(&gw, &alice).await.status, 202);
    assert_eq!(list(&gw, &alice).await.status, 200);
    assert_eq!(list(&gw, &bob).await.status, 200);
    assert_limited(&list(&gw, &bob).await, "reads-allow", 1);
    assert!(
        !redis.scan("{keygate}:*").is_empty(),
        "the shared limits keep their buckets in Redis"
    );

    redis.kill();
    let mut slowest = Duration::ZERO;
    let mut timed = |started: Instant| slowest = slowest.max(started.elapsed());

    // deny: 503 with a clear detail, never a 429.
    let started = Instant::now();
    let denied = create(&gw, &alice).await;
    timed(started);
    assert_eq!(denied.status, 503, "{:?}", denied.body);
    let error = denied.error();
    assert_eq!(error["code"], "ratelimit_unavailable");
    assert_eq!(error["meta"]["limit_id"], "creates-deny");
    let detail = error["detail"].as_str().unwrap();
    assert!(
        detail.contains("`creates-deny`") && detail.contains("unavailable"),
        "{detail}"
    );
    assert_eq!(header(&denied, "retry-after"), 1);
    assert!(denied.headers.get("x-ratelimit-limit").is_none());
    wait_up(&gw, false).await;

    // local: this replica's own bucket (2 per hour, untouched so far).
    for _ in 0..2 {
        let started = Instant::now();
        assert_eq!(list(&gw, &alice).await.status, 200);
        timed(started);
    }
    assert_limited(&list(&gw, &alice).await, "lists-local", 2);
    // allow: bob's exhausted shared limit no longer applies.
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(list(&gw, &bob).await.status, 200);
        timed(started);
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a request waited for the dead Redis: {slowest:?}"
    );
    // /readyz stays ready.
    let ready = support::get(&support::url(gw.admin_addr(), "/readyz")).await;
    assert_eq!(ready.status, 200);

    // Restarted (empty, as without persistence): shared again within a few probe intervals.
    redis.restart();
    let restarted = Instant::now();
    wait_up(&gw, true).await;
    assert!(
        restarted.elapsed() < Duration::from_secs(5),
        "{:?}",
        restarted.elapsed()
    );
    assert_eq!(create(&gw, &alice).await.status, 202);
    // The shared bucket is back in charge (Redis forgot the earlier lists): 2 more, then 429.
    assert_eq!(list(&gw, &alice).await.status, 200);
    assert_eq!(list(&gw, &alice).await.status, 200);
    assert_limited(&list(&gw, &alice).await, "lists-local", 2);
    let keys = redis.scan("{keygate}:lists-local:*");
    assert_eq!(keys.len(), 1, "{keys:?}");
}

#[tokio::test]
async fn script_flush_reloads_the_script_without_a_failure() {
    let redis = RedisServer::start();
    let sim = Sim::start().await;
    let limits = shared(
        &redis.url(),
        r#"
[[ratelimit.limits]]
id = "lists"
key = "principal"
quota = { per = "1h", requests = 8 }
shared = true
on_unavailable = "deny"
"#,
    );
    let gw = start(&sim, &limits).await;
    wait_up(&gw, true).await;
    let alice = sim.basic("u-alice");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(list(&gw, &alice).await.status.as_u16());
    }
    let loads_before = redis.calls("script|load");
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut redis.connection())
        .unwrap();
    for _ in 0..6 {
        statuses.push(list(&gw, &alice).await.status.as_u16());
    }
    // A failure would have been a 503 (deny); the count ran on across the flush.
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 200, 429, 429]);
    assert_eq!(
        redis.calls("script|load") - loads_before,
        1,
        "loaded once again"
    );
    assert_eq!(metric(gw.admin_addr(), UP).await, 1.0);
}

#[tokio::test]
async fn slow_redis_costs_at_most_the_timeout_and_opens_the_circuit_until_it_is_fast_again() {
    let redis = RedisServer::start();
    let relay = DelayRelay::start(redis.addr()).await;
    let sim = Sim::start().await;
    let limits = format!(
        r#"
[ratelimit.shared]
url = "{}"
connect_timeout = "1s"
command_timeout = "100ms"
probe_interval = "200ms"
[[ratelimit.limits]]
id = "lists"
key = "principal"
quota = {{ per = "1h", requests = 100 }}
shared = true
"#,
        relay.url()
    );
    let gw = start(&sim, &limits).await;
    wait_up(&gw, true).await;
    let alice = sim.basic("u-alice");
    assert_eq!(list(&gw, &alice).await.status, 200);

    relay.set_delay(Duration::from_secs(3));
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(list(&gw, &alice).await.status, 200, "local fallback");
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1500),
            "a request waited for the slow Redis: {took:?}"
        );
    }
    wait_up(&gw, false).await;

    relay.set_delay(Duration::ZERO);
    // Answers held back before the change still drain at the old pace; then probes succeed.
    wait_up(&gw, true).await;
    assert_eq!(list(&gw, &alice).await.status, 200);
}

#[tokio::test]
async fn every_key_expires_once_its_bucket_is_full_again() {
    let redis = RedisServer::start();
    let sim = Sim::start().await;
    let limits = shared(
        &redis.url(),
        r#"
all = true
[[ratelimit.limits]]
id = "per-caller"
key = "principal"
quota = { per = "2s", requests = 2 }
[[ratelimit.limits]]
id = "per-action"
key = "principal_action"
quota = { per = "2s", requests = 4 }
[[ratelimit.limits]]
id = "org"
key = "global"
quota = { per = "1m", requests = 60 }
"#,
    );
    let gw = start(&sim, &limits).await;
    wait_up(&gw, true).await;
    let alice = sim.basic("u-alice");
    assert_eq!(list(&gw, &alice).await.status, 200);
    assert_eq!(list(&gw, &alice).await.status, 200);
    assert_limited(&list(&gw, &alice).await, "per-caller", 2);

    let keys = redis.scan("{keygate}:*");
    assert_eq!(
        keys,
        [
            "{keygate}:org:1000000x60:g",
            "{keygate}:per-action:500000x4:pa:ListApiKeys:p:u-alice",
            "{keygate}:per-caller:1000000x2:p:u-alice",
        ]
    );
    let mut connection = redis.connection();
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut connection).unwrap();
        assert!(
            (1..=2000).contains(&ttl),
            "{key}: PTTL {ttl} is not its refill time"
        );
    }
    // After the longest refill period (2 s), no key of the limiter is left.
    let started = Instant::now();
    poll_until(Duration::from_secs(10), "keys expire", || async {
        redis.scan("{keygate}:*").is_empty().then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn reload_under_load_keeps_shared_counts_next_to_local_limits() {
    let redis = RedisServer::start();
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keygate.toml");
    let base = format!(
        r#"
[listener]
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
[upstream]
url = "{}"
{}
"#,
        sim.url(),
        support::file_authz_for_file()
    );
    let limits = |lists: u32| {
        shared(
            &redis.url(),
            &format!(
                r#"
[[ratelimit.limits]]
id = "creates"
key = "principal_action"
actions = ["CreateApiKey"]
quota = {{ per = "1h", requests = 10 }}
shared = true
[[ratelimit.limits]]
id = "lists"
key = "principal_action"
actions = ["ListApiKeys"]
quota = {{ per = "1h", requests = {lists} }}
"#
            ),
        )
    };
    std::fs::write(&file, format!("{base}{}", limits(3))).unwrap();
    let gw = support::start(keygate::config::Config::load(&file).unwrap()).await;
    wait_up(&gw, true).await;
    let alice = sim.basic("u-alice");
    for _ in 0..4 {
        assert_eq!(create(&gw, &alice).await.status, 202);
    }
    for _ in 0..3 {
        assert_eq!(list(&gw, &alice).await.status, 200);
    }
    assert_limited(&list(&gw, &alice).await, "lists", 3);

    // Load from another caller while the limits are reloaded (the local one changes).
    let load = {
        let base = format!("http://{}", gw.local_addr());
        let auth = sim.basic("u-bob");
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..40 {
                let request = Request::get(format!("{base}/iam/v2/api-keys"))
                    .header("authorization", &auth)
                    .body(Full::default())
                    .unwrap();
                statuses.push(support::send(&support::client(), request).await.status);
            }
            statuses
        })
    };
    std::fs::write(&file, format!("{base}{}", limits(5))).unwrap();
    within(10, gw.reload()).await.unwrap();
    let statuses = within(30, load).await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );

    // The shared count survived the reload: 6 more creates, then 429.
    for _ in 0..6 {
        assert_eq!(create(&gw, &alice).await.status, 202);
    }
    assert_limited(&create(&gw, &alice).await, "creates", 10);
    // The changed local limit starts afresh with its new quota.
    for _ in 0..5 {
        assert_eq!(list(&gw, &alice).await.status, 200);
    }
    assert_limited(&list(&gw, &alice).await, "lists", 5);
}

#[tokio::test]
async fn password_from_the_environment_authenticates_and_a_wrong_one_is_unavailable() {
    let redis = RedisServer::start_with(&["--requirepass", "redis-canary-pw"]);
    let sim = Sim::start().await;
    let limits = shared(
        &redis.url(),
        r#"
password = { env = "TEST_REDIS_PASSWORD" }
[[ratelimit.limits]]
id = "lists"
key = "principal"
quota = { per = "1h", requests = 1 }
shared = true
on_unavailable = "deny"
"#,
    );
    let env: HashMap<String, String> =
        [("TEST_REDIS_PASSWORD".into(), "redis-canary-pw".into())].into();
    let gw = support::start(support::config_with_env(&sim.url(), &limits, &env)).await;
    wait_up(&gw, true).await;
    let alice = sim.basic("u-alice");
    assert_eq!(list(&gw, &alice).await.status, 200);
    assert_limited(&list(&gw, &alice).await, "lists", 1);

    let wrong: HashMap<String, String> =
        [("TEST_REDIS_PASSWORD".into(), "not-the-password".into())].into();
    let gw = support::start(support::config_with_env(&sim.url(), &limits, &wrong)).await;
    wait_up(&gw, false).await;
    let refused = list(&gw, &alice).await;
    assert_eq!(refused.status, 503);
    assert!(!String::from_utf8_lossy(&refused.body).contains("not-the-password"));
}

#[tokio::test]
async fn rediss_goes_through_rustls_with_the_configured_ca() {
    let pki = support::certs::TestPki::new();
    let (cert, key, ca) = (pki.cert_file(), pki.key_file(), pki.ca_file());
    let redis = RedisServer::start_with(&[
        "--port",
        "0",
        "--tls-port",
        "{port}",
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ]);
    let sim = Sim::start().await;
    let limits = |url: String, ca: &str| {
        shared(
            &url,
            &format!(
                r#"
{ca}
[[ratelimit.limits]]
id = "lists"
key = "principal"
quota = {{ per = "1h", requests = 1 }}
shared = true
on_unavailable = "deny"
"#
            ),
        )
    };
    let url = format!("rediss://127.0.0.1:{}", redis.port());
    let ca_line = format!("ca_file = \"{}\"", ca.display());
    let gw = start(&sim, &limits(url.clone(), &ca_line)).await;
    wait_up(&gw, true).await;
    let alice = sim.basic("u-alice");
    assert_eq!(list(&gw, &alice).await.status, 200);
    assert_limited(&list(&gw, &alice).await, "lists", 1);

    // Without the CA the server's certificate is not trusted: unavailable, fail closed.
    let untrusted = start(&sim, &limits(url, "")).await;
    wait_up(&untrusted, false).await;
    assert_eq!(list(&untrusted, &alice).await.status, 503);
}

/// A config file for the real binary, with `[ratelimit]` from [`shared`].
fn config_file(dir: &std::path::Path, upstream: &str, ratelimit: &str) -> std::path::PathBuf {
    let file = dir.join("keygate.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[listener]
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
[upstream]
url = "{upstream}"
{}
{ratelimit}
"#,
            support::file_authz_for_file()
        ),
    )
    .unwrap();
    file
}

const ONE_SHARED_LIMIT: &str = r#"
[[ratelimit.limits]]
id = "lists"
key = "principal"
quota = { per = "1h", requests = 100 }
shared = true
"#;

#[tokio::test]
async fn one_log_line_per_state_change_however_many_requests_fall_back() {
    let mut redis = RedisServer::start();
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(
        dir.path(),
        &sim.url(),
        &shared(&redis.url(), ONE_SHARED_LIMIT),
    );
    let mut keygate = binary::spawn(&["serve", "--config", file.to_str().unwrap()]);
    let (listener, admin) = keygate.serve_addresses();
    // The start-up probe may log before the addresses: wait on the gauge, count lines at the end.
    poll_until(Duration::from_secs(10), "shared store up", || async {
        (metric(admin, UP).await == 1.0).then_some(())
    })
    .await;
    let alice = sim.basic("u-alice");
    let get = |auth: String| async move {
        let request = Request::get(format!("http://{listener}/iam/v2/api-keys"))
            .header("authorization", auth)
            .body(Full::default())
            .unwrap();
        within(10, support::send(&support::client(), request))
            .await
            .status
    };
    assert_eq!(get(alice.clone()).await, 200);

    redis.kill();
    for _ in 0..10 {
        assert_eq!(get(alice.clone()).await, 200, "local fallback");
    }
    keygate.wait_stderr("Shared rate limits unavailable");
    redis.restart();
    keygate.wait_stderr("Shared rate limits available again");
    for _ in 0..3 {
        assert_eq!(get(alice.clone()).await, 200);
    }
    keygate.terminate();
    let (_, _, stderr) = keygate.finish();
    let count = |needle: &str| stderr.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("Shared rate limits connected"), 1, "{stderr:#?}");
    assert_eq!(count("Shared rate limits unavailable"), 1, "{stderr:#?}");
    assert_eq!(
        count("Shared rate limits available again"),
        1,
        "{stderr:#?}"
    );
    let down = stderr
        .iter()
        .find(|l| l.contains("Shared rate limits unavailable"))
        .unwrap();
    let line: serde_json::Value = serde_json::from_str(down).unwrap();
    assert_eq!(line["level"], "WARN", "{line}");
}

/// `keygate check [--connect]` on a config with `[ratelimit.shared]`: (exit code, stdout).
fn check(file: &std::path::Path, connect: bool, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"));
    command
        .arg("check")
        .arg("--config")
        .arg(file)
        .envs(env.iter().copied());
    if connect {
        command.arg("--connect");
    }
    let out = command.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn check_validates_the_section_and_connect_pings_redis_and_loads_the_script() {
    let mut redis = RedisServer::start_with(&["--requirepass", "check-canary-pw"]);
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let limits = format!(
        "{}password = {{ env = \"CHECK_REDIS_PASSWORD\" }}\n",
        shared(&redis.url(), "")
    ) + ONE_SHARED_LIMIT;
    let file = config_file(dir.path(), &sim.url(), &limits);

    // Without --connect: validated, nothing contacted, the password not even needed.
    let (code, out) = check(&file, false, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("shared rate limits: lists in redis://127.0.0.1:"),
        "{out}"
    );
    assert!(
        out.contains("environment variable `CHECK_REDIS_PASSWORD`"),
        "{out}"
    );

    let env = [("CHECK_REDIS_PASSWORD", "check-canary-pw")];
    let (code, out) = check(&file, true, &env);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("answered and loaded the limit script"),
        "{out}"
    );
    let mut connection = redis::Client::open(format!(
        "redis://:check-canary-pw@127.0.0.1:{}",
        redis.port()
    ))
    .unwrap()
    .get_connection()
    .unwrap();
    let loaded: Vec<bool> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(redis::Script::new(include_str!("../../src/ratelimit/shared/gcra.lua")).get_hash())
        .query(&mut connection)
        .unwrap();
    assert_eq!(loaded, [true]);

    let (code, out) = check(&file, true, &[("CHECK_REDIS_PASSWORD", "wrong")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        !out.contains("wrong\n") && !out.contains("check-canary-pw"),
        "{out}"
    );
    let (code, out) = check(&file, true, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("`CHECK_REDIS_PASSWORD` is not set"), "{out}");

    redis.kill();
    let (code, out) = check(&file, true, &env);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("shared rate limits: redis://127.0.0.1:"),
        "{out}"
    );

    // A broken section stops check like serve: one line naming the field, exit 78.
    let broken = config_file(
        dir.path(),
        &sim.url(),
        &format!("{}{ONE_SHARED_LIMIT}", shared("http://127.0.0.1:1", "")),
    );
    let (code, out) = check(&broken, false, &[]);
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("`ratelimit.shared.url`"), "{out}");
}
