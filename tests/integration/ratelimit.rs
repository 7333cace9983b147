//! Rate limiting through HTTP: Confluent-shaped 429s, independence of limits, never forwarded,
//! counted; upstream 429s passed through unchanged. (Bucket arithmetic with a fake clock is unit
//! tested in `src/ratelimit/tests.rs`.)

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use keygate::simulator::Fault;

use crate::support::sim::Sim;
use crate::support::{self, within, Collected};

const CREATE_LIMIT: &str = r#"
[[ratelimit.limits]]
id = "creates"
key = "principal_action"
actions = ["CreateApiKey"]
quota = { per = "1h", requests = 2 }
"#;

async fn create(base: &str, auth: &str, owner: &str, resource: &str) -> Collected {
    let body =
        format!(r#"{{"spec":{{"owner":{{"id":"{owner}"}},"resource":{{"id":"{resource}"}}}}}}"#);
    let request = Request::post(format!("{base}/iam/v2/api-keys"))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    within(10, support::send(&support::client(), request)).await
}

async fn get(base: &str, path: &str, auth: &str) -> Collected {
    let request = Request::get(format!("{base}{path}"))
        .header("authorization", auth)
        .body(Full::default())
        .unwrap();
    within(10, support::send(&support::client(), request)).await
}

fn creates_received(sim: &Sim) -> usize {
    sim.received("/iam/v2/api-keys")
        .iter()
        .filter(|r| r.method == "POST")
        .count()
}

#[tokio::test]
async fn burst_then_confluent_shaped_429_never_forwarded() {
    let sim = Sim::start().await;
    let gw = support::start(support::config(&sim.url(), CREATE_LIMIT)).await;
    let base = format!("http://{}", gw.local_addr());
    let alice = sim.basic("u-alice");
    for _ in 0..2 {
        assert_eq!(
            create(&base, &alice, "sa-orders", "lkc-prod01")
                .await
                .status,
            202
        );
    }
    let refused = create(&base, &alice, "sa-orders", "lkc-prod01").await;
    assert_eq!(refused.status, 429);
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(refused.headers["x-ratelimit-limit"], "2");
    assert_eq!(refused.headers["x-ratelimit-remaining"], "0");
    let reset: u64 = refused.headers["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(reset >= retry, "reset {reset} < retry {retry}");
    let error = refused.error();
    assert_eq!(error["status"], "429");
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(error["meta"]["limit_id"], "creates");
    assert!(
        error["detail"].as_str().unwrap().contains("`creates`"),
        "{error}"
    );
    assert_eq!(
        error["id"],
        refused.headers["x-request-id"].to_str().unwrap()
    );
    assert_eq!(
        creates_received(&sim),
        2,
        "the refused create was forwarded"
    );

    let text = support::metrics_text(&gw).await;
    assert!(
        text.contains(r#"keygate_ratelimited_total{limit="creates"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn one_principals_exhaustion_and_one_actions_limit_leave_others_alone() {
    let sim = Sim::start().await;
    let gw = support::start(support::config(&sim.url(), CREATE_LIMIT)).await;
    let base = format!("http://{}", gw.local_addr());
    let alice = sim.basic("u-alice");
    for _ in 0..2 {
        create(&base, &alice, "sa-orders", "lkc-prod01").await;
    }
    assert_eq!(
        create(&base, &alice, "sa-orders", "lkc-prod01")
            .await
            .status,
        429
    );
    // Another principal still has its own bucket.
    let bob = sim.basic("u-bob");
    assert_eq!(
        create(&base, &bob, "sa-orders", "lkc-prod01").await.status,
        202
    );
    // Other actions of the exhausted principal are not limited by the create limit.
    assert_eq!(get(&base, "/iam/v2/api-keys", &alice).await.status, 200);
}

#[tokio::test]
async fn ungoverned_traffic_is_keyed_by_source_address_and_global_limits_everyone() {
    let sim = Sim::start().await;
    let limits = r#"
[[ratelimit.limits]]
id = "per-caller"
key = "principal"
quota = { per = "1h", requests = 3 }
"#;
    let gw = support::start(support::config(&sim.url(), limits)).await;
    let base = format!("http://{}", gw.local_addr());
    let alice = sim.basic("u-alice");
    let dave = sim.basic("u-dave");
    // Ungoverned: the credential is not verified, so both share the loopback address's bucket.
    assert_eq!(get(&base, "/org/v2/environments", &alice).await.status, 200);
    assert_eq!(get(&base, "/org/v2/environments", &dave).await.status, 200);
    assert_eq!(get(&base, "/org/v2/environments", &alice).await.status, 200);
    let refused = get(&base, "/org/v2/environments", &dave).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error()["meta"]["limit_id"], "per-caller");

    let sim2 = Sim::start().await;
    let global = r#"
[[ratelimit.limits]]
id = "org-budget"
key = "global"
quota = { per = "1h", requests = 2 }
"#;
    let gw2 = support::start(support::config(&sim2.url(), global)).await;
    let base2 = format!("http://{}", gw2.local_addr());
    assert_eq!(
        get(&base2, "/iam/v2/api-keys", &sim2.basic("u-alice"))
            .await
            .status,
        200
    );
    assert_eq!(
        get(&base2, "/iam/v2/api-keys", &sim2.basic("u-bob"))
            .await
            .status,
        200
    );
    let refused = get(&base2, "/iam/v2/api-keys", &sim2.basic("u-carol")).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error()["meta"]["limit_id"], "org-budget");
}

#[tokio::test]
async fn group_matched_limit_overrides_the_general_one() {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A static directory gives u-alice the group `platform`.
    let alice = sim.key("u-alice");
    let directory = dir.path().join("keys.toml");
    std::fs::write(
        &directory,
        format!(
            "[[keys]]\nid = \"{}\"\nprincipal = \"u-alice\"\ngroups = [\"platform\"]\nsecret_hash = \"{}\"\n[[keys]]\nid = \"{}\"\nprincipal = \"u-bob\"\nsecret_hash = \"{}\"\n",
            alice.key_id,
            keygate::identity::directory::hash_secret(&alice.secret).unwrap(),
            sim.key("u-bob").key_id,
            keygate::identity::directory::hash_secret(&sim.key("u-bob").secret).unwrap(),
        ),
    )
    .unwrap();
    let extra = format!(
        r#"
[identity]
source = "directory"
directory = "{}"
[[ratelimit.limits]]
id = "reads"
key = "principal_action"
actions = ["ListApiKeys"]
quota = {{ per = "1h", requests = 1 }}
[[ratelimit.limits]]
id = "platform-reads"
key = "principal_action"
actions = ["ListApiKeys"]
match = {{ groups = ["platform"] }}
quota = {{ per = "1h", requests = 3 }}
"#,
        directory.display()
    );
    let gw = support::start(support::config(&sim.url(), &extra)).await;
    let base = format!("http://{}", gw.local_addr());
    let (alice, bob) = (sim.basic("u-alice"), sim.basic("u-bob"));
    assert_eq!(get(&base, "/iam/v2/api-keys", &bob).await.status, 200);
    let refused = get(&base, "/iam/v2/api-keys", &bob).await;
    assert_eq!(refused.error()["meta"]["limit_id"], "reads");
    for _ in 0..3 {
        assert_eq!(get(&base, "/iam/v2/api-keys", &alice).await.status, 200);
    }
    let refused = get(&base, "/iam/v2/api-keys", &alice).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error()["meta"]["limit_id"], "platform-reads");
}

#[tokio::test]
async fn upstream_429_passes_through_unchanged_and_is_counted() {
    let sim = Sim::start().await;
    let gw = support::start(support::config(&sim.url(), "")).await;
    let base = format!("http://{}", gw.local_addr());
    let headers = vec![
        ("retry-after".to_string(), "17".to_string()),
        ("x-ratelimit-limit".to_string(), "25".to_string()),
        ("x-ratelimit-remaining".to_string(), "0".to_string()),
        ("x-ratelimit-reset".to_string(), "17".to_string()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    let body = r#"{"errors":[{"status":"429","detail":"Too Many Requests"}]}"#;
    // Cache alice's identity first, so the fault below hits the list itself, not the lookup.
    assert_eq!(
        get(&base, "/iam/v2/api-keys", &sim.basic("u-alice"))
            .await
            .status,
        200
    );
    for path in ["/org/v2/environments", "/iam/v2/api-keys"] {
        sim.sim.inject_fault(Fault {
            method: None,
            path_prefix: path.to_string(),
            status: 429,
            headers: headers.clone(),
            body: body.to_string(),
            times: 1,
        });
        let response = get(&base, path, &sim.basic("u-alice")).await;
        assert_eq!(response.status, 429, "{path}");
        for (name, value) in &headers {
            assert_eq!(
                response.headers[name.as_str()],
                value.as_str(),
                "{path} {name}"
            );
        }
        assert_eq!(&response.body[..], body.as_bytes());
    }
    let text = support::metrics_text(&gw).await;
    assert!(
        text.contains("keygate_upstream_ratelimited_total 2"),
        "{text}"
    );

    // Confluent rate-limiting the identity lookup (made with the caller's own credential) is the
    // caller's 429, with Confluent's headers.
    sim.sim.inject_fault(Fault {
        method: None,
        path_prefix: "/iam/v2/api-keys/".to_string(),
        status: 429,
        headers: headers.clone(),
        body: body.to_string(),
        times: 1,
    });
    let response = get(&base, "/iam/v2/api-keys", &sim.basic("u-bob")).await;
    assert_eq!(response.status, 429);
    assert_eq!(response.headers["retry-after"], "17");
    assert_eq!(response.headers["x-ratelimit-reset"], "17");
    assert_eq!(response.error()["status"], "429");
}
