//! The audit trail end to end, in-process against the simulator: one event per governed request
//! whatever its outcome (two for a create), every one valid against the JSON Schema; ungoverned
//! events only when configured; blocking mode refuses what it cannot record.

use std::path::PathBuf;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;

use crate::support::audit::{create_body, decision, read_events};
use crate::support::sim::Sim;
use crate::support::{self, within, Collected};

/// keygate in front of the simulator with a blocking audit file.
struct Harness {
    sim: Sim,
    gw: keygate::Gateway,
    path: PathBuf,
    seen: usize,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    async fn start(extra: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        Harness::with_file(&path, "blocking", extra, Some(dir)).await
    }

    async fn with_file(
        path: &std::path::Path,
        mode: &str,
        extra: &str,
        dir: Option<tempfile::TempDir>,
    ) -> Harness {
        let sim = Sim::start().await;
        let audit = format!(
            "[audit]\nfile = \"{}\"\nfile_mode = \"{mode}\"\ninstance_id = \"audit-test\"\n{extra}",
            path.display()
        );
        let gw = support::start(support::config(&sim.url(), &audit)).await;
        Harness {
            sim,
            gw,
            path: path.to_path_buf(),
            seen: 0,
            _dir: dir,
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        principal: Option<&str>,
        body: Option<&str>,
    ) -> Collected {
        let auth = principal.map(|p| self.sim.basic(p));
        send_to(
            self.gw.local_addr(),
            method,
            path,
            auth,
            body.map(str::to_string),
        )
        .await
    }

    /// Events written since the last call (blocking mode: durable before the response).
    fn new_events(&mut self) -> Vec<Value> {
        let all = read_events(&self.path);
        let new = all[self.seen..].to_vec();
        self.seen = all.len();
        new
    }

    async fn metrics(&self) -> String {
        let m = support::get(&support::url(self.gw.admin_addr(), "/metrics")).await;
        String::from_utf8(m.body.to_vec()).unwrap()
    }
}

/// Sends one request to keygate at `addr`.
async fn send_to(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<String>,
    body: Option<String>,
) -> Collected {
    let mut request = Request::builder()
        .method(method)
        .uri(support::url(addr, path));
    if let Some(auth) = authorization {
        request = request.header("authorization", auth);
    }
    let body = match body {
        Some(b) => {
            request = request.header("content-type", "application/json");
            Full::new(Bytes::from(b))
        }
        None => Full::default(),
    };
    within(
        10,
        support::send(&support::client(), request.body(body).unwrap()),
    )
    .await
}

/// Asserts the principal is exactly the caller's identity, with no credential.
fn assert_principal(event: &Value, id: &str, key_id: &str) {
    let principal = &event["data"]["principal"];
    let mut keys: Vec<&str> = principal
        .as_object()
        .unwrap_or_else(|| panic!("no principal: {event}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["authenticationMethod", "id", "keyId", "kind"]);
    assert_eq!(principal["id"], id);
    assert_eq!(principal["keyId"], key_id);
    assert_eq!(principal["authenticationMethod"], "basic");
}

fn assert_no_secret(events: &[Value], secret: &str) {
    for event in events {
        assert!(!event.to_string().contains(secret), "secret in {event}");
    }
}

#[tokio::test]
async fn allowed_create_records_the_request_before_forwarding_and_the_created_key_after() {
    let mut h = Harness::start("").await;
    let request = Request::post(support::url(h.gw.local_addr(), "/iam/v2/api-keys"))
        .header("authorization", h.sim.basic("u-alice"))
        .header("content-type", "application/json")
        .header("x-request-id", "audit-create-1")
        .body(Full::new(Bytes::from(create_body(
            "sa-orders",
            "lkc-prod01",
        ))))
        .unwrap();
    let response = within(10, support::send(&support::client(), request)).await;
    assert_eq!(response.status, 202);
    let created = response.json();
    let created_id = created["id"].as_str().unwrap();
    let secret = created["spec"]["secret"].as_str().unwrap();
    let request_id = "audit-create-1";

    let events = h.new_events();
    assert_eq!(events.len(), 2, "{events:#?}");
    let (received, complete) = (&events[0], &events[1]);
    for event in &events {
        assert_eq!(event["type"], "io.keygate.apikey.create");
        assert_eq!(event["source"], "keygate://audit-test");
        assert_eq!(event["data"]["requestId"], request_id);
        assert_eq!(event["data"]["methodName"], "CreateAPIKey");
        assert_principal(event, "u-alice", &h.sim.key("u-alice").key_id);
        let target = &event["data"]["target"];
        assert_eq!(target["owner"], "sa-orders");
        assert_eq!(target["resourceId"], "lkc-prod01");
        assert_eq!(target["resourceType"], "Kafka");
        assert_eq!(target["environment"], "env-prod01");
        assert_eq!(decision(event)["result"], "allow");
        assert_eq!(decision(event)["decidedBy"], "matrix");
        assert!(!decision(event)["ruleIds"].as_array().unwrap().is_empty());
    }
    assert_eq!(received["data"]["stage"], "request_received");
    assert!(received["data"].get("status").is_none());
    assert!(received["data"].get("createdKeyId").is_none());
    assert_eq!(complete["data"]["stage"], "response_complete");
    assert_eq!(complete["data"]["status"], 202);
    assert_eq!(complete["data"]["upstreamStatus"], 202);
    assert_eq!(complete["data"]["createdKeyId"], created_id);
    assert!(received["data"]["target"].get("keyId").is_none());
    assert_eq!(complete["data"]["target"]["keyId"], created_id);
    assert_eq!(complete["sequence"], "00000000000000000002");
    assert_no_secret(&events, secret);
    assert_no_secret(&events, &h.sim.key("u-alice").secret);
}

#[tokio::test]
async fn reads_updates_and_deletes_record_one_event_each() {
    let mut h = Harness::start("").await;
    let created = h
        .send(
            "POST",
            "/iam/v2/api-keys",
            Some("u-alice"),
            Some(&create_body("sa-orders", "lkc-prod01")),
        )
        .await
        .json();
    let id = created["id"].as_str().unwrap().to_string();
    h.new_events();
    let key_path = format!("/iam/v2/api-keys/{id}");
    let cases = [
        (
            "GET",
            "/iam/v2/api-keys",
            None,
            200,
            "io.keygate.apikey.list",
        ),
        ("GET", key_path.as_str(), None, 200, "io.keygate.apikey.get"),
        (
            "PATCH",
            key_path.as_str(),
            Some(r#"{"spec":{"description":"renamed"}}"#),
            200,
            "io.keygate.apikey.update",
        ),
        (
            "DELETE",
            key_path.as_str(),
            None,
            204,
            "io.keygate.apikey.delete",
        ),
    ];
    for (method, path, body, status, event_type) in cases {
        let response = h.send(method, path, Some("u-alice"), body).await;
        assert_eq!(response.status, status, "{method} {path}");
        let events = h.new_events();
        assert_eq!(events.len(), 1, "{method} {path}: {events:#?}");
        let event = &events[0];
        assert_eq!(event["type"], event_type);
        assert_eq!(event["data"]["stage"], "response_complete");
        assert_eq!(event["data"]["status"], status);
        assert_eq!(event["data"]["upstreamStatus"], status);
        assert_eq!(event["data"]["http"]["method"], method);
        assert_eq!(event["data"]["http"]["path"], path);
        assert_eq!(decision(event)["result"], "allow");
        assert_principal(event, "u-alice", &h.sim.key("u-alice").key_id);
        if path != "/iam/v2/api-keys" {
            assert_eq!(event["data"]["target"]["keyId"], id.as_str());
        }
    }
}

#[tokio::test]
async fn guard_denial_records_one_event_without_a_principal() {
    let mut h = Harness::start("").await;
    let body = r#"{"spec":{"owner":{"id":"sa-orders"},"owner":{"id":"u-alice"},"resource":{"id":"lkc-prod01"}}}"#;
    let response = h
        .send("POST", "/iam/v2/api-keys", Some("u-alice"), Some(body))
        .await;
    assert_eq!(response.status, 400);
    let events = h.new_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["data"]["stage"], "response_complete");
    assert_eq!(event["data"]["status"], 400);
    assert_eq!(decision(event)["result"], "deny");
    assert_eq!(decision(event)["decidedBy"], "guard");
    assert!(decision(event)["explanation"]
        .as_str()
        .unwrap()
        .contains("duplicate key"));
    assert!(event["data"].get("principal").is_none(), "{event}");
    assert!(event["data"].get("upstreamStatus").is_none());
    assert!(h.sim.received("/iam/v2/api-keys").is_empty());

    // A non-canonical path aimed at the api-keys endpoints is governed, and audited, too.
    let response = h
        .send("GET", "/iam/v2/api-keys/ABC/../XYZ", Some("u-alice"), None)
        .await;
    assert_eq!(response.status, 400);
    let events = h.new_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["data"]["methodName"], "RejectedApiKeyRequest");
    assert_eq!(decision(&events[0])["decidedBy"], "guard");
}

#[tokio::test]
async fn identity_denial_records_one_event_without_a_principal_or_credential() {
    let mut h = Harness::start("").await;
    let alice = h.sim.key("u-alice");
    use base64::Engine;
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:cfltWRONGwrongWRONGwrongWRONGwrongWRONGwrongWRONGwrongWRONGwrong",
            alice.key_id
        ))
    );
    let request = Request::post(support::url(h.gw.local_addr(), "/iam/v2/api-keys"))
        .header("authorization", wrong)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(create_body(
            "sa-orders",
            "lkc-prod01",
        ))))
        .unwrap();
    let response = within(10, support::send(&support::client(), request)).await;
    assert_eq!(response.status, 401);
    let events = h.new_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["type"], "io.keygate.apikey.create");
    assert_eq!(event["data"]["status"], 401);
    assert_eq!(decision(event)["result"], "deny");
    assert_eq!(decision(event)["decidedBy"], "identity");
    assert!(event["data"].get("principal").is_none(), "{event}");
    assert_no_secret(&events, "cfltWRONG");
    // The key lookup was the only request upstream: the create was never forwarded.
    assert!(h
        .sim
        .received("/iam/v2/api-keys")
        .iter()
        .all(|r| r.method == "GET"));

    let response = h.send("GET", "/iam/v2/api-keys", None, None).await;
    assert_eq!(response.status, 401);
    let events = h.new_events();
    assert_eq!(events.len(), 1);
    assert_eq!(decision(&events[0])["decidedBy"], "identity");
}

#[tokio::test]
async fn matrix_denial_records_the_rule_explanation_target_and_principal() {
    let mut h = Harness::start("").await;
    let response = h
        .send(
            "POST",
            "/iam/v2/api-keys",
            Some("u-dave"),
            Some(&create_body("sa-orders", "lkc-prod01")),
        )
        .await;
    assert_eq!(response.status, 403);
    let denial = response.error();
    let events = h.new_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["data"]["stage"], "response_complete");
    assert_eq!(event["data"]["status"], 403);
    assert!(event["data"].get("upstreamStatus").is_none());
    assert_principal(event, "u-dave", &h.sim.key("u-dave").key_id);
    assert_eq!(event["data"]["target"]["owner"], "sa-orders");
    assert_eq!(event["data"]["target"]["resourceId"], "lkc-prod01");
    assert_eq!(decision(event)["result"], "deny");
    assert_eq!(decision(event)["decidedBy"], "matrix");
    assert_eq!(decision(event)["ruleIds"], denial["meta"]["rule_ids"]);
    assert_eq!(decision(event)["explanation"], denial["detail"]);
    assert!(h
        .sim
        .received("/iam/v2/api-keys")
        .iter()
        .all(|r| r.method == "GET"));
}

#[tokio::test]
async fn rate_limited_request_records_one_event_with_the_principal() {
    let limits = r#"
[[ratelimit.limits]]
id = "one-create"
key = "principal_action"
actions = ["CreateApiKey"]
quota = { per = "1h", requests = 1 }
"#;
    let mut h = Harness::start(limits).await;
    let body = create_body("sa-orders", "lkc-prod01");
    let first = h
        .send("POST", "/iam/v2/api-keys", Some("u-alice"), Some(&body))
        .await;
    assert_eq!(first.status, 202);
    assert_eq!(h.new_events().len(), 2);
    let second = h
        .send("POST", "/iam/v2/api-keys", Some("u-alice"), Some(&body))
        .await;
    assert_eq!(second.status, 429);
    let events = h.new_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["data"]["status"], 429);
    assert_eq!(decision(event)["result"], "deny");
    assert_eq!(decision(event)["decidedBy"], "rate_limit");
    assert_principal(event, "u-alice", &h.sim.key("u-alice").key_id);
    assert_eq!(
        h.sim
            .received("/iam/v2/api-keys")
            .iter()
            .filter(|r| r.method == "POST")
            .count(),
        1
    );
}

#[tokio::test]
async fn upstream_error_answer_is_recorded_with_its_status() {
    let mut h = Harness::start("").await;
    h.sim.sim.inject_fault(keygate::simulator::Fault {
        method: Some(http::Method::POST),
        path_prefix: "/iam/v2/api-keys".into(),
        status: 500,
        headers: vec![("content-type".into(), "application/json".into())],
        body: r#"{"errors":[{"status":"500","detail":"boom"}]}"#.into(),
        times: 1,
    });
    let response = h
        .send(
            "POST",
            "/iam/v2/api-keys",
            Some("u-alice"),
            Some(&create_body("sa-orders", "lkc-prod01")),
        )
        .await;
    assert_eq!(response.status, 500);
    let events = h.new_events();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0]["data"]["stage"], "request_received");
    let complete = &events[1];
    assert_eq!(complete["data"]["status"], 500);
    assert_eq!(complete["data"]["upstreamStatus"], 500);
    assert!(complete["data"].get("createdKeyId").is_none());
    assert_eq!(decision(complete)["result"], "allow");
    assert_eq!(decision(complete)["decidedBy"], "matrix");
}

#[tokio::test]
async fn unreachable_upstream_is_recorded_as_an_upstream_error() {
    // Identity from a static directory, so the request gets past identity with no upstream.
    let dir = tempfile::tempdir().unwrap();
    let secret = "cfltDirectoryDirectoryDirectoryDirectoryDirectoryDirectoryDirect";
    let directory = dir.path().join("keys.toml");
    std::fs::write(
        &directory,
        format!(
            "[[keys]]\nid = \"DIRALICE00000001\"\nprincipal = \"u-alice\"\nsecret_hash = \"{}\"\n",
            keygate::identity::directory::hash_secret(secret).unwrap()
        ),
    )
    .unwrap();
    let path = dir.path().join("audit.jsonl");
    let down = support::upstream::refused().await;
    let config = support::config(
        &format!("http://{down}"),
        &format!(
            "[identity]\nsource = \"directory\"\ndirectory = \"{}\"\n[audit]\nfile = \"{}\"\n",
            directory.display(),
            path.display()
        ),
    );
    let gw = support::start(config).await;
    use base64::Engine;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("DIRALICE00000001:{secret}"))
    );
    let request = Request::post(support::url(gw.local_addr(), "/iam/v2/api-keys"))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(create_body(
            "sa-orders",
            "lkc-prod01",
        ))))
        .unwrap();
    let response = within(10, support::send(&support::client(), request)).await;
    assert_eq!(response.status, 502);
    let events = read_events(&path);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0]["data"]["stage"], "request_received");
    assert_eq!(decision(&events[0])["result"], "allow");
    let complete = &events[1];
    assert_eq!(complete["data"]["status"], 502);
    assert!(complete["data"].get("upstreamStatus").is_none());
    assert_eq!(decision(complete)["result"], "error");
    assert_eq!(decision(complete)["decidedBy"], "upstream");
    assert!(decision(complete)["explanation"]
        .as_str()
        .unwrap()
        .contains("connect"));
    assert_principal(complete, "u-alice", "DIRALICE00000001");
}

#[tokio::test]
async fn ungoverned_requests_are_recorded_only_when_configured() {
    for configured in [false, true] {
        let extra = if configured {
            "ungoverned = true\n"
        } else {
            ""
        };
        let mut h = Harness::start(extra).await;
        let response = h
            .send("GET", "/org/v2/environments", Some("u-alice"), None)
            .await;
        assert_eq!(response.status, 200);
        // Ungoverned events are queued before the response is returned; the governed request's
        // blocking write after it makes everything queued so far durable.
        let list = h
            .send("GET", "/iam/v2/api-keys", Some("u-alice"), None)
            .await;
        assert_eq!(list.status, 200);
        let events = h.new_events();
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        if configured {
            assert_eq!(types, ["io.keygate.http.request", "io.keygate.apikey.list"]);
            let event = &events[0];
            assert_eq!(event["data"]["methodName"], "HttpRequest");
            assert_eq!(event["data"]["http"]["path"], "/org/v2/environments");
            assert_eq!(event["data"]["status"], 200);
            assert!(event["data"].get("decision").is_none(), "{event}");
            assert!(event["data"].get("principal").is_none(), "{event}");
        } else {
            assert_eq!(types, ["io.keygate.apikey.list"]);
        }
    }
}

#[tokio::test]
async fn blocking_mode_without_a_writable_audit_file_refuses_governed_requests() {
    // /dev/full accepts the open and fails every write with ENOSPC: a full audit disk.
    let h = Harness::with_file(std::path::Path::new("/dev/full"), "blocking", "", None).await;
    let response = h
        .send(
            "POST",
            "/iam/v2/api-keys",
            Some("u-alice"),
            Some(&create_body("sa-orders", "lkc-prod01")),
        )
        .await;
    assert_eq!(response.status, 503);
    let error = response.error();
    assert_eq!(error["code"], "audit_unavailable");
    // The create's request record is committed while it is forwarded, so this first create may
    // have reached the upstream; its caller never got the key (or its secret): the response
    // waits for both records. Such a key is what reconcile reports as unmanaged.
    assert!(
        !String::from_utf8_lossy(&response.body).contains("cflt"),
        "a secret reached the caller without a durable audit record"
    );
    let forwarded = |h: &Harness| {
        h.sim
            .received("/iam/v2/api-keys")
            .iter()
            .filter(|r| r.method == "POST")
            .count()
    };
    let before = forwarded(&h);
    assert!(before <= 1);
    // Once the sink is known to have failed, no create is forwarded at all.
    let second = h
        .send(
            "POST",
            "/iam/v2/api-keys",
            Some("u-alice"),
            Some(&create_body("sa-orders", "lkc-prod01")),
        )
        .await;
    assert_eq!(second.status, 503);
    assert_eq!(forwarded(&h), before, "forwarded after the sink failed");

    let list = h
        .send("GET", "/iam/v2/api-keys", Some("u-alice"), None)
        .await;
    assert_eq!(list.status, 503);
    assert_eq!(list.error()["code"], "audit_unavailable");
    // Ungoverned traffic never waits for the audit trail.
    let environments = h
        .send("GET", "/org/v2/environments", Some("u-alice"), None)
        .await;
    assert_eq!(environments.status, 200);

    let ready = support::get(&support::url(h.gw.admin_addr(), "/readyz")).await;
    assert_eq!(ready.status, 503);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("keygate_audit_file_healthy 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"keygate_audit_events_written_total{sink="file"} 0"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn async_mode_never_refuses_and_counts_what_it_lost() {
    let h = Harness::with_file(std::path::Path::new("/dev/full"), "async", "", None).await;
    let response = h
        .send(
            "POST",
            "/iam/v2/api-keys",
            Some("u-alice"),
            Some(&create_body("sa-orders", "lkc-prod01")),
        )
        .await;
    assert_eq!(response.status, 202);
    for _ in 0..3 {
        let list = h
            .send("GET", "/iam/v2/api-keys", Some("u-alice"), None)
            .await;
        assert_eq!(list.status, 200);
    }
    // Shutting down flushes the audit queue: afterwards all five events are accounted for.
    let metrics = h.gw.metrics().clone();
    h.gw.shutdown();
    within(10, h.gw.wait()).await;
    let text = metrics.render();
    assert!(
        text.contains(r#"keygate_audit_events_failed_total{sink="file"} 5"#),
        "{text}"
    );
    assert!(text.contains("keygate_audit_file_healthy 0"), "{text}");
}

#[tokio::test]
async fn metrics_report_group_commit_of_the_blocking_file() {
    let mut h = Harness::start("").await;
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (addr, auth) = (h.gw.local_addr(), h.sim.basic("u-alice"));
        requests.spawn(async move {
            let body = create_body("sa-orders", "lkc-prod01");
            send_to(addr, "POST", "/iam/v2/api-keys", Some(auth), Some(body)).await
        });
    }
    while let Some(response) = requests.join_next().await {
        assert_eq!(response.unwrap().status, 202);
    }
    let events = h.new_events();
    assert_eq!(events.len(), 16);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"keygate_audit_events_written_total{sink="file"} 16"#),
        "{metrics}"
    );
    let fsyncs: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keygate_audit_file_fsyncs_total "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((1..=16).contains(&fsyncs), "{metrics}");
    assert!(metrics.contains("keygate_audit_file_events_per_fsync "));
    assert!(metrics.contains(r#"keygate_audit_events_dropped_total{sink="file"} 0"#));
}

// === keygate audit verify ===

/// `keygate audit verify FILE`: (exit code, stdout, stderr).
fn verify_cli(path: &std::path::Path) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A real audit file of six records, as lines (without newlines).
async fn six_records() -> (tempfile::TempDir, Vec<String>) {
    let mut h = Harness::start("").await;
    for _ in 0..6 {
        let response = h
            .send("GET", "/iam/v2/api-keys", Some("u-alice"), None)
            .await;
        assert_eq!(response.status, 200);
    }
    assert_eq!(h.new_events().len(), 6);
    let text = std::fs::read_to_string(&h.path).unwrap();
    let dir = h._dir.take().unwrap();
    (dir, text.lines().map(str::to_string).collect())
}

fn write_lines(dir: &tempfile::TempDir, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.path().join(name);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn verify_reports_count_and_final_hash_of_an_intact_file() {
    let (dir, lines) = six_records().await;
    let (code, stdout, stderr) = verify_cli(&dir.path().join("audit.jsonl"));
    assert_eq!(code, 0, "{stderr}");
    let last_hash = ring::digest::digest(&ring::digest::SHA256, lines[5].as_bytes());
    let hex: String = last_hash
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        stdout.trim(),
        format!("ok: 6 records, final hash {hex}"),
        "{stdout}"
    );
}

#[tokio::test]
async fn verify_names_the_first_edited_deleted_or_reordered_record() {
    let (dir, lines) = six_records().await;

    let mut edited = lines.clone();
    edited[2] = edited[2].replacen("\"status\":200", "\"status\":403", 1);
    assert_ne!(edited[2], lines[2]);
    let mut deleted = lines.clone();
    deleted.remove(2);
    let mut reordered = lines.clone();
    reordered.swap(2, 3);

    for (name, tampered) in [
        ("edited.jsonl", edited),
        ("deleted.jsonl", deleted),
        ("reordered.jsonl", reordered),
    ] {
        let path = write_lines(&dir, name, &tampered);
        let (code, stdout, stderr) = verify_cli(&path);
        assert_eq!(code, 1, "{name}: {stdout}{stderr}");
        assert!(stdout.is_empty(), "{name}: {stdout}");
        assert!(
            stderr.starts_with("broken at sequence 3:"),
            "{name}: {stderr}"
        );
    }
}

#[tokio::test]
async fn verify_reports_a_torn_final_line_as_an_interrupted_write() {
    let (dir, lines) = six_records().await;
    let path = write_lines(&dir, "torn.jsonl", &lines);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&lines[5][..40]);
    std::fs::write(&path, text).unwrap();
    let (code, stdout, stderr) = verify_cli(&path);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("ok: 6 records") && stdout.contains("torn final line after sequence 6"),
        "{stdout}"
    );

    let (code, _, stderr) = verify_cli(&dir.path().join("missing.jsonl"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.starts_with("cannot verify:"), "{stderr}");
}
