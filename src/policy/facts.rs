//! Gathering the [`Facts`] of an allowed governed request: everything the pure
//! [`decide`](super::decide) needs that takes I/O.
//!
//! What the quota guard knows about a create's clusters (from the ledger) and — only when
//! organisation policies are configured — the owner's key count (creates; unknown when it cannot
//! be found out, and policies decide what unknown means) and the target key (get, update, delete,
//! when a policy can apply to the action), read through [`Fetch`](super::source::Fetch) with the
//! caller's own credential, exactly as the caller would read it.
//!
//! The target lookup has three outcomes: the key (policies decide); an upstream refusal — 4xx,
//! the key does not exist or the caller may not see it — which is the answer to the request and is
//! passed through; or a failure (transport, timeout, 5xx, an unreadable answer), which fails
//! closed with 503 and says that the key could not be checked.

use std::sync::Arc;

use http::HeaderValue;

use super::decide::{Facts, Request};
use super::quota;
use super::runtime::{AuthzRuntime, UpstreamFetch};
use super::source::{fetch_key, FetchError};
use super::{AuthzSnapshot, Decision};
use crate::error::{GatewayError, UpstreamAnswer};
use crate::model::Action;
use crate::proxy::Upstream;

/// Largest key lookup response read.
const MAX_LOOKUP_BYTES: usize = 64 * 1024;

/// Where facts come from: the live authorization data, the upstream and the quota ledger.
#[derive(Debug)]
pub struct FactSources {
    authz: Arc<AuthzRuntime>,
    upstream: Arc<Upstream>,
    quota: Arc<quota::Guard>,
}

impl FactSources {
    /// Over the live data, the upstream and the ledger.
    pub fn new(
        authz: Arc<AuthzRuntime>,
        upstream: Arc<Upstream>,
        quota: Arc<quota::Guard>,
    ) -> FactSources {
        FactSources {
            authz,
            upstream,
            quota,
        }
    }

    /// The facts of `asked`, which layer 1 (`matrix`) allowed; see the module doc. The target key
    /// is read with `authorization`, the caller's own. An error is the answer to the request: the
    /// upstream's own refusal of the lookup, or a 503.
    pub async fn gather(
        &self,
        snapshot: &AuthzSnapshot,
        matrix: &Decision,
        asked: &Request<'_>,
        authorization: Option<&HeaderValue>,
    ) -> Result<Facts, GatewayError> {
        let mut facts = Facts::default();
        if let (Action::CreateApiKey, Some(resource)) =
            (asked.action, matrix.target.resource_id.as_deref())
        {
            facts.quota = Some(self.quota.facts(resource, snapshot.inventory()));
        }
        let Some(org) = snapshot.org_policies() else {
            return Ok(facts);
        };
        match asked.action {
            Action::CreateApiKey => {
                if let Some(owner) = matrix.target.owner_id.as_deref() {
                    facts.owner_key_count = self.authz.owner_key_count(owner).await;
                }
            }
            a @ (Action::UpdateApiKey | Action::DeleteApiKey | Action::GetApiKey)
                if org.governs(a) =>
            {
                if let (Some(key_id), Some(auth)) = (asked.key_id, authorization) {
                    let fetch =
                        UpstreamFetch::as_caller(self.upstream.clone(), auth, MAX_LOOKUP_BYTES);
                    let key = fetch_key(&fetch, key_id).await;
                    facts.target_key = Some(key.map_err(|e| lookup_failed(key_id, e))?);
                }
            }
            _ => {}
        }
        Ok(facts)
    }
}

/// A failed target lookup: the upstream's own refusal, passed through, or 503.
fn lookup_failed(key_id: &str, error: FetchError) -> GatewayError {
    let why = match error {
        FetchError::Refused { answer, .. } => {
            return GatewayError::LookupRefused(Box::new(UpstreamAnswer::new(
                key_id,
                answer.status,
                &answer.headers,
                answer.body,
            )))
        }
        FetchError::Transport { reason, .. } => reason,
        FetchError::Status { status, .. } => format!("the upstream answered {status}"),
        FetchError::Shape { .. } | FetchError::Pagination { .. } => {
            "the upstream's answer is not JSON".to_owned()
        }
    };
    GatewayError::AuthzUnavailable(format!(
        "could not look up API key `{key_id}`, so keygate could not check it against the organisation policies (for example whether it is protected): {why}"
    ))
}
