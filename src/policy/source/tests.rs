//! Authorization data synced from the upstream, with canned Confluent pages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

use super::*;
use crate::policy::decision::Decision;
use crate::policy::source::{fetch_bindings, fetch_inventory, Fetch, FetchError, FetchFuture};
use crate::policy::tests::*;
use crate::policy::{decide_create, AuthzData, AuthzSnapshot};

// === upstream source, with canned Confluent pages ===

/// The upstream, answering canned JSON per exact path and query, recording every request.
struct CannedUpstream {
    pages: HashMap<String, Result<Value, u16>>,
    requests: Mutex<Vec<String>>,
}

impl CannedUpstream {
    fn new(pages: Vec<(String, Result<Value, u16>)>) -> Self {
        CannedUpstream {
            pages: pages.into_iter().collect(),
            requests: Mutex::new(Vec::new()),
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Fetch for CannedUpstream {
    fn get_json<'a>(&'a self, path_and_query: &'a str) -> FetchFuture<'a> {
        self.requests
            .lock()
            .unwrap()
            .push(path_and_query.to_owned());
        let answer = match self.pages.get(path_and_query) {
            Some(Ok(v)) => Ok(v.clone()),
            Some(Err(status)) => Err(FetchError::Status {
                path: path_and_query.to_owned(),
                status: *status,
            }),
            None => Err(FetchError::Status {
                path: path_and_query.to_owned(),
                status: 404,
            }),
        };
        Box::pin(async move { answer })
    }
}

fn list(kind: &str, data: Vec<Value>, next: Option<&str>) -> Value {
    json!({
        "api_version": "iam/v2",
        "kind": kind,
        "metadata": { "first": "https://api.confluent.cloud/x", "next": next, "total_size": 99 },
        "data": data,
    })
}

fn rb(id: &str, principal: &str, role: &str, rest: &str) -> Value {
    json!({
        "api_version": "iam/v2", "kind": "RoleBinding", "id": id,
        "metadata": { "self": format!("https://api.confluent.cloud/iam/v2/role-bindings/{id}") },
        "principal": principal, "role_name": role, "crn_pattern": crn(rest),
    })
}

const RB_PATH: &str = "/iam/v2/role-bindings?crn_pattern=crn%3A%2F%2Fconfluent.cloud%2Forganization%3D0b7e1c2d-3f4a-4b5c-8d6e-7f8091a2b3c4&page_size=100";

#[tokio::test]
async fn bindings_are_fetched_across_pages() {
    let next = format!("https://api.confluent.cloud{RB_PATH}&page_token=tok%2B2");
    let upstream = CannedUpstream::new(vec![
        (
            RB_PATH.to_owned(),
            Ok(list(
                "RoleBindingList",
                vec![
                    rb(
                        "rb-1",
                        "User:u-caller",
                        "EnvironmentAdmin",
                        "/environment=env-prod",
                    ),
                    rb(
                        "rb-2",
                        "User:u-x",
                        "DeveloperRead",
                        "/environment=env-prod/cloud-cluster=lkc-prod/kafka=lkc-prod/topic=t",
                    ),
                ],
                Some(&next),
            )),
        ),
        (
            format!("{RB_PATH}&page_token=tok%2B2"),
            Ok(list(
                "RoleBindingList",
                vec![
                    rb("rb-3", "User:sa-target", "OrganizationAdmin", ""),
                    rb("rb-4", "Invitation:i-1", "OrganizationAdmin", ""),
                    json!({ "id": "rb-5", "principal": "User:u-y" }),
                ],
                None,
            )),
        ),
    ]);
    let index = fetch_bindings(&upstream, &org()).await.unwrap();
    assert_eq!(
        upstream.requests(),
        [RB_PATH.to_owned(), format!("{RB_PATH}&page_token=tok%2B2")]
    );
    assert_eq!((index.len(), index.skipped()), (3, 2));
    assert_eq!(index.of("u-caller")[0].role(), "EnvironmentAdmin");
    assert_eq!(index.of("sa-target").len(), 1);

    let fx = Fixture::new();
    let snap = AuthzSnapshot::new(
        fx.matrix.clone(),
        Arc::new(index),
        fx.inventory.clone(),
        Instant::now(),
    );
    assert!(decide_create(&snap, &user(CALLER), &kafka(SA)).allow);
}

#[tokio::test]
async fn bindings_fetch_fails_on_a_bad_page_or_a_looping_token() {
    let upstream = CannedUpstream::new(vec![(RB_PATH.to_owned(), Err(503))]);
    assert!(matches!(
        fetch_bindings(&upstream, &org()).await,
        Err(FetchError::Status { status: 503, .. })
    ));

    let upstream = CannedUpstream::new(vec![(RB_PATH.to_owned(), Ok(json!({ "metadata": {} })))]);
    assert!(matches!(
        fetch_bindings(&upstream, &org()).await,
        Err(FetchError::Shape { .. })
    ));

    let looping = "https://api.confluent.cloud/iam/v2/role-bindings?page_token=same";
    let upstream = CannedUpstream::new(vec![
        (
            RB_PATH.to_owned(),
            Ok(list("RoleBindingList", vec![], Some(looping))),
        ),
        (
            format!("{RB_PATH}&page_token=same"),
            Ok(list("RoleBindingList", vec![], Some(looping))),
        ),
    ]);
    assert!(matches!(
        fetch_bindings(&upstream, &org()).await,
        Err(FetchError::Pagination { .. })
    ));

    let no_token = "https://api.confluent.cloud/iam/v2/role-bindings?page_size=100";
    let upstream = CannedUpstream::new(vec![(
        RB_PATH.to_owned(),
        Ok(list("RoleBindingList", vec![], Some(no_token))),
    )]);
    assert!(matches!(
        fetch_bindings(&upstream, &org()).await,
        Err(FetchError::Pagination { .. })
    ));
}

fn env(id: &str) -> Value {
    json!({ "api_version": "org/v2", "kind": "Environment", "id": id, "display_name": id })
}

fn cluster(kind: &str, id: &str, env: &str, kafka: Option<&str>) -> Value {
    let mut spec = json!({ "environment": { "id": env, "related": "x", "resource_name": "y" } });
    if let Some(lkc) = kafka {
        spec["kafka_cluster"] = json!({ "id": lkc, "environment": env });
    }
    json!({ "kind": kind, "id": id, "spec": spec, "status": { "phase": "PROVISIONED" } })
}

#[tokio::test]
async fn inventory_is_synced_from_environments_and_their_clusters() {
    let p = |s: &str| s.to_owned();
    let upstream = CannedUpstream::new(vec![
        (
            p("/org/v2/environments?page_size=100"),
            Ok(list(
                "EnvironmentList",
                vec![env("env-prod")],
                Some("https://api.confluent.cloud/org/v2/environments?page_size=100&page_token=e2"),
            )),
        ),
        (
            p("/org/v2/environments?page_size=100&page_token=e2"),
            Ok(list("EnvironmentList", vec![env("env-dev"), env("not-an-env")], None)),
        ),
        (
            p("/cmk/v2/clusters?environment=env-prod&page_size=100"),
            Ok(list(
                "ClusterList",
                vec![cluster("Cluster", "lkc-p1", "env-prod", None)],
                Some("https://api.confluent.cloud/cmk/v2/clusters?environment=env-prod&page_size=100&page_token=k2"),
            )),
        ),
        (
            p("/cmk/v2/clusters?environment=env-prod&page_size=100&page_token=k2"),
            Ok(list("ClusterList", vec![{
                let mut c = cluster("Cluster", "lkc-p2", "env-prod", None);
                c["spec"]["config"] = json!({ "kind": "Dedicated" });
                c
            }], None)),
        ),
        (
            p("/srcm/v3/clusters?environment=env-prod&page_size=100"),
            Ok(list("ClusterList", vec![cluster("Cluster", "lsrc-p1", "env-prod", None)], None)),
        ),
        (
            p("/ksqldbcm/v2/clusters?environment=env-prod&page_size=100"),
            Ok(list(
                "ClusterList",
                vec![
                    cluster("Cluster", "lksqlc-p1", "env-prod", Some("lkc-p1")),
                    cluster("Cluster", "lksqlc-p2", "env-prod", None),
                ],
                None,
            )),
        ),
        (p("/cmk/v2/clusters?environment=env-dev&page_size=100"), Ok(list("ClusterList", vec![], None))),
        (p("/srcm/v3/clusters?environment=env-dev&page_size=100"), Ok(list("ClusterList", vec![], None))),
        (
            p("/ksqldbcm/v2/clusters?environment=env-dev&page_size=100"),
            Ok(list("ClusterList", vec![], None)),
        ),
    ]);
    let inv = fetch_inventory(&upstream).await.unwrap();
    assert_eq!(inv.environment_count(), 2);
    assert_eq!(inv.cluster_count(), 5);
    assert_eq!(inv.cluster("lkc-p2").unwrap().environment(), "env-prod");
    assert_eq!(
        inv.cluster("lkc-p2").unwrap().kind(),
        Some(crate::policy::inventory::ClusterKind::Dedicated)
    );
    assert_eq!(inv.cluster("lkc-p1").unwrap().kind(), None);
    assert_eq!(inv.cluster("lsrc-p1").unwrap().environment(), "env-prod");
    assert_eq!(
        inv.cluster("lksqlc-p1").unwrap().kafka_cluster(),
        Some("lkc-p1")
    );
    assert_eq!(inv.cluster("lksqlc-p2").unwrap().kafka_cluster(), None);
    assert!(inv.has_environment("env-dev"));
    assert!(!inv.has_environment("not-an-env"));
    // The skipped environment was never queried.
    assert!(upstream
        .requests()
        .iter()
        .all(|r| !r.contains("not-an-env")));
}

#[tokio::test]
async fn inventory_sync_fails_when_a_cluster_listing_fails() {
    let upstream = CannedUpstream::new(vec![
        (
            "/org/v2/environments?page_size=100".to_owned(),
            Ok(list("EnvironmentList", vec![env("env-prod")], None)),
        ),
        (
            "/cmk/v2/clusters?environment=env-prod&page_size=100".to_owned(),
            Ok(list("ClusterList", vec![], None)),
        ),
        (
            "/srcm/v3/clusters?environment=env-prod&page_size=100".to_owned(),
            Err(500),
        ),
        (
            "/ksqldbcm/v2/clusters?environment=env-prod&page_size=100".to_owned(),
            Ok(list("ClusterList", vec![], None)),
        ),
    ]);
    let err = fetch_inventory(&upstream).await.unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 500, .. }),
        "{err}"
    );
}

/// Decisions and data cross threads; upstream fetches can be spawned on a multi-threaded runtime.

// === links and tokens ===
#[test]
fn page_token_is_taken_from_the_next_link() {
    assert_eq!(
        page_token("https://api.confluent.cloud/iam/v2/api-keys?page_size=10&page_token=abc%3D"),
        Some("abc%3D")
    );
    assert_eq!(page_token("https://x/y?page_token=t1#frag"), Some("t1"));
    assert_eq!(page_token("https://x/y?page_size=10"), None);
    assert_eq!(page_token("https://x/y?page_token="), None);
    assert_eq!(page_token("https://x/y?page_token=a/b"), None);
}

#[test]
fn query_values_are_percent_encoded() {
    assert_eq!(
        encode_query_value("crn://confluent.cloud/organization=0b7e-1"),
        "crn%3A%2F%2Fconfluent.cloud%2Forganization%3D0b7e-1"
    );
}

#[test]
fn decisions_data_and_fetches_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>(_: &T) {}
    assert_send_sync::<Decision>();
    assert_send_sync::<AuthzData>();
    assert_send_sync::<AuthzSnapshot>();
    let upstream = CannedUpstream::new(Vec::new());
    let fetch: &dyn Fetch = &upstream;
    let org = org();
    assert_send(&fetch_bindings(fetch, &org));
    assert_send(&fetch_inventory(fetch));
}
