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
pub mod broker;
pub mod cache;
pub mod directory;
pub mod jwt;
pub mod map;
pub mod mtls;
pub mod oauth;
pub mod session;

use std::sync::Arc;

use base64::Engine;
use http::header::AUTHORIZATION;
use http::HeaderMap;

use crate::model::{self, Principal};

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
    /// A bearer JWT of one of keygate's issuers was refused.
    #[error("bearer token refused: {0}")]
    Jwt(jwt::JwtError),
    /// A verified external identity that no `[[identity.map]]` entry maps to a Confluent
    /// principal.
    #[error("`{external}` ({via}) is not mapped to a Confluent principal: add an `[[identity.map]]` entry for it or one of its groups, or (brokered sources only) keygate-side role bindings in `identity.external_bindings`")]
    Unmapped {
        /// The external principal (truncated).
        external: String,
        /// How it was established (`issuer https://…`, `client certificate`).
        via: String,
        /// Whether it came with a bearer token.
        bearer: bool,
    },
    /// A client certificate that yields no principal by the configured rule.
    #[error("the client certificate has none of the fields `identity.mtls.principal` names")]
    Certificate,
    /// A Terraform OAuth token exchange keygate cannot vouch for.
    #[error("token exchange refused: {0}")]
    Exchange(String),
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
                | IdentityError::Jwt(_)
                | IdentityError::Unmapped { bearer: true, .. }
                | IdentityError::Exchange(_)
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
    external: Option<Box<ExternalSources>>,
}

/// The company's own identity sources: JWT issuers, client certificates, the mapping to Confluent
/// principals, brokered credentials and OAuth bindings.
#[derive(Debug, Default)]
pub struct ExternalSources {
    issuers: jwt::Issuers,
    /// Per issuer: the key id of its brokered credential (`None`: not brokered).
    issuer_keys: Vec<Option<String>>,
    map: map::ExternalMap,
    /// Per mapping: the key id of its own credential.
    mapping_keys: Vec<Option<String>>,
    mtls: Option<MtlsSource>,
    broker: broker::Broker,
    oauth: Option<Arc<oauth::Bindings>>,
    bound: Option<BoundCheck>,
}

/// Whether an external identity holds any keygate-side role binding now (the policy set's
/// `identity.external_bindings`, as loaded): what admits a brokered external identity no mapping
/// covers.
#[derive(Clone)]
pub struct BoundCheck(Arc<dyn Fn(&model::External) -> bool + Send + Sync>);

impl BoundCheck {
    /// Over a function that answers from the current bindings.
    pub fn new(check: impl Fn(&model::External) -> bool + Send + Sync + 'static) -> BoundCheck {
        BoundCheck(Arc::new(check))
    }
}

impl std::fmt::Debug for BoundCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoundCheck")
    }
}

#[derive(Debug)]
struct MtlsSource {
    rule: Vec<mtls::Field>,
    /// The key id of its brokered credential (`None`: not brokered).
    key: Option<String>,
}

/// A config error in an identity section: the field's dotted path and what is wrong (the config
/// reports it with its file, as `egress::config::FieldError`). Never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct FieldError {
    /// The field's path (`identity.jwt[0].audiences`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A secret's source as written: `{ env = "VAR" }` or `{ file = "path" }`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCredential {
    pub env: Option<String>,
    pub file: Option<String>,
}

/// The company identity sections of the validated config, borrowed (`IdentityConfig::external`).
#[derive(Debug, Clone, Copy)]
pub struct ExternalConfig<'a> {
    /// `[[identity.jwt]]`.
    pub jwt: &'a [jwt::IssuerConfig],
    /// `[[identity.map]]`.
    pub map: &'a [map::Mapping],
    /// `[identity.mtls]`.
    pub mtls: Option<&'a mtls::MtlsConfig>,
    /// `[identity.broker]`.
    pub broker: &'a broker::BrokerConfig,
    /// `[identity.oauth]`.
    pub oauth: Option<oauth::OAuthConfig>,
}

/// Why the company's identity sources could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    /// An issuer's keys could not be loaded.
    #[error("issuer `{0}`: JWKS: {1}")]
    Jwks(String, jwt::JwksError),
    /// A credential is unusable.
    #[error(transparent)]
    Config(#[from] FieldError),
    /// No randomness for the OAuth bindings' key.
    #[error("no secure randomness available")]
    Random,
}

impl ExternalSources {
    /// Sets up the sources `config` names (loading every issuer's keys); `None` when it names
    /// none. `own` is keygate's own upstream credential (the brokering fallback).
    pub async fn build(
        config: ExternalConfig<'_>,
        own: Option<&crate::redact::Secret>,
    ) -> Result<Option<ExternalSources>, ExternalError> {
        if config.jwt.is_empty() && config.mtls.is_none() {
            return Ok(None);
        }
        let issuers = jwt::Issuers::load(config.jwt)
            .await
            .map_err(|(issuer, e)| ExternalError::Jwks(issuer, e))?;
        ExternalSources::with_issuers(config, issuers, own).map(Some)
    }

    /// Like [`ExternalSources::build`] over issuers already loaded.
    pub fn with_issuers(
        config: ExternalConfig<'_>,
        issuers: jwt::Issuers,
        own: Option<&crate::redact::Secret>,
    ) -> Result<ExternalSources, ExternalError> {
        let mut broker = broker::Broker::new(config.broker.clone());
        let mut add = |secret: Option<&crate::redact::Secret>,
                       field: String|
         -> Result<Option<String>, ExternalError> {
            match secret {
                Some(secret) => Ok(Some(broker.add(broker::Credential::new(secret, &field)?))),
                None => Ok(None),
            }
        };
        let mut issuer_keys = Vec::new();
        for (i, issuer) in config.jwt.iter().enumerate() {
            issuer_keys.push(if issuer.broker {
                add(
                    issuer.credential.as_ref().or(own),
                    format!("identity.jwt[{i}].credential"),
                )?
            } else {
                None
            });
        }
        let mut mapping_keys = Vec::new();
        for (i, mapping) in config.map.iter().enumerate() {
            mapping_keys.push(add(
                mapping.credential.as_ref(),
                format!("identity.map[{i}].credential"),
            )?);
        }
        let mtls = match config.mtls {
            Some(m) => Some(MtlsSource {
                rule: m.principal.clone(),
                key: if m.broker {
                    add(
                        m.credential.as_ref().or(own),
                        "identity.mtls.credential".into(),
                    )?
                } else {
                    None
                },
            }),
            None => None,
        };
        let oauth = match config.oauth {
            Some(o) => Some(Arc::new(
                oauth::Bindings::new(o).map_err(|_| ExternalError::Random)?,
            )),
            None => None,
        };
        Ok(ExternalSources {
            issuers,
            issuer_keys,
            map: map::ExternalMap::new(config.map.to_vec()),
            mapping_keys,
            mtls,
            broker,
            oauth,
            bound: None,
        })
    }

    /// Admits brokered external identities no mapping covers when `bound` says they hold
    /// keygate-side role bindings.
    pub fn with_bound(mut self, bound: BoundCheck) -> ExternalSources {
        self.bound = Some(bound);
        self
    }

    /// Whether any caller is brokered.
    fn brokers(&self) -> bool {
        self.issuer_keys.iter().any(Option::is_some)
            || self.mtls.as_ref().is_some_and(|m| m.key.is_some())
    }

    /// The principal of a verified external identity (see [`resolve_external`]). `default_key` is
    /// the source's brokered credential (`None`: not brokered); a mapping with its own credential
    /// uses that instead.
    fn map(
        &self,
        external: model::External,
        auth: model::AuthMethod,
        default_key: Option<&String>,
    ) -> Result<Arc<Principal>, IdentityError> {
        let broker_key = |mapping: Option<usize>| {
            default_key.map(|default| {
                mapping
                    .and_then(|i| self.mapping_keys.get(i).cloned().flatten())
                    .unwrap_or_else(|| default.clone())
            })
        };
        let bound = |e: &model::External| self.bound.as_ref().is_some_and(|b| (b.0)(e));
        resolve_external(&self.map, external, auth, broker_key, bound).map(Arc::new)
    }

    /// An identity from the cache (or just verified) as it stands now: one admitted only by its
    /// keygate-side role bindings is refused once it no longer holds any, without waiting for its
    /// cache entry to expire (the bindings reload with the policy set; a mapping does not).
    fn still_admitted(
        &self,
        (principal, lookup): (Arc<Principal>, Lookup),
    ) -> Result<(Arc<Principal>, Lookup), IdentityError> {
        if principal.is_confluent() {
            return Ok((principal, lookup));
        }
        match (principal.external(), &self.bound) {
            (Some(external), Some(bound)) if (bound.0)(external) => Ok((principal, lookup)),
            (Some(external), _) => Err(unmapped(
                external,
                external.source != model::ExternalSource::Mtls,
            )),
            (None, _) => Err(IdentityError::Unmapped {
                external: principal.id().chars().take(64).collect(),
                via: "no recorded source".into(),
                bearer: false,
            }),
        }
    }

    async fn verify_jwt(&self, index: usize, token: &str) -> Result<Arc<Principal>, IdentityError> {
        let issuer =
            self.issuers
                .get(index)
                .ok_or(IdentityError::Jwt(jwt::JwtError::Malformed(
                    "unknown issuer",
                )))?;
        let verified = issuer.verify(token).await.map_err(IdentityError::Jwt)?;
        let name = issuer.config().issuer.clone();
        self.map(
            model::External {
                id: verified.subject,
                source: model::ExternalSource::Jwt,
                issuer: name.clone(),
                groups: verified.groups,
                broker_key_id: None,
            },
            model::AuthMethod::Jwt { issuer: name },
            self.issuer_keys.get(index).and_then(Option::as_ref),
        )
    }

    fn verify_certificate(
        &self,
        cert: &mtls::ClientCertificate,
    ) -> Result<Arc<Principal>, IdentityError> {
        let source = self.mtls.as_ref().ok_or(IdentityError::Missing)?;
        let id = mtls::identity(&cert.0, &source.rule).ok_or(IdentityError::Certificate)?;
        self.map(
            model::External {
                id: id.subject.clone(),
                source: model::ExternalSource::Mtls,
                issuer: id.issuer,
                groups: Vec::new(),
                broker_key_id: None,
            },
            model::AuthMethod::Mtls {
                subject: id.subject,
            },
            source.key.as_ref(),
        )
    }
}

/// Who a verified external identity acts as (also what `keygate explain --external` decides
/// with): the Confluent principal its `[[identity.map]]` entry names; else — only when brokered
/// and holding keygate-side role bindings (`bound`) — the external identity alone, with no
/// Confluent principal; else refused. `broker_key` gives the key id of the upstream credential
/// for the mapping found (by its index; `None` for none), or `None` when the source is not
/// brokered.
pub fn resolve_external(
    map: &map::ExternalMap,
    external: model::External,
    auth: model::AuthMethod,
    broker_key: impl FnOnce(Option<usize>) -> Option<String>,
    bound: impl FnOnce(&model::External) -> bool,
) -> Result<Principal, IdentityError> {
    let bearer = external.source != model::ExternalSource::Mtls;
    let mapped = map
        .resolve(external.issuer_label(), &external.id, &external.groups)
        .and_then(|m| Some((map.entries().iter().position(|e| std::ptr::eq(e, m))?, m)));
    match mapped {
        Some((index, mapping)) => {
            let external = model::External {
                broker_key_id: broker_key(Some(index)),
                ..external
            };
            Ok(Principal::new(mapping.acting_as.clone(), auth)
                .map_err(|_| IdentityError::Certificate)?
                .with_external(external))
        }
        None => match broker_key(None) {
            Some(key) => {
                let external = model::External {
                    broker_key_id: Some(key),
                    ..external
                };
                if bound(&external) {
                    Ok(Principal::external_only(external, auth))
                } else {
                    Err(unmapped(&external, bearer))
                }
            }
            None => Err(unmapped(&external, bearer)),
        },
    }
}

/// The refusal of an external identity that has no Confluent principal to act as.
fn unmapped(external: &model::External, bearer: bool) -> IdentityError {
    IdentityError::Unmapped {
        external: external.id.chars().take(64).collect(),
        via: match external.source {
            model::ExternalSource::Mtls => "client certificate".into(),
            _ => format!("issuer {}", external.issuer),
        },
        bearer,
    }
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
            external: None,
        }
    }

    /// Also accepts the company's identities (JWT issuers, client certificates).
    pub fn with_external(mut self, external: ExternalSources) -> Authenticator {
        self.external = Some(Box::new(external));
        self
    }

    /// Admits brokered external identities with keygate-side role bindings and no mapping (see
    /// [`ExternalSources::with_bound`]); nothing without company identity sources.
    pub fn with_external_bindings(mut self, bound: BoundCheck) -> Authenticator {
        if let Some(external) = self.external.take() {
            self.external = Some(Box::new(external.with_bound(bound)));
        }
        self
    }

    /// The OAuth bindings, when the token exchange is configured.
    pub fn oauth_bindings(&self) -> Option<Arc<oauth::Bindings>> {
        self.external.as_ref().and_then(|e| e.oauth.clone())
    }

    /// The brokered credential with this key id.
    pub fn broker_credential(&self, key_id: &str) -> Option<Arc<broker::Credential>> {
        self.external
            .as_ref()
            .and_then(|e| e.broker.credential(key_id))
    }

    /// Whether a brokered caller may use this route.
    pub fn brokered_route(&self, method: &http::Method, path: &str) -> bool {
        self.external
            .as_ref()
            .is_some_and(|e| e.broker.allows(method, path))
    }

    /// The Terraform OAuth token exchange (`POST /sts/v1/oauth2/token`) when `[identity.oauth]` is
    /// configured: its subject token is verified and the access token it yields bound.
    pub fn is_token_exchange(&self, request: &http::Request<crate::body::Body>) -> bool {
        self.external.as_ref().is_some_and(|e| e.oauth.is_some())
            && request.method() == http::Method::POST
            && request.uri().path() == oauth::TOKEN_PATH
    }

    /// Whether an ungoverned request needs this stage: it may come from a brokered caller (a
    /// bearer token or a client certificate while some source is brokered), or it is the OAuth
    /// token exchange.
    pub fn wants_ungoverned(&self, request: &http::Request<crate::body::Body>) -> bool {
        let Some(external) = &self.external else {
            return false;
        };
        if self.is_token_exchange(request) {
            return true;
        }
        external.brokers()
            && (request
                .extensions()
                .get::<mtls::ClientCertificate>()
                .is_some()
                || matches!(bearer_token(request.headers()), Ok(Some(_))))
    }

    /// The identity of an ungoverned request's caller if it is brokered; `None` when the request
    /// is not a brokered caller's (it passes untouched).
    pub async fn authenticate_brokered(
        &self,
        headers: &HeaderMap,
        cert: Option<&mtls::ClientCertificate>,
    ) -> Result<Option<(Arc<Principal>, Lookup)>, IdentityError> {
        let Some(external) = &self.external else {
            return Ok(None);
        };
        let brokered = match bearer_token(headers)? {
            Some(token) => external
                .issuers
                .find_index(token)
                .is_some_and(|i| external.issuer_keys.get(i).is_some_and(Option::is_some)),
            None => {
                headers.get(AUTHORIZATION).is_none()
                    && cert.is_some()
                    && external.mtls.as_ref().is_some_and(|m| m.key.is_some())
            }
        };
        if !brokered {
            return Ok(None);
        }
        self.authenticate_with(headers, cert).await.map(Some)
    }

    /// Verifies a Terraform OAuth exchange: the subject token must be one of keygate's issuers'
    /// and verify; the identity then acts as the identity pool the exchange names.
    pub async fn verify_exchange(
        &self,
        request: &oauth::ExchangeRequest,
    ) -> Result<Arc<Principal>, IdentityError> {
        let external = self
            .external
            .as_ref()
            .ok_or_else(|| IdentityError::Exchange("no JWT issuer is configured".into()))?;
        let index = external
            .issuers
            .find_index(&request.subject_token)
            .ok_or_else(|| {
                IdentityError::Exchange(
                    "the subject token is not from one of keygate's JWT issuers".into(),
                )
            })?;
        let issuer = external
            .issuers
            .get(index)
            .ok_or_else(|| IdentityError::Exchange("unknown issuer".into()))?;
        let verified = issuer
            .verify(&request.subject_token)
            .await
            .map_err(IdentityError::Jwt)?;
        let name = issuer.config().issuer.clone();
        if model::PrincipalKind::of_id(&request.identity_pool_id)
            != Some(model::PrincipalKind::IdentityPool)
        {
            return Err(IdentityError::Exchange(
                "`identity_pool_id` is not an identity pool id (`pool-…`)".into(),
            ));
        }
        let principal = Principal::new(
            request.identity_pool_id.clone(),
            model::AuthMethod::Jwt {
                issuer: name.clone(),
            },
        )
        .map_err(|_| IdentityError::Exchange("bad identity pool id".into()))?
        .with_external(model::External {
            id: verified.subject,
            source: model::ExternalSource::OAuth,
            issuer: name,
            groups: verified.groups,
            broker_key_id: None,
        });
        Ok(Arc::new(principal))
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

    /// Establishes the principal of a governed request (without a client certificate).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Arc<Principal>, Lookup), IdentityError> {
        self.authenticate_with(headers, None).await
    }

    /// Establishes the principal of a governed request. A bearer token is checked against
    /// keygate's JWT issuers first (by its `iss`), then the OAuth bindings, then it is taken for
    /// a Confluent session token. Without an `Authorization` header, a verified client
    /// certificate identifies the caller.
    pub async fn authenticate_with(
        &self,
        headers: &HeaderMap,
        cert: Option<&mtls::ClientCertificate>,
    ) -> Result<(Arc<Principal>, Lookup), IdentityError> {
        if let Some(token) = bearer_token(headers)? {
            if let Some(external) = &self.external {
                if let Some(principal) = self.cache.peek(token.as_bytes()) {
                    return external.still_admitted((principal, Lookup::Hit));
                }
                if let Some(index) = external.issuers.find_index(token) {
                    return self
                        .cache
                        .get_or_resolve_until(
                            token.as_bytes(),
                            || {
                                let left = jwt::peek_expiry(token)
                                    .map_err(IdentityError::Jwt)?
                                    .duration_since(std::time::SystemTime::now())
                                    .map_err(|_| IdentityError::Jwt(jwt::JwtError::Expired))?;
                                Ok(tokio::time::Instant::now() + left)
                            },
                            || external.verify_jwt(index, token),
                        )
                        .await
                        .and_then(|found| external.still_admitted(found));
                }
                if let Some(principal) = external.oauth.as_ref().and_then(|o| o.get(token)) {
                    return external.still_admitted((principal, Lookup::Hit));
                }
            }
            return self.authenticate_session(headers, token).await;
        }
        if let (Some(cert), Some(external), None) =
            (cert, &self.external, headers.get(AUTHORIZATION))
        {
            if external.mtls.is_some() {
                return self
                    .cache
                    .get_or_resolve(cert.0.as_ref(), || async {
                        external.verify_certificate(cert)
                    })
                    .await
                    .and_then(|found| external.still_admitted(found));
            }
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
                    .get_or_resolve(credential.pair().as_bytes(), || {
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
                token.as_bytes(),
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
