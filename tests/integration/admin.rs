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
