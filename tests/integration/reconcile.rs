//! Reconcile against the simulator: keys created or deleted behind keygate's back, creates whose
//! outcome keygate never recorded, the baseline; in-process (`Gateway::reconcile`) and through
//! `keygate reconcile`, the real binary, on the trail a killed `keygate serve` left.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use keygate::simulator::{DirectKey, Stall};
use serde_json::Value;

use crate::support::audit::{create_body, read_events};
use crate::support::sim::Sim;
use crate::support::{self, binary, within};

/// The environment variable keygate's own credential (sa-keygate's demo key) is read from.
const CREDENTIAL_VAR: &str = "KG_RECONCILE_CREDENTIAL";

fn credential(sim: &Sim) -> String {
    let key = sim.key("sa-keygate");
    format!("{}:{}", key.key_id, key.secret)
}

/// keygate in process with a blocking audit file and `[reconcile]` (no interval: the test runs
/// each pass), judging everything at once (`grace = "0s"`).
struct Harness {
    sim: Sim,
    gw: keygate::Gateway,
    audit: PathBuf,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let sim = Sim::start().await;
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.jsonl");
        let env: HashMap<String, String> =
            HashMap::from([(CREDENTIAL_VAR.to_owned(), credential(&sim))]);
        let extra = format!(
            "[upstream.credential]\nenv = \"{CREDENTIAL_VAR}\"\n[audit]\nfile = {audit:?}\n\
             instance_id = \"reconcile-test\"\n[reconcile]\ngrace = \"0s\"\n"
        );
        let gw = support::start(support::config_with_env(&sim.url(), &extra, &env)).await;
        Harness {
            sim,
            gw,
            audit,
            _dir: dir,
        }
    }

    async fn create(&self, owner: &str, resource: &str) -> String {
        let request = Request::post(support::url(self.gw.local_addr(), "/iam/v2/api-keys"))
            .header("authorization", self.sim.basic("u-alice"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(create_body(owner, resource))))
            .unwrap();
        let response = within(10, support::send(&support::client(), request)).await;
        assert_eq!(response.status, 202, "{:?}", response.body);
        response.json()["id"].as_str().unwrap().to_owned()
    }

    async fn delete(&self, key_id: &str) {
        let request = Request::delete(support::url(
            self.gw.local_addr(),
            &format!("/iam/v2/api-keys/{key_id}"),
        ))
        .header("authorization", self.sim.basic("u-alice"))
        .body(Full::default())
        .unwrap();
        let response = within(10, support::send(&support::client(), request)).await;
        assert_eq!(response.status, 204);
    }

    fn direct(&self, owner: &str, resource: &str) -> String {
        self.sim
            .sim
            .create_keys_directly(&DirectKey::new(owner, resource), 1)
            .unwrap()
            .remove(0)
            .id
    }

    async fn reconcile(&self) -> keygate::reconcile::Report {
        within(30, self.gw.reconcile()).await.unwrap().unwrap()
    }

    /// The reconcile events in the trail: (type suffix, target key id, create request id).
    fn findings(&self) -> Vec<(String, Option<String>, Option<String>)> {
        read_events(&self.audit)
            .iter()
            .filter(|e| e["data"]["stage"] == "reconcile")
            .map(|e| {
                (
                    e["type"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("io.keygate.apikey.")
                        .to_owned(),
                    e["data"]["target"]["keyId"].as_str().map(str::to_owned),
                    e["data"]["reconcile"]["createRequestId"]
                        .as_str()
                        .map(str::to_owned),
                )
            })
            .collect()
    }
}

fn found<'a>(report: &'a keygate::reconcile::Report, kind: &str) -> Vec<&'a str> {
    report
        .findings
        .iter()
        .filter(|f| f.kind == kind)
        .filter_map(|f| f.key_id.as_deref())
        .collect()
}

#[tokio::test]
async fn a_key_created_directly_is_reported_unmanaged_exactly_once_and_keygate_keys_are_not() {
    let h = Harness::start().await;
    // The demo org's keys predate keygate: the first run reports them all.
    let first = h.reconcile().await;
    let seeded = h.sim.sim.api_key_ids();
    let mut reported = found(&first, "unmanaged");
    reported.sort_unstable();
    assert_eq!(
        reported,
        seeded.iter().map(String::as_str).collect::<Vec<_>>()
    );

    let managed = h.create("sa-orders", "lkc-prod01").await;
    let console = h.direct("sa-orders", "lkc-prod01");
    let second = h.reconcile().await;
    assert_eq!(found(&second, "unmanaged"), [console.as_str()]);
    assert_eq!(second.findings.len(), 1, "{:?}", second.findings);
    let line = &second.findings[0];
    assert_eq!(
        (line.owner.as_str(), line.resource.as_str()),
        ("sa-orders", "lkc-prod01")
    );
    assert!(line.created_at.is_some() && line.why.contains("never passed keygate"));

    // Nothing new: nothing reported, nothing recorded.
    let events = h.findings().len();
    let third = h.reconcile().await;
    assert!(third.findings.is_empty(), "{:?}", third.findings);
    assert_eq!(h.findings().len(), events);

    let recorded: Vec<_> = h
        .findings()
        .into_iter()
        .filter(|(_, key, _)| key.as_deref() == Some(console.as_str()))
        .collect();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].0, "unmanaged");
    assert!(h
        .findings()
        .iter()
        .all(|(_, key, _)| key.as_deref() != Some(managed.as_str())));
    assert_eq!(third.managed_keys, 1);
    assert_eq!(third.unmanaged_keys, seeded.len() + 1);

    let metrics = support::metrics_text(&h.gw).await;
    let expected = format!(
        "keygate_reconcile_findings{{kind=\"unmanaged\"}} {}",
        seeded.len() + 1
    );
    assert!(metrics.contains(&expected), "{metrics}");
    assert!(metrics.contains(r#"keygate_reconcile_findings{kind="vanished"} 0"#));
    assert!(metrics.contains(r#"keygate_reconcile_runs_total{result="ok"} 3"#));
}

#[tokio::test]
async fn a_key_deleted_directly_is_reported_vanished_and_one_deleted_through_keygate_is_not() {
    let h = Harness::start().await;
    h.reconcile().await;
    let behind_the_back = h.create("sa-orders", "lkc-prod01").await;
    let properly = h.create("sa-payments", "lkc-dev01").await;
    assert!(h.reconcile().await.findings.is_empty());

    assert!(h.sim.sim.delete_key_directly(&behind_the_back));
    h.delete(&properly).await;
    let report = h.reconcile().await;
    assert_eq!(found(&report, "vanished"), [behind_the_back.as_str()]);
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].owner, "sa-orders");
    assert!(report.findings[0]
        .why
        .contains("without a delete through keygate"));
    assert_eq!(report.managed_keys, 0);
    assert!(h.reconcile().await.findings.is_empty(), "reported once");
    let metrics = support::metrics_text(&h.gw).await;
    assert!(
        metrics.contains(r#"keygate_reconcile_findings{kind="vanished"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_rebuilt_index_reports_nothing_twice() {
    let h = Harness::start().await;
    h.reconcile().await;
    let console = h.direct("u-alice", "cloud");
    assert_eq!(found(&h.reconcile().await, "unmanaged"), [console.as_str()]);
    // The index is lost: the trail, which holds the findings too, rebuilds it.
    std::fs::remove_file(keygate::reconcile::index_path(&h.audit)).unwrap();
    let report = h.reconcile().await;
    assert!(report.rebuilt_index || report.records_read > 0);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

// === the binary ===

fn config_file(dir: &Path, sim: &Sim, extra: &str) -> PathBuf {
    let path = dir.join("keygate.toml");
    std::fs::write(
        &path,
        format!(
            "[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
             [upstream]\nurl = \"{}\"\n[upstream.credential]\nenv = \"{CREDENTIAL_VAR}\"\n\
             [log]\nlevel = \"info\"\naccess_log = false\n{}\n[audit]\nfile = \"{}\"\n\
             [reconcile]\ngrace = \"0s\"\n{extra}",
            sim.url(),
            support::file_authz_for_file(),
            dir.join("audit.jsonl").display(),
        ),
    )
    .unwrap();
    path
}

/// `keygate reconcile --config FILE ARGS…`: (exit code, stdout, stderr).
fn reconcile_cli(sim: &Sim, config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["reconcile", "--config", config.to_str().unwrap()])
        .args(args)
        .env(CREDENTIAL_VAR, credential(sim))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_findings(stdout: &str) -> Vec<Value> {
    let report: Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    report["findings"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_suppresses_pre_existing_keys_once_and_is_recorded() {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &sim, "");
    let run = |args: &'static [&'static str]| {
        let config = config.clone();
        let credential = credential(&sim);
        tokio::task::spawn_blocking(move || {
            let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
                .args(["reconcile", "--config", config.to_str().unwrap()])
                .args(args)
                .env(CREDENTIAL_VAR, credential)
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let seeded = sim.sim.api_key_ids().len();
    let (code, stdout, stderr) = run(&["--accept-baseline"]).await.unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("baseline: {seeded} keys accepted")),
        "{stdout}"
    );
    let baseline = keygate::reconcile::baseline_path(&dir.path().join("audit.jsonl"));
    assert!(baseline.exists());

    let console = sim
        .sim
        .create_keys_directly(&DirectKey::new("sa-payments", "lkc-dev01"), 1)
        .unwrap()
        .remove(0)
        .id;
    let (code, stdout, stderr) = run(&["--json"]).await.unwrap();
    assert_eq!(code, 1, "new findings: {stdout}{stderr}");
    let findings = json_findings(&stdout);
    assert_eq!(findings.len(), 1, "{stdout}");
    assert_eq!(findings[0]["kind"], "unmanaged");
    assert_eq!(findings[0]["key_id"], console.as_str());
    let (code, stdout, _) = run(&[]).await.unwrap();
    assert_eq!(code, 0, "nothing new: {stdout}");

    // One baseline only.
    let (code, _, stderr) = run(&["--accept-baseline"]).await.unwrap();
    assert_eq!(code, 2);
    assert!(stderr.contains("already accepted"), "{stderr}");

    // A baseline file edited afterwards is not used: its keys are reported after all.
    let text = std::fs::read_to_string(&baseline).unwrap();
    std::fs::write(&baseline, text.replace("accepted_at", "accepted_at ")).unwrap();
    let (code, stdout, _) = run(&["--json"]).await.unwrap();
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(json_findings(&stdout).len(), seeded, "{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        report["warnings"][0]
            .as_str()
            .unwrap()
            .contains("does not match the baseline"),
        "{report}"
    );

    // Everything is in the trail, which still verifies.
    let events = read_events(&dir.path().join("audit.jsonl"));
    let baseline_events: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "io.keygate.apikey.baseline")
        .collect();
    assert_eq!(baseline_events.len(), 1);
    assert_eq!(
        baseline_events[0]["data"]["reconcile"]["baselineKeys"],
        seeded
    );
    let verify = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["audit", "verify"])
        .arg(dir.path().join("audit.jsonl"))
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keygate_killed_between_forwarding_and_answering_leaves_an_unresolved_create_that_reconcile_matches(
) {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &sim, "");
    let audit = dir.path().join("audit.jsonl");
    let mut keygate = binary::spawn_with_env(
        &["serve", "--config", config.to_str().unwrap()],
        &[(CREDENTIAL_VAR, &credential(&sim))],
    );
    let (addr, _) = keygate.serve_addresses();
    // `reconcile` refuses to write the trail of a running keygate.
    let (code, _, stderr) = tokio::task::spawn_blocking({
        let config = config.clone();
        let credential = credential(&sim);
        move || {
            let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
                .args(["reconcile", "--config", config.to_str().unwrap()])
                .env(CREDENTIAL_VAR, credential)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("in use by another keygate process"),
        "{stderr}"
    );

    // The upstream carries out the create and holds its answer back; keygate is killed waiting.
    sim.sim.stall(Stall {
        method: Some(http::Method::POST),
        path_prefix: "/iam/v2/api-keys".into(),
        times: 1,
    });
    let before = sim.sim.api_key_ids();
    let auth = sim.basic("u-alice");
    let caller = tokio::spawn(async move {
        let request = Request::post(format!("http://{addr}/iam/v2/api-keys"))
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(create_body(
                "sa-orders",
                "lkc-prod01",
            ))))
            .unwrap();
        support::client().request(request).await.map(|r| r.status())
    });
    within(20, sim.sim.stalled(1)).await;
    // The request record is committed while the create is forwarded: wait until it is on disk.
    let request_id = within(20, async {
        loop {
            let received = read_events(&audit).into_iter().find(|e| {
                e["data"]["stage"] == "request_received" && e["type"] == "io.keygate.apikey.create"
            });
            if let Some(event) = received {
                break event["data"]["requestId"].as_str().unwrap().to_owned();
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    keygate.child.kill().unwrap();
    tokio::task::spawn_blocking(move || keygate.finish())
        .await
        .unwrap();
    assert!(
        caller.await.unwrap().is_err(),
        "the caller never got an answer"
    );
    sim.sim.release_stalled();
    let created: Vec<String> = sim
        .sim
        .api_key_ids()
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(created.len(), 1);

    let (code, stdout, stderr) = reconcile_cli(&sim, &config, &["--json"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let findings = json_findings(&stdout);
    let unresolved: Vec<&Value> = findings
        .iter()
        .filter(|f| f["kind"] == "unresolved")
        .collect();
    assert_eq!(unresolved.len(), 1, "{stdout}");
    assert_eq!(unresolved[0]["request_id"], request_id.as_str());
    assert_eq!(unresolved[0]["key_id"], created[0].as_str());
    assert_eq!(unresolved[0]["owner"], "sa-orders");
    // The matched key is keygate's now, not unmanaged.
    assert!(findings
        .iter()
        .filter(|f| f["kind"] == "unmanaged")
        .all(|f| f["key_id"] != created[0].as_str()));
    let (code, stdout, _) = reconcile_cli(&sim, &config, &[]);
    assert_eq!(code, 0, "reported once: {stdout}");

    // The text report names the key, the owner, the resource, when, and why.
    let text: Vec<Value> = read_events(&audit)
        .into_iter()
        .filter(|e| e["type"] == "io.keygate.apikey.unresolved")
        .collect();
    assert_eq!(text.len(), 1);
    assert_eq!(text[0]["data"]["target"]["keyId"], created[0].as_str());
    assert_eq!(text[0]["data"]["reconcile"]["candidates"], 1);
}
