//! A loopback OTLP/HTTP collector: captures every POST to `/v1/traces` and decodes the protobuf
//! with `opentelemetry-proto`'s types.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// One exported span, flattened.
#[derive(Debug, Clone)]
pub struct Span {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// `SpanKind` as its protobuf number (2 server, 3 client).
    pub kind: i32,
    pub attributes: BTreeMap<String, String>,
    pub resource: BTreeMap<String, String>,
}

impl Span {
    /// An attribute's value as text (arrays as `a,b`); panics if absent.
    pub fn attr(&self, key: &str) -> &str {
        self.attributes
            .get(key)
            .unwrap_or_else(|| panic!("span `{}` has no `{key}`: {:?}", self.name, self.attributes))
    }
}

pub const KIND_SERVER: i32 = 2;
pub const KIND_CLIENT: i32 = 3;

/// A running collector.
pub struct Collector {
    pub addr: SocketAddr,
    payloads: Arc<Mutex<Vec<Bytes>>>,
    received: watch::Receiver<usize>,
}

impl Collector {
    pub async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let payloads = Arc::new(Mutex::new(Vec::new()));
        let (count, received) = watch::channel(0usize);
        let count = Arc::new(count);
        let stored = payloads.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let stored = stored.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let stored = stored.clone();
                        let count = count.clone();
                        async move {
                            let ok = req.method() == http::Method::POST
                                && req.uri().path() == "/v1/traces"
                                && req.headers().get("content-type").map(|v| v.as_bytes())
                                    == Some(b"application/x-protobuf".as_slice());
                            let body = req.into_body().collect().await?.to_bytes();
                            let status = if ok {
                                let n = {
                                    let mut stored = stored.lock().unwrap();
                                    stored.push(body);
                                    stored.len()
                                };
                                count.send_replace(n);
                                StatusCode::OK
                            } else {
                                StatusCode::NOT_FOUND
                            };
                            let mut response = Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = status;
                            Ok::<_, hyper::Error>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector {
            addr,
            payloads,
            received,
        }
    }

    /// The endpoint to configure: `http://127.0.0.1:PORT/v1/traces`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Every payload received so far, as sent.
    pub fn payloads(&self) -> Vec<Bytes> {
        self.payloads.lock().unwrap().clone()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        let mut spans = Vec::new();
        for payload in self.payloads() {
            let export = ExportTraceServiceRequest::decode(payload).expect("OTLP protobuf");
            for rs in export.resource_spans {
                let resource = rs
                    .resource
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for s in ss.spans {
                        spans.push(Span {
                            name: s.name,
                            trace_id: hex(&s.trace_id),
                            span_id: hex(&s.span_id),
                            parent_span_id: hex(&s.parent_span_id),
                            kind: s.kind,
                            attributes: attributes(&s.attributes),
                            resource: resource.clone(),
                        });
                    }
                }
            }
        }
        spans
    }

    /// Waits (up to `secs`) until the spans received satisfy `done`, and returns them.
    pub async fn wait_for(&self, secs: u64, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let mut received = self.received.clone();
        let wait = async {
            loop {
                // Mark what is seen before reading, so a POST that lands after the read wakes us.
                received.borrow_and_update();
                let spans = self.spans();
                if done(&spans) {
                    return spans;
                }
                received.changed().await.expect("collector running");
            }
        };
        tokio::time::timeout(Duration::from_secs(secs), wait)
            .await
            .unwrap_or_else(|_| panic!("spans did not arrive: {:#?}", self.spans()))
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
            (kv.key.clone(), value.map(text).unwrap_or_default())
        })
        .collect()
}

fn text(value: &Value) -> String {
    match value {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::ArrayValue(a) => a
            .values
            .iter()
            .filter_map(|v| v.value.as_ref().map(text))
            .collect::<Vec<_>>()
            .join(","),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
