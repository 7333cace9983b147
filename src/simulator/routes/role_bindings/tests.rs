//! The role-binding routes over real HTTP.

use std::collections::HashSet;

use http::{Method, StatusCode};
use serde_json::json;

use crate::simulator::tests::*;

#[tokio::test]
async fn role_binding_list_requires_crn_pattern_and_filters() {
    let h = Harness::start().await;
    let r = h.get("/iam/v2/role-bindings").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error()["source"]["parameter"], "crn_pattern");

    let org = format!("crn://confluent.cloud/organization={ORG}");
    let all = h
        .get(&format!(
            "/iam/v2/role-bindings?crn_pattern={org}&page_size=100"
        ))
        .await
        .json();
    assert_eq!(all["kind"], "RoleBindingList");
    assert_eq!(all["metadata"]["total_size"], 9);
    // Substring search: everything under env-dev01.
    let dev = h
        .get("/iam/v2/role-bindings?crn_pattern=environment%3Denv-dev01")
        .await
        .json();
    let ids: HashSet<&str> = dev["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rb| rb["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        HashSet::from(["rb-dave-topic", "rb-frank-envdev", "rb-grace-ksqldev"])
    );
    let admins = h
        .get(&format!(
            "/iam/v2/role-bindings?crn_pattern={org}&role_name=OrganizationAdmin"
        ))
        .await
        .json();
    assert_eq!(admins["metadata"]["total_size"], 2);
    let bob = h
        .get(&format!(
            "/iam/v2/role-bindings?crn_pattern={org}&principal=User:u-bob"
        ))
        .await
        .json();
    assert_eq!(bob["metadata"]["total_size"], 2);
    let rb = &bob["data"][0];
    assert_eq!(rb["api_version"], "iam/v2");
    assert_eq!(rb["kind"], "RoleBinding");
    assert_eq!(
        rb["metadata"]["self"],
        format!(
            "{}/iam/v2/role-bindings/{}",
            h.base,
            rb["id"].as_str().unwrap()
        )
    );
    h.stop().await;
}

#[tokio::test]
async fn role_binding_create_get_delete() {
    let h = Harness::start().await;
    let auth = h.auth("u-alice");
    let crn = format!("crn://confluent.cloud/organization={ORG}/environment=env-dev01");
    let body = json!({ "principal": "User:sa-payments", "role_name": "EnvironmentAdmin", "crn_pattern": crn });
    let r = h.post("/iam/v2/role-bindings", body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let rb = r.json();
    let id = rb["id"].as_str().unwrap();
    assert!(id.starts_with("rb-"));
    assert_eq!(
        r.header("location"),
        format!("{}/iam/v2/role-bindings/{id}", h.base)
    );
    assert_eq!(rb["principal"], "User:sa-payments");

    let dup = h.post("/iam/v2/role-bindings", body).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.error()["code"], "resource_already_exists");

    for (bad, pointer) in [
        (
            json!({ "principal": "sa-payments", "role_name": "X", "crn_pattern": crn }),
            "/principal",
        ),
        (
            json!({ "principal": "User:sa-payments", "role_name": "", "crn_pattern": crn }),
            "/role_name",
        ),
        (
            json!({ "principal": "User:sa-payments", "role_name": "X", "crn_pattern": "env-dev01" }),
            "/crn_pattern",
        ),
    ] {
        let r = h.post("/iam/v2/role-bindings", bad.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(r.error()["source"]["pointer"], pointer);
    }

    let path = format!("/iam/v2/role-bindings/{id}");
    assert_eq!(h.get(&path).await.json(), rb);
    let deleted = h.send(Method::DELETE, &path, Some(&auth), None).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.json(), rb);
    assert_eq!(h.get(&path).await.status, StatusCode::NOT_FOUND);
    h.stop().await;
}
