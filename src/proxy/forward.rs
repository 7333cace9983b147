//! Rewrites a downstream request for the upstream and streams the exchange. The exchange (up to
//! the response head) is the request's `upstream` client span, whose context the upstream receives
//! in `traceparent` when tracing is on.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

use http::header::HeaderValue;
use http::uri::PathAndQuery;
use std::sync::Arc;

use http::{Request, Response, StatusCode, Uri, Version};

use http::header::{ACCEPT_ENCODING, CONTENT_TYPE, HOST, LOCATION};
use http::HeaderMap;

use super::headers::strip_hop_by_hop;
use super::links::Links;
use super::pool::BodyIdleTimeout;
use super::{ProxyError, Then, Upstream};
use crate::body::Body;
use crate::error::GatewayError;
use crate::model::Action;
use crate::policy::quota::Outcome;
use crate::stage::Chain;
use crate::state::{InFlight, Landed, RequestState};
use crate::telemetry::metrics::KindLabels;
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

/// The end of the chain: forwards every request that reaches it.
#[derive(Debug, Clone)]
pub struct Forward {
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    /// Rewrites the upstream's links in responses to keygate's origin (`None`: off).
    links: Option<Arc<Links>>,
    /// How long a governed create's response body may take (`upstream.body_timeout`).
    body_timeout: Duration,
}

impl Forward {
    /// The forwarder over a shared upstream client.
    pub fn new(
        upstream: Arc<Upstream>,
        metrics: Arc<Metrics>,
        links: Option<Arc<Links>>,
        body_timeout: Duration,
    ) -> Self {
        Forward {
            upstream,
            metrics,
            links,
            body_timeout,
        }
    }

    /// A governed create's exchange, on a task of its own: the upstream's answer, read whole
    /// (bounded in size and by `upstream.body_timeout`) for the new key's id, and the key counts
    /// settled with it. The create ends the same way whether or not the caller stays: the request
    /// state keeps the receiving end ([`RequestState::in_flight`]), and whoever holds the state
    /// (the chain, or the pipeline's drop guard when the caller left) lands it.
    fn spawn_create(
        &self,
        request: Request<Body>,
        id: HeaderValue,
        hold: Option<crate::policy::quota::Hold>,
    ) -> InFlight {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let upstream = self.upstream.clone();
        let timeout = self.body_timeout;
        let exchange = async move {
            let landed = match forward(&upstream, request, &id).await {
                Ok(response) => {
                    let status = response.status();
                    let (result, created_key_id) = read_create(response, timeout).await;
                    Landed {
                        status: Some(status),
                        result,
                        created_key_id,
                    }
                }
                Err(err) => Landed {
                    status: None,
                    result: Err(err),
                    created_key_id: None,
                },
            };
            if let Some(hold) = hold {
                hold.settle(outcome_of(landed.status, landed.result.as_ref().err()));
            }
            // Nobody waiting: the receiver was dropped with a state that no longer matters.
            let _ = tx.send(landed);
        };
        tokio::spawn(trace::in_span(exchange, tracing::Span::current()));
        InFlight(rx)
    }
}

/// Waits for the forwarded create's exchange kept in `state` ([`Forward::spawn_create`]) and
/// records the upstream's status and the key it created there. The exchange stays in `state`
/// while this waits: dropped, the wait can be taken up again by the next holder of the state.
pub async fn land(state: &mut RequestState) -> Result<Response<Body>, ProxyError> {
    let Some(in_flight) = state.in_flight.as_mut() else {
        return Err(ProxyError::Protocol(
            "no upstream exchange in flight".into(),
        ));
    };
    let landed = (&mut in_flight.0).await;
    state.in_flight = None;
    let landed = landed.map_err(|_| {
        ProxyError::Protocol("the upstream exchange ended without an answer".into())
    })?;
    state.upstream_status = landed.status;
    state.created_key_id = landed.created_key_id;
    landed.result
}

impl Chain for Forward {
    async fn run(
        &self,
        request: &mut Request<Body>,
        state: &mut RequestState,
    ) -> Result<Response<Body>, GatewayError> {
        let mut request = std::mem::take(request);
        // INVARIANT: a governed request is forwarded only with the decision stage's permit.
        if state.governed.is_some() && state.permit.is_none() {
            return Err(GatewayError::Internal(
                "governed request reached the forwarder without a decision",
            ));
        }
        let id = state.id.clone();
        // A request through the egress listener keeps the upstream's names (the caller asked for
        // the upstream's host), so its links are not rewritten to keygate's origin.
        let via_egress = state.egress.is_some();
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
        let create = state
            .governed
            .as_ref()
            .is_some_and(|r| r.action == Action::CreateApiKey);
        let sent = if create {
            let hold = state.quota_hold.take();
            let in_flight = self.spawn_create(request, id, hold);
            state.in_flight = Some(in_flight);
            land(state).await
        } else {
            let sent = forward(&self.upstream, request, &id).await;
            if let Ok(response) = &sent {
                state.upstream_status = Some(response.status());
            }
            if let Some(hold) = state.quota_hold.take() {
                hold.settle(outcome_of(
                    sent.as_ref().ok().map(Response::status),
                    sent.as_ref().err(),
                ));
            }
            sent
        };
        match sent {
            Ok(response) => {
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
                self.metrics
                    .upstream_errors
                    .get_or_create(&KindLabels { kind: err.kind() })
                    .inc();
                Err(err.into())
            }
        }
    }
}

/// How a forwarded create or delete ended, for the key counts: not connected, nothing happened
/// upstream; anything later (a timeout, a lost connection, a body that did not arrive) it may
/// have (counted, to fail closed).
fn outcome_of(status: Option<StatusCode>, err: Option<&ProxyError>) -> Outcome {
    match (status, err) {
        (_, Some(ProxyError::Connect(_) | ProxyError::Tls(_) | ProxyError::ConnectTimeout(_))) => {
            Outcome::Refused
        }
        (Some(status), None) if status.is_success() => Outcome::Succeeded,
        (Some(_), None) => Outcome::Refused,
        _ => Outcome::Unknown,
    }
}

/// Largest create response read to find the new key's id (an ApiKey is about 1 KiB).
const MAX_CREATE_RESPONSE_BYTES: usize = 1024 * 1024;

/// Reads a create response whole (bounded in size and by `timeout`) to find the new key's id,
/// and rebuilds it unchanged. A body that does not arrive in time is a 504, one that breaks off a
/// 502 (an upstream error: the caller never gets a half answer to a create).
async fn read_create(
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
        let forwarder = Forward::new(
            upstream.clone(),
            Arc::new(Metrics::new()),
            None,
            std::time::Duration::from_secs(10),
        );
        let mut request = Request::new(Body::Empty);
        let mut state = RequestState::for_test(http::Method::GET);
        let running = forwarder.run(&mut request, &mut state);
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
