//! One test per row of the error → response mapping.

use std::time::Duration;

use http_body_util::BodyExt;

use super::*;

async fn render(err: GatewayError) -> (StatusCode, http::HeaderMap, serde_json::Value) {
    let response = err.to_response("req-1");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap(),
    )
}

fn member(json: &serde_json::Value) -> &serde_json::Value {
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    &errors[0]
}

#[tokio::test]
async fn upstream_connect_failure_maps_to_502() {
    let (status, headers, json) =
        render(ProxyError::Connect("connection refused".into()).into()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    let m = member(&json);
    assert_eq!(m["status"], "502");
    assert_eq!(m["id"], "req-1");
    assert_eq!(m["code"], "upstream_unavailable");
    assert!(m["detail"].as_str().unwrap().contains("connection refused"));
}

#[tokio::test]
async fn upstream_tls_failure_maps_to_502() {
    let (status, _, json) = render(ProxyError::Tls("unknown issuer".into()).into()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(member(&json)["code"], "upstream_tls_failure");
}

#[tokio::test]
async fn upstream_protocol_error_maps_to_502() {
    let (status, _, json) = render(ProxyError::Protocol("reset".into()).into()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(member(&json)["status"], "502");
}

#[tokio::test]
async fn upstream_timeout_maps_to_504() {
    let (status, _, json) = render(ProxyError::Timeout(Duration::from_secs(3)).into()).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let m = member(&json);
    assert_eq!(m["status"], "504");
    assert_eq!(m["code"], "upstream_timeout");
}

#[tokio::test]
async fn upstream_connect_timeout_maps_to_504() {
    let (status, _, _) = render(ProxyError::ConnectTimeout(Duration::from_secs(1)).into()).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn upstream_body_timeout_maps_to_504() {
    let (status, _, json) = render(ProxyError::BodyTimeout(Duration::from_secs(10)).into()).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let m = member(&json);
    assert_eq!(m["code"], "upstream_timeout");
    assert!(m["detail"].as_str().unwrap().contains("body"), "{m}");
}

#[tokio::test]
async fn internal_error_maps_to_500() {
    let (status, headers, json) = render(GatewayError::Internal("no permit")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(headers.get(WWW_AUTHENTICATE).is_none());
    assert_eq!(member(&json)["status"], "500");
}
