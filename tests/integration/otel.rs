//! OpenTelemetry traces, end to end: the real binary (`keygate serve`, whose tracing set-up is
//! process-global) exports to a loopback OTLP collector in front of the simulator.

use std::collections::BTreeSet;
use std::process::Command;

use base64::Engine;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::otlp::{Collector, Span, KIND_CLIENT, KIND_SERVER};
use crate::support::sim::Sim;
use crate::support::{self, binary, within};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_PARENT: &str = "00f067aa0ba902b7";
/// Never to appear in an export: a create body field.
const BODY_CANARY: &str = "CANARY-BODY-6d0f1c27e9";

/// `keygate serve` against `sim`, exporting to `collector`.
fn serve(
    dir: &tempfile::TempDir,
    sim: &Sim,
    collector: &Collector,
    env: &[(&str, &str)],
) -> binary::Running {
    let path = dir.path().join("keygate.toml");
    let text = format!(
        r#"
[listener]
address = "127.0.0.1:0"
shutdown_grace = "5s"
[admin]
address = "127.0.0.1:0"
[upstream]
url = "{upstream}"
[log]
format = "json"
level = "info"
[audit]
file = "{audit}"
{authz}
[telemetry]
otlp_endpoint = "{endpoint}"
instance_id = "kg-otel-test"
"#,
        upstream = sim.url(),
        audit = dir.path().join("audit.jsonl").display(),
        authz = support::file_authz_for_file(),
        endpoint = collector.endpoint(),
    );
    std::fs::write(&path, text).unwrap();
    binary::spawn_with_env(&["serve", "--config", path.to_str().unwrap()], env)
}

fn create(
    addr: std::net::SocketAddr,
    authorization: &str,
    traceparent: Option<&str>,
) -> Request<Full<Bytes>> {
    let body = serde_json::json!({ "spec": {
        "display_name": "orders-producer",
        "description": BODY_CANARY,
        "owner": { "id": "sa-orders" },
        "resource": { "id": "lkc-prod01" },
    }});
    let mut request = Request::post(support::url(addr, "/iam/v2/api-keys"))
        .header("authorization", authorization)
        .header("content-type", "application/json");
    if let Some(tp) = traceparent {
        request = request
            .header("traceparent", tp)
            .header("tracestate", "congo=t61rcWkgMzE");
    }
    request
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn names(spans: &[&Span]) -> BTreeSet<String> {
    spans.iter().map(|s| s.name.clone()).collect()
}

fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.trace_id == parent.trace_id && s.parent_span_id == parent.span_id)
        .collect()
}

fn one<'a>(spans: &[&'a Span], name: &str) -> &'a Span {
    let found: Vec<&&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one `{name}` span in {spans:#?}");
    found[0]
}

fn terminate(keygate: &mut binary::Running) {
    let pid = keygate.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = keygate.child.wait().unwrap();
    assert!(status.success(), "keygate exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_and_denied_creates_export_their_span_trees_without_secrets() {
    let sim = Sim::start().await;
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut keygate = serve(&dir, &sim, &collector, &[]);
    let (addr, _) = tokio::task::block_in_place(|| keygate.serve_addresses());
    let client = support::client();

    // Allowed: bob creates a Kafka key for sa-orders, continuing the caller's trace.
    let bob = sim.basic("u-bob");
    let caller = format!("00-{CALLER_TRACE}-{CALLER_PARENT}-01");
    let allowed = within(
        10,
        support::send(&client, create(addr, &bob, Some(&caller))),
    )
    .await;
    assert_eq!(allowed.status, 202, "{:?}", allowed.body);
    let created_secret = allowed.json()["spec"]["secret"]
        .as_str()
        .unwrap()
        .to_string();

    // Denied: dave holds no role that allows it; no caller trace, so a new one starts.
    let dave = sim.basic("u-dave");
    let denied = within(10, support::send(&client, create(addr, &dave, None))).await;
    assert_eq!(denied.status, 403, "{:?}", denied.body);

    // The forwarded create carries the upstream span's context in the caller's trace.
    let forwarded: Vec<_> = sim
        .received("/iam/v2/api-keys")
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(forwarded.len(), 1, "only the allowed create is forwarded");
    let sent = forwarded[0].header_values("traceparent");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let sent: Vec<&str> = sent[0].split('-').collect();
    assert_eq!(
        sent[1], CALLER_TRACE,
        "the caller's trace continues upstream"
    );
    assert_ne!(
        sent[2], CALLER_PARENT,
        "the upstream's parent is keygate's span"
    );
    assert_eq!(
        forwarded[0].header_values("tracestate"),
        ["congo=t61rcWkgMzE"]
    );

    // A graceful stop flushes the exporter: everything arrives before the process exits.
    tokio::task::block_in_place(|| terminate(&mut keygate));
    let spans = collector.spans();

    // --- the allowed create ---
    let servers: Vec<&Span> = spans.iter().filter(|s| s.kind == KIND_SERVER).collect();
    let server = servers
        .iter()
        .find(|s| s.trace_id == CALLER_TRACE)
        .unwrap_or_else(|| panic!("no server span in the caller's trace: {spans:#?}"));
    assert_eq!(server.parent_span_id, CALLER_PARENT);
    assert_eq!(server.name, "POST /iam/v2/api-keys");
    assert_eq!(server.attr("http.request.method"), "POST");
    assert_eq!(server.attr("http.route"), "/iam/v2/api-keys");
    assert_eq!(server.attr("http.response.status_code"), "202");
    assert_eq!(server.attr("keygate.action"), "CreateApiKey");
    assert_eq!(server.attr("keygate.principal.id"), "u-bob");
    assert_eq!(server.attr("keygate.decision"), "allow");
    assert_eq!(server.resource["service.name"], "keygate");
    assert_eq!(
        server.resource["service.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(server.resource["service.instance.id"], "kg-otel-test");

    let stages = children(&spans, server);
    assert_eq!(
        names(&stages),
        [
            "audit_gate",
            "audit_write",
            "decide",
            "guard",
            "identity",
            "ratelimit",
            "upstream"
        ]
        .map(String::from)
        .into(),
        "{stages:#?}"
    );
    assert_eq!(
        one(&stages, "identity").attr("keygate.identity.cache"),
        "miss"
    );
    let decide = one(&stages, "decide");
    assert_eq!(decide.attr("keygate.decision"), "allow");
    assert_eq!(decide.attr("keygate.principal.id"), "u-bob");
    assert_eq!(decide.attr("keygate.action"), "CreateApiKey");
    assert_eq!(decide.attr("keygate.resource.type"), "Kafka");
    assert!(!decide.attr("keygate.decision.rule_ids").is_empty());
    assert_eq!(decide.attr("keygate.decision.by"), "matrix");
    assert!(!decide.attr("keygate.policy.revision").is_empty());
    let upstream = one(&stages, "upstream");
    assert_eq!(upstream.kind, KIND_CLIENT);
    assert_eq!(
        upstream.span_id, sent[2],
        "the upstream saw keygate's client span"
    );
    assert_eq!(upstream.attr("http.response.status_code"), "202");
    assert_eq!(
        one(&stages, "audit_write").attr("keygate.audit.stage"),
        "response_complete"
    );
    let gate_writes = children(&spans, one(&stages, "audit_gate"));
    assert_eq!(gate_writes.len(), 1, "{gate_writes:#?}");
    assert_eq!(
        gate_writes[0].attr("keygate.audit.stage"),
        "request_received"
    );

    // --- the denied create ---
    let denied_server = servers
        .iter()
        .find(|s| {
            s.attributes
                .get("http.response.status_code")
                .map(String::as_str)
                == Some("403")
        })
        .unwrap_or_else(|| panic!("no 403 server span: {spans:#?}"));
    assert_ne!(denied_server.trace_id, CALLER_TRACE);
    assert!(
        denied_server.parent_span_id.is_empty(),
        "a new trace starts"
    );
    assert_eq!(denied_server.attr("keygate.decision"), "deny");
    assert_eq!(denied_server.attr("keygate.principal.id"), "u-dave");
    assert_eq!(denied_server.attr("error.type"), "user_unauthorized");
    let stages = children(&spans, denied_server);
    assert_eq!(
        names(&stages),
        ["audit_write", "decide", "guard", "identity", "ratelimit"]
            .map(String::from)
            .into(),
        "no audit gate and no upstream call for a denial: {stages:#?}"
    );
    let decide = one(&stages, "decide");
    assert_eq!(decide.attr("keygate.decision"), "deny");
    assert_eq!(decide.attr("keygate.principal.id"), "u-dave");
    assert_eq!(decide.attr("error.type"), "user_unauthorized");

    // --- nothing secret in any payload ---
    let canaries = [
        sim.key("u-bob").secret,
        sim.key("u-dave").secret,
        bob.trim_start_matches("Basic ").to_string(),
        dave.trim_start_matches("Basic ").to_string(),
        BODY_CANARY.to_string(),
        created_secret,
    ];
    let payloads = collector.payloads();
    assert!(!payloads.is_empty());
    for payload in &payloads {
        for canary in &canaries {
            assert!(
                !payload
                    .windows(canary.len())
                    .any(|w| w == canary.as_bytes()),
                "an exported payload contains a secret or body canary"
            );
        }
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let bob_pair =
        String::from_utf8(engine.decode(bob.trim_start_matches("Basic ")).unwrap()).unwrap();
    assert!(
        bob_pair.contains(&sim.key("u-bob").secret),
        "the canary is the credential"
    );

    // --- log lines carry the ids of the span they were written in ---
    let logs: Vec<serde_json::Value> = keygate
        .stderr
        .try_iter()
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    let decision_log = logs
        .iter()
        .find(|l| l["message"] == "Decision" && l["principal.id"] == "u-bob")
        .unwrap_or_else(|| panic!("no decision log line: {logs:#?}"));
    let allowed_decide = one(&children(&spans, server), "decide");
    assert_eq!(decision_log["trace_id"], CALLER_TRACE);
    assert_eq!(decision_log["span_id"], allowed_decide.span_id.as_str());
    let access = logs
        .iter()
        .find(|l| l["message"] == "Request completed" && l["status"] == 202)
        .unwrap_or_else(|| panic!("no access log line: {logs:#?}"));
    assert_eq!(access["trace_id"], CALLER_TRACE);
    assert_eq!(access["span_id"], server.span_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_exported_while_serving() {
    let sim = Sim::start().await;
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A short batch delay (the standard variable), so the periodic export is what delivers.
    let keygate = serve(
        &dir,
        &sim,
        &collector,
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let (addr, _) = tokio::task::block_in_place(|| keygate.serve_addresses());
    let got = support::get(&support::url(addr, "/org/v2/environments")).await;
    assert!(got.status.is_client_error() || got.status.is_success());
    let spans = collector
        .wait_for(20, |spans| spans.iter().any(|s| s.kind == KIND_SERVER))
        .await;
    let server = spans.iter().find(|s| s.kind == KIND_SERVER).unwrap();
    assert_eq!(server.name, "GET");
    assert_eq!(server.attr("url.path"), "/org/v2/environments");
    assert!(
        children(&spans, server)
            .iter()
            .any(|s| s.name == "upstream"),
        "{spans:#?}"
    );
    drop(keygate);
}

#[tokio::test]
async fn without_telemetry_the_callers_trace_context_passes_through_unchanged() {
    let sim = Sim::start().await;
    let gateway = support::start(support::config(&sim.url(), "")).await;
    let caller = format!("00-{CALLER_TRACE}-{CALLER_PARENT}-01");
    let request = Request::get(support::url(gateway.local_addr(), "/org/v2/environments"))
        .header("traceparent", &caller)
        .header("tracestate", "congo=t61rcWkgMzE")
        .body(Full::default())
        .unwrap();
    within(10, support::send(&support::client(), request)).await;
    let received = sim.received("/org/v2/environments");
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].header_values("traceparent"), [caller.as_str()]);
    assert_eq!(
        received[0].header_values("tracestate"),
        ["congo=t61rcWkgMzE"]
    );
}
