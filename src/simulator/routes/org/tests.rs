//! Environments and clusters over real HTTP.

use http::StatusCode;

use crate::simulator::tests::*;

#[tokio::test]
async fn inventory_endpoints_need_an_environment_and_use_confluent_shapes() {
    let h = Harness::start().await;
    let envs = h.get("/org/v2/environments").await.json();
    assert_eq!(envs["kind"], "EnvironmentList");
    assert_eq!(envs["metadata"]["total_size"], 2);
    assert_eq!(
        h.get("/org/v2/environments/env-prod01").await.json()["display_name"],
        "prod"
    );

    for path in [
        "/cmk/v2/clusters",
        "/srcm/v3/clusters",
        "/ksqldbcm/v2/clusters",
        "/cmk/v2/clusters/lkc-prod01",
    ] {
        let r = h.get(path).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(r.error()["source"]["parameter"], "environment");
    }
    let kafka = h
        .get("/cmk/v2/clusters?environment=env-prod01")
        .await
        .json();
    assert_eq!(kafka["kind"], "ClusterList");
    assert_eq!(kafka["data"][0]["id"], "lkc-prod01");
    assert_eq!(kafka["data"][0]["spec"]["environment"]["id"], "env-prod01");
    let one = h
        .get("/cmk/v2/clusters/lkc-prod01?environment=env-prod01")
        .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["api_version"], "cmk/v2");
    let wrong_env = h
        .get("/cmk/v2/clusters/lkc-prod01?environment=env-dev01")
        .await;
    assert_eq!(wrong_env.status, StatusCode::NOT_FOUND);
    let sr = h
        .get("/srcm/v3/clusters?environment=env-dev01")
        .await
        .json();
    assert_eq!(sr["data"][0]["id"], "lsrc-dev01");
    assert_eq!(sr["data"][0]["api_version"], "srcm/v3");
    let ksql = h
        .get("/ksqldbcm/v2/clusters?environment=env-dev01")
        .await
        .json();
    assert_eq!(ksql["data"][0]["id"], "lksqlc-dev01");
    assert_eq!(ksql["data"][0]["spec"]["kafka_cluster"]["id"], "lkc-dev01");
    let unknown = h.get("/cmk/v2/clusters?environment=env-nope").await;
    assert_eq!(unknown.status, StatusCode::FORBIDDEN);
    h.stop().await;
}
