//! The admin listener.

use crate::support::{self, upstream, within};

#[tokio::test]
async fn health_ready_and_metrics_are_served() {
    let up = upstream::spawn(None, upstream::echo).await;
    let gw = support::start(support::config(&format!("http://{up}"), "")).await;
    let admin = gw.admin_addr();
    assert_eq!(
        support::get(&support::url(admin, "/healthz")).await.status,
        200
    );
    assert_eq!(
        support::get(&support::url(admin, "/readyz")).await.status,
        200
    );
    assert_eq!(
        support::get(&support::url(admin, "/nope")).await.status,
        404
    );

    within(
        5,
        support::get(&support::url(gw.local_addr(), "/org/v2/environments")),
    )
    .await;
    let metrics = support::get(&support::url(admin, "/metrics")).await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"keygate_requests_total{route="ungoverned",method="GET",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"keygate_request_duration_seconds_count{route="ungoverned"} 1"#));
    assert!(text.contains("keygate_in_flight_requests 0"));
}

#[tokio::test]
async fn readyz_fails_once_shutdown_starts() {
    let up = upstream::spawn(None, upstream::echo).await;
    let gw = support::start(support::config(&format!("http://{up}"), "")).await;
    let admin = gw.admin_addr();
    assert_eq!(
        support::get(&support::url(admin, "/readyz")).await.status,
        200
    );
    gw.shutdown();
    within(10, gw.wait()).await;
    let refused = support::client()
        .request(
            http::Request::get(support::url(admin, "/readyz"))
                .body(http_body_util::Full::default())
                .unwrap(),
        )
        .await;
    assert!(refused.is_err(), "admin still answering after shutdown");
}

/// A valid organisation id that is not the demo org's: Confluent has no role binding for it.
const OTHER_ORG: &str = "0b7e1c2d-3f4a-4b5c-8d6e-7f8091a2b3c4";

#[tokio::test]
async fn zero_role_bindings_for_the_organisation_is_not_ready_and_says_why() {
    let sim = crate::support::sim::Sim::start().await;
    let own = sim.key("sa-keygate");
    let env: std::collections::HashMap<String, String> = [(
        "KG_OWN".to_owned(),
        format!("{}:{}", own.key_id, own.secret),
    )]
    .into();
    let authz = |org: &str| {
        format!(
            "[authz]\norg_id = \"{org}\"\nbindings = \"upstream\"\ninventory = \"upstream\"\n[upstream.credential]\nenv = \"KG_OWN\"\n"
        )
    };
    let wrong = support::start(support::config_with_env(
        &sim.url(),
        &authz(OTHER_ORG),
        &env,
    ))
    .await;
    let ready = support::get(&support::url(wrong.admin_addr(), "/readyz")).await;
    assert_eq!(ready.status, 503);
    let body = String::from_utf8_lossy(&ready.body);
    assert!(body.contains("no role bindings for organisation"), "{body}");
    assert!(
        body.contains(OTHER_ORG) && body.contains("authz.org_id"),
        "{body}"
    );

    // The same setup with the right organisation is ready.
    let right = support::start(support::config_with_env(
        &sim.url(),
        &authz(crate::support::ORG_ID),
        &env,
    ))
    .await;
    let ready = support::get(&support::url(right.admin_addr(), "/readyz")).await;
    assert_eq!(ready.status, 200, "{:?}", ready.body);
}
