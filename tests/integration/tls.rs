//! TLS on both sides, with certificates generated per test.

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::certs::TestPki;
use crate::support::{self, upstream, within};

/// A TLS client trusting the test CA that offers only h2 (`h2 = true`) or only http/1.1 by ALPN.
fn tls_client(
    pki: &TestPki,
    h2: bool,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(pki.client_config(&[]))
        .https_only();
    let connector = if h2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    };
    let mut client = Client::builder(TokioExecutor::new());
    client.http2_only(h2);
    client.build(connector)
}

#[tokio::test]
async fn tls_listener_serves_http1_and_h2_by_alpn() {
    let pki = TestPki::new();
    let up = upstream::spawn(None, upstream::echo).await;
    let extra = format!(
        "[listener.tls]\ncert = {:?}\nkey = {:?}\n",
        pki.cert_file(),
        pki.key_file()
    );
    let gw = support::start(support::config(&format!("http://{up}"), &extra)).await;
    let url = format!(
        "https://localhost:{}/org/v2/environments",
        gw.local_addr().port()
    );

    for (h2, version) in [(true, Version::HTTP_2), (false, Version::HTTP_11)] {
        let client = tls_client(&pki, h2);
        let response = within(
            5,
            client.request(Request::get(&url).body(Full::default()).unwrap()),
        )
        .await
        .unwrap();
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["path"], "/org/v2/environments");
    }
}

#[tokio::test]
async fn tls_upstream_is_verified_against_the_configured_ca() {
    let pki = TestPki::new();
    let up = upstream::spawn(Some(pki.server_config()), upstream::echo).await;
    let mut config = support::config(&format!("https://localhost:{}", up.port()), "");
    config.upstream.ca_file = Some(pki.ca_file());
    let gw = support::start(config).await;
    let response = within(
        5,
        support::get(&support::url(gw.local_addr(), "/org/v2/environments")),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["path"], "/org/v2/environments");
}

#[tokio::test]
async fn tls_upstream_with_unknown_ca_is_502() {
    let pki = TestPki::new();
    let up = upstream::spawn(Some(pki.server_config()), upstream::echo).await;
    let gw = support::start(support::config(
        &format!("https://localhost:{}", up.port()),
        "",
    ))
    .await;
    let response = within(
        5,
        support::get(&support::url(gw.local_addr(), "/org/v2/environments")),
    )
    .await;
    assert_eq!(response.status, 502);
    assert_eq!(response.error()["code"], "upstream_tls_failure");
}
