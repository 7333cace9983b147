//! Hot reload: the new set is validated off the request path and swapped atomically; an invalid
//! set is rejected and the old one stays; the revision moves; rate-limit buckets of unchanged
//! limits survive; reloading while requests flow never fails a request.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use keygate::config::Config;

use crate::support::sim::Sim;
use crate::support::{self, within, Collected};

const DAVE_OWNS_ORDERS: &str = r#"
[[role_bindings]]
principal = "User:u-dave"
role_name = "ResourceOwner"
crn_pattern = "crn://confluent.cloud/organization=4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c/service-account=sa-orders"
"#;

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        for name in ["role-bindings.toml", "inventory.toml", "matrix.toml"] {
            std::fs::copy(Path::new("policies").join(name), dir.path().join(name)).unwrap();
        }
        Files { dir }
    }
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
    fn bindings(&self, extra: &str) {
        let base = std::fs::read_to_string("policies/role-bindings.toml").unwrap();
        std::fs::write(self.path("role-bindings.toml"), format!("{base}{extra}")).unwrap();
    }
    fn config_text(&self, upstream: &str, extra: &str) -> String {
        format!(
            r#"
[listener]
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
[upstream]
url = "{upstream}"
[log]
access_log = false
[authz]
org_id = "{org}"
matrix = "{matrix}"
bindings = "{bindings}"
inventory = "{inventory}"
{extra}
"#,
            org = support::ORG_ID,
            matrix = self.path("matrix.toml").display(),
            bindings = self.path("role-bindings.toml").display(),
            inventory = self.path("inventory.toml").display(),
        )
    }
    fn write_config(&self, upstream: &str, extra: &str) -> std::path::PathBuf {
        let path = self.path("keygate.toml");
        std::fs::write(&path, self.config_text(upstream, extra)).unwrap();
        path
    }
}

async fn create_for_orders(base: &str, auth: &str) -> Collected {
    let request = Request::post(format!("{base}/iam/v2/api-keys"))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"spec":{"owner":{"id":"sa-orders"},"resource":{"id":"lkc-prod01"}}}"#,
        )))
        .unwrap();
    within(10, support::send(&support::client(), request)).await
}

#[tokio::test]
async fn valid_reload_applies_and_invalid_reload_keeps_the_old_set() {
    let sim = Sim::start().await;
    let files = Files::new();
    let gw = support::start(Config::load(&files.write_config(&sim.url(), "")).unwrap()).await;
    let base = format!("http://{}", gw.local_addr());
    let dave = sim.basic("u-dave");
    assert_eq!(create_for_orders(&base, &dave).await.status, 403);
    let before = gw.revision();

    files.bindings(DAVE_OWNS_ORDERS);
    let after = gw.reload().await.unwrap();
    assert_ne!(before, after);
    assert_eq!(create_for_orders(&base, &dave).await.status, 202);

    std::fs::write(
        files.path("role-bindings.toml"),
        "[[role_bindings]]\nprincipal = 7\n",
    )
    .unwrap();
    assert!(gw.reload().await.is_err());
    assert_eq!(
        gw.revision(),
        after,
        "a rejected set must not change the revision"
    );
    assert_eq!(
        create_for_orders(&base, &dave).await.status,
        202,
        "old set stays in force"
    );

    let text = support::metrics_text(&gw).await;
    assert!(
        text.contains(r#"keygate_reloads_total{team="platform",result="rejected"} 1"#),
        "{text}"
    );
    assert!(text.contains(&format!(
        r#"keygate_policy_revision_info{{revision="{after}"}} 1"#
    )));
    assert!(
        !text.contains(&format!(r#"revision="{before}""#)),
        "old revision still exported"
    );
    let ready = support::get(&support::url(gw.admin_addr(), "/readyz")).await;
    assert!(String::from_utf8_lossy(&ready.body).contains(after.as_str()));
}

#[tokio::test]
async fn a_changed_file_is_picked_up_without_a_signal() {
    let sim = Sim::start().await;
    let files = Files::new();
    let gw = support::start(Config::load(&files.write_config(&sim.url(), "")).unwrap()).await;
    let before = gw.revision();
    files.bindings(DAVE_OWNS_ORDERS);
    within(15, async {
        while gw.revision() == before {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let base = format!("http://{}", gw.local_addr());
    assert_eq!(
        create_for_orders(&base, &sim.basic("u-dave")).await.status,
        202
    );
}

#[tokio::test]
async fn reload_keeps_buckets_of_unchanged_limits_and_resets_changed_ones() {
    let sim = Sim::start().await;
    let files = Files::new();
    let limit = |requests: u32| {
        format!(
            "[[ratelimit.limits]]\nid = \"creates\"\nkey = \"principal_action\"\nactions = [\"CreateApiKey\"]\nquota = {{ per = \"1h\", requests = {requests} }}\n"
        )
    };
    let config = files.write_config(&sim.url(), &limit(1));
    let gw = support::start(Config::load(&config).unwrap()).await;
    let base = format!("http://{}", gw.local_addr());
    let alice = sim.basic("u-alice");
    assert_eq!(create_for_orders(&base, &alice).await.status, 202);
    assert_eq!(create_for_orders(&base, &alice).await.status, 429);

    // An unrelated change: the `creates` bucket survives, still empty.
    let unrelated = format!(
        "{}[[ratelimit.limits]]\nid = \"reads\"\nkey = \"principal_action\"\nactions = [\"ListApiKeys\"]\nquota = {{ per = \"1h\", requests = 100 }}\n",
        limit(1)
    );
    files.write_config(&sim.url(), &unrelated);
    gw.reload().await.unwrap();
    assert_eq!(create_for_orders(&base, &alice).await.status, 429);

    // A changed quota starts a fresh bucket.
    files.write_config(&sim.url(), &limit(5));
    gw.reload().await.unwrap();
    assert_eq!(create_for_orders(&base, &alice).await.status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_reloads_under_load_fail_no_request_and_decide_by_one_revision() {
    let sim = Sim::start().await;
    let files = Files::new();
    let audit = files.path("audit.jsonl");
    let config = files.write_config(
        &sim.url(),
        &format!(
            "[audit]\nfile = \"{}\"\nfile_mode = \"async\"\n",
            audit.display()
        ),
    );
    let gw = Arc::new(support::start(Config::load(&config).unwrap()).await);
    let base = format!("http://{}", gw.local_addr());
    let dave = sim.basic("u-dave");

    // The two revisions: A denies dave, B allows him.
    let rev_a = gw.revision();
    files.bindings(DAVE_OWNS_ORDERS);
    let rev_b = gw.reload().await.unwrap();
    files.bindings("");
    assert_eq!(gw.reload().await.unwrap(), rev_a);

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (base, dave, stop) = (base.clone(), dave.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                statuses.push(create_for_orders(&base, &dave).await.status.as_u16());
            }
            statuses
        }));
    }
    for i in 0..100 {
        files.bindings(if i % 2 == 0 { DAVE_OWNS_ORDERS } else { "" });
        let rev = gw.reload().await.unwrap();
        assert_eq!(
            rev,
            if i % 2 == 0 {
                rev_b.clone()
            } else {
                rev_a.clone()
            }
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for task in load {
        for status in task.await.unwrap() {
            assert!(
                status == 202 || status == 403,
                "a request failed with {status}"
            );
            total += 1;
        }
    }
    assert!(total > 0);
    // The file is async: shut down, which flushes it, before reading it whole.
    gw.shutdown();
    Arc::try_unwrap(gw)
        .unwrap_or_else(|_| panic!("the gateway is still shared"))
        .wait()
        .await;

    // Every decision was made by exactly one of the two revisions, with that revision's outcome.
    let text = std::fs::read_to_string(&audit).unwrap();
    let mut checked = 0;
    for line in text.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let data = &event["data"];
        if data["stage"] != "response_complete" || data["methodName"] != "CreateAPIKey" {
            continue;
        }
        let revision = data["policyRevision"].as_str().unwrap_or("");
        let result = data["decision"]["result"].as_str().unwrap_or("");
        let expected = if revision == rev_a.as_str() {
            "deny"
        } else if revision == rev_b.as_str() {
            "allow"
        } else {
            panic!("decision by an unknown revision {revision:?}: {line}");
        };
        assert_eq!(result, expected, "{line}");
        checked += 1;
    }
    assert!(checked > 0, "no decisions audited");
}
