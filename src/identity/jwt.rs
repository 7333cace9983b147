//! Bearer JWTs from the company's own issuers (`[[identity.jwt]]`): corporate OIDC, GitHub
//! Actions, Kubernetes service-account tokens.
//!
//! A token is picked up by an issuer when its (unverified) `iss` is that issuer's; from then on
//! it is that issuer's to accept or refuse — it never falls through to another identity source.
//! Verification, in order: size and shape (three base64url parts, at most [`MAX_TOKEN_BYTES`]);
//! the header (`alg: none` always refused; `crit` refused; the algorithm must be on the issuer's
//! allowlist, and HS* only with a configured secret, so a public key can never be used as an HMAC
//! secret); the signature, with a key of the issuer's JWKS ([`jwks`]) whose `kid`, type and `alg`
//! fit; then the claims: `iss`, `aud` (one of the configured audiences), `exp` (required), `nbf`,
//! each with the configured leeway; required claims; the filter. The external principal's id comes
//! from a template over the claims (`{claims.sub}`, `{claims.repository}@github`), its groups from
//! a claim.
//!
//! The cryptography is ring's (already keygate's TLS provider): RS256/384/512, PS256/384/512,
//! ES256, ES384, EdDSA (Ed25519), HS256/384/512. Parsing is serde_json over base64url. No token
//! and no key material ever reaches an error or a log line.

pub mod jwks;
pub mod mint;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use super::FieldError;
use crate::env::Secrets;
use crate::proxy::config::CredentialSource;
use crate::redact::Secret;

pub use jwks::{CachePolicy, Jwks, JwksError, JwksSource, KeySet};

/// Longest token accepted (ID tokens are 1–2 KiB; GitHub's and Kubernetes' about 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest external principal id a template may produce.
const MAX_PRINCIPAL_LEN: usize = 256;
/// Default leeway for `exp` and `nbf`.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// A signature algorithm keygate verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// … SHA-384.
    Rs384,
    /// … SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// … SHA-384.
    Ps384,
    /// … SHA-512.
    Ps512,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
    /// Ed25519.
    EdDsa,
    /// HMAC SHA-256 (only with a configured secret).
    Hs256,
    /// HMAC SHA-384.
    Hs384,
    /// HMAC SHA-512.
    Hs512,
}

impl Alg {
    /// The algorithm for a JOSE name.
    pub fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "EdDSA" => Alg::EdDsa,
            "HS256" => Alg::Hs256,
            "HS384" => Alg::Hs384,
            "HS512" => Alg::Hs512,
            _ => return None,
        })
    }

    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
        }
    }

    fn hmac(self) -> Option<ring::hmac::Algorithm> {
        match self {
            Alg::Hs256 => Some(ring::hmac::HMAC_SHA256),
            Alg::Hs384 => Some(ring::hmac::HMAC_SHA384),
            Alg::Hs512 => Some(ring::hmac::HMAC_SHA512),
            _ => None,
        }
    }
}

/// The default allowlist: the asymmetric algorithms IdPs use.
pub const DEFAULT_ALGORITHMS: [Alg; 5] =
    [Alg::Rs256, Alg::Ps256, Alg::Es256, Alg::Es384, Alg::EdDsa];

/// Why a token was refused. Never repeats the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Larger than [`MAX_TOKEN_BYTES`].
    #[error("the token is {0} bytes long; at most 8192 are accepted")]
    TooLong(usize),
    /// Not a well-formed JWS compact token.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg: none`.
    #[error("unsigned tokens (`alg: none`) are never accepted")]
    Unsigned,
    /// An algorithm the issuer does not allow.
    #[error("algorithm `{alg}` is not allowed for issuer `{issuer}`")]
    AlgorithmNotAllowed {
        /// The header's `alg` (truncated).
        alg: String,
        /// The issuer.
        issuer: String,
    },
    /// The header has `crit` extensions.
    #[error("the token has critical header extensions (`crit`), which keygate does not process")]
    Critical,
    /// No key of the issuer has that `kid` (after one refetch).
    #[error("no key of issuer `{0}` has the token's `kid`")]
    UnknownKey(String),
    /// The issuer's keys are older than the maximum staleness.
    #[error("the keys of issuer `{0}` could not be refreshed for longer than the maximum staleness; tokens are refused until they are")]
    KeysStale(String),
    /// The signature does not verify.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// Past `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("the token is not valid yet (`nbf`)")]
    NotYetValid,
    /// No `exp`.
    #[error("the token has no `exp`")]
    NoExpiry,
    /// `aud` names none of the configured audiences.
    #[error("the token's audience is not one keygate accepts for issuer `{0}`")]
    WrongAudience(String),
    /// A required claim is absent.
    #[error("the token has no `{0}` claim, which issuer `{1}` requires")]
    MissingClaim(String, String),
    /// The filter did not match.
    #[error("the token's `{0}` claim is not one issuer `{1}` admits")]
    Filtered(String, String),
    /// The principal template could not be filled.
    #[error("cannot build the principal: {0}")]
    Principal(String),
}

/// A claim path (`claims.sub`, `claims.repository_owner`, `claims.kubernetes.io.namespace`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(Vec<String>);

impl ClaimPath {
    /// Parses `claims.a.b` (or `a.b`).
    pub fn parse(text: &str) -> Option<ClaimPath> {
        let text = text.strip_prefix("claims.").unwrap_or(text);
        let parts: Vec<String> = text.split('.').map(str::to_owned).collect();
        (!parts.iter().any(String::is_empty)).then_some(ClaimPath(parts))
    }

    fn get<'a>(&self, claims: &'a serde_json::Map<String, Value>) -> Option<&'a Value> {
        if let [name] = self.0.as_slice() {
            return claims.get(name);
        }
        // A name with dots may be a single claim (`kubernetes.io`): try the longest first.
        fn walk<'a>(
            value: &'a serde_json::Map<String, Value>,
            parts: &[String],
        ) -> Option<&'a Value> {
            for split in (1..=parts.len()).rev() {
                let name = parts[..split].join(".");
                if let Some(v) = value.get(&name) {
                    if split == parts.len() {
                        return Some(v);
                    }
                    if let Some(obj) = v.as_object() {
                        if let Some(found) = walk(obj, &parts[split..]) {
                            return Some(found);
                        }
                    }
                }
            }
            None
        }
        walk(claims, &self.0)
    }

    fn display(&self) -> String {
        self.0.join(".")
    }
}

/// A principal template: literal text with `{claims.NAME}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Claim(ClaimPath),
}

impl Template {
    /// Parses a template; a bare `claims.x` is the template `{claims.x}`.
    pub fn parse(text: &str) -> Result<Template, String> {
        if !text.contains('{') {
            return ClaimPath::parse(text)
                .filter(|_| text.starts_with("claims."))
                .map(|p| Template(vec![Piece::Claim(p)]))
                .ok_or_else(|| {
                    format!("`{text}`: expected `claims.NAME` or a template with `{{claims.NAME}}`")
                });
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("`{text}`: unclosed `{{`"))?;
            let inner = &rest[open + 1..open + close];
            if !inner.starts_with("claims.") {
                return Err(format!("`{text}`: placeholders are `{{claims.NAME}}`"));
            }
            pieces.push(Piece::Claim(
                ClaimPath::parse(inner).ok_or_else(|| format!("`{text}`: empty claim name"))?,
            ));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template(pieces))
    }

    fn render(&self, claims: &serde_json::Map<String, Value>) -> Result<String, String> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Claim(path) => match path.get(claims) {
                    Some(Value::String(s)) if !s.is_empty() => out.push_str(s),
                    Some(Value::Number(n)) => out.push_str(&n.to_string()),
                    _ => {
                        return Err(format!(
                            "the token has no string claim `{}`",
                            path.display()
                        ))
                    }
                },
            }
        }
        if out.len() > MAX_PRINCIPAL_LEN || out.chars().any(char::is_control) {
            return Err(format!(
                "the principal id is longer than {MAX_PRINCIPAL_LEN} bytes or has control characters"
            ));
        }
        Ok(out)
    }
}

/// `[[identity.jwt]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub jwks_file: Option<String>,
    pub jwks_url: Option<String>,
    pub algorithms: Option<Vec<String>>,
    pub hmac_secret: Option<super::RawCredential>,
    pub leeway: Option<String>,
    pub required_claims: Option<Vec<String>>,
    pub principal: Option<String>,
    pub groups_claim: Option<String>,
    pub filter: Option<BTreeMap<String, StringOrList>>,
    pub broker: Option<bool>,
    pub credential: Option<super::RawCredential>,
    pub jwks_cache_min: Option<String>,
    pub jwks_cache_max: Option<String>,
    pub jwks_refetch_interval: Option<String>,
    pub jwks_max_staleness: Option<String>,
}

/// A filter value: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    /// One allowed value.
    One(String),
    /// Any of these.
    Many(Vec<String>),
}

/// One validated issuer.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// Accepted `aud` values (at least one).
    pub audiences: Vec<String>,
    /// Where its keys are.
    pub jwks: JwksSource,
    /// Allowed algorithms.
    pub algorithms: Vec<Alg>,
    /// Where the HMAC secret comes from (HS* only).
    pub hmac_secret_source: Option<CredentialSource>,
    /// The HMAC secret, when read.
    pub hmac_secret: Option<Secret>,
    /// Clock leeway for `exp` and `nbf`.
    pub leeway: Duration,
    /// Claims every token must have.
    pub required_claims: Vec<ClaimPath>,
    /// The external principal's id.
    pub principal: Template,
    /// The claim that lists the caller's groups.
    pub groups_claim: Option<ClaimPath>,
    /// Claim → admitted values; every entry must match.
    pub filter: Vec<(ClaimPath, Vec<String>)>,
    /// Whether its callers are brokered (keygate calls upstream with its own credential).
    pub broker: bool,
    /// The upstream credential for its brokered calls (else the mapping's, else keygate's own).
    pub credential_source: Option<CredentialSource>,
    /// … read.
    pub credential: Option<Secret>,
    /// JWKS caching.
    pub cache: CachePolicy,
}

fn dur(field: &str, value: &Option<String>, default: Duration) -> Result<Duration, FieldError> {
    match value {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text).map_err(|e| {
            FieldError::new(field, format!("`{text}` is not a duration like `5m`: {e}"))
        }),
    }
}

/// Reads a `{ env = "…" }` / `{ file = "…" }` credential table.
pub(crate) fn credential(
    field: &str,
    raw: &Option<super::RawCredential>,
    base: &Path,
    secrets: &Secrets<'_>,
) -> Result<(Option<CredentialSource>, Option<Secret>), FieldError> {
    let Some(raw) = raw else {
        return Ok((None, None));
    };
    let source = match (&raw.env, &raw.file) {
        (Some(name), None) => CredentialSource::Env(name.clone()),
        (None, Some(file)) if !file.is_empty() => CredentialSource::File(base.join(file)),
        _ => return Err(FieldError::new(field, "set exactly one of `env` or `file`")),
    };
    let secret = match secrets {
        Secrets::Skip => None,
        Secrets::Read(env) => {
            let value = match &source {
                CredentialSource::Env(name) => env.var(name).ok_or_else(|| {
                    FieldError::new(
                        format!("{field}.env"),
                        format!("environment variable `{name}` is not set"),
                    )
                })?,
                CredentialSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
                    FieldError::new(
                        format!("{field}.file"),
                        format!("cannot read `{}`: {e}", path.display()),
                    )
                })?,
            };
            let value = value.trim();
            if value.is_empty() {
                return Err(FieldError::new(field, "the credential is empty"));
            }
            Some(Secret::new(value))
        }
    };
    Ok((Some(source), secret))
}

impl IssuerConfig {
    /// Validates `[[identity.jwt]]` entry number `index`.
    pub fn validate(
        raw: &RawIssuer,
        index: usize,
        base: &Path,
        secrets: &Secrets<'_>,
    ) -> Result<IssuerConfig, FieldError> {
        let f = |name: &str| format!("identity.jwt[{index}].{name}");
        if raw.issuer.is_empty() {
            return Err(FieldError::new(f("issuer"), "must not be empty"));
        }
        if raw.audiences.is_empty() || raw.audiences.iter().any(String::is_empty) {
            return Err(FieldError::new(
                f("audiences"),
                "name at least one audience (the `aud` keygate's tokens are minted for)",
            ));
        }
        let jwks = match (&raw.jwks_file, &raw.jwks_url) {
            (Some(file), None) if !file.is_empty() => JwksSource::File(base.join(file)),
            (None, Some(url)) => {
                let uri: http::Uri = url
                    .parse()
                    .map_err(|_| FieldError::new(f("jwks_url"), format!("`{url}` is not a URL")))?;
                if !jwks::acceptable_url(&uri) {
                    return Err(FieldError::new(
                        f("jwks_url"),
                        "must be an `https` URL (`http` only to a loopback address)",
                    ));
                }
                JwksSource::Url(uri)
            }
            _ => {
                return Err(FieldError::new(
                    f("jwks_file"),
                    "set exactly one of `jwks_file` or `jwks_url`",
                ))
            }
        };
        let (hmac_secret_source, hmac_secret) =
            credential(&f("hmac_secret"), &raw.hmac_secret, base, secrets)?;
        let algorithms = match &raw.algorithms {
            None => DEFAULT_ALGORITHMS.to_vec(),
            Some(names) => {
                let mut algs = Vec::new();
                for name in names {
                    if name.eq_ignore_ascii_case("none") {
                        return Err(FieldError::new(f("algorithms"), "`none` is never accepted"));
                    }
                    let alg = Alg::parse(name).ok_or_else(|| {
                        FieldError::new(
                            f("algorithms"),
                            format!("unknown algorithm `{name}`; expected RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384 or HS512"),
                        )
                    })?;
                    if alg.hmac().is_some() && hmac_secret_source.is_none() {
                        return Err(FieldError::new(
                            f("algorithms"),
                            format!("`{name}` needs `hmac_secret`"),
                        ));
                    }
                    algs.push(alg);
                }
                if algs.is_empty() {
                    return Err(FieldError::new(f("algorithms"), "must not be empty"));
                }
                algs
            }
        };
        let required_claims = raw
            .required_claims
            .iter()
            .flatten()
            .map(|c| {
                ClaimPath::parse(c).ok_or_else(|| {
                    FieldError::new(f("required_claims"), format!("`{c}` is not a claim name"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let principal = Template::parse(raw.principal.as_deref().unwrap_or("claims.sub"))
            .map_err(|e| FieldError::new(f("principal"), e))?;
        let groups_claim = raw
            .groups_claim
            .as_deref()
            .map(|c| {
                ClaimPath::parse(c).ok_or_else(|| {
                    FieldError::new(f("groups_claim"), format!("`{c}` is not a claim name"))
                })
            })
            .transpose()?;
        let filter = raw
            .filter
            .iter()
            .flatten()
            .map(|(claim, values)| {
                let path = ClaimPath::parse(claim).ok_or_else(|| {
                    FieldError::new(f("filter"), format!("`{claim}` is not a claim name"))
                })?;
                let values = match values {
                    StringOrList::One(v) => vec![v.clone()],
                    StringOrList::Many(v) => v.clone(),
                };
                Ok((path, values))
            })
            .collect::<Result<Vec<_>, FieldError>>()?;
        let (credential_source, credential) =
            credential(&f("credential"), &raw.credential, base, secrets)?;
        let defaults = CachePolicy::default();
        let cache = CachePolicy {
            min_ttl: dur(&f("jwks_cache_min"), &raw.jwks_cache_min, defaults.min_ttl)?,
            max_ttl: dur(&f("jwks_cache_max"), &raw.jwks_cache_max, defaults.max_ttl)?,
            refetch_interval: dur(
                &f("jwks_refetch_interval"),
                &raw.jwks_refetch_interval,
                defaults.refetch_interval,
            )?,
            max_staleness: dur(
                &f("jwks_max_staleness"),
                &raw.jwks_max_staleness,
                defaults.max_staleness,
            )?,
        };
        if cache.min_ttl > cache.max_ttl {
            return Err(FieldError::new(
                f("jwks_cache_min"),
                "must not be longer than `jwks_cache_max`",
            ));
        }
        if cache.max_staleness < cache.min_ttl {
            return Err(FieldError::new(
                f("jwks_max_staleness"),
                "must not be shorter than `jwks_cache_min`",
            ));
        }
        Ok(IssuerConfig {
            issuer: raw.issuer.clone(),
            audiences: raw.audiences.clone(),
            jwks,
            algorithms,
            hmac_secret_source,
            hmac_secret,
            leeway: dur(&f("leeway"), &raw.leeway, DEFAULT_LEEWAY)?,
            required_claims,
            principal,
            groups_claim,
            filter,
            broker: raw.broker.unwrap_or(false),
            credential_source,
            credential,
            cache,
        })
    }
}

/// A verified token's identity.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The external principal (from the template).
    pub subject: String,
    /// Its groups (from the groups claim).
    pub groups: Vec<String>,
    /// The token's `exp`.
    pub expires: SystemTime,
}

/// An issuer with its keys.
#[derive(Debug)]
pub struct Issuer {
    config: IssuerConfig,
    keys: Arc<Jwks>,
    hmac: Option<ring::hmac::Key>,
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    kid: Option<std::borrow::Cow<'a, str>>,
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct IssOnly<'a> {
    #[serde(borrow)]
    iss: Option<std::borrow::Cow<'a, str>>,
}

/// The three parts of a compact JWS.
struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

fn split(token: &str) -> Result<Parts<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLong(token.len()));
    }
    let mut it = token.split('.');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(header), Some(payload), Some(signature), None)
            if !header.is_empty() && !payload.is_empty() =>
        {
            Ok(Parts {
                header,
                payload,
                signature,
            })
        }
        _ => Err(JwtError::Malformed(
            "a JWT has three dot-separated base64url parts",
        )),
    }
}

fn decode(part: &str, what: &'static str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed(what))
}

/// The token's `iss`, read without verification (only to pick the issuer that verifies it). An
/// oversized token is still routed by its `iss` (up to the request head's own bound), so that its
/// issuer refuses it with the reason.
pub fn peek_issuer(token: &str) -> Option<String> {
    let mut it = token.splitn(3, '.');
    let (_, payload) = (it.next()?, it.next()?);
    let payload = decode(payload, "").ok()?;
    let iss: IssOnly<'_> = serde_json::from_slice(&payload).ok()?;
    iss.iss.map(|s| s.into_owned())
}

/// The token's `exp`, read without verification (to bound how long a verified identity is kept).
pub fn peek_expiry(token: &str) -> Result<SystemTime, JwtError> {
    #[derive(Deserialize)]
    struct Exp {
        exp: Option<f64>,
    }
    let parts = split(token)?;
    let payload = decode(parts.payload, "the payload is not base64url")?;
    let exp: Exp = serde_json::from_slice(&payload)
        .map_err(|_| JwtError::Malformed("the payload is not a JSON object"))?;
    let exp = exp
        .exp
        .filter(|e| e.is_finite() && *e >= 0.0)
        .ok_or(JwtError::NoExpiry)?;
    Ok(UNIX_EPOCH + Duration::from_secs_f64(exp.min(1e12)))
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Issuer {
    /// An issuer over loaded keys.
    pub fn new(config: IssuerConfig, keys: Arc<Jwks>) -> Issuer {
        let hmac = config.hmac_secret.as_ref().and_then(|secret| {
            config
                .algorithms
                .iter()
                .find_map(|a| a.hmac())
                .map(|alg| ring::hmac::Key::new(alg, secret.expose().as_bytes()))
        });
        Issuer { config, keys, hmac }
    }

    /// Loads the issuer's keys (a file now, a URL fetched now and refreshed in the background).
    pub async fn load(config: IssuerConfig) -> Result<Issuer, JwksError> {
        let keys = Jwks::load(config.jwks.clone(), config.cache).await?;
        keys.spawn_refresher();
        Ok(Issuer::new(config, keys))
    }

    /// Its configuration.
    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    /// Its keys.
    pub fn keys(&self) -> &Arc<Jwks> {
        &self.keys
    }

    /// Verifies a token that names this issuer (see the module doc).
    pub async fn verify(&self, token: &str) -> Result<Verified, JwtError> {
        let issuer = &self.config.issuer;
        let parts = split(token)?;
        let header_json = decode(parts.header, "the header is not base64url")?;
        let header: Header<'_> = serde_json::from_slice(&header_json)
            .map_err(|_| JwtError::Malformed("the header is not a JSON object"))?;
        if header.crit.is_some() {
            return Err(JwtError::Critical);
        }
        let alg_name = header
            .alg
            .as_deref()
            .ok_or(JwtError::Malformed("the header has no `alg`"))?;
        if alg_name.eq_ignore_ascii_case("none") {
            return Err(JwtError::Unsigned);
        }
        let not_allowed = || JwtError::AlgorithmNotAllowed {
            alg: alg_name.chars().take(16).collect(),
            issuer: issuer.clone(),
        };
        let alg = Alg::parse(alg_name).ok_or_else(not_allowed)?;
        if !self.config.algorithms.contains(&alg) {
            return Err(not_allowed());
        }
        let signature = decode(parts.signature, "the signature is not base64url")?;
        // The signed input is the first two parts as sent.
        let signed = &token[..parts.header.len() + 1 + parts.payload.len()];
        let good = match alg.hmac() {
            Some(_) => match &self.hmac {
                Some(key) => ring::hmac::verify(key, signed.as_bytes(), &signature).is_ok(),
                None => return Err(not_allowed()),
            },
            None => match self
                .keys
                .verify(header.kid.as_deref(), alg, signed.as_bytes(), &signature)
                .await
            {
                Ok(good) => good,
                Err(jwks::KeyMiss::UnknownKid) => return Err(JwtError::UnknownKey(issuer.clone())),
                Err(jwks::KeyMiss::Stale) => return Err(JwtError::KeysStale(issuer.clone())),
            },
        };
        if !good {
            return Err(JwtError::BadSignature);
        }
        let payload = decode(parts.payload, "the payload is not base64url")?;
        let claims: serde_json::Map<String, Value> = serde_json::from_slice(&payload)
            .map_err(|_| JwtError::Malformed("the payload is not a JSON object"))?;
        self.check_claims(&claims)
    }

    fn check_claims(&self, claims: &serde_json::Map<String, Value>) -> Result<Verified, JwtError> {
        let issuer = &self.config.issuer;
        if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
            // The token was routed here by its `iss`; a signed token whose `iss` differs is a
            // different issuer's.
            return Err(JwtError::MissingClaim("iss".into(), issuer.clone()));
        }
        let now = now_secs();
        let leeway = self.config.leeway.as_secs_f64();
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or(JwtError::NoExpiry)?;
        if now > exp + leeway {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf
                .as_f64()
                .ok_or(JwtError::Malformed("`nbf` is not a number"))?;
            if now + leeway < nbf {
                return Err(JwtError::NotYetValid);
            }
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => self.config.audiences.iter().any(|a| a == aud),
            Some(Value::Array(auds)) => auds.iter().any(|aud| {
                aud.as_str()
                    .is_some_and(|aud| self.config.audiences.iter().any(|a| a == aud))
            }),
            _ => false,
        };
        if !audience_ok {
            return Err(JwtError::WrongAudience(issuer.clone()));
        }
        for claim in &self.config.required_claims {
            if claim.get(claims).is_none_or(Value::is_null) {
                return Err(JwtError::MissingClaim(claim.display(), issuer.clone()));
            }
        }
        for (claim, admitted) in &self.config.filter {
            let matches = |v: &Value| match v {
                Value::String(s) => admitted.iter().any(|a| a == s),
                Value::Bool(b) => admitted.iter().any(|a| a == &b.to_string()),
                Value::Number(n) => admitted.iter().any(|a| a == &n.to_string()),
                _ => false,
            };
            let ok = match claim.get(claims) {
                Some(Value::Array(items)) => items.iter().any(matches),
                Some(v) => matches(v),
                None => false,
            };
            if !ok {
                return Err(JwtError::Filtered(claim.display(), issuer.clone()));
            }
        }
        let subject = self
            .config
            .principal
            .render(claims)
            .map_err(JwtError::Principal)?;
        let groups = match self
            .config
            .groups_claim
            .as_ref()
            .and_then(|c| c.get(claims))
        {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .take(256)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        Ok(Verified {
            subject,
            groups,
            expires: UNIX_EPOCH + Duration::from_secs_f64(exp.clamp(0.0, 1e12)),
        })
    }
}

/// All configured issuers.
#[derive(Debug, Default)]
pub struct Issuers {
    list: Vec<Issuer>,
}

impl Issuers {
    /// Over loaded issuers.
    pub fn new(list: Vec<Issuer>) -> Issuers {
        Issuers { list }
    }

    /// Loads every configured issuer's keys.
    pub async fn load(configs: &[IssuerConfig]) -> Result<Issuers, (String, JwksError)> {
        let mut list = Vec::with_capacity(configs.len());
        for config in configs {
            let issuer = config.issuer.clone();
            list.push(
                Issuer::load(config.clone())
                    .await
                    .map_err(|e| (issuer, e))?,
            );
        }
        Ok(Issuers { list })
    }

    /// Whether none is configured.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The issuer a token names, if it is one of keygate's.
    pub fn find(&self, token: &str) -> Option<&Issuer> {
        self.find_index(token).and_then(|i| self.list.get(i))
    }

    /// The index of the issuer a token names, if it is one of keygate's.
    pub fn find_index(&self, token: &str) -> Option<usize> {
        if self.list.is_empty() {
            return None;
        }
        let iss = peek_issuer(token)?;
        self.list.iter().position(|i| i.config.issuer == iss)
    }

    /// The issuer at `index`.
    pub fn get(&self, index: usize) -> Option<&Issuer> {
        self.list.get(index)
    }
}

#[cfg(test)]
mod tests;
