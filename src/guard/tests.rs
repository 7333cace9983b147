use std::cell::Cell;
use std::convert::Infallible;
use std::rc::Rc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri};
use http_body::Frame;
use http_body_util::{Full, StreamBody};

use super::*;
use crate::policy::action::{Action, CreateSpec, ResourceSpec, UpdateSpec};

const SECRET: &str = "cfltAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn uri(s: &str) -> Uri {
    s.parse().unwrap_or_else(|e| panic!("test uri {s:?}: {e}"))
}

fn classify_get(path: &str) -> Result<Route, GuardError> {
    classify(&Method::GET, &uri(path))
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn assert_no_secret(error: &GuardError) {
    let display = error.to_string();
    let debug = format!("{error:?}");
    assert!(!display.contains("cflt"), "secret in Display: {display}");
    assert!(!debug.contains("cflt"), "secret in Debug: {debug}");
    assert!(
        !display.contains("AAAAAAAA"),
        "secret in Display: {display}"
    );
    assert!(!debug.contains("AAAAAAAA"), "secret in Debug: {debug}");
}

// === route classification ===

#[test]
fn ordinary_and_lookalike_paths_are_ungoverned() {
    let cases = [
        "/",
        "/org/v2/environments",
        "/org/v2/environments?page_size=10&_method=DELETE",
        "/cmk/v2/clusters/lkc-9x8y7z",
        "/iam/v2/api-keys-archive",
        "/iam/v2/api-keys-archive/ABC",
        "/iam/v2/api-keysX",
        "/iam/v2/service-accounts",
        "/iam/v2/service-accounts/sa-1a2b3c",
        "/iam/v2/role-bindings?crn_pattern=crn%3A%2F%2Fconfluent.cloud",
        "/iam/v2",
        "/iam/v2/",
        "/iam/v2/api-key",
        "/iam/v3/api-keys",
        "/foo%2Fbar",
        "/a/./b",
        "/a//b",
        "*",
        "https://api.confluent.cloud/org/v2/environments",
    ];
    for path in cases {
        assert_eq!(classify_get(path), Ok(Route::Ungoverned), "{path}");
        assert_eq!(
            classify(&Method::DELETE, &uri(path)),
            Ok(Route::Ungoverned),
            "{path}"
        );
    }
}

#[test]
fn canonical_governed_requests_classify_to_their_action() {
    let cases = [
        (Method::POST, "/iam/v2/api-keys", Action::CreateApiKey, None),
        (Method::GET, "/iam/v2/api-keys", Action::ListApiKeys, None),
        (
            Method::GET,
            "/iam/v2/api-keys?spec.owner=sa-1a2b3c&spec.resource=lkc-9x8y7z&page_size=50&page_token=opaque%2Btoken",
            Action::ListApiKeys,
            None,
        ),
        (
            Method::GET,
            "/iam/v2/api-keys/ABCD1234567890AB",
            Action::GetApiKey,
            Some("ABCD1234567890AB"),
        ),
        (
            Method::PATCH,
            "/iam/v2/api-keys/ABCD1234567890AB",
            Action::UpdateApiKey,
            Some("ABCD1234567890AB"),
        ),
        (
            Method::DELETE,
            "/iam/v2/api-keys/a-b.c_d~e",
            Action::DeleteApiKey,
            Some("a-b.c_d~e"),
        ),
        (
            Method::POST,
            "https://api.confluent.cloud/iam/v2/api-keys",
            Action::CreateApiKey,
            None,
        ),
    ];
    for (method, path, action, key_id) in cases {
        assert_eq!(
            classify(&method, &uri(path)),
            Ok(Route::Governed(GovernedRoute {
                action,
                key_id: key_id.map(str::to_owned),
            })),
            "{method} {path}"
        );
    }
}

#[test]
fn non_canonical_governed_paths_are_400() {
    let long_id = format!("/iam/v2/api-keys/{}", "A".repeat(256));
    let cases: Vec<(&str, &str)> = vec![
        ("/IAM/v2/api-keys", "letter case"),
        ("/iam/v2/API-KEYS", "letter case"),
        ("/Iam/V2/Api-Keys/ABC", "letter case"),
        ("/iam/v2/api-keys/", "trailing `/`"),
        ("/iam/v2/api-keys/ABC/", "trailing `/`"),
        ("/iam/v2/./api-keys", "dot segment"),
        ("/iam/v2/api-keys/.", "dot segment"),
        ("/iam/v2/api-keys/..", "dot segment"),
        ("/x/../iam/v2/api-keys", "dot segment"),
        ("/../iam/v2/api-keys", "dot segment"),
        ("/iam//v2/api-keys", "empty segment"),
        ("//iam/v2/api-keys", "empty segment"),
        ("/a//../iam/v2/api-keys", "empty segment"),
        ("/iam/v2//../api-keys", "empty segment"),
        ("/iam/v2/api-keys%2F..", "percent-encod"),
        ("/iam/v2/api-keys/%2e%2e", "percent-encod"),
        ("/iam/v2/api-keys/X%2FY", "percent-encod"),
        ("/iam/v2/%61pi-keys", "percent-encod"),
        ("/iam%2Fv2/api-keys", "percent-encod"),
        ("/iam/v2/api-keys/%252e%252e", "percent-encod"),
        ("/iam/v2/api%252Dkeys", "percent-encod"),
        ("/iam/v2/api-keys%00.json", "encoded whitespace or control"),
        ("/iam/v2/api-keys%3Fx=1", "encoded `?`"),
        ("/iam/v2/api-keys/ABC%20", "encoded whitespace"),
        ("/iam/v2/api-keys\\ABC", "backslash"),
        ("/iam\\v2\\api-keys", "backslash"),
        ("/iam/v2/api-keys%5CABC", "percent-encod"),
        ("/iam/v2/api-keys;x=1", "`;` parameters"),
        ("/iam/v2/api-keys/ABC;v=1", "`;` parameters"),
        ("/iam;x/v2/api-keys", "`;` parameters"),
        ("/iam/v2/api-keys/..;/x", "`;` parameters"),
        ("/iam/v2/api-keys/ABC/extra", "unexpected segment"),
        ("/iam/v2/api-keys/ABC:secret", "characters other than"),
        ("/iam/v2/api-keys/ABC@x", "characters other than"),
        ("/iam/v2/api-keys/\u{c4}BC", "characters other than"),
        // Not aimed at the api-keys endpoints, but under `/iam/` and not plain.
        ("/iam/v2/api-keys-archive;x=1", "`;` parameters"),
        ("/iam/v2/users/u-1/../service-accounts", "dot segment"),
        ("/iam/v2/role-bindings/rb-1:x", "characters other than"),
        // The issue's examples: overlong forms and encoded whitespace.
        ("/iam/v2%C0%AFapi-keys", "overlong UTF-8"),
        ("/iam/v2%E0%80%AFapi-keys", "overlong UTF-8"),
        ("/iam/v2/x/%C0%AE%C0%AE/api-keys", "overlong UTF-8"),
        ("/iam/v2/api-keys%20", "encoded whitespace"),
        ("/iam/v2/api-keys%09", "encoded whitespace"),
        (long_id.as_str(), "longer than 255"),
    ];
    for (path, reason) in cases {
        for method in [Method::GET, Method::POST, Method::PUT] {
            let error = classify(&method, &uri(path)).expect_err(path);
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{path}");
            assert_eq!(error.code(), "non_canonical_path", "{path}");
            assert!(
                matches!(&error, GuardError::NonCanonicalPath { reason: r, .. } if r.contains(reason)),
                "{path}: {error}"
            );
        }
    }
}

#[test]
fn non_canonical_path_message_names_the_path_and_the_rule() {
    let error = classify_get("/iam/v2/api-keys/").unwrap_err();
    assert_eq!(
        error.to_string(),
        "path `/iam/v2/api-keys/` is not canonical: trailing `/`; send `/iam/v2/api-keys`"
    );
    assert_eq!(error.pointer(), None);
    let error = classify_get("/iam/v2/api-keys%20").unwrap_err();
    assert_eq!(
        error.to_string(),
        "path `/iam/v2/api-keys%20` is not canonical: encoded whitespace or control character; \
         send `/iam/v2/api-keys`"
    );
    let error = classify_get("/iam/v2/api-keys/a%2Cb").unwrap_err();
    assert_eq!(
        error.to_string(),
        "path `/iam/v2/api-keys/a%2Cb` is not canonical: percent-encoded characters; paths \
         under `/iam/` must be plain: letters, digits, `-._~` and single `/` separators"
    );
}

#[test]
fn long_non_canonical_path_is_cut_in_the_message() {
    let path = format!("/iam/v2/api-keys/{}/x", "B".repeat(5000));
    let error = classify_get(&path).unwrap_err();
    let message = error.to_string();
    assert!(message.len() < 600, "{} bytes", message.len());
    assert!(message.contains("…`"));
}

#[test]
fn fragment_in_raw_target_is_400_on_governed_paths() {
    for target in [
        "/iam/v2/api-keys#x",
        "/iam/v2/api-keys/ABC#",
        "/iam/v2/api-keys?page_size=5#frag",
    ] {
        let error = classify_target(&Method::GET, target).expect_err(target);
        assert!(
            matches!(&error, GuardError::NonCanonicalPath { reason, .. } if reason.contains("fragment")),
            "{target}: {error}"
        );
    }
    assert_eq!(
        classify_target(&Method::GET, "/org/v2/environments#x"),
        Ok(Route::Ungoverned)
    );
    assert_eq!(
        classify_target(&Method::GET, "/iam/v2/api-keys/ABC"),
        Ok(Route::Governed(GovernedRoute {
            action: Action::GetApiKey,
            key_id: Some("ABC".to_owned()),
        }))
    );
    assert_eq!(
        classify_target(&Method::GET, "not a target"),
        Err(GuardError::InvalidTarget)
    );
}

#[test]
fn parsed_uri_has_no_fragment_so_guard_and_upstream_see_the_same_path() {
    // hyper parses request targets with `http::Uri`, which drops `#…`: what `classify` sees is
    // exactly what the forwarder sends. If `http` ever kept fragments, `classify` would see the
    // `#` in the path and refuse it as non-canonical.
    let parsed = uri("/iam/v2/api-keys/ABC#/../../x");
    assert_eq!(
        parsed.path_and_query().map(|pq| pq.as_str()),
        Some("/iam/v2/api-keys/ABC")
    );
}

#[test]
fn other_methods_on_governed_paths_are_405_with_allow() {
    let cases = [
        (Method::PUT, "/iam/v2/api-keys", "GET, POST"),
        (Method::DELETE, "/iam/v2/api-keys", "GET, POST"),
        (Method::PATCH, "/iam/v2/api-keys", "GET, POST"),
        (Method::HEAD, "/iam/v2/api-keys", "GET, POST"),
        (Method::OPTIONS, "/iam/v2/api-keys", "GET, POST"),
        (Method::POST, "/iam/v2/api-keys/ABC", "GET, PATCH, DELETE"),
        (Method::PUT, "/iam/v2/api-keys/ABC", "GET, PATCH, DELETE"),
        (
            Method::from_bytes(b"get").unwrap(),
            "/iam/v2/api-keys/ABC",
            "GET, PATCH, DELETE",
        ),
    ];
    for (method, path, allow) in cases {
        let error = classify(&method, &uri(path)).expect_err(path);
        assert_eq!(
            error.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(error.code(), "method_not_allowed");
        assert_eq!(error.allow(), Some(allow), "{method} {path}");
        assert!(error.to_string().contains(method.as_str()));
    }
}

#[test]
fn malformed_query_on_governed_route_is_400() {
    for path in [
        "/iam/v2/api-keys?page_token=%zz",
        "/iam/v2/api-keys?page_token=abc%4",
        "/iam/v2/api-keys/ABC?x=%",
    ] {
        let error = classify_get(path).expect_err(path);
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error.code(), "invalid_query", "{path}");
    }
    // The same query on an ungoverned path is not the guard's business.
    assert_eq!(
        classify_get("/org/v2/environments?x=%zz"),
        Ok(Route::Ungoverned)
    );
}

#[test]
fn method_override_query_parameter_is_400() {
    for path in [
        "/iam/v2/api-keys?_method=DELETE",
        "/iam/v2/api-keys?page_size=5&_method=POST",
        "/iam/v2/api-keys?_method",
        "/iam/v2/api-keys?%5Fmethod=DELETE",
        "/iam/v2/api-keys?%255Fmethod=DELETE",
        "/iam/v2/api-keys?_METHOD=DELETE",
        "/iam/v2/api-keys?a=1;_method=DELETE",
        "/iam/v2/api-keys/ABC?X-HTTP-Method-Override=DELETE",
    ] {
        let error = classify_get(path).expect_err(path);
        assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(error.code(), "method_override", "{path}");
    }
    assert!(classify_get("/iam/v2/api-keys?my_method=x").is_ok());
}

// === headers ===

#[test]
fn second_authorization_header_is_400_and_not_quoted() {
    let map = headers(&[
        ("authorization", "Basic QUJDOmNmbHRBQUFB"),
        ("authorization", "Bearer eyJhbGciOi"),
    ]);
    let error = check_headers(&Method::GET, &map).unwrap_err();
    assert_eq!(error, GuardError::DuplicateAuthorization);
    assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    let text = format!("{error} {error:?}");
    assert!(!text.contains("QUJD") && !text.contains("eyJ"), "{text}");
    assert!(check_headers(&Method::GET, &headers(&[("authorization", "Basic QUJD")])).is_ok());
}

#[test]
fn method_and_path_override_headers_are_400() {
    for name in [
        "x-http-method-override",
        "X-HTTP-Method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
    ] {
        let map = headers(&[(name, "DELETE")]);
        let error = check_headers(&Method::GET, &map).expect_err(name);
        assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{name}");
        assert_eq!(error.code(), "method_override", "{name}");
    }
}

#[test]
fn ambiguous_framing_is_400() {
    let json = ("content-type", "application/json");
    let cases: [&[(&str, &str)]; 6] = [
        &[
            json,
            ("content-length", "10"),
            ("transfer-encoding", "chunked"),
        ],
        &[json, ("content-length", "10"), ("content-length", "10")],
        &[json, ("content-length", "10, 10")],
        &[json, ("content-length", "+10")],
        &[json, ("content-length", "99999999999999999999")],
        &[json, ("transfer-encoding", "gzip, chunked")],
    ];
    for case in cases {
        let error = check_headers(&Method::POST, &headers(case)).expect_err("framing");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{case:?}");
        assert_eq!(error.code(), "ambiguous_framing", "{case:?}");
    }
    let chunked = headers(&[json, ("transfer-encoding", "chunked")]);
    assert!(check_headers(&Method::POST, &chunked).is_ok());
}

#[test]
fn json_content_types_are_accepted() {
    for value in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        "application/json; charset=\"utf-8\"",
        "application/json ;\tcharset=Utf-8",
    ] {
        for method in [Method::POST, Method::PATCH] {
            let map = headers(&[("content-type", value), ("content-length", "2")]);
            assert_eq!(check_headers(&method, &map), Ok(()), "{value}");
        }
    }
}

#[test]
fn other_content_types_are_415() {
    let cases: [&[(&str, &str)]; 12] = [
        &[],
        &[("content-type", "text/plain")],
        &[("content-type", "application/x-www-form-urlencoded")],
        &[("content-type", "application/json-patch+json")],
        &[("content-type", "application/jsonx")],
        &[("content-type", "application/json; charset=iso-8859-1")],
        &[("content-type", "application/json; charset=utf-16")],
        &[("content-type", "application/json; boundary=x")],
        &[("content-type", "application/json;")],
        &[("content-type", "application/json; charset = utf-8")],
        &[(
            "content-type",
            "application/json; charset=utf-8; charset=utf-8",
        )],
        &[
            ("content-type", "application/json"),
            ("content-type", "application/json"),
        ],
    ];
    for case in cases {
        for method in [Method::POST, Method::PATCH] {
            let error = check_headers(&method, &headers(case)).expect_err("content type");
            assert_eq!(
                error.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{case:?}"
            );
            assert_eq!(error.code(), "unsupported_media_type");
        }
    }
}

#[test]
fn content_encoding_other_than_identity_is_415() {
    let json = ("content-type", "application/json");
    for value in ["gzip", "identity, gzip", "br", ""] {
        let error = check_headers(
            &Method::POST,
            &headers(&[json, ("content-encoding", value)]),
        )
        .expect_err(value);
        assert_eq!(
            error.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{value}"
        );
    }
    let identity = headers(&[json, ("content-encoding", "Identity")]);
    assert_eq!(check_headers(&Method::POST, &identity), Ok(()));
}

#[test]
fn bodyless_requests_need_no_content_type_but_announced_bodies_do() {
    assert_eq!(check_headers(&Method::GET, &HeaderMap::new()), Ok(()));
    assert_eq!(
        check_headers(&Method::DELETE, &headers(&[("content-length", "0")])),
        Ok(())
    );
    for announced in [("content-length", "12"), ("transfer-encoding", "chunked")] {
        let error = check_headers(&Method::GET, &headers(&[announced])).unwrap_err();
        assert_eq!(
            error.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{announced:?}"
        );
    }
    let error = check_headers(&Method::POST, &HeaderMap::new()).unwrap_err();
    assert_eq!(error.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[test]
fn declared_content_length_reads_one_valid_value() {
    assert_eq!(
        declared_content_length(&headers(&[("content-length", "42")])),
        Some(42)
    );
    assert_eq!(declared_content_length(&HeaderMap::new()), None);
    assert_eq!(
        declared_content_length(&headers(&[("content-length", "4x")])),
        None
    );
}

// === body ===

/// A chunked body of `frames` frames of `size` bytes that counts how many frames were pulled.
fn counted_body(
    frames: usize,
    size: usize,
) -> (
    impl http_body::Body<Data = Bytes, Error = Infallible>,
    Rc<Cell<usize>>,
) {
    let pulled = Rc::new(Cell::new(0));
    let counter = Rc::clone(&pulled);
    let chunk = Bytes::from(vec![b' '; size]);
    let stream = futures_util::stream::iter((0..frames).map(move |_| {
        counter.set(counter.get() + 1);
        Ok(Frame::data(chunk.clone()))
    }));
    (StreamBody::new(stream), pulled)
}

#[tokio::test]
async fn single_frame_body_is_returned_without_copying() {
    let original = Bytes::from_static(br#"{"spec":{}}"#);
    let read = read_body(Full::new(original.clone()), Some(11), 1024)
        .await
        .unwrap();
    assert_eq!(read, original);
    assert_eq!(read.as_ptr(), original.as_ptr());
}

#[tokio::test]
async fn multi_frame_body_is_concatenated_up_to_the_limit() {
    let (body, pulled) = counted_body(64, 1024);
    let read = read_body(body, None, 64 * 1024).await.unwrap();
    assert_eq!(read.len(), 64 * 1024);
    assert_eq!(pulled.get(), 64);
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413_without_reading_everything() {
    let (body, pulled) = counted_body(10_000, 1024);
    let error = read_body(body, None, 64 * 1024).await.unwrap_err();
    assert_eq!(error, GuardError::PayloadTooLarge { limit: 64 * 1024 });
    assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error.code(), "payload_too_large");
    assert_eq!(pulled.get(), 65, "stops at the first frame past the limit");
}

#[tokio::test]
async fn announced_length_over_the_limit_is_413_before_reading() {
    let (body, pulled) = counted_body(10, 1024);
    let error = read_body(body, Some(1_000_000), 64 * 1024)
        .await
        .unwrap_err();
    assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(pulled.get(), 0);

    // The body's own size hint (hyper sets it from Content-Length) counts too.
    let error = read_body(Full::new(Bytes::from(vec![b' '; 2048])), None, 1024)
        .await
        .unwrap_err();
    assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn body_read_error_is_400() {
    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
        Ok(Frame::data(Bytes::from_static(b"{"))),
        Err(std::io::Error::other("connection reset")),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let error = read_body(body, None, 1024).await.unwrap_err();
    assert_eq!(error, GuardError::BodyRead);
    assert_eq!(error.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn trailers_are_400() {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(b"{}"))),
        Ok(Frame::trailers(headers(&[(
            "x-http-method-override",
            "DELETE",
        )]))),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    assert_eq!(read_body(body, None, 1024).await, Err(GuardError::Trailers));
}

#[tokio::test]
async fn invalid_utf8_body_is_400() {
    let body = Full::new(Bytes::from_static(b"{\"spec\":\"\xff\"}"));
    let error = read_body(body, None, 1024).await.unwrap_err();
    assert_eq!(error, GuardError::InvalidUtf8 { offset: 9 });
    assert_eq!(error.status(), StatusCode::BAD_REQUEST);
}

// === strict JSON ===

#[test]
fn duplicate_keys_are_400_at_any_depth() {
    let cases: [(&str, Option<&str>); 6] = [
        (r#"{"spec":{},"spec":{}}"#, Some("/spec")),
        (
            r#"{"spec":{"owner":{"id":"sa-1","id":"sa-2"}}}"#,
            Some("/spec/owner/id"),
        ),
        (
            r#"{"spec":{"owner":{"id":"sa-1"},"resources":[{"id":"a"},{"id":"b","id":"c"}]}}"#,
            Some("/spec/resources/1/id"),
        ),
        (r#"{"spec":{"\u0073pec":1,"spec":2}}"#, Some("/spec/spec")),
        (r#"{"x":{"y":[{"z":1,"z":2}]}}"#, None),
        (r#"[{"a":1},{"b":1,"b":1}]"#, Some("/1")),
    ];
    for (body, pointer) in cases {
        let error = parse_create(body.as_bytes()).expect_err(body);
        assert!(
            matches!(&error, GuardError::DuplicateKey { kind, .. } if kind.contains("duplicate")),
            "{body}: {error:?}"
        );
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error.code(), "duplicate_key");
        assert_eq!(error.pointer(), pointer, "{body}");
    }
}

#[test]
fn keys_differing_only_in_case_are_400_at_any_depth() {
    let cases: [(&str, Option<&str>); 6] = [
        (r#"{"spec":{"owner":{"id":"sa-1"}},"Spec":{}}"#, Some("/spec")),
        (
            r#"{"spec":{"owner":{"id":"sa-1","ID":"sa-2"}}}"#,
            Some("/spec/owner/id"),
        ),
        (
            r#"{"spec":{"owner":{"id":"sa-1"},"resource":{"id":"lkc-1"},"RESOURCE":null}}"#,
            Some("/spec/resource"),
        ),
        // KELVIN SIGN and LONG S fold to `k` and `s` in Go's encoding/json.
        (
            "{\"spec\":{\"owner\":{\"id\":\"sa-1\",\"kind\":\"a\",\"\u{212A}ind\":\"b\"}}}",
            Some("/spec/owner/kind"),
        ),
        (
            "{\"spec\":{\"owner\":{\"id\":\"sa-1\"},\"resource\":null,\"re\u{17F}ource\":{\"id\":\"lkc-1\"}}}",
            Some("/spec/resource"),
        ),
        (r#"{"x":{"y":[{"aB":1,"Ab":2}]}}"#, None),
    ];
    for (body, pointer) in cases {
        let error = parse_create(body.as_bytes()).expect_err(body);
        assert!(
            matches!(&error, GuardError::DuplicateKey { kind, .. } if kind.contains("letter case")),
            "{body}: {error:?}"
        );
        assert_eq!(error.code(), "duplicate_key");
        assert_eq!(error.pointer(), pointer, "{body}");
    }
}

#[test]
fn duplicates_are_found_in_objects_with_many_members_too() {
    // Past a handful of members the check switches from pairwise comparison to an index of
    // folded names: collisions with members from before and after the switch are both found.
    let members = |n: usize| (0..n).map(|i| format!(r#""m{i}":{i}"#)).collect::<Vec<_>>();
    let cases = [
        (members(40).join(",") + r#","m3":0"#, "a duplicate key"),
        (
            members(40).join(",") + r#","M3":0"#,
            "keys that differ only in letter case",
        ),
        (members(40).join(",") + r#","m39":0"#, "a duplicate key"),
        (
            members(40).join(",") + r#","M39":0"#,
            "keys that differ only in letter case",
        ),
        (members(17).join(",") + r#","m16":0"#, "a duplicate key"),
        (members(16).join(",") + r#","m15":0"#, "a duplicate key"),
        (
            members(15).join(",") + r#","M14":0"#,
            "keys that differ only in letter case",
        ),
    ];
    for (inner, kind) in cases {
        let body = format!(r#"{{"x":{{{inner}}}}}"#);
        let error = parse_create(body.as_bytes()).expect_err(&body);
        assert!(
            matches!(&error, GuardError::DuplicateKey { kind: k, .. } if *k == kind),
            "{body}: {error:?}"
        );
    }
    // Many distinct members are no violation (the body then fails on its schema instead).
    let body = format!(r#"{{"x":{{{}}}}}"#, members(200).join(","));
    let error = parse_create(body.as_bytes()).expect_err(&body);
    assert!(
        !matches!(error, GuardError::DuplicateKey { .. }),
        "{error:?}"
    );
}

#[test]
fn schema_member_in_another_case_is_400() {
    // Alone (no duplicate), `"Resource"` would be a Kafka key to Go's case-insensitive decoder
    // and a Cloud key to a case-sensitive reading: refuse instead of guessing.
    let cases = [
        (
            r#"{"spec":{"owner":{"id":"sa-1"},"Resource":{"id":"lkc-1"}}}"#,
            "/spec/resource",
        ),
        (
            "{\"spec\":{\"owner\":{\"id\":\"sa-1\"},\"re\u{17F}ource\":{\"id\":\"lkc-1\"}}}",
            "/spec/resource",
        ),
        (r#"{"SPEC":{"owner":{"id":"sa-1"}}}"#, "/spec"),
        (r#"{"spec":{"Owner":{"id":"sa-1"}}}"#, "/spec/owner"),
        (r#"{"spec":{"owner":{"Id":"sa-1"}}}"#, "/spec/owner/id"),
        (
            r#"{"spec":{"owner":{"id":"sa-1"},"resource":{"id":"aws.us-east-1","Environment":"env-1"}}}"#,
            "/spec/resource/environment",
        ),
        (
            r#"{"spec":{"owner":{"id":"sa-1"},"Display_Name":"x"}}"#,
            "/spec/display_name",
        ),
    ];
    for (body, pointer) in cases {
        let error = parse_create(body.as_bytes()).expect_err(body);
        assert_eq!(error.code(), "non_canonical_member", "{body}");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error.pointer(), Some(pointer), "{body}");
    }
}

#[test]
fn malformed_json_is_400_and_never_read_as_empty() {
    let cases = [
        "",
        " ",
        "{",
        r#"{"spec":{"owner":{"id":"sa-1"}}} x"#,
        r#"{"spec":{"owner":{"id":"sa-1"}}}{}"#,
        r#"{"spec":{"owner":{"id":"sa-1"}},}"#,
        "\u{feff}{\"spec\":{\"owner\":{\"id\":\"sa-1\"}}}",
        r#"{"spec":{"owner":{"id":"\ud800"}}}"#,
        r#"{"spec":{"owner":{"id":'sa-1'}}}"#,
        r#"{"spec":{"owner":{"id":"sa-1"}}} // comment"#,
        r#"{"spec":NaN}"#,
        r#"{"spec":1e999}"#,
    ];
    for body in cases {
        let error = parse_create(body.as_bytes()).expect_err(body);
        assert_eq!(error.code(), "invalid_json", "{body:?}: {error:?}");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(
        parse_create(deep.as_bytes()).unwrap_err().code(),
        "invalid_json"
    );
}

#[test]
fn json_errors_carry_position_but_never_body_content() {
    let cases = [
        format!(r#"{{"spec":{{"secret":"{SECRET}""#),
        format!(r#"{{"spec":{{"secret":{SECRET}}}}}"#),
        format!(r#"{{"spec":{{"owner":{{"id":"sa-1"}}}},"{SECRET}":1,"{SECRET}":2}}"#),
        format!(r#"{{"{SECRET}":{{"a":1,"A":2}}}}"#),
        format!(r#"{{"spec":{{"owner":{{"id":"sa-1"}},"secret":"{SECRET}","display_name":7}}}}"#),
        format!(r#"{{"spec":{{"owner":{{"id":"{SECRET}\x"}}}}}}"#),
        format!("{{\"spec\":{{\"owner\":{{\"id\":\"{SECRET}\u{1}\"}}}}}}"),
        format!(r#"{{"spec":{{"owner":{{"id":"sa-1"}}}}}} {SECRET}"#),
        format!(r#"["{SECRET}""#),
    ];
    for body in &cases {
        let error = parse_create(body.as_bytes()).expect_err(body);
        assert_no_secret(&error);
        let error = parse_update(body.as_bytes()).expect_err(body);
        assert_no_secret(&error);
    }
    let error = parse_create(cases[0].as_bytes()).unwrap_err();
    assert!(
        matches!(error, GuardError::InvalidJson { line: 1, column, .. } if column > 0),
        "{error:?}"
    );
    let error = parse_create(cases[2].as_bytes()).unwrap_err();
    assert!(
        matches!(&error, GuardError::DuplicateKey { line: 1, column, pointer: None, .. } if *column > 0),
        "{error:?}"
    );
}

// === create bodies ===

fn create(
    owner: &str,
    resource: Option<(&str, Option<&str>)>,
    name: &str,
    description: &str,
) -> CreateSpec {
    CreateSpec {
        owner_id: owner.to_owned(),
        resource: resource.map(|(id, environment)| ResourceSpec {
            id: id.to_owned(),
            environment: environment.map(str::to_owned),
        }),
        display_name: name.to_owned(),
        description: description.to_owned(),
    }
}

#[test]
fn real_client_create_bodies_are_accepted() {
    let cases = [
        (
            "reference §2.1 example",
            r#"{"spec":{"display_name":"orders-producer","description":"Kafka access for the orders service","owner":{"id":"sa-1a2b3c"},"resource":{"id":"lkc-9x8y7z"}}}"#,
            create(
                "sa-1a2b3c",
                Some(("lkc-9x8y7z", None)),
                "orders-producer",
                "Kafka access for the orders service",
            ),
        ),
        (
            "Confluent CLI",
            r#"{"spec":{"description":"","owner":{"id":"sa-1a2b3c","related":"","resource_name":""},
                "resource":{"id":"lkc-9x8y7z","related":"","resource_name":""}}}"#,
            create("sa-1a2b3c", Some(("lkc-9x8y7z", None)), "", ""),
        ),
        (
            "Confluent CLI, Flink, own user",
            r#"{"spec":{"description":"","owner":{"id":"u-4k5l6m","related":"","resource_name":""},"resource":{"id":"aws.us-east-1","environment":"env-5q6w7e","related":"","resource_name":""}}}"#,
            create(
                "u-4k5l6m",
                Some(("aws.us-east-1", Some("env-5q6w7e"))),
                "",
                "",
            ),
        ),
        (
            "Confluent CLI, Global",
            r#"{"spec":{"description":"","owner":{"id":"sa-1a2b3c","related":"","resource_name":""},"resource":{"id":"global","related":"","resource_name":""}}}"#,
            create("sa-1a2b3c", Some(("global", None)), "", ""),
        ),
        (
            "Terraform",
            r#"{"spec":{"description":"Kafka access","display_name":"orders",
                "owner":{"id":"sa-1a2b3c","kind":"ServiceAccount","related":"","resource_name":""},
                "resource":{"id":"lkc-9x8y7z","kind":"Cluster","related":"","resource_name":""}}}"#,
            create(
                "sa-1a2b3c",
                Some(("lkc-9x8y7z", None)),
                "orders",
                "Kafka access",
            ),
        ),
        (
            "Terraform, Cloud key (no resource)",
            r#"{"spec":{"description":"cloud key","display_name":"ops",
                "owner":{"id":"sa-1a2b3c","kind":"ServiceAccount","related":"","resource_name":""}}}"#,
            create("sa-1a2b3c", None, "ops", "cloud key"),
        ),
        (
            "Terraform, Flink",
            r#"{"spec":{"description":"","display_name":"flink",
                "owner":{"id":"sa-1a2b3c","kind":"ServiceAccount","related":"","resource_name":""},
                "resource":{"id":"aws.us-east-1","environment":"env-5q6w7e","api_version":"fcpm/v2","kind":"Region","related":"","resource_name":""}}}"#,
            create(
                "sa-1a2b3c",
                Some(("aws.us-east-1", Some("env-5q6w7e"))),
                "flink",
                "",
            ),
        ),
        (
            "Terraform, Global",
            r#"{"spec":{"description":"","display_name":"g","owner":{"id":"sa-1a2b3c","kind":"ServiceAccount","related":"","resource_name":""},"resource":{"id":"global","api_version":"global/v1","kind":"Global","related":"","resource_name":""}}}"#,
            create("sa-1a2b3c", Some(("global", None)), "g", ""),
        ),
        (
            "minimal Python",
            r#"{"spec": {"owner": {"id": "sa-1a2b3c"}, "resource": {"id": "lkc-9x8y7z"}}}"#,
            create("sa-1a2b3c", Some(("lkc-9x8y7z", None)), "", ""),
        ),
        (
            "minimal Python, Flink",
            r#"{"spec": {"owner": {"id": "sa-1a2b3c"}, "resource": {"id": "gcp.us-central1", "environment": "env-5q6w7e"}}}"#,
            create(
                "sa-1a2b3c",
                Some(("gcp.us-central1", Some("env-5q6w7e"))),
                "",
                "",
            ),
        ),
        (
            "legacy resources[] beside resource",
            r#"{"spec":{"owner":{"id":"sa-1a2b3c"},"resource":{"id":"lkc-9x8y7z"},
                "resources":[{"id":"lkc-9x8y7z","related":"","resource_name":""}]}}"#,
            create("sa-1a2b3c", Some(("lkc-9x8y7z", None)), "", ""),
        ),
        (
            "empty legacy resources[] and no resource",
            r#"{"spec":{"owner":{"id":"sa-1a2b3c"},"resources":[]}}"#,
            create("sa-1a2b3c", None, "", ""),
        ),
        (
            "resource null",
            r#"{"spec":{"owner":{"id":"u-4k5l6m"},"resource":null,"display_name":null}}"#,
            create("u-4k5l6m", None, "", ""),
        ),
        (
            "empty environment, unknown and read-only members",
            r#"{"api_version":"iam/v2","kind":"ApiKey","metadata":{},"extra":[1,2.5,true,null],
                "spec":{"owner":{"id":"sa-1","api_version":"iam/v2"},"resource":{"id":"lsrc-1","environment":""},"secret":"","future":{"x":1}}}"#,
            create("sa-1", Some(("lsrc-1", None)), "", ""),
        ),
    ];
    for (client, body, expected) in cases {
        assert_eq!(
            parse_create(body.as_bytes()),
            Ok(expected.clone()),
            "{client}"
        );
        assert_eq!(
            parse_body(Action::CreateApiKey, body.as_bytes()),
            Ok(GovernedBody::Create(expected)),
            "{client}"
        );
    }
}

#[test]
fn invalid_create_bodies_are_400_with_a_pointer() {
    let cases = [
        (r#"{}"#, "/spec", "is required"),
        (r#"{"spec":null}"#, "/spec", "is required"),
        (r#"{"spec":[]}"#, "/spec", "must be an object"),
        (r#"{"spec":{}}"#, "/spec/owner", "is required"),
        (
            r#"{"spec":{"owner":"sa-1"}}"#,
            "/spec/owner",
            "must be an object",
        ),
        (r#"{"spec":{"owner":{}}}"#, "/spec/owner/id", "is required"),
        (
            r#"{"spec":{"owner":{"id":null}}}"#,
            "/spec/owner/id",
            "is required",
        ),
        (
            r#"{"spec":{"owner":{"id":""}}}"#,
            "/spec/owner/id",
            "must not be empty",
        ),
        (
            r#"{"spec":{"owner":{"id":5}}}"#,
            "/spec/owner/id",
            "must be a string",
        ),
        (
            r#"{"spec":{"owner":{"id":"sa-1"},"resource":"lkc-1"}}"#,
            "/spec/resource",
            "must be an object",
        ),
        (
            r#"{"spec":{"owner":{"id":"sa-1"},"resource":{}}}"#,
            "/spec/resource/id",
            "is required",
        ),
        (
            r#"{"spec":{"owner":{"id":"sa-1"},"resource":{"id":""}}}"#,
            "/spec/resource/id",
            "must not be empty",
        ),
        (
            r#"{"spec":{"owner":{"id":"sa-1"},"resource":{"id":["lkc-1"]}}}"#,
            "/spec/resource/id",
            "must be a string",
        ),
        (
            r#"{"spec":{"owner":{"id":"sa-1"},"resource":{"id":"aws.us-east-1","environment":7}}}"#,
            "/spec/resource/environment",
            "must be a string",
        ),
        (
            r#"{"spec":{"owner":{"id":"sa-1"},"display_name":5}}"#,
            "/spec/display_name",
            "must be a string",
        ),
        (
            r#"{"spec":{"owner":{"id":"sa-1"},"description":{}}}"#,
            "/spec/description",
            "must be a string",
        ),
        (
            r#"{"spec":{"owner":{"id":"sa-1"},"resources":[{"id":"lkc-1"}]}}"#,
            "/spec/resources",
            "only accepted together",
        ),
        (
            r#"{"spec":{"owner":{"id":"sa-1"},"resource":null,"resources":[{"id":"lkc-1"}]}}"#,
            "/spec/resources",
            "only accepted together",
        ),
        (
            r#"{"spec":{"owner":{"id":"sa-1"},"resource":{"id":"lkc-1"},"resources":{}}}"#,
            "/spec/resources",
            "must be an array",
        ),
    ];
    for (body, pointer, reason) in cases {
        let error = parse_create(body.as_bytes()).expect_err(body);
        assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error.code(), "invalid_field", "{body}");
        assert_eq!(error.pointer(), Some(pointer), "{body}");
        assert!(error.to_string().contains(reason), "{body}: {error}");
    }
    for body in ["[]", "null", r#""spec""#, "42"] {
        assert_eq!(
            parse_create(body.as_bytes()),
            Err(GuardError::NotAnObject),
            "{body}"
        );
    }
}

// === update bodies ===

#[test]
fn update_bodies_set_only_name_and_description() {
    let cases = [
        (
            r#"{"spec":{"display_name":"renamed"}}"#,
            UpdateSpec {
                display_name: Some("renamed".to_owned()),
                description: None,
            },
        ),
        (
            r#"{"spec":{"display_name":"n","description":"d","future":1}}"#,
            UpdateSpec {
                display_name: Some("n".to_owned()),
                description: Some("d".to_owned()),
            },
        ),
        (r#"{"spec":{"description":null}}"#, UpdateSpec::default()),
        (r#"{}"#, UpdateSpec::default()),
    ];
    for (body, expected) in cases {
        assert_eq!(
            parse_update(body.as_bytes()),
            Ok(expected.clone()),
            "{body}"
        );
        assert_eq!(
            parse_body(Action::UpdateApiKey, body.as_bytes()),
            Ok(GovernedBody::Update(expected)),
            "{body}"
        );
    }
}

#[test]
fn update_touching_immutable_members_is_400_with_pointer() {
    let cases = [
        (r#"{"spec":{"owner":{"id":"sa-2"}}}"#, "/spec/owner"),
        (
            r#"{"spec":{"display_name":"x","resource":{"id":"lkc-2"}}}"#,
            "/spec/resource",
        ),
        (r#"{"spec":{"resource":null}}"#, "/spec/resource"),
        (r#"{"spec":{"resources":[]}}"#, "/spec/resources"),
        (r#"{"spec":{"secret":"x"}}"#, "/spec/secret"),
    ];
    for (body, pointer) in cases {
        let error = parse_update(body.as_bytes()).expect_err(body);
        assert_eq!(error.code(), "immutable_field", "{body}");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error.pointer(), Some(pointer), "{body}");
    }
    let error = parse_update(br#"{"spec":{"Owner":{"id":"sa-2"}}}"#).unwrap_err();
    assert_eq!(error.code(), "non_canonical_member");
    let error = parse_update(br#"{"spec":{"display_name":1}}"#).unwrap_err();
    assert_eq!(error.pointer(), Some("/spec/display_name"));
    assert_eq!(parse_update(b""), Err(parse_update(b"").unwrap_err()));
    assert_eq!(parse_update(b"").unwrap_err().code(), "invalid_json");
    assert_eq!(parse_update(b"[]"), Err(GuardError::NotAnObject));
}

// === bodies of reads and deletes ===

#[test]
fn get_and_delete_with_a_body_are_400() {
    for action in [Action::ListApiKeys, Action::GetApiKey, Action::DeleteApiKey] {
        assert_eq!(parse_body(action, b""), Ok(GovernedBody::Empty), "{action}");
        for body in [&b"{}"[..], b" ", b"x"] {
            let error = parse_body(action, body).unwrap_err();
            assert_eq!(error.code(), "unexpected_body", "{action}");
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        }
    }
}

// === error mapping ===

#[test]
fn every_error_maps_to_400_405_413_or_415() {
    let cases = [
        (GuardError::non_canonical("/x", "r", None), 400),
        (GuardError::InvalidTarget, 400),
        (GuardError::InvalidQuery { reason: "r" }, 400),
        (
            GuardError::Override {
                location: "header",
                name: "X-HTTP-Method",
            },
            400,
        ),
        (
            GuardError::MethodNotAllowed {
                method: Method::PUT,
                path: "/iam/v2/api-keys",
                allow: "GET, POST",
            },
            405,
        ),
        (GuardError::DuplicateAuthorization, 400),
        (GuardError::Framing { reason: "r" }, 400),
        (GuardError::UnsupportedMediaType { reason: "r" }, 415),
        (GuardError::UnsupportedContentEncoding, 415),
        (GuardError::PayloadTooLarge { limit: 1 }, 413),
        (GuardError::BodyRead, 400),
        (GuardError::Trailers, 400),
        (GuardError::InvalidUtf8 { offset: 0 }, 400),
        (
            GuardError::UnexpectedBody {
                method: Method::GET,
            },
            400,
        ),
        (
            GuardError::InvalidJson {
                category: "syntax error",
                line: 1,
                column: 1,
            },
            400,
        ),
        (
            GuardError::DuplicateKey {
                kind: "a duplicate key",
                pointer: None,
                line: 1,
                column: 1,
            },
            400,
        ),
        (GuardError::NotAnObject, 400),
        (
            GuardError::NonCanonicalMember {
                pointer: "/spec".to_owned(),
                expected: "spec",
            },
            400,
        ),
        (
            GuardError::InvalidField {
                pointer: "/spec",
                reason: "is required",
            },
            400,
        ),
        (
            GuardError::ImmutableField {
                pointer: "/spec/owner",
            },
            400,
        ),
    ];
    for (error, status) in cases {
        assert_eq!(error.status().as_u16(), status, "{error:?}");
        assert!(!error.code().is_empty());
        let detail = error.to_string();
        assert!(
            detail.starts_with(|c: char| !c.is_ascii_uppercase()) && !detail.ends_with('.'),
            "{detail}"
        );
    }
}
