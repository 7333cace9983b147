//! Resolving a Basic credential's owner by asking the upstream with that very credential.
//!
//! `GET /iam/v2/api-keys/{key id}` with the caller's `Authorization`: if Confluent answers 200, the
//! secret is right and `spec.owner.id` is who the caller is. 401/403/404 mean the credential is not
//! valid (401 downstream); anything else, or no answer, means keygate cannot tell (503, never
//! "allow").

use std::sync::Arc;

use http::{HeaderValue, StatusCode};
use serde::Deserialize;

use super::{IdentityError, RateLimitHeaders};
use crate::model::{AuthMethod, Principal};
use crate::proxy::Upstream;

/// Largest key lookup response read (an ApiKey object is about 1 KiB).
const MAX_LOOKUP_BYTES: usize = 64 * 1024;

/// Resolves credentials against the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamResolver {
    upstream: Arc<Upstream>,
}

#[derive(Deserialize)]
struct ApiKey {
    id: String,
    spec: Spec,
}

#[derive(Deserialize)]
struct Spec {
    owner: Owner,
}

#[derive(Deserialize)]
struct Owner {
    id: String,
}

impl UpstreamResolver {
    /// A resolver using keygate's upstream client.
    pub fn new(upstream: Arc<Upstream>) -> Self {
        UpstreamResolver { upstream }
    }

    /// Looks up `key_id` with the caller's own `authorization` header value.
    pub async fn resolve(
        &self,
        key_id: &str,
        authorization: &HeaderValue,
    ) -> Result<Arc<Principal>, IdentityError> {
        let path = format!("/iam/v2/api-keys/{key_id}");
        let (status, headers, body) = self
            .upstream
            .get(&path, authorization, MAX_LOOKUP_BYTES)
            .await
            .map_err(|e| IdentityError::Unavailable(e.to_string()))?;
        match status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => {
                return Err(IdentityError::Rejected {
                    key_id: key_id.to_string(),
                })
            }
            // The lookup runs with the caller's own credential, so Confluent's limit is the
            // caller's: pass it on as the 429 (with Confluent's headers) it is.
            StatusCode::TOO_MANY_REQUESTS => {
                return Err(IdentityError::UpstreamRateLimited(
                    RateLimitHeaders::from_upstream(&headers),
                ))
            }
            other => {
                return Err(IdentityError::Unavailable(format!(
                    "upstream answered the key lookup with {other}"
                )))
            }
        }
        // serde_json errors can quote input; the lookup response carries no secret (GET returns an
        // empty one), but report only the position anyway.
        let key: ApiKey = serde_json::from_slice(&body).map_err(|e| {
            IdentityError::Unavailable(format!(
                "unreadable key lookup response (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if key.id != key_id {
            return Err(IdentityError::Unavailable(
                "key lookup returned a different key".into(),
            ));
        }
        let principal = Principal::new(
            key.spec.owner.id.clone(),
            AuthMethod::ApiKey {
                key_id: key_id.to_string(),
            },
        )
        .map_err(|_| IdentityError::UnknownOwner {
            key_id: key_id.to_string(),
            owner: key.spec.owner.id.chars().take(64).collect(),
        })?;
        Ok(Arc::new(principal))
    }
}
