//! `[ratelimit.shared]`: where replicas share their limits (Redis or Valkey).
//!
//! ```toml
//! [ratelimit.shared]
//! url = "rediss://redis.keygate.svc:6380/0"          # redis:// or rediss:// (TLS, rustls)
//! username = { env = "KEYGATE_REDIS_USERNAME" }      # optional; or { file = "…" }
//! password = { file = "/run/secrets/redis-password" } # optional; or { env = "…" }
//! ca_file = "redis-ca.pem"      # optional, rediss only: trust this CA instead of the web roots
//! connect_timeout = "50ms"
//! command_timeout = "50ms"
//! probe_interval = "1s"
//! key_prefix = "keygate"
//! all = false                   # true: every limit is shared unless it says `shared = false`
//! ```
//!
//! Credentials never sit in the URL or the file (a URL with `user:password@` is refused): they
//! are read from an environment variable or a file, into [`Secret`]s that print as a mask. The
//! connection settings are read at start-up only; a reload changes the limits, not the store.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use serde::Deserialize;

use crate::env::{Env, Secrets};
use crate::ratelimit::RateLimitError;
use crate::redact::Secret;

/// A limit check that waits longer than this costs the caller more than the limit protects; on a
/// LAN Redis answers in well under a millisecond, so 50 ms only trips on real trouble.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(50);
/// Same reasoning for opening a connection: a reachable Redis accepts within milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(50);
/// While Redis is down one background probe per second finds it back quickly without load.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Keys start with `{keygate}:`, so they are easy to find and stay clear of other data.
pub const DEFAULT_KEY_PREFIX: &str = "keygate";
/// Redis' default port.
const DEFAULT_PORT: u16 = 6379;
/// Longest key prefix: it is repeated in every key.
const MAX_PREFIX_LEN: usize = 64;

// === raw (serde) ===

/// `[ratelimit.shared]` as written in the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSharedConfig {
    /// `redis://host:port/db` or `rediss://host:port/db`.
    #[serde(default)]
    pub url: Option<String>,
    /// The ACL user name, from the environment or a file.
    #[serde(default)]
    pub username: Option<RawSecretRef>,
    /// The password, from the environment or a file.
    #[serde(default)]
    pub password: Option<RawSecretRef>,
    /// PEM CA certificates to trust for `rediss://` instead of the web PKI roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Deadline for opening a connection.
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// Deadline for one limit check (one script call).
    #[serde(default)]
    pub command_timeout: Option<String>,
    /// How often an unavailable Redis is probed.
    #[serde(default)]
    pub probe_interval: Option<String>,
    /// The start of every key (inside the hash tag).
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// Share every limit that does not say `shared = false`.
    #[serde(default)]
    pub all: Option<bool>,
}

/// `{ env = "VAR" }` or `{ file = "path" }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecretRef {
    /// An environment variable holding the value.
    #[serde(default)]
    pub env: Option<String>,
    /// A file holding the value (surrounding whitespace is ignored).
    #[serde(default)]
    pub file: Option<String>,
}

// === validated ===

/// What a shared limit does while Redis cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Fall back to this replica's own bucket (N replicas then allow N times the limit).
    Local,
    /// Refuse with 503: for limits that protect a quota, where too many is worse than none.
    Deny,
    /// Let the request through unlimited by this limit.
    Allow,
}

impl OnUnavailable {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnUnavailable::Local => "local",
            OnUnavailable::Deny => "deny",
            OnUnavailable::Allow => "allow",
        }
    }
}

/// Where a credential comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file (resolved against the config file's directory).
    File(PathBuf),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "environment variable `{name}`"),
            SecretSource::File(path) => write!(f, "file `{}`", path.display()),
        }
    }
}

/// The validated `[ratelimit.shared]` section.
#[derive(Clone)]
pub struct SharedConfig {
    url: Uri,
    tls: bool,
    host: String,
    port: u16,
    db: i64,
    ca_file: Option<PathBuf>,
    ca_pem: Option<Arc<[u8]>>,
    username_source: Option<SecretSource>,
    password_source: Option<SecretSource>,
    username: Option<Secret>,
    password: Option<Secret>,
    pub(in crate::ratelimit) connect_timeout: Duration,
    pub(in crate::ratelimit) command_timeout: Duration,
    pub(in crate::ratelimit) probe_interval: Duration,
    key_prefix: Box<str>,
    all: bool,
}

impl fmt::Debug for SharedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedConfig")
            .field("url", &self.url)
            .field("username", &self.username_source)
            .field("password", &self.password_source)
            .field("ca_file", &self.ca_file)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("probe_interval", &self.probe_interval)
            .field("key_prefix", &self.key_prefix)
            .field("all", &self.all)
            .finish()
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> RateLimitError {
    RateLimitError::Field {
        field,
        message: message.into(),
    }
}

impl SharedConfig {
    /// Validates the raw section; relative paths against `base`; credentials read per `secrets`.
    pub(in crate::ratelimit) fn validate(
        raw: RawSharedConfig,
        base: &Path,
        secrets: Secrets<'_>,
    ) -> Result<SharedConfig, RateLimitError> {
        const URL: &str = "ratelimit.shared.url";
        let text = raw.url.ok_or_else(|| {
            invalid(
                URL,
                "required: the Redis (or Valkey) URL, `redis://host:6379` or `rediss://host:6380`",
            )
        })?;
        let url: Uri = text
            .parse()
            .map_err(|e| invalid(URL, format!("`{text}` is not a URL: {e}")))?;
        let tls = match url.scheme_str() {
            Some("redis") => false,
            Some("rediss") => true,
            _ => {
                return Err(invalid(
                    URL,
                    format!("`{text}` must start with redis:// or rediss:// (TLS)"),
                ))
            }
        };
        let Some(authority) = url.authority() else {
            return Err(invalid(URL, format!("`{text}` has no host")));
        };
        if authority.as_str().contains('@') {
            // Not echoed: the URL holds a credential.
            return Err(invalid(
                URL,
                "credentials in the URL are not supported: set `ratelimit.shared.username` and \
                 `ratelimit.shared.password` (from an environment variable or a file)",
            ));
        }
        let host = authority.host().to_owned();
        if host.is_empty() {
            return Err(invalid(URL, format!("`{text}` has no host")));
        }
        let port = authority.port_u16().unwrap_or(DEFAULT_PORT);
        if url.query().is_some() {
            return Err(invalid(
                URL,
                format!("`{text}`: query parameters are not supported"),
            ));
        }
        let db = match url.path().trim_start_matches('/') {
            "" => 0,
            n => n.parse::<i64>().ok().filter(|db| *db >= 0).ok_or_else(|| {
                invalid(
                    URL,
                    format!("`{text}`: the path must be a database number such as `/0`"),
                )
            })?,
        };

        let (ca_file, ca_pem) = match raw.ca_file {
            None => (None, None),
            Some(_) if !tls => {
                return Err(invalid(
                    "ratelimit.shared.ca_file",
                    "only used with a rediss:// (TLS) url",
                ))
            }
            Some(path) if path.is_empty() => {
                return Err(invalid("ratelimit.shared.ca_file", "must not be empty"))
            }
            Some(path) => {
                let path = base.join(path);
                let pem = read_ca(&path)?;
                (Some(path), Some(pem))
            }
        };

        let username_source = secret_source("ratelimit.shared.username", raw.username, base)?;
        let password_source = secret_source("ratelimit.shared.password", raw.password, base)?;
        if username_source.is_some() && password_source.is_none() {
            return Err(invalid(
                "ratelimit.shared.username",
                "a username needs a `ratelimit.shared.password`",
            ));
        }

        let key_prefix = raw
            .key_prefix
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
        let prefix_ok = !key_prefix.is_empty()
            && key_prefix.len() <= MAX_PREFIX_LEN
            && key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
        if !prefix_ok {
            return Err(invalid(
                "ratelimit.shared.key_prefix",
                format!(
                    "`{key_prefix}` must be 1 to {MAX_PREFIX_LEN} characters of A-Z, a-z, 0-9, \
                     `.`, `_`, `-`, `:`"
                ),
            ));
        }

        let mut config = SharedConfig {
            url,
            tls,
            host,
            port,
            db,
            ca_file,
            ca_pem,
            username_source,
            password_source,
            username: None,
            password: None,
            connect_timeout: duration(
                "ratelimit.shared.connect_timeout",
                raw.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            command_timeout: duration(
                "ratelimit.shared.command_timeout",
                raw.command_timeout,
                DEFAULT_COMMAND_TIMEOUT,
            )?,
            probe_interval: duration(
                "ratelimit.shared.probe_interval",
                raw.probe_interval,
                DEFAULT_PROBE_INTERVAL,
            )?,
            key_prefix: key_prefix.into_boxed_str(),
            all: raw.all.unwrap_or(false),
        };
        if let Secrets::Read(env) = secrets {
            config.read_credentials(env)?;
        }
        Ok(config)
    }

    /// Reads the username and password now (after a load without secrets, for `check --connect`).
    pub fn read_credentials(&mut self, env: &dyn Env) -> Result<(), RateLimitError> {
        self.username = self
            .username_source
            .as_ref()
            .map(|s| read_secret("ratelimit.shared.username", s, env))
            .transpose()?;
        self.password = self
            .password_source
            .as_ref()
            .map(|s| read_secret("ratelimit.shared.password", s, env))
            .transpose()?;
        Ok(())
    }

    /// Whether every limit is shared unless it opts out.
    pub fn all(&self) -> bool {
        self.all
    }

    /// The URL (it never holds a credential), for messages.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// Where the password comes from, for `check`.
    pub fn password_source(&self) -> Option<&SecretSource> {
        self.password_source.as_ref()
    }

    /// The key prefix as configured.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The start of every key: the prefix as a Cluster hash tag (see `shared.rs`), then `:`.
    pub(in crate::ratelimit) fn key_stem(&self) -> String {
        format!("{{{}}}:", self.key_prefix)
    }

    /// Whether `other` connects to the same store the same way (a reload cannot change that).
    pub(in crate::ratelimit) fn same_store(&self, other: &SharedConfig) -> bool {
        self.url == other.url
            && self.ca_file == other.ca_file
            && self.username_source == other.username_source
            && self.password_source == other.password_source
            && self.connect_timeout == other.connect_timeout
            && self.command_timeout == other.command_timeout
            && self.probe_interval == other.probe_interval
            && self.key_prefix == other.key_prefix
    }

    /// A client for this store (no I/O: connections are opened on use). Credentials must have
    /// been read when a password is configured.
    pub(in crate::ratelimit) fn client(&self) -> Result<redis::Client, redis::RedisError> {
        use redis::IntoConnectionInfo;
        let scheme = if self.tls { "rediss" } else { "redis" };
        let info =
            format!("{scheme}://{}:{}/{}", self.host, self.port, self.db).into_connection_info()?;
        let mut settings = redis::RedisConnectionInfo::default().set_db(self.db);
        if let Some(username) = &self.username {
            settings = settings.set_username(username.expose());
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password.expose());
        }
        let info = info.set_redis_settings(settings);
        match &self.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            ),
            None => redis::Client::open(info),
        }
    }
}

fn secret_source(
    field: &'static str,
    raw: Option<RawSecretRef>,
    base: &Path,
) -> Result<Option<SecretSource>, RateLimitError> {
    let Some(raw) = raw else { return Ok(None) };
    match (raw.env, raw.file) {
        (Some(_), Some(_)) => Err(invalid(field, "set either `env` or `file`, not both")),
        (None, None) => Err(invalid(field, "set `env` (a variable) or `file`")),
        (Some(name), None) if name.is_empty() => Err(invalid(field, "`env` must not be empty")),
        (Some(name), None) => Ok(Some(SecretSource::Env(name))),
        (None, Some(file)) if file.is_empty() => Err(invalid(field, "`file` must not be empty")),
        (None, Some(file)) => Ok(Some(SecretSource::File(base.join(file)))),
    }
}

fn read_secret(
    field: &'static str,
    source: &SecretSource,
    env: &dyn Env,
) -> Result<Secret, RateLimitError> {
    let value = match source {
        SecretSource::Env(name) => env
            .var(name)
            .ok_or_else(|| invalid(field, format!("environment variable `{name}` is not set")))?,
        SecretSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
            invalid(
                field,
                format!("cannot read `{}`: {}", path.display(), e.kind()),
            )
        })?,
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(field, format!("{source} is empty")));
    }
    Ok(Secret::new(value))
}

fn read_ca(path: &Path) -> Result<Arc<[u8]>, RateLimitError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    const FIELD: &str = "ratelimit.shared.ca_file";
    let pem = std::fs::read(path)
        .map_err(|e| invalid(FIELD, format!("cannot read `{}`: {e}", path.display())))?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| invalid(FIELD, format!("`{}`: {e}", path.display())))?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid(
            FIELD,
            format!("`{}` holds no PEM certificate", path.display()),
        ));
    }
    Ok(Arc::from(pem))
}

fn duration(
    field: &'static str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, RateLimitError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let d = humantime::parse_duration(&text).map_err(|e| {
        invalid(
            field,
            format!("`{text}` is not a duration like `50ms` or `1s`: {e}"),
        )
    })?;
    if d.is_zero() {
        return Err(invalid(field, "must be greater than zero"));
    }
    Ok(d)
}

/// Checks that `quota` can be kept in Redis exactly: at least one microsecond per request (the
/// script counts microseconds) and a refill time a Lua number holds exactly.
pub(crate) fn check_quota(id: &str, quota: &governor::Quota) -> Result<(), RateLimitError> {
    let interval = quota.replenish_interval();
    if interval < Duration::from_micros(1) {
        return Err(RateLimitError::NotShareable {
            id: id.to_owned(),
            reason: "more than one request per microsecond",
        });
    }
    let refill = super::micros(interval).saturating_mul(u64::from(quota.burst_size().get()));
    if refill >= super::MAX_EXACT_MICROS {
        return Err(RateLimitError::NotShareable {
            id: id.to_owned(),
            reason: "its bucket takes centuries to refill",
        });
    }
    Ok(())
}
