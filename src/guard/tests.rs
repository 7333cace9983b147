use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};

use super::*;

pub(super) const SECRET: &str = "cfltAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

pub(super) fn uri(s: &str) -> Uri {
    s.parse().unwrap_or_else(|e| panic!("test uri {s:?}: {e}"))
}

pub(super) fn classify_get(path: &str) -> Result<Route, GuardError> {
    classify(&Method::GET, &uri(path))
}

pub(super) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

pub(super) fn assert_no_secret(error: &GuardError) {
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
