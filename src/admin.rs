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

/// A readiness condition: `Err(reason)` while keygate should not receive traffic.
pub type ReadinessCheck = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Reads the policy revision in force, if any (shown on `/readyz`).
pub type RevisionSource = Box<dyn Fn() -> Option<crate::policy::revision::Revision> + Send + Sync>;

/// What the admin endpoints report.
pub struct AdminState {
    metrics: Arc<Metrics>,
    ready: AtomicBool,
    checks: std::sync::Mutex<Vec<ReadinessCheck>>,
    revision: std::sync::OnceLock<RevisionSource>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// Not ready until [`AdminState::set_ready`].
    pub fn new(metrics: Arc<Metrics>) -> Arc<AdminState> {
        Arc::new(AdminState {
            metrics,
            ready: AtomicBool::new(false),
            checks: std::sync::Mutex::new(Vec::new()),
            revision: std::sync::OnceLock::new(),
        })
    }

    /// Shows the active policy revision on `/readyz`.
    pub fn set_revision(&self, revision: RevisionSource) {
        let _ = self.revision.set(revision);
    }

    /// Adds a condition `/readyz` requires (e.g. authorization data loaded, audit sink healthy).
    pub fn add_check(&self, check: ReadinessCheck) {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(check);
    }

    /// Why keygate is not ready, or `Ok` when it is.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.ready.load(Ordering::Acquire) {
            return Err("not started or shutting down".into());
        }
        for check in self.checks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            check()?;
        }
        Ok(())
    }

    /// Marks keygate ready (config loaded, upstream client built, listener bound) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
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
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".into(),
            );
        }
        match request.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => match self.state.readiness() {
                Ok(()) => text(
                    StatusCode::OK,
                    match self.state.revision.get().and_then(|r| r()) {
                        Some(r) => format!("ready\npolicy revision: {r}\n"),
                        None => "ready\n".into(),
                    },
                ),
                Err(reason) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {reason}\n"),
                ),
            },
            "/metrics" => {
                let mut response = Response::new(Body::full(self.state.metrics.render()));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
                response
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
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
