//! The canary scan: run the real binary (trace logs, audit file + stdout + webhook sinks) against
//! the simulator, push canary secrets through every door a caller or the upstream has — credentials,
//! cookies, bodies that fail parsing, STS form bodies, upstream error bodies, identity lookups that
//! go wrong — then search every output keygate produced for them. The one place a secret may
//! appear is the create response the caller asked for, and there it must be intact.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use keygate::simulator::Fault;

use keygate::identity::jwt::mint::{self, Minter};

use crate::support::audit::{assert_valid, create_body, parse_lines};
use crate::support::sim::Sim;
use crate::support::{self, binary, upstream, within, Collected};

const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `n` random characters of `alphabet`.
fn random(alphabet: &[u8], n: usize) -> String {
    let mut bytes = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    bytes
        .iter()
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect()
}

/// A fresh, well-formed `cflt` secret (valid checksum) drawn from `alphabet` (the checksum too,
/// by retrying: letters and digits only make it a syntactically valid API key id as well).
fn cflt(alphabet: &[u8]) -> String {
    loop {
        let body = random(alphabet, 54);
        let sum = base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(crc32fast::hash(body.as_bytes()).to_le_bytes());
        if sum.bytes().all(|b| alphabet.contains(&b)) {
            return format!("cflt{body}{sum}");
        }
    }
}

/// Whether `s` is a `cflt` secret with a valid checksum (docs/confluent-api.md §5).
fn is_valid_cflt(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("cflt") else {
        return false;
    };
    if s.len() != 64 || !rest.bytes().all(|b| SECRET_ALPHABET.contains(&b)) {
        return false;
    }
    let (body, sum) = rest.split_at(54);
    base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(crc32fast::hash(body.as_bytes()).to_le_bytes())
        == sum
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Captured webhook POST bodies.
type Captured = Arc<Mutex<Vec<Bytes>>>;

async fn webhook_capture() -> (SocketAddr, Captured) {
    let captured: Captured = Arc::default();
    let sink = captured.clone();
    let addr = upstream::spawn(None, move |request: Request<hyper::body::Incoming>| {
        let sink = sink.clone();
        async move {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            sink.lock().unwrap().push(body);
            Response::new(Full::new(Bytes::new()))
        }
    })
    .await;
    (addr, captured)
}

/// One request sent through keygate and what came back.
struct Exchange {
    label: String,
    response: Collected,
}

struct Driver {
    addr: SocketAddr,
    exchanges: Vec<Exchange>,
}

impl Driver {
    async fn send(
        &mut self,
        label: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> &Collected {
        let mut request = Request::builder()
            .method(method)
            .uri(support::url(self.addr, path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into())).unwrap();
        let response = within(10, support::send(&support::client(), request)).await;
        self.exchanges.push(Exchange {
            label: label.to_string(),
            response,
        });
        &self.exchanges.last().unwrap().response
    }
}

const JSON: (&str, &str) = ("content-type", "application/json");
const CANARY_ISS: &str = "https://idp.canary.example";

fn jwt_claims(sub: &str, exp_in: i64) -> serde_json::Value {
    serde_json::json!({"iss": CANARY_ISS, "aud": "keygate", "sub": sub,
                       "exp": mint::now() + exp_in, "nonce": random(ALNUM, 24)})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_output() {
    let sim = Sim::start().await;
    let (hook_addr, hook) = webhook_capture().await;
    // Egress mode too: a CA, and the simulator as `confluent.cloud` at the end of a tunnel.
    let pki = crate::support::egress::Pki::new();
    let web = sim
        .serve_tls_too(pki.server_config(&[crate::support::egress::WEB_HOST]))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let config_path = dir.path().join("keygate.toml");
    // The company's identities: a JWT issuer whose callers are brokered with a credential from a
    // file (sa-keygate's demo key, itself a canary), and the Terraform OAuth exchange.
    let idp = Minter::es256("canary-kid").unwrap();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, mint::jwks(&[&idp])).unwrap();
    let broker_path = dir.path().join("broker.credential");
    let broker_key = sim.key("sa-keygate");
    std::fs::write(
        &broker_path,
        format!("{}:{}\n", broker_key.key_id, broker_key.secret),
    )
    .unwrap();
    std::fs::write(
        &config_path,
        format!(
            r#"
[listener]
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
[upstream]
url = "{upstream}"
web_url = "{upstream}"
connect_timeout = "1s"
request_timeout = "2s"
[limits]
max_body_bytes = 2048
[log]
level = "trace"
format = "json"
access_log = true
{authz}
[audit]
file = "{audit}"
stdout = true
webhook = "http://{hook_addr}/events"
ungoverned = true
instance_id = "canary"
[[identity.jwt]]
issuer = "{CANARY_ISS}"
audiences = ["keygate"]
jwks_file = {jwks_path:?}
broker = true
credential = {{ file = {broker_path:?} }}
[[identity.map]]
external = "ci@canary"
acting_as = "sa-keygate"
[identity.oauth]
{egress}
"#,
            egress = pki.section(&format!(
                "allow_destinations = [\"127.0.0.1\"]\nconnect_to = {{ \"confluent.cloud:443\" = \"{web}\" }}"
            )),
            upstream = sim.url(),
            authz = support::file_authz_for_file(),
            audit = audit_path.display(),
        ),
    )
    .unwrap();
    let mut keygate = binary::spawn(&["serve", "--config", config_path.to_str().unwrap()]);
    let (addr, admin) = keygate.serve_addresses();
    let proxy: SocketAddr = {
        let line = keygate.wait_stderr("\"egress.address\"");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        v["egress.address"].as_str().unwrap().parse().unwrap()
    };

    // Canaries. `cflt_*` have the Confluent secret shape; the others are opaque tokens that only
    // structure (header, form field) marks as secret.
    let cflt_basic = cflt(SECRET_ALPHABET);
    let cflt_alnum = cflt(ALNUM); // also a syntactically valid API key id (letters and digits)
    let cflt_body = cflt(SECRET_ALPHABET);
    let cflt_upstream = cflt(SECRET_ALPHABET);
    let cflt_owner = cflt(ALNUM);
    let cflt_path = cflt(ALNUM);
    // Percent-encoded in a path, a secret's `+` and `/` become `%2B` and `%2F`: a plain scan no
    // longer sees one run of secret characters. Neither spelling may come out.
    let cflt_encoded = loop {
        let c = cflt(SECRET_ALPHABET);
        if c.contains('+') {
            break c;
        }
    };
    let cflt_encoded_path = cflt_encoded.replace('+', "%2B").replace('/', "%2F");
    let bearer = format!("kgBearer{}", random(ALNUM, 40));
    let cookie = format!("kgCookie{}", random(ALNUM, 40));
    let subject_token = format!("kgSubject{}", random(ALNUM, 40));
    // A pre-2025 secret: no prefix, so only structure can recognise it.
    let legacy = random(ALNUM, 64);
    let mut canaries: Vec<(&str, String)> = vec![
        ("cflt basic secret", cflt_basic.clone()),
        ("cflt alnum secret", cflt_alnum.clone()),
        ("cflt body", cflt_body.clone()),
        ("cflt upstream body", cflt_upstream.clone()),
        ("cflt owner", cflt_owner.clone()),
        ("cflt path", cflt_path.clone()),
        ("cflt percent-encoded", cflt_encoded.clone()),
        ("cflt percent-encoded (as sent)", cflt_encoded_path.clone()),
        ("bearer token", bearer.clone()),
        ("cookie", cookie.clone()),
        ("subject_token", subject_token.clone()),
        ("legacy secret", legacy.clone()),
    ];
    for key in sim.sim.demo_keys() {
        canaries.push(("demo key secret", key.secret.clone()));
    }

    let alice = sim.basic("u-alice");
    let dave = sim.basic("u-dave");
    let bob = sim.basic("u-bob");
    let alice_key = sim.key("u-alice").key_id;
    let mut d = Driver {
        addr,
        exchanges: Vec::new(),
    };

    // --- Governed actions, allowed and denied -------------------------------------------------
    let created = d
        .send(
            "create kafka key",
            Method::POST,
            "/iam/v2/api-keys",
            &[
                ("authorization", &alice),
                JSON,
                ("cookie", &format!("session={cookie}")),
            ],
            create_body("sa-orders", "lkc-prod01"),
        )
        .await
        .json();
    assert!(created["spec"]["secret"].as_str().is_some(), "{created}");
    let kafka_key = created["id"].as_str().unwrap().to_string();
    let cloud = d
        .send(
            "create cloud key",
            Method::POST,
            "/iam/v2/api-keys",
            &[("authorization", &alice), JSON],
            r#"{"spec":{"display_name":"canary-cloud","description":"OPS-2","owner":{"id":"sa-orders"},"resource":{"id":"cloud"}}}"#,
        )
        .await;
    assert_eq!(cloud.status, 202, "{:?}", cloud.body);
    let cloud = cloud.json();
    for (label, method, path, body) in [
        ("list", Method::GET, "/iam/v2/api-keys".to_string(), ""),
        (
            "get",
            Method::GET,
            format!("/iam/v2/api-keys/{kafka_key}"),
            "",
        ),
        (
            "update",
            Method::PATCH,
            format!("/iam/v2/api-keys/{kafka_key}"),
            r#"{"spec":{"description":"renamed"}}"#,
        ),
        (
            "delete",
            Method::DELETE,
            format!("/iam/v2/api-keys/{kafka_key}"),
            "",
        ),
    ] {
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[("authorization", &alice)]
        } else {
            &[("authorization", &alice), JSON]
        };
        let r = d
            .send(label, method, &path, headers, body.to_string())
            .await;
        assert!(r.status.is_success(), "{label}: {}", r.status);
    }
    let r = d
        .send(
            "matrix deny",
            Method::POST,
            "/iam/v2/api-keys",
            &[("authorization", &dave), JSON],
            create_body("sa-orders", "lkc-prod01"),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = d
        .send(
            "other user's key",
            Method::POST,
            "/iam/v2/api-keys",
            &[("authorization", &bob), JSON],
            create_body("u-alice", "lkc-prod01"),
        )
        .await;
    assert_eq!(r.status, 403);
    // A secret pasted into the fields policies see: the decision input every governed audit event
    // carries records them, so it is scanned too.
    let cflt_description = cflt(SECRET_ALPHABET);
    canaries.push(("cflt in a description", cflt_description.clone()));
    let r = d
        .send(
            "canary in a create description",
            Method::POST,
            "/iam/v2/api-keys",
            &[("authorization", &dave), JSON],
            format!(
                r#"{{"spec":{{"display_name":"x","description":"{cflt_description}","owner":{{"id":"sa-orders"}},"resource":{{"id":"lkc-prod01"}}}}}}"#
            ),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = d
        .send(
            "canary in an update description",
            Method::PATCH,
            &format!("/iam/v2/api-keys/{}", cloud["id"].as_str().unwrap()),
            &[("authorization", &alice), JSON],
            format!(r#"{{"spec":{{"description":"{cflt_description}"}}}}"#),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.status);

    // --- The company's identities: JWTs (brokered), the OAuth exchange ------------------------
    let jwt = idp.sign(&jwt_claims("ci@canary", 300));
    let expired_jwt = idp.sign(&jwt_claims("ci@canary", -600));
    let confused_jwt = mint::hs256(
        &serde_json::json!({"alg": "HS256", "kid": "canary-kid"}),
        &jwt_claims("ci@canary", 300),
        &idp.public_bytes(),
    );
    let subject_jwt = idp.sign(&jwt_claims("ci@canary", 300));
    for (what, token) in [
        ("jwt", &jwt),
        ("expired jwt", &expired_jwt),
        ("algorithm-confused jwt", &confused_jwt),
        ("oauth subject jwt", &subject_jwt),
    ] {
        canaries.push((what, token.clone()));
        canaries.push((what, token.rsplit('.').next().unwrap().to_owned()));
    }
    let brokered = d
        .send(
            "brokered create",
            Method::POST,
            "/iam/v2/api-keys",
            &[("authorization", &format!("Bearer {jwt}")), JSON],
            create_body("sa-orders", "lkc-prod01"),
        )
        .await;
    assert_eq!(brokered.status, 202, "{:?}", brokered.body);
    for (label, token) in [
        ("expired jwt", &expired_jwt),
        ("confused jwt", &confused_jwt),
    ] {
        for path in ["/iam/v2/api-keys", "/org/v2/environments"] {
            let r = d
                .send(
                    label,
                    Method::GET,
                    path,
                    &[("authorization", &format!("Bearer {token}"))],
                    "",
                )
                .await;
            assert_eq!(r.status, 401, "{label} {path}");
        }
    }
    let r = d
        .send(
            "not brokered",
            Method::GET,
            "/iam/v2/role-bindings",
            &[("authorization", &format!("Bearer {jwt}"))],
            "",
        )
        .await;
    assert_eq!(r.status, 403);
    let exchanged = d
        .send(
            "OAuth exchange",
            Method::POST,
            "/sts/v1/oauth2/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            format!(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={subject_jwt}&identity_pool_id=pool-canary"
            ),
        )
        .await;
    assert_eq!(exchanged.status, 200, "{:?}", exchanged.body);
    let access = exchanged.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    canaries.push(("oauth access token", access.clone()));
    let r = d
        .send(
            "bearer bound by the exchange",
            Method::GET,
            "/iam/v2/api-keys",
            &[("authorization", &format!("Bearer {access}"))],
            "",
        )
        .await;
    assert_eq!(r.status, 200);

    // --- Credentials that are canaries -------------------------------------------------------
    for (label, auth) in [
        (
            "valid key id, canary secret",
            basic(&alice_key, &cflt_basic),
        ),
        (
            "unknown key id, canary secret",
            basic("NOSUCHKEY0000001", &cflt_basic),
        ),
        ("key and secret swapped", basic(&cflt_alnum, &alice_key)),
        ("legacy key and secret swapped", basic(&legacy, &alice_key)),
        ("valid key id, legacy secret", basic(&alice_key, &legacy)),
        ("canary secret alone", format!("Basic {cflt_basic}")),
        ("bearer canary", format!("Bearer {bearer}")),
        ("bearer cflt", format!("Bearer {cflt_basic}")),
    ] {
        for path in ["/iam/v2/api-keys", "/org/v2/environments"] {
            let r = d
                .send(
                    label,
                    Method::GET,
                    path,
                    &[
                        ("authorization", &auth),
                        ("cookie", &format!("sid={cookie}")),
                    ],
                    "",
                )
                .await;
            assert!(r.status.is_client_error(), "{label} {path}: {}", r.status);
        }
    }

    // --- Bodies that fail parsing, carrying canaries ----------------------------------------
    let description = format!("\"description\":\"{cflt_body}\"");
    let bodies = [
        (
            "duplicate key",
            format!(
                r#"{{"spec":{{{description},{description},"owner":{{"id":"sa-orders"}},"resource":{{"id":"lkc-prod01"}}}}}}"#
            ),
        ),
        (
            "case-colliding key",
            format!(
                r#"{{"spec":{{{description},"Description":"{cflt_body}","owner":{{"id":"sa-orders"}}}}}}"#
            ),
        ),
        (
            "invalid JSON quoting the canary",
            format!(r#"{{"spec":{{"description":{cflt_body}}}}}"#),
        ),
        (
            "truncated JSON",
            format!(r#"{{"spec":{{"description":"{cflt_body}"#),
        ),
        (
            "wrong type",
            format!(r#"{{"spec":{{"owner":"{cflt_body}"}}}}"#),
        ),
        (
            "secret member",
            format!(
                r#"{{"spec":{{"secret":"{cflt_body}","owner":{{"id":"sa-orders"}},"resource":{{"id":"lkc-prod01"}}}}}}"#
            ),
        ),
        (
            "over the limit",
            format!(r#"{{"spec":{{"description":"{}"}}}}"#, cflt_body.repeat(64)),
        ),
        (
            "STS JSON on a governed path",
            format!(r#"{{"subject_token":"{cflt_body}","access_token":"{subject_token}"}}"#),
        ),
    ];
    for (label, body) in bodies {
        let r = d
            .send(
                label,
                Method::POST,
                "/iam/v2/api-keys",
                &[("authorization", &alice), JSON],
                body,
            )
            .await;
        // A create that merely carries a `secret` member is well-formed: forwarded as sent.
        if label != "secret member" {
            assert!(r.status.is_client_error(), "{label}: {}", r.status);
        }
    }
    let r = d
        .send(
            "wrong media type",
            Method::POST,
            "/iam/v2/api-keys",
            &[("authorization", &alice), ("content-type", "text/plain")],
            cflt_body.clone(),
        )
        .await;
    assert_eq!(r.status, 415);
    let r = d
        .send(
            "non-canonical path with a canary",
            Method::GET,
            &format!("/iam/v2/api-keys/{cflt_path}/"),
            &[("authorization", &alice)],
            "",
        )
        .await;
    assert_eq!(r.status, 400);
    let r = d
        .send(
            "canary as a key id",
            Method::GET,
            &format!("/iam/v2/api-keys/{cflt_path}"),
            &[("authorization", &alice)],
            "",
        )
        .await;
    assert!(r.status.is_client_error(), "{}", r.status);

    // --- Ungoverned: STS exchange, canary in path and query ---------------------------------
    let form = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={subject_token}&identity_pool_id=pool-AbC1&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&client_secret={cflt_body}"
    );
    d.send(
        "STS form",
        Method::POST,
        "/sts/v1/oauth2/token",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &cookie),
        ],
        form,
    )
    .await;
    d.send(
        "percent-encoded canary in ungoverned path",
        Method::GET,
        &format!("/cmk/v2/clusters/{cflt_encoded_path}"),
        &[("authorization", &alice)],
        "",
    )
    .await;
    d.send(
        "canary in ungoverned path and query",
        Method::GET,
        &format!("/cmk/v2/clusters/{cflt_path}?subject_token={subject_token}&secret={cflt_body}"),
        &[("authorization", &alice)],
        "",
    )
    .await;

    // --- Upstream errors ------------------------------------------------------------------------
    let fault = |method: Option<Method>, path: &str, status: u16, body: String| Fault {
        method,
        path_prefix: path.to_string(),
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body,
        times: 1,
    };
    let upstream_error = format!(
        r#"{{"errors":[{{"status":"500","detail":"secret {cflt_upstream} leaked","access_token":"{subject_token}"}}]}}"#
    );
    sim.sim.inject_fault(fault(
        Some(Method::POST),
        "/iam/v2/api-keys",
        500,
        upstream_error.clone(),
    ));
    let r = d
        .send(
            "upstream 500 on create",
            Method::POST,
            "/iam/v2/api-keys",
            &[("authorization", &alice), JSON],
            create_body("sa-orders", "lkc-prod01"),
        )
        .await;
    assert_eq!(r.status, 500);
    sim.sim.inject_fault(fault(
        None,
        "/org/v2/environments",
        503,
        upstream_error.clone(),
    ));
    let r = d
        .send(
            "upstream 503 ungoverned",
            Method::GET,
            "/org/v2/environments",
            &[("authorization", &alice)],
            "",
        )
        .await;
    assert_eq!(r.status, 503);
    sim.sim.inject_fault(fault(
        Some(Method::POST),
        "/iam/v2/api-keys",
        202,
        format!("not json {cflt_upstream}"),
    ));
    let r = d
        .send(
            "garbage create response",
            Method::POST,
            "/iam/v2/api-keys",
            &[("authorization", &alice), JSON],
            create_body("sa-orders", "lkc-prod01"),
        )
        .await;
    assert_eq!(r.status, 202);
    // Identity lookups that go wrong, each for a credential not yet cached.
    let lookups = [
        (
            "u-carol",
            200,
            format!(
                r#"{{"id":"{}","spec":{{"owner":{{"id":"{cflt_owner}"}}}}}}"#,
                sim.key("u-carol").key_id
            ),
        ),
        ("u-erin", 200, format!("{{\"id\": {cflt_upstream}}}")),
        ("u-frank", 503, upstream_error.clone()),
        (
            "u-grace",
            200,
            format!(r#"{{"id":"{cflt_upstream}","spec":{{"owner":{{"id":"u-grace"}}}}}}"#),
        ),
    ];
    for (principal, status, body) in lookups {
        let key = sim.key(principal).key_id;
        sim.sim.inject_fault(fault(
            Some(Method::GET),
            &format!("/iam/v2/api-keys/{key}"),
            status,
            body,
        ));
        let r = d
            .send(
                &format!("identity lookup fault for {principal}"),
                Method::GET,
                "/iam/v2/api-keys",
                &[("authorization", &sim.basic(principal))],
                "",
            )
            .await;
        assert!(
            r.status.is_client_error() || r.status.is_server_error(),
            "{principal}: {}",
            r.status
        );
    }

    // --- Through the egress listener ------------------------------------------------------------
    // A CLI login through the tunnel (keygate never sees it), its session token and refresh token
    // on governed requests, a garbage bearer, proxy credentials on a refused CONNECT.
    use crate::support::egress::{Conn, API_HOST, WEB_HOST};
    let mut egress_requests = 0;
    let mut web_conn = Conn::open(proxy, &pki, WEB_HOST, false).await;
    let login = web_conn
        .send(
            WEB_HOST,
            Request::post("/api/sessions")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(
                    r#"{"email":"bob@example.com","password":"bob-demo-password"}"#,
                )))
                .unwrap(),
        )
        .await;
    assert_eq!(login.status, 200);
    let session = login.json();
    let token = session["token"].as_str().unwrap().to_owned();
    let refresh = session["refresh_token"].as_str().unwrap().to_owned();
    canaries.push(("session token", token.clone()));
    canaries.push(("refresh token", refresh.clone()));
    canaries.push(("password", "bob-demo-password".to_owned()));
    let mut api_conn = Conn::open(proxy, &pki, API_HOST, true).await;
    let bearer = format!("Bearer {token}");
    let create = api_conn
        .send(
            API_HOST,
            Request::post("/iam/v2/api-keys")
                .header("authorization", &bearer)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(create_body(
                    "sa-orders",
                    "lkc-prod01",
                ))))
                .unwrap(),
        )
        .await;
    egress_requests += 1;
    assert_eq!(create.status, 202, "{:?}", create.body);
    let egress_secret = create.json()["spec"]["secret"].as_str().unwrap().to_owned();
    assert!(is_valid_cflt(&egress_secret));
    for authorization in [
        format!("Bearer {refresh}"),
        format!("Bearer {bearer}x"),
        format!("Bearer eyJhbGciOiJIUzI1NiJ9.{}.sig", random(ALNUM, 40)),
    ] {
        let refused = api_conn
            .send(
                API_HOST,
                Request::get("/iam/v2/api-keys")
                    .header("authorization", &authorization)
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
        egress_requests += 1;
        assert_eq!(refused.status, 401);
        for (_, canary) in &canaries {
            assert!(!String::from_utf8_lossy(&refused.body).contains(canary.as_str()));
        }
    }
    let proxy_secret = format!("kgProxy{}", random(ALNUM, 40));
    canaries.push(("proxy credentials", proxy_secret.clone()));
    let (status, _, _) = crate::support::egress::connect(
        proxy,
        "evil.example:443",
        &format!(
            "Proxy-Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(format!("ci:{proxy_secret}"))
        ),
    )
    .await;
    assert_eq!(status, 403);
    // Tunnels are closed by their ends (a shutdown drains them only at the end of its grace).
    drop(web_conn);
    drop(api_conn);

    // --- Collect every output ------------------------------------------------------------------
    let metrics = String::from_utf8(
        support::get(&support::url(admin, "/metrics"))
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    // Every event was built free of secrets: the sinks' last-resort scrub never had to act.
    assert!(
        metrics.contains("keygate_audit_events_scrubbed_total 0\n"),
        "{metrics}"
    );
    // SIGTERM: a graceful shutdown flushes the stdout and webhook queues.
    keygate.terminate();
    let (exit_status, stdout, logs) =
        within(20, tokio::task::spawn_blocking(move || keygate.finish()))
            .await
            .unwrap();
    assert!(exit_status.success(), "{exit_status:?}");
    let audit_text = std::fs::read_to_string(&audit_path).unwrap();
    let webhook_events: Vec<serde_json::Value> = hook
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| {
            serde_json::from_slice::<Vec<serde_json::Value>>(b).unwrap_or_else(|e| {
                panic!(
                    "webhook body is not a JSON array ({e}): {}",
                    String::from_utf8_lossy(b)
                )
            })
        })
        .collect();

    // The outputs are real: trace logging was on, every sink got every event.
    // One access-log line per exchange.
    let access_lines = logs
        .iter()
        .filter(|l| l.contains("Request completed"))
        .count();
    assert_eq!(
        access_lines,
        d.exchanges.len() + egress_requests,
        "access-log lines"
    );
    for line in &logs {
        let _: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
    }
    assert!(logs.iter().any(|l| l.contains(r#""level":"TRACE""#)));
    let file_events = parse_lines(&audit_text);
    let stdout_events = parse_lines(&stdout.join("\n"));
    webhook_events.iter().for_each(assert_valid);
    let ids = |events: &[serde_json::Value]| -> BTreeSet<String> {
        events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(file_events.len() >= d.exchanges.len());
    assert_eq!(
        ids(&file_events),
        ids(&stdout_events),
        "stdout sink lost events"
    );
    assert_eq!(
        ids(&file_events),
        ids(&webhook_events),
        "webhook sink lost events"
    );
    assert!(matches!(
        keygate::audit::verify(&audit_path),
        keygate::audit::VerifyReport::Ok { .. }
    ));

    // --- The created secrets: only in their own create response, intact -------------------------
    let mut created_secrets = Vec::new();
    for exchange in &d.exchanges {
        if exchange.response.status != 202 {
            continue;
        }
        let Ok(key) = serde_json::from_slice::<serde_json::Value>(&exchange.response.body) else {
            continue; // the garbage create response
        };
        let secret = key["spec"]["secret"].as_str().unwrap().to_string();
        assert!(
            is_valid_cflt(&secret),
            "{}: malformed secret",
            exchange.label
        );
        assert_eq!(
            exchange.response.headers["content-length"]
                .to_str()
                .unwrap(),
            exchange.response.body.len().to_string()
        );
        created_secrets.push((exchange.label.clone(), secret));
    }
    assert_eq!(created_secrets.len(), 4);
    created_secrets.push(("egress create with a session token".into(), egress_secret));
    // The cloud key's secret works against the simulator directly: the caller got it unaltered.
    let direct = Request::get(format!("{}/org/v2/environments", sim.url()))
        .header(
            "authorization",
            basic(
                cloud["id"].as_str().unwrap(),
                cloud["spec"]["secret"].as_str().unwrap(),
            ),
        )
        .body(Full::default())
        .unwrap();
    assert_eq!(support::send(&support::client(), direct).await.status, 200);

    // --- The scan -------------------------------------------------------------------------------
    // The decision inputs are part of what is scanned.
    assert!(
        audit_text.matches("\"decisionInput\"").count() >= 8,
        "governed events carry decision inputs"
    );
    let mut outputs: Vec<(String, &str)> = Vec::new();
    outputs.extend(logs.iter().map(|l| ("log".to_string(), l.as_str())));
    outputs.push(("audit file".into(), &audit_text));
    outputs.extend(
        stdout
            .iter()
            .map(|l| ("stdout sink".to_string(), l.as_str())),
    );
    let webhook_text: Vec<String> = hook
        .lock()
        .unwrap()
        .iter()
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .collect();
    outputs.extend(
        webhook_text
            .iter()
            .map(|t| ("webhook".to_string(), t.as_str())),
    );
    outputs.push(("metrics".into(), &metrics));
    let bodies: Vec<(String, String)> = d
        .exchanges
        .iter()
        .filter(|e| e.response.status != 202)
        .filter(|e| !keygate_did_not_write(e))
        .map(|e| {
            (
                format!("response body of `{}`", e.label),
                String::from_utf8_lossy(&e.response.body).into_owned(),
            )
        })
        .collect();
    outputs.extend(bodies.iter().map(|(w, b)| (w.clone(), b.as_str())));
    let mut all: Vec<(String, String)> = canaries
        .iter()
        .map(|(what, c)| ((*what).to_string(), c.clone()))
        .collect();
    all.extend(
        created_secrets
            .iter()
            .map(|(l, s)| (format!("secret created by `{l}`"), s.clone())),
    );

    let mut leaks: HashMap<String, Vec<String>> = HashMap::new();
    for (what, canary) in &all {
        for (where_, text) in &outputs {
            if text.contains(canary.as_str()) {
                leaks
                    .entry(format!("{what} in {where_}"))
                    .or_default()
                    .push(text.chars().take(400).collect());
            }
        }
    }
    assert!(leaks.is_empty(), "canaries leaked:\n{leaks:#?}");
}

/// Responses that are the upstream's own (passed through unchanged, by design): keygate did not
/// write them, so they are not scanned as keygate output.
fn keygate_did_not_write(exchange: &Exchange) -> bool {
    matches!(
        exchange.label.as_str(),
        "upstream 500 on create"
            | "upstream 503 ungoverned"
            | "canary in ungoverned path and query"
            | "percent-encoded canary in ungoverned path"
            | "canary as a key id"
            // The upstream's answer to the update echoes the description it was sent.
            | "canary in an update description"
            // The STS answer carries the access token the caller asked for.
            | "OAuth exchange"
            // The upstream's own list of keys (passed through).
            | "bearer bound by the exchange"
    )
}

/// A JWKS file that carries private key material (a JWK's `d`, an HMAC `k`) stops `keygate
/// check` and `keygate serve` with an error naming the member, never its value; a CA file and a
/// CRL for client certificates are loaded by `check` too.
#[test]
fn jwks_private_material_is_refused_without_being_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let minter = Minter::es256("k").unwrap();
    let private = random(ALNUM, 43);
    let symmetric = random(ALNUM, 43);
    let mut jwk = minter.jwk();
    jwk["d"] = serde_json::Value::String(private.clone());
    let jwks = serde_json::json!({"keys": [jwk, {"kty": "oct", "k": symmetric}]});
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
    let base = format!(
        r#"
[listener]
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:1"
{authz}
[[identity.jwt]]
issuer = "https://idp.example"
audiences = ["keygate"]
jwks_file = "jwks.json"
"#,
        authz = support::file_authz_for_file(),
    );
    let with_mtls =
        format!("{base}[identity.mtls]\nca = \"ca.pem\"\ncrl = [\"missing-crl.pem\"]\n").replace(
            "[upstream]",
            "[listener.tls]\ncert = \"ca.pem\"\nkey = \"ca.pem\"\n[upstream]",
        );
    let run = |text: &str, command: &str| {
        let config = dir.path().join("keygate.toml");
        std::fs::write(&config, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args([command, "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains(&private) && !text.contains(&symmetric),
            "{command}: {text}"
        );
        (out.status.code(), text)
    };
    // `check` reports problems with exit code 1; `serve` refuses to start with `EX_CONFIG`.
    for (command, code) in [("check", 1), ("serve", 78)] {
        let (status, text) = run(&base, command);
        assert_eq!(status, Some(code), "{command}: {text}");
        assert!(
            text.contains("private key material (member `d`)"),
            "{command}: {text}"
        );
    }
    let (status, text) = run(&with_mtls, "check");
    assert_eq!(status, Some(1), "{text}");
    assert!(text.contains("`identity.mtls`"), "{text}");
    assert!(text.contains("private key material"), "{text}");
}
