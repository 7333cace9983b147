use http::HeaderValue;

use super::*;

fn basic(pair: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
    );
    h
}

#[test]
fn basic_credential_is_split_into_key_and_secret() {
    let headers = basic("ABCD1234567890AB:s3cr3t:with:colons");
    let mut scratch = String::new();
    let c = parse_basic(&headers, &mut scratch).unwrap();
    assert_eq!(c.key_id, "ABCD1234567890AB");
    assert_eq!(c.secret(), "s3cr3t:with:colons");
    assert!(!format!("{c:?}").contains("s3cr3t"));
}

#[test]
fn missing_header_is_missing() {
    let mut scratch = String::new();
    assert_eq!(
        parse_basic(&HeaderMap::new(), &mut scratch).unwrap_err(),
        IdentityError::Missing
    );
}

#[test]
fn bearer_is_refused_with_a_clear_reason() {
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_static("Bearer eyJhbGciOi.x.y"),
    );
    let mut scratch = String::new();
    let err = parse_basic(&h, &mut scratch).unwrap_err();
    assert_eq!(err, IdentityError::UnsupportedScheme("Bearer"));
    assert!(!err.to_string().contains("eyJ"));
}

#[test]
fn key_ids_that_could_change_the_lookup_path_are_malformed() {
    for pair in [
        "../x:s", "AB%2F:s", "AB/CD:s", ":s", "ABC:", "AB CD:s", "nocolon",
    ] {
        let mut scratch = String::new();
        let err = parse_basic(&basic(pair), &mut scratch).unwrap_err();
        assert!(
            matches!(err, IdentityError::Malformed(_)),
            "{pair}: {err:?}"
        );
    }
}

#[test]
fn non_base64_is_malformed_and_does_not_echo_input() {
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_static("Basic cflt!!!notbase64"),
    );
    let mut scratch = String::new();
    let err = parse_basic(&h, &mut scratch).unwrap_err();
    assert!(matches!(err, IdentityError::Malformed(_)));
    assert!(!err.to_string().contains("cflt"));
}
