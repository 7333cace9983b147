//! The Confluent session bearer: who a Confluent CLI user is, asked of Confluent itself.
//!
//! After `confluent login`, the CLI sends every `/iam/v2` call with `Authorization: Bearer
//! <session token>`. Confluent publishes no keys to verify these tokens offline, so keygate asks
//! Confluent who the bearer is with the call the CLI itself makes: `GET /api/me` on Confluent's
//! web host (`upstream.web_url`) with the token. A 200 names the user (`user.resource_id`) and the
//! organisation (which must be keygate's, `authz.org_id`); 401/403 mean the token is not valid.
//!
//! The token is JWT-shaped; its `exp` is read *without* verification, only to refuse a token
//! already expired without asking (and without forwarding anything), and to bound how long the
//! answer is cached: until `exp`, and at most `identity.cache_ttl` (see [`super::cache`]). A token
//! that is not JWT-shaped or has no `exp` is refused as malformed. The token is forwarded
//! unchanged; it is never stored (the cache holds an HMAC of it), logged or put in an error.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderValue, StatusCode};
use serde::Deserialize;

use super::{IdentityError, RateLimitHeaders};
use crate::model::{AuthMethod, Principal};
use crate::proxy::Upstream;

/// Largest `/api/me` answer read (a user, an organisation and its accounts: a few KiB).
const MAX_ME_BYTES: usize = 256 * 1024;
/// Longest session token accepted (Confluent's are about 1 KiB).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Resolves session tokens against Confluent's web host.
#[derive(Debug, Clone)]
pub struct SessionResolver {
    web: Arc<Upstream>,
    org_id: String,
}

#[derive(Deserialize)]
struct Me {
    user: MeUser,
    organization: Option<MeOrganization>,
}

#[derive(Deserialize)]
struct MeUser {
    resource_id: String,
}

#[derive(Deserialize)]
struct MeOrganization {
    resource_id: String,
}

#[derive(Deserialize)]
struct Claims {
    exp: Option<f64>,
}

/// A bearer token's expiry, read without verification (see the module doc).
pub fn expiry(token: &str) -> Result<SystemTime, IdentityError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(IdentityError::SessionMalformed("the token is too long"));
    }
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdentityError::SessionMalformed(
            "a Confluent session token has three dot-separated parts",
        ));
    };
    let json = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| IdentityError::SessionMalformed("the token's payload is not base64url"))?;
    let claims: Claims = serde_json::from_slice(&json)
        .map_err(|_| IdentityError::SessionMalformed("the token's payload is not JSON"))?;
    let exp = claims
        .exp
        .filter(|e| e.is_finite() && *e >= 0.0)
        .ok_or(IdentityError::SessionMalformed("the token has no `exp`"))?;
    Ok(UNIX_EPOCH + Duration::from_secs_f64(exp.min(1e12)))
}

impl SessionResolver {
    /// A resolver asking `web` (Confluent's web host); tokens must belong to `org_id`.
    pub fn new(web: Arc<Upstream>, org_id: impl Into<String>) -> Self {
        SessionResolver {
            web,
            org_id: org_id.into(),
        }
    }

    /// `GET /api/me` with the caller's own `authorization` (`Bearer …`).
    pub async fn resolve(
        &self,
        authorization: &HeaderValue,
    ) -> Result<Arc<Principal>, IdentityError> {
        let (status, headers, body) = self
            .web
            .get("/api/me", authorization, MAX_ME_BYTES)
            .await
            .map_err(|e| IdentityError::Unavailable(e.to_string()))?;
        match status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(IdentityError::SessionRejected)
            }
            StatusCode::TOO_MANY_REQUESTS => {
                return Err(IdentityError::UpstreamRateLimited(
                    RateLimitHeaders::from_upstream(&headers),
                ))
            }
            other => {
                return Err(IdentityError::Unavailable(format!(
                    "Confluent answered `GET /api/me` with {other}"
                )))
            }
        }
        let me: Me = serde_json::from_slice(&body).map_err(|e| {
            IdentityError::Unavailable(format!(
                "unreadable `/api/me` answer (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        match &me.organization {
            Some(org) if org.resource_id.eq_ignore_ascii_case(&self.org_id) => {}
            _ => return Err(IdentityError::SessionOtherOrganization),
        }
        let principal = Principal::new(me.user.resource_id.clone(), AuthMethod::ConfluentSession)
            .map_err(|_| IdentityError::SessionRejected)?;
        Ok(Arc::new(principal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(payload: &str) -> String {
        format!(
            "eyJhbGciOiJIUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn expiry_is_read_from_the_payload() {
        let at = expiry(&token(r#"{"exp":1900000000,"sub":"u-bob"}"#)).unwrap();
        assert_eq!(at, UNIX_EPOCH + Duration::from_secs(1_900_000_000));
    }

    #[test]
    fn tokens_that_are_not_jwt_shaped_or_lack_exp_are_malformed() {
        for bad in [
            "garbage".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            "a.!!!.c".to_owned(),
            token("not json"),
            token(r#"{"sub":"u-bob"}"#),
            token(r#"{"exp":-5}"#),
        ] {
            let err = expiry(&bad).unwrap_err();
            assert!(matches!(err, IdentityError::SessionMalformed(_)), "{bad}");
            assert!(!err.to_string().contains(&bad), "{err}");
        }
    }
}
