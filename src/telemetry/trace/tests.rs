use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request};
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId, Tracer as _};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tracing_subscriber::fmt::MakeWriter;

use super::*;
use crate::config::{Config, LogConfig, LogFormat};

// === helpers ===

/// Log output captured in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

fn log_config(format: LogFormat) -> LogConfig {
    LogConfig {
        format,
        level: "info".into(),
        access_log: true,
    }
}

/// A provider that keeps nothing: these tests look at ids and headers, not exports.
fn local_provider() -> SdkTracerProvider {
    SdkTracerProvider::builder().build()
}

fn request_with(headers: &[(&'static str, &'static str)]) -> Request<()> {
    let mut request = Request::post("/iam/v2/api-keys").body(()).unwrap();
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, HeaderValue::from_static(value));
    }
    request
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_PARENT: &str = "00f067aa0ba902b7";
const CALLER_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// === tracing off ===

#[test]
fn keygate_spans_are_disabled_when_tracing_is_off() {
    let logs = Captured::default();
    let subscriber = crate::telemetry::plain_subscriber(&log_config(LogFormat::Json), logs.clone());
    tracing::subscriber::with_default(subscriber, || {
        let request = request_with(&[("traceparent", CALLER_TRACEPARENT)]);
        let server = server_span(&request, &HeaderValue::from_static("r1"));
        let stage = stage_span("guard");
        let upstream = upstream_span(&Method::POST, &"upstream.test".parse().unwrap());
        let audit = audit_write_span("response_complete");
        assert!(server.is_disabled());
        assert!(stage.is_disabled());
        assert!(upstream.is_disabled());
        assert!(audit.is_disabled());

        // The caller's trace context passes through untouched.
        let mut headers = request.headers().clone();
        inject(&upstream, &mut headers);
        assert_eq!(headers["traceparent"], CALLER_TRACEPARENT);

        // Logging itself still works, without ids.
        let _entered = stage.enter();
        tracing::info!("still logged");
    });
    let lines = logs.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("still logged"));
    assert!(!lines[0].contains("trace_id"), "{}", lines[0]);
}

#[test]
fn annotate_does_not_evaluate_attributes_when_tracing_is_off() {
    // No test installs the global OpenTelemetry layer, so `enabled()` is false here.
    let mut called = false;
    annotate(|| {
        called = true;
        [KeyValue::new("k", "v")]
    });
    assert!(!called);
}

// === tracing on ===

#[test]
fn json_log_lines_in_a_span_carry_its_trace_and_span_ids() {
    let logs = Captured::default();
    let provider = local_provider();
    let subscriber = crate::telemetry::traced_subscriber(
        &log_config(LogFormat::Json),
        logs.clone(),
        tracer(&provider),
    );
    let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
        tracing::info!("outside");
        let request = request_with(&[]);
        let server = server_span(&request, &HeaderValue::from_static("r1"));
        let _server = server.enter();
        let stage = stage_span("decide");
        let _stage = stage.enter();
        tracing::info!(answer = 42, "inside");
        let cx = stage.context();
        let sc = cx.span().span_context().clone();
        (sc.trace_id().to_string(), sc.span_id().to_string())
    });
    let lines = logs.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let outside: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert!(outside.get("trace_id").is_none(), "{outside}");
    let inside: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(inside["message"], "inside");
    assert_eq!(inside["answer"], 42);
    assert_eq!(inside["trace_id"], trace_id.as_str());
    assert_eq!(inside["span_id"], span_id.as_str());
    assert!(inside.get("spans").is_none() && inside.get("span").is_none());
}

#[test]
fn text_log_lines_in_a_span_end_with_its_ids() {
    let logs = Captured::default();
    let provider = local_provider();
    let subscriber = crate::telemetry::traced_subscriber(
        &log_config(LogFormat::Text),
        logs.clone(),
        tracer(&provider),
    );
    let expected = tracing::subscriber::with_default(subscriber, || {
        let span = stage_span("guard");
        let _entered = span.enter();
        tracing::info!("inside");
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        format!("trace_id={} span_id={}", sc.trace_id(), sc.span_id())
    });
    let lines = logs.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].ends_with(&expected), "{}", lines[0]);
}

#[test]
fn caller_trace_is_continued_and_the_upstream_span_is_propagated() {
    let provider = local_provider();
    let subscriber = crate::telemetry::traced_subscriber(
        &log_config(LogFormat::Json),
        std::io::sink,
        tracer(&provider),
    );
    tracing::subscriber::with_default(subscriber, || {
        let request = request_with(&[
            ("traceparent", CALLER_TRACEPARENT),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]);
        let server = server_span(&request, &HeaderValue::from_static("r1"));
        let _server = server.enter();
        let upstream = upstream_span(&Method::POST, &"upstream.test".parse().unwrap());
        let mut headers = request.headers().clone();
        inject(&upstream, &mut headers);

        let sent = headers["traceparent"].to_str().unwrap().to_string();
        let parts: Vec<&str> = sent.split('-').collect();
        assert_eq!(parts.len(), 4, "{sent}");
        assert_eq!(parts[1], CALLER_TRACE);
        let upstream_cx = upstream.context();
        assert_eq!(
            parts[2],
            upstream_cx.span().span_context().span_id().to_string()
        );
        assert_ne!(parts[2], CALLER_PARENT);
        assert_eq!(parts[3], "01", "the caller's sampled flag is kept");
        assert_eq!(headers["tracestate"], "congo=t61rcWkgMzE");
    });
}

#[test]
fn a_new_trace_starts_without_a_caller_traceparent_and_sends_no_empty_tracestate() {
    let provider = local_provider();
    let subscriber = crate::telemetry::traced_subscriber(
        &log_config(LogFormat::Json),
        std::io::sink,
        tracer(&provider),
    );
    tracing::subscriber::with_default(subscriber, || {
        let request = request_with(&[("traceparent", "not-a-traceparent")]);
        let server = server_span(&request, &HeaderValue::from_static("r1"));
        let _server = server.enter();
        let upstream = upstream_span(&Method::GET, &"upstream.test".parse().unwrap());
        let mut headers = HeaderMap::new();
        inject(&upstream, &mut headers);
        let sent = headers["traceparent"].to_str().unwrap();
        assert!(
            sent.starts_with("00-") && !sent.contains(CALLER_TRACE),
            "{sent}"
        );
        assert!(!headers.contains_key("tracestate"));
    });
}

// === attributes ===

#[test]
fn decision_attributes_describe_the_final_decision_without_secrets() {
    use crate::model::DecidedBy;
    use crate::model::{AuthMethod, Principal};
    use crate::state::{DecisionRecord, RequestState};
    let mut state = RequestState::for_test(http::Method::POST);
    assert!(decision_attributes(&state.span_facts()).is_empty());
    state.action = Some(Action::CreateApiKey);
    state.principal = Some(Arc::new(
        Principal::new(
            "u-bob",
            AuthMethod::ApiKey {
                key_id: "KEYID123".into(),
            },
        )
        .unwrap(),
    ));
    state.decided_by = Some(DecidedBy::Policy);
    state.decision = Some(DecisionRecord {
        allow: false,
        rule_ids: vec!["matrix.env_admin".into(), "naming-convention".into()],
        explanation: "denied by organisation policy: secret-ish text".into(),
        dry_run: vec!["max-keys".into()],
        revision: Some(Arc::new("rev-42".into())),
        ..DecisionRecord::default()
    });
    let attributes: std::collections::BTreeMap<String, String> =
        decision_attributes(&state.span_facts())
            .into_iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
    assert_eq!(attributes["keygate.decision"], "deny");
    assert_eq!(attributes["keygate.decision.by"], "policy");
    assert_eq!(attributes["keygate.principal.id"], "u-bob");
    assert_eq!(attributes["keygate.action"], "CreateApiKey");
    assert_eq!(attributes["keygate.policy.revision"], "rev-42");
    assert!(attributes["keygate.decision.rule_ids"].contains("naming-convention"));
    assert!(attributes["keygate.decision.dry_run"].contains("max-keys"));
    // Neither the explanation nor the credential's key id is an attribute.
    let all = format!("{attributes:?}");
    assert!(
        !all.contains("secret-ish") && !all.contains("KEYID123"),
        "{all}"
    );
}

// === ids ===

#[test]
fn ids_are_appended_inside_the_json_object() {
    let trace_id = TraceId::from_hex(CALLER_TRACE).unwrap();
    let span_id = SpanId::from_hex(CALLER_PARENT).unwrap();
    let line = ids::append_ids("{\"a\":1}\n".into(), trace_id, span_id, true);
    assert_eq!(
        line,
        format!("{{\"a\":1,\"trace_id\":\"{CALLER_TRACE}\",\"span_id\":\"{CALLER_PARENT}\"}}\n")
    );
    let text = ids::append_ids("INFO x: hello\n".into(), trace_id, span_id, false);
    assert_eq!(
        text,
        format!("INFO x: hello trace_id={CALLER_TRACE} span_id={CALLER_PARENT}\n")
    );
}

// === config ===

const AUTHZ: &str = "[authz]\norg_id = \"4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c\"\nbindings = \"b.toml\"\ninventory = \"i.toml\"\n";

#[test]
fn telemetry_is_off_unless_an_endpoint_is_configured() {
    let c = Config::from_toml(AUTHZ).unwrap();
    assert_eq!(c.telemetry.otlp_endpoint, None);
    assert_eq!(c.telemetry.sample_ratio, 1.0);
}

#[test]
fn telemetry_section_is_validated() {
    let base = format!("{AUTHZ}[telemetry]\n");
    let c = Config::from_toml(&format!(
        "{base}otlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nsample_ratio = 0.25\ninstance_id = \"kg-1\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.telemetry.otlp_endpoint.unwrap().to_string(),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(c.telemetry.sample_ratio, 0.25);
    assert_eq!(c.telemetry.instance_id.as_deref(), Some("kg-1"));

    let field = |extra: &str| {
        Config::from_toml(&format!("{base}{extra}"))
            .unwrap_err()
            .field_path()
            .map(str::to_string)
    };
    assert_eq!(
        field("otlp_endpoint = \"grpc://collector:4317\"\n").as_deref(),
        Some("telemetry.otlp_endpoint")
    );
    let with_password = Config::from_toml(&format!(
        "{base}otlp_endpoint = \"http://user:hunter2@collector/v1/traces\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(with_password.contains("telemetry.otlp_endpoint"));
    assert!(!with_password.contains("hunter2"), "{with_password}");
    assert_eq!(
        field("sample_ratio = 1.5\n").as_deref(),
        Some("telemetry.sample_ratio")
    );
    assert_eq!(
        field("sample_ratio = -0.1\n").as_deref(),
        Some("telemetry.sample_ratio")
    );
    assert_eq!(
        field("endpoint = \"http://x\"\n").as_deref(),
        Some("telemetry.endpoint")
    );
}

// === export ===

/// A loopback OTLP collector: every POST body, by path.
async fn collector() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(String, Bytes)>,
) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await?.to_bytes();
                            let _ = tx.send((path, body));
                            Ok::<_, hyper::Error>(http::Response::new(http_body_util::Full::new(
                                Bytes::new(),
                            )))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_exporter_thread_delivers_spans_through_the_tokio_client() {
    let (addr, mut posts) = collector().await;
    let config = TelemetryConfig {
        otlp_endpoint: None,
        sample_ratio: 1.0,
        instance_id: Some("kg-test".into()),
    };
    let endpoint: Uri = format!("http://{addr}/v1/traces").parse().unwrap();
    let provider = provider(&config, &endpoint).unwrap();
    tracer(&provider).in_span("exported", |_| {});
    // The SDK's batch thread polls the export with a plain `block_on`; the flush waits for it.
    let flushing = provider.clone();
    tokio::task::spawn_blocking(move || flushing.force_flush())
        .await
        .unwrap()
        .unwrap();

    let (path, body) = tokio::time::timeout(Duration::from_secs(10), posts.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(path, "/v1/traces");
    let export = ExportTraceServiceRequest::decode(body).unwrap();
    let resource = export.resource_spans[0].resource.as_ref().unwrap();
    let attribute = |key: &str| {
        resource
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .map(|v| format!("{:?}", v.value))
    };
    assert!(attribute("service.name").unwrap().contains("\"keygate\""));
    assert!(attribute("service.version")
        .unwrap()
        .contains(env!("CARGO_PKG_VERSION")));
    assert!(attribute("service.instance.id")
        .unwrap()
        .contains("kg-test"));
    let spans = &export.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "exported");

    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn export_client_needs_the_runtime() {
    let err = export::TokioHttpClient::new(EXPORT_TIMEOUT).unwrap_err();
    assert!(matches!(err, TraceError::NoRuntime));
}
