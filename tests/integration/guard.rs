//! The request guard through real HTTP (docs/architecture.md §2): every rejection class is answered by
//! keygate in Confluent's error shape, and nothing at all reaches the upstream — not the request,
//! not even an identity lookup, because the guard runs before identity. Known-good bodies from
//! real clients pass and reach the upstream byte for byte. Framing that hyper's client will not
//! produce (oversized announced lengths, endless chunked bodies, `Content-Length` with
//! `Transfer-Encoding`) is written to a raw socket.

use crate::support::egress;
use crate::support::governed::{self, assert_keygate_error, raw_exchange, API_KEYS};
use crate::support::sim::Sim;
use crate::support::{self, Collected};

/// A small body limit, so the 413 cases stay small.
const LIMIT: usize = 1024;

async fn setup() -> (Sim, keygate::Gateway) {
    let sim = Sim::start().await;
    let gw = support::start(support::config(
        &sim.url(),
        &format!(
            "[limits]\nmax_body_bytes = {LIMIT}\n{}",
            egress::shared().section("")
        ),
    ))
    .await;
    (sim, gw)
}

/// Sends `request` through the egress listener too (HTTP/1.1 and h2) and asserts the same
/// refusal as `direct` (but for the request id), with nothing forwarded.
async fn same_through_egress(
    sim: &Sim,
    gw: &keygate::Gateway,
    request: impl Fn() -> http::Request<http_body_util::Full<bytes::Bytes>>,
    direct: &serde_json::Value,
    status: u16,
    code: &str,
) {
    let strip = |mut error: serde_json::Value| {
        error.as_object_mut().unwrap().remove("id");
        error
    };
    for h2 in [false, true] {
        let response =
            egress::send(gw.egress_addr().unwrap(), egress::shared(), h2, request()).await;
        let error = assert_refused(sim, &response, status, code);
        assert_eq!(strip(error), strip(direct.clone()), "h2: {h2}");
    }
}

/// Asserts the error shape and that the simulator received nothing at all.
fn assert_refused(sim: &Sim, response: &Collected, status: u16, code: &str) -> serde_json::Value {
    let error = assert_keygate_error(response, status, code);
    let seen = sim.sim.requests();
    assert!(
        seen.is_empty(),
        "a refused request reached the upstream: {seen:?}"
    );
    error
}

fn valid_create() -> String {
    governed::create_body("sa-orders", Some("lkc-prod01"))
}

#[tokio::test]
async fn non_canonical_paths_are_400_and_never_forwarded() {
    let (sim, gw) = setup().await;
    let alice = sim.basic("u-alice");
    for path in [
        "/IAM/v2/api-keys",
        "/iam/v2/API-KEYS",
        "/iam/v2/api-keys/",
        "/iam/v2/./api-keys",
        "/iam/v2/x/../api-keys",
        "/iam/v2/api-keys%2F..",
        "/iam/v2/api-keys%2fDEMOALICE0000001",
        "/iam/v2/api%2Dkeys",
        "//iam/v2/api-keys",
        "/iam/v2//api-keys",
        "/iam/v2/api-keys;x=1",
        "/iam;v=2/v2/api-keys",
        "/iam/v2/api-keys/DEMOALICE0000001;",
    ] {
        for (method, body) in [("GET", String::new()), ("POST", valid_create())] {
            let response = governed::send(governed::request(
                method,
                gw.local_addr(),
                path,
                Some(&alice),
                body.clone(),
            ))
            .await;
            let error = assert_refused(&sim, &response, 400, "non_canonical_path");
            let detail = error["detail"].as_str().unwrap();
            assert!(detail.contains(path), "{method} {path}: {detail}");
            let request =
                || governed::request(method, gw.local_addr(), path, Some(&alice), body.clone());
            same_through_egress(&sim, &gw, request, &error, 400, "non_canonical_path").await;
        }
    }
}

/// Paths a lenient stack would read as the api-keys endpoints (overlong UTF-8, encoded
/// whitespace, IIS `%u`, full-width forms, double encoding, backslashes, encoded terminators)
/// and paths under `/iam/` that are not plain: the lenient simulator acts on each one when it
/// is sent directly, keygate answers 400 with the canonical form, audits a guard denial, and
/// forwards nothing.
#[tokio::test]
async fn lenient_readings_under_iam_are_400_audited_and_never_forwarded() {
    let sim = Sim::start().await;
    sim.sim.set_lenient_paths(true);
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let gw = support::start(support::config(
        &sim.url(),
        &format!("[audit]\nfile = {audit:?}\n"),
    ))
    .await;
    // u-bob is EnvironmentAdmin on env-prod01: the matrix denies him a Global key for a service
    // account he does not own.
    let bob = sim.basic("u-bob");
    let denied_create = governed::create_body("sa-payments", Some("global"));
    let cases: [(&str, Option<&str>); 12] = [
        ("/iam/v2%C0%AFapi-keys", Some("/iam/v2/api-keys")),
        ("/iam/v2%E0%80%AFapi-keys", Some("/iam/v2/api-keys")),
        ("/iam/v2/x/%C0%AE%C0%AE/api-keys", Some("/iam/v2/api-keys")),
        ("/iam/v2/api-keys%20", Some("/iam/v2/api-keys")),
        ("/iam/v2/api-keys%09", Some("/iam/v2/api-keys")),
        ("/iam/v2/api%u002Dkeys", Some("/iam/v2/api-keys")),
        ("/%EF%BD%89am/v2/api-keys", Some("/iam/v2/api-keys")),
        ("/iam/v2%252Fapi-keys", Some("/iam/v2/api-keys")),
        ("/iam/v2\\api-keys", Some("/iam/v2/api-keys")),
        ("/iam/v2/api-keys%3F.json", Some("/iam/v2/api-keys")),
        ("/iam/v2/api-keys%0D%0A", Some("/iam/v2/api-keys")),
        ("/iam/v2/role-bindings;x", Some("/iam/v2/role-bindings")),
    ];
    for (path, canonical) in cases {
        let governed_path = canonical == Some("/iam/v2/api-keys");
        if governed_path {
            // Sent straight to the lenient upstream, the matrix-denied create succeeds.
            let direct = governed::send(governed::request(
                "POST",
                sim.addr,
                path,
                Some(&bob),
                denied_create.clone(),
            ))
            .await;
            assert_eq!(direct.status, 202, "{path} directly: {:?}", direct.body);
        }
        sim.sim.clear_requests();
        let response = governed::send(governed::request(
            "POST",
            gw.local_addr(),
            path,
            Some(&bob),
            denied_create.clone(),
        ))
        .await;
        let error = assert_refused(&sim, &response, 400, "non_canonical_path");
        let detail = error["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("path `{path}` is not canonical")),
            "{detail}"
        );
        if let Some(canonical) = canonical {
            assert!(detail.ends_with(&format!("send `{canonical}`")), "{detail}");
        }
        let request_id = response.headers["x-request-id"].to_str().unwrap();
        let records = governed::audit_records(&audit, request_id, "response_complete").await;
        assert_eq!(records[0]["decision"]["result"], "deny", "{path}");
        assert_eq!(records[0]["decision"]["decidedBy"], "guard", "{path}");
        assert_eq!(records[0]["status"], 400, "{path}");
    }
    // Other methods too, and ordinary paths with `%` outside `/iam/` still pass.
    let response = governed::send(governed::request(
        "DELETE",
        gw.local_addr(),
        "/iam/v2/api-keys%20/DEMOBOB000000001",
        Some(&bob),
        Vec::new(),
    ))
    .await;
    assert_refused(&sim, &response, 400, "non_canonical_path");
    let response = governed::send(governed::request(
        "GET",
        gw.local_addr(),
        "/org/v2/environments/env%2Dprod01",
        Some(&bob),
        Vec::new(),
    ))
    .await;
    assert_ne!(response.status, 400);
    assert_eq!(sim.received("/org/v2/environments/env%2Dprod01").len(), 1);
}

#[tokio::test]
async fn method_overrides_are_400_and_never_forwarded() {
    let (sim, gw) = setup().await;
    let alice = sim.basic("u-alice");
    for header in [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
        "X-Original-URL",
        "X-Rewrite-URL",
    ] {
        let mut request =
            governed::request("GET", gw.local_addr(), API_KEYS, Some(&alice), Vec::new());
        request
            .headers_mut()
            .insert(http::HeaderName::from_bytes(header.as_bytes()).unwrap(), {
                http::HeaderValue::from_static("DELETE")
            });
        let response = governed::send(request).await;
        let error = assert_refused(&sim, &response, 400, "method_override");
        assert!(
            error["detail"].as_str().unwrap().contains(header),
            "{error}"
        );
    }
    for query in [
        "_method=DELETE",
        "X-HTTP-Method-Override=DELETE",
        "%5Fmethod=DELETE",
    ] {
        let path = format!("{API_KEYS}?{query}");
        let response = governed::send(governed::request(
            "GET",
            gw.local_addr(),
            &path,
            Some(&alice),
            Vec::new(),
        ))
        .await;
        assert_refused(&sim, &response, 400, "method_override");
    }
}

#[tokio::test]
async fn unknown_method_on_a_governed_path_is_405_with_allow() {
    let (sim, gw) = setup().await;
    let alice = sim.basic("u-alice");
    let response = governed::send(governed::request(
        "PUT",
        gw.local_addr(),
        API_KEYS,
        Some(&alice),
        valid_create(),
    ))
    .await;
    assert_refused(&sim, &response, 405, "method_not_allowed");
    assert_eq!(response.headers["allow"], "GET, POST");
}

#[tokio::test]
async fn content_type_other_than_json_is_415_and_never_forwarded() {
    let (sim, gw) = setup().await;
    let alice = sim.basic("u-alice");
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/json; charset=latin1"),
        Some("application/json-patch+json"),
        Some("application/json, text/plain"),
        None,
    ] {
        let mut request = governed::request(
            "POST",
            gw.local_addr(),
            API_KEYS,
            Some(&alice),
            valid_create(),
        );
        match content_type {
            Some(value) => {
                request
                    .headers_mut()
                    .insert("content-type", http::HeaderValue::from_static(value));
            }
            None => {
                request.headers_mut().remove("content-type");
            }
        }
        let response = governed::send(request).await;
        assert_refused(&sim, &response, 415, "unsupported_media_type");
    }
}

#[tokio::test]
async fn content_encoding_other_than_identity_is_415_and_never_forwarded() {
    let (sim, gw) = setup().await;
    let alice = sim.basic("u-alice");
    for encoding in ["gzip", "identity, gzip", "br", "deflate"] {
        let mut request = governed::request(
            "POST",
            gw.local_addr(),
            API_KEYS,
            Some(&alice),
            valid_create(),
        );
        request
            .headers_mut()
            .insert("content-encoding", http::HeaderValue::from_static(encoding));
        let response = governed::send(request).await;
        let error = assert_refused(&sim, &response, 415, "unsupported_media_type");
        assert!(
            error["detail"].as_str().unwrap().contains("encoding"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn body_over_the_limit_with_content_length_is_413_before_it_is_sent() {
    let (sim, gw) = setup().await;
    let alice = sim.basic("u-alice");
    // Only the head is sent: keygate refuses on the announced length without waiting for a body.
    let head = format!(
        "POST {API_KEYS} HTTP/1.1\r\nhost: keygate\r\nauthorization: {alice}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        LIMIT * 1000
    );
    let response = raw_exchange(gw.local_addr(), &[head.as_bytes()]).await;
    let error = assert_refused(&sim, &response.collected(), 413, "payload_too_large");
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .contains(&LIMIT.to_string()),
        "{error}"
    );

    // The same through hyper's client, with the whole body.
    let body = format!(
        r#"{{"spec":{{"owner":{{"id":"sa-orders"}},"description":"{}"}}}}"#,
        "x".repeat(LIMIT)
    );
    let response = governed::send(governed::request(
        "POST",
        gw.local_addr(),
        API_KEYS,
        Some(&alice),
        body,
    ))
    .await;
    assert_refused(&sim, &response, 413, "payload_too_large");
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413_without_reading_the_rest() {
    let (sim, gw) = setup().await;
    let alice = sim.basic("u-alice");
    let head = format!(
        "POST {API_KEYS} HTTP/1.1\r\nhost: keygate\r\nauthorization: {alice}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    let chunk = format!("200\r\n{}\r\n", " ".repeat(0x200));
    // Three 512-byte chunks pass the 1 KiB limit; the body is never terminated, so an answer
    // proves keygate stopped reading at the limit.
    let response = raw_exchange(
        gw.local_addr(),
        &[
            head.as_bytes(),
            chunk.as_bytes(),
            chunk.as_bytes(),
            chunk.as_bytes(),
        ],
    )
    .await;
    assert_refused(&sim, &response.collected(), 413, "payload_too_large");
}

/// RFC 9112 §6.1 lets a server either reject a request with both `Content-Length` and
/// `Transfer-Encoding` or frame it by `Transfer-Encoding` alone and close the connection after
/// responding. hyper (before keygate sees the request) does the latter: it drops `Content-Length`,
/// so the guard's own check for both headers cannot fire on HTTP/1.1. What matters is that no
/// bytes can be smuggled: keygate decides on the chunked body, forwards exactly that, and never
/// reads the bytes a `Content-Length`-framing front end would have counted as the same request.
#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_second_request() {
    let (sim, gw) = setup().await;
    let alice = sim.basic("u-alice");
    let body = valid_create();
    let smuggled = format!(
        "DELETE {API_KEYS}/DEMOORDERS000001 HTTP/1.1\r\nhost: keygate\r\nauthorization: {alice}\r\n\r\n"
    );
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n{smuggled}", body.len());
    // No `connection: close` from the caller: keygate must close on its own.
    let head = format!(
        "POST {API_KEYS} HTTP/1.1\r\nhost: keygate\r\nauthorization: {alice}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\
         transfer-encoding: chunked\r\n\r\n",
        chunked.len()
    );
    let response = raw_exchange(gw.local_addr(), &[head.as_bytes(), chunked.as_bytes()]).await;
    assert_eq!(response.status, 202, "{response:?}");
    assert_eq!(response.header("connection"), Some("close"));
    let seen = sim.sim.requests();
    assert!(
        seen.iter().all(|r| r.method != "DELETE"),
        "the smuggled request reached the upstream: {seen:?}"
    );
    let posts: Vec<_> = seen.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].body.as_deref(), Some(body.as_bytes()));
    assert!(
        posts[0].header_values("content-length").len()
            + posts[0].header_values("transfer-encoding").len()
            == 1,
        "{:?}",
        posts[0]
    );
    // The key the smuggled request aimed at still exists.
    let get = governed::send(governed::request(
        "GET",
        gw.local_addr(),
        &format!("{API_KEYS}/DEMOORDERS000001"),
        Some(&alice),
        Vec::new(),
    ))
    .await;
    assert_eq!(get.status, 200);
}

#[tokio::test]
async fn duplicate_and_case_variant_json_keys_are_400_at_any_depth() {
    let (sim, gw) = setup().await;
    let alice = sim.basic("u-alice");
    for (body, pointer) in [
        (
            r#"{"spec":{"owner":{"id":"sa-orders","id":"u-alice"},"resource":{"id":"lkc-prod01"}}}"#,
            Some("/spec/owner/id"),
        ),
        (
            r#"{"spec":{"owner":{"id":"sa-orders"},"resource":{"id":"lkc-prod01","ID":"global"}}}"#,
            Some("/spec/resource/id"),
        ),
        (
            r#"{"spec":{"owner":{"id":"sa-orders"}},"Spec":{"owner":{"id":"u-bob"}}}"#,
            Some("/spec"),
        ),
        (
            r#"{"spec":{"owner":{"id":"sa-orders"},"labels":{"deep":[{"a":1,"A":2}]}}}"#,
            None,
        ),
        (
            // KELVIN SIGN folds to `k` in Go's encoding/json: `\u212a` spells "kind" differently.
            r#"{"spec":{"owner":{"id":"sa-orders","kind":"ServiceAccount","\u212aind":"User"}}}"#,
            Some("/spec/owner/kind"),
        ),
    ] {
        let response = governed::send(governed::request(
            "POST",
            gw.local_addr(),
            API_KEYS,
            Some(&alice),
            body,
        ))
        .await;
        let error = assert_refused(&sim, &response, 400, "duplicate_key");
        assert_eq!(error["source"]["pointer"].as_str(), pointer, "{body}");
        let request = || governed::request("POST", gw.local_addr(), API_KEYS, Some(&alice), body);
        same_through_egress(&sim, &gw, request, &error, 400, "duplicate_key").await;
    }
}

#[tokio::test]
async fn invalid_utf8_body_is_400_and_never_forwarded() {
    let (sim, gw) = setup().await;
    let alice = sim.basic("u-alice");
    let mut body = br#"{"spec":{"owner":{"id":"sa-orders"},"description":""#.to_vec();
    let offset = body.len();
    body.extend_from_slice(b"\xff\xfe\"}}");
    let response = governed::send(governed::request(
        "POST",
        gw.local_addr(),
        API_KEYS,
        Some(&alice),
        body,
    ))
    .await;
    let error = assert_refused(&sim, &response, 400, "invalid_json");
    let detail = error["detail"].as_str().unwrap();
    assert!(detail.contains("UTF-8"), "{detail}");
    assert!(detail.contains(&offset.to_string()), "{detail}");
}

#[tokio::test]
async fn two_authorization_headers_are_400_and_never_forwarded() {
    let (sim, gw) = setup().await;
    let mut request = governed::request(
        "POST",
        gw.local_addr(),
        API_KEYS,
        Some(&sim.basic("u-dave")),
        valid_create(),
    );
    request.headers_mut().append(
        "authorization",
        http::HeaderValue::from_str(&sim.basic("u-alice")).unwrap(),
    );
    let response = governed::send(request).await;
    let error = assert_refused(&sim, &response, 400, "duplicate_authorization");
    // The detail names the problem, never a credential.
    let detail = error["detail"].as_str().unwrap();
    assert!(!detail.contains("Basic"), "{detail}");
    assert!(!detail.contains(&sim.key("u-alice").secret), "{detail}");
}

#[tokio::test]
async fn known_good_client_bodies_reach_the_upstream_byte_for_byte() {
    let (sim, gw) = setup().await;
    let alice = sim.basic("u-alice");
    let bodies: [(&str, &str); 5] = [
        (
            "Confluent CLI",
            r#"{"spec":{"description":"","owner":{"id":"sa-orders","related":"","resource_name":""},"resource":{"id":"lkc-prod01","related":"","resource_name":""}}}"#,
        ),
        (
            "Terraform, Kafka key",
            r#"{"spec":{"description":"orders producer","display_name":"orders-producer","owner":{"id":"sa-orders","kind":"ServiceAccount","related":"","resource_name":""},"resource":{"id":"lkc-prod01","kind":"Cluster","related":"","resource_name":""}}}"#,
        ),
        (
            "Terraform, Cloud key without resource",
            r#"{"spec":{"description":"ci","display_name":"ci-cloud","owner":{"id":"sa-orders","kind":"ServiceAccount","related":"","resource_name":""}}}"#,
        ),
        (
            "Terraform, Flink key",
            r#"{"spec":{"display_name":"flink","owner":{"id":"sa-orders","kind":"ServiceAccount","related":"","resource_name":""},"resource":{"id":"aws.us-east-1","environment":"env-dev01","api_version":"fcpm/v2","kind":"Region","related":"","resource_name":""}}}"#,
        ),
        (
            // Minimal, with whitespace, escapes and member order a re-serialiser would change.
            "minimal",
            "{ \"spec\" :\n\t{\"resource\": {\"id\": \"lkc-prod01\"},\n \"owner\": {\"id\": \"sa-\\u006frders\"},\"description\":\"caf\u{e9} \\u00e9\"} }\n",
        ),
    ];
    for (client, body) in bodies {
        let response = governed::send(governed::request(
            "POST",
            gw.local_addr(),
            API_KEYS,
            Some(&alice),
            body,
        ))
        .await;
        assert_eq!(
            response.status,
            202,
            "{client}: {:?}",
            String::from_utf8_lossy(&response.body)
        );
        let created = response.json();
        assert_eq!(created["spec"]["owner"]["id"], "sa-orders", "{client}");
        let posts = sim.creates();
        let last = posts.last().expect("the create reached the simulator");
        assert_eq!(
            last.body.as_deref(),
            Some(body.as_bytes()),
            "{client}: the upstream got different bytes"
        );
        assert_eq!(last.path_and_query, API_KEYS);
    }
}
