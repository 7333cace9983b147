//! A real Confluent Cloud client through keygate: the PyPI library `cc-clients-python-lib`
//! (`IamClient` with its `base_url` set to keygate) creates, lists and deletes a key against the
//! simulator, and parses a keygate denial. The flow and its assertions are in
//! `tests/python/cc_client_flow.py`; this test builds the virtualenv when it is missing (with
//! `tests/python/ensure_venv.py`, which `.ci/run` also calls), runs the flow, and checks what
//! reached the upstream.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::governed::{self, API_KEYS};
use crate::support::sim::Sim;
use crate::support::{self};

/// Where the venv lives: under the target dir, shared by every run (`.ci/run` pre-creates it at
/// the same place).
fn venv_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("cc-clients-venv")
}

fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Runs `command` to completion, killing it after `limit`.
fn run_bounded(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{command:?} ran longer than {limit:?}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The venv's python, creating the venv first if needed (needs `python3` and PyPI).
fn venv_python() -> PathBuf {
    let mut command = Command::new("python3");
    command.arg(python_script("ensure_venv.py")).arg(venv_dir());
    let output = run_bounded(command, Duration::from_secs(300));
    assert!(
        output.status.success(),
        "creating the Python venv failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// Egress mode: the library keeps its own base URL (`https://api.confluent.cloud`) and reaches
/// keygate through `HTTPS_PROXY`, trusting keygate's CA through `REQUESTS_CA_BUNDLE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cc_clients_python_lib_through_https_proxy_is_decided_by_keygate() {
    let python = tokio::task::spawn_blocking(venv_python).await.unwrap();
    let sim = Sim::start().await;
    let pki = crate::support::egress::Pki::new();
    let gw = support::start(support::config(&sim.url(), &pki.section(""))).await;
    let alice = sim.key("u-alice");
    let dave = sim.key("u-dave");
    let mut command = Command::new(python);
    command
        .arg(python_script("cc_client_flow.py"))
        .env_remove("KEYGATE_URL")
        .env(
            "HTTPS_PROXY",
            format!("http://{}", gw.egress_addr().unwrap()),
        )
        .env("REQUESTS_CA_BUNDLE", &pki.ca_cert)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("https_proxy")
        .env("ALLOWED_KEY", &alice.key_id)
        .env("ALLOWED_SECRET", &alice.secret)
        .env("DENIED_KEY", &dave.key_id)
        .env("DENIED_SECRET", &dave.secret)
        .env("OWNER", "sa-orders")
        .env("RESOURCE", "lkc-prod01");
    let output = tokio::task::spawn_blocking(move || run_bounded(command, Duration::from_secs(60)))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "cc_client_flow.py through HTTPS_PROXY failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["denial"]["code"], "user_unauthorized", "{summary}");
    assert_eq!(
        summary["denial"]["rule_ids"],
        serde_json::json!(["matrix.deny.sa_no_role"])
    );
    // The library's requests reached the upstream through keygate: its create, not dave's.
    let creates = sim.creates();
    assert_eq!(creates.len(), 1);
    assert_eq!(
        creates[0].header_values("authorization"),
        [sim.basic("u-alice").as_str()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cc_clients_python_lib_creates_lists_deletes_and_parses_a_denial() {
    let python = tokio::task::spawn_blocking(venv_python).await.unwrap();
    let sim = Sim::start().await;
    let gw = support::start(support::config(&sim.url(), "")).await;
    let alice = sim.key("u-alice");
    let dave = sim.key("u-dave");

    let mut command = Command::new(python);
    command
        .arg(python_script("cc_client_flow.py"))
        .env("KEYGATE_URL", format!("http://{}", gw.local_addr()))
        .env("ALLOWED_KEY", &alice.key_id)
        .env("ALLOWED_SECRET", &alice.secret)
        .env("DENIED_KEY", &dave.key_id)
        .env("DENIED_SECRET", &dave.secret)
        .env("OWNER", "sa-orders")
        .env("RESOURCE", "lkc-prod01")
        // requests honours proxy variables; keygate is on loopback.
        .env("NO_PROXY", "*")
        .env("no_proxy", "*");
    let output = tokio::task::spawn_blocking(move || run_bounded(command, Duration::from_secs(60)))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "cc_client_flow.py failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let created = summary["created"].as_str().unwrap();
    assert!(
        summary["listed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == created),
        "{summary}"
    );
    assert_eq!(summary["denial"]["status"], "403", "{summary}");
    assert_eq!(summary["denial"]["code"], "user_unauthorized", "{summary}");
    assert_eq!(
        summary["denial"]["rule_ids"],
        serde_json::json!(["matrix.deny.sa_no_role"])
    );
    let detail = summary["denial"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("sa-orders") && detail.contains("u-dave"),
        "{detail}"
    );
    // The client's own secret never shows in what it printed.
    assert!(!stdout.contains(&alice.secret) && !stdout.contains("cflt"));

    // What reached the upstream: the library's create, list and delete, not dave's create.
    let seen = sim.received(API_KEYS);
    let by_library: Vec<_> = seen
        .iter()
        .filter(|r| {
            r.header_values("user-agent")
                .iter()
                .any(|ua| ua.starts_with("python-requests/"))
        })
        .collect();
    let creates: Vec<_> = by_library.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(creates.len(), 1, "{seen:?}");
    assert_eq!(
        creates[0].header_values("authorization"),
        [sim.basic("u-alice").as_str()]
    );
    assert!(by_library.iter().any(|r| r.method == "GET"
        && r.path_and_query
            .starts_with("/iam/v2/api-keys?spec.owner=sa-orders")));
    let delete_path = format!("{API_KEYS}/{created}");
    assert!(by_library
        .iter()
        .any(|r| r.method == "DELETE" && r.path_and_query == delete_path));
    // The key is gone upstream.
    let gone = governed::send(governed::request(
        "GET",
        gw.local_addr(),
        &delete_path,
        Some(&sim.basic("u-alice")),
        Vec::new(),
    ))
    .await;
    assert_ne!(
        gone.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&gone.body)
    );
}
