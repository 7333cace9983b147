//! Credential brokering: keygate calls Confluent with a credential of its own for callers who hold
//! none (`broker = true` on an issuer or on `[identity.mtls]`).
//!
//! The caller authenticates to keygate (JWT, client certificate); keygate removes the caller's
//! `Authorization` and sends a configured upstream credential instead — the mapping's own, else
//! the issuer's (or mTLS section's), else keygate's (`[upstream.credential]`). Credentials come
//! from an environment variable or a file and are never logged: only their key id (the part
//! before `:`) appears, in the audit record. In this mode keygate's decision is the only
//! enforcement point, so a brokered caller may use only the routes listed in
//! `[identity.broker] routes`; everything else is refused (403). By default: the governed
//! api-keys routes and the reads their clients need.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use http::{HeaderValue, Method};
use serde::Deserialize;

use super::FieldError;
use crate::redact::Secret;

/// The routes a brokered caller may use unless configured otherwise.
pub const DEFAULT_ROUTES: &[&str] = &[
    "* /iam/v2/api-keys",
    "* /iam/v2/api-keys/*",
    "GET /org/v2/environments",
    "GET /cmk/v2/clusters/*",
    "GET /iam/v2/service-accounts",
    "GET /iam/v2/users",
];

/// `[identity.broker]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBroker {
    pub routes: Option<Vec<String>>,
}

/// A route pattern: a method (or `*`) and a path whose `*` segments match any one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    method: Option<Method>,
    segments: Vec<String>,
}

impl Route {
    /// Parses `"GET /org/v2/environments"` or `"* /iam/v2/api-keys/*"`.
    pub fn parse(text: &str) -> Result<Route, String> {
        let (method, path) = text
            .trim()
            .split_once(' ')
            .ok_or_else(|| format!("`{text}`: expected `METHOD /path`"))?;
        let method = match method {
            "*" => None,
            m => Some(
                Method::from_bytes(m.as_bytes())
                    .map_err(|_| format!("`{text}`: `{m}` is not a method"))?,
            ),
        };
        let path = path.trim();
        if !path.starts_with('/') {
            return Err(format!("`{text}`: the path must start with `/`"));
        }
        Ok(Route {
            method,
            segments: path[1..].split('/').map(str::to_owned).collect(),
        })
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        let mut segments = path.strip_prefix('/').unwrap_or(path).split('/');
        for want in &self.segments {
            match segments.next() {
                Some(seg) if want == "*" && !seg.is_empty() => {}
                Some(seg) if seg == want => {}
                _ => return false,
            }
        }
        segments.next().is_none()
    }
}

/// The routes brokered callers may use.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// The allowlist.
    pub routes: Vec<Route>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            routes: DEFAULT_ROUTES
                .iter()
                .filter_map(|r| Route::parse(r).ok())
                .collect(),
        }
    }
}

impl BrokerConfig {
    /// Validates `[identity.broker]`.
    pub fn validate(raw: &RawBroker) -> Result<BrokerConfig, FieldError> {
        match &raw.routes {
            None => Ok(BrokerConfig::default()),
            Some(routes) => Ok(BrokerConfig {
                routes: routes
                    .iter()
                    .map(|r| {
                        Route::parse(r).map_err(|e| FieldError::new("identity.broker.routes", e))
                    })
                    .collect::<Result<_, _>>()?,
            }),
        }
    }

    /// Whether a brokered caller may use this route.
    pub fn allows(&self, method: &Method, path: &str) -> bool {
        self.routes.iter().any(|r| r.matches(method, path))
    }
}

/// An upstream credential keygate sends for brokered callers: `Basic base64(KEY:SECRET)`,
/// prepared once. Its `Debug` shows the key id only.
pub struct Credential {
    key_id: String,
    header: HeaderValue,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("key_id", &self.key_id)
            .field("secret", &"**REDACTED**")
            .finish()
    }
}

impl Credential {
    /// From `KEY:SECRET`; `field` names it in errors (never its value).
    pub fn new(secret: &Secret, field: &str) -> Result<Credential, FieldError> {
        let value = secret.expose();
        let (key, rest) = value.split_once(':').ok_or_else(|| {
            FieldError::new(
                field,
                "the credential must be `KEY:SECRET` (a Cloud API key)",
            )
        })?;
        if key.is_empty() || rest.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(FieldError::new(
                field,
                "the credential must be `KEY:SECRET` (a Cloud API key)",
            ));
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        let mut header = HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| FieldError::new(field, "the credential is not a valid header value"))?;
        header.set_sensitive(true);
        Ok(Credential {
            key_id: key.to_owned(),
            header,
        })
    }

    /// The key id (not secret).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The `Authorization` value (sensitive: never logged by hyper or keygate).
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }
}

/// The brokered credentials by key id, and the route allowlist.
#[derive(Debug, Default)]
pub struct Broker {
    config: BrokerConfig,
    credentials: HashMap<String, Arc<Credential>>,
}

impl Broker {
    /// An empty broker with this allowlist.
    pub fn new(config: BrokerConfig) -> Broker {
        Broker {
            config,
            credentials: HashMap::new(),
        }
    }

    /// Registers a credential; its key id.
    pub fn add(&mut self, credential: Credential) -> String {
        let key_id = credential.key_id.clone();
        self.credentials
            .entry(key_id.clone())
            .or_insert_with(|| Arc::new(credential));
        key_id
    }

    /// The credential with this key id.
    pub fn credential(&self, key_id: &str) -> Option<Arc<Credential>> {
        self.credentials.get(key_id).cloned()
    }

    /// Whether a brokered caller may use this route.
    pub fn allows(&self, method: &Method, path: &str) -> bool {
        self.config.allows(method, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes() {
        let c = BrokerConfig::default();
        assert!(c.allows(&Method::POST, "/iam/v2/api-keys"));
        assert!(c.allows(&Method::DELETE, "/iam/v2/api-keys/ABC"));
        assert!(c.allows(&Method::GET, "/org/v2/environments"));
        assert!(c.allows(&Method::GET, "/cmk/v2/clusters/lkc-1"));
        assert!(!c.allows(&Method::GET, "/cmk/v2/clusters"));
        assert!(!c.allows(&Method::POST, "/iam/v2/service-accounts"));
        assert!(!c.allows(&Method::GET, "/iam/v2/role-bindings"));
        assert!(!c.allows(&Method::GET, "/iam/v2/api-keys/ABC/extra"));
        assert!(!c.allows(&Method::GET, "/iam/v2/api-keys/"));
    }

    #[test]
    fn credential_debug_shows_the_key_id_only() {
        let c = Credential::new(&Secret::new("BROKERKEY:canary-broker-secret"), "x").unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("BROKERKEY") && !shown.contains("canary"));
        assert!(c.header().is_sensitive());
        assert!(Credential::new(&Secret::new("nocolon"), "x").is_err());
    }
}
