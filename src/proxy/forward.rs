//! Rewrites a downstream request for the upstream and streams the exchange. The exchange (up to
//! the response head) is the request's `upstream` client span, whose context the upstream receives
//! in `traceparent` when tracing is on.

use std::future::Future;

use http::header::HeaderValue;
use http::uri::PathAndQuery;
use std::sync::Arc;

use http::{Request, Response, StatusCode, Uri, Version};

use http::header::{ACCEPT_ENCODING, CONTENT_TYPE, HOST, LOCATION};
use http::HeaderMap;

use super::headers::strip_hop_by_hop;
use super::links::Links;
use super::{ProxyError, Then, Upstream};
use crate::body::Body;
use crate::context::{EgressRequest, RequestContext};
use crate::error::GatewayError;
use crate::model::GovernedRoute;
use crate::policy::quota::Outcome;
use crate::policy::Permit;
use crate::stage::Chain;
use crate::telemetry::metrics::KindLabels;
use crate::telemetry::observe::mint_request_id;
use crate::telemetry::{trace, Metrics, X_REQUEST_ID};

/// Forwards `request` to the upstream: same method, path, query, end-to-end headers and body
/// (streamed); `Host`/`:authority` become the upstream's; hop-by-hop headers are removed both ways.
///
/// The request is rewritten and handed to the upstream client before the future is built, so
/// the future does not also keep the request (an `async fn` keeps its by-value arguments for its
/// whole life; every request's future embeds this one).
pub fn forward<'a>(
    upstream: &'a Upstream,
    request: Request<Body>,
    request_id: &HeaderValue,
) -> impl Future<Output = Result<Response<Body>, ProxyError>> + Send + 'a {
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    // Origin-form; the pool adds scheme and authority when the connection is h2.
    parts.uri = Uri::from(path_and_query);
    // keygate speaks HTTP/1.1 or h2 to the upstream as ALPN decides, whatever the caller used.
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    // The pool replaces `Host` with the upstream's (HTTP/1.1) or removes it for `:authority` (h2).
    // Set after stripping, so a `Connection: x-request-id` cannot remove it.
    parts.headers.insert(X_REQUEST_ID, request_id.clone());
    let span = trace::upstream_span(&parts.method, upstream.authority());
    // Replaces the caller's `traceparent` with the upstream span's, when tracing is on.
    trace::inject(&span, &mut parts.headers);
    let sending = trace::in_span(
        upstream.send(Request::from_parts(parts, body)),
        span.clone(),
    );
    Then::new(sending, move |sent: Result<Response<Body>, ProxyError>| {
        trace::finish_upstream_span(
            &span,
            sent.as_ref()
                .map(|r| r.status().as_u16())
                .map_err(|e| e.kind()),
        );
        let mut response = sent?;
        strip_hop_by_hop(response.headers_mut());
        Ok(response)
    })
}

/// The innermost service: forwards every request that reaches it.
#[derive(Debug, Clone)]
pub struct Forward {
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    /// Rewrites the upstream's links in responses to keygate's origin (`None`: off).
    links: Option<Arc<Links>>,
}

impl Forward {
    /// The forwarding service over a shared upstream client.
    pub fn new(upstream: Arc<Upstream>, metrics: Arc<Metrics>, links: Option<Arc<Links>>) -> Self {
        Forward {
            upstream,
            metrics,
            links,
        }
    }
}

impl Chain for Forward {
    async fn run(&self, request: &mut Request<Body>) -> Result<Response<Body>, GatewayError> {
        let request = std::mem::take(request);
        let ctx = request.extensions().get::<Arc<RequestContext>>().cloned();
        // INVARIANT: a governed request is forwarded only with the decision stage's permit.
        let governed = request.extensions().get::<GovernedRoute>().is_some();
        let permitted = request.extensions().get::<Permit>().is_some();
        if governed && !permitted {
            return Err(GatewayError::Internal(
                "governed request reached the forwarder without a decision",
            ));
        }
        let id = ctx
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_else(mint_request_id);
        let mut request = request;
        // A request through the egress listener keeps the upstream's names (the caller asked for
        // the upstream's host), so its links are not rewritten to keygate's origin.
        let via_egress = request.extensions().get::<EgressRequest>().is_some();
        let links = self
            .links
            .as_ref()
            .filter(|_| !via_egress)
            .and_then(|links| {
                let target = links.target(
                    request.headers().get(HOST),
                    request.uri().authority().map(|a| a.as_str()),
                )?;
                ask_for_identity_encoding(request.headers_mut());
                Some((links.clone(), request.method().clone(), target))
            });
        match forward(&self.upstream, request, &id).await {
            Ok(response) => {
                if let Some(ctx) = &ctx {
                    ctx.state().upstream_status = Some(response.status());
                    settle_quota(
                        ctx,
                        if response.status().is_success() {
                            Outcome::Succeeded
                        } else {
                            Outcome::Refused
                        },
                    );
                }
                if response.status() == StatusCode::TOO_MANY_REQUESTS {
                    self.metrics.upstream_ratelimited.inc();
                }
                match links {
                    // Boxed: only responses that carry links pay for reading a body here.
                    Some((links, method, target)) if needs_rewrite(&response) => {
                        Box::pin(links.rewrite(
                            &method,
                            target,
                            response,
                            &self.metrics.link_rewrite_skipped,
                        ))
                        .await
                        .map_err(GatewayError::from)
                    }
                    _ => Ok(response),
                }
            }
            Err(err) => {
                if let Some(ctx) = &ctx {
                    // Not connected: nothing happened upstream. Anything later (a timeout, a lost
                    // connection): it may have (counted, to fail closed).
                    settle_quota(
                        ctx,
                        match err {
                            ProxyError::Connect(_)
                            | ProxyError::Tls(_)
                            | ProxyError::ConnectTimeout(_) => Outcome::Refused,
                            ProxyError::Timeout(_)
                            | ProxyError::BodyTimeout(_)
                            | ProxyError::Protocol(_) => Outcome::Unknown,
                        },
                    );
                }
                self.metrics
                    .upstream_errors
                    .get_or_create(&KindLabels { kind: err.kind() })
                    .inc();
                Err(err.into())
            }
        }
    }
}

/// Settles a governed create's or delete's hold on the key counts (`policy::quota`).
fn settle_quota(ctx: &RequestContext, outcome: Outcome) {
    if let Some(hold) = ctx.take_quota_hold() {
        hold.settle(outcome);
    }
}

/// With link rewriting on, a JSON body must come back unencoded: a caller's `Accept-Encoding`
/// becomes `identity` (JSON answers of a few KiB gain little from compression, and a compressed
/// body's links would lead past keygate).
fn ask_for_identity_encoding(headers: &mut HeaderMap) {
    if headers.contains_key(ACCEPT_ENCODING) {
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
}

/// Whether a response could carry upstream links: a `Location` or a JSON body.
fn needs_rewrite(response: &Response<Body>) -> bool {
    let headers = response.headers();
    headers.contains_key(LOCATION)
        || headers.contains_key(http::header::CONTENT_LOCATION)
        || headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| memchr::memmem::find(v.as_bytes(), b"json").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_forwarding_future_stays_small() {
        // Every request's future embeds the forwarder's, and is copied into its box per request.
        // As async fns taking the request by value, forward → Upstream::send → Pool::send kept
        // the request and the exchange several times over: 6.8 KB for `forward` alone.
        let config = crate::config::Config::from_toml(
            "[listener]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n\
             [authz]\norg_id = \"9bb441c4-edef-46ac-8a41-c49e44a3fd9a\"\n\
             bindings = \"b.toml\"\ninventory = \"i.toml\"\n",
        )
        .unwrap();
        let upstream = Arc::new(Upstream::new(&config.upstream).unwrap());
        let id = HeaderValue::from_static("id");
        let forwarding = forward(&upstream, Request::new(Body::Empty), &id);
        assert!(
            std::mem::size_of_val(&forwarding) < 1024,
            "forward: {} bytes",
            std::mem::size_of_val(&forwarding)
        );
        let forwarder = Forward::new(upstream.clone(), Arc::new(Metrics::new()), None);
        let mut request = Request::new(Body::Empty);
        let running = forwarder.run(&mut request);
        assert!(
            std::mem::size_of_val(&running) < 2048,
            "Forward::run: {} bytes",
            std::mem::size_of_val(&running)
        );
        // Nothing listens on port 1: the exchange fails as a connect error, not a hang.
        drop(running);
        let err = forwarding.await.unwrap_err();
        assert_eq!(err.kind(), "connect");
    }
}
