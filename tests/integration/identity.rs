//! Identity on governed routes through real HTTP (docs/architecture.md §3): Basic credentials are verified by
//! the upstream with the presented credential, cached by an HMAC of the whole credential (so a
//! wrong secret for a cached key id is looked up again and refused), concurrent misses share one
//! lookup, Bearer is refused on governed routes but untouched elsewhere, and an unreachable
//! upstream is 503, never an allow. Expiry of cache entries is covered with paused time in
//! `src/identity/cache.rs`.

use std::sync::Arc;

use base64::Engine;

use crate::support::governed::{self, assert_keygate_error, metric, API_KEYS};
use crate::support::sim::Sim;
use crate::support::{self, upstream};

const HITS: &str = r#"keygate_identity_resolutions_total{result="hit"}"#;
const MISSES: &str = r#"keygate_identity_resolutions_total{result="miss"}"#;
const FAILURES: &str = r#"keygate_identity_resolutions_total{result="failure"}"#;

/// Identity lookups the simulator received for `key_id` (`GET /iam/v2/api-keys/{key id}`).
fn lookups(sim: &Sim, key_id: &str) -> usize {
    let path = format!("{API_KEYS}/{key_id}");
    sim.sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path_and_query == path)
        .count()
}

fn basic(key_id: &str, secret: &str) -> String {
    let pair = format!("{key_id}:{secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

async fn list(gw: &keygate::Gateway, authorization: &str) -> support::Collected {
    governed::send(governed::request(
        "GET",
        gw.local_addr(),
        API_KEYS,
        Some(authorization),
        Vec::new(),
    ))
    .await
}

fn assert_unauthenticated(response: &support::Collected) -> String {
    let error = assert_keygate_error(response, 401, "user_unauthenticated");
    let challenge = response
        .headers
        .get("www-authenticate")
        .expect("WWW-Authenticate on a 401")
        .to_str()
        .unwrap();
    assert!(challenge.starts_with("Basic "), "{challenge}");
    error["detail"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn second_request_within_the_ttl_is_served_from_the_cache() {
    let sim = Sim::start().await;
    let gw = support::start(support::config(&sim.url(), "")).await;
    let alice = sim.basic("u-alice");
    let key_id = sim.key("u-alice").key_id;

    assert_eq!(list(&gw, &alice).await.status, 200);
    assert_eq!(lookups(&sim, &key_id), 1);
    assert_eq!(list(&gw, &alice).await.status, 200);
    assert_eq!(
        lookups(&sim, &key_id),
        1,
        "the second request looked the key up again"
    );
    assert_eq!(metric(gw.admin_addr(), HITS).await, 1.0);
    assert_eq!(metric(gw.admin_addr(), MISSES).await, 1.0);
    // Both lists were forwarded with the caller's own credential.
    let forwarded: Vec<_> = sim
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path_and_query == API_KEYS)
        .collect();
    assert_eq!(forwarded.len(), 2);
    assert!(forwarded
        .iter()
        .all(|r| r.header_values("authorization") == [alice.as_str()]));
}

#[tokio::test]
async fn wrong_secret_for_a_cached_key_id_is_looked_up_and_401() {
    let sim = Sim::start().await;
    let gw = support::start(support::config(&sim.url(), "")).await;
    let key = sim.key("u-alice");
    let alice = sim.basic("u-alice");
    // Cache the right credential, and use the cache once.
    assert_eq!(list(&gw, &alice).await.status, 200);
    assert_eq!(list(&gw, &alice).await.status, 200);
    assert_eq!(metric(gw.admin_addr(), HITS).await, 1.0);
    assert_eq!(lookups(&sim, &key.key_id), 1);

    let wrong_secret = format!("{}X", &key.secret[..key.secret.len() - 1]);
    let response = list(&gw, &basic(&key.key_id, &wrong_secret)).await;
    let detail = assert_unauthenticated(&response);
    assert!(detail.contains(&key.key_id), "{detail}");
    assert!(!detail.contains(&wrong_secret), "{detail}");
    assert_eq!(
        lookups(&sim, &key.key_id),
        2,
        "the wrong secret was not checked upstream"
    );
    assert_eq!(
        metric(gw.admin_addr(), HITS).await,
        1.0,
        "the wrong secret hit the cache"
    );
    assert_eq!(metric(gw.admin_addr(), FAILURES).await, 1.0);
    // Only the lookup carried the wrong secret; nothing was forwarded with it.
    let lists = sim
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path_and_query == API_KEYS)
        .count();
    assert_eq!(lists, 2);
}

/// On a multi-threaded runtime, as keygate runs in production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_upstream_lookup() {
    const CALLERS: usize = 20;
    let sim = Sim::start().await;
    let gw = support::start(support::config(&sim.url(), "")).await;
    let dave = sim.basic("u-dave");
    let addr = gw.local_addr();
    let start = Arc::new(tokio::sync::Barrier::new(CALLERS));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let dave = dave.clone();
        let start = start.clone();
        tasks.spawn(async move {
            let request = governed::request("GET", addr, API_KEYS, Some(&dave), Vec::new());
            start.wait().await;
            governed::send(request).await.status
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(lookups(&sim, &sim.key("u-dave").key_id), 1);
    let resolved = metric(gw.admin_addr(), HITS).await + metric(gw.admin_addr(), MISSES).await;
    assert_eq!(resolved, CALLERS as f64);
}

#[tokio::test]
async fn bearer_that_is_not_a_session_token_is_401_without_asking_anyone() {
    let sim = Sim::start().await;
    let mut config = support::config(&sim.url(), "");
    config.upstream.web_url = sim.url().parse().unwrap();
    let gw = support::start(config).await;
    // JWT-shaped, but without `exp`: not a Confluent session token.
    let response = list(
        &gw,
        "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1LWFsaWNlIn0.c2ln",
    )
    .await;
    let error = assert_keygate_error(&response, 401, "user_unauthenticated");
    let challenge = response.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    let detail = error["detail"].as_str().unwrap();
    assert!(detail.contains("bearer token"), "{detail}");
    assert!(detail.contains("`exp`"), "{detail}");
    assert!(!detail.contains("eyJ"), "{detail}");
    assert!(
        sim.sim.requests().is_empty(),
        "a Bearer request reached the upstream or the web host"
    );
}

#[tokio::test]
async fn bearer_on_an_ungoverned_route_passes_through_untouched() {
    let sim = Sim::start().await;
    let gw = support::start(support::config(&sim.url(), "")).await;
    let bearer = "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1LWFsaWNlIn0.c2ln";
    let response = governed::send(governed::request(
        "GET",
        gw.local_addr(),
        "/org/v2/environments",
        Some(bearer),
        Vec::new(),
    ))
    .await;
    // The simulator's own answer (it accepts only Basic), passed through.
    assert_eq!(response.status, 401);
    assert_eq!(response.error()["code"], "user_unauthenticated");
    assert_eq!(
        metric(gw.admin_addr(), FAILURES).await,
        0.0,
        "identity ran on an ungoverned route"
    );
    let seen = sim.received("/org/v2/environments");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header_values("authorization"), [bearer]);
}

#[tokio::test]
async fn missing_credential_on_a_governed_route_is_401() {
    let sim = Sim::start().await;
    let gw = support::start(support::config(&sim.url(), "")).await;
    let response = governed::send(governed::request(
        "GET",
        gw.local_addr(),
        API_KEYS,
        None,
        Vec::new(),
    ))
    .await;
    let detail = assert_unauthenticated(&response);
    // keygate's own help text reaches the caller whole: the redactor masks credentials, not the
    // word after `Basic`.
    assert!(
        detail.contains("send `Authorization: Basic base64(key:secret)`"),
        "{detail}"
    );
    assert!(!detail.contains("REDACTED"), "{detail}");
    assert!(sim.sim.requests().is_empty());
}

#[tokio::test]
async fn unknown_key_is_401_after_the_upstream_refused_it() {
    let sim = Sim::start().await;
    let gw = support::start(support::config(&sim.url(), "")).await;
    let response = list(
        &gw,
        &basic(
            "NOSUCHKEY0000001",
            "cfltAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ),
    )
    .await;
    let detail = assert_unauthenticated(&response);
    assert!(detail.contains("NOSUCHKEY0000001"), "{detail}");
    assert_eq!(lookups(&sim, "NOSUCHKEY0000001"), 1);
    assert!(
        sim.received(API_KEYS).len() == 1,
        "the list was forwarded for an unknown key"
    );
}

#[tokio::test]
async fn unreachable_upstream_during_identity_is_503() {
    let closed = upstream::refused().await;
    let gw = support::start(support::config(&format!("http://{closed}"), "")).await;
    let response = list(
        &gw,
        &basic(
            "DEMOALICE0000001",
            "cflt/qL1GO8awy5MBEqYjJVuhDeAW+BMBcfRkr4eJ4wBi17ytg0HjFMQSmoN5UNw",
        ),
    )
    .await;
    let error = assert_keygate_error(&response, 503, "identity_unavailable");
    assert!(response.headers.get("www-authenticate").is_none());
    assert!(
        !error["detail"].as_str().unwrap().contains("cflt"),
        "{error}"
    );
    assert_eq!(metric(gw.admin_addr(), FAILURES).await, 1.0);
}
