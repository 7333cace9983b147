//! `[upstream]`: the upstream, the pooled client to it and keygate's own credential. Owned here,
//! assembled into keygate's config by `config`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

use crate::env::Env;

/// The upstream and the pooled client to it.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Base URL, scheme and authority only (`https://api.confluent.cloud`).
    pub url: Uri,
    /// Confluent's web host (`https://confluent.cloud`): where a session bearer token is resolved
    /// (`GET /api/me`), the call the Confluent CLI makes itself.
    pub web_url: Uri,
    /// Extra CA certificates (PEM) trusted for the upstream, on top of the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// TCP connect (and TLS handshake) deadline.
    pub connect_timeout: Duration,
    /// Deadline for the upstream's response head, from the moment the request is sent.
    pub request_timeout: Duration,
    /// Deadline for a governed response body keygate reads whole (a create's, for the new key's
    /// id), from the response head.
    pub body_timeout: Duration,
    /// Longest wait for the next bytes of a streamed response body.
    pub body_idle_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
    /// Idle connections kept per upstream host.
    pub max_idle_per_host: usize,
    /// Whether absolute upstream links in responses are rewritten to keygate's own origin.
    pub rewrite_links: bool,
    /// The origins (`scheme://authority`) the upstream writes into its links; empty: the origin
    /// of [`UpstreamConfig::url`].
    pub link_origins: Vec<String>,
    /// keygate's own credential (`KEY:SECRET`), for role bindings, inventory and key counts;
    /// `None` when none is configured or when the config was loaded without secrets.
    pub credential: Option<crate::redact::Secret>,
    /// Where the credential is configured to come from (set even when it was not read).
    pub credential_source: Option<CredentialSource>,
}

/// Where keygate's own credential comes from (`[upstream.credential]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// An environment variable holding `KEY:SECRET`.
    Env(String),
    /// A file holding `KEY:SECRET` (resolved against the config file's directory).
    File(PathBuf),
}

impl CredentialSource {
    /// Reads and checks the credential.
    pub fn read(&self, env: &dyn Env) -> Result<crate::redact::Secret, CredentialError> {
        let value = match self {
            CredentialSource::Env(name) => env.var(name).ok_or_else(|| {
                CredentialError::new(
                    "upstream.credential.env",
                    format!("environment variable `{name}` is not set"),
                )
            })?,
            CredentialSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
                CredentialError::new(
                    "upstream.credential.file",
                    format!("cannot read `{}`: {e}", path.display()),
                )
            })?,
        };
        let value = value.trim();
        match value.split_once(':') {
            Some((key, secret)) if !key.is_empty() && !secret.is_empty() => {
                Ok(crate::redact::Secret::new(value))
            }
            _ => Err(CredentialError::new(
                "upstream.credential",
                "the credential must be `KEY:SECRET` (a Cloud API key of keygate's service account)",
            )),
        }
    }
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Env(name) => write!(f, "environment variable `{name}`"),
            CredentialSource::File(path) => write!(f, "file `{}`", path.display()),
        }
    }
}

/// A credential that could not be read: which field of `[upstream.credential]`, and why. The
/// config reports it with the file it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialError {
    /// The field's path (`upstream.credential.env`).
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl CredentialError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        CredentialError {
            field,
            message: message.into(),
        }
    }
}
