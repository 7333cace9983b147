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

#[test]
fn errors_repeat_id_sized_values_but_not_secret_sized_ones() {
    let short = IdentityError::Rejected {
        key_id: "ABCD1234567890AB".into(),
    };
    assert!(short.to_string().contains("`ABCD1234567890AB`"));
    // Key and secret swapped: the "key id" is a 64-character legacy secret.
    let swapped = "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v2W3x4Y5z6A7b8C9d0E1f2";
    let rejected = IdentityError::Rejected {
        key_id: swapped.into(),
    };
    let owner = IdentityError::UnknownOwner {
        key_id: "ABCD1234567890AB".into(),
        owner: swapped.into(),
    };
    for message in [rejected.to_string(), owner.to_string()] {
        assert!(!message.contains(swapped), "{message}");
        assert!(message.contains("64 characters"), "{message}");
    }
}
