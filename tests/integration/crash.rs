//! Crash durability of the blocking audit file: the real binary, concurrent creates, SIGKILL at a
//! random moment, restarted on the same file, many times. Afterwards:
//! - every 202 a caller saw has its `request_received` and its `response_complete` record with
//!   that `createdKeyId` (both are durable before the caller gets the response; the request record
//!   is committed while the create is forwarded);
//! - every key a kill left behind without a complete trail — forwarded while its request record
//!   was being committed, or answered by the upstream after its request record was — is found by
//!   `keygate reconcile` (unmanaged, or an unresolved create matched to it);
//! - `keygate audit verify` accepts the chain across all restarts, including one after a torn
//!   final line (reported as an interrupted write, never as tampering).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::sync::Notify;

use crate::support::audit::{create_body, parse_lines};
use crate::support::sim::Sim;
use crate::support::{binary, within};

/// Restarts; each ends in SIGKILL.
const ROUNDS: usize = 20;
/// Concurrent callers per round.
const CALLERS: usize = 8;

/// A random number in `lo..hi`.
fn random_between(lo: usize, hi: usize) -> usize {
    let mut b = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    lo + (u32::from_le_bytes(b) as usize) % (hi - lo)
}

/// Creates keys through keygate until the connection dies; records every 202's key id.
async fn caller(
    addr: SocketAddr,
    auth: String,
    seen: Arc<Mutex<Vec<String>>>,
    successes: Arc<AtomicUsize>,
    progress: Arc<Notify>,
) {
    let client = crate::support::client();
    loop {
        let request = Request::post(format!("http://{addr}/iam/v2/api-keys"))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(create_body(
                "sa-orders",
                "lkc-prod01",
            ))))
            .unwrap();
        let Ok(response) = client.request(request).await else {
            return; // keygate was killed
        };
        let status = response.status();
        let Ok(body) = response.into_body().collect().await else {
            return;
        };
        assert_eq!(status, 202, "{:?}", body.to_bytes());
        let key: Value = serde_json::from_slice(&body.to_bytes()).unwrap();
        seen.lock()
            .unwrap()
            .push(key["id"].as_str().unwrap().to_string());
        successes.fetch_add(1, Ordering::SeqCst);
        progress.notify_one();
    }
}

/// Every complete record in the chain: rotated files (oldest first), then the current file.
fn all_records(dir: &Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit.jsonl."))
        })
        .collect();
    files.sort();
    files.push(dir.join("audit.jsonl"));
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let complete = text.rfind('\n').map_or("", |end| &text[..=end]).to_string();
            parse_lines(&complete)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_traffic_the_audit_trail_holds_every_create_and_verifies() {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[listener]
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
[upstream]
url = "{}"
[log]
level = "info"
access_log = false
{}
[upstream.credential]
env = "KG_CRASH_CREDENTIAL"
[audit]
file = "{}"
file_mode = "blocking"
[reconcile]
grace = "0s"
"#,
            sim.url(),
            crate::support::file_authz_for_file(),
            audit.display()
        ),
    )
    .unwrap();
    let auth = sim.basic("u-alice");
    let own = sim.key("sa-keygate");
    let credential = format!("{}:{}", own.key_id, own.secret);
    let seeded: HashSet<String> = sim.sim.api_key_ids().into_iter().collect();
    let seen = Arc::new(Mutex::new(Vec::new()));

    let mut torn_after = None;
    for round in 0..ROUNDS {
        if round == ROUNDS / 2 {
            // A power loss mid-write leaves a torn final line (a SIGKILL only rarely does).
            // Make one: the restart must keep it as evidence and continue the chain after the
            // last complete record.
            torn_after = Some(all_records(dir.path()).len());
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&audit)
                .unwrap();
            std::io::Write::write_all(&mut file, br#"{"sequence":"0000000000"#).unwrap();
        }
        let mut keygate = binary::spawn_with_env(
            &["serve", "--config", config.to_str().unwrap()],
            &[("KG_CRASH_CREDENTIAL", &credential)],
        );
        let (addr, _) = keygate.serve_addresses();
        let successes = Arc::new(AtomicUsize::new(0));
        let progress = Arc::new(Notify::new());
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..CALLERS {
            callers.spawn(caller(
                addr,
                auth.clone(),
                seen.clone(),
                successes.clone(),
                progress.clone(),
            ));
        }
        // Kill after a random number of completed creates, with the other callers in flight at
        // whatever stage they happen to be (decided, fsyncing, forwarded, answering).
        let kill_after = random_between(1, 25);
        within(20, async {
            while successes.load(Ordering::SeqCst) < kill_after {
                progress.notified().await;
            }
        })
        .await;
        keygate.child.kill().unwrap();
        while let Some(joined) = within(20, callers.join_next()).await {
            joined.unwrap();
        }
        let (status, _, _) = tokio::task::spawn_blocking(move || keygate.finish())
            .await
            .unwrap();
        assert!(!status.success(), "keygate was not killed: {status:?}");
    }

    let records = all_records(dir.path());
    let received: HashSet<&str> = records
        .iter()
        .filter(|r| r["data"]["stage"] == "request_received")
        .map(|r| r["data"]["requestId"].as_str().unwrap())
        .collect();
    let completed: HashMap<&str, &str> = records
        .iter()
        .filter_map(|r| {
            let id = r["data"]["createdKeyId"].as_str()?;
            Some((id, r["data"]["requestId"].as_str().unwrap()))
        })
        .collect();

    // Creates are forwarded while their request record is committed, so a kill can leave one
    // forwarded without it; none of those was answered (checked below: every 202 has both
    // records).
    let forwarded = sim
        .received("/iam/v2/api-keys")
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert!(forwarded > 0);
    // Every 202 a caller saw has both records.
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= ROUNDS, "{} creates seen", seen.len());
    for key_id in &seen {
        let request_id = completed
            .get(key_id.as_str())
            .unwrap_or_else(|| panic!("202 for {key_id} without a response_complete record"));
        assert!(received.contains(request_id), "{key_id}: no request record");
    }

    // What the trail cannot contain, reconcile finds: every key the kills left behind without a
    // complete record is reported, and every create without an outcome is resolved.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["reconcile", "--json", "--config"])
        .arg(&config)
        .env("KG_CRASH_CREDENTIAL", &credential)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let findings = report["findings"].as_array().unwrap();
    let reported: HashSet<&str> = findings
        .iter()
        .filter_map(|f| f["key_id"].as_str())
        .collect();
    let unresolved: HashSet<&str> = findings
        .iter()
        .filter(|f| f["kind"] == "unresolved")
        .map(|f| f["request_id"].as_str().unwrap())
        .collect();
    for key_id in sim.sim.api_key_ids() {
        assert!(
            seeded.contains(&key_id)
                || completed.contains_key(key_id.as_str())
                || reported.contains(key_id.as_str()),
            "key {key_id} is neither in the trail nor reported by reconcile: {report:#}"
        );
    }
    let answered: HashSet<&str> = completed.values().copied().collect();
    let records = all_records(dir.path());
    for request in &received {
        let outcome = records.iter().any(|r| {
            r["data"]["stage"] == "response_complete" && r["data"]["requestId"] == *request
        });
        assert!(
            outcome || answered.contains(request) || unresolved.contains(request),
            "create {request} has no outcome and reconcile did not report it: {report:#}"
        );
    }

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("ok: {} records", records.len())),
        "{stdout}"
    );
    // Ours, and any a SIGKILL caught mid-write (the kernel can stop a large write part way).
    let recovered: Vec<usize> = stdout
        .split_once("recovered torn lines after sequence ")
        .map(|(_, list)| {
            list.trim()
                .split(", ")
                .map(|n| n.parse().unwrap())
                .collect()
        })
        .unwrap_or_default();
    assert!(recovered.contains(&torn_after.unwrap()), "{stdout}");
}
