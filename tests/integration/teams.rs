//! Team policy sets through the HTTP path: a team's forbid denies only requests inside its scope,
//! the 403 body and the audit event name the team's set, and a reload with one team's broken file
//! keeps that team's last good set, loads everyone else's change and counts both per team.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use keygate::config::Config;

use crate::support::sim::Sim;
use crate::support::{self, governed, within, Collected};

const ORDERS_SCOPE: &str = r#"service_accounts = ["sa-orders"]"#;
const ORDERS_RULE: &str = r#"@id("naming")
@reason("orders keys are named orders-<purpose>-<env> (got `{display_name}`)")
@pointer("/spec/display_name")
forbid (principal, action == Action::"CreateApiKey", resource)
when { !(context.display_name like "orders-*") };"#;

const PAYMENTS_SCOPE: &str = r#"service_accounts = ["sa-payments"]"#;

fn payments_rule(ticket: &str) -> String {
    format!(
        r#"@id("ticket")
@reason("payments keys need a {ticket} ticket")
@pointer("/spec/description")
forbid (principal, action == Action::"CreateApiKey", resource)
when {{ !(context.description like "*{ticket}-*") }};"#
    )
}

/// A directory holding the team sets (and, for reload tests, the config file).
struct Teams {
    dir: tempfile::TempDir,
}

impl Teams {
    fn new() -> Teams {
        let teams = Teams {
            dir: tempfile::tempdir().unwrap(),
        };
        teams.write("orders", ORDERS_SCOPE, ORDERS_RULE);
        teams.write("payments", PAYMENTS_SCOPE, &payments_rule("PAY"));
        teams
    }

    fn teams_dir(&self) -> PathBuf {
        self.dir.path().join("teams")
    }

    fn write(&self, team: &str, scope: &str, rules: &str) {
        let dir = self.teams_dir().join(team);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("scope.toml"), scope).unwrap();
        std::fs::write(dir.join("rules.cedar"), rules).unwrap();
    }

    /// The example `[policy]` section with the shipped platform set and these teams.
    fn policy_section(&self, audit: Option<&Path>) -> String {
        let policies = std::fs::canonicalize("policies").unwrap();
        let mut section = std::fs::read_to_string("policies/policy.example.toml")
            .unwrap()
            .replace(
                "dir = \"policies\"",
                &format!("dir = \"{}\"", policies.display()),
            )
            .replace(
                "teams_dir = \"policies/teams\"",
                &format!("teams_dir = \"{}\"", self.teams_dir().display()),
            );
        if let Some(file) = audit {
            section.push_str(&format!(
                "\n[audit]\nfile = \"{}\"\nfile_mode = \"blocking\"\n",
                file.display()
            ));
        }
        section
    }

    fn config_file(&self, upstream: &str) -> PathBuf {
        let path = self.dir.path().join("keygate.toml");
        std::fs::write(
            &path,
            format!(
                "[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"{upstream}\"\n[log]\naccess_log = false\n{}{}",
                support::file_authz_for_file(),
                self.policy_section(None)
            ),
        )
        .unwrap();
        path
    }
}

async fn create(
    gw: &keygate::Gateway,
    sim: &Sim,
    request_id: &str,
    owner: &str,
    name: &str,
    description: &str,
) -> Collected {
    let body = format!(
        r#"{{"spec":{{"display_name":"{name}","description":"{description}","owner":{{"id":"{owner}"}},"resource":{{"id":"lkc-dev01"}}}}}}"#
    );
    let request = Request::post(format!("http://{}/iam/v2/api-keys", gw.local_addr()))
        .header("authorization", sim.basic("u-alice"))
        .header("content-type", "application/json")
        .header("x-request-id", request_id)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    within(10, support::send(&support::client(), request)).await
}

fn rule_ids(response: &Collected) -> Vec<String> {
    response.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["meta"]["rule_ids"].as_array().unwrap().clone())
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_teams_forbid_denies_only_inside_its_scope_and_the_403_and_audit_name_the_team() {
    let sim = Sim::start().await;
    let teams = Teams::new();
    let audit = teams.dir.path().join("audit.jsonl");
    let gw = support::start(support::config(
        &sim.url(),
        &teams.policy_section(Some(&audit)),
    ))
    .await;

    // Conventional for the platform, but not orders-<…>: the orders team's rule denies.
    let denied = create(
        &gw,
        &sim,
        "team-denied-1",
        "sa-orders",
        "ingest-orders-dev",
        "",
    )
    .await;
    assert_eq!(denied.status, 403, "{:?}", denied.body);
    assert_eq!(rule_ids(&denied), ["orders/naming"]);
    let member = &denied.json()["errors"][0];
    assert_eq!(member["source"]["pointer"], "/spec/display_name");
    let detail = member["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("denied by policy `orders/naming` of team `orders`: orders keys are named orders-<purpose>-<env> (got `ingest-orders-dev`)"),
        "{detail}"
    );
    let events = governed::audit_records(&audit, "team-denied-1", "response_complete").await;
    let decision = &events[0]["decision"];
    assert_eq!(decision["result"], "deny", "{decision}");
    assert_eq!(decision["decidedBy"], "policy");
    // The matrix rule that allowed, then the team's policy that denied.
    assert_eq!(
        decision["ruleIds"],
        serde_json::json!(["matrix.sa.organization_admin", "orders/naming"])
    );
    assert!(
        decision["explanation"]
            .as_str()
            .unwrap()
            .contains("(orders/naming, team `orders`)"),
        "{decision}"
    );

    // The same name for payments' service account: orders' rule does not apply; payments' does.
    let other = create(
        &gw,
        &sim,
        "team-2",
        "sa-payments",
        "ingest-orders-dev",
        "none",
    )
    .await;
    assert_eq!(other.status, 403);
    assert_eq!(rule_ids(&other), ["payments/ticket"]);
    let allowed = create(
        &gw,
        &sim,
        "team-3",
        "sa-payments",
        "ingest-orders-dev",
        "PAY-7",
    )
    .await;
    assert_eq!(allowed.status, 202, "{:?}", allowed.body);
    // A key outside every team's scope: only the platform set decides.
    let outside = create(&gw, &sim, "team-4", "u-alice", "alice-debug-dev", "none").await;
    assert_eq!(outside.status, 202, "{:?}", outside.body);
    // A team policy in its scope that allows: forwarded.
    let fine = create(&gw, &sim, "team-5", "sa-orders", "orders-ingest-dev", "").await;
    assert_eq!(fine.status, 202, "{:?}", fine.body);
}

#[tokio::test]
async fn a_reload_with_one_teams_broken_file_keeps_its_last_good_set_and_loads_the_rest() {
    let sim = Sim::start().await;
    let teams = Teams::new();
    let gw = support::start(Config::load(&teams.config_file(&sim.url())).unwrap()).await;
    let before = gw.revision();

    // Orders breaks its file; payments changes its ticket system.
    teams.write(
        "orders",
        ORDERS_SCOPE,
        "@id(\"naming\")\nforbid (principal, action, resource",
    );
    teams.write("payments", PAYMENTS_SCOPE, &payments_rule("FIN"));
    let after = gw
        .reload()
        .await
        .expect("a team's broken file does not fail the reload");
    assert_ne!(after, before);

    // Orders' last good rule is still in force ...
    let orders = create(&gw, &sim, "reload-1", "sa-orders", "ingest-orders-dev", "").await;
    assert_eq!(orders.status, 403);
    assert_eq!(rule_ids(&orders), ["orders/naming"]);
    // ... and payments' new one is.
    let old_ticket = create(
        &gw,
        &sim,
        "reload-2",
        "sa-payments",
        "payments-ingest-dev",
        "PAY-1",
    )
    .await;
    assert_eq!(old_ticket.status, 403);
    assert!(
        old_ticket.json()["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("need a FIN ticket"),
        "{:?}",
        old_ticket.body
    );
    let new_ticket = create(
        &gw,
        &sim,
        "reload-3",
        "sa-payments",
        "payments-ingest-dev",
        "FIN-1",
    )
    .await;
    assert_eq!(new_ticket.status, 202, "{:?}", new_ticket.body);

    let text = support::metrics_text(&gw).await;
    for sample in [
        r#"keygate_reloads_total{team="platform",result="ok"} 1"#,
        r#"keygate_reloads_total{team="orders",result="rejected"} 1"#,
        r#"keygate_reloads_total{team="payments",result="ok"} 1"#,
    ] {
        assert!(text.contains(sample), "{sample} missing:\n{text}");
    }
    assert!(text.contains(&format!(
        r#"keygate_policy_revision_info{{revision="{after}"}} 1"#
    )));

    // Orders repairs its file: its new set loads on the next reload.
    teams.write(
        "orders",
        ORDERS_SCOPE,
        &ORDERS_RULE.replace("orders-*", "ord-*"),
    );
    gw.reload().await.unwrap();
    let repaired = create(&gw, &sim, "reload-4", "sa-orders", "ord-ingest-dev", "").await;
    assert_eq!(repaired.status, 202, "{:?}", repaired.body);
    let text = support::metrics_text(&gw).await;
    assert!(
        text.contains(r#"keygate_reloads_total{team="orders",result="ok"} 1"#),
        "{text}"
    );
}
