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
use super::store::{civil_for_test, now};
use super::{serve, DemoKey, Fault, Seed, Simulator};

const ORG: &str = "4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c";

type TestBody = BoxBody<Bytes, Infallible>;

struct Harness {
    sim: Arc<Simulator>,
    base: String,
    client: Client<HttpConnector, TestBody>,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {:?}", self.status, self.bytes))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no `{name}` header"))
            .to_str()
            .unwrap()
    }

    /// The single Confluent error in the body.
    fn error(&self) -> Value {
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
    async fn start() -> Self {
        Self::start_with(false).await
    }

    async fn start_with(http2_only: bool) -> Self {
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
    fn auth(&self, principal: &str) -> String {
        let key = self.demo(principal);
        basic(&key.key_id, &key.secret)
    }

    fn demo(&self, principal: &str) -> DemoKey {
        self.sim
            .demo_keys()
            .into_iter()
            .find(|k| k.principal_id == principal)
            .unwrap_or_else(|| panic!("no demo key for {principal}"))
    }

    async fn send_body(
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

    async fn send(
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

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Some(&self.auth("u-alice")), None)
            .await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(&self.auth("u-alice")), Some(body))
            .await
    }

    async fn create_key(&self, owner: &str, resource: Option<Value>) -> Reply {
        let mut spec = json!({ "display_name": "k", "owner": { "id": owner } });
        if let Some(resource) = resource {
            spec["resource"] = resource;
        }
        self.post("/iam/v2/api-keys", json!({ "spec": spec })).await
    }

    async fn stop(self) {
        drop(self.client);
        self.shutdown.send(()).unwrap();
        self.server.await.unwrap().unwrap();
    }
}

fn basic(key: &str, secret: &str) -> String {
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
    assert_eq!(civil_for_test(0), (1970, 1, 1));
    assert_eq!(civil_for_test(20_148), (2025, 3, 1));
    assert_eq!(civil_for_test(11_016), (2000, 2, 29));
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

// === API keys ===

#[tokio::test]
async fn create_answers_202_with_location_and_a_usable_secret() {
    let h = Harness::start().await;
    let r = h
        .create_key("sa-orders", Some(json!({ "id": "lkc-prod01" })))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let key = r.json();
    let id = key["id"].as_str().unwrap();
    assert!(secret::is_key_id(id), "{id}");
    assert_eq!(
        r.header("location"),
        format!("{}/iam/v2/api-keys/{id}", h.base)
    );
    assert!(r.headers.contains_key("x-request-id"));
    assert!(r.headers.contains_key("x-ratelimit-limit"));
    assert!(r.headers.contains_key("x-ratelimit-remaining"));
    assert!(r.headers.contains_key("x-ratelimit-reset"));
    assert_eq!(key["api_version"], "iam/v2");
    assert_eq!(key["kind"], "ApiKey");
    assert_eq!(
        key["metadata"]["self"],
        format!("{}/iam/v2/api-keys/{id}", h.base)
    );
    assert_eq!(
        key["metadata"]["resource_name"],
        format!("crn://confluent.cloud/organization={ORG}/service-account=sa-orders/api-key={id}")
    );
    assert!(key["metadata"]["created_at"].is_string() && key["metadata"]["updated_at"].is_string());
    let secret = key["spec"]["secret"].as_str().unwrap();
    assert!(secret::is_valid_cflt_secret(secret), "{secret}");
    let owner = &key["spec"]["owner"];
    assert_eq!(owner["kind"], "ServiceAccount");
    assert_eq!(owner["api_version"], "iam/v2");
    assert_eq!(
        owner["related"],
        format!("{}/iam/v2/service-accounts/sa-orders", h.base)
    );
    let resource = &key["spec"]["resource"];
    assert_eq!(resource["api_version"], "cmk/v2");
    assert_eq!(resource["kind"], "Cluster");
    assert_eq!(resource["environment"], "env-prod01");
    assert_eq!(
        resource["resource_name"],
        format!("crn://confluent.cloud/organization={ORG}/environment=env-prod01/cloud-cluster=lkc-prod01")
    );

    let got = h.get(&format!("/iam/v2/api-keys/{id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["spec"]["secret"], "");
    assert_eq!(got.json()["spec"]["owner"], key["spec"]["owner"]);

    // A Kafka key cannot call the management API; a Cloud key (no resource) can, at once.
    let kafka = h
        .send(
            Method::GET,
            "/org/v2/environments",
            Some(&basic(id, secret)),
            None,
        )
        .await;
    assert_eq!(kafka.status, StatusCode::UNAUTHORIZED);
    let cloud = h.create_key("u-alice", None).await.json();
    assert_eq!(cloud["spec"]["resource"]["id"], "cloud");
    assert_eq!(cloud["spec"]["resource"]["kind"], "Cloud");
    let auth = basic(
        cloud["id"].as_str().unwrap(),
        cloud["spec"]["secret"].as_str().unwrap(),
    );
    let envs = h
        .send(Method::GET, "/org/v2/environments", Some(&auth), None)
        .await;
    assert_eq!(envs.status, StatusCode::OK);
    h.stop().await;
}

#[tokio::test]
async fn create_accepts_every_resource_type_with_its_kind() {
    let h = Harness::start().await;
    let cases = [
        (json!(null), "cloud", "iam/v2", "Cloud"),
        (json!({ "id": "cloud" }), "cloud", "iam/v2", "Cloud"),
        (json!({ "id": "global" }), "global", "global/v1", "Global"),
        (
            json!({ "id": "tableflow" }),
            "tableflow",
            "tableflow/v1",
            "Tableflow",
        ),
        (
            json!({ "id": "lsrc-dev01", "related": "", "resource_name": "" }),
            "lsrc-dev01",
            "srcm/v3",
            "SchemaRegistry",
        ),
        (
            json!({ "id": "lksqlc-dev01" }),
            "lksqlc-dev01",
            "ksqldbcm/v2",
            "ksqlDB",
        ),
        (
            json!({ "id": "aws.us-east-1", "environment": "env-dev01" }),
            "aws.us-east-1",
            "fcpm/v2",
            "Region",
        ),
    ];
    for (resource, id, api_version, kind) in cases {
        let r = h.create_key("u-frank", Some(resource.clone())).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{resource}: {}", r.json());
        let got = &r.json()["spec"]["resource"];
        assert_eq!(got["id"], id, "{resource}");
        assert_eq!(got["api_version"], api_version, "{resource}");
        assert_eq!(got["kind"], kind, "{resource}");
    }
    // The older multi-resource form is tolerated.
    let r = h
        .post(
            "/iam/v2/api-keys",
            json!({ "spec": { "owner": { "id": "u-dave" }, "resources": [{ "id": "lkc-dev01" }] } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.json()["spec"]["resource"]["id"], "lkc-dev01");
    h.stop().await;
}

#[tokio::test]
async fn create_rejects_unknown_owner_resource_and_bad_json() {
    let h = Harness::start().await;
    let cases = [
        (
            json!({ "spec": { "owner": { "id": "sa-nobody" } } }),
            "/spec/owner/id",
        ),
        (
            json!({ "spec": { "owner": { "id": "" } } }),
            "/spec/owner/id",
        ),
        (json!({ "spec": {} }), "/spec/owner/id"),
        (json!({}), "/spec"),
        (
            json!({ "spec": { "owner": { "id": "u-bob" }, "resource": { "id": "lkc-nope" } } }),
            "/spec/resource/id",
        ),
        (
            json!({ "spec": { "owner": { "id": "u-bob" }, "resource": { "id": "aws.us-east-1" } } }),
            "/spec/resource/environment",
        ),
        (
            json!({ "spec": { "owner": { "id": "u-bob" }, "resource": { "id": "aws.us-east-1", "environment": "env-nope" } } }),
            "/spec/resource/environment",
        ),
        (
            json!({ "spec": { "owner": { "id": "u-bob" }, "display_name": 5 } }),
            "/spec/display_name",
        ),
    ];
    for (body, pointer) in cases {
        let r = h.post("/iam/v2/api-keys", body.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let e = r.error();
        assert_eq!(e["code"], "invalid_configuration", "{body}");
        assert_eq!(e["title"], "Validation Failed");
        assert_eq!(e["source"]["pointer"], pointer, "{body}");
    }
    let r = h
        .send_body(
            Method::POST,
            "/iam/v2/api-keys",
            Some(&h.auth("u-alice")),
            Full::new(Bytes::from_static(b"{\"spec\":")).boxed(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    r.error();
    // Nothing was created by any of the rejected requests.
    let list = h.get("/iam/v2/api-keys?page_size=100").await.json();
    assert_eq!(list["metadata"]["total_size"], 10);
    h.stop().await;
}

#[tokio::test]
async fn list_filters_exactly_and_paginates_with_absolute_links() {
    let h = Harness::start().await;
    for _ in 0..12 {
        let r = h
            .create_key("sa-payments", Some(json!({ "id": "lkc-prod01" })))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }
    // 12 new Kafka keys + the seeded Schema Registry key of sa-payments.
    let mut url = "/iam/v2/api-keys?spec.owner=sa-payments&page_size=5".to_owned();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = h.get(&url).await;
        assert_eq!(r.status, StatusCode::OK);
        let list = r.json();
        pages += 1;
        assert_eq!(list["kind"], "ApiKeyList");
        assert_eq!(list["metadata"]["total_size"], 13);
        assert_eq!(
            list["metadata"]["first"],
            format!(
                "{}/iam/v2/api-keys?spec.owner=sa-payments&page_size=5",
                h.base
            )
        );
        for key in list["data"].as_array().unwrap() {
            assert_eq!(key["spec"]["owner"]["id"], "sa-payments");
            assert_eq!(key["spec"]["secret"], "");
            seen.push(key["id"].as_str().unwrap().to_owned());
        }
        match list["metadata"].get("next") {
            // Follow `next` verbatim, as some SDKs do.
            Some(next) => url = next.as_str().unwrap().to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 13);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        13,
        "a key repeated"
    );

    let by_resource = h
        .get("/iam/v2/api-keys?spec.resource=lsrc-prod01")
        .await
        .json();
    assert_eq!(by_resource["metadata"]["total_size"], 1);
    assert_eq!(by_resource["data"][0]["id"], "DEMOPAYMENTS0001");
    assert!(by_resource["metadata"].get("next").is_none());
    let both = h
        .get("/iam/v2/api-keys?spec.owner=sa-payments&spec.resource=lkc-prod01")
        .await
        .json();
    assert_eq!(both["metadata"]["total_size"], 12);
    assert_eq!(
        both["data"].as_array().unwrap().len(),
        10,
        "default page size"
    );
    let prefix = h.get("/iam/v2/api-keys?spec.owner=sa-pay").await.json();
    assert_eq!(prefix["metadata"]["total_size"], 0, "filters are exact");
    h.stop().await;
}

#[tokio::test]
async fn bad_page_size_or_token_is_400_invalid_filter() {
    let h = Harness::start().await;
    for query in [
        "page_size=0",
        "page_size=101",
        "page_size=ten",
        "page_token=%%%",
    ] {
        let r = h.get(&format!("/iam/v2/api-keys?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
        let e = r.error();
        assert_eq!(e["code"], "invalid_filter", "{query}");
        assert!(e["source"]["parameter"].is_string());
    }
    assert_eq!(
        h.get("/iam/v2/api-keys?page_size=100").await.status,
        StatusCode::OK
    );
    h.stop().await;
}

#[tokio::test]
async fn patch_changes_only_name_and_description() {
    let h = Harness::start().await;
    let id = "DEMOORDERS000001";
    let path = format!("/iam/v2/api-keys/{id}");
    let auth = h.auth("u-alice");
    let r = h
        .send(
            Method::PATCH,
            &path,
            Some(&auth),
            Some(json!({ "spec": { "display_name": "renamed", "description": "new" } })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["spec"]["display_name"], "renamed");
    assert_eq!(r.json()["spec"]["description"], "new");
    assert_eq!(r.json()["spec"]["secret"], "");

    for (body, pointer) in [
        (
            json!({ "spec": { "owner": { "id": "sa-payments" } } }),
            "/spec/owner",
        ),
        (
            json!({ "spec": { "resource": { "id": "lkc-dev01" } } }),
            "/spec/resource",
        ),
        (json!({ "spec": { "secret": "x" } }), "/spec/secret"),
    ] {
        let r = h
            .send(Method::PATCH, &path, Some(&auth), Some(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(r.error()["source"]["pointer"], pointer);
    }
    let after = h.get(&path).await.json();
    assert_eq!(after["spec"]["owner"]["id"], "sa-orders");
    assert_eq!(after["spec"]["resource"]["id"], "lkc-prod01");
    assert_eq!(after["spec"]["display_name"], "renamed");
    let missing = h
        .send(
            Method::PATCH,
            "/iam/v2/api-keys/NOSUCHKEY0000000",
            Some(&auth),
            Some(json!({})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    h.stop().await;
}

#[tokio::test]
async fn delete_is_204_empty_then_404() {
    let h = Harness::start().await;
    let auth = h.auth("u-alice");
    let path = "/iam/v2/api-keys/DEMOORDERS000001";
    let r = h.send(Method::DELETE, path, Some(&auth), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.bytes.is_empty());
    assert!(r.headers.contains_key("x-request-id"));
    let r = h.get(path).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error()["title"], "Not Found");
    let r = h.send(Method::DELETE, path, Some(&auth), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    h.stop().await;
}

#[tokio::test]
async fn existing_keys_follow_confluents_rbac_for_read_update_delete_and_list() {
    let h = Harness::start().await;
    let (dave, bob, alice) = (h.auth("u-dave"), h.auth("u-bob"), h.auth("u-alice"));
    let orders = "/iam/v2/api-keys/DEMOORDERS000001";
    let payments = "/iam/v2/api-keys/DEMOPAYMENTS0001";
    let patch = json!({ "spec": { "description": "changed" } });

    // DeveloperRead: no say over another account's key, whatever the method.
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(patch.clone())),
        (Method::DELETE, None),
    ] {
        let r = h.send(method.clone(), orders, Some(&dave), body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method}");
        assert_eq!(r.error()["code"], "forbidden_access");
    }
    // Its own key it may read; a key that does not exist is still 404.
    let own = format!("/iam/v2/api-keys/{}", h.demo("u-dave").key_id);
    assert_eq!(
        h.send(Method::GET, &own, Some(&dave), None).await.status,
        StatusCode::OK
    );
    let none = "/iam/v2/api-keys/NOSUCHKEY0000001";
    assert_eq!(
        h.send(Method::GET, none, Some(&dave), None).await.status,
        StatusCode::NOT_FOUND
    );

    // ResourceOwner on sa-orders: that account's keys, not sa-payments'.
    assert_eq!(
        h.send(Method::GET, orders, Some(&bob), None).await.status,
        StatusCode::OK
    );
    let r = h
        .send(Method::PATCH, orders, Some(&bob), Some(patch.clone()))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        h.send(Method::GET, payments, Some(&bob), None).await.status,
        StatusCode::FORBIDDEN
    );

    // A list shows what the caller may manage.
    let listed = |r: Reply| -> Vec<String> {
        r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mine = listed(
        h.send(
            Method::GET,
            "/iam/v2/api-keys?page_size=100",
            Some(&dave),
            None,
        )
        .await,
    );
    assert_eq!(mine, [h.demo("u-dave").key_id]);
    let bobs = listed(
        h.send(
            Method::GET,
            "/iam/v2/api-keys?page_size=100",
            Some(&bob),
            None,
        )
        .await,
    );
    assert!(bobs.contains(&"DEMOORDERS000001".to_owned()), "{bobs:?}");
    assert!(!bobs.contains(&"DEMOPAYMENTS0001".to_owned()), "{bobs:?}");
    let all = listed(
        h.send(
            Method::GET,
            "/iam/v2/api-keys?page_size=100",
            Some(&alice),
            None,
        )
        .await,
    );
    assert!(all.len() > bobs.len() && all.contains(&"DEMOPAYMENTS0001".to_owned()));

    // OrganizationAdmin: anything.
    let r = h.send(Method::DELETE, payments, Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h.send(Method::DELETE, orders, Some(&bob), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    h.stop().await;
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

#[tokio::test]
async fn deleting_an_owner_revokes_its_keys() {
    let h = Harness::start().await;
    let auth = h.auth("u-alice");
    let r = h
        .send(Method::DELETE, "/iam/v2/users/u-dave", Some(&auth), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h
        .send(Method::GET, "/iam/v2/users", Some(&h.auth("u-dave")), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let bindings = h
        .get("/iam/v2/role-bindings?crn_pattern=crn://&principal=User:u-dave")
        .await;
    assert_eq!(bindings.json()["metadata"]["total_size"], 0);
    assert_eq!(
        h.get("/iam/v2/users/u-dave").await.status,
        StatusCode::NOT_FOUND
    );
    h.stop().await;
}

// === Role bindings ===

#[tokio::test]
async fn role_binding_list_requires_crn_pattern_and_filters() {
    let h = Harness::start().await;
    let r = h.get("/iam/v2/role-bindings").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error()["source"]["parameter"], "crn_pattern");

    let org = format!("crn://confluent.cloud/organization={ORG}");
    let all = h
        .get(&format!(
            "/iam/v2/role-bindings?crn_pattern={org}&page_size=100"
        ))
        .await
        .json();
    assert_eq!(all["kind"], "RoleBindingList");
    assert_eq!(all["metadata"]["total_size"], 9);
    // Substring search: everything under env-dev01.
    let dev = h
        .get("/iam/v2/role-bindings?crn_pattern=environment%3Denv-dev01")
        .await
        .json();
    let ids: HashSet<&str> = dev["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rb| rb["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        HashSet::from(["rb-dave-topic", "rb-frank-envdev", "rb-grace-ksqldev"])
    );
    let admins = h
        .get(&format!(
            "/iam/v2/role-bindings?crn_pattern={org}&role_name=OrganizationAdmin"
        ))
        .await
        .json();
    assert_eq!(admins["metadata"]["total_size"], 2);
    let bob = h
        .get(&format!(
            "/iam/v2/role-bindings?crn_pattern={org}&principal=User:u-bob"
        ))
        .await
        .json();
    assert_eq!(bob["metadata"]["total_size"], 2);
    let rb = &bob["data"][0];
    assert_eq!(rb["api_version"], "iam/v2");
    assert_eq!(rb["kind"], "RoleBinding");
    assert_eq!(
        rb["metadata"]["self"],
        format!(
            "{}/iam/v2/role-bindings/{}",
            h.base,
            rb["id"].as_str().unwrap()
        )
    );
    h.stop().await;
}

#[tokio::test]
async fn role_binding_create_get_delete() {
    let h = Harness::start().await;
    let auth = h.auth("u-alice");
    let crn = format!("crn://confluent.cloud/organization={ORG}/environment=env-dev01");
    let body = json!({ "principal": "User:sa-payments", "role_name": "EnvironmentAdmin", "crn_pattern": crn });
    let r = h.post("/iam/v2/role-bindings", body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let rb = r.json();
    let id = rb["id"].as_str().unwrap();
    assert!(id.starts_with("rb-"));
    assert_eq!(
        r.header("location"),
        format!("{}/iam/v2/role-bindings/{id}", h.base)
    );
    assert_eq!(rb["principal"], "User:sa-payments");

    let dup = h.post("/iam/v2/role-bindings", body).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.error()["code"], "resource_already_exists");

    for (bad, pointer) in [
        (
            json!({ "principal": "sa-payments", "role_name": "X", "crn_pattern": crn }),
            "/principal",
        ),
        (
            json!({ "principal": "User:sa-payments", "role_name": "", "crn_pattern": crn }),
            "/role_name",
        ),
        (
            json!({ "principal": "User:sa-payments", "role_name": "X", "crn_pattern": "env-dev01" }),
            "/crn_pattern",
        ),
    ] {
        let r = h.post("/iam/v2/role-bindings", bad.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(r.error()["source"]["pointer"], pointer);
    }

    let path = format!("/iam/v2/role-bindings/{id}");
    assert_eq!(h.get(&path).await.json(), rb);
    let deleted = h.send(Method::DELETE, &path, Some(&auth), None).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.json(), rb);
    assert_eq!(h.get(&path).await.status, StatusCode::NOT_FOUND);
    h.stop().await;
}

// === Service accounts, users, inventory ===

#[tokio::test]
async fn service_account_with_assigned_owner_gets_resource_owner_binding() {
    let h = Harness::start().await;
    let auth = h.auth("u-alice");
    let r = h
        .post(
            "/iam/v2/service-accounts?assigned_resource_owner=u-carol",
            json!({ "display_name": "billing", "description": "bills" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let sa = r.json();
    let id = sa["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sa-"));
    assert_eq!(sa["kind"], "ServiceAccount");
    assert_eq!(sa["display_name"], "billing");
    let crn = format!("crn://confluent.cloud/organization={ORG}/service-account={id}");
    assert_eq!(sa["metadata"]["resource_name"], crn);
    let owners = h
        .get(&format!(
            "/iam/v2/role-bindings?crn_pattern=service-account={id}&role_name=ResourceOwner"
        ))
        .await
        .json();
    assert_eq!(owners["metadata"]["total_size"], 1);
    assert_eq!(owners["data"][0]["principal"], "User:u-carol");
    assert_eq!(owners["data"][0]["crn_pattern"], crn);

    let dup = h
        .post(
            "/iam/v2/service-accounts",
            json!({ "display_name": "billing" }),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let bad_owner = h
        .post(
            "/iam/v2/service-accounts?assigned_resource_owner=u-nobody",
            json!({ "display_name": "x" }),
        )
        .await;
    assert_eq!(bad_owner.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        bad_owner.error()["source"]["parameter"],
        "assigned_resource_owner"
    );

    let patched = h
        .send(
            Method::PATCH,
            &format!("/iam/v2/service-accounts/{id}"),
            Some(&auth),
            Some(json!({ "description": "invoices" })),
        )
        .await;
    assert_eq!(patched.json()["description"], "invoices");

    // Deleting the account takes its keys and the bindings on it along.
    let key = h.create_key(&id, None).await;
    assert_eq!(key.status, StatusCode::ACCEPTED);
    let r = h
        .send(
            Method::DELETE,
            &format!("/iam/v2/service-accounts/{id}"),
            Some(&auth),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let keys = h
        .get(&format!("/iam/v2/api-keys?spec.owner={id}"))
        .await
        .json();
    assert_eq!(keys["metadata"]["total_size"], 0);
    let owners = h
        .get(&format!(
            "/iam/v2/role-bindings?crn_pattern=service-account={id}"
        ))
        .await
        .json();
    assert_eq!(owners["metadata"]["total_size"], 0);
    h.stop().await;
}

#[tokio::test]
async fn users_can_be_listed_and_patched_but_not_created() {
    let h = Harness::start().await;
    let users = h.get("/iam/v2/users?page_size=100").await.json();
    assert_eq!(users["kind"], "UserList");
    assert_eq!(users["metadata"]["total_size"], 7);
    let auth = h.auth("u-alice");
    let r = h
        .send(
            Method::PATCH,
            "/iam/v2/users/u-bob",
            Some(&auth),
            Some(json!({ "full_name": "Robert" })),
        )
        .await;
    assert_eq!(r.json()["full_name"], "Robert");
    assert_eq!(r.json()["email"], "bob@example.com");
    let r = h
        .post("/iam/v2/users", json!({ "email": "x@example.com" }))
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    h.stop().await;
}

#[tokio::test]
async fn inventory_endpoints_need_an_environment_and_use_confluent_shapes() {
    let h = Harness::start().await;
    let envs = h.get("/org/v2/environments").await.json();
    assert_eq!(envs["kind"], "EnvironmentList");
    assert_eq!(envs["metadata"]["total_size"], 2);
    assert_eq!(
        h.get("/org/v2/environments/env-prod01").await.json()["display_name"],
        "prod"
    );

    for path in [
        "/cmk/v2/clusters",
        "/srcm/v3/clusters",
        "/ksqldbcm/v2/clusters",
        "/cmk/v2/clusters/lkc-prod01",
    ] {
        let r = h.get(path).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(r.error()["source"]["parameter"], "environment");
    }
    let kafka = h
        .get("/cmk/v2/clusters?environment=env-prod01")
        .await
        .json();
    assert_eq!(kafka["kind"], "ClusterList");
    assert_eq!(kafka["data"][0]["id"], "lkc-prod01");
    assert_eq!(kafka["data"][0]["spec"]["environment"]["id"], "env-prod01");
    let one = h
        .get("/cmk/v2/clusters/lkc-prod01?environment=env-prod01")
        .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["api_version"], "cmk/v2");
    let wrong_env = h
        .get("/cmk/v2/clusters/lkc-prod01?environment=env-dev01")
        .await;
    assert_eq!(wrong_env.status, StatusCode::NOT_FOUND);
    let sr = h
        .get("/srcm/v3/clusters?environment=env-dev01")
        .await
        .json();
    assert_eq!(sr["data"][0]["id"], "lsrc-dev01");
    assert_eq!(sr["data"][0]["api_version"], "srcm/v3");
    let ksql = h
        .get("/ksqldbcm/v2/clusters?environment=env-dev01")
        .await
        .json();
    assert_eq!(ksql["data"][0]["id"], "lksqlc-dev01");
    assert_eq!(ksql["data"][0]["spec"]["kafka_cluster"]["id"], "lkc-dev01");
    let unknown = h.get("/cmk/v2/clusters?environment=env-nope").await;
    assert_eq!(unknown.status, StatusCode::FORBIDDEN);
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
