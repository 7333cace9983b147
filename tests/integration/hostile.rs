//! Hostile clients and stalling upstreams, with small numbers and short configured timeouts: every
//! kind of slow or silent connection is closed on time, a full listener still serves, requests in
//! flight are never cut, and a stalled upstream body ends in an answer and an audit record.
//!
//! Times are real (tokio's clock cannot be paused across sockets): each test configures timeouts
//! of a few hundred milliseconds and asserts that keygate acts after them and well before twice.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::certs::TestPki;
use crate::support::{self, upstream, within};

const HEADER_TIMEOUT: Duration = Duration::from_millis(300);
const IDLE_TIMEOUT: Duration = Duration::from_millis(400);
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// keygate in front of an echo upstream with short connection deadlines, `adjust`ed.
async fn gateway(adjust: impl FnOnce(&mut keygate::config::Config)) -> keygate::Gateway {
    let up = upstream::spawn(None, upstream::echo).await;
    let mut config = support::config(&format!("http://{up}"), "");
    config.listener.header_read_timeout = HEADER_TIMEOUT;
    config.listener.idle_timeout = IDLE_TIMEOUT;
    adjust(&mut config);
    support::start(config).await
}

/// Reads (and discards) until keygate closes the connection; the time since `since`.
async fn closed(stream: &mut TcpStream, since: Instant) -> Duration {
    let mut buffer = [0u8; 4096];
    within(10, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
}

/// Asserts keygate acted no sooner than `timeout` (less timer rounding) and well before twice.
fn assert_on_time(took: Duration, timeout: Duration) {
    assert!(
        took + Duration::from_millis(10) >= timeout,
        "closed after {took:?}, before the {timeout:?} deadline"
    );
    assert!(
        took < timeout * 2 + Duration::from_millis(200),
        "closed after {took:?}, long after the {timeout:?} deadline"
    );
}

/// `GET path` over HTTP/1.1 keep-alive on `stream`; the status and body.
async fn get_keep_alive(stream: &mut TcpStream, path: &str) -> (u16, Vec<u8>) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: keygate\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(stream).await
}

/// One HTTP/1.1 response with a `Content-Length` body.
async fn read_response(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    within(10, async {
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).to_string();
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if received.len() >= end + 4 + length {
                    let body = received[end + 4..end + 4 + length].to_vec();
                    return (status, body);
                }
            }
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "connection closed mid-response");
            received.extend_from_slice(&buffer[..n]);
        }
    })
    .await
}

/// An h2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// `GET path` on stream 1 (HPACK without Huffman or indexing of new entries).
fn h2_get(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 7]);
    block.extend_from_slice(b"keygate");
    h2_frame(1, 0x5, 1, &block)
}

/// Reads h2 frames until one of `kind` arrives (answering SETTINGS); `None` at EOF.
async fn h2_until(stream: &mut TcpStream, kind: u8, answer_pings: bool) -> Option<Vec<u8>> {
    loop {
        let mut header = [0u8; 9];
        stream.read_exact(&mut header).await.ok()?;
        let len =
            (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.ok()?;
        let (frame_kind, flags) = (header[3], header[4]);
        if frame_kind == 4 && flags & 1 == 0 {
            stream.write_all(&h2_frame(4, 1, 0, &[])).await.ok()?;
        }
        if frame_kind == 6 && flags & 1 == 0 && answer_pings {
            stream.write_all(&h2_frame(6, 1, 0, &payload)).await.ok()?;
        }
        if frame_kind == kind {
            return Some(payload);
        }
    }
}

/// Reads h2 frames, answering SETTINGS and PINGs, until keygate closes the connection; the time
/// since `since`.
async fn h2_closed(stream: &mut TcpStream, since: Instant) -> Duration {
    within(10, h2_until(stream, u8::MAX, true)).await;
    since.elapsed()
}

/// Writes `first`, then `drip` every 50 ms, until keygate closes the connection; the time from
/// connecting to the close.
async fn drip_until_closed(addr: SocketAddr, first: &[u8], drip: &'static [u8]) -> Duration {
    let stream = TcpStream::connect(addr).await.unwrap();
    let since = Instant::now();
    let (mut read, mut write) = stream.into_split();
    write.write_all(first).await.unwrap();
    let dripping = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if write.write_all(drip).await.is_err() {
                return;
            }
        }
    });
    let mut buffer = [0u8; 1024];
    let took = within(10, async {
        loop {
            match read.read(&mut buffer).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await;
    dripping.abort();
    took
}

// === first request head ===

#[tokio::test]
async fn silent_connection_is_closed_at_the_header_read_timeout() {
    let gw = gateway(|_| {}).await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
    let since = Instant::now();
    assert_on_time(closed(&mut stream, since).await, HEADER_TIMEOUT);
}

#[tokio::test]
async fn dripped_http1_head_is_closed_at_the_header_read_timeout() {
    let gw = gateway(|_| {}).await;
    let took = drip_until_closed(gw.local_addr(), b"GET / HTTP/1.1\r\n", b"X-Drip: 1\r\n").await;
    assert_on_time(took, HEADER_TIMEOUT);
}

#[tokio::test]
async fn dripped_h2_preface_is_closed_at_the_header_read_timeout() {
    let gw = gateway(|_| {}).await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
    let since = Instant::now();
    // The preface's first bytes look like an HTTP/1 request line until `PRI * HTTP/2.0`.
    for byte in H2_PREFACE {
        tokio::time::sleep(Duration::from_millis(30)).await;
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
    }
    assert_on_time(closed(&mut stream, since).await, HEADER_TIMEOUT);
}

#[tokio::test]
async fn h2_connection_without_a_request_gets_goaway_at_the_header_read_timeout() {
    let gw = gateway(|_| {}).await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
    let since = Instant::now();
    stream.write_all(H2_PREFACE).await.unwrap();
    stream.write_all(H2_SETTINGS).await.unwrap();
    let goaway = within(5, h2_until(&mut stream, 7, true)).await;
    assert!(goaway.is_some(), "no GOAWAY before the connection closed");
    assert_on_time(since.elapsed(), HEADER_TIMEOUT);
    assert_on_time(h2_closed(&mut stream, since).await, HEADER_TIMEOUT);
}

#[tokio::test]
async fn stalled_tls_handshake_is_closed_at_the_header_read_timeout() {
    let pki = TestPki::new();
    let (cert, key) = (pki.cert_file(), pki.key_file());
    let gw = gateway(|config| {
        config.listener.tls = Some(keygate::config::TlsFiles { cert, key });
    })
    .await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
    let since = Instant::now();
    // A record header and the start of a ClientHello; the rest never comes.
    stream
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03])
        .await
        .unwrap();
    assert_on_time(closed(&mut stream, since).await, HEADER_TIMEOUT);
}

// === between requests ===

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let gw = gateway(|_| {}).await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
    let (status, _) = get_keep_alive(&mut stream, "/org/v2/environments").await;
    assert_eq!(status, 200);
    let since = Instant::now();
    assert_on_time(closed(&mut stream, since).await, IDLE_TIMEOUT);
}

#[tokio::test]
async fn a_later_head_dripped_after_a_request_has_the_header_read_timeout() {
    // An idle connection is parked after `keygate::server::PARK_AFTER`: the dripped head arrives on a
    // connection still served by hyper, and on one that was parked.
    let gw = gateway(|config| config.listener.idle_timeout = Duration::from_secs(2)).await;
    for pause in [Duration::ZERO, Duration::from_millis(1200)] {
        let took = drip_second_head(gw.local_addr(), pause).await;
        assert_on_time(took, HEADER_TIMEOUT);
    }
}

/// One request, `pause`, then a second head dripped until keygate closes the connection; the
/// time from the drip's start to the close.
async fn drip_second_head(addr: SocketAddr, pause: Duration) -> Duration {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(b"GET /a HTTP/1.1\r\nHost: k\r\n\r\n")
        .await
        .unwrap();
    let mut response = [0u8; 4096];
    let n = within(5, read.read(&mut response)).await.unwrap();
    assert!(response[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(pause).await;
    let since = Instant::now();
    write.write_all(b"GET /b HTTP/1.1\r\n").await.unwrap();
    let dripping = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if write.write_all(b"X-Drip: 1\r\n").await.is_err() {
                return;
            }
        }
    });
    let took = within(10, async {
        loop {
            match read.read(&mut response).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await;
    dripping.abort();
    took
}

#[tokio::test]
async fn keep_alive_connection_serves_requests_after_idling_and_pipelined() {
    // Idle connections are parked after `keygate::server::PARK_AFTER` (well before 800 ms).
    let gw = gateway(|config| config.listener.idle_timeout = Duration::from_secs(2)).await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
    assert_eq!(get_keep_alive(&mut stream, "/first").await.0, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (status, body) = get_keep_alive(&mut stream, "/after-idle").await;
    assert_eq!(status, 200);
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["path"], "/after-idle");
    // Two requests in one write, after another idle spell.
    tokio::time::sleep(Duration::from_millis(800)).await;
    stream
        .write_all(b"GET /p1 HTTP/1.1\r\nHost: k\r\n\r\nGET /p2 HTTP/1.1\r\nHost: k\r\n\r\n")
        .await
        .unwrap();
    for path in ["/p1", "/p2"] {
        let (status, body) = read_response(&mut stream).await;
        assert_eq!(status, 200);
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["path"], path);
    }
}

#[tokio::test]
async fn idle_h2_connection_gets_goaway_after_the_idle_timeout() {
    let gw = gateway(|_| {}).await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
    stream.write_all(H2_PREFACE).await.unwrap();
    stream.write_all(H2_SETTINGS).await.unwrap();
    stream
        .write_all(&h2_get("/org/v2/environments"))
        .await
        .unwrap();
    // The response's HEADERS, then its DATA (ending the stream).
    within(5, h2_until(&mut stream, 1, true)).await.unwrap();
    within(5, h2_until(&mut stream, 0, true)).await.unwrap();
    let since = Instant::now();
    let goaway = within(5, h2_until(&mut stream, 7, true)).await;
    assert!(goaway.is_some(), "no GOAWAY before the connection closed");
    assert_on_time(since.elapsed(), IDLE_TIMEOUT);
    assert_on_time(h2_closed(&mut stream, since).await, IDLE_TIMEOUT);
}

#[tokio::test]
async fn h2_peer_that_does_not_answer_pings_is_closed() {
    let gw = gateway(|config| {
        config.listener.idle_timeout = Duration::from_secs(30);
        config.listener.h2_keep_alive_interval = Some(Duration::from_millis(200));
        config.listener.h2_keep_alive_timeout = Duration::from_millis(200);
    })
    .await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
    stream.write_all(H2_PREFACE).await.unwrap();
    stream.write_all(H2_SETTINGS).await.unwrap();
    stream
        .write_all(&h2_get("/org/v2/environments"))
        .await
        .unwrap();
    within(5, h2_until(&mut stream, 0, false)).await.unwrap();
    let since = Instant::now();
    let ping = within(5, h2_until(&mut stream, 6, false)).await;
    assert!(ping.is_some(), "no PING");
    let took = closed(&mut stream, since).await;
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
}

// === requests in flight ===

#[tokio::test]
async fn a_slow_response_is_not_cut_by_the_connection_deadlines() {
    // The upstream answers after 1 s: past both the header-read and the idle timeout.
    let up = upstream::spawn(None, |_req: Request<hyper::body::Incoming>| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Response::new(Full::new(Bytes::from_static(b"late")))
    })
    .await;
    let mut config = support::config(&format!("http://{up}"), "");
    config.listener.header_read_timeout = HEADER_TIMEOUT;
    config.listener.idle_timeout = IDLE_TIMEOUT;
    let gw = support::start(config).await;
    for client in [support::client(), support::h2c_client()] {
        let request = Request::get(support::url(gw.local_addr(), "/slow"))
            .body(Full::default())
            .unwrap();
        let response = within(10, support::send(&client, request)).await;
        assert_eq!(response.status, 200);
        assert_eq!(&response.body[..], b"late");
    }
}

// === connection limits ===

#[tokio::test]
async fn full_listener_evicts_a_waiting_connection_and_admin_still_answers() {
    let gw = gateway(|config| {
        config.listener.header_read_timeout = Duration::from_secs(30);
        config.listener.max_connections = std::num::NonZeroUsize::new(3);
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(gw.local_addr()).await.unwrap());
    }
    let health = within(5, support::get(&support::url(gw.admin_addr(), "/healthz"))).await;
    assert_eq!(health.status, 200);
    // A fourth connection is served: the oldest silent one makes room.
    let mut fourth = TcpStream::connect(gw.local_addr()).await.unwrap();
    assert_eq!(get_keep_alive(&mut fourth, "/served").await.0, 200);
    let since = Instant::now();
    let took = closed(&mut silent[0], since).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn full_listener_of_busy_connections_waits_for_one_to_finish() {
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let gate = release.clone();
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let up = upstream::spawn(None, move |_req: Request<hyper::body::Incoming>| {
        let gate = gate.clone();
        let arrived_tx = arrived_tx.clone();
        async move {
            let _ = arrived_tx.send(());
            gate.acquire().await.unwrap().forget();
            Response::new(Full::new(Bytes::from_static(b"done")))
        }
    })
    .await;
    let mut config = support::config(&format!("http://{up}"), "");
    config.listener.max_connections = std::num::NonZeroUsize::new(1);
    let gw = support::start(config).await;
    let mut busy = TcpStream::connect(gw.local_addr()).await.unwrap();
    busy.write_all(b"GET /busy HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    within(5, arrived.recv()).await.unwrap();
    // The second connection waits in the backlog: nothing answers it while the first is busy.
    let addr = gw.local_addr();
    let waiting = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        get_keep_alive(&mut stream, "/waiting").await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "served while the listener was full");
    release.add_permits(2);
    assert_eq!(read_response(&mut busy).await.0, 200);
    let (status, _) = within(5, waiting).await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn per_address_limit_closes_connections_beyond_it() {
    let gw = gateway(|config| {
        config.listener.header_read_timeout = Duration::from_secs(30);
        config.listener.idle_timeout = Duration::from_secs(30);
        config.listener.max_connections_per_ip = std::num::NonZeroUsize::new(2);
    })
    .await;
    let mut first = TcpStream::connect(gw.local_addr()).await.unwrap();
    let mut second = TcpStream::connect(gw.local_addr()).await.unwrap();
    let mut third = TcpStream::connect(gw.local_addr()).await.unwrap();
    let took = closed(&mut third, Instant::now()).await;
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(get_keep_alive(&mut first, "/1").await.0, 200);
    assert_eq!(get_keep_alive(&mut second, "/2").await.0, 200);
    drop(first);
    // The address has room again once a connection closed.
    let addr: SocketAddr = gw.local_addr();
    let served = within(5, async move {
        loop {
            let mut again = TcpStream::connect(addr).await.unwrap();
            let request = b"GET /3 HTTP/1.1\r\nHost: k\r\n\r\n";
            if again.write_all(request).await.is_ok() {
                let mut first_byte = [0u8; 1];
                if matches!(again.peek(&mut first_byte).await, Ok(1)) {
                    return read_response(&mut again).await.0;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(served, 200);
}

// === stalling upstream bodies ===

/// A response body fed through a channel by the test: a stall is a sender that sends nothing.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    length: Option<u64>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(http_body::Frame::data(bytes))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.length
            .map(http_body::SizeHint::with_exact)
            .unwrap_or_default()
    }
}

/// A body of `length` bytes (or chunked when `None`) and its feeding end.
fn channel_body(length: Option<u64>) -> (tokio::sync::mpsc::Sender<Bytes>, ChannelBody) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    (tx, ChannelBody { rx, length })
}

/// An upstream answering every request with `handler` (h1 and h2c), bound before it is used.
async fn channel_upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<ChannelBody>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, std::convert::Infallible>(handler(request).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    addr
}

/// keygate with a static key directory (u-alice) and a blocking audit file, in front of `up`.
struct Governed {
    gw: keygate::Gateway,
    audit: std::path::PathBuf,
    authorization: String,
    _dir: tempfile::TempDir,
}

const DIRECTORY_SECRET: &str = "cfltHostileHostileHostileHostileHostileHostileHostileHostileHost";

async fn governed(up: SocketAddr, adjust: impl FnOnce(&mut keygate::config::Config)) -> Governed {
    let dir = tempfile::tempdir().unwrap();
    let directory = dir.path().join("keys.toml");
    std::fs::write(
        &directory,
        format!(
            "[[keys]]\nid = \"HOSTILEALICE0001\"\nprincipal = \"u-alice\"\nsecret_hash = \"{}\"\n",
            keygate::identity::directory::hash_secret(DIRECTORY_SECRET).unwrap()
        ),
    )
    .unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut config = support::config(
        &format!("http://{up}"),
        &format!(
            "[identity]\nsource = \"directory\"\ndirectory = \"{}\"\n[audit]\nfile = \"{}\"\n",
            directory.display(),
            audit.display()
        ),
    );
    adjust(&mut config);
    use base64::Engine;
    Governed {
        gw: support::start(config).await,
        audit,
        authorization: format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("HOSTILEALICE0001:{DIRECTORY_SECRET}"))
        ),
        _dir: dir,
    }
}

/// A create for sa-orders on lkc-prod01 (allowed for u-alice), as raw HTTP/1.1.
fn create_request(authorization: &str, request_id: &str) -> Vec<u8> {
    let body = crate::support::governed::create_body("sa-orders", Some("lkc-prod01"));
    format!(
        "POST /iam/v2/api-keys HTTP/1.1\r\nHost: keygate\r\nAuthorization: {authorization}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Request-Id: {request_id}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Waits until keygate has no request in flight (the caller's disconnect was noticed).
async fn no_request_in_flight(admin: SocketAddr) {
    crate::support::governed::poll_until(
        Duration::from_secs(5),
        "no request in flight",
        || async {
            let text = support::get(&support::url(admin, "/metrics")).await;
            String::from_utf8_lossy(&text.body)
                .contains("keygate_in_flight_requests 0")
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn stalled_create_body_is_504_after_the_body_timeout_and_audited() {
    // A JSON body is read whole by the link rewriter before the audit reads it; any other by the
    // audit stage: both within the body timeout.
    let up = channel_upstream(|request| async move {
        let json = request.headers().contains_key("x-test-json");
        let (tx, body) = channel_body(Some(1000));
        tokio::spawn(async move {
            tx.send(Bytes::from(vec![b' '; 500])).await.unwrap();
            // Hold the sender: the other 500 bytes never come.
            std::future::pending::<()>().await;
        });
        let mut response = Response::builder().status(202);
        if json {
            response = response.header("content-type", "application/json");
        }
        response.body(body).unwrap()
    })
    .await;
    let body_timeout = Duration::from_millis(300);
    let g = governed(up, |config| config.upstream.body_timeout = body_timeout).await;
    for (id, json) in [("stalled-create", false), ("stalled-json-create", true)] {
        let mut request = create_request(&g.authorization, id);
        if json {
            // Before the head's blank line: one more header line.
            let end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            request.splice(end..end, b"\r\nX-Test-Json: 1".iter().copied());
        }
        let mut stream = TcpStream::connect(g.gw.local_addr()).await.unwrap();
        let started = Instant::now();
        stream.write_all(&request).await.unwrap();
        let (status, body) = read_response(&mut stream).await;
        assert_on_time(started.elapsed(), body_timeout);
        assert_eq!(status, 504, "{id}");
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error["errors"][0]["code"], "upstream_timeout");

        let complete =
            crate::support::governed::audit_records(&g.audit, id, "response_complete").await;
        assert_eq!(complete.len(), 1);
        let record = &complete[0];
        assert_eq!(record["outcome"], "upstream_body_timeout", "{id}: {record}");
        assert_eq!(record["status"], 504);
        assert_eq!(record["upstreamStatus"], 202);
        assert!(record.get("createdKeyId").is_none());
        assert_eq!(record["decision"]["result"], "error");
        assert_eq!(record["decision"]["decidedBy"], "upstream");
    }
    // Every record of the file matches the schema.
    crate::support::audit::read_events(&g.audit);
}

#[tokio::test]
async fn caller_gone_while_a_create_body_stalls_is_recorded_as_client_gone() {
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let up = channel_upstream(move |_request| {
        let arrived_tx = arrived_tx.clone();
        async move {
            let (tx, body) = channel_body(Some(1000));
            tokio::spawn(async move {
                tx.send(Bytes::from(vec![b' '; 500])).await.unwrap();
                let _ = arrived_tx.send(());
                std::future::pending::<()>().await;
            });
            Response::builder().status(202).body(body).unwrap()
        }
    })
    .await;
    let g = governed(up, |config| {
        config.upstream.body_timeout = Duration::from_millis(500);
    })
    .await;
    let mut stream = TcpStream::connect(g.gw.local_addr()).await.unwrap();
    stream
        .write_all(&create_request(&g.authorization, "gone-while-stalled"))
        .await
        .unwrap();
    // The head and half the body are out: keygate is reading the rest when the caller leaves.
    within(5, arrived.recv()).await.unwrap();
    drop(stream);

    let complete = crate::support::governed::audit_records(
        &g.audit,
        "gone-while-stalled",
        "response_complete",
    )
    .await;
    assert_eq!(complete.len(), 1);
    let record = &complete[0];
    assert_eq!(record["outcome"], "client_gone", "{record}");
    assert_eq!(record["upstreamStatus"], 202);
    assert!(record.get("status").is_none(), "{record}");
    assert!(record.get("createdKeyId").is_none(), "{record}");
    assert_eq!(record["decision"]["result"], "error", "{record}");
    crate::support::audit::read_events(&g.audit);
}

#[tokio::test]
async fn caller_gone_during_a_forwarded_create_is_audited_with_the_key_it_created() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let gate = release.clone();
    let up = channel_upstream(move |_request| {
        let gate = gate.clone();
        let arrived_tx = arrived_tx.clone();
        async move {
            let _ = arrived_tx.send(());
            gate.notified().await;
            let json = r#"{"api_version":"iam/v2","kind":"ApiKey","id":"GONEKEY000000001","spec":{"secret":"cfltGoneGoneGoneGoneGoneGoneGoneGoneGoneGoneGoneGoneGoneGoneGone"}}"#;
            let (tx, body) = channel_body(Some(json.len() as u64));
            tx.send(Bytes::from_static(json.as_bytes())).await.unwrap();
            Response::builder().status(202).body(body).unwrap()
        }
    })
    .await;
    let g = governed(up, |_| {}).await;
    let mut stream = TcpStream::connect(g.gw.local_addr()).await.unwrap();
    stream
        .write_all(&create_request(&g.authorization, "gone-after-forward"))
        .await
        .unwrap();
    within(5, arrived.recv()).await.unwrap();
    drop(stream);
    no_request_in_flight(g.gw.admin_addr()).await;
    release.notify_one();

    let complete = crate::support::governed::audit_records(
        &g.audit,
        "gone-after-forward",
        "response_complete",
    )
    .await;
    assert_eq!(complete.len(), 1);
    let record = &complete[0];
    assert_eq!(record["outcome"], "client_gone");
    assert_eq!(record["createdKeyId"], "GONEKEY000000001");
    assert_eq!(record["upstreamStatus"], 202);
    assert!(record.get("status").is_none(), "{record}");
    let received =
        crate::support::governed::audit_records(&g.audit, "gone-after-forward", "request_received")
            .await;
    assert_eq!(received.len(), 1);
    let text = std::fs::read_to_string(&g.audit).unwrap();
    assert!(
        !text.contains("cfltGone"),
        "the created key's secret reached the audit trail"
    );
    crate::support::audit::read_events(&g.audit);
}

#[tokio::test]
async fn caller_gone_before_forwarding_is_audited_and_nothing_is_forwarded() {
    // Identity is verified by the upstream, whose key lookup never answers: the caller leaves
    // while keygate still waits for it.
    let creates = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (lookup_tx, mut lookup) = tokio::sync::mpsc::unbounded_channel::<()>();
    let counted = creates.clone();
    let up = channel_upstream(move |request| {
        let counted = counted.clone();
        let lookup_tx = lookup_tx.clone();
        async move {
            if request.method() == http::Method::POST {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            } else {
                let _ = lookup_tx.send(());
                std::future::pending::<()>().await;
            }
            let (_tx, body) = channel_body(Some(0));
            Response::builder().status(202).body(body).unwrap()
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let config = support::config(
        &format!("http://{up}"),
        &format!("[audit]\nfile = \"{}\"\n", audit.display()),
    );
    let gw = support::start(config).await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
    stream
        .write_all(&create_request(
            "Basic SE9TVElMRUtFWTAwMDAwMDE6Y2ZsdFNlY3JldFNlY3JldA==",
            "gone-before-forward",
        ))
        .await
        .unwrap();
    within(5, lookup.recv()).await.unwrap();
    drop(stream);

    let complete =
        crate::support::governed::audit_records(&audit, "gone-before-forward", "response_complete")
            .await;
    assert_eq!(complete.len(), 1);
    assert_eq!(complete[0]["outcome"], "client_gone");
    assert_eq!(complete[0]["methodName"], "CreateAPIKey");
    assert!(complete[0].get("status").is_none());
    let events = crate::support::audit::read_events(&audit);
    assert!(
        events
            .iter()
            .all(|e| e["data"]["stage"] != "request_received"),
        "{events:#?}"
    );
    // The exchange was dropped before the decision: nothing can forward the create any more.
    assert_eq!(creates.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A streamed upstream response: `chunks` sent `pause` apart, then a stall (`stall`) or the end.
async fn streaming_upstream(chunks: usize, pause: Duration, stall: bool) -> SocketAddr {
    channel_upstream(move |_request| async move {
        let (tx, body) = channel_body(None);
        tokio::spawn(async move {
            for i in 0..chunks {
                if i > 0 {
                    tokio::time::sleep(pause).await;
                }
                if tx.send(Bytes::from(format!("chunk {i}\n"))).await.is_err() {
                    return;
                }
            }
            if stall {
                std::future::pending::<()>().await;
            }
        });
        Response::builder().status(200).body(body).unwrap()
    })
    .await
}

#[tokio::test]
async fn stalled_ungoverned_stream_is_aborted_after_the_body_idle_timeout() {
    let idle = Duration::from_millis(300);
    let up = streaming_upstream(1, Duration::ZERO, true).await;
    let mut config = support::config(&format!("http://{up}"), "");
    config.upstream.body_idle_timeout = idle;
    let gw = support::start(config).await;

    // HTTP/1.1: the connection is closed without the last chunk.
    let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
    stream
        .write_all(b"GET /org/v2/stream HTTP/1.1\r\nHost: k\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut first_chunk_at = None;
    within(10, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    received.extend_from_slice(&buffer[..n]);
                    if first_chunk_at.is_none() && received.windows(7).any(|w| w == b"chunk 0") {
                        first_chunk_at = Some(Instant::now());
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the aborted body looks complete: {text}"
    );
    assert_on_time(first_chunk_at.expect("first chunk").elapsed(), idle);

    // HTTP/2: the stream is reset, the body fails.
    let client = support::h2c_client();
    let request = Request::get(support::url(gw.local_addr(), "/org/v2/stream"))
        .body(Full::default())
        .unwrap();
    let response = within(5, client.request(request)).await.unwrap();
    assert_eq!(response.status(), 200);
    let started = Instant::now();
    let body = within(5, http_body_util::BodyExt::collect(response.into_body())).await;
    assert!(body.is_err(), "the stalled body completed");
    assert_on_time(started.elapsed(), idle);
}

#[tokio::test]
async fn stream_that_pauses_less_than_the_body_idle_timeout_is_complete() {
    let up = streaming_upstream(4, Duration::from_millis(150), false).await;
    let mut config = support::config(&format!("http://{up}"), "");
    config.upstream.body_idle_timeout = Duration::from_millis(300);
    let gw = support::start(config).await;
    let response = within(
        10,
        support::get(&support::url(gw.local_addr(), "/org/v2/stream")),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(&response.body[..], b"chunk 0\nchunk 1\nchunk 2\nchunk 3\n");
}

#[tokio::test]
async fn a_caller_that_leaves_mid_request_is_in_the_access_log_as_499() {
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let up = channel_upstream(move |_request| {
        let arrived_tx = arrived_tx.clone();
        async move {
            let _ = arrived_tx.send(());
            std::future::pending::<()>().await;
            let (_tx, body) = channel_body(Some(0));
            Response::builder().status(200).body(body).unwrap()
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
             [upstream]\nurl = \"http://{up}\"\n{}",
            support::file_authz_for_file(),
        ),
    )
    .unwrap();
    let keygate = crate::support::binary::spawn(&["serve", "--config", config.to_str().unwrap()]);
    let (addr, _) = keygate.serve_addresses();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /org/v2/environments HTTP/1.1\r\nhost: keygate\r\nx-request-id: left-early-1\r\n\r\n",
        )
        .await
        .unwrap();
    within(5, arrived.recv()).await.unwrap();
    drop(stream);
    let line = keygate.wait_stderr("left-early-1");
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["message"], "Request completed", "{line}");
    assert_eq!(json["status"], 499, "{line}");
    assert_eq!(json["path"], "/org/v2/environments", "{line}");
}
