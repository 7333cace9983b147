//! Meaning checks: turns [`RawConfig`] into [`Config`], naming the field of the first problem.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

use super::raw::RawConfig;
use super::{
    AdminConfig, Config, ConfigError, LimitsConfig, ListenerConfig, LogConfig, LogFormat,
    RuntimeConfig, TlsFiles, UpstreamConfig,
};

/// The listener address when none is configured: loopback, so nothing is exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The admin address when none is configured: loopback, metrics are not for the world.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// Confluent Cloud's public API.
pub const DEFAULT_UPSTREAM: &str = "https://api.confluent.cloud";
/// Long enough for a slow mobile link to send a request head, short enough to shed slowloris.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Confluent's own requests have small heads; 64 KiB leaves room for large bearer tokens.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Matches Kubernetes' default termination grace period.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// A healthy upstream connects in milliseconds; seconds mean it is unreachable.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Below Terraform's own HTTP timeout, so the caller sees our 504 rather than its own timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Below the usual 60–120 s idle timeouts of cloud load balancers, to avoid reusing dead sockets.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// Enough idle connections for bursts on one core without hoarding sockets.
pub const DEFAULT_MAX_IDLE_PER_HOST: usize = 64;
/// An api-key create body is well under 1 KiB; 64 KiB bounds memory per governed request.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Smallest header limit that still fits ordinary requests.
const MIN_HEADER_BYTES: usize = 8 * 1024;

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Config, ConfigError> {
        let listener = ListenerConfig {
            address: socket_addr("listener.address", raw.listener.address, DEFAULT_LISTEN)?,
            tls: raw
                .listener
                .tls
                .map(|t| -> Result<TlsFiles, ConfigError> {
                    Ok(TlsFiles {
                        cert: path("listener.tls.cert", &t.cert)?,
                        key: path("listener.tls.key", &t.key)?,
                    })
                })
                .transpose()?,
            header_read_timeout: duration(
                "listener.header_read_timeout",
                raw.listener.header_read_timeout,
                DEFAULT_HEADER_READ_TIMEOUT,
            )?,
            max_header_bytes: {
                let n = raw
                    .listener
                    .max_header_bytes
                    .unwrap_or(DEFAULT_MAX_HEADER_BYTES);
                if n < MIN_HEADER_BYTES {
                    return Err(ConfigError::field(
                        "listener.max_header_bytes",
                        format!("must be at least {MIN_HEADER_BYTES}"),
                    ));
                }
                n
            },
            shutdown_grace: duration(
                "listener.shutdown_grace",
                raw.listener.shutdown_grace,
                DEFAULT_SHUTDOWN_GRACE,
            )?,
        };

        let upstream = UpstreamConfig {
            url: upstream_url(raw.upstream.url.as_deref().unwrap_or(DEFAULT_UPSTREAM))?,
            ca_file: raw
                .upstream
                .ca_file
                .as_deref()
                .map(|p| path("upstream.ca_file", p))
                .transpose()?,
            connect_timeout: duration(
                "upstream.connect_timeout",
                raw.upstream.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            request_timeout: duration(
                "upstream.request_timeout",
                raw.upstream.request_timeout,
                DEFAULT_REQUEST_TIMEOUT,
            )?,
            idle_timeout: duration(
                "upstream.idle_timeout",
                raw.upstream.idle_timeout,
                DEFAULT_IDLE_TIMEOUT,
            )?,
            max_idle_per_host: raw
                .upstream
                .max_idle_per_host
                .unwrap_or(DEFAULT_MAX_IDLE_PER_HOST),
        };

        let limits = LimitsConfig {
            max_body_bytes: match raw.limits.max_body_bytes {
                Some(0) => {
                    return Err(ConfigError::field(
                        "limits.max_body_bytes",
                        "must be greater than 0",
                    ))
                }
                Some(n) => n,
                None => DEFAULT_MAX_BODY_BYTES,
            },
        };

        let admin = AdminConfig {
            address: socket_addr("admin.address", raw.admin.address, DEFAULT_ADMIN_LISTEN)?,
        };

        let log = LogConfig {
            format: match raw.log.format.as_deref() {
                None | Some("json") => LogFormat::Json,
                Some("text") => LogFormat::Text,
                Some(other) => {
                    return Err(ConfigError::field(
                        "log.format",
                        format!("unknown format `{other}`, expected `json` or `text`"),
                    ))
                }
            },
            level: {
                let level = raw.log.level.unwrap_or_else(|| "info".to_string());
                if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&level) {
                    return Err(ConfigError::field("log.level", format!("`{level}`: {e}")));
                }
                level
            },
            access_log: raw.log.access_log.unwrap_or(true),
        };

        let runtime = RuntimeConfig {
            worker_threads: match raw.runtime.worker_threads {
                None | Some(0) => None,
                Some(n) => NonZeroUsize::new(n),
            },
        };

        Ok(Config {
            listener,
            upstream,
            limits,
            admin,
            log,
            runtime,
        })
    }
}

fn socket_addr(
    field: &str,
    value: Option<String>,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let text = value.as_deref().unwrap_or(default);
    text.parse().map_err(|_| {
        ConfigError::field(
            field,
            format!("`{text}` is not an address of the form IP:PORT"),
        )
    })
}

fn duration(
    field: &str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let d = humantime::parse_duration(&text).map_err(|e| {
        ConfigError::field(
            field,
            format!("`{text}` is not a duration like `5s` or `250ms`: {e}"),
        )
    })?;
    if d.is_zero() {
        return Err(ConfigError::field(field, "must be greater than zero"));
    }
    Ok(d)
}

fn path(field: &str, value: &str) -> Result<PathBuf, ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::field(field, "must not be empty"));
    }
    Ok(PathBuf::from(value))
}

/// Validates an upstream base URL (`upstream.url`).
pub fn upstream_url(text: &str) -> Result<Uri, ConfigError> {
    const FIELD: &str = "upstream.url";
    let uri: Uri = text
        .parse()
        .map_err(|e| ConfigError::field(FIELD, format!("`{text}` is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("https") | Some("http") => {}
        _ => {
            return Err(ConfigError::field(
                FIELD,
                format!(
                    "`{text}` must start with https:// (or http:// for a loopback test upstream)"
                ),
            ))
        }
    }
    if uri.authority().is_none() {
        return Err(ConfigError::field(FIELD, format!("`{text}` has no host")));
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(ConfigError::field(
            FIELD,
            format!("`{text}` must be a base URL without a path or query"),
        ));
    }
    Ok(uri)
}
