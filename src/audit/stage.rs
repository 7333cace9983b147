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
//! The created key's id is read from the create response (never its secret) within
//! `upstream.body_timeout`; the response body reaches the caller byte for byte. An upstream that
//! stalls the body gets the caller a 504, recorded with the outcome `upstream_body_timeout`.
//!
//! `response_complete` is written also when the caller disconnects first (outcome `client_gone`):
//! the exchange's future is dropped then, and its drop hands the rest to a task. A create that
//! passed the gate is followed to its end, so the record says what the upstream did and which key
//! it created; anything not yet forwarded is not forwarded. Each durable write runs in an
//! `audit_write` trace span.

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
    EventType, HttpInfo, Outcome, PrincipalInfo, Stage as EventStage, Target,
};
use crate::body::Body;
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::guard::GovernedBody;
use crate::model::Action;
use crate::model::AuthMethod as PrincipalAuth;
use crate::model::GovernedRoute;
use crate::model::RouteClass;
use crate::proxy::pool::BodyIdleTimeout;
use crate::proxy::ProxyError;
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
    body_timeout: std::time::Duration,
}

impl AuditContext {
    /// Audit through `auditor`, events from `source`; `ungoverned` also records other routes.
    /// A create response body is read within `body_timeout`.
    pub fn new(
        auditor: Arc<Auditor>,
        source: EventSource,
        ungoverned: bool,
        body_timeout: std::time::Duration,
    ) -> Arc<Self> {
        Arc::new(AuditContext {
            auditor,
            source,
            ungoverned,
            body_timeout,
        })
    }

    /// The auditor.
    pub fn auditor(&self) -> &Arc<Auditor> {
        &self.auditor
    }
}

/// What an event records beyond the request's context.
#[derive(Debug, Default)]
struct Facts {
    /// The status keygate answered with (none when nothing was answered yet).
    status: Option<StatusCode>,
    /// The key a create made, read from its response.
    created_key_id: Option<String>,
    /// How the exchange ended, when not with keygate's answer handed to the caller.
    outcome: Option<Outcome>,
    /// A create's display name (its `request_received` record, for reconcile to match).
    display_name: Option<String>,
}

/// Builds the event for a request from its context.
fn event(
    audit: &AuditContext,
    ctx: &RequestContext,
    stage: EventStage,
    path: &str,
    facts: Facts,
) -> AuditEvent {
    let Facts {
        status,
        created_key_id,
        outcome,
        display_name,
    } = facts;
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
            PrincipalAuth::Jwt { .. }
            | PrincipalAuth::Mtls { .. }
            | PrincipalAuth::ConfluentSession => None,
        };
        PrincipalInfo {
            id: p.id().to_string(),
            kind: super::PrincipalKind::from_id(p.id()),
            authentication_method: match p.auth() {
                PrincipalAuth::ApiKey { .. } | PrincipalAuth::Directory { .. } => {
                    super::AuthMethod::Basic
                }
                PrincipalAuth::Jwt { .. } => super::AuthMethod::Bearer,
                PrincipalAuth::ConfluentSession => super::AuthMethod::Session,
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
    // A caller that went away received nothing: the status keygate had is still what decided the
    // result above.
    record.status = status
        .filter(|_| outcome != Some(Outcome::ClientGone))
        .map(|s| s.as_u16());
    record.upstream_status = state.upstream_status.map(|s| s.as_u16());
    record.created_key_id = created_key_id;
    record.outcome = outcome;
    record.latency_ms = Some(ctx.started.elapsed().as_secs_f64() * 1000.0);
    record.egress = ctx.egress.as_ref().map(|e| super::EgressInfo {
        host: e.host.to_string(),
        port: e.port,
        workload: e.workload.as_deref().map(str::to_owned),
        refused: None,
    });
    let event_type = action
        .map(EventType::from)
        .unwrap_or(EventType::HttpRequest);
    AuditEvent::new(&audit.source, event_type, record)
}

// === impl AuditGateStage ===

/// Makes the `request_received` record of an allowed create durable before it is forwarded.
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
            Facts {
                display_name,
                ..Facts::default()
            },
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
        // From here the create is forwarded: a caller that goes away no longer stops it.
        ctx.state().forwarding = true;
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
        Audited { exchange: Exchange },
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
            AuditedProj::Audited { exchange } => Pin::new(exchange).poll(cx).map(Ok),
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
        AuditedFuture::Audited {
            exchange: Exchange {
                phase: Phase::Waiting(Box::pin(self.inner.call(request))),
                audit: self.audit.clone(),
                ctx,
                path,
            },
        }
    }
}

// === impl Exchange ===

/// The pipeline's response, boxed so that a dropped exchange can hand it to a task.
type PipelineFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;
/// Recording the response: reading a create's body, the durable write.
type RecordFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// An audited exchange: the pipeline's response, then its record. Dropped before it is done
/// (the caller went away), it hands what is left to a task, so `response_complete` is always
/// written (see the module doc).
pub struct Exchange {
    phase: Phase,
    audit: Arc<AuditContext>,
    ctx: Option<Arc<RequestContext>>,
    path: String,
}

enum Phase {
    Waiting(PipelineFuture),
    Recording(RecordFuture),
    Done,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match self.phase {
            Phase::Waiting(_) => "waiting",
            Phase::Recording(_) => "recording",
            Phase::Done => "done",
        };
        f.debug_struct("Exchange")
            .field("phase", &phase)
            .finish_non_exhaustive()
    }
}

impl Future for Exchange {
    type Output = Response<Body>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<Body>> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::Waiting(pipeline) => {
                    let Ok(response) = std::task::ready!(pipeline.as_mut().poll(cx));
                    let Some(ctx) = this.ctx.clone() else {
                        this.phase = Phase::Done;
                        return Poll::Ready(response);
                    };
                    let path = std::mem::take(&mut this.path);
                    this.phase =
                        Phase::Recording(Box::pin(record(this.audit.clone(), ctx, path, response)));
                }
                Phase::Recording(recording) => {
                    let response = std::task::ready!(recording.as_mut().poll(cx));
                    this.phase = Phase::Done;
                    return Poll::Ready(response);
                }
                // Polled after completion: nothing more will come.
                Phase::Done => return Poll::Pending,
            }
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        let Some(ctx) = self.ctx.take() else { return };
        if matches!(phase, Phase::Done) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let audit = self.audit.clone();
        let path = std::mem::take(&mut self.path);
        // Read when the record is built, whichever phase the exchange was in.
        ctx.state().client_gone = true;
        match phase {
            Phase::Done => {}
            // The record is being written: finish it.
            Phase::Recording(recording) => {
                runtime.spawn(async move {
                    recording.await;
                });
            }
            // A forwarded create: learn what the upstream did, then record it.
            Phase::Waiting(pipeline) if ctx.state().forwarding => {
                tracing::debug!(request.id = %ctx.id_str(), "Caller gone; following the forwarded create to its end");
                runtime.spawn(async move {
                    let Ok(response) = pipeline.await;
                    record(audit, ctx, path, response).await;
                });
            }
            // Not forwarded: it never will be; record that the caller left.
            Phase::Waiting(pipeline) => {
                drop(pipeline);
                runtime.spawn(record_gone(audit, ctx, path));
            }
        }
    }
}

/// Records a finished exchange and returns the response to send: the same one, a 504/502 for a
/// create body that did not arrive, or a 503 when a durable record could not be written. When the
/// caller went away (before or while this runs) nobody receives it, and the record says so.
async fn record(
    audit: Arc<AuditContext>,
    ctx: Arc<RequestContext>,
    path: String,
    response: Response<Body>,
) -> Response<Body> {
    let (route, action) = {
        let state = ctx.state();
        (state.route, state.action)
    };
    if route != RouteClass::Governed {
        if audit.ungoverned {
            let gone = ctx.state().client_gone;
            audit.auditor.emit_nowait(&event(
                &audit,
                &ctx,
                EventStage::ResponseComplete,
                &path,
                Facts {
                    status: Some(response.status()),
                    outcome: gone.then_some(Outcome::ClientGone),
                    ..Facts::default()
                },
            ));
        }
        return response;
    }
    let (response, created_key_id, outcome) =
        if action == Some(Action::CreateApiKey) && response.status().is_success() {
            created_key(response, &ctx, audit.body_timeout).await
        } else {
            (response, None, None)
        };
    let (gone, failed_body) = {
        let state = ctx.state();
        (state.client_gone, failed_body(&state))
    };
    let gone_outcome = gone.then_some(Outcome::ClientGone);
    let outcome = outcome.or(failed_body);
    let ev = event(
        &audit,
        &ctx,
        EventStage::ResponseComplete,
        &path,
        Facts {
            status: Some(response.status()),
            created_key_id,
            outcome: gone_outcome.or(outcome),
            display_name: None,
        },
    );
    // A create's `request_received` record was queued before forwarding and committed
    // meanwhile: the response waits for it as well as for its own record (queued after it, so
    // durable after it). Both waits are this span.
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
        Ok(_) => response,
        Err(err) => {
            tracing::error!(request.id = %ctx.id_str(), error = %err, "Audit write failed; response withheld");
            GatewayError::AuditUnavailable(err.to_string()).to_response(ctx.id_str())
        }
    }
}

/// The outcome of an exchange whose upstream answered with a head but ended in an upstream error:
/// the body failed where another stage read it whole (link rewriting).
fn failed_body(state: &crate::context::ContextState) -> Option<Outcome> {
    if state.upstream_status.is_none()
        || state.decided_by != Some(crate::model::DecidedBy::Upstream)
    {
        return None;
    }
    match state.error_code {
        Some("upstream_timeout") => Some(Outcome::UpstreamBodyTimeout),
        Some(_) => Some(Outcome::UpstreamBodyError),
        None => None,
    }
}

/// Records that the caller went away before anything was forwarded.
async fn record_gone(audit: Arc<AuditContext>, ctx: Arc<RequestContext>, path: String) {
    let route = ctx.state().route;
    if route != RouteClass::Governed && !audit.ungoverned {
        return;
    }
    let ev = event(
        &audit,
        &ctx,
        EventStage::ResponseComplete,
        &path,
        Facts {
            outcome: Some(Outcome::ClientGone),
            ..Facts::default()
        },
    );
    if route != RouteClass::Governed {
        audit.auditor.emit_nowait(&ev);
        return;
    }
    let written = trace::in_span(
        audit.auditor.emit(&ev),
        trace::audit_write_span("response_complete"),
    )
    .await;
    if let Err(err) = written {
        tracing::error!(request.id = %ctx.id_str(), error = %err, "Audit write failed for a request whose caller went away");
    }
}

/// Reads a create response (bounded in size and by `timeout`) to find the new key's id, and
/// rebuilds it unchanged. If the body does not arrive in time the caller gets a 504, if it breaks
/// off a 502, recorded in `ctx` as an upstream error and returned as the outcome.
async fn created_key(
    response: Response<Body>,
    ctx: &RequestContext,
    timeout: std::time::Duration,
) -> (Response<Body>, Option<String>, Option<Outcome>) {
    let (parts, body) = response.into_parts();
    let read = tokio::time::timeout(
        timeout,
        Limited::new(body, MAX_CREATE_RESPONSE_BYTES).collect(),
    )
    .await;
    let (error, outcome) = match read {
        Ok(Ok(collected)) => {
            let bytes: Bytes = collected.to_bytes();
            #[derive(serde::Deserialize)]
            struct Created {
                id: String,
            }
            let id = serde_json::from_slice::<Created>(&bytes).ok().map(|c| c.id);
            return (Response::from_parts(parts, Body::full(bytes)), id, None);
        }
        Ok(Err(err)) => match idle_timeout(err.as_ref()) {
            Some(idle) => (ProxyError::BodyTimeout(idle), Outcome::UpstreamBodyTimeout),
            None => {
                tracing::warn!(request.id = %ctx.id_str(), error = %err, "Create response could not be read for audit");
                (
                    ProxyError::Protocol("create response body could not be read".into()),
                    Outcome::UpstreamBodyError,
                )
            }
        },
        Err(_) => (
            ProxyError::BodyTimeout(timeout),
            Outcome::UpstreamBodyTimeout,
        ),
    };
    if outcome == Outcome::UpstreamBodyTimeout {
        tracing::warn!(request.id = %ctx.id_str(), upstream.status = parts.status.as_u16(), "Create response body did not arrive in time");
    }
    let error = GatewayError::Upstream(error);
    let failed = error.to_response(ctx.id_str());
    let mut state = ctx.state();
    state.error_code = Some(error.parts().code);
    state.error_detail = Some(error.detail());
    state.decided_by = error.decided_by();
    (failed, None, Some(outcome))
}

/// The idle timeout of a body error caused by an upstream that stopped sending.
fn idle_timeout(err: &(dyn std::error::Error + 'static)) -> Option<std::time::Duration> {
    let mut next = Some(err);
    while let Some(cause) = next {
        if let Some(idle) = cause.downcast_ref::<BodyIdleTimeout>() {
            return Some(idle.0);
        }
        next = cause.source();
    }
    None
}
