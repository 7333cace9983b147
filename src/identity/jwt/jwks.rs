//! JSON Web Key Sets: the public keys of an issuer, from a file or an `https` URL.
//!
//! A set from a URL is cached for its `Cache-Control: max-age`, clamped to the issuer's bounds
//! (`jwks_cache_min` … `jwks_cache_max`, like Confluent's identity pools: 5 min – 7 days), and
//! refreshed in the background before it expires. A token that names a `kid` the set does not
//! hold makes keygate fetch the set again at once — at most once per `jwks_refetch_interval`, so
//! a stream of made-up key ids cannot turn keygate into a load generator against the IdP. A failed
//! fetch keeps the last good set; once the last good set is older than `jwks_max_staleness`,
//! tokens of that issuer are refused (fail closed) until a fetch succeeds again.
//!
//! Only public keys are accepted: a set that carries private members (`d`, `p`, `q`, `dp`, `dq`,
//! `qi`, `k`) is refused whole, and its content is never repeated in an error.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Deserialize;

use super::Alg;

/// Largest JWKS document read (real ones are a few KiB).
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Deadline of one JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Members that only a private JWK has.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

/// Why a key set could not be loaded or used. Never repeats key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The document is not a JWKS.
    #[error("not a JSON Web Key Set: {0}")]
    Invalid(String),
    /// The document holds private key material.
    #[error("the key set holds private key material (member `{0}`): publish only public keys")]
    PrivateMaterial(&'static str),
    /// The file could not be read.
    #[error("cannot read `{path}`: {message}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        message: String,
    },
    /// The URL could not be fetched.
    #[error("fetching `{url}`: {message}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// A usable public key.
#[derive(Debug, Clone)]
pub struct Key {
    kid: Option<String>,
    alg: Option<Alg>,
    material: Material,
}

#[derive(Debug, Clone)]
enum Material {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256(Vec<u8>),
    P384(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl Key {
    /// Whether this key can check a signature made with `alg`.
    fn fits(&self, alg: Alg) -> bool {
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        matches!(
            (alg, &self.material),
            (
                Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512,
                Material::Rsa { .. }
            ) | (Alg::Es256, Material::P256(_))
                | (Alg::Es384, Material::P384(_))
                | (Alg::EdDsa, Material::Ed25519(_))
        )
    }

    /// Checks `signature` over `message` (ring does the cryptography).
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature as sig;
        let rsa = |params: &'static sig::RsaParameters, n: &[u8], e: &[u8]| {
            sig::RsaPublicKeyComponents { n, e }
                .verify(params, message, signature)
                .is_ok()
        };
        let point = |params: &'static dyn sig::VerificationAlgorithm, bytes: &[u8]| {
            sig::UnparsedPublicKey::new(params, bytes)
                .verify(message, signature)
                .is_ok()
        };
        match (alg, &self.material) {
            (Alg::Rs256, Material::Rsa { n, e }) => rsa(&sig::RSA_PKCS1_2048_8192_SHA256, n, e),
            (Alg::Rs384, Material::Rsa { n, e }) => rsa(&sig::RSA_PKCS1_2048_8192_SHA384, n, e),
            (Alg::Rs512, Material::Rsa { n, e }) => rsa(&sig::RSA_PKCS1_2048_8192_SHA512, n, e),
            (Alg::Ps256, Material::Rsa { n, e }) => rsa(&sig::RSA_PSS_2048_8192_SHA256, n, e),
            (Alg::Ps384, Material::Rsa { n, e }) => rsa(&sig::RSA_PSS_2048_8192_SHA384, n, e),
            (Alg::Ps512, Material::Rsa { n, e }) => rsa(&sig::RSA_PSS_2048_8192_SHA512, n, e),
            (Alg::Es256, Material::P256(p)) => point(&sig::ECDSA_P256_SHA256_FIXED, p),
            (Alg::Es384, Material::P384(p)) => point(&sig::ECDSA_P384_SHA384_FIXED, p),
            (Alg::EdDsa, Material::Ed25519(p)) => point(&sig::ED25519, p),
            _ => false,
        }
    }
}

/// The keys of one set.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Map<String, serde_json::Value>>,
}

fn member<'a>(jwk: &'a serde_json::Map<String, serde_json::Value>, name: &str) -> Option<&'a str> {
    jwk.get(name).and_then(serde_json::Value::as_str)
}

fn b64(jwk: &serde_json::Map<String, serde_json::Value>, name: &str) -> Result<Vec<u8>, JwksError> {
    let text =
        member(jwk, name).ok_or_else(|| JwksError::Invalid(format!("a key has no `{name}`")))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| JwksError::Invalid(format!("a key's `{name}` is not base64url")))
}

impl KeySet {
    /// Parses a JWKS document. Keys of unknown types or for encryption are skipped; a key with
    /// private members fails the whole set.
    pub fn parse(json: &[u8]) -> Result<KeySet, JwksError> {
        let raw: RawSet = serde_json::from_slice(json).map_err(|e| {
            JwksError::Invalid(format!(
                "line {}, column {}: expected `{{\"keys\": [...]}}`",
                e.line(),
                e.column()
            ))
        })?;
        let mut keys = Vec::with_capacity(raw.keys.len());
        for jwk in &raw.keys {
            if let Some(private) = PRIVATE_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
                return Err(JwksError::PrivateMaterial(private));
            }
            if member(jwk, "use").is_some_and(|u| u != "sig") {
                continue;
            }
            let alg = match member(jwk, "alg") {
                Some(name) => match Alg::parse(name) {
                    Some(alg) => Some(alg),
                    // A key for an algorithm keygate does not verify with: unusable, not an error.
                    None => continue,
                },
                None => None,
            };
            let material = match (member(jwk, "kty"), member(jwk, "crv")) {
                (Some("RSA"), _) => Material::Rsa {
                    n: b64(jwk, "n")?,
                    e: b64(jwk, "e")?,
                },
                (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
                    let (x, y) = (b64(jwk, "x")?, b64(jwk, "y")?);
                    let size = if crv == "P-256" { 32 } else { 48 };
                    if x.len() != size || y.len() != size {
                        return Err(JwksError::Invalid(format!(
                            "a {crv} key's coordinates are not {size} bytes"
                        )));
                    }
                    let mut point = Vec::with_capacity(1 + 2 * size);
                    point.push(4);
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    if crv == "P-256" {
                        Material::P256(point)
                    } else {
                        Material::P384(point)
                    }
                }
                (Some("OKP"), Some("Ed25519")) => {
                    let x = b64(jwk, "x")?;
                    if x.len() != 32 {
                        return Err(JwksError::Invalid("an Ed25519 key is not 32 bytes".into()));
                    }
                    Material::Ed25519(x)
                }
                _ => continue,
            };
            keys.push(Key {
                kid: member(jwk, "kid").map(str::to_owned),
                alg,
                material,
            });
        }
        Ok(KeySet { keys })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that may have signed a token with this `kid` (all fitting keys when the token
    /// names none) and `alg`; `None` when the set knows no such `kid`.
    pub fn candidates(&self, kid: Option<&str>, alg: Alg) -> Option<Vec<&Key>> {
        match kid {
            Some(kid) => {
                let named: Vec<&Key> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if named.is_empty() {
                    return None;
                }
                Some(named.into_iter().filter(|k| k.fits(alg)).collect())
            }
            None => Some(self.keys.iter().filter(|k| k.fits(alg)).collect()),
        }
    }
}

/// Where a set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A file read at start (and by `keygate check`).
    File(std::path::PathBuf),
    /// An `https` URL (`http` only to a loopback address), fetched and refreshed.
    Url(Uri),
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::File(path) => write!(f, "{}", path.display()),
            JwksSource::Url(url) => write!(f, "{url}"),
        }
    }
}

/// How a URL-sourced set is cached and refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// Shortest time a fetched set is used before it is refreshed (`max-age` is clamped to it).
    pub min_ttl: Duration,
    /// Longest time (and the time without `Cache-Control: max-age`).
    pub max_ttl: Duration,
    /// A set is fetched again at most this often for a token naming an unknown `kid` (and failed
    /// background refreshes are retried this often).
    pub refetch_interval: Duration,
    /// Tokens are refused once the last good set is older than this.
    pub max_staleness: Duration,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            min_ttl: Duration::from_secs(5 * 60),
            max_ttl: Duration::from_secs(24 * 60 * 60),
            refetch_interval: Duration::from_secs(60),
            max_staleness: Duration::from_secs(7 * 24 * 60 * 60),
        }
    }
}

#[derive(Debug)]
struct Loaded {
    keys: Arc<KeySet>,
    /// When it was fetched (`None`: from a file, never stale).
    fetched: Option<Instant>,
    /// When it should be refreshed.
    ttl: Duration,
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// An issuer's keys, kept current (see the module doc).
#[derive(Debug)]
pub struct Jwks {
    source: JwksSource,
    policy: CachePolicy,
    loaded: ArcSwap<Loaded>,
    /// When the last fetch for an unknown `kid` started.
    last_refetch: Mutex<Option<Instant>>,
    /// Serialises fetches, so a burst of unknown `kid`s makes one.
    fetching: tokio::sync::Mutex<()>,
    client: Option<HttpClient>,
    fetches: std::sync::atomic::AtomicU64,
}

/// Why no key could be found for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMiss {
    /// The set (even refetched) has no key with that `kid`.
    UnknownKid,
    /// The last good set is older than the maximum staleness.
    Stale,
}

impl Jwks {
    /// Loads a set now: a file must be readable and valid; a URL is fetched, and keygate does not
    /// start without one good set.
    pub async fn load(source: JwksSource, policy: CachePolicy) -> Result<Arc<Jwks>, JwksError> {
        let client = match &source {
            JwksSource::File(_) => None,
            JwksSource::Url(url) => Some(http_client(url)?),
        };
        let jwks = Jwks {
            source,
            policy,
            loaded: ArcSwap::from_pointee(Loaded {
                keys: Arc::new(KeySet::default()),
                fetched: None,
                ttl: policy.max_ttl,
            }),
            last_refetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            client,
            fetches: std::sync::atomic::AtomicU64::new(0),
        };
        let loaded = jwks.fetch().await?;
        jwks.loaded.store(Arc::new(loaded));
        Ok(Arc::new(jwks))
    }

    /// A set from keys already parsed (tests, benchmarks).
    pub fn fixed(keys: KeySet) -> Arc<Jwks> {
        Arc::new(Jwks {
            source: JwksSource::File(std::path::PathBuf::new()),
            policy: CachePolicy::default(),
            loaded: ArcSwap::from_pointee(Loaded {
                keys: Arc::new(keys),
                fetched: None,
                ttl: CachePolicy::default().max_ttl,
            }),
            last_refetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            client: None,
            fetches: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Checks a file source (`keygate check`): read and parse, without starting anything.
    pub fn check_file(path: &std::path::Path) -> Result<usize, JwksError> {
        let bytes = std::fs::read(path).map_err(|e| JwksError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(KeySet::parse(&bytes)?.len())
    }

    /// Fetches done so far (the first load included).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts the background refresher (URL sources only). It stops when the set is dropped.
    pub fn spawn_refresher(self: &Arc<Self>) {
        if self.client.is_none() {
            return;
        }
        let weak: Weak<Jwks> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut wait = match weak.upgrade() {
                Some(jwks) => jwks.refresh_after(),
                None => return,
            };
            loop {
                tokio::time::sleep(wait).await;
                let Some(jwks) = weak.upgrade() else {
                    return;
                };
                wait = match jwks.refresh().await {
                    Ok(()) => jwks.refresh_after(),
                    Err(err) => {
                        tracing::warn!(jwks.source = %jwks.source, error = %err, "JWKS refresh failed; keeping the last good set");
                        jwks.policy.refetch_interval
                    }
                };
            }
        });
    }

    /// Refresh before expiry: at three quarters of the set's time to live.
    fn refresh_after(&self) -> Duration {
        let loaded = self.loaded.load();
        let due = loaded.ttl.mul_f64(0.75);
        match loaded.fetched {
            Some(at) => due
                .saturating_sub(at.elapsed())
                .max(Duration::from_millis(100)),
            None => due,
        }
    }

    async fn refresh(&self) -> Result<(), JwksError> {
        let _one = self.fetching.lock().await;
        let loaded = self.fetch().await?;
        self.loaded.store(Arc::new(loaded));
        Ok(())
    }

    /// The current keys, unless they are too old.
    fn current(&self) -> Result<Arc<KeySet>, KeyMiss> {
        let loaded = self.loaded.load();
        if loaded
            .fetched
            .is_some_and(|at| at.elapsed() > self.policy.max_staleness)
        {
            return Err(KeyMiss::Stale);
        }
        Ok(loaded.keys.clone())
    }

    /// Verifies `signature` with a key of this set fit for `kid` and `alg`; on an unknown `kid`,
    /// fetches the set again (rate-limited) and looks once more.
    pub async fn verify(
        &self,
        kid: Option<&str>,
        alg: Alg,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, KeyMiss> {
        let keys = self.current()?;
        if let Some(candidates) = keys.candidates(kid, alg) {
            return Ok(candidates.iter().any(|k| k.verify(alg, message, signature)));
        }
        if !self.may_refetch() {
            return Err(KeyMiss::UnknownKid);
        }
        if let Err(err) = self.refresh().await {
            tracing::warn!(jwks.source = %self.source, error = %err, "JWKS fetch for an unknown key id failed; keeping the last good set");
        }
        let keys = self.current()?;
        match keys.candidates(kid, alg) {
            Some(candidates) => Ok(candidates.iter().any(|k| k.verify(alg, message, signature))),
            None => Err(KeyMiss::UnknownKid),
        }
    }

    /// Whether an unknown `kid` may cause a fetch now (at most once per refetch interval).
    fn may_refetch(&self) -> bool {
        if self.client.is_none() {
            return false;
        }
        let mut last = self.last_refetch.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < self.policy.refetch_interval => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }

    async fn fetch(&self) -> Result<Loaded, JwksError> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &self.source {
            JwksSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| JwksError::Read {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                Ok(Loaded {
                    keys: Arc::new(KeySet::parse(&bytes)?),
                    fetched: None,
                    ttl: self.policy.max_ttl,
                })
            }
            JwksSource::Url(url) => {
                let fetch_err = |message: String| JwksError::Fetch {
                    url: url.to_string(),
                    message,
                };
                let client = self
                    .client
                    .as_ref()
                    .ok_or_else(|| fetch_err("no client".into()))?;
                let request = http::Request::get(url.clone())
                    .header(http::header::ACCEPT, "application/json")
                    .body(Empty::new())
                    .map_err(|e| fetch_err(e.to_string()))?;
                let response = tokio::time::timeout(FETCH_TIMEOUT, client.request(request))
                    .await
                    .map_err(|_| fetch_err(format!("no answer within {FETCH_TIMEOUT:?}")))?
                    .map_err(|e| fetch_err(e.to_string()))?;
                if !response.status().is_success() {
                    return Err(fetch_err(format!("answered {}", response.status())));
                }
                let max_age = max_age(response.headers());
                let body = tokio::time::timeout(
                    FETCH_TIMEOUT,
                    Limited::new(response.into_body(), MAX_JWKS_BYTES).collect(),
                )
                .await
                .map_err(|_| fetch_err("body not read in time".into()))?
                .map_err(|e| fetch_err(format!("reading the body: {e}")))?
                .to_bytes();
                let keys = KeySet::parse(&body)?;
                let ttl = max_age
                    .unwrap_or(self.policy.max_ttl)
                    .clamp(self.policy.min_ttl, self.policy.max_ttl);
                Ok(Loaded {
                    keys: Arc::new(keys),
                    fetched: Some(Instant::now()),
                    ttl,
                })
            }
        }
    }
}

/// `Cache-Control: max-age=N` (`no-store`/`no-cache` count as 0, clamped up by the policy).
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::CACHE_CONTROL)?.to_str().ok()?;
    let mut age = None;
    for directive in value.split(',').map(str::trim) {
        if directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("no-cache")
        {
            return Some(Duration::ZERO);
        }
        if let Some(n) = directive
            .split_once('=')
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("max-age"))
            .and_then(|(_, v)| v.trim().trim_matches('"').parse::<u64>().ok())
        {
            age = Some(Duration::from_secs(n));
        }
    }
    age
}

fn http_client(url: &Uri) -> Result<HttpClient, JwksError> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| JwksError::Fetch {
            url: url.to_string(),
            message: format!("tls setup: {e}"),
        })?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build(connector))
}

/// Whether a JWKS URL is acceptable: `https`, or `http` to a loopback address (tests, sidecars).
pub fn acceptable_url(url: &Uri) -> bool {
    match url.scheme_str() {
        Some("https") => url.host().is_some(),
        Some("http") => url.host().is_some_and(|h| {
            h == "localhost"
                || h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_material_refuses_the_set_without_repeating_it() {
        let doc = br#"{"keys":[{"kty":"EC","crv":"P-256","x":"AAAA","y":"BBBB","d":"c2VjcmV0LWNhbmFyeQ"}]}"#;
        let err = KeySet::parse(doc).unwrap_err();
        assert_eq!(err, JwksError::PrivateMaterial("d"));
        assert!(!err.to_string().contains("c2VjcmV0"));
        let doc = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;
        assert_eq!(
            KeySet::parse(doc).unwrap_err(),
            JwksError::PrivateMaterial("k")
        );
    }

    #[test]
    fn unknown_and_encryption_keys_are_skipped() {
        let doc = br#"{"keys":[{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"},{"kty":"XYZ"},{"kty":"RSA","alg":"RSA-OAEP","n":"AQAB","e":"AQAB"}]}"#;
        assert!(KeySet::parse(doc).unwrap().is_empty());
    }

    #[test]
    fn max_age_is_read() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("public, max-age=600"),
        );
        assert_eq!(max_age(&headers), Some(Duration::from_secs(600)));
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        assert_eq!(max_age(&headers), Some(Duration::ZERO));
    }

    #[test]
    fn only_https_or_loopback_http() {
        for (url, ok) in [
            ("https://idp.example/keys", true),
            ("http://127.0.0.1:8080/keys", true),
            ("http://localhost/keys", true),
            ("http://[::1]:1/keys", true),
            ("http://idp.example/keys", false),
            ("ftp://x/keys", false),
        ] {
            assert_eq!(acceptable_url(&url.parse().unwrap()), ok, "{url}");
        }
    }
}
