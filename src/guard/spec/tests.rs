//! Create and update bodies as real clients send them, and what is refused with a pointer.

use http::StatusCode;

use crate::guard::*;
use crate::model::{Action, CreateSpec, ResourceSpec, UpdateSpec};

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
            "docs/confluent-api.md §2.1 example",
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
