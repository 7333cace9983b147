//! The shared store without a Redis: configuration, keys, and what limits do when nothing answers
//! (a loopback port nobody listens on). The script itself runs against real `redis-server`s in
//! the integration tests (`tests/integration/shared_limits.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::config::Secrets;
use crate::ratelimit::RateLimitError;
use crate::ratelimit::{RateLimitConfig, RateLimiter, RawRateLimitConfig, Rejected};

fn parse(text: &str) -> Result<RateLimitConfig, RateLimitError> {
    RateLimitConfig::from_toml(text)
}

fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

fn with_env(text: &str, env: &HashMap<String, String>) -> Result<RateLimitConfig, RateLimitError> {
    let raw: RawRateLimitConfig = toml::from_str(text).unwrap();
    RateLimitConfig::validate(raw, Path::new(""), Secrets::Read(env))
}

/// A port on loopback where nothing listens: bound, then closed.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn shared_section(port: u16) -> String {
    format!(
        r#"
[shared]
url = "redis://127.0.0.1:{port}"
connect_timeout = "200ms"
command_timeout = "200ms"
probe_interval = "1h"
"#
    )
}

// === configuration ===

#[test]
fn shared_limit_needs_the_shared_section() {
    let message = error(
        r#"
[[limits]]
id = "creates"
key = "principal"
quota = { per = "1h", requests = 10 }
shared = true
"#,
    );
    assert!(message.contains("`creates`"), "{message}");
    assert!(message.contains("[ratelimit.shared]"), "{message}");
}

#[test]
fn on_unavailable_is_only_for_shared_limits_and_must_be_known() {
    let local = error(
        r#"
[[limits]]
id = "creates"
key = "principal"
quota = { per = "1h", requests = 10 }
on_unavailable = "deny"
"#,
    );
    assert!(local.contains("only used with `shared = true`"), "{local}");
    let unknown = error(
        r#"
[shared]
url = "redis://127.0.0.1"
[[limits]]
id = "creates"
key = "principal"
quota = { per = "1h", requests = 10 }
shared = true
on_unavailable = "maybe"
"#,
    );
    assert!(
        unknown.contains("unknown on_unavailable `maybe`"),
        "{unknown}"
    );
}

#[test]
fn all_shares_every_limit_that_does_not_opt_out() {
    let config = parse(
        r#"
[shared]
url = "redis://127.0.0.1"
all = true
[[limits]]
id = "a"
key = "principal"
quota = { per = "1h", requests = 10 }
[[limits]]
id = "b"
key = "global"
quota = { per = "1s", requests = 100 }
shared = false
[[limits]]
id = "c"
key = "principal_action"
quota = { per = "1h", requests = 10 }
on_unavailable = "deny"
"#,
    )
    .unwrap();
    assert_eq!(config.shared_limit_ids().collect::<Vec<_>>(), ["a", "c"]);
    let modes: Vec<Option<OnUnavailable>> = config.limits.iter().map(|l| l.shared).collect();
    assert_eq!(
        modes,
        [Some(OnUnavailable::Local), None, Some(OnUnavailable::Deny)]
    );
}

#[test]
fn defaults_are_short_timeouts_and_the_keygate_prefix() {
    let config = parse("[shared]\nurl = \"redis://cache.internal\"\n").unwrap();
    let shared = config.shared().unwrap();
    assert_eq!(shared.command_timeout, Duration::from_millis(50));
    assert_eq!(shared.connect_timeout, Duration::from_millis(50));
    assert_eq!(shared.probe_interval, Duration::from_secs(1));
    assert_eq!(shared.key_stem(), "{keygate}:");
    assert!(!shared.all());
}

#[test]
fn url_must_be_redis_without_credentials_or_query() {
    for (url, expected) in [
        ("http://cache:6379", "must start with redis:// or rediss://"),
        ("redis://cache:6379/zero", "database number"),
        ("redis://cache:6379/0?protocol=resp3", "query parameters"),
    ] {
        let message = error(&format!("[shared]\nurl = \"{url}\"\n"));
        assert!(message.contains(expected), "{url}: {message}");
        assert!(message.starts_with("`ratelimit.shared.url`"), "{message}");
    }
    let message = error("[shared]\nurl = \"redis://keygate:hunter2@cache:6379\"\n");
    assert!(message.contains("credentials in the URL"), "{message}");
    assert!(
        !message.contains("hunter2"),
        "the password was echoed: {message}"
    );
    let missing = error("[shared]\nall = true\n");
    assert!(
        missing.contains("`ratelimit.shared.url`: required"),
        "{missing}"
    );
}

#[test]
fn ca_file_is_for_tls_only_and_must_hold_certificates() {
    let message = error("[shared]\nurl = \"redis://cache\"\nca_file = \"ca.pem\"\n");
    assert!(message.contains("rediss://"), "{message}");
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let message = error(&format!(
        "[shared]\nurl = \"rediss://cache\"\nca_file = \"{}\"\n",
        empty.display()
    ));
    assert!(message.contains("holds no PEM certificate"), "{message}");
}

#[test]
fn key_prefix_cannot_break_the_hash_tag() {
    for prefix in ["", "a{b", "a}b", "white space"] {
        let message = error(&format!(
            "[shared]\nurl = \"redis://cache\"\nkey_prefix = \"{prefix}\"\n"
        ));
        assert!(message.contains("key_prefix"), "{prefix}: {message}");
    }
}

#[test]
fn credentials_come_from_env_or_file_and_never_show() {
    let text = r#"
[shared]
url = "redis://cache"
username = { env = "REDIS_USER" }
password = { env = "REDIS_PASSWORD" }
"#;
    let env: HashMap<String, String> = [
        ("REDIS_USER".to_string(), "keygate".to_string()),
        ("REDIS_PASSWORD".to_string(), "s3cret-canary".to_string()),
    ]
    .into();
    let config = with_env(text, &env).unwrap();
    let shared = config.shared().unwrap();
    assert!(!format!("{config:?}").contains("s3cret-canary"));
    let client = shared.client().unwrap();
    assert!(!format!("{client:?}").contains("s3cret-canary"));
    assert_eq!(
        client.get_connection_info().redis_settings().password(),
        Some("s3cret-canary")
    );

    let missing = with_env(text, &HashMap::new()).unwrap_err().to_string();
    assert!(missing.contains("`REDIS_USER` is not set"), "{missing}");
    // Not reading secrets (check, reload) only needs them configured.
    assert!(parse(text).is_ok());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let config = with_env(
        &format!(
            "[shared]\nurl = \"redis://cache\"\npassword = {{ file = \"{}\" }}\n",
            file.display()
        ),
        &HashMap::new(),
    )
    .unwrap();
    let client = config.shared().unwrap().client().unwrap();
    assert_eq!(
        client.get_connection_info().redis_settings().password(),
        Some("from-a-file")
    );

    let both =
        error("[shared]\nurl = \"redis://cache\"\npassword = { env = \"A\", file = \"b\" }\n");
    assert!(both.contains("either `env` or `file`"), "{both}");
    let username_only = error("[shared]\nurl = \"redis://cache\"\nusername = { env = \"A\" }\n");
    assert!(username_only.contains("needs a"), "{username_only}");
}

#[test]
fn quotas_finer_than_a_microsecond_cannot_be_shared() {
    let message = error(
        r#"
[shared]
url = "redis://cache"
[[limits]]
id = "fast"
key = "global"
quota = { per = "1s", requests = 2000000 }
shared = true
"#,
    );
    assert!(message.contains("cannot be shared"), "{message}");
}

// === keys ===

#[test]
fn keys_carry_the_hash_tag_limit_quota_and_subject() {
    let config = parse(
        r#"
[shared]
url = "redis://cache"
key_prefix = "kg"
all = true
[[limits]]
id = "creates"
key = "principal_action"
quota = { per = "1h", requests = 10 }
[[limits]]
id = "per-caller"
key = "principal"
quota = { per = "1m", requests = 7, burst = 2 }
[[limits]]
id = "org"
key = "global"
quota = { per = "1s", requests = 50 }
"#,
    )
    .unwrap();
    let store = SharedStore::new(config.shared().unwrap());
    let key = |i: usize, who: &Subject<'_>, action| {
        let spec = &config.limits[i];
        let mut key = String::new();
        SharedLimit::new(&store, spec).write_key(&mut key, spec.kind, who, action);
        key
    };
    let alice = Subject::Principal {
        id: "u-alice",
        groups: &[],
    };
    assert_eq!(
        key(0, &alice, Some(Action::CreateApiKey)),
        "{kg}:creates:360000000x10:pa:CreateApiKey:p:u-alice"
    );
    // 7 per minute: 8571428.57 µs, rounded up.
    assert_eq!(key(1, &alice, None), "{kg}:per-caller:8571429x2:p:u-alice");
    assert_eq!(key(2, &alice, None), "{kg}:org:20000x50:g");
    let v4 = Subject::Address("192.0.2.7".parse().unwrap());
    assert_eq!(key(1, &v4, None), "{kg}:per-caller:8571429x2:a4:192.0.2.7");
    let mapped = Subject::Address("::ffff:192.0.2.7".parse().unwrap());
    assert_eq!(key(1, &mapped, None), key(1, &v4, None));
    let v6a = Subject::Address("2001:db8:1:2::1".parse().unwrap());
    let v6b = Subject::Address("2001:db8:1:2:ffff::9".parse().unwrap());
    assert_eq!(
        key(1, &v6a, None),
        "{kg}:per-caller:8571429x2:a6:20010db800010002"
    );
    assert_eq!(key(1, &v6a, None), key(1, &v6b, None));
}

#[test]
fn micros_round_up() {
    assert_eq!(micros(Duration::from_nanos(1)), 1);
    assert_eq!(micros(Duration::from_nanos(1000)), 1);
    assert_eq!(micros(Duration::from_nanos(1001)), 2);
    assert_eq!(micros(Duration::from_secs(3)), 3_000_000);
}

// === without an answering store ===

fn limiter(port: u16, limits: &str) -> RateLimiter {
    let config = parse(&format!("{}{limits}", shared_section(port))).unwrap();
    RateLimiter::new(&config)
}

fn alice() -> Subject<'static> {
    Subject::Principal {
        id: "u-alice",
        groups: &[],
    }
}

#[tokio::test]
async fn unreachable_store_falls_back_per_limit_and_opens_the_circuit() {
    let limiter = limiter(
        closed_port(),
        r#"
[[limits]]
id = "local-fallback"
key = "principal_action"
actions = ["ListApiKeys"]
quota = { per = "1h", requests = 2 }
shared = true
[[limits]]
id = "allow-fallback"
key = "principal_action"
actions = ["GetApiKey"]
quota = { per = "1h", requests = 1 }
shared = true
on_unavailable = "allow"
[[limits]]
id = "deny-fallback"
key = "principal_action"
actions = ["CreateApiKey"]
quota = { per = "1h", requests = 100 }
shared = true
on_unavailable = "deny"
"#,
    );
    let store = limiter.shared_store().unwrap().clone();
    assert!(store.is_usable());
    let started = Instant::now();
    // The first check finds nobody listening and opens the circuit...
    let first = limiter.admit(&alice(), Some(Action::ListApiKeys)).await;
    assert_eq!(first, Ok(()));
    assert!(!store.is_usable(), "the circuit did not open");
    assert_eq!(store.up_gauge().get(), 0);
    // ...after which the local bucket decides: 2 per hour, one already spent.
    assert_eq!(
        limiter.admit(&alice(), Some(Action::ListApiKeys)).await,
        Ok(())
    );
    let refused = limiter
        .admit(&alice(), Some(Action::ListApiKeys))
        .await
        .unwrap_err();
    assert!(matches!(&refused, Rejected::Limited(r) if r.limit_id() == "local-fallback"));

    for _ in 0..5 {
        assert_eq!(
            limiter.admit(&alice(), Some(Action::GetApiKey)).await,
            Ok(())
        );
    }
    let denied = limiter
        .admit(&alice(), Some(Action::CreateApiKey))
        .await
        .unwrap_err();
    match denied {
        Rejected::Unavailable(u) => {
            assert_eq!(u.limit_id(), "deny-fallback");
            assert_eq!(
                u.retry_after_secs(),
                3600,
                "Retry-After is the probe interval"
            );
        }
        other => panic!("expected 503, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "nothing waited for the store: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_real_limit_refusal_wins_over_an_unavailable_deny_limit() {
    let limiter = limiter(
        closed_port(),
        r#"
[[limits]]
id = "local-only"
key = "principal"
quota = { per = "1h", requests = 1 }
[[limits]]
id = "deny-fallback"
key = "principal_action"
quota = { per = "1h", requests = 100 }
shared = true
on_unavailable = "deny"
"#,
    );
    let first = limiter.admit(&alice(), Some(Action::CreateApiKey)).await;
    assert!(matches!(first, Err(Rejected::Unavailable(_))), "{first:?}");
    // The 503 charged nothing locally: the local limit still has its token.
    let again = limiter.admit(&alice(), Some(Action::CreateApiKey)).await;
    assert!(matches!(again, Err(Rejected::Unavailable(_))), "{again:?}");
    limiter.check(&alice(), None).unwrap();
    let limited = limiter.admit(&alice(), Some(Action::CreateApiKey)).await;
    assert!(
        matches!(&limited, Err(Rejected::Limited(r)) if r.limit_id() == "local-only"),
        "{limited:?}"
    );
}

#[tokio::test]
async fn local_limits_alone_never_touch_the_store() {
    let limiter = limiter(
        closed_port(),
        r#"
[[limits]]
id = "local-only"
key = "principal"
quota = { per = "1h", requests = 1 }
"#,
    );
    assert!(!limiter.has_shared_limits());
    assert_eq!(limiter.admit(&alice(), None).await, Ok(()));
    assert!(matches!(
        limiter.admit(&alice(), None).await,
        Err(Rejected::Limited(_))
    ));
    let store = limiter.shared_store().unwrap();
    assert!(
        store.is_usable() && !store.is_up(),
        "the store was contacted"
    );
}

#[tokio::test]
async fn probe_fails_fast_against_a_closed_port() {
    let config = parse(&shared_section(closed_port())).unwrap();
    let store = SharedStore::new(config.shared().unwrap());
    let started = Instant::now();
    assert!(store.probe().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn reconfigure_keeps_the_store() {
    let limiter = limiter(
        closed_port(),
        r#"
[[limits]]
id = "a"
key = "principal"
quota = { per = "1h", requests = 1 }
shared = true
"#,
    );
    let next = limiter.reconfigure(&parse(&shared_section(1)).unwrap());
    assert!(std::sync::Arc::ptr_eq(
        &limiter.shared_store().unwrap().inner,
        &next.shared_store().unwrap().inner
    ));
    assert!(!next.has_shared_limits());
}
