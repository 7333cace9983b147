//! Transparency: the same request gives the same answer directly from the simulator and through
//! keygate — status, body and end-to-end headers — over HTTP/1.1 and h2, with streamed bodies.

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::sim::Sim;
use crate::support::{self, binary, within, Collected};

/// Headers that legitimately differ between two exchanges (per-request ids, clocks, counters).
const VOLATILE: [&str; 5] = [
    "x-request-id",
    "x-upstream-request-id",
    "date",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
];

fn end_to_end(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut v: Vec<_> = headers
        .iter()
        .filter(|(k, _)| !VOLATILE.contains(&k.as_str()))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    v.sort();
    v
}

/// Removes values that differ per occurrence (error ids, update stamps).
fn stable_body(body: &Bytes) -> serde_json::Value {
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return serde_json::Value::String(String::from_utf8_lossy(body).into_owned());
    };
    if let Some(errors) = json.get_mut("errors").and_then(|e| e.as_array_mut()) {
        for e in errors {
            e.as_object_mut().map(|o| o.remove("id"));
        }
    }
    if let Some(m) = json.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.remove("updated_at");
    }
    json
}

struct Case {
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
    auth: bool,
}

fn cases() -> Vec<Case> {
    let c = |method: Method, path, body, auth| Case {
        method,
        path,
        body,
        auth,
    };
    vec![
        c(Method::GET, "/org/v2/environments", None, true),
        c(
            Method::GET,
            "/cmk/v2/clusters?environment=env-prod01",
            None,
            true,
        ),
        c(
            Method::GET,
            "/cmk/v2/clusters?environment=env-nope",
            None,
            true,
        ),
        c(
            Method::GET,
            "/iam/v2/service-accounts?page_size=2",
            None,
            true,
        ),
        c(Method::GET, "/iam/v2/role-bindings", None, true),
        c(Method::GET, "/iam/v2/users/u-nobody", None, true),
        c(Method::GET, "/org/v2/environments", None, false),
        c(
            Method::PATCH,
            "/iam/v2/service-accounts/sa-payments",
            Some(r#"{"description":"payments service"}"#),
            true,
        ),
        c(
            Method::DELETE,
            "/iam/v2/service-accounts/sa-missing",
            None,
            true,
        ),
        c(
            Method::POST,
            "/_simulator/echo",
            Some(r#"{"spec":{"owner":{"id":"sa-orders"}}}"#),
            false,
        ),
    ]
}

async fn exchange(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &str,
    case: &Case,
    auth: &str,
) -> Collected {
    let mut request = Request::builder()
        .method(case.method.clone())
        .uri(format!("{base}{}", case.path));
    if case.auth {
        request = request.header("authorization", auth);
    }
    if case.body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = Full::new(Bytes::from(case.body.unwrap_or("")));
    within(10, support::send(client, request.body(body).unwrap())).await
}

async fn compare_all(client: Client<HttpConnector, Full<Bytes>>) {
    let sim = Sim::start().await;
    let gw = support::start(support::config(&sim.url(), "")).await;
    let via = format!("http://{}", gw.local_addr());
    let auth = sim.basic("u-alice");
    for case in cases() {
        let direct = exchange(&client, &sim.url(), &case, &auth).await;
        let proxied = exchange(&client, &via, &case, &auth).await;
        let what = format!("{} {}", case.method, case.path);
        assert_eq!(direct.status, proxied.status, "{what}");
        assert_eq!(
            stable_body(&direct.body),
            stable_body(&proxied.body),
            "{what}"
        );
        assert_eq!(
            end_to_end(&direct.headers),
            end_to_end(&proxied.headers),
            "{what}"
        );
        assert!(proxied.headers.contains_key("x-request-id"), "{what}");
        // keygate's id for the caller, the upstream's under its own name.
        if direct.headers.contains_key("x-request-id") && proxied.status.as_u16() < 400 {
            assert!(
                proxied.headers.contains_key("x-upstream-request-id"),
                "{what}"
            );
        }
    }
}

#[tokio::test]
async fn same_answers_directly_and_through_keygate_over_http1() {
    compare_all(support::client()).await;
}

#[tokio::test]
async fn same_answers_directly_and_through_keygate_over_h2() {
    compare_all(support::h2c_client()).await;
}

#[tokio::test]
async fn successful_delete_is_204_both_ways() {
    let sim = Sim::start().await;
    let gw = support::start(support::config(&sim.url(), "")).await;
    let auth = sim.basic("u-alice");
    let client = support::client();
    let mut statuses = Vec::new();
    for base in [sim.url(), format!("http://{}", gw.local_addr())] {
        let create = Request::post(format!("{base}/iam/v2/service-accounts"))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(br#"{"display_name":"temp"}"#)))
            .unwrap();
        let created = support::send(&client, create).await;
        assert_eq!(created.status, 201);
        let id = created.json()["id"].as_str().unwrap().to_string();
        let delete = Request::delete(format!("{base}/iam/v2/service-accounts/{id}"))
            .header("authorization", &auth)
            .body(Full::default())
            .unwrap();
        let deleted = support::send(&client, delete).await;
        assert!(deleted.body.is_empty());
        statuses.push(deleted.status);
    }
    assert_eq!(statuses, [204, 204]);
}

/// A request body generated on the fly: byte `i` is `i % 251`, in `chunk`-sized frames. With
/// `exact`, it announces its length (Content-Length); otherwise it is sent chunked.
struct Generated {
    left: usize,
    offset: usize,
    chunk: usize,
    exact: bool,
}

impl Generated {
    fn new(total: usize, chunk: usize, exact: bool) -> Self {
        Generated {
            left: total,
            offset: 0,
            chunk,
            exact,
        }
    }
}

fn pattern(offset: usize, n: usize) -> Bytes {
    Bytes::from(
        (offset..offset + n)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    )
}

impl http_body::Body for Generated {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(self.chunk);
        let data = pattern(self.offset, n);
        self.left -= n;
        self.offset += n;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.exact {
            http_body::SizeHint::with_exact(self.left as u64)
        } else {
            http_body::SizeHint::default()
        }
    }
}

fn sha256_of_pattern(total: usize) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut offset = 0;
    while offset < total {
        let n = (total - offset).min(1 << 16);
        ctx.update(&pattern(offset, n));
        offset += n;
    }
    hex(ctx.finish().as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn upload(base: &str, total: usize, exact: bool) -> serde_json::Value {
    let client: Client<HttpConnector, Generated> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut request = Request::post(format!("{base}/_simulator/echo"))
        .header("content-type", "application/octet-stream");
    if exact {
        request = request.header("content-length", total);
    }
    let response = client
        .request(
            request
                .body(Generated::new(total, 64 * 1024, exact))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn chunked_and_content_length_bodies_arrive_as_sent() {
    let sim = Sim::start().await;
    let gw = support::start(support::config(&sim.url(), "")).await;
    let via = format!("http://{}", gw.local_addr());
    let total = 300_000;
    let expected = sha256_of_pattern(total);
    for exact in [true, false] {
        sim.sim.clear_requests();
        let echoed = within(10, upload(&via, total, exact)).await;
        assert_eq!(echoed["bytes"], total);
        assert_eq!(echoed["sha256"], expected.as_str());
        let seen = sim.received("/_simulator/echo");
        assert_eq!(seen.len(), 1);
        if exact {
            assert_eq!(seen[0].header_values("content-length"), [total.to_string()]);
        } else {
            assert_eq!(seen[0].header_values("transfer-encoding"), ["chunked"]);
        }
    }
}

/// Streams `total` bytes up (chunked) and down (Content-Length) through keygate, checking
/// both arrive whole.
async fn stream_both_ways(base: &str, total: usize) {
    let echoed = within(120, upload(base, total, false)).await;
    assert_eq!(echoed["bytes"], total);
    assert_eq!(echoed["sha256"], sha256_of_pattern(total).as_str());

    let response = within(
        120,
        support::client().request(
            Request::get(format!("{base}/_simulator/blob?bytes={total}"))
                .body(Full::default())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], total.to_string());
    let mut body = response.into_body();
    let mut received = 0usize;
    while let Some(frame) = within(120, body.frame()).await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len();
        }
    }
    assert_eq!(received, total);
}

#[tokio::test]
async fn fifty_mib_bodies_stream_both_ways_with_flat_memory() {
    const TOTAL: usize = 50 * 1024 * 1024;
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"{}\"\n[log]\naccess_log = false\n{}",
            sim.url(),
            support::file_authz_for_file(),
        ),
    )
    .unwrap();
    let keygate = binary::spawn(&["serve", "--config", config.to_str().unwrap()]);
    // Blocking here is fine: start-up does not involve this runtime's simulator.
    let (addr, _) = keygate.serve_addresses();
    let base = format!("http://{addr}");

    // A first, smaller round brings the allocator's per-thread caches to their working size
    // (mimalloc keeps freed buffers for reuse, which a fresh process has not yet grown).
    stream_both_ways(&base, 8 * 1024 * 1024).await;
    let baseline = keygate.peak_rss_kib();
    stream_both_ways(&base, TOTAL).await;
    let peak = keygate.peak_rss_kib();
    // Buffering either body would add at least 50 MiB; streaming stays within a few MiB.
    assert!(
        peak < baseline + 16 * 1024,
        "peak RSS grew from {baseline} KiB to {peak} KiB"
    );
}
