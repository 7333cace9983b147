//! The pipeline's stages, and the shape they share.
//!
//! Each request-side stage (guard, identity, rate limit, decide, audit gate) looks at the request
//! and the request's state, maybe changes the request or records what it learned in the state, and
//! either passes it on or stops it with a [`GatewayError`]. The stages live here, above the
//! modules whose work they call (a stage is the glue between the pipeline's per-request state and
//! a module's plain functions; `guard`, `identity`, `ratelimit`, `policy`, `audit` and `proxy`
//! know nothing of requests in flight), next to the two ends of every request: [`observe`] (its
//! first and last step) and [`forward`] (the end of the chain).
//!
//! Each stage implements [`Stage`]; [`StageLayer`] nests it in front of the rest of the chain (so
//! `app.rs` composes them with `ServiceBuilder`), and [`Chain::run`] runs the nest as one future,
//! lending each stage the request and its [`RequestState`] in turn. The root of the pipeline
//! (`app::Pipeline`) owns both. Each stage's work runs in a span named after it, a child of the
//! request's server span (free when tracing is off).

pub mod audit;
pub mod decide;
pub mod forward;
pub mod guard;
pub mod identity;
pub mod observe;
pub mod ratelimit;

use std::future::Future;
use std::sync::Arc;

use http::{Request, Response};
use tower::Layer;

use crate::body::Body;
use crate::error::GatewayError;
use crate::state::RequestState;
use crate::telemetry::trace;

/// One request-side stage.
pub trait Stage: Send + Sync + 'static {
    /// The stage's name, as its trace span is called (`guard`, `identity`, …).
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }

    /// Whether the stage has anything to do for this request. When it has not, the request goes
    /// straight on to the next stage: no span, no allocation, no future of this stage's own (most
    /// stages only act on governed routes, and ungoverned traffic is the bulk). Default: always.
    fn applies_to(&self, _request: &Request<Body>, _state: &RequestState) -> bool {
        true
    }

    /// Checks (and possibly rewrites) the request in place and records what it learned in
    /// `state`; an error ends the request here.
    fn apply(
        &self,
        request: &mut Request<Body>,
        state: &mut RequestState,
    ) -> impl Future<Output = Result<(), GatewayError>> + Send;
}

/// Wraps a [`Stage`] as a tower layer.
#[derive(Debug)]
pub struct StageLayer<T> {
    stage: Arc<T>,
}

impl<T> StageLayer<T> {
    /// The layer for `stage`.
    pub fn new(stage: T) -> Self {
        StageLayer {
            stage: Arc::new(stage),
        }
    }

    /// The layer for a shared stage.
    pub fn shared(stage: Arc<T>) -> Self {
        StageLayer { stage }
    }
}

impl<T> Clone for StageLayer<T> {
    fn clone(&self) -> Self {
        StageLayer {
            stage: self.stage.clone(),
        }
    }
}

impl<T, S> Layer<S> for StageLayer<T> {
    type Service = Staged<T, S>;
    fn layer(&self, inner: S) -> Staged<T, S> {
        Staged {
            stage: self.stage.clone(),
            inner: Arc::new(inner),
        }
    }
}

/// A stage in front of the rest of the pipeline.
#[derive(Debug)]
pub struct Staged<T, S> {
    stage: Arc<T>,
    /// Shared, so that cloning the chain for a request is two reference counts, not two per level.
    inner: Arc<S>,
}

impl<T, S> Clone for Staged<T, S> {
    fn clone(&self) -> Self {
        Staged {
            stage: self.stage.clone(),
            inner: self.inner.clone(),
        }
    }
}

/// The request side as one future: each stage, then the next, down to the forwarder. Running
/// the chain through this trait instead of through each layer's `Service::call` makes a request
/// ONE allocation for all stages together (the root's box) rather than one per stage, and the
/// request and its state move between stages inside that single state machine.
pub trait Chain: Send + Sync + 'static {
    /// Runs this part of the chain (and everything after it) for `request`, which the stages
    /// work on in place and the forwarder finally takes.
    fn run(
        &self,
        request: &mut Request<Body>,
        state: &mut RequestState,
    ) -> impl Future<Output = Result<Response<Body>, GatewayError>> + Send;
}

impl<T: Stage, S: Chain> Chain for Staged<T, S> {
    async fn run(
        &self,
        request: &mut Request<Body>,
        state: &mut RequestState,
    ) -> Result<Response<Body>, GatewayError> {
        // The request and its state live once, in the root's future, and every level holds a
        // reference; the one await of the rest of the chain comes after this stage's own work.
        // (Requests passed by value and two `inner.run` awaits made the whole chain's future
        // 19.7 KB, copied into its box on every request.)
        if self.stage.applies_to(request, state) {
            // Boxed: a stage's own work (reading and parsing a body, resolving an identity,
            // deciding) is governed-only and its state is large. Inline, it made the whole chain
            // future 3.5 KB, copied into its box on every request, ungoverned ones included;
            // boxed, only the requests a stage applies to pay for it, with one allocation.
            Box::pin(self.apply(request, state)).await?;
        }
        self.inner.run(request, state).await
    }
}

impl<T: Stage, S> Staged<T, S> {
    /// This stage's own work, in its span.
    async fn apply(
        &self,
        request: &mut Request<Body>,
        state: &mut RequestState,
    ) -> Result<(), GatewayError> {
        let span = trace::stage_span(self.stage.name());
        let applied = trace::in_span(self.stage.apply(request, state), span.clone()).await;
        if let Err(err) = &applied {
            trace::stage_failed(&span, err.parts().code);
        }
        // The stage's span ends here, before the stages after it run.
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stage whose own work keeps a large buffer alive across an await.
    struct Bulky;

    impl Stage for Bulky {
        async fn apply(
            &self,
            request: &mut Request<Body>,
            state: &mut RequestState,
        ) -> Result<(), GatewayError> {
            let scratch = [7u8; 4096];
            tokio::task::yield_now().await;
            let header = http::HeaderValue::from(u32::from(scratch[4095]));
            request.headers_mut().insert("x-bulky", header);
            state.key_id = Some(format!(
                "{}",
                state.key_id.as_deref().unwrap_or("").len() + 1
            ));
            Ok(())
        }
    }

    /// The end of the chain: answers with the headers the stages left.
    struct Answer;

    impl Chain for Answer {
        async fn run(
            &self,
            request: &mut Request<Body>,
            _state: &mut RequestState,
        ) -> Result<Response<Body>, GatewayError> {
            let mut response = Response::new(Body::Empty);
            *response.headers_mut() = request.headers().clone();
            Ok(response)
        }
    }

    fn chain() -> Staged<Bulky, Staged<Bulky, Answer>> {
        let inner = StageLayer::new(Bulky).layer(Answer);
        StageLayer::new(Bulky).layer(inner)
    }

    #[tokio::test]
    async fn stage_work_stays_out_of_the_chain_future_and_each_stage_sees_the_last_ones_state() {
        let chain = chain();
        let mut request = Request::new(Body::Empty);
        let mut state = RequestState::for_test(http::Method::GET);
        let future = chain.run(&mut request, &mut state);
        // Two stages each holding 4 KiB across an await: inline they would make the chain's
        // future over 4 KiB, and every request (whether a stage applies or not) would copy it
        // into its box.
        assert!(
            std::mem::size_of_val(&future) < 1024,
            "chain future is {} bytes",
            std::mem::size_of_val(&future)
        );
        let response = future.await.unwrap();
        assert_eq!(response.headers()["x-bulky"], "7");
        // The second stage found what the first one recorded.
        assert_eq!(state.key_id.as_deref(), Some("2"));
    }
}
