//! Meaning checks: turns [`RawConfig`] into [`Config`], naming the field of the first problem.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;

use super::raw::RawConfig;
use super::Secrets;
use super::{
    AdminConfig, AuditConfig, AuditFile, AuthzConfig, Config, ConfigError, CredentialSource,
    DataSource, IdentityConfig, IdentitySource, LimitsConfig, ListenerConfig, LogConfig, LogFormat,
    RuntimeConfig, TelemetryConfig, TlsFiles, UpstreamConfig,
};

/// The listener address when none is configured: loopback, so nothing is exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub use crate::proxy::links::origin;
pub use crate::server::{
    DEFAULT_H2_KEEP_ALIVE_INTERVAL, DEFAULT_H2_KEEP_ALIVE_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_LISTENER_IDLE_TIMEOUT, DEFAULT_MAX_HEADER_BYTES, DEFAULT_SHUTDOWN_GRACE,
};

/// The admin address when none is configured: loopback, metrics are not for the world.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// Confluent Cloud's public API.
pub const DEFAULT_UPSTREAM: &str = "https://api.confluent.cloud";
/// Confluent's web host, where the CLI logs in and asks who it is (`/api/sessions`, `/api/me`).
pub const DEFAULT_WEB_URL: &str = "https://confluent.cloud";
/// A healthy upstream connects in milliseconds; seconds mean it is unreachable.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Below Terraform's own HTTP timeout, so the caller sees our 504 rather than its own timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// An API-key create response is about 1 KiB and follows its head at once; seconds of silence
/// mean the upstream stalled.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// As long as the wait for a response head: a streaming upstream sends at least that often.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Below the usual 60–120 s idle timeouts of cloud load balancers, to avoid reusing dead sockets.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// Idle connections kept: enough for a burst of concurrent requests to find one each (a group
/// commit of blocking audit answers a few hundred requests at once, and their next requests arrive
/// together); fewer made keygate close connections it needed again a millisecond later (measured:
/// connect/close a fifth of its CPU at 256 connections with 64). Idle ones still expire after
/// `upstream.idle_timeout`.
pub const DEFAULT_MAX_IDLE_PER_HOST: usize = 256;
/// An api-key create body is well under 1 KiB; 64 KiB bounds memory per governed request.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Smallest header limit that still fits ordinary requests.
const MIN_HEADER_BYTES: usize = 8 * 1024;

/// Validates the raw file. Relative paths are resolved against `base` (the config file's
/// directory, or empty for the working directory); keygate's credential is read or not as
/// `secrets` says.
pub fn validate(raw: RawConfig, base: &Path, secrets: Secrets<'_>) -> Result<Config, ConfigError> {
    let path = |field: &str, value: &str| resolved(base, field, value);
    let listener = ListenerConfig {
        address: socket_addr("listener.address", raw.listener.address, DEFAULT_LISTEN)?,
        public_url: raw
            .listener
            .public_url
            .as_deref()
            .map(|url| base_url("listener.public_url", url))
            .transpose()?,
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
        idle_timeout: duration(
            "listener.idle_timeout",
            raw.listener.idle_timeout,
            DEFAULT_LISTENER_IDLE_TIMEOUT,
        )?,
        max_connections: nonzero("listener.max_connections", raw.listener.max_connections)?,
        max_connections_per_ip: nonzero(
            "listener.max_connections_per_ip",
            raw.listener.max_connections_per_ip,
        )?,
        h2_keep_alive_interval: match raw.listener.h2_keep_alive_interval.as_deref() {
            Some("off") => None,
            other => Some(duration(
                "listener.h2_keep_alive_interval",
                other.map(str::to_string),
                DEFAULT_H2_KEEP_ALIVE_INTERVAL,
            )?),
        },
        h2_keep_alive_timeout: duration(
            "listener.h2_keep_alive_timeout",
            raw.listener.h2_keep_alive_timeout,
            DEFAULT_H2_KEEP_ALIVE_TIMEOUT,
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

    let credential_source = credential_source(raw.upstream.credential.as_ref(), base)?;
    let credential = match (&credential_source, secrets) {
        (Some(source), Secrets::Read(env)) => Some(source.read(env)?),
        _ => None,
    };
    let url = upstream_url(raw.upstream.url.as_deref().unwrap_or(DEFAULT_UPSTREAM))?;
    let link_origins = match raw.upstream.link_origins {
        Some(origins) if origins.is_empty() => {
            return Err(ConfigError::field(
                "upstream.link_origins",
                "must name at least one origin (set `upstream.rewrite_links = false` to turn \
                 rewriting off)",
            ))
        }
        Some(origins) => origins
            .iter()
            .map(|o| base_url("upstream.link_origins", o).map(|uri| origin(&uri)))
            .collect::<Result<_, _>>()?,
        // The origin of `upstream.url`, whatever it is when keygate starts.
        None => Vec::new(),
    };
    let web_url = base_url(
        "upstream.web_url",
        raw.upstream.web_url.as_deref().unwrap_or(DEFAULT_WEB_URL),
    )?;
    let upstream = UpstreamConfig {
        credential,
        credential_source,
        url,
        web_url,
        rewrite_links: raw.upstream.rewrite_links.unwrap_or(true),
        link_origins,
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
        body_timeout: duration(
            "upstream.body_timeout",
            raw.upstream.body_timeout,
            DEFAULT_BODY_TIMEOUT,
        )?,
        body_idle_timeout: duration(
            "upstream.body_idle_timeout",
            raw.upstream.body_idle_timeout,
            DEFAULT_BODY_IDLE_TIMEOUT,
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

    let identity = identity(&raw.identity, base, &secrets)?;
    for (i, issuer) in identity.jwt.iter().enumerate() {
        if issuer.broker
            && issuer.credential_source.is_none()
            && upstream.credential_source.is_none()
        {
            return Err(ConfigError::field(
                format!("identity.jwt[{i}].broker"),
                "brokering needs an upstream credential: set `credential` here or `upstream.credential`",
            ));
        }
    }
    if let Some(mtls) = &identity.mtls {
        if listener.tls.is_none() {
            return Err(ConfigError::field(
                "identity.mtls",
                "client certificates need the TLS listener: set `listener.tls`",
            ));
        }
        if mtls.broker && mtls.credential_source.is_none() && upstream.credential_source.is_none() {
            return Err(ConfigError::field(
                "identity.mtls.broker",
                "brokering needs an upstream credential: set `credential` here or `upstream.credential`",
            ));
        }
    }
    if identity.oauth.is_some() && identity.jwt.is_empty() {
        return Err(ConfigError::field(
            "identity.oauth",
            "the token exchange is verified with keygate's JWT issuers: add an `[[identity.jwt]]`",
        ));
    }
    let mut authz = authz(&raw.authz, base)?;
    authz.external_bindings = match raw.identity.external_bindings.as_deref() {
        None => None,
        Some(_) if identity.jwt.is_empty() && identity.mtls.is_none() => {
            return Err(ConfigError::field(
                "identity.external_bindings",
                "keygate-side bindings are for external principals: add an `[[identity.jwt]]` or `[identity.mtls]`",
            ));
        }
        Some(path) => Some(resolved(base, "identity.external_bindings", path)?),
    };
    if upstream.credential_source.is_none() {
        for (field, source) in [
            ("authz.bindings", &authz.bindings),
            ("authz.inventory", &authz.inventory),
        ] {
            if *source == DataSource::Upstream {
                return Err(ConfigError::field(
                        field,
                        "`upstream` needs keygate's own credential: set `upstream.credential.env` or `upstream.credential.file`",
                    ));
            }
        }
    }
    let ratelimit = crate::ratelimit::RateLimitConfig::validate(raw.ratelimit, base, secrets)
        .map_err(|e| match e {
            crate::ratelimit::RateLimitError::Field { field, message } => {
                ConfigError::field(field, message)
            }
            e => ConfigError::file(e.to_string()),
        })?;
    let audit = audit(raw.audit, base)?;
    // Relative paths are relative to the config file's directory, like every other path here.
    let policy = raw
        .policy
        .map(|p| p.resolve(base))
        .transpose()
        .map_err(|errors| {
            let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
            ConfigError::field("policy", first)
        })?;
    let telemetry = telemetry(raw.telemetry)?;
    let egress = raw
        .egress
        .map(|e| crate::egress::config::EgressConfig::validate(e, base).map_err(ConfigError::from))
        .transpose()?;
    if let Some(egress) = &egress {
        if egress.proxy_auth == Some(crate::egress::config::ProxyAuthSource::IdentityDirectory)
            && !matches!(identity.source, IdentitySource::Directory(_))
        {
            return Err(ConfigError::field(
                "egress.proxy_auth",
                "`directory` needs `identity.source = \"directory\"`; or name a file of proxy credentials",
            ));
        }
    }
    let reconcile = raw.reconcile.map(reconcile).transpose()?;
    if reconcile.is_some() {
        if audit.file.is_none() {
            return Err(ConfigError::field(
                "reconcile",
                "reconcile compares the upstream's keys with the audit trail: set `audit.file`",
            ));
        }
        if upstream.credential_source.is_none() {
            return Err(ConfigError::field(
                "reconcile",
                "reconcile lists the organisation's keys with keygate's own credential: set `upstream.credential.env` or `upstream.credential.file`",
            ));
        }
    }
    let quota = raw.quota.map(quota).transpose()?;
    if quota.is_some() && reconcile.as_ref().and_then(|r| r.interval).is_none() {
        return Err(ConfigError::field(
            "quota",
            "the quota guard counts keys from the reconcile listing: set `reconcile.interval`",
        ));
    }

    Ok(Config {
        listener,
        upstream,
        limits,
        admin,
        log,
        runtime,
        identity,
        authz,
        ratelimit,
        audit,
        policy,
        source_path: None,
        telemetry,
        egress,
        reconcile,
        quota,
    })
}

/// A Global key near a cluster's quota warns from 90 % of it on.
pub const DEFAULT_QUOTA_WARN_RATIO: f64 = 0.9;

fn reconcile(
    raw: super::raw::RawReconcile,
) -> Result<crate::reconcile::config::ReconcileConfig, ConfigError> {
    let interval = raw
        .interval
        .map(|text| duration("reconcile.interval", Some(text), Duration::ZERO))
        .transpose()?;
    let grace = match raw.grace.as_deref() {
        None => crate::reconcile::config::DEFAULT_GRACE,
        // Zero is allowed: judge everything at once (tests, a stopped keygate).
        Some(text) => humantime::parse_duration(text).map_err(|e| {
            ConfigError::field(
                "reconcile.grace",
                format!("`{text}` is not a duration like `1m` or `30s`: {e}"),
            )
        })?,
    };
    Ok(crate::reconcile::config::ReconcileConfig { interval, grace })
}

fn quota(raw: super::raw::RawQuota) -> Result<crate::policy::quota::QuotaConfig, ConfigError> {
    use crate::policy::quota::{QuotaConfig, QuotaMode};
    let kafka_keys_per_cluster = match raw.kafka_keys_per_cluster {
        None => {
            return Err(ConfigError::field(
                "quota.kafka_keys_per_cluster",
                "required: the Kafka API keys a cluster may hold (your organisation's quota; \
                 keygate assumes none)",
            ))
        }
        Some(0) => {
            return Err(ConfigError::field(
                "quota.kafka_keys_per_cluster",
                "must be greater than 0",
            ))
        }
        Some(n) => n,
    };
    let warn_ratio = raw.warn_ratio.unwrap_or(DEFAULT_QUOTA_WARN_RATIO);
    if !(warn_ratio > 0.0 && warn_ratio <= 1.0) {
        return Err(ConfigError::field(
            "quota.warn_ratio",
            format!("`{warn_ratio}` must be greater than 0 and at most 1"),
        ));
    }
    let mode = match raw.mode.as_deref() {
        None | Some("enforce") => QuotaMode::Enforce,
        Some("dry-run") => QuotaMode::DryRun,
        Some(other) => {
            return Err(ConfigError::field(
                "quota.mode",
                format!("unknown mode `{other}`, expected `enforce` or `dry-run`"),
            ))
        }
    };
    Ok(QuotaConfig {
        kafka_keys_per_cluster,
        warn_ratio,
        mode,
    })
}

/// Verified identities are cached this long: long enough that a busy caller costs one upstream
/// lookup per few minutes, short enough that a deleted key stops working soon after.
pub const DEFAULT_IDENTITY_CACHE_TTL: Duration = Duration::from_secs(300);
/// Bounds the cache's memory (about 200 bytes an entry).
pub const DEFAULT_IDENTITY_CACHE_CAPACITY: usize = 100_000;
/// The shipped matrix, relative to the config file's directory.
pub const DEFAULT_MATRIX: &str = "policies/matrix.toml";
/// Role bindings change rarely; a minute keeps keygate close to Confluent without load.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Decisions on data older than this would ignore revocations for too long: fail closed.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(900);
/// An unknown cluster triggers at most one inventory refresh per this interval.
pub const DEFAULT_INVENTORY_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Rotate the audit file at 256 MiB.
pub const DEFAULT_AUDIT_MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

fn credential_source(
    raw: Option<&super::raw::RawCredential>,
    base: &Path,
) -> Result<Option<CredentialSource>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    match (&raw.env, &raw.file) {
        (Some(_), Some(_)) => Err(ConfigError::field(
            "upstream.credential",
            "set either `env` or `file`, not both",
        )),
        (None, None) => Err(ConfigError::field(
            "upstream.credential",
            "set `env` (a variable holding KEY:SECRET) or `file`",
        )),
        (Some(name), None) if name.is_empty() => Err(ConfigError::field(
            "upstream.credential.env",
            "must not be empty",
        )),
        (Some(name), None) => Ok(Some(CredentialSource::Env(name.clone()))),
        (None, Some(file)) => Ok(Some(CredentialSource::File(resolved(
            base,
            "upstream.credential.file",
            file,
        )?))),
    }
}

fn identity(
    raw: &super::raw::RawIdentity,
    base: &Path,
    secrets: &Secrets<'_>,
) -> Result<IdentityConfig, ConfigError> {
    let source = match (raw.source.as_deref(), &raw.directory) {
        (None | Some("upstream"), None) => IdentitySource::Upstream,
        (Some("directory"), Some(path)) => {
            IdentitySource::Directory(resolved(base, "identity.directory", path)?)
        }
        (Some("directory"), None) => {
            return Err(ConfigError::field(
                "identity.directory",
                "required when `identity.source = \"directory\"`",
            ))
        }
        (None | Some("upstream"), Some(_)) => {
            return Err(ConfigError::field(
                "identity.directory",
                "only used with `identity.source = \"directory\"`",
            ))
        }
        (Some(other), _) => {
            return Err(ConfigError::field(
                "identity.source",
                format!("unknown source `{other}`, expected `upstream` or `directory`"),
            ))
        }
    };
    let cache_capacity = raw
        .cache_capacity
        .unwrap_or(DEFAULT_IDENTITY_CACHE_CAPACITY);
    if cache_capacity == 0 {
        return Err(ConfigError::field(
            "identity.cache_capacity",
            "must be greater than 0",
        ));
    }
    Ok(IdentityConfig {
        source,
        cache_ttl: duration(
            "identity.cache_ttl",
            raw.cache_ttl.clone(),
            DEFAULT_IDENTITY_CACHE_TTL,
        )?,
        cache_capacity,
        jwt: raw
            .jwt
            .iter()
            .enumerate()
            .map(|(i, r)| crate::identity::jwt::IssuerConfig::validate(r, i, base, secrets))
            .collect::<Result<_, _>>()?,
        map: raw
            .map
            .iter()
            .enumerate()
            .map(|(i, r)| crate::identity::map::Mapping::validate(r, i, base, secrets))
            .collect::<Result<_, _>>()?,
        mtls: raw
            .mtls
            .as_ref()
            .map(|m| crate::identity::mtls::MtlsConfig::validate(m, base, secrets))
            .transpose()?,
        broker: match &raw.broker {
            Some(b) => crate::identity::broker::BrokerConfig::validate(b)?,
            None => crate::identity::broker::BrokerConfig::default(),
        },
        oauth: raw
            .oauth
            .as_ref()
            .map(crate::identity::oauth::OAuthConfig::validate)
            .transpose()?,
    })
}

fn data_source(base: &Path, field: &str, value: Option<&str>) -> Result<DataSource, ConfigError> {
    match value {
        None | Some("upstream") => Ok(DataSource::Upstream),
        Some(path) => Ok(DataSource::File(resolved(base, field, path)?)),
    }
}

fn authz(raw: &super::raw::RawAuthz, base: &Path) -> Result<AuthzConfig, ConfigError> {
    let org = raw.org_id.as_deref().ok_or_else(|| {
        ConfigError::field(
            "authz.org_id",
            "required: the Confluent organisation id (a UUID)",
        )
    })?;
    let org_id = crate::policy::crn::OrgId::parse(org)
        .map_err(|e| ConfigError::field("authz.org_id", e.to_string()))?;
    Ok(AuthzConfig {
        org_id,
        matrix: resolved(
            base,
            "authz.matrix",
            raw.matrix.as_deref().unwrap_or(DEFAULT_MATRIX),
        )?,
        bindings: data_source(base, "authz.bindings", raw.bindings.as_deref())?,
        inventory: data_source(base, "authz.inventory", raw.inventory.as_deref())?,
        external_bindings: None,
        refresh_interval: duration(
            "authz.refresh_interval",
            raw.refresh_interval.clone(),
            DEFAULT_REFRESH_INTERVAL,
        )?,
        max_staleness: duration(
            "authz.max_staleness",
            raw.max_staleness.clone(),
            DEFAULT_MAX_STALENESS,
        )?,
        inventory_refresh_min_interval: duration(
            "authz.inventory_refresh_min_interval",
            raw.inventory_refresh_min_interval.clone(),
            DEFAULT_INVENTORY_REFRESH_MIN_INTERVAL,
        )?,
    })
}

fn audit(raw: super::raw::RawAudit, base: &Path) -> Result<AuditConfig, ConfigError> {
    let mode = match raw.file_mode.as_deref() {
        None | Some("blocking") => crate::audit::FileMode::Blocking,
        Some("async") => crate::audit::FileMode::Async,
        Some(other) => {
            return Err(ConfigError::field(
                "audit.file_mode",
                format!("unknown mode `{other}`, expected `blocking` or `async`"),
            ))
        }
    };
    if raw.file.is_none() && raw.file_mode.is_some() {
        return Err(ConfigError::field(
            "audit.file_mode",
            "only used with `audit.file`",
        ));
    }
    let file = raw
        .file
        .as_deref()
        .map(|p| -> Result<AuditFile, ConfigError> {
            Ok(AuditFile {
                path: resolved(base, "audit.file", p)?,
                mode,
                max_bytes: match raw.max_file_bytes {
                    Some(0) => {
                        return Err(ConfigError::field(
                            "audit.max_file_bytes",
                            "must be greater than 0",
                        ))
                    }
                    Some(n) => n,
                    None => DEFAULT_AUDIT_MAX_FILE_BYTES,
                },
            })
        })
        .transpose()?;
    let webhook = raw
        .webhook
        .as_deref()
        .map(|url| {
            let uri: Uri = url
                .parse()
                .map_err(|e| ConfigError::field("audit.webhook", format!("`{url}`: {e}")))?;
            match uri.scheme_str() {
                Some("http") | Some("https") if uri.authority().is_some() => Ok(uri),
                _ => Err(ConfigError::field(
                    "audit.webhook",
                    format!("`{url}` must be an http(s) URL"),
                )),
            }
        })
        .transpose()?;
    if webhook.is_none() && (raw.webhook_spool.is_some() || raw.webhook_spool_max_bytes.is_some()) {
        return Err(ConfigError::field(
            "audit.webhook_spool",
            "only used with `audit.webhook`",
        ));
    }
    let webhook_spool = match raw.webhook_spool.as_deref() {
        Some(p) => Some(resolved(base, "audit.webhook_spool", p)?),
        // Beside the audit file: storage that already outlives the process.
        None => file.as_ref().map(|f| {
            let mut name = f.path.as_os_str().to_owned();
            name.push("-webhook-spool");
            PathBuf::from(name)
        }),
    };
    let webhook_spool_max_bytes = match raw.webhook_spool_max_bytes {
        Some(0) => {
            return Err(ConfigError::field(
                "audit.webhook_spool_max_bytes",
                "must be greater than 0",
            ))
        }
        Some(n) => n,
        None => crate::audit::sink::webhook::DEFAULT_SPOOL_MAX_BYTES,
    };
    Ok(AuditConfig {
        file,
        stdout: raw.stdout.unwrap_or(false),
        webhook,
        webhook_spool,
        webhook_spool_max_bytes,
        ungoverned: raw.ungoverned.unwrap_or(false),
        instance_id: raw.instance_id,
    })
}

/// Every trace is kept unless configured otherwise: governed traffic is low-volume, and a
/// collector can still sample downstream.
pub const DEFAULT_SAMPLE_RATIO: f64 = 1.0;

fn telemetry(raw: super::raw::RawTelemetry) -> Result<TelemetryConfig, ConfigError> {
    const ENDPOINT: &str = "telemetry.otlp_endpoint";
    let otlp_endpoint = raw
        .otlp_endpoint
        .as_deref()
        .map(|text| {
            let uri: Uri = text
                .parse()
                .map_err(|e| ConfigError::field(ENDPOINT, format!("`{text}` is not a URL: {e}")))?;
            if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
                return Err(ConfigError::field(
                    ENDPOINT,
                    "credentials in the URL are not supported",
                ));
            }
            match uri.scheme_str() {
                Some("http") | Some("https") if uri.authority().is_some() => Ok(uri),
                _ => Err(ConfigError::field(
                    ENDPOINT,
                    format!(
                        "`{text}` must be an http(s) URL such as `http://collector:4318/v1/traces`"
                    ),
                )),
            }
        })
        .transpose()?;
    let sample_ratio = raw.sample_ratio.unwrap_or(DEFAULT_SAMPLE_RATIO);
    if !(0.0..=1.0).contains(&sample_ratio) {
        return Err(ConfigError::field(
            "telemetry.sample_ratio",
            format!("`{sample_ratio}` must be between 0.0 and 1.0"),
        ));
    }
    if raw.instance_id.as_deref() == Some("") {
        return Err(ConfigError::field(
            "telemetry.instance_id",
            "must not be empty",
        ));
    }
    Ok(TelemetryConfig {
        otlp_endpoint,
        sample_ratio,
        instance_id: raw.instance_id,
    })
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

fn nonzero(field: &str, value: Option<usize>) -> Result<Option<NonZeroUsize>, ConfigError> {
    match value {
        None => Ok(None),
        Some(n) => NonZeroUsize::new(n)
            .map(Some)
            .ok_or_else(|| ConfigError::field(field, "must be greater than 0")),
    }
}

/// A path from the config, relative ones joined to `base` (the config file's directory).
fn resolved(base: &Path, field: &str, value: &str) -> Result<PathBuf, ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::field(field, "must not be empty"));
    }
    Ok(base.join(value))
}

/// Validates an upstream base URL (`upstream.url`).
pub fn upstream_url(text: &str) -> Result<Uri, ConfigError> {
    base_url("upstream.url", text)
}

/// An `http(s)://authority` URL without path or query, for `field`.
fn base_url(field: &'static str, text: &str) -> Result<Uri, ConfigError> {
    let uri: Uri = text
        .parse()
        .map_err(|e| ConfigError::field(field, format!("`{text}` is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("https") | Some("http") => {}
        _ => {
            return Err(ConfigError::field(
                field,
                format!("`{text}` must start with https:// or http://"),
            ))
        }
    }
    if uri.authority().is_none() {
        return Err(ConfigError::field(field, format!("`{text}` has no host")));
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(ConfigError::field(
            field,
            format!("`{text}` must be a base URL without a path or query"),
        ));
    }
    Ok(uri)
}
