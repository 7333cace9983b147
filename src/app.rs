//! The ONE place that composes the request pipeline (DESIGN.md §1). Order lives here.
//!
//! Outermost first (`ServiceBuilder`'s first `.layer()` is the outermost):
//! 1. observe — marks credentials sensitive before anything can log them, accepts or mints the
//!    request id, counts in-flight requests, writes the access log and latency when the response
//!    body is finished. Outermost, so it also sees responses keygate synthesised.
//! 2. rescue — the single error → response mapping (`error.rs`). Everything inside may fail with a
//!    `GatewayError`; nothing outside sees one.
//! 3. forward — the upstream exchange (`proxy`).
//!
//! Governed-route stages (guard, identity, classify/decide, rate limit, audit) slot in between
//! rescue and forward, in that order: nothing reaches the upstream without passing all of them.

use std::sync::Arc;

use tower::ServiceBuilder;

use crate::error::{Rescue, RescueLayer};
use crate::proxy::forward::Forward;
use crate::proxy::Upstream;
use crate::telemetry::observe::{Observe, ObserveLayer};
use crate::telemetry::Metrics;

/// The composed downstream service.
pub type Pipeline = Observe<Rescue<Forward>>;

/// Everything the pipeline shares across requests.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The upstream client.
    pub upstream: Arc<Upstream>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Whether to write one access-log line per request.
    pub access_log: bool,
}

/// Builds the pipeline.
pub fn pipeline(shared: &Shared) -> Pipeline {
    ServiceBuilder::new()
        .layer(ObserveLayer::new(shared.metrics.clone(), shared.access_log))
        .layer(RescueLayer)
        .service(Forward::new(
            shared.upstream.clone(),
            shared.metrics.clone(),
        ))
}
