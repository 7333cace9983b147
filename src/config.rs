//! Configuration: the TOML file, validated into typed values before anything starts.
//!
//! Two layers (STYLE.md "Config"): [`raw`] mirrors the file with serde and rejects unknown fields;
//! [`validate`] turns it into [`Config`], whose fields are typed (`SocketAddr`, `Duration`, `Uri`,
//! `NonZero…`). The rest of keygate only ever sees [`Config`]. A bad file is one clear line that
//! names the file and the field, and the process exits with `EX_CONFIG` (78).
//!
//! The parsed config is never logged as a whole: it may name credential files.

pub mod raw;
pub mod validate;

pub use crate::env::{Env, ProcessEnv, Secrets};
pub use crate::policy::config::{AuthzConfig, DataSource};
pub use crate::proxy::config::{CredentialError, CredentialSource, UpstreamConfig};
pub use crate::telemetry::config::{LogConfig, LogFormat, TelemetryConfig};
pub use validate::origin;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;

/// The exit code for a configuration error (`EX_CONFIG` from sysexits.h).
pub const EX_CONFIG: u8 = 78;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The downstream listener.
    pub listener: ListenerConfig,
    /// The upstream (Confluent Cloud) and the client that talks to it.
    pub upstream: UpstreamConfig,
    /// Request limits.
    pub limits: LimitsConfig,
    /// The admin listener.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
    /// The tokio runtime.
    pub runtime: RuntimeConfig,
    /// How callers on governed routes are identified.
    pub identity: IdentityConfig,
    /// Where the authorization data (matrix, role bindings, inventory) comes from.
    pub authz: AuthzConfig,
    /// Rate limits (none when the table is absent).
    pub ratelimit: crate::ratelimit::RateLimitConfig,
    /// Audit sinks.
    pub audit: AuditConfig,
    /// Organisational policies (layer 2), when a `[policy]` table is present.
    pub policy: Option<crate::policy::org::OrgPolicyConfig>,
    /// The file this config was loaded from (re-read on reload), if any.
    pub source_path: Option<PathBuf>,
    /// Trace export (off unless an OTLP endpoint is configured).
    pub telemetry: TelemetryConfig,
    /// The egress forward-proxy listener (off unless `[egress]` is present).
    pub egress: Option<crate::egress::config::EgressConfig>,
    /// Reconcile with the upstream's keys, when a `[reconcile]` table is present.
    pub reconcile: Option<crate::reconcile::config::ReconcileConfig>,
    /// The API-key quota guard, when `[quota]` sets `kafka_keys_per_cluster`.
    pub quota: Option<crate::policy::quota::QuotaConfig>,
}

/// Identity of governed-route callers.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Where credentials are verified.
    pub source: IdentitySource,
    /// How long a verified identity is cached.
    pub cache_ttl: Duration,
    /// How many verified identities are cached at most.
    pub cache_capacity: usize,
    /// JWT issuers (`[[identity.jwt]]`).
    pub jwt: Vec<crate::identity::jwt::IssuerConfig>,
    /// External principals → Confluent principals (`[[identity.map]]`).
    pub map: Vec<crate::identity::map::Mapping>,
    /// Client certificates on the TLS listener (`[identity.mtls]`).
    pub mtls: Option<crate::identity::mtls::MtlsConfig>,
    /// The routes brokered callers may use (`[identity.broker]`).
    pub broker: crate::identity::broker::BrokerConfig,
    /// Terraform's OAuth token exchange (`[identity.oauth]`).
    pub oauth: Option<crate::identity::oauth::OAuthConfig>,
}

impl IdentityConfig {
    /// The company identity sections, for `identity::ExternalSources`.
    pub fn external(&self) -> crate::identity::ExternalConfig<'_> {
        crate::identity::ExternalConfig {
            jwt: &self.jwt,
            map: &self.map,
            mtls: self.mtls.as_ref(),
            broker: &self.broker,
            oauth: self.oauth,
        }
    }

    /// Whether any caller is brokered (an issuer or the mTLS section with `broker = true`).
    pub fn brokers(&self) -> bool {
        self.jwt.iter().any(|i| i.broker) || self.mtls.as_ref().is_some_and(|m| m.broker)
    }
}

/// Where Basic credentials are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// The upstream verifies each credential (`GET /iam/v2/api-keys/{key id}` with it).
    Upstream,
    /// A static directory file (development, air-gapped).
    Directory(PathBuf),
}

/// Audit output.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The append-only JSON Lines file, if any.
    pub file: Option<AuditFile>,
    /// Also write events to stdout.
    pub stdout: bool,
    /// Also POST batches of events to this URL.
    pub webhook: Option<Uri>,
    /// Where undelivered webhook batches wait (default: beside the audit file; in memory without
    /// one).
    pub webhook_spool: Option<PathBuf>,
    /// The webhook spool's bound in bytes.
    pub webhook_spool_max_bytes: u64,
    /// Also record one event per ungoverned request.
    pub ungoverned: bool,
    /// The `source` of events (`keygate://<instance>`); the hostname when absent.
    pub instance_id: Option<String>,
}

/// The audit file sink.
#[derive(Debug, Clone)]
pub struct AuditFile {
    /// The file (rotated files sit beside it).
    pub path: PathBuf,
    /// Blocking (durable before the response) or async.
    pub mode: crate::audit::FileMode,
    /// Rotate when the file reaches this size.
    pub max_bytes: u64,
}

/// Where and how keygate accepts downstream connections.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Address to bind (`127.0.0.1:0` picks a free port).
    pub address: SocketAddr,
    /// The URL clients use to reach keygate (scheme and authority): upstream links in responses
    /// are rewritten to it. Unset: to the scheme and `Host` each request arrived with.
    pub public_url: Option<Uri>,
    /// TLS (PEM certificate chain and private key); plain TCP when absent.
    pub tls: Option<TlsFiles>,
    /// Time from `accept` to a complete first request head, TLS handshake and HTTP/2 preface
    /// included, and for a later head once its first bytes arrived (slowloris guard).
    pub header_read_timeout: Duration,
    /// How long a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Largest request head accepted (HTTP/1 read buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// How long in-flight requests may run after SIGTERM/SIGINT before connections are closed.
    pub shutdown_grace: Duration,
    /// Connections held at most; `None`: sized from the open-file limit at start.
    pub max_connections: Option<NonZeroUsize>,
    /// Connections one source address may hold at most (no limit when absent).
    pub max_connections_per_ip: Option<NonZeroUsize>,
    /// Interval of HTTP/2 keep-alive PINGs; `None` turns them off.
    pub h2_keep_alive_interval: Option<Duration>,
    /// How long an HTTP/2 PING may go unanswered before the connection is closed.
    pub h2_keep_alive_timeout: Duration,
}

/// A PEM certificate chain and key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Request limits.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Largest governed request body keygate reads (it must read it whole to decide).
    pub max_body_bytes: usize,
}

/// The admin listener (`/healthz`, `/readyz`, `/metrics`).
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Address to bind; loopback by default.
    pub address: SocketAddr,
}

/// The async runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Worker threads; `None` means one per core.
    pub worker_threads: Option<NonZeroUsize>,
}

/// A configuration error: which file, which field, what is wrong.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    file: String,
    field: Option<String>,
    message: String,
}

impl ConfigError {
    /// An error about `field` (a dotted path such as `upstream.url`).
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: String::new(),
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// An error about the file as a whole.
    pub fn file(message: impl Into<String>) -> Self {
        ConfigError {
            file: String::new(),
            field: None,
            message: message.into(),
        }
    }

    /// Attaches the file name the error came from.
    pub fn in_file(mut self, path: &Path) -> Self {
        self.file = path.display().to_string();
        self
    }

    /// The dotted field path, when the error is about one field.
    pub fn field_path(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

impl From<CredentialError> for ConfigError {
    fn from(e: CredentialError) -> Self {
        ConfigError::field(e.field, e.message)
    }
}

impl From<crate::identity::FieldError> for ConfigError {
    fn from(e: crate::identity::FieldError) -> Self {
        ConfigError::field(e.field, e.message)
    }
}

impl From<crate::egress::config::FieldError> for ConfigError {
    fn from(e: crate::egress::config::FieldError) -> Self {
        ConfigError::field(e.field, e.message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = if self.file.is_empty() {
            "<config>"
        } else {
            &self.file
        };
        match &self.field {
            Some(field) => write!(f, "{file}: `{field}`: {}", self.message),
            None => write!(f, "{file}: {}", self.message),
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file, reading keygate's credential from the process
    /// environment. Relative paths in it are relative to the file's directory (as nginx and most
    /// servers resolve them), so the file means the same whatever the working directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, Secrets::Read(&ProcessEnv))
    }

    /// [`Config::load`] without reading keygate's credential: it must be configured, but its
    /// variable or file is not read (`upstream.credential` is `None`, `credential_source` set).
    pub fn load_without_secrets(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, Secrets::Skip)
    }

    /// [`Config::load`] with the choice of how to treat the credential.
    pub fn load_with(path: &Path, secrets: Secrets<'_>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::file(format!("cannot read: {e}")).in_file(path))?;
        let mut config =
            Config::parse(&text, config_dir(path), secrets).map_err(|e| e.in_file(path))?;
        config.source_path = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and validates config text; relative paths stay relative to the working directory.
    /// Credentials named by `env` are read from the process environment.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, &ProcessEnv)
    }

    /// Like [`Config::from_toml`], reading environment variables through `env`.
    pub fn from_toml_with_env(text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new(""), Secrets::Read(env))
    }

    /// Parses and validates config text whose relative paths are relative to `base_dir`.
    pub fn parse(text: &str, base_dir: &Path, secrets: Secrets<'_>) -> Result<Config, ConfigError> {
        let raw = raw::RawConfig::parse(text)?;
        validate::validate(raw, base_dir, secrets)
    }

    /// Reads keygate's credential now (after [`Config::load_without_secrets`]).
    pub fn resolve_credential(&mut self, env: &dyn Env) -> Result<(), ConfigError> {
        self.upstream.credential = match &self.upstream.credential_source {
            Some(source) => Some(source.read(env)?),
            None => None,
        };
        Ok(())
    }
}

/// The directory relative paths in the config file at `path` are resolved against.
pub fn config_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

#[cfg(test)]
mod tests;
