//! Route classification: plain paths, canonical forms, the refusals and their messages.

use http::{Method, StatusCode};

use crate::guard::*;
use crate::model::Action;

use crate::guard::tests::*;
use crate::model::GovernedRoute;

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
        // The examples: overlong forms and encoded whitespace.
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
