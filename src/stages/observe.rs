//! The first and last step of every request: request id, sensitive headers, in-flight gauge, latency, access log, and
//! the request's server span (continuing the caller's trace; free when tracing is off).
//!
//! It runs before anything can log a header: `Authorization`, `Cookie` and friends are marked
//! sensitive here, first. It wraps the response body so the access-log line and the latency metric
//! are written when the last byte is sent — or, if the caller goes away, when the body is dropped
//! (status logged as 499, as nginx does). Only allowlisted header values are logged.

use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::{Frame, SizeHint};

use crate::body::Body;
use crate::state::{EgressRequest, PeerAddr, RequestState};
use crate::telemetry::metrics::MethodLabel;
use crate::telemetry::{trace, Metrics, X_REQUEST_ID, X_UPSTREAM_REQUEST_ID};

/// Headers whose values are secret; marked sensitive before any other stage runs.
pub const SENSITIVE_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    header::SET_COOKIE,
];

/// Longest caller-supplied request id keygate accepts; longer ones are replaced by a minted id.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The `tracing` target of access-log lines (filterable: `keygate::access=off`).
pub const ACCESS_LOG_TARGET: &str = "keygate::access";

/// Status logged for a request whose caller went away before the response was complete.
const CLIENT_CLOSED: u16 = 499;

/// The pipeline root's first and last step (see the module doc): [`Observer::begin`] when a
/// request arrives, [`Completion::respond`] with its response, or [`Completion::abandon`] when
/// the caller went away first.
#[derive(Debug, Clone)]
pub struct Observer {
    metrics: Arc<Metrics>,
    access_log: bool,
}

impl Observer {
    /// The observer; `access_log` turns the per-request log line on.
    pub fn new(metrics: Arc<Metrics>, access_log: bool) -> Self {
        Observer {
            metrics,
            access_log,
        }
    }

    /// Marks the credentials sensitive, accepts or mints the request id, opens the server span,
    /// counts the request in flight, and creates the request's state, owned by the returned
    /// completion until the request is done.
    pub fn begin(&self, request: &mut Request<Body>) -> Completion {
        mark_sensitive(request.headers_mut());
        // The upstream gets the id from the forwarder (set after hop-by-hop stripping), the caller
        // with the response; the stages read it from the state.
        let id = request_id(request.headers());
        let peer = request
            .extensions()
            .get::<PeerAddr>()
            .map(|p| p.0)
            .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let egress = request.extensions().get::<EgressRequest>().cloned();
        let span = trace::server_span(request, &id);
        let state = RequestState::new(id, peer, request.method().clone(), egress);
        self.metrics.in_flight.inc();
        Completion {
            access: self.access_log.then(|| AccessFields::capture(request)),
            state: Box::new(state),
            written: false,
            metrics: self.metrics.clone(),
            status: None,
            bytes: 0,
            span,
        }
    }
}

fn mark_sensitive(headers: &mut HeaderMap) {
    // One pass over the fields, names compared without hashing (a lookup per sensitive name
    // hashed four names on every request, most of them absent).
    for (name, value) in headers.iter_mut() {
        if SENSITIVE_HEADERS.contains(name) {
            value.set_sensitive(true);
        }
    }
}

/// The caller's `X-Request-Id` when it is short visible ASCII, else a minted one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= MAX_REQUEST_ID_LEN && b.iter().all(|c| c.is_ascii_graphic())
        {
            return v.clone();
        }
    }
    mint_request_id()
}

/// 32 hex characters: a random per-process prefix and a counter. Unique, cheap, not secret.
pub fn mint_request_id() -> HeaderValue {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    HeaderValue::from_bytes(&crate::id::unique_hex(&COUNTER))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Allowlisted request fields for the access log, captured before the request moves on.
#[derive(Debug)]
struct AccessFields {
    path: String,
    user_agent: Option<HeaderValue>,
    content_type: Option<HeaderValue>,
    content_length: Option<HeaderValue>,
    version: http::Version,
}

impl AccessFields {
    fn capture(request: &Request<Body>) -> AccessFields {
        let h = request.headers();
        AccessFields {
            path: crate::redact::redact_path(request.uri().path()).into_owned(),
            user_agent: h.get(header::USER_AGENT).cloned(),
            content_type: h.get(header::CONTENT_TYPE).cloned(),
            content_length: h.get(header::CONTENT_LENGTH).cloned(),
            version: request.version(),
        }
    }
}

/// A request's state until it is done, and its access-log line, latency and span, written
/// exactly once: when the last byte of the response is sent, when the response is abandoned, or
/// at once if the caller went away before there was one ([`Completion::abandon`]).
pub struct Completion {
    /// The request's state.
    state: Box<RequestState>,
    /// The line was written (the caller went away: [`Completion::abandon`]).
    written: bool,
    metrics: Arc<Metrics>,
    access: Option<AccessFields>,
    status: Option<u16>,
    bytes: u64,
    /// The server span; it ends with this drop, after the last byte.
    span: tracing::Span,
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("status", &self.status)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl Completion {
    /// The request's server span.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The request's state, lent to the stages.
    pub fn state(&mut self) -> &mut RequestState {
        &mut self.state
    }

    /// The response for the caller: it gets keygate's request id (the one in keygate's log,
    /// audit and traces; the upstream's own travels under its own name), and its body completes
    /// the request when the last byte is sent.
    pub fn respond(mut self, response: Response<Body>) -> Response<ObservedBody> {
        let (mut parts, body) = response.into_parts();
        let id = self.state.id.clone();
        if let Some(upstream) = parts.headers.insert(X_REQUEST_ID, id) {
            if upstream != parts.headers[X_REQUEST_ID] {
                parts.headers.insert(X_UPSTREAM_REQUEST_ID, upstream);
            }
        }
        self.status = Some(parts.status.as_u16());
        Response::from_parts(
            parts,
            ObservedBody {
                inner: body,
                completion: Some(self),
            },
        )
    }

    /// The caller went away before its response: the request is logged now (status 499, as
    /// nginx does) and its state handed back, for the audit record.
    pub fn abandon(mut self) -> Box<RequestState> {
        self.state.client_gone = true;
        self.status = None;
        self.write();
        self.written = true;
        // What is left behind is never read (a placeholder of the same request, only on this
        // rare path).
        let placeholder = RequestState::new(
            self.state.id.clone(),
            self.state.peer,
            self.state.method.clone(),
            None,
        );
        std::mem::replace(&mut self.state, Box::new(placeholder))
    }

    fn write(&self) {
        let state = &self.state;
        let _entered = self.span.enter();
        let elapsed = state.started.elapsed();
        let route = state.route.as_str();
        let status = self.status.unwrap_or(CLIENT_CLOSED);
        trace::finish_server_span(&self.span, &state.method, &state.span_facts(), status);
        self.metrics.in_flight.dec();
        self.metrics
            .count_request(state.route, MethodLabel::from(&state.method), status);
        self.metrics
            .observe_latency(state.route, elapsed.as_secs_f64());
        let Some(access) = &self.access else {
            return;
        };
        let text = |v: &Option<HeaderValue>| {
            v.as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        tracing::event!(
            target: ACCESS_LOG_TARGET,
            tracing::Level::INFO,
            request.id = %state.id_str(),
            peer = %state.peer,
            method = %state.method,
            path = %access.path,
            version = ?access.version,
            route,
            action = state.action.map(|a| a.as_str()),
            principal.id = state.principal.as_ref().map(|p| p.id()),
            status,
            upstream.status = state.upstream_status.map(|s| s.as_u16()),
            error.code = state.error_code,
            error.detail = state.error_detail.as_deref(),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            bytes = self.bytes,
            user_agent = text(&access.user_agent),
            content_type = text(&access.content_type),
            content_length = text(&access.content_length),
            "Request completed"
        );
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.written {
            self.write();
        }
    }
}

/// The response body sent downstream: counts bytes and completes the request when done.
pub struct ObservedBody {
    inner: Body,
    completion: Option<Completion>,
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::body::BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(c)) = (frame.data_ref(), this.completion.as_mut()) {
                    c.bytes += data.len() as u64;
                }
                if http_body::Body::is_end_stream(&this.inner) {
                    this.completion = None;
                }
            }
            Poll::Ready(None) => this.completion = None,
            Poll::Ready(Some(Err(_))) => {
                if let Some(c) = this.completion.as_mut() {
                    c.status = Some(CLIENT_CLOSED);
                }
                this.completion = None;
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // An empty body may never be polled: complete now rather than lose the log line.
        self.completion.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_request_id_is_kept_when_sane() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
    }

    #[test]
    fn absent_or_odd_request_id_is_minted() {
        let mut h = HeaderMap::new();
        let minted = request_id(&h);
        assert_eq!(minted.len(), 32);
        h.insert(X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        h.insert(X_REQUEST_ID, HeaderValue::from_str(&long).unwrap());
        assert_eq!(request_id(&h).len(), 32);
    }

    #[test]
    fn minted_ids_are_unique_hex_with_a_counter_at_the_end() {
        let a = mint_request_id();
        let b = mint_request_id();
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert!(
                id.as_bytes()
                    .iter()
                    .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
                "{id:?}"
            );
        }
        // Same process prefix, counter one apart.
        assert_eq!(a.as_bytes()[..16], b.as_bytes()[..16]);
        let counter =
            |v: &HeaderValue| u64::from_str_radix(&v.to_str().unwrap()[16..], 16).unwrap();
        assert!(counter(&b) > counter(&a));
    }

    #[test]
    fn credentials_are_marked_sensitive() {
        let mut h = HeaderMap::new();
        h.append(header::AUTHORIZATION, HeaderValue::from_static("Basic a"));
        h.append(header::AUTHORIZATION, HeaderValue::from_static("Basic b"));
        h.append(header::COOKIE, HeaderValue::from_static("s=1"));
        mark_sensitive(&mut h);
        assert!(h
            .get_all(header::AUTHORIZATION)
            .iter()
            .all(|v| v.is_sensitive()));
        assert!(h[header::COOKIE].is_sensitive());
        assert!(format!("{h:?}").contains("Sensitive"));
        assert!(!format!("{h:?}").contains("Basic a"));
    }
}
