//! OpenTelemetry traces: one server span per request, a child span per pipeline stage, W3C trace
//! context in and out, exported over OTLP/HTTP (protobuf) in batches.
//!
//! - Spans are ordinary `tracing` spans with target [`SPAN_TARGET`]; `tracing-opentelemetry` turns
//!   them into OpenTelemetry spans. The log layer never sees them (its filter turns the target off),
//!   so with no OTLP endpoint configured no layer is interested, every span callsite is disabled
//!   once and for all, and a span costs only `tracing`'s disabled-callsite check.
//! - Context: an incoming `traceparent`/`tracestate` is continued ([`server_span`]); the upstream
//!   request carries the upstream span's context ([`inject`]). With tracing off, the caller's
//!   headers pass through untouched, like any other end-to-end header.
//! - Export: a batch span processor on its own thread, the OTLP/HTTP exporter, and an HTTP client
//!   (`export.rs`) whose requests run on the tokio runtime — hyper's client cannot run on the
//!   exporter thread. Log lines inside a span carry its `trace_id` and `span_id` (`ids.rs`).
//!
//! Attributes name what was decided and about whom, never a credential, a secret or a body.
//!
//! Where it sits: the server span is opened by the observe stage (`observe.rs`), stage spans by
//! `stage.rs::Staged`, the upstream span by `proxy/forward.rs`, audit writes in `audit/stage.rs`.

mod export;
mod ids;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub(crate) use ids::{DispatchSlot, WithTraceIds};

use crate::model::Action;
use crate::model::RouteClass;
use crate::model::{DecidedBy, ResourceType};
use crate::telemetry::config::TelemetryConfig;

/// What a request's server span and decision attributes say: plain values read from the
/// request's state (`state::RequestState::span_facts`). Nothing here is a secret.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpanFacts<'a> {
    /// Governed or not.
    pub route: RouteClass,
    /// The governed action.
    pub action: Option<Action>,
    /// The verified principal's id.
    pub principal_id: Option<&'a str>,
    /// The stage that ended or decided the request.
    pub decided_by: Option<DecidedBy>,
    /// The error code that ended the request inside keygate.
    pub error_code: Option<&'static str>,
    /// The decision, once one was made.
    pub decision: Option<DecisionFacts<'a>>,
}

/// The decision part of [`SpanFacts`].
#[derive(Debug, Clone, Copy)]
pub struct DecisionFacts<'a> {
    /// Allowed or denied.
    pub allow: bool,
    /// The deciding matrix rule and policy ids.
    pub rule_ids: &'a [String],
    /// The target's resource type.
    pub resource_type: Option<ResourceType>,
    /// Dry-run policies that would have denied.
    pub dry_run: &'a [String],
    /// The revision of the policy set that decided.
    pub revision: Option<&'a str>,
}

/// The `tracing` target of every span keygate exports. Only the OpenTelemetry layer enables it.
pub const SPAN_TARGET: &str = "keygate::trace";

/// The instrumentation scope of keygate's spans.
const SCOPE: &str = "keygate";

/// The OTLP default: long enough for a collector across a region, short enough that a dead one
/// does not hold the exporter thread (the batch waits; spans beyond the queue are dropped).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a graceful shutdown waits for the last batch to reach the collector.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Set once the OpenTelemetry layer is installed globally: attribute recording that would cost
/// more than a disabled-span check (looking up the current span) is skipped when it is not.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Why trace export could not start.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Export runs its HTTP client on the tokio runtime, so it must be set up inside one.
    #[error("trace export must be started inside the tokio runtime")]
    NoRuntime,
    /// The TLS client configuration for an `https` endpoint could not be built.
    #[error("trace export: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The OTLP exporter rejected its configuration.
    #[error("trace export: {0}")]
    Exporter(String),
}

/// Whether spans are being exported by this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn set_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The tracer provider: OTLP/HTTP protobuf to `endpoint`, batched, sampled parent-first with
/// `config.sample_ratio` for new traces, resource `service.name=keygate`, `service.version`,
/// `service.instance.id`. Must run inside the tokio runtime that will carry the exports.
pub(crate) fn provider(
    config: &TelemetryConfig,
    endpoint: &Uri,
) -> Result<SdkTracerProvider, TraceError> {
    let client = export::TokioHttpClient::new(EXPORT_TIMEOUT)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint.to_string())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TraceError::Exporter(e.to_string()))?;
    let instance = config.instance_id.clone().unwrap_or_else(hostname);
    let resource = Resource::builder()
        .with_service_name(SCOPE)
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance),
        ])
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// The tracer keygate's spans are handed to.
pub(crate) fn tracer(provider: &SdkTracerProvider) -> SdkTracer {
    provider.tracer(SCOPE)
}

/// The OpenTelemetry layer for keygate's spans (events are not exported: they are log lines).
pub(crate) fn layer<S>(
    tracer: SdkTracer,
) -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    use tracing_subscriber::Layer as _;
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target(SPAN_TARGET, tracing::Level::INFO),
        )
}

// === spans ===

pin_project_lite::pin_project! {
    /// A future run in a span — or, when the span is disabled, just the future: tracing off does
    /// not even pay for entering and exiting a disabled span on every poll.
    #[project = InSpanProj]
    pub enum InSpan<F> {
        /// Tracing off.
        Plain { #[pin] future: F },
        /// In an enabled span.
        Traced { #[pin] future: tracing::instrument::Instrumented<F> },
    }
}

impl<F: std::future::Future> std::future::Future for InSpan<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        match self.project() {
            InSpanProj::Plain { future } => future.poll(cx),
            InSpanProj::Traced { future } => future.poll(cx),
        }
    }
}

/// Runs `future` in `span` (see [`InSpan`]).
pub fn in_span<F>(future: F, span: Span) -> InSpan<F> {
    use tracing::Instrument as _;
    if span.is_disabled() {
        InSpan::Plain { future }
    } else {
        InSpan::Traced {
            future: future.instrument(span),
        }
    }
}

/// The server span of one request, continuing the caller's trace when it sent a valid
/// `traceparent`. Disabled (free) when tracing is off.
pub fn server_span<B>(request: &Request<B>, request_id: &HeaderValue) -> Span {
    let method = request.method().as_str();
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "request",
        otel.name = method,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        url.path = %crate::redact::redact_path(request.uri().path()),
        network.protocol.version = protocol_version(request.version()),
        keygate.request_id = request_id.to_str().unwrap_or("-"),
        http.route = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
        keygate.action = Empty,
        keygate.principal.id = Empty,
        keygate.decision = Empty,
    );
    if !span.is_disabled() {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
        if parent.span().span_context().is_valid() {
            // Err only if the layer is missing or the span is disabled, both checked above.
            let _ = span.set_parent(parent);
        }
    }
    span
}

/// Records what the pipeline learned on the server span, once the response status is known.
pub(crate) fn finish_server_span(span: &Span, method: &Method, state: &SpanFacts<'_>, status: u16) {
    if span.is_disabled() {
        return;
    }
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
    if let Some(code) = state.error_code {
        span.record("error.type", code);
    }
    if let Some(principal) = state.principal_id {
        span.record("keygate.principal.id", principal);
    }
    if let Some(decision) = &state.decision {
        span.record("keygate.decision", allow_str(decision.allow));
    }
    if state.route == RouteClass::Governed {
        if let Some(action) = state.action {
            let route = route_of(action);
            span.record("keygate.action", action.as_str());
            span.record("http.route", route);
            span.context()
                .span()
                .update_name(format!("{} {route}", method.as_str()));
        }
    }
}

/// A pipeline stage's span, a child of the server span.
pub fn stage_span(name: &'static str) -> Span {
    tracing::info_span!(target: SPAN_TARGET, "stage", otel.name = name, error.type = Empty)
}

/// Marks a stage span with the code of the error that ended the request there.
pub(crate) fn stage_failed(span: &Span, code: &'static str) {
    if !span.is_disabled() {
        span.record("error.type", code);
    }
}

/// The client span of the upstream exchange (until the response head arrives).
pub(crate) fn upstream_span(method: &Method, upstream: &http::uri::Authority) -> Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        "upstream",
        otel.name = "upstream",
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = method.as_str(),
        server.address = upstream.host(),
        server.port = upstream.port_u16(),
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

/// Records the upstream's answer (or the kind of failure) on its span.
pub(crate) fn finish_upstream_span(span: &Span, outcome: Result<u16, &'static str>) {
    if span.is_disabled() {
        return;
    }
    match outcome {
        Ok(status) => {
            span.record("http.response.status_code", status);
            if status >= 500 {
                span.record("otel.status_code", "error");
            }
        }
        Err(kind) => {
            span.record("error.type", kind);
            span.record("otel.status_code", "error");
        }
    }
}

/// The span of one audit write (`request_received` before forwarding, `response_complete` after).
pub(crate) fn audit_write_span(stage: &'static str) -> Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        "audit_write",
        otel.name = "audit_write",
        keygate.audit.stage = stage,
    )
}

/// Sets `traceparent` (and `tracestate`, if any) on an upstream request from `span`'s context.
/// Does nothing when `span` is disabled, so the caller's own headers pass through.
pub(crate) fn inject(span: &Span, headers: &mut HeaderMap) {
    if span.is_disabled() {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
    // The propagator writes an empty `tracestate` when there is none; send none instead.
    if headers
        .get(TRACESTATE)
        .is_some_and(|v| v.as_bytes().is_empty())
    {
        headers.remove(TRACESTATE);
    }
}

const TRACESTATE: &str = "tracestate";

/// Adds attributes to the current span when spans are exported; `attributes` is not even called
/// otherwise.
pub fn annotate<I>(attributes: impl FnOnce() -> I)
where
    I: IntoIterator<Item = KeyValue>,
{
    if !enabled() {
        return;
    }
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    span.context().span().set_attributes(attributes());
}

/// The attributes of the decision recorded in `state`, for [`annotate`]: principal, action,
/// resource type, decision, deciding rule and policy ids, dry-run findings, policy revision.
/// Empty when nothing was decided.
pub fn decision_attributes(state: &SpanFacts<'_>) -> Vec<KeyValue> {
    let Some(decision) = &state.decision else {
        return Vec::new();
    };
    let strings = |ids: &[String]| {
        Value::Array(
            ids.iter()
                .map(|id| id.clone().into())
                .collect::<Vec<opentelemetry::StringValue>>()
                .into(),
        )
    };
    let mut attributes = vec![
        KeyValue::new("keygate.decision", allow_str(decision.allow)),
        KeyValue::new("keygate.decision.rule_ids", strings(decision.rule_ids)),
    ];
    if let Some(principal) = state.principal_id {
        attributes.push(KeyValue::new("keygate.principal.id", principal.to_string()));
    }
    if let Some(action) = state.action {
        attributes.push(KeyValue::new("keygate.action", action.as_str()));
    }
    if let Some(t) = decision.resource_type {
        attributes.push(KeyValue::new("keygate.resource.type", t.as_str()));
    }
    if let Some(by) = state.decided_by {
        attributes.push(KeyValue::new("keygate.decision.by", decided_by_str(by)));
    }
    if !decision.dry_run.is_empty() {
        attributes.push(KeyValue::new(
            "keygate.decision.dry_run",
            strings(decision.dry_run),
        ));
    }
    if let Some(revision) = decision.revision {
        attributes.push(KeyValue::new(
            "keygate.policy.revision",
            revision.to_string(),
        ));
    }
    attributes
}

fn decided_by_str(by: DecidedBy) -> &'static str {
    match by {
        DecidedBy::Guard => "guard",
        DecidedBy::Identity => "identity",
        DecidedBy::Matrix => "matrix",
        DecidedBy::Policy => "policy",
        DecidedBy::RateLimit => "rate_limit",
        DecidedBy::Quota => "quota",
        DecidedBy::Upstream => "upstream",
        DecidedBy::Audit => "audit",
        DecidedBy::Egress => "egress",
    }
}

/// Where `/proc` exposes the host name, the instance id when none is configured.
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

fn hostname() -> String {
    let host = std::fs::read_to_string(HOSTNAME_FILE).unwrap_or_default();
    match host.trim() {
        "" => SCOPE.to_string(),
        h => h.to_string(),
    }
}

fn allow_str(allow: bool) -> &'static str {
    if allow {
        "allow"
    } else {
        "deny"
    }
}

/// The route template of a governed action.
fn route_of(action: Action) -> &'static str {
    match action {
        Action::CreateApiKey | Action::ListApiKeys => "/iam/v2/api-keys",
        Action::GetApiKey | Action::UpdateApiKey | Action::DeleteApiKey => "/iam/v2/api-keys/{id}",
    }
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

#[cfg(test)]
mod tests;
