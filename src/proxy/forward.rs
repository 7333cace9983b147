//! Rewrites a downstream request for the upstream and streams the exchange. The exchange (up to
//! the response head) is the request's `upstream` client span, whose context the upstream receives
//! in `traceparent` when tracing is on.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

use http::header::HeaderValue;
use http::uri::PathAndQuery;

use http::{Request, Response, Uri, Version};

use http::header::{ACCEPT_ENCODING, CONTENT_TYPE, LOCATION};
use http::HeaderMap;

use super::headers::strip_hop_by_hop;
use super::pool::BodyIdleTimeout;
use super::{ProxyError, Then, Upstream};
use crate::body::Body;
use crate::telemetry::{trace, X_REQUEST_ID};

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

/// Largest create response read to find the new key's id (an ApiKey is about 1 KiB).
const MAX_CREATE_RESPONSE_BYTES: usize = 1024 * 1024;

/// Reads a create response whole (bounded in size and by `timeout`) to find the new key's id,
/// and rebuilds it unchanged. A body that does not arrive in time is a 504, one that breaks off a
/// 502 (an upstream error: the caller never gets a half answer to a create).
pub(crate) async fn read_create(
    response: Response<Body>,
    timeout: Duration,
) -> (Result<Response<Body>, ProxyError>, Option<String>) {
    let (parts, body) = response.into_parts();
    let read = tokio::time::timeout(
        timeout,
        Limited::new(body, MAX_CREATE_RESPONSE_BYTES).collect(),
    )
    .await;
    let error = match read {
        Ok(Ok(collected)) => {
            let bytes: Bytes = collected.to_bytes();
            #[derive(serde::Deserialize)]
            struct Created {
                id: String,
            }
            let id = if parts.status.is_success() {
                serde_json::from_slice::<Created>(&bytes).ok().map(|c| c.id)
            } else {
                None
            };
            return (Ok(Response::from_parts(parts, Body::full(bytes))), id);
        }
        Ok(Err(err)) => match idle_timeout(err.as_ref()) {
            Some(idle) => ProxyError::BodyTimeout(idle),
            None => {
                tracing::warn!(error = %err, "Create response body could not be read");
                ProxyError::Protocol("create response body could not be read".into())
            }
        },
        Err(_) => ProxyError::BodyTimeout(timeout),
    };
    if matches!(error, ProxyError::BodyTimeout(_)) {
        tracing::warn!(
            upstream.status = parts.status.as_u16(),
            "Create response body did not arrive in time"
        );
    }
    (Err(error), None)
}

/// The idle timeout of a body error caused by an upstream that stopped sending.
fn idle_timeout(err: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    let mut next = Some(err);
    while let Some(cause) = next {
        if let Some(idle) = cause.downcast_ref::<BodyIdleTimeout>() {
            return Some(idle.0);
        }
        next = cause.source();
    }
    None
}

/// With link rewriting on, a JSON body must come back unencoded: a caller's `Accept-Encoding`
/// becomes `identity` (JSON answers of a few KiB gain little from compression, and a compressed
/// body's links would lead past keygate).
pub(crate) fn ask_for_identity_encoding(headers: &mut HeaderMap) {
    if headers.contains_key(ACCEPT_ENCODING) {
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
}

/// Whether a response could carry upstream links: a `Location` or a JSON body.
pub(crate) fn needs_rewrite(response: &Response<Body>) -> bool {
    let headers = response.headers();
    headers.contains_key(LOCATION)
        || headers.contains_key(http::header::CONTENT_LOCATION)
        || headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| memchr::memmem::find(v.as_bytes(), b"json").is_some())
}
