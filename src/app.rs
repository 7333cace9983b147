//! The ONE place that composes the request pipeline (docs/architecture.md §1). Order lives here.
//!
//! Outermost first (`ServiceBuilder`'s first `.layer()` is the outermost):
//! 1. observe — marks credentials sensitive before anything can log them, accepts or mints the
//!    request id, counts in-flight requests, writes the access log and latency when the response
//!    body is finished. Outermost, so it sees every response, including synthesised ones.
//! 2. audit — one event per governed request whatever its outcome (outside rescue, so it sees
//!    denials as the responses they became); in blocking mode the response waits for durability.
//! 3. rescue — the single error → response mapping (`error.rs`). Everything inside may fail with a
//!    `GatewayError`; nothing outside sees one.
//! 4. guard — classifies every request; governed ones are framing-, path- and body-checked and
//!    their body read whole and parsed strictly (400/405/413/415).
//! 5. identity — governed only: the verified principal (401; 503 if it cannot be verified).
//! 6. rate limit — after identity, so governed traffic is keyed by the verified principal (and
//!    ungoverned by source address); *before* the decision, so a runaway caller is stopped before
//!    it costs decisions or upstream lookups (429).
//! 7. decide — governed only: the RBAC matrix, the organisation's policies and the API-key quota
//!    guard; a `Permit` or 403.
//! 8. audit gate — an allowed create's `request_received` record is made durable before forwarding.
//! 9. forward — the upstream exchange; refuses a governed request without a `Permit`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tower::ServiceBuilder;

use crate::audit::stage::{AuditContext, AuditGateStage, AuditLayer, Audited};
use crate::error::{Rescue, RescueLayer};
use crate::guard::stage::GuardStage;
use crate::identity::stage::AuthenticateStage;
use crate::identity::Authenticator;
use crate::policy::runtime::AuthzRuntime;
use crate::policy::stage::DecideStage;
use crate::proxy::forward::Forward;
use crate::proxy::links::Links;
use crate::proxy::Upstream;
use crate::ratelimit::stage::RateLimitStage;
use crate::ratelimit::RateLimiter;
use crate::stage::{StageLayer, Staged};
use crate::telemetry::observe::{Observe, ObserveLayer};
use crate::telemetry::Metrics;

/// The composed downstream service.
pub type Pipeline = Observe<
    Audited<
        Rescue<
            Staged<
                GuardStage,
                Staged<
                    AuthenticateStage,
                    Staged<RateLimitStage, Staged<DecideStage, Staged<AuditGateStage, Forward>>>,
                >,
            >,
        >,
    >,
>;

/// Everything the pipeline shares across requests.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The upstream client.
    pub upstream: Arc<Upstream>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Whether to write one access-log line per request.
    pub access_log: bool,
    /// Largest governed request body.
    pub max_body_bytes: usize,
    /// Identity of governed-route callers.
    pub authenticator: Arc<Authenticator>,
    /// The rate limiter (reloadable).
    pub limiter: Arc<ArcSwap<RateLimiter>>,
    /// Authorization data and layer 1.
    pub authz: Arc<AuthzRuntime>,
    /// Audit sinks and event source.
    pub audit: Arc<AuditContext>,
    /// Key counts per cluster and the API-key quota guard.
    pub quota: Arc<crate::policy::quota::Guard>,
    /// Rewrites upstream links in responses to keygate's origin (`None`: off).
    pub links: Option<Arc<Links>>,
}

/// Builds the pipeline.
pub fn pipeline(shared: &Shared) -> Pipeline {
    ServiceBuilder::new()
        .layer(ObserveLayer::new(shared.metrics.clone(), shared.access_log))
        .layer(AuditLayer::new(shared.audit.clone()))
        .layer(RescueLayer)
        .layer(StageLayer::new(GuardStage::new(shared.max_body_bytes)))
        .layer(StageLayer::new(AuthenticateStage::new(
            shared.authenticator.clone(),
            shared.metrics.clone(),
        )))
        .layer(StageLayer::new(RateLimitStage::new(
            shared.limiter.clone(),
            shared.metrics.clone(),
        )))
        .layer(StageLayer::new(DecideStage::new(
            shared.authz.clone(),
            shared.upstream.clone(),
            shared.metrics.clone(),
            shared.quota.clone(),
        )))
        .layer(StageLayer::new(AuditGateStage::new(shared.audit.clone())))
        .service(Forward::new(
            shared.upstream.clone(),
            shared.metrics.clone(),
            shared.links.clone(),
        ))
}
