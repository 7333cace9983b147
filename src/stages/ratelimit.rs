//! The rate-limit stage: after identity (so governed traffic is keyed by the verified principal),
//! before the decision (so a runaway caller is stopped before it costs decisions or upstream
//! lookups). Ungoverned traffic is keyed by source address: its credential is not verified.
//!
//! With shared limits configured, a request they apply to waits for one Redis round trip (at most
//! `ratelimit.shared.command_timeout`); a shared limit that fails closed while Redis is
//! unavailable ends the request with a 503, a refusal by any limit with a 429.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::Request;

use super::Stage;
use crate::body::Body;
use crate::error::GatewayError;
use crate::ratelimit::{RateLimiter, Rejected, Subject};
use crate::state::RequestState;
use crate::telemetry::metrics::LimitLabels;
use crate::telemetry::Metrics;

/// See the module doc.
#[derive(Debug)]
pub struct RateLimitStage {
    limiter: Arc<ArcSwap<RateLimiter>>,
    metrics: Arc<Metrics>,
}

impl RateLimitStage {
    /// The stage over a reloadable limiter.
    pub fn new(limiter: Arc<ArcSwap<RateLimiter>>, metrics: Arc<Metrics>) -> Self {
        RateLimitStage { limiter, metrics }
    }
}

impl Stage for RateLimitStage {
    fn name(&self) -> &'static str {
        "ratelimit"
    }

    /// Governed requests always pass through the stage (and show it in their trace); ungoverned
    /// ones skip it when no limit is configured.
    fn applies_to(&self, _request: &Request<Body>, state: &RequestState) -> bool {
        state.is_governed() || !self.limiter.load().is_unlimited()
    }

    async fn apply(
        &self,
        _request: &mut Request<Body>,
        state: &mut RequestState,
    ) -> Result<(), GatewayError> {
        let action = state.action;
        let subject = match &state.principal {
            Some(p) => Subject::Principal {
                id: p.id(),
                groups: p.groups(),
            },
            None => Subject::Address(state.peer.ip()),
        };
        let limiter = self.limiter.load();
        let outcome = if limiter.has_shared_limits() {
            // Held across the wait for Redis: a full reference, not a borrowed guard.
            let limiter = arc_swap::Guard::into_inner(limiter);
            limiter.admit(&subject, action).await
        } else {
            limiter.check(&subject, action).map_err(Rejected::from)
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(Rejected::Limited(limited)) => {
                self.metrics
                    .ratelimited
                    .get_or_create(&LimitLabels {
                        limit: limited.limit_id().to_string(),
                    })
                    .inc();
                Err(limited.into())
            }
            Err(Rejected::Unavailable(unavailable)) => Err(unavailable.into()),
        }
    }
}
