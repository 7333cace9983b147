//! Crash durability of the blocking audit file: the real binary, concurrent creates, SIGKILL at a
//! random moment, restarted on the same file, many times. Afterwards:
//! - every create the simulator received has its `request_received` record on disk (the record is
//!   durable before the create is forwarded: no key without a trace);
//! - every 202 a caller saw has its `response_complete` record with that `createdKeyId` (the
//!   record is durable before the caller gets the response);
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
[audit]
file = "{}"
file_mode = "blocking"
"#,
            sim.url(),
            crate::support::file_authz_for_file(),
            audit.display()
        ),
    )
    .unwrap();
    let auth = sim.basic("u-alice");
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
        let mut keygate = binary::spawn(&["serve", "--config", config.to_str().unwrap()]);
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
