//! The api-keys routes over real HTTP: shapes, links, paging, Confluent's RBAC on existing keys.

use std::collections::HashSet;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, Full};
use serde_json::json;

use crate::simulator::secret::{self};

use crate::simulator::tests::*;

#[tokio::test]
async fn create_answers_202_with_location_and_a_usable_secret() {
    let h = Harness::start().await;
    let r = h
        .create_key("sa-orders", Some(json!({ "id": "lkc-prod01" })))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let key = r.json();
    let id = key["id"].as_str().unwrap();
    assert!(secret::is_key_id(id), "{id}");
    assert_eq!(
        r.header("location"),
        format!("{}/iam/v2/api-keys/{id}", h.base)
    );
    assert!(r.headers.contains_key("x-request-id"));
    assert!(r.headers.contains_key("x-ratelimit-limit"));
    assert!(r.headers.contains_key("x-ratelimit-remaining"));
    assert!(r.headers.contains_key("x-ratelimit-reset"));
    assert_eq!(key["api_version"], "iam/v2");
    assert_eq!(key["kind"], "ApiKey");
    assert_eq!(
        key["metadata"]["self"],
        format!("{}/iam/v2/api-keys/{id}", h.base)
    );
    assert_eq!(
        key["metadata"]["resource_name"],
        format!("crn://confluent.cloud/organization={ORG}/service-account=sa-orders/api-key={id}")
    );
    assert!(key["metadata"]["created_at"].is_string() && key["metadata"]["updated_at"].is_string());
    let secret = key["spec"]["secret"].as_str().unwrap();
    assert!(secret::is_valid_cflt_secret(secret), "{secret}");
    let owner = &key["spec"]["owner"];
    assert_eq!(owner["kind"], "ServiceAccount");
    assert_eq!(owner["api_version"], "iam/v2");
    assert_eq!(
        owner["related"],
        format!("{}/iam/v2/service-accounts/sa-orders", h.base)
    );
    let resource = &key["spec"]["resource"];
    assert_eq!(resource["api_version"], "cmk/v2");
    assert_eq!(resource["kind"], "Cluster");
    assert_eq!(resource["environment"], "env-prod01");
    assert_eq!(
        resource["resource_name"],
        format!("crn://confluent.cloud/organization={ORG}/environment=env-prod01/cloud-cluster=lkc-prod01")
    );

    let got = h.get(&format!("/iam/v2/api-keys/{id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["spec"]["secret"], "");
    assert_eq!(got.json()["spec"]["owner"], key["spec"]["owner"]);

    // A Kafka key cannot call the management API; a Cloud key (no resource) can, at once.
    let kafka = h
        .send(
            Method::GET,
            "/org/v2/environments",
            Some(&basic(id, secret)),
            None,
        )
        .await;
    assert_eq!(kafka.status, StatusCode::UNAUTHORIZED);
    let cloud = h.create_key("u-alice", None).await.json();
    assert_eq!(cloud["spec"]["resource"]["id"], "cloud");
    assert_eq!(cloud["spec"]["resource"]["kind"], "Cloud");
    let auth = basic(
        cloud["id"].as_str().unwrap(),
        cloud["spec"]["secret"].as_str().unwrap(),
    );
    let envs = h
        .send(Method::GET, "/org/v2/environments", Some(&auth), None)
        .await;
    assert_eq!(envs.status, StatusCode::OK);
    h.stop().await;
}

#[tokio::test]
async fn create_accepts_every_resource_type_with_its_kind() {
    let h = Harness::start().await;
    let cases = [
        (json!(null), "cloud", "iam/v2", "Cloud"),
        (json!({ "id": "cloud" }), "cloud", "iam/v2", "Cloud"),
        (json!({ "id": "global" }), "global", "global/v1", "Global"),
        (
            json!({ "id": "tableflow" }),
            "tableflow",
            "tableflow/v1",
            "Tableflow",
        ),
        (
            json!({ "id": "lsrc-dev01", "related": "", "resource_name": "" }),
            "lsrc-dev01",
            "srcm/v3",
            "SchemaRegistry",
        ),
        (
            json!({ "id": "lksqlc-dev01" }),
            "lksqlc-dev01",
            "ksqldbcm/v2",
            "ksqlDB",
        ),
        (
            json!({ "id": "aws.us-east-1", "environment": "env-dev01" }),
            "aws.us-east-1",
            "fcpm/v2",
            "Region",
        ),
    ];
    for (resource, id, api_version, kind) in cases {
        let r = h.create_key("u-frank", Some(resource.clone())).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{resource}: {}", r.json());
        let got = &r.json()["spec"]["resource"];
        assert_eq!(got["id"], id, "{resource}");
        assert_eq!(got["api_version"], api_version, "{resource}");
        assert_eq!(got["kind"], kind, "{resource}");
    }
    // The older multi-resource form is tolerated.
    let r = h
        .post(
            "/iam/v2/api-keys",
            json!({ "spec": { "owner": { "id": "u-dave" }, "resources": [{ "id": "lkc-dev01" }] } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.json()["spec"]["resource"]["id"], "lkc-dev01");
    h.stop().await;
}

#[tokio::test]
async fn create_rejects_unknown_owner_resource_and_bad_json() {
    let h = Harness::start().await;
    let cases = [
        (
            json!({ "spec": { "owner": { "id": "sa-nobody" } } }),
            "/spec/owner/id",
        ),
        (
            json!({ "spec": { "owner": { "id": "" } } }),
            "/spec/owner/id",
        ),
        (json!({ "spec": {} }), "/spec/owner/id"),
        (json!({}), "/spec"),
        (
            json!({ "spec": { "owner": { "id": "u-bob" }, "resource": { "id": "lkc-nope" } } }),
            "/spec/resource/id",
        ),
        (
            json!({ "spec": { "owner": { "id": "u-bob" }, "resource": { "id": "aws.us-east-1" } } }),
            "/spec/resource/environment",
        ),
        (
            json!({ "spec": { "owner": { "id": "u-bob" }, "resource": { "id": "aws.us-east-1", "environment": "env-nope" } } }),
            "/spec/resource/environment",
        ),
        (
            json!({ "spec": { "owner": { "id": "u-bob" }, "display_name": 5 } }),
            "/spec/display_name",
        ),
    ];
    for (body, pointer) in cases {
        let r = h.post("/iam/v2/api-keys", body.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let e = r.error();
        assert_eq!(e["code"], "invalid_configuration", "{body}");
        assert_eq!(e["title"], "Validation Failed");
        assert_eq!(e["source"]["pointer"], pointer, "{body}");
    }
    let r = h
        .send_body(
            Method::POST,
            "/iam/v2/api-keys",
            Some(&h.auth("u-alice")),
            Full::new(Bytes::from_static(b"{\"spec\":")).boxed(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    r.error();
    // Nothing was created by any of the rejected requests.
    let list = h.get("/iam/v2/api-keys?page_size=100").await.json();
    assert_eq!(list["metadata"]["total_size"], 10);
    h.stop().await;
}

#[tokio::test]
async fn list_filters_exactly_and_paginates_with_absolute_links() {
    let h = Harness::start().await;
    for _ in 0..12 {
        let r = h
            .create_key("sa-payments", Some(json!({ "id": "lkc-prod01" })))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }
    // 12 new Kafka keys + the seeded Schema Registry key of sa-payments.
    let mut url = "/iam/v2/api-keys?spec.owner=sa-payments&page_size=5".to_owned();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = h.get(&url).await;
        assert_eq!(r.status, StatusCode::OK);
        let list = r.json();
        pages += 1;
        assert_eq!(list["kind"], "ApiKeyList");
        assert_eq!(list["metadata"]["total_size"], 13);
        assert_eq!(
            list["metadata"]["first"],
            format!(
                "{}/iam/v2/api-keys?spec.owner=sa-payments&page_size=5",
                h.base
            )
        );
        for key in list["data"].as_array().unwrap() {
            assert_eq!(key["spec"]["owner"]["id"], "sa-payments");
            assert_eq!(key["spec"]["secret"], "");
            seen.push(key["id"].as_str().unwrap().to_owned());
        }
        match list["metadata"].get("next") {
            // Follow `next` verbatim, as some SDKs do.
            Some(next) => url = next.as_str().unwrap().to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 13);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        13,
        "a key repeated"
    );

    let by_resource = h
        .get("/iam/v2/api-keys?spec.resource=lsrc-prod01")
        .await
        .json();
    assert_eq!(by_resource["metadata"]["total_size"], 1);
    assert_eq!(by_resource["data"][0]["id"], "DEMOPAYMENTS0001");
    assert!(by_resource["metadata"].get("next").is_none());
    let both = h
        .get("/iam/v2/api-keys?spec.owner=sa-payments&spec.resource=lkc-prod01")
        .await
        .json();
    assert_eq!(both["metadata"]["total_size"], 12);
    assert_eq!(
        both["data"].as_array().unwrap().len(),
        10,
        "default page size"
    );
    let prefix = h.get("/iam/v2/api-keys?spec.owner=sa-pay").await.json();
    assert_eq!(prefix["metadata"]["total_size"], 0, "filters are exact");
    h.stop().await;
}

#[tokio::test]
async fn bad_page_size_or_token_is_400_invalid_filter() {
    let h = Harness::start().await;
    for query in [
        "page_size=0",
        "page_size=101",
        "page_size=ten",
        "page_token=%%%",
    ] {
        let r = h.get(&format!("/iam/v2/api-keys?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
        let e = r.error();
        assert_eq!(e["code"], "invalid_filter", "{query}");
        assert!(e["source"]["parameter"].is_string());
    }
    assert_eq!(
        h.get("/iam/v2/api-keys?page_size=100").await.status,
        StatusCode::OK
    );
    h.stop().await;
}

#[tokio::test]
async fn patch_changes_only_name_and_description() {
    let h = Harness::start().await;
    let id = "DEMOORDERS000001";
    let path = format!("/iam/v2/api-keys/{id}");
    let auth = h.auth("u-alice");
    let r = h
        .send(
            Method::PATCH,
            &path,
            Some(&auth),
            Some(json!({ "spec": { "display_name": "renamed", "description": "new" } })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["spec"]["display_name"], "renamed");
    assert_eq!(r.json()["spec"]["description"], "new");
    assert_eq!(r.json()["spec"]["secret"], "");

    for (body, pointer) in [
        (
            json!({ "spec": { "owner": { "id": "sa-payments" } } }),
            "/spec/owner",
        ),
        (
            json!({ "spec": { "resource": { "id": "lkc-dev01" } } }),
            "/spec/resource",
        ),
        (json!({ "spec": { "secret": "x" } }), "/spec/secret"),
    ] {
        let r = h
            .send(Method::PATCH, &path, Some(&auth), Some(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(r.error()["source"]["pointer"], pointer);
    }
    let after = h.get(&path).await.json();
    assert_eq!(after["spec"]["owner"]["id"], "sa-orders");
    assert_eq!(after["spec"]["resource"]["id"], "lkc-prod01");
    assert_eq!(after["spec"]["display_name"], "renamed");
    let missing = h
        .send(
            Method::PATCH,
            "/iam/v2/api-keys/NOSUCHKEY0000000",
            Some(&auth),
            Some(json!({})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    h.stop().await;
}

#[tokio::test]
async fn delete_is_204_empty_then_404() {
    let h = Harness::start().await;
    let auth = h.auth("u-alice");
    let path = "/iam/v2/api-keys/DEMOORDERS000001";
    let r = h.send(Method::DELETE, path, Some(&auth), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.bytes.is_empty());
    assert!(r.headers.contains_key("x-request-id"));
    let r = h.get(path).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error()["title"], "Not Found");
    let r = h.send(Method::DELETE, path, Some(&auth), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    h.stop().await;
}

#[tokio::test]
async fn existing_keys_follow_confluents_rbac_for_read_update_delete_and_list() {
    let h = Harness::start().await;
    let (dave, bob, alice) = (h.auth("u-dave"), h.auth("u-bob"), h.auth("u-alice"));
    let orders = "/iam/v2/api-keys/DEMOORDERS000001";
    let payments = "/iam/v2/api-keys/DEMOPAYMENTS0001";
    let patch = json!({ "spec": { "description": "changed" } });

    // DeveloperRead: no say over another account's key, whatever the method.
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(patch.clone())),
        (Method::DELETE, None),
    ] {
        let r = h.send(method.clone(), orders, Some(&dave), body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method}");
        assert_eq!(r.error()["code"], "forbidden_access");
    }
    // Its own key it may read; a key that does not exist is still 404.
    let own = format!("/iam/v2/api-keys/{}", h.demo("u-dave").key_id);
    assert_eq!(
        h.send(Method::GET, &own, Some(&dave), None).await.status,
        StatusCode::OK
    );
    let none = "/iam/v2/api-keys/NOSUCHKEY0000001";
    assert_eq!(
        h.send(Method::GET, none, Some(&dave), None).await.status,
        StatusCode::NOT_FOUND
    );

    // ResourceOwner on sa-orders: that account's keys, not sa-payments'.
    assert_eq!(
        h.send(Method::GET, orders, Some(&bob), None).await.status,
        StatusCode::OK
    );
    let r = h
        .send(Method::PATCH, orders, Some(&bob), Some(patch.clone()))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        h.send(Method::GET, payments, Some(&bob), None).await.status,
        StatusCode::FORBIDDEN
    );

    // A list shows what the caller may manage.
    let listed = |r: Reply| -> Vec<String> {
        r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mine = listed(
        h.send(
            Method::GET,
            "/iam/v2/api-keys?page_size=100",
            Some(&dave),
            None,
        )
        .await,
    );
    assert_eq!(mine, [h.demo("u-dave").key_id]);
    let bobs = listed(
        h.send(
            Method::GET,
            "/iam/v2/api-keys?page_size=100",
            Some(&bob),
            None,
        )
        .await,
    );
    assert!(bobs.contains(&"DEMOORDERS000001".to_owned()), "{bobs:?}");
    assert!(!bobs.contains(&"DEMOPAYMENTS0001".to_owned()), "{bobs:?}");
    let all = listed(
        h.send(
            Method::GET,
            "/iam/v2/api-keys?page_size=100",
            Some(&alice),
            None,
        )
        .await,
    );
    assert!(all.len() > bobs.len() && all.contains(&"DEMOPAYMENTS0001".to_owned()));

    // OrganizationAdmin: anything.
    let r = h.send(Method::DELETE, payments, Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h.send(Method::DELETE, orders, Some(&bob), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    h.stop().await;
}
