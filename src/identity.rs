//! Identity: who is really calling, on governed routes (docs/architecture.md §3).
//!
//! A Basic credential (a Cloud or Global API key, `key:secret`) proves nothing by its key id alone:
//! the owner is resolved by asking the upstream `GET /iam/v2/api-keys/{key id}` *with the presented
//! credential*, so Confluent verifies the secret ([`basic`]). Positive answers are cached for a
//! bounded time and size, keyed by an HMAC of the whole credential under a per-process random key;
//! concurrent misses for one credential share one lookup ([`cache`]). A static directory of key ids
//! with salted secret hashes ([`directory`]) replaces the upstream for development and air-gapped
//! use. A Bearer token is a Confluent session token (the Confluent CLI's): Confluent itself says
//! whose it is ([`session`]), and the answer is cached until the token's `exp` at the latest.
//! Ungoverned routes are not touched by this stage at all.
//!
//! The secret is never stored, logged or put in an error: errors name the key id at most.

pub mod basic;
pub mod cache;
pub mod directory;
pub mod jwt;
pub mod session;

use std::sync::Arc;

use base64::Engine;
use http::header::AUTHORIZATION;
use http::HeaderMap;

use crate::model::Principal;

/// Longest API key id keygate accepts (real ids are 16 characters; the reference allows growth).
const MAX_KEY_ID_LEN: usize = 64;

/// Longest id an error message repeats. Real key ids are 16 characters and principal ids shorter;
/// a 64-character "key id" is far more likely a secret in the wrong field (key and secret
/// swapped), which must not be echoed into an error body or a log line.
const MAX_QUOTED_ID_LEN: usize = 32;

/// `id` in backticks when it is id-sized; otherwise only its length.
fn quoted_id(id: &str) -> String {
    if id.chars().count() <= MAX_QUOTED_ID_LEN {
        format!("`{id}`")
    } else {
        format!(
            "of {} characters (not repeated: that is the length of a secret, not of an id)",
            id.chars().count()
        )
    }
}

/// Why a governed request has no verified identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// No `Authorization` header.
    #[error("this endpoint requires an API key: send `Authorization: Basic base64(key:secret)` with a Cloud or Global API key")]
    Missing,
    /// The header is not a well-formed Basic credential.
    #[error("malformed `Authorization` header: {0}")]
    Malformed(&'static str),
    /// A scheme keygate does not accept here (yet).
    #[error("`{0}` credentials are not accepted on the api-keys endpoints yet: use a Cloud or Global API key (Basic)")]
    UnsupportedScheme(&'static str),
    /// The upstream (or the directory) did not accept the key and secret.
    #[error("API key {} was not accepted: wrong key or secret, a deleted key, or a resource-scoped key", quoted_id(.key_id))]
    Rejected {
        /// The key id (not secret).
        key_id: String,
    },
    /// The key is valid but its owner is not a user, service account or identity pool.
    #[error("API key {} belongs to {}, which is not a user, service account or identity pool", quoted_id(.key_id), quoted_id(.owner))]
    UnknownOwner {
        /// The key id.
        key_id: String,
        /// The owner id as the upstream reported it (truncated).
        owner: String,
    },
    /// Confluent rate-limited the identity lookup (made with the caller's own credential).
    #[error("Confluent Cloud rate-limited this API key; retry after the time in `Retry-After`")]
    UpstreamRateLimited(RateLimitHeaders),
    /// The credential could not be verified because the upstream is unreachable or failing.
    #[error("cannot verify the credential right now: {0}")]
    Unavailable(String),
    /// A bearer token that is not a Confluent session token.
    #[error("malformed bearer token: {0}")]
    SessionMalformed(&'static str),
    /// A session token past its `exp`.
    #[error("the Confluent session token has expired: log in again (`confluent login`)")]
    SessionExpired,
    /// Confluent did not accept the session token.
    #[error("the Confluent session token was not accepted: log in again (`confluent login`)")]
    SessionRejected,
    /// The session belongs to another Confluent organisation than keygate's.
    #[error("the Confluent session belongs to another organisation than the one keygate governs")]
    SessionOtherOrganization,
}

impl IdentityError {
    /// Whether the caller presented a bearer token (the 401 challenges `Bearer`, not `Basic`).
    pub fn is_bearer(&self) -> bool {
        matches!(
            self,
            IdentityError::SessionMalformed(_)
                | IdentityError::SessionExpired
                | IdentityError::SessionRejected
                | IdentityError::SessionOtherOrganization
        )
    }
}

/// The rate-limit headers of an upstream 429 (`Retry-After`, `X-RateLimit-*`), to pass on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitHeaders(Vec<(http::HeaderName, http::HeaderValue)>);

impl RateLimitHeaders {
    /// Picks the rate-limit headers out of an upstream response.
    pub fn from_upstream(headers: &HeaderMap) -> Self {
        const NAMES: [&str; 4] = [
            "retry-after",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ];
        RateLimitHeaders(
            NAMES
                .iter()
                .filter_map(|name| {
                    headers
                        .get(*name)
                        .map(|v| (http::HeaderName::from_static(name), v.clone()))
                })
                .collect(),
        )
    }

    /// The headers, in order.
    pub fn iter(&self) -> impl Iterator<Item = &(http::HeaderName, http::HeaderValue)> {
        self.0.iter()
    }
}

/// A parsed Basic credential. The secret is borrowed from the request for the duration of the
/// check and never copied into anything that outlives it.
pub struct BasicCredential<'a> {
    /// The key id (the Basic username).
    pub key_id: &'a str,
    /// The secret (the Basic password).
    secret: &'a str,
    /// `key:secret` as decoded, for the cache's HMAC.
    pair: &'a str,
}

impl std::fmt::Debug for BasicCredential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredential")
            .field("key_id", &self.key_id)
            .field("secret", &"**REDACTED**")
            .finish()
    }
}

impl<'a> BasicCredential<'a> {
    /// The secret, for verification only.
    pub fn secret(&self) -> &'a str {
        self.secret
    }

    /// `key:secret`.
    pub fn pair(&self) -> &'a str {
        self.pair
    }
}

/// Decodes the `Authorization` header into `scratch` and parses a Basic credential from it.
pub fn parse_basic<'a>(
    headers: &HeaderMap,
    scratch: &'a mut String,
) -> Result<BasicCredential<'a>, IdentityError> {
    let value = headers.get(AUTHORIZATION).ok_or(IdentityError::Missing)?;
    let text = value
        .to_str()
        .map_err(|_| IdentityError::Malformed("not visible ASCII"))?;
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return Err(IdentityError::UnsupportedScheme("Bearer"));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(IdentityError::Malformed("expected the `Basic` scheme"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| IdentityError::Malformed("Basic credential is not base64"))?;
    *scratch = String::from_utf8(decoded)
        .map_err(|_| IdentityError::Malformed("Basic credential is not UTF-8"))?;
    let pair: &'a str = scratch.as_str();
    let (key_id, secret) = pair
        .split_once(':')
        .ok_or(IdentityError::Malformed("Basic credential has no `:`"))?;
    // The key id goes into an upstream path: only the characters real ids use.
    if key_id.is_empty()
        || key_id.len() > MAX_KEY_ID_LEN
        || !key_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(IdentityError::Malformed(
            "API key id must be 1 to 64 letters and digits",
        ));
    }
    if secret.is_empty() {
        return Err(IdentityError::Malformed("empty API secret"));
    }
    Ok(BasicCredential {
        key_id,
        secret,
        pair,
    })
}

/// The token of an `Authorization: Bearer` header, if that is the scheme.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, IdentityError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let Ok(text) = value.to_str() else {
        return Ok(None);
    };
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(IdentityError::SessionMalformed("empty bearer token"));
    }
    Ok(Some(token))
}

/// Where verified identities come from.
#[derive(Debug)]
pub enum Source {
    /// The upstream verifies each credential (with a cache in front).
    Upstream(basic::UpstreamResolver),
    /// A static directory.
    Directory(directory::Directory),
}

/// The identity stage's engine.
#[derive(Debug)]
pub struct Authenticator {
    source: Source,
    cache: cache::IdentityCache,
    sessions: Option<session::SessionResolver>,
}

/// Whether an identity came from the cache (for traces and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Served from the cache.
    Hit,
    /// Resolved now (or by a concurrent request's lookup).
    Miss,
}

impl Authenticator {
    /// An authenticator over a source, with a cache of the given bound.
    pub fn new(source: Source, cache: cache::IdentityCache) -> Authenticator {
        Authenticator {
            source,
            cache,
            sessions: None,
        }
    }

    /// Also accepts Confluent session bearer tokens, resolved by `sessions`.
    pub fn with_sessions(mut self, sessions: session::SessionResolver) -> Authenticator {
        self.sessions = Some(sessions);
        self
    }

    /// The cache (for tests and metrics).
    pub fn cache(&self) -> &cache::IdentityCache {
        &self.cache
    }

    /// Establishes the principal of a governed request.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Arc<Principal>, Lookup), IdentityError> {
        if let Some(token) = bearer_token(headers)? {
            return self.authenticate_session(headers, token).await;
        }
        let mut scratch = String::new();
        let credential = parse_basic(headers, &mut scratch)?;
        match &self.source {
            Source::Directory(directory) => {
                Ok((Arc::new(directory.verify(&credential)?), Lookup::Miss))
            }
            Source::Upstream(resolver) => {
                let authorization = headers.get(AUTHORIZATION).ok_or(IdentityError::Missing)?;
                self.cache
                    .get_or_resolve(credential.pair(), || {
                        resolver.resolve(credential.key_id, authorization)
                    })
                    .await
            }
        }
    }
}

impl Authenticator {
    /// A Confluent session token: cached by an HMAC of the token; on a miss its `exp` is read
    /// (an expired token is refused without asking) and Confluent is asked.
    async fn authenticate_session(
        &self,
        headers: &HeaderMap,
        token: &str,
    ) -> Result<(Arc<Principal>, Lookup), IdentityError> {
        let Some(sessions) = &self.sessions else {
            return Err(IdentityError::UnsupportedScheme("Bearer"));
        };
        let authorization = headers.get(AUTHORIZATION).ok_or(IdentityError::Missing)?;
        // A JWT has no `:`, a Basic pair always does: the two kinds of credential cannot share a
        // cache entry.
        self.cache
            .get_or_resolve_until(
                token,
                || {
                    let left = session::expiry(token)?
                        .duration_since(std::time::SystemTime::now())
                        .map_err(|_| IdentityError::SessionExpired)?;
                    Ok(tokio::time::Instant::now() + left)
                },
                || sessions.resolve(authorization),
            )
            .await
    }
}

#[cfg(test)]
mod tests;
