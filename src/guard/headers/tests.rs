//! Header checks of governed requests: framing, credentials, overrides, media types.

use http::{HeaderMap, Method, StatusCode};

use crate::guard::*;

use crate::guard::tests::*;

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
