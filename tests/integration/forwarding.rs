//! Forwarding at the transport level: hop-by-hop headers, request ids, Host, upstream failures.
use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::{self, upstream, within};

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let up = upstream::spawn(None, upstream::echo).await;
    let gw = support::start(support::config(&format!("http://{up}"), "")).await;
    let request = Request::get(support::url(
        gw.local_addr(),
        "/org/v2/environments?page_size=5",
    ))
    .header("connection", "x-private, keep-alive")
    .header("x-private", "drop me")
    .header("keep-alive", "timeout=1")
    .header("te", "trailers")
    .header("x-end-to-end", "keep me")
    .header("proxy-authorization", "Basic cHJveHk6cGFzcw==")
    .body(Full::default())
    .unwrap();
    let response = within(5, support::send(&support::client(), request)).await;
    assert_eq!(response.status, 200);
    let seen = response.json();
    let headers = &seen["headers"];
    assert_eq!(seen["path"], "/org/v2/environments?page_size=5");
    assert!(headers.get("x-private").is_none(), "{headers}");
    assert!(headers.get("te").is_none());
    assert!(headers.get("keep-alive").is_none());
    assert!(headers.get("proxy-authorization").is_none());
    assert_eq!(headers["x-end-to-end"][0], "keep me");
    // Response direction: the upstream's Connection-listed and keep-alive headers are gone,
    // end-to-end ones (rate-limit) pass unchanged.
    assert!(response.headers.get("x-upstream-private").is_none());
    assert!(response.headers.get("keep-alive").is_none());
    assert_eq!(response.headers["x-ratelimit-limit"], "25");
    // The caller quotes keygate's id (the one in its log); the upstream's passes under its own name.
    assert_ne!(response.headers["x-request-id"], "upstream-req-1");
    assert_eq!(response.headers["x-upstream-request-id"], "upstream-req-1");
}

#[tokio::test]
async fn host_is_rewritten_to_the_upstream() {
    let up = upstream::spawn(None, upstream::echo).await;
    let gw = support::start(support::config(&format!("http://{up}"), "")).await;
    let request = Request::get(support::url(gw.local_addr(), "/x"))
        .header("host", "keygate.internal")
        .body(Full::default())
        .unwrap();
    let seen = within(5, support::send(&support::client(), request))
        .await
        .json();
    assert_eq!(seen["headers"]["host"][0], up.to_string());
}

#[tokio::test]
async fn request_id_is_minted_forwarded_and_cannot_be_stripped_via_connection() {
    let up = upstream::spawn(None, upstream::echo).await;
    let gw = support::start(support::config(&format!("http://{up}"), "")).await;
    let request = Request::get(support::url(gw.local_addr(), "/x"))
        .header("connection", "x-request-id")
        .body(Full::default())
        .unwrap();
    let seen = within(5, support::send(&support::client(), request))
        .await
        .json();
    let forwarded = seen["headers"]["x-request-id"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(forwarded.len(), 32, "{forwarded}");

    let request = Request::get(support::url(gw.local_addr(), "/x"))
        .header("x-request-id", "caller-chosen-1")
        .body(Full::default())
        .unwrap();
    let seen = within(5, support::send(&support::client(), request))
        .await
        .json();
    assert_eq!(seen["headers"]["x-request-id"][0], "caller-chosen-1");
}

#[tokio::test]
async fn own_responses_carry_the_request_id() {
    let down = upstream::refused().await;
    let gw = support::start(support::config(&format!("http://{down}"), "")).await;
    let request = Request::get(support::url(gw.local_addr(), "/x"))
        .header("x-request-id", "trace-me-7")
        .body(Full::default())
        .unwrap();
    let response = within(5, support::send(&support::client(), request)).await;
    assert_eq!(response.headers["x-request-id"], "trace-me-7");
    assert_eq!(response.error()["id"], "trace-me-7");
}

#[tokio::test]
async fn upstream_down_is_502_in_confluent_shape() {
    let down = upstream::refused().await;
    let gw = support::start(support::config(&format!("http://{down}"), "")).await;
    let response = within(
        5,
        support::get(&support::url(gw.local_addr(), "/org/v2/environments")),
    )
    .await;
    assert_eq!(response.status, 502);
    assert_eq!(response.headers["content-type"], "application/json");
    let error = response.error();
    assert_eq!(error["status"], "502");
    assert_eq!(error["code"], "upstream_unavailable");
    assert!(
        error["detail"].as_str().unwrap().contains("connect"),
        "{error}"
    );
    let text = support::metrics_text(&gw).await;
    assert!(
        text.contains(r#"keygate_upstream_errors_total{kind="connect"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn silent_upstream_is_504_within_the_request_timeout() {
    let silent = upstream::silent().await;
    let config = support::config(&format!("http://{silent}"), "");
    let timeout = config.upstream.request_timeout;
    let gw = support::start(config).await;
    support::get_upstream_timeout(&support::url(gw.local_addr(), "/cmk/v2/clusters"), timeout)
        .await;
}

#[tokio::test]
async fn post_body_and_status_pass_through_over_h2c() {
    let up = upstream::spawn(None, |req: Request<hyper::body::Incoming>| async move {
        let mut response = upstream::echo(req).await;
        *response.status_mut() = http::StatusCode::ACCEPTED;
        response
    })
    .await;
    let gw = support::start(support::config(&format!("http://{up}"), "")).await;
    let request = Request::post(support::url(gw.local_addr(), "/iam/v2/service-accounts"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"display_name\":\"x\"}")))
        .unwrap();
    let response = within(5, support::send(&support::h2c_client(), request)).await;
    assert_eq!(response.status, 202);
    let seen = response.json();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body_len"], 20);
}
