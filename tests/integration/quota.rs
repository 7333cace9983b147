//! The Global-key quota guard against the simulator: a Global key counts against every Dedicated
//! (Enterprise, Freight) cluster and is denied when one of them is at quota, but not when only
//! Basic or Standard clusters are; a Kafka key is checked against its own cluster; dry-run allows
//! and records; the counts follow the creates and deletes keygate forwards; per-cluster metrics.
//!
//! The demo org (dev/org.toml, policies/inventory.toml): `lkc-prod01` is Dedicated and holds one
//! Kafka key (sa-orders'), `lkc-dev01` is Basic and holds none, and no Global key exists.

use std::collections::HashMap;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use keygate::simulator::DirectKey;
use serde_json::Value;

use crate::support::audit::{create_body, read_events};
use crate::support::sim::Sim;
use crate::support::{self, within, Collected};

const CREDENTIAL_VAR: &str = "KG_QUOTA_CREDENTIAL";

struct Harness {
    sim: Sim,
    gw: keygate::Gateway,
    audit: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// keygate with `[quota] kafka_keys_per_cluster = limit` (and `extra` in `[quota]`), after
    /// `setup` changed the org behind keygate's back, with a reconcile run done.
    async fn start(limit: u64, extra: &str, setup: impl FnOnce(&Sim)) -> Harness {
        let sim = Sim::start().await;
        setup(&sim);
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.jsonl");
        let own = sim.key("sa-keygate");
        let env: HashMap<String, String> = HashMap::from([(
            CREDENTIAL_VAR.to_owned(),
            format!("{}:{}", own.key_id, own.secret),
        )]);
        let config = format!(
            "[upstream.credential]\nenv = \"{CREDENTIAL_VAR}\"\n[audit]\nfile = {audit:?}\n\
             [reconcile]\ninterval = \"1h\"\n[quota]\nkafka_keys_per_cluster = {limit}\n\
             warn_ratio = 0.5\n{extra}"
        );
        let gw = support::start(support::config_with_env(&sim.url(), &config, &env)).await;
        // The listing behind the counts (also run once at start; this one is after `setup`).
        within(30, gw.reconcile()).await.unwrap().unwrap();
        Harness {
            sim,
            gw,
            audit,
            _dir: dir,
        }
    }

    async fn create(&self, owner: &str, resource: &str) -> Collected {
        let request = Request::post(support::url(self.gw.local_addr(), "/iam/v2/api-keys"))
            .header("authorization", self.sim.basic("u-alice"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(create_body(owner, resource))))
            .unwrap();
        within(10, support::send(&support::client(), request)).await
    }

    async fn delete(&self, key_id: &str) -> Collected {
        let request = Request::delete(support::url(
            self.gw.local_addr(),
            &format!("/iam/v2/api-keys/{key_id}"),
        ))
        .header("authorization", self.sim.basic("u-alice"))
        .body(Full::default())
        .unwrap();
        within(10, support::send(&support::client(), request)).await
    }

    /// The last create event's decision.
    fn last_decision(&self) -> Value {
        read_events(&self.audit)
            .into_iter()
            .rev()
            .find(|e| {
                e["type"] == "io.keygate.apikey.create" && e["data"]["stage"] == "response_complete"
            })
            .unwrap()["data"]["decision"]
            .clone()
    }
}

fn direct(sim: &Sim, resource: &str, n: usize) {
    sim.sim
        .create_keys_directly(&DirectKey::new("sa-payments", resource), n)
        .unwrap();
}

#[tokio::test]
async fn a_global_key_is_denied_when_a_dedicated_cluster_is_at_quota_naming_it() {
    // lkc-prod01 (Dedicated): 1 seeded + 2 direct = 3 keys, the quota.
    let h = Harness::start(3, "", |sim| direct(sim, "lkc-prod01", 2)).await;
    let denied = h.create("sa-orders", "global").await;
    assert_eq!(denied.status, 403, "{:?}", denied.body);
    let error = denied.error();
    let detail = error["detail"].as_str().unwrap();
    assert!(
        detail.contains("Dedicated cluster `lkc-prod01` (3 keys)"),
        "{detail}"
    );
    assert!(detail.contains("quota of 3"), "{detail}");
    assert!(
        !detail.contains("lkc-dev01"),
        "a Basic cluster is not affected: {detail}"
    );
    assert_eq!(error["source"]["pointer"], "/spec/resource/id");
    let decision = h.last_decision();
    assert_eq!(decision["decidedBy"], "quota");
    assert_eq!(decision["result"], "deny");
    assert!(decision["ruleIds"]
        .as_array()
        .unwrap()
        .contains(&Value::from("quota.kafka_keys_per_cluster")));
    // Nothing reached the upstream.
    assert!(!h
        .sim
        .received("/iam/v2/api-keys")
        .iter()
        .any(|r| r.method == "POST"));

    // A Kafka key for the full cluster is denied too; one for the Basic cluster is not.
    let kafka = h.create("sa-orders", "lkc-prod01").await;
    assert_eq!(kafka.status, 403);
    let basic = h.create("sa-orders", "lkc-dev01").await;
    assert_eq!(basic.status, 202, "{:?}", basic.body);

    let metrics = support::metrics_text(&h.gw).await;
    for line in [
        r#"keygate_quota_kafka_keys{cluster="lkc-prod01",kind="Dedicated"} 3"#,
        r#"keygate_quota_kafka_keys{cluster="lkc-dev01",kind="Basic"} 1"#,
        "keygate_quota_kafka_keys_limit 3",
        r#"keygate_quota_decisions_total{result="deny"} 2"#,
    ] {
        assert!(metrics.contains(line), "missing {line}:\n{metrics}");
    }
}

#[tokio::test]
async fn a_global_key_is_allowed_when_only_basic_and_standard_clusters_are_at_quota() {
    // lkc-dev01 (Basic): 3 direct keys, at quota; lkc-prod01 (Dedicated): 1 of 3.
    let h = Harness::start(3, "", |sim| direct(sim, "lkc-dev01", 3)).await;
    let global = h.create("sa-orders", "global").await;
    assert_eq!(global.status, 202, "{:?}", global.body);
    // The Global key now counts against the Dedicated cluster: 2 of 3, past the 0.5 warning.
    let metrics = support::metrics_text(&h.gw).await;
    assert!(
        metrics.contains(r#"keygate_quota_kafka_keys{cluster="lkc-prod01",kind="Dedicated"} 2"#),
        "{metrics}"
    );
    // A cluster-scoped create is checked against its own cluster.
    let full = h.create("sa-orders", "lkc-dev01").await;
    assert_eq!(full.status, 403);
    assert!(full.error()["detail"]
        .as_str()
        .unwrap()
        .contains("Basic cluster `lkc-dev01` (3 keys)"));
    // The next Global key would reach 3 of 3 on the Dedicated cluster: allowed, with a warning.
    let warned = h.create("sa-orders", "global").await;
    assert_eq!(warned.status, 202);
    let decision = h.last_decision();
    assert_eq!(decision["result"], "allow");
    assert!(
        decision["warnings"][0]
            .as_str()
            .unwrap()
            .contains("`lkc-prod01` (2 keys) near the quota"),
        "{decision}"
    );
    // The one after would exceed it.
    let over = h.create("sa-orders", "global").await;
    assert_eq!(over.status, 403);
}

#[tokio::test]
async fn counts_follow_the_creates_and_deletes_keygate_forwards() {
    let h = Harness::start(2, "", |_| {}).await;
    // lkc-prod01: 1 of 2. A Global key takes it to 2.
    let global = h.create("sa-orders", "global").await;
    assert_eq!(global.status, 202);
    let global_id = global.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(h.create("sa-orders", "global").await.status, 403);
    // Deleting the listed seed key through keygate frees a place at once (the new Global key is
    // not listed yet: the next listing uncounts it).
    assert_eq!(h.delete("DEMOORDERS000001").await.status, 204);
    let again = h.create("sa-orders", "lkc-prod01").await;
    assert_eq!(again.status, 202, "{:?}", again.body);
    assert_eq!(h.create("sa-orders", "global").await.status, 403);
    assert_eq!(h.delete(&global_id).await.status, 204);
    within(30, h.gw.reconcile()).await.unwrap().unwrap();
    assert_eq!(h.create("sa-orders", "global").await.status, 202);
}

#[tokio::test]
async fn dry_run_allows_what_it_would_deny_and_records_it() {
    let h = Harness::start(3, "mode = \"dry-run\"\n", |sim| {
        direct(sim, "lkc-prod01", 2)
    })
    .await;
    let allowed = h.create("sa-orders", "global").await;
    assert_eq!(allowed.status, 202, "{:?}", allowed.body);
    let decision = h.last_decision();
    assert_eq!(decision["result"], "allow");
    assert_eq!(
        decision["dryRunFindings"][0],
        "quota.kafka_keys_per_cluster"
    );
    assert!(
        decision["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("dry-run: would deny: creating a Global key"),
        "{decision}"
    );
    let metrics = support::metrics_text(&h.gw).await;
    assert!(
        metrics.contains(r#"keygate_quota_decisions_total{result="would_deny"} 1"#),
        "{metrics}"
    );
}
