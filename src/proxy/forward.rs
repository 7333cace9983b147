//! Rewrites a downstream request for the upstream and streams the exchange. The exchange (up to
//! the response head) is the request's `upstream` client span, whose context the upstream receives
//! in `traceparent` when tracing is on.

use http::header::HeaderValue;
use http::uri::PathAndQuery;
use std::sync::Arc;

use http::{Request, Response, StatusCode, Uri, Version};

use super::headers::strip_hop_by_hop;
use super::{ProxyError, Upstream};
use crate::body::Body;
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::guard::GovernedRoute;
use crate::policy::Permit;
use crate::stage::Chain;
use crate::telemetry::metrics::KindLabels;
use crate::telemetry::observe::mint_request_id;
use crate::telemetry::{trace, Metrics, X_REQUEST_ID};

/// Forwards `request` to the upstream: same method, path, query, end-to-end headers and body
/// (streamed); `Host`/`:authority` become the upstream's; hop-by-hop headers are removed both ways.
pub async fn forward(
    upstream: &Upstream,
    request: Request<Body>,
    request_id: &HeaderValue,
) -> Result<Response<Body>, ProxyError> {
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

    let sent = trace::in_span(
        upstream.send(Request::from_parts(parts, body)),
        span.clone(),
    )
    .await;
    trace::finish_upstream_span(
        &span,
        sent.as_ref()
            .map(|r| r.status().as_u16())
            .map_err(|e| e.kind()),
    );
    let mut response = sent?;
    strip_hop_by_hop(response.headers_mut());
    Ok(response)
}

/// The innermost service: forwards every request that reaches it.
#[derive(Debug, Clone)]
pub struct Forward {
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
}

impl Forward {
    /// The forwarding service over a shared upstream client.
    pub fn new(upstream: Arc<Upstream>, metrics: Arc<Metrics>) -> Self {
        Forward { upstream, metrics }
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
        match forward(&self.upstream, request, &id).await {
            Ok(response) => {
                if let Some(ctx) = &ctx {
                    ctx.state().upstream_status = Some(response.status());
                }
                if response.status() == StatusCode::TOO_MANY_REQUESTS {
                    self.metrics.upstream_ratelimited.inc();
                }
                Ok(response)
            }
            Err(err) => {
                self.metrics
                    .upstream_errors
                    .get_or_create(&KindLabels { kind: err.kind() })
                    .inc();
                Err(err.into())
            }
        }
    }
}
