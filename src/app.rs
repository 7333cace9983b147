//! The ONE place that composes the request pipeline (docs/architecture.md §1). Order lives here.
//!
//! [`Pipeline`] runs one request start to finish as one future that owns its [`RequestState`]:
//! 1. observe — marks credentials sensitive before anything can log them, accepts or mints the
//!    request id, creates the state, counts in-flight requests (`stages::observe`).
//! 2. guard — classifies every request; governed ones are framing-, path- and body-checked and
//!    their body read whole and parsed strictly (400/405/413/415).
//! 3. identity — governed only: the verified principal (401; 503 if it cannot be verified).
//! 4. rate limit — after identity, so governed traffic is keyed by the verified principal (and
//!    ungoverned by source address); *before* the decision, so a runaway caller is stopped before
//!    it costs decisions or upstream lookups (429).
//! 5. decide — governed only: the RBAC matrix, the organisation's policies and the API-key quota
//!    guard; a `Permit` or 403.
//! 6. audit gate — an allowed create's `request_received` record is queued before forwarding.
//! 7. forward — the upstream exchange; refuses a governed request without a `Permit`.
//! 8. rescue — the single error → response mapping (`error::rescue`), for whatever ended the
//!    request in 2–7.
//! 9. audit — `response_complete` for every governed request whatever its outcome, after the
//!    rescue so it sees denials as the responses they became; in blocking mode the response
//!    waits for durability (and for the create's `request_received`).
//! 10. observe — the caller gets keygate's request id; the access log and latency are written when
//!     the last byte is sent. A caller that leaves early is logged and audited by the drop guard.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::{Request, Response};
use tower::{Service, ServiceBuilder};

use crate::body::Body;
use crate::identity::Authenticator;
use crate::policy::runtime::AuthzRuntime;
use crate::proxy::links::Links;
use crate::proxy::Upstream;
use crate::ratelimit::RateLimiter;
use crate::stages::audit::{AuditContext, AuditGateStage};
use crate::stages::decide::DecideStage;
use crate::stages::forward::Forward;
use crate::stages::guard::GuardStage;
use crate::stages::identity::AuthenticateStage;
use crate::stages::observe::{Completion, ObservedBody, Observer};
use crate::stages::ratelimit::RateLimitStage;
use crate::stages::{Chain, StageLayer, Staged};
use crate::state::RequestState;
use crate::telemetry::Metrics;

/// The request-side stages, outermost first, down to the forwarder.
pub type Stages = Staged<
    GuardStage,
    Staged<
        AuthenticateStage,
        Staged<RateLimitStage, Staged<DecideStage, Staged<AuditGateStage, Forward>>>,
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
    /// How long a governed create's response body may take (`upstream.body_timeout`).
    pub body_timeout: std::time::Duration,
}

/// Builds the pipeline.
pub fn pipeline(shared: &Shared) -> Pipeline {
    let stages = ServiceBuilder::new()
        .layer(StageLayer::new(GuardStage::new(shared.max_body_bytes)))
        .layer(StageLayer::new(AuthenticateStage::new(
            shared.authenticator.clone(),
            shared.metrics.clone(),
        )))
        .layer(StageLayer::new(RateLimitStage::new(
            shared.limiter.clone(),
            shared.metrics.clone(),
        )))
        .layer(StageLayer::new(
            DecideStage::new(
                shared.authz.clone(),
                shared.upstream.clone(),
                shared.metrics.clone(),
                shared.quota.clone(),
            )
            .recording_inputs(shared.audit.is_enabled()),
        ))
        .layer(StageLayer::new(AuditGateStage::new(shared.audit.clone())))
        .service(
            Forward::new(
                shared.upstream.clone(),
                shared.metrics.clone(),
                shared.links.clone(),
                shared.body_timeout,
            )
            .with_oauth(shared.authenticator.oauth_bindings()),
        );
    Pipeline {
        root: Arc::new(Root {
            observer: Observer::new(shared.metrics.clone(), shared.access_log),
            stages,
            audit: shared.audit.clone(),
        }),
    }
}

/// The composed downstream service: one future per request, which owns the request's state.
#[derive(Debug, Clone)]
pub struct Pipeline {
    root: Arc<Root>,
}

#[derive(Debug)]
struct Root {
    observer: Observer,
    stages: Stages,
    audit: Arc<AuditContext>,
}

impl Service<Request<Body>> for Pipeline {
    type Response = Response<ObservedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ObservedBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every stage and the forwarder are always ready (the upstream pool queues internally).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let completion = self.root.observer.begin(&mut request);
        let span = completion.span().clone();
        let root = self.root.clone();
        // The path, for the audit record (only when something is recorded).
        let path = root
            .audit
            .is_enabled()
            .then(|| request.uri().path().to_owned());
        let exchange = Exchange {
            completion: Some(completion),
            audit: root.audit.clone(),
            path,
        };
        Box::pin(crate::telemetry::trace::in_span(
            async move { Ok(root.serve(request, exchange).await) },
            span,
        ))
    }
}

impl Root {
    /// One request, start to finish: the stages and the forwarder, the error rescue, the audit
    /// record, and the response with its access-log completion.
    async fn serve(
        &self,
        mut request: Request<Body>,
        mut exchange: Exchange,
    ) -> Response<ObservedBody> {
        let result = self.stages.run(&mut request, exchange.state()).await;
        drop(request);
        let state = exchange.state();
        let response = match result {
            Ok(response) => response,
            Err(err) => {
                // The single error → response mapping (`error::rescue`); logged once, in the
                // access log.
                let (response, rescued) = crate::error::rescue(&err, state.id_str());
                state.rescued(rescued);
                response
            }
        };
        let response = match exchange.parts() {
            (state, Some(path)) => {
                crate::stages::audit::record(&self.audit, state, path, response).await
            }
            (_, None) => response,
        };
        exchange.finish().respond(response)
    }
}

/// The request's state while its response is being made, with the drop guard that keeps the
/// access log and the audit trail complete when the caller goes away first: the connection
/// drops this future, the guard logs the request (499) and takes the state over on a task that
/// writes `response_complete` — after following a forwarded create to its end, so the record
/// says what the upstream did; anything not yet forwarded never will be.
struct Exchange {
    completion: Option<Completion>,
    audit: Arc<AuditContext>,
    /// The request path when audit is on; taken when the response is recorded.
    path: Option<String>,
}

impl Exchange {
    fn state(&mut self) -> &mut RequestState {
        match &mut self.completion {
            Some(completion) => completion.state(),
            // INVARIANT: the completion is taken only by `finish` (which consumes the exchange)
            // and by drop.
            None => unreachable!("exchange used after it finished"),
        }
    }

    /// The state and the path to record (when audit is on).
    fn parts(&mut self) -> (&mut RequestState, Option<&str>) {
        match &mut self.completion {
            Some(completion) => (completion.state(), self.path.as_deref()),
            None => unreachable!("exchange used after it finished"),
        }
    }

    /// The response is made: the guard is disarmed.
    fn finish(mut self) -> Completion {
        match self.completion.take() {
            Some(completion) => completion,
            None => unreachable!("exchange finished twice"),
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let Some(completion) = self.completion.take() else {
            return;
        };
        let mut state = completion.abandon();
        // Nothing to record, or recorded already (its record queued).
        let Some(path) = self.path.take() else {
            return;
        };
        if state.recorded {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let audit = self.audit.clone();
        runtime.spawn(async move {
            if state.in_flight.is_some() {
                tracing::debug!(request.id = %state.id_str(), "Caller gone; following the forwarded create to its end");
                let response = match crate::stages::forward::land(&mut state).await {
                    Ok(response) => response,
                    Err(err) => {
                        let err = crate::error::GatewayError::from(err);
                        let (response, rescued) = crate::error::rescue(&err, state.id_str());
                        state.rescued(rescued);
                        response
                    }
                };
                crate::stages::audit::record(&audit, &mut state, &path, response).await;
            } else {
                crate::stages::audit::record_gone(&audit, &state, &path).await;
            }
        });
    }
}
