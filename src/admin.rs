//! The admin listener: `/healthz`, `/readyz`, `/metrics`, on its own (loopback by default) address.
//!
//! Deliberately separate from the downstream listener, so probes and scrapes never compete with
//! (or get rate limited like) API traffic, and metrics are not exposed to callers. It serves no
//! other paths and never proxies.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use tower::Service;

use crate::body::Body;
use crate::telemetry::Metrics;

/// The Prometheus text exposition media type (OpenMetrics text as encoded by prometheus-client).
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin endpoints report.
#[derive(Debug)]
pub struct AdminState {
    metrics: Arc<Metrics>,
    ready: AtomicBool,
}

impl AdminState {
    /// Not ready until [`AdminState::set_ready`].
    pub fn new(metrics: Arc<Metrics>) -> Arc<AdminState> {
        Arc::new(AdminState {
            metrics,
            ready: AtomicBool::new(false),
        })
    }

    /// Marks keygate ready (config loaded, upstream client built, listener bound) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The admin service.
#[derive(Debug, Clone)]
pub struct Admin {
    state: Arc<AdminState>,
}

impl Admin {
    /// The service over shared state.
    pub fn new(state: Arc<AdminState>) -> Admin {
        Admin { state }
    }

    fn respond(&self, request: &Request<Body>) -> Response<Body> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        match request.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.state.is_ready() => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            "/metrics" => {
                let mut response = Response::new(Body::full(self.state.metrics.render()));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
                response
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl Service<Request<Body>> for Admin {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        ready(Ok(self.respond(&request)))
    }
}
