//! Audit in the pipeline: one event per governed request, whatever its outcome; two for a create.
//!
//! - [`record`] runs at the pipeline's root after the error rescue, so it sees every response
//!   keygate sends, including the ones it synthesised (guard, identity, policy, rate-limit
//!   denials, upstream failures). It writes the `response_complete` event; in `blocking` mode the
//!   response is held until that event is durable, and if it cannot be written the caller gets
//!   503 instead (no durable audit, no action reported as done).
//! - [`AuditGateStage`] runs last before the forwarder: for an allowed create it queues the
//!   `request_received` record and lets the create go on while the record is committed (one
//!   fsync less in series per create). [`record`] waits for that record *and* the
//!   `response_complete` record before it releases the response, so no caller ever holds a
//!   secret the trail does not record: if either write fails the caller gets 503 instead. A crash
//!   in between can leave a key created upstream whose records never reached the disk; the
//!   reconcile run (`crate::reconcile`) finds and reports it (unmanaged, or an unresolved create).
//!
//! The created key's id is read by the forwarder from the create response (never its secret)
//! within `upstream.body_timeout`; the response body reaches the caller byte for byte. An
//! upstream that stalls the body gets the caller a 504, recorded with the outcome
//! `upstream_body_timeout`.
//!
//! `response_complete` is written also when the caller disconnects first (outcome `client_gone`):
//! the pipeline's drop guard (`app.rs`) takes the request's state over. A create that passed the
//! gate is followed to its end, so the record says what the upstream did and which key it
//! created; anything not yet forwarded is not forwarded ([`record_gone`]). Each durable write runs
//! in an `audit_write` trace span.

use std::sync::Arc;

use http::{Request, Response, StatusCode};

use super::Stage;
use crate::audit::{
    method_name, AuditEvent, AuditRecord, Auditor, DecisionInfo, DecisionResult, EventSource,
    EventType, HttpInfo, Outcome, PrincipalInfo, Stage as EventStage, Target,
};
use crate::body::Body;
use crate::error::GatewayError;
use crate::guard::GovernedBody;
use crate::model::Action;
use crate::model::AuthMethod as PrincipalAuth;
use crate::model::RouteClass;
use crate::redact::{redact_path, redact_text};
use crate::state::RequestState;
use crate::telemetry::trace;

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

    /// Whether any event is recorded at all (a sink is configured).
    pub fn is_enabled(&self) -> bool {
        self.auditor.is_enabled()
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
    state: &RequestState,
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
    let action = state.action;
    let mut record = AuditRecord::new(
        stage,
        state.id_str(),
        match action {
            Some(action) => method_name(action),
            None if state.route == RouteClass::Governed => "RejectedApiKeyRequest",
            None => "HttpRequest",
        },
    );
    record.client_address = Some(state.peer);
    record.http = Some(HttpInfo {
        method: state.method.to_string(),
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
            kind: p.kind().into(),
            authentication_method: match p.auth() {
                PrincipalAuth::ApiKey { .. } | PrincipalAuth::Directory { .. } => {
                    crate::audit::AuthMethod::Basic
                }
                PrincipalAuth::Jwt { .. } => crate::audit::AuthMethod::Bearer,
                PrincipalAuth::ConfluentSession => crate::audit::AuthMethod::Session,
                PrincipalAuth::Mtls { .. } => crate::audit::AuthMethod::Mtls,
            },
            key_id,
            external: p.external().map(|e| crate::audit::event::ExternalInfo {
                id: e.id.clone(),
                source: e.source.as_str(),
                issuer: e.issuer.clone(),
                upstream_key_id: e.broker_key_id.clone(),
                acting_as: p.acting_as().map(str::to_owned),
            }),
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
    if stage == EventStage::ResponseComplete {
        // The caller's free text (names, descriptions, key ids) is in it: a secret pasted there is
        // masked here, by the builder, like a path's.
        record.decision_input = decision
            .and_then(|d| d.input.as_deref())
            .and_then(crate::audit::event::RawJson::of)
            .map(|raw| match redact_text(raw.0.get()) {
                std::borrow::Cow::Borrowed(_) => raw,
                std::borrow::Cow::Owned(masked) => {
                    crate::audit::event::RawJson::from_json(masked).unwrap_or(raw)
                }
            });
    }
    // A caller that went away received nothing: the status keygate had is still what decided the
    // result above.
    record.status = status
        .filter(|_| outcome != Some(Outcome::ClientGone))
        .map(|s| s.as_u16());
    record.upstream_status = state.upstream_status.map(|s| s.as_u16());
    record.created_key_id = created_key_id;
    record.outcome = outcome;
    record.latency_ms = Some(state.started.elapsed().as_secs_f64() * 1000.0);
    record.egress = state.egress.as_ref().map(|e| crate::audit::EgressInfo {
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

/// Queues the `request_received` record of an allowed create before it is forwarded; [`record`]
/// awaits it before the response is released.
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

    fn applies_to(&self, _request: &Request<Body>, state: &RequestState) -> bool {
        self.audit.auditor.is_enabled()
            && state
                .governed
                .as_ref()
                .is_some_and(|r| r.action == Action::CreateApiKey)
    }

    async fn apply(
        &self,
        request: &mut Request<Body>,
        state: &mut RequestState,
    ) -> Result<(), GatewayError> {
        // The display name lets reconcile match a create whose outcome was never recorded.
        let display_name = match &state.body {
            Some(GovernedBody::Create(spec)) if !spec.display_name.is_empty() => {
                Some(spec.display_name.clone())
            }
            _ => None,
        };
        let event = event(
            &self.audit,
            state,
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
        state.deferred_audit = Some(deferred);
        // From here the create is forwarded: a caller that goes away no longer stops it.
        state.forwarding = true;
        Ok(())
    }
}

// === recording ===

/// Records a finished exchange (`response_complete`) and returns the response to send: the same
/// one, or a 503 when a durable record could not be written (rescued like any other error, and
/// noted in `state`). When the caller went away (before or while this runs) nobody receives it,
/// and the record says so. `path` is the request's path.
pub async fn record(
    audit: &AuditContext,
    state: &mut RequestState,
    path: &str,
    response: Response<Body>,
) -> Response<Body> {
    if state.route != RouteClass::Governed {
        if audit.ungoverned {
            let gone = state.client_gone;
            audit.auditor.emit_nowait(&event(
                audit,
                state,
                EventStage::ResponseComplete,
                path,
                Facts {
                    status: Some(response.status()),
                    outcome: gone.then_some(Outcome::ClientGone),
                    ..Facts::default()
                },
            ));
        }
        return response;
    }
    let gone_outcome = state.client_gone.then_some(Outcome::ClientGone);
    let ev = event(
        audit,
        state,
        EventStage::ResponseComplete,
        path,
        Facts {
            status: Some(response.status()),
            created_key_id: state.created_key_id.clone(),
            outcome: gone_outcome.or(failed_body(state)),
            display_name: None,
        },
    );
    // A create's `request_received` record was queued before forwarding and committed
    // meanwhile: the response waits for it as well as for its own record (queued after it, so
    // durable after it). Both waits are this span.
    let received = state.deferred_audit.take();
    let recorded = &mut state.recorded;
    let written = trace::in_span(
        async {
            let complete = audit.auditor.emit_deferred(&ev).await?;
            // Queued: a caller that goes away from here on changes nothing in the trail.
            *recorded = true;
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
            tracing::error!(request.id = %state.id_str(), error = %err, "Audit write failed; response withheld");
            let (response, rescued) = crate::error::rescue(
                &GatewayError::AuditUnavailable(err.to_string()),
                state.id_str(),
            );
            state.rescued(rescued);
            response
        }
    }
}

/// The outcome of an exchange whose upstream answered with a head but ended in an upstream error:
/// a create's body that did not arrive, or a body that failed where another stage read it whole
/// (link rewriting).
fn failed_body(state: &RequestState) -> Option<Outcome> {
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

/// Records that the caller went away before anything was forwarded, or after keygate had its
/// answer (`upstreamStatus` and `createdKeyId` then say what the upstream did).
pub async fn record_gone(audit: &AuditContext, state: &RequestState, path: &str) {
    let route = state.route;
    if route != RouteClass::Governed && !audit.ungoverned {
        return;
    }
    let ev = event(
        audit,
        state,
        EventStage::ResponseComplete,
        path,
        Facts {
            created_key_id: state.created_key_id.clone(),
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
        tracing::error!(request.id = %state.id_str(), error = %err, "Audit write failed for a request whose caller went away");
    }
}
