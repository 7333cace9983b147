//! The company's identities on real sockets: bearer JWTs of keygate's own issuers (JWKS from a
//! file and from a loopback URL), mapped to Confluent principals, brokered (keygate's credential
//! upstream, never the caller's token), with the matrix deciding by the mapped principal exactly
//! as it does for the same principal's own Basic key. Tokens are minted here with keys generated
//! here (P-256, Ed25519) or the committed throw-away RSA key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keygate::identity::jwt::mint::{self, Minter};
use serde_json::{json, Value};

use crate::support::governed::{self, assert_keygate_error, audit_records, poll_until, API_KEYS};
use crate::support::jwks::JwksServer;
use crate::support::sim::Sim;
use crate::support::{self, Collected};

pub const ISS: &str = "https://idp.corp.example";
pub(crate) const OWN_VAR: &str = "KEYGATE_TEST_OWN_CREDENTIAL";

pub fn rsa() -> Minter {
    Minter::rsa(
        "rsa-1",
        include_bytes!("../fixtures/jwt/rsa-2048.pem"),
        false,
    )
    .unwrap()
}

pub fn claims(sub: &str) -> Value {
    json!({"iss": ISS, "aud": "keygate", "sub": sub, "exp": mint::now() + 300,
           "jti": format!("{:x}", rand_u64())})
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    u64::from_le_bytes(b)
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// keygate with one issuer (`issuer_extra` added to its table), `rest` after it, an audit file,
/// and keygate's own credential (sa-keygate) in a stand-in environment with `env`.
async fn start(
    sim: &Sim,
    dir: &Path,
    issuer_extra: &str,
    rest: &str,
    env: &[(String, String)],
) -> (keygate::Gateway, PathBuf) {
    start_with_identity(sim, dir, "", issuer_extra, rest, env).await
}

/// [`start`] with `identity` (fields of the `[identity]` table) before the issuer.
pub(crate) async fn start_with_identity(
    sim: &Sim,
    dir: &Path,
    identity: &str,
    issuer_extra: &str,
    rest: &str,
    env: &[(String, String)],
) -> (keygate::Gateway, PathBuf) {
    let own = sim.key("sa-keygate");
    let mut vars: HashMap<String, String> = env.iter().cloned().collect();
    vars.insert(OWN_VAR.into(), format!("{}:{}", own.key_id, own.secret));
    let audit = dir.join("audit.jsonl");
    let extra = format!(
        r#"
[upstream.credential]
env = "{OWN_VAR}"
[audit]
file = {audit:?}
[identity]
{identity}
[[identity.jwt]]
issuer = "{ISS}"
audiences = ["keygate"]
{issuer_extra}
{rest}
"#
    );
    let mut config = support::config_with_env(&sim.url(), &extra, &vars);
    config.upstream.web_url = sim.url().parse().unwrap();
    (support::start(config).await, audit)
}

pub(crate) fn jwks_file(dir: &Path, minters: &[&Minter]) -> PathBuf {
    let path = dir.join("jwks.json");
    std::fs::write(&path, mint::jwks(minters)).unwrap();
    path
}

pub(crate) async fn send(
    gw: &keygate::Gateway,
    method: &str,
    path: &str,
    authorization: &str,
    body: &str,
    id: &str,
) -> Collected {
    let mut request = governed::request(
        method,
        gw.local_addr(),
        path,
        Some(authorization),
        body.to_owned(),
    );
    request
        .headers_mut()
        .insert("x-request-id", id.parse().unwrap());
    governed::send(request).await
}

pub(crate) fn detail(response: &Collected) -> String {
    let error = assert_keygate_error(response, 401, "user_unauthenticated");
    let challenge = response.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    error["detail"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn tokens_are_verified_and_every_refusal_has_a_clear_reason() {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (rsa, ec, ed) = (
        rsa(),
        Minter::es256("ec-1").unwrap(),
        Minter::ed25519("ed-1").unwrap(),
    );
    let file = jwks_file(dir.path(), &[&rsa, &ec, &ed]);
    let (gw, _) = start(
        &sim,
        dir.path(),
        &format!("jwks_file = {file:?}\nbroker = true\nleeway = \"5s\""),
        "[[identity.map]]\nexternal = \"ci@payments\"\nacting_as = \"sa-orders\"\n",
        &[],
    )
    .await;
    for m in [&rsa, &ec, &ed] {
        let r = send(
            &gw,
            "GET",
            API_KEYS,
            &bearer(&m.sign(&claims("ci@payments"))),
            "",
            "ok",
        )
        .await;
        assert_eq!(
            r.status,
            200,
            "{}: {:?}",
            m.alg(),
            String::from_utf8_lossy(&r.body)
        );
    }
    let now = mint::now();
    let with = |patch: Value| {
        let mut c = claims("ci@payments");
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let long = with(json!({"pad": "x".repeat(9000)}));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            ec.sign(&with(json!({"exp": now - 60}))),
            "expired",
        ),
        (
            "not yet valid",
            ec.sign(&with(json!({"nbf": now + 600}))),
            "not valid yet",
        ),
        (
            "wrong aud",
            ec.sign(&with(json!({"aud": "someone-else"}))),
            "audience",
        ),
        (
            "alg none",
            mint::unsigned(&claims("ci@payments")),
            "alg: none",
        ),
        (
            "HS256 with the public key",
            mint::hs256(
                &json!({"alg": "HS256", "kid": "rsa-1"}),
                &claims("ci@payments"),
                &rsa.public_bytes(),
            ),
            "`HS256` is not allowed",
        ),
        ("oversized", ec.sign(&long), "8192"),
        (
            "malformed",
            format!(
                "{}.!!!.sig",
                mint::unsigned(&claims("x")).split('.').next().unwrap()
            ),
            "malformed",
        ),
        (
            "unknown kid (file source: no refetch)",
            Minter::es256("ec-9").unwrap().sign(&claims("ci@payments")),
            "`kid`",
        ),
        (
            "forged signature",
            Minter::es256("ec-1").unwrap().sign(&claims("ci@payments")),
            "signature",
        ),
        (
            "unmapped principal",
            ec.sign(&claims("intruder@elsewhere")),
            "not mapped",
        ),
    ];
    for (what, token, reason) in &cases {
        let r = send(&gw, "GET", API_KEYS, &bearer(token), "", "bad").await;
        let detail = detail(&r);
        assert!(detail.contains(reason), "{what}: {detail}");
        assert!(
            !detail.contains(&token[..20.min(token.len())]),
            "{what}: token echoed"
        );
    }
    // A token whose `iss` is none of keygate's issuers is a Confluent session token to keygate:
    // Confluent (the simulator's `/api/me`) is asked, and refuses it.
    let other = ec.sign(&with(json!({"iss": "https://evil.example"})));
    let r = send(&gw, "GET", API_KEYS, &bearer(&other), "", "other").await;
    assert!(
        detail(&r).contains("Confluent session token"),
        "{:?}",
        r.body
    );
    assert_eq!(sim.received("/api/me").len(), 1);
    // No refused token reached the API upstream.
    for seen in sim.received(API_KEYS) {
        for value in seen.header_values("authorization") {
            assert!(value.starts_with("Basic "), "a bearer token went upstream");
        }
    }
}

#[tokio::test]
async fn brokered_create_uses_keygates_credential_and_passes_the_secret_through() {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ec = Minter::es256("ec-1").unwrap();
    let file = jwks_file(dir.path(), &[&ec]);
    let (gw, audit) = start(
        &sim,
        dir.path(),
        &format!("jwks_file = {file:?}\nbroker = true\ngroups_claim = \"groups\"\nprincipal = \"{{claims.sub}}@payments\""),
        "[[identity.map]]\ngroup = \"payments-ci\"\nacting_as = \"sa-keygate\"\n",
        &[],
    )
    .await;
    let mut c = claims("ci");
    c["groups"] = json!(["payments-ci"]);
    let token = ec.sign(&c);
    // A Global key: it authenticates on the Cloud API, so the secret can be tried below.
    let body = governed::create_body("sa-orders", Some("global"));
    let r = send(
        &gw,
        "POST",
        API_KEYS,
        &bearer(&token),
        &body,
        "brokered-create",
    )
    .await;
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    let created = r.json();
    let (id, secret) = (
        created["id"].as_str().unwrap().to_owned(),
        created["spec"]["secret"].as_str().unwrap().to_owned(),
    );
    // The secret the caller got works upstream as it is.
    let direct = support::send(
        &support::client(),
        governed::request(
            "GET",
            sim.addr,
            &format!("{API_KEYS}/{id}"),
            Some(&format!(
                "Basic {}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("{id}:{secret}")
                )
            )),
            Vec::new(),
        ),
    )
    .await;
    assert_eq!(
        direct.status, 200,
        "the passed-through secret does not authenticate"
    );
    // Upstream saw keygate's credential only.
    let own = sim.basic("sa-keygate");
    let creates = sim.creates();
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0].header_values("authorization"), [own.as_str()]);
    for seen in sim.sim.requests() {
        for (_, value) in &seen.headers {
            assert!(
                !value.contains(&token),
                "the caller's token reached the upstream"
            );
        }
    }
    // The audit record names both identities and the upstream key id, never a secret.
    let records = audit_records(&audit, "brokered-create", "response_complete").await;
    let principal = &records[0]["principal"];
    assert_eq!(principal["id"], "sa-keygate");
    assert_eq!(principal["external"]["id"], "ci@payments");
    assert_eq!(principal["external"]["source"], "jwt");
    assert_eq!(principal["external"]["issuer"], ISS);
    assert_eq!(
        principal["external"]["upstreamKeyId"],
        sim.key("sa-keygate").key_id.as_str()
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains(&secret) && !text.contains(&token));
    assert!(!text.contains(&sim.key("sa-keygate").secret));

    // A route that is not brokered is refused and never reaches the upstream.
    let before = sim.sim.requests().len();
    let r = send(
        &gw,
        "GET",
        "/iam/v2/role-bindings",
        &bearer(&token),
        "",
        "not-brokered",
    )
    .await;
    let error = assert_keygate_error(&r, 403, "user_unauthorized");
    assert_eq!(
        error["meta"]["rule_ids"],
        json!(["broker.route_not_brokered"])
    );
    assert_eq!(sim.sim.requests().len(), before);
    // A brokered read is forwarded with keygate's credential.
    let r = send(
        &gw,
        "GET",
        "/org/v2/environments",
        &bearer(&token),
        "",
        "env-read",
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let reads = sim.received("/org/v2/environments");
    assert_eq!(
        reads.last().unwrap().header_values("authorization"),
        [own.as_str()]
    );
}

#[tokio::test]
async fn the_matrix_decides_by_the_mapped_principal_as_for_its_own_key() {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ec = Minter::es256("ec-1").unwrap();
    let file = jwks_file(dir.path(), &[&ec]);
    let principals = [
        "u-alice", "u-bob", "u-carol", "u-dave", "u-erin", "u-frank", "u-grace",
    ];
    // Each external principal acts as a demo principal and is brokered with that principal's
    // own key, so the upstream's answer is the same as for the Basic request.
    let mut env = Vec::new();
    let mut maps = String::new();
    for p in principals {
        let var = format!("KEYGATE_TEST_{}", p.replace('-', "_").to_uppercase());
        let key = sim.key(p);
        env.push((var.clone(), format!("{}:{}", key.key_id, key.secret)));
        maps.push_str(&format!(
            "[[identity.map]]\nexternal = \"ext-{p}\"\nacting_as = \"{p}\"\ncredential = {{ env = \"{var}\" }}\n"
        ));
    }
    let (gw, _) = start(
        &sim,
        dir.path(),
        &format!("jwks_file = {file:?}\nbroker = true"),
        &maps,
        &env,
    )
    .await;
    let mut compared = 0;
    for p in principals {
        for resource in ["lkc-prod01", "global"] {
            for owner in [p, "sa-orders"] {
                let body = governed::create_body(owner, Some(resource));
                let basic = send(&gw, "POST", API_KEYS, &sim.basic(p), &body, "basic").await;
                let token = ec.sign(&claims(&format!("ext-{p}")));
                let jwt = send(&gw, "POST", API_KEYS, &bearer(&token), &body, "jwt").await;
                let what = format!("{p} creating for {owner} on {resource}");
                assert_eq!(basic.status, jwt.status, "{what}");
                if basic.status == 403 {
                    let (b, j) = (basic.error(), jwt.error());
                    assert_eq!(b["meta"]["rule_ids"], j["meta"]["rule_ids"], "{what}");
                    let explanation = j["detail"].as_str().unwrap();
                    assert!(
                        explanation.contains(&format!("ext-{p} via issuer {ISS}, acting as {p}")),
                        "{what}: {explanation}"
                    );
                } else {
                    assert_eq!(
                        basic.status,
                        202,
                        "{what}: {:?}",
                        String::from_utf8_lossy(&basic.body)
                    );
                    assert_eq!(jwt.json()["spec"]["owner"]["id"], owner, "{what}");
                }
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 28);
}

#[tokio::test]
async fn jwks_url_rotation_refetches_once_and_the_last_good_set_lasts_until_max_staleness() {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (
        Minter::es256("k-old").unwrap(),
        Minter::ed25519("k-new").unwrap(),
    );
    let server = JwksServer::start(mint::jwks(&[&old]), 3600).await;
    let (gw, _) = start(
        &sim,
        dir.path(),
        &format!(
            "jwks_url = \"{}\"\nbroker = true\njwks_cache_min = \"1s\"\njwks_cache_max = \"1s\"\njwks_refetch_interval = \"30s\"\njwks_max_staleness = \"3s\"",
            server.url()
        ),
        "[[identity.map]]\nexternal = \"ci\"\nacting_as = \"sa-orders\"\n",
        &[],
    )
    .await;
    let ok = |m: &Minter| bearer(&m.sign(&claims("ci")));
    assert_eq!(
        send(&gw, "GET", API_KEYS, &ok(&old), "", "a").await.status,
        200
    );
    // Rotation: the IdP publishes a new key; the first token with it makes keygate fetch again.
    server.set(mint::jwks(&[&old, &new]));
    let fetches = server.fetches();
    assert_eq!(
        send(&gw, "GET", API_KEYS, &ok(&new), "", "b").await.status,
        200
    );
    assert!(server.fetches() > fetches);
    // A made-up kid right after: no second on-demand fetch within the interval.
    let fetches = server.fetches();
    let stranger = Minter::es256("k-made-up").unwrap();
    let r = send(&gw, "GET", API_KEYS, &ok(&stranger), "", "c").await;
    assert!(detail(&r).contains("`kid`"));
    assert!(
        server.fetches() <= fetches + 1,
        "an unknown kid fetched more than the background refresh"
    );
    // The IdP goes away: the last good set keeps working…
    server.stop();
    assert_eq!(
        send(&gw, "GET", API_KEYS, &ok(&new), "", "d").await.status,
        200
    );
    // …until it is older than the maximum staleness; then tokens are refused (fresh tokens each
    // time: a verified token stays cached for its own lifetime).
    let refused = poll_until(
        Duration::from_secs(15),
        "JWKS staleness refusal",
        || async {
            let r = send(&gw, "GET", API_KEYS, &ok(&new), "", "e").await;
            (r.status == 401).then(|| detail(&r))
        },
    )
    .await;
    assert!(refused.contains("maximum staleness"), "{refused}");
}

#[tokio::test]
async fn terraform_oauth_exchange_binds_the_access_token_to_the_verified_identity() {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ec = Minter::es256("ec-1").unwrap();
    let file = jwks_file(dir.path(), &[&ec]);
    let (gw, audit) = start(
        &sim,
        dir.path(),
        &format!("jwks_file = {file:?}"),
        "[identity.oauth]\n",
        &[],
    )
    .await;
    let subject = ec.sign(&claims("tf@platform"));
    let form = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={subject}&identity_pool_id=pool-platform&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt"
    );
    let exchange = |form: String| {
        let mut request = http::Request::builder()
            .method("POST")
            .uri(support::url(gw.local_addr(), "/sts/v1/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(form)))
            .unwrap();
        request
            .headers_mut()
            .insert("x-request-id", "exchange".parse().unwrap());
        governed::send(request)
    };
    let r = exchange(form).await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let access = r.json()["access_token"].as_str().unwrap().to_owned();
    // Later calls with the access token are attributed from the binding: no `/api/me`.
    let r = send(&gw, "GET", API_KEYS, &bearer(&access), "", "after-exchange").await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(sim.received("/api/me").is_empty());
    let records = audit_records(&audit, "after-exchange", "response_complete").await;
    assert_eq!(records[0]["principal"]["id"], "pool-platform");
    assert_eq!(records[0]["principal"]["external"]["id"], "tf@platform");
    assert_eq!(records[0]["principal"]["external"]["source"], "oauth");
    // A subject token keygate cannot verify is refused before Confluent sees it.
    let forged = Minter::es256("ec-1").unwrap().sign(&claims("tf@platform"));
    let before = sim.received("/sts").len();
    let r = exchange(format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={forged}&identity_pool_id=pool-platform"
    ))
    .await;
    assert!(detail(&r).contains("signature"));
    assert_eq!(sim.received("/sts").len(), before);
    // An unbound Confluent bearer (a CLI session token) falls back to the session lookup.
    let login = support::send(
        &support::client(),
        http::Request::builder()
            .method("POST")
            .uri(format!("{}/api/sessions", sim.url()))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                r#"{"email":"bob@example.com","password":"bob-demo-password"}"#,
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(login.status, 200, "{:?}", login.body);
    let session = login.json()["token"].as_str().unwrap().to_owned();
    let r = send(&gw, "GET", API_KEYS, &bearer(&session), "", "session").await;
    assert_eq!(r.status, 200);
    assert_eq!(sim.received("/api/me").len(), 1);
    let records = audit_records(&audit, "session", "response_complete").await;
    assert_eq!(records[0]["principal"]["id"], "u-bob");
    assert_eq!(records[0]["principal"]["authenticationMethod"], "session");
    // An unbound bearer Confluent does not know either is refused.
    let r = send(&gw, "GET", API_KEYS, "Bearer a.b.c", "", "unbound").await;
    assert_eq!(r.status, 401);
}

/// Organisation policies see both identities: `principal.external` (the company identity) and
/// `principal.acting_as` (the Confluent principal).
#[tokio::test]
async fn cedar_policies_see_the_external_identity_and_acting_as() {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::copy(
        "policies/keygate.cedarschema",
        policies.join("keygate.cedarschema"),
    )
    .unwrap();
    std::fs::write(
        policies.join("external.cedar"),
        r#"
@id("external-no-global")
@reason("company identities acting as u-alice may not create Global keys")
forbid (principal, action == Action::"CreateApiKey", resource)
when {
  principal has external &&
  principal.external.source == "jwt" &&
  principal.external.issuer == "https://idp.corp.example" &&
  principal.external.groups.contains("ci") &&
  principal has acting_as &&
  principal.acting_as == "u-alice" &&
  context.resource.type == "Global"
};
"#,
    )
    .unwrap();
    let ec = Minter::es256("ec-1").unwrap();
    let file = jwks_file(dir.path(), &[&ec]);
    let alice = sim.key("u-alice");
    let (gw, _) = start(
        &sim,
        dir.path(),
        &format!("jwks_file = {file:?}\nbroker = true\ngroups_claim = \"groups\""),
        &format!(
            "[[identity.map]]\nexternal = \"ci@platform\"\nacting_as = \"u-alice\"\ncredential = {{ env = \"ALICE\" }}\n[policy]\ndir = {policies:?}\n"
        ),
        &[("ALICE".into(), format!("{}:{}", alice.key_id, alice.secret))],
    )
    .await;
    let body = governed::create_body("sa-orders", Some("global"));
    let mut c = claims("ci@platform");
    c["groups"] = json!(["ci"]);
    let r = send(&gw, "POST", API_KEYS, &bearer(&ec.sign(&c)), &body, "ext").await;
    let error = assert_keygate_error(&r, 403, "user_unauthorized");
    assert_eq!(
        error["meta"]["rule_ids"],
        json!(["external-no-global"]),
        "{error}"
    );
    // The same principal with its own key is not an external identity: allowed.
    let r = send(&gw, "POST", API_KEYS, &sim.basic("u-alice"), &body, "own").await;
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    // Another group of the same external identity: the policy does not apply.
    c["groups"] = json!(["humans"]);
    let r = send(&gw, "POST", API_KEYS, &bearer(&ec.sign(&c)), &body, "ext-2").await;
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
}

/// The lead's bench config for JWT callers loads, and its committed token is decided as the
/// bench's Basic caller (`u-bench01`) is: the create is allowed and forwarded.
#[tokio::test]
async fn the_jwt_bench_config_and_token_decide_like_the_basic_bench_caller() {
    let up = crate::support::upstream::spawn(None, crate::support::upstream::echo).await;
    let mut config =
        keygate::config::Config::load(std::path::Path::new("benches/keygate-bench-jwt.toml"))
            .unwrap();
    config.listener.address = "127.0.0.1:0".parse().unwrap();
    config.admin.address = "127.0.0.1:0".parse().unwrap();
    config.upstream.url = format!("http://{up}").parse().unwrap();
    let gw = support::start(config).await;
    let token = std::fs::read_to_string("benches/bench-jwt.txt").unwrap();
    let body = std::fs::read_to_string("bench/lua/create-api-key.json").unwrap();
    let r = send(
        &gw,
        "POST",
        API_KEYS,
        &bearer(token.trim()),
        body.trim(),
        "bench",
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["path"], API_KEYS);
}
