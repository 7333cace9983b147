//! Logs, metrics and the request-observing stage.
//!
//! - Logs: `tracing`, JSON lines by default, to stderr. One access-log line per request (target
//!   `keygate::access`) when the response body is finished or abandoned. Header values are never
//!   logged except the allowlist in [`observe`]. Every line passes through
//!   [`RedactingWriter`] on its way out, so credential-shaped text is masked whatever its source.
//! - Metrics: a Prometheus registry ([`Metrics`]) rendered by the admin listener.
//! - [`observe::ObserveLayer`]: the outermost pipeline stage (request id, sensitive headers,
//!   in-flight gauge, latency, access log).

pub mod metrics;
pub mod observe;

use http::HeaderName;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

pub use metrics::Metrics;

use crate::config::{LogConfig, LogFormat};
use crate::redact::RedactingWriter;

/// `X-Request-Id`, accepted from the caller or minted, returned on every response.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Installs the global `tracing` subscriber. Call once, at start-up.
pub fn init_logging(config: &LogConfig) {
    let filter = EnvFilter::builder()
        .parse(&config.level)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(RedactedStderr)
        .with_target(true);
    // Err means a subscriber is already installed (tests, or `dev` started twice): keep it.
    let _ = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
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
