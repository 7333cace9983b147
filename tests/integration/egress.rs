//! Egress mode: keygate as the forward proxy of clients that honour `HTTPS_PROXY` (the Confluent
//! CLI above all). curl over HTTP/1.1 and h2, the CLI's own request sequences with a session token
//! from the simulator's `/api/sessions` (itself reached through a tunnel), and every refusal:
//! hosts on no list, loopback destinations, SNI missing or different from the CONNECT host,
//! cleartext requests, missing proxy credentials, expired and garbage bearer tokens, slow heads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::egress::{self, Conn, Pki, API_HOST, WEB_HOST};
use crate::support::governed::{self, API_KEYS};
use crate::support::sim::Sim;
use crate::support::{self, within, Collected};

/// keygate with egress on, the simulator as upstream and (over TLS, through a tunnel) as
/// `confluent.cloud`.
struct Setup {
    sim: Sim,
    pki: Pki,
    gw: keygate::Gateway,
    audit: PathBuf,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(egress_extra: &str, extra: &str) -> Setup {
        Setup::start_with(egress_extra, extra, |_| {}).await
    }

    async fn start_with(
        egress_extra: &str,
        extra: &str,
        adjust: impl FnOnce(&mut keygate::config::Config),
    ) -> Setup {
        let sim = Sim::start().await;
        let pki = Pki::new();
        let web = sim.serve_tls_too(pki.server_config(&[WEB_HOST])).await;
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.jsonl");
        let egress = pki.section(&format!(
            "connect_to = {{ \"{WEB_HOST}:443\" = \"{web}\" }}\nallow_destinations = [\"127.0.0.1\"]\n{egress_extra}"
        ));
        let text = format!(
            "[audit]\nfile = {:?}\n{egress}\n{extra}",
            audit.display().to_string()
        );
        let mut config = support::config(&sim.url(), &text);
        config.upstream.web_url = sim.url().parse().unwrap();
        adjust(&mut config);
        let gw = support::start(config).await;
        Setup {
            sim,
            pki,
            gw,
            audit,
            _dir: dir,
        }
    }

    fn proxy(&self) -> SocketAddr {
        self.gw.egress_addr().unwrap()
    }

    fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The refused-egress events, once at least `n` were written.
    async fn refused(&self, n: usize) -> Vec<serde_json::Value> {
        governed::poll_until(Duration::from_secs(5), "refused egress events", || async {
            let refused: Vec<_> = self
                .events()
                .into_iter()
                .filter(|e| e["type"] == "io.keygate.egress.refused")
                .collect();
            (refused.len() >= n).then_some(refused)
        })
        .await
    }
}

fn json_request(method: &str, path: &str, authorization: &str, body: &str) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", authorization);
    if !body.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// An error body without its per-request id.
fn without_id(response: &Collected) -> serde_json::Value {
    let mut json = response.json();
    for error in json["errors"].as_array_mut().unwrap() {
        error.as_object_mut().unwrap().remove("id");
    }
    json
}

// === curl ===

/// Runs curl through the proxy: (status, body, HTTP version curl used).
fn curl(setup: &Setup, version: &str, args: &[&str]) -> (u16, String, String) {
    let out = setup._dir.path().join(format!("curl-{}", rand_suffix()));
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", version])
        .arg("--proxy")
        .arg(format!("http://{}", setup.proxy()))
        .arg("--cacert")
        .arg(&setup.pki.ca_cert)
        .arg("-o")
        .arg(&out)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written = String::from_utf8_lossy(&output.stdout).to_string();
    let (status, http) = written.split_once(' ').unwrap();
    let body = std::fs::read_to_string(&out).unwrap_or_default();
    (status.parse().unwrap(), body, http.to_owned())
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_proxy_over_http1_and_h2_is_decided_like_a_direct_request() {
    let setup = Setup::start("", "").await;
    let key = setup.sim.key("u-bob");
    let user = format!("{}:{}", key.key_id, key.secret);
    let api = format!("https://{API_HOST}{API_KEYS}");
    for (version, expect) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let args = |extra: &[&str]| -> Vec<String> {
            let mut args = vec!["-u".to_owned(), user.clone()];
            args.extend(extra.iter().map(|s| s.to_string()));
            args
        };
        let run = |extra: Vec<String>| {
            let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
            curl(&setup, version, &refs)
        };
        // Allowed create: bob owns sa-orders.
        let allowed = governed::create_body("sa-orders", Some("lkc-prod01"));
        let (status, body, http) = run(args(&[
            "-H",
            "content-type: application/json",
            "-d",
            &allowed,
            &api,
        ]));
        assert_eq!((status, http.as_str()), (202, expect), "{body}");
        let created: serde_json::Value = serde_json::from_str(&body).unwrap();
        let id = created["id"].as_str().unwrap().to_owned();
        assert!(created["spec"]["secret"]
            .as_str()
            .unwrap()
            .starts_with("cflt"));
        // Denied create: the same 403 body as a direct request (but for its id).
        let denied = governed::create_body("sa-payments", Some("lkc-dev01"));
        let (status, body, _) = run(args(&[
            "-H",
            "content-type: application/json",
            "-d",
            &denied,
            &api,
        ]));
        assert_eq!(status, 403, "{body}");
        let direct = governed::send(governed::request(
            "POST",
            setup.gw.local_addr(),
            API_KEYS,
            Some(&setup.sim.basic("u-bob")),
            denied.clone(),
        ))
        .await;
        let through = Collected {
            status: http::StatusCode::FORBIDDEN,
            headers: http::HeaderMap::new(),
            body: Bytes::from(body),
        };
        assert_eq!(without_id(&through), without_id(&direct));
        // List: links keep the upstream's names through egress.
        let (status, body, _) = run(args(&[&format!("{api}?spec.owner=sa-orders")]));
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&id), "{body}");
        assert!(
            body.contains("https://api.confluent.cloud/iam/v2/api-keys"),
            "{body}"
        );
        // Describe, update, delete.
        let one = format!("{api}/{id}");
        let (status, body, _) = run(args(&[&one]));
        assert_eq!(status, 200, "{body}");
        let (status, body, _) = run(args(&[
            "-X",
            "PATCH",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"spec":{"description":"OPS-1 rotated"}}"#,
            &one,
        ]));
        assert_eq!(status, 200, "{body}");
        let (status, _, _) = run(args(&["-X", "DELETE", &one]));
        assert_eq!(status, 204);
        let (status, _, _) = run(args(&[&one]));
        assert_eq!(status, 404);
    }
    // Every governed request through egress names its host in the audit trail.
    let events = setup.events();
    let governed: Vec<_> = events
        .iter()
        .filter(|e| {
            e["type"]
                .as_str()
                .unwrap()
                .starts_with("io.keygate.apikey.")
        })
        .filter(|e| e["data"]["egress"]["host"] == API_HOST)
        .collect();
    assert!(governed.len() >= 14, "{}", governed.len());
    assert!(governed
        .iter()
        .all(|e| e["data"]["principal"]["id"] == "u-bob"));
}

// === the Confluent CLI ===

/// `POST https://confluent.cloud/api/sessions` through the proxy (a tunnel): (token, refresh).
async fn login(setup: &Setup, email: &str, password: &str) -> (String, String) {
    let mut web = Conn::open(setup.proxy(), &setup.pki, WEB_HOST, false).await;
    let body = serde_json::json!({ "email": email, "password": password }).to_string();
    let request = Request::post("/api/sessions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = web.send(WEB_HOST, request).await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    let json = response.json();
    (
        json["token"].as_str().unwrap().to_owned(),
        json["refresh_token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_request_sequences_with_a_session_token_are_decided_and_attributed() {
    let setup = Setup::start(
        "",
        &std::fs::read_to_string("policies/policy.example.toml").unwrap(),
    )
    .await;
    let (token, refresh) = within(10, login(&setup, "bob@example.com", "bob-demo-password")).await;
    let bearer = format!("Bearer {token}");
    let proxy = setup.proxy();
    // The CLI forces HTTP/2 to the API host and keeps its connections.
    let mut api = Conn::open(proxy, &setup.pki, API_HOST, true).await;
    let mut web = Conn::open(proxy, &setup.pki, WEB_HOST, false).await;
    let get = |path: &str| json_request("GET", path, &bearer, "");

    // create --resource lkc-dev01 --service-account sa-orders, without --description: refused by
    // the example policies, which ask unnamed keys for a ticket reference.
    let cluster = api
        .send(
            API_HOST,
            get("/cmk/v2/clusters/lkc-prod01?environment=env-prod01"),
        )
        .await;
    assert_eq!(cluster.status, 200);
    let me = web.send(WEB_HOST, get("/api/me")).await;
    assert_eq!(me.json()["user"]["resource_id"], "u-bob");
    let cli_body = |description: &str| {
        format!(
            r#"{{"spec":{{"description":"{description}","owner":{{"id":"sa-orders","related":"","resource_name":""}},"resource":{{"id":"lkc-prod01","related":"","resource_name":""}}}}}}"#
        )
    };
    let refused = api
        .send(
            API_HOST,
            json_request("POST", API_KEYS, &bearer, &cli_body("")),
        )
        .await;
    assert_eq!(refused.status, 403);
    // Every reason at once: unnamed keys and production keys both need a ticket reference.
    let json = refused.json();
    let errors = json["errors"].as_array().unwrap();
    let rules: Vec<&str> = errors
        .iter()
        .map(|e| e["meta"]["rule_ids"][0].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"unnamed-key-ticket-reference"), "{rules:?}");
    assert!(errors
        .iter()
        .all(|e| e["source"]["pointer"] == "/spec/description"));
    // On 403 the CLI asks who it is.
    assert_eq!(web.send(WEB_HOST, get("/api/me")).await.status, 200);
    // create --description "OPS-42 orders ingest": allowed.
    let created = api
        .send(
            API_HOST,
            json_request("POST", API_KEYS, &bearer, &cli_body("OPS-42 orders ingest")),
        )
        .await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let secret = created.json()["spec"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    // list: service accounts, then keys paged by page_token with page_size=100, then /api/me.
    assert_eq!(
        api.send(API_HOST, get("/iam/v2/service-accounts"))
            .await
            .status,
        200
    );
    let mut page = format!("{API_KEYS}?page_size=100");
    let mut listed = Vec::new();
    loop {
        let response = api.send(API_HOST, get(&page)).await;
        assert_eq!(response.status, 200);
        let json = response.json();
        listed.extend(
            json["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["id"].as_str().unwrap().to_owned()),
        );
        match json["metadata"]["next"].as_str() {
            Some(next) if !next.is_empty() => {
                // The link keeps the upstream's name: the CLI follows it to api.confluent.cloud.
                page = next
                    .strip_prefix(&format!("https://{API_HOST}"))
                    .unwrap()
                    .to_owned();
            }
            _ => break,
        }
    }
    assert!(listed.contains(&id), "{listed:?}");
    assert_eq!(web.send(WEB_HOST, get("/api/me")).await.status, 200);

    // describe, then the service accounts.
    let one = format!("{API_KEYS}/{id}");
    assert_eq!(api.send(API_HOST, get(&one)).await.status, 200);
    assert_eq!(
        api.send(API_HOST, get("/iam/v2/service-accounts"))
            .await
            .status,
        200
    );
    // update --description.
    let updated = api
        .send(
            API_HOST,
            json_request(
                "PATCH",
                &one,
                &bearer,
                r#"{"spec":{"description":"OPS-43 rotated"}}"#,
            ),
        )
        .await;
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    // delete: GET, then DELETE.
    assert_eq!(api.send(API_HOST, get(&one)).await.status, 200);
    assert_eq!(
        api.send(API_HOST, json_request("DELETE", &one, &bearer, ""))
            .await
            .status,
        204
    );

    // Every governed step is attributed to bob, by his session, through egress.
    let events: Vec<_> = setup
        .events()
        .into_iter()
        .filter(|e| {
            e["type"]
                .as_str()
                .unwrap()
                .starts_with("io.keygate.apikey.")
        })
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| e["data"]["stage"] == "response_complete")
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "io.keygate.apikey.create",
            "io.keygate.apikey.create",
            "io.keygate.apikey.list",
            "io.keygate.apikey.get",
            "io.keygate.apikey.update",
            "io.keygate.apikey.get",
            "io.keygate.apikey.delete",
        ]
    );
    for event in &events {
        let principal = &event["data"]["principal"];
        assert_eq!(principal["id"], "u-bob", "{event}");
        assert_eq!(principal["authenticationMethod"], "session", "{event}");
        assert_eq!(event["data"]["egress"]["host"], API_HOST);
    }
    // keygate asked Confluent once who the token is (cached afterwards), with the token itself.
    let lookups: Vec<_> = setup
        .sim
        .received("/api/me")
        .into_iter()
        .filter(|r| !r.header_values("host").contains(&WEB_HOST))
        .collect();
    assert_eq!(lookups.len(), 1);
    assert_eq!(lookups[0].header_values("authorization"), [bearer.as_str()]);
    // The upstream got the token unchanged on every forwarded request.
    for request in setup.sim.received(API_KEYS) {
        assert_eq!(request.header_values("authorization"), [bearer.as_str()]);
    }
    // No token, refresh token, password or secret in the audit trail.
    let trail = std::fs::read_to_string(&setup.audit).unwrap();
    for secret in [
        token.as_str(),
        refresh.as_str(),
        "bob-demo-password",
        secret.as_str(),
    ] {
        assert!(!trail.contains(secret));
    }

    // A refreshed token works too.
    let mut web = Conn::open(proxy, &setup.pki, WEB_HOST, false).await;
    let refreshed = web
        .send(
            WEB_HOST,
            Request::post("/api/sessions")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(
                    serde_json::json!({ "refresh_token": refresh }).to_string(),
                )))
                .unwrap(),
        )
        .await;
    let fresh = refreshed.json()["token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, token);
    let listed = api
        .send(
            API_HOST,
            json_request("GET", API_KEYS, &format!("Bearer {fresh}"), ""),
        )
        .await;
    assert_eq!(listed.status, 200);
}

#[tokio::test]
async fn expired_and_garbage_bearer_tokens_are_401_and_nothing_is_forwarded() {
    let setup = Setup::start("", "").await;
    let expired = setup
        .sim
        .sim
        .session_token("u-bob", SystemTime::now() - Duration::from_secs(5));
    let body = governed::create_body("sa-orders", Some("lkc-prod01"));
    for (token, what) in [
        (expired.as_str(), "expired"),
        ("garbage", "garbage"),
        (
            "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjk5OTk5OTk5OTl9.Zm9yZ2Vk",
            "forged",
        ),
    ] {
        for h2 in [false, true] {
            let response = egress::send(
                setup.proxy(),
                &setup.pki,
                h2,
                json_request("POST", API_KEYS, &format!("Bearer {token}"), &body),
            )
            .await;
            assert_eq!(response.status, 401, "{what}");
            assert!(
                response.headers["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer"),
                "{what}"
            );
            assert_eq!(response.error()["code"], "user_unauthenticated");
            assert!(!String::from_utf8_lossy(&response.body).contains(token));
        }
    }
    assert!(
        setup.sim.received(API_KEYS).is_empty(),
        "a request was forwarded"
    );
    // Only the forged token (JWT-shaped, unexpired) was worth asking Confluent about, once: the
    // expired and the garbage ones were refused without a lookup, and failures are not cached
    // but each connection asked at most once per attempt.
    let lookups = setup.sim.received("/api/me");
    assert_eq!(lookups.len(), 2, "{lookups:?}");
}

#[tokio::test]
async fn a_session_token_is_refused_once_past_its_exp_even_when_cached() {
    let setup = Setup::start("", "").await;
    // exp is carried in whole seconds (truncated), so four seconds ahead leaves at least three
    // for the two requests that must still be accepted, even on a slow machine.
    let exp = SystemTime::now() + Duration::from_secs(4);
    let token = setup.sim.sim.session_token("u-bob", exp);
    let list = || json_request("GET", API_KEYS, &format!("Bearer {token}"), "");
    let mut api = Conn::open(setup.proxy(), &setup.pki, API_HOST, true).await;
    assert_eq!(api.send(API_HOST, list()).await.status, 200);
    assert_eq!(api.send(API_HOST, list()).await.status, 200);
    assert_eq!(setup.sim.received("/api/me").len(), 1, "cached");
    let refused = governed::poll_until(Duration::from_secs(10), "token expired", || async {
        let response = Conn::open(setup.proxy(), &setup.pki, API_HOST, true)
            .await
            .send(API_HOST, list())
            .await;
        (response.status == 401).then_some(response)
    })
    .await;
    assert!(SystemTime::now() >= exp - Duration::from_secs(1));
    assert!(refused.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
}

// === refusals ===

#[tokio::test]
async fn connect_to_a_host_on_no_list_is_403_and_audited() {
    let setup = Setup::start("", "").await;
    let (status, _, body) = egress::connect(setup.proxy(), "evil.example:443", "").await;
    assert_eq!(status, 403);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["errors"][0]["code"], "egress_refused");
    assert_eq!(json["errors"][0]["status"], "403");
    let refused = setup.refused(1).await;
    let data = &refused[0]["data"];
    assert_eq!(data["egress"]["host"], "evil.example");
    assert_eq!(data["egress"]["port"], 443);
    assert_eq!(data["egress"]["refused"], "not_allowed");
    assert_eq!(data["decision"]["result"], "deny");
    assert_eq!(data["decision"]["decidedBy"], "egress");
    assert!(data["clientAddress"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(data["requestId"], json["errors"][0]["id"]);
    crate::support::audit::assert_valid(&refused[0]);
    // Another port of an intercepted host is not intercepted.
    let (status, _, _) = egress::connect(setup.proxy(), "api.confluent.cloud:8443", "").await;
    assert_eq!(status, 403);
    assert_eq!(
        governed::metric(
            setup.gw.admin_addr(),
            "keygate_egress_connections_total{result=\"not_allowed\"}"
        )
        .await,
        2.0
    );
}

#[tokio::test]
async fn cleartext_requests_are_refused() {
    let setup = Setup::start("", "").await;
    let response = governed::raw_exchange(
        setup.proxy(),
        &[b"GET http://api.confluent.cloud/iam/v2/api-keys HTTP/1.1\r\nHost: api.confluent.cloud\r\n\r\n"],
    )
    .await;
    assert_eq!(response.status, 403);
    assert_eq!(response.collected().error()["code"], "egress_refused");
    let refused = setup.refused(1).await;
    assert_eq!(refused[0]["data"]["egress"]["refused"], "cleartext");
    assert_eq!(refused[0]["data"]["egress"]["port"], 80);
    let response =
        governed::raw_exchange(setup.proxy(), &[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]).await;
    assert_eq!(response.status, 400);
    assert!(setup.sim.sim.requests().is_empty());
}

#[tokio::test]
async fn sni_missing_or_different_from_the_connect_host_is_refused() {
    let setup = Setup::start("", "").await;
    // A different name than the CONNECT host.
    let (status, stream, _) = egress::connect(setup.proxy(), "api.confluent.cloud:443", "").await;
    assert_eq!(status, 200);
    let handshake = tokio_rustls::TlsConnector::from(setup.pki.client_config(&[b"h2"]))
        .connect(
            rustls_pki_types::ServerName::try_from(WEB_HOST).unwrap(),
            stream,
        )
        .await;
    assert!(handshake.is_err());
    // No SNI at all.
    let (status, stream, _) = egress::connect(setup.proxy(), "api.confluent.cloud:443", "").await;
    assert_eq!(status, 200);
    let mut config = (*setup.pki.client_config(&[b"h2"])).clone();
    config.enable_sni = false;
    let handshake = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from(API_HOST).unwrap(),
            stream,
        )
        .await;
    assert!(handshake.is_err());
    let refused = setup.refused(2).await;
    let reasons: Vec<_> = refused
        .iter()
        .map(|e| e["data"]["egress"]["refused"].clone())
        .collect();
    assert_eq!(reasons, ["sni_mismatch", "sni_missing"]);
    assert!(refused
        .iter()
        .all(|e| e["data"]["egress"]["host"] == API_HOST));
}

/// A TLS server for `localhost` that echoes what it reads (the tunnel's far end).
async fn tls_echo(pki: &Pki) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config(&["localhost"]));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let (mut read, mut write) = tokio::io::split(tls);
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tunnels_to_loopback_are_refused_unless_allowed_and_carry_bytes_unchanged() {
    let pki_holder = Pki::new();
    let echo = tls_echo(&pki_holder).await;
    let port = echo.port();
    let tunnel =
        format!("tunnel = [\"{WEB_HOST}:443\", \"localhost:{port}\", \"127.0.0.1:{port}\"]\n");
    // Without the allowance (the setup's allows 127.0.0.1 only for the web stand-in; this one
    // allows nothing).
    let setup = Setup::start_with(&tunnel, "", |config| {
        config.egress.as_mut().unwrap().allow_destinations.clear();
        config.egress.as_mut().unwrap().connect_to.clear();
    })
    .await;
    for target in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let (status, _, body) = egress::connect(setup.proxy(), &target, "").await;
        assert_eq!(status, 403, "{target}");
        assert!(
            String::from_utf8_lossy(&body).contains("loopback"),
            "{target}"
        );
    }
    let refused = setup.refused(2).await;
    assert!(refused
        .iter()
        .all(|e| e["data"]["egress"]["refused"] == "destination_forbidden"));

    // Allowed explicitly: the tunnel carries a TLS session end to end, byte for byte.
    let allowed = Setup::start_with(&tunnel, "", |config| {
        config.egress.as_mut().unwrap().allow_destinations =
            vec![keygate::egress::config::Network::parse("127.0.0.0/8").unwrap()];
    })
    .await;
    let (status, stream, _) =
        egress::connect(allowed.proxy(), &format!("localhost:{port}"), "").await;
    assert_eq!(status, 200);
    let mut tls = tokio_rustls::TlsConnector::from(pki_holder.client_config(&[]))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            stream,
        )
        .await
        .expect("TLS with the far end, not with keygate");
    let payload: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = tokio::io::split(&mut tls);
    let writing = async {
        write.write_all(&payload).await.unwrap();
        write.flush().await.unwrap();
    };
    let mut echoed = vec![0u8; payload.len()];
    let reading = read.read_exact(&mut echoed);
    let (_, read_result) = within(10, async { tokio::join!(writing, reading) }).await;
    read_result.unwrap();
    assert_eq!(echoed, payload);
    // keygate's pipeline saw nothing of it.
    assert!(allowed.events().is_empty(), "{:?}", allowed.events());
    assert_eq!(
        governed::metric(
            allowed.gw.admin_addr(),
            "keygate_egress_connections_total{result=\"tunnelled\"}"
        )
        .await,
        1.0
    );
    assert!(allowed.sim.sim.requests().is_empty());
}

#[tokio::test]
async fn proxy_authentication_names_the_workload_and_refuses_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("proxy-users.toml");
    let hash = keygate::identity::directory::hash_secret("ci-proxy-secret").unwrap();
    std::fs::write(
        &users,
        format!("[[keys]]\nid = \"CIRUNNER\"\nprincipal = \"sa-ci\"\nsecret_hash = \"{hash}\"\n"),
    )
    .unwrap();
    let setup = Setup::start(
        &format!("proxy_auth = {:?}\n", users.display().to_string()),
        "",
    )
    .await;
    let (status, _, _) = egress::connect(setup.proxy(), "evil.example:443", "").await;
    assert_eq!(status, 407);
    let (status, _, _) = egress::connect(
        setup.proxy(),
        "api.confluent.cloud:443",
        "Proxy-Authorization: Basic Q0lSVU5ORVI6d3Jvbmc=\r\n",
    )
    .await;
    assert_eq!(status, 407);
    use base64::Engine;
    let good = base64::engine::general_purpose::STANDARD.encode("CIRUNNER:ci-proxy-secret");
    let header = format!("Proxy-Authorization: Basic {good}\r\n");
    let (status, _, _) = egress::connect(setup.proxy(), "evil.example:443", &header).await;
    assert_eq!(status, 403);
    let refused = setup.refused(3).await;
    assert_eq!(refused[2]["data"]["egress"]["workload"], "sa-ci");
    assert_eq!(refused[0]["data"]["egress"]["refused"], "proxy_auth");
    let trail = std::fs::read_to_string(&setup.audit).unwrap();
    assert!(!trail.contains(&good) && !trail.contains("ci-proxy-secret"));
}

#[tokio::test]
async fn slow_heads_on_the_egress_listener_are_cut_at_the_header_read_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let setup = Setup::start_with("", "", |config| {
        config.listener.header_read_timeout = TIMEOUT;
    })
    .await;
    // A CONNECT head dripped a byte at a time.
    let mut stream = TcpStream::connect(setup.proxy()).await.unwrap();
    let started = Instant::now();
    let dripping = async {
        for byte in b"CONNECT api.confluent.cloud:443 HTTP/1.1\r\n".iter() {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    within(10, dripping).await;
    let mut buffer = [0u8; 64];
    let n = within(10, stream.read(&mut buffer)).await.unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    let took = started.elapsed();
    assert!(took >= TIMEOUT && took < TIMEOUT * 4, "{took:?}");
    // A CONNECT answered, then no TLS ClientHello: the same deadline.
    let (status, mut stream, _) =
        egress::connect(setup.proxy(), "api.confluent.cloud:443", "").await;
    assert_eq!(status, 200);
    let started = Instant::now();
    let n = within(10, stream.read(&mut buffer)).await.unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < TIMEOUT * 4, "{:?}", started.elapsed());
}
