//! Simulator tests: real sockets on 127.0.0.1:0, a hyper-util client, the builtin seed.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ring::digest;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::body::blob_byte;
use super::secret::{self, Minter};
use super::store::now;
use super::{serve, DemoKey, Fault, Seed, Simulator};

pub(crate) const ORG: &str = "4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c";

pub(crate) type TestBody = BoxBody<Bytes, Infallible>;

pub(crate) struct Harness {
    pub(crate) sim: Arc<Simulator>,
    pub(crate) base: String,
    pub(crate) client: Client<HttpConnector, TestBody>,
    pub(crate) shutdown: oneshot::Sender<()>,
    pub(crate) server: JoinHandle<std::io::Result<()>>,
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) bytes: Bytes,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {:?}", self.status, self.bytes))
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no `{name}` header"))
            .to_str()
            .unwrap()
    }

    /// The single Confluent error in the body.
    pub(crate) fn error(&self) -> Value {
        let body = self.json();
        let errors = body["errors"].as_array().expect("an errors array");
        assert_eq!(errors.len(), 1, "{body}");
        let error = errors[0].clone();
        assert_eq!(error["status"], json!(self.status.as_str()), "{body}");
        assert!(
            error["id"].as_str().is_some_and(|id| id.len() == 36),
            "{body}"
        );
        assert!(
            error["title"].is_string() && error["detail"].is_string(),
            "{body}"
        );
        error
    }
}

impl Harness {
    pub(crate) async fn start() -> Self {
        Self::start_with(false).await
    }

    pub(crate) async fn start_with(http2_only: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let sim = Arc::new(Simulator::new(Seed::builtin()));
        let base = format!("http://{addr}");
        sim.set_public_base(&base);
        let (shutdown, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::clone(&sim), None, async {
            let _ = rx.await;
        }));
        let client = Client::builder(TokioExecutor::new())
            .http2_only(http2_only)
            .build_http();
        Harness {
            sim,
            base,
            client,
            shutdown,
            server,
        }
    }

    /// The `Authorization` value of the demo key of `principal`.
    pub(crate) fn auth(&self, principal: &str) -> String {
        let key = self.demo(principal);
        basic(&key.key_id, &key.secret)
    }

    pub(crate) fn demo(&self, principal: &str) -> DemoKey {
        self.sim
            .demo_keys()
            .into_iter()
            .find(|k| k.principal_id == principal)
            .unwrap_or_else(|| panic!("no demo key for {principal}"))
    }

    pub(crate) async fn send_body(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: TestBody,
    ) -> Reply {
        let uri = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let req = req
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let response = self.client.request(req).await.unwrap();
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            bytes: body.collect().await.unwrap().to_bytes(),
        }
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        self.send_body(method, path, auth, Full::new(bytes).boxed())
            .await
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Some(&self.auth("u-alice")), None)
            .await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(&self.auth("u-alice")), Some(body))
            .await
    }

    pub(crate) async fn create_key(&self, owner: &str, resource: Option<Value>) -> Reply {
        let mut spec = json!({ "display_name": "k", "owner": { "id": owner } });
        if let Some(resource) = resource {
            spec["resource"] = resource;
        }
        self.post("/iam/v2/api-keys", json!({ "spec": spec })).await
    }

    pub(crate) async fn stop(self) {
        drop(self.client);
        self.shutdown.send(()).unwrap();
        self.server.await.unwrap().unwrap();
    }
}

pub(crate) fn basic(key: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{key}:{secret}")))
}

// === Seed ===

#[test]
fn builtin_seed_has_every_matrix_role_and_demo_principal() {
    let seed = Seed::builtin();
    assert_eq!(seed.org_id(), ORG);
    let roles: HashSet<&str> = seed
        .role_bindings
        .iter()
        .map(|rb| rb.role_name.as_str())
        .collect();
    for role in [
        "OrganizationAdmin",
        "ResourceOwner",
        "EnvironmentAdmin",
        "CloudClusterAdmin",
        "ResourceKeyAdmin",
        "FlinkAdmin",
        "KsqlAdmin",
        "DeveloperRead",
    ] {
        assert!(roles.contains(role), "no binding for {role}");
    }
    let has = |principal: &str, role: &str, crn_suffix: &str| {
        seed.role_bindings.iter().any(|rb| {
            rb.principal == format!("User:{principal}")
                && rb.role_name == role
                && rb.crn_pattern == format!("crn://confluent.cloud/organization={ORG}{crn_suffix}")
        })
    };
    assert!(has("u-alice", "OrganizationAdmin", ""));
    assert!(has("u-bob", "EnvironmentAdmin", "/environment=env-prod01"));
    assert!(has("u-bob", "ResourceOwner", "/service-account=sa-orders"));
    assert!(has(
        "u-carol",
        "CloudClusterAdmin",
        "/environment=env-prod01/cloud-cluster=lkc-prod01"
    ));
    assert!(has("u-erin", "ResourceKeyAdmin", ""));
    assert!(has("u-frank", "FlinkAdmin", "/environment=env-dev01"));
    assert!(has(
        "u-grace",
        "KsqlAdmin",
        "/environment=env-dev01/cloud-cluster=lkc-dev01/ksql=lksqlc-dev01"
    ));
    assert!(has("sa-keygate", "OrganizationAdmin", ""));
    let dave: Vec<_> = seed
        .role_bindings
        .iter()
        .filter(|rb| rb.principal == "User:u-dave")
        .collect();
    assert_eq!(dave.len(), 1);
    assert_eq!(dave[0].role_name, "DeveloperRead");

    let sim = Simulator::new(seed);
    let demo: HashSet<String> = sim
        .demo_keys()
        .into_iter()
        .map(|k| k.principal_id)
        .collect();
    for p in [
        "u-alice",
        "u-bob",
        "u-carol",
        "u-dave",
        "u-erin",
        "u-frank",
        "u-grace",
        "sa-keygate",
    ] {
        assert!(demo.contains(p), "no demo key for {p}");
    }
    for key in sim.demo_keys() {
        assert!(secret::is_valid_cflt_secret(&key.secret), "{}", key.key_id);
        assert!(secret::is_key_id(&key.key_id));
    }
}

#[test]
fn shipped_seed_file_matches_the_embedded_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dev/org.toml");
    let from_file = Seed::from_path(&path).unwrap();
    assert_eq!(from_file.api_keys.len(), Seed::builtin().api_keys.len());
}

#[test]
fn seed_with_dangling_reference_is_rejected() {
    let text = format!(
        r#"
org_id = "{ORG}"
[[environments]]
id = "env-a"
display_name = "a"
[[kafka_clusters]]
id = "lkc-a"
display_name = "a"
environment = "env-missing"
"#
    );
    let err = Seed::from_toml(&text).unwrap_err().to_string();
    assert!(err.contains("env-missing"), "{err}");
}

#[test]
fn seed_with_unknown_field_is_rejected() {
    let text = format!("org_id = \"{ORG}\"\ncolour = \"blue\"\n");
    let err = Seed::from_toml(&text).unwrap_err().to_string();
    assert!(err.contains("colour") && err.contains("line 2"), "{err}");
}

#[test]
fn seed_with_bad_checksum_is_rejected_without_echoing_the_secret() {
    let good = Minter::new().secret().unwrap();
    let bad = format!("{}AAAAAA", &good[..58]);
    let text = format!(
        r#"
org_id = "{ORG}"
[[users]]
id = "u-x"
email = "x@example.com"
full_name = "X"
[[api_keys]]
id = "ABCDEFGHIJKLMNOP"
secret = "{bad}"
owner = "u-x"
"#
    );
    let err = Seed::from_toml(&text).unwrap_err().to_string();
    assert!(
        err.contains("ABCDEFGHIJKLMNOP") && err.contains("checksum"),
        "{err}"
    );
    assert!(!err.contains(&bad), "{err}");
}

// === Secrets and ids ===

#[test]
fn minted_secret_checksum_verifies_and_tampering_breaks_it() {
    let minter = Minter::new();
    for _ in 0..50 {
        let s = minter.secret().unwrap();
        assert_eq!(s.len(), 64);
        assert!(s.starts_with("cflt"));
        assert!(secret::is_valid_cflt_secret(&s), "{s}");
        // Change one character of the random part: the checksum no longer matches.
        let mut chars: Vec<char> = s.chars().collect();
        chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        assert!(!secret::is_valid_cflt_secret(&tampered));
        let id = minter.key_id().unwrap();
        assert!(secret::is_key_id(&id), "{id}");
    }
}

#[test]
fn checksum_is_base64_of_little_endian_crc32() {
    let body = "A".repeat(54);
    let expected = STANDARD
        .encode(crc32fast::hash(body.as_bytes()).to_le_bytes())
        .trim_end_matches('=')
        .to_owned();
    assert_eq!(secret::checksum(&body), expected);
    assert_eq!(expected.len(), 6);
}

#[test]
fn secret_digest_matches_only_its_secret_and_debug_hides_it() {
    let d = secret::SecretDigest::of("cfltsecret");
    assert!(d.matches("cfltsecret"));
    assert!(!d.matches("cfltsecreT"));
    assert!(!format!("{d:?}").contains("cfltsecret"));
}

#[test]
fn timestamps_use_confluent_format() {
    let t = now();
    assert_eq!(t.len(), "2025-03-01T10:00:00.000000Z".len(), "{t}");
    assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
}

#[test]
fn debug_output_never_shows_secrets() {
    let sim = Simulator::new(Seed::builtin());
    let key = sim.demo_keys().remove(0);
    assert!(!format!("{key:?}").contains(&key.secret));
    assert!(!format!("{:?}", Seed::builtin()).contains(&key.secret));
    let recorded = super::RecordedRequest {
        method: "GET".into(),
        path_and_query: "/".into(),
        authority: None,
        version: "HTTP/1.1".into(),
        headers: vec![("authorization".into(), "Basic c2VjcmV0".into())],
        body_len: 0,
        body: None,
    };
    assert!(!format!("{recorded:?}").contains("c2VjcmV0"));
}

// === Authentication ===

#[tokio::test]
async fn bad_credentials_get_401_with_challenge_and_confluent_body() {
    let h = Harness::start().await;
    let alice = h.demo("u-alice");
    let orders = "cfltamtAW4VEkkN+65ujl5hUEuHD3pwQCoQqBN4F1mGUtrZj8VMgfxvhvemqJYng";
    let wrong_secret = basic(&alice.key_id, &h.demo("u-bob").secret);
    let resource_key = basic("DEMOORDERS000001", orders);
    let unknown_key = basic("NOSUCHKEY0000000", &alice.secret);
    let cases: [Option<&str>; 6] = [
        None,
        Some(&wrong_secret),
        Some(&resource_key),
        Some(&unknown_key),
        Some("Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"),
        Some("Basic !!!not-base64"),
    ];
    for auth in cases {
        let r = h.send(Method::GET, "/iam/v2/api-keys", auth, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(
            r.header("www-authenticate"),
            r#"Basic error="invalid_key", error_description="The API Key is invalid""#
        );
        assert!(r.headers.contains_key("x-request-id"));
        assert!(!r.headers.contains_key("x-ratelimit-limit"));
        assert_eq!(r.error()["code"], "user_unauthenticated");
    }
    // Unknown paths need credentials too, then answer 404 in Confluent's shape.
    let r = h.send(Method::GET, "/nope", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = h.get("/nope/v1/things").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error()["code"], "not_found");
    let r = h
        .send(
            Method::PUT,
            "/iam/v2/api-keys",
            Some(&h.auth("u-dave")),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), "GET, POST");
    h.stop().await;
}

// === Request log, faults, streaming, HTTP/2 ===

#[tokio::test]
async fn request_log_records_what_arrived() {
    let h = Harness::start().await;
    let body = json!({ "spec": { "owner": { "id": "nobody" } } });
    let auth = h.auth("u-erin");
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/iam/v2/api-keys?x=1", h.base))
        .header("authorization", &auth)
        .header("x-custom", "one")
        .header("x-custom", "two")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap();
    req.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    let r = h.client.request(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Unauthenticated requests are recorded too.
    h.send(Method::GET, "/org/v2/environments", None, None)
        .await;

    let log = h.sim.requests();
    assert_eq!(log.len(), 2);
    let first = &log[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path_and_query, "/iam/v2/api-keys?x=1");
    assert_eq!(first.version, "HTTP/1.1");
    assert_eq!(first.header_values("x-custom"), ["one", "two"]);
    assert_eq!(first.header_values("authorization"), [auth.as_str()]);
    assert_eq!(
        first.header_values("host"),
        [h.base.trim_start_matches("http://")]
    );
    assert_eq!(first.body_len, body.to_string().len() as u64);
    assert_eq!(first.body.as_deref(), Some(body.to_string().as_bytes()));
    assert_eq!(log[1].path_and_query, "/org/v2/environments");

    // The HTTP view shows the same, and reading it is not itself logged.
    let http_log = h
        .send(Method::GET, "/_simulator/requests", None, None)
        .await
        .json();
    assert_eq!(http_log.as_array().unwrap().len(), 2);
    assert_eq!(http_log[0]["body_text"], body.to_string());
    assert_eq!(http_log[0]["headers"][0].as_array().unwrap().len(), 2);
    h.sim.clear_requests();
    assert!(h.sim.requests().is_empty());
    h.stop().await;
}

/// A chunked request body of `len` bytes (no Content-Length), sent in 7 KiB frames.
struct Chunked {
    remaining: usize,
    next: u8,
}

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(7 * 1024);
        let start = self.next;
        let chunk: Vec<u8> = (0..n)
            .map(|i| start.wrapping_add(i as u8).wrapping_mul(7))
            .collect();
        self.remaining -= n;
        self.next = start.wrapping_add(n as u8);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}

#[tokio::test]
async fn echo_hashes_a_streamed_body() {
    let h = Harness::start().await;
    let len = 3 * 1024 * 1024 + 17;
    let mut expected = digest::Context::new(&digest::SHA256);
    let mut reference = Chunked {
        remaining: len,
        next: 0,
    };
    while let Some(frame) = reference.frame().await {
        expected.update(&frame.unwrap().into_data().unwrap());
    }
    let r = h
        .send_body(
            Method::POST,
            "/_simulator/echo",
            None,
            Chunked {
                remaining: len,
                next: 0,
            }
            .boxed(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let answer = r.json();
    assert_eq!(answer["bytes"], len);
    assert_eq!(answer["sha256"], crate::id::hex(expected.finish().as_ref()));
    let log = h.sim.requests();
    let entry = log.last().unwrap();
    assert_eq!(entry.body_len, len as u64);
    assert!(entry.body.is_none(), "bodies over 64 KiB are not kept");
    assert!(entry
        .header_values("transfer-encoding")
        .contains(&"chunked"));
    h.stop().await;
}

#[tokio::test]
async fn blob_streams_deterministic_bytes_with_content_length() {
    let h = Harness::start().await;
    let len: u64 = 5 * 1024 * 1024 + 3;
    let r = h
        .send(
            Method::GET,
            &format!("/_simulator/blob?bytes={len}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), len.to_string());
    assert_eq!(r.bytes.len() as u64, len);
    assert!(r
        .bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b == blob_byte(i as u64)));
    let empty = h
        .send(Method::GET, "/_simulator/blob?bytes=0", None, None)
        .await;
    assert!(empty.bytes.is_empty());
    assert_eq!(empty.header("content-length"), "0");
    let bad = h
        .send(Method::GET, "/_simulator/blob?bytes=-1", None, None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    h.stop().await;
}

#[tokio::test]
async fn fault_fires_exactly_times_then_normal_answers_resume() {
    let h = Harness::start().await;
    h.sim.inject_fault(Fault {
        method: Some(Method::POST),
        path_prefix: "/iam/v2/api-keys".into(),
        status: 429,
        headers: vec![("retry-after".into(), "3".into())],
        body: String::new(),
        times: 2,
    });
    // A GET does not match a POST fault.
    assert_eq!(h.get("/iam/v2/api-keys").await.status, StatusCode::OK);
    for _ in 0..2 {
        let r = h.create_key("u-alice", None).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.header("retry-after"), "3");
        assert!(r.bytes.is_empty());
        assert!(r.headers.contains_key("x-request-id"));
    }
    assert_eq!(
        h.create_key("u-alice", None).await.status,
        StatusCode::ACCEPTED
    );

    // The same through the HTTP control endpoint, matching any method; faults fire before auth.
    let spec = json!({ "path_prefix": "/org/", "status": 503, "body": "{\"errors\":[]}",
                       "headers": [["content-type", "application/json"]] });
    let r = h
        .send(Method::POST, "/_simulator/faults", None, Some(spec))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h
        .send(Method::GET, "/org/v2/environments", None, None)
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json(), json!({ "errors": [] }));
    assert_eq!(h.get("/org/v2/environments").await.status, StatusCode::OK);
    // Faulted requests are still logged.
    assert!(
        h.sim
            .requests()
            .iter()
            .filter(|r| r.path_and_query == "/org/v2/environments")
            .count()
            == 2
    );
    h.stop().await;
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let h = Harness::start_with(true).await;
    let r = h.get("/iam/v2/api-keys/DEMOALICE0000001").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["spec"]["owner"]["id"], "u-alice");
    let r = h
        .create_key("u-bob", Some(json!({ "id": "lkc-prod01" })))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let log = h.sim.requests();
    assert!(log.iter().all(|r| r.version == "HTTP/2.0"), "{log:?}");
    assert_eq!(
        log[0].authority.as_deref(),
        Some(h.base.trim_start_matches("http://"))
    );
    h.stop().await;
}

#[tokio::test]
async fn tls_offers_h2_and_http11_by_alpn() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_der = cert.cert.der().clone();
    let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let server_config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sim = Arc::new(Simulator::new(Seed::builtin()));
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        Arc::clone(&sim),
        Some(Arc::new(server_config)),
        async {
            let _ = rx.await;
        },
    ));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    for (alpn, version) in [
        (b"h2".to_vec(), "HTTP/2.0"),
        (b"http/1.1".to_vec(), "HTTP/1.1"),
    ] {
        let mut client_config = rustls::ClientConfig::builder()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        client_config.alpn_protocols = vec![alpn.clone()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn.as_slice()));
        let io = hyper_util::rt::TokioIo::new(tls);
        let req = Request::builder()
            .uri(format!(
                "https://localhost:{}/_simulator/blob?bytes=10",
                addr.port()
            ))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let status = if alpn == b"h2" {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap().status()
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap().status()
        };
        assert_eq!(status, StatusCode::OK);
        assert_eq!(sim.requests().last().unwrap().version, version);
    }
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

// === sessions (the Confluent CLI's counterpart) ===

impl Harness {
    async fn send_as_host(
        &self,
        method: Method,
        host: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("host", host);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let req = req
            .header("content-type", "application/json")
            .body(Full::new(bytes).boxed())
            .unwrap();
        let response = self.client.request(req).await.unwrap();
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            bytes: body.collect().await.unwrap().to_bytes(),
        }
    }
}

#[tokio::test]
async fn a_login_gives_a_session_token_that_authenticates_on_every_route_until_refreshed() {
    let h = Harness::start().await;
    let wrong = h
        .send_as_host(
            Method::POST,
            "confluent.cloud",
            "/api/sessions",
            None,
            Some(json!({ "email": "bob@example.com", "password": "nope" })),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let login = h
        .send_as_host(
            Method::POST,
            "confluent.cloud",
            "/api/sessions",
            None,
            Some(json!({ "email": "BOB@example.com", "password": "bob-demo-password" })),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    let token = login.json()["token"].as_str().unwrap().to_owned();
    let refresh = login.json()["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(token.split('.').count(), 3);
    let bearer = format!("Bearer {token}");
    let me = h
        .send_as_host(
            Method::GET,
            "confluent.cloud",
            "/api/me",
            Some(&bearer),
            None,
        )
        .await;
    assert_eq!(me.json()["user"]["resource_id"], "u-bob");
    assert_eq!(me.json()["organization"]["resource_id"], ORG);
    let keys = h
        .send_as_host(
            Method::GET,
            "api.confluent.cloud",
            "/iam/v2/api-keys",
            Some(&bearer),
            None,
        )
        .await;
    assert_eq!(keys.status, StatusCode::OK);
    // Each host answers only its own routes.
    let wrong_host = h
        .send_as_host(
            Method::GET,
            "confluent.cloud",
            "/iam/v2/api-keys",
            Some(&bearer),
            None,
        )
        .await;
    assert_eq!(wrong_host.status, StatusCode::NOT_FOUND);
    let wrong_host = h
        .send_as_host(
            Method::GET,
            "api.confluent.cloud",
            "/api/me",
            Some(&bearer),
            None,
        )
        .await;
    assert_eq!(wrong_host.status, StatusCode::NOT_FOUND);
    // A refresh token gives a new session token.
    let refreshed = h
        .send_as_host(
            Method::POST,
            "confluent.cloud",
            "/api/sessions",
            None,
            Some(json!({ "refresh_token": refresh })),
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK);
    assert_ne!(refreshed.json()["token"], login.json()["token"]);
    // An expired token is refused everywhere.
    let expired = h.sim.session_token(
        "u-bob",
        std::time::SystemTime::now() - std::time::Duration::from_secs(1),
    );
    let refused = h
        .send(
            Method::GET,
            "/iam/v2/api-keys",
            Some(&format!("Bearer {expired}")),
            None,
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let refused = h
        .send(
            Method::GET,
            "/api/me",
            Some(&format!("Bearer {expired}")),
            None,
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

// === Behind keygate's back ===

#[tokio::test]
async fn keys_created_and_deleted_directly_show_in_listings_and_authenticate() {
    let h = Harness::start().await;
    let r = h
        .send(
            Method::POST,
            "/_simulator/api-keys",
            None,
            Some(json!({ "owner": "sa-orders", "resource": "lkc-prod01", "display_name": "console" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.bytes);
    let keys = r.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1);
    let id = keys[0]["id"].as_str().unwrap().to_owned();
    let got = h.get(&format!("/iam/v2/api-keys/{id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["spec"]["display_name"], "console");
    assert_eq!(got.json()["spec"]["resource"]["id"], "lkc-prod01");

    // A directly created Cloud key is a working credential, like any other.
    let cloud = h
        .send(
            Method::POST,
            "/_simulator/api-keys",
            None,
            Some(json!({ "owner": "u-alice" })),
        )
        .await
        .json();
    let auth = basic(
        cloud["keys"][0]["id"].as_str().unwrap(),
        cloud["keys"][0]["secret"].as_str().unwrap(),
    );
    let listed = h
        .send(Method::GET, "/iam/v2/api-keys", Some(&auth), None)
        .await;
    assert_eq!(listed.status, StatusCode::OK);

    let deleted = h
        .send(
            Method::DELETE,
            &format!("/_simulator/api-keys/{id}"),
            None,
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        h.get(&format!("/iam/v2/api-keys/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    let again = h
        .send(
            Method::DELETE,
            &format!("/_simulator/api-keys/{id}"),
            None,
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    let unknown_owner = h
        .send(
            Method::POST,
            "/_simulator/api-keys",
            None,
            Some(json!({ "owner": "sa-nobody" })),
        )
        .await;
    assert_eq!(unknown_owner.status, StatusCode::UNPROCESSABLE_ENTITY);
    h.stop().await;
}

#[tokio::test]
async fn tens_of_thousands_of_keys_page_through_without_repeats() {
    let h = Harness::start().await;
    let before = h.sim.api_key_ids().len();
    h.sim
        .create_keys_directly(&super::DirectKey::new("sa-payments", "lkc-dev01"), 20_000)
        .unwrap();
    let mut seen = HashSet::new();
    let mut path = "/iam/v2/api-keys?page_size=100".to_owned();
    let mut pages = 0;
    loop {
        let page = h.get(&path).await.json();
        pages += 1;
        assert_eq!(page["metadata"]["total_size"], before + 20_000);
        for key in page["data"].as_array().unwrap() {
            assert!(seen.insert(key["id"].as_str().unwrap().to_owned()));
        }
        match page["metadata"]["next"].as_str() {
            Some(next) => path = next.strip_prefix(&h.base).unwrap().to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), before + 20_000);
    assert_eq!(pages, (before + 20_000).div_ceil(100));
    h.stop().await;
}

#[tokio::test]
async fn a_stalled_create_is_carried_out_and_answered_only_when_released() {
    let h = Arc::new(Harness::start().await);
    let stall = h
        .send(
            Method::POST,
            "/_simulator/stall",
            None,
            Some(json!({ "method": "POST", "path_prefix": "/iam/v2/api-keys" })),
        )
        .await;
    assert_eq!(stall.status, StatusCode::NO_CONTENT);
    let before = h.sim.api_key_ids();
    let creating = {
        let h = h.clone();
        tokio::spawn(async move {
            h.create_key("sa-orders", Some(json!({ "id": "lkc-prod01" })))
                .await
        })
    };
    h.sim.stalled(1).await;
    // The key exists while its answer is held back.
    assert_eq!(h.sim.api_key_ids().len(), before.len() + 1);
    assert!(!creating.is_finished());
    let release = h
        .send(Method::DELETE, "/_simulator/stall", None, None)
        .await;
    assert_eq!(release.status, StatusCode::NO_CONTENT);
    let created = creating.await.unwrap();
    assert_eq!(created.status, StatusCode::ACCEPTED);
    // One stall, one held answer: the next create is answered at once.
    let next = h
        .create_key("sa-orders", Some(json!({ "id": "lkc-prod01" })))
        .await;
    assert_eq!(next.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn kafka_clusters_report_their_kind() {
    let h = Harness::start().await;
    let prod = h
        .get("/cmk/v2/clusters/lkc-prod01?environment=env-prod01")
        .await
        .json();
    assert_eq!(prod["spec"]["config"]["kind"], "Dedicated");
    let dev = h
        .get("/cmk/v2/clusters/lkc-dev01?environment=env-dev01")
        .await
        .json();
    assert_eq!(dev["spec"]["config"]["kind"], "Basic");
    h.stop().await;
}

#[test]
fn a_cluster_kind_confluent_does_not_have_is_a_seed_error() {
    let text = Seed::builtin_text().replace("kind = \"Basic\"", "kind = \"Huge\"");
    let err = Seed::from_toml(&text).unwrap_err().to_string();
    assert!(err.contains("kind `Huge`"), "{err}");
}
