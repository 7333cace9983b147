//! Audit in the pipeline: one event per governed request, whatever its outcome; two for a create.
//!
//! - [`AuditLayer`] sits outside the error mapping, so it sees every response keygate sends,
//!   including the ones it synthesised (guard, identity, policy, rate-limit denials, upstream
//!   failures). It writes the `response_complete` event; in `blocking` mode the upstream response
//!   is held until that event is durable, and if it cannot be written the caller gets 503 instead
//!   (no durable audit, no action reported as done).
//! - [`AuditGateStage`] runs last before the forwarder: for an allowed create it queues the
//!   `request_received` record and lets the create go on while the record is committed (one
//!   fsync less in series per create). The audit layer waits for that record *and* the
//!   `response_complete` record before it releases the response, so no caller ever holds a
//!   secret the trail does not record: if either write fails the caller gets 503 instead. A crash
//!   in between can leave a key created upstream whose records never reached the disk; the
//!   reconcile run (`crate::reconcile`) finds and reports it (unmanaged, or an unresolved create).
//!
//! The created key's id is read from the create response (never its secret); the response body
//! reaches the caller byte for byte. Each durable write runs in an `audit_write` trace span.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tower::{Layer, Service};

use super::{
    method_name, AuditEvent, AuditRecord, Auditor, DecisionInfo, DecisionResult, EventSource,
    EventType, HttpInfo, PrincipalInfo, Stage as EventStage, Target,
};
use crate::body::Body;
use crate::context::{RequestContext, RouteClass};
use crate::error::GatewayError;
use crate::guard::{GovernedBody, GovernedRoute};
use crate::policy::action::Action;
use crate::policy::principal::AuthMethod as PrincipalAuth;
use crate::redact::{redact_path, redact_text};
use crate::stage::Stage;
use crate::telemetry::trace;

/// Largest create response read to find the new key's id (an ApiKey is about 1 KiB).
const MAX_CREATE_RESPONSE_BYTES: usize = 1024 * 1024;

/// What the audit stages share.
#[derive(Debug)]
pub struct AuditContext {
    auditor: Arc<Auditor>,
    source: EventSource,
    ungoverned: bool,
}

impl AuditContext {
    /// Audit through `auditor`, events from `source`; `ungoverned` also records other routes.
    pub fn new(auditor: Arc<Auditor>, source: EventSource, ungoverned: bool) -> Arc<Self> {
        Arc::new(AuditContext {
            auditor,
            source,
            ungoverned,
        })
    }

    /// The auditor.
    pub fn auditor(&self) -> &Arc<Auditor> {
        &self.auditor
    }
}

/// Builds the event for a request from its context.
fn event(
    audit: &AuditContext,
    ctx: &RequestContext,
    stage: EventStage,
    path: &str,
    status: Option<StatusCode>,
    created_key_id: Option<String>,
    display_name: Option<String>,
) -> AuditEvent {
    let state = ctx.state();
    let action = state.action;
    let mut record = AuditRecord::new(
        stage,
        ctx.id_str(),
        match action {
            Some(action) => method_name(action),
            None if state.route == RouteClass::Governed => "RejectedApiKeyRequest",
            None => "HttpRequest",
        },
    );
    record.client_address = Some(ctx.peer);
    record.http = Some(HttpInfo {
        method: ctx.method.to_string(),
        // Paths are the caller's text: a secret pasted into one is masked here, by the builder,
        // so the sinks' own scrub stays a last resort (and its counter a bug signal).
        path: redact_path(path).into_owned(),
    });
    record.principal = state.principal.as_ref().map(|p| {
        let key_id = match p.auth() {
            PrincipalAuth::ApiKey { key_id } | PrincipalAuth::Directory { key_id } => {
                Some(key_id.clone())
            }
            PrincipalAuth::Jwt { .. } | PrincipalAuth::Mtls { .. } => None,
        };
        PrincipalInfo {
            id: p.id().to_string(),
            kind: super::PrincipalKind::from_id(p.id()),
            authentication_method: match p.auth() {
                PrincipalAuth::ApiKey { .. } | PrincipalAuth::Directory { .. } => {
                    super::AuthMethod::Basic
                }
                PrincipalAuth::Jwt { .. } => super::AuthMethod::Bearer,
                PrincipalAuth::Mtls { .. } => super::AuthMethod::Mtls,
            },
            key_id,
        }
    });
    let decision = state.decision.as_ref();
    let target = Target {
        owner: decision.and_then(|d| d.target.owner_id.clone()),
        resource_id: decision.and_then(|d| d.target.resource_id.clone()),
        resource_type: decision
            .and_then(|d| d.target.resource_type)
            .map(|t| t.as_str().to_string()),
        environment: decision.and_then(|d| d.target.environment.clone()),
        key_id: state
            .key_id
            .as_deref()
            .map(|k| redact_text(k).into_owned())
            .or_else(|| created_key_id.clone()),
        display_name,
    };
    if target != Target::default() {
        record.target = Some(target);
    }
    if let Some(decided_by) = state.decided_by {
        record.decision = Some(DecisionInfo {
            result: match (state.error_code, status) {
                (None, _) => DecisionResult::Allow,
                (Some(_), Some(s)) if s.is_server_error() => DecisionResult::Error,
                (Some(_), _) => DecisionResult::Deny,
            },
            decided_by,
            rule_ids: decision.map(|d| d.rule_ids.clone()).unwrap_or_default(),
            // The error that ended the request explains the outcome better than an earlier allow.
            explanation: state
                .error_detail
                .clone()
                .or_else(|| decision.map(|d| d.explanation.clone())),
            dry_run_findings: decision.map(|d| d.dry_run.clone()).unwrap_or_default(),
            warnings: decision.map(|d| d.warnings.clone()).unwrap_or_default(),
        });
    }
    record.policy_revision = decision.and_then(|d| d.revision.as_deref().cloned());
    record.status = status.map(|s| s.as_u16());
    record.upstream_status = state.upstream_status.map(|s| s.as_u16());
    record.created_key_id = created_key_id;
    record.latency_ms = Some(ctx.started.elapsed().as_secs_f64() * 1000.0);
    let event_type = action
        .map(EventType::from)
        .unwrap_or(EventType::HttpRequest);
    AuditEvent::new(&audit.source, event_type, record)
}

// === impl AuditGateStage ===

/// Queues the `request_received` record of an allowed create before it is forwarded; the audit
/// layer awaits it before the response is released.
#[derive(Debug)]
pub struct AuditGateStage {
    audit: Arc<AuditContext>,
}

impl AuditGateStage {
    /// The gate over the shared audit context.
    pub fn new(audit: Arc<AuditContext>) -> Self {
        AuditGateStage { audit }
    }
}

impl Stage for AuditGateStage {
    fn name(&self) -> &'static str {
        "audit_gate"
    }

    fn applies_to(&self, request: &Request<Body>) -> bool {
        self.audit.auditor.is_enabled()
            && request
                .extensions()
                .get::<GovernedRoute>()
                .is_some_and(|r| r.action == Action::CreateApiKey)
    }

    async fn apply(
        &self,
        request: &mut Request<Body>,
        ctx: Arc<RequestContext>,
    ) -> Result<(), GatewayError> {
        // The display name lets reconcile match a create whose outcome was never recorded.
        let display_name = match request.extensions().get::<GovernedBody>() {
            Some(GovernedBody::Create(spec)) if !spec.display_name.is_empty() => {
                Some(spec.display_name.clone())
            }
            _ => None,
        };
        let event = event(
            &self.audit,
            &ctx,
            EventStage::RequestReceived,
            request.uri().path(),
            None,
            None,
            display_name,
        );
        // Queued, in file order before anything this request records later; the fsync runs while
        // the create is forwarded. Only a refusal to queue (an unhealthy sink) stops the create.
        let deferred = trace::in_span(
            self.audit.auditor.emit_deferred(&event),
            trace::audit_write_span("request_received"),
        )
        .await
        .map_err(|e| GatewayError::AuditUnavailable(e.to_string()))?;
        ctx.defer_audit(deferred);
        Ok(())
    }
}

// === impl AuditLayer ===

/// Builds [`Audited`].
#[derive(Debug, Clone)]
pub struct AuditLayer {
    audit: Arc<AuditContext>,
}

impl AuditLayer {
    /// The layer over the shared audit context.
    pub fn new(audit: Arc<AuditContext>) -> Self {
        AuditLayer { audit }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audited<S>;
    fn layer(&self, inner: S) -> Audited<S> {
        Audited {
            inner,
            audit: self.audit.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Audited`]'s future: the inner pipeline's own when auditing is off (no extra allocation
    /// on every request), or the audited exchange.
    #[project = AuditedProj]
    pub enum AuditedFuture<F> {
        /// Auditing is off.
        Direct { #[pin] inner: F },
        /// The exchange and its audit record.
        Audited { inner: Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>> },
    }
}

impl<F> Future for AuditedFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuditedProj::Direct { inner } => inner.poll(cx),
            AuditedProj::Audited { inner } => inner.as_mut().poll(cx),
        }
    }
}

/// See the module doc.
#[derive(Debug, Clone)]
pub struct Audited<S> {
    inner: S,
    audit: Arc<AuditContext>,
}

impl<S> Service<Request<Body>> for Audited<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = AuditedFuture<S::Future>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if !self.audit.auditor.is_enabled() {
            return AuditedFuture::Direct {
                inner: self.inner.call(request),
            };
        }
        let ctx = request.extensions().get::<Arc<RequestContext>>().cloned();
        let path = request.uri().path().to_string();
        let audit = self.audit.clone();
        let future = self.inner.call(request);
        AuditedFuture::Audited {
            inner: Box::pin(async move {
                let Ok(response) = future.await;
                let Some(ctx) = ctx else {
                    return Ok(response);
                };
                let (route, action) = {
                    let state = ctx.state();
                    (state.route, state.action)
                };
                if route != RouteClass::Governed {
                    if audit.ungoverned {
                        let status = response.status();
                        audit.auditor.emit_nowait(&event(
                            &audit,
                            &ctx,
                            EventStage::ResponseComplete,
                            &path,
                            Some(status),
                            None,
                            None,
                        ));
                    }
                    return Ok(response);
                }
                let (response, created_key_id) =
                    if action == Some(Action::CreateApiKey) && response.status().is_success() {
                        created_key(response, &ctx).await
                    } else {
                        (response, None)
                    };
                let ev = event(
                    &audit,
                    &ctx,
                    EventStage::ResponseComplete,
                    &path,
                    Some(response.status()),
                    created_key_id,
                    None,
                );
                // A create's `request_received` record was queued before forwarding and committed
                // meanwhile: the response waits for it as well as for its own record (queued
                // after it, so durable after it). Both waits are this span.
                let received = ctx.take_deferred_audit();
                let written = trace::in_span(
                    async {
                        let complete = audit.auditor.emit_deferred(&ev).await?;
                        if let Some(received) = received {
                            received.durable().await?;
                        }
                        complete.durable().await
                    },
                    trace::audit_write_span("response_complete"),
                )
                .await;
                match written {
                    Ok(_) => Ok(response),
                    Err(err) => {
                        tracing::error!(request.id = %ctx.id_str(), error = %err, "Audit write failed; response withheld");
                        Ok(GatewayError::AuditUnavailable(err.to_string())
                            .to_response(ctx.id_str()))
                    }
                }
            }),
        }
    }
}

/// Reads a create response (bounded) to find the new key's id, and rebuilds it unchanged. If the
/// body cannot be read the caller gets a 502, recorded in `ctx` as an upstream error.
async fn created_key(
    response: Response<Body>,
    ctx: &RequestContext,
) -> (Response<Body>, Option<String>) {
    let (parts, body) = response.into_parts();
    let bytes: Bytes = match Limited::new(body, MAX_CREATE_RESPONSE_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            tracing::warn!(request.id = %ctx.id_str(), error = %err, "Create response could not be read for audit");
            let error = GatewayError::Upstream(crate::proxy::ProxyError::Protocol(
                "create response body could not be read".into(),
            ));
            let failed = error.to_response(ctx.id_str());
            let mut state = ctx.state();
            state.error_code = Some(error.parts().code);
            state.error_detail = Some(error.detail());
            state.decided_by = error.decided_by();
            return (failed, None);
        }
    };
    #[derive(serde::Deserialize)]
    struct Created {
        id: String,
    }
    let id = serde_json::from_slice::<Created>(&bytes).ok().map(|c| c.id);
    (Response::from_parts(parts, Body::full(bytes)), id)
}
