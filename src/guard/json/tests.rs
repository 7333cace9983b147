//! Strict JSON: duplicates, case variants, malformed documents, positions without content.

use http::StatusCode;

use crate::guard::*;

use crate::guard::tests::*;

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
