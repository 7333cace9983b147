//! `[log]` and `[telemetry]`: owned here, assembled into keygate's config by `config`.

use http::Uri;

/// Log output.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// JSON lines (default) or human-readable text.
    pub format: LogFormat,
    /// A `tracing` filter directive (`info`, `keygate=debug`, …).
    pub level: String,
    /// One access-log line per request.
    pub access_log: bool,
}

/// OpenTelemetry trace export.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP traces endpoint (`http://collector:4318/v1/traces`); no export when absent.
    pub otlp_endpoint: Option<Uri>,
    /// Share of new traces sampled, 0.0–1.0; a caller's `traceparent` decision is followed.
    pub sample_ratio: f64,
    /// `service.instance.id`; the hostname when absent.
    pub instance_id: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Text,
}
