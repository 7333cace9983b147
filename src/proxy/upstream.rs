//! The pooled client to the upstream, and the classification of its failures.

use std::error::Error as StdError;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::ProxyError;
use crate::body::Body;
use crate::config::UpstreamConfig;
use crate::tls::{self, TlsError};

/// The upstream: where it is and a pooled client to it.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    scheme: Scheme,
    authority: Authority,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl Upstream {
    /// Builds the client from the validated config (reads the optional CA file).
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, TlsError> {
        let tls = tls::client_config(config.ca_file.as_deref())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Upstream {
            client,
            scheme: config.url.scheme().cloned().unwrap_or(Scheme::HTTPS),
            authority: config
                .url
                .authority()
                .cloned()
                .unwrap_or_else(|| Authority::from_static("api.confluent.cloud")),
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
        })
    }

    /// The upstream URI for a downstream path and query.
    pub fn uri_for(&self, path_and_query: PathAndQuery) -> Uri {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .unwrap_or_else(|_| Uri::from_static("/"))
    }

    /// The upstream authority (what `Host` becomes).
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Sends a request whose URI is already absolute, waiting at most the request timeout for the
    /// response head.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        match tokio::time::timeout(self.request_timeout, self.client.request(request)).await {
            Err(_) => Err(ProxyError::Timeout(self.request_timeout)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(self.classify(&err)),
        }
    }

    /// `GET path_and_query` with the given `Authorization`, body read up to `limit` bytes. For
    /// keygate's own lookups (identity, role bindings, inventory), not for forwarding.
    pub async fn get(
        &self,
        path_and_query: &str,
        authorization: &HeaderValue,
        limit: usize,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), ProxyError> {
        let pq = PathAndQuery::try_from(path_and_query)
            .map_err(|e| ProxyError::Protocol(format!("invalid lookup path: {e}")))?;
        let mut request = Request::new(Body::Empty);
        *request.uri_mut() = self.uri_for(pq);
        let mut authorization = authorization.clone();
        authorization.set_sensitive(true);
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, authorization);
        request.headers_mut().insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        let response = self.send(request).await?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| ProxyError::Protocol(format!("reading lookup response: {e}")))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    fn classify(&self, err: &hyper_util::client::legacy::Error) -> ProxyError {
        let mut innermost = err.to_string();
        let mut next: Option<&(dyn StdError + 'static)> = err.source();
        while let Some(cause) = next {
            if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
                return ProxyError::Tls(tls.to_string());
            }
            innermost = cause.to_string();
            next = match cause.downcast_ref::<std::io::Error>() {
                Some(io) if io.kind() == std::io::ErrorKind::TimedOut && err.is_connect() => {
                    return ProxyError::ConnectTimeout(self.connect_timeout);
                }
                // `io::Error::source` skips the error it wraps; TLS failures hide in there.
                Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
                None => cause.source(),
            };
        }
        if err.is_connect() {
            ProxyError::Connect(innermost)
        } else {
            ProxyError::Protocol(innermost)
        }
    }
}
