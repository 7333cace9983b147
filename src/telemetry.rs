//! Logs, metrics and traces.
//!
//! - Logs: `tracing`, JSON lines by default, to stderr. One access-log line per request (target
//!   `keygate::access`) when the response body is finished or abandoned. Header values are never
//!   logged except the allowlist of `stages::observe`. Every line passes through
//!   [`RedactingWriter`] on its way out, so credential-shaped text is masked whatever its source.
//!   Inside a traced request, lines carry `trace_id` and `span_id`.
//! - Metrics: a Prometheus registry ([`Metrics`]) rendered by the admin listener.
//! - Traces: OpenTelemetry over OTLP/HTTP when `[telemetry] otlp_endpoint` is set ([`trace`]);
//!   otherwise no span is ever created.
//! - The request-observing step (request id, sensitive headers, in-flight gauge, latency, access
//!   log, server span) is a pipeline stage: `stages::observe`.

pub mod config;
pub mod metrics;
pub mod trace;

use http::HeaderName;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use metrics::Metrics;
pub use trace::TraceError;

use crate::redact::RedactingWriter;
use crate::telemetry::config::{LogConfig, LogFormat, TelemetryConfig};
use trace::{DispatchSlot, WithTraceIds};

/// `X-Request-Id`, accepted from the caller or minted, returned on every response.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The upstream's own request id, passed to the caller next to keygate's `x-request-id`.
pub const X_UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");

/// Installs the global `tracing` subscriber: log lines on stderr and, when
/// `telemetry.otlp_endpoint` is set, span export. Call once, at start-up — inside the tokio
/// runtime when export is configured, since exports run on it. If a subscriber is already
/// installed (tests, or `dev` started twice) it is kept and nothing is exported.
pub fn init_logging(log: &LogConfig, telemetry: &TelemetryConfig) -> Result<Telemetry, TraceError> {
    let Some(endpoint) = &telemetry.otlp_endpoint else {
        let _ = plain_subscriber(log, RedactedStderr).try_init();
        return Ok(Telemetry::default());
    };
    let provider = trace::provider(telemetry, endpoint)?;
    let installed = traced_subscriber(log, RedactedStderr, trace::tracer(&provider))
        .try_init()
        .is_ok();
    if !installed {
        // Nothing was exported through it yet, so this returns at once.
        let _ = provider.shutdown();
        return Ok(Telemetry::default());
    }
    trace::set_enabled();
    tracing::info!(
        otlp.host = endpoint.host().unwrap_or("-"),
        otlp.path = endpoint.path(),
        sample_ratio = telemetry.sample_ratio,
        "Exporting traces"
    );
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// Log lines only; keygate's spans are disabled at their callsites.
fn plain_subscriber<W>(log: &LogConfig, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::registry().with(log_layer(log, writer, None))
}

/// Log lines with trace ids, and keygate's spans handed to `tracer`.
fn traced_subscriber<W>(
    log: &LogConfig,
    writer: W,
    tracer: opentelemetry_sdk::trace::SdkTracer,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let slot = DispatchSlot::default();
    tracing_subscriber::registry()
        .with(log_layer(log, writer, Some(slot.clone())))
        .with(trace::layer(tracer))
        .with(slot.layer())
}

/// The log layer with its filter: `log.level`, and keygate's spans always off (only the
/// OpenTelemetry layer wants them). `slot` adds trace and span ids to lines written in a span.
fn log_layer<S, W>(
    log: &LogConfig,
    writer: W,
    slot: Option<DispatchSlot>,
) -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::builder()
        .parse(filter_directives(&log.level))
        .unwrap_or_else(|_| EnvFilter::new(filter_directives("info")));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(true);
    let layer: Box<dyn Layer<S> + Send + Sync> = match log.format {
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .map_event_format(|f| WithTraceIds::new(f, slot, true))
            .boxed(),
        LogFormat::Text => layer
            .with_ansi(false)
            .map_event_format(|f| WithTraceIds::new(f, slot, false))
            .boxed(),
    };
    layer.with_filter(filter)
}

/// `level` plus `keygate::trace=off`.
fn filter_directives(level: &str) -> String {
    let level = level.trim().trim_end_matches(',');
    if level.is_empty() {
        format!("{}=off", trace::SPAN_TARGET)
    } else {
        format!("{level},{}=off", trace::SPAN_TARGET)
    }
}

/// What [`init_logging`] installed. Call [`Telemetry::shutdown`] before the process exits, or
/// the spans of the last seconds are lost.
#[derive(Debug, Default)]
#[must_use = "call `shutdown` before exiting so buffered spans are exported"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter (bounded by
    /// [`trace::SHUTDOWN_TIMEOUT`]). The runtime must still be running: exports run on it.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK blocks until its exporter thread is done; that thread waits on tasks of this
        // runtime, so block a blocking-pool thread, never a worker.
        let result = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(trace::SHUTDOWN_TIMEOUT)
        })
        .await;
        match result {
            Ok(Ok(())) => tracing::debug!("Trace exporter flushed"),
            Ok(Err(err)) => tracing::warn!(error = %err, "Trace exporter shutdown failed"),
            Err(err) => tracing::warn!(error = %err, "Trace exporter shutdown panicked"),
        }
    }
}

/// Log output: stderr, scrubbed line by line.
#[derive(Debug, Clone, Copy)]
struct RedactedStderr;

impl<'a> MakeWriter<'a> for RedactedStderr {
    type Writer = RedactingWriter<std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter::new(std::io::stderr())
    }
}
