//! The OTLP exporter's HTTP client: hyper-util's pooled client, run on the tokio runtime.
//!
//! The SDK's batch span processor exports from its own thread, polling the export future with a
//! plain `block_on`. hyper-util's client needs a tokio reactor and timer: polled there, it panics on
//! the exporter thread and every span is silently lost. So each export is spawned on the runtime
//! captured at start-up, and the exporter thread only waits for the task's result (a `JoinHandle`
//! can be awaited from any executor). Plain `http` and `https` (webpki roots) endpoints; no
//! reqwest, no second TLS stack. Not a general client: one POST at a time, small responses.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use opentelemetry_http::{HttpClient, HttpError};
use tokio::runtime::Handle;

use super::TraceError;

/// An OTLP export response is a small protobuf (partial-success counts); anything larger is not
/// a collector talking.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Collectors are long-lived; keep one connection warm between batches.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// See the module doc.
#[derive(Debug, Clone)]
pub(super) struct TokioHttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: Handle,
    timeout: Duration,
}

impl TokioHttpClient {
    /// A client on the current tokio runtime; every request is bounded by `timeout`.
    pub(super) fn new(timeout: Duration) -> Result<Self, TraceError> {
        let runtime = Handle::try_current().map_err(|_| TraceError::NoRuntime)?;
        let tls = crate::tls::client_config(None)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(1)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(TokioHttpClient {
            client,
            runtime,
            timeout,
        })
    }

    async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            tokio::time::timeout(timeout, exchange(client, request))
                .await
                .map_err(|_| HttpError::from("otlp export timed out"))?
        });
        // Err: the runtime is shutting down and dropped the task.
        task.await
            .map_err(|_| HttpError::from("otlp export cancelled: runtime shutting down"))?
    }
}

async fn exchange(
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    request: Request<Bytes>,
) -> Result<Response<Bytes>, HttpError> {
    let response = client.request(request.map(Full::new)).await?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await?
        .to_bytes();
    Ok(Response::from_parts(parts, body))
}

// `HttpClient` is declared with `#[async_trait]`; this is the signature that macro produces.
impl HttpClient for TokioHttpClient {
    fn send_bytes<'s, 'f>(
        &'s self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'f>>
    where
        's: 'f,
        Self: 'f,
    {
        Box::pin(self.send(request))
    }
}
