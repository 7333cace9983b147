//! Test support: start keygate in-process, test upstreams bound before they are used, clients,
//! and generated certificates. Nothing here mocks a part of keygate.

#![allow(dead_code, reason = "each test module uses a different subset")]

pub mod audit;
pub mod binary;
pub mod certs;
pub mod egress;
pub mod governed;
pub mod jwks;
pub mod otlp;
pub mod redis;
pub mod sim;
pub mod upstream;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keygate::config::Config;
use keygate::Gateway;

/// The demo org's id (dev/org.toml, policies/).
pub const ORG_ID: &str = "4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c";

/// Authorization data from the shipped example files (they mirror the simulator's demo org).
pub const FILE_AUTHZ: &str = r#"
[authz]
org_id = "4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c"
bindings = "policies/role-bindings.toml"
inventory = "policies/inventory.toml"
"#;

/// [`FILE_AUTHZ`] for a config *file* in a temporary directory: relative paths in a config file
/// resolve against its own directory, so the shipped files are named by absolute path.
pub fn file_authz_for_file() -> String {
    let policies = std::fs::canonicalize("policies").unwrap();
    let policies = policies.display();
    format!(
        "{}matrix = \"{policies}/matrix.toml\"\n",
        FILE_AUTHZ.replace("\"policies/", &format!("\"{policies}/"))
    )
}

/// A config for tests: ephemeral loopback ports, short timeouts, `extra` TOML appended (with the
/// file-based `[authz]` of [`FILE_AUTHZ`] unless `extra` has its own).
pub fn config(upstream: &str, extra: &str) -> Config {
    config_with_env(upstream, extra, &keygate::config::ProcessEnv)
}

/// Like [`config`], reading environment variables (credentials) through `env`.
pub fn config_with_env(upstream: &str, extra: &str, env: &dyn keygate::config::Env) -> Config {
    let authz = if extra.contains("[authz]") {
        ""
    } else {
        FILE_AUTHZ
    };
    let text = format!(
        r#"
[listener]
address = "127.0.0.1:0"
header_read_timeout = "2s"
shutdown_grace = "5s"
[admin]
address = "127.0.0.1:0"
[upstream]
url = "{upstream}"
connect_timeout = "1s"
request_timeout = "2s"
{authz}
{extra}
"#
    );
    Config::from_toml_with_env(&text, env).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

/// Starts keygate in-process.
pub async fn start(config: Config) -> Gateway {
    keygate::build(config).await.expect("keygate starts")
}

/// An HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// An h2c (prior knowledge) client.
pub fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// A collected response.
pub struct Collected {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Collected {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The single member of a Confluent `errors[]` body.
    pub fn error(&self) -> serde_json::Value {
        let json = self.json();
        let errors = json["errors"].as_array().expect("errors[]");
        assert_eq!(errors.len(), 1, "{json}");
        errors[0].clone()
    }
}

/// Sends a request and collects the response.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Collected {
    let response: Response<hyper::body::Incoming> =
        client.request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    Collected {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

/// `GET url`, expecting keygate's 504 for an upstream that did not answer: sent no sooner than
/// `timeout` and well before a second one.
pub async fn get_upstream_timeout(url: &str, timeout: Duration) -> Collected {
    let started = std::time::Instant::now();
    let response = within(10, get(url)).await;
    let took = started.elapsed();
    assert_eq!(response.status, 504);
    assert_eq!(response.error()["code"], "upstream_timeout");
    assert!(took >= timeout, "answered before the timeout: {took:?}");
    assert!(took < timeout + Duration::from_secs(1), "took {took:?}");
    response
}

/// `GET url`.
pub async fn get(url: &str) -> Collected {
    let request = Request::get(url).body(Full::default()).unwrap();
    send(&client(), request).await
}

/// The gateway's `/metrics` text.
pub async fn metrics_text(gw: &Gateway) -> String {
    let metrics = get(&url(gw.admin_addr(), "/metrics")).await;
    assert_eq!(metrics.status, 200);
    String::from_utf8_lossy(&metrics.body).into_owned()
}

/// The URL of `path` on an address.
pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// Bounds a future so a hanging test fails instead of stalling CI.
pub async fn within<F: std::future::Future>(secs: u64, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("test step timed out")
}
