//! The Confluent IAM simulator as a test upstream, started in-process on 127.0.0.1:0.

use std::net::SocketAddr;
use std::sync::Arc;

use keygate::simulator::{self, DemoKey, Seed, Simulator};
use tokio::net::TcpListener;

/// A running simulator.
pub struct Sim {
    pub sim: Arc<Simulator>,
    pub addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Sim {
    /// Starts the built-in demo org.
    pub async fn start() -> Sim {
        Sim::with_tls(None).await
    }

    /// Starts the demo org, over TLS when a server config is given.
    pub async fn with_tls(tls: Option<Arc<rustls::ServerConfig>>) -> Sim {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sim = Arc::new(Simulator::new(Seed::builtin()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(simulator::serve(listener, sim.clone(), tls, async {
            let _ = stopped.await;
        }));
        Sim {
            sim,
            addr,
            _stop: stop,
        }
    }

    /// Serves the same simulator on another listener, over TLS with `tls` (a stand-in for
    /// `confluent.cloud` at the far end of an egress tunnel); its address.
    pub async fn serve_tls_too(&self, tls: Arc<rustls::ServerConfig>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(simulator::serve(
            listener,
            self.sim.clone(),
            Some(tls),
            std::future::pending(),
        ));
        addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The demo key of a principal (`u-alice`, `u-bob`, …).
    pub fn key(&self, principal: &str) -> DemoKey {
        self.sim
            .demo_keys()
            .into_iter()
            .find(|k| k.principal_id == principal)
            .unwrap_or_else(|| panic!("no demo key for {principal}"))
    }

    /// `Authorization` header value for a principal's demo key.
    pub fn basic(&self, principal: &str) -> String {
        use base64::Engine;
        let key = self.key(principal);
        let pair = format!("{}:{}", key.key_id, key.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    /// Requests the simulator received whose path starts with `prefix`.
    pub fn received(&self, prefix: &str) -> Vec<simulator::RecordedRequest> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.path_and_query.starts_with(prefix))
            .collect()
    }

    /// The API-key creates (`POST /iam/v2/api-keys`) the simulator received.
    pub fn creates(&self) -> Vec<simulator::RecordedRequest> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path_and_query == super::governed::API_KEYS)
            .collect()
    }
}

/// `method path` with `body` (JSON when not empty) through keygate `gw`, as the simulator's
/// principal `who` (Basic with its key), within 10 s.
pub async fn call_as(
    gw: &keygate::Gateway,
    sim: &Sim,
    who: &str,
    method: http::Method,
    path: &str,
    body: &str,
) -> super::Collected {
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", gw.local_addr()))
        .header("authorization", sim.basic(who));
    if !body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_owned(),
        )))
        .unwrap();
    super::within(10, super::send(&super::client(), request)).await
}
