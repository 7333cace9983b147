//! The config file as written: serde structs that mirror the TOML, unknown fields rejected.
//!
//! Only syntax and shape are checked here; meaning (addresses, durations, URLs, files) is checked in
//! the `validate` module.

use serde::Deserialize;

use super::ConfigError;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub listener: RawListener,
    pub upstream: RawUpstream,
    pub limits: RawLimits,
    pub admin: RawAdmin,
    pub log: RawLog,
    pub runtime: RawRuntime,
    pub identity: RawIdentity,
    pub authz: RawAuthz,
    pub ratelimit: crate::ratelimit::RawRateLimitConfig,
    pub audit: RawAudit,
    pub policy: Option<crate::policy::org::RawOrgPolicyConfig>,
    pub telemetry: RawTelemetry,
    pub egress: Option<crate::egress::config::RawEgressConfig>,
    pub reconcile: Option<RawReconcile>,
    pub quota: Option<RawQuota>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawReconcile {
    pub interval: Option<String>,
    pub grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQuota {
    pub kafka_keys_per_cluster: Option<u64>,
    pub warn_ratio: Option<f64>,
    pub mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTelemetry {
    pub otlp_endpoint: Option<String>,
    pub sample_ratio: Option<f64>,
    pub instance_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIdentity {
    pub source: Option<String>,
    pub directory: Option<String>,
    pub cache_ttl: Option<String>,
    pub cache_capacity: Option<usize>,
    pub jwt: Vec<crate::identity::jwt::RawIssuer>,
    pub map: Vec<crate::identity::map::RawMapping>,
    pub mtls: Option<crate::identity::mtls::RawMtls>,
    pub broker: Option<crate::identity::broker::RawBroker>,
    pub oauth: Option<crate::identity::oauth::RawOAuth>,
    pub external_bindings: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuthz {
    pub org_id: Option<String>,
    pub matrix: Option<String>,
    pub bindings: Option<String>,
    pub inventory: Option<String>,
    pub refresh_interval: Option<String>,
    pub max_staleness: Option<String>,
    pub inventory_refresh_min_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCredential {
    pub env: Option<String>,
    pub file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    pub file: Option<String>,
    pub file_mode: Option<String>,
    pub max_file_bytes: Option<u64>,
    pub stdout: Option<bool>,
    pub webhook: Option<String>,
    pub webhook_spool: Option<String>,
    pub webhook_spool_max_bytes: Option<u64>,
    pub ungoverned: Option<bool>,
    pub instance_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawListener {
    pub address: Option<String>,
    pub public_url: Option<String>,
    pub tls: Option<RawTls>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_header_bytes: Option<usize>,
    pub shutdown_grace: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub h2_keep_alive_interval: Option<String>,
    pub h2_keep_alive_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    pub url: Option<String>,
    pub web_url: Option<String>,
    pub ca_file: Option<String>,
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub body_idle_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_idle_per_host: Option<usize>,
    pub rewrite_links: Option<bool>,
    pub link_origins: Option<Vec<String>>,
    pub credential: Option<RawCredential>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub max_body_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
    pub access_log: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRuntime {
    pub worker_threads: Option<usize>,
}

impl RawConfig {
    /// Parses TOML text; a shape error names the dotted path of the offending field.
    pub fn parse(text: &str) -> Result<RawConfig, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::file(one_line(&e.to_string())))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let message = one_line(&e.inner().to_string());
            if path.is_empty() || path == "." {
                ConfigError::file(message)
            } else {
                ConfigError::field(path, message)
            }
        })
    }
}

/// toml's messages span several lines: a position, a source excerpt, then the cause. Keep the
/// position and the cause, on one line.
fn one_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid TOML");
    let position = first.strip_prefix("TOML parse error at ").unwrap_or("");
    let cause = message
        .lines()
        .map(str::trim)
        .rfind(|l| {
            !l.is_empty()
                && !l.starts_with('|')
                && !l.starts_with("TOML parse error")
                && !l
                    .split_once(" |")
                    .is_some_and(|(n, _)| n.trim().chars().all(|c| c.is_ascii_digit()))
                && !l.chars().all(|c| c == '^' || c == ' ')
        })
        .unwrap_or(first);
    if position.is_empty() {
        cause.to_string()
    } else {
        format!("{position}: {cause}")
    }
}
