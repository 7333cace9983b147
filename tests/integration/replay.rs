//! `keygate policy replay`: a real keygate in front of the simulator records a trail (allowed and
//! denied creates, an update, a delete, dry-run findings); the binary replays it against
//! candidate policy sets written to disk.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;

use crate::support::binary;
use crate::support::governed::poll_until;
use crate::support::sim::call_as as call;
use crate::support::sim::Sim;
use crate::support::{self, Collected};

const ORG: &str = "4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c";

/// A candidate policy that denies the batch keys of the trail.
const NO_BATCH: &str = r#"
@id("display-name-no-batch")
@reason("batch keys are named by the batch platform, not by hand (got `{display_name}`)")
@pointer("/spec/display_name")
forbid (principal, action == Action::"CreateApiKey", resource)
when { context.display_name like "*-batch-*" };
"#;

/// A candidate policy whose evaluation fails on every create (a Long overflow).
const OVERFLOWS: &str = r#"
@id("time-overflow")
@reason("cannot happen")
forbid (principal, action == Action::"CreateApiKey", resource)
when { context.time * 9223372036854775807 > 0 };
"#;

struct Trail {
    _dir: tempfile::TempDir,
    file: PathBuf,
}

fn create(name: &str) -> String {
    format!(
        r#"{{"spec":{{"display_name":"{name}","description":"ingest","owner":{{"id":"sa-orders"}},"resource":{{"id":"lkc-dev01"}}}}}}"#
    )
}

/// Records a trail through keygate with the shipped policies (no upstream credential, so the
/// owner's key count is unknown and the dry-run `service-account-key-count-unknown` reports).
async fn record() -> Trail {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let extra = format!(
        "{}\n[audit]\nfile = \"{}\"\ninstance_id = \"replay-test\"\n",
        std::fs::read_to_string("policies/policy.example.toml").unwrap(),
        file.display()
    );
    let gw = support::start(support::config(&sim.url(), &extra)).await;
    let mut expected = 0;
    let mut expect = |response: &Collected, status: u16| {
        assert_eq!(
            response.status.as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        expected += 1;
    };
    let post = Method::POST;
    let keys = "/iam/v2/api-keys";
    let ingest = call(
        &gw,
        &sim,
        "u-alice",
        post.clone(),
        keys,
        &create("orders-ingest-dev"),
    )
    .await;
    expect(&ingest, 202);
    let batch = call(
        &gw,
        &sim,
        "u-alice",
        post.clone(),
        keys,
        &create("orders-batch-dev"),
    )
    .await;
    expect(&batch, 202);
    let badly_named = call(
        &gw,
        &sim,
        "u-alice",
        post.clone(),
        keys,
        &create("Orders Ingest"),
    )
    .await;
    expect(&badly_named, 403);
    let no_role = call(&gw, &sim, "u-dave", post, keys, &create("orders-other-dev")).await;
    expect(&no_role, 403);
    let ingest_id = ingest.json()["id"].as_str().unwrap().to_owned();
    let batch_id = batch.json()["id"].as_str().unwrap().to_owned();
    let update = call(
        &gw,
        &sim,
        "u-alice",
        Method::PATCH,
        &format!("{keys}/{ingest_id}"),
        r#"{"spec":{"description":"OPS-7 ingest"}}"#,
    )
    .await;
    expect(&update, 200);
    let delete = call(
        &gw,
        &sim,
        "u-alice",
        Method::DELETE,
        &format!("{keys}/{batch_id}"),
        "",
    )
    .await;
    expect(&delete, 204);
    // Every response_complete record is written after its response: wait for all of them.
    let path = file.clone();
    poll_until(
        Duration::from_secs(5),
        "the trail's response_complete records",
        || {
            let events = crate::support::audit::read_events(&path);
            let done = events
                .iter()
                .filter(|e| e["data"]["stage"] == "response_complete")
                .count();
            std::future::ready((done >= expected).then_some(()))
        },
    )
    .await;
    drop(gw);
    Trail { _dir: dir, file }
}

/// A candidate config in its own directory: the shipped policies plus `extra_policies` files.
fn candidate(extra_policies: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new("policies"), &dir.path().join("policies"));
    for (name, text) in extra_policies {
        std::fs::write(dir.path().join("policies").join(name), text).unwrap();
    }
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\nurl = \"http://127.0.0.1:9\"\n[authz]\norg_id = \"{ORG}\"\nmatrix = \"policies/matrix.toml\"\nbindings = \"policies/role-bindings.toml\"\ninventory = \"policies/inventory.toml\"\n{}",
            std::fs::read_to_string("policies/policy.example.toml").unwrap()
        ),
    )
    .unwrap();
    (dir, config)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Runs `keygate policy replay --json` and returns (exit code, report, stderr).
fn replay(audit: &Path, config: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec![
        "policy",
        "replay",
        "--audit",
        audit.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let (status, out, err) = binary::spawn(&args).finish();
    let out = out.join("\n");
    let report = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
    (status.code().unwrap(), report, err.join("\n"))
}

#[tokio::test]
async fn every_governed_decision_carries_a_valid_secret_free_decision_input() {
    let trail = record().await;
    let events = crate::support::audit::read_events(&trail.file);
    let complete: Vec<_> = events
        .iter()
        .filter(|e| e["data"]["stage"] == "response_complete")
        .collect();
    assert_eq!(complete.len(), 6);
    for event in complete {
        let input = &event["data"]["decisionInput"];
        assert!(input.is_object(), "{event}");
        assert_eq!(
            input["revisions"]["policy"],
            event["data"]["policyRevision"]
        );
        assert_eq!(input["principal"]["authenticatedBy"], "api_key");
    }
    let create = events
        .iter()
        .find(|e| e["data"]["decisionInput"]["spec"]["displayName"] == "orders-ingest-dev")
        .unwrap();
    let input = &create["data"]["decisionInput"];
    assert_eq!(input["outcome"]["decision"], "allow");
    assert_eq!(
        input["outcome"]["dryRun"],
        serde_json::json!(["service-account-key-count-unknown"])
    );
    assert_eq!(input["bindings"][0]["role"], "OrganizationAdmin");
    assert_eq!(input["inventory"]["clusters"][0]["id"], "lkc-dev01");
}

#[tokio::test]
async fn an_unchanged_candidate_flips_nothing() {
    let trail = record().await;
    let (_dir, config) = candidate(&[]);
    let (code, report, err) = replay(&trail.file, &config, &[]);
    assert_eq!(code, 0, "{report:#}\n{err}");
    assert_eq!(report["replayed"], 6, "{report:#}");
    assert_eq!(report["unchanged"], 6, "{report:#}");
    assert_eq!(report["notReplayable"], 0);
    assert_eq!(
        report["dryRun"]["service-account-key-count-unknown"]["recorded"],
        3
    );
    assert_eq!(
        report["dryRun"]["service-account-key-count-unknown"]["candidate"],
        3
    );
}

#[tokio::test]
async fn a_naming_rule_flips_exactly_the_batch_key_under_its_policy_id() {
    let trail = record().await;
    let (_dir, config) = candidate(&[("no-batch.cedar", NO_BATCH)]);
    let (code, report, err) = replay(&trail.file, &config, &[]);
    assert_eq!(code, 1, "{report:#}\n{err}");
    assert_eq!(report["replayed"], 6);
    assert_eq!(report["allowToDeny"], 1, "{report:#}");
    assert_eq!(report["denyToAllow"], 0);
    assert_eq!(report["nowError"], 0);
    assert_eq!(
        report["byPolicy"],
        serde_json::json!({"display-name-no-batch": {"allowToDeny": 1, "denyToAllow": 0, "nowError": 0}})
    );
    assert_eq!(report["byPrincipal"]["u-alice"]["allowToDeny"], 1);
    let sample = &report["samplesAllowToDeny"][0];
    assert_eq!(sample["action"], "CreateApiKey");
    assert_eq!(sample["principal"], "u-alice");
    assert_eq!(sample["old"]["decision"], "allow");
    assert_eq!(
        sample["new"]["deniedBy"],
        serde_json::json!(["display-name-no-batch"])
    );
    assert!(sample["new"]["explanation"]
        .as_str()
        .unwrap()
        .contains("orders-batch-dev"));
    // The text report says the same.
    let (status, out, _) = binary::spawn(&[
        "policy",
        "replay",
        "--audit",
        trail.file.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ])
    .finish();
    assert_eq!(status.code(), Some(1));
    let text = out.join("\n");
    assert!(text.contains("allow -> deny: 1"), "{text}");
    assert!(text.contains("display-name-no-batch: 1 / 0 / 0"), "{text}");
    // A principal filter that excludes the flip: nothing flips.
    let (code, report, _) = replay(&trail.file, &config, &["--principal", "u-dave"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["replayed"], 1);
}

#[tokio::test]
async fn a_policy_that_errors_is_reported_as_errors_not_allows() {
    let trail = record().await;
    let (_dir, config) = candidate(&[("overflow.cedar", OVERFLOWS)]);
    let (code, report, err) = replay(&trail.file, &config, &[]);
    assert_eq!(code, 1, "{report:#}\n{err}");
    // The three creates the matrix allowed now fail to evaluate; u-dave's stays a matrix denial.
    assert_eq!(report["nowError"], 3, "{report:#}");
    assert_eq!(report["allowToDeny"], 0);
    assert_eq!(report["denyToAllow"], 0);
    assert_eq!(report["byPolicy"]["time-overflow"]["nowError"], 3);
    assert_eq!(report["samplesNowError"][0]["new"]["decision"], "error");
}

#[tokio::test]
async fn a_tampered_trail_is_refused_with_the_broken_sequence() {
    let trail = record().await;
    let (_dir, config) = candidate(&[]);
    let text = std::fs::read_to_string(&trail.file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // Record 3: turn its decision around.
    assert!(lines[2].contains("\"sequence\":\"00000000000000000003\""));
    lines[2] = lines[2].replacen("\"requestId\":\"", "\"requestId\":\"x", 1);
    let tampered = trail.file.with_file_name("tampered.jsonl");
    std::fs::write(&tampered, lines.join("\n") + "\n").unwrap();
    let (code, _, err) = replay(&tampered, &config, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("broken at sequence 3"), "{err}");
    // With --no-verify it replays.
    let (code, report, err) = replay(&tampered, &config, &["--no-verify"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["replayed"], 6);
}

#[tokio::test]
async fn events_without_a_decision_input_are_not_replayable() {
    let trail = record().await;
    let (_dir, config) = candidate(&[("no-batch.cedar", NO_BATCH)]);
    // The trail as keygate wrote it before it recorded decision inputs.
    let text = std::fs::read_to_string(&trail.file).unwrap();
    let old: Vec<String> = text
        .lines()
        .map(|line| {
            let mut event: serde_json::Value = serde_json::from_str(line).unwrap();
            event["data"]
                .as_object_mut()
                .unwrap()
                .remove("decisionInput");
            event.to_string()
        })
        .collect();
    let old_file = trail.file.with_file_name("old.jsonl");
    std::fs::write(&old_file, old.join("\n") + "\n").unwrap();
    let (code, report, err) = replay(&old_file, &config, &["--no-verify"]);
    assert_eq!(code, 0, "{report:#}\n{err}");
    assert_eq!(report["replayed"], 0);
    assert_eq!(report["notReplayable"], 6);
    assert_eq!(report["allowToDeny"], 0);
}

#[test]
fn bad_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.jsonl");
    let (_cdir, config) = candidate(&[]);
    let (code, _, err) = replay(&missing, &config, &[]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = replay(&missing, &dir.path().join("no-config.toml"), &[]);
    assert_eq!(code, 2, "{err}");
}

/// Runs `keygate policy diff OLD NEW --json [extra]`.
fn diff(old: &Path, new: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec![
        "policy",
        "diff",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let (status, out, err) = binary::spawn(&args).finish();
    let report = serde_json::from_str(&out.join("\n")).unwrap_or(serde_json::Value::Null);
    (status.code().unwrap(), report, err.join("\n"))
}

#[tokio::test]
async fn policy_diff_names_added_and_changed_policies_and_replays_both_side_by_side() {
    let (_a, same_a) = candidate(&[]);
    let (_b, same_b) = candidate(&[]);
    let (code, report, err) = diff(&same_a, &same_b, &[]);
    assert_eq!(code, 0, "{report:#}\n{err}");
    assert_eq!(report["added"], serde_json::json!([]));
    assert_eq!(report["changed"], serde_json::json!([]));
    assert_eq!(report["oldRevision"], report["newRevision"]);

    let naming = std::fs::read_to_string("policies/naming.cedar")
        .unwrap()
        .replacen(
            "must follow the naming convention <team>",
            "must be <team>",
            1,
        );
    let (_c, changed) = candidate(&[("naming.cedar", &naming), ("no-batch.cedar", NO_BATCH)]);
    let (code, report, err) = diff(&same_a, &changed, &[]);
    assert_eq!(code, 1, "{report:#}\n{err}");
    assert_eq!(
        report["added"],
        serde_json::json!(["display-name-no-batch"])
    );
    assert_eq!(report["removed"], serde_json::json!([]));
    assert_eq!(
        report["changed"],
        serde_json::json!(["display-name-convention"])
    );
    assert_eq!(report["matrixChanged"], false);

    let trail = record().await;
    let (code, report, err) = diff(
        &same_a,
        &changed,
        &["--audit", trail.file.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(report["replayOld"]["replayed"], 6, "{report:#}");
    assert_eq!(report["replayOld"]["allowToDeny"], 0);
    assert_eq!(report["replayNew"]["allowToDeny"], 1);
    assert_eq!(
        report["replayNew"]["byPolicy"]["display-name-no-batch"]["allowToDeny"],
        1
    );
}
