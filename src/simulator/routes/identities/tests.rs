//! Service accounts and users over real HTTP.

use http::{Method, StatusCode};
use serde_json::json;

use crate::simulator::tests::*;

#[tokio::test]
async fn deleting_an_owner_revokes_its_keys() {
    let h = Harness::start().await;
    let auth = h.auth("u-alice");
    let r = h
        .send(Method::DELETE, "/iam/v2/users/u-dave", Some(&auth), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h
        .send(Method::GET, "/iam/v2/users", Some(&h.auth("u-dave")), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let bindings = h
        .get("/iam/v2/role-bindings?crn_pattern=crn://&principal=User:u-dave")
        .await;
    assert_eq!(bindings.json()["metadata"]["total_size"], 0);
    assert_eq!(
        h.get("/iam/v2/users/u-dave").await.status,
        StatusCode::NOT_FOUND
    );
    h.stop().await;
}

#[tokio::test]
async fn service_account_with_assigned_owner_gets_resource_owner_binding() {
    let h = Harness::start().await;
    let auth = h.auth("u-alice");
    let r = h
        .post(
            "/iam/v2/service-accounts?assigned_resource_owner=u-carol",
            json!({ "display_name": "billing", "description": "bills" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let sa = r.json();
    let id = sa["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sa-"));
    assert_eq!(sa["kind"], "ServiceAccount");
    assert_eq!(sa["display_name"], "billing");
    let crn = format!("crn://confluent.cloud/organization={ORG}/service-account={id}");
    assert_eq!(sa["metadata"]["resource_name"], crn);
    let owners = h
        .get(&format!(
            "/iam/v2/role-bindings?crn_pattern=service-account={id}&role_name=ResourceOwner"
        ))
        .await
        .json();
    assert_eq!(owners["metadata"]["total_size"], 1);
    assert_eq!(owners["data"][0]["principal"], "User:u-carol");
    assert_eq!(owners["data"][0]["crn_pattern"], crn);

    let dup = h
        .post(
            "/iam/v2/service-accounts",
            json!({ "display_name": "billing" }),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let bad_owner = h
        .post(
            "/iam/v2/service-accounts?assigned_resource_owner=u-nobody",
            json!({ "display_name": "x" }),
        )
        .await;
    assert_eq!(bad_owner.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        bad_owner.error()["source"]["parameter"],
        "assigned_resource_owner"
    );

    let patched = h
        .send(
            Method::PATCH,
            &format!("/iam/v2/service-accounts/{id}"),
            Some(&auth),
            Some(json!({ "description": "invoices" })),
        )
        .await;
    assert_eq!(patched.json()["description"], "invoices");

    // Deleting the account takes its keys and the bindings on it along.
    let key = h.create_key(&id, None).await;
    assert_eq!(key.status, StatusCode::ACCEPTED);
    let r = h
        .send(
            Method::DELETE,
            &format!("/iam/v2/service-accounts/{id}"),
            Some(&auth),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let keys = h
        .get(&format!("/iam/v2/api-keys?spec.owner={id}"))
        .await
        .json();
    assert_eq!(keys["metadata"]["total_size"], 0);
    let owners = h
        .get(&format!(
            "/iam/v2/role-bindings?crn_pattern=service-account={id}"
        ))
        .await
        .json();
    assert_eq!(owners["metadata"]["total_size"], 0);
    h.stop().await;
}

#[tokio::test]
async fn users_can_be_listed_and_patched_but_not_created() {
    let h = Harness::start().await;
    let users = h.get("/iam/v2/users?page_size=100").await.json();
    assert_eq!(users["kind"], "UserList");
    assert_eq!(users["metadata"]["total_size"], 7);
    let auth = h.auth("u-alice");
    let r = h
        .send(
            Method::PATCH,
            "/iam/v2/users/u-bob",
            Some(&auth),
            Some(json!({ "full_name": "Robert" })),
        )
        .await;
    assert_eq!(r.json()["full_name"], "Robert");
    assert_eq!(r.json()["email"], "bob@example.com");
    let r = h
        .post("/iam/v2/users", json!({ "email": "x@example.com" }))
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    h.stop().await;
}
