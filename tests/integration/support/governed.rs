//! Helpers for tests of the governed `/iam/v2/api-keys` routes: requests with a demo credential,
//! checks of keygate's own Confluent-shaped errors, raw HTTP/1.1 exchanges for framing that hyper's
//! client will not produce, metrics and audit-file reads.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Collected;

/// The governed collection path.
pub const API_KEYS: &str = "/iam/v2/api-keys";

/// A request to keygate with an optional `Authorization` and a JSON body (`Content-Type:
/// application/json` whenever `body` is not empty).
pub fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    authorization: Option<&str>,
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let body = body.into();
    let mut builder = Request::builder()
        .method(method)
        .uri(super::url(addr, path));
    if let Some(authorization) = authorization {
        builder = builder.header("authorization", authorization);
    }
    if !body.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    builder.body(Full::new(body)).unwrap()
}

/// Sends `request` with a fresh client, bounded in time.
pub async fn send(request: Request<Full<Bytes>>) -> Collected {
    super::within(10, super::send(&super::client(), request)).await
}

/// A create body for `owner` and `resource` (`None`: a Cloud key without `resource`).
pub fn create_body(owner: &str, resource: Option<&str>) -> String {
    match resource {
        Some(resource) => {
            format!(r#"{{"spec":{{"owner":{{"id":"{owner}"}},"resource":{{"id":"{resource}"}}}}}}"#)
        }
        None => format!(r#"{{"spec":{{"owner":{{"id":"{owner}"}}}}}}"#),
    }
}

/// Asserts that `response` is an error keygate generated itself, in Confluent's shape
/// (docs/confluent-api.md §3): JSON, one `errors[]` member with `status` as a string, the expected `code`, a
/// title, a non-empty detail, and `id` equal to the `x-request-id` response header. Returns the
/// member.
pub fn assert_keygate_error(response: &Collected, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(
        response.status.as_u16(),
        status,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.headers["content-type"], "application/json");
    let error = response.error();
    assert_eq!(error["status"], status.to_string(), "{error}");
    assert_eq!(error["code"], code, "{error}");
    assert!(
        error["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{error}"
    );
    assert!(
        error["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{error}"
    );
    let request_id = response
        .headers
        .get("x-request-id")
        .expect("x-request-id on keygate's own response")
        .to_str()
        .unwrap();
    assert_eq!(error["id"], request_id, "{error}");
    error
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// As a [`Collected`], for [`assert_keygate_error`].
    pub fn collected(&self) -> Collected {
        let mut headers = http::HeaderMap::new();
        for (name, value) in &self.headers {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        Collected {
            status: http::StatusCode::from_u16(self.status).unwrap(),
            headers,
            body: Bytes::from(self.body.clone()),
        }
    }
}

/// Writes `parts` to a new connection to `addr` one after the other (write errors ignored: the
/// server may answer and stop reading early), then reads one HTTP/1.1 response with a
/// `Content-Length` body (or up to EOF). Bounded in time.
pub async fn raw_exchange(addr: SocketAddr, parts: &[&[u8]]) -> RawResponse {
    super::within(10, async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        for part in parts {
            if stream.write_all(part).await.is_err() {
                break;
            }
        }
        let _ = stream.flush().await;
        let mut received = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            if let Some(response) = parse_response(&received) {
                return response;
            }
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
        parse_response(&received).unwrap_or_else(|| {
            panic!(
                "no complete response: {:?}",
                String::from_utf8_lossy(&received)
            )
        })
    })
    .await
}

/// Parses a complete response head plus its `Content-Length` body, `None` if incomplete.
fn parse_response(received: &[u8]) -> Option<RawResponse> {
    let end = received.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&received[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = &received[end + 4..];
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())?;
    (body.len() >= length).then(|| RawResponse {
        status,
        headers,
        body: body[..length].to_vec(),
    })
}

/// The value of one sample line (`name{labels}` exactly as exposed) on keygate's `/metrics`, 0 when
/// absent.
pub async fn metric(admin: SocketAddr, sample: &str) -> f64 {
    let response = super::within(5, super::get(&super::url(admin, "/metrics"))).await;
    let text = String::from_utf8_lossy(&response.body);
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// Audit events (the `data` member) of `request_id` at `stage` in a JSON Lines audit file,
/// waiting (bounded) for at least one: `response_complete` is written after the response body.
pub async fn audit_records(file: &Path, request_id: &str, stage: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let found: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|event| event["data"].clone())
            .filter(|data| data["requestId"] == request_id && data["stage"] == stage)
            .collect();
        if !found.is_empty() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no `{stage}` audit event for request {request_id} within 5s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `probe` every 20 ms until it returns `Some`, failing the test after `limit`.
pub async fn poll_until<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
