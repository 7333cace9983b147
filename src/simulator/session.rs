//! Confluent web sessions, as the Confluent CLI sees them: `POST /api/sessions` with a seeded
//! user's email and password (or a refresh token) gives a JWT-shaped session token with `exp`
//! and a refresh token; the session token then authenticates as `Authorization: Bearer`.
//!
//! Tokens are HS256-signed with a key made when the simulator starts, so the simulator can tell
//! its own tokens from forgeries; nothing outside it can verify them (as with Confluent's).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::Deserialize;

/// How long a session token lives: Confluent's CLI sessions last hours; one hour here.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(3600);

/// The session machinery of one simulator.
pub(crate) struct Sessions {
    key: hmac::Key,
    /// Refresh token → user id.
    refresh: Mutex<HashMap<String, String>>,
    ttl: Mutex<Duration>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

impl Sessions {
    pub(crate) fn new() -> Sessions {
        let mut raw = [0u8; 32];
        // No randomness means no usable sessions; a fixed fallback key would be forgeable.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw);
        Sessions {
            key: hmac::Key::new(hmac::HMAC_SHA256, &raw),
            refresh: Mutex::new(HashMap::new()),
            ttl: Mutex::new(DEFAULT_SESSION_TTL),
        }
    }

    pub(crate) fn set_ttl(&self, ttl: Duration) {
        *super::lock(&self.ttl) = ttl;
    }

    fn ttl(&self) -> Duration {
        *super::lock(&self.ttl)
    }

    /// A session token for `user` expiring at `exp`.
    pub(crate) fn token(&self, user: &str, org: &str, exp: SystemTime, jti: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let exp = exp.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let payload = URL_SAFE_NO_PAD.encode(
            serde_json::json!({
                "sub": user,
                "organizationResourceId": org,
                "iss": "Confluent",
                "iat": iat,
                "exp": exp,
                "jti": jti,
            })
            .to_string(),
        );
        let signing_input = format!("{header}.{payload}");
        let signature = hmac::sign(&self.key, signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }

    /// A new session for `user`: (token, refresh token).
    pub(crate) fn login(
        &self,
        user: &str,
        org: &str,
        jti: &str,
        refresh: String,
    ) -> (String, String) {
        let token = self.token(user, org, SystemTime::now() + self.ttl(), jti);
        super::lock(&self.refresh).insert(refresh.clone(), user.to_owned());
        (token, refresh)
    }

    /// The user of a live refresh token.
    pub(crate) fn refresh_user(&self, refresh: &str) -> Option<String> {
        super::lock(&self.refresh).get(refresh).cloned()
    }

    /// The user of a valid, unexpired session token.
    pub(crate) fn verify(&self, token: &str) -> Option<String> {
        let (signing_input, signature) = token.rsplit_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        hmac::verify(&self.key, signing_input.as_bytes(), &signature).ok()?;
        let payload = signing_input.split_once('.')?.1;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        (claims.exp > now).then_some(claims.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_they_expire_and_forgeries_never() {
        let sessions = Sessions::new();
        let live = sessions.token(
            "u-bob",
            "org",
            SystemTime::now() + Duration::from_secs(60),
            "j",
        );
        assert_eq!(sessions.verify(&live).as_deref(), Some("u-bob"));
        let expired = sessions.token(
            "u-bob",
            "org",
            SystemTime::now() - Duration::from_secs(1),
            "j",
        );
        assert_eq!(sessions.verify(&expired), None);
        let other = Sessions::new().token(
            "u-bob",
            "org",
            SystemTime::now() + Duration::from_secs(60),
            "j",
        );
        assert_eq!(sessions.verify(&other), None);
        assert_eq!(sessions.verify("garbage"), None);
    }
}
