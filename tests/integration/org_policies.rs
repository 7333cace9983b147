//! Organisational policies (Cedar, layer 2) through the HTTP path: each shipped example policy
//! allows and denies, 403 bodies list every reason with the policy ids in `meta`, dry-run allows
//! and is counted, and the revision is attached to decisions.

use std::collections::HashMap;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;

use crate::support::sim::call_as as call;
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

/// The `errors[]` member of a denial that is about `policy`.
fn member_of(response: &Collected, policy: &str) -> serde_json::Value {
    let json = response.json();
    json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["meta"]["rule_ids"] == serde_json::json!([policy]))
        .unwrap_or_else(|| panic!("no member for {policy} in {json}"))
        .clone()
}

/// The policy ids of a denial: one `errors[]` member per denying policy, its id in
/// `meta.rule_ids`.
fn policy_ids(response: &Collected) -> Vec<String> {
    response.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["meta"]["rule_ids"].as_array().unwrap().clone())
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
            let error = member_of(&response, policy);
            assert_eq!(error["code"], "user_unauthorized");
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
    // One member each, pointing at the field at fault, saying it with the request's values.
    assert_eq!(response.json()["errors"].as_array().unwrap().len(), 3);
    for (id, pointer, says) in [
        (
            "display-name-convention",
            "/spec/display_name",
            "(got `Bad Name`)",
        ),
        (
            "no-user-keys-in-prod",
            "/spec/owner/id",
            "env-prod01 must be owned by a service account, not by the user account u-bob",
        ),
        (
            "prod-ticket-reference",
            "/spec/description",
            "production environment env-prod01 need a change ticket",
        ),
    ] {
        let member = member_of(&response, id);
        assert_eq!(member["source"]["pointer"], pointer, "{member}");
        assert_eq!(member["status"], "403");
        let detail = member["detail"].as_str().unwrap();
        assert!(detail.contains(says) && detail.contains(id), "{detail}");
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
    let member = member_of(&statuses[2], "service-account-key-limit");
    assert!(
        member["detail"]
            .as_str()
            .unwrap()
            .contains("service account sa-payments already has 3 API keys (limit 3)"),
        "{member}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_a_policy_denies_is_logged_once_as_denied() {
    use crate::support::binary;
    use std::process::Command;

    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policies = std::fs::canonicalize("policies").unwrap();
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"{}\"\n{}{}",
            sim.url(),
            support::file_authz_for_file(),
            policy_section()
                .replace(
                    "dir = \"policies\"",
                    &format!("dir = \"{}\"", policies.display())
                )
                .replace(
                    "teams_dir = \"policies/teams\"",
                    &format!("teams_dir = \"{}/teams\"", policies.display())
                ),
        ),
    )
    .unwrap();
    let keygate = binary::spawn_with(Command::new(env!("CARGO_BIN_EXE_keygate")).args([
        "serve",
        "--config",
        config.to_str().unwrap(),
    ]));
    let (addr, _) = tokio::task::block_in_place(|| keygate.serve_addresses());
    // The matrix allows bob (ResourceOwner on sa-orders); the naming policy denies.
    let request = Request::post(format!("http://{addr}/iam/v2/api-keys"))
        .header("authorization", sim.basic("u-bob"))
        .header("content-type", "application/json")
        .header("x-request-id", "policy-denied-1")
        .body(Full::new(Bytes::from(create(
            "sa-orders",
            Some("lkc-dev01"),
            "Bad Name",
            "",
        ))))
        .unwrap();
    let response = within(10, support::send(&support::client(), request)).await;
    assert_eq!(response.status, 403);
    // Every log line of the request up to its access-log line, which is written last.
    let lines = tokio::task::block_in_place(|| {
        let mut lines = Vec::new();
        loop {
            let line = binary::wait_line(&keygate.stderr, "policy-denied-1");
            let done = line.contains("Request completed");
            lines.push(line);
            if done {
                return lines;
            }
        }
    });
    let decisions: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"Decision\""))
        .collect();
    assert_eq!(decisions.len(), 1, "{lines:#?}");
    let decision: serde_json::Value = serde_json::from_str(decisions[0]).unwrap();
    assert_eq!(decision["decision"], "deny", "{decision}");
    assert!(
        decision["rule.ids"]
            .as_str()
            .unwrap_or_default()
            .contains("display-name-convention"),
        "{decision}"
    );
    assert!(!lines.iter().any(|l| l.contains("\"allow\"")), "{lines:#?}");
}

#[tokio::test]
async fn a_missing_key_gets_the_upstreams_404_and_a_failed_lookup_a_503_never_protected() {
    let sim = Sim::start().await;
    let gw = gateway(&sim, true).await;
    let missing = "/iam/v2/api-keys/NOSUCHKEY0000001";
    // As an OrganizationAdmin: nothing but the key's absence stands in the way.
    for (method, body) in [
        (Method::DELETE, ""),
        (Method::GET, ""),
        (Method::PATCH, r#"{"spec":{"description":"x"}}"#),
    ] {
        let response = call(&gw, &sim, "u-alice", method.clone(), missing, body).await;
        assert_eq!(response.status, 404, "{method}: {:?}", response.body);
        let text = String::from_utf8_lossy(&response.body);
        assert!(!text.contains("protected"), "{method}: {text}");
        assert_eq!(response.json()["errors"][0]["status"], "404", "{text}");
    }
    assert!(
        sim.received(missing).iter().all(|r| r.method == "GET"),
        "only lookups reached the upstream"
    );

    // A lookup that fails (not a refusal): fail closed, and say what could not be checked.
    let key = "/iam/v2/api-keys/DEMOORDERS000001";
    sim.sim.inject_fault(keygate::simulator::Fault {
        method: Some(Method::GET),
        path_prefix: key.into(),
        status: 503,
        headers: Vec::new(),
        body: "{}".into(),
        times: 1,
    });
    let refused = call(&gw, &sim, "u-alice", Method::DELETE, key, "").await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    let error = refused.error();
    assert_eq!(error["code"], "authorization_unavailable");
    let detail = error["detail"].as_str().unwrap();
    assert!(
        detail.contains("could not check") && detail.contains("DEMOORDERS000001"),
        "{detail}"
    );
    assert!(!detail.contains("tagged [protected]"), "{detail}");
    assert!(sim.received(key).iter().all(|r| r.method == "GET"));
    // The key is still there, and the next delete (lookup healthy again) goes through.
    let deleted = call(&gw, &sim, "u-alice", Method::DELETE, key, "").await;
    assert_eq!(deleted.status, 204, "{:?}", deleted.body);
}
