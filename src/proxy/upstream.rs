//! The client to the upstream (over the connection `Pool`), and the classification of its
//! failures.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::connect::HttpConnector;

use super::pool::{Pool, SendError};
use super::ProxyError;
use crate::body::Body;
use crate::proxy::config::UpstreamConfig;
use crate::tls::{self, TlsError};

/// The upstream: where it is and the connections to it.
#[derive(Debug, Clone)]
pub struct Upstream {
    pool: Arc<Pool>,
    connect_timeout: Duration,
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
        let scheme = config.url.scheme().cloned().unwrap_or(Scheme::HTTPS);
        let authority = config
            .url
            .authority()
            .cloned()
            .unwrap_or_else(|| Authority::from_static("api.confluent.cloud"));
        Ok(Upstream {
            pool: Pool::new(
                connector,
                scheme,
                authority,
                config.idle_timeout,
                config.max_idle_per_host,
                config.request_timeout,
                config.body_idle_timeout,
            ),
            connect_timeout: config.connect_timeout,
        })
    }

    /// The upstream authority (what `Host` becomes).
    pub fn authority(&self) -> &Authority {
        self.pool.authority()
    }

    /// Sends a request (its URI origin-form, `/path?query`), waiting at most the request timeout
    /// for the response head. The response body streams from the upstream connection. (Not an
    /// `async fn`, so that its future does not keep a second copy of the request; see
    /// `Pool::send`.)
    pub fn send(
        &self,
        request: Request<Body>,
    ) -> impl Future<Output = Result<Response<Body>, ProxyError>> + Send + '_ {
        super::Then::new(self.pool.send(request), move |sent| match sent {
            Ok(response) => Ok(response),
            Err(SendError::Timeout) => Err(ProxyError::Timeout(self.pool.request_timeout())),
            Err(err) => Err(self.classify(&err)),
        })
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
        *request.uri_mut() = Uri::from(pq);
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

    fn classify(&self, err: &SendError) -> ProxyError {
        let is_connect = matches!(err, SendError::Connect(_));
        let err = err.as_error();
        let mut innermost = err.to_string();
        let mut next: Option<&(dyn StdError + 'static)> = Some(err);
        while let Some(cause) = next {
            if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
                return ProxyError::Tls(tls.to_string());
            }
            innermost = cause.to_string();
            next = match cause.downcast_ref::<std::io::Error>() {
                Some(io) if io.kind() == std::io::ErrorKind::TimedOut && is_connect => {
                    return ProxyError::ConnectTimeout(self.connect_timeout);
                }
                // `io::Error::source` skips the error it wraps; TLS failures hide in there.
                Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
                None => cause.source(),
            };
        }
        if is_connect {
            ProxyError::Connect(innermost)
        } else {
            ProxyError::Protocol(innermost)
        }
    }
}
