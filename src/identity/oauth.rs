//! Terraform's OAuth mode (`[identity.oauth]`): the Confluent provider exchanges a corporate IdP
//! token for a Confluent access token at `POST /sts/v1/oauth2/token` (RFC 8693 token exchange,
//! `subject_token` + `identity_pool_id`), through keygate.
//!
//! keygate verifies the `subject_token` with its JWT issuers (`[[identity.jwt]]`) before the
//! exchange is forwarded — a subject token none of them verifies is refused (401) — and when
//! Confluent answers with an `access_token`, binds that token to the verified identity acting as
//! the identity pool, until `expires_in` (capped by `max_lifetime`). Later `Bearer` calls with the
//! access token are attributed from the binding without asking Confluent. Bindings are keyed by
//! an HMAC of the token under a per-process random key, like the identity cache: the token itself
//! is never stored.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::hmac;
use serde::Deserialize;
use tokio::time::Instant;

use super::FieldError;
use crate::model::Principal;

/// The exchange endpoint (Confluent STS).
pub const TOKEN_PATH: &str = "/sts/v1/oauth2/token";
/// Largest exchange request body read (a form with one JWT).
pub const MAX_FORM_BYTES: usize = 64 * 1024;
/// Largest exchange response body read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// `[identity.oauth]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOAuth {
    pub max_bindings: Option<usize>,
    pub max_lifetime: Option<String>,
}

/// The validated `[identity.oauth]`.
#[derive(Debug, Clone, Copy)]
pub struct OAuthConfig {
    /// Bindings held at most (the oldest are dropped).
    pub max_bindings: usize,
    /// Longest a binding lives, whatever `expires_in` says.
    pub max_lifetime: Duration,
}

impl OAuthConfig {
    /// Validates `[identity.oauth]`.
    pub fn validate(raw: &RawOAuth) -> Result<OAuthConfig, FieldError> {
        let max_bindings = raw.max_bindings.unwrap_or(100_000);
        if max_bindings == 0 {
            return Err(FieldError::new(
                "identity.oauth.max_bindings",
                "must be greater than 0",
            ));
        }
        let max_lifetime = match &raw.max_lifetime {
            None => Duration::from_secs(3600),
            Some(text) => humantime::parse_duration(text).map_err(|e| {
                FieldError::new(
                    "identity.oauth.max_lifetime",
                    format!("`{text}` is not a duration: {e}"),
                )
            })?,
        };
        Ok(OAuthConfig {
            max_bindings,
            max_lifetime,
        })
    }
}

/// What the exchange request asks for.
#[derive(Debug)]
pub struct ExchangeRequest {
    /// The IdP token (secret: never logged).
    pub subject_token: String,
    /// The identity pool the caller wants to act as.
    pub identity_pool_id: String,
}

/// Parses the form body of an exchange request.
pub fn parse_request(body: &[u8]) -> Result<ExchangeRequest, &'static str> {
    let mut subject_token = None;
    let mut identity_pool_id = None;
    for pair in body.split(|b| *b == b'&') {
        let mut kv = pair.splitn(2, |b| *b == b'=');
        let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
            continue;
        };
        let decode = |v: &[u8]| -> Option<String> {
            let plus: Vec<u8> = v
                .iter()
                .map(|b| if *b == b'+' { b' ' } else { *b })
                .collect();
            percent_encoding::percent_decode(&plus)
                .decode_utf8()
                .ok()
                .map(|s| s.into_owned())
        };
        match k {
            b"subject_token" => subject_token = decode(v),
            b"identity_pool_id" => identity_pool_id = decode(v),
            _ => {}
        }
    }
    Ok(ExchangeRequest {
        subject_token: subject_token.ok_or("the exchange has no `subject_token`")?,
        identity_pool_id: identity_pool_id.ok_or("the exchange has no `identity_pool_id`")?,
    })
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<f64>,
}

/// The access token and its lifetime from a successful exchange's answer.
pub fn parse_response(body: &[u8]) -> Option<(String, Option<Duration>)> {
    let r: TokenResponse = serde_json::from_slice(body).ok()?;
    let lifetime = r
        .expires_in
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s.min(1e9)));
    (!r.access_token.is_empty()).then_some((r.access_token, lifetime))
}

/// Access tokens bound to verified identities (see the module doc).
#[derive(Debug)]
pub struct Bindings {
    key: hmac::Key,
    config: OAuthConfig,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<[u8; 32], (Arc<Principal>, Instant)>,
    order: VecDeque<[u8; 32]>,
}

impl Bindings {
    /// Empty bindings with a fresh random key.
    pub fn new(config: OAuthConfig) -> Result<Bindings, ring::error::Unspecified> {
        Ok(Bindings {
            key: hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())?,
            config,
            entries: Mutex::new(Entries::default()),
        })
    }

    fn tag(&self, token: &str) -> [u8; 32] {
        let mut tag = [0u8; 32];
        tag.copy_from_slice(hmac::sign(&self.key, token.as_bytes()).as_ref());
        tag
    }

    /// Binds `token` to `principal` for `lifetime` (capped).
    pub fn bind(&self, token: &str, principal: Arc<Principal>, lifetime: Option<Duration>) {
        let lifetime = lifetime
            .unwrap_or(self.config.max_lifetime)
            .min(self.config.max_lifetime);
        let tag = self.tag(token);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while entries.map.len() >= self.config.max_bindings {
            match entries.order.pop_front() {
                Some(old) => {
                    entries.map.remove(&old);
                }
                None => break,
            }
        }
        if entries.order.len() > self.config.max_bindings * 2 {
            let Entries { map, order } = &mut *entries;
            order.retain(|t| map.get(t).is_some_and(|(_, until)| *until > now));
        }
        if entries
            .map
            .insert(tag, (principal, now + lifetime))
            .is_none()
        {
            entries.order.push_back(tag);
        }
    }

    /// The identity bound to `token`, if any and not expired.
    pub fn get(&self, token: &str) -> Option<Arc<Principal>> {
        let tag = self.tag(token);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.map.get(&tag) {
            Some((principal, until)) if *until > Instant::now() => Some(principal.clone()),
            Some(_) => {
                entries.map.remove(&tag);
                None
            }
            None => None,
        }
    }

    /// Bindings held now.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AuthMethod;

    #[test]
    fn form_and_answer_are_parsed() {
        let r = parse_request(
            b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=a.b.c&identity_pool_id=pool-abc",
        )
        .unwrap();
        assert_eq!(r.subject_token, "a.b.c");
        assert_eq!(r.identity_pool_id, "pool-abc");
        assert!(parse_request(b"subject_token=x").is_err());
        let (token, life) =
            parse_response(br#"{"access_token":"tok","token_type":"Bearer","expires_in":900}"#)
                .unwrap();
        assert_eq!(
            (token.as_str(), life),
            ("tok", Some(Duration::from_secs(900)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bindings_expire_and_are_bounded() {
        let b = Bindings::new(OAuthConfig {
            max_bindings: 2,
            max_lifetime: Duration::from_secs(600),
        })
        .unwrap();
        let p = Arc::new(Principal::new("pool-1", AuthMethod::Jwt { issuer: "i".into() }).unwrap());
        b.bind("t1", p.clone(), Some(Duration::from_secs(60)));
        assert!(b.get("t1").is_some());
        assert!(b.get("t2").is_none());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(b.get("t1").is_none());
        b.bind("a", p.clone(), None);
        b.bind("b", p.clone(), None);
        b.bind("c", p, Some(Duration::from_secs(99999)));
        assert_eq!(b.len(), 2);
        assert!(b.get("a").is_none());
        tokio::time::advance(Duration::from_secs(601)).await;
        assert!(b.get("c").is_none());
    }
}
