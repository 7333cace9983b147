//! Organisational policies (Cedar, layer 2) through the HTTP path: each shipped example policy
//! allows and denies, 403 bodies list every reason with the policy ids in `meta`, dry-run allows
//! and is counted, and the revision is attached to decisions.

use std::collections::HashMap;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;

use crate::support::sim::Sim;
use crate::support::{self, within, Collected};

/// The `[policy]` section `keygate dev` uses (policies/policy.example.toml).
fn policy_section() -> String {
    std::fs::read_to_string("policies/policy.example.toml").unwrap()
}

async fn gateway(sim: &Sim, with_credential: bool) -> keygate::Gateway {
    let mut extra = policy_section();
    let mut env = HashMap::new();
    if with_credential {
        let own = sim.key("sa-keygate");
        env.insert(
            "KG_OWN".to_string(),
            format!("{}:{}", own.key_id, own.secret),
        );
        extra.push_str("\n[upstream.credential]\nenv = \"KG_OWN\"\n");
    }
    support::start(support::config_with_env(&sim.url(), &extra, &env)).await
}

async fn call(
    gw: &keygate::Gateway,
    sim: &Sim,
    who: &str,
    method: Method,
    path: &str,
    body: &str,
) -> Collected {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", gw.local_addr()))
        .header("authorization", sim.basic(who));
    if !body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    within(10, support::send(&support::client(), request)).await
}

/// `POST /iam/v2/api-keys` with `body` as `who`.
async fn create_as(gw: &keygate::Gateway, sim: &Sim, who: &str, body: &str) -> Collected {
    call(gw, sim, who, Method::POST, "/iam/v2/api-keys", body).await
}

fn create(owner: &str, resource: Option<&str>, name: &str, description: &str) -> String {
    let resource = resource
        .map(|r| format!(r#","resource":{{"id":"{r}"}}"#))
        .unwrap_or_default();
    format!(
        r#"{{"spec":{{"display_name":"{name}","description":"{description}","owner":{{"id":"{owner}"}}{resource}}}}}"#
    )
}

fn policy_ids(response: &Collected) -> Vec<String> {
    response.error()["meta"]["rule_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn each_create_policy_allows_and_denies() {
    let sim = Sim::start().await;
    let gw = gateway(&sim, true).await;
    // (who, body, expected status, expected policy id when denied)
    let cases = [
        (
            "u-alice",
            create("sa-orders", Some("lkc-dev01"), "orders-ingest-dev", ""),
            202,
            None,
        ),
        (
            "u-alice",
            create("sa-orders", Some("lkc-dev01"), "Orders Ingest", ""),
            403,
            Some("display-name-convention"),
        ),
        (
            "u-bob",
            create(
                "sa-orders",
                Some("lkc-prod01"),
                "orders-ingest-prod",
                "OPS-42 ingest",
            ),
            202,
            None,
        ),
        (
            "u-bob",
            create(
                "sa-orders",
                Some("lkc-prod01"),
                "orders-ingest-prod",
                "no ticket",
            ),
            403,
            Some("prod-ticket-reference"),
        ),
        (
            "u-bob",
            create(
                "u-bob",
                Some("lkc-prod01"),
                "bob-debug-prod",
                "OPS-7 debugging",
            ),
            403,
            Some("no-user-keys-in-prod"),
        ),
        (
            "u-alice",
            create("u-alice", Some("lkc-dev01"), "alice-debug-dev", ""),
            202,
            None,
        ),
        (
            "u-bob",
            create("sa-orders", None, "orders-admin-prod", ""),
            403,
            Some("org-keys-platform-only"),
        ),
        (
            "u-bob",
            create("sa-orders", Some("global"), "orders-global-prod", ""),
            403,
            Some("org-keys-platform-only"),
        ),
        (
            "u-alice",
            create("sa-payments", None, "payments-admin-prod", ""),
            202,
            None,
        ),
    ];
    for (who, body, status, policy) in cases {
        let response = create_as(&gw, &sim, who, &body).await;
        assert_eq!(response.status, status, "{who} {body}: {:?}", response.body);
        if let Some(policy) = policy {
            let error = response.error();
            assert_eq!(error["code"], "user_unauthorized");
            assert!(
                policy_ids(&response).contains(&policy.to_string()),
                "{error}"
            );
            assert!(
                error["detail"].as_str().unwrap().contains(policy),
                "the detail names the policy: {error}"
            );
        }
    }
}

#[tokio::test]
async fn every_matching_reason_is_listed() {
    let sim = Sim::start().await;
    let gw = gateway(&sim, true).await;
    // A user-owned prod key with a bad name and no ticket breaks three policies at once.
    let body = create("u-bob", Some("lkc-prod01"), "Bad Name", "none");
    let response = create_as(&gw, &sim, "u-bob", &body).await;
    assert_eq!(response.status, 403);
    let ids = policy_ids(&response);
    for id in [
        "display-name-convention",
        "no-user-keys-in-prod",
        "prod-ticket-reference",
    ] {
        assert!(ids.contains(&id.to_string()), "{id} missing from {ids:?}");
    }
    assert!(sim
        .received("/iam/v2/api-keys")
        .iter()
        .all(|r| r.method != "POST"));
}

#[tokio::test]
async fn service_account_key_limit_holds_even_in_a_burst() {
    let sim = Sim::start().await;
    let gw = gateway(&sim, true).await;
    // sa-payments starts with one key; the limit is 3.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let body = create(
            "sa-payments",
            Some("lkc-dev01"),
            &format!("payments-n{i}-dev"),
            "",
        );
        statuses.push(create_as(&gw, &sim, "u-alice", &body).await);
    }
    let codes: Vec<u16> = statuses.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(codes, [202, 202, 403, 403]);
    assert!(policy_ids(&statuses[2]).contains(&"service-account-key-limit".to_string()));
}

#[tokio::test]
async fn unknown_key_count_is_a_dry_run_finding_that_allows_and_is_counted() {
    let sim = Sim::start().await;
    // Without keygate's own credential the owner's key count is unknown.
    let gw = gateway(&sim, false).await;
    let body = create("sa-orders", Some("lkc-dev01"), "orders-ingest-dev", "");
    let response = create_as(&gw, &sim, "u-alice", &body).await;
    assert_eq!(response.status, 202);
    let text = support::metrics_text(&gw).await;
    assert!(
        text.contains(
            r#"keygate_policy_would_deny_total{policy="service-account-key-count-unknown"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn protected_keys_cannot_be_deleted_or_untagged_except_by_the_platform_group() {
    let sim = Sim::start().await;
    let gw = gateway(&sim, true).await;
    let body = create(
        "sa-orders",
        Some("lkc-dev01"),
        "orders-vault-dev",
        "[protected] OPS-9",
    );
    let created = create_as(&gw, &sim, "u-bob", &body).await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_string();
    let path = format!("/iam/v2/api-keys/{id}");

    let deleted = call(&gw, &sim, "u-bob", Method::DELETE, &path, "").await;
    assert_eq!(deleted.status, 403);
    assert!(policy_ids(&deleted).contains(&"protected-key-delete".to_string()));

    let untag = r#"{"spec":{"description":"OPS-9"}}"#;
    let refused = call(&gw, &sim, "u-bob", Method::PATCH, &path, untag).await;
    assert_eq!(refused.status, 403);
    assert!(policy_ids(&refused).contains(&"protected-key-untag".to_string()));
    let untagged = call(&gw, &sim, "u-alice", Method::PATCH, &path, untag).await;
    assert_eq!(untagged.status, 200, "{:?}", untagged.body);
    let deleted = call(&gw, &sim, "u-bob", Method::DELETE, &path, "").await;
    assert_eq!(deleted.status, 204);
}

#[tokio::test]
async fn a_rename_must_follow_the_naming_convention_but_other_updates_need_not() {
    let sim = Sim::start().await;
    let gw = gateway(&sim, true).await;
    let body = create("sa-orders", Some("lkc-dev01"), "orders-rename-dev", "");
    let created = create_as(&gw, &sim, "u-bob", &body).await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_string();
    let path = format!("/iam/v2/api-keys/{id}");

    let bad = r#"{"spec":{"display_name":"Orders Rename"}}"#;
    let refused = call(&gw, &sim, "u-bob", Method::PATCH, &path, bad).await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert_eq!(
        policy_ids(&refused),
        ["display-name-convention-on-update".to_string()]
    );
    assert!(
        refused.error()["detail"]
            .as_str()
            .unwrap()
            .contains("naming convention"),
        "{:?}",
        refused.body
    );
    // The refused rename never reached the upstream.
    assert!(sim.received(&path).iter().all(|r| r.method != "PATCH"));
    let unchanged = call(&gw, &sim, "u-bob", Method::GET, &path, "").await;
    assert_eq!(
        unchanged.json()["spec"]["display_name"],
        "orders-rename-dev"
    );

    // A description-only update leaves the name alone, so the convention does not apply.
    let describe = r#"{"spec":{"description":"now with a description"}}"#;
    let described = call(&gw, &sim, "u-bob", Method::PATCH, &path, describe).await;
    assert_eq!(described.status, 200, "{:?}", described.body);

    let good = r#"{"spec":{"display_name":"orders-renamed-dev"}}"#;
    let renamed = call(&gw, &sim, "u-bob", Method::PATCH, &path, good).await;
    assert_eq!(renamed.status, 200, "{:?}", renamed.body);
    assert_eq!(renamed.json()["spec"]["display_name"], "orders-renamed-dev");
}

/// A policy whose condition overflows Cedar's 64-bit integers when evaluated on a create.
const OVERFLOW_POLICY: &str = r#"
@id("overflow-check")
@reason("never meant to match: multiplying the request time overflows")
forbid (principal, action == Action::"CreateApiKey", resource)
when { context.time * 9223372036854775807 == 1 };
"#;

#[tokio::test]
async fn an_evaluation_error_denies_with_its_policy_id_and_is_counted() {
    let sim = Sim::start().await;
    // The shipped set plus one policy that errors at evaluation time.
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir("policies").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".cedar") || name.ends_with(".cedarschema") {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    std::fs::write(dir.path().join("overflow.cedar"), OVERFLOW_POLICY).unwrap();
    let extra = policy_section().replace(
        "dir = \"policies\"",
        &format!("dir = {:?}", dir.path().display().to_string()),
    );
    assert!(extra.contains(&dir.path().display().to_string()));
    let gw = support::start(support::config(&sim.url(), &extra)).await;

    // A create every shipped policy allows (u-alice, dev cluster, conventional name).
    let body = create("sa-orders", Some("lkc-dev01"), "orders-ingest-dev", "");
    let denied = create_as(&gw, &sim, "u-alice", &body).await;
    assert_eq!(denied.status, 403, "{:?}", denied.body);
    assert_eq!(policy_ids(&denied), ["overflow-check".to_string()]);
    let detail = denied.error()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("overflow-check"), "{detail}");
    assert!(detail.to_lowercase().contains("error"), "{detail}");
    let creates = sim.received("/iam/v2/api-keys");
    assert!(
        creates.iter().all(|r| r.method != "POST"),
        "a denied create was forwarded"
    );

    let text = support::metrics_text(&gw).await;
    assert!(
        text.contains(r#"keygate_policy_evaluation_errors_total{policy="overflow-check"} 1"#),
        "{text}"
    );

    // Actions the erroring policy does not apply to are unaffected.
    let listed = call(&gw, &sim, "u-alice", Method::GET, "/iam/v2/api-keys", "").await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
}
